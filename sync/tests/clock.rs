//! Clock correction with a fake clock source ([`ManualClock`]): a gateway
//! that boots in 1970 and learns the time later, a reboot before the sync,
//! and clock steps while synchronised.
#![allow(clippy::disallowed_methods)] // test code: temp dirs
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::sync::Arc;
use std::time::Duration;

use outpost_core::{Body, Clock, ClockQuality, Event, ManualClock, Point, Seq, Timestamp, Value};
use outpost_sync::log::{Durability, EventLog, Limits, LogOptions, StoreOptions, StoredEvent};

/// The true time when the clock is synchronised (2025-11-24).
const TRUE_MS: i64 = 1_764_000_000_000;

fn options() -> LogOptions {
    LogOptions {
        store: StoreOptions {
            durability: Durability::Full,
            limits: Limits::UNLIMITED,
            max_page_count: None,
            reserve_bytes: 0,
        },
        commit_max_events: 1000,
        commit_max_delay: Duration::ZERO,
        clock_wait: Duration::ZERO,
    }
}

fn reading(clock: &ManualClock, v: i64) -> Event {
    Event::new(
        "boiler",
        clock.now(),
        Body::Telemetry(vec![Point::good("t", Value::I64(v))]),
    )
}

fn value(e: &StoredEvent) -> Option<i64> {
    match &e.event.body {
        Body::Telemetry(p) => match p.first().map(|p| &p.value) {
            Some(Value::I64(v)) => Some(*v),
            _ => None,
        },
        _ => None,
    }
}

fn audits(all: &[StoredEvent], action: &str) -> Vec<String> {
    all.iter()
        .filter_map(|e| match &e.event.body {
            Body::Audit(a) if a.action == action => Some(a.detail.clone()),
            _ => None,
        })
        .collect()
}

async fn everything(log: &EventLog) -> Vec<StoredEvent> {
    log.read(Seq(0), 10_000).await.unwrap()
}

#[tokio::test]
async fn events_before_the_sync_are_restamped_from_the_boot_clock() {
    let dir = tempfile::tempdir().unwrap();
    // Booted 4 s ago; no RTC: the wall clock says 1970.
    let clock = Arc::new(ManualClock::unsynced(4_000, 4_000));
    let (log, _) = EventLog::open(&dir.path().join("e.db"), options(), clock.clone()).unwrap();
    let mut boot_at = Vec::new();
    for v in 0..3 {
        boot_at.push(clock.boot_ms());
        log.append(vec![reading(&clock, v)]).await.unwrap();
        clock.advance(Duration::from_millis(1500));
    }
    let before = everything(&log).await;
    assert!(before
        .iter()
        .filter(|e| value(e).is_some())
        .all(
            |e| matches!(e.event.ts.clock, ClockQuality::SinceBoot { .. })
                && e.event.ts.unix_ms < 100_000
        ));
    // Taken before the sync, appended after it: corrected on the way in.
    let late = reading(&clock, 3);
    boot_at.push(clock.boot_ms());
    clock.advance(Duration::from_millis(700));
    // NTP answers: the wall clock is set, the boot clock runs on.
    clock.set_unix(TRUE_MS, true);
    let sync_boot = clock.boot_ms();
    log.append(vec![late]).await.unwrap();
    clock.advance(Duration::from_secs(1));
    log.append(vec![reading(&clock, 4)]).await.unwrap();

    let all = everything(&log).await;
    let readings: Vec<&StoredEvent> = all.iter().filter(|e| value(e).is_some()).collect();
    assert_eq!(readings.len(), 5);
    for (i, e) in readings.iter().take(4).enumerate() {
        assert_eq!(value(e), Some(i as i64));
        assert_eq!(e.event.ts.clock, ClockQuality::Corrected, "{e:?}");
        assert_eq!(
            e.event.ts.unix_ms,
            TRUE_MS - (sync_boot - boot_at[i]),
            "event {i} re-stamped from its boot time"
        );
    }
    assert_eq!(readings[4].event.ts, Timestamp::synced(TRUE_MS + 1000));
    // Stamps now grow with seq again, and the correction is on record.
    let stamps: Vec<i64> = readings.iter().map(|e| e.event.ts.unix_ms).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    let done = audits(&all, "clock.corrected");
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].contains("3 events"), "{}", done[0]);
    assert_eq!(log.stats().borrow().clock_corrected_total, 3);
    // Time seeks work on the corrected stamps.
    let s = log.seq_before(TRUE_MS - 1).await.unwrap();
    assert!(s.0 < readings[4].seq.0, "{s:?}");
    log.close().await;
}

#[tokio::test]
async fn an_earlier_boot_never_corrected_stays_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let clock = Arc::new(ManualClock::unsynced(2_000, 2_000));
    {
        let (log, _) = EventLog::open(&path, options(), clock.clone()).unwrap();
        log.append(vec![reading(&clock, 1)]).await.unwrap();
        log.close().await;
    }
    // A power cut, and a new boot whose boot clock starts again.
    clock.reboot(1_000, 1_000);
    let (log, _) = EventLog::open(&path, options(), clock.clone()).unwrap();
    log.append(vec![reading(&clock, 2)]).await.unwrap();
    // The same process restarting within the boot changes nothing.
    log.close().await;
    let (log, _) = EventLog::open(&path, options(), clock.clone()).unwrap();
    clock.advance(Duration::from_secs(5));
    log.append(vec![reading(&clock, 3)]).await.unwrap();
    clock.set_unix(TRUE_MS, true);
    log.append(vec![reading(&clock, 4)]).await.unwrap();

    let all = everything(&log).await;
    let by_value = |v| all.iter().find(|e| value(e) == Some(v)).unwrap();
    assert!(
        matches!(
            by_value(1).event.ts.clock,
            ClockQuality::SinceBoot { boot_ms: 2_000 }
        ),
        "the first boot's event keeps its flag: {:?}",
        by_value(1).event.ts
    );
    assert_eq!(by_value(1).event.ts.unix_ms, 2_000);
    assert_eq!(
        by_value(2).event.ts,
        Timestamp {
            unix_ms: TRUE_MS - 5_000,
            clock: ClockQuality::Corrected
        }
    );
    assert_eq!(by_value(3).event.ts.clock, ClockQuality::Corrected);
    assert_eq!(by_value(3).event.ts.unix_ms, TRUE_MS);
    assert_eq!(by_value(4).event.ts, Timestamp::synced(TRUE_MS));
    assert!(audits(&all, "clock.corrected")[0].contains("2 events"));
    log.close().await;
}

#[tokio::test]
async fn clock_steps_while_synchronised_are_audited_and_keep_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::unsynced(TRUE_MS, 60_000));
    clock.set_unix(TRUE_MS, true);
    let (log, _) = EventLog::open(&dir.path().join("e.db"), options(), clock.clone()).unwrap();
    log.append(vec![reading(&clock, 0)]).await.unwrap();
    // Ten minutes of slewing-sized drift is no step.
    clock.advance(Duration::from_secs(600));
    clock.set_unix(clock.now().unix_ms + 300, true);
    log.append(vec![reading(&clock, 1)]).await.unwrap();
    // Someone sets the clock an hour ahead, then two hours back.
    clock.advance(Duration::from_secs(1));
    clock.set_unix(clock.now().unix_ms + 3_600_000, true);
    log.append(vec![reading(&clock, 2)]).await.unwrap();
    clock.advance(Duration::from_secs(1));
    clock.set_unix(clock.now().unix_ms - 7_200_000, true);
    log.append(vec![reading(&clock, 3)]).await.unwrap();

    let all = everything(&log).await;
    let jumps = audits(&all, "clock.jump");
    assert_eq!(jumps.len(), 2, "{jumps:?}");
    assert!(jumps[0].contains("forward by 3600000 ms"), "{}", jumps[0]);
    assert!(jumps[1].contains("back by 7200000 ms"), "{}", jumps[1]);
    // The log keeps append order; the stamps follow the clock.
    let readings: Vec<&StoredEvent> = all.iter().filter(|e| value(e).is_some()).collect();
    let order: Vec<i64> = readings.iter().filter_map(|e| value(e)).collect();
    assert_eq!(order, vec![0, 1, 2, 3]);
    assert!(readings.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(readings[3].event.ts.unix_ms < readings[2].event.ts.unix_ms);
    assert!(readings
        .iter()
        .all(|e| e.event.ts.clock == ClockQuality::Synced));
    log.close().await;
}

#[tokio::test]
async fn uplinks_wait_for_the_sync_a_while_after_boot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::unsynced(4_000, 4_000));
    let mut o = options();
    o.clock_wait = Duration::from_secs(60);
    let (log, _) = EventLog::open(&dir.path().join("e.db"), o, clock.clone()).unwrap();
    // A synchronised event from before (a previous run of this boot would
    // do) goes at once; the boot-stamped ones wait, and so does what
    // follows them.
    let mut synced = reading(&clock, 0);
    synced.ts = Timestamp::synced(TRUE_MS - 60_000);
    log.append(vec![synced]).await.unwrap();
    log.append(vec![reading(&clock, 1), reading(&clock, 2)])
        .await
        .unwrap();
    let given = log.read(Seq(0), 100).await.unwrap();
    assert_eq!(given.iter().filter_map(value).collect::<Vec<_>>(), vec![0]);
    // The sync comes: everything goes, with the true time.
    clock.advance(Duration::from_secs(5));
    clock.set_unix(TRUE_MS, true);
    log.append(vec![reading(&clock, 3)]).await.unwrap();
    let given = log.read(Seq(0), 100).await.unwrap();
    let readings: Vec<&StoredEvent> = given.iter().filter(|e| value(e).is_some()).collect();
    assert_eq!(readings.len(), 4);
    assert!(readings[1..3]
        .iter()
        .all(|e| e.event.ts.clock == ClockQuality::Corrected));
    log.close().await;

    // A site whose clock never syncs: after the wait, events go flagged.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::unsynced(4_000, 4_000));
    let mut o = options();
    o.clock_wait = Duration::from_secs(60);
    let (log, _) = EventLog::open(&dir.path().join("e.db"), o, clock.clone()).unwrap();
    log.append(vec![reading(&clock, 1)]).await.unwrap();
    assert!(log.read(Seq(0), 100).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(57));
    let given = log.read(Seq(0), 100).await.unwrap();
    assert_eq!(given.len(), 1);
    assert!(matches!(
        given[0].event.ts.clock,
        ClockQuality::SinceBoot { boot_ms: 4_000 }
    ));
    log.close().await;
}

#[tokio::test]
async fn close_stops_the_writer_while_other_handles_live() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::unsynced(TRUE_MS, 1_000));
    clock.set_unix(TRUE_MS, true);
    let (log, _) = EventLog::open(&dir.path().join("e.db"), options(), clock.clone()).unwrap();
    let other = log.clone();
    log.append(vec![reading(&clock, 1)]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), log.close())
        .await
        .expect("close returns though a handle is still held");
    let r = other.append(vec![reading(&clock, 2)]).await;
    assert!(
        matches!(&r, Err(e) if matches!(e.error, outpost_sync::LogError::Closed)),
        "{r:?}"
    );
}
