//! The gateway's current state as the log holds it: the latest value of
//! every attribute (per device, scope and key) and every alarm that is not
//! both cleared and acknowledged (per originator and type).
//!
//! Invariants:
//! - The table `current` is written in the transaction that appends the
//!   event it comes from, so it never runs ahead of or behind the log.
//! - It is derived: each row is the encoding of an event (for an attribute,
//!   the event narrowed to that one point) that is, or was, in `events`.
//!   Eviction and retention never touch it, so the state survives the
//!   history it came from.
//! - A log migrated from schema 3 has it filled from its events, once, in
//!   the migration's open.

use outpost_core::{codec, AlarmState, AttributeScope, Body, Event};
use rusqlite::{params, Connection};

use crate::log::LogError;

pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS current (\
    device TEXT NOT NULL, \
    scope INTEGER NOT NULL, \
    key TEXT NOT NULL, \
    seq INTEGER NOT NULL, \
    body BLOB NOT NULL, \
    PRIMARY KEY (device, scope, key)) WITHOUT ROWID;";

const CLIENT: i64 = 0;
const SHARED: i64 = 1;
const SERVER: i64 = 2;
const ALARM: i64 = 3;

/// Whether `ev` changes the current state.
pub(super) fn concerns(ev: &Event) -> bool {
    matches!(
        ev.body,
        Body::Attributes(_) | Body::ScopedAttributes(..) | Body::Alarm(_)
    )
}

/// Records `ev` (appended as `seq`) in the current state.
pub(super) fn record(tx: &Connection, seq: u64, ev: &Event) -> Result<(), LogError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let (scope, points) = match &ev.body {
        Body::Attributes(p) => (CLIENT, p),
        Body::ScopedAttributes(AttributeScope::Shared, p) => (SHARED, p),
        Body::ScopedAttributes(AttributeScope::Server, p) => (SERVER, p),
        Body::Alarm(a) => {
            if a.state == AlarmState::Cleared && a.acknowledged {
                tx.prepare_cached(
                    "DELETE FROM current WHERE device = ?1 AND scope = ?2 AND key = ?3",
                )
                .and_then(|mut s| s.execute(params![ev.device, ALARM, a.name]))
                .map_err(super::sql_err("forgetting a closed alarm"))?;
            } else {
                let body = codec::encode(ev).map_err(|e| LogError::Encode(e.to_string()))?;
                upsert(tx, &ev.device, ALARM, &a.name, seq, &body)?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    for p in points {
        let mut one = ev.clone();
        one.body = match &ev.body {
            Body::ScopedAttributes(s, _) => Body::ScopedAttributes(*s, vec![p.clone()]),
            _ => Body::Attributes(vec![p.clone()]),
        };
        let body = codec::encode(&one).map_err(|e| LogError::Encode(e.to_string()))?;
        upsert(tx, &ev.device, scope, &p.tag, seq, &body)?;
    }
    Ok(())
}

fn upsert(
    tx: &Connection,
    device: &str,
    scope: i64,
    key: &str,
    seq: i64,
    body: &[u8],
) -> Result<(), LogError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO current (device, scope, key, seq, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![device, scope, key, seq, body]))
    .map_err(super::sql_err("saving the current state"))?;
    Ok(())
}

/// The current state: one event per attribute and per open or
/// unacknowledged alarm, in the order they were appended. Rows that do not
/// decode are skipped and counted.
pub(super) fn load(conn: &Connection) -> Result<(Vec<Event>, u64), LogError> {
    let mut stmt = conn
        .prepare("SELECT body FROM current ORDER BY seq")
        .map_err(super::sql_err("reading the current state"))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .map_err(super::sql_err("reading the current state"))?;
    let mut out = Vec::new();
    let mut bad = 0;
    for r in rows {
        let bytes = r.map_err(super::sql_err("reading the current state"))?;
        match codec::decode(&bytes) {
            Ok(ev) => out.push(ev),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Fills the table from the attribute and alarm events of a log migrated
/// from a schema without it, inside the migration's transaction.
pub(super) fn backfill(conn: &Connection) -> Result<u64, LogError> {
    use crate::log::export::kind_code;
    let attr = kind_code(outpost_core::EventKind::Attribute);
    let alarm = kind_code(outpost_core::EventKind::Alarm);
    let mut stmt = conn
        .prepare("SELECT seq, body FROM events WHERE kind IN (?1, ?2) ORDER BY seq")
        .map_err(super::sql_err("filling the current state"))?;
    let rows = stmt
        .query_map(params![attr, alarm], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(super::sql_err("filling the current state"))?;
    let mut n = 0u64;
    for r in rows {
        let (seq, bytes) = r.map_err(super::sql_err("filling the current state"))?;
        if let Ok(ev) = codec::decode(&bytes) {
            record(conn, u64::try_from(seq).unwrap_or(0), &ev)?;
            n += 1;
        }
    }
    Ok(n)
}
