//! Device profiles: the alarm rules of ThingsBoard device-profile exports
//! (`profileData.alarms`), read for the device profile node.
//!
//! Invariants:
//! - A profile is read whole or refused: every problem is reported at once,
//!   each with the file and the key path (`profileData.alarms[0]
//!   .createRules.CRITICAL.condition.spec.unit: …`).
//! - What is read is what ThingsBoard evaluates: key filters on time
//!   series, attributes, entity fields and constants; numeric, string,
//!   boolean and complex predicates with default and dynamic values;
//!   simple, duration and repeating conditions; any-time, specific-time and
//!   custom schedules in a named time zone (the system's zoneinfo).
//! - A device uses the profile named by its `type` (ThingsBoard's device
//!   profile name); names are unique across the loaded files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use outpost_core::{AlarmSeverity, Propagation};
use serde_json::Value as Json;

use crate::msg;

/// The loaded profiles, by name.
#[derive(Debug, Default, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, Arc<Profile>>,
}

impl Profiles {
    /// Reads the profile exports `paths` (relative to `base`).
    pub fn load(paths: &[std::path::PathBuf], base: &Path) -> Result<Self, Vec<String>> {
        let mut out = Profiles::default();
        let mut errors = Vec::new();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        for p in paths {
            let path = base.join(p);
            let origin = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{origin}: {e}"));
                    continue;
                }
            };
            match Profile::parse(&text, &origin) {
                Ok(profile) => {
                    if let Some(first) = origins.get(&profile.name) {
                        errors.push(format!(
                            "{origin}: name: profile {:?} is also defined in {first}",
                            profile.name
                        ));
                        continue;
                    }
                    origins.insert(profile.name.clone(), origin);
                    out.insert(profile);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    pub fn insert(&mut self, profile: Profile) {
        self.by_name.insert(profile.name.clone(), Arc::new(profile));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// One device profile: its alarm definitions.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub alarms: Vec<AlarmDef>,
    /// Every time-series key the rules read (what a device's snapshot keeps).
    pub ts_keys: BTreeSet<String>,
}

/// `profileData.alarms[i]`.
#[derive(Debug, Clone)]
pub struct AlarmDef {
    pub alarm_type: String,
    /// By severity, the highest first.
    pub create: Vec<(AlarmSeverity, Rule)>,
    pub clear: Option<Rule>,
    pub propagation: Propagation,
}

/// A create or clear rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub filters: Vec<Filter>,
    pub spec: Spec,
    pub schedule: Schedule,
    /// `alarmDetails`: `${key}` is replaced by the key's value.
    pub details: Option<String>,
    pub dashboard_id: Option<String>,
}

impl Rule {
    /// Whether an update of `keys` (of the given kind) is one this rule
    /// looks at, as ThingsBoard decides it: a time-series update when it
    /// touches one of the rule's time-series keys; an attribute update only
    /// for a rule that reads no time series.
    pub fn wants(&self, update: &Update) -> bool {
        match update {
            Update::Timer => true,
            Update::Telemetry(keys) => self
                .filters
                .iter()
                .any(|f| matches!(&f.key, Key::Telemetry(k) if keys.contains(k))),
            Update::Attributes(keys) => {
                !self
                    .filters
                    .iter()
                    .any(|f| matches!(f.key, Key::Telemetry(_)))
                    && self.attribute_keys().any(|k| keys.contains(k))
            }
        }
    }

    /// The attribute keys the rule reads: filters and dynamic values.
    fn attribute_keys(&self) -> impl Iterator<Item = &String> {
        let filters = self.filters.iter().filter_map(|f| match &f.key {
            Key::Attribute(k) => Some(k),
            _ => None,
        });
        let dynamic = self
            .filters
            .iter()
            .flat_map(|f| f.predicate.sources())
            .chain(self.spec.source());
        filters.chain(dynamic)
    }
}

/// What a message changed (which rules look at it).
#[derive(Debug, Clone)]
pub enum Update {
    Telemetry(BTreeSet<String>),
    Attributes(BTreeSet<String>),
    /// A timer: duration conditions that may have run out.
    Timer,
}

/// A key filter: a value, how to read it, what it must satisfy.
#[derive(Debug, Clone)]
pub struct Filter {
    pub key: Key,
    pub value_type: ValueType,
    /// The value of a `CONSTANT` key.
    pub constant: Option<Json>,
    pub predicate: Predicate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Telemetry(String),
    Attribute(String),
    /// `ENTITY_FIELD`: `name`, `type` (others never have a value here).
    Field(String),
    Constant(String),
}

impl Key {
    pub fn name(&self) -> &str {
        match self {
            Key::Telemetry(k) | Key::Attribute(k) | Key::Field(k) | Key::Constant(k) => k,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Numeric,
    String,
    Boolean,
    DateTime,
}

/// A value from the profile, or from the device's attribute when it has
/// one (ThingsBoard's dynamic value).
#[derive(Debug, Clone)]
pub struct Dynamic<T> {
    pub default: T,
    /// The `CURRENT_DEVICE` attribute that overrides `default`. Customer
    /// and tenant sources have no value at the edge.
    pub attribute: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Predicate {
    Numeric(NumOp, Dynamic<Option<f64>>),
    String {
        op: StrOp,
        value: Dynamic<Option<String>>,
        ignore_case: bool,
    },
    Boolean {
        equal: bool,
        value: Dynamic<Option<bool>>,
    },
    Complex {
        and: bool,
        predicates: Vec<Predicate>,
    },
}

impl Predicate {
    fn sources(&self) -> Vec<&String> {
        match self {
            Predicate::Numeric(_, d) => d.attribute.iter().collect(),
            Predicate::String { value, .. } => value.attribute.iter().collect(),
            Predicate::Boolean { value, .. } => value.attribute.iter().collect(),
            Predicate::Complex { predicates, .. } => {
                predicates.iter().flat_map(Predicate::sources).collect()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumOp {
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Equal,
    NotEqual,
    StartsWith,
    EndsWith,
    Contains,
    NotContains,
    In,
    NotIn,
}

/// How long or how often a condition must hold.
#[derive(Debug, Clone)]
pub enum Spec {
    Simple,
    /// Held for longer than `value` × `unit_ms`.
    Duration {
        unit_ms: i64,
        value: Dynamic<i64>,
    },
    /// True on `count` consecutive evaluations.
    Repeating {
        count: Dynamic<i64>,
    },
}

impl Spec {
    fn source(&self) -> Option<&String> {
        match self {
            Spec::Simple => None,
            Spec::Duration { value, .. } => value.attribute.as_ref(),
            Spec::Repeating { count } => count.attribute.as_ref(),
        }
    }
}

/// When a rule is in force.
#[derive(Debug, Clone)]
pub enum Schedule {
    AnyTime,
    /// Days 1 (Monday) to 7; milliseconds from the start of the day.
    Specific {
        tz: jiff::tz::TimeZone,
        days: Vec<i8>,
        starts: i64,
        ends: i64,
    },
    Custom {
        tz: jiff::tz::TimeZone,
        /// (day 1–7, enabled, starts, ends).
        items: Vec<(i8, bool, i64, i64)>,
    },
}

impl Schedule {
    /// Whether the rule is in force at `unix_ms`.
    pub fn active(&self, unix_ms: i64) -> bool {
        let (tz, window) = match self {
            Schedule::AnyTime => return true,
            Schedule::Specific {
                tz,
                days,
                starts,
                ends,
            } => (tz, Some((Some(days.as_slice()), *starts, *ends))),
            Schedule::Custom { tz, .. } => (tz, None),
        };
        let Ok(ts) = jiff::Timestamp::from_millisecond(unix_ms) else {
            return false;
        };
        let zoned = ts.to_zoned_datetime(tz.clone());
        let day = zoned.weekday().to_monday_one_offset();
        let Ok(start) = zoned.start_of_day() else {
            return false;
        };
        let since_midnight = unix_ms - start.timestamp().as_millisecond();
        let (starts, ends) = match (self, window) {
            (_, Some((Some(days), s, e))) => {
                if days.len() != 7 && !days.contains(&day) {
                    return false;
                }
                (s, e)
            }
            (Schedule::Custom { items, .. }, _) => match items.iter().find(|(d, ..)| *d == day) {
                Some((_, true, s, e)) => (*s, *e),
                _ => return false,
            },
            _ => return true,
        };
        in_window(since_midnight, starts, ends)
    }
}

/// ThingsBoard's window test; a window from 0 to 0 is the whole day.
fn in_window(t: i64, starts: i64, ends: i64) -> bool {
    if starts == 0 && ends == 0 {
        true
    } else if starts <= ends {
        starts <= t && t < ends
    } else {
        // Across midnight.
        starts < t || (0 < t && t < ends)
    }
}

// ---- parsing ----------------------------------------------------------

/// Collects errors under key paths.
struct Reader<'a> {
    origin: &'a str,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn err(&mut self, path: &str, what: impl std::fmt::Display) {
        self.errors.push(format!("{}: {path}: {what}", self.origin));
    }

    fn str<'j>(&mut self, j: &'j Json, key: &str, path: &str) -> Option<&'j str> {
        match j.get(key) {
            Some(Json::String(s)) => Some(s),
            None | Some(Json::Null) => {
                self.err(&format!("{path}.{key}"), "required string");
                None
            }
            Some(_) => {
                self.err(&format!("{path}.{key}"), "expected a string");
                None
            }
        }
    }
}

fn opt_str<'j>(j: &'j Json, key: &str) -> Option<&'j str> {
    j.get(key).and_then(Json::as_str).filter(|s| !s.is_empty())
}

fn flag(j: &Json, key: &str) -> bool {
    j.get(key).and_then(Json::as_bool).unwrap_or(false)
}

impl Profile {
    /// Reads one device-profile export (ThingsBoard's JSON).
    pub fn parse(text: &str, origin: &str) -> Result<Profile, Vec<String>> {
        let j: Json = serde_json::from_str(text).map_err(|e| {
            vec![format!(
                "{origin}:{}:{}: not JSON: {e}",
                e.line(),
                e.column()
            )]
        })?;
        let mut r = Reader {
            origin,
            errors: Vec::new(),
        };
        let name = r.str(&j, "name", "profile").unwrap_or_default().to_string();
        let alarms_json = j.pointer("/profileData/alarms");
        let mut alarms = Vec::new();
        match alarms_json {
            None | Some(Json::Null) => {}
            Some(Json::Array(list)) => {
                for (i, a) in list.iter().enumerate() {
                    if let Some(def) = alarm_def(&mut r, a, &format!("profileData.alarms[{i}]")) {
                        alarms.push(def);
                    }
                }
            }
            Some(_) => r.err("profileData.alarms", "expected a list"),
        }
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        let ts_keys = alarms
            .iter()
            .flat_map(|a: &AlarmDef| a.create.iter().map(|(_, r)| r).chain(a.clear.iter()))
            .flat_map(|r| r.filters.iter())
            .filter_map(|f| match &f.key {
                Key::Telemetry(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        Ok(Profile {
            name,
            alarms,
            ts_keys,
        })
    }
}

fn alarm_def(r: &mut Reader<'_>, a: &Json, path: &str) -> Option<AlarmDef> {
    let before = r.errors.len();
    let alarm_type = r.str(a, "alarmType", path).unwrap_or_default().to_string();
    let mut create = Vec::new();
    match a.get("createRules") {
        Some(Json::Object(rules)) if !rules.is_empty() => {
            for (sev, rule_json) in rules {
                let at = format!("{path}.createRules.{sev}");
                let Some(severity) = msg::parse_severity(sev) else {
                    r.err(
                        &at,
                        "not a severity (CRITICAL, MAJOR, MINOR, WARNING, INDETERMINATE)",
                    );
                    continue;
                };
                if let Some(rule) = rule(r, rule_json, &at) {
                    create.push((severity, rule));
                }
            }
        }
        _ => r.err(
            &format!("{path}.createRules"),
            "required: at least one rule by severity",
        ),
    }
    create.sort_by_key(|(s, _)| *s as u8);
    let clear = match a.get("clearRule") {
        None | Some(Json::Null) => None,
        Some(c) => rule(r, c, &format!("{path}.clearRule")),
    };
    let relation_types = match a.get("propagateRelationTypes") {
        Some(Json::Array(list)) => list
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let def = AlarmDef {
        alarm_type,
        create,
        clear,
        propagation: Propagation {
            related: flag(a, "propagate"),
            to_owner: flag(a, "propagateToOwner"),
            to_tenant: flag(a, "propagateToTenant"),
            relation_types,
        },
    };
    (r.errors.len() == before).then_some(def)
}

fn rule(r: &mut Reader<'_>, j: &Json, path: &str) -> Option<Rule> {
    let before = r.errors.len();
    let cond = j.get("condition").unwrap_or(&Json::Null);
    let mut filters = Vec::new();
    match cond.get("condition") {
        Some(Json::Array(list)) if !list.is_empty() => {
            for (i, f) in list.iter().enumerate() {
                if let Some(f) = filter(r, f, &format!("{path}.condition.condition[{i}]")) {
                    filters.push(f);
                }
            }
        }
        _ => r.err(
            &format!("{path}.condition.condition"),
            "required: a list of key filters",
        ),
    }
    let spec = spec(r, cond.get("spec"), &format!("{path}.condition.spec"));
    let schedule = schedule(r, j.get("schedule"), &format!("{path}.schedule"));
    let dashboard_id = match j.get("dashboardId") {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Object(o)) => o.get("id").and_then(Json::as_str).map(str::to_string),
        _ => None,
    };
    let rule = Rule {
        filters,
        spec: spec?,
        schedule: schedule?,
        details: opt_str(j, "alarmDetails").map(str::to_string),
        dashboard_id,
    };
    (r.errors.len() == before).then_some(rule)
}

fn filter(r: &mut Reader<'_>, j: &Json, path: &str) -> Option<Filter> {
    let key_json = j.get("key").unwrap_or(&Json::Null);
    let kind = r.str(key_json, "type", &format!("{path}.key"))?;
    let name = r.str(key_json, "key", &format!("{path}.key"))?.to_string();
    let key = match kind {
        "TIME_SERIES" => Key::Telemetry(name),
        "ATTRIBUTE" => Key::Attribute(name),
        "ENTITY_FIELD" => Key::Field(name),
        "CONSTANT" => Key::Constant(name),
        other => {
            r.err(
                &format!("{path}.key.type"),
                format!("{other:?} is not TIME_SERIES, ATTRIBUTE, ENTITY_FIELD or CONSTANT"),
            );
            return None;
        }
    };
    let value_type = match r.str(j, "valueType", path)? {
        "NUMERIC" => ValueType::Numeric,
        "STRING" => ValueType::String,
        "BOOLEAN" => ValueType::Boolean,
        "DATE_TIME" => ValueType::DateTime,
        other => {
            r.err(
                &format!("{path}.valueType"),
                format!("{other:?} is not NUMERIC, STRING, BOOLEAN or DATE_TIME"),
            );
            return None;
        }
    };
    let constant = j.get("value").filter(|v| !v.is_null()).cloned();
    if matches!(key, Key::Constant(_)) && constant.is_none() {
        r.err(&format!("{path}.value"), "required for a CONSTANT key");
    }
    let predicate = predicate(r, j.get("predicate"), &format!("{path}.predicate"))?;
    Some(Filter {
        key,
        value_type,
        constant,
        predicate,
    })
}

fn predicate(r: &mut Reader<'_>, j: Option<&Json>, path: &str) -> Option<Predicate> {
    let Some(j) = j.filter(|j| j.is_object()) else {
        r.err(path, "required: a predicate");
        return None;
    };
    let kind = r.str(j, "type", path)?;
    let op = r.str(j, "operation", path)?;
    let bad_op = |r: &mut Reader<'_>, allowed: &str| {
        r.err(
            &format!("{path}.operation"),
            format!("{op:?} is not one of {allowed}"),
        );
    };
    let value = j.get("value");
    Some(match kind {
        "NUMERIC" => {
            let op = match op {
                "EQUAL" => NumOp::Equal,
                "NOT_EQUAL" => NumOp::NotEqual,
                "GREATER" => NumOp::Greater,
                "LESS" => NumOp::Less,
                "GREATER_OR_EQUAL" => NumOp::GreaterOrEqual,
                "LESS_OR_EQUAL" => NumOp::LessOrEqual,
                _ => {
                    bad_op(
                        r,
                        "EQUAL, NOT_EQUAL, GREATER, LESS, GREATER_OR_EQUAL, LESS_OR_EQUAL",
                    );
                    return None;
                }
            };
            Predicate::Numeric(op, dynamic(value, number))
        }
        "STRING" => {
            let op = match op {
                "EQUAL" => StrOp::Equal,
                "NOT_EQUAL" => StrOp::NotEqual,
                "STARTS_WITH" => StrOp::StartsWith,
                "ENDS_WITH" => StrOp::EndsWith,
                "CONTAINS" => StrOp::Contains,
                "NOT_CONTAINS" => StrOp::NotContains,
                "IN" => StrOp::In,
                "NOT_IN" => StrOp::NotIn,
                _ => {
                    bad_op(
                        r,
                        "EQUAL, NOT_EQUAL, STARTS_WITH, ENDS_WITH, CONTAINS, NOT_CONTAINS, IN, NOT_IN",
                    );
                    return None;
                }
            };
            Predicate::String {
                op,
                value: dynamic(value, text),
                ignore_case: flag(j, "ignoreCase"),
            }
        }
        "BOOLEAN" => {
            let equal = match op {
                "EQUAL" => true,
                "NOT_EQUAL" => false,
                _ => {
                    bad_op(r, "EQUAL, NOT_EQUAL");
                    return None;
                }
            };
            Predicate::Boolean {
                equal,
                value: dynamic(value, boolean),
            }
        }
        "COMPLEX" => {
            let and = match op {
                "AND" => true,
                "OR" => false,
                _ => {
                    bad_op(r, "AND, OR");
                    return None;
                }
            };
            let mut predicates = Vec::new();
            match j.get("predicates") {
                Some(Json::Array(list)) => {
                    for (i, p) in list.iter().enumerate() {
                        predicates.push(predicate(r, Some(p), &format!("{path}.predicates[{i}]"))?);
                    }
                }
                _ => {
                    r.err(&format!("{path}.predicates"), "required: a list");
                    return None;
                }
            }
            Predicate::Complex { and, predicates }
        }
        other => {
            r.err(
                &format!("{path}.type"),
                format!("{other:?} is not NUMERIC, STRING, BOOLEAN or COMPLEX"),
            );
            return None;
        }
    })
}

/// `{"defaultValue", "userValue", "dynamicValue": {"sourceType",
/// "sourceAttribute"}}` (or a bare value, as older exports have it).
fn dynamic<T>(j: Option<&Json>, read: impl Fn(&Json) -> Option<T>) -> Dynamic<Option<T>> {
    let Some(j) = j else {
        return Dynamic {
            default: None,
            attribute: None,
        };
    };
    if !j.is_object() {
        return Dynamic {
            default: read(j),
            attribute: None,
        };
    }
    // `userValue` is a dashboard's, not read by ThingsBoard's alarm rules.
    let default = j.get("defaultValue").and_then(&read);
    Dynamic {
        default,
        attribute: device_source(j.get("dynamicValue")),
    }
}

fn device_source(j: Option<&Json>) -> Option<String> {
    let d = j?;
    let attribute = opt_str(d, "sourceAttribute")?;
    match d.get("sourceType").and_then(Json::as_str) {
        Some("CURRENT_DEVICE") | None => Some(attribute.to_string()),
        // Customer and tenant attributes are not on the gateway.
        _ => None,
    }
}

pub(crate) fn number(j: &Json) -> Option<f64> {
    match j {
        Json::Number(n) => n.as_f64(),
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn text(j: &Json) -> Option<String> {
    match j {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    }
}

pub(crate) fn boolean(j: &Json) -> Option<bool> {
    match j {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => n.as_f64().map(|f| f > 0.0),
        Json::String(s) => Some(s.eq_ignore_ascii_case("true")),
        _ => None,
    }
}

fn spec(r: &mut Reader<'_>, j: Option<&Json>, path: &str) -> Option<Spec> {
    let Some(j) = j.filter(|j| !j.is_null()) else {
        return Some(Spec::Simple);
    };
    let whole = |v: &Json| number(v).map(|f| f as i64);
    let amount = |key: &str| {
        let d = dynamic(j.get("predicate").or_else(|| j.get(key)), whole);
        d.default.map(|default| Dynamic {
            default,
            attribute: d.attribute,
        })
    };
    match j.get("type").and_then(Json::as_str) {
        None | Some("SIMPLE") => Some(Spec::Simple),
        Some("DURATION") => {
            let unit_ms = match j.get("unit").and_then(Json::as_str).unwrap_or("SECONDS") {
                "MILLISECONDS" => 1,
                "SECONDS" => 1_000,
                "MINUTES" => 60_000,
                "HOURS" => 3_600_000,
                "DAYS" => 86_400_000,
                other => {
                    r.err(
                        &format!("{path}.unit"),
                        format!("{other:?} is not MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS"),
                    );
                    return None;
                }
            };
            match amount("value") {
                Some(value) => Some(Spec::Duration { unit_ms, value }),
                None => {
                    r.err(
                        &format!("{path}.predicate.defaultValue"),
                        "required: how long the condition must hold",
                    );
                    None
                }
            }
        }
        Some("REPEATING") => match amount("count") {
            Some(count) => Some(Spec::Repeating { count }),
            None => {
                r.err(
                    &format!("{path}.predicate.defaultValue"),
                    "required: how many times the condition must hold",
                );
                None
            }
        },
        Some(other) => {
            r.err(
                &format!("{path}.type"),
                format!("{other:?} is not SIMPLE, DURATION or REPEATING"),
            );
            None
        }
    }
}

fn schedule(r: &mut Reader<'_>, j: Option<&Json>, path: &str) -> Option<Schedule> {
    let Some(j) = j.filter(|j| !j.is_null()) else {
        return Some(Schedule::AnyTime);
    };
    let kind = j.get("type").and_then(Json::as_str).unwrap_or("ANY_TIME");
    if kind == "ANY_TIME" {
        return Some(Schedule::AnyTime);
    }
    let zone = j.get("timezone").and_then(Json::as_str).unwrap_or("UTC");
    let tz = match jiff::tz::db().get(zone) {
        Ok(tz) => tz,
        Err(_) if zone == "UTC" => jiff::tz::TimeZone::UTC,
        Err(_) => {
            r.err(
                &format!("{path}.timezone"),
                format!("{zone:?} is not in the system's time-zone database (/usr/share/zoneinfo: install tzdata)"),
            );
            return None;
        }
    };
    let ms = |v: &Json, key: &str| v.get(key).and_then(Json::as_i64).unwrap_or(0);
    let day_ok = |d: i64| (1..=7).contains(&d);
    match kind {
        "SPECIFIC_TIME" => {
            let mut days = Vec::new();
            if let Some(Json::Array(list)) = j.get("daysOfWeek") {
                for (i, d) in list.iter().enumerate() {
                    match d.as_i64().filter(|d| day_ok(*d)) {
                        Some(d) => days.push(d as i8),
                        None => r.err(
                            &format!("{path}.daysOfWeek[{i}]"),
                            "expected a day from 1 (Monday) to 7",
                        ),
                    }
                }
            }
            Some(Schedule::Specific {
                tz,
                days,
                starts: ms(j, "startsOn"),
                ends: ms(j, "endsOn"),
            })
        }
        "CUSTOM" => {
            let mut items = Vec::new();
            if let Some(Json::Array(list)) = j.get("items") {
                for (i, it) in list.iter().enumerate() {
                    match it
                        .get("dayOfWeek")
                        .and_then(Json::as_i64)
                        .filter(|d| day_ok(*d))
                    {
                        Some(d) => items.push((
                            d as i8,
                            flag(it, "enabled"),
                            ms(it, "startsOn"),
                            ms(it, "endsOn"),
                        )),
                        None => r.err(
                            &format!("{path}.items[{i}].dayOfWeek"),
                            "expected a day from 1 (Monday) to 7",
                        ),
                    }
                }
            }
            Some(Schedule::Custom { tz, items })
        }
        other => {
            r.err(
                &format!("{path}.type"),
                format!("{other:?} is not ANY_TIME, SPECIFIC_TIME or CUSTOM"),
            );
            None
        }
    }
}
