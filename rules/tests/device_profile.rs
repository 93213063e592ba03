//! The device profile node with a ThingsBoard device-profile export, on a
//! fake clock: simple, duration and repeating conditions, dynamic values,
//! schedules in a named time zone, attribute rules, string and complex
//! predicates; relations and metadata as ThingsBoard sets them; an alarm
//! that survives a restart is still cleared by its rule.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_core::{
    AlarmSeverity, AlarmState, AttributeScope, Body, Event, Point, Timestamp, Value,
};
use outpost_rules::profile::Profiles;
use outpost_rules::tb::{load_with_warnings, LoadOptions, Source};
use outpost_rules::{ChainStage, Memory, Stage};
use serde_json::{json, Value as Json};

/// Monday 2026-12-07 12:00 in Berlin (11:00 UTC).
const NOON: i64 = 1_796_641_200_000;
/// The same day, 23:30 in Berlin.
const NIGHT: i64 = 1_796_682_600_000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/boiler-profile.json")
}

const RELATIONS: [&str; 4] = [
    "Alarm Created",
    "Alarm Updated",
    "Alarm Severity Updated",
    "Alarm Cleared",
];

/// The profile node, each alarm relation to a transform that records the
/// relation and the alarm as telemetry `out`, then a save node.
fn chain() -> Source {
    let mut nodes = vec![json!({
        "type": "org.thingsboard.rule.engine.profile.TbDeviceProfileNode", "name": "profile",
        "configuration": {"persistAlarmRulesState": false, "fetchAlarmRulesStateOnStart": false}
    })];
    let mut connections = Vec::new();
    for (i, rel) in RELATIONS.iter().enumerate() {
        nodes.push(json!({
            "type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": rel,
            "configuration": {"jsScript": format!(
                "return {{msg: {{out: JSON.stringify({{rel: '{rel}', type: msg.type, severity: msg.severity, \
                 status: msg.status, details: msg.details, propagate: msg.propagate, \
                 repeats: metadata.alarmConditionRepeats || null, duration: metadata.alarmConditionDuration || null, \
                 isNew: metadata.isNewAlarm || null, cleared: metadata.isClearedAlarm || null}})}}, \
                 metadata: metadata, msgType: 'POST_TELEMETRY_REQUEST'}};"
            )}
        }));
        connections.push(json!({"fromIndex": 0, "toIndex": i + 1, "type": rel}));
        connections.push(json!({"fromIndex": i + 1, "toIndex": 5, "type": "Success"}));
    }
    nodes.push(json!({
        "type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save",
        "configuration": {}
    }));
    Source {
        origin: "profile-chain.json".into(),
        json: json!({
            "ruleChain": {"name": "root"},
            "metadata": {"firstNodeIndex": 0, "nodes": nodes, "connections": connections}
        })
        .to_string(),
    }
}

fn stage() -> ChainStage {
    let profiles = Profiles::load(&[fixture()], Path::new("/")).unwrap();
    let opts = LoadOptions {
        profiles: Arc::new(profiles),
        ..LoadOptions::default()
    };
    let (engine, warnings) = load_with_warnings(&[chain()], &opts).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut s = ChainStage::new(engine);
    s.set_device_types(BTreeMap::from([
        ("b1".to_string(), "boiler".to_string()),
        ("other".to_string(), "pump".to_string()),
    ]));
    s
}

fn at(ms: i64) -> Timestamp {
    Timestamp::synced(ms)
}

fn tele(device: &str, ms: i64, key: &str, v: Value) -> Event {
    Event::new(device, at(ms), Body::Telemetry(vec![Point::good(key, v)]))
}

/// The recorded alarm messages (`out`) of `events`.
fn outs(events: &[Event]) -> Vec<Json> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Telemetry(p) => p.iter().find(|p| p.tag == "out").map(|p| match &p.value {
                Value::Str(s) => serde_json::from_str(s).unwrap(),
                other => panic!("{other:?}"),
            }),
            _ => None,
        })
        .collect()
}

struct Run {
    stage: ChainStage,
}

impl Run {
    fn send(&mut self, ev: Event) -> Vec<Json> {
        let mut out = Vec::new();
        let now = ev.ts;
        self.stage.on_event(now, ev, &mut out);
        outs(&out)
    }

    fn tick(&mut self, ms: i64) -> Vec<Json> {
        let mut out = Vec::new();
        self.stage.on_tick(at(ms), &mut out);
        outs(&out)
    }

    fn temp(&mut self, ms: i64, t: f64) -> Vec<Json> {
        self.send(tele("b1", ms, "temperature", Value::F64(t)))
    }
}

fn rels(outs: &[Json]) -> Vec<(String, String)> {
    outs.iter()
        .map(|o| {
            (
                o["rel"].as_str().unwrap().to_string(),
                format!(
                    "{} {}",
                    o["type"].as_str().unwrap(),
                    o["severity"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

fn pair(rel: &str, what: &str) -> (String, String) {
    (rel.to_string(), what.to_string())
}

#[test]
fn duration_dynamic_threshold_severity_and_repeating_clear() {
    let mut r = Run { stage: stage() };
    // The device's own threshold for CRITICAL: 95 instead of the profile's 90.
    let attr = Event::new(
        "b1",
        at(NOON - 1000),
        Body::ScopedAttributes(
            AttributeScope::Server,
            vec![Point::good("criticalTemperature", Value::I64(95))],
        ),
    );
    assert!(r.send(attr).is_empty());

    // 93: above MAJOR's 80, below the device's critical 95. MAJOR needs more
    // than 10 s.
    assert!(r.temp(NOON, 93.0).is_empty());
    assert!(r.temp(NOON + 5_000, 93.5).is_empty());
    assert!(r.tick(NOON + 9_000).is_empty(), "not yet 10 s");
    // The timer finds the duration run out without a new message.
    let out = r.tick(NOON + 10_100);
    assert_eq!(
        rels(&out),
        [pair("Alarm Created", "High Temperature MAJOR")]
    );
    assert_eq!(
        out[0]["details"],
        json!({"data": "Temperature 93.5 for 10 s"})
    );
    assert_eq!(out[0]["duration"], json!("10100"));
    assert_eq!(out[0]["isNew"], json!("true"));
    assert_eq!(out[0]["propagate"], json!(true));
    assert_eq!(out[0]["status"], json!("ACTIVE_UNACK"));
    // Still above 80: the open alarm is updated, not raised again.
    let out = r.temp(NOON + 12_000, 92.0);
    assert_eq!(
        rels(&out),
        [pair("Alarm Updated", "High Temperature MAJOR")]
    );
    // Above the device's 95: CRITICAL.
    let out = r.temp(NOON + 13_000, 96.0);
    assert_eq!(
        rels(&out),
        [pair("Alarm Severity Updated", "High Temperature CRITICAL")]
    );
    assert_eq!(out[0]["details"], json!({"data": "Temperature 96.0"}));
    // MAJOR holds again, but an open CRITICAL alarm is not lowered.
    assert!(r.temp(NOON + 14_000, 91.0).is_empty());
    // Between 70 and 80: nothing. Below 70 twice: cleared (repeating).
    assert!(r.temp(NOON + 15_000, 75.0).is_empty());
    assert!(r.temp(NOON + 16_000, 65.0).is_empty());
    let out = r.temp(NOON + 17_000, 64.0);
    assert_eq!(
        rels(&out),
        [pair("Alarm Cleared", "High Temperature CRITICAL")]
    );
    assert_eq!(out[0]["repeats"], json!("2"));
    assert_eq!(out[0]["cleared"], json!("true"));
    assert_eq!(out[0]["status"], json!("CLEARED_UNACK"));
    // A new excursion starts the duration again from zero.
    assert!(r.temp(NOON + 18_000, 85.0).is_empty());
    assert!(r.tick(NOON + 27_000).is_empty());
    assert!(
        r.temp(NOON + 27_500, 60.0).is_empty(),
        "the excursion ended"
    );
    assert!(
        r.tick(NOON + 40_000).is_empty(),
        "a reset duration never runs out"
    );
}

#[test]
fn a_duration_broken_by_a_reading_starts_again() {
    let mut r = Run { stage: stage() };
    assert!(r.temp(NOON, 85.0).is_empty());
    assert!(r.temp(NOON + 6_000, 79.0).is_empty());
    assert!(r.temp(NOON + 7_000, 85.0).is_empty());
    assert!(
        r.tick(NOON + 12_000).is_empty(),
        "only 5 s since it began again"
    );
    assert_eq!(
        rels(&r.tick(NOON + 17_100)),
        [pair("Alarm Created", "High Temperature MAJOR")]
    );
}

#[test]
fn schedules_follow_the_profiles_time_zone() {
    let mut r = Run { stage: stage() };
    let door = |ms, open| tele("b1", ms, "door", Value::Bool(open));
    // Noon in Berlin: outside 22:00–06:00.
    assert!(r.send(door(NOON, true)).is_empty());
    // 23:30 in Berlin (22:30 UTC): inside the window that crosses midnight.
    let out = r.send(door(NIGHT, true));
    assert_eq!(
        rels(&out),
        [pair("Alarm Created", "Door open at night WARNING")]
    );
    // 01:00 in Berlin, the next day.
    let out = r.send(door(NIGHT + 5_400_000, true));
    assert_eq!(
        rels(&out),
        [pair("Alarm Updated", "Door open at night WARNING")]
    );
    let out = r.send(door(NIGHT + 5_500_000, false));
    assert_eq!(
        rels(&out),
        [pair("Alarm Cleared", "Door open at night WARNING")]
    );
}

#[test]
fn attribute_string_complex_and_entity_field_rules() {
    let mut r = Run { stage: stage() };
    let battery = |ms, v| {
        Event::new(
            "b1",
            at(ms),
            Body::Attributes(vec![Point::good("battery", Value::I64(v))]),
        )
    };
    let out = r.send(battery(NOON, 15));
    assert_eq!(rels(&out), [pair("Alarm Created", "Low battery MINOR")]);
    assert_eq!(out[0]["details"], json!({"data": "Battery at 15 %"}));
    // Telemetry does not touch an attribute-only rule.
    assert!(r.temp(NOON + 1, 20.0).is_empty());
    assert!(r.send(battery(NOON + 2, 25)).is_empty(), "not yet 30");
    let out = r.send(battery(NOON + 3, 35));
    assert_eq!(rels(&out), [pair("Alarm Cleared", "Low battery MINOR")]);

    // IN, ignoring case; the CUSTOM schedule holds on Mondays (UTC) only.
    let mode = |ms, m: &str| tele("b1", ms, "mode", Value::Str(m.into()));
    assert!(r.send(mode(NOON, "running")).is_empty());
    let out = r.send(mode(NOON + 1, "FAULT"));
    assert_eq!(
        rels(&out),
        [pair("Alarm Created", "Fault or dry air MAJOR")]
    );
    let tuesday = NOON + 86_400_000;
    assert!(
        r.send(mode(tuesday, "fault")).is_empty(),
        "disabled on Tuesdays; WARNING needs humidity"
    );
    // OR of two ranges, and the device's type as an entity field: the
    // alarm stays at MAJOR (not lowered to WARNING).
    let hum = |dev: &str, ms, v| tele(dev, ms, "humidity", Value::F64(v));
    assert!(r.send(hum("b1", tuesday + 1, 50.0)).is_empty());
    assert!(
        r.send(hum("b1", tuesday + 2, 95.0)).is_empty(),
        "open MAJOR not lowered"
    );
    // A device whose type has no profile passes untouched.
    assert!(r.send(hum("other", tuesday + 3, 5.0)).is_empty());
}

#[test]
fn an_alarm_restored_after_a_restart_is_cleared_by_its_rule() {
    let mut r = Run { stage: stage() };
    assert!(r.temp(NOON, 99.0).len() == 1);
    let mut memory = r.stage.take_memory().unwrap();
    let open: Vec<_> = memory.alarms.values().cloned().collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].severity, AlarmSeverity::Critical);
    // What the log's current state gives back at start.
    let events: Vec<Event> = open
        .iter()
        .map(|a| Event::new("b1", at(NOON), Body::Alarm(a.clone())))
        .collect();
    memory = Memory::restore(&events);
    let mut again = Run { stage: stage() };
    again.stage.put_memory(memory);
    assert!(again.temp(NOON + 1_000, 60.0).is_empty());
    let mut raw = Vec::new();
    again.stage.on_event(
        at(NOON + 2_000),
        tele("b1", NOON + 2_000, "temperature", Value::F64(59.0)),
        &mut raw,
    );
    assert_eq!(
        rels(&outs(&raw)),
        [pair("Alarm Cleared", "High Temperature CRITICAL")]
    );
    let alarm = raw
        .iter()
        .find_map(|e| match &e.body {
            Body::Alarm(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(alarm.state, AlarmState::Cleared);
    assert_eq!(alarm.start_ms, NOON, "the restored alarm's start");
    assert_eq!(alarm.clear_ms, Some(NOON + 2_000));
}

#[test]
fn profile_errors_name_the_file_and_key_path_all_at_once() {
    let dir = tempfile_dir();
    let bad = dir.join("bad.json");
    let mut j: Json = serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    let alarms = &mut j["profileData"]["alarms"];
    alarms[0]["createRules"]["MAJOR"]["condition"]["spec"]["unit"] = json!("FORTNIGHTS");
    alarms[1]["createRules"]["WARNING"]["schedule"]["timezone"] = json!("Mars/Olympus");
    alarms[2]["createRules"]["SEVERE"] = alarms[2]["createRules"]["MINOR"].clone();
    alarms[3]["createRules"]["MAJOR"]["condition"]["condition"][0]["predicate"]["operation"] =
        json!("LIKE");
    std::fs::write(&bad, j.to_string()).unwrap();
    let errors = Profiles::load(std::slice::from_ref(&bad), Path::new("/")).unwrap_err();
    let at = bad.display().to_string();
    assert_eq!(
        errors,
        [
            format!("{at}: profileData.alarms[0].createRules.MAJOR.condition.spec.unit: \"FORTNIGHTS\" is not MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS"),
            format!("{at}: profileData.alarms[1].createRules.WARNING.schedule.timezone: \"Mars/Olympus\" is not in the system's time-zone database (/usr/share/zoneinfo: install tzdata)"),
            format!("{at}: profileData.alarms[2].createRules.SEVERE: not a severity (CRITICAL, MAJOR, MINOR, WARNING, INDETERMINATE)"),
            format!("{at}: profileData.alarms[3].createRules.MAJOR.condition.condition[0].predicate.operation: \"LIKE\" is not one of EQUAL, NOT_EQUAL, STARTS_WITH, ENDS_WITH, CONTAINS, NOT_CONTAINS, IN, NOT_IN"),
        ]
    );
    // Not JSON: the line and column.
    std::fs::write(&bad, "{\n  \"name\": \"x\",\n  oops\n}").unwrap();
    let errors = Profiles::load(std::slice::from_ref(&bad), Path::new("/")).unwrap_err();
    assert!(
        errors[0].starts_with(&format!("{at}:3:3: not JSON")),
        "{errors:?}"
    );
    // The same name twice.
    let errors = Profiles::load(&[fixture(), fixture()], Path::new("/")).unwrap_err();
    assert!(errors[0].ends_with(&format!(
        "name: profile \"boiler\" is also defined in {}",
        fixture().display()
    )));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_profile_node_without_profiles_warns_and_passes() {
    let (engine, warnings) = load_with_warnings(&[chain()], &LoadOptions::default()).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("no device profiles are loaded (rules.device_profiles)"));
    let mut s = ChainStage::new(engine);
    s.set_device_types(BTreeMap::from([("b1".to_string(), "boiler".to_string())]));
    let mut out = Vec::new();
    s.on_event(
        at(NOON),
        tele("b1", NOON, "temperature", Value::F64(99.0)),
        &mut out,
    );
    assert!(outs(&out).is_empty());
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("outpost-profile-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
