//! Clock correction: re-stamping this boot's events once the clock is
//! synchronised.
//!
//! An event taken while the clock was not synchronised carries its
//! boot-relative time ([`ClockQuality::SinceBoot`]). The log remembers which
//! boot it is in (`meta boot_id`) and the first seq appended in it
//! (`meta boot_first_seq`). When the clock is synchronised, the true time of
//! such an event is its boot time plus the offset between the wall clock and
//! the boot clock at that moment; the row's `ts_ms`, `at_ms` (so the age
//! limit applies to it from then on) and body are rewritten, the body's clock
//! becoming [`ClockQuality::Corrected`].
//!
//! Invariants: only events of the current boot are touched (a boot-relative
//! time from another boot means nothing now, so those stay unsynced);
//! nothing is reordered (seq is append order, whatever the stamps say); each
//! chunk of rows is its own transaction, so a kill half-way leaves some rows
//! corrected and the rest found again by the next pass.

use outpost_core::{codec, Body, ClockQuality, Event, Timestamp};
use rusqlite::{params, OptionalExtension};

use super::{sql_err, to_i64, to_u64, FastTx, Store, ROW_OVERHEAD};
use crate::log::LogError;

/// Rows re-stamped per transaction.
const CHUNK: i64 = 1024;

/// What a correction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Corrected {
    pub rows: u64,
    /// The wall clock minus the boot clock, in ms, that the stamps were
    /// corrected with.
    pub offset_ms: i64,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl Store {
    /// Records the boot the log is now written in: a new boot id starts a
    /// new boot at the next seq. Returns true when the boot is new.
    pub fn note_boot(&mut self, boot_id: i64) -> Result<bool, LogError> {
        let known = self.meta("boot_id", "reading the boot id")?;
        if known == Some(boot_id) {
            return Ok(false);
        }
        let tx = FastTx::begin(&self.conn).map_err(sql_err("beginning a transaction"))?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', ?1), ('boot_first_seq', ?2)",
            params![boot_id, to_i64(self.next_seq)],
        )
        .map_err(sql_err("saving the boot id"))?;
        tx.commit().map_err(sql_err("committing the boot id"))?;
        Ok(true)
    }

    /// A value of the meta table (`None`: not there).
    fn meta(&self, key: &str, what: &'static str) -> Result<Option<i64>, LogError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql_err(what))
    }

    /// The first seq of the current boot (none before [`Store::note_boot`]:
    /// `u64::MAX`, nothing to correct).
    fn boot_first_seq(&self) -> Result<u64, LogError> {
        Ok(self
            .meta("boot_first_seq", "reading the boot's first seq")?
            .map_or(u64::MAX, to_u64))
    }

    /// Re-stamps this boot's boot-relative events with `offset_ms` (the
    /// synchronised wall clock minus the boot clock), in chunks.
    pub fn correct_clock(&mut self, offset_ms: i64) -> Result<Corrected, LogError> {
        let mut done = Corrected {
            offset_ms,
            ..Corrected::default()
        };
        let checked = self.meta(
            "clock_checked_through",
            "reading how far stamps were checked",
        )?;
        let mut after = to_i64(self.boot_first_seq()?)
            .saturating_sub(1)
            .max(checked.unwrap_or(0));
        let through = to_i64(self.next_seq).saturating_sub(1);
        loop {
            let chunk: Vec<(i64, Vec<u8>, i64)> = {
                let mut q = self
                    .conn
                    .prepare_cached(
                        "SELECT seq, body, size FROM events WHERE seq > ?1 AND seq <= ?2 AND at_ms IS NULL ORDER BY seq LIMIT ?3",
                    )
                    .map_err(sql_err("preparing the correction scan"))?;
                let rows = q
                    .query_map(params![after, through, CHUNK], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(sql_err("scanning for uncorrected events"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(sql_err("scanning for uncorrected events"))?
            };
            let Some(&(last, _, _)) = chunk.last() else {
                break;
            };
            after = last;
            let mut bytes = self.bytes;
            let mut changed = Vec::new();
            let tx = FastTx::begin(&self.conn).map_err(sql_err("beginning a transaction"))?;
            {
                let mut up = tx
                    .prepare_cached(
                        "UPDATE events SET ts_ms = ?2, at_ms = ?2, size = ?3, body = ?4 WHERE seq = ?1",
                    )
                    .map_err(sql_err("preparing the correction"))?;
                for (seq, body, size) in chunk {
                    let Ok(mut ev) = codec::decode_with(&body, &self.tagsets) else {
                        continue; // reported by the readers; left as it is
                    };
                    let Some(ts) = corrected(&ev, offset_ms) else {
                        continue;
                    };
                    ev.ts = ts;
                    self.buf.clear();
                    codec::encode_compact_into(&ev, &mut self.buf, &mut self.tagsets)
                        .map_err(|e| LogError::Encode(e.to_string()))?;
                    let new_size = self.buf.len() as u64 + ROW_OVERHEAD;
                    up.execute(params![seq, ts.unix_ms, to_i64(new_size), &self.buf[..]])
                        .map_err(sql_err("re-stamping an event"))?;
                    bytes = bytes.saturating_sub(to_u64(size)).saturating_add(new_size);
                    changed.push(to_u64(seq));
                }
            }
            let committed = self.tagsets.write_pending(&tx).and_then(|()| tx.commit());
            if let Err(e) = committed {
                self.tagsets.rolled_back();
                return Err(sql_err("committing the correction")(e));
            }
            self.tagsets.committed();
            self.bytes = bytes;
            if let (Some(&first), Some(&last)) = (changed.first(), changed.last()) {
                if done.rows == 0 {
                    done.first_seq = first;
                }
                done.last_seq = last;
                done.rows += changed.len() as u64;
                // Corrected rows have an age now: the age scan must see them.
                self.age_skip = self.age_skip.min(to_i64(first).saturating_sub(1));
            }
        }
        // Everything up to here is checked: the next pass (after the clock
        // was lost and found again) starts after it.
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock_checked_through', ?1)",
                params![through],
            )
            .map_err(sql_err("saving how far stamps were checked"))?;
        if done.rows > 0 {
            self.stats.bytes = self.bytes;
            self.stats.clock_corrected_total += done.rows;
        }
        Ok(done)
    }
}

/// The true time of `ev`, if it has a boot-relative stamp.
pub fn corrected(ev: &Event, offset_ms: i64) -> Option<Timestamp> {
    match ev.ts.clock {
        ClockQuality::SinceBoot { boot_ms } => Some(Timestamp {
            unix_ms: boot_ms.saturating_add(offset_ms),
            clock: ClockQuality::Corrected,
        }),
        _ => None,
    }
}

/// The audit entry a correction leaves.
pub fn correction_audit(now: Timestamp, c: &Corrected) -> Event {
    Event::new(
        "",
        now,
        Body::Audit(outpost_core::Audit {
            action: "clock.corrected".into(),
            actor: "gateway".into(),
            detail: format!(
                "the clock was synchronised: {} events of this boot taken before (seq {} to {}) were re-stamped with the true time (boot clock + {} ms)",
                c.rows, c.first_seq, c.last_seq, c.offset_ms
            ),
        }),
    )
}
