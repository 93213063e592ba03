//! Modbus TCP against the pymodbus peer: 50 devices x 100 registers polled
//! every 100 ms (500 requests/s, 50,000 registers/s asked for), each device
//! on its own connection. Prints requests/s achieved and CPU per 1,000
//! registers, ours and the peer's, as one JSON line.

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // benchmark code

use std::sync::Arc;
use std::time::Duration;

use outpost_core::{ClockPolicy, SystemClock};
use outpost_drivers::metrics::Metrics;
use outpost_drivers::DriverContext;
use outpost_tests::{proc_cpu_seconds, ModbusPeer};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 50;
const REGISTERS: u16 = 100;

fn main() {
    let devices: Vec<_> = (1..=DEVICES)
        .map(|u| json!({"id": u, "holding": [{"addr": 0, "registers": (0..REGISTERS).collect::<Vec<_>>()}]}))
        .collect();
    let peer = ModbusPeer::tcp(&json!({ "devices": devices }));
    let mut toml = String::from("[gateway]\nid = \"bench\"\n");
    for u in 1..=DEVICES {
        toml.push_str(&format!(
            "[[device]]\nname = \"d{u}\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nunit = {u}\nperiod = \"100ms\"\ntimeout = \"1s\"\n",
            peer.port
        ));
        for a in 0..REGISTERS {
            toml.push_str(&format!(
                "[[device.modbus.tag]]\nname = \"r{a}\"\ntable = \"holding\"\naddress = {a}\n"
            ));
        }
    }
    let cfg = outpost_config::parse(&toml, "bench.toml").unwrap();
    let peer_pid = peer.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let stop = CancellationToken::new();
        let metrics = Metrics::default();
        for spec in outpost_drivers::specs(&cfg).unwrap() {
            let cx = DriverContext {
                out: tx.clone(),
                stop: stop.clone(),
                clock: Arc::new(SystemClock::new(ClockPolicy::Trust)),
                commands: outpost_drivers::command::inbox().1,
                metrics: metrics.clone(),
            };
            let d = spec.build();
            tokio::spawn(async move {
                let _ = d.run(cx).await;
            });
        }
        drop(tx);
        let drain = tokio::spawn(async move {
            let mut points = 0u64;
            while let Some(ev) = rx.recv().await {
                if let outpost_core::Body::Telemetry(p) = ev.body {
                    points += p.len() as u64;
                }
            }
            points
        });
        // Warm up: connections open, first polls done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // (requests, responses, failed requests: exceptions and faults).
        let total = |m: &Metrics| {
            m.snapshot().iter().fold((0, 0, 0), |a, (_, s)| {
                let failed = s.exceptions + s.timeouts + s.crc_errors + s.truncated + s.garbage + s.mismatches + s.io_errors;
                (a.0 + s.requests, a.1 + s.responses, a.2 + failed)
            })
        };
        let (r0, ok0, e0) = total(&metrics);
        let me = std::process::id();
        let (c0, p0) = (proc_cpu_seconds(me), proc_cpu_seconds(peer_pid));
        let secs = 10.0;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let (r1, ok1, e1) = total(&metrics);
        let (c1, p1) = (proc_cpu_seconds(me), proc_cpu_seconds(peer_pid));
        stop.cancel();
        let _ = drain.await;
        let req_s = (r1 - r0) as f64 / secs;
        let regs = (ok1 - ok0) as f64 * f64::from(REGISTERS);
        let lat: u64 = metrics.snapshot().iter().map(|(_, s)| s.latency_us_avg).sum::<u64>() / DEVICES as u64;
        println!(
            "{{\"bench\":\"modbus_tcp\",\"devices\":{DEVICES},\"registers_per_device\":{REGISTERS},\"period_ms\":100,\"requests_per_s\":{req_s:.1},\"asked_requests_per_s\":{},\"errors\":{},\"registers_per_s\":{:.0},\"our_cpu_ms_per_1000_registers\":{:.3},\"our_cpu_percent\":{:.1},\"peer_cpu_percent\":{:.1},\"avg_latency_us\":{lat}}}",
            DEVICES * 10,
            e1 - e0,
            regs / secs,
            (c1 - c0) * 1000.0 / (regs / 1000.0),
            (c1 - c0) * 100.0 / secs,
            (p1 - p0) * 100.0 / secs,
        );
    });
    drop(peer);
}
