//! The migration ladder against a log written by the release before it
//! (`fixtures/log-v1`, see its README): it opens, migrates, and every event
//! and cursor is intact; a log of a newer schema is refused and left as it
//! is; a migration that cannot finish leaves the log at its old version.
#![allow(clippy::disallowed_methods)] // test code: opens SQLite directly
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::path::{Path, PathBuf};

use outpost_core::{Body, Seq, Timestamp};
use outpost_sync::log::{
    Durability, Limits, LogError, Store, StoreOptions, MIGRATIONS, SCHEMA_VERSION,
};
use serde_json::Value;

const T0: i64 = 1_764_000_000_000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/log-v1")
}

fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::copy(fixture().join("events.db"), &path).unwrap();
    (dir, path)
}

fn opts() -> StoreOptions {
    StoreOptions {
        durability: Durability::Full,
        limits: Limits::UNLIMITED,
        max_page_count: None,
        reserve_bytes: 0,
    }
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// An event as the old release printed it, in today's layout: alarms
/// (before event format 5) gain their times from the event's time, no
/// acknowledgement and no propagation.
fn current_layout(old: &Value) -> Value {
    let mut ev = old.clone();
    let ts = old["ts"]["unix_ms"].clone();
    if let Some(a) = ev["body"].get_mut("Alarm").and_then(Value::as_object_mut) {
        let cleared = a["state"] == "Cleared";
        a.insert("acknowledged".into(), false.into());
        a.insert("start_ms".into(), ts.clone());
        a.insert("end_ms".into(), ts.clone());
        a.insert("ack_ms".into(), Value::Null);
        a.insert("clear_ms".into(), if cleared { ts } else { Value::Null });
        a.insert(
            "propagation".into(),
            serde_json::json!({"related": false, "to_owner": false, "to_tenant": false, "relation_types": []}),
        );
    }
    ev
}

/// A fixture log opened (and so migrated) by this build.
struct Migrated {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
    /// Everything it reads back.
    all: Vec<outpost_sync::StoredEvent>,
    /// What the release that wrote it read back (`expected.json`).
    want: Value,
}

/// Opens a copy of `tests/fixtures/<name>` (schema `from`, `rows` events)
/// and checks the migration, that every event of the old log is there,
/// unchanged and at its seq, followed by the migration's audit entry, and
/// that every cursor is where it was.
fn migrate_fixture(name: &str, from: i64, rows: usize) -> Migrated {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::copy(fixture.join("events.db"), &path).unwrap();
    assert_eq!(user_version(&path), from);
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let (mut store, report) = Store::open(&path, opts(), Timestamp::synced(T0)).unwrap();
    assert!(report.recovered.is_none(), "{report:?}");
    assert_eq!(report.migrated_from, Some(from));
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let all = store.read_all().unwrap();
    let want_events = want["events"].as_array().unwrap();
    assert_eq!(want_events.len(), rows);
    assert_eq!(all.len(), want_events.len() + 1);
    for (got, w) in all.iter().zip(want_events) {
        assert_eq!(got.seq.0, w["seq"].as_u64().unwrap());
        assert_eq!(
            serde_json::to_value(&got.event).unwrap(),
            current_layout(&w["event"])
        );
    }
    // The current state is filled from the old events: the last alarm of
    // each (device, type), the last value of each attribute.
    let mut want_current = std::collections::BTreeMap::new();
    for e in &all {
        match &e.event.body {
            Body::Alarm(a) => {
                want_current.insert(
                    (e.event.device.clone(), a.name.clone()),
                    Value::from(e.seq.0),
                );
            }
            Body::Attributes(points) => {
                for p in points {
                    want_current.insert(
                        (e.event.device.clone(), format!("attr:{}", p.tag)),
                        serde_json::to_value(&p.value).unwrap(),
                    );
                }
            }
            _ => {}
        }
    }
    let mut got_current = std::collections::BTreeMap::new();
    let seq_of = |ev: &outpost_core::Event| {
        all.iter()
            .rev()
            .find(|s| s.event == *ev)
            .map(|s| Value::from(s.seq.0))
    };
    for ev in store.current().unwrap().0 {
        match &ev.body {
            Body::Alarm(a) => {
                got_current.insert((ev.device.clone(), a.name.clone()), seq_of(&ev).unwrap());
            }
            Body::Attributes(points) => {
                for p in points {
                    got_current.insert(
                        (ev.device.clone(), format!("attr:{}", p.tag)),
                        serde_json::to_value(&p.value).unwrap(),
                    );
                }
            }
            other => panic!("not current state: {other:?}"),
        }
    }
    assert!(!want_current.is_empty());
    assert_eq!(got_current, want_current);
    // Every cursor where the old log had it.
    for c in want["cursors"].as_array().unwrap() {
        let name = c[0].as_str().unwrap();
        assert_eq!(
            store.cursor(name),
            Some(Seq(c[1].as_u64().unwrap())),
            "{name}"
        );
    }
    Migrated {
        _dir: dir,
        path,
        store,
        all,
        want,
    }
}

#[test]
fn the_ladder_reaches_the_current_version() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(
            m.to,
            i as i64 + 2,
            "migration {i} takes version {} on",
            i + 1
        );
    }
    assert_eq!(MIGRATIONS.len() as i64 + 1, SCHEMA_VERSION);
}

#[test]
fn a_log_of_the_previous_release_opens_migrated_with_everything_intact() {
    let Migrated {
        _dir,
        path,
        mut store,
        all,
        want,
    } = migrate_fixture("log-v1", 1, 180);
    let want_events = want["events"].as_array().unwrap();
    let next = want["next_seq"].as_u64().unwrap();
    let audit = all.last().unwrap();
    assert_eq!(
        audit.seq,
        Seq(next),
        "seqs continue where the old log stopped"
    );
    match &audit.event.body {
        Body::Audit(a) => {
            assert_eq!(a.action, "log.migrated");
            assert!(
                a.detail
                    .contains(&format!("from schema version 1 to {SCHEMA_VERSION}"))
                    && MIGRATIONS.iter().all(|m| a.detail.contains(m.what)),
                "{}",
                a.detail
            );
        }
        other => panic!("expected the migration's audit entry, got {other:?}"),
    }
    // The history is complete from the oldest row the old version left.
    let from: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE key = 'history_from'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(from as u64, want_events[0]["seq"].as_u64().unwrap());

    // Acknowledging now keeps the events (version 2 keeps history).
    store.ack("nats", Seq(100)).unwrap();
    store.ack("mqtt", Seq(100)).unwrap();
    assert_eq!(store.read_all().unwrap().len(), all.len());
    drop(store);
    // A second open has nothing to migrate.
    let (_store, report) = Store::open(&path, opts(), Timestamp::synced(T0)).unwrap();
    assert_eq!(report.migrated_from, None);
}

#[test]
fn a_log_of_a_newer_schema_is_refused_and_left_alone() {
    let (dir, path) = copy_fixture();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&path, opts(), Timestamp::synced(T0)).unwrap_err();
    assert!(
        matches!(err, LogError::NewerSchema { version, .. } if version == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("written by a newer outpostd"), "{text}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("corrupt")),
        "nothing is moved aside: {names:?}"
    );
}

#[test]
fn a_migration_that_cannot_finish_leaves_the_old_version_for_the_next_start() {
    let (_dir, path) = copy_fixture();
    // Another connection holds the write lock: the migration's transaction
    // cannot begin.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker
        .execute_batch("PRAGMA journal_mode = WAL; BEGIN IMMEDIATE;")
        .unwrap();
    let err = Store::open(&path, opts(), Timestamp::synced(T0)).unwrap_err();
    assert!(matches!(err, LogError::Migration { to: 2, .. }), "{err:?}");
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert_eq!(user_version(&path), 1);
    let (mut store, report) = Store::open(&path, opts(), Timestamp::synced(T0)).unwrap();
    assert!(report.recovered.is_none());
    assert_eq!(report.migrated_from, Some(1));
    assert_eq!(store.read_all().unwrap().len(), 181);
}

#[test]
fn a_log_of_schema_2_opens_migrated_with_everything_intact() {
    let Migrated {
        _dir,
        path,
        mut store,
        all,
        want,
    } = migrate_fixture("log-v2", 2, 200);
    let audit = all.last().unwrap();
    assert_eq!(audit.seq, Seq(want["next_seq"].as_u64().unwrap()));
    match &audit.event.body {
        Body::Audit(a) => {
            assert_eq!(a.action, "log.migrated");
            assert!(
                a.detail
                    .contains(&format!("from schema version 2 to {SCHEMA_VERSION}")),
                "{}",
                a.detail
            );
            assert!(!a.detail.contains(MIGRATIONS[0].what), "{}", a.detail);
        }
        other => panic!("expected the migration's audit entry, got {other:?}"),
    }
    // The old rows' unsynced stamps have no boot time: a correction pass
    // leaves them be.
    let c = store.correct_clock(T0).unwrap();
    assert_eq!(c.rows, 0);
    assert_eq!(store.read_all().unwrap().len(), all.len());
    drop(store);
    // The log keeps the page size it was made with.
    let page_size: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, 4096);
}

#[test]
fn a_new_log_takes_the_small_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    drop(Store::open(&path, opts(), Timestamp::synced(T0)).unwrap());
    let page_size: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, i64::from(outpost_sync::log::PAGE_SIZE));
    assert_eq!(user_version(&path), SCHEMA_VERSION);
}
