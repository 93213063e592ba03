//! Node types: the supported ThingsBoard nodes (by class name) and
//! Outpost's native edge nodes (`outpost.*`).
//!
//! Each constructor reads the node's `configuration` JSON and fails with a
//! message naming the field. Nodes keep per-originator state; their timers
//! use only the `now` they are given.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use outpost_core::AlarmSeverity;
use serde_json::{json, Map, Value as Json};

use crate::engine::{Cx, Node, WriteRequest};
use crate::msg::{self, Msg};
use crate::script::{Script, ScriptError, ScriptHost};

mod alarm;
mod mqtt;
mod profile;
mod rpc;

pub use mqtt::MqttTarget;

const TB: &str = "org.thingsboard.rule.engine.";

/// Node types whose configuration [`build`] reads itself (ThingsBoard's
/// class names, then Outpost's own); the flow nodes the loader wires are
/// accepted by [`supported`].
const BUILT: &[&str] = &[
    "filter.TbMsgTypeSwitchNode",
    "filter.TbJsFilterNode",
    "filter.TbJsSwitchNode",
    "transform.TbTransformMsgNode",
    "filter.TbCheckMessageNode",
    "filter.TbMsgTypeFilterNode",
    "filter.TbOriginatorTypeFilterNode",
    "transform.TbChangeOriginatorNode",
    "metadata.TbGetAttributesNode",
    "action.TbCreateAlarmNode",
    "action.TbClearAlarmNode",
    "action.TbCreateRelationNode",
    "rpc.TbSendRPCRequestNode",
    "rpc.TbSendRPCReplyNode",
    "profile.TbDeviceProfileNode",
    "mqtt.TbMqttNode",
    "deduplication.TbMsgDeduplicationNode",
    "delay.TbMsgDelayNode",
    "action.TbLogNode",
    "telemetry.TbMsgTimeseriesNode",
    "telemetry.TbMsgAttributesNode",
    "edge.TbMsgPushToCloudNode",
    "edge.TbMsgPushToEdgeNode",
    "debug.TbMsgGeneratorNode",
    "outpost.Deadband",
    "outpost.OnChange",
    "outpost.Window",
    "outpost.RateOfChange",
    "outpost.Threshold",
    "outpost.Write",
    "outpost.Route",
];

/// Whether a node type loads: one of [`BUILT`] (by its full class name) or
/// a rule-chain input / output node.
pub fn supported(type_name: &str) -> bool {
    matches!(
        type_name,
        "org.thingsboard.rule.engine.flow.TbRuleChainInputNode"
            | "org.thingsboard.rule.engine.flow.TbRuleChainOutputNode"
    ) || BUILT.contains(&short_name(type_name))
}

/// Every supported node type by its full name (for documentation and the
/// page's node list), derived from [`BUILT`].
pub fn supported_types() -> Vec<String> {
    BUILT
        .iter()
        .map(|n| {
            if n.starts_with("outpost.") {
                n.to_string()
            } else {
                format!("{TB}{n}")
            }
        })
        .chain([
            format!("{TB}flow.TbRuleChainInputNode"),
            format!("{TB}flow.TbRuleChainOutputNode"),
        ])
        .collect()
}

fn short_name(type_name: &str) -> &str {
    match type_name.strip_prefix(TB) {
        Some(short) => short,
        None if type_name.starts_with("outpost.") => type_name,
        // A ThingsBoard short name without the package is not a class name.
        None => "",
    }
}

/// Builds a node of `type_name` from its configuration. `Ok(None)`: the
/// type is a flow node the loader wires itself (chain input/output).
pub fn build(
    type_name: &str,
    cfg: &Json,
    scripts: &Arc<ScriptHost>,
    opts: &crate::tb::LoadOptions,
) -> Result<Box<dyn Node>, String> {
    Ok(match short_name(type_name) {
        "filter.TbMsgTypeSwitchNode" => Box::new(TypeSwitch),
        "filter.TbJsFilterNode" => Box::new(JsFilter(ScriptNode::new(cfg, scripts)?)),
        "filter.TbJsSwitchNode" => Box::new(JsSwitch(ScriptNode::new(cfg, scripts)?)),
        "transform.TbTransformMsgNode" => Box::new(JsTransform(ScriptNode::new(cfg, scripts)?)),
        "filter.TbCheckMessageNode" => Box::new(CheckFields {
            data: strings(cfg, "messageNames")?,
            metadata: strings(cfg, "metadataNames")?,
            all: cfg
                .get("checkAllKeys")
                .and_then(Json::as_bool)
                .unwrap_or(true),
        }),
        "metadata.TbGetAttributesNode" => Box::new(Enrich {
            latest: strings(cfg, "latestTsKeyNames")?,
            client: strings(cfg, "clientAttributeNames")?,
            shared: strings(cfg, "sharedAttributeNames")?,
            server: strings(cfg, "serverAttributeNames")?,
            to_data: cfg.get("fetchTo").and_then(Json::as_str) == Some("DATA"),
            fail_if_absent: cfg
                .get("tellFailureIfAbsent")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        }),
        "action.TbCreateAlarmNode" => Box::new(alarm::CreateAlarm::new(cfg, scripts)?),
        "rpc.TbSendRPCRequestNode" => {
            if let Some(t) = cfg.get("timeoutInSeconds") {
                if t.as_u64().is_none_or(|t| t == 0) {
                    return Err(
                        "timeoutInSeconds: expected a whole number of seconds above 0".into(),
                    );
                }
            }
            Box::new(rpc::SendRpcRequest)
        }
        "rpc.TbSendRPCReplyNode" => Box::new(rpc::SendRpcReply),
        // `persistAlarmRulesState` / `fetchAlarmRulesStateOnStart`: the
        // alarms are persisted (the log's current state); the rule states
        // are not (see the module).
        "profile.TbDeviceProfileNode" => {
            Box::new(profile::DeviceProfile::new(opts.profiles.clone()))
        }
        "mqtt.TbMqttNode" => Box::new(mqtt::MqttPublish::new(cfg, &opts.mqtt_uplinks)?),
        "action.TbClearAlarmNode" => Box::new(alarm::ClearAlarm::new(cfg, scripts)?),
        "deduplication.TbMsgDeduplicationNode" => Box::new(Dedup {
            interval_ms: seconds(cfg, "interval")?,
            strategy: match cfg
                .get("strategy")
                .and_then(Json::as_str)
                .unwrap_or("FIRST")
            {
                "FIRST" => Strategy::First,
                "LAST" => Strategy::Last,
                "ALL" => Strategy::All,
                other => return Err(format!("strategy: {other:?} is not FIRST, LAST or ALL")),
            },
            max_pending: count(cfg, "maxPendingMsgs", 100)?,
            out_type: cfg
                .get("outMsgType")
                .and_then(Json::as_str)
                .map(str::to_string),
            pending: BTreeMap::new(),
        }),
        "delay.TbMsgDelayNode" => Box::new(Delay {
            delay_ms: seconds(cfg, "periodInSeconds")?,
            max_pending: count(cfg, "maxPendingMsgs", 1000)?,
            queue: VecDeque::new(),
        }),
        "action.TbLogNode" => Box::new(Log(optional_script(cfg, "jsScript", scripts)?)),
        "filter.TbMsgTypeFilterNode" => Box::new(TypeFilter(strings(cfg, "messageTypes")?)),
        "filter.TbOriginatorTypeFilterNode" => {
            Box::new(OriginatorTypeFilter(strings(cfg, "originatorTypes")?))
        }
        "transform.TbChangeOriginatorNode" => Box::new(ChangeOriginator::new(cfg)?),
        // The gateway keeps no entity relations and is itself the edge: the
        // message goes on unchanged (counted as the node's messages).
        "action.TbCreateRelationNode" | "edge.TbMsgPushToEdgeNode" => Box::new(NoOp),
        "edge.TbMsgPushToCloudNode" => Box::new(PushToCloud),
        "debug.TbMsgGeneratorNode" => Box::new(Generator::new(cfg, scripts)?),
        "telemetry.TbMsgTimeseriesNode" => Box::new(Save { attributes: false }),
        "telemetry.TbMsgAttributesNode" => Box::new(Save { attributes: true }),
        "outpost.Deadband" => Box::new(Deadband {
            keys: strings(cfg, "keys")?,
            absolute: cfg.get("absolute").and_then(Json::as_f64),
            percent: cfg.get("percent").and_then(Json::as_f64),
            heartbeat_ms: optional_seconds(cfg, "heartbeatSeconds")?,
            last: BTreeMap::new(),
        }),
        "outpost.OnChange" => Box::new(Deadband {
            keys: strings(cfg, "keys")?,
            absolute: None,
            percent: None,
            heartbeat_ms: optional_seconds(cfg, "heartbeatSeconds")?,
            last: BTreeMap::new(),
        }),
        "outpost.Window" => Box::new(Window::new(cfg)?),
        "outpost.RateOfChange" => Box::new(Rate {
            keys: strings(cfg, "keys")?,
            per_ms: optional_seconds(cfg, "perSeconds")?.unwrap_or(1000).max(1),
            last: BTreeMap::new(),
        }),
        "outpost.Threshold" => Box::new(Threshold::new(cfg)?),
        "outpost.Write" => Box::new(Write {
            device: string(cfg, "device")?,
            tag: string(cfg, "tag")?,
            value_key: cfg
                .get("valueKey")
                .and_then(Json::as_str)
                .map(str::to_string),
            value: cfg.get("value").and_then(msg::json_to_value),
            min_interval_ms: optional_seconds(cfg, "minIntervalSeconds")?.unwrap_or(0),
            last: None,
        }),
        "outpost.Route" => {
            let local = cfg.get("local").and_then(Json::as_bool).unwrap_or(false);
            let uplinks = strings(cfg, "uplinks")?;
            if local != uplinks.is_empty() {
                return Err("uplinks, local: give either uplinks = [names] or local = true".into());
            }
            Box::new(RouteNode(if local {
                "local".to_string()
            } else {
                uplinks.join(",")
            }))
        }
        _ => return Err(format!("unsupported node type {type_name}")),
    })
}

// ---- configuration helpers -------------------------------------------

fn string(cfg: &Json, key: &str) -> Result<String, String> {
    cfg.get(key)
        .and_then(Json::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{key}: required string"))
}

fn strings(cfg: &Json, key: &str) -> Result<Vec<String>, String> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key}: expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(format!("{key}: expected a list of strings")),
    }
}

fn seconds(cfg: &Json, key: &str) -> Result<i64, String> {
    optional_seconds(cfg, key)?.ok_or_else(|| format!("{key}: required number of seconds"))
}

fn optional_seconds(cfg: &Json, key: &str) -> Result<Option<i64>, String> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(s) if s >= 0.0 && s.is_finite() => Ok(Some((s * 1000.0) as i64)),
            _ => Err(format!("{key}: expected a non-negative number of seconds")),
        },
    }
}

fn count(cfg: &Json, key: &str, default: usize) -> Result<usize, String> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{key}: expected a positive integer")),
    }
}

/// A node's script in the language its `scriptLang` names: ThingsBoard
/// keeps a JS field (`js_key`) and a TBEL field (`tbel_key`; `mvelScript`
/// in exports from before TBEL got its name) side by side.
fn compile_script(
    cfg: &Json,
    js_key: &str,
    tbel_key: &str,
    scripts: &Arc<ScriptHost>,
) -> Result<Option<ScriptNode>, String> {
    compile_script_with(
        cfg,
        js_key,
        tbel_key,
        scripts,
        &["msg", "metadata", "msgType"],
    )
}

fn compile_script_with(
    cfg: &Json,
    js_key: &str,
    tbel_key: &str,
    scripts: &Arc<ScriptHost>,
    params: &[&str],
) -> Result<Option<ScriptNode>, String> {
    let tbel = match cfg.get("scriptLang").and_then(Json::as_str) {
        None | Some("JS") => false,
        Some("TBEL" | "MVEL") => true,
        Some(other) => return Err(format!("scriptLang: {other:?} is not JS or TBEL")),
    };
    let (key, body) = if tbel {
        match [tbel_key, "mvelScript"]
            .into_iter()
            .find_map(|k| cfg.get(k).and_then(Json::as_str).map(|b| (k, b)))
        {
            Some(found) => found,
            None => return Ok(None),
        }
    } else {
        match cfg.get(js_key).and_then(Json::as_str) {
            Some(b) => (js_key, b),
            None => return Ok(None),
        }
    };
    let script = if tbel {
        scripts.compile_tbel_with(body, params)
    } else {
        scripts.compile_with(body, params)
    }
    .map_err(|e| format!("{key}: {e}"))?;
    Ok(Some(ScriptNode {
        host: scripts.clone(),
        script,
    }))
}

fn optional_script(
    cfg: &Json,
    key: &str,
    scripts: &Arc<ScriptHost>,
) -> Result<Option<ScriptNode>, String> {
    let tbel_key = match key {
        "alarmDetailsBuildJs" => "alarmDetailsBuildTbel",
        _ => "tbelScript",
    };
    compile_script(cfg, key, tbel_key, scripts)
}

// ---- scripts ---------------------------------------------------------

#[derive(Debug)]
struct ScriptNode {
    host: Arc<ScriptHost>,
    script: Script,
}

impl ScriptNode {
    fn new(cfg: &Json, scripts: &Arc<ScriptHost>) -> Result<Self, String> {
        compile_script(cfg, "jsScript", "tbelScript", scripts)?.ok_or_else(|| {
            if cfg
                .get("scriptLang")
                .and_then(Json::as_str)
                .is_some_and(|l| l != "JS")
            {
                "tbelScript: required script".to_string()
            } else {
                "jsScript: required script".to_string()
            }
        })
    }

    fn call(&self, m: &Msg, cx: &mut Cx<'_>) -> Result<Json, ScriptError> {
        let md = Json::Object(
            m.metadata
                .iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect(),
        );
        let t = Instant::now();
        let r = self.host.call(&self.script, &m.data, &md, &m.msg_type);
        cx.add_script_time(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        r
    }
}

#[derive(Debug)]
struct JsFilter(ScriptNode);

impl Node for JsFilter {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        match self.0.call(&m, cx) {
            Ok(Json::Bool(b)) => cx.tell(if b { "True" } else { "False" }, m),
            Ok(other) => cx.fail(
                m,
                ScriptError::Shape(other.to_string(), "true or false").to_string(),
            ),
            Err(e) => cx.fail(m, e.to_string()),
        }
    }
}

#[derive(Debug)]
struct JsSwitch(ScriptNode);

impl Node for JsSwitch {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let rels: Result<Vec<String>, String> = match self.0.call(&m, cx) {
            Ok(Json::String(s)) => Ok(vec![s]),
            Ok(Json::Array(a)) if a.iter().all(Json::is_string) => Ok(a
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()),
            Ok(other) => {
                Err(ScriptError::Shape(other.to_string(), "an array of relation names").to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match rels {
            Ok(rels) => {
                for r in rels {
                    cx.tell(&r, m.clone());
                }
            }
            Err(e) => cx.fail(m, e),
        }
    }
}

#[derive(Debug)]
struct JsTransform(ScriptNode);

impl JsTransform {
    fn apply(m: &Msg, out: Json) -> Result<Msg, String> {
        let Json::Object(mut o) = out else {
            return Err(
                ScriptError::Shape(out.to_string(), "{msg, metadata, msgType}").to_string(),
            );
        };
        let mut n = m.clone();
        if let Some(mut d) = o.remove("msg") {
            keep_float_types(&m.data, &mut d);
            n.data = d;
        }
        match o.remove("metadata") {
            Some(Json::Object(md)) => {
                n.metadata = md
                    .into_iter()
                    .map(|(k, v)| {
                        let s = match v {
                            Json::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, s)
                    })
                    .collect();
            }
            Some(Json::Null) | None => {}
            Some(other) => {
                return Err(
                    ScriptError::Shape(other.to_string(), "metadata as an object").to_string(),
                )
            }
        }
        match o.remove("msgType") {
            Some(Json::String(t)) => n.msg_type = t,
            Some(Json::Null) | None => {}
            Some(other) => {
                return Err(ScriptError::Shape(other.to_string(), "msgType as a string").to_string())
            }
        }
        Ok(n)
    }
}

impl Node for JsTransform {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let out = match self.0.call(&m, cx) {
            Ok(o) => o,
            Err(e) => return cx.fail(m, e.to_string()),
        };
        // One result, or several (an array of {msg, metadata, msgType}).
        let items = match out {
            Json::Array(a) => a,
            o => vec![o],
        };
        let mut made = Vec::new();
        for o in items {
            match Self::apply(&m, o) {
                Ok(n) => made.push(n),
                Err(e) => return cx.fail(m, e),
            }
        }
        for n in made {
            cx.tell("Success", n);
        }
    }
}

/// JavaScript has one number type: a float reading of 85.0 comes back
/// from a script as 85. Keys that were floats before the script stay
/// floats, so a tag's type does not flip upstream.
fn keep_float_types(before: &Json, after: &mut Json) {
    let (Json::Object(b), Json::Object(a)) = (before, after) else {
        return;
    };
    for (k, v) in a.iter_mut() {
        let was_float = b.get(k).is_some_and(|x| x.is_f64());
        if was_float && (v.is_i64() || v.is_u64()) {
            if let Some(f) = v.as_f64().and_then(serde_json::Number::from_f64) {
                *v = Json::Number(f);
            }
        }
    }
}

#[derive(Debug)]
struct Log(Option<ScriptNode>);

impl Node for Log {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let text = match &self.0 {
            Some(s) => match s.call(&m, cx) {
                Ok(Json::String(t)) => t,
                Ok(other) => other.to_string(),
                Err(e) => return cx.fail(m, e.to_string()),
            },
            None => format!("{} {} {}", m.msg_type, m.originator, m.data),
        };
        tracing::info!(target: "outpost::rules", originator = %m.originator, "{text}");
        cx.tell("Success", m);
    }
}

// ---- ThingsBoard flow, filter, enrichment, action nodes ---------------

#[derive(Debug)]
struct TypeSwitch;

impl Node for TypeSwitch {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let rel = match m.msg_type.as_str() {
            msg::POST_TELEMETRY => "Post telemetry",
            msg::POST_ATTRIBUTES => "Post attributes",
            msg::CONNECT => "Connect Event",
            msg::DISCONNECT => "Disconnect Event",
            msg::ACTIVITY => "Activity Event",
            "INACTIVITY_EVENT" => "Inactivity Event",
            "TO_SERVER_RPC_REQUEST" => "RPC Request from Device",
            "RPC_CALL_FROM_SERVER_TO_DEVICE" => "RPC Request to Device",
            "ATTRIBUTES_UPDATED" => "Attributes Updated",
            "ATTRIBUTES_DELETED" => "Attributes Deleted",
            "ALARM_ACK" => "Alarm Acknowledged",
            "ALARM_CLEAR" => "Alarm Cleared",
            _ => "Other",
        };
        cx.tell(rel, m);
    }
}

#[derive(Debug)]
struct CheckFields {
    data: Vec<String>,
    metadata: Vec<String>,
    all: bool,
}

impl Node for CheckFields {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let present = self
            .data
            .iter()
            .map(|k| m.data.get(k).is_some())
            .chain(self.metadata.iter().map(|k| m.metadata.contains_key(k)));
        let ok = if self.all {
            present.into_iter().all(|p| p)
        } else {
            present.into_iter().any(|p| p)
        };
        cx.tell(if ok { "True" } else { "False" }, m);
    }
}

#[derive(Debug)]
struct Enrich {
    latest: Vec<String>,
    client: Vec<String>,
    shared: Vec<String>,
    server: Vec<String>,
    to_data: bool,
    fail_if_absent: bool,
}

impl Node for Enrich {
    fn shared_keys(&self) -> Vec<String> {
        self.shared.clone()
    }

    fn on_msg(&mut self, mut m: Msg, cx: &mut Cx<'_>) {
        let dev = m.originator.clone();
        let latest = cx.state.latest.get(&dev);
        let mut found: Vec<(String, Json)> = Vec::new();
        let mut missing = Vec::new();
        for k in &self.latest {
            match latest.and_then(|l| l.get(k)) {
                Some(v) => found.push((k.clone(), v.clone())),
                None => missing.push(k.clone()),
            }
        }
        for (keys, prefix, scope) in [
            (&self.client, "cs_", &cx.state.attributes),
            (&self.shared, "shared_", &cx.state.shared),
            (&self.server, "ss_", &cx.state.server),
        ] {
            let attrs = scope.get(&dev);
            for k in keys {
                match attrs.and_then(|a| a.get(k)) {
                    Some(v) => found.push((format!("{prefix}{k}"), v.clone())),
                    None => missing.push(k.clone()),
                }
            }
        }
        if self.fail_if_absent && !missing.is_empty() {
            return cx.fail(m, format!("not found: {}", missing.join(", ")));
        }
        for (k, v) in found {
            if self.to_data {
                if let Json::Object(o) = &mut m.data {
                    o.insert(k, v);
                }
            } else {
                let s = match v {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                m.metadata.insert(k, s);
            }
        }
        cx.tell("Success", m);
    }
}

#[derive(Debug)]
struct Save {
    attributes: bool,
}

impl Node for Save {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let ev = if self.attributes {
            m.attributes_event()
        } else {
            m.telemetry_event()
        };
        let empty = matches!(&ev.body, outpost_core::Body::Telemetry(p) | outpost_core::Body::Attributes(p) if p.is_empty());
        if empty {
            return cx.fail(m, "msg has no values to save".to_string());
        }
        cx.emit(ev);
        cx.tell("Success", m);
    }
}

/// `messageTypes`: `True` when the message's type is one of them.
#[derive(Debug)]
struct TypeFilter(Vec<String>);

impl Node for TypeFilter {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let rel = if self.0.contains(&m.msg_type) {
            "True"
        } else {
            "False"
        };
        cx.tell(rel, m);
    }
}

/// `originatorTypes`: every message on the gateway comes from a device
/// (its own status and audit included), so `True` exactly when `DEVICE`
/// is listed.
#[derive(Debug)]
struct OriginatorTypeFilter(Vec<String>);

impl Node for OriginatorTypeFilter {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let rel = if self.0.iter().any(|t| t == "DEVICE") {
            "True"
        } else {
            "False"
        };
        cx.tell(rel, m);
    }
}

/// `originatorSource`: `ENTITY` (a device named by `entityNamePattern`,
/// with `${metadataKey}` and `$[dataKey]` substituted) or
/// `ALARM_ORIGINATOR` (an alarm's device); customers, tenants and related
/// entities do not exist on the gateway, so those sources are refused at
/// load.
#[derive(Debug)]
enum ChangeOriginator {
    Entity(String),
    AlarmOriginator,
}

impl ChangeOriginator {
    fn new(cfg: &Json) -> Result<Self, String> {
        match cfg.get("originatorSource").and_then(Json::as_str) {
            Some("ENTITY") => {
                let kind = cfg.get("entityType").and_then(Json::as_str).unwrap_or("DEVICE");
                if kind != "DEVICE" {
                    return Err(format!(
                        "entityType: {kind:?}: the gateway's entities are its devices (DEVICE)"
                    ));
                }
                Ok(Self::Entity(string(cfg, "entityNamePattern")?))
            }
            Some("ALARM_ORIGINATOR") => Ok(Self::AlarmOriginator),
            Some(other @ ("CUSTOMER" | "TENANT" | "RELATED")) => Err(format!(
                "originatorSource: {other}: the gateway has no {} (use ENTITY with a device name)",
                other.to_lowercase()
            )),
            other => Err(format!(
                "originatorSource: {other:?} is not ENTITY, ALARM_ORIGINATOR, CUSTOMER, TENANT or RELATED"
            )),
        }
    }
}

/// `${key}` from metadata and `$[key]` from the message's data (top-level
/// keys), as ThingsBoard's name patterns; unknown keys stay as written.
fn substitute(pattern: &str, m: &Msg) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find(['$']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (open, close) = match tail.as_bytes().get(1) {
            Some(b'{') => ('{', '}'),
            Some(b'[') => ('[', ']'),
            _ => {
                out.push('$');
                rest = &tail[1..];
                continue;
            }
        };
        let Some(end) = tail.find(close) else {
            out.push_str(tail);
            return out;
        };
        let key = &tail[2..end];
        let value = if open == '{' {
            m.metadata.get(key).cloned()
        } else {
            m.data.get(key).map(|v| match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

impl Node for ChangeOriginator {
    fn on_msg(&mut self, mut m: Msg, cx: &mut Cx<'_>) {
        let to = match self {
            Self::Entity(pattern) => substitute(pattern, &m),
            Self::AlarmOriginator => match m.data.get("originator").and_then(Json::as_str) {
                Some(o) if m.msg_type == msg::ALARM => o.to_string(),
                _ => return cx.fail(m, "not an alarm message: it has no alarm originator".into()),
            },
        };
        if to.is_empty() || to.contains("${") || to.contains("$[") {
            return cx.fail(m, format!("no device name from the pattern (got {to:?})"));
        }
        m.metadata.insert("deviceName".to_string(), to.clone());
        m.originator = to;
        cx.tell("Success", m);
    }
}

/// ThingsBoard's generator: every `periodInSeconds`, the script (over
/// `prevMsg`, `prevMetadata`, `prevMsgType`) returns the next message,
/// `msgCount` times (0: without end). The originator is the device named
/// `originatorName` (an Outpost key; ThingsBoard's `originatorId` is an
/// entity id the gateway does not have), or "generator".
#[derive(Debug)]
struct Generator {
    script: ScriptNode,
    period_ms: i64,
    remaining: Option<u64>,
    next_at: Option<i64>,
    originator: String,
    prev: Option<Msg>,
}

impl Generator {
    fn new(cfg: &Json, scripts: &Arc<ScriptHost>) -> Result<Self, String> {
        let script = compile_script_with(
            cfg,
            "jsScript",
            "tbelScript",
            scripts,
            &["prevMsg", "prevMetadata", "prevMsgType"],
        )?
        .ok_or("jsScript / tbelScript: required script")?;
        let count = match cfg.get("msgCount") {
            None | Some(Json::Null) => 0,
            Some(v) => v
                .as_u64()
                .ok_or("msgCount: expected a count (0: without end)")?,
        };
        Ok(Self {
            script,
            period_ms: optional_seconds(cfg, "periodInSeconds")?
                .unwrap_or(1000)
                .max(1),
            remaining: (count > 0).then_some(count),
            next_at: None,
            originator: cfg
                .get("originatorName")
                .and_then(Json::as_str)
                .unwrap_or("generator")
                .to_string(),
            prev: None,
        })
    }
}

impl Node for Generator {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        // ThingsBoard's generator has no input; a message sent to it goes on.
        cx.tell("Success", m);
    }

    fn on_tick(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now.unix_ms;
        let due = *self.next_at.get_or_insert(now);
        if now < due || self.remaining == Some(0) {
            return;
        }
        // The next slot after now (ticks may be late; no burst to catch up).
        self.next_at = Some(due + self.period_ms * ((now - due) / self.period_ms + 1));
        if let Some(r) = &mut self.remaining {
            *r -= 1;
        }
        let base = Msg::new(&self.originator, msg::POST_TELEMETRY, json!({}), cx.now);
        let prev = self.prev.clone().unwrap_or_else(|| {
            let mut m = base.clone();
            m.metadata.clear();
            m.msg_type = String::new();
            m
        });
        let made = self
            .script
            .call(&prev, cx)
            .map_err(|e| e.to_string())
            .and_then(|o| JsTransform::apply(&base, o));
        match made {
            Ok(mut made) => {
                made.originator = self.originator.clone();
                made.ts = cx.now;
                made.metadata.insert("ts".to_string(), now.to_string());
                made.metadata
                    .entry("deviceName".to_string())
                    .or_insert_with(|| self.originator.clone());
                self.prev = Some(made.clone());
                cx.tell("Success", made);
            }
            Err(e) => cx.fail(base, e),
        }
    }
}

/// Passes every message on `Success`.
#[derive(Debug)]
struct NoOp;

impl Node for NoOp {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        cx.tell("Success", m);
    }
}

/// Sends telemetry and attributes to the uplinks: logged as a save node
/// logs them (the log is what the uplinks deliver from). Other types have
/// nothing to send upstream and go to `Failure`.
#[derive(Debug)]
struct PushToCloud;

impl Node for PushToCloud {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let attributes = match m.msg_type.as_str() {
            msg::POST_TELEMETRY => false,
            msg::POST_ATTRIBUTES => true,
            other => return cx.fail(m.clone(), format!("{other} messages are not sent upstream")),
        };
        Save { attributes }.on_msg(m, cx);
    }
}

#[derive(Debug, Clone, Copy)]
enum Strategy {
    First,
    Last,
    All,
}

#[derive(Debug)]
struct Dedup {
    interval_ms: i64,
    strategy: Strategy,
    max_pending: usize,
    out_type: Option<String>,
    /// originator → (window end, messages)
    pending: BTreeMap<String, (i64, Vec<Msg>)>,
}

impl Node for Dedup {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let end = cx.now.unix_ms + self.interval_ms;
        let (_, msgs) = self
            .pending
            .entry(m.originator.clone())
            .or_insert_with(|| (end, Vec::new()));
        if msgs.len() >= self.max_pending {
            return cx.fail(
                m,
                format!("more than {} messages pending", self.max_pending),
            );
        }
        msgs.push(m);
    }

    fn on_tick(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now.unix_ms;
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (end, _))| *end <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let Some((_, msgs)) = self.pending.remove(&k) else {
                continue;
            };
            let out = match self.strategy {
                Strategy::First => msgs.into_iter().next(),
                Strategy::Last => msgs.into_iter().last(),
                Strategy::All => {
                    let mut it = msgs.into_iter();
                    it.next().map(|first| {
                        let mut all = first.clone();
                        let mut items =
                            vec![json!({"msg": first.data, "metadata": first.metadata})];
                        items.extend(it.map(|m| json!({"msg": m.data, "metadata": m.metadata})));
                        all.data = Json::Array(items);
                        if let Some(t) = &self.out_type {
                            all.msg_type = t.clone();
                        }
                        all
                    })
                }
            };
            if let Some(o) = out {
                cx.tell("Success", o);
            }
        }
    }
}

#[derive(Debug)]
struct Delay {
    delay_ms: i64,
    max_pending: usize,
    queue: VecDeque<(i64, Msg)>,
}

impl Node for Delay {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        if self.queue.len() >= self.max_pending {
            return cx.fail(
                m,
                format!("more than {} messages delayed", self.max_pending),
            );
        }
        self.queue.push_back((cx.now.unix_ms + self.delay_ms, m));
    }

    fn on_tick(&mut self, cx: &mut Cx<'_>) {
        while self
            .queue
            .front()
            .is_some_and(|(at, _)| *at <= cx.now.unix_ms)
        {
            if let Some((_, m)) = self.queue.pop_front() {
                cx.tell("Success", m);
            }
        }
    }
}

// ---- native edge nodes -----------------------------------------------

/// Deadband (absolute or percent) and on-change with heartbeat: passes the
/// keys that moved enough (or whose heartbeat is due); drops the others.
/// Success with what is left; `Filtered` when nothing is.
#[derive(Debug)]
struct Deadband {
    /// Keys to watch; empty: every numeric or scalar key.
    keys: Vec<String>,
    absolute: Option<f64>,
    percent: Option<f64>,
    heartbeat_ms: Option<i64>,
    /// (originator, key) → (last sent value, when)
    last: BTreeMap<(String, String), (Json, i64)>,
}

impl Deadband {
    fn passes(&self, last: Option<&(Json, i64)>, v: &Json, now: i64) -> bool {
        let Some((lv, at)) = last else { return true };
        if self.heartbeat_ms.is_some_and(|h| now - at >= h) {
            return true;
        }
        match (lv.as_f64(), v.as_f64(), self.absolute, self.percent) {
            (Some(a), Some(b), Some(d), _) => (b - a).abs() > d,
            (Some(a), Some(b), None, Some(p)) => (b - a).abs() > a.abs() * p / 100.0,
            _ => lv != v,
        }
    }
}

impl Node for Deadband {
    fn on_msg(&mut self, mut m: Msg, cx: &mut Cx<'_>) {
        let now = m.time().unix_ms;
        let Json::Object(data) = &mut m.data else {
            return cx.tell("Success", m);
        };
        let mut kept = Map::new();
        for (k, v) in std::mem::take(data) {
            let watched = self.keys.is_empty() || self.keys.contains(&k);
            if !watched {
                kept.insert(k, v);
                continue;
            }
            let key = (m.originator.clone(), k.clone());
            if self.passes(self.last.get(&key), &v, now) {
                self.last.insert(key, (v.clone(), now));
                kept.insert(k, v);
            }
        }
        let empty = kept.is_empty();
        m.data = Json::Object(kept);
        cx.tell(if empty { "Filtered" } else { "Success" }, m);
    }
}

/// Aggregate functions of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Min,
    Max,
    Avg,
    Sum,
    Count,
    First,
    Last,
}

impl Agg {
    fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "min" => Agg::Min,
            "max" => Agg::Max,
            "avg" => Agg::Avg,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "first" => Agg::First,
            "last" => Agg::Last,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Avg => "avg",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::First => "first",
            Agg::Last => "last",
        }
    }

    /// The aggregate of `values` (in arrival order); `None` when empty.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        let first = *values.first()?;
        Some(match self {
            Agg::Min => values.iter().copied().fold(first, f64::min),
            Agg::Max => values.iter().copied().fold(first, f64::max),
            Agg::Sum => values.iter().sum(),
            Agg::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Agg::Count => values.len() as f64,
            Agg::First => first,
            Agg::Last => *values.last()?,
        })
    }
}

/// key → [(ts, value)] in arrival order.
type Series = BTreeMap<String, VecDeque<(i64, f64)>>;

/// Tumbling (emitted when the window closes, on a tick) or sliding
/// (emitted with every message, over the last `size`) aggregates of numeric
/// keys, per originator: `{"<key>_<fn>": value, ...}` on Success.
#[derive(Debug)]
struct Window {
    keys: Vec<String>,
    size_ms: i64,
    sliding: bool,
    functions: Vec<Agg>,
    /// originator → (window start, series, the last message).
    open: BTreeMap<String, (i64, Series, Msg)>,
}

impl Window {
    fn new(cfg: &Json) -> Result<Self, String> {
        let functions = strings(cfg, "functions")?
            .iter()
            .map(|f| {
                Agg::parse(f).ok_or_else(|| {
                    format!("functions: unknown {f:?} (min, max, avg, sum, count, first, last)")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if functions.is_empty() {
            return Err("functions: at least one of min, max, avg, sum, count, first, last".into());
        }
        let size_ms = seconds(cfg, "sizeSeconds")?;
        if size_ms == 0 {
            return Err("sizeSeconds: must be more than 0".into());
        }
        Ok(Self {
            keys: strings(cfg, "keys")?,
            size_ms,
            sliding: cfg.get("sliding").and_then(Json::as_bool).unwrap_or(false),
            functions,
            open: BTreeMap::new(),
        })
    }

    fn result(&self, series: &Series, base: &Msg, end: i64) -> Msg {
        let mut data = Map::new();
        for (k, vals) in series {
            let v: Vec<f64> = vals.iter().map(|(_, x)| *x).collect();
            for f in &self.functions {
                if let Some(x) = f.of(&v) {
                    data.insert(format!("{k}_{}", f.name()), json!(x));
                }
            }
        }
        let mut m = base.clone();
        m.data = Json::Object(data);
        m.metadata.insert("ts".into(), end.to_string());
        m.metadata
            .insert("windowMs".into(), self.size_ms.to_string());
        m
    }
}

impl Node for Window {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let ts = m.time().unix_ms;
        let now = cx.now.unix_ms;
        let entry = self
            .open
            .entry(m.originator.clone())
            .or_insert_with(|| (now, BTreeMap::new(), m.clone()));
        entry.2 = m.clone();
        for k in &self.keys {
            if let Some(v) = m.number(k) {
                entry.1.entry(k.clone()).or_default().push_back((ts, v));
            }
        }
        if self.sliding {
            let from = ts - self.size_ms;
            for vals in entry.1.values_mut() {
                while vals.front().is_some_and(|(t, _)| *t <= from) {
                    vals.pop_front();
                }
            }
            if let Some((_, series, _)) = self.open.get(&m.originator) {
                let out = self.result(series, &m, ts);
                cx.tell("Success", out);
            }
        }
    }

    fn on_tick(&mut self, cx: &mut Cx<'_>) {
        if self.sliding {
            return;
        }
        let now = cx.now.unix_ms;
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, (start, _, _))| now >= start + self.size_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some((start, series, base)) = self.open.remove(&k) {
                if series.values().any(|v| !v.is_empty()) {
                    let out = self.result(&series, &base, start + self.size_ms);
                    cx.tell("Success", out);
                }
            }
        }
    }
}

/// Adds `<key>_rate` (change per `perSeconds`) for numeric keys.
#[derive(Debug)]
struct Rate {
    keys: Vec<String>,
    per_ms: i64,
    last: BTreeMap<(String, String), (i64, f64)>,
}

impl Node for Rate {
    fn on_msg(&mut self, mut m: Msg, cx: &mut Cx<'_>) {
        let ts = m.time().unix_ms;
        let mut rates = Vec::new();
        for k in &self.keys {
            let Some(v) = m.number(k) else { continue };
            let key = (m.originator.clone(), k.clone());
            if let Some((t0, v0)) = self.last.insert(key, (ts, v)) {
                if ts > t0 {
                    rates.push((
                        format!("{k}_rate"),
                        (v - v0) * self.per_ms as f64 / (ts - t0) as f64,
                    ));
                }
            }
        }
        if let Json::Object(o) = &mut m.data {
            for (k, r) in rates {
                o.insert(k, json!(r));
            }
        }
        cx.tell("Success", m);
    }
}

/// A threshold alarm with hysteresis: active when the key goes above
/// `high` (or below `low`); cleared when it is back inside by
/// `hysteresis`. Relations: `Created`, `Cleared`, and `Success` for every
/// message (unchanged).
#[derive(Debug)]
struct Threshold {
    key: String,
    high: Option<f64>,
    low: Option<f64>,
    hysteresis: f64,
    alarm: String,
    severity: AlarmSeverity,
}

impl Threshold {
    fn new(cfg: &Json) -> Result<Self, String> {
        let high = cfg.get("high").and_then(Json::as_f64);
        let low = cfg.get("low").and_then(Json::as_f64);
        if high.is_none() && low.is_none() {
            return Err("high, low: at least one is required".into());
        }
        let hysteresis = cfg.get("hysteresis").and_then(Json::as_f64).unwrap_or(0.0);
        if hysteresis.is_nan() || hysteresis < 0.0 {
            return Err("hysteresis: must be 0 or more".into());
        }
        Ok(Self {
            key: string(cfg, "key")?,
            high,
            low,
            hysteresis,
            alarm: string(cfg, "alarmType")?,
            severity: match cfg.get("severity").and_then(Json::as_str) {
                None => AlarmSeverity::Major,
                Some(s) => msg::parse_severity(s)
                    .ok_or("severity: expected CRITICAL, MAJOR, MINOR, WARNING or INDETERMINATE")?,
            },
        })
    }
}

impl Node for Threshold {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let Some(v) = m.number(&self.key) else {
            return cx.tell("Success", m);
        };
        let key = crate::engine::alarm_key(&m.originator, &self.alarm);
        let active = cx.alarm(&key).is_some();
        let beyond = self.high.is_some_and(|h| v > h) || self.low.is_some_and(|l| v < l);
        let back = self.high.is_none_or(|h| v <= h - self.hysteresis)
            && self.low.is_none_or(|l| v >= l + self.hysteresis);
        let details = json!({"key": self.key, "value": v, "high": self.high, "low": self.low});
        if !active && beyond {
            let none = outpost_core::Propagation::default();
            let (alarm::Raised::Created(a) | alarm::Raised::Updated { alarm: a, .. }) =
                alarm::raise(cx, &m, &self.alarm, self.severity, &details, &none);
            cx.tell("Created", alarm::alarm_msg(&m, &a, &["isNewAlarm"]));
        } else if active && back {
            if let Some(Ok(a)) = alarm::clear(cx, &m, &self.alarm, |_, _| Ok(details.clone())) {
                cx.tell("Cleared", alarm::alarm_msg(&m, &a, &["isClearedAlarm"]));
            }
        }
        cx.tell("Success", m);
    }
}

/// Sets where the events saved from this message go: the named uplinks
/// only, or none (`local`). Success.
#[derive(Debug)]
struct RouteNode(String);

impl Node for RouteNode {
    fn on_msg(&mut self, mut m: Msg, cx: &mut Cx<'_>) {
        m.metadata
            .insert(msg::ROUTE_KEY.to_string(), self.0.clone());
        cx.tell("Success", m);
    }
}

/// Writes to a device (a fixed value, or a key of the message), at most
/// once per `minIntervalSeconds` (a guard against write storms).
/// Success when the write is asked for; `Suppressed` inside the interval.
#[derive(Debug)]
struct Write {
    device: String,
    tag: String,
    value_key: Option<String>,
    value: Option<outpost_core::Value>,
    min_interval_ms: i64,
    last: Option<i64>,
}

impl Node for Write {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let value = match (&self.value_key, &self.value) {
            (Some(k), _) => m.data.get(k).and_then(msg::json_to_value),
            (None, v) => v.clone(),
        };
        let Some(value) = value else {
            return cx.fail(
                m,
                format!("no value to write to {}/{}", self.device, self.tag),
            );
        };
        let now = cx.now.unix_ms;
        if self.last.is_some_and(|l| now - l < self.min_interval_ms) {
            return cx.tell("Suppressed", m);
        }
        self.last = Some(now);
        cx.write(WriteRequest {
            device: self.device.clone(),
            tag: self.tag.clone(),
            value,
            by: "rules".to_string(),
            reply: None,
        });
        cx.tell("Success", m);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use outpost_core::{Event, Timestamp};
    use proptest::prelude::*;

    use super::*;
    use crate::engine::State;

    /// Runs one node: each (ms, msg data) message, then a tick at `tick`.
    /// Returns what went out (relation, data) and the events emitted.
    struct Harness {
        node: Box<dyn Node>,
        state: State,
        alarms: BTreeMap<String, outpost_core::Alarm>,
        events: Vec<Event>,
        writes: Vec<WriteRequest>,
    }

    impl Harness {
        fn new(type_name: &str, cfg: Json) -> Self {
            let host = Arc::new(ScriptHost::new(1 << 20, Duration::from_millis(50)).unwrap());
            Self {
                node: build(type_name, &cfg, &host, &Default::default()).unwrap(),
                state: State::default(),
                alarms: BTreeMap::new(),
                events: Vec::new(),
                writes: Vec::new(),
            }
        }

        fn cx(&mut self, ms: i64) -> Cx<'_> {
            Cx::new(
                Timestamp::synced(ms),
                &self.state,
                &mut self.alarms,
                &mut self.events,
                &mut self.writes,
            )
        }

        fn send(&mut self, ms: i64, data: Json) -> Vec<(String, Json)> {
            let m = Msg::new("d", msg::POST_TELEMETRY, data, Timestamp::synced(ms));
            let mut node = std::mem::replace(&mut self.node, Box::new(TypeSwitch));
            let mut cx = self.cx(ms);
            node.on_msg(m, &mut cx);
            let out = cx.routed.into_iter().map(|(r, m)| (r, m.data)).collect();
            self.node = node;
            out
        }

        /// Sends a whole message; returns the routed messages.
        fn send_msg(&mut self, m: Msg) -> Vec<(String, Msg)> {
            let mut node = std::mem::replace(&mut self.node, Box::new(TypeSwitch));
            let mut cx = self.cx(m.ts.unix_ms);
            node.on_msg(m, &mut cx);
            let out = cx.routed;
            self.node = node;
            out
        }

        fn tick(&mut self, ms: i64) -> Vec<(String, Json)> {
            let mut node = std::mem::replace(&mut self.node, Box::new(TypeSwitch));
            let mut cx = self.cx(ms);
            node.on_tick(&mut cx);
            let out = cx.routed.into_iter().map(|(r, m)| (r, m.data)).collect();
            self.node = node;
            out
        }
    }

    #[test]
    fn message_type_and_originator_type_filters() {
        let mut f = Harness::new(
            "org.thingsboard.rule.engine.filter.TbMsgTypeFilterNode",
            json!({"messageTypes": ["POST_ATTRIBUTES_REQUEST", "POST_TELEMETRY_REQUEST"]}),
        );
        assert_eq!(f.send(0, json!({"t": 1}))[0].0, "True");
        let alarm = Msg::new("d", msg::ALARM, json!({}), Timestamp::synced(0));
        assert_eq!(f.send_msg(alarm)[0].0, "False");
        let mut o = Harness::new(
            "org.thingsboard.rule.engine.filter.TbOriginatorTypeFilterNode",
            json!({"originatorTypes": ["ASSET", "DEVICE"]}),
        );
        assert_eq!(o.send(0, json!({"t": 1}))[0].0, "True");
        let mut o = Harness::new(
            "org.thingsboard.rule.engine.filter.TbOriginatorTypeFilterNode",
            json!({"originatorTypes": ["ASSET"]}),
        );
        assert_eq!(o.send(0, json!({"t": 1}))[0].0, "False");
    }

    #[test]
    fn change_originator_by_name_pattern_and_to_the_alarm_originator() {
        let mut c = Harness::new(
            "org.thingsboard.rule.engine.transform.TbChangeOriginatorNode",
            json!({"originatorSource": "ENTITY", "entityType": "DEVICE", "entityNamePattern": "${deviceName}-$[line]"}),
        );
        let out = c.send_msg(Msg::new(
            "press",
            msg::POST_TELEMETRY,
            json!({"line": 4}),
            Timestamp::synced(0),
        ));
        assert_eq!(out[0].0, "Success");
        assert_eq!(out[0].1.originator, "press-4");
        assert_eq!(out[0].1.metadata["deviceName"], "press-4");
        // A key that is not there: Failure, not a device named "${x}".
        let out = c.send_msg(Msg::new(
            "press",
            msg::POST_TELEMETRY,
            json!({}),
            Timestamp::synced(0),
        ));
        assert_eq!(out[0].0, "Failure");
        let mut a = Harness::new(
            "org.thingsboard.rule.engine.transform.TbChangeOriginatorNode",
            json!({"originatorSource": "ALARM_ORIGINATOR"}),
        );
        let alarm = Msg::new(
            "rules",
            msg::ALARM,
            json!({"originator": "boiler"}),
            Timestamp::synced(0),
        );
        assert_eq!(a.send_msg(alarm)[0].1.originator, "boiler");
        let host = Arc::new(ScriptHost::new(1 << 20, Duration::from_millis(50)).unwrap());
        let e = build(
            "org.thingsboard.rule.engine.transform.TbChangeOriginatorNode",
            &json!({"originatorSource": "CUSTOMER"}),
            &host,
            &Default::default(),
        )
        .unwrap_err();
        assert!(e.starts_with("originatorSource: CUSTOMER"), "{e}");
    }

    #[test]
    fn edge_nodes_push_to_cloud_saves_and_the_rest_pass_on() {
        let mut p = Harness::new(
            "org.thingsboard.rule.engine.edge.TbMsgPushToCloudNode",
            json!({}),
        );
        assert_eq!(p.send(0, json!({"t": 1.5}))[0].0, "Success");
        assert_eq!(p.events.len(), 1, "logged for the uplinks");
        let other = Msg::new("d", msg::CONNECT, json!({}), Timestamp::synced(0));
        assert_eq!(p.send_msg(other)[0].0, "Failure");
        for t in [
            "org.thingsboard.rule.engine.edge.TbMsgPushToEdgeNode",
            "org.thingsboard.rule.engine.action.TbCreateRelationNode",
        ] {
            let mut n = Harness::new(t, json!({"relationType": "Contains"}));
            assert_eq!(n.send(0, json!({"t": 1}))[0].0, "Success", "{t}");
            assert!(n.events.is_empty());
        }
    }

    #[test]
    fn a_tbel_generator_builds_each_message_from_the_previous_one() {
        let script = "var msg = {\"count\": 1}; if (prevMsg.count != null) { msg.count = prevMsg.count + 1; }\n\
                      return {msg: msg, metadata: {\"gen\": \"yes\"}, msgType: \"POST_TELEMETRY_REQUEST\"};";
        let mut g = Harness::new(
            "org.thingsboard.rule.engine.debug.TbMsgGeneratorNode",
            json!({"msgCount": 3, "periodInSeconds": 2, "originatorName": "sim-1",
                   "scriptLang": "TBEL", "tbelScript": script, "jsScript": "throw new Error('not run');"}),
        );
        let mut counts = Vec::new();
        for ms in (0..10_000).step_by(500) {
            for (rel, data) in g.tick(ms) {
                assert_eq!(rel, "Success");
                counts.push((ms, data["count"].clone()));
            }
        }
        assert_eq!(counts, [(0, json!(1)), (2000, json!(2)), (4000, json!(3))]);
    }

    #[test]
    fn the_supported_list_is_the_registry() {
        let host = Arc::new(ScriptHost::new(1 << 20, Duration::from_millis(50)).unwrap());
        for t in supported_types() {
            assert!(supported(&t), "{t}");
            if t.ends_with("TbRuleChainInputNode") || t.ends_with("TbRuleChainOutputNode") {
                continue;
            }
            // Every listed type reaches its builder: an error, if any, is
            // about a configuration field, never "unsupported node type".
            if let Err(e) = build(&t, &json!({}), &host, &Default::default()) {
                assert!(!e.starts_with("unsupported node type"), "{t}: {e}");
            }
        }
        assert!(!supported(
            "org.thingsboard.rule.engine.mail.TbSendEmailNode"
        ));
        assert!(
            !supported("filter.TbJsFilterNode"),
            "a class name has its package"
        );
    }

    #[test]
    fn deadband_absolute_with_heartbeat() {
        let mut h = Harness::new(
            "outpost.Deadband",
            json!({"keys": ["t"], "absolute": 0.5, "heartbeatSeconds": 60}),
        );
        assert_eq!(
            h.send(0, json!({"t": 20.0, "x": 1})),
            [("Success".into(), json!({"t": 20.0, "x": 1}))]
        );
        assert_eq!(
            h.send(1000, json!({"t": 20.4})),
            [("Filtered".into(), json!({}))]
        );
        assert_eq!(
            h.send(2000, json!({"t": 20.6})),
            [("Success".into(), json!({"t": 20.6}))]
        );
        // Unchanged, but the heartbeat is due.
        assert_eq!(
            h.send(62_000, json!({"t": 20.6})),
            [("Success".into(), json!({"t": 20.6}))]
        );
    }

    #[test]
    fn on_change_passes_changes_only() {
        let mut h = Harness::new("outpost.OnChange", json!({}));
        assert_eq!(h.send(0, json!({"door": "open"}))[0].0, "Success");
        assert_eq!(h.send(1, json!({"door": "open"}))[0].0, "Filtered");
        assert_eq!(h.send(2, json!({"door": "shut"}))[0].0, "Success");
    }

    #[test]
    fn threshold_alarm_with_hysteresis() {
        let mut h = Harness::new(
            "outpost.Threshold",
            json!({"key": "t", "high": 80, "hysteresis": 5, "alarmType": "Hot", "severity": "MAJOR"}),
        );
        let rels = |o: Vec<(String, Json)>| o.into_iter().map(|(r, _)| r).collect::<Vec<_>>();
        assert_eq!(rels(h.send(0, json!({"t": 79}))), ["Success"]);
        assert_eq!(rels(h.send(1, json!({"t": 81}))), ["Created", "Success"]);
        assert_eq!(
            rels(h.send(2, json!({"t": 90}))),
            ["Success"],
            "already active"
        );
        assert_eq!(
            rels(h.send(3, json!({"t": 77}))),
            ["Success"],
            "inside the hysteresis band"
        );
        assert_eq!(rels(h.send(4, json!({"t": 75}))), ["Cleared", "Success"]);
        let states: Vec<outpost_core::AlarmState> = h
            .events
            .iter()
            .filter_map(|e| match &e.body {
                outpost_core::Body::Alarm(a) => Some(a.state),
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            [
                outpost_core::AlarmState::Active,
                outpost_core::AlarmState::Cleared
            ]
        );
    }

    #[test]
    fn write_with_a_guard_against_storms() {
        let mut h = Harness::new(
            "outpost.Write",
            json!({"device": "relay", "tag": "fan", "value": true, "minIntervalSeconds": 10}),
        );
        assert_eq!(h.send(0, json!({}))[0].0, "Success");
        assert_eq!(h.send(5_000, json!({}))[0].0, "Suppressed");
        assert_eq!(h.send(10_000, json!({}))[0].0, "Success");
        assert_eq!(h.writes.len(), 2);
        assert_eq!(h.writes[0].device, "relay");
        assert_eq!(h.writes[0].value, outpost_core::Value::Bool(true));
    }

    #[test]
    fn route_marks_the_events_saved_from_the_message() {
        let host = Arc::new(ScriptHost::new(1 << 20, Duration::from_millis(50)).unwrap());
        let mut route = build(
            "outpost.Route",
            &json!({"uplinks": ["cloud", "backup"]}),
            &host,
            &Default::default(),
        )
        .unwrap();
        let mut local = build(
            "outpost.Route",
            &json!({"local": true}),
            &host,
            &Default::default(),
        )
        .unwrap();
        assert!(
            build("outpost.Route", &json!({}), &host, &Default::default())
                .unwrap_err()
                .starts_with("uplinks, local")
        );
        let mut h = Harness::new("outpost.OnChange", json!({}));
        let m = Msg::new(
            "d",
            msg::POST_TELEMETRY,
            json!({"v": 1}),
            Timestamp::synced(0),
        );
        let mut cx = h.cx(0);
        route.on_msg(m.clone(), &mut cx);
        local.on_msg(m, &mut cx);
        let routes: Vec<outpost_core::Route> = cx
            .routed
            .iter()
            .map(|(_, m)| m.telemetry_event().route)
            .collect();
        assert_eq!(
            routes,
            [
                outpost_core::Route::Only(vec!["cloud".into(), "backup".into()]),
                outpost_core::Route::Local
            ]
        );
    }

    #[test]
    fn rate_of_change_per_minute() {
        let mut h = Harness::new(
            "outpost.RateOfChange",
            json!({"keys": ["count"], "perSeconds": 60}),
        );
        h.send(0, json!({"count": 100}));
        let out = h.send(30_000, json!({"count": 110}));
        assert_eq!(out[0].1["count_rate"], json!(20.0));
    }

    #[test]
    fn tbel_scripts_run_where_scriptlang_says_and_js_fields_are_ignored() {
        // Both fields present, as in ThingsBoard's exports: the language picks.
        let mut f = Harness::new(
            "org.thingsboard.rule.engine.filter.TbJsFilterNode",
            json!({"scriptLang": "TBEL", "tbelScript": "return msg.t != null && msg.t > 20;",
                   "jsScript": "return false;"}),
        );
        assert_eq!(f.send(0, json!({"t": 25}))[0].0, "True");
        assert_eq!(f.send(1, json!({"x": 1}))[0].0, "False");
        // TBEL's old name, with its old field.
        let mut m = Harness::new(
            "org.thingsboard.rule.engine.filter.TbJsFilterNode",
            json!({"scriptLang": "MVEL", "mvelScript": "return msg.t > 20;", "jsScript": "return false;"}),
        );
        assert_eq!(m.send(0, json!({"t": 25}))[0].0, "True");
        let mut s = Harness::new(
            "org.thingsboard.rule.engine.filter.TbJsSwitchNode",
            json!({"scriptLang": "TBEL", "tbelScript": "var r = []; if (msg.t > 50) { r.add('hot'); } r.add('log'); return r;"}),
        );
        let out: Vec<String> = s
            .send(0, json!({"t": 60}))
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(out, ["hot", "log"]);
        let mut t = Harness::new(
            "org.thingsboard.rule.engine.transform.TbTransformMsgNode",
            json!({"scriptLang": "TBEL", "tbelScript": "var out = {}; foreach (e : msg.entrySet()) { out.put(e.key + '_x', e.value * 2); } return {msg: out, metadata: metadata, msgType: msgType};"}),
        );
        let out = t.send(0, json!({"a": 1, "b": 2}));
        assert_eq!(out[0], ("Success".to_string(), json!({"a_x": 2, "b_x": 4})));
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let host = Arc::new(ScriptHost::new(1 << 20, Duration::from_millis(50)).unwrap());
        for (t, cfg, field) in [
            (
                "outpost.Window",
                json!({"keys": ["t"], "sizeSeconds": 10, "functions": ["median"]}),
                "functions",
            ),
            (
                "outpost.Window",
                json!({"keys": ["t"], "functions": ["avg"]}),
                "sizeSeconds",
            ),
            (
                "outpost.Threshold",
                json!({"key": "t", "alarmType": "x"}),
                "high, low",
            ),
            (
                "org.thingsboard.rule.engine.action.TbCreateAlarmNode",
                json!({"alarmType": "x", "severity": "BAD"}),
                "severity",
            ),
            (
                "org.thingsboard.rule.engine.filter.TbJsFilterNode",
                json!({"scriptLang": "Python", "jsScript": "return true;"}),
                "scriptLang",
            ),
            (
                "org.thingsboard.rule.engine.filter.TbJsFilterNode",
                json!({"scriptLang": "TBEL", "tbelScript": "return msg.t >;", "jsScript": "return true;"}),
                "tbelScript: line 1, column 15",
            ),
            (
                "org.thingsboard.rule.engine.filter.TbJsFilterNode",
                json!({"scriptLang": "TBEL", "jsScript": "return true;"}),
                "tbelScript: required",
            ),
        ] {
            let e = build(t, &cfg, &host, &Default::default()).unwrap_err();
            assert!(e.starts_with(field), "{t}: {e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A tumbling window's aggregates equal a direct computation over
        /// the values that arrived in it.
        #[test]
        fn tumbling_window_equals_direct_computation(values in prop::collection::vec(-1e6f64..1e6, 1..40)) {
            let mut h = Harness::new(
                "outpost.Window",
                json!({"keys": ["v"], "sizeSeconds": 60, "functions": ["min", "max", "avg", "sum", "count", "first", "last"]}),
            );
            for (i, v) in values.iter().enumerate() {
                let out = h.send(i as i64, json!({"v": v}));
                prop_assert!(out.is_empty(), "{:?}", out);
            }
            let early = h.tick(59_999);
            prop_assert!(early.is_empty(), "{:?}", early);
            let out = h.tick(60_000);
            prop_assert_eq!(out.len(), 1);
            let d = &out[0].1;
            let sum: f64 = values.iter().sum();
            let close = |a: &Json, b: f64| (a.as_f64().unwrap_or(f64::NAN) - b).abs() <= 1e-9 * b.abs().max(1.0);
            prop_assert!(close(&d["v_min"], values.iter().copied().fold(f64::INFINITY, f64::min)));
            prop_assert!(close(&d["v_max"], values.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
            prop_assert!(close(&d["v_sum"], sum));
            prop_assert!(close(&d["v_avg"], sum / values.len() as f64));
            prop_assert!(close(&d["v_count"], values.len() as f64));
            prop_assert!(close(&d["v_first"], values[0]));
            prop_assert!(close(&d["v_last"], values[values.len() - 1]));
        }

        /// A sliding window reports, with each message, the aggregate of the
        /// values of the last `size` (exclusive of older ones).
        #[test]
        fn sliding_window_equals_direct_computation(steps in prop::collection::vec((0i64..5_000, -100f64..100.0), 1..40)) {
            let mut h = Harness::new(
                "outpost.Window",
                json!({"keys": ["v"], "sizeSeconds": 10, "sliding": true, "functions": ["sum", "count"]}),
            );
            let mut t = 0;
            let mut seen: Vec<(i64, f64)> = Vec::new();
            for (dt, v) in steps {
                t += dt;
                seen.push((t, v));
                let out = h.send(t, json!({"v": v}));
                let inside: Vec<f64> = seen.iter().filter(|(ts, _)| *ts > t - 10_000).map(|(_, v)| *v).collect();
                prop_assert_eq!(out.len(), 1);
                let d = &out[0].1;
                prop_assert!((d["v_sum"].as_f64().unwrap_or(f64::NAN) - inside.iter().sum::<f64>()).abs() < 1e-6);
                prop_assert_eq!(d["v_count"].as_f64(), Some(inside.len() as f64));
            }
        }

        /// Deadband: a value is passed exactly when it moved more than the
        /// band from the last value passed.
        #[test]
        fn deadband_passes_exactly_the_moves_beyond_the_band(values in prop::collection::vec(-50f64..50.0, 1..60), band in 0.1f64..10.0) {
            let mut h = Harness::new("outpost.Deadband", json!({"keys": ["v"], "absolute": band}));
            let mut last: Option<f64> = None;
            for (i, v) in values.iter().enumerate() {
                let out = h.send(i as i64, json!({"v": v}));
                let expect = last.is_none_or(|l| (v - l).abs() > band);
                prop_assert_eq!(out[0].0 == "Success", expect);
                if expect {
                    last = Some(*v);
                }
            }
        }
    }
}
