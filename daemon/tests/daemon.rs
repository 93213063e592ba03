//! The daemon as a user runs it: the demo, SIGTERM, check-config.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_core::Body;

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

use outpost_tests::read_log;

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Runs `outpostd run --data-dir DATA` for `secs`, then SIGTERM; asserts a
/// clean exit and returns what it printed on stdout.
fn run_for(data: &Path, millis: u64) -> String {
    let mut child = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(millis));
    sigterm(child.id());
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("outpostd did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_demo_runs_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("XDG_STATE_HOME")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    sigterm(child.id());
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "exit status {status:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Starting outpostd"), "{stdout}");
    assert!(
        stdout.contains("outpost-data"),
        "says where its data is: {stdout}"
    );
    assert!(stdout.contains("outpostd stopped"), "{stdout}");

    let events = read_log(&dir.path().join("outpost-data/events.db"));
    let telemetry: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.event.body, Body::Telemetry(_)))
        .collect();
    let boiler = telemetry
        .iter()
        .filter(|e| e.event.device == "boiler-room")
        .count();
    assert!(
        boiler >= 2,
        "boiler-room samples every second: {boiler} in 3 s"
    );
    assert!(telemetry.iter().any(|e| e.event.device == "water-meter"));
    assert!(events
        .iter()
        .any(|e| matches!(&e.event.body, Body::Audit(a) if a.action == "daemon.started")));
    // Drivers report they stopped, and that reached the log before exit.
    let stopped = events
        .iter()
        .filter(|e| matches!(&e.event.body, Body::Status(s) if s.status == outpost_core::DeviceStatus::Stopped))
        .count();
    assert_eq!(
        stopped, 2,
        "both devices' final status was drained into the log"
    );
    // Seqs are dense and increasing.
    for w in events.windows(2) {
        assert!(w[1].seq > w[0].seq);
    }
}

#[test]
fn a_restart_continues_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut seqs = Vec::new();
    for _ in 0..2 {
        run_for(&data, 1500);
        seqs.push(
            read_log(&data.join("events.db"))
                .iter()
                .map(|e| e.seq.0)
                .collect::<Vec<_>>(),
        );
    }
    assert!(seqs[1].len() > seqs[0].len());
    assert_eq!(
        &seqs[1][..seqs[0].len()],
        &seqs[0][..],
        "the second run appended after the first"
    );
}

#[test]
fn a_corrupt_log_at_start_is_moved_aside_and_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("events.db"), vec![0xA5u8; 64 * 1024]).unwrap();
    let stdout = run_for(&data, 1500);
    assert!(stdout.contains("moved aside"), "reported loudly: {stdout}");
    let moved: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.db.corrupt-")
        })
        .collect();
    assert_eq!(moved.len(), 1, "the bad file is kept");
    assert_eq!(
        std::fs::read(moved[0].path()).unwrap(),
        vec![0xA5u8; 64 * 1024]
    );
    let events = read_log(&data.join("events.db"));
    assert!(matches!(&events[0].event.body, Body::Audit(a) if a.action == "log.recovered"));
    assert!(events
        .iter()
        .any(|e| matches!(e.event.body, Body::Telemetry(_))));
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/outpost.toml");
    let out = Command::new(BIN)
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_config_prints_every_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[gateway]\nid = \"gw\"\ndurability = \"sometimes\"\n\n[[device]]\nname = \"x\"\ncolour = 1\n[device.sim]\n[[device.sim.tag]]\nname = \"t\"\ncounter = {}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = file.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:3:14: gateway.durability: unknown variant `sometimes`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:7:1: device[0].colour: unknown key `colour`"
        )),
        "{err}"
    );
    assert!(err.contains("2 problem(s)"), "{err}");
}

#[test]
fn an_invalid_config_never_starts_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[gateway]\nid = \"\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.id"));
    assert!(
        !dir.path().join("outpost-data").exists(),
        "nothing was started"
    );
}

#[test]
fn a_missing_chain_file_exits_2_like_any_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(
        &file,
        "[gateway]\nid = \"gw\"\n[web]\nenabled = false\n[rules]\nchains = [\"gone.json\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gone.json"), "{err}");
}

#[test]
fn a_file_that_is_not_utf8_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.toml");
    std::fs::write(&file, b"[gateway]\nid = \"caf\xe9\"\n").unwrap();
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:2:10: not UTF-8", file.display());
        assert!(err.contains(&want), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(0), "{args:?}");
    }
}

#[test]
fn a_healthy_log_on_a_read_only_file_system_is_refused_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let fs = outpost_tests::site::Tmpfs::mount(dir.path(), "32m");
    let data = dir.path().join("data");
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nid = \"gw\"\n[web]\nenabled = false\n[[device]]\nname = \"d\"\n\
         [device.sim]\ninterval = \"100ms\"\n[[device.sim.tag]]\nname = \"t\"\n\
         counter = { start = 0, step = 1 }\n",
    )
    .unwrap();
    let mut d = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !data.join("events.db").exists() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(d.id().to_string())
        .status();
    let _ = d.wait();
    let before = std::fs::read(data.join("events.db")).unwrap();
    assert!(fs.remount("ro"), "cannot remount read-only");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("Read-only file system"), "{said}");
    assert!(
        !said.contains("moved it aside") && !said.contains("unreadable"),
        "{said}"
    );
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
    assert_eq!(std::fs::read(data.join("events.db")).unwrap(), before);
}

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("outpostd 0."));
}
