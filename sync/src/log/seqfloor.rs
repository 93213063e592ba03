//! The seq floor: a small file beside the log (`<log>.seq`) that keeps the
//! seqs given out from ever being given out again, even when the database
//! itself is lost (moved aside as unreadable, emptied, or deleted).
//!
//! # Invariants
//!
//! - **Every seq the log has committed is below the stored floor.** The store
//!   raises the floor (by [`SEQ_BLOCK`] at a time, fsynced) *before* it
//!   commits a transaction that would pass it, so one write covers many
//!   thousands of events.
//! - **A fresh database starts at the floor**, not at 1. Uplinks name events
//!   by `<gateway>:<seq>`, and a JetStream stream drops a repeated id inside
//!   its duplicate window: a repeated seq would be a lost event.
//! - **The file is rewritten in place** (two fixed slots, written in turn, each
//!   with a checksum), so raising the floor needs no new disk block and a torn
//!   write leaves the other slot valid. The floor read is the larger valid slot.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How far ahead of the next seq the floor is raised each time.
pub const SEQ_BLOCK: u64 = 65_536;

const MAGIC: &[u8; 4] = b"OSEQ";
const SLOT: usize = 24;

/// The open floor file.
#[derive(Debug)]
pub(crate) struct SeqFloor {
    path: PathBuf,
    file: File,
    /// The floor as last written (0: nothing written yet).
    value: u64,
    /// The slot the next write goes to.
    next_slot: u64,
}

fn checksum(value: u64) -> u64 {
    // Any fixed mixing: it only has to tell a whole slot from a torn one.
    (value ^ 0x9e37_79b9_7f4a_7c15).rotate_left(17)
}

fn encode(value: u64) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    out[..4].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&value.to_le_bytes());
    out[16..24].copy_from_slice(&checksum(value).to_le_bytes());
    out
}

fn decode(slot: &[u8]) -> Option<u64> {
    if slot.len() != SLOT || &slot[..4] != MAGIC {
        return None;
    }
    let value = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let sum = u64::from_le_bytes(slot[16..24].try_into().ok()?);
    (sum == checksum(value)).then_some(value)
}

impl SeqFloor {
    /// The floor file of the log at `log`.
    pub(crate) fn path_for(log: &Path) -> PathBuf {
        PathBuf::from(format!("{}.seq", log.display()))
    }

    /// Opens (or creates) the floor file. `Ok((floor, None))` for a new or
    /// unreadable file (`Some(reason)` says why it was unreadable).
    pub(crate) fn open(log: &Path) -> std::io::Result<(SeqFloor, Option<String>)> {
        let path = Self::path_for(log);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::with_capacity(2 * SLOT);
        Read::by_ref(&mut file)
            .take(2 * SLOT as u64)
            .read_to_end(&mut bytes)?;
        let slots: Vec<Option<u64>> = bytes.chunks(SLOT).map(decode).collect();
        let value = slots.iter().flatten().copied().max().unwrap_or(0);
        let problem = (!bytes.is_empty() && slots.iter().all(Option::is_none))
            .then(|| format!("{} holds no valid seq floor", path.display()));
        // Write next over the smaller (or invalid) slot.
        let next_slot = match (
            slots.first().copied().flatten(),
            slots.get(1).copied().flatten(),
        ) {
            (Some(a), Some(b)) if a > b => 1,
            (Some(_), None) => 1,
            _ => 0,
        };
        Ok((
            SeqFloor {
                path,
                file,
                value,
                next_slot,
            },
            problem,
        ))
    }

    /// The floor: no committed seq is at or above it (0 when unknown).
    pub(crate) fn value(&self) -> u64 {
        self.value
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Raises the floor to `value` (durably) if it is below it.
    pub(crate) fn raise(&mut self, value: u64) -> std::io::Result<()> {
        if value <= self.value {
            return Ok(());
        }
        let offset = self.next_slot * SLOT as u64;
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.write_all(&encode(value))?;
        self.file.sync_data()?;
        self.value = value;
        self.next_slot = 1 - self.next_slot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_floor_survives_reopening_and_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.db");
        let (mut f, problem) = SeqFloor::open(&log).unwrap();
        assert_eq!((f.value(), problem), (0, None));
        f.raise(100).unwrap();
        f.raise(50).unwrap();
        f.raise(300).unwrap();
        drop(f);
        let (mut f, _) = SeqFloor::open(&log).unwrap();
        assert_eq!(f.value(), 300);
        f.raise(400).unwrap();
        drop(f);
        assert_eq!(SeqFloor::open(&log).unwrap().0.value(), 400);
    }

    #[test]
    fn a_torn_slot_leaves_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.db");
        let (mut f, _) = SeqFloor::open(&log).unwrap();
        f.raise(10).unwrap(); // slot 0
        f.raise(20).unwrap(); // slot 1
        drop(f);
        let path = SeqFloor::path_for(&log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 9] ^= 0xff; // tear slot 1
        std::fs::write(&path, &bytes).unwrap();
        let (mut f, problem) = SeqFloor::open(&log).unwrap();
        assert_eq!((f.value(), problem), (10, None));
        // The torn slot is the one written next.
        f.raise(30).unwrap();
        drop(f);
        assert_eq!(SeqFloor::open(&log).unwrap().0.value(), 30);
        std::fs::write(&path, b"garbage garbage garbage garbage").unwrap();
        let (f, problem) = SeqFloor::open(&log).unwrap();
        assert_eq!(f.value(), 0);
        assert!(problem.unwrap().contains("no valid seq floor"));
    }
}
