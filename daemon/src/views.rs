//! Live views built from committed events (never from the log directly):
//! the latest value per tag and each device's status. Missed broadcasts only
//! delay a view; the log remains the record.
//!
//! Invariant: a device's `values` holds one entry per tag, and `index` maps
//! each tag to its position. A device reports its tags in the same order
//! every poll, so an update first tries the slot after the previous one and
//! overwrites it in place: no allocation and one comparison per point in the
//! steady state.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use outpost_core::{Body, DeviceStatus, Point, Timestamp};
use outpost_sync::log::Committed;

#[derive(Debug, Default)]
pub struct Latest {
    pub devices: BTreeMap<String, DeviceView>,
}

#[derive(Debug, Default)]
pub struct DeviceView {
    pub status: Option<DeviceStatus>,
    /// Alarms raised and not cleared: name → (severity, raised at).
    pub alarms: BTreeMap<String, (outpost_core::AlarmSeverity, Timestamp)>,
    /// Latest point per tag, in first-seen order.
    pub values: Vec<(Point, Timestamp)>,
    /// Attributes: (scope: "client", "shared" or "server", key) → value.
    pub attributes: BTreeMap<(&'static str, String), outpost_core::Value>,
    index: HashMap<String, usize>,
    /// The slot after the last one updated.
    hint: usize,
}

impl DeviceView {
    fn update(&mut self, p: &Point, ts: Timestamp) {
        let slot = match self.values.get(self.hint) {
            Some((q, _)) if q.tag == p.tag => Some(self.hint),
            _ => self.index.get(&p.tag).copied(),
        };
        match slot {
            Some(i) => {
                if let Some((q, t)) = self.values.get_mut(i) {
                    q.value.clone_from(&p.value);
                    q.quality.clone_from(&p.quality);
                    *t = ts;
                }
                self.hint = i + 1;
            }
            None => {
                self.index.insert(p.tag.clone(), self.values.len());
                self.values.push((p.clone(), ts));
                self.hint = self.values.len();
            }
        }
    }

    /// The latest point of `tag`.
    #[cfg(test)]
    fn get(&self, tag: &str) -> Option<&(Point, Timestamp)> {
        self.index.get(tag).and_then(|&i| self.values.get(i))
    }
}

impl Latest {
    pub fn apply(&mut self, batch: &Committed) {
        for stored in batch.iter() {
            self.take(&stored.event);
        }
    }

    /// Starts from the log's current state (attributes and open alarms).
    pub fn seed(&mut self, current: &[outpost_core::Event]) {
        for ev in current {
            self.take(ev);
        }
    }

    fn take(&mut self, ev: &outpost_core::Event) {
        {
            match &ev.body {
                Body::Telemetry(points) => {
                    if let Some(view) = self.device(&ev.device) {
                        for p in points {
                            view.update(p, ev.ts);
                        }
                    }
                }
                Body::Attributes(points) | Body::ScopedAttributes(_, points) => {
                    let scope = match &ev.body {
                        Body::ScopedAttributes(s, _) => s.as_str(),
                        _ => "client",
                    };
                    if let Some(view) = self.device(&ev.device) {
                        for p in points.iter().filter(|p| p.quality.is_good()) {
                            view.attributes
                                .insert((scope, p.tag.clone()), p.value.clone());
                        }
                    }
                }
                Body::Status(s) => {
                    if let Some(view) = self.device(&ev.device) {
                        view.status = Some(s.status);
                    }
                }
                Body::Alarm(a) => {
                    if let Some(view) = self.device(&ev.device) {
                        match a.state {
                            outpost_core::AlarmState::Active => {
                                let since = Timestamp {
                                    unix_ms: a.start_ms,
                                    clock: ev.ts.clock,
                                };
                                view.alarms.insert(a.name.clone(), (a.severity, since));
                            }
                            outpost_core::AlarmState::Cleared => {
                                view.alarms.remove(&a.name);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn device(&mut self, name: &str) -> Option<&mut DeviceView> {
        if !self.devices.contains_key(name) {
            self.devices.insert(name.to_string(), DeviceView::default());
        }
        self.devices.get_mut(name)
    }

    /// One line per device, e.g. `boiler-room online: pressure=2.05 temperature=66.1`.
    pub fn summary(&self, units: &BTreeMap<(String, String), String>) -> Vec<String> {
        self.devices
            .iter()
            .map(|(name, view)| {
                let mut line = format!(
                    "{name} {}:",
                    view.status
                        .map_or("unknown".to_string(), |s| format!("{s:?}").to_lowercase())
                );
                for (p, _) in &view.values {
                    let tag = &p.tag;
                    let v = match &p.value {
                        outpost_core::Value::F64(f) => format!("{f:.2}"),
                        other => other.to_string(),
                    };
                    let unit = units
                        .get(&(name.clone(), tag.clone()))
                        .map_or("", String::as_str);
                    let _infallible = write!(line, " {tag}={v}{unit}");
                }
                line
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use outpost_core::{Event, Quality, Seq, Value};
    use outpost_sync::log::StoredEvent;

    use super::*;

    fn batch(events: Vec<Event>) -> Committed {
        Arc::new(
            events
                .into_iter()
                .enumerate()
                .map(|(i, event)| StoredEvent {
                    seq: Seq(i as u64 + 1),
                    event,
                })
                .collect(),
        )
    }

    fn tele(ms: i64, points: &[(&str, f64)]) -> Event {
        Event::new(
            "d".to_string(),
            Timestamp::synced(ms),
            Body::Telemetry(
                points
                    .iter()
                    .map(|(t, v)| Point::good(*t, Value::F64(*v)))
                    .collect(),
            ),
        )
    }

    #[test]
    fn keeps_one_entry_per_tag_whatever_the_order() {
        let mut l = Latest::default();
        l.apply(&batch(vec![
            tele(1, &[("a", 1.0), ("b", 2.0)]),
            tele(2, &[("a", 3.0), ("b", 4.0)]),
            // A subset, out of order, and a new tag.
            tele(3, &[("b", 5.0), ("c", 6.0), ("a", 7.0)]),
        ]));
        let d = &l.devices["d"];
        assert_eq!(d.values.len(), 3);
        let got: Vec<_> = d
            .values
            .iter()
            .map(|(p, ts)| (p.tag.as_str(), p.value.clone(), ts.unix_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Value::F64(7.0), 3),
                ("b", Value::F64(5.0), 3),
                ("c", Value::F64(6.0), 3)
            ]
        );
        assert_eq!(
            d.get("c").map(|(p, _)| p.value.clone()),
            Some(Value::F64(6.0))
        );
    }

    #[test]
    fn alarms_are_kept_until_cleared() {
        use outpost_core::{Alarm, AlarmSeverity, AlarmState};
        let alarm = |state| {
            Event::new(
                "d".to_string(),
                Timestamp::synced(5),
                Body::Alarm(Alarm {
                    state,
                    ..Alarm::raised("Overheat", AlarmSeverity::Critical, "", 5)
                }),
            )
        };
        let mut l = Latest::default();
        l.apply(&batch(vec![alarm(AlarmState::Active)]));
        assert_eq!(
            l.devices["d"].alarms.get("Overheat").map(|a| a.0),
            Some(AlarmSeverity::Critical)
        );
        l.apply(&batch(vec![alarm(AlarmState::Cleared)]));
        assert!(l.devices["d"].alarms.is_empty());
    }

    #[test]
    fn quality_is_updated_with_the_value() {
        let mut l = Latest::default();
        let mut bad = tele(2, &[("a", 1.0)]);
        if let Body::Telemetry(p) = &mut bad.body {
            p[0].quality = Quality::Stale;
        }
        l.apply(&batch(vec![tele(1, &[("a", 1.0)]), bad]));
        assert_eq!(l.devices["d"].values[0].0.quality, Quality::Stale);
    }
}
