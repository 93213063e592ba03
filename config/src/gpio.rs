//! `[device.gpio]`: contacts, alarms and pulse outputs read from GPIO
//! lines, and relays switched on them.
//!
//! ```toml
//! [[device]]
//! name = "cabinet"
//! [device.gpio]
//! chip = "/dev/gpiochip0"
//! [[device.gpio.input]]
//! name = "door"
//! line = 17                # or line_name = "DOOR_CONTACT"
//! active_low = true
//! bias = "pull-up"         # or "pull-down", "disabled"; default "as-is"
//! debounce = "20ms"
//! [[device.gpio.input]]
//! name = "water"
//! line = 27
//! mode = "pulse"           # counts rising edges; the count survives restarts
//! [[device.gpio.output]]
//! name = "siren"
//! line = 22
//! pulse = "2s"             # a write of true switches it on for 2 s
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// `[device.gpio]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioDevice {
    /// The GPIO chip. Default: `/dev/gpiochip0`.
    #[serde(default = "default_chip")]
    pub chip: PathBuf,
    /// How often every input's level and count is reported even without a
    /// change. Default: `"60s"`.
    #[serde(default = "minute")]
    pub report_every: Duration,
    #[serde(default, rename = "input", skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<GpioInput>,
    #[serde(default, rename = "output", skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<GpioOutput>,
}

fn default_chip() -> PathBuf {
    PathBuf::from("/dev/gpiochip0")
}
fn minute() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputMode {
    /// The level: a change is reported once it has held for `debounce`. The default.
    #[default]
    Level,
    /// Rising edges are counted (`<name>`), with a rate (`<name>_per_min`).
    Pulse,
}

/// `[[device.gpio.input]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioInput {
    /// Required: the tag name.
    pub name: String,
    /// The line's offset on the chip (one of `line` and `line_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The line's name as the kernel knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_name: Option<String>,
    /// Default: `false`.
    #[serde(default)]
    pub active_low: bool,
    /// `"level"` or `"pulse"`. Default: `"level"`.
    #[serde(default)]
    pub mode: InputMode,
    /// A level counts once it has held this long. Default: `"20ms"`
    /// (levels; pulses are not debounced).
    #[serde(default = "twenty_ms")]
    pub debounce: Duration,
    /// With `mode = "pulse"`: the window of the rate. Default: `"60s"`.
    #[serde(default = "minute")]
    pub rate_window: Duration,
    /// The line's pull resistor. Default: `"as-is"` (left as the board or
    /// device tree set it).
    #[serde(default)]
    pub bias: Bias,
}

/// An input line's pull resistor, set when the line is requested (Linux
/// 5.5 or later; older kernels refuse the request, which is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Left as the board or device tree set it. The default.
    #[default]
    AsIs,
    PullUp,
    PullDown,
    /// No pull resistor.
    Disabled,
}

fn twenty_ms() -> Duration {
    Duration::from_millis(20)
}

/// `[[device.gpio.output]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioOutput {
    /// Required: the tag name (writes to it switch the line).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_name: Option<String>,
    /// Default: `false`.
    #[serde(default)]
    pub active_low: bool,
    /// The state at start. Default: `false` (off).
    #[serde(default)]
    pub initial: bool,
    /// The state at shutdown. Default: `false` (off).
    #[serde(default)]
    pub safe: bool,
    /// With it, a write of `true` switches on for this long, then off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulse: Option<Duration>,
}

impl GpioDevice {
    /// The tags the device reports (a pulse input adds `<name>_per_min`).
    pub fn tags(&self) -> Vec<String> {
        let mut t = Vec::new();
        for i in &self.inputs {
            t.push(i.name.clone());
            if i.mode == InputMode::Pulse {
                t.push(format!("{}_per_min", i.name));
            }
        }
        t.extend(self.outputs.iter().map(|o| o.name.clone()));
        t
    }
}
