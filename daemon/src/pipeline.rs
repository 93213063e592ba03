//! The path of one reading after its driver: the rules task, then the
//! ingest task that hands batches to the event log.
//!
//! Invariants:
//! - Every channel is bounded; a stage that cannot keep up makes the one
//!   before it wait, back to the drivers.
//! - The ingest task holds a batch until the log has committed it. If the log
//!   refuses for want of space, the batch is kept and retried with back-off
//!   (nothing is dropped here; the drivers wait meanwhile).
//! - On shutdown each task drains its input before it ends: drivers stop
//!   first, their senders drop, and what is in flight reaches the log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use outpost_core::{Clock, Event};
use outpost_drivers::command::Router;
use outpost_rules::{Stage, WriteRequest};
use outpost_sync::log::Submitted;
use outpost_sync::{EventLog, LogError, Refused};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Writes the rules asked for, queued at most this deep (beyond, they are
/// dropped and logged: a chain that writes faster than devices take writes
/// is misconfigured, and the rules must not stall on it).
const WRITE_QUEUE: usize = 64;

/// Runs events through the rules stage; performs the writes it asks for.
#[allow(clippy::too_many_arguments)]
pub async fn rules_task(
    mut stage: Box<dyn Stage>,
    clock: Arc<dyn Clock>,
    settings: crate::attributes::DeviceSettings,
    mut settings_rx: mpsc::Receiver<crate::attributes::DeviceSettings>,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    router: Router,
    mut reload: mpsc::Receiver<Box<dyn Stage>>,
    counters: SharedCounters,
) {
    let crate::attributes::DeviceSettings {
        types: mut device_types,
        mut attribute_tags,
    } = settings;
    stage.set_device_types(device_types.clone());
    let (wtx, mut wrx) = mpsc::channel::<WriteRequest>(WRITE_QUEUE);
    // Outcomes of writes a node waits for (RPC requests from the chains).
    let (reply_tx, mut replies) =
        mpsc::channel::<(outpost_rules::Reply, Result<(), String>)>(WRITE_QUEUE);
    let writer = outpost_core::task::spawn(async move {
        while let Some(w) = wrx.recv().await {
            let outcome = router
                .write(&w.device, &w.tag, w.value.clone(), &w.by)
                .await
                .map_err(|e| e.to_string());
            match &outcome {
                Ok(()) => {
                    tracing::info!(device = %w.device, tag = %w.tag, value = %w.value, "Rule write done.")
                }
                Err(e) => {
                    tracing::warn!(device = %w.device, tag = %w.tag, error = %e, "Rule write failed.")
                }
            }
            if let Some(reply) = w.reply {
                if reply_tx.send((reply, outcome)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut out = Vec::new();
    let mut split = Vec::new();
    let mut ticks = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    attribute_tags.split(ev, &mut split);
                    for ev in split.drain(..) {
                        stage.on_event(clock.now(), ev, &mut out);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                stage.on_tick(clock.now(), &mut out);
                ticks += 1;
                if ticks.is_multiple_of(PUBLISH_EVERY_TICKS) {
                    if let Ok(mut c) = counters.lock() {
                        *c = stage.counters();
                    }
                }
                if ticks.is_multiple_of(COUNTERS_EVERY_TICKS) {
                    log_counters(stage.as_ref());
                }
            }
            Some((reply, outcome)) = replies.recv() => {
                stage.on_reply(clock.now(), reply, outcome, &mut out);
            }
            Some(new) = settings_rx.recv() => {
                device_types = new.types;
                stage.set_device_types(device_types.clone());
                attribute_tags.take_over(new.attribute_tags);
            }
            Some(mut new) = reload.recv() => {
                // Values, attributes and open alarms carry over; what the
                // old chains held back (open windows, pending
                // deduplication, delayed messages) does not.
                log_counters(stage.as_ref());
                if let Some(memory) = stage.take_memory() {
                    new.put_memory(memory);
                }
                new.set_device_types(device_types.clone());
                stage = new;
                if let Ok(mut c) = counters.lock() {
                    *c = stage.counters();
                }
            }
        }
        for w in stage.take_writes() {
            if let Err(e) = wtx.try_send(w) {
                tracing::warn!(error = %e, "Rule write dropped: the write queue is full.");
                let w = match e {
                    mpsc::error::TrySendError::Full(w) | mpsc::error::TrySendError::Closed(w) => w,
                };
                if let Some(reply) = w.reply {
                    // The node that waits for it hears why.
                    stage.on_reply(
                        clock.now(),
                        reply,
                        Err("the write queue is full".into()),
                        &mut out,
                    );
                }
            }
        }
        for ev in out.drain(..) {
            if tx.send(ev).await.is_err() {
                tracing::error!("The ingest task has stopped; the rules task ends.");
                writer.abort();
                return;
            }
        }
    }
    drop(wtx);
    let _writes_done = writer.await;
}

/// The rule chains' node counters, as the web page and metrics read them
/// (refreshed every second by the rules task).
pub type SharedCounters = Arc<std::sync::Mutex<outpost_rules::ChainCounters>>;

/// Rule-node counters are published for the web page every this many
/// ticks (1 s).
const PUBLISH_EVERY_TICKS: u64 = 10;

/// Rule-node counters are logged every this many ticks (10 s).
const COUNTERS_EVERY_TICKS: u64 = 100;

/// One line per node that saw messages.
fn log_counters(stage: &dyn Stage) {
    for (chain, nodes) in stage.counters() {
        for (node, kind, c) in nodes.iter().filter(|(_, _, c)| c.messages_in > 0) {
            let out: Vec<String> = c.out.iter().map(|(r, n)| format!("{r}={n}")).collect();
            tracing::info!(
                %chain,
                %node,
                kind = kind.rsplit('.').next().unwrap_or(kind),
                messages_in = c.messages_in,
                out = out.join(","),
                dropped = c.dropped,
                errors = c.errors,
                script_ms = c.script_ns / 1_000_000,
                last_error = c.last_error.as_deref().unwrap_or("-"),
                "Rule node."
            );
        }
    }
}

/// Moves events into the log in batches of at most `max_batch`.
/// `abort` cancels a retry loop that cannot finish (a disk still full at shutdown).
///
/// While one batch waits for its commit (up to `commit_max_delay` with group
/// commit), the next is gathered from the drivers: the wait does not
/// back-pressure them unless a whole batch is waiting. Batches are appended
/// one after the other, so the log keeps their order.
pub async fn ingest_task(
    log: EventLog,
    mut rx: mpsc::Receiver<Event>,
    max_batch: usize,
    abort: CancellationToken,
) -> u64 {
    let max_batch = max_batch.max(1);
    let (btx, mut brx) = mpsc::channel::<(Vec<Event>, tokio::time::Instant)>(1);
    let appender = async move {
        // Up to MAX_IN_FLIGHT batches handed to the writer at once: those
        // that arrive while a commit gathers share it, instead of each
        // waiting for the one before. Settled oldest first.
        let mut accepted: u64 = 0;
        let mut inflight: VecDeque<(u64, tokio::time::Instant, Submitted)> = VecDeque::new();
        let mut open = true;
        while open || !inflight.is_empty() {
            let room = inflight.len() < MAX_IN_FLIGHT;
            let settle = async {
                match inflight.front_mut() {
                    Some((_, _, sub)) => sub.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = settle => {
                    let Some((n, since, _)) = inflight.pop_front() else { break };
                    match r {
                        Ok(_) => accepted += n,
                        Err(Refused { error: LogError::Closed, events }) => {
                            tracing::error!(lost = events.len(), "The event log has stopped; events not accepted.");
                            break;
                        }
                        // Held back (a full disk): retried until accepted.
                        // Batches already in flight behind it may commit
                        // first, so across a full disk events can come out
                        // of order (never lost).
                        Err(Refused { events, .. }) => {
                            if !append_until_accepted(&log, events, since, &abort).await {
                                break;
                            }
                            accepted += n;
                        }
                    }
                }
                b = brx.recv(), if open && room => {
                    let Some((events, since)) = b else {
                        open = false;
                        continue;
                    };
                    let n = events.len() as u64;
                    match log.submit_append(events, Some(since)).await {
                        Ok(sub) => inflight.push_back((n, since, sub)),
                        Err(refused) => {
                            tracing::error!(lost = refused.events.len(), "The event log has stopped; events not accepted.");
                            break;
                        }
                    }
                }
            }
        }
        accepted
    };
    let collector = async move {
        let mut batch: Vec<Event> = Vec::with_capacity(max_batch);
        // When the batch's first event came: its commit waits from then.
        let mut since = tokio::time::Instant::now();
        let mut open = true;
        while open || !batch.is_empty() {
            let room = max_batch - batch.len();
            let has = !batch.is_empty();
            tokio::select! {
                permit = btx.reserve(), if has => {
                    let Ok(permit) = permit else { break };
                    permit.send((std::mem::replace(&mut batch, Vec::with_capacity(max_batch)), since));
                }
                n = rx.recv_many(&mut batch, room), if open && room > 0 => {
                    if n == 0 {
                        open = false;
                    } else if n == batch.len() {
                        since = tokio::time::Instant::now();
                    }
                }
            }
        }
        // Dropping the sender ends the appender after the last batch.
    };
    let ((), accepted) = tokio::join!(collector, appender);
    accepted
}

/// Batches handed to the log's writer before the oldest is committed.
const MAX_IN_FLIGHT: usize = 4;

/// Appends, retrying with back-off while the disk is full. Returns false if
/// the log failed for good or `abort` fired first (the events were not accepted).
async fn append_until_accepted(
    log: &EventLog,
    events: Vec<Event>,
    since: tokio::time::Instant,
    abort: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut reported = false;
    let mut disk_full = false;
    let mut events = events;
    loop {
        match log.append_since(events, since).await {
            Ok(_) => {
                if reported && disk_full {
                    tracing::info!("Disk space is back; the event log accepts events again.");
                } else if reported {
                    tracing::info!("The event log accepts events again.");
                }
                return true;
            }
            Err(Refused {
                error: LogError::Closed,
                events: held,
            }) => {
                tracing::error!(
                    lost = held.len(),
                    "The event log has stopped; events not accepted."
                );
                return false;
            }
            Err(Refused {
                error,
                events: held,
            }) => {
                events = held;
                if !reported {
                    disk_full = matches!(error, LogError::DiskFull);
                    if disk_full {
                        tracing::error!(
                            held = events.len(),
                            "Disk full: the event log refuses events; holding them and slowing the drivers until space returns."
                        );
                    } else {
                        tracing::error!(error = %error, held = events.len(), "The event log failed; holding the events and retrying.");
                    }
                    reported = true;
                }
                tokio::select! {
                    () = abort.cancelled() => {
                        tracing::error!(lost = events.len(), "Shutting down while the log refuses events; they were not accepted.");
                        return false;
                    }
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // test code
    use std::sync::atomic::{AtomicU64, Ordering};

    use outpost_core::{Body, FixedClock, Point, Seq, Timestamp, Value};
    use outpost_sync::log::{Limits, LogOptions, StoreOptions};

    use super::*;

    /// A log in `dir` with these limits and group-commit settings.
    fn open_log(
        dir: &tempfile::TempDir,
        max_page_count: Option<u32>,
        commit_max_events: usize,
        commit_max_delay: Duration,
    ) -> EventLog {
        let opts = LogOptions {
            store: StoreOptions {
                durability: outpost_config::Durability::Normal,
                limits: Limits::UNLIMITED,
                max_page_count,
                reserve_bytes: 0,
            },
            commit_max_events,
            commit_max_delay,
            clock_wait: Duration::ZERO,
        };
        let clock = Arc::new(FixedClock::new(1_764_000_000_000));
        EventLog::open(&dir.path().join("e.db"), opts, clock)
            .unwrap()
            .0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_are_gathered_while_a_batch_waits_for_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(&dir, None, 1000, Duration::from_millis(300));
        // A channel of 4, as the drivers' is small next to a commit's wait.
        let (tx, rx) = mpsc::channel(4);
        let ingest = tokio::spawn(ingest_task(log.clone(), rx, 1000, CancellationToken::new()));
        for i in 0..2000i64 {
            let ev = Event::new(
                "d",
                Timestamp::synced(i),
                Body::Telemetry(vec![Point::good("v", Value::I64(i))]),
            );
            tx.send(ev).await.unwrap();
        }
        drop(tx);
        assert_eq!(ingest.await.unwrap(), 2000);
        let stats = log.stats().borrow().clone();
        assert_eq!(stats.appended_total, 2000);
        // Waiting for one commit, the next batch filled up: a handful of
        // commits, not one per channel's worth (500).
        assert!(stats.commits_total <= 10, "{} commits", stats.commits_total);
        let all = log.read(Seq(0), 5000).await.unwrap();
        let order: Vec<i64> = all.iter().map(|e| e.event.ts.unix_ms).collect();
        assert_eq!(order, (0..2000).collect::<Vec<_>>(), "in order");
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_blocks_the_producer_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(&dir, Some(192), 100, Duration::from_millis(1)); // 192 KiB of 1 KiB pages
        log.set_cursors(vec!["up".into()]).await.unwrap();

        let (tx, rx) = mpsc::channel(4);
        let abort = CancellationToken::new();
        let ingest = tokio::spawn(ingest_task(log.clone(), rx, 100, abort.clone()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let producer = {
            let (sent, stop) = (sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0i64;
                while !stop.is_cancelled() {
                    let ev = Event::new(
                        "d",
                        Timestamp::synced(i),
                        Body::Telemetry(vec![Point::good("v", Value::I64(i))]),
                    );
                    tokio::select! {
                        () = stop.cancelled() => break,
                        r = tx.send(ev) => if r.is_err() { break },
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        };

        let mut stats = log.stats();
        tokio::time::timeout(Duration::from_secs(30), stats.wait_for(|s| s.disk_full))
            .await
            .expect("the log fills up")
            .unwrap();
        // Blocked: once the batches already handed to the writer have come
        // back refused, the producer gets no further than the channel and
        // the held batches. Before that, at most those batches (in flight,
        // and the one being gathered) and the channel's room are taken.
        let a = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let b = sent.load(Ordering::SeqCst);
        let admitted = (MAX_IN_FLIGHT as u64 + 1) * 100 + 4;
        assert!(
            b - a <= admitted,
            "the producer kept going while the disk was full ({a} -> {b})"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let c = sent.load(Ordering::SeqCst);
        assert!(
            c - b <= 4,
            "the producer kept going while the disk was full ({a} -> {b} -> {c})"
        );

        // Space returns: the uplink acknowledges everything stored.
        let last = log
            .read(outpost_core::Seq(0), 1_000_000)
            .await
            .unwrap()
            .last()
            .unwrap()
            .seq;
        log.ack("up", last).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), stats.wait_for(|s| !s.disk_full))
            .await
            .expect("appends resume")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            while sent.load(Ordering::SeqCst) < b + 50 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the producer moves again");

        stop.cancel();
        producer.await.unwrap();
        let accepted = ingest.await.unwrap();
        let total = sent.load(Ordering::SeqCst);
        assert_eq!(accepted, total, "every event sent was accepted by the log");
        assert_eq!(log.stats().borrow().appended_total, total);
        log.close().await;
    }
}
