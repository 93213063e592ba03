//! `[device.serial]`: an instrument on a plain serial line (a scale, a
//! barcode reader, a gas analyser, a GPS, a meter that prints a line per
//! reading).
//!
//! ```toml
//! [[device]]
//! name = "scale"
//! [device.serial]
//! port = "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"
//! baud = 9600
//! frame = { delimiter = "\r\n" }
//! parse = { regex = '^(?P<state>ST|US),GS,\s*(?P<weight>[-+]?\d+\.\d+)\s*kg$', types = { weight = "f64" } }
//! poll = { command = "W\r\n", period = "1s", timeout = "500ms" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::modbus::Parity;
use crate::units::Duration;

/// `[device.serial]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    /// Required. The port; prefer the stable `/dev/serial/by-id/…` names.
    pub port: PathBuf,
    /// Default: `9600`.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `"none"`, `"even"` or `"odd"`. Default: `"none"`.
    #[serde(default = "no_parity")]
    pub parity: Parity,
    /// `7` or `8`. Default: `8`.
    #[serde(default = "eight")]
    pub data_bits: u8,
    /// `1` or `2`. Default: `1`.
    #[serde(default = "one")]
    pub stop_bits: u8,
    /// `"none"`, `"hardware"` (RTS/CTS) or `"software"` (XON/XOFF). Default: `"none"`.
    #[serde(default)]
    pub flow_control: FlowControl,
    /// Put the port in RS-485 mode where the kernel supports it. Default: `false`.
    #[serde(default)]
    pub rs485: bool,
    /// Required: how frames are marked (one of `delimiter`, `length`,
    /// `start` with `end`, `idle`).
    pub frame: Frame,
    /// Longest frame, in bytes; longer ones are counted and dropped. Default: `1024`.
    #[serde(default = "default_max_frame")]
    pub max_frame: u32,
    /// Required: how a frame becomes tag values.
    pub parse: Parse,
    /// A checksum at the end of each frame. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// Ask for a reading every `period` (request/response instruments).
    /// Default: none (the instrument talks on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Poll>,
    /// Commands that write a tag, `{value}` replaced by the value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<WriteCommand>,
}

fn default_baud() -> u32 {
    9600
}
fn no_parity() -> Parity {
    Parity::None
}
fn eight() -> u8 {
    8
}
fn one() -> u8 {
    1
}
fn default_max_frame() -> u32 {
    1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowControl {
    #[default]
    None,
    Hardware,
    Software,
}

/// `frame = { … }`: exactly one of the ways.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    /// Each frame ends with these bytes, e.g. `"\r\n"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Every frame is this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// A frame starts with these bytes (with `end`), e.g. `"\u0002"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// A frame ends with these bytes (with `start`), e.g. `"\u0003"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// A frame ends after this much silence on the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

/// `parse = { … }`: exactly one of the parsers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parse {
    /// A regular expression whose named captures become tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// With `regex`: the type of a capture, `"f64"`, `"i64"`, `"bool"` or
    /// `"string"` (default: a number if it reads as one, else text).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub types: BTreeMap<String, String>,
    /// Each frame is a JSON object (nested objects become `a.b` tags).
    #[serde(default)]
    pub json: bool,
    /// `key=value` pairs: `{ pairs = ",", assign = "=" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_value: Option<KeyValue>,
    /// A binary layout: one entry per field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binary: Vec<BinaryField>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    /// Between pairs. Default: `","`.
    #[serde(default = "comma")]
    pub pairs: String,
    /// Between a key and its value. Default: `"="`.
    #[serde(default = "equals")]
    pub assign: String,
}

fn comma() -> String {
    ",".into()
}
fn equals() -> String {
    "=".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryField {
    pub name: String,
    /// Byte offset in the frame.
    pub offset: u32,
    /// `u8`, `i8`, `u16`, `i16`, `u32`, `i32`, `f32` or `f64`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `"big"` or `"little"`. Default: `"big"`.
    #[serde(default = "big")]
    pub order: String,
}

fn big() -> String {
    "big".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksum {
    /// `"xor"`, `"sum8"`, `"crc16-modbus"` or `"crc16-ccitt"`.
    pub kind: String,
    /// `"binary"` or `"hex"`. Default: `"binary"`.
    #[serde(default = "binary")]
    pub encoding: String,
    /// Leading bytes not covered (e.g. 1 for NMEA's `$`). Default: `0`.
    #[serde(default)]
    pub skip: u32,
    /// Bytes between the data and the checksum (e.g. 1 for NMEA's `*`). Default: `0`.
    #[serde(default)]
    pub separator: u32,
}

fn binary() -> String {
    "binary".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// Sent every `period`, e.g. `"W\r\n"`.
    pub command: String,
    /// Default: `"1s"`.
    #[serde(default = "second")]
    pub period: Duration,
    /// A response must come within this. Default: `"500ms"`.
    #[serde(default = "half_second")]
    pub timeout: Duration,
}

fn second() -> Duration {
    Duration::from_secs(1)
}
fn half_second() -> Duration {
    Duration::from_millis(500)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteCommand {
    /// The tag this command writes.
    pub tag: String,
    /// Sent with `{value}` replaced by the written value, e.g. `"SP {value}\r\n"`.
    pub command: String,
}

pub(crate) const TEXT_TYPES: [&str; 4] = ["f64", "i64", "bool", "string"];
pub(crate) const BINARY_TYPES: [&str; 8] = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "f64"];
pub(crate) const CHECKSUMS: [&str; 4] = ["xor", "sum8", "crc16-modbus", "crc16-ccitt"];
