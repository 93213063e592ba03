//! Registers to values and back: types, word and byte order, bits, scale and
//! offset, and the range checks of writes.

use outpost_config::modbus::{ModbusTag, ModbusType, WordOrder};
use outpost_core::Value;

/// The big-endian bytes of a value held in `regs`, undoing `order`.
fn ordered_bytes(regs: &[u16], order: WordOrder) -> Vec<u8> {
    let mut words: Vec<u16> = regs.to_vec();
    if order.words_swapped() {
        words.reverse();
    }
    let mut out = Vec::with_capacity(words.len() * 2);
    for w in words {
        let [hi, lo] = w.to_be_bytes();
        if order.bytes_swapped() {
            out.extend_from_slice(&[lo, hi]);
        } else {
            out.extend_from_slice(&[hi, lo]);
        }
    }
    out
}

/// The registers that carry the big-endian `bytes` in `order`.
fn registers_from(bytes: &[u8], order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (a, b) = (c[0], c.get(1).copied().unwrap_or(0));
            if order.bytes_swapped() {
                u16::from_be_bytes([b, a])
            } else {
                u16::from_be_bytes([a, b])
            }
        })
        .collect();
    if order.words_swapped() {
        words.reverse();
    }
    words
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Decodes a register tag from its registers (exactly `tag.width()` of them).
pub fn decode_registers(tag: &ModbusTag, regs: &[u16]) -> Value {
    let kind = tag.kind();
    if kind == ModbusType::Bool {
        let bit = tag.bit.unwrap_or(0).min(15);
        return Value::Bool(regs.first().is_some_and(|r| r & (1 << bit) != 0));
    }
    if let ModbusType::Str(_) = kind {
        let bytes = ordered_bytes(regs, bytes_only(tag.order));
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        return Value::Str(
            String::from_utf8_lossy(&bytes[..end])
                .trim_end()
                .to_string(),
        );
    }
    let b = ordered_bytes(regs, tag.order);
    let raw: Raw = match kind {
        ModbusType::U16 => Raw::U(u64::from(u16::from_be_bytes(arr(&b)))),
        ModbusType::I16 => Raw::I(i64::from(i16::from_be_bytes(arr(&b)))),
        ModbusType::U32 => Raw::U(u64::from(u32::from_be_bytes(arr(&b)))),
        ModbusType::I32 => Raw::I(i64::from(i32::from_be_bytes(arr(&b)))),
        ModbusType::U64 => Raw::U(u64::from_be_bytes(arr(&b))),
        ModbusType::I64 => Raw::I(i64::from_be_bytes(arr(&b))),
        ModbusType::F32 => Raw::F(f64::from(f32::from_be_bytes(arr(&b)))),
        ModbusType::F64 => Raw::F(f64::from_be_bytes(arr(&b))),
        ModbusType::Bool | ModbusType::Str(_) => Raw::F(f64::NAN),
    };
    scaled(tag, raw)
}

enum Raw {
    U(u64),
    I(i64),
    F(f64),
}

/// Applies scale and offset; integers stay integers when there is none.
fn scaled(tag: &ModbusTag, raw: Raw) -> Value {
    let plain = tag.scale == 1.0 && tag.offset == 0.0;
    match raw {
        Raw::U(v) if plain => Value::U64(v),
        Raw::I(v) if plain => Value::I64(v),
        Raw::F(v) if plain => Value::F64(v),
        Raw::U(v) => Value::F64(v as f64 * tag.scale + tag.offset),
        Raw::I(v) => Value::F64(v as f64 * tag.scale + tag.offset),
        Raw::F(v) => Value::F64(v * tag.scale + tag.offset),
    }
}

/// Strings keep their character order; only byte swapping applies.
fn bytes_only(o: WordOrder) -> WordOrder {
    if o.bytes_swapped() {
        WordOrder::BADC
    } else {
        WordOrder::ABCD
    }
}

/// Why a value cannot be written to a tag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("tag {0:?} is not writable")]
    NotWritable(String),
    #[error("tag {tag:?} takes {expected}, got {got}")]
    Type {
        tag: String,
        expected: String,
        got: String,
    },
    #[error("{value} is outside the range of tag {tag:?} ({min} to {max})")]
    Range {
        tag: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("string of {len} bytes does not fit tag {tag:?} ({room} bytes)")]
    TooLong {
        tag: String,
        len: usize,
        room: usize,
    },
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::I64(i) => Some(*i as f64),
        Value::U64(u) => Some(*u as f64),
        Value::F64(f) => Some(*f),
        _ => None,
    }
}

/// The raw (unscaled) range a type can hold.
fn type_range(kind: ModbusType) -> (f64, f64) {
    match kind {
        ModbusType::U16 => (0.0, f64::from(u16::MAX)),
        ModbusType::I16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        ModbusType::U32 => (0.0, f64::from(u32::MAX)),
        ModbusType::I32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        ModbusType::U64 => (0.0, u64::MAX as f64),
        ModbusType::I64 => (i64::MIN as f64, i64::MAX as f64),
        ModbusType::F32 => (f64::from(f32::MIN), f64::from(f32::MAX)),
        _ => (f64::MIN, f64::MAX),
    }
}

/// What a write puts on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    Coil(bool),
    Registers(Vec<u16>),
}

/// Checks `value` against the tag (writable, type, configured limits, the
/// type's range after undoing scale and offset) and encodes it.
///
/// # Errors
/// [`WriteError`] saying what is wrong; nothing is written then.
pub fn encode_write(tag: &ModbusTag, value: &Value) -> Result<Encoded, WriteError> {
    if !tag.writable {
        return Err(WriteError::NotWritable(tag.name.clone()));
    }
    let kind = tag.kind();
    let type_err = |expected: &str| WriteError::Type {
        tag: tag.name.clone(),
        expected: expected.to_string(),
        got: value.to_string(),
    };
    match kind {
        ModbusType::Bool => match value {
            Value::Bool(b) => Ok(Encoded::Coil(*b)),
            Value::I64(0) | Value::U64(0) => Ok(Encoded::Coil(false)),
            Value::I64(1) | Value::U64(1) => Ok(Encoded::Coil(true)),
            _ => Err(type_err("true or false")),
        },
        ModbusType::Str(n) => {
            let Value::Str(s) = value else {
                return Err(type_err("a string"));
            };
            let room = usize::from(n) * 2;
            if s.len() > room {
                return Err(WriteError::TooLong {
                    tag: tag.name.clone(),
                    len: s.len(),
                    room,
                });
            }
            let mut bytes = s.as_bytes().to_vec();
            bytes.resize(room, 0);
            Ok(Encoded::Registers(registers_from(
                &bytes,
                bytes_only(tag.order),
            )))
        }
        _ => {
            let eng = as_f64(value).ok_or_else(|| type_err("a number"))?;
            if !eng.is_finite() {
                return Err(type_err("a finite number"));
            }
            let (tmin, tmax) = type_range(kind);
            let lo = tag.write_min.unwrap_or(f64::MIN);
            let hi = tag.write_max.unwrap_or(f64::MAX);
            let raw = (eng - tag.offset) / tag.scale;
            let integral = !matches!(kind, ModbusType::F32 | ModbusType::F64);
            let raw = if integral { raw.round() } else { raw };
            if eng < lo || eng > hi || raw < tmin || raw > tmax {
                // Report the limits in engineering units.
                let (a, b) = (tmin * tag.scale + tag.offset, tmax * tag.scale + tag.offset);
                let (emin, emax) = (a.min(b).max(lo), a.max(b).min(hi));
                return Err(WriteError::Range {
                    tag: tag.name.clone(),
                    value: eng,
                    min: emin,
                    max: emax,
                });
            }
            let bytes: Vec<u8> = match kind {
                ModbusType::U16 => (raw as u16).to_be_bytes().to_vec(),
                ModbusType::I16 => (raw as i16).to_be_bytes().to_vec(),
                ModbusType::U32 => (raw as u32).to_be_bytes().to_vec(),
                ModbusType::I32 => (raw as i32).to_be_bytes().to_vec(),
                ModbusType::U64 => match value {
                    Value::U64(u) if tag.scale == 1.0 && tag.offset == 0.0 => {
                        u.to_be_bytes().to_vec()
                    }
                    _ => (raw as u64).to_be_bytes().to_vec(),
                },
                ModbusType::I64 => match value {
                    Value::I64(i) if tag.scale == 1.0 && tag.offset == 0.0 => {
                        i.to_be_bytes().to_vec()
                    }
                    _ => (raw as i64).to_be_bytes().to_vec(),
                },
                ModbusType::F32 => (raw as f32).to_be_bytes().to_vec(),
                _ => raw.to_be_bytes().to_vec(),
            };
            Ok(Encoded::Registers(registers_from(&bytes, tag.order)))
        }
    }
}

#[cfg(test)]
mod tests {
    use outpost_config::modbus::Table;

    use super::*;

    pub(crate) fn tag(kind: ModbusType, order: WordOrder) -> ModbusTag {
        ModbusTag {
            kind: Some(kind),
            order,
            writable: true,
            ..ModbusTag::new("t", Table::Holding, 0)
        }
    }

    #[test]
    fn f32_in_all_four_orders() {
        // 123.456f32 = 0x42F6E979: A=42 B=F6 C=E9 D=79.
        let cases = [
            (WordOrder::ABCD, [0x42F6, 0xE979]),
            (WordOrder::CDAB, [0xE979, 0x42F6]),
            (WordOrder::BADC, [0xF642, 0x79E9]),
            (WordOrder::DCBA, [0x79E9, 0xF642]),
        ];
        for (order, regs) in cases {
            let t = tag(ModbusType::F32, order);
            assert_eq!(
                decode_registers(&t, &regs),
                Value::F64(f64::from(123.456f32)),
                "{order:?}"
            );
            assert_eq!(
                encode_write(&t, &Value::F64(f64::from(123.456f32))),
                Ok(Encoded::Registers(regs.to_vec())),
                "{order:?}"
            );
        }
    }

    #[test]
    fn integers_scale_bits_and_strings() {
        assert_eq!(
            decode_registers(&tag(ModbusType::I16, WordOrder::ABCD), &[0xFFFE]),
            Value::I64(-2)
        );
        assert_eq!(
            decode_registers(&tag(ModbusType::I16, WordOrder::BADC), &[0xFEFF]),
            Value::I64(-2)
        );
        assert_eq!(
            decode_registers(&tag(ModbusType::U32, WordOrder::CDAB), &[0x0002, 0x0001]),
            Value::U64(0x0001_0002)
        );
        assert_eq!(
            decode_registers(
                &tag(ModbusType::I64, WordOrder::DCBA),
                &[0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]
            ),
            Value::I64(-2)
        );
        let mut t = tag(ModbusType::U16, WordOrder::ABCD);
        t.scale = 0.1;
        t.offset = -40.0;
        assert_eq!(decode_registers(&t, &[650]), Value::F64(650.0 * 0.1 - 40.0));
        assert_eq!(
            encode_write(&t, &Value::F64(25.0)),
            Ok(Encoded::Registers(vec![650]))
        );
        let mut b = tag(ModbusType::Bool, WordOrder::ABCD);
        b.bit = Some(3);
        assert_eq!(decode_registers(&b, &[0b1000]), Value::Bool(true));
        assert_eq!(decode_registers(&b, &[0b0111]), Value::Bool(false));
        let s = tag(ModbusType::Str(3), WordOrder::ABCD);
        assert_eq!(
            decode_registers(&s, &[0x4142, 0x4300, 0x0000]),
            Value::Str("ABC".into())
        );
        let s = tag(ModbusType::Str(2), WordOrder::BADC);
        assert_eq!(
            decode_registers(&s, &[0x4241, 0x0043]),
            Value::Str("ABC".into())
        );
    }

    #[test]
    fn writes_are_checked() {
        let t = tag(ModbusType::U16, WordOrder::ABCD);
        assert!(matches!(
            encode_write(&t, &Value::I64(70_000)),
            Err(WriteError::Range { .. })
        ));
        assert!(matches!(
            encode_write(&t, &Value::I64(-1)),
            Err(WriteError::Range { .. })
        ));
        assert!(matches!(
            encode_write(&t, &Value::Str("x".into())),
            Err(WriteError::Type { .. })
        ));
        let mut lim = t.clone();
        lim.write_max = Some(100.0);
        assert!(
            matches!(encode_write(&lim, &Value::I64(101)), Err(WriteError::Range { max, .. }) if max == 100.0)
        );
        let mut ro = t.clone();
        ro.writable = false;
        assert!(matches!(
            encode_write(&ro, &Value::I64(1)),
            Err(WriteError::NotWritable(_))
        ));
        let s = tag(ModbusType::Str(1), WordOrder::ABCD);
        assert!(matches!(
            encode_write(&s, &Value::Str("abc".into())),
            Err(WriteError::TooLong { .. })
        ));
        assert_eq!(
            encode_write(
                &tag(ModbusType::I64, WordOrder::ABCD),
                &Value::I64(i64::MIN)
            ),
            Ok(Encoded::Registers(vec![0x8000, 0, 0, 0]))
        );
    }
}
