//! What goes on the wire: events as JSON, grouped into messages.
//!
//! Invariants: a message holds events in log order and never splits one
//! event; each message carries the highest seq it holds, so acknowledging
//! it acknowledges every event up to there (the window makes sure earlier
//! messages were acknowledged too).

use outpost_core::{Body, ClockQuality, Event, EventKind, Point, Quality, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value as Json};

use crate::log::StoredEvent;

/// A ThingsBoard server-side RPC request to a device behind the gateway:
/// `{"device": "...", "data": {"id": N, "method": "...", "params": ...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    pub device: String,
    /// The request's id, echoed in the reply as sent.
    pub id: Json,
    /// The write it asks for (tag, value), or why it cannot be done.
    pub write: Result<(String, Value), String>,
}

/// Reads an RPC request. Methods `set` / `write` with params `{"tag": "...",
/// "value": ...}`, or `set_<tag>` with the value as params, are writes;
/// other methods and values that are not a boolean, number or string are
/// answered with an error. `None` for anything without a method (a reply,
/// ours echoed by a broker that is not ThingsBoard, or junk): it gets no
/// reply.
pub fn rpc_request(body: &[u8]) -> Option<RpcRequest> {
    let req: Json = serde_json::from_slice(body).ok()?;
    let method = req["data"]["method"].as_str()?;
    let device = req["device"].as_str().unwrap_or_default().to_string();
    let id = req["data"]["id"].clone();
    let params = &req["data"]["params"];
    let (tag, value) = if let Some(tag) = method.strip_prefix("set_") {
        (tag, params)
    } else if matches!(method, "set" | "write") {
        (params["tag"].as_str().unwrap_or_default(), &params["value"])
    } else {
        ("", &Json::Null)
    };
    let write = if tag.is_empty() {
        Err(format!(
            "unsupported RPC method {method:?} (use set, write or set_<tag>)"
        ))
    } else {
        json_value(value)
            .map(|v| (tag.to_string(), v))
            .ok_or_else(|| format!("unsupported value {value}"))
    };
    Some(RpcRequest { device, id, write })
}

fn json_value(v: &Json) -> Option<Value> {
    match v {
        Json::Bool(b) => Some(Value::Bool(*b)),
        Json::Number(n) => n
            .as_i64()
            .map(Value::I64)
            .or_else(|| n.as_u64().map(Value::U64))
            .or_else(|| n.as_f64().map(Value::F64)),
        Json::String(s) => Some(Value::Str(s.clone())),
        _ => None,
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The highest seq in the message.
    pub last_seq: u64,
    /// The lowest seq in the message (the NATS message id).
    pub first_seq: u64,
    /// Events in the message.
    pub events: usize,
    /// Kept by the broker for later subscribers (a `publish` event's).
    pub retain: bool,
}

/// A value as JSON: numbers and booleans as such, non-finite floats as
/// strings, bytes as hex.
struct ValueOut<'a>(&'a Value);

impl Serialize for ValueOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::I64(i) => s.serialize_i64(*i),
            Value::U64(u) => s.serialize_u64(*u),
            Value::F64(f) if f.is_finite() => s.serialize_f64(*f),
            Value::F64(f) => s.collect_str(f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.collect_str(&Hex(b)),
        }
    }
}

/// A value as the uplinks write it in JSON (see [`ValueOut`]).
pub fn value_json(v: &Value) -> Json {
    serde_json::to_value(ValueOut(v)).unwrap_or(Json::Null)
}

struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

/// Points as a JSON object `{tag: value, ...}`; with `quality`, the points
/// that are not good are also listed under `_quality` as `{tag: reason}`.
struct PointsOut<'a> {
    points: &'a [Point],
    quality: bool,
    /// ThingsBoard: only good values are values (a bad reading carries a
    /// placeholder or the last good value, which ThingsBoard would show as
    /// a fresh reading); the others appear under `_quality` alone.
    good_only: bool,
    /// ThingsBoard only: the `_clock` key when the time is not plainly
    /// synchronised ("unsynced" or "corrected"), as `_quality` is for
    /// qualities; nothing for the usual synchronised reading.
    clock: Option<&'static str>,
}

impl Serialize for PointsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for p in self.points {
            if !self.good_only || p.quality.is_good() {
                m.serialize_entry(&p.tag, &ValueOut(&p.value))?;
            }
        }
        if self.quality && self.points.iter().any(|p| !p.quality.is_good()) {
            m.serialize_entry("_quality", &QualityOut(self.points))?;
        }
        if let Some(clock) = self.clock {
            m.serialize_entry("_clock", clock)?;
        }
        m.end()
    }
}

struct QualityOut<'a>(&'a [Point]);

impl Serialize for QualityOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for p in self.0 {
            match &p.quality {
                Quality::Good => {}
                Quality::Bad { reason } => m.serialize_entry(&p.tag, reason)?,
                Quality::Stale => m.serialize_entry(&p.tag, "stale")?,
            }
        }
        m.end()
    }
}

/// The body of an event as JSON (points straight from the event; the rare
/// kinds through `serde_json::Value`).
struct BodyOut<'a>(&'a Event);

impl Serialize for BodyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.body {
            Body::Telemetry(points) | Body::Attributes(points) => PointsOut {
                points,
                quality: true,
                good_only: false,
                clock: None,
            }
            .serialize(s),
            _ => body_json(self.0).serialize(s),
        }
    }
}

/// The body of an event as a JSON value.
pub fn body_json(ev: &Event) -> Json {
    match &ev.body {
        Body::Telemetry(points) | Body::Attributes(points) => serde_json::to_value(PointsOut {
            points,
            quality: true,
            good_only: false,
            clock: None,
        })
        .unwrap_or(Json::Null),
        Body::Alarm(a) => {
            json!({"name": a.name, "severity": format!("{:?}", a.severity).to_uppercase(),
                   "state": format!("{:?}", a.state).to_lowercase(), "details": a.details,
                   "acknowledged": a.acknowledged, "start_ms": a.start_ms, "end_ms": a.end_ms,
                   "ack_ms": a.ack_ms, "clear_ms": a.clear_ms})
        }
        Body::Status(s) => {
            json!({"status": format!("{:?}", s.status).to_lowercase(), "detail": s.detail})
        }
        Body::Audit(a) => json!({"action": a.action, "actor": a.actor, "detail": a.detail}),
        Body::Gap(g) => json!({"count": g.count, "first_seq": g.first_seq, "last_seq": g.last_seq,
                               "from_ms": g.from_ms, "to_ms": g.to_ms, "reason": g.reason}),
        Body::Publish(p) => json!({"topic": p.topic, "payload": p.payload, "retain": p.retain}),
        _ => Json::Null,
    }
}

/// One event as a self-describing JSON object (generic MQTT, NATS).
#[derive(serde::Serialize)]
struct EventOut<'a> {
    gateway: &'a str,
    seq: u64,
    device: &'a str,
    kind: &'static str,
    ts: i64,
    clock: &'static str,
    body: BodyOut<'a>,
}

impl<'a> EventOut<'a> {
    fn new(gateway: &'a str, s: &'a StoredEvent) -> Self {
        Self {
            gateway,
            seq: s.seq.0,
            device: &s.event.device,
            kind: s.event.kind().as_str(),
            ts: s.event.ts.unix_ms,
            clock: s.event.ts.clock.as_str(),
            body: BodyOut(&s.event),
        }
    }
}

/// Appends `v` as JSON to `buf`. Our serializers cannot fail and a Vec
/// write cannot either; should one ever, `null` keeps the JSON well formed.
fn write_json(buf: &mut Vec<u8>, v: &impl Serialize) {
    let mark = buf.len();
    if serde_json::to_writer(&mut *buf, v).is_err() {
        buf.truncate(mark);
        buf.extend_from_slice(b"null");
    }
}

/// One event as a self-describing JSON object (generic MQTT, NATS).
pub fn event_json(gateway: &str, s: &StoredEvent) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    write_json(&mut buf, &EventOut::new(gateway, s));
    buf
}

/// The device part of a topic or subject; the gateway's own events use `_gateway`.
pub fn device_token(device: &str) -> &str {
    if device.is_empty() {
        "_gateway"
    } else {
        device
    }
}

/// Generic MQTT: consecutive events with the same topic form one message
/// (a JSON array), up to `max_payload` bytes.
pub fn generic(
    gateway: &str,
    template: &str,
    events: &[StoredEvent],
    max_payload: usize,
) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut cur: Option<Message> = None;
    let base = template.replace("{gateway}", gateway);
    let mut topic = String::new();
    let mut topic_of: Option<(&str, EventKind)> = None;
    for s in events {
        let key = (s.event.device.as_str(), s.event.kind());
        if topic_of != Some(key) {
            topic = base
                .replace("{device}", device_token(key.0))
                .replace("{kind}", key.1.as_str());
            topic_of = Some(key);
        }
        let item = event_json(gateway, s);
        if let Some(m) = cur
            .as_mut()
            .filter(|m| m.topic == topic && m.payload.len() + item.len() < max_payload)
        {
            m.payload.pop(); // ']'
            m.payload.push(b',');
            m.payload.extend_from_slice(&item);
            m.payload.push(b']');
            m.last_seq = s.seq.0;
            m.events += 1;
            continue;
        }
        out.extend(cur.take());
        let mut payload = Vec::with_capacity(item.len() + 2);
        payload.push(b'[');
        payload.extend_from_slice(&item);
        payload.push(b']');
        cur = Some(Message {
            topic: topic.clone(),
            payload,
            last_seq: s.seq.0,
            first_seq: s.seq.0,
            events: 1,
            retain: false,
        });
    }
    out.extend(cur);
    out
}

/// ThingsBoard topics.
pub const TB_CONNECT: &str = "v1/gateway/connect";
pub const TB_TELEMETRY: &str = "v1/gateway/telemetry";
pub const TB_ATTRIBUTES: &str = "v1/gateway/attributes";
pub const TB_RPC: &str = "v1/gateway/rpc";
pub const TB_DISCONNECT: &str = "v1/gateway/disconnect";
/// Shared attribute updates of the devices behind the gateway.
pub const TB_ATTRIBUTES_REQUEST: &str = "v1/gateway/attributes/request";
pub const TB_ATTRIBUTES_RESPONSE: &str = "v1/gateway/attributes/response";
/// The gateway device's own attributes (its remote configuration).
pub const TB_OWN_ATTRIBUTES: &str = "v1/devices/me/attributes";
pub const TB_OWN_ATTRIBUTES_RESPONSE: &str = "v1/devices/me/attributes/response/+";
pub const TB_OWN_TELEMETRY: &str = "v1/devices/me/telemetry";

/// ThingsBoard's telemetry record: `{"ts": ms, "values": {...}}`.
#[derive(serde::Serialize)]
struct TbRecord<'a> {
    ts: i64,
    values: TbValues<'a>,
}

struct TbValues<'a>(&'a Event);

impl Serialize for TbValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.body {
            Body::Telemetry(points) => PointsOut {
                points,
                quality: true,
                good_only: true,
                clock: (self.0.ts.clock != ClockQuality::Synced).then(|| self.0.ts.clock.as_str()),
            }
            .serialize(s),
            Body::Alarm(a) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("alarm", &tb_alarm(a))?;
                m.end()
            }
            Body::Status(st) => {
                // One key: the status; its detail beside it when there is one.
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("status", &format!("{:?}", st.status).to_lowercase())?;
                if !st.detail.is_empty() {
                    m.serialize_entry("statusDetail", &st.detail)?;
                }
                m.end()
            }
            other => {
                let key = match other {
                    Body::Status(_) => "status",
                    Body::Audit(_) => "audit",
                    Body::Gap(_) => "gap",
                    _ => "event",
                };
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(key, &body_json(self.0))?;
                m.end()
            }
        }
    }
}

/// An alarm in the telemetry shape the shipped ThingsBoard rule chain
/// (`deploy/thingsboard/outpost-alarms.json`) turns into a ThingsBoard
/// alarm: ThingsBoard's own alarm field names.
pub fn tb_alarm(a: &outpost_core::Alarm) -> Json {
    a.thingsboard_json()
}

fn tb_record(ev: &Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    write_json(
        &mut buf,
        &TbRecord {
            ts: ev.ts.unix_ms,
            values: TbValues(ev),
        },
    );
    buf
}

/// A ThingsBoard message being filled.
enum TbRun<'a> {
    /// `v1/devices/me/telemetry`: `[record, ...]`.
    Own(Vec<u8>),
    /// `v1/gateway/telemetry`: `{"device": [record, ...], ...}`; each
    /// device's records, comma-separated, in log order.
    Telemetry(Vec<(&'a str, Vec<u8>)>),
    /// `v1/gateway/attributes`: `{"device": {key: value, ...}, ...}`; later
    /// values of a key replace earlier ones.
    Attributes(serde_json::Map<String, Json>),
}

impl TbRun<'_> {
    fn topic(&self) -> &'static str {
        match self {
            TbRun::Own(_) => TB_OWN_TELEMETRY,
            TbRun::Telemetry(_) => TB_TELEMETRY,
            TbRun::Attributes(_) => TB_ATTRIBUTES,
        }
    }

    fn payload(self) -> Vec<u8> {
        match self {
            TbRun::Own(mut items) => {
                items.insert(0, b'[');
                items.push(b']');
                items
            }
            TbRun::Telemetry(devices) => {
                let len: usize = devices.iter().map(|(d, r)| d.len() + r.len() + 8).sum();
                let mut out = Vec::with_capacity(len + 2);
                out.push(b'{');
                for (i, (device, records)) in devices.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(&mut out, device);
                    out.extend_from_slice(b":[");
                    out.extend_from_slice(records);
                    out.push(b']');
                }
                out.push(b'}');
                out
            }
            TbRun::Attributes(m) => Json::Object(m).to_string().into_bytes(),
        }
    }
}

/// ThingsBoard gateway API: runs of telemetry-like events become one
/// `v1/gateway/telemetry` message `{"device": [records...], ...}` (up to
/// `max_payload`); attributes go to `v1/gateway/attributes`; the gateway's
/// own events to `v1/devices/me/telemetry`. A run is cut where the topic
/// changes, so log order is kept across topics.
pub fn thingsboard(events: &[StoredEvent], max_payload: usize) -> Vec<Message> {
    let mut out = Vec::new();
    // (run, approximate payload length, first seq, last seq, events)
    let mut run: Option<(TbRun, usize, u64, u64, usize)> = None;
    let mut finish = |(r, _, first_seq, last_seq, events): (TbRun, usize, u64, u64, usize)| {
        out.push(Message {
            topic: r.topic().to_string(),
            payload: r.payload(),
            last_seq,
            first_seq,
            events,
            retain: false,
        })
    };
    for s in events {
        let ev = &s.event;
        let own = ev.device.is_empty();
        let attributes = !own && ev.kind() == EventKind::Attribute;
        let (item, add_len) = if attributes {
            let item = match &ev.body {
                Body::Attributes(points) => body_points(points),
                _ => serde_json::Map::new(),
            };
            let l = Json::Object(item.clone()).to_string().len() + ev.device.len() + 8;
            (Err(item), l)
        } else {
            let r = tb_record(ev);
            let l = r.len() + if own { 1 } else { ev.device.len() + 8 };
            (Ok(r), l)
        };
        let same = |r: &TbRun| match r {
            TbRun::Own(_) => own,
            TbRun::Telemetry(_) => !own && !attributes,
            TbRun::Attributes(_) => attributes,
        };
        if let Some((r, len, ..)) = &run {
            if !same(r) || len + add_len > max_payload {
                run.take().into_iter().for_each(&mut finish);
            }
        }
        let (r, len, _, last, n) = run.get_or_insert_with(|| {
            let r = if own {
                TbRun::Own(Vec::new())
            } else if attributes {
                TbRun::Attributes(serde_json::Map::new())
            } else {
                TbRun::Telemetry(Vec::new())
            };
            (r, 2, s.seq.0, s.seq.0, 0)
        });
        match (r, item) {
            (TbRun::Own(items), Ok(rec)) => {
                if !items.is_empty() {
                    items.push(b',');
                }
                items.extend_from_slice(&rec);
            }
            (TbRun::Telemetry(devices), Ok(rec)) => {
                match devices.iter_mut().find(|(d, _)| *d == ev.device) {
                    Some((_, records)) => {
                        records.push(b',');
                        records.extend_from_slice(&rec);
                    }
                    None => devices.push((&ev.device, rec)),
                }
            }
            (TbRun::Attributes(m), Err(attrs)) => {
                if let Json::Object(dst) = m
                    .entry(ev.device.clone())
                    .or_insert_with(|| Json::Object(serde_json::Map::new()))
                {
                    dst.extend(attrs);
                }
            }
            _ => {} // `same` keeps runs and items of one kind
        }
        *len += add_len;
        *last = s.seq.0;
        *n += 1;
    }
    run.into_iter().for_each(&mut finish);
    out
}

/// Points as a JSON map without qualities (ThingsBoard attributes).
fn body_points(points: &[Point]) -> serde_json::Map<String, Json> {
    match serde_json::to_value(PointsOut {
        points,
        quality: false,
        good_only: true,
        clock: None,
    }) {
        Ok(Json::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Shared attributes of a device behind the gateway, from ThingsBoard: an
/// update `{"device": d, "data": {..}}` or the response to our request
/// `{"id": n, "device": d, "values": {..}}` (also `"value"` under the one
/// key asked, and `"shared": {..}`). `None` for anything else (our own
/// client attributes echoed by a broker that is not ThingsBoard).
pub fn shared_attributes(body: &[u8]) -> Option<(String, Vec<Point>)> {
    let v: Json = serde_json::from_slice(body).ok()?;
    let device = v.get("device")?.as_str()?.to_string();
    let values = ["data", "values", "shared"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Json::as_object))?;
    let points: Vec<Point> = values
        .iter()
        .map(|(k, v)| {
            // Objects and lists as their JSON text.
            let value = json_value(v).unwrap_or_else(|| Value::Str(v.to_string()));
            Point::good(k.clone(), value)
        })
        .collect();
    (!points.is_empty()).then_some((device, points))
}

/// NATS: one message per event; subject `<prefix>.<gateway>.<device>.<kind>`.
pub fn nats(prefix: &str, gateway: &str, s: &StoredEvent) -> Message {
    Message {
        topic: format!(
            "{prefix}.{gateway}.{}.{}",
            device_token(&s.event.device),
            s.event.kind().as_str()
        ),
        payload: event_json(gateway, s),
        last_seq: s.seq.0,
        first_seq: s.seq.0,
        events: 1,
        retain: false,
    }
}

#[cfg(test)]
mod tests {
    use outpost_core::{Seq, Timestamp};

    use super::*;

    #[test]
    fn shared_attribute_updates_and_responses_are_read_and_echoes_are_not() {
        let (d, p) = shared_attributes(
            br#"{"device": "boiler", "data": {"setpoint": 72.5, "mode": "eco"}}"#,
        )
        .unwrap();
        assert_eq!(d, "boiler");
        assert_eq!(
            p,
            [
                Point::good("mode", Value::Str("eco".into())),
                Point::good("setpoint", Value::F64(72.5))
            ]
        );
        let (_, p) = shared_attributes(
            br#"{"id": 3, "device": "boiler", "values": {"limit": 90, "cfg": {"a": 1}}}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            [
                Point::good("cfg", Value::Str(r#"{"a":1}"#.into())),
                Point::good("limit", Value::I64(90))
            ]
        );
        // Our own client attributes, echoed by a plain broker.
        assert!(shared_attributes(br#"{"boiler": {"fw": "1.0"}}"#).is_none());
        assert!(shared_attributes(br#"{"device": {"fw": "1.0"}}"#).is_none());
        assert!(shared_attributes(b"junk").is_none());
    }

    #[test]
    fn rpc_requests_are_writes_errors_or_ignored() {
        let r = rpc_request(
            br#"{"device":"pump","data":{"id":7,"method":"set","params":{"tag":"speed","value":3}}}"#,
        )
        .unwrap();
        assert_eq!(r.device, "pump");
        assert_eq!(r.id, json!(7));
        assert_eq!(r.write, Ok(("speed".to_string(), Value::I64(3))));
        let r = rpc_request(br#"{"device":"p","data":{"id":1,"method":"set_on","params":true}}"#)
            .unwrap();
        assert_eq!(r.write, Ok(("on".to_string(), Value::Bool(true))));
        let r = rpc_request(br#"{"device":"p","data":{"id":1,"method":"reboot"}}"#).unwrap();
        assert!(r.write.unwrap_err().contains("unsupported RPC method"));
        let r = rpc_request(br#"{"device":"p","data":{"method":"set_x","params":[1]}}"#).unwrap();
        assert!(r.write.unwrap_err().contains("unsupported value"));
        // Replies and junk get no answer.
        assert!(rpc_request(br#"{"device":"p","id":1,"data":{"success":true}}"#).is_none());
        assert!(rpc_request(b"\xff not json").is_none());
    }

    fn tele(seq: u64, device: &str, v: i64) -> StoredEvent {
        StoredEvent {
            seq: Seq(seq),
            event: Event::new(
                device,
                Timestamp::synced(1000 + seq as i64),
                Body::Telemetry(vec![Point::good("t", Value::I64(v))]),
            ),
        }
    }

    #[test]
    fn thingsboard_batches_by_device_in_order() {
        let evs = vec![tele(1, "a", 1), tele(2, "b", 2), tele(3, "a", 3)];
        let msgs = thingsboard(&evs, 65536);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].topic, "v1/gateway/telemetry");
        let body: Json = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(
            body,
            json!({"a": [{"ts": 1001, "values": {"t": 1}}, {"ts": 1003, "values": {"t": 3}}],
                   "b": [{"ts": 1002, "values": {"t": 2}}]})
        );
        assert_eq!(
            (msgs[0].first_seq, msgs[0].last_seq, msgs[0].events),
            (1, 3, 3)
        );
    }

    #[test]
    fn payload_limits_split_messages_and_never_events() {
        let evs: Vec<StoredEvent> = (1..=50).map(|i| tele(i, "dev", i as i64)).collect();
        for msgs in [
            thingsboard(&evs, 400),
            generic("gw", "{gateway}/{device}/{kind}", &evs, 400),
        ] {
            assert!(msgs.len() > 1);
            assert_eq!(msgs.iter().map(|m| m.events).sum::<usize>(), 50);
            let mut next = 1;
            for m in &msgs {
                assert_eq!(m.first_seq, next);
                next = m.last_seq + 1;
                assert!(
                    m.payload.len() <= 400 || m.events == 1,
                    "{} bytes",
                    m.payload.len()
                );
            }
        }
    }

    #[test]
    fn generic_topics_and_nats_subjects() {
        let evs = vec![tele(1, "a", 1), tele(2, "", 2)];
        let msgs = generic("gw", "site/{gateway}/{device}/{kind}", &evs, 65536);
        assert_eq!(
            msgs.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(),
            vec!["site/gw/a/telemetry", "site/gw/_gateway/telemetry"]
        );
        let arr: Json = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(arr[0]["seq"], json!(1));
        assert_eq!(arr[0]["body"], json!({"t": 1}));
        assert_eq!(
            nats("outpost", "gw", &evs[0]).topic,
            "outpost.gw.a.telemetry"
        );
    }

    #[test]
    fn values_and_qualities_as_json() {
        let s = StoredEvent {
            seq: Seq(7),
            event: Event::new(
                "pump \"1\"",
                Timestamp::unsynced(5),
                Body::Telemetry(vec![
                    Point::good("f", Value::F64(1.5)),
                    Point::good("nan", Value::F64(f64::NAN)),
                    Point::good("b", Value::Bytes(vec![0, 0xab])),
                    Point::good("u", Value::U64(u64::MAX)),
                    Point {
                        tag: "x".into(),
                        value: Value::I64(-3),
                        quality: Quality::Bad {
                            reason: "timeout".into(),
                        },
                    },
                    Point {
                        tag: "s".into(),
                        value: Value::Str("a\nb".into()),
                        quality: Quality::Stale,
                    },
                ]),
            ),
        };
        let j: Json = serde_json::from_slice(&event_json("gw", &s)).unwrap();
        assert_eq!(
            j,
            json!({"gateway": "gw", "seq": 7, "device": "pump \"1\"", "kind": "telemetry",
                   "ts": 5, "clock": "unsynced",
                   "body": {"f": 1.5, "nan": "NaN", "b": "00ab", "u": u64::MAX, "x": -3, "s": "a\nb",
                            "_quality": {"x": "timeout", "s": "stale"}}})
        );
        // ThingsBoard: a value that is not good is no value (it would show
        // as a fresh reading); its quality says why.
        let tb = thingsboard(std::slice::from_ref(&s), 65536);
        let j: Json = serde_json::from_slice(&tb[0].payload).unwrap();
        let values = &j["pump \"1\""][0]["values"];
        assert_eq!(values["_quality"], json!({"x": "timeout", "s": "stale"}));
        assert!(
            values.get("x").is_none() && values.get("s").is_none(),
            "{values}"
        );
        assert_eq!(values["f"], json!(1.5));
        assert_eq!(values["_clock"], json!("unsynced"));
    }

    #[test]
    fn the_clock_flag_travels_with_corrected_and_synced_events() {
        let ev = |seq: u64, clock| StoredEvent {
            seq: Seq(seq),
            event: Event::new(
                "d",
                Timestamp {
                    unix_ms: 1_764_000_000_000,
                    clock,
                },
                Body::Telemetry(vec![Point::good("t", Value::I64(1))]),
            ),
        };
        let corrected = ev(1, ClockQuality::Corrected);
        let j: Json = serde_json::from_slice(&event_json("gw", &corrected)).unwrap();
        assert_eq!(j["clock"], json!("corrected"));
        let boot = ev(2, ClockQuality::SinceBoot { boot_ms: 5 });
        let j: Json = serde_json::from_slice(&event_json("gw", &boot)).unwrap();
        assert_eq!(j["clock"], json!("unsynced"));
        let synced = ev(3, ClockQuality::Synced);
        let tb = thingsboard(&[corrected, synced], 65536);
        let j: Json = serde_json::from_slice(&tb[0].payload).unwrap();
        assert_eq!(j["d"][0]["values"]["_clock"], json!("corrected"));
        assert!(
            j["d"][1]["values"].get("_clock").is_none(),
            "a synchronised reading carries no flag: {j}"
        );
    }

    #[test]
    fn thingsboard_attributes_merge_and_own_events_are_an_array() {
        let attr = |seq: u64, k: &str, v: i64| StoredEvent {
            seq: Seq(seq),
            event: Event::new(
                "a",
                Timestamp::synced(1),
                Body::Attributes(vec![Point::good(k, Value::I64(v))]),
            ),
        };
        let evs = vec![
            attr(1, "fw", 1),
            attr(2, "fw", 2),
            attr(3, "model", 3),
            tele(4, "", 9),
            tele(5, "", 10),
        ];
        let msgs = thingsboard(&evs, 65536);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].topic, TB_ATTRIBUTES);
        let j: Json = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(j, json!({"a": {"fw": 2, "model": 3}}));
        assert_eq!(msgs[1].topic, TB_OWN_TELEMETRY);
        let j: Json = serde_json::from_slice(&msgs[1].payload).unwrap();
        assert_eq!(
            j,
            json!([{"ts": 1004, "values": {"t": 9}}, {"ts": 1005, "values": {"t": 10}}])
        );
    }

    #[test]
    fn thingsboard_alarms_take_thingsboards_alarm_shape() {
        let ev = StoredEvent {
            seq: Seq(1),
            event: Event::new(
                "boiler",
                Timestamp::synced(9),
                Body::Alarm({
                    let mut a = outpost_core::Alarm::raised(
                        "Overheat",
                        outpost_core::AlarmSeverity::Critical,
                        r#"{"t": 70}"#,
                        4,
                    );
                    a.state = outpost_core::AlarmState::Cleared;
                    a.clear_ms = Some(9);
                    a
                }),
            ),
        };
        let msgs = thingsboard(&[ev], 65536);
        let j: Json = serde_json::from_slice(&msgs[0].payload).unwrap();
        assert_eq!(
            j,
            json!({"boiler": [{"ts": 9, "values": {"alarm": {"type": "Overheat", "severity": "CRITICAL",
                "status": "CLEARED_UNACK", "details": {"t": 70}, "acknowledged": false, "cleared": true,
                "startTs": 4, "endTs": 4, "ackTs": 0, "clearTs": 9, "propagate": false,
                "propagateToOwner": false, "propagateToTenant": false, "propagateRelationTypes": []}}}]})
        );
    }
}
