//! A GPIO pulse counter across a restart, through a real event log: the
//! driver's loop counts fake pulses, its reports go into the log, the
//! "restarted" driver starts from the last count the log holds and counts
//! on. (Real lines need a kernel GPIO simulator, which this machine lacks;
//! the logic is the same.)

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::sync::Arc;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use outpost_core::{Body, FixedClock, Value};
use outpost_drivers::command::inbox;
use outpost_drivers::gpio::core::{run, Input, InputKind, OutputLine};
use outpost_drivers::gpio::logic::{Edge, PulseCounter};
use outpost_drivers::metrics::Metrics;
use outpost_drivers::DriverContext;
use outpost_sync::log::{Durability, Limits, StoreOptions};
use outpost_sync::{EventLog, LogOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug)]
struct NoPin;

impl ErrorType for NoPin {
    type Error = std::convert::Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn open_log(dir: &std::path::Path) -> EventLog {
    let opts = LogOptions {
        store: StoreOptions {
            durability: Durability::Full,
            limits: Limits::UNLIMITED,
            max_page_count: None,
            reserve_bytes: 0,
        },
        commit_max_events: 100,
        commit_max_delay: Duration::from_millis(1),
        clock_wait: Duration::ZERO,
    };
    EventLog::open(
        &dir.join("events.db"),
        opts,
        Arc::new(FixedClock::new(1_764_000_000_000)),
    )
    .unwrap()
    .0
}

/// Runs the loop with a pulse input starting at `restored`, feeds `pulses`
/// pulses, waits for a report showing them, stops; every event goes into
/// the log. Returns the count the last report showed.
async fn counting_run(log: &EventLog, restored: u64, pulses: u64) -> u64 {
    let (out_tx, mut out) = mpsc::channel(64);
    let (_cmd, commands) = inbox();
    let stop = tokio_util::sync::CancellationToken::new();
    let cx = DriverContext {
        out: out_tx,
        stop: stop.clone(),
        clock: Arc::new(FixedClock::new(1_764_000_000_000)),
        commands,
        metrics: Metrics::default(),
    };
    let (tx, rx) = mpsc::channel(64);
    let inputs = vec![Input {
        name: "water".into(),
        kind: InputKind::Pulse(PulseCounter::new(restored, Duration::from_secs(60))),
        edges: rx,
    }];
    let task = tokio::spawn(async move {
        run::<NoPin>(
            "meter",
            inputs,
            Vec::<OutputLine<NoPin>>::new(),
            Duration::from_millis(100),
            &cx,
        )
        .await
    });
    for _ in 0..pulses {
        tx.send(Edge {
            high: true,
            at: Instant::now(),
        })
        .await
        .unwrap();
        tx.send(Edge {
            high: false,
            at: Instant::now(),
        })
        .await
        .unwrap();
    }
    let want = restored + pulses;
    let mut last = 0;
    while last != want {
        let ev = tokio::time::timeout(Duration::from_secs(10), out.recv())
            .await
            .expect("a report within 10 s")
            .unwrap();
        if let Body::Telemetry(p) = &ev.body {
            if let Some(Value::U64(n)) = p.iter().find(|p| p.tag == "water").map(|p| &p.value) {
                last = *n;
            }
        }
        log.append(vec![ev]).await.unwrap();
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulse_count_continues_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    assert_eq!(counting_run(&log, 0, 25).await, 25);
    log.close().await;

    // The daemon starts again: the count comes back from the log.
    let log = open_log(dir.path());
    let restored = log
        .last_values("meter", vec!["water".into()])
        .await
        .unwrap();
    assert_eq!(restored.get("water"), Some(&Value::U64(25)));
    let from = match restored.get("water") {
        Some(Value::U64(n)) => *n,
        _ => 0,
    };
    assert_eq!(
        counting_run(&log, from, 10).await,
        35,
        "the count went on from 25"
    );
    log.close().await;
}
