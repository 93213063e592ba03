//! Rule-engine messages, shaped as ThingsBoard's: `msg` (JSON), `metadata`
//! (a string map) and `msgType`, plus the originator (device name).
//!
//! Invariants: converting an event to a message and back gives the same
//! points, alarm or attributes (values keep their JSON type: integers stay
//! integers, floats floats); `metadata.ts` always holds the event's time in
//! Unix ms, and a message that leaves the engine takes its time from there.

use std::collections::BTreeMap;

use outpost_core::{
    Alarm, AlarmSeverity, Body, ClockQuality, Event, Point, Quality, Route, Timestamp, Value,
};
use serde_json::{Map, Value as Json};

pub const POST_TELEMETRY: &str = "POST_TELEMETRY_REQUEST";
pub const POST_ATTRIBUTES: &str = "POST_ATTRIBUTES_REQUEST";
pub const ALARM: &str = "ALARM";
pub const ATTRIBUTES_UPDATED: &str = "ATTRIBUTES_UPDATED";
pub const CONNECT: &str = "CONNECT_EVENT";
pub const DISCONNECT: &str = "DISCONNECT_EVENT";
pub const ACTIVITY: &str = "ACTIVITY_EVENT";
/// The metadata key a route node sets.
pub const ROUTE_KEY: &str = "outpost.route";

/// One message travelling through a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub originator: String,
    pub msg_type: String,
    pub data: Json,
    pub metadata: BTreeMap<String, String>,
    /// The event's timestamp (kept apart from `metadata.ts` so that a
    /// script cannot turn it into garbage).
    pub ts: Timestamp,
}

impl Msg {
    pub fn new(originator: &str, msg_type: &str, data: Json, ts: Timestamp) -> Self {
        let mut metadata = BTreeMap::new();
        metadata.insert("deviceName".to_string(), originator.to_string());
        metadata.insert("deviceType".to_string(), "default".to_string());
        metadata.insert("ts".to_string(), ts.unix_ms.to_string());
        Self {
            originator: originator.to_string(),
            msg_type: msg_type.to_string(),
            data,
            metadata,
            ts,
        }
    }

    /// The message for an event; `None` for kinds the engine does not see
    /// (audit entries and gap records pass around it).
    pub fn from_event(ev: &Event) -> Option<Msg> {
        let (msg_type, data) = match &ev.body {
            Body::Telemetry(points) => (POST_TELEMETRY, points_json(points)),
            Body::Attributes(points) => (POST_ATTRIBUTES, points_json(points)),
            Body::ScopedAttributes(scope, points) => {
                let mut m = Msg::new(&ev.device, ATTRIBUTES_UPDATED, points_json(points), ev.ts);
                let scope = match scope {
                    outpost_core::AttributeScope::Shared => "SHARED_SCOPE",
                    outpost_core::AttributeScope::Server => "SERVER_SCOPE",
                };
                m.metadata.insert("scope".into(), scope.into());
                return Some(m);
            }
            Body::Alarm(a) => (ALARM, alarm_json(&ev.device, a)),
            Body::Status(s) => {
                let t = match s.status {
                    outpost_core::DeviceStatus::Online => CONNECT,
                    outpost_core::DeviceStatus::Offline | outpost_core::DeviceStatus::Stopped => {
                        DISCONNECT
                    }
                    _ => ACTIVITY,
                };
                (
                    t,
                    serde_json::json!({"status": format!("{:?}", s.status).to_lowercase(), "detail": s.detail}),
                )
            }
            _ => return None,
        };
        let mut m = Msg::new(&ev.device, msg_type, data, ev.ts);
        if let Body::Telemetry(points) | Body::Attributes(points) = &ev.body {
            for p in points.iter().filter(|p| !p.quality.is_good()) {
                let q = match &p.quality {
                    Quality::Bad { reason } => reason.clone(),
                    _ => "stale".to_string(),
                };
                m.metadata.insert(format!("quality.{}", p.tag), q);
            }
        }
        Some(m)
    }

    /// Time of the message: `metadata.ts` if a node or script set a valid
    /// one, else the original event's.
    pub fn time(&self) -> Timestamp {
        match self.metadata.get("ts").and_then(|t| t.parse::<i64>().ok()) {
            Some(ms) if ms != self.ts.unix_ms => Timestamp {
                unix_ms: ms,
                clock: self.ts.clock,
            },
            _ => self.ts,
        }
    }

    /// The points of `msg` (its top-level keys with scalar values).
    /// Nested objects and arrays are carried as JSON text.
    pub fn points(&self) -> Vec<Point> {
        let Json::Object(m) = &self.data else {
            return Vec::new();
        };
        m.iter()
            .filter_map(|(k, v)| {
                let value = json_to_value(v)?;
                let quality = match self.metadata.get(&format!("quality.{k}")) {
                    Some(q) if q == "stale" => Quality::Stale,
                    Some(q) => Quality::Bad { reason: q.clone() },
                    None => Quality::Good,
                };
                Some(Point {
                    tag: k.clone(),
                    value,
                    quality,
                })
            })
            .collect()
    }

    /// The event to log for this message as telemetry.
    pub fn telemetry_event(&self) -> Event {
        let mut ev = Event::new(
            self.originator.clone(),
            self.time(),
            Body::Telemetry(self.points()),
        );
        ev.route = self.route();
        ev
    }

    /// The event to log for this message as attributes.
    pub fn attributes_event(&self) -> Event {
        let mut ev = Event::new(
            self.originator.clone(),
            self.time(),
            Body::Attributes(self.points()),
        );
        ev.route = self.route();
        ev
    }

    /// Where the message's events go upstream: `metadata["outpost.route"]`
    /// is `local` (no uplink) or a comma-separated list of uplink names;
    /// absent, every uplink.
    pub fn route(&self) -> Route {
        match self.metadata.get(ROUTE_KEY).map(|r| r.trim()) {
            None | Some("") => Route::All,
            Some("local") => Route::Local,
            Some(names) => Route::Only(
                names
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
            ),
        }
    }

    /// A numeric field of `msg`.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.data.get(key).and_then(Json::as_f64)
    }
}

pub fn points_json(points: &[Point]) -> Json {
    let mut m = Map::new();
    for p in points {
        m.insert(p.tag.clone(), value_to_json(&p.value));
    }
    Json::Object(m)
}

pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I64(i) => Json::from(*i),
        Value::U64(u) => Json::from(*u),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

pub fn json_to_value(v: &Json) -> Option<Value> {
    Some(match v {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::I64(i)
            } else if let Some(u) = n.as_u64() {
                Value::U64(u)
            } else {
                Value::F64(n.as_f64()?)
            }
        }
        Json::String(s) => Value::Str(s.clone()),
        Json::Null => return None,
        other => Value::Str(other.to_string()),
    })
}

pub fn severity_name(s: AlarmSeverity) -> &'static str {
    match s {
        AlarmSeverity::Critical => "CRITICAL",
        AlarmSeverity::Major => "MAJOR",
        AlarmSeverity::Minor => "MINOR",
        AlarmSeverity::Warning => "WARNING",
        AlarmSeverity::Indeterminate => "INDETERMINATE",
    }
}

pub fn parse_severity(s: &str) -> Option<AlarmSeverity> {
    Some(match s.to_ascii_uppercase().as_str() {
        "CRITICAL" => AlarmSeverity::Critical,
        "MAJOR" => AlarmSeverity::Major,
        "MINOR" => AlarmSeverity::Minor,
        "WARNING" => AlarmSeverity::Warning,
        "INDETERMINATE" => AlarmSeverity::Indeterminate,
        _ => return None,
    })
}

/// An alarm event (the whole record) for the originator of `m`, at its
/// time, on its route.
pub fn alarm_event(m: &Msg, alarm: &Alarm) -> Event {
    let mut ev = Event::new(m.originator.clone(), m.time(), Body::Alarm(alarm.clone()));
    ev.route = m.route();
    ev
}

/// An alarm as ThingsBoard's rule engine hands it on (the message data of
/// an alarm node's output): its fields by ThingsBoard's names.
pub fn alarm_json(originator: &str, a: &Alarm) -> Json {
    let mut j = a.thingsboard_json();
    if let Json::Object(m) = &mut j {
        m.insert("name".into(), Json::String(a.name.clone()));
        m.insert("originator".into(), Json::String(originator.to_string()));
        m.insert(
            "originatorName".into(),
            Json::String(originator.to_string()),
        );
    }
    j
}

/// A timestamp for tests and benches.
pub fn synced(ms: i64) -> Timestamp {
    Timestamp {
        unix_ms: ms,
        clock: ClockQuality::Synced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_round_trips_with_types_and_quality() {
        let ev = Event::new(
            "boiler",
            synced(1000),
            Body::Telemetry(vec![
                Point::good("i", Value::I64(-3)),
                Point::good("f", Value::F64(2.5)),
                Point::good("b", Value::Bool(true)),
                Point {
                    tag: "s".into(),
                    value: Value::Str("x".into()),
                    quality: Quality::Stale,
                },
            ]),
        );
        let m = Msg::from_event(&ev).unwrap();
        assert_eq!(m.msg_type, POST_TELEMETRY);
        assert_eq!(m.metadata["deviceName"], "boiler");
        assert_eq!(m.metadata["ts"], "1000");
        let back = m.telemetry_event();
        let mut a = match &ev.body {
            Body::Telemetry(p) => p.clone(),
            _ => vec![],
        };
        let mut b = match back.body {
            Body::Telemetry(p) => p,
            _ => vec![],
        };
        a.sort_by(|x, y| x.tag.cmp(&y.tag));
        b.sort_by(|x, y| x.tag.cmp(&y.tag));
        assert_eq!(a, b);
        assert_eq!(back.ts, ev.ts);
    }

    #[test]
    fn a_script_set_ts_is_used_and_garbage_is_not() {
        let mut m = Msg::new("d", POST_TELEMETRY, serde_json::json!({}), synced(5));
        m.metadata.insert("ts".into(), "77".into());
        assert_eq!(m.time().unix_ms, 77);
        m.metadata.insert("ts".into(), "soon".into());
        assert_eq!(m.time().unix_ms, 5);
    }
}
