//! The encoding of events in the log: one version byte, then postcard.
//!
//! The version byte lets a later release read rows written by an older one;
//! a row with an unknown version is reported as such, never guessed at.

use crate::Event;

/// The format written by this build. Version 1 had no route (every event
/// went to every uplink); version 2 had no boot-relative or corrected
/// timestamps ([`crate::ClockQuality`]'s last two variants). Both are still
/// read; a release that knows only version 2 would fail on a version 3
/// timestamp, which is why the version changed.
pub const FORMAT_VERSION: u8 = 3;

/// Version 1 records.
#[derive(serde::Deserialize)]
struct EventV1 {
    device: String,
    ts: crate::Timestamp,
    body: crate::Body,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty event record")]
    Empty,
    #[error("event record has format version {0}, this build reads version {FORMAT_VERSION}")]
    UnknownVersion(u8),
    #[error("event record does not decode: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Appends the encoding of `ev` to `buf` (which is not cleared).
pub fn encode_into(ev: &Event, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    buf.push(FORMAT_VERSION);
    let out = postcard::to_extend(ev, std::mem::take(buf))?;
    *buf = out;
    Ok(())
}

pub fn encode(ev: &Event) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(64);
    encode_into(ev, &mut buf)?;
    Ok(buf)
}

pub fn decode(bytes: &[u8]) -> Result<Event, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        // Version 2 is version 3 without the new clock variants.
        FORMAT_VERSION | 2 => Ok(postcard::from_bytes(rest)?),
        1 => {
            let v1: EventV1 = postcard::from_bytes(rest)?;
            Ok(Event::new(v1.device, v1.ts, v1.body))
        }
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
            decode(&[4, 0]),
            Err(CodecError::UnknownVersion(4))
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
        // A version 2 record (no new variant) is the same bytes under 2.
        let ev = Event::new("d", Timestamp::unsynced(9), Body::Telemetry(vec![]));
        let mut bytes = encode(&ev).unwrap();
        bytes[0] = 2;
        assert_eq!(decode(&bytes).unwrap(), ev);
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
    fn unknown_version_is_reported() {
        assert!(matches!(
            decode(&[9, 0, 0]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
    }
}
