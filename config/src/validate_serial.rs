//! Checks of `[device.serial]` that serde cannot make: one framing, one
//! parser, a pattern that compiles, types and orders that exist, a poll
//! that fits its period.

use crate::serial::{SerialDevice, BINARY_TYPES, CHECKSUMS, TEXT_TYPES};
use crate::validate::problem;
use crate::validate::Problem;

fn binary_width(kind: &str) -> u32 {
    match kind {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "f64" => 8,
        _ => 4,
    }
}

pub(crate) fn device(out: &mut Vec<Problem>, at: &str, s: &SerialDevice) {
    let at = format!("{at}.serial");
    if s.baud < 50 || s.baud > 4_000_000 {
        out.push(problem(format!("{at}.baud"), "must be 50 to 4000000"));
    }
    if !matches!(s.data_bits, 7 | 8) {
        out.push(problem(format!("{at}.data_bits"), "must be 7 or 8"));
    }
    if !matches!(s.stop_bits, 1 | 2) {
        out.push(problem(format!("{at}.stop_bits"), "must be 1 or 2"));
    }
    if s.max_frame == 0 || s.max_frame > 65_536 {
        out.push(problem(format!("{at}.max_frame"), "must be 1 to 65536"));
    }

    let f = &s.frame;
    let ways = [
        f.delimiter.is_some(),
        f.length.is_some(),
        f.start.is_some() || f.end.is_some(),
        f.idle.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if ways != 1 {
        out.push(problem(
            format!("{at}.frame"),
            format!("needs exactly one of `delimiter`, `length`, `start` with `end`, `idle` (found {ways})"),
        ));
    }
    if f.delimiter.as_deref() == Some("") {
        out.push(problem(
            format!("{at}.frame.delimiter"),
            "must not be empty",
        ));
    }
    if f.start.is_some() != f.end.is_some() {
        let missing = if f.start.is_some() { "end" } else { "start" };
        out.push(problem(
            format!("{at}.frame.{missing}"),
            "`start` and `end` go together",
        ));
    }
    if f.start.as_deref() == Some("") || f.end.as_deref() == Some("") {
        out.push(problem(format!("{at}.frame"), "markers must not be empty"));
    }
    if let Some(n) = f.length {
        if n == 0 || n > s.max_frame {
            out.push(problem(
                format!("{at}.frame.length"),
                format!("must be 1 to max_frame ({})", s.max_frame),
            ));
        }
    }
    if let Some(d) = f.idle {
        if d.as_millis() < 1 || d.as_millis() > 10_000 {
            out.push(problem(format!("{at}.frame.idle"), "must be 1ms to 10s"));
        }
    }

    let p = &s.parse;
    let parsers = [
        p.regex.is_some(),
        p.json,
        p.key_value.is_some(),
        !p.binary.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if parsers != 1 {
        out.push(problem(
            format!("{at}.parse"),
            format!("needs exactly one of `regex`, `json = true`, `key_value`, `binary` (found {parsers})"),
        ));
    }
    if let Some(pattern) = &p.regex {
        match regex_lite::Regex::new(pattern) {
            Err(e) => out.push(problem(
                format!("{at}.parse.regex"),
                format!("does not compile: {e}"),
            )),
            Ok(re) => {
                let names: Vec<&str> = re.capture_names().flatten().collect();
                if names.is_empty() {
                    out.push(problem(
                        format!("{at}.parse.regex"),
                        "has no named capture `(?P<tag>…)`: nothing would be read",
                    ));
                }
                for (k, t) in &p.types {
                    if !names.contains(&k.as_str()) {
                        out.push(problem(
                            format!("{at}.parse.types.{k}"),
                            format!("the pattern has no capture named \"{k}\" (it has {names:?})"),
                        ));
                    }
                    if !TEXT_TYPES.contains(&t.as_str()) {
                        out.push(problem(
                            format!("{at}.parse.types.{k}"),
                            format!("type \"{t}\": use one of {TEXT_TYPES:?}"),
                        ));
                    }
                }
            }
        }
    } else if !p.types.is_empty() {
        out.push(problem(format!("{at}.parse.types"), "goes with `regex`"));
    }
    if let Some(kv) = &p.key_value {
        if kv.pairs.is_empty() || kv.assign.is_empty() {
            out.push(problem(
                format!("{at}.parse.key_value"),
                "`pairs` and `assign` must not be empty",
            ));
        }
    }
    for (i, b) in p.binary.iter().enumerate() {
        let bat = format!("{at}.parse.binary[{i}]");
        if !BINARY_TYPES.contains(&b.kind.as_str()) {
            out.push(problem(
                format!("{bat}.type"),
                format!("type \"{}\": use one of {BINARY_TYPES:?}", b.kind),
            ));
        }
        if !matches!(b.order.as_str(), "big" | "little") {
            out.push(problem(
                format!("{bat}.order"),
                "must be \"big\" or \"little\"",
            ));
        }
        let limit = f.length.unwrap_or(s.max_frame);
        if b.offset + binary_width(&b.kind) > limit {
            out.push(problem(
                format!("{bat}.offset"),
                format!("the field ends past the frame ({limit} bytes)"),
            ));
        }
    }

    if let Some(c) = &s.checksum {
        if !CHECKSUMS.contains(&c.kind.as_str()) {
            out.push(problem(
                format!("{at}.checksum.kind"),
                format!("\"{}\": use one of {CHECKSUMS:?}", c.kind),
            ));
        }
        if !matches!(c.encoding.as_str(), "binary" | "hex") {
            out.push(problem(
                format!("{at}.checksum.encoding"),
                "must be \"binary\" or \"hex\"",
            ));
        }
    }
    if let Some(poll) = &s.poll {
        if poll.command.is_empty() {
            out.push(problem(format!("{at}.poll.command"), "must not be empty"));
        }
        if poll.period.as_millis() < 10 {
            out.push(problem(
                format!("{at}.poll.period"),
                "must be at least 10ms",
            ));
        }
        if poll.timeout.as_millis() == 0 || poll.timeout.as_millis() > poll.period.as_millis() {
            out.push(problem(
                format!("{at}.poll.timeout"),
                "must be more than 0 and at most the period",
            ));
        }
    }
    let mut tags = std::collections::HashSet::new();
    for (i, w) in s.write.iter().enumerate() {
        let wat = format!("{at}.write[{i}]");
        if !tags.insert(w.tag.as_str()) {
            out.push(problem(
                format!("{wat}.tag"),
                format!("tag \"{}\" has two write commands", w.tag),
            ));
        }
        if !w.command.contains("{value}") {
            out.push(problem(
                format!("{wat}.command"),
                "must contain `{value}` where the written value goes",
            ));
        }
    }
}
