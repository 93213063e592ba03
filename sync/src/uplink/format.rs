//! What goes on the wire: events as JSON, grouped into messages.
//!
//! Invariants: a message holds events in log order and never splits one
//! event; each message carries the highest seq it holds, so acknowledging
//! it acknowledges every event up to there (the window makes sure earlier
//! messages were acknowledged too).

use outpost_core::{Body, ClockQuality, Event, EventKind, Point, Value};
use serde_json::{json, Map, Value as Json};

use crate::log::StoredEvent;

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
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::U64(u) => json!(u),
        Value::F64(f) if f.is_finite() => json!(f),
        Value::F64(f) => json!(f.to_string()),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

fn points_json(points: &[Point]) -> Map<String, Json> {
    points
        .iter()
        .map(|p| (p.tag.clone(), value_json(&p.value)))
        .collect()
}

/// The body of an event as JSON.
pub fn body_json(ev: &Event) -> Json {
    match &ev.body {
        Body::Telemetry(p) | Body::Attributes(p) => {
            let mut m = points_json(p);
            let bad: Map<String, Json> = p
                .iter()
                .filter_map(|p| match &p.quality {
                    outpost_core::Quality::Good => None,
                    outpost_core::Quality::Bad { reason } => Some((p.tag.clone(), json!(reason))),
                    outpost_core::Quality::Stale => Some((p.tag.clone(), json!("stale"))),
                })
                .collect();
            if !bad.is_empty() {
                m.insert("_quality".into(), Json::Object(bad));
            }
            Json::Object(m)
        }
        Body::Alarm(a) => {
            json!({"name": a.name, "severity": format!("{:?}", a.severity).to_uppercase(),
                                 "state": format!("{:?}", a.state).to_lowercase(), "details": a.details})
        }
        Body::Status(s) => {
            json!({"status": format!("{:?}", s.status).to_lowercase(), "detail": s.detail})
        }
        Body::Audit(a) => json!({"action": a.action, "actor": a.actor, "detail": a.detail}),
        Body::Gap(g) => json!({"count": g.count, "first_seq": g.first_seq, "last_seq": g.last_seq,
                               "from_ms": g.from_ms, "to_ms": g.to_ms, "reason": g.reason}),
        _ => Json::Null,
    }
}

/// One event as a self-describing JSON object (generic MQTT, NATS).
pub fn event_json(gateway: &str, s: &StoredEvent) -> Json {
    json!({
        "gateway": gateway,
        "seq": s.seq.0,
        "device": s.event.device,
        "kind": s.event.kind().as_str(),
        "ts": s.event.ts.unix_ms,
        "clock": if s.event.ts.clock == ClockQuality::Synced { "synced" } else { "unsynced" },
        "body": body_json(&s.event),
    })
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
    for s in events {
        let topic = template
            .replace("{gateway}", gateway)
            .replace("{device}", device_token(&s.event.device))
            .replace("{kind}", s.event.kind().as_str());
        let item = event_json(gateway, s).to_string().into_bytes();
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
            topic,
            payload,
            last_seq: s.seq.0,
            first_seq: s.seq.0,
            events: 1,
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
pub const TB_OWN_TELEMETRY: &str = "v1/devices/me/telemetry";

/// ThingsBoard's telemetry record: `{"ts": ms, "values": {...}}`.
fn tb_record(ev: &Event) -> Json {
    let values = match &ev.body {
        Body::Telemetry(p) => Json::Object(points_json(p)),
        other => {
            let key = match other {
                Body::Alarm(_) => "alarm",
                Body::Status(_) => "status",
                Body::Audit(_) => "audit",
                Body::Gap(_) => "gap",
                _ => "event",
            };
            json!({ key: body_json(ev) })
        }
    };
    json!({"ts": ev.ts.unix_ms, "values": values})
}

/// ThingsBoard gateway API: runs of telemetry-like events become one
/// `v1/gateway/telemetry` message `{"device": [records...], ...}` (up to
/// `max_payload`); attributes go to `v1/gateway/attributes`; the gateway's
/// own events to `v1/devices/me/telemetry`. A run is cut where the topic
/// changes, so log order is kept across topics.
pub fn thingsboard(events: &[StoredEvent], max_payload: usize) -> Vec<Message> {
    #[derive(PartialEq, Clone, Copy)]
    enum Topic {
        Telemetry,
        Attributes,
        Own,
    }
    let topic_of = |s: &StoredEvent| {
        if s.event.device.is_empty() {
            Topic::Own
        } else if s.event.kind() == EventKind::Attribute {
            Topic::Attributes
        } else {
            Topic::Telemetry
        }
    };
    let finish = |topic: Topic, body: Json, first: u64, last: u64, n: usize| Message {
        topic: match topic {
            Topic::Telemetry => TB_TELEMETRY,
            Topic::Attributes => TB_ATTRIBUTES,
            Topic::Own => TB_OWN_TELEMETRY,
        }
        .to_string(),
        payload: body.to_string().into_bytes(),
        last_seq: last,
        first_seq: first,
        events: n,
    };
    let mut out = Vec::new();
    let mut run: Option<(Topic, Json, usize, u64, u64, usize)> = None;
    for s in events {
        let topic = topic_of(s);
        let (item, add_len) = match topic {
            Topic::Own => {
                let r = tb_record(&s.event);
                let l = r.to_string().len() + 1;
                (r, l)
            }
            Topic::Telemetry => {
                let r = tb_record(&s.event);
                let l = r.to_string().len() + s.event.device.len() + 8;
                (r, l)
            }
            Topic::Attributes => {
                let r = match &s.event.body {
                    Body::Attributes(p) => Json::Object(points_json(p)),
                    _ => Json::Null,
                };
                let l = r.to_string().len() + s.event.device.len() + 8;
                (r, l)
            }
        };
        if let Some((t, _, len, ..)) = &run {
            if *t != topic || len + add_len > max_payload {
                if let Some((t, body, _, first, last, n)) = run.take() {
                    out.push(finish(t, body, first, last, n));
                }
            }
        }
        let (_, body, len, _, last, n) = run.get_or_insert_with(|| {
            let empty = if topic == Topic::Own {
                json!([])
            } else {
                json!({})
            };
            (topic, empty, 2, s.seq.0, s.seq.0, 0)
        });
        match topic {
            Topic::Own => {
                if let Json::Array(a) = body {
                    a.push(item);
                }
            }
            Topic::Telemetry => {
                if let Json::Object(m) = body {
                    if let Json::Array(a) =
                        m.entry(s.event.device.clone()).or_insert_with(|| json!([]))
                    {
                        a.push(item);
                    }
                }
            }
            Topic::Attributes => {
                if let (Json::Object(m), Json::Object(attrs)) = (body, item) {
                    let e = m.entry(s.event.device.clone()).or_insert_with(|| json!({}));
                    if let Json::Object(dst) = e {
                        dst.extend(attrs);
                    }
                }
            }
        }
        *len += add_len;
        *last = s.seq.0;
        *n += 1;
    }
    if let Some((t, body, _, first, last, n)) = run {
        out.push(finish(t, body, first, last, n));
    }
    out
}

/// NATS: one message per event; subject `<prefix>.<gateway>.<device>.<kind>`.
pub fn nats(prefix: &str, gateway: &str, s: &StoredEvent) -> Message {
    Message {
        topic: format!(
            "{prefix}.{gateway}.{}.{}",
            device_token(&s.event.device),
            s.event.kind().as_str()
        ),
        payload: event_json(gateway, s).to_string().into_bytes(),
        last_seq: s.seq.0,
        first_seq: s.seq.0,
        events: 1,
    }
}

#[cfg(test)]
mod tests {
    use outpost_core::{Seq, Timestamp};

    use super::*;

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
}
