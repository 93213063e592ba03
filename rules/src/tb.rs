//! Loading ThingsBoard rule-chain exports (the JSON "Export rule chain"
//! writes) into an [`Engine`].
//!
//! ```json
//! {"ruleChain": {"name": "Root", "id": {"id": "…"}},
//!  "metadata": {"firstNodeIndex": 0,
//!               "nodes": [{"type": "org.thingsboard…TbJsFilterNode", "name": "…", "configuration": {…}}],
//!               "connections": [{"fromIndex": 0, "toIndex": 1, "type": "True"}]}}
//! ```
//!
//! Invariants: loading is all or nothing. Every problem is collected — each
//! unsupported node (name and type), each bad configuration field, each
//! script that does not compile, each connection to a node that does not
//! exist, each call of a chain that is not loaded — and reported together;
//! an engine is returned only when there are none. The first source is the
//! root chain; the others are reachable through rule-chain input nodes, by
//! the chain's id or its name.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::engine::{Chain, Cx, Engine, Kind, Node, NodeCounters, Slot};
use crate::msg::Msg;
use crate::nodes;
use crate::script::ScriptHost;

/// One chain export to load; `origin` names it in errors (a file path).
#[derive(Debug, Clone)]
pub struct Source {
    pub origin: String,
    pub json: String,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Load unsupported node types as pass-through nodes instead of failing.
    pub pass_unsupported: bool,
    /// Memory limit of each chain's script runtime.
    pub script_memory: usize,
    /// Longest a script call may run.
    pub script_timeout: Duration,
    /// The device profiles the device profile node evaluates.
    pub profiles: Arc<crate::profile::Profiles>,
    /// The MQTT uplinks the MQTT node may publish through.
    pub mqtt_uplinks: Vec<nodes::MqttTarget>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pass_unsupported: false,
            script_memory: 8 << 20,
            script_timeout: Duration::from_millis(100),
            profiles: Arc::default(),
            mqtt_uplinks: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Export {
    rule_chain: ChainInfo,
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct ChainInfo {
    name: String,
    #[serde(default)]
    id: Option<Json>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    first_node_index: Option<i64>,
    #[serde(default)]
    nodes: Vec<NodeDef>,
    #[serde(default)]
    connections: Option<Vec<Connection>>,
    /// Links from a node to another chain (exports before rule-chain input
    /// nodes): loaded as an input node calling that chain.
    #[serde(default)]
    rule_chain_connections: Option<Vec<ChainConnection>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChainConnection {
    from_index: i64,
    target_rule_chain_id: Json,
    #[serde(rename = "type")]
    relation: String,
}

#[derive(Debug, Deserialize)]
struct NodeDef {
    #[serde(rename = "type")]
    type_name: String,
    name: String,
    #[serde(default)]
    configuration: Json,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection {
    from_index: i64,
    to_index: i64,
    #[serde(rename = "type")]
    relation: String,
}

const INPUT: &str = "org.thingsboard.rule.engine.flow.TbRuleChainInputNode";
const OUTPUT: &str = "org.thingsboard.rule.engine.flow.TbRuleChainOutputNode";

/// Loads the chains; the first is the root.
pub fn load(sources: &[Source], opts: &LoadOptions) -> Result<Engine, Vec<String>> {
    load_with_warnings(sources, opts).map(|(engine, _)| engine)
}

/// As [`load`], with what loads but is probably not what was meant: a
/// pass-through node (an unsupported type under `pass_unsupported`) whose
/// connections are all non-`Success`, so that it drops every message.
pub fn load_with_warnings(
    sources: &[Source],
    opts: &LoadOptions,
) -> Result<(Engine, Vec<String>), Vec<String>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut exports = Vec::new();
    for s in sources {
        match serde_json::from_str::<Export>(&s.json) {
            Ok(e) => exports.push((s.origin.clone(), e)),
            Err(e) => errors.push(format!(
                "{}:{}:{}: not a ThingsBoard rule-chain export: {e}",
                s.origin,
                e.line(),
                e.column()
            )),
        }
    }
    // Chains by id and by name, for rule-chain input nodes.
    let keys: Vec<(Option<String>, String)> = exports
        .iter()
        .map(|(_, e)| {
            (
                chain_id(e.rule_chain.id.as_ref()),
                e.rule_chain.name.clone(),
            )
        })
        .collect();
    let find = |r: &str| {
        keys.iter()
            .position(|(id, name)| id.as_deref() == Some(r) || name == r)
    };
    let mut engine = Engine::default();
    for (origin, e) in &exports {
        let chain_name = &e.rule_chain.name;
        let at = |i: usize, n: &NodeDef| {
            format!(
                "{origin}: chain {chain_name:?}: node #{i} {:?} ({})",
                n.name, n.type_name
            )
        };
        let host = match ScriptHost::new(opts.script_memory, opts.script_timeout) {
            Ok(h) => Arc::new(h),
            Err(err) => {
                errors.push(format!("{origin}: {err}"));
                continue;
            }
        };
        let mut slots = Vec::new();
        for (i, n) in e.metadata.nodes.iter().enumerate() {
            let kind = if n.type_name == INPUT {
                let target = n
                    .configuration
                    .get("ruleChainId")
                    .and_then(|v| chain_id(Some(v)).or_else(|| v.as_str().map(str::to_string)));
                match target.as_deref().and_then(find) {
                    Some(t) => Kind::Call(t),
                    None => {
                        errors.push(format!(
                            "{}: ruleChainId: chain {:?} is not loaded (list its file in rules.chains)",
                            at(i, n),
                            target.unwrap_or_default()
                        ));
                        continue;
                    }
                }
            } else if n.type_name == OUTPUT {
                Kind::Return
            } else if !nodes::supported(&n.type_name) {
                if opts.pass_unsupported {
                    Kind::Normal(Box::new(PassThrough))
                } else {
                    errors.push(format!(
                        "{}: unsupported node type (set rules.pass_unsupported = true to pass messages through it)",
                        at(i, n)
                    ));
                    continue;
                }
            } else {
                match nodes::build(&n.type_name, &n.configuration, &host, opts) {
                    Ok(node) => Kind::Normal(node),
                    Err(err) => {
                        errors.push(format!("{}: configuration.{err}", at(i, n)));
                        continue;
                    }
                }
            };
            slots.push(Slot {
                name: n.name.clone(),
                type_name: n.type_name.clone(),
                kind,
                out: Vec::new(),
                counters: NodeCounters::default(),
            });
        }
        let count = e.metadata.nodes.len() as i64;
        for c in e.metadata.connections.iter().flatten() {
            let ok = |i: i64| (0..count).contains(&i);
            if !ok(c.from_index) || !ok(c.to_index) {
                errors.push(format!(
                    "{origin}: chain {chain_name:?}: connection {} → {} ({}) refers to a node that does not exist ({count} nodes)",
                    c.from_index, c.to_index, c.relation
                ));
                continue;
            }
            if let Some(s) = slots.get_mut(c.from_index as usize) {
                s.out.push((c.relation.clone(), c.to_index as usize));
            }
        }
        for c in e.metadata.rule_chain_connections.iter().flatten() {
            let target = chain_id(Some(&c.target_rule_chain_id));
            let Some(t) = target.as_deref().and_then(find) else {
                errors.push(format!(
                    "{origin}: chain {chain_name:?}: ruleChainConnections: node #{} links to chain {:?}, which is not loaded (list its file in rules.chains)",
                    c.from_index,
                    target.unwrap_or_default()
                ));
                continue;
            };
            if !(0..count).contains(&c.from_index) {
                errors.push(format!(
                    "{origin}: chain {chain_name:?}: ruleChainConnections: node #{} does not exist ({count} nodes)",
                    c.from_index
                ));
                continue;
            }
            let index = slots.len();
            slots.push(Slot {
                name: format!("to chain {:?}", keys[t].1),
                type_name: INPUT.to_string(),
                kind: Kind::Call(t),
                out: Vec::new(),
                counters: NodeCounters::default(),
            });
            if let Some(s) = slots.get_mut(c.from_index as usize) {
                s.out.push((c.relation.clone(), index));
            }
        }
        for (i, n) in e.metadata.nodes.iter().enumerate() {
            if n.type_name.ends_with(".profile.TbDeviceProfileNode") && opts.profiles.is_empty() {
                warnings.push(format!(
                    "{}: no device profiles are loaded (rules.device_profiles): it passes every message on Success",
                    at(i, n)
                ));
            }
        }
        for (i, (slot, n)) in slots.iter().zip(&e.metadata.nodes).enumerate() {
            let passes = matches!(&slot.kind, Kind::Normal(node) if node.passes_through());
            if passes && !slot.out.is_empty() && slot.out.iter().all(|(r, _)| r != "Success") {
                let relations: Vec<&str> = slot.out.iter().map(|(r, _)| r.as_str()).collect();
                warnings.push(format!(
                    "{}: unsupported, passed through on Success only, but its connections are {}: every message stops here",
                    at(i, n),
                    relations.join(", ")
                ));
            }
        }
        let first = match e.metadata.first_node_index {
            None => None,
            Some(i) if (0..count).contains(&i) => Some(i as usize),
            Some(i) => {
                errors.push(format!(
                    "{origin}: chain {chain_name:?}: firstNodeIndex {i} is not a node ({count} nodes)"
                ));
                None
            }
        };
        engine.chains.push(Chain {
            name: chain_name.clone(),
            first,
            nodes: slots,
        });
    }
    if errors.is_empty() {
        Ok((engine, warnings))
    } else {
        Err(errors)
    }
}

/// `{"entityType": "RULE_CHAIN", "id": "…"}` or a plain id string.
fn chain_id(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("id").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// Stands in for an unsupported node when the config allows it.
#[derive(Debug)]
struct PassThrough;

impl Node for PassThrough {
    fn on_msg(&mut self, msg: Msg, cx: &mut Cx<'_>) {
        cx.tell("Success", msg);
    }

    fn passes_through(&self) -> bool {
        true
    }
}
