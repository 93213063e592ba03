//! ThingsBoard's MQTT node: publishes the message to a topic, through one
//! of the gateway's MQTT uplinks.
//!
//! Invariants:
//! - The node never opens a connection of its own: the message becomes a
//!   `publish` event in the log, routed to the one uplink, which publishes
//!   it as it is (topic and payload) in its turn. An outage delays it; a
//!   restart does not lose it.
//! - The uplink is named by `uplink` (Outpost's key) or found by the
//!   node's `host` and `port` among the MQTT uplinks; a node that reaches
//!   none is refused at load.
//! - A topic that is empty or holds a wildcard after substitution goes to
//!   `Failure`, and nothing is logged.

use outpost_core::{Body, Event, Publish, Route};
use serde_json::Value as Json;

use super::substitute;
use crate::engine::{Cx, Node};
use crate::msg::Msg;

/// An MQTT uplink a node may publish through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    pub uplink: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug)]
pub(super) struct MqttPublish {
    topic: String,
    uplink: String,
    retain: bool,
    plain_text: bool,
}

impl MqttPublish {
    pub(super) fn new(cfg: &Json, targets: &[MqttTarget]) -> Result<Self, String> {
        let topic = cfg
            .get("topicPattern")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .ok_or("topicPattern: required string")?
            .to_string();
        let names = || {
            let n: Vec<&str> = targets.iter().map(|t| t.uplink.as_str()).collect();
            if n.is_empty() {
                "none is configured".to_string()
            } else {
                format!("the MQTT uplinks are {}", n.join(", "))
            }
        };
        let uplink = match cfg.get("uplink").and_then(Json::as_str) {
            Some(name) => match targets.iter().find(|t| t.uplink == name) {
                Some(t) => t.uplink.clone(),
                None => {
                    return Err(format!(
                        "uplink: {name:?} is not an MQTT uplink ({})",
                        names()
                    ))
                }
            },
            None => {
                let host = cfg.get("host").and_then(Json::as_str).unwrap_or_default();
                let port = cfg.get("port").and_then(Json::as_u64).unwrap_or(1883);
                match targets
                    .iter()
                    .find(|t| t.host.eq_ignore_ascii_case(host) && u64::from(t.port) == port)
                {
                    Some(t) => t.uplink.clone(),
                    None => {
                        return Err(format!(
                            "host: no MQTT uplink reaches {host}:{port} ({}); the gateway publishes through its uplinks: add one for that broker, or name one in configuration.uplink",
                            names()
                        ))
                    }
                }
            }
        };
        Ok(Self {
            topic,
            uplink,
            retain: cfg
                .get("retainedMessage")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            plain_text: cfg
                .get("parseToPlainText")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        })
    }
}

impl Node for MqttPublish {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let topic = substitute(&self.topic, &m);
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return cx.fail(
                m,
                format!("topic {topic:?}: a topic to publish to has no wildcard and is not empty"),
            );
        }
        let payload = match (&m.data, self.plain_text) {
            (Json::String(s), true) => s.clone(),
            (data, _) => data.to_string(),
        };
        let mut ev = Event::new(
            m.originator.clone(),
            m.time(),
            Body::Publish(Publish {
                topic,
                payload,
                retain: self.retain,
            }),
        );
        ev.route = Route::Only(vec![self.uplink.clone()]);
        cx.emit(ev);
        cx.tell("Success", m);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use serde_json::json;

    use super::*;
    use crate::tb::{load_with_warnings, LoadOptions, Source};

    fn chain(cfg: Json) -> Source {
        Source {
            origin: "mqtt.json".into(),
            json: json!({"ruleChain": {"name": "m"}, "metadata": {"firstNodeIndex": 0,
                "nodes": [{"type": "org.thingsboard.rule.engine.mqtt.TbMqttNode", "name": "pub",
                           "configuration": cfg}], "connections": []}})
            .to_string(),
        }
    }

    fn opts() -> LoadOptions {
        LoadOptions {
            mqtt_uplinks: vec![
                MqttTarget {
                    uplink: "cloud".into(),
                    host: "broker.example".into(),
                    port: 8883,
                },
                MqttTarget {
                    uplink: "site".into(),
                    host: "127.0.0.1".into(),
                    port: 1883,
                },
            ],
            ..LoadOptions::default()
        }
    }

    fn events(cfg: Json, data: Json) -> Vec<Event> {
        let (mut engine, _) = load_with_warnings(&[chain(cfg)], &opts()).unwrap();
        let now = crate::msg::synced(1_000);
        let mut m = Msg::new("boiler", "POST_TELEMETRY_REQUEST", data, now);
        m.metadata.insert("zone".into(), "north".into());
        let (mut out, mut writes) = (Vec::new(), Vec::new());
        engine.process(now, m, &mut out, &mut writes);
        out
    }

    #[test]
    fn the_uplink_is_found_by_address_or_by_name() {
        let ev = events(
            json!({"topicPattern": "plant/${zone}/$[t]", "host": "BROKER.example", "port": 8883,
                   "retainedMessage": true}),
            json!({"t": 21.5}),
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].route, Route::Only(vec!["cloud".into()]));
        assert_eq!(
            ev[0].body,
            Body::Publish(Publish {
                topic: "plant/north/21.5".into(),
                payload: r#"{"t":21.5}"#.into(),
                retain: true,
            })
        );
        // Outpost's own key wins over the address; a JSON string may be
        // sent as plain text.
        let ev = events(
            json!({"topicPattern": "raw", "uplink": "site", "host": "elsewhere",
                   "parseToPlainText": true}),
            json!("hello"),
        );
        assert_eq!(ev[0].route, Route::Only(vec!["site".into()]));
        assert!(matches!(&ev[0].body, Body::Publish(p) if p.payload == "hello" && !p.retain));
    }

    #[test]
    fn a_wildcard_topic_fails_and_logs_nothing() {
        let ev = events(
            json!({"topicPattern": "plant/$[zone]", "uplink": "site"}),
            json!({"zone": "#"}),
        );
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn a_node_that_reaches_no_uplink_is_refused_at_load() {
        let e = load_with_warnings(
            &[chain(
                json!({"topicPattern": "x", "host": "10.0.0.9", "port": 1883}),
            )],
            &opts(),
        )
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].ends_with("configuration.host: no MQTT uplink reaches 10.0.0.9:1883 (the MQTT uplinks are cloud, site); the gateway publishes through its uplinks: add one for that broker, or name one in configuration.uplink"),
            "{e:?}"
        );
        let e = load_with_warnings(
            &[chain(json!({"topicPattern": "x", "uplink": "nats"}))],
            &LoadOptions::default(),
        )
        .unwrap_err();
        assert!(
            e[0].ends_with(
                "configuration.uplink: \"nats\" is not an MQTT uplink (none is configured)"
            ),
            "{e:?}"
        );
        let e = load_with_warnings(&[chain(json!({"uplink": "site"}))], &opts()).unwrap_err();
        assert!(
            e[0].ends_with("configuration.topicPattern: required string"),
            "{e:?}"
        );
    }
}
