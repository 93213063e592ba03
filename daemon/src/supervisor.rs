//! Runs one device's driver and restarts it with capped exponential
//! back-off when it fails, so a failing device never stops the daemon.
//!
//! Invariants: a restart rebuilds the driver from its configuration; the
//! back-off resets after the driver has run for a while without failing; a
//! panic inside a driver is caught by its task and treated as a failure;
//! cancellation always wins over waiting.

use std::time::Duration;

use outpost_config::Device;
use outpost_core::{Body, DeviceStatus, Event, Status};
use outpost_drivers::DriverContext;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long counts as healthy and resets the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

pub async fn supervise(dev: Device, cx: DriverContext) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        if cx.stop.is_cancelled() {
            return;
        }
        let driver = match outpost_drivers::build(&dev) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(device = %dev.name, error = %e, "Cannot build the device driver; it stays off.");
                return;
            }
        };
        let started = tokio::time::Instant::now();
        let outcome = tokio::spawn(driver.run(cx.clone())).await;
        let message = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(outpost_drivers::DriverError::PipelineClosed { .. })) => return,
            Ok(Err(e)) => e.to_string(),
            Err(join) if join.is_panic() => "the driver panicked".to_string(),
            Err(join) => join.to_string(),
        };
        failures += 1;
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        tracing::warn!(device = %dev.name, failures, retry_in_ms = backoff.as_millis() as u64, error = %message, "Device driver failed; restarting.");
        let status = Event::new(
            dev.name.clone(),
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
            return;
        }
        if !sleep_or_stop(&cx.stop, jitter(backoff)).await {
            return;
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let factor = 0.8 + 0.4 * (f64::from(nanos % 1000) / 1000.0);
    d.mul_f64(factor)
}
