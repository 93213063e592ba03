//! The configuration manager: every new configuration, from the cloud (NATS
//! KV, a retained MQTT topic, ThingsBoard shared attributes) or local
//! (`outpostd apply`), goes through [`Manager::handle`] one at a time.
//!
//! For each document: verify it (hash; signature when a fleet key is
//! configured); refuse a version not newer than the running one (a cloud
//! document re-sent with the running version and hash is a no-op); parse
//! and validate the whole body (every located error); plan the change
//! against the running parts (chains built, drivers planned); mark it
//! pending; apply by diff; watch the changed parts for the grace period;
//! then keep it as the last-known-good, or apply the previous configuration
//! back by the same diff. Every outcome is reported to the sources and
//! appended to the log as an audit event.
//!
//! Invariants:
//! - The running configuration is always one whole document: a refused
//!   document touches nothing; a failed one is undone entirely.
//! - Only a document that proved healthy is written as the last-known-good.
//! - Local applies keep the running version number: a cloud document is
//!   needed to move past a local edit, so re-sent cloud documents never
//!   revert it.

pub mod control;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_config::document::Document;
use outpost_config::Config;
use outpost_core::{Audit, Body, Clock, DeviceStatus, Event, Quality};
use outpost_sync::EventLog;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::parts::{Changed, Parts};
use store::Store;

/// Where a document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    NatsKv,
    Mqtt,
    Thingsboard,
    Local,
}

/// A document to apply, as it arrived (bytes of JSON), and where to send
/// the outcome besides the reports.
#[derive(Debug)]
pub struct Request {
    pub origin: Origin,
    pub doc: Result<Document, String>,
    pub reply: Option<oneshot::Sender<Report>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Applied,
    Rejected,
    RolledBack,
    /// The running document again (re-sent): nothing done.
    Unchanged,
}

/// The outcome of one document, as reported upstream.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub gateway: String,
    pub version: u64,
    pub hash: String,
    pub state: State,
    pub errors: Vec<String>,
    /// What was restarted (applied), or undone (rolled back).
    pub changed: String,
    pub origin: Origin,
    /// UTC, RFC 3339.
    pub at: String,
    /// The version running after this.
    pub running_version: u64,
    /// Milliseconds from arrival to the outcome.
    pub took_ms: u64,
}

impl Report {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The running document, for the web page (updated by the manager).
#[derive(Debug, Clone)]
pub struct Running {
    pub version: u64,
    pub hash: String,
    pub body: String,
    /// Where it came from: the file, the last-known-good, or an apply's origin.
    pub source: String,
}

pub type SharedRunning = Arc<std::sync::RwLock<Running>>;

/// Settings of the manager (from `[remote]`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub fleet_key: Option<String>,
    pub grace: Duration,
}

pub struct Manager {
    parts: Parts,
    running: Config,
    doc: Document,
    store: Store,
    settings: Settings,
    log: EventLog,
    clock: Arc<dyn Clock>,
    /// The links' report channels (JSON, serialised once).
    reports: Vec<mpsc::Sender<Vec<u8>>>,
    shown: SharedRunning,
}

impl Manager {
    pub fn new(
        parts: Parts,
        running: Config,
        doc: Document,
        store: Store,
        log: EventLog,
        clock: Arc<dyn Clock>,
        source: &str,
    ) -> Manager {
        // `[remote]` changes only with a restart, so these hold.
        let settings = Settings {
            fleet_key: running.remote.fleet_public_key.clone(),
            grace: running.remote.grace.get(),
        };
        Manager {
            shown: Arc::new(std::sync::RwLock::new(Running {
                version: doc.version,
                hash: doc.hash.clone(),
                body: doc.body.clone(),
                source: source.to_string(),
            })),
            parts,
            running,
            doc,
            store,
            settings,
            log,
            clock,
            reports: Vec::new(),
        }
    }

    /// Reports go to `tx` too (bounded; a full one misses a report, which
    /// the audit event in the log still carries).
    pub fn report_to(&mut self, tx: mpsc::Sender<Vec<u8>>) {
        self.reports.push(tx);
    }

    /// The running document, as the web page shows it.
    pub fn shown(&self) -> SharedRunning {
        self.shown.clone()
    }

    /// A document found pending at start: the daemon died while applying
    /// it, and `running` (the last-known-good or the file) runs instead.
    /// Reports it as rolled back and clears the mark.
    pub async fn interrupted(&self, pending: &Document, running: &str) {
        self.store.end();
        tracing::warn!(
            version = pending.version,
            "An apply was interrupted by a stop; the last-known-good configuration runs."
        );
        let report = self.report(
            Some(pending),
            Origin::Local,
            State::RolledBack,
            vec![format!(
                "the apply was interrupted (outpostd stopped during it); running {running}"
            )],
            String::new(),
            std::time::Instant::now(),
        );
        self.publish(&report).await;
    }

    /// Handles requests until `stop`; returns the parts for shutdown.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        stop: CancellationToken,
    ) -> Parts {
        loop {
            let req = tokio::select! {
                () = stop.cancelled() => break,
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => { stop.cancelled().await; break; }
                },
            };
            let report = self.handle(req.origin, req.doc, &stop).await;
            if let Some(reply) = req.reply {
                let _gone = reply.send(report);
            }
        }
        self.parts
    }

    /// Sends `report` to the sources and into the log.
    pub async fn publish(&self, report: &Report) {
        // A document re-sent unchanged (on every reconnect) is not news.
        if report.state == State::Unchanged {
            return;
        }
        {
            let action = match report.state {
                State::Applied => "config.applied",
                State::Rejected => "config.rejected",
                State::RolledBack => "config.rolled_back",
                State::Unchanged => "config.unchanged",
            };
            let audit = Event::new(
                "",
                self.clock.now(),
                Body::Audit(Audit {
                    action: action.into(),
                    actor: match report.origin {
                        Origin::Local => "local".into(),
                        _ => "remote".into(),
                    },
                    detail: String::from_utf8_lossy(&report.to_json()).into_owned(),
                }),
            );
            if let Err(e) = self.log.append(vec![audit]).await {
                tracing::warn!(error = %e.error, "Cannot log the configuration report.");
            }
        }
        let json = report.to_json();
        for tx in &self.reports {
            if tx.try_send(json.clone()).is_err() {
                tracing::debug!("A report channel is full or closed; the log keeps the report.");
            }
        }
    }

    fn report(
        &self,
        doc: Option<&Document>,
        origin: Origin,
        state: State,
        errors: Vec<String>,
        changed: String,
        since: std::time::Instant,
    ) -> Report {
        Report {
            gateway: self.running.gateway.id.clone(),
            version: doc.map_or(0, |d| d.version),
            hash: doc.map(|d| d.hash.clone()).unwrap_or_default(),
            state,
            errors,
            changed,
            origin,
            at: crate::web::time::format_utc(self.clock.now().unix_ms),
            running_version: self.doc.version,
            took_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// One document, start to end; the outcome is published and returned.
    pub async fn handle(
        &mut self,
        origin: Origin,
        doc: Result<Document, String>,
        stop: &CancellationToken,
    ) -> Report {
        let since = std::time::Instant::now();
        let report = match self.try_apply(origin, doc, since, stop).await {
            Ok(r) | Err(r) => r,
        };
        match report.state {
            State::Applied => {
                tracing::info!(version = report.version, changed = %report.changed, took_ms = report.took_ms, "Configuration applied.")
            }
            State::Unchanged => tracing::debug!(
                version = report.version,
                "Configuration re-sent unchanged; nothing to do."
            ),
            State::Rejected => {
                tracing::warn!(version = report.version, errors = ?report.errors, "Configuration rejected; the running one stays.")
            }
            State::RolledBack => {
                tracing::error!(version = report.version, errors = ?report.errors, "Configuration rolled back.")
            }
        }
        self.publish(&report).await;
        report
    }

    async fn try_apply(
        &mut self,
        origin: Origin,
        doc: Result<Document, String>,
        since: std::time::Instant,
        stop: &CancellationToken,
    ) -> Result<Report, Report> {
        let reject = |m: &Manager, d: Option<&Document>, errors: Vec<String>| {
            m.report(d, origin, State::Rejected, errors, String::new(), since)
        };
        let mut doc = doc.map_err(|e| reject(self, None, vec![e]))?;
        if origin == Origin::Local {
            // A local edit keeps the running version (see the invariants).
            doc.version = self.doc.version;
            doc.hash = outpost_config::document::hash_of(&doc.body);
        } else {
            doc.verify(self.settings.fleet_key.as_deref())
                .map_err(|e| reject(self, Some(&doc), vec![e.to_string()]))?;
            if doc.version == self.doc.version && doc.hash == self.doc.hash {
                return Ok(self.report(
                    Some(&doc),
                    origin,
                    State::Unchanged,
                    Vec::new(),
                    "nothing changed".into(),
                    since,
                ));
            }
            if doc.version <= self.doc.version {
                return Err(reject(
                    self,
                    Some(&doc),
                    vec![format!(
                        "version {} is not newer than the running version {}",
                        doc.version, self.doc.version
                    )],
                ));
            }
        }
        let file = format!("{origin:?} document v{}", doc.version);
        let new = outpost_config::parse(&doc.body, &file).map_err(|errors| {
            reject(
                self,
                Some(&doc),
                errors.0.iter().map(ToString::to_string).collect(),
            )
        })?;
        let plan = self
            .parts
            .plan(&self.running, &new)
            .map_err(|errors| reject(self, Some(&doc), errors))?;
        if let Err(e) = self.store.begin(&doc) {
            return Err(reject(
                self,
                Some(&doc),
                vec![format!("cannot record the apply on disk: {e}")],
            ));
        }
        // Subscribed before the apply, so no status of a restarted part is missed.
        let watch = self.log.subscribe();
        let changed = self.parts.apply(plan).await;
        let health = self.health(&changed, watch, stop).await;
        match health {
            Ok(()) => {
                let kept = self.store.commit(&doc);
                self.store.end();
                self.running = new;
                self.doc = doc.clone();
                if let Ok(mut shown) = self.shown.write() {
                    *shown = Running {
                        version: doc.version,
                        hash: doc.hash.clone(),
                        body: doc.body.clone(),
                        source: format!(
                            "applied from {origin:?} at {}",
                            crate::web::time::format_utc(self.clock.now().unix_ms)
                        ),
                    };
                }
                let mut errors = Vec::new();
                if let Err(e) = kept {
                    errors.push(format!("applied, but not kept as last-known-good: {e}"));
                }
                Ok(self.report(
                    Some(&doc),
                    origin,
                    State::Applied,
                    errors,
                    changed.describe(),
                    since,
                ))
            }
            Err(mut errors) => {
                // Back to the running configuration by the same diff.
                match self.parts.plan(&new, &self.running) {
                    Ok(back) => {
                        let undone = self.parts.apply(back).await;
                        tracing::info!(undone = %undone.describe(), "Previous configuration restored.");
                    }
                    Err(e) => errors.extend(e.into_iter().map(|e| format!("rollback: {e}"))),
                }
                self.store.end();
                Err(self.report(
                    Some(&doc),
                    origin,
                    State::RolledBack,
                    errors,
                    changed.describe(),
                    since,
                ))
            }
        }
    }

    /// Waits until every changed device reports online (or good readings)
    /// and every changed uplink is connected and acknowledging, or the grace
    /// period ends (then: what failed, one line each).
    async fn health(
        &self,
        changed: &Changed,
        mut watch: tokio::sync::broadcast::Receiver<outpost_sync::log::Committed>,
        stop: &CancellationToken,
    ) -> Result<(), Vec<String>> {
        let deadline = tokio::time::Instant::now() + self.settings.grace;
        // Readings taken before the apply may be committed after it (group
        // commit): only what the changed parts did since counts.
        let started_ms = outpost_core::unix_ms_now();
        let mut devices: BTreeMap<&str, (bool, String)> = changed
            .devices
            .iter()
            .map(|d| (d.as_str(), (false, "no status yet".to_string())))
            .collect();
        let mut uplinks: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
        for u in &changed.uplinks {
            let acked = self
                .parts
                .status_of(u)
                .and_then(|s| s.lock().ok().map(|s| s.events_acked))
                .unwrap_or(0);
            uplinks.insert(u.as_str(), (acked, false));
        }
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            for (name, (base, ok)) in &mut uplinks {
                let head = self.log.stats().borrow().next_seq.saturating_sub(1);
                if let Some(s) = self
                    .parts
                    .status_of(name)
                    .and_then(|s| s.lock().ok().map(|s| s.clone()))
                {
                    *ok = s.connected && (s.events_acked > *base || s.cursor >= head);
                }
            }
            if devices.values().all(|(ok, _)| *ok) && uplinks.values().all(|(_, ok)| *ok) {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = stop.cancelled() => return Err(vec!["the daemon is stopping".into()]),
                _ = tick.tick() => {}
                batch = watch.recv() => {
                    let Ok(batch) = batch else { continue };
                    for s in batch.iter() {
                        if s.event.ts.unix_ms < started_ms {
                            continue;
                        }
                        let Some(entry) = devices.get_mut(s.event.device.as_str()) else { continue };
                        match &s.event.body {
                            Body::Status(st) => {
                                *entry = (st.status == DeviceStatus::Online, st.detail.clone());
                            }
                            Body::Telemetry(points) if points.iter().any(|p| p.quality == Quality::Good) => {
                                entry.0 = true;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        let secs = self.settings.grace.as_secs_f64();
        let mut errors: Vec<String> = devices
            .iter()
            .filter(|(_, (ok, _))| !ok)
            .map(|(d, (_, why))| format!("device {d:?} not online within {secs} s ({why})"))
            .collect();
        for (u, (_, ok)) in &uplinks {
            if !ok {
                let last = self
                    .parts
                    .status_of(u)
                    .and_then(|s| s.lock().ok().and_then(|s| s.last_error.clone()))
                    .unwrap_or_else(|| "no error reported".into());
                errors.push(format!(
                    "uplink {u:?} not connected and acknowledging within {secs} s ({last})"
                ));
            }
        }
        Err(errors)
    }
}
