//! The fault matrix: every fault run against the release `outpostd` with
//! real peers (nats-server with JetStream, Mosquitto), one table row per
//! fault: events accepted, delivered, lost and duplicated, and pass or fail.
//!
//! `tests/faults` builds the release binary and runs this; `--full` runs the
//! full counts (100 kills, 100 restarts of each broker), the default a
//! reduced count for `./tests/run`. Exit status 1 when any row fails.
//!
//! What "accepted" means: every seq the log handed out (its `next_seq - 1`
//! after the last run, the daemon's own audit events included); each must
//! reach the broker once the daemon has drained. For NATS a duplicate is a
//! second stream message for one seq; for MQTT (at least once by design) a
//! seq received twice is counted, not failed.

#![allow(clippy::disallowed_methods)] // a test driver: spawns, sleeps and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use,
    clippy::print_stdout,
    clippy::print_stderr
)] // a test driver: a failed step is a failed row
mod devices;
mod links;
mod storage;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_tests::site::{
    bin, integrity, kill, mqtt_subscriber, mqtt_uplink, nats_seen, nats_uplink, stop, Rng, Site,
};
use outpost_tests::{Mosquitto, NatsServer};

#[derive(Default)]
struct Row {
    fault: String,
    count: usize,
    accepted: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    /// Why the row failed, beside lost or duplicated events.
    problems: Vec<String>,
    /// Duplicates are allowed (MQTT at least once).
    duplicates_ok: bool,
}

impl Row {
    fn new(fault: &str, count: usize) -> Row {
        Row {
            fault: fault.to_string(),
            count,
            ..Row::default()
        }
    }
    fn pass(&self) -> bool {
        self.problems.is_empty() && self.lost == 0 && (self.duplicates_ok || self.duplicated == 0)
    }
    /// Counts what the broker holds against what the log accepted.
    fn count_seqs(&mut self, accepted: u64, seen: &BTreeMap<u64, u64>) {
        self.count_ranges(&[(1, accepted)], seen);
    }
    /// The same, when the log handed out these ranges of seqs only.
    fn count_ranges(&mut self, ranges: &[(u64, u64)], seen: &BTreeMap<u64, u64>) {
        let all = || ranges.iter().flat_map(|&(a, b)| a..=b);
        self.accepted = all().count() as u64;
        self.delivered = all().filter(|s| seen.contains_key(s)).count() as u64;
        self.lost = self.accepted - self.delivered;
        self.duplicated = seen.values().map(|n| n - 1).sum();
        if self.lost > 0 {
            let lost: Vec<u64> = all().filter(|s| !seen.contains_key(s)).take(5).collect();
            let top = seen.keys().next_back();
            self.problems.push(format!(
                "lost seqs {lost:?}…; the broker's highest is {top:?}"
            ));
        }
    }
}

/// Runs the site without its device until the broker holds every accepted
/// seq (or 60 s pass), then stops it; counts the row.
fn drain_and_count(
    row: &mut Row,
    site: &Site,
    uplink: &str,
    seen: &dyn Fn() -> BTreeMap<u64, u64>,
) {
    drain_skipping(row, site, uplink, seen, None);
}

/// The same, when the seqs in `never` were never handed out (the jump a
/// log moved aside makes to its seq floor).
fn drain_skipping(
    row: &mut Row,
    site: &Site,
    uplink: &str,
    seen: &dyn Fn() -> BTreeMap<u64, u64>,
    never: Option<(u64, u64)>,
) {
    let given = |s: &u64| never.is_none_or(|(a, b)| *s < a || *s > b);
    site.configure(uplink, false);
    let child = site.start();
    // This run adds its own start event; wait for it too.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let last = seen();
        let top = last.keys().next_back().copied().unwrap_or(0);
        if top > 0 && (1..=top).filter(given).all(|s| last.contains_key(&s)) {
            std::thread::sleep(Duration::from_millis(300));
            let again = seen();
            if again.len() == last.len() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !stop(child) {
        row.problems
            .push("the draining run did not stop cleanly".into());
    }
    let (accepted, check) = site.accepted();
    if let Err(e) = check {
        row.problems.push(e);
    }
    match never {
        None => row.count_seqs(accepted, &seen()),
        Some((a, b)) => row.count_ranges(&[(1, a - 1), (b + 1, accepted)], &seen()),
    }
}

/// The log's events after a run, counted into the row: every seq from 1 to
/// the last handed out must be there.
pub(crate) fn count_log(row: &mut Row, site: &Site) -> Vec<outpost_sync::StoredEvent> {
    let (accepted, check) = site.accepted();
    if let Err(e) = check {
        row.problems.push(e);
    }
    let events = outpost_tests::read_log(&site.db());
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    row.accepted = accepted;
    row.delivered = seqs.len() as u64; // kept in the log: no uplink
    row.lost = accepted.saturating_sub(seqs.len() as u64);
    if seqs != (1..=accepted).collect::<Vec<_>>() {
        row.problems.push("the log's seqs have holes".into());
    }
    events
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sigkill(count: usize, rng: &mut Rng, rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("SIGKILL at random moments (durability = full)", count);
    let server = NatsServer::start();
    let site = Site::new();
    let uplink = nats_uplink(&server.url());
    site.configure(&uplink, true);
    for _ in 0..count {
        let child = site.start();
        std::thread::sleep(rng.ms(200, 1500));
        kill(child);
        if let Err(e) = integrity(&site.db()) {
            row.problems.push(e);
            break;
        }
    }
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    row
}

fn process_group_kill(count: usize, rng: &mut Rng, rt: &tokio::runtime::Runtime) -> Row {
    // Power loss as near as a process can get: the whole group is killed
    // while the log checkpoints (a busy log checkpoints every few hundred
    // ms), with nothing flushed on the way out.
    let mut row = Row::new("power loss: process group killed mid-checkpoint", count);
    let server = NatsServer::start();
    let site = Site::new();
    let uplink = nats_uplink(&server.url());
    site.configure(&uplink, true);
    for _ in 0..count {
        let mut cmd = site.command();
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(rng.ms(300, 1500));
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        let _ = child.wait();
        if let Err(e) = integrity(&site.db()) {
            row.problems.push(e);
            break;
        }
    }
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    row
}

fn nats_restarts(count: usize, rng: &mut Rng, rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("NATS server restart during a drain", count);
    let mut server = NatsServer::start();
    let site = Site::new();
    let uplink = nats_uplink(&server.url());
    site.configure(&uplink, true);
    let child = site.start();
    for _ in 0..count {
        std::thread::sleep(rng.ms(100, 800));
        server.stop();
        std::thread::sleep(rng.ms(50, 500));
        server.restart();
    }
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    row
}

fn mqtt_restarts(count: usize, rng: &mut Rng, rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("MQTT broker restart during a drain", count);
    row.duplicates_ok = true;
    let mut broker = Mosquitto::start("");
    let (seen, task) = mqtt_subscriber(rt, broker.port);
    std::thread::sleep(Duration::from_millis(300));
    let site = Site::new();
    let uplink = mqtt_uplink(&broker.url());
    site.configure(&uplink, true);
    let child = site.start();
    for _ in 0..count {
        std::thread::sleep(rng.ms(100, 800));
        broker.stop();
        std::thread::sleep(rng.ms(50, 500));
        broker.restart();
    }
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    drain_and_count(&mut row, &site, &uplink, &|| seen.lock().unwrap().clone());
    task.abort();
    row
}

fn two_daemons(rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("a second outpostd on the same data directory", 1);
    let server = NatsServer::start();
    let site = Site::new();
    let uplink = nats_uplink(&server.url());
    site.configure(&uplink, true);
    let first = site.start();
    std::thread::sleep(Duration::from_millis(800));
    let (ran, said) = site.run_to_end();
    if ran {
        row.problems.push("the second daemon ran".into());
    } else if !said.contains("in use by another process") {
        row.problems
            .push(format!("the second daemon's refusal is unclear: {said}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    if !stop(first) {
        row.problems
            .push("the first daemon did not stop cleanly".into());
    }
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    row
}

/// The log damaged while the daemon is down: moved aside (kept, never
/// deleted), the new log continues above the old seqs, and says so.
fn corrupt(how: &str, rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new(&format!("corrupt database ({how})"), 1);
    let server = NatsServer::start();
    let site = Site::new();
    let uplink = nats_uplink(&server.url());
    site.configure(&uplink, true);
    let child = site.start();
    std::thread::sleep(Duration::from_millis(1500));
    stop(child);
    // Deliver everything before the damage, so that nothing undelivered is
    // in the part that is lost.
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    let before = row.accepted;
    let db = site.db();
    let len = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        match how {
            "header" => {
                f.seek(SeekFrom::Start(0)).unwrap();
                f.write_all(&[0xa5; 100]).unwrap();
            }
            "middle" => {
                f.seek(SeekFrom::Start(len / 2)).unwrap();
                f.write_all(&vec![0x5a; 8192]).unwrap();
            }
            _ => f.set_len(len / 3).unwrap(),
        }
    }
    let _wal = std::fs::remove_file(site.data.join("events.db-wal"));
    let _shm = std::fs::remove_file(site.data.join("events.db-shm"));
    site.configure(&uplink, true);
    let child = site.start();
    std::thread::sleep(Duration::from_millis(1500));
    stop(child);
    let aside = std::fs::read_dir(&site.data)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.db.corrupt-")
        });
    if !aside && how != "middle" {
        row.problems
            .push("the damaged log was not kept aside".into());
    }
    // The new log starts above the old seqs (at the floor kept beside it);
    // what it holds from there on must all arrive, as must everything the
    // old log held (delivered before the damage).
    let new_first = if aside {
        outpost_tests::read_log(&site.db())
            .first()
            .map_or(before + 1, |e| e.seq.0)
    } else {
        before + 1
    };
    if new_first <= before {
        row.problems
            .push(format!("the new log reused seq {new_first}"));
    }
    let mut after = Row::new("", 1);
    let never = (new_first > before + 1).then_some((before + 1, new_first - 1));
    drain_skipping(
        &mut after,
        &site,
        &uplink,
        &|| nats_seen(rt, &server.url()),
        never,
    );
    if after.accepted == 0 {
        row.problems.push("no events after the damage".into());
    }
    row.problems.extend(after.problems.iter().cloned());
    row.accepted = after.accepted;
    row.delivered = after.delivered;
    row.lost = after.lost;
    row.duplicated = after.duplicated;
    row
}

fn missing_data_dir() -> Row {
    let mut row = Row::new("data directory missing (created)", 1);
    let site = Site::new();
    site.configure("", true);
    let child = site.start();
    std::thread::sleep(Duration::from_millis(1000));
    if !stop(child) {
        row.problems.push("did not run and stop cleanly".into());
    }
    let (accepted, check) = site.accepted();
    if let Err(e) = check {
        row.problems.push(e);
    }
    row.accepted = accepted;
    row.delivered = accepted; // no uplink: kept in the log
    if accepted < 10 {
        row.problems.push(format!("only {accepted} events"));
    }
    row
}

fn data_dir_is_a_file() -> Row {
    let mut row = Row::new("data directory not usable (a file)", 1);
    let site = Site::new();
    site.configure("", true);
    std::fs::write(&site.data, "not a directory").unwrap();
    let (ran, said) = site.run_to_end();
    if ran {
        row.problems.push("it ran".into());
    } else if !said.contains(&*site.data.to_string_lossy()) {
        row.problems
            .push(format!("the error does not name the directory: {said}"));
    }
    if std::fs::read_to_string(&site.data).ok().as_deref() != Some("not a directory") {
        row.problems.push("the file was changed".into());
    }
    row
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let n = if full { 100 } else { 5 };
    if !bin().exists() {
        eprintln!(
            "faults: {} is missing; build it with cargo build --release -p outpost-daemon",
            bin().display()
        );
        std::process::exit(2);
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("faults: seed {seed}, {n} per repeated row");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    type RowFn<'a> = Box<dyn FnOnce(&mut Rng) -> Row + 'a>;
    let rows: Vec<(&str, RowFn)> = vec![
        ("sigkill", Box::new(|r| sigkill(n, r, &rt))),
        (
            "power",
            Box::new(|r| process_group_kill(n.div_ceil(2), r, &rt)),
        ),
        ("nats", Box::new(|r| nats_restarts(n, r, &rt))),
        ("mqtt", Box::new(|r| mqtt_restarts(n, r, &rt))),
        ("two", Box::new(|_| two_daemons(&rt))),
        ("header", Box::new(|_| corrupt("header", &rt))),
        ("middle", Box::new(|_| corrupt("middle", &rt))),
        ("truncated", Box::new(|_| corrupt("truncated", &rt))),
        ("missing", Box::new(|_| missing_data_dir())),
        ("file", Box::new(|_| data_dir_is_a_file())),
        ("diskfull", Box::new(|_| storage::disk_full(&rt))),
        ("readonly", Box::new(|_| storage::read_only(&rt))),
        ("unwritable", Box::new(|_| storage::not_writable())),
        ("clock", Box::new(|_| storage::clock_jumps())),
        ("serial", Box::new(|_| devices::serial_unplug())),
        ("modbus", Box::new(|_| devices::modbus_hostile())),
        ("halfopen-nats", Box::new(|_| links::half_open_nats(&rt))),
        ("halfopen-mqtt", Box::new(|_| links::half_open_mqtt(&rt))),
    ];
    // FAULTS_ONLY=sigkill,header runs those rows alone.
    let only = std::env::var("FAULTS_ONLY").unwrap_or_default();
    let rows = rows
        .into_iter()
        .filter(|(k, _)| only.is_empty() || only.split(',').any(|o| o == *k))
        .map(|(_, f)| f);
    let mut done = Vec::new();
    for f in rows {
        let t = Instant::now();
        let row = f(&mut rng);
        eprintln!(
            "faults: {} — {} in {:.0?}",
            row.fault,
            if row.pass() { "pass" } else { "FAIL" },
            t.elapsed()
        );
        done.push(row);
    }
    println!(
        "| fault | count | accepted | delivered | lost | duplicated | result |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for r in &done {
        println!(
            "| {} | {} | {} | {} | {} | {} | {}{} |",
            r.fault,
            r.count,
            r.accepted,
            r.delivered,
            r.lost,
            r.duplicated,
            if r.pass() { "pass" } else { "FAIL" },
            if r.problems.is_empty() {
                String::new()
            } else {
                format!(": {}", r.problems.join("; "))
            }
        );
    }
    if done.iter().any(|r| !r.pass()) {
        std::process::exit(1);
    }
}
