#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
use std::sync::Arc;

use outpost_config::{
    Counter, Duration as CfgDuration, RandomWalk, SimDevice, SimTag, Sine, Toggle,
};
use outpost_core::{Body, DeviceStatus, FixedClock, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::DriverContext;

fn tag(name: &str) -> SimTag {
    SimTag {
        name: name.into(),
        unit: None,
        counter: None,
        sine: None,
        random_walk: None,
        toggle: None,
    }
}

fn device() -> SimDevice {
    SimDevice {
        interval: CfgDuration::from_millis(100),
        tags: vec![
            SimTag {
                counter: Some(Counter { start: 10, step: 5 }),
                ..tag("c")
            },
            SimTag {
                sine: Some(Sine {
                    offset: 20.0,
                    amplitude: 2.0,
                    period: CfgDuration::from_millis(400),
                }),
                ..tag("s")
            },
            SimTag {
                random_walk: Some(RandomWalk {
                    start: Some(5.0),
                    step: 1.0,
                    min: 0.0,
                    max: 10.0,
                }),
                ..tag("w")
            },
            SimTag {
                toggle: Some(Toggle { every: 2 }),
                ..tag("t")
            },
        ],
    }
}

#[test]
fn signals_follow_their_definitions() {
    let mut st = SimState::for_device("d", &device());
    let samples: Vec<Vec<Value>> = (0..8)
        .map(|_| st.sample().into_iter().map(|p| p.value).collect())
        .collect();
    let counters: Vec<&Value> = samples.iter().map(|s| &s[0]).collect();
    assert_eq!(
        counters[..3],
        [&Value::U64(10), &Value::U64(15), &Value::U64(20)]
    );
    // Sine with a period of 4 samples: 20, 22, 20, 18, ...
    let sines: Vec<f64> = samples
        .iter()
        .map(|s| match s[1] {
            Value::F64(v) => v,
            _ => f64::NAN,
        })
        .collect();
    for (got, want) in sines.iter().zip([20.0, 22.0, 20.0, 18.0, 20.0]) {
        assert!((got - want).abs() < 1e-9, "{sines:?}");
    }
    let walk: Vec<f64> = samples
        .iter()
        .map(|s| match s[2] {
            Value::F64(v) => v,
            _ => f64::NAN,
        })
        .collect();
    assert_eq!(walk[0], 5.0);
    for w in walk.windows(2) {
        assert!(
            (w[1] - w[0]).abs() <= 1.0 + 1e-9 && (0.0..=10.0).contains(&w[1]),
            "{walk:?}"
        );
    }
    assert!(
        walk.windows(2).any(|w| w[0] != w[1]),
        "the walk moves: {walk:?}"
    );
    let toggles: Vec<&Value> = samples.iter().map(|s| &s[3]).collect();
    let want = [false, false, true, true, false, false, true, true].map(Value::Bool);
    assert_eq!(toggles, want.iter().collect::<Vec<_>>());
}

#[test]
fn the_same_device_gives_the_same_values() {
    let a: Vec<_> = {
        let mut s = SimState::for_device("d", &device());
        (0..20).map(|_| s.sample()).collect()
    };
    let b: Vec<_> = {
        let mut s = SimState::for_device("d", &device());
        (0..20).map(|_| s.sample()).collect()
    };
    assert_eq!(a, b);
}

#[tokio::test(start_paused = true)]
async fn runs_at_its_interval_waits_on_a_full_channel_and_stops() {
    let (tx, mut rx) = mpsc::channel(2);
    let stop = CancellationToken::new();
    let cx = DriverContext {
        out: tx,
        stop: stop.clone(),
        clock: Arc::new(FixedClock::new(0)),
        commands: crate::command::inbox().1,
        metrics: crate::metrics::Metrics::default(),
    };
    let drv = Box::new(SimDriver::new("boiler", &device()));
    let task = tokio::spawn(drv.run(cx));
    let first = rx.recv().await.unwrap();
    assert!(matches!(&first.body, Body::Status(s) if s.status == DeviceStatus::Online));
    // With nobody reading, the driver blocks on the bounded channel instead of queueing.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let mut n = 0;
    while let Ok(ev) = rx.try_recv() {
        assert!(matches!(ev.body, Body::Telemetry(ref pts) if pts.len() == 4));
        n += 1;
    }
    assert_eq!(
        n, 2,
        "only the channel's capacity was produced while blocked"
    );
    stop.cancel();
    let mut last = None;
    while let Some(ev) = rx.recv().await {
        last = Some(ev);
    }
    task.await.unwrap().unwrap();
    assert!(matches!(last.unwrap().body, Body::Status(s) if s.status == DeviceStatus::Stopped));
}
