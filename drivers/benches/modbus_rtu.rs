//! Modbus RTU throughput on a timing-model line (ptys ignore baud rates):
//! the real poller and RTU link polling 125-register reads as fast as the
//! line allows, against the ceiling of 11-bit characters and zero device
//! latency. Prints one JSON line per baud rate.
#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // benchmark code

use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_config::modbus::{ModbusDevice, ModbusTag, Table};
use outpost_core::{ClockPolicy, SystemClock};
use outpost_drivers::metrics::Metrics;
use outpost_drivers::modbus::line_model::{pair, ModelSlave, SlaveStats};
use outpost_drivers::modbus::link::{Link, RtuLink};
use outpost_drivers::modbus::poller::DevicePoller;
use tokio::time::Instant;

fn device() -> ModbusDevice {
    let tags = (0..125u16)
        .map(|a| ModbusTag::new(&format!("r{a}"), Table::Holding, a))
        .collect();
    ModbusDevice {
        bus: Some("model".into()),
        tcp: None,
        rtu_over_tcp: None,
        unit: 1,
        // Shorter than a transaction: poll back to back.
        period: outpost_config::Duration::from_millis(10),
        timeout: outpost_config::Duration::from_millis(500),
        retries: 0,
        max_registers: 125,
        max_bits: 2000,
        max_gap: 8,
        backoff_max: outpost_config::Duration::from_secs(60),
        tags,
    }
}

async fn run(baud: u32, seconds: f64) {
    let bits = 11u32;
    let char_time = Duration::from_secs_f64(f64::from(bits) / f64::from(baud));
    let gap = Duration::from_secs_f64((3.5 * char_time.as_secs_f64()).max(0.00175));
    let (master, slave_end) = pair(baud, bits);
    let stats = Arc::new(Mutex::new(SlaveStats::default()));
    let slave = ModelSlave {
        unit: 1,
        registers: (0..125).collect(),
        gap,
        stats: stats.clone(),
    };
    tokio::spawn(slave.serve(slave_end));

    let metrics = Metrics::default();
    let mut poller = DevicePoller::new("bench", &device(), &metrics);
    let mut link = Link::Rtu(RtuLink::new(Box::new(master), char_time, gap));
    let clock = SystemClock::new(ClockPolicy::Trust);
    let mut events = Vec::new();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let (at, g) = poller.next_due().unwrap();
        tokio::time::sleep_until(at).await;
        poller
            .poll(g, &mut link, &clock, &mut events)
            .await
            .unwrap();
        events.clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let m = metrics.snapshot()[0].1.clone();
    let regs = m.responses as f64 * 125.0;
    let rate = regs / elapsed;
    // Request 8 + response 255 characters, plus two 3.5-character gaps.
    let ceiling = 125.0 / (263.0 * char_time.as_secs_f64() + 2.0 * gap.as_secs_f64());
    let s = *stats.lock().unwrap();
    println!(
        "{{\"bench\":\"modbus_rtu_model\",\"baud\":{baud},\"registers_per_request\":125,\"seconds\":{elapsed:.2},\"requests\":{},\"errors\":{},\"registers_per_s\":{rate:.1},\"ceiling_per_s\":{ceiling:.1},\"fraction_of_ceiling\":{:.3},\"gap_violations\":{},\"cpu_s\":{cpu:.3}}}",
        m.requests,
        m.requests - m.responses,
        rate / ceiling,
        s.gap_violations
    );
}

/// User + system CPU time of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run(9600, 6.5).await;
        run(115_200, 5.0).await;
    });
}
