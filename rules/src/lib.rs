//! The offline rule engine: ThingsBoard rule chains (imported from their
//! JSON export, JavaScript scripts unchanged) and Outpost's native edge
//! nodes, between the drivers and the log.
//!
//! Invariants:
//! - A stage is synchronous and pure: it is given `now` and an event and
//!   pushes zero or more output events (and write requests); it does no
//!   I/O, so it is tested with a fixed clock. The daemon's rules task owns
//!   the I/O around it.
//! - Timers run through [`Stage::on_tick`], never through sleeping.
//! - With chains loaded, what reaches the log is what the chains save
//!   (save timeseries / attributes nodes) and the alarms they raise, as in
//!   ThingsBoard; audit entries and gap records bypass the chains, and
//!   device status events are logged as they are and also given to the
//!   chains (as connect / disconnect / activity messages). Without chains,
//!   every event passes unchanged.
//! - A chain set that fails to load never replaces a running one: [`build`]
//!   returns every error and no stage.

pub mod engine;
pub mod msg;
pub mod nodes;
pub mod profile;
pub mod script;
pub mod tb;
pub mod tbel;

use std::path::Path;

use outpost_config::Config;
use outpost_core::{Event, Timestamp};

pub use engine::{Engine, Memory, NodeCounters, Reply, WriteRequest};

/// Counters of every node: (chain, [(node, node type, counters)]).
pub type ChainCounters = Vec<(String, Vec<(String, String, NodeCounters)>)>;

/// One step of event processing between the drivers and the log.
pub trait Stage: Send + std::fmt::Debug {
    /// Processes one event, pushing what should go on to `out`.
    fn on_event(&mut self, now: Timestamp, event: Event, out: &mut Vec<Event>);

    /// Called periodically (windows, heartbeats, delays). Default: nothing.
    fn on_tick(&mut self, _now: Timestamp, _out: &mut Vec<Event>) {}

    /// Writes to devices asked for since the last call.
    fn take_writes(&mut self) -> Vec<WriteRequest> {
        Vec::new()
    }

    /// Per chain: (chain, [(node, type, counters)]).
    fn counters(&self) -> ChainCounters {
        Vec::new()
    }

    /// What this stage remembers (values, attributes, open alarms), for
    /// the stage that replaces it on a reload. Default: nothing.
    fn take_memory(&mut self) -> Option<engine::Memory> {
        None
    }

    /// Takes over what a previous stage (or the log) remembered.
    fn put_memory(&mut self, _memory: engine::Memory) {}

    /// Each device's type (`metadata.deviceType`; `default` for others).
    fn set_device_types(&mut self, _types: std::collections::BTreeMap<String, String>) {}

    /// The shared attribute keys the chains read.
    fn shared_keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// The outcome of a write asked for with a reply (see
    /// [`WriteRequest::reply`]).
    fn on_reply(
        &mut self,
        _now: Timestamp,
        _reply: engine::Reply,
        _outcome: Result<(), String>,
        _out: &mut Vec<Event>,
    ) {
    }
}

/// Forwards every event unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Stage for PassThrough {
    fn on_event(&mut self, _now: Timestamp, event: Event, out: &mut Vec<Event>) {
        out.push(event);
    }
}

/// Runs loaded rule chains.
#[derive(Debug)]
pub struct ChainStage {
    engine: Engine,
    writes: Vec<WriteRequest>,
    types: std::collections::BTreeMap<String, String>,
}

impl ChainStage {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            writes: Vec::new(),
            types: Default::default(),
        }
    }
}

impl Stage for ChainStage {
    fn on_event(&mut self, now: Timestamp, event: Event, out: &mut Vec<Event>) {
        let recorded = matches!(
            event.body,
            outpost_core::Body::Status(_) | outpost_core::Body::ScopedAttributes(..)
        );
        match msg::Msg::from_event(&event) {
            Some(mut m) => {
                if let Some(t) = self.types.get(&event.device) {
                    m.metadata.insert("deviceType".into(), t.clone());
                }
                // Device status and the attributes of the shared and server
                // scopes are the gateway's own record: logged whatever the
                // chains do, and the chains see them too (attributes as
                // ThingsBoard's ATTRIBUTES_UPDATED, already saved).
                if recorded {
                    self.engine.observe_saved(&event);
                    out.push(event);
                }
                self.engine.process(now, m, out, &mut self.writes);
            }
            None => out.push(event),
        }
    }

    fn take_memory(&mut self) -> Option<engine::Memory> {
        Some(self.engine.take_memory())
    }

    fn put_memory(&mut self, memory: engine::Memory) {
        self.engine.put_memory(memory);
    }

    fn set_device_types(&mut self, types: std::collections::BTreeMap<String, String>) {
        self.types = types;
    }

    fn shared_keys(&self) -> Vec<String> {
        self.engine.shared_keys()
    }

    fn on_reply(
        &mut self,
        now: Timestamp,
        reply: engine::Reply,
        outcome: Result<(), String>,
        out: &mut Vec<Event>,
    ) {
        self.engine
            .resume(now, reply, outcome, out, &mut self.writes);
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        self.engine.tick(now, out, &mut self.writes);
    }

    fn take_writes(&mut self) -> Vec<WriteRequest> {
        std::mem::take(&mut self.writes)
    }

    fn counters(&self) -> ChainCounters {
        self.engine
            .chains
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.counters()
                        .into_iter()
                        .map(|(n, t, k)| (n.to_string(), t.to_string(), k.clone()))
                        .collect(),
                )
            })
            .collect()
    }
}

/// Builds the processing stage for the configured rules (the MQTT node
/// publishes through the configured uplinks); chain paths are relative to `base` (the configuration file's directory). Every problem
/// is returned, one line each.
pub fn build(cfg: &Config, base: &Path) -> Result<Box<dyn Stage>, Vec<String>> {
    let (stage, warnings) = build_with_warnings(cfg, base)?;
    for w in &warnings {
        tracing::warn!(warning = %w, "rule chains");
    }
    Ok(stage)
}

/// A built stage and the warnings of loading it.
pub type Built = (Box<dyn Stage>, Vec<String>);

/// As [`build`], returning the warnings (see [`tb::load_with_warnings`])
/// instead of logging them.
pub fn build_with_warnings(config: &Config, base: &Path) -> Result<Built, Vec<String>> {
    let cfg = &config.rules;
    if cfg.chains.is_empty() && cfg.chain.is_empty() {
        return Ok((Box::new(PassThrough), Vec::new()));
    }
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in &cfg.chains {
        let path = base.join(p);
        match std::fs::read_to_string(&path) {
            Ok(json) => sources.push(tb::Source {
                origin: path.display().to_string(),
                json,
            }),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    for (i, c) in cfg.chain.iter().enumerate() {
        match inline_source(i, c) {
            Ok(src) => sources.push(src),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let profiles = match profile::Profiles::load(&cfg.device_profiles, base) {
        Ok(p) => p,
        Err(mut e) => {
            errors.append(&mut e);
            Default::default()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let opts = tb::LoadOptions {
        pass_unsupported: cfg.pass_unsupported,
        script_memory: usize::try_from(cfg.script_memory.0).unwrap_or(usize::MAX),
        script_timeout: cfg.script_timeout.get(),
        profiles: std::sync::Arc::new(profiles),
        mqtt_uplinks: config
            .uplinks
            .iter()
            .filter(|u| u.enabled)
            .filter_map(|u| {
                let (_, host, port) = u.mqtt.as_ref()?.endpoint()?;
                Some(nodes::MqttTarget {
                    uplink: u.name.clone(),
                    host,
                    port,
                })
            })
            .collect(),
    };
    let (engine, warnings) = tb::load_with_warnings(&sources, &opts)?;
    Ok((Box::new(ChainStage::new(engine)), warnings))
}

/// A `[[rules.chain]]` table as a ThingsBoard-format export (connections
/// by node name become indexes).
fn inline_source(i: usize, c: &outpost_config::InlineChain) -> Result<tb::Source, Vec<String>> {
    let at = format!("rules.chain[{i}] ({:?})", c.name);
    let index = |name: &str| c.node.iter().position(|n| n.name == name);
    let mut errors = Vec::new();
    for (j, n) in c.node.iter().enumerate() {
        if c.node[..j].iter().any(|m| m.name == n.name) {
            errors.push(format!("{at}.node[{j}].name: {:?} is used twice", n.name));
        }
    }
    let mut connections = Vec::new();
    for (j, k) in c.connection.iter().enumerate() {
        match (index(&k.from), index(&k.to)) {
            (Some(f), Some(t)) => connections.push(serde_json::json!({
                "fromIndex": f, "toIndex": t, "type": k.relation
            })),
            (f, _) => {
                let (key, name) = if f.is_none() {
                    ("from", &k.from)
                } else {
                    ("to", &k.to)
                };
                errors.push(format!(
                    "{at}.connection[{j}].{key}: no node named {name:?}"
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let nodes: Vec<serde_json::Value> = c
        .node
        .iter()
        .map(|n| serde_json::json!({"type": n.kind, "name": n.name, "configuration": n.config}))
        .collect();
    let first = if nodes.is_empty() { None } else { Some(0) };
    let export = serde_json::json!({
        "ruleChain": {"name": c.name},
        "metadata": {"firstNodeIndex": first, "nodes": nodes, "connections": connections}
    });
    Ok(tb::Source {
        origin: at,
        json: export.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use outpost_core::{Body, Point, Value};

    use super::*;

    /// The first point's value of each telemetry event.
    fn first_values(out: &[Event]) -> Vec<Value> {
        out.iter()
            .filter_map(|e| match &e.body {
                Body::Telemetry(p) => p.first().map(|p| p.value.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pass_through_keeps_events_and_order() {
        let cfg = outpost_config::parse("[gateway]\nid = \"gw\"\n", "t.toml").unwrap();
        let mut stage = match build(&cfg, Path::new(".")) {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        };
        let now = Timestamp::synced(1_000);
        let mut out = Vec::new();
        for i in 0..3 {
            let ev = Event::new(
                "d",
                now,
                Body::Telemetry(vec![Point::good("v", Value::I64(i))]),
            );
            stage.on_event(now, ev, &mut out);
        }
        stage.on_tick(now, &mut out);
        let vals = first_values(&out);
        assert_eq!(vals, vec![Value::I64(0), Value::I64(1), Value::I64(2)]);
    }

    #[test]
    fn chains_written_in_toml() {
        let cfg = outpost_config::parse(
            r#"
[gateway]
id = "gw"

[[rules.chain]]
name = "edge"

[[rules.chain.node]]
name = "only changes"
type = "outpost.Deadband"
config = { keys = ["t"], absolute = 0.5 }

[[rules.chain.node]]
name = "save"
type = "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode"

[[rules.chain.connection]]
from = "only changes"
to = "save"
"#,
            "t.toml",
        )
        .unwrap();
        let mut stage = build(&cfg, Path::new(".")).unwrap();
        let mut out = Vec::new();
        for (ms, v) in [(0, 20.0), (1, 20.2), (2, 21.0)] {
            let now = Timestamp::synced(ms);
            let ev = Event::new(
                "d",
                now,
                Body::Telemetry(vec![Point::good("t", Value::F64(v))]),
            );
            stage.on_event(now, ev, &mut out);
        }
        let vals = first_values(&out);
        assert_eq!(vals, [Value::F64(20.0), Value::F64(21.0)]);
    }

    #[test]
    fn toml_chain_errors_name_the_key() {
        let cfg = outpost_config::parse(
            "[gateway]\nid = \"gw\"\n[[rules.chain]]\nname = \"edge\"\n\
             [[rules.chain.node]]\nname = \"a\"\ntype = \"outpost.Deadband\"\n\
             [[rules.chain.node]]\nname = \"b\"\ntype = \"outpost.Nope\"\n\
             [[rules.chain.connection]]\nfrom = \"a\"\nto = \"c\"\n",
            "t.toml",
        )
        .unwrap();
        let errors = build(&cfg, Path::new(".")).unwrap_err();
        assert_eq!(
            errors,
            ["rules.chain[0] (\"edge\").connection[0].to: no node named \"c\""]
        );
    }
}
