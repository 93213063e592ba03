//! outpostd in ThingsBoard mode against Mosquitto with a responder that
//! behaves as ThingsBoard's gateway API does: one MQTT session carries
//! telemetry, attributes, RPC and the remote configuration; devices are
//! connected with their type and disconnected when they go offline; shared
//! attributes are asked for, recorded and written to the device they map
//! to; no `outpost/...` topic, no placeholder value, the status once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_config::document::Document;
use outpost_core::{AttributeScope, Body, Value as V};
use outpost_tests::{wait_for, ModbusPeer, Mosquitto};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(broker: &str, plc: u16, ghost: u16, period: &str) -> String {
    format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n\
         [remote]\nmqtt_uplink = \"tb\"\nthingsboard = true\ngrace = \"2s\"\n\
         [[device]]\nname = \"boiler\"\ntype = \"boiler-profile\"\nattribute_tags = [\"fw\"]\n\
         [device.attributes]\nlocation = \"cellar\"\n\
         [device.server_attributes]\nlimit = 90\n\
         [device.attribute_updates]\ntarget = \"setpoint\"\n\
         [device.modbus]\ntcp = \"127.0.0.1:{plc}\"\nunit = 1\nperiod = \"{period}\"\n\
         [[device.modbus.tag]]\nname = \"temp\"\ntable = \"holding\"\naddress = 0\n\
         [[device.modbus.tag]]\nname = \"setpoint\"\ntable = \"holding\"\naddress = 1\nwritable = true\n\
         [[device.modbus.tag]]\nname = \"fw\"\ntable = \"holding\"\naddress = 2\n\
         [[device]]\nname = \"ghost\"\n[device.modbus]\ntcp = \"127.0.0.1:{ghost}\"\nunit = 1\nperiod = \"200ms\"\ntimeout = \"100ms\"\n\
         [[device.modbus.tag]]\nname = \"never\"\ntable = \"holding\"\naddress = 0\ntype = \"u32\"\n\
         [[uplink]]\nname = \"tb\"\n[uplink.mqtt]\nurl = \"{broker}\"\nmode = \"thingsboard\"\nusername = \"gw-token\"\n"
    )
}

/// What the responder saw: (topic, payload).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// ThingsBoard's side of the gateway API, as far as this test needs it:
/// answers attribute requests of devices (`target` = 55) and of the
/// gateway (`configuration` = `doc`), and records every message.
async fn thingsboard(port: u16, doc: Value) -> (rumqttc::AsyncClient, Seen) {
    let mut o = rumqttc::MqttOptions::new("thingsboard", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
    c.subscribe("#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let seen: Seen = Arc::default();
    let (client, log) = (c.clone(), seen.clone());
    outpost_core::task::spawn(async move {
        loop {
            let p = match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => p,
                Ok(_) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            log.lock().unwrap().push((p.topic.clone(), v.clone()));
            let answer = if p.topic == "v1/gateway/attributes/request" {
                Some((
                    "v1/gateway/attributes/response".to_string(),
                    json!({"id": v["id"], "device": v["device"], "values": {"target": 55}}),
                ))
            } else {
                p.topic
                    .strip_prefix("v1/devices/me/attributes/request/")
                    .map(|n| {
                        (
                            format!("v1/devices/me/attributes/response/{n}"),
                            json!({"shared": {"configuration": doc}}),
                        )
                    })
            };
            if let Some((topic, body)) = answer {
                client
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string())
                    .await
                    .unwrap();
            }
        }
    });
    (c, seen)
}

fn setpoints(events: &[outpost_sync::StoredEvent]) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for e in events.iter().filter(|e| e.event.device == "boiler") {
        if let Body::Telemetry(points) = &e.event.body {
            for p in points
                .iter()
                .filter(|p| p.tag == "setpoint" && p.quality.is_good())
            {
                let v = match p.value {
                    V::U64(v) => v as i64,
                    V::I64(v) => v,
                    _ => continue,
                };
                if out.last() != Some(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_carries_everything_as_thingsboard_expects() {
    let broker = Mosquitto::start("");
    let plc = ModbusPeer::tcp(
        &json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [70, 0, 3]}]}]}),
    );
    // Nothing listens on the ghost's port: its tag is never read.
    let ghost = outpost_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("outpost.toml");
    let data = dir.path().join("data");
    std::fs::write(&cfg_path, config(&broker.url(), plc.port, ghost, "200ms")).unwrap();
    // The desired configuration ThingsBoard holds: the boiler polled slower.
    let desired = Document::new(1, config(&broker.url(), plc.port, ghost, "300ms"));
    let doc: Value = serde_json::from_str(&desired.to_json()).unwrap();
    let (cloud, seen) = thingsboard(broker.port, doc).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut daemon = Daemon(outpost_tests::start_outpostd(
        BIN,
        &cfg_path,
        &data,
        Stdio::null(),
    ));

    let find = |topic: &str, pred: &dyn Fn(&Value) -> bool| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(t, v)| t == topic && pred(v))
    };
    // The configuration from the gateway's shared attribute is applied and
    // reported as its client attribute.
    wait_for("the configuration report", Duration::from_secs(30), || {
        find("v1/devices/me/attributes", &|v| {
            v["configurationState"]["state"] == "applied" && v["configurationState"]["version"] == 1
        })
        .then_some(())
    });
    // The shared attribute of the response was written to the device.
    wait_for(
        "the boiler's setpoint at 55",
        Duration::from_secs(20),
        || {
            find("v1/gateway/telemetry", &|v| {
                v["boiler"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["values"]["setpoint"] == 55))
            })
            .then_some(())
        },
    );
    // An update from ThingsBoard writes again.
    cloud
        .publish(
            "v1/gateway/attributes",
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"device": "boiler", "data": {"target": 61}}).to_string(),
        )
        .await
        .unwrap();
    wait_for(
        "the boiler's setpoint at 61",
        Duration::from_secs(20),
        || {
            find("v1/gateway/telemetry", &|v| {
                v["boiler"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["values"]["setpoint"] == 61))
            })
            .then_some(())
        },
    );
    wait_for("the ghost's disconnect", Duration::from_secs(20), || {
        find("v1/gateway/disconnect", &|v| v["device"] == "ghost").then_some(())
    });
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(daemon.0.wait().unwrap().success());

    let got = seen.lock().unwrap().clone();
    // No topic of Outpost's own on a ThingsBoard broker.
    let ours: Vec<&String> = got
        .iter()
        .map(|(t, _)| t)
        .filter(|t| t.starts_with("outpost/"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    // Devices are connected with their type.
    let connects: Vec<&Value> = got
        .iter()
        .filter(|(t, _)| t == "v1/gateway/connect")
        .map(|(_, v)| v)
        .collect();
    assert!(
        connects.contains(&&json!({"device": "boiler", "type": "boiler-profile"})),
        "{connects:?}"
    );
    assert!(
        connects.contains(&&json!({"device": "ghost", "type": "default"})),
        "{connects:?}"
    );
    // The boiler's shared keys were asked for, once per connect.
    let requests: Vec<&Value> = got
        .iter()
        .filter(|(t, _)| t == "v1/gateway/attributes/request")
        .map(|(_, v)| v)
        .collect();
    assert!(
        requests.iter().any(|r| r["device"] == "boiler"
            && r["keys"] == json!(["target"])
            && r["client"] == false),
        "{requests:?}"
    );
    // Client attributes: the configured one and the attribute tag, never
    // as telemetry; server attributes never leave the gateway.
    let attrs: Vec<&Value> = got
        .iter()
        .filter(|(t, v)| t == "v1/gateway/attributes" && v.get("boiler").is_some())
        .map(|(_, v)| &v["boiler"])
        .collect();
    assert!(attrs.iter().any(|a| a["location"] == "cellar"), "{attrs:?}");
    assert!(attrs.iter().any(|a| a["fw"] == 3), "{attrs:?}");
    assert!(
        attrs
            .iter()
            .all(|a| a.get("limit").is_none() && a.get("target").is_none()),
        "{attrs:?}"
    );
    let mut ghost_records = 0;
    for (t, v) in &got {
        if t != "v1/gateway/telemetry" {
            continue;
        }
        for r in v["boiler"].as_array().into_iter().flatten() {
            assert!(
                r["values"].get("fw").is_none(),
                "an attribute tag as telemetry: {r}"
            );
        }
        for r in v["ghost"].as_array().into_iter().flatten() {
            ghost_records += 1;
            let values = r["values"].as_object().unwrap();
            // Never a placeholder for the tag that was never read.
            assert!(values.get("never").is_none(), "a placeholder: {r}");
            // The status once, flat.
            if let Some(s) = values.get("status") {
                assert!(s.is_string(), "{r}");
            }
        }
    }
    assert!(ghost_records > 0);
    // The ghost's disconnect follows its offline status.
    let offline = got.iter().position(|(t, v)| {
        t == "v1/gateway/telemetry"
            && v["ghost"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["values"]["status"] == "offline"))
    });
    let disconnect = got
        .iter()
        .position(|(t, v)| t == "v1/gateway/disconnect" && v["device"] == "ghost");
    assert!(
        offline.is_some() && offline < disconnect,
        "{offline:?} {disconnect:?}"
    );
    // One session: the broker saw one client of the gateway's, never a
    // second one for the configuration.
    let log = broker.log();
    let clients: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split(" as ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(
        clients,
        ["gw", "thingsboard"].into_iter().collect(),
        "{log}"
    );

    // The log holds the shared attributes and the configured ones, by scope.
    let events = outpost_tests::read_log(&data.join("events.db"));
    let shared: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event.body {
            Body::ScopedAttributes(AttributeScope::Shared, p) => {
                Some(format!("{}={}", p[0].tag, p[0].value))
            }
            _ => None,
        })
        .collect();
    assert_eq!(shared, ["target=55", "target=61"]);
    assert!(events.iter().any(|e| matches!(&e.event.body,
        Body::ScopedAttributes(AttributeScope::Server, p) if p[0].tag == "limit")));
    let sp = setpoints(&events);
    assert!(sp.ends_with(&[55, 61]), "{sp:?}");
}
