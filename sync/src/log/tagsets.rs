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

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use outpost_core::codec::Tagsets;
use rusqlite::{params, Connection};

/// Most tag lists a log keeps.
pub const MAX_TAGSETS: usize = 65_536;

#[derive(Debug, Default)]
pub struct TagsetCache {
    by_id: Vec<Option<Vec<String>>>,
    /// Ids by a hash of their names (compared in full on a hit): looking a
    /// list up allocates nothing, which is every poll's case.
    by_hash: HashMap<u64, Vec<u32>>,
    /// Hashes a tag list: `[&str]` and `[String]` hash alike (the length,
    /// then each name), so a look-up needs no owned copy.
    hasher: RandomState,
    len: usize,
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
            let h = cache.hasher.hash_one(&tags[..]);
            cache.by_hash.entry(h).or_default().push(id);
            cache.by_id[at] = Some(tags);
            cache.len += 1;
        }
        Ok(cache)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, h: u64, tags: &[&str]) -> Option<u32> {
        self.by_hash.get(&h)?.iter().copied().find(|id| {
            self.by_id
                .get(*id as usize)
                .and_then(Option::as_ref)
                .is_some_and(|t| t.iter().map(String::as_str).eq(tags.iter().copied()))
        })
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
                    let h = self.hasher.hash_one(&tags[..]);
                    if let Some(ids) = self.by_hash.get_mut(&h) {
                        ids.retain(|i| *i != id);
                    }
                    self.len -= 1;
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
        let h = self.hasher.hash_one(tags);
        if let Some(id) = self.find(h, tags) {
            return Some(id);
        }
        if self.by_id.len() >= MAX_TAGSETS {
            return None;
        }
        let id = u32::try_from(self.by_id.len()).ok()?;
        self.by_id
            .push(Some(tags.iter().map(|t| (*t).to_string()).collect()));
        self.by_hash.entry(h).or_default().push(id);
        self.len += 1;
        self.pending.push(id);
        Some(id)
    }

    fn get(&self, id: u32) -> Option<&[String]> {
        self.by_id.get(id as usize)?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_shared_and_a_rollback_forgets_only_its_own() {
        let mut c = TagsetCache::default();
        let a = c.intern(&["t", "p"]).unwrap();
        assert_eq!(c.intern(&["t", "p"]), Some(a));
        assert_ne!(c.intern(&["tp"]), Some(a));
        assert_ne!(c.intern(&["p", "t"]), Some(a), "order matters");
        c.committed();
        let n = c.len();
        let b = c.intern(&["new"]).unwrap();
        assert_eq!(c.get(b), Some(&["new".to_string()][..]));
        c.rolled_back();
        assert_eq!(c.get(b), None);
        assert_eq!(c.len(), n);
        assert_eq!(c.intern(&["t", "p"]), Some(a));
        // The id is given again, to the next new list.
        assert_eq!(c.intern(&["other"]), Some(b));
    }

    #[test]
    fn it_round_trips_through_the_table() {
        #[allow(clippy::disallowed_methods)] // a scratch table for the test
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE tagsets (id INTEGER PRIMARY KEY, tags BLOB NOT NULL);")
            .unwrap();
        let mut c = TagsetCache::default();
        let a = c.intern(&["x", "y"]).unwrap();
        let b = c.intern(&[""]).unwrap();
        c.write_pending(&conn).unwrap();
        c.committed();
        let back = TagsetCache::load(&conn).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(a), c.get(a));
        assert_eq!(back.get(b), c.get(b));
        let mut back = back;
        assert_eq!(back.intern(&["x", "y"]), Some(a));
    }
}
