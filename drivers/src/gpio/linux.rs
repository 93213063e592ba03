//! GPIO on Linux: the character device (`/dev/gpiochipN`, gpio-cdev) around
//! the driver's loop. Lines are found by offset or by name; inputs deliver
//! the kernel's edge events; outputs are line handles. A line that is busy
//! or missing is a clear error naming the chip and the line, retried with
//! back-off (another program may release it).

use std::collections::BTreeMap;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use futures_util::StreamExt;
use gpio_cdev::{Chip, EventRequestFlags, EventType, LineHandle, LineRequestFlags};
use outpost_config::gpio::{Bias, GpioDevice, InputMode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::core::{self as driver_loop, Input, InputKind, OutputLine};
use super::logic::{Debouncer, Edge, Output, PulseCounter};
use crate::metrics::DeviceMetrics;
use crate::{Driver, DriverContext, DriverError, DriverFuture};

const CONSUMER: &str = "outpostd";

/// The v1 character-device interface's bias flags (`GPIOHANDLE_REQUEST_BIAS_*`,
/// Linux 5.5), which gpio-cdev 0.6 does not name.
fn bias_flags(bias: Bias) -> LineRequestFlags {
    let bits = match bias {
        Bias::AsIs => 0,
        Bias::PullUp => 1 << 5,
        Bias::PullDown => 1 << 6,
        Bias::Disabled => 1 << 7,
    };
    LineRequestFlags::from_bits_retain(bits)
}
const REOPEN_MIN: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// An output line handle as an embedded-hal pin (levels as the line has
/// them: active-low is applied by [`Output`]).
#[derive(Debug)]
pub struct CdevPin(LineHandle);

#[derive(Debug)]
pub struct PinError(String);

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl ErrorType for CdevPin {
    type Error = PinError;
}

impl OutputPin for CdevPin {
    fn set_low(&mut self) -> Result<(), PinError> {
        self.0.set_value(0).map_err(|e| PinError(e.to_string()))
    }
    fn set_high(&mut self) -> Result<(), PinError> {
        self.0.set_value(1).map_err(|e| PinError(e.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct GpioDriver {
    name: String,
    cfg: GpioDevice,
    /// Pulse counts restored from the log, by tag.
    restored: BTreeMap<String, u64>,
}

impl GpioDriver {
    pub fn new(name: &str, cfg: &GpioDevice) -> Self {
        GpioDriver {
            name: name.to_string(),
            cfg: cfg.clone(),
            restored: BTreeMap::new(),
        }
    }

    /// Pulse inputs' tags, whose counts the daemon restores from the log.
    pub fn counters(&self) -> Vec<String> {
        self.cfg
            .inputs
            .iter()
            .filter(|i| i.mode == InputMode::Pulse)
            .map(|i| i.name.clone())
            .collect()
    }

    /// Counts to start from, by tag (the last ones in the log).
    pub fn restore(&mut self, counts: BTreeMap<String, u64>) {
        self.restored = counts;
    }

    pub fn describe(&self) -> String {
        self.cfg.chip.display().to_string()
    }

    fn find(
        &self,
        chip: &mut Chip,
        line: Option<u32>,
        name: Option<&str>,
    ) -> Result<gpio_cdev::Line, String> {
        let chip_name = self.cfg.chip.display().to_string();
        if let Some(offset) = line {
            return chip
                .get_line(offset)
                .map_err(|e| format!("{chip_name} has no line {offset}: {e}"));
        }
        let wanted = name.unwrap_or_default();
        for l in chip.lines() {
            if l.info()
                .ok()
                .and_then(|i| i.name().map(str::to_string))
                .as_deref()
                == Some(wanted)
            {
                return Ok(l);
            }
        }
        Err(format!("{chip_name} has no line named {wanted:?}"))
    }

    /// Requests every line; the inputs' edges are forwarded by tasks that
    /// end with the returned token.
    #[allow(clippy::type_complexity)]
    fn open(
        &self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(Vec<Input>, Vec<OutputLine<CdevPin>>), String> {
        let chip_name = self.cfg.chip.display().to_string();
        let mut chip = Chip::new(&self.cfg.chip).map_err(|e| format!("{chip_name}: {e}"))?;
        let mut inputs = Vec::new();
        for i in &self.cfg.inputs {
            let line = self.find(&mut chip, i.line, i.line_name.as_deref())?;
            let offset = line.offset();
            let busy = |e: gpio_cdev::Error| {
                format!(
                    "{chip_name} line {offset} ({}): {e} (in use by another program, or missing)",
                    i.name
                )
            };
            let mut flags = LineRequestFlags::INPUT;
            if i.active_low {
                flags |= LineRequestFlags::ACTIVE_LOW;
            }
            flags |= bias_flags(i.bias);
            let events = line
                .async_events(flags, EventRequestFlags::BOTH_EDGES, CONSUMER)
                .map_err(busy)?;
            let level = events.as_ref().get_value().map_err(busy)? == 1;
            let (tx, rx) = mpsc::channel(256);
            let stop = stop.clone();
            outpost_core::task::spawn(async move {
                let mut events = events;
                loop {
                    let ev = tokio::select! {
                        () = stop.cancelled() => return,
                        ev = events.next() => ev,
                    };
                    let Some(Ok(ev)) = ev else { return };
                    let edge = Edge {
                        high: ev.event_type() == EventType::RisingEdge,
                        at: Instant::now(),
                    };
                    if tx.send(edge).await.is_err() {
                        return;
                    }
                }
            });
            let kind = match i.mode {
                InputMode::Level => InputKind::Level(Debouncer::new(level, i.debounce.get())),
                InputMode::Pulse => InputKind::Pulse(PulseCounter::new(
                    self.restored.get(&i.name).copied().unwrap_or(0),
                    i.rate_window.get(),
                )),
            };
            inputs.push(Input {
                name: i.name.clone(),
                kind,
                edges: rx,
            });
        }
        let mut outputs = Vec::new();
        for o in &self.cfg.outputs {
            let line = self.find(&mut chip, o.line, o.line_name.as_deref())?;
            let offset = line.offset();
            let physical = u8::from(o.initial != o.active_low);
            let handle = line
                .request(LineRequestFlags::OUTPUT, physical, CONSUMER)
                .map_err(|e| format!("{chip_name} line {offset} ({}): {e} (in use by another program, or missing)", o.name))?;
            let output = Output::new(CdevPin(handle), o.active_low, o.initial, o.safe)
                .map_err(|e| format!("{chip_name} line {offset} ({}): {}", o.name, e.0))?;
            outputs.push(OutputLine {
                name: o.name.clone(),
                output,
                pulse: o.pulse.map(|p| p.get()),
            });
        }
        Ok((inputs, outputs))
    }

    async fn serve(self, cx: DriverContext) -> Result<(), DriverError> {
        let metrics = cx.metrics.device(&self.name);
        let mut reopen = REOPEN_MIN;
        let mut reported = false;
        loop {
            let lines_stop = cx.stop.child_token();
            match self.open(&lines_stop) {
                Ok((inputs, outputs)) => {
                    tracing::info!(device = %self.name, chip = %self.describe(), "GPIO lines requested.");
                    let online = cx.status(
                        &self.name,
                        true,
                        format!("{} lines requested", self.describe()),
                    );
                    cx.send(&self.name, online).await?;
                    let ended = driver_loop::run(
                        &self.name,
                        inputs,
                        outputs,
                        self.cfg.report_every.get(),
                        &cx,
                    )
                    .await;
                    lines_stop.cancel();
                    return ended;
                }
                Err(why) => {
                    DeviceMetrics::add(&metrics.io_errors, 1);
                    metrics.set_error(why.clone());
                    if !reported {
                        tracing::warn!(device = %self.name, error = %why, "GPIO lines unavailable; retrying.");
                        cx.send(&self.name, cx.status(&self.name, false, why))
                            .await?;
                        reported = true;
                    }
                }
            }
            if cx.pause(reopen).await {
                return Ok(());
            }
            reopen = (reopen * 2).min(REOPEN_MAX);
        }
    }
}

impl Driver for GpioDriver {
    fn device(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, cx: DriverContext) -> DriverFuture {
        Box::pin(async move { self.serve(cx).await })
    }
}
