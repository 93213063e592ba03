//! Remote configuration, end to end: outpostd with two pymodbus devices
//! watches its key in a NATS KV bucket. Prints one JSON object:
//!
//! - `put_to_applied_ms`: from the KV put of a new version (device `a`'s
//!   poll period changed) to its `applied` report in the bucket, p50/p99
//!   over 20 pushes;
//! - `put_to_data_path_ms`: from the put to device `a`'s new TCP connection
//!   (the new configuration polling), p50/p99;
//! - `noop_ms`: a re-put of the running document followed at once by an
//!   old version, to the old version's `rejected` report, minus an old
//!   version alone (the re-put's own share), p50 over 20; plus the count
//!   of connections the re-puts reset (must be 0);
//! - `rollback_ms`: a document whose device answers nothing, from the end
//!   of its grace period to its `rolled_back` report and to the device's
//!   connection being back, over 5 pushes.
//!
//! `cargo bench -p outpost-daemon --bench remote`; needs the peers
//! `./tests/run` installs. `OUTPOSTD_BIN` runs another build.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // benchmark code

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use outpost_config::document::Document;
use outpost_tests::{connections_to, one_connection, ModbusPeer, NatsServer};
use serde_json::{json, Value};

const GRACE_S: u64 = 2;

fn bin() -> String {
    std::env::var("OUTPOSTD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_outpostd").to_string())
}

fn config(nats: &str, pa: u16, pb: u16, a_period_ms: u64) -> String {
    format!(
        "[gateway]\nid = \"gw\"\ndurability = \"normal\"\n[web]\nenabled = false\n\
         [remote]\nnats_uplink = \"cloud\"\ngrace = \"{GRACE_S}s\"\n\
         [[device]]\nname = \"a\"\n[device.modbus]\ntcp = \"127.0.0.1:{pa}\"\nunit = 1\nperiod = \"{a_period_ms}ms\"\n\
         [[device.modbus.tag]]\nname = \"x\"\ntable = \"holding\"\naddress = 0\n\
         [[device]]\nname = \"b\"\n[device.modbus]\ntcp = \"127.0.0.1:{pb}\"\nunit = 1\nperiod = \"200ms\"\n\
         [[device.modbus.tag]]\nname = \"y\"\ntable = \"holding\"\naddress = 0\n\
         [[uplink]]\nname = \"cloud\"\nenabled = false\n[uplink.nats]\nurl = \"{nats}\"\n"
    )
}

async fn report(w: &mut async_nats::jetstream::kv::Watch) -> Value {
    let e = tokio::time::timeout(Duration::from_secs(60), w.next())
        .await
        .expect("a report")
        .unwrap()
        .unwrap();
    serde_json::from_slice::<Value>(&e.value).unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nats = NatsServer::start();
    let spec = json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [1]}]}]});
    let (pa, pb) = (ModbusPeer::tcp(&spec), ModbusPeer::tcp(&spec));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "outpost-config".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut watch = kv.watch("gw.report").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(&cfg, config(&nats.url(), pa.port, pb.port, 200)).unwrap();
    let mut daemon =
        outpost_tests::start_outpostd(&bin(), &cfg, &dir.path().join("data"), Stdio::null());
    let mut a_conn = one_connection(pa.port, "device a");
    let b_conn = one_connection(pb.port, "device b");

    let mut applied = Vec::new();
    let mut data_path = Vec::new();
    let mut version = 0;
    for i in 0..20u64 {
        version += 1;
        let doc = Document::new(version, config(&nats.url(), pa.port, pb.port, 210 + i));
        let t0 = Instant::now();
        kv.put("gw", doc.to_json().into()).await.unwrap();
        // The new connection of device a: the new configuration acting.
        let new_conn = loop {
            let c = connections_to(pa.port);
            if c.len() == 1 && c[0] != a_conn {
                break c[0];
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "device a never reconnected"
            );
        };
        data_path.push(ms(t0.elapsed()));
        a_conn = new_conn;
        let r = report(&mut watch).await;
        applied.push(ms(t0.elapsed()));
        assert_eq!(r["state"], "applied", "{r}");
    }
    assert_eq!(connections_to(pb.port), [b_conn], "device b untouched");

    // No-op re-puts, measured against an old version alone.
    let running = Document::new(version, config(&nats.url(), pa.port, pb.port, 210 + 19));
    let old = Document::new(1, config(&nats.url(), pa.port, pb.port, 999));
    let (mut alone, mut paired) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t0 = Instant::now();
        kv.put("gw", old.to_json().into()).await.unwrap();
        assert_eq!(report(&mut watch).await["state"], "rejected");
        alone.push(ms(t0.elapsed()));
        let t0 = Instant::now();
        kv.put("gw", running.to_json().into()).await.unwrap();
        kv.put("gw", old.to_json().into()).await.unwrap();
        assert_eq!(report(&mut watch).await["state"], "rejected");
        paired.push(ms(t0.elapsed()));
    }
    let resets = usize::from(connections_to(pa.port) != [a_conn])
        + usize::from(connections_to(pb.port) != [b_conn]);
    let noop_p50 = ((pct(&mut paired, 0.5) - pct(&mut alone, 0.5)).max(0.0) * 10.0).round() / 10.0;

    // Rollbacks: device b to a port nothing listens on.
    let dead = outpost_tests::free_port();
    let (mut to_report, mut to_reconnect) = (Vec::new(), Vec::new());
    let mut b_now = b_conn;
    for i in 0..5u64 {
        version += 1;
        let doc = Document::new(version, config(&nats.url(), pa.port, dead, 210 + 19 + i));
        let t0 = Instant::now();
        kv.put("gw", doc.to_json().into()).await.unwrap();
        let r = report(&mut watch).await;
        assert_eq!(r["state"], "rolled_back", "{r}");
        let grace_end = Duration::from_secs(GRACE_S);
        to_report.push(ms(t0.elapsed().saturating_sub(grace_end)));
        let back = loop {
            let c = connections_to(pb.port);
            if c.len() == 1 && c[0] != b_now {
                break c[0];
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        to_reconnect.push(ms(t0.elapsed().saturating_sub(grace_end)));
        b_now = back;
    }
    let rss = outpost_tests::proc_rss_kb(daemon.id());
    let _ = daemon.kill();
    let _ = daemon.wait();
    let out = json!({
        "pushes": applied.len(),
        "put_to_applied_ms": {"p50": pct(&mut applied, 0.5), "p99": pct(&mut applied, 0.99)},
        "put_to_data_path_ms": {"p50": pct(&mut data_path, 0.5), "p99": pct(&mut data_path, 0.99)},
        "noop_ms": {"p50": noop_p50, "rejection_alone_p50": pct(&mut alone, 0.5), "connections_reset": resets},
        "rollback_after_grace_ms": {
            "report_p50": pct(&mut to_report, 0.5), "report_max": pct(&mut to_report, 1.0),
            "device_back_p50": pct(&mut to_reconnect, 0.5), "device_back_max": pct(&mut to_reconnect, 1.0),
        },
        "grace_s": GRACE_S,
        "daemon_rss_kb": rss,
    });
    println!("{out}");
}
