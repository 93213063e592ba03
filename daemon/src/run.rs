//! `outpostd run`: wires the components together and runs them until
//! SIGTERM or SIGINT.
//!
//! Task tree (one task per component, bounded channels between them):
//!
//! ```text
//! driver supervisors ──(64)──▶ rules ──(64)──▶ ingest ──▶ EventLog (writer thread)
//!                                                           │ broadcast
//!                                                           ▼
//!                                                       live views ──▶ periodic summary
//! ```
//!
//! Shutdown order: cancel the drivers; each sends what it holds and drops its
//! sender; the rules and ingest tasks drain and end; the log writer commits
//! the last batch and its thread exits; then the process exits 0. The whole
//! drain is bounded by [`DRAIN_TIMEOUT`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use outpost_config::document::Document;
use outpost_config::Config;
use outpost_core::{Audit, Body, Clock, Event, SystemClock};
use outpost_sync::uplink::SharedStatus;
use outpost_sync::{EventLog, LogOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::Targets;

use crate::parts::{Parts, PartsContext};
use crate::remote::store::Store;
use crate::remote::{self, Manager};
use crate::systemd::Systemd;
use crate::{pipeline, views, RunArgs};

/// Longest the daemon waits for the pipeline to drain on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the daemon logs a summary of the latest values and the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);
const CHANNEL_CAPACITY: usize = 64;

pub fn main(args: RunArgs) -> ExitCode {
    init_tracing();
    let systemd = Systemd::from_env();
    let (cfg, source, doc) = match select_config(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let base = config_dir(&args);
    let stage = match outpost_rules::build(&cfg, &base) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!(
                problems = errors.len(),
                "The rule chains cannot be loaded; outpostd does not start."
            );
            // Like any other invalid configuration.
            return ExitCode::from(2);
        }
    };
    // Parsing a large configuration takes megabytes for a moment.
    crate::memory::trim();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("outpost-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    let restart = CancellationToken::new();
    let ran = runtime.block_on(run(
        cfg,
        source,
        doc,
        args.data_dir.clone(),
        stage,
        base,
        Restart {
            config: args.config.clone(),
            token: restart.clone(),
            systemd: systemd.clone(),
        },
    ));
    drop(runtime);
    match ran {
        Ok(()) if restart.is_cancelled() => {
            systemd.reloading("Restarting with the new configuration.");
            restart_in_place()
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "outpostd stopped on an error.");
            ExitCode::FAILURE
        }
    }
}

/// Replaces this process with a fresh `outpostd` with the same arguments
/// (same process id, so systemd and supervisors see no exit), once the
/// pipeline has drained: how a configuration applied from the web page
/// takes effect.
#[cfg(unix)]
fn restart_in_place() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "Cannot find the outpostd binary to restart; exiting for the supervisor to restart it.");
            return ExitCode::from(3);
        }
    };
    tracing::info!("Restarting outpostd with the new configuration.");
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    tracing::error!(error = %err, "Cannot restart in place; exiting for the supervisor to restart it.");
    ExitCode::from(3)
}

#[cfg(not(unix))]
fn restart_in_place() -> ExitCode {
    ExitCode::from(3)
}

/// How this process meets its supervisor: the configuration file and the
/// token that asks for a restart in place (what the web page needs to apply
/// a configuration), and the service manager it reports readiness, status
/// and liveness to.
struct Restart {
    config: Option<PathBuf>,
    token: CancellationToken,
    systemd: Systemd,
}

/// Logs to stdout (journald picks them up under systemd). `RUST_LOG` takes
/// `level` or `target=level` directives separated by commas, e.g.
/// `info,outpost_sync=debug`; a malformed value falls back to `info`. By
/// default the NATS client's own log is off: the uplink reports link state
/// itself, and the client logs each closed session as an error
/// (`RUST_LOG=info,async_nats=debug` shows it).
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let default = || {
        Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target("async_nats", tracing::level_filters::LevelFilter::OFF)
    };
    let (filter, bad) = match spec.parse::<Targets>() {
        Ok(t) if !spec.trim().is_empty() => (t, None),
        Ok(_) => (default(), None),
        Err(e) => (default(), Some(e)),
    };
    // Under systemd with the journal as stdout: native journal entries, one
    // field per tracing field (`journalctl -o verbose` shows them).
    let journald = if crate::systemd::logging_to_journal() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let fmt = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
    });
    let _already_set = tracing_subscriber::registry()
        .with(fmt)
        .with(journald)
        .with(crate::logring::layer())
        .with(filter)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(rust_log = %spec, error = %e, "RUST_LOG is not understood; logging at info.");
    }
}

/// The configuration to run, where it came from, and its document.
///
/// With a file: the file, unless the last-known-good document kept in the
/// data directory (applied remotely, or by `outpostd apply`) is newer, or
/// the file is newer but invalid (then its problems are printed and the
/// last-known-good runs). Without a last-known-good, an invalid file never
/// starts the daemon.
fn select_config(args: &RunArgs) -> Result<(Config, String, Document), ExitCode> {
    let Some(path) = &args.config else {
        return match outpost_config::demo() {
            Ok(cfg) => Ok((
                cfg,
                "the embedded demo configuration".to_string(),
                Document::new(0, outpost_config::DEMO_TOML.to_string()),
            )),
            Err(errors) => {
                eprintln!("{errors}");
                Err(ExitCode::FAILURE)
            }
        };
    };
    let read = outpost_config::read_bounded(path);
    let parsed = match &read {
        Ok(src) => {
            outpost_config::parse_bytes(src, &path.display().to_string()).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    };
    // Valid (so UTF-8) when it is used as the running file's text.
    let read = read.map(|b| String::from_utf8_lossy(&b).into_owned());
    let dir = args
        .data_dir
        .clone()
        .or_else(|| {
            parsed
                .as_ref()
                .ok()
                .and_then(|c| c.gateway.data_dir.clone())
        })
        .or_else(|| read.as_ref().ok().and_then(|src| data_dir_hint(src)))
        .unwrap_or_else(|| data_dir_default(None));
    let store = Store::new(&dir, 100);
    let kept = store.current().and_then(|d| {
        match outpost_config::parse(&d.body, "the last-known-good configuration") {
            Ok(c) => Some((c, d)),
            Err(e) => {
                tracing::error!(errors = %e, "The last-known-good configuration does not parse; ignored.");
                None
            }
        }
    });
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let kept_is_newer = match (mtime(&store.current_path()), mtime(path)) {
        (Some(k), Some(f)) => k > f,
        _ => true,
    };
    match (parsed, kept) {
        (Ok(_), Some((cfg, d))) if kept_is_newer => {
            let source = format!(
                "the last-known-good configuration v{} (newer than {})",
                d.version,
                path.display()
            );
            Ok((cfg, source, d))
        }
        (Ok(cfg), kept) => {
            let version = kept.map_or(0, |(_, d)| d.version);
            let doc = Document::new(version, read.unwrap_or_default());
            Ok((cfg, path.display().to_string(), doc))
        }
        (Err(errors), Some((cfg, d))) => {
            eprintln!("{errors}");
            tracing::error!(
                file = %path.display(),
                version = d.version,
                "The configuration file is not valid; running the last-known-good configuration instead."
            );
            let source = format!(
                "the last-known-good configuration v{} ({} is invalid)",
                d.version,
                path.display()
            );
            Ok((cfg, source, d))
        }
        (Err(errors), None) => {
            eprintln!("{errors}");
            eprintln!("outpostd: {} is not valid; not starting.", path.display());
            Err(ExitCode::from(2))
        }
    }
}

/// `gateway.data_dir` of a file that may not validate.
pub fn data_dir_hint(src: &str) -> Option<PathBuf> {
    let t: toml::Table = src.parse().ok()?;
    t.get("gateway")?
        .get("data_dir")?
        .as_str()
        .map(PathBuf::from)
}

/// The data directory: the command line, else the configuration, else
/// `$XDG_STATE_HOME/outpost`, else `./outpost-data`.
fn data_dir(cfg: &Config, cli: Option<PathBuf>) -> PathBuf {
    data_dir_default(cli.or_else(|| cfg.gateway.data_dir.clone()))
}

/// `given`, else `$XDG_STATE_HOME/outpost`, else `./outpost-data`.
pub fn data_dir_default(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(|v| PathBuf::from(v).join("outpost"))
        })
        .unwrap_or_else(|| PathBuf::from("outpost-data"))
}

/// Where relative paths in the configuration (rule chains) start: the
/// configuration file's directory, or the current one for the demo.
pub fn config_dir(args: &RunArgs) -> PathBuf {
    args.config
        .as_deref()
        .and_then(std::path::Path::parent)
        .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
}

async fn run(
    cfg: Config,
    source: String,
    doc: Document,
    data_dir_arg: Option<PathBuf>,
    stage: Box<dyn outpost_rules::Stage>,
    base: PathBuf,
    restart: Restart,
) -> anyhow::Result<()> {
    let systemd = restart.systemd.clone();
    let liveness = systemd.liveness();
    if let Some(w) = systemd.watchdog() {
        tracing::info!(
            watchdog_s = w.as_secs_f64(),
            stall_limit_s = liveness.limit().as_secs_f64(),
            "systemd watchdog on: pinged while every stage makes progress."
        );
    }
    let dir = data_dir(&cfg, data_dir_arg);
    let log_path = dir.join("events.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(cfg.gateway.clock));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        gateway = %cfg.gateway.id,
        config = %source,
        data_dir = %absolute(&dir).display(),
        "Starting outpostd."
    );

    let opts = LogOptions::from_config(&cfg.gateway);
    let (log, report) = EventLog::open_watched(
        &log_path,
        opts,
        clock.clone(),
        liveness.stage("event log writer"),
    )
    .with_context(|| format!("opening the event log at {}", log_path.display()))?;
    if let Some(rec) = &report.recovered {
        tracing::error!(
            moved_to = %rec.moved_to.display(),
            reason = %rec.reason,
            "The event log was unreadable and was moved aside; a fresh log was started."
        );
    }
    let cursors: Vec<String> = cfg
        .uplinks
        .iter()
        .filter(|u| u.enabled)
        .map(|u| u.name.clone())
        .collect();
    log.set_cursors(cursors.clone())
        .await
        .context("setting the uplink cursors")?;
    {
        let stats = log.stats().borrow().clone();
        tracing::info!(
            path = %absolute(&log_path).display(),
            durability = ?cfg.gateway.durability,
            events = stats.rows,
            next_seq = stats.next_seq,
            "Event log open."
        );
    }
    let started = Event::new(
        "",
        clock.now(),
        Body::Audit(Audit {
            action: "daemon.started".into(),
            actor: "gateway".into(),
            detail: format!(
                "outpostd {} with {source} (configuration version {}, {})",
                env!("CARGO_PKG_VERSION"),
                doc.version,
                doc.hash
            ),
        }),
    );
    if let Err(refused) = log.append(vec![started]).await {
        tracing::warn!(error = %refused, "Could not record the start in the log.");
    }

    let root = CancellationToken::new();
    let drivers_stop = root.child_token();
    let uplinks_stop = root.child_token();
    let abort = CancellationToken::new();

    let (driver_tx, driver_rx) = mpsc::channel::<Event>(CHANNEL_CAPACITY);
    let (rules_tx, rules_rx) = mpsc::channel::<Event>(CHANNEL_CAPACITY);

    let mut live = log.subscribe();
    let ingest = outpost_core::task::spawn(liveness.stage("ingest").watch(pipeline::ingest_task(
        log.clone(),
        rules_rx,
        cfg.gateway.log.commit_max_events as usize,
        abort.clone(),
    )));

    let specs: Vec<(String, outpost_drivers::DriverSpec)> = outpost_drivers::specs(&cfg)
        .context("planning the device drivers")?
        .into_iter()
        .map(|s| (s.fingerprint(), s))
        .collect();
    let metrics = outpost_drivers::metrics::Metrics::default();
    let router = outpost_drivers::command::Router::default();
    let configured: Vec<(String, String)> = specs
        .iter()
        .flat_map(|(_, spec)| spec.devices.iter().map(|d| (d.clone(), spec.describe())))
        .collect();
    // Rule chains: writes they ask for go to the drivers through the router;
    // SIGHUP reloads the chain files (a set that does not load is refused and
    // the running chains stay).
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let rule_counters: pipeline::SharedCounters = Arc::default();
    // The chains start with what the log remembers: attributes of every
    // scope and the open alarms.
    let mut stage = stage;
    let current = match log.current().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the current attributes and alarms from the log; the chains start without them.");
            Vec::new()
        }
    };
    let chain_shared_keys = stage.shared_keys();
    let memory = outpost_rules::Memory::restore(&current);
    tracing::info!(
        attributes = current.len() - memory.alarms.len().min(current.len()),
        open_alarms = memory.alarms.len(),
        "Restored the current attributes and alarms."
    );
    stage.put_memory(memory);
    let mut known_attributes = crate::attributes::known(&current);
    let (settings_tx, settings_rx) = mpsc::channel(1);
    for ev in crate::attributes::configured(&cfg, &mut known_attributes, clock.now()) {
        // Queued ahead of every reading (the channel is empty here).
        if driver_tx.try_send(ev).is_err() {
            tracing::warn!("The configured attributes could not be queued; they are recorded at the next apply.");
        }
    }
    // ThingsBoard sessions: shared attributes to the log (and the writes
    // they map to), the remote configuration over the uplink's session.
    let tb_devices = Arc::new(std::sync::RwLock::new(crate::attributes::tb_devices(
        &cfg,
        &chain_shared_keys,
    )));
    let attribute_updates = Arc::new(std::sync::RwLock::new(crate::attributes::updates(&cfg)));
    let (tb_shared, tb_shared_rx) = mpsc::channel(16);
    let _shared_task = outpost_core::task::spawn(crate::attributes::shared_from_thingsboard(
        tb_shared_rx,
        attribute_updates.clone(),
        router.clone(),
        clock.clone(),
        driver_tx.clone(),
        drivers_stop.clone(),
    ));
    let (tb_control, tb_control_links) = remote::control::thingsboard_link(&cfg);
    let rules = outpost_core::task::spawn(liveness.stage("rules").watch(pipeline::rules_task(
        stage,
        clock.clone(),
        crate::attributes::DeviceSettings::from_config(&cfg),
        settings_rx,
        driver_rx,
        rules_tx,
        router.clone(),
        reload_rx,
        rule_counters.clone(),
    )));
    let reloader = outpost_core::task::spawn(reload_on_sighup(
        cfg.clone(),
        base.clone(),
        log.clone(),
        clock.clone(),
        reload_tx.clone(),
    ));
    // Drivers and uplinks (one worker each, from its own cursor; ThingsBoard
    // RPC writes reach the drivers through the router), each with its own
    // stop so that a new configuration restarts only what changed.
    let parts = Parts::start(
        PartsContext {
            driver_tx,
            clock: clock.clone(),
            metrics: metrics.clone(),
            router: router.clone(),
            log: log.clone(),
            reload: reload_tx,
            settings: settings_tx,
            known_attributes,
            tb_devices,
            tb_shared,
            tb_control,
            attribute_updates,
            chain_shared_keys,
            drivers_stop,
            uplinks_stop,
            base,
            liveness: liveness.clone(),
        },
        &cfg,
        specs,
    )
    .await;
    let uplink_status = parts.uplink_statuses(&cfg);
    let configured_count = configured.len();
    tracing::info!(
        devices = configured.len(),
        "outpostd is running. Stop it with Ctrl-C (SIGINT) or SIGTERM."
    );

    // The configuration manager owns the parts from here on.
    let store = Store::new(&dir, cfg.remote.history as usize);
    let interrupted = store.pending();
    let mut manager = Manager::new(
        parts,
        cfg.clone(),
        doc,
        store.clone(),
        log.clone(),
        clock.clone(),
        &source,
    );
    let shown = manager.shown();
    let control_stop = root.child_token();
    let (requests_tx, requests_rx) = mpsc::channel::<remote::Request>(4);
    let links = remote::control::start_links(
        &cfg,
        &mut manager,
        &requests_tx,
        &control_stop,
        tb_control_links,
    );
    if let Some(p) = interrupted {
        manager.interrupted(&p, &source).await;
    }
    let socket = outpost_core::task::spawn(remote::control::serve_socket(
        remote::control::socket_path(&dir),
        requests_tx.clone(),
        control_stop.clone(),
    ));
    let manager_task = outpost_core::task::spawn(manager.run(requests_rx, control_stop.clone()));
    let mut units: BTreeMap<(String, String), String> = BTreeMap::new();
    for d in &cfg.devices {
        let sim = d
            .sim
            .iter()
            .flat_map(|s| s.tags.iter().map(|t| (&t.name, &t.unit)));
        let modbus = d
            .modbus
            .iter()
            .flat_map(|m| m.tags.iter().map(|t| (&t.name, &t.unit)));
        for (tag, unit) in sim.chain(modbus) {
            if let Some(u) = unit {
                units.insert((d.name.clone(), tag.clone()), u.clone());
            }
        }
    }
    // Tags a write may go to (the web page offers writes only there).
    let writable: std::collections::BTreeSet<(String, String)> =
        cfg.devices
            .iter()
            .flat_map(|d| {
                let modbus = d.modbus.iter().flat_map(move |m| {
                    m.tags
                        .iter()
                        .filter(|t| t.writable)
                        .map(move |t| (d.name.clone(), t.name.clone()))
                });
                let serial = d.serial.iter().flat_map(move |s| {
                    s.write.iter().map(move |w| (d.name.clone(), w.tag.clone()))
                });
                modbus.chain(serial)
            })
            .collect();
    let latest = Arc::new(std::sync::RwLock::new(views::Latest::default()));
    if let Ok(mut l) = latest.write() {
        l.seed(&current);
    }
    drop(current);
    let web = if cfg.web.enabled {
        start_web(
            &cfg,
            &dir,
            WebParts {
                clock: clock.clone(),
                log: log.clone(),
                latest: latest.clone(),
                uplinks: uplink_status.clone(),
                drivers: metrics.clone(),
                writes: router.clone(),
                devices: configured,
                units: units.clone(),
                writable,
                source: source.clone(),
                config_path: restart.config.clone(),
                rules: rule_counters.clone(),
                restart: restart.token.clone(),
                manager: requests_tx.clone(),
                running: shown,
            },
            root.child_token(),
        )
        .await
    } else {
        None
    };
    let summary_latest = latest.clone();
    let summary_metrics = metrics.clone();
    let summary_uplinks = uplink_status.clone();
    let summary_clock = clock.clone();
    let mut last_acked = vec![0u64; summary_uplinks.len()];
    let summary_stop = root.child_token();
    let summary_log = log.clone();
    let summary = outpost_core::task::spawn(async move {
        let latest = summary_latest;
        let mut every = tokio::time::interval(SUMMARY_EVERY);
        every.tick().await;
        loop {
            tokio::select! {
                biased;
                () = summary_stop.cancelled() => break,
                msg = live.recv() => match msg {
                    Ok(batch) => {
                        if let Ok(mut l) = latest.write() {
                            l.apply(&batch);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "Live view lagged; it catches up with the next events.");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = every.tick() => {
                    // Bursts (a drain, a reconnect) leave free memory behind.
                    crate::memory::trim();
                    let lines = latest.read().map(|l| l.summary(&units)).unwrap_or_default();
                    for line in lines {
                        tracing::info!("{line}");
                    }
                    for (device, m) in summary_metrics.snapshot() {
                        if m.requests > 0 {
                            tracing::info!(
                                %device,
                                requests = m.requests,
                                exceptions = m.exceptions,
                                timeouts = m.timeouts,
                                crc_errors = m.crc_errors,
                                garbage = m.garbage + m.truncated,
                                noise_bytes = m.noise_bytes,
                                latency_us = m.latency_us_avg,
                                last_error = m.last_error.as_deref().unwrap_or("-"),
                                "Modbus."
                            );
                        }
                    }
                    let s = summary_log.stats().borrow().clone();
                    for (i, (name, st)) in summary_uplinks.iter().enumerate() {
                        let Ok(u) = st.lock().map(|u| u.clone()) else { continue };
                        let rate = u.events_acked.saturating_sub(last_acked[i]) as f64 / SUMMARY_EVERY.as_secs_f64();
                        last_acked[i] = u.events_acked;
                        // The oldest event not yet acknowledged upstream.
                        let oldest_age_s = match summary_log.read(outpost_core::Seq(u.cursor), 1).await {
                            Ok(v) => v.first().map(|e| (summary_clock.now().unix_ms - e.event.ts.unix_ms).max(0) / 1000),
                            Err(_) => None,
                        };
                        tracing::info!(
                            uplink = %name,
                            connected = u.connected,
                            backlog = s.next_seq.saturating_sub(1).saturating_sub(u.cursor),
                            oldest_unsent_age_s = oldest_age_s.unwrap_or(0),
                            events_per_s = format!("{rate:.1}"),
                            acked = u.events_acked,
                            inflight = u.inflight,
                            reconnects = u.reconnects,
                            last_error = u.last_error.as_deref().unwrap_or("-"),
                            "Uplink."
                        );
                    }
                    tracing::info!(
                        events = s.rows,
                        appended = s.appended_total,
                        commits = s.commits_total,
                        dropped = s.evicted_rows_total + s.evicted_bytes_total + s.evicted_age_total,
                        disk_full = s.disk_full,
                        "Event log."
                    );
                }
            }
        }
    });

    // Log open, configuration valid, drivers, uplinks and the page started.
    let status = status_source(
        latest.clone(),
        configured_count,
        uplink_status.clone(),
        log.clone(),
        metrics.clone(),
    );
    systemd.ready(&status());
    let notifier = outpost_core::task::spawn(systemd.clone().supervise(
        liveness.clone(),
        status,
        root.child_token(),
    ));

    tokio::select! {
        r = wait_for_signal() => r?,
        () = restart.token.cancelled() => tracing::info!("A new configuration was applied."),
    }
    if !restart.token.is_cancelled() {
        systemd.stopping();
    }
    tracing::info!("Stopping: draining the pipeline.");
    reloader.abort();
    control_stop.cancel();
    drop(requests_tx);
    let parts = manager_task
        .await
        .context("the configuration manager failed")?;
    for l in links {
        l.abort();
    }
    let _socket_done = socket.await;
    root.cancel();

    let mut uplinks = Vec::new();
    let drain = async {
        uplinks = parts.stop_drivers().await;
        let _rules_done = rules.await;
        ingest.await.unwrap_or(0)
    };
    let accepted = match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
        Ok(n) => n,
        Err(_) => {
            abort.cancel();
            tracing::error!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "The pipeline did not drain in time; stopping anyway (events not yet accepted are not in the log)."
            );
            0
        }
    };
    for u in uplinks {
        let _joined = u.await;
    }
    let _summary_done = summary.await;
    let _notifier_done = notifier.await;
    if let Some(task) = web {
        // Open pages (live-update streams) are closed, not waited for.
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            tracing::debug!("The web server did not stop within 2 s.");
        }
    }
    let stats_rx = log.stats();
    log.close().await;
    let stats = stats_rx.borrow().clone();
    tracing::info!(
        accepted,
        events_in_log = stats.rows,
        next_seq = stats.next_seq,
        "outpostd stopped."
    );
    Ok(())
}

/// The `STATUS=` line systemd shows, from the live views.
fn status_source(
    latest: Arc<std::sync::RwLock<views::Latest>>,
    devices: usize,
    uplinks: Vec<(String, SharedStatus)>,
    log: EventLog,
    metrics: outpost_drivers::metrics::Metrics,
) -> impl Fn() -> String + Send + 'static {
    move || {
        let online = latest
            .read()
            .map(|l| {
                l.devices
                    .values()
                    .filter(|d| d.status == Some(outpost_core::DeviceStatus::Online))
                    .count()
            })
            .unwrap_or(0);
        let last_seq = log.stats().borrow().next_seq.saturating_sub(1);
        let mut backlog: Option<(String, u64)> = None;
        let mut last_error: Option<String> = None;
        for (name, st) in &uplinks {
            let Ok(u) = st.lock().map(|u| u.clone()) else {
                continue;
            };
            let n = last_seq.saturating_sub(u.cursor);
            if backlog.as_ref().is_none_or(|(_, b)| n > *b) {
                backlog = Some((name.clone(), n));
            }
            if !u.connected && last_error.is_none() {
                last_error = u.last_error.map(|e| format!("{name}: {e}"));
            }
        }
        if last_error.is_none() {
            last_error = metrics
                .snapshot()
                .into_iter()
                .find_map(|(device, m)| m.last_error.map(|e| format!("{device}: {e}")));
        }
        crate::systemd::status_line(
            online,
            devices,
            backlog.as_ref().map(|(n, b)| (n.as_str(), *b)),
            last_error.as_deref(),
        )
    }
}

/// What the web server shows, from the running daemon.
struct WebParts {
    clock: Arc<dyn Clock>,
    log: EventLog,
    latest: Arc<std::sync::RwLock<views::Latest>>,
    uplinks: Vec<(String, SharedStatus)>,
    drivers: outpost_drivers::metrics::Metrics,
    writes: outpost_drivers::command::Router,
    devices: Vec<(String, String)>,
    units: BTreeMap<(String, String), String>,
    writable: std::collections::BTreeSet<(String, String)>,
    source: String,
    config_path: Option<PathBuf>,
    restart: CancellationToken,
    rules: pipeline::SharedCounters,
    manager: mpsc::Sender<remote::Request>,
    running: remote::SharedRunning,
}

/// Starts the web page; one that cannot start is logged and the gateway
/// runs on without it.
async fn start_web(
    cfg: &Config,
    dir: &Path,
    p: WebParts,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let web_dir = dir.join("web");
    let (auth, token) = match crate::web::auth::Auth::open(
        &web_dir,
        cfg.web.session_ttl.get(),
        cfg.web.admin_password_hash.as_deref(),
    ) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "The web page's users cannot be loaded; the web page is off.");
            return None;
        }
    };
    let shared = Arc::new(crate::web::Shared {
        gateway: cfg.gateway.id.clone(),
        clock: p.clock,
        started: std::time::Instant::now(),
        log: p.log,
        latest: p.latest,
        uplinks: p.uplinks,
        drivers: p.drivers,
        devices: p.devices,
        writes: p.writes,
        auth,
        data_dir: dir.to_path_buf(),
        units: p.units,
        writable: p.writable,
        secure_cookies: cfg.web.tls,
        history: std::sync::Mutex::new(std::collections::VecDeque::new()),
        config_source: p.source,
        config_path: p.config_path,
        rules: p.rules,
        restart: p.restart,
        manager: Some(p.manager),
        running: Some(p.running),
        live: crate::web::live_channel(),
        stop,
        sparks: tokio::sync::Mutex::new(None),
    });
    match crate::web::serve(shared, &cfg.web).await {
        Ok((addr, task)) => {
            let scheme = if cfg.web.tls { "https" } else { "http" };
            let host = if addr.ip().is_unspecified() {
                format!("localhost:{}", addr.port())
            } else {
                addr.to_string()
            };
            tracing::info!(url = %format!("{scheme}://{host}/"), "Web page listening.");
            if let Some(token) = token {
                tracing::warn!(
                    url = %format!("{scheme}://{host}/setup"),
                    setup_token = %token,
                    "No web password is set yet: open the setup page and enter this one-time token (also in {}).",
                    web_dir.join("setup-token").display()
                );
            }
            Some(task)
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "The web page cannot start; the gateway runs on without it."
            );
            None
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// On SIGHUP: loads the chain files again; hands a set that loads to the
/// rules task, refuses one that does not (every error logged). Either way an
/// audit event records it.
#[cfg(unix)]
async fn reload_on_sighup(
    rules: outpost_config::Config,
    base: PathBuf,
    log: EventLog,
    clock: Arc<dyn Clock>,
    to_rules: mpsc::Sender<Box<dyn outpost_rules::Stage>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("Cannot install the SIGHUP handler; rule chains reload only on restart.");
        return;
    };
    while hup.recv().await.is_some() {
        let (r, b) = (rules.clone(), base.clone());
        let built = tokio::task::spawn_blocking(move || outpost_rules::build(&r, &b)).await;
        let (action, detail) = match built {
            Ok(Ok(stage)) => {
                if to_rules.send(stage).await.is_err() {
                    return;
                }
                tracing::info!(
                    chains = rules.rules.chains.len(),
                    "SIGHUP: rule chains reloaded."
                );
                (
                    "rules.reloaded",
                    format!("{} chain file(s)", rules.rules.chains.len()),
                )
            }
            Ok(Err(errors)) => {
                for e in &errors {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    problems = errors.len(),
                    "SIGHUP: the rule chains do not load; the running chains stay."
                );
                ("rules.refused", errors.join("; "))
            }
            Err(e) => ("rules.refused", e.to_string()),
        };
        let audit = Event::new(
            "",
            clock.now(),
            Body::Audit(Audit {
                action: action.to_string(),
                actor: "signal".to_string(),
                detail,
            }),
        );
        if let Err(e) = log.append(vec![audit]).await {
            tracing::warn!(error = %e.error, "Cannot log the reload audit event.");
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(
    _rules: outpost_config::Config,
    _base: PathBuf,
    _log: EventLog,
    _clock: Arc<dyn Clock>,
    _to_rules: mpsc::Sender<Box<dyn outpost_rules::Stage>>,
) {
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received."),
        _ = int.recv() => tracing::info!("SIGINT received."),
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
