//! Serial frames parsed per second on one core: the framer and the regex
//! parser on scale lines, the framer and the binary parser on fixed frames
//! with a CRC-16/MODBUS, and JSON lines. `cargo bench -p outpost-drivers
//! --bench serial_parse`; criterion prints the time per frame.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use outpost_drivers::serial::checksum::{Checksum, Encoding, Kind};
use outpost_drivers::serial::frame::{Framer, Framing};
use outpost_drivers::serial::parse::{BinField, BinType, Parser, TextType};

const FRAMES: usize = 1000;

fn regex_lines(c: &mut Criterion) {
    let mut stream = Vec::new();
    for i in 0..FRAMES {
        stream.extend_from_slice(
            format!("ST,GS,  +{:03}.{:03} kg\r\n", i % 1000, i % 997).as_bytes(),
        );
    }
    let parser = Parser::Regex {
        re: regex_lite::Regex::new(r"^(?P<state>ST|US),GS,\s*(?P<weight>[-+]?\d+\.\d+) kg$")
            .unwrap(),
        types: vec![("weight".into(), TextType::F64)],
    };
    let mut g = c.benchmark_group("serial");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("regex lines (frame + parse)", |b| {
        b.iter(|| {
            let mut framer = Framer::new(Framing::Delimiter(b"\r\n".to_vec()), 128);
            let mut frames = Vec::with_capacity(FRAMES);
            framer.push(black_box(&stream), &mut frames);
            let mut n = 0;
            for f in &frames {
                n += parser.parse(f).unwrap().len();
            }
            n
        });
    });
    let json: Vec<u8> = (0..FRAMES)
        .flat_map(|i| format!("{{\"flow\": {i}.5, \"temp\": 21.{i}, \"ok\": true}}\n").into_bytes())
        .collect();
    g.bench_function("json lines (frame + parse)", |b| {
        b.iter(|| {
            let mut framer = Framer::new(Framing::Delimiter(b"\n".to_vec()), 256);
            let mut frames = Vec::with_capacity(FRAMES);
            framer.push(black_box(&json), &mut frames);
            frames
                .iter()
                .map(|f| Parser::Json.parse(f).unwrap().len())
                .sum::<usize>()
        });
    });
    let binary = Parser::Binary(vec![
        BinField {
            name: "count".into(),
            offset: 0,
            kind: BinType::U16,
            little_endian: false,
        },
        BinField {
            name: "temp".into(),
            offset: 2,
            kind: BinType::F32,
            little_endian: true,
        },
        BinField {
            name: "flow".into(),
            offset: 6,
            kind: BinType::F32,
            little_endian: false,
        },
    ]);
    let crc = Checksum {
        kind: Kind::Crc16Modbus,
        encoding: Encoding::Binary,
        skip: 0,
        separator: 0,
    };
    let mut fixed = Vec::new();
    for i in 0..FRAMES {
        let mut f = (i as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&(i as f32).to_le_bytes());
        f.extend_from_slice(&(i as f32 / 2.0).to_be_bytes());
        let c = Kind::Crc16Modbus.compute(&f);
        f.extend_from_slice(&c);
        fixed.extend_from_slice(&f);
    }
    g.bench_function("binary frames with CRC-16 (frame + check + parse)", |b| {
        b.iter(|| {
            let mut framer = Framer::new(Framing::Length(12), 64);
            let mut frames = Vec::with_capacity(FRAMES);
            framer.push(black_box(&fixed), &mut frames);
            frames
                .iter()
                .map(|f| binary.parse(crc.verify(f).unwrap()).unwrap().len())
                .sum::<usize>()
        });
    });
    g.finish();
}

criterion_group!(benches, regex_lines);
criterion_main!(benches);
