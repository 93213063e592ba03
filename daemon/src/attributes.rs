//! Device attributes from the configuration and from the drivers.
//!
//! - `attribute_tags`: the readings of these tags are taken out of the
//!   device's telemetry and sent as client-side attributes, when they
//!   change (or first appear after a start).
//! - `[device.attributes]` and `[device.server_attributes]`: static
//!   attributes, recorded at start and after each applied configuration
//!   when they differ from what the log holds.
//!
//! Invariant: nothing a driver read is dropped: a reading of an attribute
//! tag that did not change is simply not repeated (the log holds its value).

use std::collections::{BTreeMap, HashMap, HashSet};

use outpost_config::{AttributeValue, Config};
use outpost_core::{AttributeScope, Body, Event, Point, Timestamp, Value};

/// Splits attribute tags out of telemetry.
#[derive(Debug, Default)]
pub struct AttributeTags {
    /// device → its attribute tags.
    tags: HashMap<String, HashSet<String>>,
    /// (device, tag) → the last value sent.
    last: HashMap<(String, String), Value>,
}

impl AttributeTags {
    pub fn from_config(cfg: &Config) -> Self {
        let tags = cfg
            .devices
            .iter()
            .filter(|d| !d.attribute_tags.is_empty())
            .map(|d| (d.name.clone(), d.attribute_tags.iter().cloned().collect()))
            .collect();
        Self {
            tags,
            last: HashMap::new(),
        }
    }

    /// Takes the tags of a new configuration; the last values are kept.
    pub fn take_over(&mut self, new: AttributeTags) {
        self.tags = new.tags;
    }

    /// The event as telemetry without its attribute tags, then (if any
    /// changed) an attribute event of the changed ones.
    pub fn split(&mut self, ev: Event, out: &mut Vec<Event>) {
        let Some(tags) = self.tags.get(&ev.device) else {
            out.push(ev);
            return;
        };
        let Body::Telemetry(points) = ev.body else {
            out.push(ev);
            return;
        };
        let (attrs, telemetry): (Vec<Point>, Vec<Point>) =
            points.into_iter().partition(|p| tags.contains(&p.tag));
        let changed: Vec<Point> = attrs
            .into_iter()
            .filter(|p| p.quality.is_good())
            .filter(|p| {
                let key = (ev.device.clone(), p.tag.clone());
                let same = self.last.get(&key) == Some(&p.value);
                if !same {
                    self.last.insert(key, p.value.clone());
                }
                !same
            })
            .collect();
        if !telemetry.is_empty() {
            out.push(Event {
                device: ev.device.clone(),
                ts: ev.ts,
                body: Body::Telemetry(telemetry),
                route: ev.route.clone(),
            });
        }
        if !changed.is_empty() {
            out.push(Event {
                device: ev.device,
                ts: ev.ts,
                body: Body::Attributes(changed),
                route: ev.route,
            });
        }
    }
}

fn value(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Integer(i) => Value::I64(*i),
        AttributeValue::Float(f) => Value::F64(*f),
        AttributeValue::Text(s) => Value::Str(s.clone()),
    }
}

/// (device, scope, key) → value, as the log's current state holds them
/// (`None` scope: client-side).
pub type Known = BTreeMap<(String, Option<AttributeScope>, String), Value>;

/// What the log's current state says of attributes.
pub fn known(current: &[Event]) -> Known {
    let mut out = Known::new();
    for ev in current {
        let (scope, points) = match &ev.body {
            Body::Attributes(p) => (None, p),
            Body::ScopedAttributes(s, p) => (Some(*s), p),
            _ => continue,
        };
        for p in points {
            out.insert((ev.device.clone(), scope, p.tag.clone()), p.value.clone());
        }
    }
    out
}

/// Events for the configured static attributes that differ from `known`
/// (which they then update).
pub fn configured(cfg: &Config, known: &mut Known, now: Timestamp) -> Vec<Event> {
    let mut out = Vec::new();
    for d in cfg.devices.iter().filter(|d| d.enabled) {
        for (scope, map) in [
            (None, &d.attributes),
            (Some(AttributeScope::Server), &d.server_attributes),
        ] {
            let points: Vec<Point> = map
                .iter()
                .filter_map(|(k, v)| {
                    let v = value(v);
                    let key = (d.name.clone(), scope, k.clone());
                    (known.get(&key) != Some(&v)).then(|| {
                        known.insert(key, v.clone());
                        Point::good(k.clone(), v)
                    })
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let body = match scope {
                None => Body::Attributes(points),
                Some(s) => Body::ScopedAttributes(s, points),
            };
            let mut ev = Event::new(d.name.clone(), now, body);
            if scope.is_some() {
                ev.route = outpost_core::Route::Local;
            }
            out.push(ev);
        }
    }
    out
}

/// What the rules task needs of each device's configuration.
#[derive(Debug, Default)]
pub struct DeviceSettings {
    pub types: BTreeMap<String, String>,
    pub attribute_tags: AttributeTags,
}

impl DeviceSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            types: device_types(cfg),
            attribute_tags: AttributeTags::from_config(cfg),
        }
    }
}

/// What a ThingsBoard session needs of the devices: their types, and the
/// shared keys to ask for (those the chains read and those that write a
/// tag).
pub fn tb_devices(cfg: &Config, chain_keys: &[String]) -> outpost_sync::uplink::TbDevices {
    outpost_sync::uplink::TbDevices {
        types: device_types(cfg),
        shared_keys: cfg
            .devices
            .iter()
            .map(|d| {
                let mut keys: Vec<String> = chain_keys
                    .iter()
                    .chain(d.attribute_updates.keys())
                    .cloned()
                    .collect();
                keys.sort();
                keys.dedup();
                (d.name.clone(), keys)
            })
            .collect(),
    }
}

/// Per device: shared key → the tag it writes.
pub type Updates = BTreeMap<String, BTreeMap<String, String>>;

pub fn updates(cfg: &Config) -> Updates {
    cfg.devices
        .iter()
        .filter(|d| !d.attribute_updates.is_empty())
        .map(|d| (d.name.clone(), d.attribute_updates.clone()))
        .collect()
}

/// Records shared attributes from ThingsBoard and performs the writes
/// they map to, until the uplinks' senders are gone.
pub async fn shared_from_thingsboard(
    mut rx: tokio::sync::mpsc::Receiver<(String, Vec<Point>)>,
    updates: std::sync::Arc<std::sync::RwLock<Updates>>,
    router: outpost_drivers::command::Router,
    clock: std::sync::Arc<dyn outpost_core::Clock>,
    out: tokio::sync::mpsc::Sender<Event>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        // Ends with the drivers: its sender into the pipeline must go with
        // theirs, or the pipeline would never drain at shutdown.
        let next = tokio::select! {
            () = stop.cancelled() => return,
            n = rx.recv() => n,
        };
        let Some((device, points)) = next else { return };
        let writes: Vec<(String, Value)> = match updates.read() {
            Ok(u) => u
                .get(&device)
                .map(|m| {
                    points
                        .iter()
                        .filter_map(|p| m.get(&p.tag).map(|tag| (tag.clone(), p.value.clone())))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        tracing::info!(device = %device, keys = points.len(), writes = writes.len(), "Shared attributes from ThingsBoard.");
        let mut ev = Event::new(
            device.clone(),
            clock.now(),
            Body::ScopedAttributes(AttributeScope::Shared, points),
        );
        ev.route = outpost_core::Route::Local;
        if out.send(ev).await.is_err() {
            return;
        }
        for (tag, value) in writes {
            match router
                .write(&device, &tag, value.clone(), "thingsboard-shared-attribute")
                .await
            {
                Ok(()) => {
                    tracing::info!(device = %device, tag = %tag, value = %value, "Shared attribute written to the device.")
                }
                Err(e) => {
                    tracing::warn!(device = %device, tag = %tag, error = %e, "A shared attribute could not be written to the device.")
                }
            }
        }
    }
}

/// Each configured device's type.
pub fn device_types(cfg: &Config) -> BTreeMap<String, String> {
    cfg.devices
        .iter()
        .map(|d| (d.name.clone(), d.type_name().to_string()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let src = format!(
            "[gateway]\nid = \"gw\"\n[[device]]\nname = \"m\"\ntype = \"meter\"\n{extra}\n[device.sim]\n\
             [[device.sim.tag]]\nname = \"kw\"\ncounter = {{ step = 1 }}\n\
             [[device.sim.tag]]\nname = \"fw\"\ncounter = {{ step = 0 }}\n"
        );
        outpost_config::parse(&src, "t.toml").unwrap()
    }

    fn reading(fw: i64, kw: i64) -> Event {
        Event::new(
            "m",
            Timestamp::synced(1),
            Body::Telemetry(vec![
                Point::good("kw", Value::I64(kw)),
                Point::good("fw", Value::I64(fw)),
            ]),
        )
    }

    #[test]
    fn attribute_tags_leave_telemetry_and_are_sent_on_change() {
        let c = cfg("attribute_tags = [\"fw\"]");
        let mut a = AttributeTags::from_config(&c);
        let mut out = Vec::new();
        a.split(reading(7, 1), &mut out);
        a.split(reading(7, 2), &mut out);
        a.split(reading(8, 3), &mut out);
        let kinds: Vec<String> = out
            .iter()
            .map(|e| match &e.body {
                Body::Telemetry(p) => format!("t:{}", p[0].tag),
                Body::Attributes(p) => format!("a:{}={}", p[0].tag, p[0].value),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["t:kw", "a:fw=7", "t:kw", "t:kw", "a:fw=8"]);
        assert_eq!(device_types(&c)["m"], "meter");
    }

    #[test]
    fn configured_attributes_are_recorded_only_when_they_differ() {
        let c = cfg(
            "[device.attributes]\nlocation = \"roof\"\n[device.server_attributes]\nmax_kw = 40.5\n",
        );
        let mut known = Known::new();
        let first = configured(&c, &mut known, Timestamp::synced(1));
        assert_eq!(first.len(), 2);
        assert!(
            matches!(&first[1].body, Body::ScopedAttributes(AttributeScope::Server, p) if p[0].value == Value::F64(40.5))
        );
        assert_eq!(first[1].route, outpost_core::Route::Local);
        // The log's state now holds them: a restart records nothing.
        let mut again = super::known(&first);
        assert!(configured(&c, &mut again, Timestamp::synced(2)).is_empty());
        let changed = cfg("[device.attributes]\nlocation = \"cellar\"\n[device.server_attributes]\nmax_kw = 40.5\n");
        let next = configured(&changed, &mut again, Timestamp::synced(3));
        assert_eq!(next.len(), 1);
        assert!(
            matches!(&next[0].body, Body::Attributes(p) if p[0].value == Value::Str("cellar".into()))
        );
    }
}
