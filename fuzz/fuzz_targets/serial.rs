//! Serial lines: any byte stream, cut into reads at any points, through
//! each framing the configuration allows and each parser. Never panics;
//! the framer never returns more than `max_frame` bytes nor holds more
//! than its capacity (`max_frame` and the end marker), and no
//! byte is both in a frame and counted as dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_drivers::serial::frame::{Framer, Framing};
use outpost_drivers::serial::parse::{BinField, BinType, Parser, TextType};
use outpost_fuzz::Bytes;

/// A marker of 1 to 4 bytes, read as `length, bytes`; `or` when empty.
fn marker(b: &mut Bytes<'_>, or: &[u8]) -> Vec<u8> {
    let len = usize::from(b.u8() % 5);
    let m = b.take(len);
    if m.is_empty() {
        or.to_vec()
    } else {
        m.to_vec()
    }
}

fn parsers() -> Vec<Parser> {
    let kinds = [
        BinType::U8,
        BinType::I8,
        BinType::U16,
        BinType::I16,
        BinType::U32,
        BinType::I32,
        BinType::F32,
        BinType::F64,
    ];
    let fields = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| BinField {
            name: format!("f{i}"),
            offset: i * 3,
            kind,
            little_endian: i % 2 == 0,
        })
        .collect();
    let re = match regex_lite::Regex::new(
        r"T=(?P<t>[-0-9.]+)\s+N=(?P<n>-?\d+)\s+ON=(?P<on>\w+)\s+ID=(?P<id>\S*)",
    ) {
        Ok(re) => re,
        Err(e) => panic!("the test's pattern: {e}"),
    };
    vec![
        Parser::Regex {
            re,
            types: vec![
                ("t".into(), TextType::F64),
                ("n".into(), TextType::I64),
                ("on".into(), TextType::Bool),
                ("id".into(), TextType::Str),
            ],
        },
        Parser::Json,
        Parser::KeyValue {
            pairs: ",".into(),
            assign: "=".into(),
        },
        Parser::Binary(fields),
    ]
}

// Input: `framing, max frame, marker a, marker b` (a marker is `length
// (0-4), bytes`), then the reads as the port returns them, each `header,
// bytes`: the header's low 7 bits are the length, its high bit says the line
// then fell quiet for the idle gap.
fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let framing_byte = b.u8();
    let max = usize::from(b.u8()).max(1);
    let marker_a = marker(&mut b, b"\r\n");
    let marker_b = marker(&mut b, b"\x03");
    let framing = match framing_byte % 4 {
        0 => Framing::Delimiter(marker_a),
        1 => Framing::Length(usize::from(framing_byte / 4).clamp(1, max)),
        2 => Framing::Markers {
            start: marker_a,
            end: marker_b,
        },
        _ => Framing::IdleGap,
    };
    let mut framer = Framer::new(framing, max);
    let parsers = parsers();
    let (mut pushed, mut framed) = (0u64, 0u64);
    let mut frames = Vec::new();
    while !b.is_empty() {
        let header = b.u8();
        let bytes = b.take(usize::from(header & 0x7f));
        let quiet = header & 0x80 != 0;
        pushed += bytes.len() as u64;
        framer.push(bytes, &mut frames);
        if quiet {
            framer.idle(&mut frames);
        }
        let cap = framer.capacity();
        assert!(
            framer.pending() <= cap,
            "holds {} of {cap}",
            framer.pending()
        );
        for f in frames.drain(..) {
            assert!(f.len() <= max, "a frame of {} bytes, max {max}", f.len());
            framed += f.len() as u64;
            for p in &parsers {
                let _points = p.parse(&f);
            }
        }
    }
    let held = framer.pending() as u64;
    assert!(
        framed + framer.dropped.bytes + held <= pushed,
        "{framed} framed + {} dropped + {held} held > {pushed} read",
        framer.dropped.bytes
    );
});
