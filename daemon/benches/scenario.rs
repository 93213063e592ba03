//! End-to-end scenario: K Modbus TCP devices (pymodbus) × N registers polled
//! every P → outpostd → Mosquitto, with a broker outage in the middle.
//!
//! `cargo bench -p outpost-daemon --bench scenario` runs the default
//! scenario (10 × 20 @ 1 s); `SCENARIO=heavy` runs 50 × 100 @ 100 ms.
//! `OUTAGE_S` sets the outage (default 10 s); `STEADY_S` the steady-state
//! window (default 20 s); `COMMIT_DELAY` sets
//! `[gateway.log] commit_max_delay` (default: the shipped one), `DURABILITY`
//! `[gateway] durability` (default normal); `MODE=thingsboard` makes the
//! uplink speak ThingsBoard's gateway API (events are then counted by
//! device and timestamp against the log, ThingsBoard's records having no
//! seq); `OUTPOSTD_BIN` runs another
//! build of the daemon (default: this bench's build, at opt-level 3). Prints one JSON object:
//! daemon RSS and CPU, delivered data points/s, latency read → broker
//! (p50/p99), bytes written to storage per data point in the steady state
//! (flash wear), events expected/delivered/missing/duplicated, reconnect time,
//! drain time and rate. Needs the peers `./tests/run` installs.

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // benchmark code

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_tests::{ModbusPeer, Mosquitto};
use serde_json::json;

/// The daemon under test: the bench build, or `OUTPOSTD_BIN` (e.g. the
/// shipped `target/release/outpostd`, built with `opt-level = "z"`).
fn bin() -> String {
    std::env::var("OUTPOSTD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_outpostd").to_string())
}

#[derive(Default)]
struct Seen {
    seqs: BTreeMap<u64, u32>,
    points: u64,
    /// (received at, latency ms) of telemetry events.
    latencies: Vec<(Instant, i64)>,
    first_after: Option<Instant>,
    /// ThingsBoard mode: (device, ts, first key) of each record received.
    records: BTreeMap<(String, i64, String), u32>,
}

/// A ThingsBoard telemetry message: `{"device": [{"ts", "values"}]}`.
fn tb_records(s: &mut Seen, payload: &serde_json::Value, at: Instant, t: i64) {
    let Some(devices) = payload.as_object() else {
        return;
    };
    for (device, records) in devices {
        for r in records.as_array().into_iter().flatten() {
            let ts = r["ts"].as_i64().unwrap_or(0);
            let Some(values) = r["values"].as_object() else {
                continue;
            };
            // `_clock` / `_quality` are flags, not values.
            let first = values
                .keys()
                .filter(|k| !k.starts_with('_'))
                .min()
                .cloned()
                .unwrap_or_default();
            *s.records
                .entry((device.clone(), ts, first.clone()))
                .or_default() += 1;
            if first.starts_with('r') {
                s.points += values.keys().filter(|k| !k.starts_with('_')).count() as u64;
                s.latencies.push((at, t - ts));
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn proc_stat(pid: u32) -> (u64, f64) {
    (
        outpost_tests::proc_rss_kb(pid),
        outpost_tests::proc_cpu_seconds(pid),
    )
}

/// Bytes the process caused to be written to storage (`write_bytes` of
/// `/proc/<pid>/io`; 0 on tmpfs, so the bench's data directory must be on
/// a disk: run it with TMPDIR on one, e.g. `/var/tmp`).
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let heavy = std::env::var("SCENARIO").is_ok_and(|s| s == "heavy");
    let (k, n, period_ms) = if heavy {
        (50u16, 100u16, 100u64)
    } else {
        (10, 20, 1000)
    };
    let outage = Duration::from_secs(
        std::env::var("OUTAGE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    // STEADY_S: the steady-state window (default 20 s; the wear figures
    // want 60 s or more, so that WAL checkpoints fall inside it evenly).
    let steady = Duration::from_secs(
        std::env::var("STEADY_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );

    let devices: Vec<_> = (1..=k)
        .map(
            |u| json!({"id": u, "holding": [{"addr": 0, "registers": (0..n).collect::<Vec<_>>()}]}),
        )
        .collect();
    let plc = ModbusPeer::tcp(&json!({ "devices": devices }));
    let mut broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    // DURABILITY: `[gateway] durability` (default "normal"; the shipped
    // default is "full", an fsync per commit).
    let durability = std::env::var("DURABILITY").unwrap_or_else(|_| "normal".into());
    let mut cfg = format!("[gateway]\nid = \"bench\"\ndurability = \"{durability}\"\n");
    // COMMIT_DELAY: `[gateway.log] commit_max_delay`, the knob that trades
    // latency for fewer commits (and fewer bytes written to flash).
    let commit_delay = std::env::var("COMMIT_DELAY").ok();
    if let Some(d) = &commit_delay {
        cfg.push_str(&format!("[gateway.log]\ncommit_max_delay = \"{d}\"\n"));
    }
    let commit_delay = commit_delay.unwrap_or_else(|| "default".into());
    for u in 1..=k {
        cfg.push_str(&format!(
            "[[device]]\nname = \"d{u}\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nunit = {u}\nperiod = \"{period_ms}ms\"\n",
            plc.port
        ));
        for a in 0..n {
            cfg.push_str(&format!(
                "[[device.modbus.tag]]\nname = \"r{a}\"\ntable = \"holding\"\naddress = {a}\n"
            ));
        }
    }
    let tb = std::env::var("MODE").is_ok_and(|m| m == "thingsboard");
    cfg.push_str(&format!(
        "[[uplink]]\nname = \"cloud\"\n[uplink.mqtt]\nurl = \"{}\"\nkeep_alive = \"5s\"\n",
        broker.url()
    ));
    if tb {
        cfg.push_str("mode = \"thingsboard\"\nusername = \"bench-token\"\n");
    }
    let cfg_path = dir.path().join("outpost.toml");
    std::fs::write(&cfg_path, cfg).unwrap();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    {
        let (seen, port) = (seen.clone(), broker.port);
        rt.spawn(async move {
            let mut o = rumqttc::MqttOptions::new("bench-sub", "127.0.0.1", port);
            o.set_clean_session(false);
            o.set_max_packet_size(1 << 24, 1 << 24);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 1000);
            c.subscribe("bench/#", rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            c.subscribe("v1/gateway/telemetry", rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let at = Instant::now();
                        let t = now_ms();
                        let arr: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                        let mut s = seen.lock().unwrap();
                        if s.first_after.is_none() {
                            s.first_after = Some(at);
                        }
                        if p.topic == "v1/gateway/telemetry" {
                            tb_records(&mut s, &arr, at, t);
                            continue;
                        }
                        for e in arr.as_array().unwrap() {
                            *s.seqs.entry(e["seq"].as_u64().unwrap()).or_default() += 1;
                            if e["kind"] == "telemetry" {
                                s.points += e["body"].as_object().map_or(0, |b| b.len() as u64);
                                s.latencies.push((at, t - e["ts"].as_i64().unwrap()));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut daemon = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    // RSS every 250 ms for the whole run, so averages are over time (the
    // phases poll at different rates below).
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                v.push((Instant::now(), outpost_tests::proc_rss_kb(pid)));
                std::thread::sleep(Duration::from_millis(250));
            }
            v
        })
    };
    std::thread::sleep(Duration::from_secs(5)); // warm-up

    // Steady state.
    let (_, cpu0) = proc_stat(pid);
    let w0 = write_bytes(pid);
    let p0 = seen.lock().unwrap().points;
    let t0 = Instant::now();
    while t0.elapsed() < steady {
        std::thread::sleep(Duration::from_secs(1));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (_, cpu1) = proc_stat(pid);
    let written = write_bytes(pid).saturating_sub(w0);
    let points_s = (seen.lock().unwrap().points - p0) as f64 / secs;
    let mut lat: Vec<i64> = seen
        .lock()
        .unwrap()
        .latencies
        .iter()
        .filter(|(at, _)| *at >= t0)
        .map(|(_, l)| *l)
        .collect();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));

    // Outage.
    broker.stop();
    let down = Instant::now();
    while down.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(500));
    }
    seen.lock().unwrap().first_after = None;
    broker.restart();
    let up = Instant::now();
    // Reconnect: the first message after the restart. Drain: until what
    // arrives is fresh again (latency under 2 periods).
    let mut reconnect = None;
    let mut drained = None;
    let delivered = |s: &Seen| s.seqs.len() + s.records.len();
    let before_drain = delivered(&seen.lock().unwrap());
    while up.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
        let s = seen.lock().unwrap();
        if reconnect.is_none() {
            reconnect = s.first_after.map(|f| f.duration_since(up));
        }
        if reconnect.is_some()
            && s.latencies
                .last()
                .is_some_and(|(at, l)| *at > up && *l < 2 * period_ms as i64 + 50)
        {
            drained = Some(up.elapsed());
            break;
        }
        drop(s);
    }
    let drained_events = delivered(&seen.lock().unwrap()) - before_drain;
    std::thread::sleep(Duration::from_secs(3));
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let rss_samples = sampler.join().unwrap();
    let rss: Vec<u64> = rss_samples
        .iter()
        .map(|(_, kb)| *kb)
        .filter(|kb| *kb > 0)
        .collect();
    let steady_rss: Vec<u64> = rss_samples
        .iter()
        .filter(|(at, _)| *at >= t0 && *at < down)
        .map(|(_, kb)| *kb)
        .collect();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = daemon.wait();
    std::thread::sleep(Duration::from_millis(500));

    let s = seen.lock().unwrap();
    let (max, missing, dups) = if tb {
        // What ThingsBoard should have got: each telemetry and status event
        // of the log as one record, keyed by its first value's name.
        let logged: Vec<(String, i64, String)> =
            outpost_tests::read_log(&dir.path().join("data/events.db"))
                .into_iter()
                .filter(|e| !e.event.device.is_empty())
                .filter_map(|e| {
                    let first = match &e.event.body {
                        outpost_core::Body::Telemetry(p) => {
                            p.iter().map(|p| p.tag.clone()).min()?
                        }
                        outpost_core::Body::Status(_) => "status".to_string(),
                        _ => return None,
                    };
                    Some((e.event.device.clone(), e.event.ts.unix_ms, first))
                })
                .collect();
        let missing = logged
            .iter()
            .filter(|k| !s.records.contains_key(*k))
            .count();
        let dups: u32 = s.records.values().map(|c| c - 1).sum();
        (logged.len() as u64, missing, dups)
    } else {
        let max = s.seqs.keys().next_back().copied().unwrap_or(0);
        let missing = (1..=max).filter(|q| !s.seqs.contains_key(q)).count();
        let dups: u32 = s.seqs.values().map(|c| c - 1).sum();
        (max, missing, dups)
    };
    let avg_rss = rss.iter().sum::<u64>() / rss.len().max(1) as u64;
    let steady_avg_rss = steady_rss.iter().sum::<u64>() / steady_rss.len().max(1) as u64;
    let drain_s = drained.map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "{}",
        json!({
            "scenario": if heavy { "heavy" } else { "default" },
            "mode": if tb { "thingsboard" } else { "generic" },
            "devices": k, "registers": n, "period_ms": period_ms,
            "rss_kb_avg": avg_rss, "rss_kb_max": rss.iter().max(),
            "rss_kb_steady_avg": steady_avg_rss,
            "commit_max_delay": commit_delay,
            "durability": durability,
            "write_bytes_per_s_steady": (written as f64 / secs).round(),
            "bytes_written_per_point": ((written as f64 / (points_s * secs)) * 10.0).round() / 10.0,
            "gb_written_per_day": ((written as f64 / secs * 86_400.0 / 1e9) * 100.0).round() / 100.0,
            "cpu_percent_steady": ((cpu1 - cpu0) / secs * 100.0 * 10.0).round() / 10.0,
            "delivered_points_per_s": points_s.round(),
            "asked_points_per_s": f64::from(k) * f64::from(n) * 1000.0 / period_ms as f64,
            "latency_ms_p50": p50, "latency_ms_p99": p99,
            "outage_s": outage.as_secs(),
            "events_delivered": delivered(&s), "events_expected": max,
            "events_missing": missing, "events_duplicated": dups,
            "reconnect_s": reconnect.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
            "drain_s": (drain_s * 1000.0).round() / 1000.0,
            "drain_events_per_s": (drained_events as f64 / drain_s).round(),
        })
    );
    drop(plc);
}
