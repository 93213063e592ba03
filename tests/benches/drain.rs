//! Drain of a 1,000,000-event backlog from the log to Mosquitto and to
//! JetStream on loopback: events/s and this process's RSS during the drain.
//! `DRAIN_EVENTS` changes the backlog. Prints one JSON line per broker.

#![allow(clippy::disallowed_methods)] // test code: spawns, exits and opens SQLite freely
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)] // benchmark code

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_config::Durability;
use outpost_core::{Body, Event, FixedClock, Point, Timestamp, Value};
use outpost_sync::log::{Limits, LogOptions, StoreOptions};
use outpost_sync::uplink::{Protocol, SharedStatus, UplinkSpec};
use outpost_sync::EventLog;
use outpost_tests::{Mosquitto, NatsServer};
use tokio_util::sync::CancellationToken;

fn rss_kb() -> u64 {
    outpost_tests::proc_rss_kb(std::process::id())
}

async fn run(name: &str, protocol: Protocol, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        store: StoreOptions {
            durability: Durability::Normal,
            limits: Limits::UNLIMITED,
            max_page_count: None,
            reserve_bytes: 1 << 20,
        },
        commit_max_events: 1000,
        commit_max_delay: Duration::ZERO,
        clock_wait: Duration::ZERO,
    };
    let (log, _) = EventLog::open(
        &dir.path().join("events.db"),
        opts,
        Arc::new(FixedClock::new(1_764_000_000_000)),
    )
    .unwrap();
    log.set_cursors(vec![name.into()]).await.unwrap();
    let mut i = 0u64;
    while i < n {
        let batch: Vec<Event> = (0..1000)
            .map(|k| {
                let v = i + k;
                Event::new(
                    format!("dev-{}", v % 50),
                    Timestamp::synced(1_764_000_000_000 + v as i64),
                    Body::Telemetry(vec![Point::good("t", Value::F64(v as f64 / 10.0))]),
                )
            })
            .collect();
        log.append(batch).await.unwrap();
        i += 1000;
    }
    let rss_before = rss_kb();
    let stop = CancellationToken::new();
    let status: SharedStatus = Arc::default();
    let spec = UplinkSpec {
        name: name.into(),
        gateway: "gw".into(),
        protocol,
        read_batch: 256,
        live_lane: false,
        rpc: None,
        thingsboard: None,
    };
    let start = Instant::now();
    let worker = tokio::spawn(outpost_sync::uplink::run(
        spec,
        log.clone(),
        stop.clone(),
        status.clone(),
    ));
    let mut rss_max = 0;
    while status.lock().unwrap().cursor < n && start.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_max = rss_max.max(rss_kb());
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    let _ = worker.await;
    let st = status.lock().unwrap().clone();
    println!(
        "{{\"bench\":\"drain\",\"uplink\":\"{name}\",\"events\":{n},\"delivered\":{},\"seconds\":{secs:.2},\"events_per_s\":{:.0},\"rss_kb_before\":{rss_before},\"rss_kb_max_during\":{rss_max},\"reconnects\":{}}}",
        st.cursor,
        st.cursor as f64 / secs,
        st.reconnects
    );
    log.close().await;
}

fn main() {
    let n: u64 = std::env::var("DRAIN_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Mosquitto::start("");
    let nats = NatsServer::start();
    rt.block_on(async {
        let mqtt: outpost_config::MqttUplink =
            toml::from_str(&format!("url = \"{}\"\n", broker.url())).unwrap();
        run("mqtt", Protocol::Mqtt(mqtt), n).await;
        let mqtt5: outpost_config::MqttUplink =
            toml::from_str(&format!("url = \"{}\"\nprotocol = \"5\"\n", broker.url())).unwrap();
        run("mqtt5", Protocol::Mqtt(mqtt5), n).await;
        let js: outpost_config::NatsUplink =
            toml::from_str(&format!("url = \"{}\"\ncreate_stream = true\n", nats.url())).unwrap();
        run("nats", Protocol::Nats(js), n).await;
    });
}
