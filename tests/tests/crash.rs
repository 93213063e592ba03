//! Kill -9 test of the event log: a child appends with `durability = "full"`
//! and prints every acknowledged append; it is killed with SIGKILL at random
//! moments, 50 times. After each kill the log is reopened and every event
//! ever acknowledged must be present and intact, and no seq may repeat.

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_config::Durability;
use outpost_core::{Body, Timestamp, Value};
use outpost_sync::log::{Limits, Store, StoreOptions, DEFAULT_RESERVE_BYTES};

const KILLS: usize = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn open(path: &std::path::Path) -> Store {
    let opts = StoreOptions {
        durability: Durability::Full,
        limits: Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: DEFAULT_RESERVE_BYTES,
    };
    let (store, report) =
        Store::open(path, opts, Timestamp::synced(1_764_000_000_000)).expect("reopen after kill");
    assert!(
        report.recovered.is_none(),
        "a kill -9 must never make the log unreadable: {:?}",
        report.recovered
    );
    store
}

#[test]
fn no_acknowledged_event_is_lost_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    // seq -> (device, value) for every acknowledged event so far.
    let mut acked: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    let mut floor = 1u64; // every new seq must be >= this
    let mut total_acks = 0usize;

    for run in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_log_crash_child"))
            .arg(&path)
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "ready", "child did not start");
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 120));
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success());
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        // Only complete lines count: the kill may cut the last one.
        let complete = match rest.rfind('\n') {
            Some(i) => &rest[..=i],
            None => "",
        };
        let mut run_acks = 0;
        for line in complete.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 5, "bad line {line:?}");
            let (a, b, writer, v0): (u64, u64, i64, i64) = (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            );
            assert!(a >= floor, "run {run}: seq {a} reused (floor {floor})");
            for (i, seq) in (a..=b).enumerate() {
                let prev = acked.insert(seq, (format!("dev-{writer}"), v0 + i as i64));
                assert!(prev.is_none(), "seq {seq} acknowledged twice");
            }
            run_acks += 1;
        }
        total_acks += run_acks;

        let mut store = open(&path);
        let stored: BTreeMap<u64, (String, i64)> = store
            .read_all()
            .unwrap()
            .into_iter()
            .filter_map(|s| match &s.event.body {
                Body::Telemetry(p) => match p.first().map(|p| &p.value) {
                    Some(Value::I64(v)) => Some((s.seq.0, (s.event.device.clone(), *v))),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        for (seq, want) in &acked {
            assert_eq!(
                stored.get(seq),
                Some(want),
                "run {run}: acknowledged seq {seq} lost or changed"
            );
        }
        floor = store.stats().next_seq;
        let max_stored = stored.keys().next_back().copied().unwrap_or(0);
        assert!(floor > max_stored);
    }
    eprintln!(
        "{KILLS} kills, {total_acks} acknowledged appends, {} events verified",
        acked.len()
    );
    assert!(
        total_acks >= KILLS,
        "the child barely ran ({total_acks} acks): the test proves nothing"
    );
}
