use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Position of an event in the gateway's log. Assigned at commit, strictly
/// increasing, never reused (not even after every row has been reclaimed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One thing that happened at the gateway: a set of readings, an alarm, a
/// device status change, an audit entry, or a record of dropped data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The device this event belongs to; `""` for the gateway itself.
    pub device: String,
    pub ts: Timestamp,
    pub body: Body,
    /// Which uplinks send it (set by rule chains; all by default).
    pub route: Route,
}

/// Where an event goes upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// Every uplink.
    #[default]
    All,
    /// Only the uplinks named.
    Only(Vec<String>),
    /// No uplink: kept in the gateway's log only.
    Local,
}

impl Route {
    /// Whether the uplink `name` sends events with this route.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Route::All => true,
            Route::Only(names) => names.iter().any(|n| n == name),
            Route::Local => false,
        }
    }
}

impl Event {
    pub fn new(device: impl Into<String>, ts: Timestamp, body: Body) -> Self {
        Self {
            device: device.into(),
            ts,
            body,
            route: Route::All,
        }
    }

    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// How precious the event is when the buffer is full: the lowest priority
    /// goes first.
    pub fn priority(&self) -> Priority {
        self.kind().priority()
    }
}

/// The payload of an event; it decides the event's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// Time series readings (ThingsBoard "telemetry").
    Telemetry(Vec<Point>),
    /// Slow-changing device properties reported by the device or its
    /// configuration: ThingsBoard's client-side attributes.
    Attributes(Vec<Point>),
    Alarm(Alarm),
    Status(Status),
    Audit(Audit),
    Gap(Gap),
    /// Attributes of the other two ThingsBoard scopes (event format 5):
    /// shared ones (set in ThingsBoard, read by the gateway) and
    /// server-side ones (configured locally or remotely). Kept for the
    /// chains and the device page; never sent upstream as the device's own.
    ScopedAttributes(AttributeScope, Vec<Point>),
    /// A message one uplink publishes as it is, on its own topic (event
    /// format 6): ThingsBoard's MQTT node, through the gateway's log so
    /// that an outage delays it instead of losing it.
    Publish(Publish),
}

/// The topic and payload of a [`Body::Publish`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

/// The scope of attributes that are not the device's own (client-side
/// attributes are [`Body::Attributes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AttributeScope {
    /// Set in ThingsBoard, pushed to the gateway (`shared_` in chains).
    Shared,
    /// Held by the platform side (`ss_` in chains): here, the gateway's
    /// configuration.
    Server,
}

impl AttributeScope {
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeScope::Shared => "shared",
            AttributeScope::Server => "server",
        }
    }
}

impl Body {
    /// The points of telemetry and of attributes of any scope.
    pub fn points(&self) -> Option<&[Point]> {
        match self {
            Body::Telemetry(p) | Body::Attributes(p) | Body::ScopedAttributes(_, p) => Some(p),
            _ => None,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Body::Telemetry(_) => EventKind::Telemetry,
            Body::Attributes(_) | Body::ScopedAttributes(..) => EventKind::Attribute,
            Body::Alarm(_) => EventKind::Alarm,
            Body::Status(_) => EventKind::Status,
            Body::Audit(_) => EventKind::Audit,
            Body::Gap(_) => EventKind::Gap,
            Body::Publish(_) => EventKind::Publish,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    Telemetry,
    Attribute,
    Alarm,
    Status,
    Audit,
    Gap,
    Publish,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Telemetry,
        EventKind::Attribute,
        EventKind::Alarm,
        EventKind::Status,
        EventKind::Audit,
        EventKind::Gap,
        EventKind::Publish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Telemetry => "telemetry",
            EventKind::Attribute => "attribute",
            EventKind::Alarm => "alarm",
            EventKind::Status => "status",
            EventKind::Audit => "audit",
            EventKind::Gap => "gap",
            EventKind::Publish => "publish",
        }
    }

    /// Telemetry is dropped first; alarms, audit entries and gap records last.
    pub fn priority(self) -> Priority {
        match self {
            EventKind::Telemetry => Priority::Bulk,
            EventKind::Attribute | EventKind::Status | EventKind::Publish => Priority::State,
            EventKind::Alarm | EventKind::Audit | EventKind::Gap => Priority::Record,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Eviction classes, lowest first. When the buffer is over its limits the
/// oldest events of the lowest class present are dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Telemetry: plentiful, and a gap in it is tolerable.
    Bulk = 0,
    /// Attributes and device status.
    State = 1,
    /// Alarms, audit entries and gap records.
    Record = 2,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Bulk, Priority::State, Priority::Record];

    pub fn as_i64(self) -> i64 {
        self as i64
    }

    pub fn from_i64(v: i64) -> Option<Priority> {
        match v {
            0 => Some(Priority::Bulk),
            1 => Some(Priority::State),
            2 => Some(Priority::Record),
            _ => None,
        }
    }
}

/// One named value with its quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub tag: String,
    pub value: Value,
    pub quality: Quality,
}

impl Point {
    pub fn good(tag: impl Into<String>, value: Value) -> Self {
        Self {
            tag: tag.into(),
            value,
            quality: Quality::Good,
        }
    }
}

/// A typed value as read from a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => {
                f.write_str("0x")?;
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether a value can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quality {
    Good,
    /// The read failed or the value is known to be wrong; the reason says why
    /// (e.g. "modbus exception 2: illegal data address").
    Bad {
        reason: String,
    },
    /// The last known value, no longer refreshed.
    Stale,
}

impl Quality {
    pub fn bad(reason: impl Into<String>) -> Self {
        Quality::Bad {
            reason: reason.into(),
        }
    }

    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }
}

/// An alarm as ThingsBoard models it. Its identity is the event's device
/// (the originator) and `name` (the alarm type): at most one alarm of a
/// type per originator is open (not cleared) at a time. Each change is a
/// new event carrying the whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Alarm type, e.g. "High Temperature".
    pub name: String,
    pub severity: AlarmSeverity,
    pub state: AlarmState,
    /// Free text or JSON details.
    pub details: String,
    pub acknowledged: bool,
    /// When it was raised, and last raised again (updated).
    pub start_ms: i64,
    pub end_ms: i64,
    pub ack_ms: Option<i64>,
    pub clear_ms: Option<i64>,
    pub propagation: Propagation,
}

impl Alarm {
    /// A new, active and unacknowledged alarm raised at `at_ms`.
    pub fn raised(
        name: impl Into<String>,
        severity: AlarmSeverity,
        details: impl Into<String>,
        at_ms: i64,
    ) -> Self {
        Self {
            name: name.into(),
            severity,
            state: AlarmState::Active,
            details: details.into(),
            acknowledged: false,
            start_ms: at_ms,
            end_ms: at_ms,
            ack_ms: None,
            clear_ms: None,
            propagation: Propagation::default(),
        }
    }

    /// The alarm by ThingsBoard's field names (`type`, `severity`, `status`,
    /// `startTs`, ...; `details` as JSON when they are JSON), as the chains
    /// hand it on and the ThingsBoard uplink sends it.
    pub fn thingsboard_json(&self) -> serde_json::Value {
        let details = serde_json::from_str::<serde_json::Value>(&self.details)
            .unwrap_or_else(|_| serde_json::Value::String(self.details.clone()));
        serde_json::json!({
            "type": self.name,
            "severity": format!("{:?}", self.severity).to_uppercase(),
            "status": self.status(),
            "acknowledged": self.acknowledged,
            "cleared": self.state == AlarmState::Cleared,
            "startTs": self.start_ms,
            "endTs": self.end_ms,
            "ackTs": self.ack_ms.unwrap_or(0),
            "clearTs": self.clear_ms.unwrap_or(0),
            "details": details,
            "propagate": self.propagation.related,
            "propagateToOwner": self.propagation.to_owner,
            "propagateToTenant": self.propagation.to_tenant,
            "propagateRelationTypes": self.propagation.relation_types,
        })
    }

    /// ThingsBoard's status name: `ACTIVE_UNACK`, `CLEARED_ACK`, ...
    pub fn status(&self) -> &'static str {
        match (self.state, self.acknowledged) {
            (AlarmState::Active, false) => "ACTIVE_UNACK",
            (AlarmState::Active, true) => "ACTIVE_ACK",
            (AlarmState::Cleared, false) => "CLEARED_UNACK",
            (AlarmState::Cleared, true) => "CLEARED_ACK",
        }
    }
}

/// Which related entities an alarm propagates to (ThingsBoard's flags;
/// carried upstream, the platform acts on them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    pub related: bool,
    pub to_owner: bool,
    pub to_tenant: bool,
    /// Relation types to propagate along (empty: all).
    pub relation_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmSeverity {
    Critical,
    Major,
    Minor,
    Warning,
    Indeterminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    Active,
    Cleared,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub status: DeviceStatus,
    /// What happened, for a technician (last error, reason for a restart).
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceStatus {
    Starting,
    Online,
    Degraded,
    Offline,
    Stopped,
}

/// An entry of the audit trail: configuration changes, logins, device writes,
/// and the log's own incidents (a database moved aside, a disk that filled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// What was done, e.g. "log.recovered", "config.applied".
    pub action: String,
    /// Who did it: "gateway", a user name, "remote".
    pub actor: String,
    pub detail: String,
}

/// The record that events were dropped from the log before every consumer had
/// them (the buffer hit a limit). Sent upstream like any other event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// How many events were dropped.
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Event timestamps (Unix ms) of the oldest and newest dropped event.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Which limit was hit: "rows", "bytes" or "age"; or "corrupt" for a
    /// stored row that no longer decodes (sent in its place).
    pub reason: String,
}
