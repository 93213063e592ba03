//! The drivers of a configuration, running in the test's runtime, with
//! their events collected: what the driver integration tests (Modbus,
//! serial) start and inspect.

#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_core::{Body, Event, Quality, SystemClock, Value};
use outpost_drivers::command::Router;
use outpost_drivers::metrics::Metrics;
use outpost_drivers::DriverContext;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Drivers of a configuration, running.
#[derive(Debug)]
pub struct Running {
    pub rx: mpsc::Receiver<Event>,
    pub stop: CancellationToken,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub router: Router,
    pub metrics: Metrics,
    pub seen: Vec<Event>,
}

/// Starts the drivers of the configuration `toml`.
pub fn start(toml: &str) -> Running {
    let cfg = outpost_config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel(1024);
    let stop = CancellationToken::new();
    let metrics = Metrics::default();
    let mut router = Router::default();
    let mut tasks = Vec::new();
    for spec in outpost_drivers::specs(&cfg).unwrap() {
        let (ctx, inbox) = outpost_drivers::command::inbox();
        for d in &spec.devices {
            router.add(d, ctx.clone());
        }
        let cx = DriverContext {
            out: tx.clone(),
            stop: stop.clone(),
            clock: Arc::new(SystemClock::new(outpost_core::ClockPolicy::Trust)),
            commands: inbox,
            metrics: metrics.clone(),
        };
        let driver = spec.build();
        tasks.push(tokio::spawn(async move {
            match driver.run(cx).await {
                Ok(()) | Err(outpost_drivers::DriverError::PipelineClosed { .. }) => {}
                Err(e) => panic!("driver failed: {e}"),
            }
        }));
    }
    Running {
        rx,
        stop,
        tasks,
        router,
        metrics,
        seen: Vec::new(),
    }
}

impl Running {
    /// Waits for the next telemetry of `device`; returns tag -> (value, quality).
    pub async fn telemetry(&mut self, device: &str) -> BTreeMap<String, (Value, Quality)> {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no telemetry from {device} within 10 s"))
                .unwrap();
            self.seen.push(ev.clone());
            if ev.device == device {
                if let Body::Telemetry(points) = ev.body {
                    return points
                        .into_iter()
                        .map(|p| (p.tag, (p.value, p.quality)))
                        .collect();
                }
            }
        }
    }

    /// Collects events for `d`.
    pub async fn collect(&mut self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while let Ok(Some(ev)) = tokio::time::timeout_at(end, self.rx.recv()).await {
            self.seen.push(ev);
        }
    }

    pub fn count_telemetry(&self, device: &str) -> usize {
        self.seen
            .iter()
            .filter(|e| e.device == device && matches!(e.body, Body::Telemetry(_)))
            .count()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("driver stops")
                .unwrap();
        }
    }
}
