//! `outpostd export` and `outpostd log stats` against a log the daemon
//! writes, while it writes: CSV and JSON lines parsed back and compared with
//! the log itself, read after the daemon stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_core::{Body, Value};
use outpost_tests::{read_log, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

fn outpostd(args: &[&str], data: &Path) -> (String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "outpostd {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn stats(data: &Path) -> serde_json::Value {
    serde_json::from_str(&outpostd(&["log", "stats", "--json"], data).0).unwrap()
}

/// A CSV line split into cells (quotes as the export writes them).
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn now_ms() -> i64 {
    outpost_core::unix_ms_now()
}

#[test]
fn export_while_the_daemon_appends_matches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut daemon = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = data.join("events.db");
    wait_for("the demo to log 20 events", Duration::from_secs(60), || {
        (db.is_file() && stats(&data)["events"].as_u64().unwrap_or(0) >= 20).then_some(())
    });
    // Most of what is stamped before `to` is committed within the commit
    // delay (2 s by default); an export reads one snapshot, so it holds
    // exactly the events before `to` up to some seq between the log's last
    // seq before it started and after it ended.
    let to = now_ms();
    std::thread::sleep(Duration::from_millis(3000));
    let to_arg = to.to_string();
    let last_seq = |data: &Path| stats(data)["last_seq"].as_u64().unwrap();
    let json_before = last_seq(&data);
    let (jsonl, summary) = outpostd(&["export", "--format", "jsonl", "--to", &to_arg], &data);
    let json_after = last_seq(&data);
    assert!(summary.contains("events"), "{summary}");
    let csv_before = last_seq(&data);
    let (csv, _) = outpostd(&["export", "--to", &to_arg], &data);
    let csv_after = last_seq(&data);
    let (boiler, _) = outpostd(
        &[
            "export",
            "--format",
            "jsonl",
            "--device",
            "boiler-room",
            "--kind",
            "telemetry",
        ],
        &data,
    );
    let during = stats(&data);
    // The daemon kept appending through the exports.
    std::thread::sleep(Duration::from_millis(3000));
    let later = stats(&data)["events"].as_u64().unwrap();
    assert!(
        later > during["events"].as_u64().unwrap(),
        "{later} {during}"
    );
    let ok = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(daemon.wait().unwrap().success());

    let log: Vec<_> = read_log(&db)
        .into_iter()
        .filter(|e| e.event.ts.unix_ms < to)
        .collect();
    assert!(log.len() >= 20, "{}", log.len());

    // JSON lines: one per event, in seq order, with the event's values.
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    let snapshot = seqs.last().copied().unwrap_or(0).max(json_before);
    assert!(snapshot <= json_after, "{snapshot} > {json_after}");
    let json_log: Vec<_> = log.iter().filter(|e| e.seq.0 <= snapshot).collect();
    let want: Vec<u64> = json_log.iter().map(|e| e.seq.0).collect();
    assert_eq!(
        seqs, want,
        "the JSON lines hold exactly the log's events before `to` (snapshot at seq {snapshot})"
    );
    for (line, e) in lines.iter().zip(json_log) {
        assert_eq!(line["device"], e.event.device.as_str());
        assert_eq!(line["kind"], e.event.kind().as_str());
        assert_eq!(line["ts_ms"], e.event.ts.unix_ms);
        if let Body::Telemetry(points) = &e.event.body {
            for p in points {
                let v = &line["values"][&p.tag];
                match &p.value {
                    // serde_json's default float parser may be one ulp off.
                    Value::F64(x) => {
                        let got = v.as_f64().expect("a number");
                        assert!((got - x).abs() <= x.abs() * 1e-15, "{line}");
                    }
                    Value::I64(x) => assert_eq!(v.as_i64(), Some(*x), "{line}"),
                    Value::U64(x) => assert_eq!(v.as_u64(), Some(*x), "{line}"),
                    Value::Bool(x) => assert_eq!(v.as_bool(), Some(*x), "{line}"),
                    Value::Str(x) => assert_eq!(v.as_str(), Some(x.as_str()), "{line}"),
                    Value::Bytes(_) => {}
                }
            }
        }
    }

    // CSV: the header, then one row per value (one per event of other kinds).
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("seq,time,ts_ms,device,kind,tag,value,quality,clock")
    );
    let rows: Vec<Vec<String>> = rows.map(cells).collect();
    let csv_last = rows
        .iter()
        .filter_map(|r| r[0].parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let snapshot = csv_last.max(csv_before);
    assert!(snapshot <= csv_after, "{snapshot} > {csv_after}");
    let expected_rows: usize = log
        .iter()
        .filter(|e| e.seq.0 <= snapshot)
        .map(|e| match &e.event.body {
            Body::Telemetry(p) | Body::Attributes(p) => p.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(rows.len(), expected_rows);
    let by_seq: BTreeMap<u64, &outpost_sync::StoredEvent> =
        log.iter().map(|e| (e.seq.0, e)).collect();
    for r in &rows {
        assert_eq!(r.len(), 9, "{r:?}");
        let e = by_seq[&r[0].parse::<u64>().unwrap()];
        assert_eq!(r[8], e.event.ts.clock.as_str());
        assert_eq!(r[2], e.event.ts.unix_ms.to_string());
        assert_eq!(r[4], e.event.kind().as_str());
        if let Body::Telemetry(points) = &e.event.body {
            let p = points
                .iter()
                .find(|p| p.tag == r[5])
                .expect("the row's tag");
            if let Value::F64(x) = p.value {
                assert_eq!(r[6].parse::<f64>().unwrap(), x);
            }
        }
    }

    // Filters: one device, one kind.
    let b: Vec<serde_json::Value> = boiler
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!b.is_empty());
    assert!(b
        .iter()
        .all(|l| l["device"] == "boiler-room" && l["kind"] == "telemetry"));
    let boiler_in_log = log
        .iter()
        .filter(|e| e.event.device == "boiler-room" && e.event.kind().as_str() == "telemetry")
        .count();
    assert!(b.len() >= boiler_in_log);

    // log stats agrees with the log.
    let s = stats(&data);
    let all = read_log(&db);
    assert_eq!(s["events"].as_u64().unwrap(), all.len() as u64);
    assert_eq!(s["last_seq"].as_u64().unwrap(), all.last().unwrap().seq.0);
    let per_device: u64 = s["per_device"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["events"].as_u64().unwrap())
        .sum();
    assert_eq!(per_device, all.len() as u64);
}

#[test]
fn bad_export_arguments_are_all_reported_and_nothing_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "export",
            "--format",
            "xml",
            "--kind",
            "nope",
            "--from",
            "yesterday",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["--format", "--kind \"nope\"", "--from \"yesterday\""] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    let out = Command::new(BIN)
        .args(["log", "stats", "--data-dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event log here"));
}

/// The export figure of BENCHMARKS.md (not part of `./tests/run`): a
/// 1,000,000-event log exported as CSV and as JSON lines by the binary under
/// test (or `OUTPOSTD_BIN`), with its peak RSS. Run it against an optimised
/// build: `OUTPOSTD_BIN=target/release/outpostd cargo test -p outpost-daemon
/// --test export -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints the export rate and peak RSS of a 1,000,000-event export"]
fn export_a_million_events() {
    use outpost_core::{Event, Point, Timestamp};
    use outpost_sync::log::{Durability, Limits, Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        durability: Durability::Normal,
        limits: Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: 0,
    };
    let t0 = 1_764_000_000_000i64;
    {
        let (mut store, _) =
            Store::open(&dir.path().join("events.db"), o, Timestamp::synced(t0)).unwrap();
        for b in 0..1000i64 {
            let batch: Vec<Event> = (0..1000i64)
                .map(|i| {
                    let n = b * 1000 + i;
                    Event::new(
                        ["boiler-room", "pump-2", "meter-3"][(n % 3) as usize],
                        Timestamp::synced(t0 + n * 100),
                        Body::Telemetry(vec![
                            Point::good("temp", Value::F64(20.0 + (n % 100) as f64 / 10.0)),
                            Point::good("count", Value::U64(n as u64)),
                        ]),
                    )
                })
                .collect();
            store.append(&batch, Timestamp::synced(t0)).unwrap();
        }
    }
    // OUTPOSTD_BIN: another build to measure (e.g. target/release/outpostd).
    let bin = std::env::var("OUTPOSTD_BIN").unwrap_or_else(|_| BIN.to_string());
    for format in ["csv", "jsonl"] {
        let started = std::time::Instant::now();
        let out = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(&bin)
            .args([
                "export",
                "--format",
                format,
                "-o",
                "/dev/null",
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .expect("/usr/bin/time (apt-get install time)");
        let secs = started.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let rss_kib: u64 = err.lines().last().unwrap().trim().parse().unwrap();
        println!(
            "export {format}: 1,000,000 events in {secs:.2} s = {:.0} events/s, peak RSS {:.1} MiB ({})",
            1e6 / secs,
            rss_kib as f64 / 1024.0,
            err.lines().next().unwrap_or("")
        );
    }
}
