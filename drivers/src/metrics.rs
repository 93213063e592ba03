//! Per-device counters, shared with the daemon (which logs and, later,
//! serves them). Lock-free counters; the last error behind a short lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one device.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub exceptions: AtomicU64,
    pub timeouts: AtomicU64,
    pub crc_errors: AtomicU64,
    pub truncated: AtomicU64,
    pub garbage: AtomicU64,
    pub mismatches: AtomicU64,
    pub io_errors: AtomicU64,
    /// Bytes on the line that belonged to no response, dropped.
    pub noise_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_errors: AtomicU64,
    pub latency_us_sum: AtomicU64,
    pub latency_us_max: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of a device's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub requests: u64,
    pub responses: u64,
    pub exceptions: u64,
    pub timeouts: u64,
    pub crc_errors: u64,
    pub truncated: u64,
    pub garbage: u64,
    pub mismatches: u64,
    pub io_errors: u64,
    pub noise_bytes: u64,
    pub writes: u64,
    pub write_errors: u64,
    pub latency_us_avg: u64,
    pub latency_us_max: u64,
    pub last_error: Option<String>,
}

impl DeviceMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn latency(&self, us: u64) {
        self.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.latency_us_max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.into());
        }
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let responses = get(&self.responses) + get(&self.exceptions);
        DeviceSnapshot {
            requests: get(&self.requests),
            responses: get(&self.responses),
            exceptions: get(&self.exceptions),
            timeouts: get(&self.timeouts),
            crc_errors: get(&self.crc_errors),
            truncated: get(&self.truncated),
            garbage: get(&self.garbage),
            mismatches: get(&self.mismatches),
            io_errors: get(&self.io_errors),
            noise_bytes: get(&self.noise_bytes),
            writes: get(&self.writes),
            write_errors: get(&self.write_errors),
            latency_us_avg: get(&self.latency_us_sum)
                .checked_div(responses)
                .unwrap_or(0),
            latency_us_max: get(&self.latency_us_max),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// The registry of every device's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Mutex<BTreeMap<String, Arc<DeviceMetrics>>>>);

impl Metrics {
    /// The counters of `device`, created on first use.
    pub fn device(&self, device: &str) -> Arc<DeviceMetrics> {
        match self.0.lock() {
            Ok(mut m) => m.entry(device.to_string()).or_default().clone(),
            Err(_) => Arc::new(DeviceMetrics::default()),
        }
    }

    pub fn snapshot(&self) -> Vec<(String, DeviceSnapshot)> {
        match self.0.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect(),
            Err(_) => Vec::new(),
        }
    }
}
