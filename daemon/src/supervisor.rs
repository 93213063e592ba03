//! Runs one device's driver and restarts it with capped exponential
//! back-off when it fails, so a failing device never stops the daemon.
//!
//! Invariants: a restart rebuilds the driver from its configuration; the
//! back-off resets after the driver has run for a while without failing; a
//! panic inside a driver is caught by its task and treated as a failure;
//! cancellation always wins over waiting; every poll of the driver marks its
//! liveness stage busy, so a driver loop that never yields stops the
//! systemd watchdog's pings.

use std::time::Duration;

use outpost_core::liveness::Stage;
use outpost_core::{Body, DeviceStatus, Event, Status};
use outpost_drivers::{BuildError, Driver, DriverContext, DriverSpec};
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long counts as healthy and resets the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Runs a driver until stopped, busy on `stage` while it runs (the
/// watchdog's view of it).
pub async fn supervise(spec: DriverSpec, cx: DriverContext, stage: Stage) {
    let name = spec.name.clone();
    supervise_with(&name, move || Ok(spec.build()), cx, stage).await;
}

/// Runs drivers made by `make` until stopped, restarting after failures.
/// Returns the number of failures seen.
pub async fn supervise_with<F>(device: &str, make: F, cx: DriverContext, stage: Stage) -> u64
where
    F: Fn() -> Result<Box<dyn Driver>, BuildError>,
{
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        if cx.stop.is_cancelled() {
            return failures;
        }
        let driver = match make() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(device, error = %e, "Cannot build the device driver; it stays off.");
                return failures;
            }
        };
        let started = tokio::time::Instant::now();
        let outcome = outpost_core::task::spawn(stage.clone().watch(driver.run(cx.clone()))).await;
        let message = match outcome {
            Ok(Ok(())) => return failures,
            Ok(Err(outpost_drivers::DriverError::PipelineClosed { .. })) => return failures,
            Ok(Err(e)) => e.to_string(),
            Err(join) if join.is_panic() => "the driver panicked".to_string(),
            Err(join) => join.to_string(),
        };
        failures += 1;
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(device, failures, retry_in_ms = backoff.as_millis() as u64, error = %message, "Device driver failed; restarting.");
        let status = Event::new(
            device.to_string(),
            cx.clock.now(),
            Body::Status(Status {
                status: DeviceStatus::Offline,
                detail: format!(
                    "driver failed: {message}; restarting in {} ms",
                    backoff.as_millis()
                ),
            }),
        );
        if !send_or_stop(&cx, status).await {
            return failures;
        }
        if !sleep_or_stop(&cx.stop, jitter(backoff)).await {
            return failures;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn send_or_stop(cx: &DriverContext, ev: Event) -> bool {
    tokio::select! {
        biased;
        () = cx.stop.cancelled() => false,
        r = cx.out.send(ev) => r.is_ok(),
    }
}

async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// ±20 % so that many devices failing together do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    outpost_core::jitter(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // test code
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use outpost_core::{Body, DeviceStatus, FixedClock};
    use outpost_drivers::{DriverError, DriverFuture};
    use tokio::sync::mpsc;

    use super::*;

    /// Fails (or panics) on its first `bad` runs, then runs until stopped.
    #[derive(Debug)]
    struct Flaky {
        run: u32,
        bad: u32,
        panics: bool,
    }

    impl Driver for Flaky {
        fn device(&self) -> &str {
            "flaky"
        }
        fn run(self: Box<Self>, cx: DriverContext) -> DriverFuture {
            Box::pin(async move {
                if self.run < self.bad {
                    if self.panics {
                        panic!("driver bug on run {}", self.run);
                    }
                    return Err(DriverError::Failed {
                        device: "flaky".into(),
                        message: format!("port vanished on run {}", self.run),
                    });
                }
                cx.stop.cancelled().await;
                Ok(())
            })
        }
    }

    async fn run_flaky(bad: u32, panics: bool) -> (u64, Vec<Event>, std::time::Duration) {
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let cx = DriverContext {
            out: tx,
            stop: stop.clone(),
            clock: Arc::new(FixedClock::new(0)),
            commands: outpost_drivers::command::inbox().1,
            metrics: outpost_drivers::metrics::Metrics::default(),
        };
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let make = move || -> Result<Box<dyn Driver>, BuildError> {
            let run = r.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Flaky { run, bad, panics }))
        };
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            supervise_with("flaky", make, cx, Stage::detached("flaky")).await
        });
        // Wait (in paused time) until the driver runs healthy, then stop it.
        while runs.load(Ordering::SeqCst) <= bad {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = start.elapsed();
        stop.cancel();
        let failures = task.await.unwrap();
        let mut events = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        (failures, events, elapsed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_driver_is_restarted_with_growing_backoff() {
        let (failures, events, elapsed) = run_flaky(4, false).await;
        assert_eq!(failures, 4);
        let offline: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Status(s) if s.status == DeviceStatus::Offline => Some(s.detail.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            offline.len(),
            4,
            "one status event per failure: {offline:?}"
        );
        assert!(
            offline[0].contains("port vanished on run 0"),
            "{}",
            offline[0]
        );
        assert!(
            offline[3].contains("restarting in 4000 ms"),
            "back-off doubles: {offline:?}"
        );
        // 0.5 + 1 + 2 + 4 s of back-off, each within ±20 %.
        assert!(
            elapsed >= Duration::from_millis(6_000) && elapsed <= Duration::from_millis(9_500),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_driver_is_restarted_not_fatal() {
        let (failures, events, _) = run_flaky(2, true).await;
        assert_eq!(failures, 2);
        assert!(events
            .iter()
            .any(|e| matches!(&e.body, Body::Status(s) if s.detail.contains("panicked"))));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }
}
