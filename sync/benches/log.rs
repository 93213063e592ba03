//! Event log benchmarks: append throughput by durability and batch size,
//! read-and-ack throughput, and, in the same run, the physical limit: plain
//! rusqlite inserts of rows of the same size, in the same transactions, with
//! the same pragmas. The final "ratio" pass alternates log and raw rounds and
//! prints the log's rate as a fraction of the raw rate (robust to a noisy
//! machine), as JSON lines.

#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use outpost_config::Durability;
use outpost_core::{codec, Body, Event, Point, Seq, Timestamp, Value};
use outpost_sync::log::{Limits, Store, StoreOptions, DEFAULT_RESERVE_BYTES, PAGE_SIZE};
use rusqlite::{params, Connection, TransactionBehavior};

const T0: i64 = 1_764_000_000_000;
const BATCHES: [usize; 3] = [1, 100, 1000];

fn reading(i: u64) -> Event {
    Event::new(
        "boiler-1",
        Timestamp::synced(T0 + i as i64),
        Body::Telemetry(vec![Point::good(
            "temperature",
            Value::F64(20.0 + (i % 100) as f64 / 10.0),
        )]),
    )
}

fn opts(d: Durability) -> StoreOptions {
    StoreOptions {
        durability: d,
        limits: Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: DEFAULT_RESERVE_BYTES,
    }
}

fn name(d: Durability) -> &'static str {
    match d {
        Durability::Full => "full",
        Durability::Normal => "normal",
    }
}

/// Appends `batches` batches of `size` events to a fresh log; returns the time.
fn log_run(d: Durability, size: usize, batches: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) =
        Store::open(&dir.path().join("e.db"), opts(d), Timestamp::synced(T0)).unwrap();
    let batch: Vec<Event> = (0..size as u64).map(reading).collect();
    let now = Timestamp::synced(T0);
    let start = Instant::now();
    for _ in 0..batches {
        store.append(&batch, now).unwrap();
    }
    start.elapsed()
}

/// The same rows (same columns, same encoded bytes) inserted with plain
/// rusqlite in transactions of `size` rows, with the log's pragmas.
fn raw_run(d: Durability, size: usize, batches: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("raw.db")).unwrap();
    let sync = if d == Durability::Full {
        "FULL"
    } else {
        "NORMAL"
    };
    // The log's pragmas (see Store::open): its page size, the WAL bounded
    // by half the reserve.
    let page = u64::from(PAGE_SIZE);
    let wal_pages = DEFAULT_RESERVE_BYTES / 2 / page;
    conn.execute_batch(&format!(
        "PRAGMA page_size = {page}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = {wal_pages}; PRAGMA journal_size_limit = {};
         CREATE TABLE events (seq INTEGER PRIMARY KEY, at_ms INTEGER, ts_ms INTEGER NOT NULL, priority INTEGER NOT NULL,
                              device TEXT NOT NULL, kind INTEGER NOT NULL, size INTEGER NOT NULL, body BLOB NOT NULL);",
        wal_pages * page
    ))
    .unwrap();
    // The bytes the log writes: the compact form (the tag list is the
    // log's work, not raw's).
    let mut sets = outpost_sync::log::tagsets::TagsetCache::default();
    let bodies: Vec<Vec<u8>> = (0..size as u64)
        .map(|i| {
            let mut b = Vec::new();
            codec::encode_compact_into(&reading(i), &mut b, &mut sets).unwrap();
            b
        })
        .collect();
    let mut conn = conn;
    let mut seq: i64 = 1;
    let start = Instant::now();
    for _ in 0..batches {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO events (seq, at_ms, ts_ms, priority, device, kind, size, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                .unwrap();
            for b in &bodies {
                ins.execute(params![
                    seq,
                    T0,
                    T0,
                    0,
                    "boiler-1",
                    0,
                    b.len() as i64 + 40,
                    &b[..]
                ])
                .unwrap();
                seq += 1;
            }
        }
        tx.commit().unwrap();
    }
    start.elapsed()
}

/// Reads and acknowledges `rounds` chunks of 1000 from a log prefilled with
/// that many events (reclaiming as it goes).
fn read_ack_run(rounds: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(
        &dir.path().join("e.db"),
        opts(Durability::Normal),
        Timestamp::synced(T0),
    )
    .unwrap();
    store.set_cursors(&["up"]).unwrap();
    let batch: Vec<Event> = (0..1000).map(reading).collect();
    for _ in 0..rounds {
        store.append(&batch, Timestamp::synced(T0)).unwrap();
    }
    let mut after = Seq(0);
    let start = Instant::now();
    for _ in 0..rounds {
        let got = store.read(after, 1000).unwrap();
        after = got.last().map(|s| s.seq).unwrap();
        store.ack("up", after).unwrap();
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    for d in [Durability::Normal, Durability::Full] {
        let mut g = c.benchmark_group(format!("append/{}", name(d)));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        for size in BATCHES {
            g.throughput(Throughput::Elements(size as u64));
            g.bench_with_input(BenchmarkId::new("log", size), &size, |b, &size| {
                b.iter_custom(|iters| log_run(d, size, iters));
            });
            g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
                b.iter_custom(|iters| raw_run(d, size, iters));
            });
        }
        g.finish();
    }
}

fn read_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_ack");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1000));
    g.bench_function("normal/1000", |b| b.iter_custom(read_ack_run));
    g.finish();
}

/// Alternates log and raw rounds of about the same wall time and prints the
/// median rates and their ratio.
fn ratios() {
    const ROUNDS: usize = 5;
    for d in [Durability::Normal, Durability::Full] {
        for size in BATCHES {
            // Enough batches for ~0.3 s of raw inserts.
            let probe = raw_run(d, size, 20).as_secs_f64() / 20.0;
            let batches = ((0.3 / probe) as u64).clamp(5, 5_000);
            let mut log_rates = Vec::new();
            let mut raw_rates = Vec::new();
            for _ in 0..ROUNDS {
                let n = (batches * size as u64) as f64;
                log_rates.push(n / log_run(d, size, batches).as_secs_f64());
                raw_rates.push(n / raw_run(d, size, batches).as_secs_f64());
            }
            log_rates.sort_by(f64::total_cmp);
            raw_rates.sort_by(f64::total_cmp);
            let (l, r) = (log_rates[ROUNDS / 2], raw_rates[ROUNDS / 2]);
            println!(
                "{{\"bench\":\"append\",\"durability\":\"{}\",\"batch\":{size},\"log_events_per_s\":{l:.0},\"raw_rows_per_s\":{r:.0},\"ratio\":{:.3}}}",
                name(d),
                l / r
            );
        }
    }
    let rounds = 200;
    let t = read_ack_run(rounds);
    println!(
        "{{\"bench\":\"read_ack\",\"durability\":\"normal\",\"chunk\":1000,\"events_per_s\":{:.0}}}",
        (rounds * 1000) as f64 / t.as_secs_f64()
    );
}

criterion_group!(benches, append, read_ack);

fn main() {
    if std::env::args().any(|a| a == "--ratios-only") {
        ratios();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
