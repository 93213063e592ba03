//! The web server's figures, on a running outpostd (10 simulated devices x
//! 20 tags every second, plain HTTP on loopback so the client stays small):
//! page weight, time to first byte of the overview alone and under 50 open
//! live-update streams, memory added by 10 streams, and the export rate of
//! a log of `EXPORT_EVENTS` events (default 1,000,000) with the daemon's
//! RSS during the export.
//!
//! `cargo bench -p outpost-daemon --bench web`; `OUTPOSTD_BIN` runs another
//! build (e.g. the shipped `target/release/outpostd`). Prints one JSON object.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // benchmark code

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_core::{Body, Event, Point, Timestamp, Value};
use serde_json::json;

fn bin() -> String {
    std::env::var("OUTPOSTD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_outpostd").to_string())
}

struct Reply {
    status: u16,
    resp: outpost_tests::http::Response,
    body: Vec<u8>,
    ttfb: Duration,
}

impl Reply {
    fn header(&self, name: &str) -> Vec<&str> {
        self.resp.header(name)
    }
}

/// One HTTP/1.1 request on a fresh connection; the body de-chunked.
fn http(port: u16, method: &str, path: &str, cookie: &str, form: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        req.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if !form.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form);
    let t0 = Instant::now();
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let status = outpost_tests::http::read_status(&mut r);
    let ttfb = t0.elapsed();
    let mut resp = outpost_tests::http::read_rest(&mut r, status);
    let body = std::mem::take(&mut resp.body);
    Reply {
        status,
        resp,
        body,
        ttfb,
    }
}

fn cookie_of(r: &Reply, name: &str) -> String {
    r.header("set-cookie")
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_string())
        .unwrap_or_default()
}

fn field(html: &[u8], name: &str) -> String {
    let h = String::from_utf8_lossy(html);
    let key = format!("name=\"{name}\" value=\"");
    let at = h.find(&key).unwrap() + key.len();
    h[at..at + h[at..].find('"').unwrap()].to_string()
}

/// An open live-update stream, read until its first event.
fn sse(port: u16, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 8192];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed");
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p) as usize]
}

fn ttfb_ms(port: u16, cookie: &str, n: usize) -> (f64, f64) {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let r = http(port, "GET", "/", cookie, "");
            assert_eq!(r.status, 200);
            r.ttfb.as_secs_f64() * 1000.0
        })
        .collect();
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

fn rss_settled(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_secs(3));
    outpost_tests::proc_rss_kb(pid)
}

fn main() {
    let events: u64 = std::env::var("EXPORT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    // A log holding `events` readings of one device, 10 tags each.
    let t0 = Instant::now();
    {
        let opts = outpost_sync::log::StoreOptions {
            durability: outpost_config::Durability::Normal,
            limits: outpost_sync::log::Limits::UNLIMITED,
            max_page_count: None,
            reserve_bytes: 0,
        };
        let now = Timestamp::synced(1_764_000_000_000);
        let (mut store, _) =
            outpost_sync::log::Store::open(&data.join("events.db"), opts, now).unwrap();
        let start = now.unix_ms - events as i64 * 100;
        let mut i = 0u64;
        while i < events {
            let n = (events - i).min(10_000);
            let batch: Vec<Event> = (i..i + n)
                .map(|k| {
                    Event::new(
                        "archive",
                        Timestamp::synced(start + k as i64 * 100),
                        Body::Telemetry(
                            (0..10)
                                .map(|t| {
                                    Point::good(
                                        format!("t{t}"),
                                        Value::F64(k as f64 + f64::from(t) / 10.0),
                                    )
                                })
                                .collect(),
                        ),
                    )
                })
                .collect();
            store.append(&batch, now).unwrap();
            i += n;
        }
    }
    eprintln!(
        "log of {events} events written in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let port = outpost_tests::free_port();
    let mut cfg = format!(
        "[gateway]\nid = \"bench\"\ndurability = \"normal\"\n[web]\nbind = \"127.0.0.1:{port}\"\ntls = false\n"
    );
    for d in 0..10 {
        cfg.push_str(&format!(
            "[[device]]\nname = \"dev{d}\"\n[device.sim]\ninterval = \"1s\"\n"
        ));
        for t in 0..20 {
            cfg.push_str(&format!(
                "[[device.sim.tag]]\nname = \"tag{t}\"\nrandom_walk = {{ start = 50.0, step = 0.5, min = 0.0, max = 100.0 }}\n"
            ));
        }
    }
    let cfg_path = dir.path().join("outpost.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let token_file = data.join("web/setup-token");
    let start = Instant::now();
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(&token_file) {
            if !t.trim().is_empty() && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break t.trim().to_string();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "outpostd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rss_idle_before_login = rss_settled(pid);
    let page = http(port, "GET", "/setup", "", "");
    let form = cookie_of(&page, "outpost_form");
    let body = format!(
        "csrf={}&token={token}&user=admin&password=bench+password&confirm=bench+password",
        field(&page.body, "csrf")
    );
    let r = http(port, "POST", "/setup", &form, &body);
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    let session = cookie_of(&r, "outpost_session");
    std::thread::sleep(Duration::from_secs(3)); // values and a sample or two

    // Page weight.
    let mut weights = serde_json::Map::new();
    for path in [
        "/",
        "/devices",
        "/devices/dev0",
        "/modbus",
        "/export",
        "/logs",
        "/users",
        "/login",
        "/static/app.css",
        "/static/app.js",
    ] {
        let c = if path == "/login" {
            ""
        } else {
            session.as_str()
        };
        let r = http(port, "GET", path, c, "");
        let status = r.status;
        weights.insert(
            path.into(),
            json!({"status": status, "bytes": r.body.len()}),
        );
    }

    // Time to first byte of the overview: alone, then with 50 streams open.
    let (alone_p50, alone_p99) = ttfb_ms(port, &session, 100);
    let rss_no_streams = rss_settled(pid);
    let ten: Vec<TcpStream> = (0..10).map(|_| sse(port, &session)).collect();
    let rss_ten_streams = rss_settled(pid);
    let mut fifty = ten;
    fifty.extend((0..40).map(|_| sse(port, &session)));
    let (sse_p50, sse_p99) = ttfb_ms(port, &session, 100);
    let rss_fifty_streams = outpost_tests::proc_rss_kb(pid);
    drop(fifty);

    // Export everything as CSV, watching the daemon's memory.
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(outpost_tests::proc_rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let rss_before_export = rss_settled(pid);
    let t = Instant::now();
    let r = http(
        port,
        "GET",
        "/export/data?device=archive&format=csv",
        &session,
        "",
    );
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(r.status, 200);
    let rows = r.body.iter().filter(|b| **b == b'\n').count() as u64 - 1;
    assert_eq!(rows, events * 10, "one CSV row per value");
    let t = Instant::now();
    let j = http(
        port,
        "GET",
        "/export/data?device=archive&format=jsonl",
        &session,
        "",
    );
    let jsecs = t.elapsed().as_secs_f64();
    let jrows = j.body.iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(jrows, events);

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let out = json!({
        "page_bytes": weights,
        "overview_ttfb_ms": {"alone_p50": alone_p50, "alone_p99": alone_p99,
                              "with_50_streams_p50": sse_p50, "with_50_streams_p99": sse_p99},
        "rss_kb": {"idle": rss_idle_before_login, "logged_in_no_streams": rss_no_streams,
                   "ten_streams": rss_ten_streams, "fifty_streams": rss_fifty_streams,
                   "added_by_ten_streams": rss_ten_streams as i64 - rss_no_streams as i64,
                   "before_export": rss_before_export, "peak_during_export": peak.load(Ordering::Relaxed)},
        "export": {"events": events, "csv_rows": rows, "csv_bytes": r.body.len(), "csv_s": secs,
                   "csv_events_per_s": events as f64 / secs,
                   "jsonl_bytes": j.body.len(), "jsonl_s": jsecs, "jsonl_events_per_s": events as f64 / jsecs},
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
