//! outpostd killed with SIGKILL mid-drain and restarted, twice: every event
//! the log accepted reaches the broker.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_core::Timestamp;
use outpost_sync::log::{Limits, Store, StoreOptions};
use outpost_tests::Mosquitto;

const BIN: &str = env!("CARGO_BIN_EXE_outpostd");

fn config(url: &str, with_device: bool) -> String {
    let device = if with_device {
        "[[device]]\nname = \"fast\"\n[device.sim]\ninterval = \"10ms\"\n\
         [[device.sim.tag]]\nname = \"n\"\ncounter = {}\n\
         [[device.sim.tag]]\nname = \"s\"\nsine = { period = \"1s\" }\n"
    } else {
        ""
    };
    format!(
        // A short group-commit window: each run lasts 1.5 s, and is killed
        // with a batch gathering.
        "[gateway]\nid = \"gw\"\ndurability = \"full\"\n[gateway.log]\ncommit_max_delay = \"200ms\"\n{device}\
         [[uplink]]\nname = \"cloud\"\n[uplink.mqtt]\nurl = \"{url}\"\nmax_inflight = 8\nmax_payload = 4096\n"
    )
}

fn start_daemon(cfg: &std::path::Path, data: &std::path::Path) -> std::process::Child {
    outpost_tests::start_outpostd(BIN, cfg, data, Stdio::null())
}

#[test]
fn kill_9_mid_drain_loses_nothing() {
    let broker = Mosquitto::start("");
    let seen: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let (seen, port) = (seen.clone(), broker.port);
        rt.spawn(async move {
            let mut o = rumqttc::MqttOptions::new("crash-check", "127.0.0.1", port);
            o.set_clean_session(false);
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
            c.subscribe("gw/#", rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let arr: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                        let mut s = seen.lock().unwrap();
                        for e in arr.as_array().unwrap() {
                            s.insert(e["seq"].as_u64().unwrap());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(&cfg, config(&broker.url(), true)).unwrap();
    let data = dir.path().join("data");
    for _ in 0..2 {
        let mut child = start_daemon(&cfg, &data);
        std::thread::sleep(Duration::from_millis(1500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // Everything the log ever accepted has a seq below next_seq.
    let opts = StoreOptions {
        durability: outpost_config::Durability::Full,
        limits: Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: 0,
    };
    let accepted = {
        let (store, _) = Store::open(&data.join("events.db"), opts, Timestamp::synced(0)).unwrap();
        store.stats().next_seq - 1
    };
    assert!(accepted > 100, "the device produced events: {accepted}");
    // A last run without the device drains the rest.
    std::fs::write(&cfg, config(&broker.url(), false)).unwrap();
    let mut child = start_daemon(&cfg, &data);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        // All accepted events, and this run's own start event (so it is up).
        if (1..=accepted + 1).all(|s| seen.lock().unwrap().contains(&s)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let s = seen.lock().unwrap();
    let missing: Vec<u64> = (1..=accepted).filter(|q| !s.contains(q)).collect();
    assert!(
        missing.is_empty(),
        "{} of {accepted} accepted events never reached the broker (first {:?})",
        missing.len(),
        missing.first()
    );
}

/// The issue this guards against: a corrupt log moved aside used to start
/// again at seq 1, and inside the stream's duplicate window NATS took every
/// new event for a duplicate of an old one and dropped it. Now the new log
/// continues above the old seqs, and everything after the recovery arrives,
/// the `log.recovered` audit event among it.
#[test]
fn nats_events_after_a_corrupt_log_is_moved_aside_all_arrive() {
    let server = outpost_tests::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("outpost.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw\"\ndurability = \"full\"\n\
             [[device]]\nname = \"fast\"\n[device.sim]\ninterval = \"10ms\"\n\
             [[device.sim.tag]]\nname = \"n\"\ncounter = {{}}\n\
             [[uplink]]\nname = \"cloud\"\n[uplink.nats]\nurl = \"{}\"\ncreate_stream = true\n",
            server.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = server.url();
    let stream = move || {
        let url = url.clone();
        rt.block_on(async move {
            let Ok(client) = async_nats::connect(url).await else {
                return Vec::new();
            };
            let js = async_nats::jetstream::new(client);
            let Ok(mut st) = js.get_stream("OUTPOST").await else {
                return Vec::new();
            };
            let n = st.info().await.map(|i| i.state.messages).unwrap_or(0);
            let mut out = Vec::new();
            for i in 1..=n {
                let m = st.get_raw_message(i).await.unwrap();
                out.push(serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap());
            }
            out
        })
    };
    let stop = |mut child: std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(child.wait().unwrap().success());
    };
    let wait_for = |n: usize| {
        let start = Instant::now();
        loop {
            let got = stream();
            if got.len() >= n || start.elapsed() > Duration::from_secs(30) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let child = start_daemon(&cfg, &data);
    let before = wait_for(500);
    assert!(before.len() >= 500, "first run delivered {}", before.len());
    stop(child);
    let before = stream();
    let old_top = before
        .iter()
        .filter_map(|v| v["seq"].as_u64())
        .max()
        .unwrap();
    // The log is damaged while the daemon is down.
    let db = data.join("events.db");
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xa5; 4096]).unwrap();
    }
    let _wal = std::fs::remove_file(data.join("events.db-wal"));
    let child = start_daemon(&cfg, &data);
    let running = wait_for(before.len() + 500);
    assert!(
        running.len() >= before.len() + 500,
        "the second run delivered {}",
        running.len() - before.len()
    );
    stop(child);
    let after = stream();
    // Every event of the new log is in the stream.
    // Delivered events are reclaimed, so the log's next seq says what it
    // accepted; the recovery's audit event is its first.
    let opts = StoreOptions {
        durability: outpost_config::Durability::Full,
        limits: Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: 0,
    };
    let (next, kept) = {
        let (mut store, report) = Store::open(&db, opts, Timestamp::synced(0)).unwrap();
        assert!(report.recovered.is_none(), "{report:?}");
        // What is still in the log waits for the next run (the stop event).
        let kept: BTreeSet<u64> = store.read_all().unwrap().iter().map(|e| e.seq.0).collect();
        (store.stats().next_seq, kept)
    };
    let new = &after[before.len()..];
    let first = new
        .iter()
        .find(|v| v["body"]["action"] == "log.recovered")
        .and_then(|v| v["seq"].as_u64())
        .expect("the log.recovered audit event reached the stream");
    assert!(
        first > old_top,
        "the new log went back to seq {first} (old top {old_top})"
    );
    let in_stream: BTreeSet<u64> = new.iter().filter_map(|v| v["seq"].as_u64()).collect();
    let missing: Vec<u64> = (first..next)
        .filter(|s| !in_stream.contains(s) && !kept.contains(s))
        .collect();
    assert!(
        next - first >= 500 && missing.is_empty(),
        "{} of {} events after the recovery never reached the stream (first {:?})",
        missing.len(),
        next - first,
        missing.first()
    );
}
