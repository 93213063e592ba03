//! outpostd with a rule chain, against a real Modbus device (pymodbus): a
//! threshold alarm switches a fan through the driver's write path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_core::{AlarmState, Body, Value};

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

const CHAIN: &str = r#"{
  "ruleChain": {"name": "Boiler protection", "root": true},
  "metadata": {
    "firstNodeIndex": 0,
    "nodes": [
      {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "Type", "configuration": {}},
      {"type": "outpost.Threshold", "name": "Overheat",
       "configuration": {"key": "temperature", "high": 80, "hysteresis": 5, "alarmType": "Overheat", "severity": "CRITICAL"}},
      {"type": "outpost.Write", "name": "Fan on",
       "configuration": {"device": "boiler", "tag": "fan", "value": 1, "minIntervalSeconds": 60}},
      {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "Save", "configuration": {}}
    ],
    "connections": [
      {"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
      {"fromIndex": 1, "toIndex": 2, "type": "Created"},
      {"fromIndex": 1, "toIndex": 3, "type": "Success"}
    ]
  }
}"#;

#[test]
fn a_threshold_alarm_writes_to_a_modbus_device() {
    let plc = outpost_tests::ModbusPeer::tcp(
        &serde_json::json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [90, 0]}]}]}),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("chains")).unwrap();
    std::fs::write(dir.path().join("chains/boiler.json"), CHAIN).unwrap();
    let cfg = format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n\
         [rules]\nchains = [\"chains/boiler.json\"]\n\
         [[device]]\nname = \"boiler\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"temperature\"\ntable = \"holding\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"fan\"\ntable = \"holding\"\naddress = 1\nwritable = true\n",
        plc.port
    );
    let cfg_path = dir.path().join("outpost.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let data = dir.path().join("data");
    let mut child = outpost_tests::start_outpostd(BIN, &cfg_path, &data, Stdio::null());
    // Wait for the write to reach the device.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15)
        && !plc.requests().iter().any(|r| r.function == 6)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500)); // more readings, no more writes
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success());
    let writes: Vec<_> = plc
        .requests()
        .into_iter()
        .filter(|r| r.function == 6)
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "one write: the alarm is raised once: {writes:?}"
    );
    assert_eq!(writes[0].address, 1);

    let events = outpost_tests::read_log(&data.join("events.db"));
    let alarms: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event.body {
            Body::Alarm(a) => Some((e.event.device.clone(), a.name.clone(), a.state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        alarms,
        [(
            "boiler".to_string(),
            "Overheat".to_string(),
            AlarmState::Active
        )]
    );
    let temps: Vec<Value> = events
        .iter()
        .filter_map(|e| match &e.event.body {
            Body::Telemetry(p) => p
                .iter()
                .find(|p| p.tag == "temperature")
                .map(|p| p.value.clone()),
            _ => None,
        })
        .collect();
    assert!(temps.len() >= 3, "saved readings: {temps:?}");
    assert!(
        temps
            .iter()
            .all(|v| *v == Value::I64(90) || *v == Value::U64(90) || *v == Value::F64(90.0)),
        "{temps:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event.body, Body::Status(_))),
        "device status is logged whatever the chain does"
    );
}

#[test]
fn check_config_reports_chain_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = CHAIN.replace(
        "outpost.Write",
        "org.thingsboard.rule.engine.mail.TbSendEmailNode",
    );
    std::fs::write(dir.path().join("chain.json"), bad).unwrap();
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nid = \"gw\"\n[rules]\nchains = [\"chain.json\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"Fan on\"")
            && err.contains("TbSendEmailNode")
            && err.contains("unsupported node type"),
        "{err}"
    );
    // And the daemon refuses to start on it.
    let run = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stdout).contains("TbSendEmailNode"));
}

fn marking_chain(mark: &str) -> String {
    serde_json::json!({
        "ruleChain": {"name": "mark"},
        "metadata": {"firstNodeIndex": 0, "nodes": [
            {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "mark",
             "configuration": {"jsScript": format!("msg.chain = '{mark}'; return {{msg: msg, metadata: metadata, msgType: msgType}};")}},
            {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "save", "configuration": {}}
        ], "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Success"}]}
    })
    .to_string()
}

#[test]
fn sighup_reloads_the_chains_and_refuses_a_set_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain.json");
    std::fs::write(&chain, marking_chain("A")).unwrap();
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(
        &cfg,
        // Commits at once: the test reads the switch from A to B in log
        // order, and with a group-commit window the last events chain A
        // handled may be committed after the reload's audit entry.
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[gateway.log]\ncommit_max_delay = \"0s\"\n[rules]\nchains = [\"chain.json\"]\n\
         [[device]]\nname = \"s\"\n[device.sim]\ninterval = \"100ms\"\n\
         [[device.sim.tag]]\nname = \"v\"\nsine = { offset = 1.0, amplitude = 1.0, period = \"10s\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = outpost_tests::start_outpostd(BIN, &cfg, &data, Stdio::null());
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    std::thread::sleep(Duration::from_millis(1000));
    // A broken set: refused, chain A keeps running.
    std::fs::write(
        &chain,
        marking_chain("B").replace("TbTransformMsgNode", "TbNoSuchNode"),
    )
    .unwrap();
    hup(child.id());
    std::thread::sleep(Duration::from_millis(1000));
    // A good set: chain B takes over.
    std::fs::write(&chain, marking_chain("B")).unwrap();
    hup(child.id());
    std::thread::sleep(Duration::from_millis(1000));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let events = outpost_tests::read_log(&data.join("events.db"));
    // The sequence of marks and reload audits, in log order.
    let mut seq: Vec<String> = Vec::new();
    for e in &events {
        match &e.event.body {
            Body::Telemetry(p) => {
                if let Some(m) = p.iter().find(|p| p.tag == "chain") {
                    let m = match &m.value {
                        Value::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if seq.last() != Some(&m) {
                        seq.push(m);
                    }
                }
            }
            Body::Audit(a) if a.action.starts_with("rules.") => seq.push(a.action.clone()),
            _ => {}
        }
    }
    assert_eq!(
        seq,
        ["A", "rules.refused", "A", "rules.reloaded", "B"],
        "{seq:?}"
    );
    let refused = events
        .iter()
        .find_map(|e| match &e.event.body {
            Body::Audit(a) if a.action == "rules.refused" => Some(a.detail.clone()),
            _ => None,
        })
        .unwrap();
    assert!(refused.contains("TbNoSuchNode"), "{refused}");
}

/// Above 80 °C the chain asks the boiler, by ThingsBoard's RPC request
/// node, to set its fan (a writable register) and to set a tag it does not
/// have; each outcome comes back to the node and is saved as telemetry.
const RPC_CHAIN: &str = r#"{
  "ruleChain": {"name": "Fan by RPC", "root": true},
  "metadata": {
    "firstNodeIndex": 0,
    "nodes": [
      {"type": "org.thingsboard.rule.engine.filter.TbJsFilterNode", "name": "Hot?",
       "configuration": {"scriptLang": "TBEL", "tbelScript": "return msg.temperature > 80 && msg.fan == 0;"}},
      {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "Two requests",
       "configuration": {"scriptLang": "TBEL", "tbelScript": "return [{msg: {method: 'set_fan', params: 1}, metadata: metadata, msgType: 'RPC_CALL_FROM_SERVER_TO_DEVICE'}, {msg: {method: 'set', params: {tag: 'nope', value: 1}}, metadata: metadata, msgType: 'RPC_CALL_FROM_SERVER_TO_DEVICE'}];"}},
      {"type": "org.thingsboard.rule.engine.rpc.TbSendRPCRequestNode", "name": "RPC",
       "configuration": {"timeoutInSeconds": 5}},
      {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "Done",
       "configuration": {"jsScript": "return {msg: {rpc_ok: 1}, metadata: metadata, msgType: 'POST_TELEMETRY_REQUEST'};"}},
      {"type": "org.thingsboard.rule.engine.transform.TbTransformMsgNode", "name": "Failed",
       "configuration": {"jsScript": "return {msg: {rpc_error: metadata.error}, metadata: metadata, msgType: 'POST_TELEMETRY_REQUEST'};"}},
      {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "Save", "configuration": {}}
    ],
    "connections": [
      {"fromIndex": 0, "toIndex": 1, "type": "True"},
      {"fromIndex": 1, "toIndex": 2, "type": "Success"},
      {"fromIndex": 2, "toIndex": 3, "type": "Success"},
      {"fromIndex": 2, "toIndex": 4, "type": "Failure"},
      {"fromIndex": 3, "toIndex": 5, "type": "Success"},
      {"fromIndex": 4, "toIndex": 5, "type": "Success"}
    ]
  }
}"#;

#[test]
fn an_rpc_request_node_writes_through_the_driver_and_goes_on_with_the_outcome() {
    let plc = outpost_tests::ModbusPeer::tcp(
        &serde_json::json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [90, 0]}]}]}),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("chains")).unwrap();
    std::fs::write(dir.path().join("chains/rpc.json"), RPC_CHAIN).unwrap();
    let cfg = format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n\
         [rules]\nchains = [\"chains/rpc.json\"]\n\
         [[device]]\nname = \"boiler\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"temperature\"\ntable = \"holding\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"fan\"\ntable = \"holding\"\naddress = 1\nwritable = true\n",
        plc.port
    );
    let cfg_path = dir.path().join("outpost.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let data = dir.path().join("data");
    let mut child = outpost_tests::start_outpostd(BIN, &cfg_path, &data, Stdio::null());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15)
        && !plc.requests().iter().any(|r| r.function == 6)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let writes: Vec<_> = plc
        .requests()
        .into_iter()
        .filter(|r| r.function == 6)
        .collect();
    assert!(
        !writes.is_empty() && writes.iter().all(|w| w.address == 1),
        "{writes:?}"
    );
    let events = outpost_tests::read_log(&data.join("events.db"));
    let saved: Vec<(String, Value)> = events
        .iter()
        .filter_map(|e| match &e.event.body {
            Body::Telemetry(p) => Some(
                p.iter()
                    .map(|p| (p.tag.clone(), p.value.clone()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        saved
            .iter()
            .any(|(t, v)| t == "rpc_ok"
                && matches!(v, Value::I64(1) | Value::U64(1) | Value::F64(_))),
        "the write's success came back to the node: {saved:?}"
    );
    assert!(
        saved
            .iter()
            .any(|(t, v)| t == "rpc_error" && matches!(v, Value::Str(s) if s.contains("nope"))),
        "the unknown tag's failure came back with its error: {saved:?}"
    );
}

const MQTT_CHAIN: &str = r#"{
  "ruleChain": {"name": "Republish"},
  "metadata": {
    "firstNodeIndex": 0,
    "nodes": [
      {"type": "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode", "name": "Type", "configuration": {}},
      {"type": "org.thingsboard.rule.engine.mqtt.TbMqttNode", "name": "To the site broker",
       "configuration": {"topicPattern": "site/${deviceName}/${ts}", "host": "127.0.0.1", "port": PORT,
                         "connectTimeoutSec": 10, "clientId": null, "cleanSession": true, "ssl": false,
                         "retainedMessage": true, "credentials": {"type": "anonymous"}}},
      {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "Save", "configuration": {}}
    ],
    "connections": [
      {"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
      {"fromIndex": 1, "toIndex": 2, "type": "Success"}
    ]
  }
}"#;

/// (topic, payload, retained) of what a subscriber to `site/#` receives.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, bool)>>>;

fn subscriber(rt: &tokio::runtime::Runtime, port: u16, id: &str, clean: bool) -> Received {
    let got: Received = Default::default();
    let log = got.clone();
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
    rt.block_on(c.subscribe("site/#", rumqttc::QoS::AtLeastOnce))
        .unwrap();
    rt.spawn(async move {
        let _client = c;
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    log.lock().unwrap().push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.retain,
                    ));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    got
}

/// The topics of the log's `publish` events and each one's route.
fn logged_publishes(data: &std::path::Path) -> Vec<(String, String, outpost_core::Route)> {
    outpost_tests::read_log(&data.join("events.db"))
        .into_iter()
        .filter_map(|e| match e.event.body {
            Body::Publish(p) => Some((p.topic, p.payload, e.event.route)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_mqtt_node_publishes_through_its_uplink_and_loses_nothing_in_an_outage() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut broker = outpost_tests::Mosquitto::start("");
    let plc = outpost_tests::ModbusPeer::tcp(
        &serde_json::json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [21]}]}]}),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("chains")).unwrap();
    std::fs::write(
        dir.path().join("chains/republish.json"),
        MQTT_CHAIN.replace("PORT", &broker.port.to_string()),
    )
    .unwrap();
    let cfg = format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n\
         [rules]\nchains = [\"chains/republish.json\"]\n\
         [[device]]\nname = \"boiler\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"temperature\"\ntable = \"holding\"\naddress = 0\n\
         [[uplink]]\nname = \"site\"\n[uplink.mqtt]\nurl = \"{}\"\n",
        plc.port,
        broker.url()
    );
    let cfg_path = dir.path().join("outpost.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    // A subscriber with a persistent session: it gets what was published
    // while it was away, once the broker is back.
    let live = subscriber(&rt, broker.port, "live", false);
    std::thread::sleep(Duration::from_millis(300));
    let data = dir.path().join("data");
    let mut child = outpost_tests::start_outpostd(BIN, &cfg_path, &data, Stdio::null());
    let site = |r: &Received| {
        let mut t: Vec<String> = r.lock().unwrap().iter().map(|(t, ..)| t.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    outpost_tests::wait_for(
        "the first republished readings",
        Duration::from_secs(15),
        || (site(&live).len() >= 3).then_some(()),
    );
    // An outage: the node's messages wait in the log.
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    // The daemon has stopped: everything it logged is what must arrive.
    let logged = logged_publishes(&data);
    assert!(
        logged.len() >= 15,
        "about 5 readings a second: {}",
        logged.len()
    );
    let mut topics: Vec<String> = logged.iter().map(|(t, ..)| t.clone()).collect();
    topics.sort();
    for (topic, payload, route) in &logged {
        assert!(topic.starts_with("site/boiler/"), "{topic}");
        assert_eq!(payload, r#"{"temperature":21}"#);
        assert_eq!(*route, outpost_core::Route::Only(vec!["site".into()]));
    }
    // Those of the outage were delivered by a daemon started again.
    let mut child = outpost_tests::start_outpostd(BIN, &cfg_path, &data, Stdio::null());
    outpost_tests::wait_for(
        "every logged message delivered",
        Duration::from_secs(20),
        || {
            let seen = site(&live);
            topics.iter().all(|t| seen.contains(t)).then_some(())
        },
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    // Retained: a subscriber that comes later is given them.
    let late = subscriber(&rt, broker.port, "late", true);
    outpost_tests::wait_for("the retained messages", Duration::from_secs(10), || {
        let got = late.lock().unwrap();
        topics
            .iter()
            .all(|t| got.iter().any(|(g, _, retained)| g == t && *retained))
            .then_some(())
    });
}

#[test]
fn check_config_reads_device_profiles_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules/tests/fixtures/boiler-profile.json"
    );
    let good = std::fs::read_to_string(fixture).unwrap();
    std::fs::write(dir.path().join("profiles/boiler.json"), &good).unwrap();
    std::fs::write(dir.path().join("chain.json"), CHAIN).unwrap();
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nid = \"gw\"\n[rules]\nchains = [\"chain.json\"]\ndevice_profiles = [\"profiles/boiler.json\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A profile that does not read: its file and key path.
    std::fs::write(
        dir.path().join("profiles/boiler.json"),
        good.replace("\"GREATER\"", "\"ABOVE\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profiles/boiler.json: profileData.alarms[0].createRules.CRITICAL.condition.condition[0].predicate.operation: \"ABOVE\" is not one of"),
        "{err}"
    );
}
