//! The Modbus drivers against a real peer: pymodbus over TCP and, for RTU,
//! over a socat pty pair.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_core::{Body, DeviceStatus, Quality, Value};
use outpost_drivers::command::Router;
use outpost_tests::drivers::start;
use outpost_tests::{ModbusPeer, PtyPair, SeenRequest};
use serde_json::json;

fn reads(seen: &[SeenRequest]) -> Vec<(u8, u16, u16)> {
    seen.iter()
        .filter(|r| r.function <= 4)
        .map(|r| (r.function, r.address, r.count))
        .collect()
}

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

/// Holding registers with every type in every order, back to back from 0.
fn typed_layout() -> (Vec<serde_json::Value>, String, Vec<(String, Value)>) {
    let mut regs = Vec::new();
    let mut tags = String::new();
    let mut want = Vec::new();
    let mut addr = 0u16;
    let cases: [(&str, u16, serde_json::Value, Value); 8] = [
        ("u16", 1, json!(65_000), Value::U64(65_000)),
        ("i16", 1, json!(-1234), Value::I64(-1234)),
        ("u32", 2, json!(4_000_000_000u32), Value::U64(4_000_000_000)),
        ("i32", 2, json!(-2_000_000_000), Value::I64(-2_000_000_000)),
        (
            "u64",
            4,
            json!(18_000_000_000_000_000_000u64),
            Value::U64(18_000_000_000_000_000_000),
        ),
        (
            "i64",
            4,
            json!(-9_000_000_000_000_000_000i64),
            Value::I64(-9_000_000_000_000_000_000),
        ),
        ("f32", 2, json!(-123.5), Value::F64(-123.5)),
        ("f64", 4, json!(6.02214076e23), Value::F64(6.02214076e23)),
    ];
    for (ty, width, raw, value) in cases {
        for order in ORDERS {
            let (a, b) = (
                ty == "u16" || ty == "i16",
                order == "CDAB" || order == "DCBA",
            );
            // 16-bit values have no word order; skip the duplicates.
            if a && b {
                continue;
            }
            let name = format!("{ty}_{order}");
            regs.push(json!({"addr": addr, "type": ty, "order": order, "value": raw}));
            tags.push_str(&format!(
                "[[device.modbus.tag]]\nname = \"{name}\"\ntable = \"holding\"\naddress = {addr}\ntype = \"{ty}\"\norder = \"{order}\"\n"
            ));
            want.push((name, value.clone()));
            addr += width;
        }
    }
    regs.push(json!({"addr": addr, "type": "string", "length": 4, "value": "PUMP-7"}));
    tags.push_str(&format!("[[device.modbus.tag]]\nname = \"label\"\ntable = \"holding\"\naddress = {addr}\ntype = \"string[4]\"\n"));
    want.push(("label".into(), Value::Str("PUMP-7".into())));
    addr += 4;
    regs.push(json!({"addr": addr, "registers": [0b1010_0000_0000_0101u16]}));
    tags.push_str(&format!(
        "[[device.modbus.tag]]\nname = \"bit0\"\ntable = \"holding\"\naddress = {addr}\ntype = \"bool\"\nbit = 0\n\
         [[device.modbus.tag]]\nname = \"bit1\"\ntable = \"holding\"\naddress = {addr}\ntype = \"bool\"\nbit = 1\n\
         [[device.modbus.tag]]\nname = \"bit15\"\ntable = \"holding\"\naddress = {addr}\ntype = \"bool\"\nbit = 15\n\
         [[device.modbus.tag]]\nname = \"scaled\"\ntable = \"holding\"\naddress = {addr}\nscale = 0.5\noffset = -10.0\n"
    ));
    want.push(("bit0".into(), Value::Bool(true)));
    want.push(("bit1".into(), Value::Bool(false)));
    want.push(("bit15".into(), Value::Bool(true)));
    want.push((
        "scaled".into(),
        Value::F64(f64::from(0b1010_0000_0000_0101u16) * 0.5 - 10.0),
    ));
    (regs, tags, want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_every_type_and_order_decodes_in_few_requests() {
    let (regs, tags, mut want) = typed_layout();
    let spec = json!({"devices": [{
        "id": 7,
        "holding": regs,
        "coils": [{"addr": 0, "values": [true, false, true, true]}],
        "discrete": [{"addr": 100, "values": [false, true]}],
        "input": [{"addr": 30, "type": "i32", "order": "CDAB", "value": -42}],
    }]});
    let peer = ModbusPeer::tcp(&spec);
    let toml = format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"plc\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nunit = 7\nperiod = \"200ms\"\n{tags}\
         [[device.modbus.tag]]\nname = \"c0\"\ntable = \"coil\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"c3\"\ntable = \"coil\"\naddress = 3\n\
         [[device.modbus.tag]]\nname = \"d101\"\ntable = \"discrete\"\naddress = 101\n\
         [[device.modbus.tag]]\nname = \"in30\"\ntable = \"input\"\naddress = 30\ntype = \"i32\"\norder = \"CDAB\"\n",
        peer.port
    );
    want.push(("c0".into(), Value::Bool(true)));
    want.push(("c3".into(), Value::Bool(true)));
    want.push(("d101".into(), Value::Bool(true)));
    want.push(("in30".into(), Value::I64(-42)));
    let mut run = start(&toml);
    let got = run.telemetry("plc").await;
    for (name, value) in &want {
        let (v, q) = got
            .get(name)
            .unwrap_or_else(|| panic!("no value for {name}: {got:?}"));
        assert_eq!(q, &Quality::Good, "{name}");
        assert_eq!(v, value, "{name}");
    }
    assert_eq!(got.len(), want.len());
    // One poll: the holding block needs ceil(regs / 125) requests; coils,
    // discrete and input one each. The peer logs each request after
    // answering it, so wait for the second poll to begin (a read repeats):
    // then the first is logged whole.
    let first_poll = |all: &[(u8, u16, u16)]| -> Option<Vec<(u8, u16, u16)>> {
        let repeat = (1..all.len()).find(|&i| all[..i].contains(&all[i]))?;
        Some(all[..repeat].to_vec())
    };
    let start = std::time::Instant::now();
    let first_poll = loop {
        if let Some(p) = first_poll(&reads(&peer.requests())) {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no second poll: {:?}",
            peer.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let holding = first_poll.iter().filter(|r| r.0 == 3).count();
    assert!(holding <= 2, "holding registers merged: {first_poll:?}");
    assert_eq!(
        first_poll.iter().filter(|r| r.0 != 3).count(),
        3,
        "{first_poll:?}"
    );
    assert!(first_poll.iter().all(|r| r.2 <= 125));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_exceptions_are_data_and_refused_merges_are_split_for_good() {
    let spec = json!({"devices": [{"id": 1, "holding": [
        {"addr": 0, "registers": [11]},
        {"addr": 5, "registers": [55]},
    ]}]});
    let peer = ModbusPeer::tcp(&spec);
    let toml = format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"meter\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"300ms\"\nmax_gap = 8\n\
         [[device.modbus.tag]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"b\"\ntable = \"holding\"\naddress = 5\n\
         [[device.modbus.tag]]\nname = \"missing\"\ntable = \"holding\"\naddress = 100\n",
        peer.port
    );
    let mut run = start(&toml);
    let got = run.telemetry("meter").await;
    assert_eq!(got["a"], (Value::U64(11), Quality::Good));
    assert_eq!(got["b"], (Value::U64(55), Quality::Good));
    assert!(
        matches!(&got["missing"].1, Quality::Bad { reason } if reason.contains("exception 2")),
        "{:?}",
        got["missing"]
    );
    let _second = run.telemetry("meter").await;
    let seen = reads(&peer.requests_when("two polls logged", |r| reads(r).len() >= 7));
    // Poll 1: merged 0..6 refused, then 0 and 5 apart; 100 alone (refused).
    // Poll 2: the split plan is kept.
    assert_eq!(
        &seen[..4],
        &[(3, 0, 6), (3, 0, 1), (3, 5, 1), (3, 100, 1)],
        "{seen:?}"
    );
    assert_eq!(
        &seen[4..7],
        &[(3, 0, 1), (3, 5, 1), (3, 100, 1)],
        "{seen:?}"
    );
    let m = &run.metrics.snapshot()[0].1;
    assert!(m.exceptions >= 3, "{m:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_writes_are_checked_sent_read_back_and_audited() {
    let spec = json!({"devices": [{"id": 1,
        "holding": [{"addr": 0, "registers": [0, 0, 0]}],
        "coils": [{"addr": 0, "values": [false]}],
    }]});
    let peer = ModbusPeer::tcp(&spec);
    let toml = format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"vfd\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"speed\"\ntable = \"holding\"\naddress = 0\nscale = 0.1\nwritable = true\nwrite_max = 500.0\n\
         [[device.modbus.tag]]\nname = \"setpoint\"\ntable = \"holding\"\naddress = 1\ntype = \"f32\"\norder = \"CDAB\"\nwritable = true\n\
         [[device.modbus.tag]]\nname = \"run\"\ntable = \"coil\"\naddress = 0\nwritable = true\n\
         [[device.modbus.tag]]\nname = \"ro\"\ntable = \"holding\"\naddress = 0\n",
        peer.port
    );
    let mut run = start(&toml);
    run.telemetry("vfd").await;
    run.router
        .write("vfd", "speed", Value::F64(42.5), "tester")
        .await
        .unwrap();
    run.router
        .write("vfd", "setpoint", Value::F64(-1.25), "tester")
        .await
        .unwrap();
    run.router
        .write("vfd", "run", Value::Bool(true), "tester")
        .await
        .unwrap();
    // The peer logs each request after answering it: wait for the three
    // writes to show before counting, or a late line looks like a refused
    // write that went out.
    let writes = || peer.requests().iter().filter(|r| r.function > 4).count();
    let start = std::time::Instant::now();
    while writes() < 3 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let writes_before = writes();
    assert_eq!(writes_before, 3, "the three accepted writes were sent");
    let too_fast = run
        .router
        .write("vfd", "speed", Value::F64(600.0), "tester")
        .await;
    assert!(
        matches!(too_fast, Err(outpost_drivers::command::WriteFailure::Rejected(ref m)) if m.contains("outside")),
        "{too_fast:?}"
    );
    let ro = run.router.write("vfd", "ro", Value::I64(1), "tester").await;
    assert!(
        matches!(ro, Err(outpost_drivers::command::WriteFailure::Rejected(_))),
        "{ro:?}"
    );
    let nosuch = run
        .router
        .write("vfd", "nope", Value::I64(1), "tester")
        .await;
    assert!(matches!(
        nosuch,
        Err(outpost_drivers::command::WriteFailure::UnknownTag { .. })
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(writes(), writes_before, "refused writes send nothing");
    // Read back by the next polls.
    let mut got = run.telemetry("vfd").await;
    for _ in 0..10 {
        if got.get("run").map(|v| &v.0) == Some(&Value::Bool(true)) && got.contains_key("setpoint")
        {
            break;
        }
        got.extend(run.telemetry("vfd").await);
    }
    assert_eq!(got["speed"].0, Value::F64(42.5));
    assert_eq!(got["setpoint"].0, Value::F64(-1.25));
    assert_eq!(got["run"].0, Value::Bool(true));
    let fcs: Vec<u8> = peer
        .requests()
        .iter()
        .filter(|r| r.function > 4)
        .map(|r| r.function)
        .collect();
    assert_eq!(
        fcs,
        vec![6, 16, 5],
        "FC06 for one register, FC16 for two, FC05 for a coil"
    );
    run.collect(Duration::from_millis(500)).await;
    let audits: Vec<String> = run
        .seen
        .iter()
        .filter_map(|e| match &e.body {
            Body::Audit(a) if a.action == "device.write" => {
                Some(format!("{} {}", a.actor, a.detail))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        audits.len(),
        6,
        "one audit event per write, refused ones too: {audits:?}"
    );
    assert!(
        audits[0].starts_with("tester speed = 42.5: done"),
        "{audits:?}"
    );
    assert!(audits[3].contains("failed"), "{audits:?}");
    run.stop().await;
}

fn bus_toml(port: &std::path::Path, devices: &str) -> String {
    format!(
        "[gateway]\nid = \"gw\"\n[[bus]]\nname = \"rs485\"\nport = \"{}\"\nbaud = 115200\n{devices}",
        port.display()
    )
}

fn rtu_device(name: &str, unit: u8, period: &str, extra: &str) -> String {
    format!(
        "[[device]]\nname = \"{name}\"\n[device.modbus]\nbus = \"rs485\"\nunit = {unit}\nperiod = \"{period}\"\ntimeout = \"100ms\"\n{extra}\n\
         [[device.modbus.tag]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"w\"\ntable = \"holding\"\naddress = 1\ntype = \"f32\"\norder = \"CDAB\"\n"
    )
}

fn rtu_spec(units: &[u8]) -> serde_json::Value {
    let devices: Vec<_> = units
        .iter()
        .map(|u| json!({"id": u, "holding": [{"addr": 0, "registers": [u16::from(*u) * 100]}, {"addr": 1, "type": "f32", "order": "CDAB", "value": 2.5}]}))
        .collect();
    json!({ "devices": devices })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_on_a_pty_reads_and_survives_corrupt_frames() {
    let pty = PtyPair::new();
    let mut peer = ModbusPeer::serial(&rtu_spec(&[1]), &pty.b);
    let mut run = start(&bus_toml(
        &pty.a,
        &rtu_device("meter", 1, "100ms", "retries = 0"),
    ));
    let got = run.telemetry("meter").await;
    assert_eq!(got["v"], (Value::U64(100), Quality::Good));
    assert_eq!(got["w"], (Value::F64(2.5), Quality::Good));
    peer.command("corrupt crc 3");
    peer.command("corrupt truncate 2");
    peer.command("corrupt garbage 3");
    run.collect(Duration::from_secs(3)).await;
    let m = run.metrics.snapshot()[0].1.clone();
    assert!(m.crc_errors >= 3, "CRC errors counted: {m:?}");
    assert!(m.truncated >= 2, "truncated frames counted: {m:?}");
    assert!(
        m.noise_bytes >= 15,
        "garbage bytes counted and dropped: {m:?}"
    );
    // A response behind garbage is still found (resync), so garbage alone
    // costs no poll; polling went on and values are good again.
    let after = run.telemetry("meter").await;
    assert_eq!(after["v"], (Value::U64(100), Quality::Good));
    let polls = run.count_telemetry("meter");
    assert!(
        polls >= 15,
        "polling went on through the noise: {polls} polls in ~3 s"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_device_does_not_stall_the_bus_and_recovers() {
    let pty = PtyPair::new();
    let mut peer = ModbusPeer::serial(&rtu_spec(&[1, 2, 3]), &pty.b);
    peer.command("dead 3");
    let devices = [
        rtu_device("a", 1, "100ms", ""),
        rtu_device("b", 2, "100ms", ""),
        rtu_device("dead", 3, "100ms", "backoff_max = \"5s\""),
    ]
    .concat();
    let mut run = start(&bus_toml(&pty.a, &devices));
    run.telemetry("a").await;
    let before = (run.count_telemetry("a"), run.count_telemetry("b"));
    let window = Duration::from_secs(4);
    run.collect(window).await;
    // Stated tolerance: with one device dead (probed once per back-off, at
    // most every 5 s), the live ones keep >= 85 % of their poll rate (10/s).
    let expected = window.as_secs_f64() / 0.1;
    for (name, b) in [("a", before.0), ("b", before.1)] {
        let n = (run.count_telemetry(name) - b) as f64;
        assert!(
            n >= 0.85 * expected,
            "{name}: {n} polls in {window:?}, expected about {expected}"
        );
    }
    let offline = run.seen.iter().any(|e| {
        e.device == "dead"
            && matches!(&e.body, Body::Status(s) if s.status == DeviceStatus::Offline)
    });
    assert!(offline, "the dead device is reported offline");
    // It comes back.
    peer.command("alive 3");
    let mut back = false;
    for _ in 0..40 {
        let got = run.telemetry("dead").await;
        if got
            .get("v")
            .is_some_and(|(v, q)| *v == Value::U64(300) && q.is_good())
        {
            back = true;
            break;
        }
    }
    assert!(back, "the device recovered by itself");
    assert!(run.seen.iter().any(|e| e.device == "dead"
        && matches!(&e.body, Body::Status(s) if s.status == DeviceStatus::Online)));
    let m: BTreeMap<String, _> = run.metrics.snapshot().into_iter().collect();
    assert!(m["dead"].timeouts > 0);
    assert_eq!(m["a"].timeouts, 0, "{:?}", m["a"]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_goes_on_when_nobody_can_send_writes() {
    let peer = ModbusPeer::tcp(
        &json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [5]}]}]}),
    );
    let toml = format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"m\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"50ms\"\n\
         [[device.modbus.tag]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\n",
        peer.port
    );
    let mut run = start(&toml);
    // Close every write inbox: a closed channel must not starve the polls.
    run.router = Router::default();
    for _ in 0..5 {
        assert_eq!(run.telemetry("m").await["v"].0, Value::U64(5));
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_reads_through_a_converter() {
    let peer = ModbusPeer::rtu_over_tcp(&rtu_spec(&[4]));
    let toml = format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"remote\"\n[device.modbus]\nrtu_over_tcp = \"127.0.0.1:{}\"\nunit = 4\nperiod = \"100ms\"\n\
         [[device.modbus.tag]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"w\"\ntable = \"holding\"\naddress = 1\ntype = \"f32\"\norder = \"CDAB\"\n",
        peer.port
    );
    let mut run = start(&toml);
    let got = run.telemetry("remote").await;
    assert_eq!(got["v"], (Value::U64(400), Quality::Good));
    assert_eq!(got["w"], (Value::F64(2.5), Quality::Good));
    // The peer's trace of the request may come a moment after the answer.
    let start = std::time::Instant::now();
    while peer.requests().is_empty() && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reads(&peer.requests()).first(),
        Some(&(3, 0, 3)),
        "one merged read"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tcp_connection_is_reported_and_reconnected() {
    let spec = json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [9]}]}]});
    let peer = ModbusPeer::tcp(&spec);
    let port = peer.port;
    let toml = format!(
        "[gateway]\nid = \"gw\"\n[[device]]\nname = \"plc\"\n[device.modbus]\ntcp = \"127.0.0.1:{port}\"\nperiod = \"100ms\"\n\
         [[device.modbus.tag]]\nname = \"v\"\ntable = \"holding\"\naddress = 0\n"
    );
    let mut run = start(&toml);
    assert_eq!(
        run.telemetry("plc").await["v"],
        (Value::U64(9), Quality::Good)
    );
    drop(peer); // the PLC goes away
    let got = run.telemetry("plc").await;
    assert!(
        matches!(&got["v"].1, Quality::Bad { reason } if reason.contains("link down")),
        "{got:?}"
    );
    assert!(run
        .seen
        .iter()
        .any(|e| matches!(&e.body, Body::Status(s) if s.status == DeviceStatus::Offline)));
    run.collect(Duration::from_secs(1)).await;
    let _back = ModbusPeer::tcp_on(&spec, port); // and comes back
    let mut good = false;
    for _ in 0..20 {
        if run
            .telemetry("plc")
            .await
            .get("v")
            .is_some_and(|(v, q)| *v == Value::U64(9) && q.is_good())
        {
            good = true;
            break;
        }
    }
    assert!(good, "reconnected by itself");
    let m = &run.metrics.snapshot()[0].1;
    assert!(m.io_errors > 0, "{m:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_serial_adapter_is_reopened_when_it_returns() {
    let mut pty = PtyPair::new();
    let peer = ModbusPeer::serial(&rtu_spec(&[1]), &pty.b);
    let mut run = start(&bus_toml(&pty.a, &rtu_device("meter", 1, "100ms", "")));
    assert_eq!(
        run.telemetry("meter").await["v"],
        (Value::U64(100), Quality::Good)
    );
    drop(peer);
    pty.unplug();
    let got = run.telemetry("meter").await;
    assert!(!got["v"].1.is_good(), "{got:?}");
    run.collect(Duration::from_millis(1500)).await; // reopen attempts fail meanwhile
    pty.replug();
    let _peer = ModbusPeer::serial(&rtu_spec(&[1]), &pty.b);
    let mut good = false;
    for _ in 0..30 {
        if run
            .telemetry("meter")
            .await
            .get("v")
            .is_some_and(|(v, q)| *v == Value::U64(100) && q.is_good())
        {
            good = true;
            break;
        }
    }
    assert!(good, "the port was reopened by itself");
    let m = &run.metrics.snapshot()[0].1;
    assert!(m.io_errors > 0, "{m:?}");
    run.stop().await;
}
