//! The parts a configuration runs, each with a stop of its own: drivers (one
//! per driver spec: a device, or a shared serial bus with its devices), the
//! rule chains, and the uplinks. A new configuration is applied by diff.
//!
//! Invariants:
//! - A part is restarted only when its fingerprint (everything it is built
//!   from) changed; an identical configuration changes nothing and tears
//!   nothing down.
//! - Sections that only a restart can change (`[gateway]`, `[web]`,
//!   `[remote]`) are never half-applied: a plan that needs them is refused.
//! - A restarted uplink keeps its status (the pages and the summary keep
//!   showing it) and its cursor in the log.
//! - Every planned problem is found before anything is stopped: chains are
//!   built and drivers planned first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_config::{Config, Uplink};
use outpost_core::liveness::Liveness;
use outpost_core::{Clock, Event};
use outpost_drivers::command::Router;
use outpost_drivers::metrics::Metrics;
use outpost_drivers::{DriverContext, DriverSpec};
use outpost_sync::uplink::{Protocol, RpcHandler, SharedStatus, UplinkSpec};
use outpost_sync::EventLog;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::supervisor;

/// What starting parts needs, shared by all of them.
pub struct PartsContext {
    pub driver_tx: mpsc::Sender<Event>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub router: Router,
    pub log: EventLog,
    /// New chains go to the rules task here.
    pub reload: mpsc::Sender<Box<dyn outpost_rules::Stage>>,
    /// Device types and attribute tags, for the rules task.
    pub settings: mpsc::Sender<crate::attributes::DeviceSettings>,
    /// The attributes the log holds, so that an apply records only the
    /// configured ones that changed.
    pub known_attributes: crate::attributes::Known,
    /// ThingsBoard sessions: device types and shared keys (follow applies).
    pub tb_devices: Arc<std::sync::RwLock<outpost_sync::uplink::TbDevices>>,
    /// Where ThingsBoard sessions hand shared attributes.
    pub tb_shared: mpsc::Sender<(String, Vec<outpost_core::Point>)>,
    /// The remote configuration over a ThingsBoard session: (uplink, link).
    pub tb_control: Option<(String, outpost_sync::uplink::TbControl)>,
    /// Shared keys that write tags (follow applies).
    pub attribute_updates: Arc<std::sync::RwLock<crate::attributes::Updates>>,
    /// The shared keys the running chains read.
    pub chain_shared_keys: Vec<String>,
    pub drivers_stop: CancellationToken,
    pub uplinks_stop: CancellationToken,
    /// Where relative chain files are found.
    pub base: PathBuf,
    /// Every driver and uplink registers its stage here (the watchdog's view).
    pub liveness: Liveness,
}

struct RunningDriver {
    devices: Vec<String>,
    fingerprint: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningUplink {
    fingerprint: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running parts.
pub struct Parts {
    cx: PartsContext,
    drivers: BTreeMap<String, RunningDriver>,
    uplinks: BTreeMap<String, RunningUplink>,
    /// Every uplink's status, kept across restarts of its worker.
    statuses: BTreeMap<String, SharedStatus>,
    rules_fp: String,
    gateway: String,
}

/// What applying a configuration would do; built (and checked) before
/// anything stops.
pub struct Plan {
    stop_drivers: Vec<String>,
    start_drivers: Vec<(String, DriverSpec)>,
    stop_uplinks: Vec<String>,
    start_uplinks: Vec<Uplink>,
    rules: Option<(String, Box<dyn outpost_rules::Stage>)>,
    cursors: Vec<String>,
    /// The new configuration's devices (types, attributes).
    devices: Config,
}

/// What an applied plan changed, for reports and the health check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Devices whose drivers were (re)started.
    pub devices: Vec<String>,
    /// Devices whose drivers were stopped for good.
    pub removed_devices: Vec<String>,
    /// Uplinks (re)connected.
    pub uplinks: Vec<String>,
    pub removed_uplinks: Vec<String>,
    pub rules: bool,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        self == &Changed::default()
    }

    /// One line: what was restarted.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "nothing changed".into();
        }
        let mut parts = Vec::new();
        let list = |v: &[String]| v.join(", ");
        if !self.devices.is_empty() {
            parts.push(format!("drivers restarted: {}", list(&self.devices)));
        }
        if !self.removed_devices.is_empty() {
            parts.push(format!("drivers stopped: {}", list(&self.removed_devices)));
        }
        if !self.uplinks.is_empty() {
            parts.push(format!("uplinks reconnected: {}", list(&self.uplinks)));
        }
        if !self.removed_uplinks.is_empty() {
            parts.push(format!("uplinks stopped: {}", list(&self.removed_uplinks)));
        }
        if self.rules {
            parts.push("rule chains reloaded".into());
        }
        parts.join("; ")
    }
}

impl Plan {
    /// What applying it changes.
    pub fn changed(&self, parts: &Parts) -> Changed {
        let mut c = Changed::default();
        let started: Vec<&str> = self
            .start_drivers
            .iter()
            .flat_map(|(_, s)| s.devices.iter().map(String::as_str))
            .collect();
        for (_, s) in &self.start_drivers {
            c.devices.extend(s.devices.iter().cloned());
        }
        for name in &self.stop_drivers {
            if let Some(d) = parts.drivers.get(name) {
                c.removed_devices.extend(
                    d.devices
                        .iter()
                        .filter(|d| !started.contains(&d.as_str()))
                        .cloned(),
                );
            }
        }
        c.uplinks = self.start_uplinks.iter().map(|u| u.name.clone()).collect();
        c.removed_uplinks = self
            .stop_uplinks
            .iter()
            .filter(|n| !c.uplinks.contains(n))
            .cloned()
            .collect();
        c.rules = self.rules.is_some();
        c
    }
}

/// The fingerprint of the rule chains: their configuration and the chain
/// files' contents.
fn rules_fingerprint(cfg: &Config, base: &Path) -> String {
    let mut fp = serde_json::to_string(&cfg.rules).unwrap_or_default();
    // The MQTT node publishes through an uplink it finds by name or address.
    for u in &cfg.uplinks {
        if let Some(m) = &u.mqtt {
            fp.push_str(&format!("\n{} {}", u.name, m.url));
        }
    }
    for f in cfg.rules.chains.iter().chain(&cfg.rules.device_profiles) {
        let path = if f.is_absolute() {
            f.clone()
        } else {
            base.join(f)
        };
        fp.push('\n');
        fp.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    fp
}

fn uplink_fingerprint(gateway: &str, u: &Uplink) -> String {
    format!(
        "{gateway}\n{}",
        serde_json::to_string(u).unwrap_or_default()
    )
}

/// Part of every plan error about a section only a restart changes (the web
/// page restarts outpostd for exactly those).
pub const RESTART_ONLY: &str = "it changes only with a restart";

/// The sections only a restart changes, where they differ.
pub fn restart_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.gateway != new.gateway {
        out.push("[gateway]");
    }
    if old.web != new.web {
        out.push("[web]");
    }
    if old.remote != new.remote {
        out.push("[remote]");
    }
    out
}

/// Gives `spec` the last count of each of its counters in the log.
async fn restore_counters(log: &EventLog, spec: &mut DriverSpec) {
    let tags = spec.counters();
    if tags.is_empty() {
        return;
    }
    let mut counts = BTreeMap::new();
    for d in spec.devices.clone() {
        match log.last_values(&d, tags.clone()).await {
            Ok(values) => {
                for (tag, v) in values {
                    let n = match v {
                        outpost_core::Value::U64(n) => n,
                        outpost_core::Value::I64(n) => u64::try_from(n).unwrap_or(0),
                        _ => 0,
                    };
                    tracing::info!(device = %d, %tag, count = n, "Counter restored from the log.");
                    counts.insert(tag, n);
                }
            }
            Err(e) => {
                tracing::warn!(device = %d, error = %e, "Counters cannot be restored from the log; they start at 0.")
            }
        }
    }
    spec.restore(counts);
}

impl Parts {
    /// Starts every part of `cfg`. `specs` are the planned drivers with
    /// their fingerprints (taken before counters are restored).
    pub async fn start(cx: PartsContext, cfg: &Config, specs: Vec<(String, DriverSpec)>) -> Parts {
        let mut parts = Parts {
            rules_fp: rules_fingerprint(cfg, &cx.base),
            cx,
            drivers: BTreeMap::new(),
            uplinks: BTreeMap::new(),
            statuses: BTreeMap::new(),
            gateway: cfg.gateway.id.clone(),
        };
        for (fp, spec) in specs {
            parts.start_driver(fp, spec).await;
        }
        for u in cfg.uplinks.iter().filter(|u| u.enabled) {
            parts.start_uplink(u);
        }
        parts
    }

    /// Every uplink's status, by name, in configuration order at start.
    pub fn uplink_statuses(&self, cfg: &Config) -> Vec<(String, SharedStatus)> {
        cfg.uplinks
            .iter()
            .filter_map(|u| Some((u.name.clone(), self.statuses.get(&u.name)?.clone())))
            .collect()
    }

    pub fn status_of(&self, uplink: &str) -> Option<SharedStatus> {
        self.statuses.get(uplink).cloned()
    }

    /// Starts a driver; its counters (GPIO pulses) continue from their
    /// last values in the log, at start and after a restart for a new
    /// configuration alike.
    async fn start_driver(&mut self, fingerprint: String, mut spec: DriverSpec) {
        restore_counters(&self.cx.log, &mut spec).await;
        tracing::info!(
            driver = %spec.name,
            devices = ?spec.devices,
            kind = %spec.describe(),
            "Starting driver."
        );
        let (tx, inbox) = outpost_drivers::command::inbox();
        let mut router = self.cx.router.clone();
        for d in &spec.devices {
            router.add(d, tx.clone());
        }
        let stop = self.cx.drivers_stop.child_token();
        let cx = DriverContext {
            out: self.cx.driver_tx.clone(),
            stop: stop.clone(),
            clock: self.cx.clock.clone(),
            commands: inbox,
            metrics: self.cx.metrics.clone(),
        };
        let name = spec.name.clone();
        let devices = spec.devices.clone();
        let stage = self.cx.liveness.stage(format!("driver {name}"));
        let task = outpost_core::task::spawn(supervisor::supervise(spec, cx, stage));
        self.drivers.insert(
            name,
            RunningDriver {
                devices,
                fingerprint,
                stop,
                task,
            },
        );
    }

    fn start_uplink(&mut self, up: &Uplink) {
        let protocol = match (&up.mqtt, &up.nats) {
            (Some(m), _) => Protocol::Mqtt(m.clone()),
            (None, Some(n)) => Protocol::Nats(n.clone()),
            (None, None) => return,
        };
        let r = self.cx.router.clone();
        let rpc: RpcHandler = Arc::new(move |device, tag, value| {
            let r = r.clone();
            Box::pin(async move {
                r.write(&device, &tag, value, "thingsboard-rpc")
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        let spec = UplinkSpec {
            name: up.name.clone(),
            gateway: self.gateway.clone(),
            protocol,
            read_batch: 256,
            live_lane: up.live_lane,
            rpc: Some(rpc),
            thingsboard: up
                .mqtt
                .as_ref()
                .filter(|m| m.mode == outpost_config::MqttMode::Thingsboard)
                .map(|_| outpost_sync::uplink::TbLink {
                    devices: self.cx.tb_devices.clone(),
                    shared: self.cx.tb_shared.clone(),
                    control: self
                        .cx
                        .tb_control
                        .as_ref()
                        .filter(|(name, _)| *name == up.name)
                        .map(|(_, c)| c.clone()),
                }),
        };
        let status = self.statuses.entry(up.name.clone()).or_default().clone();
        tracing::info!(uplink = %up.name, "Starting uplink.");
        let stop = self.cx.uplinks_stop.child_token();
        let stage = self.cx.liveness.stage(format!("uplink {}", up.name));
        let task = outpost_core::task::spawn(stage.watch(outpost_sync::uplink::run(
            spec,
            self.cx.log.clone(),
            stop.clone(),
            status,
        )));
        self.uplinks.insert(
            up.name.clone(),
            RunningUplink {
                fingerprint: uplink_fingerprint(&self.gateway, up),
                stop,
                task,
            },
        );
    }

    /// Plans the move to `new`: every problem (chains that do not load,
    /// drivers that cannot be planned, sections that need a restart) is
    /// found here, before anything stops.
    ///
    /// # Errors
    /// Every problem, one line each.
    pub fn plan(&self, old: &Config, new: &Config) -> Result<Plan, Vec<String>> {
        let mut errors: Vec<String> = restart_sections(old, new)
            .into_iter()
            .map(|s| {
                format!("{s} differs from the running configuration; {RESTART_ONLY} (edit the file and restart outpostd)")
            })
            .collect();
        let specs = match outpost_drivers::specs(new) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e.to_string());
                Vec::new()
            }
        };
        let fp = rules_fingerprint(new, &self.cx.base);
        let rules = if fp == self.rules_fp {
            None
        } else {
            match outpost_rules::build(new, &self.cx.base) {
                Ok(stage) => Some((fp, stage)),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut plan = Plan {
            stop_drivers: Vec::new(),
            start_drivers: Vec::new(),
            stop_uplinks: Vec::new(),
            start_uplinks: Vec::new(),
            rules,
            devices: new.clone(),
            cursors: new
                .uplinks
                .iter()
                .filter(|u| u.enabled)
                .map(|u| u.name.clone())
                .collect(),
        };
        let mut wanted = std::collections::BTreeSet::new();
        for spec in specs {
            let fp = spec.fingerprint();
            wanted.insert(spec.name.clone());
            match self.drivers.get(&spec.name) {
                Some(d) if d.fingerprint == fp => {}
                Some(_) => {
                    plan.stop_drivers.push(spec.name.clone());
                    plan.start_drivers.push((fp, spec));
                }
                None => plan.start_drivers.push((fp, spec)),
            }
        }
        plan.stop_drivers.extend(
            self.drivers
                .keys()
                .filter(|k| !wanted.contains(*k))
                .cloned(),
        );
        let mut wanted_up = std::collections::BTreeSet::new();
        for u in new.uplinks.iter().filter(|u| u.enabled) {
            wanted_up.insert(u.name.clone());
            let fp = uplink_fingerprint(&new.gateway.id, u);
            match self.uplinks.get(&u.name) {
                Some(r) if r.fingerprint == fp => {}
                Some(_) => {
                    plan.stop_uplinks.push(u.name.clone());
                    plan.start_uplinks.push(u.clone());
                }
                None => plan.start_uplinks.push(u.clone()),
            }
        }
        plan.stop_uplinks.extend(
            self.uplinks
                .keys()
                .filter(|k| !wanted_up.contains(*k))
                .cloned(),
        );
        Ok(plan)
    }

    /// Carries out `plan`: stops what changed or went, starts what changed
    /// or came, hands new chains to the rules task.
    pub async fn apply(&mut self, plan: Plan) -> Changed {
        let changed = plan.changed(self);
        for name in &plan.stop_drivers {
            if let Some(d) = self.drivers.remove(name) {
                d.stop.cancel();
                let _joined = d.task.await;
                for dev in &d.devices {
                    self.cx.router.remove(dev);
                }
                tracing::info!(driver = %name, "Driver stopped for the new configuration.");
            }
        }
        for (fp, spec) in plan.start_drivers {
            self.start_driver(fp, spec).await;
        }
        if let Some((fp, stage)) = plan.rules {
            let keys = stage.shared_keys();
            if self.cx.reload.send(stage).await.is_ok() {
                self.rules_fp = fp;
                self.cx.chain_shared_keys = keys;
            }
        }
        if let Ok(mut d) = self.cx.tb_devices.write() {
            *d = crate::attributes::tb_devices(&plan.devices, &self.cx.chain_shared_keys);
        }
        if let Ok(mut u) = self.cx.attribute_updates.write() {
            *u = crate::attributes::updates(&plan.devices);
        }
        let settings = crate::attributes::DeviceSettings::from_config(&plan.devices);
        if self.cx.settings.send(settings).await.is_err() {
            tracing::warn!("The rules task has stopped; device types are not updated.");
        }
        let now = self.cx.clock.now();
        for ev in crate::attributes::configured(&plan.devices, &mut self.cx.known_attributes, now) {
            if self.cx.driver_tx.send(ev).await.is_err() {
                tracing::warn!("The pipeline has stopped; configured attributes are not recorded.");
                break;
            }
        }
        for name in &plan.stop_uplinks {
            if let Some(u) = self.uplinks.remove(name) {
                u.stop.cancel();
                let _joined = u.task.await;
                tracing::info!(uplink = %name, "Uplink stopped for the new configuration.");
            }
        }
        if !plan.stop_uplinks.is_empty() || !plan.start_uplinks.is_empty() {
            if let Err(e) = self.cx.log.set_cursors(plan.cursors.clone()).await {
                tracing::warn!(error = %e, "Cannot set the uplink cursors.");
            }
        }
        for u in &plan.start_uplinks {
            self.start_uplink(u);
        }
        changed
    }

    /// Stops the drivers and waits for them (the first step of shutdown);
    /// the pipeline's sender goes with them. Returns the uplinks' tasks,
    /// which end once the log is drained.
    pub async fn stop_drivers(self) -> Vec<JoinHandle<()>> {
        self.cx.drivers_stop.cancel();
        for (_, d) in self.drivers {
            let _joined = d.task.await;
        }
        drop(self.cx.driver_tx);
        self.uplinks.into_values().map(|u| u.task).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        outpost_config::parse(
            &format!(
                "[gateway]\nid = \"gw\"\n[[device]]\nname = \"a\"\n[device.sim]\ninterval = \"1s\"\n[[device.sim.tag]]\nname = \"t\"\ncounter = {{ start = 0, step = 1 }}\n{extra}"
            ),
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn restart_sections_are_named() {
        let a = cfg("");
        let mut b = a.clone();
        assert!(restart_sections(&a, &b).is_empty());
        b.gateway.id = "other".into();
        b.remote.grace = outpost_config::Duration::from_secs(5);
        assert_eq!(restart_sections(&a, &b), ["[gateway]", "[remote]"]);
    }

    #[test]
    fn changes_are_described() {
        let c = Changed {
            devices: vec!["a".into()],
            rules: true,
            ..Changed::default()
        };
        assert_eq!(c.describe(), "drivers restarted: a; rule chains reloaded");
        assert_eq!(Changed::default().describe(), "nothing changed");
    }
}
