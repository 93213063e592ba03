//! A gateway under test for the fault matrix and the soak: its files, the
//! release `outpostd` started on them, and what its uplinks' brokers hold.

#![allow(clippy::disallowed_methods)] // test support: spawns, sleeps and opens SQLite freely

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A small xorshift generator: the faults' moments, reproducible from a seed.
#[derive(Debug)]
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo))
    }
}

pub fn bin() -> PathBuf {
    std::env::var_os("OUTPOSTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target/release/outpostd"))
}

/// A gateway's files: its configuration and data directory.
#[derive(Debug)]
pub struct Site {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub data: PathBuf,
}

impl Default for Site {
    fn default() -> Site {
        Site::new()
    }
}

impl Site {
    pub fn new() -> Site {
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("FAULTS_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("faults: keeping {}", dir.path().display());
        }
        Site {
            cfg: dir.path().join("outpost.toml"),
            data: dir.path().join("data"),
            dir,
        }
    }
    pub fn configure(&self, uplink: &str, device: bool) {
        let device = if device {
            "[[device]]\nname = \"fast\"\n[device.sim]\ninterval = \"10ms\"\n\
             [[device.sim.tag]]\nname = \"n\"\ncounter = {}\n"
        } else {
            ""
        };
        std::fs::write(
            &self.cfg,
            format!(
                "[gateway]\nid = \"gw\"\ndurability = \"full\"\n[web]\nenabled = false\n{device}{uplink}"
            ),
        )
        .unwrap();
    }
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.args(["run", "--config"])
            .arg(&self.cfg)
            .arg("--data-dir")
            .arg(&self.data);
        c
    }
    /// Starts the daemon; what it says is appended to `outpostd.log` beside
    /// the data directory (`FAULTS_KEEP=1` keeps it for reading).
    pub fn start(&self) -> Child {
        self.spawn(self.command())
    }
    /// Starts `cmd` (the daemon, wrapped or with its environment changed),
    /// its output appended to `outpostd.log`.
    pub fn spawn(&self, mut cmd: Command) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("outpostd.log"))
            .unwrap();
        cmd.stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting outpostd")
    }
    /// Runs the daemon to its end; its exit status and everything it said.
    pub fn run_to_end(&self) -> (bool, String) {
        let out = self.command().output().expect("starting outpostd");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    }
    /// Everything the daemons started with [`Site::start`] said so far.
    pub fn said(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("outpostd.log")).unwrap_or_default()
    }
    pub fn db(&self) -> PathBuf {
        self.data.join("events.db")
    }
    /// Every seq the log has handed out, and whether the file is intact.
    pub fn accepted(&self) -> (u64, Result<(), String>) {
        let check = integrity(&self.db());
        let opts = outpost_sync::log::StoreOptions {
            durability: outpost_config::Durability::Normal,
            limits: outpost_sync::log::Limits::UNLIMITED,
            max_page_count: None,
            reserve_bytes: 0,
        };
        match outpost_sync::log::Store::open(&self.db(), opts, outpost_core::Timestamp::synced(0)) {
            Ok((store, _)) => (store.stats().next_seq - 1, check),
            Err(e) => (0, Err(format!("the log does not open: {e}"))),
        }
    }
}

pub fn integrity(db: &Path) -> Result<(), String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let r: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if r == "ok" {
        Ok(())
    } else {
        Err(format!("integrity_check: {r}"))
    }
}

pub fn stop(mut child: Child) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().map(|s| s.success()).unwrap_or(false)
}

pub fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// What the NATS stream holds: seq → how many messages carry it.
pub fn nats_seen(rt: &tokio::runtime::Runtime, url: &str) -> BTreeMap<u64, u64> {
    rt.block_on(async {
        let mut out = BTreeMap::new();
        let Ok(client) = async_nats::connect(url).await else {
            return out;
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut st) = js.get_stream("OUTPOST").await else {
            return out;
        };
        let (first, last) = match st.info().await {
            Ok(i) => (i.state.first_sequence, i.state.last_sequence),
            Err(_) => return out,
        };
        for i in first..=last {
            if let Ok(m) = st.get_raw_message(i).await {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
                    if let Some(s) = v["seq"].as_u64() {
                        *out.entry(s).or_insert(0) += 1;
                    }
                }
            }
        }
        out
    })
}

pub fn nats_uplink(url: &str) -> String {
    format!("[[uplink]]\nname = \"cloud\"\n[uplink.nats]\nurl = \"{url}\"\ncreate_stream = true\n")
}

pub fn mqtt_uplink(url: &str) -> String {
    format!("[[uplink]]\nname = \"cloud\"\n[uplink.mqtt]\nurl = \"{url}\"\nmax_inflight = 8\nmax_payload = 4096\n")
}

/// A subscriber that keeps its session across broker restarts and counts
/// every seq it receives.
pub fn mqtt_subscriber(
    rt: &tokio::runtime::Runtime,
    port: u16,
) -> (Arc<Mutex<BTreeMap<u64, u64>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let s = seen.clone();
    let task = rt.spawn(async move {
        let mut o = rumqttc::MqttOptions::new("faults-check", "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (c, mut el) = rumqttc::AsyncClient::new(o, 1000);
        let _ = c.subscribe("gw/#", rumqttc::QoS::AtLeastOnce).await;
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    if !a.session_present {
                        let _ = c.subscribe("gw/#", rumqttc::QoS::AtLeastOnce).await;
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(arr) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        let mut s = s.lock().unwrap();
                        for e in arr.as_array().into_iter().flatten() {
                            if let Some(q) = e["seq"].as_u64() {
                                *s.entry(q).or_insert(0) += 1;
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (seen, task)
}

/// A size-limited tmpfs mounted at a directory (root only), unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (util-linux) is needed");
        assert!(ok.success(), "mounting a tmpfs needs root: run as root");
        Tmpfs(dir.to_path_buf())
    }
    /// `mount -o remount,<how>` (`ro` or `rw`).
    pub fn remount(&self, how: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Gives the daemon at `data` an admin API token (`web/tokens.json`, the
/// token's SHA-256 as the users page stores it), for clients that call the
/// API without logging in.
pub fn write_api_token(data: &Path, name: &str, token: &str) {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let sha: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let web = data.join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("tokens.json"),
        format!("{{\"tokens\":[{{\"name\":\"{name}\",\"role\":\"admin\",\"sha256\":\"{sha}\"}}]}}"),
    )
    .unwrap();
}
