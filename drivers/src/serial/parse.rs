//! Turning a frame into tag values: a regular expression with named
//! captures and a type per capture, JSON objects (one per line), `key=value`
//! pairs, or a binary layout (offset, type, byte order) for fixed frames.
//!
//! A frame that does not parse is an error naming why, with the frame's
//! bytes escaped so that a technician can read what the instrument sent.

use outpost_core::{Point, Value};

/// The type a text capture is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextType {
    F64,
    I64,
    Bool,
    Str,
}

/// A field of a binary frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl BinType {
    pub fn width(self) -> usize {
        match self {
            BinType::U8 | BinType::I8 => 1,
            BinType::U16 | BinType::I16 => 2,
            BinType::U32 | BinType::I32 | BinType::F32 => 4,
            BinType::F64 => 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinField {
    pub name: String,
    pub offset: usize,
    pub kind: BinType,
    pub little_endian: bool,
}

#[derive(Debug, Clone)]
pub enum Parser {
    /// Named captures become tags, read as their type (default: a number
    /// if it reads as one, else text).
    Regex {
        re: regex_lite::Regex,
        types: Vec<(String, TextType)>,
    },
    /// A JSON object per frame; nested objects flatten to `a.b`.
    Json,
    /// `key=value` pairs, e.g. `T=21.5,H=40`.
    KeyValue {
        pairs: String,
        assign: String,
    },
    Binary(Vec<BinField>),
}

/// The frame as text a person can read: printable ASCII as is, the rest
/// escaped (`\r`, `\n`, `\t`, `\xNN`), at most 200 characters.
pub fn escaped(frame: &[u8]) -> String {
    let mut s = String::new();
    for &b in frame {
        if s.len() >= 200 {
            s.push('…');
            break;
        }
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02X}")),
        }
    }
    s
}

/// A text value read as `t`; `None` for the default guess.
fn text_value(raw: &str, t: Option<TextType>) -> Result<Value, String> {
    let v = raw.trim();
    match t {
        Some(TextType::F64) => v
            .parse::<f64>()
            .map(Value::F64)
            .map_err(|_| format!("{v:?} is not a number")),
        Some(TextType::I64) => v
            .parse::<i64>()
            .map(Value::I64)
            .map_err(|_| format!("{v:?} is not an integer")),
        Some(TextType::Bool) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok(Value::Bool(true)),
            "0" | "false" | "off" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("{v:?} is not a boolean")),
        },
        Some(TextType::Str) => Ok(Value::Str(v.to_string())),
        None => Ok(if let Ok(i) = v.parse::<i64>() {
            Value::I64(i)
        } else if let Ok(f) = v.parse::<f64>() {
            Value::F64(f)
        } else {
            Value::Str(v.to_string())
        }),
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<Point>) {
    let name = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten(&name(k), x, out);
            }
        }
        serde_json::Value::Bool(b) => out.push(Point::good(prefix, Value::Bool(*b))),
        serde_json::Value::Number(n) => {
            let value = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Value::I64(i),
                (None, Some(u), _) => Value::U64(u),
                (_, _, Some(f)) => Value::F64(f),
                _ => return,
            };
            out.push(Point::good(prefix, value));
        }
        serde_json::Value::String(s) => out.push(Point::good(prefix, Value::Str(s.clone()))),
        // Arrays and nulls carry no single value.
        _ => {}
    }
}

impl Parser {
    /// The tag values of one frame.
    pub fn parse(&self, frame: &[u8]) -> Result<Vec<Point>, String> {
        match self {
            Parser::Regex { re, types } => {
                let text = std::str::from_utf8(frame)
                    .map_err(|_| format!("not text: {}", escaped(frame)))?;
                let caps = re
                    .captures(text)
                    .ok_or_else(|| format!("does not match the pattern: {}", escaped(frame)))?;
                let mut out = Vec::new();
                for name in re.capture_names().flatten() {
                    let Some(m) = caps.name(name) else { continue };
                    let t = types.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
                    let v = text_value(m.as_str(), t).map_err(|e| format!("{name}: {e}"))?;
                    out.push(Point::good(name, v));
                }
                Ok(out)
            }
            Parser::Json => {
                let v: serde_json::Value = serde_json::from_slice(frame)
                    .map_err(|e| format!("not JSON ({e}): {}", escaped(frame)))?;
                if !v.is_object() {
                    return Err(format!("not a JSON object: {}", escaped(frame)));
                }
                let mut out = Vec::new();
                flatten("", &v, &mut out);
                Ok(out)
            }
            Parser::KeyValue { pairs, assign } => {
                let text = std::str::from_utf8(frame)
                    .map_err(|_| format!("not text: {}", escaped(frame)))?;
                let mut out = Vec::new();
                for pair in text
                    .split(pairs.as_str())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair
                        .split_once(assign.as_str())
                        .ok_or_else(|| format!("{pair:?} has no {assign:?}: {}", escaped(frame)))?;
                    out.push(Point::good(k.trim(), text_value(v, None)?));
                }
                if out.is_empty() {
                    return Err(format!("no pairs: {}", escaped(frame)));
                }
                Ok(out)
            }
            Parser::Binary(fields) => fields
                .iter()
                .map(|f| {
                    let end = f.offset + f.kind.width();
                    let b = frame.get(f.offset..end).ok_or_else(|| {
                        format!(
                            "{}: bytes {}..{} are past the frame's {} bytes",
                            f.name,
                            f.offset,
                            end,
                            frame.len()
                        )
                    })?;
                    Ok(Point::good(
                        f.name.as_str(),
                        binary_value(b, f.kind, f.little_endian),
                    ))
                })
                .collect(),
        }
    }
}

fn binary_value(b: &[u8], t: BinType, le: bool) -> Value {
    let mut a = [0u8; 8];
    let n = t.width();
    a[..n].copy_from_slice(&b[..n]);
    if le {
        a[..n].reverse();
    }
    // `a[..n]` is now big-endian.
    match t {
        BinType::U8 => Value::U64(u64::from(a[0])),
        BinType::I8 => Value::I64(i64::from(a[0] as i8)),
        BinType::U16 => Value::U64(u64::from(u16::from_be_bytes([a[0], a[1]]))),
        BinType::I16 => Value::I64(i64::from(i16::from_be_bytes([a[0], a[1]]))),
        BinType::U32 => Value::U64(u64::from(u32::from_be_bytes([a[0], a[1], a[2], a[3]]))),
        BinType::I32 => Value::I64(i64::from(i32::from_be_bytes([a[0], a[1], a[2], a[3]]))),
        BinType::F32 => Value::F64(f64::from(f32::from_be_bytes([a[0], a[1], a[2], a[3]]))),
        BinType::F64 => Value::F64(f64::from_be_bytes(a)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn values(p: &[Point]) -> Vec<(&str, Value)> {
        p.iter()
            .map(|p| (p.tag.as_str(), p.value.clone()))
            .collect()
    }

    #[test]
    fn a_scale_line_by_regex_with_types() {
        let p = Parser::Regex {
            re: regex_lite::Regex::new(
                r"^(?P<status>ST|US),(?P<kind>GS|NT),\s*(?P<weight>[-+]?\d+\.\d+)\s*(?P<unit>\w+)$",
            )
            .unwrap(),
            types: vec![
                ("weight".into(), TextType::F64),
                ("unit".into(), TextType::Str),
            ],
        };
        let got = p.parse(b"ST,GS,  +012.345 kg").unwrap();
        assert_eq!(
            values(&got),
            [
                ("status", Value::Str("ST".into())),
                ("kind", Value::Str("GS".into())),
                ("weight", Value::F64(12.345)),
                ("unit", Value::Str("kg".into())),
            ]
        );
        let e = p.parse(b"ST,GS,  ---- kg\x07").unwrap_err();
        assert_eq!(e, "does not match the pattern: ST,GS,  ---- kg\\x07");
    }

    #[test]
    fn json_lines_flatten_and_refuse_non_objects() {
        let got = Parser::Json
            .parse(
                br#"{"t": 21.5, "n": 3, "ok": true, "gps": {"lat": 47.1}, "id": "a", "list": [1]}"#,
            )
            .unwrap();
        let mut v = values(&got);
        v.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            v,
            [
                ("gps.lat", Value::F64(47.1)),
                ("id", Value::Str("a".into())),
                ("n", Value::I64(3)),
                ("ok", Value::Bool(true)),
                ("t", Value::F64(21.5)),
            ]
        );
        assert!(Parser::Json
            .parse(b"[1,2]")
            .unwrap_err()
            .starts_with("not a JSON object"));
        assert!(Parser::Json
            .parse(b"{bad")
            .unwrap_err()
            .starts_with("not JSON"));
    }

    #[test]
    fn key_value_pairs() {
        let p = Parser::KeyValue {
            pairs: ",".into(),
            assign: "=".into(),
        };
        assert_eq!(
            values(&p.parse(b"T=21.5, H=40,ID=boiler").unwrap()),
            [
                ("T", Value::F64(21.5)),
                ("H", Value::I64(40)),
                ("ID", Value::Str("boiler".into()))
            ]
        );
        assert!(p.parse(b"T21.5").unwrap_err().contains("has no \"=\""));
        assert!(p.parse(b" , ").unwrap_err().starts_with("no pairs"));
    }

    #[test]
    fn a_binary_layout_in_both_byte_orders() {
        let fields = vec![
            BinField {
                name: "count".into(),
                offset: 0,
                kind: BinType::U16,
                little_endian: false,
            },
            BinField {
                name: "temp".into(),
                offset: 2,
                kind: BinType::I16,
                little_endian: true,
            },
            BinField {
                name: "flow".into(),
                offset: 4,
                kind: BinType::F32,
                little_endian: false,
            },
            BinField {
                name: "flag".into(),
                offset: 8,
                kind: BinType::U8,
                little_endian: false,
            },
        ];
        let mut frame = vec![0x01, 0x02, 0xFE, 0xFF];
        frame.extend_from_slice(&2.5f32.to_be_bytes());
        frame.push(7);
        let got = Parser::Binary(fields.clone()).parse(&frame).unwrap();
        assert_eq!(
            values(&got),
            [
                ("count", Value::U64(0x0102)),
                ("temp", Value::I64(-2)),
                ("flow", Value::F64(2.5)),
                ("flag", Value::U64(7)),
            ]
        );
        let e = Parser::Binary(fields).parse(&frame[..6]).unwrap_err();
        assert_eq!(e, "flow: bytes 4..8 are past the frame's 6 bytes");
    }

    #[test]
    fn frames_are_shown_escaped() {
        assert_eq!(escaped(b"A\r\n\x02\\"), "A\\r\\n\\x02\\\\");
        assert!(escaped(&[b'x'; 500]).ends_with('…'));
    }
}
