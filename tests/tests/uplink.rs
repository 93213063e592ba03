//! Uplinks against real brokers: Mosquitto and nats-server, started by the
//! tests on loopback ports, stopped and restarted during a drain.

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // test code

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_config::{Durability, MqttMode, MqttProtocol, MqttUplink, NatsUplink};
use outpost_core::{Body, Event, FixedClock, Point, Timestamp, Value};
use outpost_sync::log::{Limits, LogOptions, StoreOptions};
use outpost_sync::uplink::{Protocol, SharedStatus, UplinkSpec};
use outpost_sync::EventLog;
use outpost_tests::{Mosquitto, NatsServer};
use tokio_util::sync::CancellationToken;

fn open_log(dir: &std::path::Path, cursor: &str) -> EventLog {
    let opts = LogOptions {
        store: StoreOptions {
            durability: Durability::Normal,
            limits: Limits::UNLIMITED,
            max_page_count: None,
            reserve_bytes: 0,
        },
        commit_max_events: 1000,
        commit_max_delay: Duration::from_millis(2),
        clock_wait: Duration::ZERO,
    };
    let (log, _) = EventLog::open(
        &dir.join("events.db"),
        opts,
        Arc::new(FixedClock::new(1_764_000_000_000)),
    )
    .unwrap();
    let rt = tokio::runtime::Handle::current();
    let l = log.clone();
    let c = cursor.to_string();
    tokio::task::block_in_place(|| {
        rt.block_on(async move { l.set_cursors(vec![c]).await.unwrap() })
    });
    log
}

fn reading(device: &str, v: i64) -> Event {
    Event::new(
        device,
        Timestamp::synced(1_764_000_000_000 + v),
        Body::Telemetry(vec![Point::good("v", Value::I64(v))]),
    )
}

/// Appends `per_tick` events every 10 ms for `ticks` ticks, over 3 devices.
async fn produce(log: EventLog, ticks: usize, per_tick: usize) -> u64 {
    let mut n = 0i64;
    for _ in 0..ticks {
        let batch: Vec<Event> = (0..per_tick)
            .map(|_| {
                n += 1;
                reading(["a", "b", "c"][(n % 3) as usize], n)
            })
            .collect();
        log.append(batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    n as u64
}

/// Runs an uplink worker until `stop`; returns its status and task.
fn start_worker(
    spec: UplinkSpec,
    log: &EventLog,
    stop: &CancellationToken,
) -> (SharedStatus, tokio::task::JoinHandle<()>) {
    let status: SharedStatus = Arc::default();
    let worker = tokio::spawn(outpost_sync::uplink::run(
        spec,
        log.clone(),
        stop.clone(),
        status.clone(),
    ));
    (status, worker)
}

/// Waits until the worker's cursor reaches `n` (or `limit` passes).
async fn wait_cursor(status: &SharedStatus, n: u64, limit: Duration) {
    let start = tokio::time::Instant::now();
    while status.lock().unwrap().cursor < n && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spec(name: &str, protocol: Protocol) -> UplinkSpec {
    UplinkSpec {
        name: name.into(),
        gateway: "gw1".into(),
        protocol,
        read_batch: 500,
        live_lane: false,
        rpc: None,
        thingsboard: None,
    }
}

fn mqtt_cfg(url: &str, inflight: u16, payload: u64) -> MqttUplink {
    let toml = format!("url = \"{url}\"\nmax_inflight = {inflight}\nmax_payload = {payload}\nkeep_alive = \"2s\"\nack_timeout = \"3s\"\n");
    toml::from_str(&toml).unwrap()
}

/// Counts seqs seen by a subscriber; with the largest message (in events).
#[derive(Default, Debug)]
struct Seen {
    seqs: BTreeMap<u64, u32>,
    largest: usize,
    per_device_order_ok: bool,
    last_by_device: BTreeMap<String, u64>,
    /// Seqs in arrival order.
    arrival: Vec<u64>,
    /// Repeats the broker itself redelivered to this subscriber (DUP flag
    /// set: its own in-flight window towards us when it stopped), as
    /// opposed to repeats the uplink published again.
    redelivered: u64,
}

impl Seen {
    fn record(&mut self, seq: u64, device: &str, dup: bool) {
        if dup && self.seqs.contains_key(&seq) {
            self.redelivered += 1;
        }
        *self.seqs.entry(seq).or_default() += 1;
        self.arrival.push(seq);
        // Order per device: a device's seqs never go back, except for a
        // resend, which repeats seqs already seen.
        let last = self.last_by_device.entry(device.to_string()).or_default();
        if seq < *last && self.seqs[&seq] == 1 {
            self.per_device_order_ok = false;
        }
        *last = (*last).max(seq);
    }
}

async fn mqtt_subscriber(port: u16, topic: &str, seen: Arc<Mutex<Seen>>, stop: CancellationToken) {
    let mut o = rumqttc::MqttOptions::new("test-subscriber", "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_keep_alive(Duration::from_secs(2));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => return,
            ev = el.poll() => ev,
        };
        match ev {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let arr: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                let mut s = seen.lock().unwrap();
                let items = arr.as_array().unwrap();
                s.largest = s.largest.max(items.len());
                for e in items {
                    s.record(
                        e["seq"].as_u64().unwrap(),
                        e["device"].as_str().unwrap(),
                        p.dup,
                    );
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A subscriber on `topic` recording what it sees, until `stop`.
fn subscribe(
    port: u16,
    topic: &'static str,
    stop: &CancellationToken,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        per_device_order_ok: true,
        ..Seen::default()
    }));
    let sub = tokio::spawn(mqtt_subscriber(port, topic, seen.clone(), stop.clone()));
    (seen, sub)
}

async fn wait_all(seen: &Arc<Mutex<Seen>>, total: u64, limit: Duration) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if seen.lock().unwrap().seqs.len() as u64 >= total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_delivers_everything_across_broker_restarts() {
    mqtt_across_restarts(MqttProtocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_delivers_everything_across_broker_restarts() {
    mqtt_across_restarts(MqttProtocol::V5).await;
}

async fn mqtt_across_restarts(protocol: MqttProtocol) {
    // The broker's own window towards the subscriber, stated so the bound
    // on its redeliveries below is not a guess.
    let broker_inflight = 20u64;
    let mut broker = Mosquitto::start(&format!("max_inflight_messages {broker_inflight}\n"));
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "cloud");
    let stop = CancellationToken::new();
    let (seen, sub) = subscribe(broker.port, "gw1/#", &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inflight = 4u16;
    let (status, worker) = start_worker(
        spec(
            "cloud",
            Protocol::Mqtt(MqttUplink {
                protocol,
                keep_alive: outpost_config::Duration::from_secs(5),
                ..mqtt_cfg(&broker.url(), inflight, 2048)
            }),
        ),
        &log,
        &stop,
    );
    let producer = tokio::spawn(produce(log.clone(), 500, 40));
    let restarts = 3;
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        tokio::task::block_in_place(|| {
            broker.stop();
            std::thread::sleep(Duration::from_millis(700));
            broker.restart();
        });
    }
    let total = producer.await.unwrap();
    wait_all(&seen, total, Duration::from_secs(60)).await;
    stop.cancel();
    let _ = worker.await;
    let _ = sub.await;
    let s = seen.lock().unwrap();
    let missing: Vec<u64> = (1..=total).filter(|q| !s.seqs.contains_key(q)).collect();
    let st = status.lock().unwrap().clone();
    if !missing.is_empty() {
        let log = broker.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("test-subscriber")
                    || l.contains("persist")
                    || l.contains("Restor")
                    || l.contains("Saving")
            })
            .take(40)
            .collect();
        eprintln!("broker log:\n{}", lines.join("\n"));
    }
    assert!(
        missing.is_empty(),
        "{} missing seqs of {total} (first {:?}, last {:?}); uplink {st:?}",
        missing.len(),
        missing.first(),
        missing.last()
    );
    let repeats: u64 = s.seqs.values().map(|c| u64::from(*c - 1)).sum();
    // Two legs can repeat a message when the broker stops: the broker
    // redelivers what it had in flight to the subscriber (DUP set), and the
    // uplink publishes again what it had in flight without a PUBACK. The
    // uplink's share is the promise under test: its in-flight window at
    // each failure, no more.
    let dups = repeats - s.redelivered;
    let bound = restarts as u64 * u64::from(inflight) * s.largest as u64;
    assert!(
        dups <= bound,
        "{dups} duplicates from the uplink, more than {restarts} restarts x {inflight} in flight x {} events; uplink {st:?}; {} redelivered by the broker",
        s.largest,
        s.redelivered
    );
    let broker_bound = restarts as u64 * broker_inflight * s.largest as u64;
    assert!(
        s.redelivered <= broker_bound,
        "{} redeliveries by the broker, more than {restarts} restarts x {broker_inflight} in flight",
        s.redelivered
    );
    assert!(s.per_device_order_ok, "order per device was broken");
    assert!(st.reconnects >= restarts as u64, "{st:?}");
    eprintln!(
        "mqtt {protocol:?}: {total} events, {dups} duplicates from the uplink (bound {bound}), {} redelivered by the broker, {} reconnects",
        s.redelivered,
        st.reconnects
    );
}

/// MQTT 5 makes a refused publish visible (PUBACK reason code): the uplink
/// reports it and keeps the events, and delivers them once the broker takes
/// them. Over 3.1.1 the same broker acknowledges and drops them, which is
/// why the protocol is worth choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_a_refused_publish_is_reported_and_nothing_is_lost() {
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = acl_dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite elsewhere/#\n").unwrap();
    let broker = Mosquitto::start(&format!("acl_file {}\n", acl.display()));
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();

    // 3.1.1: acknowledged, so the cursor moves, and the broker drops them.
    let log = open_log(dir.path(), "v3");
    log.append(vec![reading("a", 1), reading("b", 2)])
        .await
        .unwrap();
    let (status, worker) = start_worker(
        spec("v3", Protocol::Mqtt(mqtt_cfg(&broker.url(), 4, 2048))),
        &log,
        &stop,
    );
    wait_cursor(&status, 2, Duration::from_secs(10)).await;
    assert_eq!(status.lock().unwrap().cursor, 2, "3.1.1: PUBACKed");
    stop.cancel();
    let _ = worker.await;
    drop(log);

    // 5: refused, reported, kept.
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "v5");
    log.append(vec![reading("a", 1), reading("b", 2)])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (seen, sub) = subscribe(broker.port, "gw1/#", &stop);
    let cfg = MqttUplink {
        protocol: MqttProtocol::V5,
        keep_alive: outpost_config::Duration::from_secs(5),
        ..mqtt_cfg(&broker.url(), 4, 2048)
    };
    let (status, worker) = start_worker(spec("v5", Protocol::Mqtt(cfg)), &log, &stop);
    let start = tokio::time::Instant::now();
    while status.lock().unwrap().last_error.is_none() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = status.lock().unwrap().clone();
    let err = st.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("refused") && err.contains("NotAuthorized"),
        "{st:?}"
    );
    assert_eq!(st.cursor, 0, "nothing counted as delivered: {st:?}");
    eprintln!("mqtt 5: {err}");

    // The broker is put right; the same events go through, once each.
    std::fs::write(&acl, "topic readwrite gw1/#\n").unwrap();
    broker.reload();
    wait_all(&seen, 2, Duration::from_secs(20)).await;
    wait_cursor(&status, 2, Duration::from_secs(10)).await;
    stop.cancel();
    let _ = worker.await;
    let _ = sub.await;
    let s = seen.lock().unwrap();
    assert_eq!(s.seqs.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(status.lock().unwrap().cursor, 2);
}

async fn read_stream(url: &str, stream: &str) -> Vec<(u64, String)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut st = js.get_stream(stream).await.unwrap();
    let n = st.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for i in 1..=n {
        let m = st.get_raw_message(i).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        // The clock flag travels as a header too, for consumers that route
        // on headers without parsing payloads.
        let clock = m
            .headers
            .get("Outpost-Clock")
            .map(|h| h.as_str().to_string());
        assert_eq!(clock.as_deref(), v["clock"].as_str(), "seq {}", v["seq"]);
        out.push((
            v["seq"].as_u64().unwrap(),
            v["device"].as_str().unwrap().to_string(),
        ));
    }
    out
}

fn nats_cfg(url: &str, create: bool) -> NatsUplink {
    let toml = format!(
        "url = \"{url}\"\ncreate_stream = {create}\nmax_inflight = 64\nack_timeout = \"2s\"\n"
    );
    toml::from_str(&toml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_delivers_exactly_once_across_server_restarts() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "js");
    let stop = CancellationToken::new();
    let (status, worker) = start_worker(
        spec("js", Protocol::Nats(nats_cfg(&server.url(), true))),
        &log,
        &stop,
    );
    let producer = tokio::spawn(produce(log.clone(), 500, 40));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        tokio::task::block_in_place(|| {
            server.stop();
            std::thread::sleep(Duration::from_millis(700));
            server.restart();
        });
    }
    let total = producer.await.unwrap();
    wait_cursor(&status, total, Duration::from_secs(60)).await;
    stop.cancel();
    let _ = worker.await;
    let got = read_stream(&server.url(), "OUTPOST").await;
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for (s, _) in &got {
        *count.entry(*s).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=total)
        .filter(|q| !count.contains_key(q))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "missing seqs (first 10): {missing:?} of {total}"
    );
    let dups: u32 = count.values().map(|c| c - 1).sum();
    assert_eq!(dups, 0, "the stream holds duplicates");
    assert_eq!(got.len() as u64, total);
    // Order per device in the stream.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, d) in &got {
        let l = last.entry(d.as_str()).or_default();
        assert!(*s > *l, "order per device broken at seq {s} of {d}");
        *l = *s;
    }
    eprintln!(
        "nats: {total} events, reconnects {}",
        status.lock().unwrap().reconnects
    );
}

/// The NATS client must not resume a session on a new connection by itself
/// (publishes lost with the old socket would then be overtaken by queued
/// ones): a server restart ends the session even when nothing is in flight,
/// and the worker's next session carries on from the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_ends_the_session() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "js");
    let stop = CancellationToken::new();
    let (status, worker) = start_worker(
        spec("js", Protocol::Nats(nats_cfg(&server.url(), true))),
        &log,
        &stop,
    );
    log.append(vec![reading("a", 1)]).await.unwrap();
    wait_cursor(&status, 1, Duration::from_secs(20)).await;
    assert_eq!(status.lock().unwrap().reconnects, 0);
    tokio::task::block_in_place(|| {
        server.stop();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
    });
    let start = tokio::time::Instant::now();
    while status.lock().unwrap().reconnects == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        status.lock().unwrap().reconnects >= 1,
        "the session outlived its connection"
    );
    log.append(vec![reading("a", 2)]).await.unwrap();
    wait_cursor(&status, 2, Duration::from_secs(20)).await;
    stop.cancel();
    let _ = worker.await;
    let got = read_stream(&server.url(), "OUTPOST").await;
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_a_clear_error() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "js");
    log.append(vec![reading("a", 1)]).await.unwrap();
    let stop = CancellationToken::new();
    let (status, worker) = start_worker(
        spec("js", Protocol::Nats(nats_cfg(&server.url(), false))),
        &log,
        &stop,
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.cancel();
    let _ = worker.await;
    let st = status.lock().unwrap().clone();
    let err = st.last_error.unwrap_or_default();
    assert!(
        err.contains("stream \"OUTPOST\" does not exist") && err.contains("create_stream"),
        "{err}"
    );
    assert_eq!(st.cursor, 0, "nothing acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_topics_and_payloads() {
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "tb");
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let stop = CancellationToken::new();
    let sub = {
        let (seen, stop, port) = (seen.clone(), stop.clone(), broker.port);
        tokio::spawn(async move {
            let mut o = rumqttc::MqttOptions::new("tb-check", "127.0.0.1", port);
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
            c.subscribe("v1/#", rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    ev = el.poll() => if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev {
                        seen.lock().unwrap().push((p.topic.clone(), serde_json::from_slice(&p.payload).unwrap()));
                    },
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    log.append(vec![
        reading("pump-1", 1),
        reading("pump-2", 2),
        reading("pump-1", 3),
    ])
    .await
    .unwrap();
    let mut cfg = mqtt_cfg(&broker.url(), 8, 65536);
    cfg.mode = MqttMode::Thingsboard;
    let (_status, worker) = start_worker(spec("tb", Protocol::Mqtt(cfg)), &log, &stop);
    let start = tokio::time::Instant::now();
    while seen.lock().unwrap().len() < 3 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let _ = worker.await;
    let _ = sub.await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got[0],
        (
            "v1/gateway/connect".to_string(),
            serde_json::json!({"device": "pump-1", "type": "default"})
        )
    );
    assert_eq!(
        got[1],
        (
            "v1/gateway/connect".to_string(),
            serde_json::json!({"device": "pump-2", "type": "default"})
        )
    );
    assert_eq!(got[2].0, "v1/gateway/telemetry");
    assert_eq!(
        got[2].1,
        serde_json::json!({
            "pump-1": [{"ts": 1_764_000_000_001i64, "values": {"v": 1}}, {"ts": 1_764_000_000_003i64, "values": {"v": 3}}],
            "pump-2": [{"ts": 1_764_000_000_002i64, "values": {"v": 2}}]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_drops_oldest_telemetry_keeps_alarms_and_reports_the_gap() {
    let mut broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        store: StoreOptions {
            durability: Durability::Normal,
            limits: Limits {
                max_rows: 200,
                max_bytes: u64::MAX,
                max_age_ms: 0,
            },
            max_page_count: None,
            reserve_bytes: 0,
        },
        commit_max_events: 1000,
        commit_max_delay: Duration::from_millis(2),
        clock_wait: Duration::ZERO,
    };
    let (log, _) = EventLog::open(
        &dir.path().join("events.db"),
        opts,
        Arc::new(FixedClock::new(1_764_000_000_000)),
    )
    .unwrap();
    log.set_cursors(vec!["cloud".into()]).await.unwrap();
    let stop = CancellationToken::new();
    let (status, worker) = start_worker(
        spec("cloud", Protocol::Mqtt(mqtt_cfg(&broker.url(), 8, 65536))),
        &log,
        &stop,
    );
    let seen_tx = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let sub_stop = CancellationToken::new();
    let sub = {
        let (seen, stop, port) = (seen_tx.clone(), sub_stop.clone(), broker.port);
        tokio::spawn(async move {
            let mut o = rumqttc::MqttOptions::new("gap-check", "127.0.0.1", port);
            o.set_clean_session(false);
            o.set_max_packet_size(1 << 20, 1 << 20);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
            c.subscribe("gw1/#", rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    ev = el.poll() => match ev {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            let arr: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                            seen.lock().unwrap().extend(arr.as_array().unwrap().iter().cloned());
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    },
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| broker.stop()); // the outage begins
    let alarm = Event::new(
        "boiler",
        Timestamp::synced(1_764_000_000_000),
        Body::Alarm(outpost_core::Alarm::raised(
            "Overheat",
            outpost_core::AlarmSeverity::Critical,
            "",
            1_764_000_000_000,
        )),
    );
    log.append(vec![alarm]).await.unwrap();
    for chunk in 0..10 {
        let batch = (0..100)
            .map(|i| reading("boiler", chunk * 100 + i))
            .collect();
        log.append(batch).await.unwrap();
    }
    tokio::task::block_in_place(|| broker.restart()); // and ends
    wait_cursor(&status, 1002, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    sub_stop.cancel();
    let _ = worker.await;
    let _ = sub.await;
    let got = seen_tx.lock().unwrap().clone();
    let kinds = |k: &str| {
        got.iter()
            .filter(|e| e["kind"] == k)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds("alarm").len(), 1, "the alarm is kept and delivered");
    let gaps = kinds("gap");
    assert!(!gaps.is_empty(), "a gap event is delivered upstream");
    let dropped: u64 = gaps
        .iter()
        .map(|g| g["body"]["count"].as_u64().unwrap())
        .sum();
    let tele: Vec<u64> = kinds("telemetry")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        tele.len() as u64 + dropped,
        1000,
        "every reading is delivered or accounted for in a gap"
    );
    assert!(tele.windows(2).all(|w| w[0] < w[1]));
    // The oldest went first: every dropped seq is older than every delivered reading.
    let newest_dropped = gaps
        .iter()
        .map(|g| g["body"]["last_seq"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        newest_dropped < tele[0],
        "dropped up to {newest_dropped}, delivered from {}",
        tele[0]
    );
    assert!(
        tele.len() >= 150,
        "the newest readings survive: {}",
        tele.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_rpc_writes_a_modbus_register_and_replies() {
    thingsboard_rpc(MqttProtocol::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thingsboard_rpc_over_mqtt5() {
    thingsboard_rpc(MqttProtocol::V5).await;
}

async fn thingsboard_rpc(protocol: MqttProtocol) {
    use outpost_drivers::command::Router;
    let plc = outpost_tests::ModbusPeer::tcp(
        &serde_json::json!({"devices": [{"id": 1, "holding": [{"addr": 0, "registers": [0]}]}]}),
    );
    let cfg = outpost_config::parse(
        &format!(
            "[gateway]\nid = \"gw1\"\n[[device]]\nname = \"plc\"\n[device.modbus]\ntcp = \"127.0.0.1:{}\"\nperiod = \"200ms\"\n\
             [[device.modbus.tag]]\nname = \"setpoint\"\ntable = \"holding\"\naddress = 0\nwritable = true\nwrite_max = 100.0\n",
            plc.port
        ),
        "t.toml",
    )
    .unwrap();
    let stop = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let mut router = Router::default();
    for s in outpost_drivers::specs(&cfg).unwrap() {
        let (ctx, inbox) = outpost_drivers::command::inbox();
        for d in &s.devices {
            router.add(d, ctx.clone());
        }
        let cx = outpost_drivers::DriverContext {
            out: tx.clone(),
            stop: stop.clone(),
            clock: Arc::new(FixedClock::new(0)),
            commands: inbox,
            metrics: outpost_drivers::metrics::Metrics::default(),
        };
        let d = s.build();
        tokio::spawn(async move {
            let _ = d.run(cx).await;
        });
    }
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "tb");
    let mut mcfg = mqtt_cfg(&broker.url(), 8, 65536);
    mcfg.mode = MqttMode::Thingsboard;
    mcfg.protocol = protocol;
    mcfg.keep_alive = outpost_config::Duration::from_secs(5);
    let r = router.clone();
    let handler: outpost_sync::uplink::RpcHandler = Arc::new(move |device, tag, value| {
        let r = r.clone();
        Box::pin(async move {
            r.write(&device, &tag, value, "rpc")
                .await
                .map_err(|e| e.to_string())
        })
    });
    let mut up = spec("tb", Protocol::Mqtt(mcfg));
    up.rpc = Some(handler);
    let (status, worker) = start_worker(up, &log, &stop);
    // The "server": sends RPC requests, collects replies.
    let mut o = rumqttc::MqttOptions::new("tb-server", "127.0.0.1", broker.port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (server, mut el) = rumqttc::AsyncClient::new(o, 100);
    server
        .subscribe("v1/gateway/rpc", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    while !status.lock().unwrap().connected && start.elapsed() < Duration::from_secs(10) {
        let _ = tokio::time::timeout(Duration::from_millis(50), el.poll()).await;
    }
    // Connected is not yet subscribed: a request published before the
    // broker has the uplink's subscription is dropped by the broker. Both
    // subscriptions (the server's and the uplink's) show in its log.
    while broker.log().matches("v1/gateway/rpc (QoS").count() < 2
        && start.elapsed() < Duration::from_secs(20)
    {
        let _ = tokio::time::timeout(Duration::from_millis(50), el.poll()).await;
    }
    let send = |id: u32, value: serde_json::Value| {
        let body = serde_json::json!({"device": "plc", "data": {"id": id, "method": "set", "params": {"tag": "setpoint", "value": value}}});
        server
            .try_publish(
                "v1/gateway/rpc",
                rumqttc::QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .unwrap();
    };
    send(7, serde_json::json!(42));
    send(8, serde_json::json!(500)); // over write_max: refused
    let mut replies = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while replies.len() < 2 && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(200), el.poll()).await
        {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            if v["data"]["method"].is_null() {
                replies.insert(v["id"].as_u64().unwrap(), v);
            }
        }
    }
    stop.cancel();
    let _ = worker.await;
    assert_eq!(
        replies[&7],
        serde_json::json!({"device": "plc", "id": 7, "data": {"success": true}})
    );
    assert_eq!(replies[&8]["data"]["success"], serde_json::json!(false));
    assert!(
        replies[&8]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("outside"),
        "{}",
        replies[&8]
    );
    let writes: Vec<_> = plc
        .requests()
        .into_iter()
        .filter(|r| r.function == 6)
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "only the valid write reached the device: {writes:?}"
    );
    assert_eq!(writes[0].address, 0);
}

/// A TCP proxy that can black-hole the connections it carries: they stay
/// open, nothing passes (a half-open link). New connections pass.
async fn proxy(to: u16) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Connections accepted before this generation are black-holed.
    let cutoff = Arc::new(AtomicU64::new(0));
    let c = cutoff.clone();
    tokio::spawn(async move {
        let mut generation = 0u64;
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            generation += 1;
            let mine = generation;
            let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                continue;
            };
            let (mut ri, mut wi) = inbound.into_split();
            let (mut ro, mut wo) = outbound.into_split();
            let (c1, c2) = (c.clone(), c.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = ri.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if mine > c1.load(Ordering::SeqCst) && wo.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = ro.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if mine > c2.load(Ordering::SeqCst) && wi.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            // Remember the newest generation for the test to black-hole.
            GEN.store(generation, Ordering::SeqCst);
        }
    });
    (port, cutoff)
}

static GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_link_is_detected_and_re_established() {
    use std::sync::atomic::Ordering;
    let broker = Mosquitto::start("");
    let (port, cutoff) = proxy(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "cloud");
    let stop = CancellationToken::new();
    let (seen, sub) = subscribe(broker.port, "gw1/#", &stop);
    // keep_alive 2 s, ack_timeout 3 s.
    let (status, worker) = start_worker(
        spec(
            "cloud",
            Protocol::Mqtt(mqtt_cfg(&format!("mqtt://127.0.0.1:{port}"), 8, 4096)),
        ),
        &log,
        &stop,
    );
    let producer = tokio::spawn(produce(log.clone(), 400, 10));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = status.lock().unwrap().reconnects;
    cutoff.store(GEN.load(Ordering::SeqCst), Ordering::SeqCst); // black-hole the live link
    let holed = tokio::time::Instant::now();
    let mut recovered = None;
    while holed.elapsed() < Duration::from_secs(15) {
        let s = status.lock().unwrap().clone();
        if s.reconnects > before && s.connected {
            recovered = Some(holed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = recovered.expect("the half-open link was never replaced");
    // Bound: MQTT keep-alive declares a silent link dead after 1.5 x 2 s;
    // the ack timeout (3 s) catches it too; plus the first back-off step.
    assert!(
        recovered <= Duration::from_millis(3000 + 500 + 1000),
        "took {recovered:?}"
    );
    let total = producer.await.unwrap();
    wait_all(&seen, total, Duration::from_secs(30)).await;
    stop.cancel();
    let _ = worker.await;
    let _ = sub.await;
    let s = seen.lock().unwrap();
    let missing = (1..=total).filter(|q| !s.seqs.contains_key(q)).count();
    assert_eq!(missing, 0, "events lost across the half-open link");
    eprintln!("half-open link replaced after {recovered:?}");
}

async fn deliver_one(protocol: Protocol, name: &str) -> outpost_sync::uplink::UplinkStatus {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), name);
    log.append(vec![reading("a", 1), reading("b", 2)])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (status, worker) = start_worker(spec(name, protocol), &log, &stop);
    wait_cursor(&status, 2, Duration::from_secs(5)).await;
    stop.cancel();
    let _ = worker.await;
    let s = status.lock().unwrap().clone();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_to_both_brokers_and_a_wrong_ca_is_a_clear_error() {
    let ca = outpost_tests::TestCa::new();
    let other = outpost_tests::TestCa::new();
    let mqtt_port = outpost_tests::free_port();
    let broker = Mosquitto::start(&format!(
        "listener {mqtt_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        ca.ca.display(),
        ca.server_cert.display(),
        ca.server_key.display()
    ));
    let nats = NatsServer::start_tls(&ca.server_cert, &ca.server_key);
    let mqtt = |ca_file: &std::path::Path| {
        let toml = format!("url = \"mqtts://127.0.0.1:{mqtt_port}\"\nack_timeout = \"3s\"\n[tls]\nca_file = \"{}\"\n", ca_file.display());
        Protocol::Mqtt(toml::from_str(&toml).unwrap())
    };
    let js = |ca_file: &std::path::Path| {
        let toml = format!(
            "url = \"tls://127.0.0.1:{}\"\ncreate_stream = true\n[tls]\nca_file = \"{}\"\n",
            nats.port,
            ca_file.display()
        );
        Protocol::Nats(toml::from_str(&toml).unwrap())
    };
    let ok = deliver_one(mqtt(&ca.ca), "m").await;
    assert_eq!(ok.cursor, 2, "delivered over TLS to Mosquitto: {ok:?}");
    let ok = deliver_one(js(&ca.ca), "n").await;
    assert_eq!(ok.cursor, 2, "delivered over TLS to nats-server: {ok:?}");
    for (what, bad) in [
        ("mqtt", deliver_one(mqtt(&other.ca), "m2").await),
        ("nats", deliver_one(js(&other.ca), "n2").await),
    ] {
        assert_eq!(bad.cursor, 0, "{what}: nothing delivered with the wrong CA");
        eprintln!("{what} with a wrong CA: {:?}", bad.last_error);
        let err = bad.last_error.unwrap_or_default().to_lowercase();
        assert!(
            err.contains("certificate") || err.contains("unknownissuer") || err.contains("tls"),
            "{what}: unclear error: {err}"
        );
    }
    drop(broker);
}

/// Debian's nats-server (2.9.10) is what some clusters still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_2_9_compatibility_delivery_and_deduplication() {
    let bin = std::path::PathBuf::from("/usr/sbin/nats-server");
    assert!(
        bin.exists(),
        "Debian's nats-server is not installed. Run ./tests/run, or: apt-get install nats-server"
    );
    let server = NatsServer::start_with(bin);
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "js");
    // A second cursor keeps the rows, so the first can be replayed.
    log.set_cursors(vec!["js".into(), "keep".into()])
        .await
        .unwrap();
    let batch: Vec<Event> = (1..=100).map(|i| reading("a", i)).collect();
    log.append(batch).await.unwrap();
    for round in 0..2 {
        if round == 1 {
            // Forget the cursor: everything is published again.
            log.set_cursors(vec!["keep".into()]).await.unwrap();
            log.set_cursors(vec!["js".into(), "keep".into()])
                .await
                .unwrap();
        }
        let stop = CancellationToken::new();
        let (status, worker) = start_worker(
            spec("js", Protocol::Nats(nats_cfg(&server.url(), true))),
            &log,
            &stop,
        );
        wait_cursor(&status, 100, Duration::from_secs(10)).await;
        stop.cancel();
        let _ = worker.await;
        assert_eq!(
            status.lock().unwrap().cursor,
            100,
            "round {round}: {:?}",
            status.lock().unwrap()
        );
    }
    let got = read_stream(&server.url(), "OUTPOST").await;
    assert_eq!(
        got.len(),
        100,
        "the resend was removed by the duplicate window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_token_user_password_nkey_and_creds_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, "pa55").unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();

    let cases: Vec<(&str, String, String)> = vec![
        (
            "token",
            "authorization { token: \"s3cret-token\" }\n".into(),
            format!("token_file = \"{}\"\n", token_file.display()),
        ),
        (
            "user",
            "authorization { users = [ { user: \"gw\", password: \"pa55\" } ] }\n".into(),
            format!(
                "user = \"gw\"\npassword_file = \"{}\"\n",
                pass_file.display()
            ),
        ),
        (
            "nkey",
            format!(
                "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
                user.public_key()
            ),
            format!("nkey_file = \"{}\"\n", seed_file.display()),
        ),
        {
            let (server_auth, creds) = operator_mode(&user);
            let creds_file = dir.path().join("user.creds");
            std::fs::write(&creds_file, creds).unwrap();
            (
                "creds",
                server_auth,
                format!("creds_file = \"{}\"\n", creds_file.display()),
            )
        },
    ];
    for (what, server_auth, client_auth) in cases {
        let server = NatsServer::start_conf(&server_auth);
        let good: NatsUplink = toml::from_str(&format!(
            "url = \"{}\"\ncreate_stream = true\n{client_auth}",
            server.url()
        ))
        .unwrap();
        let s = deliver_one(Protocol::Nats(good), "n").await;
        assert_eq!(
            s.cursor, 2,
            "{what}: delivered with the right credentials: {s:?}"
        );
        let none: NatsUplink = toml::from_str(&format!(
            "url = \"{}\"\ncreate_stream = true\n",
            server.url()
        ))
        .unwrap();
        let s = deliver_one(Protocol::Nats(none), "n").await;
        assert_eq!(s.cursor, 0, "{what}: nothing delivered without credentials");
        let err = s.last_error.unwrap_or_default().to_lowercase();
        assert!(
            err.contains("authoriz") || err.contains("auth"),
            "{what}: unclear error: {err}"
        );
    }
}

/// nats-server in operator mode (decentralised JWT auth, the way NGS-style
/// deployments hand out `.creds` files): an operator, an account with
/// JetStream enabled, and `user` issued by the account. Returns the server
/// configuration and the user's creds file text.
fn operator_mode(user: &nkeys::KeyPair) -> (String, String) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let acc_jwt = jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"type": "account", "version": 2, "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}}),
    );
    // JetStream needs a system account.
    let system = nkeys::KeyPair::new_account();
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1}),
    );
    let conf = format!(
        "operator: {op_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {acc}: {acc_jwt}\n  {sys}: {sys_jwt}\n}}\n",
        acc = account.public_key(),
        sys = system.public_key(),
    );
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    (conf, creds)
}

/// A NATS v2 JWT: `subject`'s claims signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    let header = b64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("T{}", subject.len() * 7919 + nats.to_string().len()),
        "iat": 1_764_000_000,
        "iss": issuer.public_key(),
        "name": "test",
        "sub": subject,
        "nats": nats,
    });
    let body = b64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64url(&sig))
}

/// Base64url without padding (RFC 4648 section 5).
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[test]
fn b64url_matches_rfc_4648_vectors() {
    let cases: [(&[u8], &str); 5] = [
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (&[0xfb, 0xff], "-_8"),
    ];
    for (input, want) in cases {
        assert_eq!(b64url(input), want);
    }
}

/// A backlog of `backlog` events drains one message at a time while fresh
/// events are appended; returns (backlog events received before the first
/// fresh one, the seqs received in order, the worker's final cursor).
async fn drain_with_fresh_events(
    protocol: Protocol,
    live_lane: bool,
    seen: Option<Arc<Mutex<Seen>>>,
    url_for_stream: Option<String>,
) -> (usize, Vec<u64>, u64) {
    const BACKLOG: u64 = 6000;
    const FRESH: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "up");
    for chunk in 0..BACKLOG / 1000 {
        let batch = (0..1000)
            .map(|i| reading(["a", "b", "c"][(i % 3) as usize], (chunk * 1000 + i) as i64))
            .collect();
        log.append(batch).await.unwrap();
    }
    let stop = CancellationToken::new();
    let mut sp = spec("up", protocol);
    sp.live_lane = live_lane;
    sp.read_batch = 100;
    let (status, worker) = start_worker(sp, &log, &stop);
    // Fresh events, one at a time, while the backlog drains.
    for v in 0..FRESH {
        log.append(vec![reading("live", 1_000_000 + v as i64)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = BACKLOG + FRESH;
    wait_cursor(&status, total, Duration::from_secs(60)).await;
    let cursor = status.lock().unwrap().cursor;
    let arrival: Vec<u64> = match (&seen, url_for_stream) {
        (Some(seen), _) => {
            wait_all(seen, total, Duration::from_secs(10)).await;
            seen.lock().unwrap().arrival.clone()
        }
        (None, Some(url)) => read_stream(&url, "OUTPOST")
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        (None, None) => Vec::new(),
    };
    stop.cancel();
    let _ = worker.await;
    let before_fresh = arrival.iter().take_while(|&&s| s <= BACKLOG).count();
    (before_fresh, arrival, cursor)
}

fn assert_once_each(arrival: &[u64], total: u64) {
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for s in arrival {
        *count.entry(*s).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=total)
        .filter(|q| !count.contains_key(q))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing (first 10): {missing:?}");
    let dups: Vec<u64> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(s, _)| *s)
        .take(10)
        .collect();
    assert!(dups.is_empty(), "sent twice (first 10): {dups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_lane_sends_fresh_events_while_the_backlog_drains() {
    let broker = Mosquitto::start("");
    let run = |live: bool, topic: &'static str| {
        let url = broker.url();
        let port = broker.port;
        async move {
            let stop = CancellationToken::new();
            let (seen, sub) = subscribe(port, topic, &stop);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut cfg = mqtt_cfg(&url, 1, 300);
            cfg.topic = format!("{}/{{device}}/{{kind}}", topic.trim_end_matches("/#"));
            let r = drain_with_fresh_events(Protocol::Mqtt(cfg), live, Some(seen), None).await;
            stop.cancel();
            let _ = sub.await;
            r
        }
    };
    let (before_fresh, arrival, cursor) = run(true, "lane-on/#").await;
    assert_eq!(cursor, 6040, "the cursor passes the events sent live");
    assert_once_each(&arrival, 6040);
    assert!(
        before_fresh < 6000,
        "a fresh event arrived only after the whole backlog ({before_fresh} backlog events first)"
    );
    // Without the lane, nothing fresh comes before the backlog is through.
    let (before_fresh_off, arrival, _) = run(false, "lane-off/#").await;
    assert_once_each(&arrival, 6040);
    assert_eq!(before_fresh_off, 6000);
    eprintln!("mqtt live lane: first fresh event after {before_fresh} of 6000 backlog events");

    let server = NatsServer::start();
    let (before_fresh, arrival, cursor) = drain_with_fresh_events(
        Protocol::Nats(nats_cfg_inflight(&server.url(), 1)),
        true,
        None,
        Some(server.url()),
    )
    .await;
    assert_eq!(cursor, 6040);
    assert_once_each(&arrival, 6040);
    assert!(
        before_fresh < 6000,
        "NATS: a fresh event arrived only after the whole backlog"
    );
    eprintln!("nats live lane: first fresh event after {before_fresh} of 6000 backlog events");
}

fn nats_cfg_inflight(url: &str, inflight: u16) -> NatsUplink {
    let toml = format!(
        "url = \"{url}\"\ncreate_stream = true\nmax_inflight = {inflight}\nack_timeout = \"2s\"\n"
    );
    toml::from_str(&toml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_events_to_their_uplinks_only_and_cursors_pass_the_rest() {
    use outpost_core::Route;
    let broker = Mosquitto::start("");
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), "a");
    log.set_cursors(vec!["a".into(), "b".into()]).await.unwrap();
    let seen: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let stop = CancellationToken::new();
    {
        let (seen, port, stop) = (seen.clone(), broker.port, stop.clone());
        tokio::spawn(async move {
            let o = rumqttc::MqttOptions::new("route-sub", "127.0.0.1", port);
            let (c, mut el) = rumqttc::AsyncClient::new(o, 100);
            c.subscribe("#", rumqttc::QoS::AtLeastOnce).await.unwrap();
            loop {
                let ev = tokio::select! {
                    () = stop.cancelled() => return,
                    ev = el.poll() => ev,
                };
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev {
                    let arr: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let prefix = p.topic.split('/').next().unwrap().to_string();
                    let mut s = seen.lock().unwrap();
                    for e in arr.as_array().unwrap() {
                        s.entry(prefix.clone())
                            .or_default()
                            .push(e["seq"].as_u64().unwrap());
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let routed = |v: i64, route: Route| {
        let mut e = reading("d", v);
        e.route = route;
        e
    };
    let only = |n: &str| Route::Only(vec![n.to_string()]);
    // A backlog before the workers start (read from the log) ...
    log.append(vec![
        routed(1, Route::All),
        routed(2, only("a")),
        routed(3, Route::Local),
        routed(4, only("b")),
        routed(5, Route::Local),
    ])
    .await
    .unwrap();
    let mut workers = Vec::new();
    let mut statuses = Vec::new();
    for name in ["a", "b"] {
        let mut cfg = mqtt_cfg(&broker.url(), 4, 65536);
        cfg.topic = format!("{name}/{{device}}/{{kind}}");
        let (st, w) = start_worker(spec(name, Protocol::Mqtt(cfg)), &log, &stop);
        statuses.push(st);
        workers.push(w);
    }
    for st in &statuses {
        wait_cursor(st, 5, Duration::from_secs(10)).await;
    }
    // ... and events committed while caught up (taken from the broadcast).
    log.append(vec![routed(6, only("a")), routed(7, Route::Local)])
        .await
        .unwrap();
    log.append(vec![routed(8, Route::All)]).await.unwrap();
    log.append(vec![routed(9, Route::Local)]).await.unwrap();
    for st in &statuses {
        wait_cursor(st, 9, Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    let cursors: Vec<u64> = statuses.iter().map(|s| s.lock().unwrap().cursor).collect();
    assert_eq!(cursors, [9, 9], "both cursors pass the events not theirs");
    let s = seen.lock().unwrap();
    assert_eq!(s.get("a").cloned().unwrap_or_default(), [1, 2, 6, 8]);
    assert_eq!(s.get("b").cloned().unwrap_or_default(), [1, 4, 8]);
}

/// Another message holding an event's id (a gateway of the same name, a log
/// whose seqs started again) must not make the stream drop the event as a
/// duplicate: the uplink reads what holds the id, sees it differs, and
/// sends the event again under an id of its own. A true resend is still
/// removed (the restart test above counts no duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_different_message_under_the_same_id_is_sent_again_not_dropped() {
    let server = NatsServer::start();
    let deliver = |dir: std::path::PathBuf, base: i64| {
        let url = server.url();
        async move {
            let log = open_log(&dir, "js");
            let batch: Vec<Event> = (1..=500).map(|v| reading("a", base + v)).collect();
            log.append(batch).await.unwrap();
            let stop = CancellationToken::new();
            let (status, worker) = start_worker(
                spec("js", Protocol::Nats(nats_cfg(&url, true))),
                &log,
                &stop,
            );
            wait_cursor(&status, 500, Duration::from_secs(30)).await;
            stop.cancel();
            let _ = worker.await;
            let s = status.lock().unwrap().clone();
            s
        }
    };
    let first = tempfile::tempdir().unwrap();
    let s = deliver(first.path().to_path_buf(), 0).await;
    assert_eq!((s.cursor, s.duplicates_conflicting), (500, 0), "{s:?}");
    // A second log, seqs 1..=500 again, different readings.
    let second = tempfile::tempdir().unwrap();
    let s = deliver(second.path().to_path_buf(), 100_000).await;
    assert_eq!(s.cursor, 500, "{s:?}");
    assert_eq!(s.duplicates_conflicting, 500, "{s:?}");

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut st = js.get_stream("OUTPOST").await.unwrap();
    let n = st.info().await.unwrap().state.messages;
    let mut values = std::collections::BTreeSet::new();
    for i in 1..=n {
        let m = st.get_raw_message(i).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        values.insert(v["body"]["v"].as_i64().unwrap());
    }
    let missing: Vec<i64> = (1..=500)
        .chain(100_001..=100_500)
        .filter(|v| !values.contains(v))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "readings missing from the stream: {missing:?}"
    );
    assert_eq!(n, 1000, "each reading once");
}
