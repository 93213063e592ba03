//! The encoding of events in the log: one version byte, then postcard.
//!
//! The version byte lets a later release read rows written by an older one;
//! a row with an unknown version is reported as such, never guessed at.

use crate::Event;

/// The format written by this build.
pub const FORMAT_VERSION: u8 = 1;

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
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    Ok(postcard::from_bytes(rest)?)
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
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ignored = decode(&bytes);
        }
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
