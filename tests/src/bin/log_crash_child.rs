//! Child process for the crash test: appends to an event log with
//! `durability = "full"` from several tasks, and prints a line per
//! acknowledged append: `ack <first> <last> <writer> <n>` where the events
//! carry the values `writer * 1_000_000_000 + n ..`. It runs until killed.

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(clippy::let_underscore_must_use)] // a broken stdout pipe means the parent is gone

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use outpost_config::Durability;
use outpost_core::{Body, Event, Point, SystemClock, Timestamp, Value};
use outpost_sync::log::{Limits, LogOptions, StoreOptions, DEFAULT_RESERVE_BYTES};
use outpost_sync::EventLog;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: log_crash_child DB_PATH [RUN_ID]");
        std::process::exit(2);
    };
    let run: i64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(async move {
        let opts = LogOptions {
            store: StoreOptions {
                durability: Durability::Full,
                limits: Limits::UNLIMITED,
                max_page_count: None,
                reserve_bytes: DEFAULT_RESERVE_BYTES,
            },
            commit_max_events: 500,
            commit_max_delay: Duration::from_millis(2),
            clock_wait: Duration::ZERO,
        };
        let (log, _) = match EventLog::open(
            std::path::Path::new(&path),
            opts,
            Arc::new(SystemClock::new(outpost_core::ClockPolicy::Trust)),
        ) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("open: {e}");
                std::process::exit(3);
            }
        };
        println!("ready");
        let mut tasks = Vec::new();
        for writer in 0..4i64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let base = (run * 10 + writer) * 1_000_000_000;
                let mut n: i64 = 0;
                loop {
                    let k = 1 + (n % 37) as usize;
                    let events: Vec<Event> = (0..k as i64)
                        .map(|i| {
                            Event::new(
                                format!("dev-{writer}"),
                                Timestamp::synced(1_764_000_000_000 + n + i),
                                Body::Telemetry(vec![Point::good("v", Value::I64(base + n + i))]),
                            )
                        })
                        .collect();
                    match log.append(events).await {
                        Ok(a) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(
                                out,
                                "ack {} {} {} {}",
                                a.first.0,
                                a.last.0,
                                writer,
                                base + n
                            );
                            let _ = out.flush();
                        }
                        Err(e) => {
                            eprintln!("append: {e}");
                            std::process::exit(4);
                        }
                    }
                    n += k as i64;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
