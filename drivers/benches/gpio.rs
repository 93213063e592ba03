//! GPIO with fakes, through the driver's loop on a real clock: edge-to-
//! event latency of level changes (p50/p99 over 10,000 changes, no
//! debounce), and pulses counted per second with the count checked (no
//! pulse lost). `cargo bench -p outpost-drivers --bench gpio`; prints one
//! JSON object.
#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use outpost_core::{Body, SystemClock, Value};
use outpost_drivers::command::inbox;
use outpost_drivers::gpio::core::{run, Input, InputKind, OutputLine};
use outpost_drivers::gpio::logic::{Debouncer, Edge, PulseCounter};
use outpost_drivers::metrics::Metrics;
use outpost_drivers::DriverContext;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug)]
struct NoPin;

impl ErrorType for NoPin {
    type Error = Infallible;
}

impl OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (out_tx, mut out) = mpsc::channel(1024);
        let (_cmd, commands) = inbox();
        let stop = tokio_util::sync::CancellationToken::new();
        let cx = DriverContext {
            out: out_tx,
            stop: stop.clone(),
            clock: Arc::new(SystemClock::new(outpost_core::ClockPolicy::Trust)),
            commands,
            metrics: Metrics::default(),
        };
        let (level_tx, level_rx) = mpsc::channel(64);
        let (pulse_tx, pulse_rx) = mpsc::channel(4096);
        let inputs = vec![
            Input { name: "contact".into(), kind: InputKind::Level(Debouncer::new(false, Duration::ZERO)), edges: level_rx },
            Input { name: "meter".into(), kind: InputKind::Pulse(PulseCounter::new(0, Duration::from_secs(60))), edges: pulse_rx },
        ];
        let task = tokio::spawn(async move {
            run::<NoPin>("bench", inputs, Vec::<OutputLine<NoPin>>::new(), Duration::from_secs(1), &cx).await
        });
        let _first_report = out.recv().await.unwrap();

        // Latency: one change at a time, edge sent to telemetry received.
        let mut lat = Vec::with_capacity(10_000);
        let mut high = false;
        for _ in 0..10_000 {
            high = !high;
            let t = Instant::now();
            level_tx.send(Edge { high, at: t }).await.unwrap();
            // The change (a periodic report may come first: skip it).
            loop {
                let ev = out.recv().await.unwrap();
                if let Body::Telemetry(p) = &ev.body {
                    if p.len() == 1 && p[0].tag == "contact" {
                        break;
                    }
                }
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(f64::total_cmp);
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];

        // Pulses: a million, as fast as they can be fed.
        let n: u64 = 1_000_000;
        let t = Instant::now();
        for i in 0..n {
            let at = Instant::now();
            pulse_tx.send(Edge { high: true, at }).await.unwrap();
            pulse_tx.send(Edge { high: false, at }).await.unwrap();
            if i % 100_000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Every pulse must show in the count of a following report.
        let counted = loop {
            let ev = out.recv().await.unwrap();
            if let Body::Telemetry(p) = &ev.body {
                if let Some(c) = p.iter().find(|p| p.tag == "meter") {
                    if c.value == Value::U64(n) {
                        break n;
                    }
                }
            }
        };
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(counted, n, "pulses lost");
        drop(level_tx);
        stop.cancel();
        task.await.unwrap().unwrap();
        println!(
            "{}",
            serde_json::json!({
                "edge_to_event_us": {"p50": p(0.5), "p99": p(0.99), "changes": lat.len()},
                "pulses": {"counted": counted, "seconds_until_reported": secs, "per_s_at_least": n as f64 / secs},
            })
        );
    });
}
