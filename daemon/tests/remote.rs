//! Remote configuration against real peers: nats-server (KV bucket),
//! Mosquitto (retained topic, ThingsBoard shared attributes) and two
//! pymodbus devices, with outpostd as a process.
//!
//! "Only the changed device restarted" is checked on the wire: the local
//! port of each device's TCP connection (from /proc/net/tcp) before and
//! after; an unchanged device keeps its connection.

#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use outpost_config::document::{public_key_of, Document};
use outpost_tests::{connections_to, one_connection, ModbusPeer, Mosquitto, NatsServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");
const SEED: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

fn peer() -> ModbusPeer {
    ModbusPeer::tcp(&json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [42]}]}]}))
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Site {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    data: PathBuf,
}

impl Site {
    fn new(body: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("outpost.toml");
        std::fs::write(&cfg, body).unwrap();
        let data = dir.path().join("data");
        Site { dir, cfg, data }
    }

    fn start(&self) -> Daemon {
        Daemon(outpost_tests::start_outpostd(
            BIN,
            &self.cfg,
            &self.data,
            Stdio::null(),
        ))
    }

    fn kept_version(&self) -> Option<u64> {
        let bytes = std::fs::read(self.data.join("config/current.json")).ok()?;
        Some(Document::from_json(&bytes).unwrap().version)
    }
}

/// Devices `a` and `b` on their peers; `a_period` is what the pushes change.
fn devices(pa: u16, pb: u16, a_period: &str) -> String {
    format!(
        "[[device]]\nname = \"a\"\n[device.modbus]\ntcp = \"127.0.0.1:{pa}\"\nunit = 1\nperiod = \"{a_period}\"\n\
         [[device.modbus.tag]]\nname = \"x\"\ntable = \"holding\"\naddress = 0\n\
         [[device]]\nname = \"b\"\n[device.modbus]\ntcp = \"127.0.0.1:{pb}\"\nunit = 1\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"y\"\ntable = \"holding\"\naddress = 0\n"
    )
}

fn nats_config(nats: &str, devices: &str, grace: &str) -> String {
    format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n\
         [remote]\nfleet_public_key = \"{key}\"\nnats_uplink = \"cloud\"\ngrace = \"{grace}\"\n\
         {devices}\
         [[uplink]]\nname = \"cloud\"\n[uplink.nats]\nurl = \"{nats}\"\ncreate_stream = true\n",
        key = public_key_of(SEED).unwrap()
    )
}

fn signed(version: u64, body: &str) -> Vec<u8> {
    let mut d = Document::new(version, body.to_string());
    d.sign(SEED).unwrap();
    d.to_json().into_bytes()
}

/// A KV bucket and the reports put under `gw.report`.
struct Kv {
    store: async_nats::jetstream::kv::Store,
    reports: tokio::sync::mpsc::Receiver<Value>,
}

impl Kv {
    async fn open(url: &str) -> Kv {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let store = js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: "outpost-config".into(),
                history: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut watch = store.watch("gw.report").await.unwrap();
        let (tx, reports) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                let v: Value = serde_json::from_slice(&e.value).unwrap();
                if tx.send(v).await.is_err() {
                    return;
                }
            }
        });
        Kv { store, reports }
    }

    async fn put(&self, doc: Vec<u8>) -> Instant {
        let at = Instant::now();
        self.store.put("gw", doc.into()).await.unwrap();
        at
    }

    async fn report(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(30), self.reports.recv())
            .await
            .expect("a report within 30 s")
            .unwrap()
    }
}

fn errors(r: &Value) -> String {
    r["errors"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kv_pushes_apply_by_diff_reject_bad_documents_and_roll_back() {
    let nats = NatsServer::start();
    let (pa, pb) = (peer(), peer());
    let base = nats_config(&nats.url(), &devices(pa.port, pb.port, "200ms"), "3s");
    let site = Site::new(&base);
    let mut kv = Kv::open(&nats.url()).await;
    let _d = site.start();
    let a0 = one_connection(pa.port, "device a connected");
    let b0 = one_connection(pb.port, "device b connected");

    // v1 changes device a only: a reconnects, b keeps its connection.
    let v1 = nats_config(&nats.url(), &devices(pa.port, pb.port, "300ms"), "3s");
    kv.put(signed(1, &v1)).await;
    let r = kv.report().await;
    assert_eq!(r["state"], "applied", "{r}");
    assert_eq!(r["version"], 1);
    assert_eq!(r["changed"], "drivers restarted: a", "{r}");
    let a1 = one_connection(pa.port, "device a reconnected");
    assert_ne!(a1, a0, "device a's driver was restarted");
    assert_eq!(connections_to(pb.port), [b0], "device b was not touched");
    assert_eq!(site.kept_version(), Some(1));

    // The same document again (as on a reconnect): nothing happens. The
    // next report is the next document's, so the re-put was handled first.
    kv.put(signed(1, &v1)).await;
    // A syntax error.
    kv.put(signed(2, &format!("{v1}\n[[device]\nname = \"c\"\n")))
        .await;
    let r = kv.report().await;
    assert_eq!(
        (r["state"].as_str(), r["version"].as_u64()),
        (Some("rejected"), Some(2)),
        "{r}"
    );
    assert!(errors(&r).contains("NatsKv document v2:"), "{r}");
    // An unknown key, and a bad value: every problem, located.
    let bad = v1
        .replacen(
            "[[device]]\nname = \"b\"",
            "[[device]]\nname = \"b\"\ncolour = \"red\"",
            1,
        )
        .replacen("period = \"300ms\"", "period = \"soon\"", 1);
    kv.put(signed(3, &bad)).await;
    let r = kv.report().await;
    assert_eq!(r["state"], "rejected", "{r}");
    let e = errors(&r);
    assert!(e.contains("device[1].colour: unknown key `colour`"), "{e}");
    assert!(e.contains("device[0].modbus.period"), "{e}");
    assert!(r["errors"].as_array().unwrap().len() >= 2, "{e}");
    // A bad signature: signed by another key.
    let mut forged = Document::new(4, v1.replace("300ms", "400ms"));
    forged
        .sign("1111111111111111111111111111111111111111111111111111111111111111")
        .unwrap();
    kv.put(forged.to_json().into_bytes()).await;
    let r = kv.report().await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert!(errors(&r).contains("signature is not valid"), "{r}");
    // Unsigned.
    kv.put(Document::new(5, v1.clone()).to_json().into_bytes())
        .await;
    let r = kv.report().await;
    assert!(errors(&r).contains("unsigned"), "{r}");
    // An old version.
    kv.put(signed(1, &v1.replace("300ms", "500ms"))).await;
    let r = kv.report().await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert!(
        errors(&r).contains("not newer than the running version 1"),
        "{r}"
    );
    // A change that needs a restart is refused whole.
    kv.put(signed(6, &v1.replace("id = \"gw\"", "id = \"gw2\"")))
        .await;
    let r = kv.report().await;
    assert!(errors(&r).contains("[gateway] differs"), "{r}");
    // None of that touched the running configuration.
    assert_eq!(connections_to(pa.port), [a1]);
    assert_eq!(connections_to(pb.port), [b0]);
    assert_eq!(site.kept_version(), Some(1));

    // v7 validates but device b points where nothing answers: rolled back
    // after the grace period, b back on its peer.
    let dead = outpost_tests::free_port();
    let v7 = nats_config(&nats.url(), &devices(pa.port, dead, "300ms"), "3s");
    let pushed = kv.put(signed(7, &v7)).await;
    let r = kv.report().await;
    let took = pushed.elapsed();
    assert_eq!(r["state"], "rolled_back", "{r}");
    assert!(errors(&r).contains("device \\\"b\\\" not online"), "{r}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let b1 = one_connection(pb.port, "device b back on its peer");
    assert_ne!(b1, b0);
    assert_eq!(
        connections_to(pa.port),
        [a1],
        "device a untouched by the rollback"
    );
    assert_eq!(site.kept_version(), Some(1));

    // v8, a good one, still applies after all that.
    let v8 = nats_config(&nats.url(), &devices(pa.port, pb.port, "250ms"), "3s");
    kv.put(signed(8, &v8)).await;
    let r = kv.report().await;
    assert_eq!(
        (r["state"].as_str(), r["version"].as_u64()),
        (Some("applied"), Some(8)),
        "{r}"
    );
    assert_eq!(site.kept_version(), Some(8));
    let _keep = &site.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_apply_runs_a_whole_configuration_and_says_which() {
    let nats = NatsServer::start();
    let (pa, pb) = (peer(), peer());
    let base = nats_config(&nats.url(), &devices(pa.port, pb.port, "200ms"), "10s");
    let site = Site::new(&base);
    let mut kv = Kv::open(&nats.url()).await;
    let mut d = site.start();
    one_connection(pa.port, "device a connected");
    one_connection(pb.port, "device b connected");
    // v1 moves device a where nothing answers: the apply waits out its
    // 10 s grace period, and the daemon is killed inside it.
    let dead = outpost_tests::free_port();
    let v1 = nats_config(&nats.url(), &devices(dead, pb.port, "200ms"), "10s");
    kv.put(signed(1, &v1)).await;
    outpost_tests::wait_for("the apply to begin", Duration::from_secs(20), || {
        site.data.join("config/pending.json").exists().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        connections_to(pa.port).is_empty(),
        "device a was moved by the apply"
    );
    d.0.kill().unwrap(); // SIGKILL
    d.0.wait().unwrap();
    drop(d);
    // The restart runs the old configuration whole (a on its peer again),
    // and reports the interrupted version as rolled back.
    let _d = site.start();
    let r = kv.report().await;
    assert_eq!(r["state"], "rolled_back", "{r}");
    assert_eq!(r["version"], 1);
    assert_eq!(r["running_version"], 0);
    assert!(errors(&r).contains("interrupted"), "{r}");
    one_connection(pa.port, "device a back on its peer");
    one_connection(pb.port, "device b connected");
    // The watch hands v1 over again, which fails its health check again.
    let r = kv.report().await;
    assert_eq!(
        (r["state"].as_str(), r["version"].as_u64()),
        (Some("rolled_back"), Some(1)),
        "{r}"
    );
    assert!(!site.data.join("config/pending.json").exists());
    assert_eq!(site.kept_version(), None, "nothing was kept from v1");
}

fn mqtt_config(url: &str, devices: &str, tb: bool) -> String {
    let mode = if tb {
        "mode = \"thingsboard\"\nusername = \"gw-token\"\n"
    } else {
        ""
    };
    format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n\
         [remote]\nmqtt_uplink = \"tb\"\nthingsboard = {tb}\ngrace = \"3s\"\n\
         {devices}\
         [[uplink]]\nname = \"tb\"\n[uplink.mqtt]\nurl = \"{url}\"\n{mode}"
    )
}

/// A client on the broker that sees the reports (retained topic and the
/// ThingsBoard client attribute) and can publish documents.
async fn mqtt_peer(
    port: u16,
) -> (
    rumqttc::AsyncClient,
    tokio::sync::mpsc::Receiver<(String, Value)>,
) {
    let mut o = rumqttc::MqttOptions::new("cloud", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
    c.subscribe("outpost/gw/config/report", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    c.subscribe("v1/devices/me/attributes", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let report = if p.topic == "outpost/gw/config/report" {
                        Some(v)
                    } else {
                        v.get("configurationState").cloned()
                    };
                    if let Some(r) = report {
                        if tx.send((p.topic.clone(), r)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (c, rx)
}

/// The next report of `version` on `topic` (each report goes to both).
async fn next_report(
    rx: &mut tokio::sync::mpsc::Receiver<(String, Value)>,
    topic: &str,
    version: u64,
) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let (t, v) = tokio::time::timeout(left, rx.recv())
            .await
            .expect("a report within 30 s")
            .unwrap();
        if t == topic && v["version"] == version {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_retained_topic_applies_by_diff() {
    let broker = Mosquitto::start("");
    let (pa, pb) = (peer(), peer());
    let site = Site::new(&mqtt_config(
        &broker.url(),
        &devices(pa.port, pb.port, "200ms"),
        false,
    ));
    let (cloud, mut reports) = mqtt_peer(broker.port).await;
    let _d = site.start();
    let a0 = one_connection(pa.port, "device a connected");
    let b0 = one_connection(pb.port, "device b connected");

    // Retained topic: v1 changes a.
    let v1 = mqtt_config(&broker.url(), &devices(pa.port, pb.port, "300ms"), false);
    let doc1 = Document::new(1, v1.clone()).to_json();
    cloud
        .publish(
            "outpost/gw/config",
            rumqttc::QoS::AtLeastOnce,
            true,
            doc1.clone(),
        )
        .await
        .unwrap();
    let r = next_report(&mut reports, "outpost/gw/config/report", 1).await;
    assert_eq!(
        (r["state"].as_str(), r["version"].as_u64()),
        (Some("applied"), Some(1)),
        "{r}"
    );
    assert_eq!(r["origin"], "mqtt");
    assert_eq!(r["changed"], "drivers restarted: a", "{r}");
    let a1 = one_connection(pa.port, "device a reconnected");
    assert_ne!(a1, a0);
    assert_eq!(connections_to(pb.port), [b0]);
    // Re-published unchanged: nothing restarts (checked after the next one).
    cloud
        .publish("outpost/gw/config", rumqttc::QoS::AtLeastOnce, true, doc1)
        .await
        .unwrap();

    // v2 changes b only.
    let v2 = mqtt_config(
        &broker.url(),
        &devices(pa.port, pb.port, "300ms").replace("period = \"200ms\"", "period = \"350ms\""),
        false,
    );
    cloud
        .publish(
            "outpost/gw/config",
            rumqttc::QoS::AtLeastOnce,
            true,
            Document::new(2, v2).to_json(),
        )
        .await
        .unwrap();
    let r = next_report(&mut reports, "outpost/gw/config/report", 2).await;
    assert_eq!(r["state"], "applied", "{r}");
    assert_eq!(r["changed"], "drivers restarted: b", "{r}");
    assert_eq!(
        connections_to(pa.port),
        [a1],
        "a kept its connection through v1's re-put and v2"
    );
    one_connection(pb.port, "device b reconnected");
    assert_ne!(connections_to(pb.port), [b0]);
    assert_eq!(site.kept_version(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_attribute_applies_by_diff_and_rejects_a_broken_document() {
    let broker = Mosquitto::start("");
    let (pa, pb) = (peer(), peer());
    let site = Site::new(&mqtt_config(
        &broker.url(),
        &devices(pa.port, pb.port, "300ms"),
        true,
    ));
    let (cloud, mut reports) = mqtt_peer(broker.port).await;
    let _d = site.start();
    let a0 = one_connection(pa.port, "device a connected");
    let b0 = one_connection(pb.port, "device b connected");
    // The gateway's shared attribute: v2 changes b only.
    let v2 = mqtt_config(
        &broker.url(),
        &devices(pa.port, pb.port, "300ms").replace("period = \"200ms\"", "period = \"350ms\""),
        true,
    );
    let attr = json!({ "configuration": serde_json::from_str::<Value>(&Document::new(2, v2).to_json()).unwrap() });
    cloud
        .publish(
            "v1/devices/me/attributes",
            rumqttc::QoS::AtLeastOnce,
            false,
            attr.to_string(),
        )
        .await
        .unwrap();
    let r = next_report(&mut reports, "v1/devices/me/attributes", 2).await;
    assert_eq!(
        (r["state"].as_str(), r["version"].as_u64()),
        (Some("applied"), Some(2)),
        "{r}"
    );
    assert_eq!(r["origin"], "thingsboard");
    assert_eq!(r["changed"], "drivers restarted: b", "{r}");
    assert_eq!(connections_to(pa.port), [a0], "a kept its connection");
    one_connection(pb.port, "device b reconnected");
    assert_ne!(connections_to(pb.port), [b0]);

    // A broken document on the attribute: rejected, reported, nothing changed.
    cloud
        .publish(
            "v1/devices/me/attributes",
            rumqttc::QoS::AtLeastOnce,
            false,
            r#"{"configuration":{"version":3}}"#,
        )
        .await
        .unwrap();
    let r = next_report(&mut reports, "v1/devices/me/attributes", 0).await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert!(errors(&r).contains("not a configuration document"), "{r}");
    assert_eq!(site.kept_version(), Some(2));
}

#[test]
fn outpostd_apply_goes_through_the_manager_and_an_invalid_newer_file_runs_the_last_known_good() {
    let (pa, pb) = (peer(), peer());
    let cfg = |period: &str| {
        format!(
            "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n[remote]\ngrace = \"3s\"\n{}",
            devices(pa.port, pb.port, period)
        )
    };
    let site = Site::new(&cfg("200ms"));
    let mut d = site.start();
    let a0 = one_connection(pa.port, "device a connected");
    let b0 = one_connection(pb.port, "device b connected");
    let apply = |body: &str| {
        let f = site.dir.path().join("new.toml");
        std::fs::write(&f, body).unwrap();
        let out = std::process::Command::new(BIN)
            .arg("apply")
            .arg(&f)
            .arg("--data-dir")
            .arg(&site.data)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // The control socket comes up with the daemon.
    outpost_tests::wait_for("the control socket", Duration::from_secs(10), || {
        site.data.join("control.sock").exists().then_some(())
    });
    let (ok, out) = apply(&cfg("300ms"));
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "applied: drivers restarted: a");
    assert_ne!(one_connection(pa.port, "a reconnected"), a0);
    assert_eq!(connections_to(pb.port), [b0]);
    let (ok, out) = apply(&cfg("300ms").replace("unit = 1", "unit = 1\nspeed = 3"));
    assert!(!ok);
    assert!(out.starts_with("rejected:"), "{out}");
    assert!(
        out.contains("device[0].modbus.speed: unknown key `speed`"),
        "{out}"
    );
    assert_eq!(
        site.kept_version(),
        Some(0),
        "a local apply keeps the version"
    );

    // Stopped, the file is edited into something invalid (newer than the
    // kept document): the daemon starts on the last-known-good.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status();
    d.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&site.cfg, "[gateway]\nid = \"gw\"\nnonsense = 1\n").unwrap();
    let _d2 = site.start();
    one_connection(pa.port, "device a running from the last-known-good");
    one_connection(pb.port, "device b running from the last-known-good");
    drop(d);
    let _ = Path::new("");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_2_9_the_gateway_creates_its_bucket_and_applies() {
    let bin = PathBuf::from("/usr/sbin/nats-server");
    assert!(
        bin.exists(),
        "Debian's nats-server is not installed. Run ./tests/run, or: apt-get install nats-server"
    );
    let nats = NatsServer::start_with(bin);
    let (pa, pb) = (peer(), peer());
    let cfg = |period: &str| {
        nats_config(&nats.url(), &devices(pa.port, pb.port, period), "3s")
            .replace("grace = \"3s\"\n", "grace = \"3s\"\ncreate_bucket = true\n")
    };
    let site = Site::new(&cfg("200ms"));
    let _d = site.start();
    let b0 = one_connection(pb.port, "device b connected");
    // The daemon made the bucket (the client's own creation fails on 2.9).
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let since = Instant::now();
    let store = loop {
        if let Ok(s) = js.get_key_value("outpost-config").await {
            break s;
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the daemon made no bucket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut watch = store.watch("gw.report").await.unwrap();
    store
        .put("gw", signed(1, &cfg("300ms")).into())
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("a report")
        .unwrap()
        .unwrap();
    let r: Value = serde_json::from_slice(&e.value).unwrap();
    assert_eq!(
        (r["state"].as_str(), r["version"].as_u64()),
        (Some("applied"), Some(1)),
        "{r}"
    );
    assert_eq!(connections_to(pb.port), [b0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retained_document_is_rejected_once_and_the_link_backs_off() {
    let broker = Mosquitto::start("");
    let site = Site::new(&mqtt_config(&broker.url(), "", false));
    let (_cloud, mut reports) = mqtt_peer(broker.port).await;
    // A sender that may send what the gateway will not read.
    let mut o = rumqttc::MqttOptions::new("big-sender", "127.0.0.1", broker.port);
    o.set_max_packet_size(8 << 20, 8 << 20);
    let (big, mut el) = rumqttc::AsyncClient::new(o, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let huge = Document::new(7, format!("{}\n", "#".repeat(3 << 20))).to_json();
    big.publish("outpost/gw/config", rumqttc::QoS::AtLeastOnce, true, huge)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let _d = site.start();
    let r = next_report(&mut reports, "outpost/gw/config/report", 0).await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert!(
        errors(&r).contains("at most") && errors(&r).contains("bytes"),
        "the report says the document is too large: {r}"
    );
    // It stays retained: the broker hands it again on every subscribe.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let connects = broker.log().matches(" as gw-config").count();
    let secs = started.elapsed().as_secs_f64();
    // At a fixed 200 ms this was ~5 a second; backing off it is a handful.
    assert!(
        (2..=9).contains(&connects),
        "{connects} connections of the configuration link in {secs:.1} s"
    );
    let mut more = 0;
    while let Ok(Some((t, v))) =
        tokio::time::timeout(Duration::from_millis(200), reports.recv()).await
    {
        if t == "outpost/gw/config/report" && v["state"] == "rejected" {
            more += 1;
        }
    }
    assert_eq!(more, 0, "the same refused document is reported once");

    // A document that fits is read once it comes, and applied.
    let v1 = Document::new(1, mqtt_config(&broker.url(), "", false)).to_json();
    big.publish("outpost/gw/config", rumqttc::QoS::AtLeastOnce, true, v1)
        .await
        .unwrap();
    let r = next_report(&mut reports, "outpost/gw/config/report", 1).await;
    assert!(
        matches!(r["state"].as_str(), Some("applied" | "unchanged")),
        "{r}"
    );
}
