//! ThingsBoard's device profile node: the alarm rules of each device's
//! profile (see `crate::profile`), evaluated on its messages.
//!
//! Invariants:
//! - A device's profile is the one named by `metadata.deviceType`; a
//!   device without one, and every message, goes on `Success` unchanged
//!   (after the alarm messages it set off).
//! - Each device keeps a snapshot of the keys its rules read: time series
//!   from its telemetry, attributes from its attribute messages, falling
//!   back to the gateway's saved state (restored from the log at start).
//! - Create rules are tried from the highest severity; the first that holds
//!   raises or updates the alarm (an open alarm of a higher severity is not
//!   lowered), and resets the clear rule. Otherwise an open alarm whose
//!   clear rule holds is cleared, and every rule's count starts again. A
//!   rule that does not hold starts again too.
//! - Durations are measured in message time, and also run out on the timer
//!   (in the timer's time) without a new message.
//! - The rule states (counts, durations) are in memory: a restart or a
//!   reload starts them again, as ThingsBoard does unless
//!   `persistAlarmRulesState` is set. The alarms themselves are the
//!   engine's, persisted in the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use outpost_core::Alarm;
use serde_json::{json, Value as Json};

use super::alarm::{self, Raised};
use crate::engine::{alarm_key, Cx, Node};
use crate::msg::{self, Msg};
use crate::profile::{
    self, AlarmDef, Filter, Key, NumOp, Predicate, Profile, Profiles, Rule, Spec, StrOp, Update,
    ValueType,
};

/// How a rule came out on one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eval {
    True,
    False,
    NotYet,
}

/// The count and duration of one rule for one device.
#[derive(Debug, Clone, Copy, Default)]
struct RuleState {
    count: i64,
    last_ts: i64,
    duration: i64,
}

impl RuleState {
    fn reset(&mut self) {
        *self = RuleState::default();
    }
}

#[derive(Debug)]
struct AlarmStates {
    create: Vec<RuleState>,
    clear: RuleState,
}

#[derive(Debug)]
struct Device {
    profile: Arc<Profile>,
    /// Time series the rules read, as last seen.
    telemetry: BTreeMap<String, Json>,
    /// Attributes as last seen in the device's attribute messages.
    attributes: BTreeMap<String, Json>,
    /// The last message (the timer's alarms carry its metadata).
    last: Msg,
    alarms: Vec<AlarmStates>,
}

impl Device {
    fn new(profile: Arc<Profile>, m: &Msg) -> Self {
        let alarms = profile
            .alarms
            .iter()
            .map(|a| AlarmStates {
                create: vec![RuleState::default(); a.create.len()],
                clear: RuleState::default(),
            })
            .collect();
        Device {
            profile,
            telemetry: BTreeMap::new(),
            attributes: BTreeMap::new(),
            last: m.clone(),
            alarms,
        }
    }
}

#[derive(Debug)]
pub(super) struct DeviceProfile {
    profiles: Arc<Profiles>,
    devices: BTreeMap<String, Device>,
}

impl DeviceProfile {
    pub(super) fn new(profiles: Arc<Profiles>) -> Self {
        Self {
            profiles,
            devices: BTreeMap::new(),
        }
    }
}

/// What a rule reads for one device at one step.
struct Snapshot<'a> {
    device: &'a Device,
    originator: &'a str,
    cx_state: &'a crate::engine::State,
    ts: i64,
}

impl Snapshot<'_> {
    fn get(&self, key: &Key) -> Option<Json> {
        let saved = |map: &BTreeMap<String, BTreeMap<String, Json>>, k: &str| {
            map.get(self.originator).and_then(|m| m.get(k)).cloned()
        };
        match key {
            Key::Telemetry(k) => self
                .device
                .telemetry
                .get(k)
                .cloned()
                .or_else(|| saved(&self.cx_state.latest, k)),
            Key::Attribute(k) => self.attribute(k),
            Key::Field(f) => match f.as_str() {
                "name" => Some(Json::String(self.originator.to_string())),
                "type" => self
                    .device
                    .last
                    .metadata
                    .get("deviceType")
                    .map(|t| Json::String(t.clone())),
                _ => None,
            },
            Key::Constant(_) => None,
        }
    }

    /// An attribute of any scope: as last seen in a message, else saved
    /// (server, then shared, then client scope).
    fn attribute(&self, k: &str) -> Option<Json> {
        let saved = |map: &BTreeMap<String, BTreeMap<String, Json>>| {
            map.get(self.originator).and_then(|m| m.get(k)).cloned()
        };
        self.device
            .attributes
            .get(k)
            .cloned()
            .or_else(|| saved(&self.cx_state.server))
            .or_else(|| saved(&self.cx_state.shared))
            .or_else(|| saved(&self.cx_state.attributes))
    }

    fn resolve<T>(&self, d: &profile::Dynamic<T>, read: impl Fn(&Json) -> Option<T>) -> T
    where
        T: Clone,
    {
        d.attribute
            .as_deref()
            .and_then(|a| self.attribute(a))
            .and_then(|v| read(&v))
            .unwrap_or_else(|| d.default.clone())
    }

    /// Whether every key filter holds (a key without a value fails).
    fn holds(&self, rule: &Rule) -> bool {
        rule.filters.iter().all(|f| {
            let value = match &f.key {
                Key::Constant(_) => f.constant.clone(),
                key => self.get(key),
            };
            value.is_some_and(|v| self.predicate(f, &v, &f.predicate))
        })
    }

    fn predicate(&self, f: &Filter, v: &Json, p: &Predicate) -> bool {
        match p {
            Predicate::Numeric(op, value) => {
                let (Some(x), Some(y)) = (
                    profile::number(v),
                    self.resolve(value, |j| profile::number(j).map(Some)),
                ) else {
                    return false;
                };
                match op {
                    NumOp::Equal => x == y,
                    NumOp::NotEqual => x != y,
                    NumOp::Greater => x > y,
                    NumOp::Less => x < y,
                    NumOp::GreaterOrEqual => x >= y,
                    NumOp::LessOrEqual => x <= y,
                }
            }
            Predicate::String {
                op,
                value,
                ignore_case,
            } => {
                let Some(mut x) = text_of(v, f.value_type) else {
                    return false;
                };
                let Some(mut y) = self.resolve(value, |j| profile::text(j).map(Some)) else {
                    return false;
                };
                if *ignore_case {
                    x = x.to_lowercase();
                    y = y.to_lowercase();
                }
                let listed = || y.split(',').any(|item| item.trim() == x);
                match op {
                    StrOp::Equal => x == y,
                    StrOp::NotEqual => x != y,
                    StrOp::StartsWith => x.starts_with(&y),
                    StrOp::EndsWith => x.ends_with(&y),
                    StrOp::Contains => x.contains(&y),
                    StrOp::NotContains => !x.contains(&y),
                    StrOp::In => listed(),
                    StrOp::NotIn => !listed(),
                }
            }
            Predicate::Boolean { equal, value } => {
                let Some(x) = profile::boolean(v) else {
                    return false;
                };
                let y = self.resolve(value, |j| profile::boolean(j).map(Some));
                (Some(x) == y) == *equal
            }
            Predicate::Complex { and, predicates } => {
                if *and {
                    predicates.iter().all(|p| self.predicate(f, v, p))
                } else {
                    predicates.iter().any(|p| self.predicate(f, v, p))
                }
            }
        }
    }

    /// Evaluates `rule` on a message at `self.ts`.
    fn eval(&self, rule: &Rule, st: &mut RuleState) -> Eval {
        let active = rule.schedule.active(self.ts);
        if !(active && self.holds(rule)) {
            return Eval::False;
        }
        match &rule.spec {
            Spec::Simple => Eval::True,
            Spec::Repeating { count } => {
                st.count += 1;
                let needed = self.resolve(count, |j| profile::number(j).map(|f| f as i64));
                if st.count >= needed {
                    Eval::True
                } else {
                    Eval::NotYet
                }
            }
            Spec::Duration { unit_ms, value } => {
                if st.last_ts > 0 {
                    if self.ts > st.last_ts {
                        st.duration += self.ts - st.last_ts;
                        st.last_ts = self.ts;
                    }
                } else {
                    st.last_ts = self.ts;
                    st.duration = 0;
                }
                let needed = self.duration_ms(*unit_ms, value);
                if st.duration > needed {
                    Eval::True
                } else {
                    Eval::NotYet
                }
            }
        }
    }

    /// Evaluates `rule` on the timer at `self.ts`: only a duration can
    /// run out without a message.
    fn eval_timer(&self, rule: &Rule, st: &mut RuleState) -> Eval {
        match &rule.spec {
            Spec::Simple | Spec::Repeating { .. } => Eval::NotYet,
            Spec::Duration { unit_ms, value } => {
                let needed = self.duration_ms(*unit_ms, value);
                if needed > 0 && st.last_ts > 0 && self.ts > st.last_ts {
                    if !rule.schedule.active(self.ts) {
                        return Eval::False;
                    }
                    // The condition held since the last message.
                    st.duration += self.ts - st.last_ts;
                    st.last_ts = self.ts;
                    if st.duration > needed {
                        Eval::True
                    } else {
                        Eval::NotYet
                    }
                } else {
                    Eval::False
                }
            }
        }
    }

    fn duration_ms(&self, unit_ms: i64, value: &profile::Dynamic<i64>) -> i64 {
        self.resolve(value, |j| profile::number(j).map(|f| f as i64))
            .saturating_mul(unit_ms)
    }

    /// ThingsBoard's alarm details: `alarmDetails` with `${key}` replaced
    /// by the values of the rule's keys (and the dashboard), else the open
    /// alarm's details, else `{}`.
    fn details(&self, rule: &Rule, open: Option<&Alarm>) -> Json {
        if rule.details.is_none() && rule.dashboard_id.is_none() {
            return open
                .and_then(|a| serde_json::from_str(&a.details).ok())
                .unwrap_or_else(|| json!({}));
        }
        let mut out = serde_json::Map::new();
        if let Some(text) = &rule.details {
            let mut text = text.clone();
            for f in &rule.filters {
                if let Some(v) = self.get(&f.key) {
                    let shown = match v {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    text = text.replace(&format!("${{{}}}", f.key.name()), &shown);
                }
            }
            out.insert("data".into(), Json::String(text));
        }
        if let Some(d) = &rule.dashboard_id {
            out.insert("dashboardId".into(), Json::String(d.clone()));
        }
        Json::Object(out)
    }
}

/// A value as a string predicate reads it.
fn text_of(v: &Json, value_type: ValueType) -> Option<String> {
    match (v, value_type) {
        (Json::Number(n), ValueType::Numeric) if n.is_f64() => n.as_f64().map(|f| format!("{f:?}")),
        _ => profile::text(v),
    }
}

/// Metadata of a rule's counts on its alarm message, as ThingsBoard sets it.
fn condition_metadata(rule: &Rule, st: &RuleState, m: &mut Msg) {
    match rule.spec {
        Spec::Repeating { .. } => {
            m.metadata
                .insert("alarmConditionRepeats".into(), st.count.to_string());
        }
        Spec::Duration { .. } => {
            m.metadata
                .insert("alarmConditionDuration".into(), st.duration.to_string());
        }
        Spec::Simple => {}
    }
}

/// Runs one alarm definition for one device: creates, updates or clears
/// its alarm, telling the alarm messages.
fn process(
    def: &AlarmDef,
    states: &mut AlarmStates,
    snap: &Snapshot<'_>,
    m: &Msg,
    update: &Update,
    cx: &mut Cx<'_>,
) {
    let timer = matches!(update, Update::Timer);
    let eval = |rule: &Rule, st: &mut RuleState| {
        if timer {
            snap.eval_timer(rule, st)
        } else {
            snap.eval(rule, st)
        }
    };
    let mut fired = None;
    for (i, (_, rule)) in def.create.iter().enumerate() {
        if !rule.wants(update) {
            continue;
        }
        match eval(rule, &mut states.create[i]) {
            Eval::True => {
                fired = Some(i);
                break;
            }
            Eval::False => states.create[i].reset(),
            Eval::NotYet => {}
        }
    }
    let key = alarm_key(&m.originator, &def.alarm_type);
    if let Some(i) = fired {
        let (severity, rule) = &def.create[i];
        let open = cx.alarm(&key).cloned();
        // An open alarm is not lowered in severity.
        let lowered = open
            .as_ref()
            .is_some_and(|a| (*severity as u8) > (a.severity as u8));
        if !lowered {
            let details = snap.details(rule, open.as_ref());
            let raised = alarm::raise(
                cx,
                m,
                &def.alarm_type,
                *severity,
                &details,
                &def.propagation,
            );
            let (relation, out) = match raised {
                Raised::Created(a) => ("Alarm Created", alarm::alarm_msg(m, &a, &["isNewAlarm"])),
                Raised::Updated {
                    alarm,
                    severity_changed: true,
                } => (
                    "Alarm Severity Updated",
                    alarm::alarm_msg(m, &alarm, &["isExistingAlarm", "isSeverityUpdated"]),
                ),
                Raised::Updated { alarm, .. } => (
                    "Alarm Updated",
                    alarm::alarm_msg(m, &alarm, &["isExistingAlarm"]),
                ),
            };
            let mut out = out;
            condition_metadata(rule, &states.create[i], &mut out);
            cx.tell(relation, out);
        }
        states.clear.reset();
        return;
    }
    let Some(clear_rule) = &def.clear else {
        return;
    };
    if cx.alarm(&key).is_none() || !clear_rule.wants(update) {
        return;
    }
    match eval(clear_rule, &mut states.clear) {
        Eval::True => {
            let cleared = alarm::clear(cx, m, &def.alarm_type, |open, _| {
                Ok(snap.details(clear_rule, Some(open)))
            });
            let st = states.clear;
            states.clear.reset();
            for s in &mut states.create {
                s.reset();
            }
            if let Some(Ok(a)) = cleared {
                let mut out = alarm::alarm_msg(m, &a, &["isClearedAlarm"]);
                condition_metadata(clear_rule, &st, &mut out);
                cx.tell("Alarm Cleared", out);
            }
        }
        Eval::False => states.clear.reset(),
        Eval::NotYet => {}
    }
}

impl Node for DeviceProfile {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let profile = m
            .metadata
            .get("deviceType")
            .and_then(|t| self.profiles.get(t));
        let Some(profile) = profile else {
            self.devices.remove(&m.originator);
            return cx.tell("Success", m);
        };
        let device = match self.devices.get_mut(&m.originator) {
            Some(d) if Arc::ptr_eq(&d.profile, profile) => d,
            _ => {
                self.devices
                    .insert(m.originator.clone(), Device::new(profile.clone(), &m));
                match self.devices.get_mut(&m.originator) {
                    Some(d) => d,
                    None => return cx.tell("Success", m),
                }
            }
        };
        let keys = || match &m.data {
            Json::Object(o) => o.keys().cloned().collect(),
            _ => Default::default(),
        };
        let update = match m.msg_type.as_str() {
            msg::POST_TELEMETRY => {
                if let Json::Object(o) = &m.data {
                    for (k, v) in o {
                        if device.profile.ts_keys.contains(k) {
                            device.telemetry.insert(k.clone(), v.clone());
                        }
                    }
                }
                Update::Telemetry(keys())
            }
            msg::POST_ATTRIBUTES | msg::ATTRIBUTES_UPDATED => {
                if let Json::Object(o) = &m.data {
                    for (k, v) in o {
                        device.attributes.insert(k.clone(), v.clone());
                    }
                }
                Update::Attributes(keys())
            }
            _ => return cx.tell("Success", m),
        };
        device.last = m.clone();
        let ts = m.time().unix_ms;
        run(device, &m, ts, &update, cx);
        cx.tell("Success", m);
    }

    fn on_tick(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        for device in self.devices.values_mut() {
            let pending = device
                .alarms
                .iter()
                .any(|a| a.create.iter().chain([&a.clear]).any(|s| s.last_ts > 0));
            if !pending {
                continue;
            }
            // The timer's alarms carry the device's last message, at the
            // timer's time.
            let mut m = device.last.clone();
            m.ts = now;
            m.metadata.insert("ts".into(), now.unix_ms.to_string());
            run(device, &m, now.unix_ms, &Update::Timer, cx);
        }
    }
}

/// Runs every alarm definition of `device`'s profile on `update`.
fn run(device: &mut Device, m: &Msg, ts: i64, update: &Update, cx: &mut Cx<'_>) {
    let mut states = std::mem::take(&mut device.alarms);
    let state = cx.state;
    let snap = Snapshot {
        device,
        originator: &m.originator,
        cx_state: state,
        ts,
    };
    for (def, st) in snap.device.profile.alarms.iter().zip(states.iter_mut()) {
        process(def, st, &snap, m, update, cx);
    }
    device.alarms = states;
}
