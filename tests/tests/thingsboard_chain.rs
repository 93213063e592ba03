//! The ThingsBoard rule chain shipped for the server side
//! (`examples/thingsboard/outpost-alarms.json`) loads in Outpost's own
//! importer and turns the alarm telemetry the uplink sends (its real
//! shape) into alarms with ThingsBoard's semantics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use outpost_core::{Alarm, AlarmSeverity, Body, Event, Timestamp};
use outpost_rules::tb::{load, LoadOptions, Source};
use serde_json::{json, Value as Json};

const T0: i64 = 1_764_000_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::synced(T0 + ms)
}

fn alarms(out: &[Event]) -> Vec<&Alarm> {
    out.iter()
        .filter_map(|e| match &e.body {
            Body::Alarm(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn the_shipped_thingsboard_chain_loads_here_and_turns_alarm_telemetry_into_alarms() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/thingsboard/outpost-alarms.json");
    let src = Source {
        origin: "outpost-alarms.json".into(),
        json: std::fs::read_to_string(path).unwrap(),
    };
    let mut engine = load(&[src], &LoadOptions::default()).unwrap();
    // What an Outpost gateway sends for an alarm (the uplink's
    // ThingsBoard shape), as ThingsBoard hands it to the chain.
    let sent = |cleared: bool, ms: i64| {
        let mut a = Alarm::raised("Overheat", AlarmSeverity::Critical, r#"{"t": 70}"#, T0);
        if cleared {
            a.state = outpost_core::AlarmState::Cleared;
            a.clear_ms = Some(T0 + ms);
        }
        let alarm = outpost_sync::uplink::format::tb_alarm(&a);
        outpost_rules::msg::Msg::new(
            "boiler",
            outpost_rules::msg::POST_TELEMETRY,
            json!({ "alarm": alarm }),
            at(ms),
        )
    };
    let (mut events, mut writes) = (Vec::new(), Vec::new());
    engine.process(at(0), sent(false, 0), &mut events, &mut writes);
    engine.process(at(500), sent(false, 500), &mut events, &mut writes);
    engine.process(at(1000), sent(true, 1000), &mut events, &mut writes);
    let plain = outpost_rules::msg::Msg::new(
        "boiler",
        outpost_rules::msg::POST_TELEMETRY,
        json!({"temperature": 71.5}),
        at(2000),
    );
    engine.process(at(2000), plain, &mut events, &mut writes);
    let a = alarms(&events);
    assert_eq!(
        a.iter()
            .map(|a| (a.name.as_str(), a.severity, a.status()))
            .collect::<Vec<_>>(),
        [
            ("Overheat", AlarmSeverity::Critical, "ACTIVE_UNACK"),
            ("Overheat", AlarmSeverity::Critical, "ACTIVE_UNACK"),
            ("Overheat", AlarmSeverity::Critical, "CLEARED_UNACK"),
        ]
    );
    assert_eq!(a[1].start_ms, T0, "the second one updated the first");
    assert_eq!(
        serde_json::from_str::<Json>(&a[2].details).unwrap(),
        json!({"t": 70})
    );
    assert!(
        matches!(&events.last().unwrap().body, Body::Telemetry(p) if p[0].tag == "temperature")
    );
}
