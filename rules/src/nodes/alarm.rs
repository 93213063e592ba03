//! Alarms as ThingsBoard's create and clear alarm nodes keep them.
//!
//! Invariants:
//! - An alarm's identity is (originator, type); at most one is open (not
//!   cleared) per identity. Raising an open alarm updates it: its severity
//!   and details, `endTs`; its start, acknowledgement and propagation stay.
//! - Every change emits an alarm event with the whole record, so the log
//!   holds the alarm's history and its current state (restored at start
//!   and carried over a reload; see `Memory`).
//! - A details script sees the open alarm's details as
//!   `metadata.prevAlarmDetails` (a JSON string), as in ThingsBoard.

use outpost_core::{Alarm, AlarmSeverity, AlarmState, Propagation};
use serde_json::Value as Json;

use super::{optional_script, string, strings, substitute, ScriptNode};
use crate::engine::{alarm_key, Cx, Node};
use crate::msg::{self, Msg};
use crate::script::ScriptHost;

/// The severity of a create node: fixed, or a `${metadata}` / `$[data]`
/// pattern resolved per message (ThingsBoard's dynamic severity).
#[derive(Debug)]
enum Severity {
    Fixed(AlarmSeverity),
    Pattern(String),
}

#[derive(Debug)]
pub(super) struct CreateAlarm {
    alarm_type: String,
    severity: Severity,
    details: Option<ScriptNode>,
    propagation: Propagation,
    /// Take type, severity, details and propagation from the message data
    /// (an alarm JSON), as `useMessageAlarmData`.
    from_message: bool,
    /// With `from_message`: the new details replace the open alarm's
    /// instead of being merged into them.
    overwrite: bool,
}

fn flag(cfg: &Json, key: &str) -> bool {
    cfg.get(key).and_then(Json::as_bool).unwrap_or(false)
}

impl CreateAlarm {
    pub(super) fn new(cfg: &Json, scripts: &std::sync::Arc<ScriptHost>) -> Result<Self, String> {
        let from_message = flag(cfg, "useMessageAlarmData");
        let severity_text = cfg.get("severity").and_then(Json::as_str);
        let severity = match severity_text {
            Some(s) if s.contains("${") || s.contains("$[") => Severity::Pattern(s.to_string()),
            Some(s) => Severity::Fixed(msg::parse_severity(s).ok_or(
                "severity: expected CRITICAL, MAJOR, MINOR, WARNING, INDETERMINATE or a ${pattern}",
            )?),
            None if from_message => Severity::Fixed(AlarmSeverity::Indeterminate),
            None => return Err("severity: required string".into()),
        };
        let alarm_type = match cfg.get("alarmType").and_then(Json::as_str) {
            Some(t) => t.to_string(),
            None if from_message => String::new(),
            None => string(cfg, "alarmType")?,
        };
        Ok(Self {
            alarm_type,
            severity,
            details: optional_script(cfg, "alarmDetailsBuildJs", scripts)?,
            propagation: Propagation {
                related: flag(cfg, "propagate"),
                to_owner: flag(cfg, "propagateToOwner"),
                to_tenant: flag(cfg, "propagateToTenant"),
                relation_types: strings(cfg, "relationTypes")?,
            },
            from_message,
            overwrite: flag(cfg, "overwriteAlarmDetails"),
        })
    }
}

/// Runs the details script (or takes the message data), with the open
/// alarm's details as `metadata.prevAlarmDetails`.
fn details(
    script: &Option<ScriptNode>,
    m: &Msg,
    open: Option<&Alarm>,
    cx: &mut Cx<'_>,
) -> Result<Json, String> {
    match script {
        Some(s) => {
            let mut with_prev;
            let input = match open {
                Some(a) => {
                    with_prev = m.clone();
                    with_prev
                        .metadata
                        .insert("prevAlarmDetails".into(), a.details.clone());
                    &with_prev
                }
                None => m,
            };
            s.call(input, cx).map_err(|e| e.to_string())
        }
        None => Ok(m.data.clone()),
    }
}

/// How a raise went.
pub(super) enum Raised {
    Created(Alarm),
    Updated {
        alarm: Alarm,
        severity_changed: bool,
    },
}

/// Raises (creates or updates) the alarm `alarm_type` of `m`'s originator,
/// emitting its event.
pub(super) fn raise(
    cx: &mut Cx<'_>,
    m: &Msg,
    alarm_type: &str,
    severity: AlarmSeverity,
    details: &Json,
    propagation: &Propagation,
) -> Raised {
    let key = alarm_key(&m.originator, alarm_type);
    let now = m.time().unix_ms;
    let out = match cx.alarm(&key).cloned() {
        Some(mut a) => {
            let severity_changed = a.severity != severity;
            a.severity = severity;
            a.details = details.to_string();
            a.end_ms = now.max(a.start_ms);
            Raised::Updated {
                alarm: a,
                severity_changed,
            }
        }
        None => {
            let mut a = Alarm::raised(alarm_type, severity, details.to_string(), now);
            a.propagation = propagation.clone();
            Raised::Created(a)
        }
    };
    let a = match &out {
        Raised::Created(a) | Raised::Updated { alarm: a, .. } => a,
    };
    cx.set_alarm(key, Some(a.clone()));
    cx.emit(msg::alarm_event(m, a));
    out
}

/// Clears the open alarm `alarm_type` of `m`'s originator, emitting its
/// event; `None` when none is open. `details` sees the open alarm.
pub(super) fn clear(
    cx: &mut Cx<'_>,
    m: &Msg,
    alarm_type: &str,
    details: impl FnOnce(&Alarm, &mut Cx<'_>) -> Result<Json, String>,
) -> Option<Result<Alarm, String>> {
    let key = alarm_key(&m.originator, alarm_type);
    let mut a = cx.alarm(&key)?.clone();
    match details(&a, cx) {
        Ok(d) => a.details = d.to_string(),
        Err(e) => return Some(Err(e)),
    }
    a.state = AlarmState::Cleared;
    a.clear_ms = Some(m.time().unix_ms);
    cx.set_alarm(key, None);
    cx.emit(msg::alarm_event(m, &a));
    Some(Ok(a))
}

/// The message an alarm node sends on: the alarm as data, a flag in the
/// metadata.
pub(super) fn alarm_msg(m: &Msg, a: &Alarm, flags: &[&str]) -> Msg {
    let mut out = m.clone();
    out.msg_type = msg::ALARM.to_string();
    out.data = msg::alarm_json(&m.originator, a);
    for f in flags {
        out.metadata.insert((*f).to_string(), "true".to_string());
    }
    out
}

impl Node for CreateAlarm {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        let mut alarm_type = substitute(&self.alarm_type, &m);
        let mut propagation = self.propagation.clone();
        let mut severity = match &self.severity {
            Severity::Fixed(s) => Some(*s),
            Severity::Pattern(p) => msg::parse_severity(&substitute(p, &m)),
        };
        let open_key;
        let details = if self.from_message {
            // The message is an alarm: its fields override the node's.
            let d = &m.data;
            if let Some(t) = d.get("type").and_then(Json::as_str) {
                alarm_type = t.to_string();
            }
            if let Some(s) = d.get("severity").and_then(Json::as_str) {
                severity = msg::parse_severity(s);
            }
            for (key, slot) in [
                ("propagate", &mut propagation.related),
                ("propagateToOwner", &mut propagation.to_owner),
                ("propagateToTenant", &mut propagation.to_tenant),
            ] {
                if let Some(b) = d.get(key).and_then(Json::as_bool) {
                    *slot = b;
                }
            }
            open_key = alarm_key(&m.originator, &alarm_type);
            let new = d.get("details").cloned().unwrap_or(Json::Null);
            match (cx.alarm(&open_key), self.overwrite) {
                (Some(open), false) => {
                    // Merged into the open alarm's details.
                    let mut merged = serde_json::from_str::<Json>(&open.details)
                        .ok()
                        .filter(Json::is_object)
                        .unwrap_or_else(|| Json::Object(Default::default()));
                    if let (Json::Object(into), Json::Object(from)) = (&mut merged, new) {
                        into.extend(from);
                    }
                    merged
                }
                _ => new,
            }
        } else {
            open_key = alarm_key(&m.originator, &alarm_type);
            let open = cx.alarm(&open_key).cloned();
            match details(&self.details, &m, open.as_ref(), cx) {
                Ok(d) => d,
                Err(e) => return cx.fail(m, e),
            }
        };
        if alarm_type.is_empty() {
            return cx.fail(m, "the alarm has no type".to_string());
        }
        let Some(severity) = severity else {
            return cx.fail(
                m,
                "severity: the message gives none of CRITICAL, MAJOR, MINOR, WARNING, INDETERMINATE".into(),
            );
        };
        match raise(cx, &m, &alarm_type, severity, &details, &propagation) {
            Raised::Created(a) => cx.tell("Created", alarm_msg(&m, &a, &["isNewAlarm"])),
            Raised::Updated {
                alarm,
                severity_changed,
            } => {
                let flags: &[&str] = if severity_changed {
                    &["isExistingAlarm", "isSeverityUpdated"]
                } else {
                    &["isExistingAlarm"]
                };
                cx.tell("Updated", alarm_msg(&m, &alarm, flags));
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct ClearAlarm {
    alarm_type: String,
    details: Option<ScriptNode>,
}

impl ClearAlarm {
    pub(super) fn new(cfg: &Json, scripts: &std::sync::Arc<ScriptHost>) -> Result<Self, String> {
        Ok(Self {
            alarm_type: string(cfg, "alarmType")?,
            details: optional_script(cfg, "alarmDetailsBuildJs", scripts)?,
        })
    }
}

impl Node for ClearAlarm {
    fn on_msg(&mut self, m: Msg, cx: &mut Cx<'_>) {
        // The type may be a pattern, as in ThingsBoard.
        let alarm_type = substitute(&self.alarm_type, &m);
        let script = &self.details;
        let cleared = clear(cx, &m, &alarm_type, |open, cx| match script {
            Some(_) => details(script, &m, Some(open), cx),
            // Without a script the details stay the open alarm's.
            None => Ok(serde_json::from_str(&open.details)
                .unwrap_or_else(|_| Json::String(open.details.clone()))),
        });
        match cleared {
            None => cx.tell("False", m),
            Some(Err(e)) => cx.fail(m, e),
            Some(Ok(a)) => cx.tell("Cleared", alarm_msg(&m, &a, &["isClearedAlarm"])),
        }
    }
}
