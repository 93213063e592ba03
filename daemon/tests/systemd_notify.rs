//! outpostd under systemd's notify protocol, without systemd: the test is
//! the service manager. It binds the `NOTIFY_SOCKET` datagram socket, sets
//! `WATCHDOG_USEC`, runs the real daemon and reads what it says:
//! `READY=1` with a `STATUS=`, watchdog pings while every stage makes
//! progress, none while the event log's file system is frozen
//! (`fsfreeze`, a real stall of the writer, not a simulated one) and a
//! `STATUS=` that names the stalled stage, pings again once it thaws, and
//! `STOPPING=1` on SIGTERM.
//!
//! Needs root (a loop device, mount, fsfreeze from util-linux, mkfs.ext4
//! from e2fsprogs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // test code

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed (util-linux, e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (this test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ext4 file system on a loop device, mounted at `at`; on drop it is
/// thawed first (so that nothing blocked on it hangs), then the daemon is
/// killed, then it is unmounted and the loop device freed.
struct Frozen {
    at: PathBuf,
    device: String,
    child: Option<Child>,
}

impl Frozen {
    fn mount(image: &Path, at: &Path) -> Frozen {
        std::fs::File::create(image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let f = Frozen {
            at: at.to_path_buf(),
            device,
            child: None,
        };
        run("/usr/sbin/mkfs.ext4", &["-q", "-F", &f.device]);
        std::fs::create_dir_all(at).unwrap();
        run("mount", &[&f.device, at.to_str().unwrap()]);
        f
    }
    fn freeze(&self) {
        run("/usr/sbin/fsfreeze", &["-f", self.at.to_str().unwrap()]);
    }
    fn thaw(&self) {
        run("/usr/sbin/fsfreeze", &["-u", self.at.to_str().unwrap()]);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let at = self.at.to_str().unwrap_or_default();
        Command::new("/usr/sbin/fsfreeze")
            .args(["-u", at])
            .output()
            .ok();
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
        Command::new("umount").arg(at).status().ok();
        Command::new("losetup")
            .args(["-d", &self.device])
            .status()
            .ok();
    }
}

/// What the daemon sent, each datagram with when it came.
type Heard = Arc<Mutex<Vec<(Instant, String)>>>;

fn listen(sock: UnixDatagram) -> Heard {
    let heard: Heard = Arc::default();
    let h = heard.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            h.lock().unwrap().push((Instant::now(), msg));
        }
    });
    heard
}

fn since(heard: &Heard, t: Instant) -> Vec<String> {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at >= t)
        .map(|(_, m)| m.clone())
        .collect()
}

/// Whether a datagram carries `line` (e.g. `READY=1`) as one of its lines.
fn says(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn pings(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| says(m, "WATCHDOG=1")).count()
}

fn wait_until(heard: &Heard, t: Instant, limit: Duration, what: &str, f: impl Fn(&str) -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if since(heard, t).iter().any(|m| f(m)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {what} within {limit:?}; heard: {:#?}", since(heard, t));
}

#[test]
fn ready_pings_a_frozen_log_stops_the_pings_and_names_the_writer_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut fs = Frozen::mount(&dir.path().join("fs.img"), &data);
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nid = \"gw\"\n[web]\nenabled = false\n\
         [[device]]\nname = \"fast\"\n[device.sim]\ninterval = \"10ms\"\n\
         [[device.sim.tag]]\nname = \"n\"\ncounter = {}\n",
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let heard = listen(sock);

    let t0 = Instant::now();
    let log = std::fs::File::create(dir.path().join("outpostd.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    fs.child = Some(child);
    let said = || std::fs::read_to_string(dir.path().join("outpostd.log")).unwrap_or_default();

    wait_until(&heard, t0, Duration::from_secs(30), "READY=1", |m| {
        says(m, "READY=1")
    });
    let ready = since(&heard, t0)
        .into_iter()
        .find(|m| says(m, "READY=1"))
        .unwrap();
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("devices online")),
        "READY=1 comes with a status: {ready:?}"
    );

    // Pinged every half period while every stage makes progress.
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let n = pings(&since(&heard, t1));
    assert!(n >= 3, "{n} pings in 3 s with a 1 s watchdog\n{}", said());

    // A real stall: the log's file system frozen under the writer.
    fs.freeze();
    let t2 = Instant::now();
    wait_until(
        &heard,
        t2,
        Duration::from_secs(15),
        "STATUS naming the stalled writer",
        |m| m.contains("STATUS=Stalled") && m.contains("event log writer"),
    );
    let t3 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let during = since(&heard, t3);
    assert_eq!(
        pings(&during),
        0,
        "no ping while the writer is stuck: {during:#?}"
    );

    // Thawed, the writer catches up and the pings resume.
    fs.thaw();
    let t4 = Instant::now();
    wait_until(
        &heard,
        t4,
        Duration::from_secs(15),
        "a ping after the thaw",
        |m| says(m, "WATCHDOG=1"),
    );

    let t5 = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut child = fs.child.take().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "outpostd did not stop on SIGTERM\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", said());
    assert!(
        since(&heard, t5).iter().any(|m| says(m, "STOPPING=1")),
        "STOPPING=1 on SIGTERM: {:#?}",
        since(&heard, t5)
    );
    let log = said();
    assert!(
        log.contains("stuck") && log.contains("event log writer"),
        "the stall is logged with its stage:\n{log}"
    );
}
