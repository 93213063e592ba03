//! Rows whose fault is under the log: a full disk, a read-only or
//! unwritable data directory, and the wall clock jumping.
//!
//! Without an uplink the log keeps every event, so these rows count the
//! log itself: every seq it handed out is still there, in order.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use outpost_tests::site::{bin, nats_seen, nats_uplink, stop, Site, Tmpfs};
use outpost_tests::NatsServer;

use super::{count_log, drain_and_count, now_ms, Row};

/// Waits up to `limit` for the daemon's output to contain `what`.
fn wait_said(site: &Site, what: &str, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if site.said().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The disk fills up under a running daemon (no uplink, so the log must
/// grow), stays full, then space returns; afterwards everything drains.
pub fn disk_full(rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("disk full (a 24 MiB tmpfs filled, then freed)", 1);
    let server = NatsServer::start();
    let site = Site::new();
    let _fs = Tmpfs::mount(&site.data, "24m");
    site.configure("", true);
    let mut child = site.start();
    std::thread::sleep(Duration::from_millis(1500));
    // Fill the rest, and keep topping up what the daemon frees (its space
    // reserve) until the log refuses events.
    let filler = site.data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let end = Instant::now() + Duration::from_secs(40);
    let refusal = "Disk full: the event log refuses events";
    while Instant::now() < end && !site.said().contains(refusal) {
        if f.write_all(&chunk).is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if !site.said().contains(refusal) {
        row.problems
            .push("the log never reported the full disk".into());
    }
    std::thread::sleep(Duration::from_secs(3));
    if child.try_wait().ok().flatten().is_some() {
        row.problems.push("outpostd exited on the full disk".into());
    }
    drop(f);
    let _ = std::fs::remove_file(&filler);
    if !wait_said(&site, "Disk space is back", Duration::from_secs(20)) {
        row.problems
            .push("no recovery reported after space returned".into());
    }
    std::thread::sleep(Duration::from_secs(1));
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    let uplink = nats_uplink(&server.url());
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    row
}

/// The file system under a healthy log is read-only at start: refused with
/// the reason, the log left exactly as it was (not moved aside); once it is
/// writable again the daemon runs on and everything drains.
pub fn read_only(rt: &tokio::runtime::Runtime) -> Row {
    let mut row = Row::new("read-only file system under the log, then writable", 1);
    let server = NatsServer::start();
    let site = Site::new();
    let fs = Tmpfs::mount(&site.data, "32m");
    site.configure("", true);
    let child = site.start();
    std::thread::sleep(Duration::from_millis(1500));
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    let before = std::fs::read(site.db()).unwrap_or_default();
    if !fs.remount("ro") {
        row.problems.push("cannot remount read-only".into());
        return row;
    }
    let (ran, said) = site.run_to_end();
    if ran {
        row.problems.push("it ran on a read-only log".into());
    } else if !said.contains("Read-only file system") {
        row.problems
            .push(format!("the refusal does not say why: {said}"));
    }
    if said.contains("moved it aside") {
        row.problems.push("a healthy log was moved aside".into());
    }
    if std::fs::read(site.db()).unwrap_or_default() != before {
        row.problems.push("the log changed".into());
    }
    if !fs.remount("rw") {
        row.problems.push("cannot remount read-write".into());
        return row;
    }
    let child = site.start();
    std::thread::sleep(Duration::from_millis(1500));
    if !stop(child) {
        row.problems
            .push("outpostd did not run on after the remount".into());
    }
    let uplink = nats_uplink(&server.url());
    drain_and_count(&mut row, &site, &uplink, &|| nats_seen(rt, &server.url()));
    row
}

/// A data directory the daemon's user cannot write (root's, mode 0555, the
/// daemon run as `nobody`): refused, the directory named, nothing created.
pub fn not_writable() -> Row {
    let mut row = Row::new("data directory not writable (outpostd as nobody)", 1);
    let site = Site::new();
    site.configure("", true);
    use std::os::unix::fs::PermissionsExt;
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(site.dir.path(), open).unwrap();
    std::fs::set_permissions(&site.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(&site.data).unwrap();
    std::fs::set_permissions(&site.data, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["run", "--config"])
        .arg(&site.cfg)
        .arg("--data-dir")
        .arg(&site.data)
        .output()
        .expect("setpriv (util-linux) is needed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        row.problems.push("it ran".into());
    } else if !said.contains(&*site.data.to_string_lossy()) {
        row.problems
            .push(format!("the error does not name the directory: {said}"));
    } else if !said.contains("Permission denied") {
        row.problems
            .push(format!("the error does not say why: {said}"));
    }
    let left: Vec<_> = std::fs::read_dir(&site.data)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        row.problems.push(format!("files were created: {left:?}"));
    }
    row
}

/// The wall clock jumps back an hour, then forward a day, then returns
/// (libfaketime; the monotonic clock runs on): every event is kept, the
/// device keeps its rate, and the jumps show in the events' times.
pub fn clock_jumps() -> Row {
    let mut row = Row::new("wall clock jumps back 1 h, forward 1 d, back", 1);
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !std::path::Path::new(lib).exists() {
        row.problems.push(format!(
            "{lib} is missing: apt-get install faketime (./tests/run does)"
        ));
        return row;
    }
    let site = Site::new();
    site.configure("", true);
    // A synchronised clock (as after NTP), so that its steps are steps.
    let text = std::fs::read_to_string(&site.cfg).unwrap();
    std::fs::write(
        &site.cfg,
        text.replacen("[gateway]\n", "[gateway]\nclock = \"trust\"\n", 1),
    )
    .unwrap();
    let offset = site.dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut cmd = site.command();
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let real_start = now_ms();
    let t = Instant::now();
    let child = site.spawn(cmd);
    for (wait, to) in [(1500, "-3600"), (2000, "+86400"), (2000, "+0")] {
        std::thread::sleep(Duration::from_millis(wait));
        std::fs::write(&offset, format!("{to}\n")).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let ran = t.elapsed();
    if !stop(child) {
        row.problems.push("outpostd did not stop cleanly".into());
    }
    let events = count_log(&mut row, &site);
    let readings = events.iter().filter(|e| e.event.device == "fast").count();
    // 10 ms interval: 100 a second while the clock jumps around.
    let expected = ran.as_millis() as usize / 10;
    if readings < expected / 2 {
        row.problems.push(format!(
            "the device slowed down: {readings} readings in {ran:.1?} (expected ~{expected})"
        ));
    }
    let ts: Vec<i64> = events.iter().map(|e| e.event.ts.unix_ms).collect();
    let back = ts.iter().any(|&t| t < real_start - 30 * 60_000);
    let ahead = ts.iter().any(|&t| t > real_start + 12 * 3_600_000);
    if !back || !ahead {
        row.problems.push(format!(
            "the jumps do not show in the events' times (back {back}, ahead {ahead}): libfaketime not in effect"
        ));
    }
    // Each step is on record, and the log kept its order (by seq).
    let jumps: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event.body {
            outpost_core::Body::Audit(a) if a.action == "clock.jump" => Some(a.detail.as_str()),
            _ => None,
        })
        .collect();
    let (n_back, n_fwd) = (
        jumps.iter().filter(|d| d.contains(" back by ")).count(),
        jumps.iter().filter(|d| d.contains(" forward by ")).count(),
    );
    if n_back < 2 || n_fwd < 1 {
        row.problems.push(format!(
            "clock steps not audited: {n_back} back, {n_fwd} forward (expected 2 and 1): {jumps:?}"
        ));
    }
    if !events.windows(2).all(|w| w[0].seq < w[1].seq) {
        row.problems.push("the log is not in seq order".into());
    }
    row
}
