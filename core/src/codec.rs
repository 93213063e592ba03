//! The encoding of events in the log: one version byte, then postcard.
//!
//! The version byte lets a later release read rows written by an older one;
//! a row with an unknown version is reported as such, never guessed at.

//!
//! Telemetry whose points are all good is usually written in the compact
//! form (version [`COMPACT_VERSION`]): the tag names are replaced by the id
//! of their list in the log's table of tag lists ([`Tagsets`]), so a row
//! holds the values only. A device polled every second repeats the same tag
//! list forever; the names took about half of every row, and every byte
//! of a row is written to the SD card twice (WAL, then checkpoint).

use crate::{Body, Event, Point, Quality, Route, Timestamp, Value};

/// The format written by this build. Version 1 had no route (every event
/// went to every uplink); version 2 had no boot-relative or corrected
/// timestamps ([`crate::ClockQuality`]'s last two variants); version 3 had
/// alarms without acknowledgement, times and propagation, and no
/// [`Body::ScopedAttributes`]; version 5 had no [`Body::Publish`] (its
/// records read as version 6's). All are still read; a release that knows an
/// older version fails on the newer one's records (postcard is not
/// self-describing), which is why the version changes with the layout.
pub const FORMAT_VERSION: u8 = 6;

/// The compact form of good telemetry: version byte, then postcard of
/// (device, timestamp, route, tag list id, values).
pub const COMPACT_VERSION: u8 = 4;

/// Tag lists by id, for the compact form: the log keeps them in a table of
/// their own, and a row refers to one.
pub trait Tagsets {
    /// The id of `tags` (in this order), given a new one if need be; `None`
    /// when there is no room for more (the event is then written in full).
    fn intern(&mut self, tags: &[&str]) -> Option<u32>;
    /// The tag list with this id.
    fn get(&self, id: u32) -> Option<&[String]>;
}

/// No tag lists: everything is written in full; compact rows do not decode.
#[derive(Debug, Default)]
pub struct NoTagsets;

impl Tagsets for NoTagsets {
    fn intern(&mut self, _tags: &[&str]) -> Option<u32> {
        None
    }
    fn get(&self, _id: u32) -> Option<&[String]> {
        None
    }
}

#[derive(serde::Serialize)]
struct CompactOut<'a> {
    device: &'a str,
    ts: Timestamp,
    route: &'a Route,
    tagset: u32,
    values: Vec<&'a Value>,
}

#[derive(serde::Deserialize)]
struct CompactIn {
    device: String,
    ts: Timestamp,
    route: Route,
    tagset: u32,
    values: Vec<Value>,
}

/// Records of versions 1 to 3, whose bodies had the old alarm layout.
mod legacy {
    use crate::{AlarmSeverity, AlarmState, Audit, Gap, Point, Route, Status, Timestamp};

    #[derive(serde::Deserialize)]
    pub struct EventV1 {
        pub device: String,
        pub ts: Timestamp,
        pub body: Body,
    }

    #[derive(serde::Deserialize)]
    pub struct EventV3 {
        pub device: String,
        pub ts: Timestamp,
        pub body: Body,
        pub route: Route,
    }

    #[derive(serde::Deserialize)]
    pub enum Body {
        Telemetry(Vec<Point>),
        Attributes(Vec<Point>),
        Alarm(Alarm),
        Status(Status),
        Audit(Audit),
        Gap(Gap),
    }

    #[derive(serde::Deserialize)]
    pub struct Alarm {
        name: String,
        severity: AlarmSeverity,
        state: AlarmState,
        details: String,
    }

    impl Body {
        /// The body of today's layout; an old alarm's times are its
        /// event's time (version 3 kept no others).
        pub fn current(self, ts_ms: i64) -> crate::Body {
            match self {
                Body::Telemetry(p) => crate::Body::Telemetry(p),
                Body::Attributes(p) => crate::Body::Attributes(p),
                Body::Alarm(a) => {
                    let mut now = crate::Alarm::raised(a.name, a.severity, a.details, ts_ms);
                    now.state = a.state;
                    if a.state == AlarmState::Cleared {
                        now.clear_ms = Some(ts_ms);
                    }
                    crate::Body::Alarm(now)
                }
                Body::Status(s) => crate::Body::Status(s),
                Body::Audit(a) => crate::Body::Audit(a),
                Body::Gap(g) => crate::Body::Gap(g),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty event record")]
    Empty,
    #[error("event record has format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("event record does not decode: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("event record refers to tag list {0}, which the log does not have")]
    UnknownTagset(u32),
    #[error("event record has {values} values for a tag list of {tags}")]
    TagsetMismatch { values: usize, tags: usize },
}

/// Appends the encoding of `ev` to `buf` (which is not cleared).
pub fn encode_into(ev: &Event, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    buf.push(FORMAT_VERSION);
    let out = postcard::to_extend(ev, std::mem::take(buf))?;
    *buf = out;
    Ok(())
}

/// As [`encode_into`], in the compact form when `ev` is telemetry with
/// every point good and `sets` has (or makes room for) its tag list.
pub fn encode_compact_into(
    ev: &Event,
    buf: &mut Vec<u8>,
    sets: &mut dyn Tagsets,
) -> Result<(), CodecError> {
    if let Body::Telemetry(points) = &ev.body {
        if !points.is_empty() && points.iter().all(|p| p.quality == Quality::Good) {
            let tags: Vec<&str> = points.iter().map(|p| p.tag.as_str()).collect();
            if let Some(tagset) = sets.intern(&tags) {
                buf.push(COMPACT_VERSION);
                let rec = CompactOut {
                    device: &ev.device,
                    ts: ev.ts,
                    route: &ev.route,
                    tagset,
                    values: points.iter().map(|p| &p.value).collect(),
                };
                let out = postcard::to_extend(&rec, std::mem::take(buf))?;
                *buf = out;
                return Ok(());
            }
        }
    }
    encode_into(ev, buf)
}

/// As [`decode`], also reading the compact form with `sets`.
pub fn decode_with(bytes: &[u8], sets: &dyn Tagsets) -> Result<Event, CodecError> {
    match bytes.split_first() {
        Some((&COMPACT_VERSION, rest)) => {
            let c: CompactIn = postcard::from_bytes(rest)?;
            let tags = sets
                .get(c.tagset)
                .ok_or(CodecError::UnknownTagset(c.tagset))?;
            if tags.len() != c.values.len() {
                return Err(CodecError::TagsetMismatch {
                    values: c.values.len(),
                    tags: tags.len(),
                });
            }
            let points = tags
                .iter()
                .zip(c.values)
                .map(|(t, v)| Point::good(t.clone(), v))
                .collect();
            Ok(Event {
                device: c.device,
                ts: c.ts,
                body: Body::Telemetry(points),
                route: c.route,
            })
        }
        _ => decode(bytes),
    }
}

/// The tag list id of a compact record (without decoding the rest).
pub fn compact_tagset(bytes: &[u8]) -> Option<u32> {
    let (&v, rest) = bytes.split_first()?;
    if v != COMPACT_VERSION {
        return None;
    }
    postcard::from_bytes::<CompactIn>(rest)
        .ok()
        .map(|c| c.tagset)
}

pub fn encode(ev: &Event) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(64);
    encode_into(ev, &mut buf)?;
    Ok(buf)
}

pub fn decode(bytes: &[u8]) -> Result<Event, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        // Version 6 only added a variant at the end of the body.
        FORMAT_VERSION | 5 => Ok(postcard::from_bytes(rest)?),
        // Version 2 is version 3 without the new clock variants.
        3 | 2 => {
            let v: legacy::EventV3 = postcard::from_bytes(rest)?;
            let mut ev = Event::new(v.device, v.ts, v.body.current(v.ts.unix_ms));
            ev.route = v.route;
            Ok(ev)
        }
        1 => {
            let v1: legacy::EventV1 = postcard::from_bytes(rest)?;
            Ok(Event::new(v1.device, v1.ts, v1.body.current(v1.ts.unix_ms)))
        }
        COMPACT_VERSION => Err(CodecError::UnknownTagset(
            compact_tagset(bytes).unwrap_or(u32::MAX),
        )),
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Point, Quality, Timestamp, Value};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<u64>().prop_map(Value::U64),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::F64),
            ".{0,12}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn telemetry_round_trips(device in "[a-z0-9-]{0,12}", ms in any::<i64>(),
                                 pts in proptest::collection::vec(("[a-z_]{1,8}", value()), 0..5)) {
            let ev = Event::new(device, Timestamp::unsynced(ms), Body::Telemetry(
                pts.into_iter().map(|(t, v)| Point { tag: t, value: v, quality: Quality::Good }).collect()));
            let bytes = encode(&ev).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), ev);
        }

        #[test]
        fn routes_round_trip(names in proptest::collection::vec("[a-z]{1,6}", 0..3), local in any::<bool>()) {
            let mut ev = Event::new("d", Timestamp::synced(1), Body::Telemetry(vec![]));
            ev.route = if local { crate::Route::Local } else { crate::Route::Only(names) };
            prop_assert_eq!(decode(&encode(&ev).unwrap()).unwrap(), ev);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ignored = decode(&bytes);
        }
    }

    #[test]
    fn version_1_records_still_read_with_every_uplink() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            device: &'a str,
            ts: Timestamp,
            body: &'a Body,
        }
        let body = Body::Telemetry(vec![Point::good("t", Value::I64(3))]);
        let mut bytes = vec![1u8];
        bytes.extend(
            postcard::to_allocvec(&V1 {
                device: "old",
                ts: Timestamp::synced(5),
                body: &body,
            })
            .unwrap(),
        );
        let ev = decode(&bytes).unwrap();
        assert_eq!(ev, Event::new("old", Timestamp::synced(5), body));
        assert_eq!(ev.route, crate::Route::All);
        assert!(matches!(
            decode(&[7, 0]),
            Err(CodecError::UnknownVersion(7))
        ));
    }

    #[test]
    fn clock_variants_round_trip_and_version_2_still_reads() {
        for clock in [
            crate::ClockQuality::Synced,
            crate::ClockQuality::Unsynced,
            crate::ClockQuality::SinceBoot { boot_ms: 12_345 },
            crate::ClockQuality::Corrected,
        ] {
            let ev = Event::new(
                "d",
                Timestamp { unix_ms: 7, clock },
                Body::Telemetry(vec![Point::good("t", Value::I64(3))]),
            );
            assert_eq!(decode(&encode(&ev).unwrap()).unwrap(), ev);
        }
        // Records of versions 2 and 3 (the same bytes when there is no
        // alarm and no new clock variant) still read.
        let ev = Event::new("d", Timestamp::unsynced(9), Body::Telemetry(vec![]));
        for v in [2, 3] {
            let mut bytes = encode(&ev).unwrap();
            bytes[0] = v;
            assert_eq!(decode(&bytes).unwrap(), ev);
        }
    }

    #[test]
    fn version_3_alarms_read_with_their_event_time_and_new_ones_round_trip() {
        // A version 3 alarm record: the layout before acknowledgement,
        // times and propagation.
        #[derive(serde::Serialize)]
        struct OldAlarm<'a> {
            name: &'a str,
            severity: crate::AlarmSeverity,
            state: crate::AlarmState,
            details: &'a str,
        }
        #[derive(serde::Serialize)]
        enum OldBody<'a> {
            _Telemetry(Vec<Point>),
            _Attributes(Vec<Point>),
            Alarm(OldAlarm<'a>),
        }
        #[derive(serde::Serialize)]
        struct Old<'a> {
            device: &'a str,
            ts: Timestamp,
            body: OldBody<'a>,
            route: crate::Route,
        }
        let mut bytes = vec![3u8];
        bytes.extend(
            postcard::to_allocvec(&Old {
                device: "boiler",
                ts: Timestamp::synced(1_000),
                body: OldBody::Alarm(OldAlarm {
                    name: "High Temperature",
                    severity: crate::AlarmSeverity::Major,
                    state: crate::AlarmState::Cleared,
                    details: "{}",
                }),
                route: crate::Route::Local,
            })
            .unwrap(),
        );
        let ev = decode(&bytes).unwrap();
        let Body::Alarm(a) = &ev.body else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (a.name.as_str(), a.start_ms, a.clear_ms, a.status()),
            ("High Temperature", 1_000, Some(1_000), "CLEARED_UNACK")
        );
        assert_eq!(ev.route, crate::Route::Local);

        let mut a = crate::Alarm::raised("t", crate::AlarmSeverity::Minor, "{}", 5);
        a.acknowledged = true;
        a.ack_ms = Some(7);
        a.propagation.relation_types = vec!["Contains".into()];
        for body in [
            Body::Alarm(a),
            Body::ScopedAttributes(
                crate::AttributeScope::Shared,
                vec![Point::good("setpoint", Value::F64(21.5))],
            ),
        ] {
            let ev = Event::new("d", Timestamp::synced(9), body);
            let bytes = encode(&ev).unwrap();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(decode(&bytes).unwrap(), ev);
        }
    }

    #[derive(Default)]
    struct Sets(Vec<Vec<String>>);

    impl Tagsets for Sets {
        fn intern(&mut self, tags: &[&str]) -> Option<u32> {
            if let Some(i) = self
                .0
                .iter()
                .position(|t| t.iter().map(String::as_str).eq(tags.iter().copied()))
            {
                return Some(i as u32);
            }
            self.0.push(tags.iter().map(|t| t.to_string()).collect());
            Some(self.0.len() as u32 - 1)
        }
        fn get(&self, id: u32) -> Option<&[String]> {
            self.0.get(id as usize).map(Vec::as_slice)
        }
    }

    #[test]
    fn good_telemetry_is_compact_and_reads_back() {
        let mut sets = Sets::default();
        let mut ev = Event::new(
            "boiler-1",
            Timestamp::synced(1_764_000_000_000),
            Body::Telemetry(
                (0..20)
                    .map(|i| Point::good(format!("supply_temperature_{i}"), Value::U64(i)))
                    .collect(),
            ),
        );
        ev.route = crate::Route::Only(vec!["cloud".into()]);
        let full = encode(&ev).unwrap();
        let mut compact = Vec::new();
        encode_compact_into(&ev, &mut compact, &mut sets).unwrap();
        assert_eq!(compact[0], COMPACT_VERSION);
        assert!(
            compact.len() * 5 < full.len(),
            "{} vs {}",
            compact.len(),
            full.len()
        );
        assert_eq!(decode_with(&compact, &sets).unwrap(), ev);
        assert_eq!(compact_tagset(&compact), Some(0));
        // Without the tag lists it is a clear error, never a guess.
        assert!(matches!(
            decode(&compact),
            Err(CodecError::UnknownTagset(0))
        ));
        assert!(matches!(
            decode_with(&compact, &NoTagsets),
            Err(CodecError::UnknownTagset(0))
        ));
        // A second reading of the same tags shares the list.
        let mut again = Vec::new();
        encode_compact_into(&ev, &mut again, &mut sets).unwrap();
        assert_eq!(sets.0.len(), 1);
        // A bad point, or no room for lists: the full form.
        let mut bad = ev.clone();
        if let Body::Telemetry(p) = &mut bad.body {
            p[3].quality = Quality::Stale;
        }
        let mut out = Vec::new();
        encode_compact_into(&bad, &mut out, &mut sets).unwrap();
        assert_eq!(out[0], FORMAT_VERSION);
        assert_eq!(decode_with(&out, &sets).unwrap(), bad);
        let mut out = Vec::new();
        encode_compact_into(&ev, &mut out, &mut NoTagsets).unwrap();
        assert_eq!(out, full);
        // A list of another length than the values is refused.
        let mut wrong = Sets::default();
        wrong.0.push(vec!["a".into()]);
        assert!(matches!(
            decode_with(&compact, &wrong),
            Err(CodecError::TagsetMismatch {
                values: 20,
                tags: 1
            })
        ));
    }

    #[test]
    fn a_typical_reading_is_small() {
        let ev = Event::new(
            "boiler-1",
            Timestamp::synced(1_764_000_000_000),
            Body::Telemetry(vec![Point::good("temperature", Value::F64(21.5))]),
        );
        let n = encode(&ev).unwrap().len();
        assert!(n < 48, "encoded size {n}");
    }

    #[test]
    fn version_5_records_read_and_publish_events_round_trip() {
        // A version-5 record is a version-6 one without the new variant:
        // the same bytes after the version byte.
        let ev = Event::new(
            "boiler-1",
            Timestamp::synced(1_764_000_000_000),
            Body::ScopedAttributes(
                crate::AttributeScope::Server,
                vec![Point::good("limit", Value::I64(90))],
            ),
        );
        let mut v5 = encode(&ev).unwrap();
        assert_eq!(v5[0], 6);
        v5[0] = 5;
        assert_eq!(decode(&v5).unwrap(), ev);
        let mut p = Event::new(
            "boiler-1",
            Timestamp::synced(1_764_000_000_000),
            Body::Publish(crate::Publish {
                topic: "site/boiler-1".into(),
                payload: "{\"t\":21}".into(),
                retain: true,
            }),
        );
        p.route = Route::Only(vec!["site".into()]);
        assert_eq!(decode(&encode(&p).unwrap()).unwrap(), p);
        assert_eq!(p.kind(), crate::EventKind::Publish);
    }

    #[test]
    fn unknown_version_is_reported() {
        assert!(matches!(
            decode(&[9, 0, 0]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
    }
}
