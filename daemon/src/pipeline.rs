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

use std::sync::Arc;
use std::time::Duration;

use outpost_core::{Clock, Event};
use outpost_rules::Stage;
use outpost_sync::{EventLog, LogError, Refused};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs events through the rules stage.
pub async fn rules_task(
    mut stage: Box<dyn Stage>,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
) {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => stage.on_event(clock.now(), ev, &mut out),
                None => break,
            },
            _ = tick.tick() => stage.on_tick(clock.now(), &mut out),
        }
        for ev in out.drain(..) {
            if tx.send(ev).await.is_err() {
                tracing::error!("The ingest task has stopped; the rules task ends.");
                return;
            }
        }
    }
}

/// Moves events into the log in batches of at most `max_batch`.
/// `abort` cancels a retry loop that cannot finish (a disk still full at shutdown).
pub async fn ingest_task(
    log: EventLog,
    mut rx: mpsc::Receiver<Event>,
    max_batch: usize,
    abort: CancellationToken,
) -> u64 {
    let mut accepted: u64 = 0;
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        if rx.recv_many(&mut batch, max_batch).await == 0 {
            break;
        }
        let events = std::mem::take(&mut batch);
        let n = events.len() as u64;
        if !append_until_accepted(&log, events, &abort).await {
            break;
        }
        accepted += n;
    }
    accepted
}

/// Appends, retrying with back-off while the disk is full. Returns false if
/// the log failed for good or `abort` fired first (the events were not accepted).
async fn append_until_accepted(
    log: &EventLog,
    events: Vec<Event>,
    abort: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut reported = false;
    let mut events = events;
    loop {
        match log.append(events).await {
            Ok(_) => {
                if reported {
                    tracing::info!("Disk space is back; the event log accepts events again.");
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
                    if matches!(error, LogError::DiskFull) {
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
