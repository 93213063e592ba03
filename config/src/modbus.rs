//! Modbus configuration: serial buses (`[[bus]]`), Modbus devices
//! (`[device.modbus]`) and their tags (`[[device.modbus.tag]]`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::Duration;

/// `[[bus]]`: a serial line (RS-485 or RS-232) shared by Modbus RTU devices.
/// One task owns it; its devices take turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bus {
    /// Required. Unique; devices name it in `bus = "..."`.
    pub name: String,
    /// Required. The serial device; prefer stable `/dev/serial/by-id/...` names.
    pub port: PathBuf,
    /// Default: `9600`.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `"none"`, `"even"` or `"odd"`. Default: `"even"` (the Modbus default).
    #[serde(default)]
    pub parity: Parity,
    /// 7 or 8. Default: `8`.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 or 2. Default: `1`.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence kept between frames. Default: 3.5 character times, at least 1.75ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_frame_delay: Option<Duration>,
    /// Switch the port to the kernel's RS-485 mode (RTS drives the
    /// transmitter) where the driver supports it. Default: `false`.
    #[serde(default)]
    pub rs485: bool,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

impl Bus {
    /// Bits per character on the wire: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// The configured gap, or 3.5 character times with a floor of 1.75 ms
    /// (the fixed value the Modbus serial-line spec gives above 19200 baud).
    pub fn frame_gap(&self) -> std::time::Duration {
        if let Some(d) = self.inter_frame_delay {
            return d.get();
        }
        let baud = f64::from(self.baud.max(1));
        let t35 = 3.5 * f64::from(self.bits_per_char()) / baud;
        std::time::Duration::from_secs_f64(t35.max(0.00175))
    }
}

/// `[device.modbus]`: how to reach the device and what to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// RTU on a configured `[[bus]]`, by name. Exactly one of `bus`, `tcp`,
    /// `rtu_over_tcp` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Modbus TCP: `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// RTU frames over a TCP connection (serial-to-Ethernet converters): `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtu_over_tcp: Option<String>,
    /// Unit (slave) id: 1–247 on RTU, 0–255 on TCP. Default: `1`.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Poll period of tags that do not set their own. Default: `1s`.
    #[serde(default = "default_period")]
    pub period: Duration,
    /// Time to wait for a response. Default: `300ms`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Retries of a request that got no valid response. Default: `1`.
    #[serde(default = "one_u32")]
    pub retries: u32,
    /// Most registers in one read request (1–125). Default: `125`.
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// Most coils or discrete inputs in one read request (1–2000). Default: `2000`.
    #[serde(default = "default_max_bits")]
    pub max_bits: u16,
    /// Unused registers (or bits) a merged read may span to join two tags. Default: `8`.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Longest back-off for a device that stopped answering. Default: `60s`.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// The tags, in `[[device.modbus.tag]]` tables. Required: at least one.
    #[serde(rename = "tag")]
    pub tags: Vec<ModbusTag>,
}

fn default_unit() -> u8 {
    1
}
fn default_period() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_millis(300)
}
fn one_u32() -> u32 {
    1
}
fn default_max_registers() -> u16 {
    125
}
fn default_max_bits() -> u16 {
    2000
}
fn default_max_gap() -> u16 {
    8
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}

impl ModbusDevice {
    pub fn transport_name(&self) -> &'static str {
        match (&self.bus, &self.tcp, &self.rtu_over_tcp) {
            (Some(_), None, None) => "modbus-rtu",
            (None, Some(_), None) => "modbus-tcp",
            (None, None, Some(_)) => "modbus-rtu-over-tcp",
            _ => "modbus",
        }
    }
}

/// One value on a Modbus device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTag {
    /// Required. Unique within the device.
    pub name: String,
    /// Required: `"coil"`, `"discrete"`, `"input"` or `"holding"`.
    pub table: Table,
    /// Required. Zero-based protocol address (register 40001 is holding 0).
    pub address: u16,
    /// `bool`, `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64` or
    /// `string[N]` (N registers, 2 characters each). Default: `bool` for coils
    /// and discrete inputs, `u16` for registers.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ModbusType>,
    /// Word and byte order of multi-register values: `ABCD` (big-endian),
    /// `CDAB` (word-swapped), `BADC` (byte-swapped), `DCBA` (little-endian).
    /// Default: `ABCD`.
    #[serde(default)]
    pub order: WordOrder,
    /// For `type = "bool"` in a register: the bit (0 = least significant). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit: Option<u8>,
    /// Reported value = raw × scale + offset. Default: `1.0`.
    #[serde(default = "one_f64")]
    pub scale: f64,
    /// Default: `0.0`.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Poll period (tags with the same period form a poll group). Default: the device's `period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// Report only when the value changes. Default: `false` (report every poll).
    #[serde(default)]
    pub on_change: bool,
    /// Report only when the value moved more than this since the last report. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// Like `deadband`, in percent of the last reported value. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband_percent: Option<f64>,
    /// With `on_change` or a deadband: report at least this often anyway. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Duration>,
    /// May be written (coils and holding registers only). Default: `false`.
    #[serde(default)]
    pub writable: bool,
    /// Lowest value a write may set (engineering units). Default: the type's range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_min: Option<f64>,
    /// Highest value a write may set. Default: the type's range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_max: Option<f64>,
}

fn one_f64() -> f64 {
    1.0
}

impl ModbusTag {
    /// A tag with every optional key at its default (for code that builds
    /// configurations, and tests).
    pub fn new(name: &str, table: Table, address: u16) -> Self {
        Self {
            name: name.to_string(),
            table,
            address,
            kind: None,
            order: WordOrder::ABCD,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            period: None,
            on_change: false,
            deadband: None,
            deadband_percent: None,
            heartbeat: None,
            writable: false,
            write_min: None,
            write_max: None,
        }
    }

    /// The tag's type, with the table's default.
    pub fn kind(&self) -> ModbusType {
        self.kind.unwrap_or(match self.table {
            Table::Coil | Table::Discrete => ModbusType::Bool,
            Table::Input | Table::Holding => ModbusType::U16,
        })
    }

    /// Registers (or bits, for coil and discrete tables) the tag occupies.
    pub fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.kind().registers()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    Coil,
    Discrete,
    Input,
    Holding,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// Register word and byte order, named by where bytes A (most significant)
/// to D land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    /// Whether the words of a multi-register value come least significant first.
    pub fn words_swapped(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }

    /// Whether the two bytes within each register are swapped.
    pub fn bytes_swapped(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
}

/// A value type on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModbusType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// A string of this many registers.
    Str(u16),
}

impl ModbusType {
    pub fn registers(self) -> u16 {
        match self {
            ModbusType::Bool | ModbusType::U16 | ModbusType::I16 => 1,
            ModbusType::U32 | ModbusType::I32 | ModbusType::F32 => 2,
            ModbusType::U64 | ModbusType::I64 | ModbusType::F64 => 4,
            ModbusType::Str(n) => n,
        }
    }

    pub fn is_numeric(self) -> bool {
        !matches!(self, ModbusType::Bool | ModbusType::Str(_))
    }
}

impl fmt::Display for ModbusType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModbusType::Bool => f.write_str("bool"),
            ModbusType::U16 => f.write_str("u16"),
            ModbusType::I16 => f.write_str("i16"),
            ModbusType::U32 => f.write_str("u32"),
            ModbusType::I32 => f.write_str("i32"),
            ModbusType::U64 => f.write_str("u64"),
            ModbusType::I64 => f.write_str("i64"),
            ModbusType::F32 => f.write_str("f32"),
            ModbusType::F64 => f.write_str("f64"),
            ModbusType::Str(n) => write!(f, "string[{n}]"),
        }
    }
}

impl FromStr for ModbusType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "bool" => ModbusType::Bool,
            "u16" => ModbusType::U16,
            "i16" => ModbusType::I16,
            "u32" => ModbusType::U32,
            "i32" => ModbusType::I32,
            "u64" => ModbusType::U64,
            "i64" => ModbusType::I64,
            "f32" => ModbusType::F32,
            "f64" => ModbusType::F64,
            "string" => {
                return Err("a string needs its length in registers, e.g. \"string[8]\"".to_string())
            }
            other => {
                let n = other
                    .strip_prefix("string[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u16>().ok());
                match n {
                    Some(n) if (1..=125).contains(&n) => ModbusType::Str(n),
                    Some(n) => {
                        return Err(format!(
                            "a string is 1 to 125 registers long, found string[{n}]"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "expected one of bool, u16, i16, u32, i32, u64, i64, f32, f64, string[N]; found \"{other}\""
                        ))
                    }
                }
            }
        })
    }
}

impl Serialize for ModbusType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModbusType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}
