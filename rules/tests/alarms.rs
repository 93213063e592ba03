//! Alarms as ThingsBoard keeps them (identity, status, times, details with
//! `prevAlarmDetails`) across a restart (the memory rebuilt from the
//! events the log keeps) and a reload; attributes of the three scopes seen
//! by the enrichment node with ThingsBoard's prefixes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use outpost_core::{Alarm, AlarmSeverity, AttributeScope, Body, Event, Point, Timestamp, Value};
use outpost_rules::tb::{load, LoadOptions, Source};
use outpost_rules::{ChainStage, Memory, Stage};
use serde_json::{json, Value as Json};

const T0: i64 = 1_764_000_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::synced(T0 + ms)
}

fn tele(ms: i64, t: f64) -> Event {
    Event::new(
        "boiler",
        at(ms),
        Body::Telemetry(vec![Point::good("temperature", Value::F64(t))]),
    )
}

/// Above 80 raises "High Temperature" (details: the reading and how often
/// it was raised, from `prevAlarmDetails`); below 70 clears it. The
/// alarm nodes' outputs are saved as telemetry `alarm_out` so they can be
/// read back.
fn chain(lang: &str) -> Source {
    let (details, clear) = match lang {
        "JS" => (
            "var prev = metadata.prevAlarmDetails ? JSON.parse(metadata.prevAlarmDetails) : {count: 0}; \
             return {temperature: msg.temperature, count: prev.count + 1};",
            "var prev = JSON.parse(metadata.prevAlarmDetails); return {cleared_at: msg.temperature, count: prev.count};",
        ),
        _ => (
            "var prev = metadata.prevAlarmDetails != null ? JSON.parse(metadata.prevAlarmDetails) : {count: 0}; \
             return {temperature: msg.temperature, count: prev.count + 1};",
            "var prev = JSON.parse(metadata.prevAlarmDetails); return {cleared_at: msg.temperature, count: prev.count};",
        ),
    };
    let (dkey, js) = if lang == "JS" {
        ("alarmDetailsBuildJs", true)
    } else {
        ("alarmDetailsBuildTbel", false)
    };
    let filter_key = if js { "jsScript" } else { "tbelScript" };
    let chain = json!({
        "ruleChain": {"name": "alarms"},
        "metadata": {"firstNodeIndex": 0, "nodes": [
            {"type": "org.thingsboard.rule.engine.filter.TbJsFilterNode", "name": "hot?",
             "configuration": {"scriptLang": lang, filter_key: "return msg.temperature > 80;"}},
            {"type": "org.thingsboard.rule.engine.action.TbCreateAlarmNode", "name": "raise",
             "configuration": {"scriptLang": lang, "alarmType": "High Temperature", "severity": "MAJOR",
                               "propagate": true, "relationTypes": ["Contains"], dkey: details}},
            {"type": "org.thingsboard.rule.engine.filter.TbJsFilterNode", "name": "cool?",
             "configuration": {"scriptLang": lang, filter_key: "return msg.temperature < 70;"}},
            {"type": "org.thingsboard.rule.engine.action.TbClearAlarmNode", "name": "clear",
             "configuration": {"scriptLang": lang, "alarmType": "High Temperature", dkey: clear}},
            {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "out",
             "configuration": {"jsScript": "return {msg: {alarm_out: JSON.stringify({rel: metadata.rel, status: msg.status, severity: msg.severity, startTs: msg.startTs, endTs: msg.endTs, clearTs: msg.clearTs, details: msg.details, propagate: msg.propagate, existing: metadata.isExistingAlarm || null})}, metadata: metadata, msgType: 'POST_TELEMETRY_REQUEST'};"}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.metadata.TbGetAttributesNode", "name": "tag",
             "configuration": {"latestTsKeyNames": [], "fetchTo": "METADATA"}}
        ], "connections": [
            {"fromIndex": 0, "toIndex": 1, "type": "True"},
            {"fromIndex": 0, "toIndex": 2, "type": "False"},
            {"fromIndex": 1, "toIndex": 4, "type": "Created"},
            {"fromIndex": 1, "toIndex": 4, "type": "Updated"},
            {"fromIndex": 2, "toIndex": 3, "type": "True"},
            {"fromIndex": 3, "toIndex": 4, "type": "Cleared"},
            {"fromIndex": 4, "toIndex": 5, "type": "Success"}
        ]}
    });
    Source {
        origin: format!("alarms-{lang}.json"),
        json: chain.to_string(),
    }
}

fn stage(lang: &str) -> ChainStage {
    ChainStage::new(load(&[chain(lang)], &LoadOptions::default()).unwrap())
}

fn alarms(out: &[Event]) -> Vec<&Alarm> {
    out.iter()
        .filter_map(|e| match &e.body {
            Body::Alarm(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn outputs(out: &[Event]) -> Vec<Json> {
    out.iter()
        .filter_map(|e| match &e.body {
            Body::Telemetry(p) if p[0].tag == "alarm_out" => match &p[0].value {
                Value::Str(s) => Some(serde_json::from_str(s).unwrap()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn run_alarm_story(lang: &str) {
    let mut s = stage(lang);
    let mut log = Vec::new();
    s.on_event(at(0), tele(0, 85.0), &mut log);
    s.on_event(at(1000), tele(1000, 90.0), &mut log);

    // A restart: the new stage knows only what the log's current state
    // holds (the last record of each open alarm).
    let mut restarted = stage(lang);
    let open: Vec<Event> = log
        .iter()
        .filter(|e| matches!(e.body, Body::Alarm(_)))
        .cloned()
        .collect();
    restarted.put_memory(Memory::restore(&open));
    restarted.on_event(at(2000), tele(2000, 95.0), &mut log);

    // A reload: the memory carries over.
    let mut reloaded = stage(lang);
    reloaded.put_memory(restarted.take_memory().unwrap());
    reloaded.on_event(at(3000), tele(3000, 60.0), &mut log);
    // Nothing open any more: a second cool reading clears nothing.
    reloaded.on_event(at(4000), tele(4000, 60.0), &mut log);

    let a = alarms(&log);
    assert_eq!(a.len(), 4, "{lang}: create, update, update, clear: {a:?}");
    assert!(a.iter().all(|a| a.name == "High Temperature"
        && a.severity == AlarmSeverity::Major
        && a.start_ms == T0
        && a.propagation.related
        && a.propagation.relation_types == ["Contains"]));
    assert_eq!(
        a.iter().map(|a| a.end_ms - T0).collect::<Vec<_>>(),
        [0, 1000, 2000, 2000],
        "{lang}"
    );
    assert_eq!(
        a.iter().map(|a| a.status()).collect::<Vec<_>>(),
        [
            "ACTIVE_UNACK",
            "ACTIVE_UNACK",
            "ACTIVE_UNACK",
            "CLEARED_UNACK"
        ]
    );
    assert_eq!(a[3].clear_ms, Some(T0 + 3000));
    // prevAlarmDetails carried the count through the restart and reload.
    let details: Vec<Json> = a
        .iter()
        .map(|a| serde_json::from_str(&a.details).unwrap())
        .collect();
    assert_eq!(
        details,
        [
            json!({"temperature": 85, "count": 1}),
            json!({"temperature": 90, "count": 2}),
            json!({"temperature": 95, "count": 3}),
            json!({"cleared_at": 60, "count": 3}),
        ],
        "{lang}"
    );
    // What the nodes sent on: ThingsBoard's alarm fields and flags.
    let o = outputs(&log);
    assert_eq!(o.len(), 4, "{lang}: {o:?}");
    assert_eq!(o[0]["status"], "ACTIVE_UNACK");
    assert_eq!(o[0]["existing"], Json::Null);
    assert_eq!(o[1]["existing"], "true");
    assert_eq!(o[2]["startTs"], T0);
    assert_eq!(o[2]["endTs"], T0 + 2000);
    assert_eq!(o[3]["status"], "CLEARED_UNACK");
    assert_eq!(o[3]["clearTs"], T0 + 3000);
    assert_eq!(o[3]["propagate"], true);
}

#[test]
fn alarms_update_and_clear_across_a_restart_and_a_reload_in_js() {
    run_alarm_story("JS");
}

#[test]
fn alarms_update_and_clear_across_a_restart_and_a_reload_in_tbel() {
    run_alarm_story("TBEL");
}

#[test]
fn acknowledging_and_clearing_from_outside_the_chains() {
    let mut s = stage("JS");
    let mut log = Vec::new();
    s.on_event(at(0), tele(0, 85.0), &mut log);
    let mut engine_memory = s.take_memory().unwrap();
    assert_eq!(engine_memory.alarms.len(), 1);
    let mut e = outpost_rules::Engine::default();
    e.put_memory(std::mem::take(&mut engine_memory));
    let ack = e
        .acknowledge(at(500), "boiler", "High Temperature", None)
        .expect("an open alarm to acknowledge");
    let Body::Alarm(a) = &ack.body else { panic!() };
    assert_eq!((a.status(), a.ack_ms), ("ACTIVE_ACK", Some(T0 + 500)));
    assert!(
        e.acknowledge(at(600), "boiler", "High Temperature", None)
            .is_none(),
        "twice"
    );
    let cleared = e.clear(at(700), "boiler", "High Temperature").unwrap();
    let Body::Alarm(c) = &cleared.body else {
        panic!()
    };
    assert_eq!(c.status(), "CLEARED_ACK");
    assert!(e.clear(at(800), "boiler", "High Temperature").is_none());
    assert!(e.acknowledge(at(900), "boiler", "nope", None).is_none());
    // A restart with the closed alarm in the log's state opens nothing.
    assert!(Memory::restore([&cleared]).alarms.is_empty());
}

#[test]
fn attributes_of_each_scope_reach_the_enrichment_node_with_their_prefixes() {
    let chain = json!({
        "ruleChain": {"name": "enrich"},
        "metadata": {"firstNodeIndex": 0, "nodes": [
            {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "switch", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.metadata.TbGetAttributesNode", "name": "enrich",
             "configuration": {"clientAttributeNames": ["model"], "sharedAttributeNames": ["setpoint"],
                               "serverAttributeNames": ["limit"], "fetchTo": "DATA", "tellFailureIfAbsent": true}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgAttributesNode", "name": "save attributes", "configuration": {}},
            {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "seen",
             "configuration": {"jsScript": "return {msg: {updated: metadata.scope}, metadata: metadata, msgType: 'POST_TELEMETRY_REQUEST'};"}}
        ], "connections": [
            {"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
            {"fromIndex": 0, "toIndex": 3, "type": "Post attributes"},
            {"fromIndex": 0, "toIndex": 4, "type": "Attributes Updated"},
            {"fromIndex": 1, "toIndex": 2, "type": "Success"},
            {"fromIndex": 4, "toIndex": 2, "type": "Success"}
        ]}
    });
    let src = Source {
        origin: "enrich.json".into(),
        json: chain.to_string(),
    };
    let mut s = ChainStage::new(load(&[src], &LoadOptions::default()).unwrap());
    let mut out = Vec::new();
    // Missing attributes: Failure (not saved).
    s.on_event(at(0), tele(0, 1.0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    let attr = |body| Event::new("boiler", at(1), body);
    s.on_event(
        at(1),
        attr(Body::Attributes(vec![Point::good(
            "model",
            Value::Str("X1".into()),
        )])),
        &mut out,
    );
    s.on_event(
        at(1),
        attr(Body::ScopedAttributes(
            AttributeScope::Shared,
            vec![Point::good("setpoint", Value::F64(72.5))],
        )),
        &mut out,
    );
    // A restart between: server attributes come from the log's state.
    let mut memory = s.take_memory().unwrap();
    memory.state.observe(&attr(Body::ScopedAttributes(
        AttributeScope::Server,
        vec![Point::good("limit", Value::I64(90))],
    )));
    s.put_memory(memory);
    s.on_event(at(2), tele(2, 3.0), &mut out);
    // The shared update is recorded whatever the chain does, and the chain
    // sees it as ATTRIBUTES_UPDATED with its scope.
    let kinds: Vec<String> = out
        .iter()
        .map(|e| match &e.body {
            Body::Attributes(_) => "client".to_string(),
            Body::ScopedAttributes(s, _) => s.as_str().to_string(),
            Body::Telemetry(p) => p
                .iter()
                .map(|p| format!("{}={}", p.tag, p.value))
                .collect::<Vec<_>>()
                .join(","),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "client",
            "shared",
            "updated=\"SHARED_SCOPE\"",
            "cs_model=\"X1\",shared_setpoint=72.5,ss_limit=90,temperature=3"
        ]
    );
}
