//! The soak: a compressed day of a busy gateway against the release
//! `outpostd` with real brokers, sampling what would show a leak.
//!
//! 24 compressed hours run in `--minutes` real minutes (default 60, so a
//! compressed hour is 150 s). The gateway has four simulated devices of eight
//! tags sampled every 20 ms (200 events/s, 1,600 points/s), a NATS and an
//! MQTT uplink and the web page. On top of that:
//!
//! - a broker outage every 10 compressed minutes, NATS and Mosquitto in
//!   turn, lasting a third of the interval;
//! - a SIGKILL of outpostd every compressed hour (restarted at once);
//! - an `outpostd apply` every compressed hour, half-way between the kills,
//!   toggling one device's interval (a diff that restarts that driver);
//! - web requests every second: `/healthz`, `/metrics`, the overview API with
//!   a token, and a failed login every 10 s.
//!
//! Every 5 s it samples the daemon's RSS, open descriptors, threads, the
//! `outpost_tasks` gauge and the log's size on disk into `samples.csv`, and
//! at the end draws `rss.svg` (in `--out`, default `target/soak`). It passes
//! when every event the log accepted is in the NATS stream, RSS stays under
//! the bound (`--rss-bound-mib`, default 64), and descriptors, threads and
//! tasks in the second half of the run stay within a small margin of their
//! first-half maximum.

#![allow(clippy::disallowed_methods)] // a test driver: spawns, sleeps and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use,
    clippy::print_stdout,
    clippy::print_stderr
)] // a test driver: a failed step fails the soak

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use outpost_tests::site::{bin, kill, stop, Site};
use outpost_tests::{Mosquitto, NatsServer};

const TOKEN: &str = "opt_soak0000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    tasks: Option<u64>,
    log_bytes: u64,
    pid: u32,
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(nats: &str, mqtt: &str, web_port: u16, slow: bool) -> String {
    let mut c = format!(
        "[gateway]\nid = \"gw\"\ndurability = \"full\"\n\
         [gateway.buffer]\nmax_bytes = \"48MiB\"\n\
         [web]\nbind = \"127.0.0.1:{web_port}\"\ntls = false\n"
    );
    for d in 0..4 {
        let interval = if d == 3 && slow { "40ms" } else { "20ms" };
        let _ = write!(
            c,
            "[[device]]\nname = \"line{d}\"\n[device.sim]\ninterval = \"{interval}\"\n"
        );
        for t in 0..8 {
            let signal = match t % 4 {
                0 => "counter = {}",
                1 => "sine = { period = \"30s\", amplitude = 50.0 }",
                2 => "random_walk = {}",
                _ => "toggle = { every = 25 }",
            };
            let _ = write!(c, "[[device.sim.tag]]\nname = \"t{t}\"\n{signal}\n");
        }
    }
    let _ = write!(
        c,
        "[[uplink]]\nname = \"nats\"\n[uplink.nats]\nurl = \"{nats}\"\ncreate_stream = true\n\
         [[uplink]]\nname = \"mqtt\"\n[uplink.mqtt]\nurl = \"{mqtt}\"\nkeep_alive = \"5s\"\n"
    );
    c
}

/// One HTTP/1.1 request on a fresh connection; the status and body, or
/// nothing when the daemon is not answering (it may be restarting).
fn http(port: u16, req: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.take(4 << 20).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

fn get(port: u16, path: &str, token: bool) -> Option<(u16, String)> {
    let auth = if token {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"),
    )
}

fn proc_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn sample(t: f64, pid: u32, port: u16, data: &Path) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let tasks = get(port, "/metrics", true).and_then(|(_, body)| {
        body.lines()
            .find_map(|l| l.strip_prefix("outpost_tasks "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    });
    let log_bytes = ["events.db", "events.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(data.join(f)).map_or(0, |m| m.len()))
        .sum();
    Sample {
        t,
        rss_kib: proc_field(pid, "VmRSS:"),
        fds,
        threads: proc_field(pid, "Threads:"),
        tasks,
        log_bytes,
        pid,
    }
}

/// Every seq in the NATS stream and how many messages carry it, read with
/// an ordered consumer (hundreds of thousands of messages).
fn nats_seqs(url: &str) -> BTreeMap<u64, u64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(url).await.expect("connecting to NATS");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("OUTPOST").await.expect("the OUTPOST stream");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer");
        let mut msgs = consumer.messages().await.expect("consuming");
        let mut out = BTreeMap::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(3), msgs.next()).await
        {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
                if let Some(s) = v["seq"].as_u64() {
                    *out.entry(s).or_insert(0) += 1;
                }
            }
        }
        out
    })
}

fn svg(samples: &[Sample], bound_kib: u64, events: &[(f64, &'static str)]) -> String {
    let (w, h, left, bottom) = (900.0, 360.0, 60.0, 40.0);
    let t_max = samples.last().map_or(1.0, |s| s.t.max(1.0));
    let y_max = (bound_kib as f64 * 1.1).max(1.0);
    let x = |t: f64| left + (w - left - 20.0) * t / t_max;
    let y = |kib: f64| (h - bottom) - (h - bottom - 20.0) * kib / y_max;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for mib in (0..=(y_max / 1024.0) as u64).step_by(8) {
        let yy = y(mib as f64 * 1024.0);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{mib} MiB</text>",
            w - 20.0,
            left - 5.0,
            yy + 4.0
        );
    }
    for m in (0..=(t_max / 60.0) as u64).step_by(5) {
        let xx = x(m as f64 * 60.0);
        let _ = writeln!(
            s,
            "<text x=\"{xx:.1}\" y=\"{}\" text-anchor=\"middle\">{m} min</text>",
            h - bottom + 15.0
        );
    }
    for (t, what) in events {
        let color = if *what == "kill" { "#d33" } else { "#aaa" };
        if *what == "kill" || *what == "outage" {
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"20\" y2=\"{1}\" stroke=\"{color}\" stroke-width=\"{2}\"/>",
                x(*t),
                h - bottom,
                if *what == "kill" { 1.0 } else { 0.3 }
            );
        }
    }
    let by = y(bound_kib as f64);
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{by:.1}\" y2=\"{by:.1}\" stroke=\"#d80\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#d80\">bound {} MiB</text>",
        w - 20.0,
        w - 22.0,
        by - 4.0,
        bound_kib / 1024
    );
    let pts: Vec<String> = samples
        .iter()
        .filter(|p| p.rss_kib > 0)
        .map(|p| format!("{:.1},{:.1}", x(p.t), y(p.rss_kib as f64)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#06c\" stroke-width=\"1.5\" points=\"{}\"/>",
        pts.join(" ")
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"14\">outpostd RSS over the soak (blue); red: SIGKILL and restart; grey: a broker outage starts</text>\n</svg>"
    );
    s
}

fn main() {
    let minutes: f64 = arg("--minutes", 60.0);
    let bound_mib: u64 = arg("--rss-bound-mib", 64);
    let out = PathBuf::from(arg(
        "--out",
        outpost_tests::workspace()
            .join("target/soak")
            .to_string_lossy()
            .into_owned(),
    ));
    std::fs::create_dir_all(&out).unwrap();
    if !bin().exists() {
        eprintln!(
            "soak: {} is missing; build it with cargo build --release -p outpost-daemon",
            bin().display()
        );
        std::process::exit(2);
    }
    let total = Duration::from_secs_f64(minutes * 60.0);
    let hour = total / 24;
    let outage_every = hour / 6;
    eprintln!(
        "soak: {minutes} min; a compressed hour is {hour:.0?}, an outage every {outage_every:.0?}"
    );

    let mut nats = NatsServer::start();
    let mut mqtt = Mosquitto::start("");
    let port = outpost_tests::free_port();
    let site = Site::new();
    outpost_tests::site::write_api_token(&site.data, "soak", TOKEN);
    let (nats_url, mqtt_url) = (nats.url(), mqtt.url());
    let write_config = |slow: bool| {
        std::fs::write(&site.cfg, config(&nats_url, &mqtt_url, port, slow)).unwrap();
    };
    write_config(false);
    let mut child = site.start();

    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut marks: Vec<(f64, &'static str)> = Vec::new();
    let (mut kills, mut outages, mut applies, mut applied_ok) = (0u32, 0u32, 0u32, 0u32);
    let (mut requests, mut answered, mut server_errors) = (0u64, 0u64, 0u64);
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut next_sample = Duration::ZERO;
    let mut next_request = Duration::ZERO;
    let mut next_outage = outage_every;
    let mut outage_end: Option<(Duration, bool)> = None;
    let mut next_kill = hour;
    let mut next_apply = hour / 2;
    let mut slow = false;
    let mut which = false;
    while t0.elapsed() < total {
        let now = t0.elapsed();
        if now >= next_sample {
            let s = sample(now.as_secs_f64(), child.id(), port, &site.data);
            samples.push(s);
            next_sample += Duration::from_secs(5);
        }
        if now >= next_request {
            for (path, token) in [
                ("/healthz", false),
                ("/api/v1/overview", true),
                ("/api/v1/devices", true),
            ] {
                requests += 1;
                if let Some((status, _)) = get(port, path, token) {
                    answered += 1;
                    *statuses.entry(status).or_insert(0u64) += 1;
                    if status >= 500 {
                        server_errors += 1;
                        eprintln!("soak: {path} answered {status}");
                    }
                }
            }
            if now.as_secs().is_multiple_of(10) {
                let body = "user=admin&password=wrong-password";
                let _ = http(
                    port,
                    &format!(
                        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                );
            }
            next_request += Duration::from_secs(1);
        }
        if let Some((end, was_nats)) = outage_end {
            if now >= end {
                if was_nats {
                    nats.restart();
                } else {
                    mqtt.restart();
                }
                outage_end = None;
            }
        } else if now >= next_outage {
            which = !which;
            if which {
                nats.stop();
            } else {
                mqtt.stop();
            }
            outages += 1;
            marks.push((now.as_secs_f64(), "outage"));
            outage_end = Some((now + outage_every / 3, which));
            next_outage += outage_every;
        }
        if now >= next_kill {
            kill(child);
            kills += 1;
            marks.push((now.as_secs_f64(), "kill"));
            child = site.start();
            next_kill += hour;
        }
        if now >= next_apply {
            slow = !slow;
            write_config(slow);
            applies += 1;
            let ok = Command::new(bin())
                .arg("apply")
                .arg(&site.cfg)
                .arg("--data-dir")
                .arg(&site.data)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                applied_ok += 1;
            } else {
                eprintln!("soak: apply {applies} was not applied");
            }
            marks.push((now.as_secs_f64(), "apply"));
            next_apply += hour;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some((_, was_nats)) = outage_end {
        if was_nats {
            nats.restart();
        } else {
            mqtt.restart();
        }
    }
    let elapsed = t0.elapsed();
    // Let the uplinks catch up, then stop cleanly and count.
    let drain_end = Instant::now() + Duration::from_secs(120);
    let mut caught_up = false;
    while Instant::now() < drain_end {
        if let Some((_, body)) = get(port, "/metrics", true) {
            let backlog: f64 = body
                .lines()
                .filter(|l| l.starts_with("outpost_uplink_backlog_events"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if backlog < 2000.0 {
                caught_up = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Stop the devices' flow (the last events drain in the clean stop).
    let stopped = stop(child);
    if !caught_up {
        eprintln!("soak: the uplinks had not caught up after 120 s");
    }
    // A run without devices delivers what the clean stop left behind.
    std::fs::write(
        &site.cfg,
        format!(
            "[gateway]\nid = \"gw\"\n[web]\nenabled = false\n[[uplink]]\nname = \"nats\"\n[uplink.nats]\nurl = \"{}\"\ncreate_stream = true\n\
             [[uplink]]\nname = \"mqtt\"\n[uplink.mqtt]\nurl = \"{}\"\n",
            nats.url(),
            mqtt.url()
        ),
    )
    .unwrap();
    let drainer = site.start();
    std::thread::sleep(Duration::from_secs(15));
    let drained = stop(drainer);
    let (accepted, check) = site.accepted();
    let seen = nats_seqs(&nats.url());
    let lost: Vec<u64> = (1..=accepted).filter(|s| !seen.contains_key(s)).collect();
    let duplicated: u64 = seen.values().map(|n| n - 1).sum();

    // Samples.
    let mut csv = String::from("t_s,pid,rss_kib,fds,threads,tasks,log_bytes\n");
    for s in &samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{}",
            s.t,
            s.pid,
            s.rss_kib,
            s.fds,
            s.threads,
            s.tasks.map_or(String::new(), |t| t.to_string()),
            s.log_bytes
        );
    }
    std::fs::write(out.join("samples.csv"), csv).unwrap();
    std::fs::write(out.join("rss.svg"), svg(&samples, bound_mib * 1024, &marks)).unwrap();

    let live: Vec<&Sample> = samples.iter().filter(|s| s.rss_kib > 0).collect();
    let half = live.len() / 2;
    let max = |v: &[&Sample], f: &dyn Fn(&Sample) -> u64| v.iter().map(|s| f(s)).max().unwrap_or(0);
    let (first, second) = live.split_at(half);
    let rss_max = max(&live, &|s| s.rss_kib);
    let grew = |name: &str, f: &dyn Fn(&Sample) -> u64, margin: u64| {
        let (a, b) = (max(first, f), max(second, f));
        (b > a + margin).then(|| format!("{name} grew: first half max {a}, second half max {b}"))
    };
    let mut problems: Vec<String> = [
        grew("descriptors", &|s| s.fds, 4),
        grew("threads", &|s| s.threads, 2),
        grew("tasks", &|s| s.tasks.unwrap_or(0), 4),
    ]
    .into_iter()
    .flatten()
    .collect();
    if rss_max > bound_mib * 1024 {
        problems.push(format!("RSS reached {} KiB, over the bound", rss_max));
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} events lost, the first {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if let Err(e) = check {
        problems.push(e);
    }
    if statuses.keys().any(|s| !(200..300).contains(s)) {
        problems.push(format!("answers other than 2xx: {statuses:?}"));
    }
    if server_errors > 0 {
        problems.push(format!("{server_errors} responses were 5xx"));
    }
    if !stopped || !drained {
        problems.push("outpostd did not stop cleanly".into());
    }
    if applied_ok == 0 && applies > 0 {
        problems.push("no apply was applied".into());
    }
    let med = |f: &dyn Fn(&Sample) -> u64, v: &[&Sample]| {
        let mut x: Vec<u64> = v.iter().map(|s| f(s)).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    println!("| measure | value |\n|---|---|");
    println!("| real time | {:.1} min |", elapsed.as_secs_f64() / 60.0);
    println!("| events accepted | {accepted} |");
    println!(
        "| events in the NATS stream | {} (lost {}, duplicated {duplicated}) |",
        seen.len(),
        lost.len()
    );
    println!("| SIGKILLs / broker outages / applies (applied) | {kills} / {outages} / {applies} ({applied_ok}) |");
    println!("| web requests (answered; by status) | {requests} ({answered}; {statuses:?}) |");
    println!(
        "| RSS max / median, first half / second half | {:.1} MiB / {:.1} MiB, {:.1} MiB / {:.1} MiB (bound {bound_mib} MiB) |",
        rss_max as f64 / 1024.0,
        med(&|s| s.rss_kib, &live) as f64 / 1024.0,
        med(&|s| s.rss_kib, first) as f64 / 1024.0,
        med(&|s| s.rss_kib, second) as f64 / 1024.0
    );
    println!(
        "| descriptors max, first half / second half | {} / {} |",
        max(first, &|s| s.fds),
        max(second, &|s| s.fds)
    );
    println!(
        "| threads max, first half / second half | {} / {} |",
        max(first, &|s| s.threads),
        max(second, &|s| s.threads)
    );
    println!(
        "| tasks max, first half / second half | {} / {} |",
        max(first, &|s| s.tasks.unwrap_or(0)),
        max(second, &|s| s.tasks.unwrap_or(0))
    );
    println!(
        "| log on disk max / at the end | {:.1} MiB / {:.1} MiB |",
        max(&live, &|s| s.log_bytes) as f64 / 1048576.0,
        live.last().map_or(0, |s| s.log_bytes) as f64 / 1048576.0
    );
    println!(
        "| result | {} |",
        if problems.is_empty() {
            "pass".to_string()
        } else {
            format!("FAIL: {}", problems.join("; "))
        }
    );
    eprintln!("soak: samples and rss.svg in {}", out.display());
    if !problems.is_empty() {
        std::process::exit(1);
    }
}
