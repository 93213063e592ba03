//! Live views built from committed events (never from the log directly):
//! the latest value per tag and each device's status. Missed broadcasts only
//! delay a view; the log remains the record.

use std::collections::BTreeMap;
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
    pub values: BTreeMap<String, (Point, Timestamp)>,
}

impl Latest {
    pub fn apply(&mut self, batch: &Committed) {
        for stored in batch.iter() {
            let ev = &stored.event;
            match &ev.body {
                Body::Telemetry(points) | Body::Attributes(points) => {
                    let view = self.devices.entry(ev.device.clone()).or_default();
                    for p in points {
                        view.values.insert(p.tag.clone(), (p.clone(), ev.ts));
                    }
                }
                Body::Status(s) => {
                    self.devices.entry(ev.device.clone()).or_default().status = Some(s.status);
                }
                _ => {}
            }
        }
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
                for (tag, (p, _)) in &view.values {
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
