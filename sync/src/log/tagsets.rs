//! The log's table of tag lists, which compact telemetry rows refer to
//! (see `outpost_core::codec`).
//!
//! Invariants: ids are never reused or changed, and a list is never deleted
//! (a row of any age may refer to it; the whole table is a few KiB). A new
//! list is written in the same transaction as the first row that uses it:
//! lists interned during a transaction are *pending* until it commits, and
//! forgotten if it rolls back, so no row can refer to a list the database
//! does not have. At most [`MAX_TAGSETS`] lists are kept; beyond that,
//! events are written in full.

use std::collections::HashMap;

use outpost_core::codec::Tagsets;
use rusqlite::{params, Connection};

/// Most tag lists a log keeps.
pub const MAX_TAGSETS: usize = 65_536;

#[derive(Debug, Default)]
pub struct TagsetCache {
    by_id: Vec<Option<Vec<String>>>,
    /// The names joined by NUL (which no tag name holds after validation;
    /// if one did, it would only share a list with an equal-looking one
    /// whose lengths differ, caught by the lengths check at decode).
    by_tags: HashMap<String, u32>,
    /// Interned since the last commit, oldest first (always the newest ids).
    pending: Vec<u32>,
}

impl TagsetCache {
    /// Every list in `conn`'s table (none when the table does not exist:
    /// a log of an older schema, read without migrating it).
    pub fn load(conn: &Connection) -> rusqlite::Result<TagsetCache> {
        let mut cache = TagsetCache::default();
        let exists: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'tagsets'",
            [],
            |r| r.get(0),
        )?;
        if exists == 0 {
            return Ok(cache);
        }
        let mut q = conn.prepare("SELECT id, tags FROM tagsets ORDER BY id")?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let blob = r.get_ref(1)?;
            let (Ok(id), Ok(bytes)) = (u32::try_from(id), blob.as_blob()) else {
                continue;
            };
            let Ok(tags) = postcard::from_bytes::<Vec<String>>(bytes) else {
                tracing::warn!(
                    id,
                    "A tag list in the log does not decode; rows using it are reported as corrupt."
                );
                continue;
            };
            let at = id as usize;
            if at >= MAX_TAGSETS {
                continue;
            }
            if cache.by_id.len() <= at {
                cache.by_id.resize(at + 1, None);
            }
            cache.by_tags.insert(tags.join("\0"), id);
            cache.by_id[at] = Some(tags);
        }
        Ok(cache)
    }

    pub fn len(&self) -> usize {
        self.by_tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tags.is_empty()
    }

    /// Writes the pending lists in `tx` (the transaction of the rows that
    /// use them).
    pub fn write_pending(&self, tx: &Connection) -> rusqlite::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut ins =
            tx.prepare_cached("INSERT OR REPLACE INTO tagsets (id, tags) VALUES (?1, ?2)")?;
        for id in &self.pending {
            let Some(Some(tags)) = self.by_id.get(*id as usize) else {
                continue;
            };
            let bytes = postcard::to_allocvec(tags)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            ins.execute(params![i64::from(*id), bytes])?;
        }
        Ok(())
    }

    /// The transaction committed: the pending lists are in the database.
    pub fn committed(&mut self) {
        self.pending.clear();
    }

    /// The transaction rolled back: the pending lists are forgotten.
    pub fn rolled_back(&mut self) {
        for id in self.pending.drain(..) {
            if let Some(slot) = self.by_id.get_mut(id as usize) {
                if let Some(tags) = slot.take() {
                    self.by_tags.remove(&tags.join("\0"));
                }
            }
        }
        while self.by_id.last().is_some_and(Option::is_none) {
            self.by_id.pop();
        }
    }
}

impl Tagsets for TagsetCache {
    fn intern(&mut self, tags: &[&str]) -> Option<u32> {
        // One allocation for the look-up: the common case, every poll.
        let key = tags.join("\0");
        if let Some(id) = self.by_tags.get(&key) {
            return Some(*id);
        }
        if self.by_id.len() >= MAX_TAGSETS {
            return None;
        }
        let id = u32::try_from(self.by_id.len()).ok()?;
        self.by_id
            .push(Some(tags.iter().map(|t| (*t).to_string()).collect()));
        self.by_tags.insert(key, id);
        self.pending.push(id);
        Some(id)
    }

    fn get(&self, id: u32) -> Option<&[String]> {
        self.by_id.get(id as usize)?.as_deref()
    }
}
