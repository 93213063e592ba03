//! The serial driver over a socat pty pair, the test writing the
//! instrument's side: each framing and parser; frames split across writes
//! and many in one; garbage, over-long frames and bad checksums counted
//! and dropped while readings go on; a poll with a response timeout; a
//! write command; the line unplugged and plugged back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::io::{Read, Write};
use std::time::Duration;

use outpost_core::{Body, DeviceStatus, Value};
use outpost_tests::drivers::{start, Running};
use outpost_tests::PtyPair;

fn config(pty: &PtyPair, section: &str) -> String {
    format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"inst\"\n[device.serial]\nport = \"{}\"\nbaud = 9600\n{section}",
        pty.a.display()
    )
}

/// The instrument's end of the line.
fn far_end(pty: &PtyPair) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pty.b)
        .unwrap()
}

async fn write(f: &mut std::fs::File, bytes: &[u8]) {
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
}

/// The next telemetry values of `inst`, as (tag, value).
async fn next(run: &mut Running) -> Vec<(String, Value)> {
    run.telemetry("inst")
        .await
        .into_iter()
        .map(|(k, (v, _))| (k, v))
        .collect()
}

/// Waits until the driver reports online (its port open).
async fn online(run: &mut Running) {
    let start = tokio::time::Instant::now();
    loop {
        run.collect(Duration::from_millis(50)).await;
        if run
            .seen
            .iter()
            .any(|e| matches!(&e.body, Body::Status(s) if s.status == DeviceStatus::Online))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the port never opened"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_by_regex_split_and_joined_with_garbage_and_overlong_frames_dropped() {
    let pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "max_frame = 32\nframe = { delimiter = \"\\r\\n\" }\nparse = { regex = '^(?P<state>ST|US),GS,\\s*(?P<weight>[-+]?\\d+\\.\\d+) kg$', types = { weight = \"f64\" } }\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    // One frame in two writes, then two frames in one write.
    write(&mut inst, b"ST,GS, +01").await;
    write(&mut inst, b"2.500 kg\r\n").await;
    assert_eq!(
        next(&mut run).await,
        [
            ("state".into(), Value::Str("ST".into())),
            ("weight".into(), Value::F64(12.5))
        ]
    );
    write(&mut inst, b"US,GS, 13.000 kg\r\nST,GS, 14.250 kg\r\n").await;
    assert_eq!(next(&mut run).await[1].1, Value::F64(13.0));
    assert_eq!(next(&mut run).await[1].1, Value::F64(14.25));
    // Garbage and an over-long frame: counted, dropped; readings go on.
    write(&mut inst, b"\x07\x00garbage\r\n").await;
    write(&mut inst, &[b'9'; 100]).await;
    write(&mut inst, b"\r\nST,GS, 15.000 kg\r\n").await;
    assert_eq!(next(&mut run).await[1].1, Value::F64(15.0));
    let m = run.metrics.device("inst").snapshot();
    assert_eq!(m.garbage, 1, "{m:?}");
    assert_eq!(m.truncated, 1, "{m:?}");
    assert!(m.noise_bytes >= 100, "{m:?}");
    assert!(
        m.last_error
            .as_deref()
            .unwrap_or("")
            .contains("longer than 32 bytes"),
        "{m:?}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmea_with_checksums_key_values_json_and_binary_frames() {
    // NMEA-like: $…*hh, XOR in hex; a bad checksum is counted and dropped.
    let pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "frame = { delimiter = \"\\r\\n\" }\nchecksum = { kind = \"xor\", encoding = \"hex\", skip = 1, separator = 1 }\nparse = { regex = '^GPGLL,(?P<lat>[\\d.]+),N,(?P<lon>[\\d.]+),W', types = { lat = \"f64\", lon = \"f64\" } }\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    write(&mut inst, b"$GPGLL,4916.46,N,12311.12,W,225444,A*31\r\n").await;
    write(&mut inst, b"$GPGLL,4916.45,N,12311.12,W,225444,A*31\r\n").await;
    let v = next(&mut run).await;
    assert_eq!(v[0], ("lat".into(), Value::F64(4916.45)));
    let m = run.metrics.device("inst").snapshot();
    assert_eq!(m.crc_errors, 1, "{m:?}");
    run.stop().await;

    // key=value lines.
    let pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "frame = { delimiter = \"\\n\" }\nparse = { key_value = { pairs = \";\", assign = \":\" } }\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    write(&mut inst, b"CO2:412;T:21.5;ID:hall\n").await;
    assert_eq!(
        next(&mut run).await,
        [
            ("CO2".into(), Value::I64(412)),
            ("ID".into(), Value::Str("hall".into())),
            ("T".into(), Value::F64(21.5))
        ]
    );
    run.stop().await;

    // JSON lines between STX and ETX markers, noise between frames.
    let pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "frame = { start = \"\\u0002\", end = \"\\u0003\" }\nparse = { json = true }\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    write(
        &mut inst,
        b"noise\x02{\"flow\": 3.5, \"pump\": {\"on\": true}}\x03",
    )
    .await;
    assert_eq!(
        next(&mut run).await,
        [
            ("flow".into(), Value::F64(3.5)),
            ("pump.on".into(), Value::Bool(true))
        ]
    );
    run.stop().await;

    // Fixed-length binary frames with a CRC-16/MODBUS.
    let pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "frame = { length = 8 }\nchecksum = { kind = \"crc16-modbus\" }\nparse = { binary = [{ name = \"count\", offset = 0, type = \"u16\" }, { name = \"temp\", offset = 2, type = \"f32\", order = \"little\" }] }\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    let mut frame = vec![0x01, 0x2C];
    frame.extend_from_slice(&(-4.25f32).to_le_bytes());
    let crc = outpost_drivers::modbus::pdu::crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    write(&mut inst, &frame).await;
    assert_eq!(
        next(&mut run).await,
        [
            ("count".into(), Value::U64(300)),
            ("temp".into(), Value::F64(-4.25))
        ]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_time_out_writes_are_sent_and_the_line_comes_back_after_an_unplug() {
    let mut pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "frame = { delimiter = \"\\r\\n\" }\nparse = { regex = '^W(?P<weight>[\\d.]+)$', types = { weight = \"f64\" } }\npoll = { command = \"R\\r\\n\", period = \"300ms\", timeout = \"200ms\" }\n[[device.serial.write]]\ntag = \"tare\"\ncommand = \"T{value}\\r\\n\"\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    // The instrument hears the polls: answer one, ignore the next.
    let mut heard = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&heard).contains("R\r\n") {
        assert!(std::time::Instant::now() < deadline, "no poll heard");
        let n = tokio::task::block_in_place(|| inst.read(&mut buf)).unwrap();
        heard.extend_from_slice(&buf[..n]);
    }
    write(&mut inst, b"W7.5\r\n").await;
    assert_eq!(next(&mut run).await, [("weight".into(), Value::F64(7.5))]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let m = run.metrics.device("inst").snapshot();
    assert!(m.requests >= 2, "{m:?}");
    assert!(m.timeouts >= 1, "an unanswered poll is a timeout: {m:?}");
    assert!(
        m.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no response within"),
        "{m:?}"
    );
    // A write: the command with the value goes out.
    run.router
        .write("inst", "tare", Value::I64(3), "tester")
        .await
        .unwrap();
    let mut heard = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&heard).contains("T3\r\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "the write was not heard: {heard:?}"
        );
        let n = tokio::task::block_in_place(|| inst.read(&mut buf)).unwrap();
        heard.extend_from_slice(&buf[..n]);
    }
    let unknown = run
        .router
        .write("inst", "nope", Value::I64(1), "tester")
        .await;
    assert!(
        matches!(
            unknown,
            Err(outpost_drivers::command::WriteFailure::UnknownTag { .. })
        ),
        "{unknown:?}"
    );
    // Unplugged: offline; plugged back: online, and readings resume.
    drop(inst);
    pty.unplug();
    let start = tokio::time::Instant::now();
    loop {
        run.collect(Duration::from_millis(100)).await;
        if run
            .seen
            .iter()
            .any(|e| matches!(&e.body, Body::Status(s) if s.status == DeviceStatus::Offline))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the unplug was not noticed"
        );
    }
    pty.replug();
    run.seen.clear();
    online(&mut run).await;
    let mut inst = far_end(&pty);
    let mut heard = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&heard).contains("R\r\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "no poll after the replug"
        );
        let n = tokio::task::block_in_place(|| inst.read(&mut buf)).unwrap();
        heard.extend_from_slice(&buf[..n]);
    }
    write(&mut inst, b"W8.25\r\n").await;
    assert_eq!(next(&mut run).await, [("weight".into(), Value::F64(8.25))]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gap_ends_a_frame() {
    let pty = PtyPair::new();
    let mut run = start(&config(
        &pty,
        "frame = { idle = \"60ms\" }\nparse = { key_value = {} }\n",
    ));
    online(&mut run).await;
    let mut inst = far_end(&pty);
    // One frame in three writes close together, then a pause, then another.
    write(&mut inst, b"A=1,").await;
    write(&mut inst, b"B=").await;
    write(&mut inst, b"2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&mut inst, b"A=3").await;
    assert_eq!(
        next(&mut run).await,
        [("A".into(), Value::I64(1)), ("B".into(), Value::I64(2))]
    );
    assert_eq!(next(&mut run).await, [("A".into(), Value::I64(3))]);
    run.stop().await;
}
