//! Rule-chain exports in ThingsBoard's format (`tests/fixtures/rules/`),
//! run with a fixed clock; the events the chains hand to the log are
//! asserted one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::PathBuf;
use std::time::Duration;

use outpost_core::{Alarm, AlarmSeverity, AlarmState, Body, Event, Point, Timestamp, Value};
use outpost_rules::tb::{load, LoadOptions, Source};
use outpost_rules::{ChainStage, Stage};
use serde_json::{json, Value as Json};

const T0: i64 = 1_764_000_000_000;

fn fixture(name: &str) -> Source {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/rules")
        .join(name);
    Source {
        origin: name.to_string(),
        json: std::fs::read_to_string(&path).unwrap(),
    }
}

fn stage(sources: &[Source]) -> ChainStage {
    ChainStage::new(load(sources, &LoadOptions::default()).unwrap())
}

fn at(ms: i64) -> Timestamp {
    Timestamp::synced(T0 + ms)
}

fn tele(device: &str, ms: i64, points: &[(&str, Value)]) -> Event {
    Event::new(
        device,
        at(ms),
        Body::Telemetry(
            points
                .iter()
                .map(|(t, v)| Point::good(*t, v.clone()))
                .collect(),
        ),
    )
}

/// Telemetry or attribute points as a JSON object, for comparisons.
fn points(ev: &Event) -> Json {
    match &ev.body {
        Body::Telemetry(p) | Body::Attributes(p) => outpost_rules::msg::points_json(p),
        other => panic!("not points: {other:?}"),
    }
}

fn alarm(ev: &Event) -> (&str, AlarmSeverity, AlarmState, Json) {
    match &ev.body {
        Body::Alarm(Alarm {
            name,
            severity,
            state,
            details,
            ..
        }) => (
            name.as_str(),
            *severity,
            *state,
            serde_json::from_str(details).unwrap(),
        ),
        other => panic!("not an alarm: {other:?}"),
    }
}

#[test]
fn boiler_room_type_switch_filter_transform_dedup_alarm_save() {
    boiler_room("boiler-room.json");
}

/// The same chain with its scripts in TBEL (and its JS fields set to throw)
/// gives the same events and counters.
#[test]
fn boiler_room_in_tbel_behaves_as_in_js() {
    boiler_room("boiler-room-tbel.json");
}

fn boiler_room(chain: &str) {
    let mut s = stage(&[fixture(chain)]);
    let mut out = Vec::new();
    let f = Value::F64;

    // Two readings inside one 10 s deduplication window: nothing yet.
    s.on_event(
        at(0),
        tele(
            "boiler",
            0,
            &[("temperature", f(70.0)), ("pressure", f(2.0))],
        ),
        &mut out,
    );
    s.on_event(
        at(1000),
        tele(
            "boiler",
            1000,
            &[("temperature", f(85.0)), ("pressure", f(2.1))],
        ),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    // Attributes go straight to "save attributes".
    let attrs = Event::new(
        "boiler",
        at(2000),
        Body::Attributes(vec![Point::good("firmware", Value::Str("1.2".into()))]),
    );
    s.on_event(at(2000), attrs, &mut out);
    // No temperature: the filter says False, saved as it is.
    s.on_event(
        at(3000),
        tele("boiler", 3000, &[("pressure", f(3.0))]),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0].body, Body::Attributes(_)));
    assert_eq!(points(&out[0]), json!({"firmware": "1.2"}));
    assert_eq!(points(&out[1]), json!({"pressure": 3.0}));
    assert_eq!(out[1].ts, at(3000));
    out.clear();

    // Before the window closes: nothing.
    s.on_tick(at(9_999), &mut out);
    assert!(out.is_empty());
    // The window closes: the last message, converted, raises the alarm
    // (first connection of the dedup node) and is saved (second).
    s.on_tick(at(10_000), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        alarm(&out[0]),
        (
            "High Temperature",
            AlarmSeverity::Critical,
            AlarmState::Active,
            json!({"temperature": 85})
        )
    );
    assert_eq!(out[0].device, "boiler");
    assert_eq!(
        points(&out[1]),
        json!({"temperature": 85.0, "pressure": 2.1, "temperatureF": 185})
    );
    assert_eq!(out[1].ts, at(1000), "the saved reading keeps its own time");
    out.clear();

    // Cooler: the next window clears the alarm.
    s.on_event(
        at(11_000),
        tele("boiler", 11_000, &[("temperature", f(60.0))]),
        &mut out,
    );
    s.on_tick(at(21_000), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        alarm(&out[0]),
        (
            "High Temperature",
            AlarmSeverity::Critical,
            AlarmState::Cleared,
            json!({"temperature": 60})
        )
    );
    assert_eq!(
        points(&out[1]),
        json!({"temperature": 60.0, "temperatureF": 140})
    );
    out.clear();

    // Still cool: the clear node finds no active alarm (False, unconnected).
    s.on_event(
        at(22_000),
        tele("boiler", 22_000, &[("temperature", f(61.0))]),
        &mut out,
    );
    s.on_tick(at(32_000), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(out[0].body, Body::Telemetry(_)));

    // Counters per node.
    let counters = s.counters();
    let nodes = &counters[0].1;
    let get = |name: &str| &nodes.iter().find(|(n, _, _)| n == name).unwrap().2;
    assert_eq!(get("Message Type Switch").messages_in, 6);
    assert_eq!(get("Has temperature").out.get("True"), Some(&4));
    assert_eq!(get("Has temperature").out.get("False"), Some(&1));
    assert_eq!(get("Last per 10 s").messages_in, 4);
    assert_eq!(get("High Temperature alarm").out.get("Created"), Some(&1));
    assert_eq!(get("Log alarm").messages_in, 1);
    assert_eq!(get("Clear High Temperature").out.get("False"), Some(&1));
    assert!(nodes.iter().all(|(_, _, c)| c.errors == 0));
    assert!(get("To Fahrenheit").script_ns > 0);
}

#[test]
fn nested_chains_return_through_their_output_nodes() {
    let mut s = stage(&[fixture("nested-root.json"), fixture("nested-validate.json")]);
    let mut out = Vec::new();
    s.on_event(
        at(0),
        tele("pump", 0, &[("pressure", Value::F64(5.0))]),
        &mut out,
    );
    s.on_event(
        at(1),
        tele("pump", 1, &[("pressure", Value::F64(20.0))]),
        &mut out,
    );
    s.on_event(
        at(2),
        tele("pump", 2, &[("temperature", Value::F64(20.0))]),
        &mut out,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(points(&out[0]), json!({"pressure": 5.0}));
    assert_eq!(points(&out[1]), json!({"rejected": 1}));
    let counters = s.counters();
    let validate = &counters[1].1;
    let has = &validate
        .iter()
        .find(|(n, _, _)| n == "Has pressure")
        .unwrap()
        .2;
    assert_eq!(has.out.get("False"), Some(&1));
    assert_eq!(has.dropped, 1, "False has no connection");
}

#[test]
fn unsupported_nodes_and_bad_ones_are_all_reported_at_load() {
    let errors = load(&[fixture("unsupported.json")], &LoadOptions::default()).unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].contains("\"Email the manager\"")
            && errors[0].contains("TbSendEmailNode")
            && errors[0].contains("unsupported node type")
    );
    assert!(errors[1].contains("\"Call ERP\"") && errors[1].contains("TbRestApiCallNode"));
    assert!(errors[2].contains("\"Broken script\"") && errors[2].contains("jsScript: SyntaxError"));
    assert!(errors[3].contains("connection 0 → 9"));
    // Opting in passes unsupported nodes through; the other errors stay.
    let opts = LoadOptions {
        pass_unsupported: true,
        ..LoadOptions::default()
    };
    let errors = load(&[fixture("unsupported.json")], &opts).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

fn one_node_chain(type_name: &str, configuration: Json) -> Source {
    let chain = json!({
        "ruleChain": {"name": "t"},
        "metadata": {"firstNodeIndex": 0, "nodes": [
            {"type": type_name, "name": "under test", "configuration": configuration},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "ok", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "failed",
             "configuration": {"jsScript": "return {msg: {failed: 1}};"}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save failure", "configuration": {}}
        ], "connections": [
            {"fromIndex": 0, "toIndex": 1, "type": "Success"},
            {"fromIndex": 0, "toIndex": 1, "type": "True"},
            {"fromIndex": 0, "toIndex": 2, "type": "Failure"},
            {"fromIndex": 2, "toIndex": 3, "type": "Success"}
        ]}
    });
    Source {
        origin: "inline".into(),
        json: chain.to_string(),
    }
}

#[test]
fn script_failures_route_to_failure_and_are_counted() {
    let opts = LoadOptions {
        script_timeout: Duration::from_millis(50),
        ..LoadOptions::default()
    };
    for (script, why) in [
        ("throw new Error('bad reading');", "Error: bad reading"),
        ("while (true) {}", "longer than"),
        ("return 42;", "expected {msg, metadata, msgType}"),
    ] {
        let src = one_node_chain(
            "org.thingsboard.rule.engine.transform.TbTransformMsgNode",
            json!({"jsScript": script}),
        );
        let mut s = ChainStage::new(load(&[src], &opts).unwrap());
        let mut out = Vec::new();
        s.on_event(at(0), tele("d", 0, &[("v", Value::I64(1))]), &mut out);
        assert_eq!(out.len(), 1, "{script}: {out:?}");
        assert_eq!(points(&out[0]), json!({"failed": 1}), "{script}");
        let c = s.counters();
        let node = &c[0].1[0].2;
        assert_eq!(node.errors, 1, "{script}");
        assert!(
            node.last_error.as_deref().unwrap_or("").contains(why),
            "{script}: {:?}",
            node.last_error
        );
        // The runtime goes on working for the next message.
        s.on_event(at(1), tele("d", 1, &[("v", Value::I64(2))]), &mut out);
        assert_eq!(out.len(), 2, "{script}");
    }
}

#[test]
fn enrichment_from_the_gateways_own_latest_values_and_attributes() {
    // Attributes are saved as attributes, telemetry is enriched then saved.
    let src = Source {
        origin: "enrich.json".into(),
        json: json!({
            "ruleChain": {"name": "enrich"},
            "metadata": {"firstNodeIndex": 0, "nodes": [
                {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "switch", "configuration": {}},
                {"type": "org.thingsboard.rule.engine.telemetry.TbMsgAttributesNode", "name": "save attributes", "configuration": {}},
                {"type": "org.thingsboard.rule.engine.metadata.TbGetAttributesNode", "name": "enrich",
                 "configuration": {"latestTsKeyNames": ["setpoint"], "clientAttributeNames": ["model"], "fetchTo": "METADATA"}},
                {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "copy",
                 "configuration": {"jsScript": "msg.seen_setpoint = metadata.setpoint || null; msg.seen_model = metadata.cs_model || null; return {msg: msg, metadata: metadata, msgType: msgType};"}},
                {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
            ], "connections": [
                {"fromIndex": 0, "toIndex": 1, "type": "Post attributes"},
                {"fromIndex": 0, "toIndex": 2, "type": "Post telemetry"},
                {"fromIndex": 2, "toIndex": 3, "type": "Success"},
                {"fromIndex": 3, "toIndex": 4, "type": "Success"}
            ]}
        })
        .to_string(),
    };
    let mut s = ChainStage::new(load(&[src], &LoadOptions::default()).unwrap());
    let mut out = Vec::new();
    let attrs = Event::new(
        "d",
        at(0),
        Body::Attributes(vec![Point::good("model", Value::Str("X1".into()))]),
    );
    s.on_event(at(0), attrs, &mut out);
    // The message in flight is not a saved value: no setpoint yet.
    s.on_event(
        at(1),
        tele("d", 1, &[("setpoint", Value::I64(40))]),
        &mut out,
    );
    s.on_event(
        at(2),
        tele("d", 2, &[("setpoint", Value::I64(41))]),
        &mut out,
    );
    s.on_event(at(3), tele("d", 3, &[("v", Value::I64(7))]), &mut out);
    let seen: Vec<(Json, Json)> = out[1..]
        .iter()
        .map(|e| {
            (
                points(e)["seen_setpoint"].clone(),
                points(e)["seen_model"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Json::Null, json!("X1")),
            (json!("40"), json!("X1")),
            (json!("41"), json!("X1")),
        ]
    );
}

#[test]
fn a_node_that_sends_a_message_back_to_itself_twice_is_cut_off_not_spun() {
    // Two connections from the switch back to itself: without a budget over
    // all copies, one message would make 2^MAX_HOPS runs.
    let chain = json!({
        "ruleChain": {"name": "loops"},
        "metadata": {"firstNodeIndex": 0, "nodes": [
            {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "switch", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
        ], "connections": [
            {"fromIndex": 0, "toIndex": 0, "type": "Post telemetry"},
            {"fromIndex": 0, "toIndex": 0, "type": "Post telemetry"},
            {"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"}
        ]}
    });
    let src = Source {
        origin: "loops.json".into(),
        json: chain.to_string(),
    };
    let mut s = ChainStage::new(load(&[src], &LoadOptions::default()).unwrap());
    let mut out = Vec::new();
    s.on_event(at(0), tele("d", 0, &[("v", Value::I64(1))]), &mut out);
    let budget = outpost_rules::engine::MAX_STEPS;
    let c = s.counters();
    let switch = &c[0].1[0].2;
    let save = &c[0].1[1].2;
    let runs = (switch.messages_in - switch.dropped) + (save.messages_in - save.dropped);
    assert!(runs <= budget as u64 + 1, "{runs} runs for one message");
    assert!(!out.is_empty(), "what ran before the cut-off was saved");
    // Paths that reach MAX_HOPS are errors too; the budget's cut-off is the
    // last thing said, and what it dropped is counted.
    let said: Vec<_> = [switch, save]
        .iter()
        .filter_map(|n| n.last_error.clone())
        .collect();
    assert!(said.iter().any(|e| e.contains("cut off after")), "{said:?}");
    assert!(switch.dropped + save.dropped > 0);
    let errors = switch.errors + save.errors;
    // The next message gets a budget of its own.
    let before = out.len();
    s.on_event(at(1), tele("d", 1, &[("v", Value::I64(2))]), &mut out);
    assert!(out.len() > before);
    let c = s.counters();
    assert!(c[0].1[0].2.errors + c[0].1[1].2.errors > errors);
}

/// The older export format links a node to another chain through
/// `ruleChainConnections` (by the target's id) instead of an input node.
#[test]
fn rule_chain_connections_call_the_linked_chain() {
    let root = Source {
        origin: "old-root.json".into(),
        json: json!({
            "ruleChain": {"name": "Old root", "id": {"entityType": "RULE_CHAIN", "id": "a-root"}},
            "metadata": {"firstNodeIndex": 0, "nodes": [
                {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "switch", "configuration": {"version": 0}}
            ], "connections": [],
            "ruleChainConnections": [
                {"fromIndex": 0, "targetRuleChainId": {"entityType": "RULE_CHAIN", "id": "b-save"},
                 "additionalInfo": {"layoutX": 1, "layoutY": 2}, "type": "Post telemetry"}
            ]}
        })
        .to_string(),
    };
    let save = Source {
        origin: "save.json".into(),
        json: json!({
            "ruleChain": {"name": "Saver", "id": {"entityType": "RULE_CHAIN", "id": "b-save"}},
            "metadata": {"firstNodeIndex": 0, "nodes": [
                {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
            ], "connections": []}
        })
        .to_string(),
    };
    let mut s = stage(&[root.clone(), save]);
    let mut out = Vec::new();
    s.on_event(
        at(0),
        tele("boiler", 0, &[("t", Value::F64(1.5))]),
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(points(&out[0]), json!({"t": 1.5}));
    // Without the linked chain: a load error naming it.
    let errors = load(&[root], &LoadOptions::default()).unwrap_err();
    assert!(
        errors.len() == 1
            && errors[0].contains("ruleChainConnections")
            && errors[0].contains("b-save"),
        "{errors:?}"
    );
}

/// A pass-through node stands in for an unsupported one on `Success`; when
/// all its connections are other relations, every message stops there, and
/// loading says so.
#[test]
fn a_pass_through_node_without_success_connections_is_warned_about() {
    let chain = Source {
        origin: "filter.json".into(),
        json: json!({
            "ruleChain": {"name": "f"},
            "metadata": {"firstNodeIndex": 0, "nodes": [
                {"type": "org.thingsboard.rule.engine.filter.TbSomeFutureFilterNode", "name": "future filter", "configuration": {}},
                {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}},
                {"type": "org.thingsboard.rule.engine.transform.TbSomeFutureTransformNode", "name": "future transform", "configuration": {}}
            ], "connections": [
                {"fromIndex": 0, "toIndex": 1, "type": "True"},
                {"fromIndex": 0, "toIndex": 2, "type": "False"},
                {"fromIndex": 2, "toIndex": 1, "type": "Success"}
            ]}
        })
        .to_string(),
    };
    let opts = LoadOptions {
        pass_unsupported: true,
        ..LoadOptions::default()
    };
    let (_, warnings) = outpost_rules::tb::load_with_warnings(&[chain], &opts).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("\"future filter\"") && warnings[0].contains("True, False"),
        "{warnings:?}"
    );
}
