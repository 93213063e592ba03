//! The configuration model. Every struct rejects unknown keys; every optional
//! key's default is stated on the field and implemented by a named function.
//!
//! Adding a section: add a struct here (with `deny_unknown_fields` and
//! documented defaults), a field on [`Config`], its checks in `validate.rs`,
//! and its keys in `docs/config.md` and `examples/outpost.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use outpost_core::ClockPolicy;

use serde::{Deserialize, Serialize};

pub use crate::modbus::Bus;
use crate::secret::Secret;
use crate::units::{ByteSize, Duration};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Gateway,
    /// Serial lines shared by Modbus RTU devices, in `[[bus]]` tables. Default: none.
    #[serde(default, rename = "bus", skip_serializing_if = "Vec::is_empty")]
    pub buses: Vec<Bus>,
    /// Devices, in `[[device]]` tables. Default: none.
    #[serde(default, rename = "device", skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Default: the pass-through stage.
    #[serde(default)]
    pub rules: Rules,
    /// Upstream links, in `[[uplink]]` tables. Default: none (data stays on the gateway).
    #[serde(default, rename = "uplink", skip_serializing_if = "Vec::is_empty")]
    pub uplinks: Vec<Uplink>,
    #[serde(default)]
    pub web: Web,
    #[serde(default)]
    pub remote: Remote,
}

/// `[gateway]`: who this gateway is and how it keeps its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Required. The gateway's id upstream: letters, digits, `-` and `_`.
    pub id: String,
    /// Where the event log lives. Default: `$XDG_STATE_HOME/outpost` when that is
    /// set, else `./outpost-data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `full` (fsync on every commit: survives power loss) or `normal` (may
    /// lose the last commits on power loss, never corrupts). Default: `full`.
    #[serde(default)]
    pub durability: Durability,
    /// `ntp` (events are marked unsynced until the kernel's clock is
    /// synchronised) or `trust` (the clock is always right). Default: `ntp`.
    #[serde(default)]
    pub clock: ClockPolicy,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub buffer: BufferLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// WAL with `synchronous=FULL`: a committed event survives power loss.
    #[default]
    Full,
    /// WAL with `synchronous=NORMAL`: consistent after power loss, but the
    /// last commits may be lost.
    Normal,
}

/// `[gateway.log]`: group commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Most events in one transaction. Default: `1000`.
    #[serde(default = "default_commit_max_events")]
    pub commit_max_events: u32,
    /// Longest an append waits for others to share its transaction: fewer,
    /// larger commits write far fewer bytes to an SD card, for this much
    /// latency. Default: `2s`. `0s` commits whatever is queued at once
    /// (appends that arrive together still share a transaction).
    #[serde(default = "default_commit_max_delay")]
    pub commit_max_delay: Duration,
    /// For this long after boot, while the clock is not synchronised,
    /// uplinks hold back events stamped without it, so that they go out
    /// re-stamped with the true time (`clock = "trust"`: no wait). Default:
    /// `3m`; `0s` sends them at once, flagged unsynced.
    #[serde(default = "default_clock_wait")]
    pub clock_wait: Duration,
}

fn default_clock_wait() -> Duration {
    Duration::from_millis(180_000)
}

fn default_commit_max_events() -> u32 {
    1000
}
fn default_commit_max_delay() -> Duration {
    Duration::from_millis(2000)
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            commit_max_events: default_commit_max_events(),
            commit_max_delay: default_commit_max_delay(),
            clock_wait: default_clock_wait(),
        }
    }
}

/// `[gateway.buffer]`: how much undelivered data the gateway keeps. When a
/// limit is hit, the oldest events of the lowest priority go first
/// (telemetry, then attributes and status, then alarms and audit) and a gap
/// event records what was dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferLimits {
    /// Stored event bytes. Default: `256MiB`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Stored events. Default: `5000000`.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
    /// Age of the oldest undelivered event. Default: `30d`.
    #[serde(default = "default_max_age")]
    pub max_age: Duration,
}

fn default_max_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_max_rows() -> u64 {
    5_000_000
}
fn default_max_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}

impl Default for BufferLimits {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            max_rows: default_max_rows(),
            max_age: default_max_age(),
        }
    }
}

/// `[[device]]`: one device, with exactly one driver section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Required. Unique; letters, digits, `-` and `_`.
    pub name: String,
    /// A disabled device is kept in the file but not run. Default: `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `[device.sim]`: a simulated device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimDevice>,
    /// `[device.modbus]`: a Modbus RTU or TCP device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modbus: Option<crate::modbus::ModbusDevice>,
    /// `[device.serial]`: an instrument on a plain serial line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<crate::serial::SerialDevice>,
    /// `[device.gpio]`: contacts, pulse inputs and relays on GPIO lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpio: Option<crate::gpio::GpioDevice>,
    /// The device's type: ThingsBoard's device profile (`deviceType` in
    /// chains, the `type` of `v1/gateway/connect`). Default: `"default"`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Tags whose readings are the device's attributes (client-side, as
    /// ThingsBoard calls them: a firmware version, a serial number) rather
    /// than telemetry: sent when they change. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribute_tags: Vec<String>,
    /// `[device.attributes]`: static client-side attributes (a location, an
    /// asset number), sent once and whenever they change. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// `[device.server_attributes]`: server-side attributes (`ss_` in rule
    /// chains: thresholds, limits), kept on the gateway. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_attributes: BTreeMap<String, AttributeValue>,
    /// `[device.attribute_updates]`: shared attributes (set in
    /// ThingsBoard) that write a tag when they change, as
    /// `<shared key> = "<tag>"`. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attribute_updates: BTreeMap<String, String>,
}

/// A configured attribute's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

fn yes() -> bool {
    true
}

impl Device {
    /// ThingsBoard's device type: the configured `type`, or `"default"`.
    pub fn type_name(&self) -> &str {
        self.device_type.as_deref().unwrap_or("default")
    }

    /// The names of the device's tags, where its driver section lists them
    /// (`None` for serial devices, whose fields come from parsing).
    pub fn tag_names(&self) -> Option<Vec<String>> {
        if let Some(s) = &self.sim {
            return Some(s.tags.iter().map(|t| t.name.clone()).collect());
        }
        if let Some(m) = &self.modbus {
            return Some(m.tags.iter().map(|t| t.name.clone()).collect());
        }
        if let Some(g) = &self.gpio {
            return Some(g.tags());
        }
        None
    }

    /// The name of the configured driver section, if exactly one is set.
    pub fn driver_name(&self) -> Option<&'static str> {
        match (&self.sim, &self.modbus, &self.serial, &self.gpio) {
            (Some(_), None, None, None) => Some("sim"),
            (None, Some(m), None, None) => Some(m.transport_name()),
            (None, None, Some(_), None) => Some("serial"),
            (None, None, None, Some(_)) => Some("gpio"),
            _ => None,
        }
    }
}

/// `[device.sim]`: a simulated device producing one telemetry event per
/// interval with a value for each tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDevice {
    /// Time between samples. Default: `1s`.
    #[serde(default = "default_sim_interval")]
    pub interval: Duration,
    /// The tags, in `[[device.sim.tag]]` tables. Required: at least one.
    #[serde(rename = "tag")]
    pub tags: Vec<SimTag>,
}

fn default_sim_interval() -> Duration {
    Duration::from_secs(1)
}

/// One simulated tag: a name and exactly one signal (`counter`, `sine`,
/// `random_walk` or `toggle`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTag {
    /// Required. Unique within the device.
    pub name: String,
    /// Engineering unit, shown on the web page. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<Counter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sine: Option<Sine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_walk: Option<RandomWalk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toggle: Option<Toggle>,
}

/// An integer counting up (and wrapping at `u64::MAX`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// Default: `0`.
    #[serde(default)]
    pub start: u64,
    /// Added per sample. Default: `1`.
    #[serde(default = "one_u64")]
    pub step: u64,
}

fn one_u64() -> u64 {
    1
}

/// `offset + amplitude * sin(2π t / period)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sine {
    /// Default: `0.0`.
    #[serde(default)]
    pub offset: f64,
    /// Default: `1.0`.
    #[serde(default = "one_f64")]
    pub amplitude: f64,
    /// Default: `60s`.
    #[serde(default = "default_period")]
    pub period: Duration,
}

fn one_f64() -> f64 {
    1.0
}
fn default_period() -> Duration {
    Duration::from_secs(60)
}

/// A value that moves by at most `step` per sample, kept within `[min, max]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomWalk {
    /// Default: halfway between `min` and `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<f64>,
    /// Default: `1.0`.
    #[serde(default = "one_f64")]
    pub step: f64,
    /// Default: `0.0`.
    #[serde(default)]
    pub min: f64,
    /// Default: `100.0`.
    #[serde(default = "hundred")]
    pub max: f64,
}

fn hundred() -> f64 {
    100.0
}

/// A boolean that flips every `every` samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    /// Default: `10`.
    #[serde(default = "ten")]
    pub every: u32,
}

fn ten() -> u32 {
    10
}

/// `[rules]`: the rule chains. Without chains every event goes to the log
/// unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// ThingsBoard rule-chain exports (JSON); the first is the root chain,
    /// the others are reached from it through rule-chain nodes. Relative
    /// paths are relative to the configuration file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<std::path::PathBuf>,
    /// `[[rules.chain]]`: chains written here, in the same node types
    /// (after the files; the first is the root when there are no files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<InlineChain>,
    /// ThingsBoard device-profile exports (JSON) whose alarm rules the
    /// device profile node evaluates; a device uses the profile its `type`
    /// names. Relative paths are relative to the configuration file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_profiles: Vec<std::path::PathBuf>,
    /// Default: `false`. Load node types Outpost does not run as
    /// pass-through nodes instead of refusing the chain.
    #[serde(default)]
    pub pass_unsupported: bool,
    /// Default: 8 MiB. Memory limit of each chain's script runtime.
    #[serde(default = "default_script_memory")]
    pub script_memory: ByteSize,
    /// Default: 100 ms. Longest one script call may run.
    #[serde(default = "default_script_timeout")]
    pub script_timeout: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            chains: Vec::new(),
            chain: Vec::new(),
            device_profiles: Vec::new(),
            pass_unsupported: false,
            script_memory: default_script_memory(),
            script_timeout: default_script_timeout(),
        }
    }
}

/// `[[rules.chain]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineChain {
    /// Required. Other chains call it by this name.
    pub name: String,
    /// `[[rules.chain.node]]`; the first receives the messages.
    #[serde(default)]
    pub node: Vec<InlineNode>,
    /// `[[rules.chain.connection]]`.
    #[serde(default)]
    pub connection: Vec<InlineConnection>,
}

/// `[[rules.chain.node]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineNode {
    /// Required. Unique in the chain; connections name it.
    pub name: String,
    /// Required. A node type, e.g. `outpost.Deadband` or a ThingsBoard class name.
    #[serde(rename = "type")]
    pub kind: String,
    /// The node's configuration, as in a ThingsBoard export.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// `[[rules.chain.connection]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineConnection {
    /// Required. Node names.
    pub from: String,
    pub to: String,
    /// Default: `Success`.
    #[serde(default = "success")]
    pub relation: String,
}

fn success() -> String {
    "Success".to_string()
}

fn default_script_memory() -> ByteSize {
    ByteSize(8 << 20)
}

fn default_script_timeout() -> Duration {
    Duration::from_millis(100)
}

/// `[[uplink]]`: one upstream link, with exactly one of `[uplink.mqtt]` or
/// `[uplink.nats]`. Each uplink has its own cursor in the event log, so the
/// log keeps every event until each uplink has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// Required. Unique; letters, digits, `-` and `_`.
    pub name: String,
    /// Default: `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default: `false`. While a backlog drains, publish fresh events at
    /// once, ahead of it; upstream then sees a device's events out of
    /// order (each still carries its seq and timestamp).
    #[serde(default)]
    pub live_lane: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttUplink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsUplink>,
}

impl Uplink {
    pub fn protocol(&self) -> Option<&'static str> {
        match (&self.mqtt, &self.nats) {
            (Some(_), None) => Some("mqtt"),
            (None, Some(_)) => Some("nats"),
            _ => None,
        }
    }
}

/// `[uplink.mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttUplink {
    /// Required. `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// `"thingsboard"` (the ThingsBoard gateway API) or `"generic"` (a topic
    /// template and JSON events). Default: `"generic"`.
    #[serde(default)]
    pub mode: MqttMode,
    /// Generic mode: the topic of each message; `{gateway}`, `{device}` and
    /// `{kind}` are replaced. Default: `"{gateway}/{device}/{kind}"`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Default: the gateway id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// For ThingsBoard: the gateway device's access token. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Default: none. Prefer `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Keep-alive interval: a silent link is declared dead after 1.5 times
    /// this. Default: `15s`.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Duration,
    /// MQTT protocol version: `"3.1.1"` or `"5"`. Default: `"3.1.1"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Start each connection with a clean session. Default: `true`.
    #[serde(default = "yes")]
    pub clean_session: bool,
    /// Messages published and not yet acknowledged, at most. Default: `32`.
    #[serde(default = "default_mqtt_inflight")]
    pub max_inflight: u16,
    /// Largest message payload. Default: `64KiB`.
    #[serde(default = "default_max_payload")]
    pub max_payload: ByteSize,
    /// A publish not acknowledged within this marks the link dead. Default: `10s`.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: Duration,
    #[serde(default)]
    pub tls: Tls,
}

impl MqttUplink {
    /// (TLS, host, port) of `url`; `None` when it is not `mqtt://` or
    /// `mqtts://` or its port is not a number. The port defaults to 1883
    /// (8883 with TLS).
    pub fn endpoint(&self) -> Option<(bool, String, u16)> {
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            (false, self.url.strip_prefix("mqtt://")?)
        };
        let rest = rest.trim_end_matches('/');
        match rest.rsplit_once(':') {
            Some((h, p)) => Some((tls, h.to_string(), p.parse().ok()?)),
            None => Some((tls, rest.to_string(), if tls { 8883 } else { 1883 })),
        }
    }
}

/// What an MQTT uplink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MqttMode {
    /// Topic template and one JSON array of events per message.
    #[default]
    Generic,
    /// `v1/gateway/connect`, `v1/gateway/telemetry`, `v1/gateway/attributes`, RPC.
    Thingsboard,
}

/// The MQTT protocol version an uplink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: a refused publish (PUBACK reason code) is an error instead of
    /// a silent drop.
    #[serde(rename = "5")]
    V5,
}

fn default_topic() -> String {
    "{gateway}/{device}/{kind}".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(15)
}
fn default_mqtt_inflight() -> u16 {
    32
}
fn default_max_payload() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

/// TLS settings of an uplink (used with `mqtts://` or `tls://`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file of the CA that signed the server's certificate. Default: none
    /// (the uplink then needs no TLS, or fails with a clear error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by it. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `[uplink.nats]`: JetStream publishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsUplink {
    /// Required. `nats://host:port` or `tls://host:port`.
    pub url: String,
    /// Subject prefix: subjects are `<prefix>.<gateway>.<device>.<kind>`. Default: `outpost`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// The JetStream stream that takes the subjects. Default: `OUTPOST`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Create the stream (subjects `<prefix>.>`, 2-minute duplicate window) if
    /// it does not exist. Default: `false` (a missing stream is an error).
    #[serde(default)]
    pub create_stream: bool,
    /// Default: none. Prefer `token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// User name for user/password authentication. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Default: none. Prefer `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A file holding an NKey seed. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_file: Option<PathBuf>,
    /// A `.creds` file (JWT and NKey). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// Messages published and not yet acknowledged, at most. Default: `256`.
    #[serde(default = "default_nats_inflight")]
    pub max_inflight: u16,
    /// A publish not acknowledged within this is resent. Default: `10s`.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: Duration,
    #[serde(default)]
    pub tls: Tls,
}

fn default_subject_prefix() -> String {
    "outpost".into()
}
fn default_stream() -> String {
    "OUTPOST".into()
}
fn default_nats_inflight() -> u16 {
    256
}

/// `[web]`: the technician's web page and the local HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Default: `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address and port to listen on. Default: `127.0.0.1:8080`.
    #[serde(default = "default_web_bind")]
    pub bind: SocketAddr,
    /// HTTPS (`true`) or plain HTTP (`false`). Default: `true`, with a
    /// self-signed certificate made on first start and kept in the data
    /// directory, unless `cert` and `key` name one.
    #[serde(default = "yes")]
    pub tls: bool,
    /// PEM certificate chain to serve instead of the generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// How long a login lasts without activity. Default: `8h`.
    #[serde(default = "default_session_ttl")]
    pub session_ttl: Duration,
    /// The admin's password as an argon2 hash (PHC string, `$argon2id$…`),
    /// for gateways provisioned with one; without it, the first start prints
    /// a one-time setup token and the first visit sets the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_hash: Option<String>,
}

fn default_web_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

impl Default for Web {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: default_web_bind(),
            tls: true,
            cert: None,
            key: None,
            session_ttl: default_session_ttl(),
            admin_password_hash: None,
        }
    }
}

/// `[remote]`: configuration managed from the cloud. Every source is
/// optional; each borrows the server and credentials of a configured uplink
/// (its own connection: the control plane never shares the data plane's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Hex-encoded ed25519 public key; when set, only documents signed with
    /// its private key are applied. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_public_key: Option<String>,
    /// A NATS uplink whose server holds the KV bucket with this gateway's
    /// desired configuration (key: the gateway id). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_uplink: Option<String>,
    /// Default: `"outpost-config"`.
    #[serde(default = "default_kv_bucket")]
    pub kv_bucket: String,
    /// Create the bucket when it is missing (needs nats-server 2.10 or
    /// later). Default: `false`.
    #[serde(default)]
    pub create_bucket: bool,
    /// An MQTT uplink whose broker holds the retained desired configuration
    /// (and, in ThingsBoard mode, the `configuration` shared attribute).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_uplink: Option<String>,
    /// The retained topic (`{gateway}` is replaced; empty: none); reports go
    /// to `<topic>/report`, retained. Default: `"outpost/{gateway}/config"`.
    #[serde(default = "default_config_topic")]
    pub topic: String,
    /// Also take the ThingsBoard shared attribute `configuration` (needs the
    /// MQTT uplink in ThingsBoard mode). Default: `false`.
    #[serde(default)]
    pub thingsboard: bool,
    /// How long changed parts must prove healthy before a configuration is
    /// kept; otherwise it is rolled back. Default: `"30s"`.
    #[serde(default = "default_grace")]
    pub grace: Duration,
    /// Applied documents kept on disk for rollback. Default: `10`.
    #[serde(default = "default_history")]
    pub history: u32,
}

impl Default for Remote {
    fn default() -> Self {
        Remote {
            fleet_public_key: None,
            nats_uplink: None,
            kv_bucket: default_kv_bucket(),
            create_bucket: false,
            mqtt_uplink: None,
            topic: default_config_topic(),
            thingsboard: false,
            grace: default_grace(),
            history: default_history(),
        }
    }
}

fn default_kv_bucket() -> String {
    "outpost-config".to_string()
}
fn default_config_topic() -> String {
    "outpost/{gateway}/config".to_string()
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_history() -> u32 {
    10
}
