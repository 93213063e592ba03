//! Rule-chain throughput on one core: a 5-node native chain, and a chain
//! with one script filter and one script transform (QuickJS), the same in
//! TBEL, and a device profile node with three alarm rules. Also the
//! memory a loaded chain with scripts takes. Prints JSON lines after
//! criterion's own output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use outpost_core::{Body, Event, Point, Timestamp, Value};
use outpost_rules::profile::{Profile, Profiles};
use outpost_rules::tb::{load, LoadOptions, Source};
use outpost_rules::{ChainStage, Stage};
use serde_json::json;

const T0: i64 = 1_764_000_000_000;

fn chain(nodes: serde_json::Value, connections: serde_json::Value) -> Source {
    Source {
        origin: "bench".into(),
        json: json!({"ruleChain": {"name": "bench"},
                     "metadata": {"firstNodeIndex": 0, "nodes": nodes, "connections": connections}})
        .to_string(),
    }
}

fn native() -> Source {
    chain(
        json!([
            {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "type", "configuration": {}},
            {"type": "outpost.Deadband", "name": "deadband", "configuration": {"keys": ["t"], "absolute": 0.01}},
            {"type": "outpost.Threshold", "name": "hot", "configuration": {"key": "t", "high": 1000, "alarmType": "Hot"}},
            {"type": "outpost.RateOfChange", "name": "rate", "configuration": {"keys": ["t"]}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
        ]),
        json!([
            {"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
            {"fromIndex": 1, "toIndex": 2, "type": "Success"},
            {"fromIndex": 2, "toIndex": 3, "type": "Success"},
            {"fromIndex": 3, "toIndex": 4, "type": "Success"}
        ]),
    )
}

fn scripted() -> Source {
    chain(
        json!([
            {"type": "org.thingsboard.rule.engine.filter.TbJsFilterNode", "name": "filter",
             "configuration": {"jsScript": "return msg.t > -1000;"}},
            {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "transform",
             "configuration": {"jsScript": "msg.f = msg.t * 9 / 5 + 32; return {msg: msg, metadata: metadata, msgType: msgType};"}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
        ]),
        json!([
            {"fromIndex": 0, "toIndex": 1, "type": "True"},
            {"fromIndex": 1, "toIndex": 2, "type": "Success"}
        ]),
    )
}

/// The same two script nodes in TBEL.
fn tbel() -> Source {
    chain(
        json!([
            {"type": "org.thingsboard.rule.engine.filter.TbJsFilterNode", "name": "filter",
             "configuration": {"scriptLang": "TBEL", "tbelScript": "return msg.t > -1000;"}},
            {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "transform",
             "configuration": {"scriptLang": "TBEL", "tbelScript": "msg.f = msg.t * 9 / 5 + 32; return {msg: msg, metadata: metadata, msgType: msgType};"}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
        ]),
        json!([
            {"fromIndex": 0, "toIndex": 1, "type": "True"},
            {"fromIndex": 1, "toIndex": 2, "type": "Success"}
        ]),
    )
}

/// A device profile node (three alarm rules on `t`: a simple and a
/// duration create rule, a repeating clear rule, none of them true for the
/// readings) before a save node.
fn profiled() -> Source {
    chain(
        json!([
            {"type": "org.thingsboard.rule.engine.profile.TbDeviceProfileNode", "name": "profile", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
        ]),
        json!([{"fromIndex": 0, "toIndex": 1, "type": "Success"}]),
    )
}

fn profiles() -> std::sync::Arc<Profiles> {
    let above = |v: f64| {
        json!({"condition": [{"key": {"type": "TIME_SERIES", "key": "t"}, "valueType": "NUMERIC",
               "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": v}}}]})
    };
    let mut duration = above(900.0);
    duration["spec"] =
        json!({"type": "DURATION", "unit": "SECONDS", "predicate": {"defaultValue": 10}});
    let clear = json!({"condition": [{"key": {"type": "TIME_SERIES", "key": "t"}, "valueType": "NUMERIC",
        "predicate": {"type": "NUMERIC", "operation": "LESS", "value": {"defaultValue": -100}}}],
        "spec": {"type": "REPEATING", "predicate": {"defaultValue": 3}}});
    let profile = json!({"name": "meter", "profileData": {"alarms": [{
        "alarmType": "Hot",
        "createRules": {"CRITICAL": {"condition": above(1000.0)}, "MAJOR": {"condition": duration}},
        "clearRule": {"condition": clear}
    }]}});
    let mut p = Profiles::default();
    p.insert(Profile::parse(&profile.to_string(), "bench").unwrap());
    std::sync::Arc::new(p)
}

/// A stage for `name`'s chain.
fn stage(name: &str, src: Source) -> ChainStage {
    let opts = LoadOptions {
        profiles: profiles(),
        ..LoadOptions::default()
    };
    let mut s = ChainStage::new(load(&[src], &opts).unwrap());
    if name == "device-profile" {
        s.set_device_types([("boiler-1".to_string(), "meter".to_string())].into());
    }
    s
}

fn reading(i: u64) -> Event {
    Event::new(
        "boiler-1",
        Timestamp::synced(T0 + i as i64),
        Body::Telemetry(vec![
            Point::good("t", Value::F64(20.0 + (i % 100) as f64 / 10.0)),
            Point::good("p", Value::F64(2.0)),
        ]),
    )
}

fn run(s: &mut ChainStage, n: u64, start: u64) -> usize {
    let mut out = Vec::with_capacity(4);
    let mut saved = 0;
    for i in start..start + n {
        s.on_event(Timestamp::synced(T0 + i as i64), reading(i), &mut out);
        saved += out.len();
        out.clear();
    }
    saved
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(1));
    for (name, src) in [
        ("native-5-nodes", native()),
        ("script-filter-transform", scripted()),
        ("tbel-filter-transform", tbel()),
        ("device-profile", profiled()),
    ] {
        let mut s = stage(name, src);
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                run(&mut s, 1, i)
            })
        });
    }
    g.finish();
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Events/s over a fixed count (one core, this thread), both chains in
/// alternation so the machine's noise hits both; and memory per chain.
fn summary() {
    for round in 0..3 {
        for (name, src) in [
            ("native-5-nodes", native()),
            ("script-filter-transform", scripted()),
            ("tbel-filter-transform", tbel()),
            ("device-profile", profiled()),
        ] {
            let mut s = stage(name, src);
            run(&mut s, 1000, 0);
            let n = 200_000;
            let t = Instant::now();
            let saved = run(&mut s, n, 1000);
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(saved as u64, n, "every reading is saved");
            println!(
                "{}",
                json!({"round": round, "chain": name, "events_per_s": (n as f64 / secs).round()})
            );
        }
    }
    let before = rss_kb();
    let chains: Vec<ChainStage> = (0..20)
        .map(|_| ChainStage::new(load(&[scripted()], &LoadOptions::default()).unwrap()))
        .collect();
    let after = rss_kb();
    println!(
        "{}",
        json!({"chains_with_scripts": chains.len(), "rss_kb_per_chain": (after.saturating_sub(before)) / chains.len() as u64})
    );
    std::thread::sleep(Duration::from_millis(1));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    summary();
}
