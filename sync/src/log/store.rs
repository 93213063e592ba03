//! The synchronous half of the event log: one SQLite connection, used by one
//! thread (the writer). See the module doc of `log` for the invariants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_core::codec;
use outpost_core::{Body, ClockQuality, Event, Gap, Priority, Seq, Timestamp};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::seqfloor::{SeqFloor, SEQ_BLOCK};
use super::tagsets::TagsetCache;

mod current;
mod restamp;
use super::{Durability, Limits, LogError, StoredEvent};
pub use restamp::{corrected, correction_audit, Corrected};

/// `PRAGMA application_id`: "OUTP".
pub(super) const APPLICATION_ID: i64 = 0x4f55_5450;
/// The schema this build writes. Older logs are migrated at open (see
/// [`MIGRATIONS`]); newer ones are refused, never moved aside.
pub const SCHEMA_VERSION: i64 = 4;
/// Bytes counted per row on top of its encoded body: the row header, the
/// seq/time/priority columns and the device name's share.
pub const ROW_OVERHEAD: u64 = 40;
/// The page size of a new log. A commit writes whole pages to the WAL, and
/// the log commits a few hundred bytes at a time: with SQLite's default of
/// 4 KiB, every commit wrote a 4 KiB frame, and the kernel wrote each one to
/// the card. 1 KiB frames share the kernel's 4 KiB pages between
/// writebacks, which took the bytes written per data point from 106 to 40 in
/// the wear experiment (BENCHMARKS.md, "Flash wear"). A log created with
/// another page size keeps it.
pub const PAGE_SIZE: u32 = 1024;
/// Room kept free for the gap record when evicting.
const GAP_RESERVE_BYTES: u64 = 160;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY,
    at_ms    INTEGER,            -- append time (synced clock only), for age limits
    ts_ms    INTEGER NOT NULL,   -- the event's own timestamp
    priority INTEGER NOT NULL,
    device   TEXT NOT NULL,
    kind     INTEGER NOT NULL,
    size     INTEGER NOT NULL,   -- bytes counted against max_bytes
    body     BLOB NOT NULL       -- outpost_core::codec encoding
);
CREATE TABLE IF NOT EXISTS cursors (
    name  TEXT PRIMARY KEY,
    acked INTEGER NOT NULL       -- every seq <= acked has been acknowledged
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tagsets (id INTEGER PRIMARY KEY, tags BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS current (
    device TEXT NOT NULL,
    scope  INTEGER NOT NULL,     -- 0 client, 1 shared, 2 server attributes; 3 alarms
    key    TEXT NOT NULL,        -- the attribute's key, the alarm's type
    seq    INTEGER NOT NULL,     -- the event it comes from
    body   BLOB NOT NULL,        -- that event (an attribute's: narrowed to its point)
    PRIMARY KEY (device, scope, key)) WITHOUT ROWID;
";

/// One step of the migration ladder: SQL that takes a log of schema version
/// `to - 1` to `to`. It runs in one transaction with the new `user_version`,
/// so a migration that fails (a full disk, a kill) leaves the log as it was,
/// to be migrated at the next start.
#[derive(Debug)]
pub struct Migration {
    pub to: i64,
    /// What changes, for the audit entry and the daemon's log.
    pub what: &'static str,
    sql: &'static str,
}

/// The ladder: `MIGRATIONS[i]` takes a log from version `i + 1` to `i + 2`.
/// A fresh log is created at [`SCHEMA_VERSION`] directly.
pub const MIGRATIONS: &[Migration] = &[Migration {
    to: 2,
    what: "events are kept after delivery, as the gateway's history (version 1 deleted an event once every uplink had it)",
    // Rows before this seq were deleted by version 1 (on delivery, or by a
    // limit): the history is complete from here on.
    sql: "INSERT OR REPLACE INTO meta (key, value) SELECT 'history_from', \
          coalesce((SELECT min(seq) FROM events), (SELECT value FROM meta WHERE key = 'next_seq'), 1);",
}, Migration {
    to: 3,
    what: "events taken before the clock was synchronised carry their boot-relative time, and are re-stamped once it is; good telemetry is stored compactly, its tag names in a table of their own (event formats 3 and 4, which version 2 cannot read)",
    // Rows of version 2 have no boot-relative time: the current boot (for
    // correction) starts after them, whatever the boot.
    sql: "CREATE TABLE IF NOT EXISTS tagsets (id INTEGER PRIMARY KEY, tags BLOB NOT NULL); \
          INSERT OR REPLACE INTO meta (key, value) VALUES ('boot_id', 0), \
          ('boot_first_seq', coalesce((SELECT value FROM meta WHERE key = 'next_seq'), 1));",
}, Migration {
    to: 4,
    what: "the current attributes (client, shared and server scopes) and open alarms are kept in a table of their own, restored at start whatever retention has removed (alarm records gain acknowledgement, times and propagation: event format 5)",
    sql: current::TABLE,
}];

/// Options fixed at open.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    pub limits: Limits,
    /// Caps the database at this many pages (`PRAGMA max_page_count`); for
    /// tests and for operators who want a hard cap below the disk size.
    pub max_page_count: Option<u32>,
    /// Bytes kept in a reserve file beside the log (`<log>.reserve`). On a
    /// full disk it is released so that acknowledgements, which free space,
    /// can still be written; it is recreated once space returns. The WAL is
    /// checkpointed whenever it exceeds half this size. 0 = no reserve (and
    /// SQLite's default checkpointing).
    pub reserve_bytes: u64,
}

/// The least time between two tries to rebuild a released reserve.
pub const RESERVE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Free bytes for an unprivileged writer on the file system holding `path`
/// (`None` if it cannot be read: the reserve is then tried regardless).
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Default size of the space reserve.
pub const DEFAULT_RESERVE_BYTES: u64 = 1024 * 1024;

/// What happened while opening.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Set when the existing database could not be used and was moved aside.
    pub recovered: Option<Recovery>,
    /// The schema version the log had, when it was migrated at this open.
    pub migrated_from: Option<i64>,
    /// Set when the database was new (moved aside, emptied or deleted) while
    /// the seq floor shows that seqs had been given out: the first seq the
    /// fresh log gives out, so no seq is ever given out twice.
    pub continued_at: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Recovery {
    pub moved_to: PathBuf,
    pub reason: String,
}

/// Counters and gauges of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    pub rows: u64,
    pub bytes: u64,
    /// The seq the next appended event will get.
    pub next_seq: u64,
    pub appended_total: u64,
    pub commits_total: u64,
    pub evicted_rows_total: u64,
    pub evicted_age_total: u64,
    pub evicted_bytes_total: u64,
    pub gaps_total: u64,
    /// Delivered events deleted to stay within the limits or to make room on
    /// a full disk (history given up; no gap record, nothing was lost
    /// upstream).
    pub trimmed_total: u64,
    /// Events re-stamped with the true time once the clock was synchronised.
    pub clock_corrected_total: u64,
    pub corrupt_rows_total: u64,
    pub disk_full_total: u64,
    /// True while the last append failed for want of space.
    pub disk_full: bool,
    /// True while the space reserve is in place.
    pub reserve_held: bool,
    /// Times the reserve file was written (each is `reserve_bytes` of writes).
    pub reserve_created_total: u64,
    /// Times the reserve was released on a full disk.
    pub reserve_released_total: u64,
    /// (cursor name, acked seq)
    pub cursors: Vec<(String, u64)>,
}

/// Decodes a row's body onto `out`; a row that does not decode is logged
/// and skipped (false), never fatal: the rest of the log stays readable.
fn push_decoded(
    out: &mut Vec<StoredEvent>,
    seq: u64,
    body: Result<&[u8], rusqlite::types::FromSqlError>,
    sets: &TagsetCache,
) -> bool {
    let decoded = body
        .map_err(|e| e.to_string())
        .and_then(|b| codec::decode_with(b, sets).map_err(|e| e.to_string()));
    match decoded {
        Ok(event) => {
            out.push(StoredEvent {
                seq: Seq(seq),
                event,
            });
            true
        }
        Err(e) => {
            tracing::error!(seq, error = %e, "Skipping an event row that does not decode.");
            false
        }
    }
}

/// Which events a [`Store::scan`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFilter {
    /// One device, or all.
    pub device: Option<String>,
    /// Event timestamps in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
}

/// One slice of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Scanned {
    pub events: Vec<StoredEvent>,
    /// The last seq this slice covered; the next slice starts after it.
    pub next: Seq,
    /// True once the slice reached the newest event.
    pub done: bool,
}

/// Result of one append: the seqs given to the caller's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first: Seq,
    pub last: Seq,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    opts: StoreOptions,
    next_seq: u64,
    rows: [u64; 3],
    bytes: u64,
    cursors: BTreeMap<String, u64>,
    stats: LogStats,
    buf: Vec<u8>,
    /// The tag lists compact rows refer to.
    tagsets: TagsetCache,
    /// Every row up to this seq that is still present was appended with an
    /// unsynced clock (no age): the age scan starts after it.
    age_skip: i64,
    /// Set by [`Store::open`] right after the database is opened.
    floor: Option<SeqFloor>,
    /// The newest gap record per reason (seq, content), while it may still
    /// be merged into; unknown after a restart (the next gap starts anew).
    last_gaps: [Option<(u64, Gap)>; 3],
    /// Drops not yet reported in the daemon's log.
    gap_warn: GapWarn,
    /// No try to rebuild the reserve before this (hysteresis).
    reserve_retry_at: Option<std::time::Instant>,
    reserve_retry: std::time::Duration,
    /// True when this open created the schema (a new or empty file).
    fresh: bool,
    /// The schema version this open migrated from.
    migrated_from: Option<i64>,
    /// Cursors acknowledged further than the database says: saved with the
    /// next transaction, by [`Store::flush_cursors`], or when the store is
    /// dropped (one cursor row rewritten per commit, not per ack).
    unsaved_cursors: std::collections::BTreeSet<String>,
    /// `<log>.lock`, locked exclusively for as long as the store is open:
    /// one process at a time owns a log (set by [`Store::open`]).
    _lock: Option<std::fs::File>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush_cursors() {
            tracing::warn!(error = %e, "Could not save the last acknowledgements; they are sent again after the restart.");
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq)
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn sql_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> LogError {
    move |e| classify(op, e)
}

/// Maps SQLite errors to the states the daemon handles differently.
fn classify(op: &'static str, e: rusqlite::Error) -> LogError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => LogError::DiskFull,
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => LogError::Corrupt {
            reason: format!("{op}: {e}"),
        },
        _ => LogError::Sqlite { op, source: e },
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the log at `path`. A database that cannot be opened,
    /// fails `PRAGMA quick_check`, or is not an Outpost log is moved aside
    /// (`<path>.corrupt-<UTC time>`) and a fresh one is started; the report
    /// says so, and an audit event in the fresh log records it.
    ///
    /// # Errors
    /// When even a fresh database cannot be created (permissions, no space).
    pub fn open(
        path: &Path,
        opts: StoreOptions,
        now: Timestamp,
    ) -> Result<(Store, OpenReport), LogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
                op: "creating the data directory",
                path: dir.to_path_buf(),
                // create_dir_all says only "File exists" of a file in the way.
                source: if dir.exists() && !dir.is_dir() {
                    std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        "it exists and is not a directory",
                    )
                } else {
                    source
                },
            })?;
        }
        // Before anything else: a log another process has open is neither
        // recovered nor written here.
        let lock = lock_log(path)?;
        let (floor, floor_problem) = SeqFloor::open(path).map_err(|source| LogError::Io {
            op: "opening the seq floor",
            path: SeqFloor::path_for(path),
            source,
        })?;
        if let Some(problem) = &floor_problem {
            tracing::error!(path = %floor.path().display(), %problem, "The log's seq floor is unreadable; seqs continue from the database alone.");
        }
        let mut report = OpenReport::default();
        let mut audits = Vec::new();
        let mut store = match Self::try_open(path, &opts) {
            Ok(store) => store,
            Err(LogError::Corrupt { reason }) => {
                let moved_to = move_aside(path, now)?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %moved_to.display(),
                    %reason,
                    "Event log is unreadable; moved it aside and started a fresh one."
                );
                report.recovered = Some(Recovery {
                    moved_to: moved_to.clone(),
                    reason: reason.clone(),
                });
                audits.push(format!(
                    "the event log was unreadable ({reason}); it was moved to {} and a fresh log was started",
                    moved_to.display()
                ));
                Self::try_open(path, &opts)?
            }
            Err(e) => return Err(e),
        };
        if store.fresh && floor.value() > store.next_seq {
            // Seqs below the floor may have been given out (and delivered
            // under their ids): the fresh log continues above them.
            store.next_seq = floor.value();
            save_next_seq(&store.conn, store.next_seq)?;
            store.refresh_stats();
            report.continued_at = Some(store.next_seq);
            if report.recovered.is_none() {
                tracing::error!(
                    path = %path.display(),
                    next_seq = store.next_seq,
                    "The event log is new or empty, but seqs had been given out before: continuing above them."
                );
                audits.push(format!(
                    "the event log was new or empty although seqs up to {} had been given out; the fresh log continues at seq {}",
                    store.next_seq - 1,
                    store.next_seq
                ));
            } else if let Some(last) = audits.last_mut() {
                last.push_str(&format!("; it continues at seq {}", store.next_seq));
            }
        }
        store.floor = Some(floor);
        store._lock = Some(lock);
        store.raise_floor(store.next_seq)?;
        if let Some(problem) = floor_problem {
            audits.push(format!("{problem}; it was rewritten from the database"));
        }
        if let Some(from) = store.migrated_from {
            report.migrated_from = Some(from);
            let steps: Vec<&str> = MIGRATIONS
                .iter()
                .filter(|m| m.to > from)
                .map(|m| m.what)
                .collect();
            let audit = Event::new(
                "",
                now,
                Body::Audit(outpost_core::Audit {
                    action: "log.migrated".into(),
                    actor: "gateway".into(),
                    detail: format!(
                        "the event log was migrated from schema version {from} to {SCHEMA_VERSION}: {}",
                        steps.join("; ")
                    ),
                }),
            );
            store.append(&[audit], now)?;
        }
        for detail in audits {
            let action = if report.recovered.is_some() {
                "log.recovered"
            } else {
                "log.recreated"
            };
            let audit = Event::new(
                "",
                now,
                Body::Audit(outpost_core::Audit {
                    action: action.into(),
                    actor: "gateway".into(),
                    detail,
                }),
            );
            store.append(&[audit], now)?;
        }
        store.ensure_reserve();
        Ok((store, report))
    }

    /// Raises the seq floor so that it stays above `next`, a block at a time.
    fn raise_floor(&mut self, next: u64) -> Result<(), LogError> {
        let Some(floor) = self.floor.as_mut() else {
            return Ok(());
        };
        if next < floor.value() {
            return Ok(());
        }
        floor
            .raise(next.saturating_add(SEQ_BLOCK))
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::StorageFull {
                    LogError::DiskFull
                } else {
                    LogError::Io {
                        op: "raising the seq floor",
                        path: floor.path().to_path_buf(),
                        source,
                    }
                }
            })
    }

    fn try_open(path: &Path, opts: &StoreOptions) -> Result<Store, LogError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| LogError::Corrupt {
            reason: format!("{what}: {e}"),
        };
        #[allow(clippy::disallowed_methods)] // the event log's own database
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
                LogError::Sqlite {
                    op: "opening the database",
                    source: e,
                }
            }
            _ => corrupt("opening", &e),
        })?;
        // Anything failing from here on means the file is not a usable log.
        let app_id: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| corrupt("reading the header", &e))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt("quick_check", &e))?;
        if check != "ok" {
            return Err(corrupt("quick_check", &check));
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| corrupt("reading the schema", &e))?;
        if app_id != APPLICATION_ID && !(app_id == 0 && tables == 0) {
            return Err(LogError::Corrupt {
                reason: format!("not an Outpost event log (application_id {app_id:#x})"),
            });
        }
        let sync = match opts.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        if tables == 0 {
            // Before the first page is written (and before WAL mode, which
            // writes the header): only a new log takes the page size.
            conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
                .map_err(sql_err("setting page_size"))?;
        }
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(sql_err("reading page_size"))?;
        let page_size = u64::try_from(page_size).unwrap_or(4096).max(512);
        // The WAL is kept below half the space reserve, so that on a full
        // disk, releasing the reserve always leaves room to checkpoint it.
        let wal_pages = if opts.reserve_bytes > 0 {
            (opts.reserve_bytes / 2 / page_size).max(16)
        } else {
            1000
        };
        // A 1 MiB page cache (SQLite's default is 2 MiB): the log appends at
        // its end and its readers read near the end.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -1024; \
             PRAGMA wal_autocheckpoint = {wal_pages}; PRAGMA journal_size_limit = {};",
            wal_pages * page_size
        ))
        .map_err(sql_err("setting pragmas"))?;
        if let Some(max) = opts.max_page_count {
            conn.query_row(&format!("PRAGMA max_page_count = {max}"), [], |_| Ok(()))
                .map_err(sql_err("setting max_page_count"))?;
        }
        if tables == 0 {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(sql_err("creating the schema"))?;
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql_err("reading user_version"))?;
        if version > SCHEMA_VERSION {
            return Err(LogError::NewerSchema {
                path: path.to_path_buf(),
                version,
                known: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            return Err(LogError::Corrupt {
                reason: format!("schema version {version}, which no release wrote"),
            });
        }
        let migrated_from = (version < SCHEMA_VERSION).then_some(version);
        for m in MIGRATIONS.iter().filter(|m| m.to > version) {
            let failed = |source| {
                let _rolled_back = conn.execute_batch("ROLLBACK").is_ok();
                LogError::Migration {
                    path: path.to_path_buf(),
                    to: m.to,
                    source,
                }
            };
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {}", m.sql))
                .map_err(failed)?;
            if m.to == 4 {
                // In the migration's transaction: a log is at schema 4 only
                // with its current state filled.
                match current::backfill(&conn) {
                    Ok(n) => {
                        tracing::info!(
                            events = n,
                            "Filled the current attributes and alarms from the log."
                        );
                    }
                    Err(e) => {
                        let _rolled_back = conn.execute_batch("ROLLBACK").is_ok();
                        return Err(e);
                    }
                }
            }
            conn.execute_batch(&format!("PRAGMA user_version = {}; COMMIT;", m.to))
                .map_err(failed)?;
            tracing::info!(path = %path.display(), to = m.to, what = m.what, "Migrated the event log.");
        }

        let mut rows = [0u64; 3];
        let mut bytes = 0u64;
        {
            let mut stmt = conn
                .prepare("SELECT priority, count(*), coalesce(sum(size), 0) FROM events GROUP BY priority")
                .map_err(|e| corrupt("counting rows", &e))?;
            let mut q = stmt.query([]).map_err(|e| corrupt("counting rows", &e))?;
            while let Some(r) = q.next().map_err(|e| corrupt("counting rows", &e))? {
                let p: i64 = r.get(0).map_err(|e| corrupt("counting rows", &e))?;
                let n: i64 = r.get(1).map_err(|e| corrupt("counting rows", &e))?;
                let b: i64 = r.get(2).map_err(|e| corrupt("counting rows", &e))?;
                let Some(slot) = Priority::from_i64(p).map(|p| p as usize) else {
                    return Err(LogError::Corrupt {
                        reason: format!("unknown priority {p} in the events table"),
                    });
                };
                rows[slot] = to_u64(n);
                bytes += to_u64(b);
            }
        }
        let max_seq: Option<i64> = conn
            .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
            .map_err(|e| corrupt("reading max(seq)", &e))?;
        let meta_next: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| corrupt("reading next_seq", &e))?;
        let next_seq = to_u64(meta_next.unwrap_or(1))
            .max(to_u64(max_seq.unwrap_or(0)) + 1)
            .max(1);
        let mut cursors = BTreeMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT name, acked FROM cursors")
                .map_err(|e| corrupt("reading cursors", &e))?;
            let it = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| corrupt("reading cursors", &e))?;
            for c in it {
                let (name, acked) = c.map_err(|e| corrupt("reading cursors", &e))?;
                cursors.insert(name, to_u64(acked));
            }
        }
        let tagsets = TagsetCache::load(&conn).map_err(|e| corrupt("reading the tag lists", &e))?;
        let mut store = Store {
            conn,
            tagsets,
            path: path.to_path_buf(),
            opts: opts.clone(),
            next_seq,
            rows,
            bytes,
            cursors,
            stats: LogStats::default(),
            buf: Vec::with_capacity(256),
            age_skip: 0,
            floor: None,
            fresh: tables == 0,
            migrated_from,
            unsaved_cursors: Default::default(),
            _lock: None,
            last_gaps: Default::default(),
            gap_warn: GapWarn::default(),
            reserve_retry_at: None,
            reserve_retry: RESERVE_RETRY,
        };
        store.refresh_stats();
        store.refresh_cursors();
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the least time between two tries to rebuild a released reserve
    /// ([`RESERVE_RETRY`] unless set; tests shorten it).
    pub fn set_reserve_retry(&mut self, every: std::time::Duration) {
        self.reserve_retry = every;
        let latest = std::time::Instant::now() + every;
        if self.reserve_retry_at.is_some_and(|t| t > latest) {
            self.reserve_retry_at = Some(latest);
        }
    }

    fn reserve_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.reserve", self.path.display()))
    }

    /// Creates the reserve file if it is missing (best effort: on a full
    /// disk it stays missing and is tried again later).
    ///
    /// Hysteresis: after a release, the reserve is rebuilt only once the
    /// file system has room for it twice over (plus a MiB), and not sooner
    /// than [`RESERVE_RETRY`] after the last release or failed try. Without
    /// it, a full disk with a caught-up log released and recreated the
    /// reserve many times a second: megabytes a second of writes to flash.
    fn ensure_reserve(&mut self) {
        let want = self.opts.reserve_bytes;
        let path = self.reserve_path();
        if want == 0 {
            self.stats.reserve_held = false;
            return;
        }
        if std::fs::metadata(&path)
            .map(|m| m.len() >= want)
            .unwrap_or(false)
        {
            self.stats.reserve_held = true;
            return;
        }
        let now = std::time::Instant::now();
        if self.reserve_retry_at.is_some_and(|t| now < t) {
            return;
        }
        if let Some(room) = self.room() {
            if room < want.saturating_mul(2) {
                self.reserve_retry_at = Some(now + self.reserve_retry);
                return;
            }
        }
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = want;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match written {
            Ok(()) => {
                self.stats.reserve_held = true;
                self.stats.reserve_created_total += 1;
                self.reserve_retry_at = None;
            }
            Err(e) => {
                let _gone = std::fs::remove_file(&path);
                self.stats.reserve_held = false;
                self.reserve_retry_at = Some(now + self.reserve_retry);
                tracing::warn!(path = %path.display(), error = %e, "Cannot create the log's space reserve.");
            }
        }
    }

    /// Room for the log: free bytes on its file system plus the pages SQLite
    /// freed inside the database (`None` where statvfs fails).
    /// Under a page cap (`max_page_count`) the room is the smaller of that
    /// and the cap's unused pages.
    fn room(&self) -> Option<u64> {
        let free = free_bytes(&self.path)?;
        let (inside, pages, page_size) = self
            .conn
            .query_row(
                "SELECT freelist_count, page_count, page_size FROM pragma_freelist_count, pragma_page_count, pragma_page_size",
                [],
                |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?), to_u64(r.get(2)?))),
            )
            .unwrap_or((0, 0, 4096));
        let room = free.saturating_add(inside.saturating_mul(page_size));
        Some(match self.opts.max_page_count {
            Some(max) => {
                let unused = u64::from(max).saturating_sub(pages).saturating_add(inside);
                room.min(unused.saturating_mul(page_size))
            }
            None => room,
        })
    }

    /// Frees the reserve and shrinks the WAL, so that a write that frees
    /// space can go through on a full disk.
    fn release_reserve(&mut self) {
        let path = self.reserve_path();
        if std::fs::remove_file(&path).is_ok() {
            tracing::warn!(path = %path.display(), "Disk full: released the log's space reserve.");
            self.stats.reserve_released_total += 1;
        }
        self.stats.reserve_held = false;
        self.reserve_retry_at = Some(std::time::Instant::now() + self.reserve_retry);
        self.checkpoint_truncate();
    }

    /// Copies the WAL into the database and truncates it (frees disk space).
    fn checkpoint_truncate(&mut self) {
        let r = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        if let Err(e) = r {
            tracing::debug!(error = %e, "WAL checkpoint failed.");
        }
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Updates the counts in the stats (cheap: called on every append).
    fn refresh_stats(&mut self) {
        self.stats.rows = self.rows.iter().sum();
        self.stats.bytes = self.bytes;
        self.stats.next_seq = self.next_seq;
    }

    /// Updates the cursor list in the stats (after cursors changed).
    fn refresh_cursors(&mut self) {
        self.stats.cursors = self.cursors.iter().map(|(k, v)| (k.clone(), *v)).collect();
    }

    /// Appends `events` in one transaction and applies the buffer limits.
    /// Returns the seqs given to `events` once the transaction committed; on
    /// error nothing was written and no seq was used.
    ///
    /// # Errors
    /// [`LogError::DiskFull`] when there is no room (retry later); others for
    /// a database that fails.
    pub fn append(&mut self, events: &[Event], now: Timestamp) -> Result<Appended, LogError> {
        let mut result = self.append_tx(events, now);
        if matches!(result, Err(LogError::DiskFull)) {
            // The WAL may hold most of the space: fold it in and try again.
            self.checkpoint_truncate();
            result = self.append_tx(events, now);
        }
        if matches!(result, Err(LogError::DiskFull)) && self.trim_for_space() > 0 {
            // Delivered history gave way to the new events.
            result = self.append_tx(events, now);
        }
        match result {
            Ok(a) => {
                if self.stats.disk_full || !self.stats.reserve_held {
                    self.ensure_reserve();
                    // No room for the reserve: delivered history makes it
                    // (once: after a trim there is room, and the reserve
                    // comes back when its hysteresis allows).
                    let short = self
                        .room()
                        .is_some_and(|r| r < self.opts.reserve_bytes.saturating_mul(2));
                    if !self.stats.reserve_held
                        && self.opts.reserve_bytes > 0
                        && short
                        && self.trim_for_space() > 0
                    {
                        self.ensure_reserve();
                    }
                }
                self.stats.disk_full = false;
                Ok(a)
            }
            Err(LogError::DiskFull) => {
                if !self.stats.disk_full {
                    self.stats.disk_full_total += 1;
                }
                self.stats.disk_full = true;
                Err(LogError::DiskFull)
            }
            Err(e) => Err(e),
        }
    }

    /// One try at appending: tag lists interned by it are kept only if it
    /// committed.
    fn append_tx(&mut self, events: &[Event], now: Timestamp) -> Result<Appended, LogError> {
        let result = self.append_inner(events, now);
        if result.is_ok() {
            self.tagsets.committed();
        } else {
            self.tagsets.rolled_back();
        }
        result
    }

    fn append_inner(&mut self, events: &[Event], now: Timestamp) -> Result<Appended, LogError> {
        if events.is_empty() {
            return Ok(Appended {
                first: Seq(self.next_seq),
                last: Seq(self.next_seq.saturating_sub(1)),
            });
        }
        // Up to three gap records may follow the events.
        self.raise_floor(self.next_seq.saturating_add(events.len() as u64 + 3))?;
        // Work on copies; `self` changes only after the commit.
        let mut next = self.next_seq;
        let mut rows = self.rows;
        let mut bytes = self.bytes;
        let at_ms = (now.clock == ClockQuality::Synced).then_some(now.unix_ms);
        let tx = FastTx::begin(&self.conn).map_err(sql_err("beginning a transaction"))?;
        let first = next;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO events (seq, at_ms, ts_ms, priority, device, kind, size, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql_err("preparing insert"))?;
            for ev in events {
                insert_event(
                    &mut ins,
                    &mut self.buf,
                    &mut self.tagsets,
                    next,
                    at_ms,
                    ev,
                    &mut rows,
                    &mut bytes,
                )?;
                if current::concerns(ev) {
                    current::record(&tx, next, ev)?;
                }
                next += 1;
            }
        }
        let last = next - 1;
        let mut evicted = Eviction::default();
        let mut new_gaps: [Option<(u64, Gap)>; 3] = Default::default();
        let mut merged = [false; 3];
        let mut age_skip = self.age_skip;
        evict(
            &tx,
            &self.opts.limits,
            now,
            self.delivered(),
            &mut rows,
            &mut bytes,
            &mut age_skip,
            &mut evicted,
        )?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO events (seq, at_ms, ts_ms, priority, device, kind, size, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql_err("preparing insert"))?;
            for mut gap in evicted.gaps() {
                // While the previous gap record of the same reason is still
                // unsent everywhere, this one takes its place (with both
                // counts), so a long outage leaves one gap record, not one
                // per commit.
                let slot = Reason::from_name(&gap.reason) as usize;
                if let Some((old_seq, old)) = self.last_gaps[slot].as_ref() {
                    let unsent = self.cursors.values().all(|c| *c < *old_seq);
                    if unsent {
                        if let Some((prio, size)) = take_row(&tx, to_i64(*old_seq))? {
                            let p = Priority::from_i64(prio).map_or(0, |p| p as usize);
                            rows[p] = rows[p].saturating_sub(1);
                            bytes = bytes.saturating_sub(to_u64(size));
                            gap.count += old.count;
                            gap.first_seq = gap.first_seq.min(old.first_seq);
                            gap.last_seq = gap.last_seq.max(old.last_seq);
                            gap.from_ms = gap.from_ms.min(old.from_ms);
                            gap.to_ms = gap.to_ms.max(old.to_ms);
                            merged[slot] = true;
                        }
                    }
                }
                new_gaps[slot] = Some((next, gap.clone()));
                let ev = Event::new("", now, Body::Gap(gap));
                insert_event(
                    &mut ins,
                    &mut self.buf,
                    &mut self.tagsets,
                    next,
                    at_ms,
                    &ev,
                    &mut rows,
                    &mut bytes,
                )?;
                next += 1;
            }
        }
        if evicted.any() {
            // Rows were deleted, possibly the newest: max(seq) + 1 may no
            // longer recover the next seq, so store it.
            save_next_seq(&tx, next)?;
        }
        self.save_unsaved_cursors(&tx)?;
        self.tagsets
            .write_pending(&tx)
            .map_err(sql_err("saving tag lists"))?;
        tx.commit().map_err(sql_err("committing"))?;
        self.unsaved_cursors.clear();

        self.next_seq = next;
        self.rows = rows;
        self.bytes = bytes;
        self.age_skip = age_skip;
        self.stats.appended_total += events.len() as u64;
        self.stats.commits_total += 1;
        self.stats.evicted_rows_total += evicted.by_reason[Reason::Rows as usize].count;
        self.stats.evicted_bytes_total += evicted.by_reason[Reason::Bytes as usize].count;
        self.stats.evicted_age_total += evicted.by_reason[Reason::Age as usize].count;
        self.stats.trimmed_total += evicted.trimmed;
        for (slot, gap) in new_gaps.into_iter().enumerate() {
            if let Some(gap) = gap {
                if !merged[slot] {
                    self.stats.gaps_total += 1;
                }
                self.last_gaps[slot] = Some(gap);
            }
        }
        if evicted.lost() {
            self.gap_warn.add(&evicted);
            self.gap_warn.maybe_log(std::time::Instant::now());
        }
        self.refresh_stats();
        Ok(Appended {
            first: Seq(first),
            last: Seq(last),
        })
    }

    /// Events with seq greater than `after`, oldest first, at most `max`.
    /// Rows that do not decode are counted and skipped.
    ///
    /// # Errors
    /// When the database fails.
    pub fn read(&mut self, after: Seq, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.read_bounded(after, max, usize::MAX)
    }

    /// As [`Store::read`], and it stops after the row that brings the stored
    /// bytes read to `max_bytes` (at least one row is always returned), so a
    /// reader's memory follows the data's size, not its row count.
    ///
    /// # Errors
    /// When the database fails.
    pub fn read_bounded(
        &mut self,
        after: Seq,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, body, device, ts_ms FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql_err("preparing read"))?;
        let mut q = stmt
            .query(params![to_i64(after.0), to_i64(max as u64)])
            .map_err(sql_err("reading"))?;
        let mut out = Vec::with_capacity(max.min(1024));
        let mut corrupt = 0;
        let mut bytes = 0usize;
        while bytes < max_bytes {
            let Some(r) = q.next().map_err(sql_err("reading"))? else {
                break;
            };
            let seq: i64 = r.get(0).map_err(sql_err("reading seq"))?;
            let body = r.get_ref(1).map_err(sql_err("reading body"))?;
            bytes = bytes.saturating_add(body.as_blob().map_or(0, <[u8]>::len));
            if !push_decoded(&mut out, to_u64(seq), body.as_blob(), &self.tagsets) {
                corrupt += 1;
                // The readers (uplinks) get a gap record in the row's place,
                // so upstream learns that an event is missing and which.
                let device = r
                    .get_ref(2)
                    .ok()
                    .and_then(|d| d.as_str().ok().map(str::to_string))
                    .unwrap_or_default();
                let ts: i64 = r.get(3).unwrap_or(0);
                let seq = to_u64(seq);
                let gap = Event::new(
                    device,
                    Timestamp::synced(ts),
                    Body::Gap(Gap {
                        count: 1,
                        first_seq: seq,
                        last_seq: seq,
                        from_ms: ts,
                        to_ms: ts,
                        reason: "corrupt".into(),
                    }),
                );
                out.push(StoredEvent {
                    seq: Seq(seq),
                    event: gap,
                });
            }
        }
        drop(q);
        drop(stmt);
        self.stats.corrupt_rows_total += corrupt;
        Ok(out)
    }

    /// Events matching `filter` among the rows with seq in
    /// `(after, after + window]`, oldest first, stopping early once
    /// `max_bytes` of matching events are read. Rows of other devices or
    /// times are skipped on their columns, without decoding. `next` is
    /// where the following call starts; `done` once the newest row is
    /// passed.
    ///
    /// # Errors
    /// When the database fails.
    pub fn scan(
        &mut self,
        filter: &ScanFilter,
        after: Seq,
        window: u64,
        max_bytes: usize,
    ) -> Result<Scanned, LogError> {
        let head = self.next_seq.saturating_sub(1);
        let upto = after.0.saturating_add(window).min(head);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, device, ts_ms, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
            )
            .map_err(sql_err("preparing scan"))?;
        let mut q = stmt
            .query(params![to_i64(after.0), to_i64(upto)])
            .map_err(sql_err("scanning"))?;
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut next = upto;
        let mut corrupt = 0;
        while let Some(r) = q.next().map_err(sql_err("scanning"))? {
            let seq = to_u64(r.get::<_, i64>(0).map_err(sql_err("reading seq"))?);
            if bytes >= max_bytes {
                next = seq.saturating_sub(1);
                break;
            }
            let device = r.get_ref(1).map_err(sql_err("reading device"))?;
            let ts: i64 = r.get(2).map_err(sql_err("reading ts"))?;
            if ts < filter.from_ms || ts >= filter.to_ms {
                continue;
            }
            if let Some(d) = &filter.device {
                if device.as_str().map_or(true, |x| x != d) {
                    continue;
                }
            }
            let body = r.get_ref(3).map_err(sql_err("reading body"))?;
            bytes = bytes.saturating_add(body.as_blob().map_or(0, <[u8]>::len));
            if !push_decoded(&mut events, seq, body.as_blob(), &self.tagsets) {
                corrupt += 1;
            }
        }
        drop(q);
        drop(stmt);
        self.stats.corrupt_rows_total += corrupt;
        Ok(Scanned {
            events,
            next: Seq(next),
            done: next >= head,
        })
    }

    /// The last value of each of `tags` that `device` reported, looking
    /// back from the newest event over at most `max_rows` of its rows (for
    /// counters that continue across restarts).
    ///
    /// # Errors
    /// When the database fails.
    pub fn last_values(
        &mut self,
        device: &str,
        tags: &[String],
        max_rows: usize,
    ) -> Result<BTreeMap<String, outpost_core::Value>, LogError> {
        let mut found = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, body FROM events WHERE device = ?1 ORDER BY seq DESC")
            .map_err(sql_err("preparing a look back"))?;
        let mut q = stmt
            .query(params![device])
            .map_err(sql_err("looking back"))?;
        let mut rows = 0;
        while found.len() < tags.len() && rows < max_rows {
            let Some(r) = q.next().map_err(sql_err("looking back"))? else {
                break;
            };
            rows += 1;
            let Ok(blob) = r
                .get_ref(1)
                .map_err(|e| e.to_string())
                .and_then(|b| b.as_blob().map_err(|e| e.to_string()))
            else {
                continue;
            };
            let Ok(event) = codec::decode_with(blob, &self.tagsets) else {
                continue;
            };
            if let outpost_core::Body::Telemetry(points) | outpost_core::Body::Attributes(points) =
                event.body
            {
                for p in points {
                    if tags.contains(&p.tag) && !found.contains_key(&p.tag) {
                        found.insert(p.tag, p.value);
                    }
                }
            }
        }
        Ok(found)
    }

    /// The seq after which events are stamped at or after `ts_ms`, found by
    /// bisecting on seq: exact when timestamps grow with seq (one clock),
    /// an approximation after clock jumps, which a scan's time filter then
    /// corrects. Lets a time-range scan skip the older part of the log.
    ///
    /// # Errors
    /// When the database fails.
    /// The current attributes and open (or unacknowledged) alarms, one
    /// event each, oldest first; and how many rows did not decode.
    ///
    /// # Errors
    /// When the database fails.
    pub fn current(&mut self) -> Result<(Vec<Event>, u64), LogError> {
        current::load(&self.conn)
    }

    pub fn seq_before(&mut self, ts_ms: i64) -> Result<Seq, LogError> {
        seq_before_in(&self.conn, ts_ms, 0, self.next_seq).map(Seq)
    }

    /// Where the cursor `name` stands (every seq up to it acknowledged), or
    /// `None` if there is no such cursor.
    pub fn cursor(&self, name: &str) -> Option<Seq> {
        self.cursors.get(name).map(|v| Seq(*v))
    }

    /// Every event up to this seq has been delivered by every uplink (0
    /// with no uplink: then nothing counts as delivered).
    pub fn delivered(&self) -> u64 {
        self.cursors.values().min().copied().unwrap_or(0)
    }

    /// Makes the set of cursors exactly `names`. A new cursor starts where
    /// the slowest of the previous ones stood (at the start with none), so it
    /// receives every event not yet delivered everywhere, and not the
    /// history the others already delivered. Removing a cursor deletes
    /// nothing.
    ///
    /// # Errors
    /// When the database fails.
    pub fn set_cursors(&mut self, names: &[&str]) -> Result<(), LogError> {
        match self.set_cursors_inner(names) {
            Err(LogError::DiskFull) => {
                self.release_reserve();
                self.set_cursors_inner(names)
            }
            r => r,
        }
    }

    fn set_cursors_inner(&mut self, names: &[&str]) -> Result<(), LogError> {
        let start = self.delivered();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err("beginning a transaction"))?;
        let mut cursors = self.cursors.clone();
        cursors.retain(|k, _| names.contains(&k.as_str()));
        for n in names {
            cursors.entry((*n).to_string()).or_insert(start);
        }
        tx.execute("DELETE FROM cursors", [])
            .map_err(sql_err("saving cursors"))?;
        for (k, v) in &cursors {
            tx.execute(
                "INSERT INTO cursors (name, acked) VALUES (?1, ?2)",
                params![k, to_i64(*v)],
            )
            .map_err(sql_err("saving cursors"))?;
        }
        tx.commit().map_err(sql_err("committing"))?;
        self.cursors = cursors;
        self.unsaved_cursors.clear();
        self.refresh_cursors();
        Ok(())
    }

    /// On a full disk: deletes delivered events, oldest first, until there
    /// is room for the reserve twice over and 256 KiB more (room as
    /// [`Store::ensure_reserve`] counts it, so the reserve comes back) or
    /// nothing delivered is left, in transactions of 256 rows with the WAL
    /// truncated after each, so the space needed is one chunk's pages. The history gives way
    /// to new events; what is not yet delivered is never touched here.
    /// Returns the rows deleted.
    fn trim_for_space(&mut self) -> u64 {
        const CHUNK: i64 = 256;
        let want = self
            .opts
            .reserve_bytes
            .saturating_mul(2)
            .saturating_add(256 * 1024);
        let mut freed = 0u64;
        let mut trimmed = 0u64;
        let mut released = false;
        // Where room cannot be measured: rows worth that much, by their sizes.
        let enough = |s: &Self, freed: u64| s.room().map_or(freed >= want, |r| r >= want);
        while !enough(self, freed) && self.delivered() > 0 && self.stats.rows > 0 {
            let step = self.trim_chunk(CHUNK);
            let step = match step {
                Err(LogError::DiskFull) if !released => {
                    released = true;
                    self.release_reserve();
                    self.trim_chunk(CHUNK)
                }
                other => other,
            };
            self.checkpoint_truncate();
            match step {
                Ok((0, _)) => break,
                Ok((n, b)) => {
                    trimmed += n;
                    freed += b;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Trimming delivered history on a full disk stopped.");
                    break;
                }
            }
        }
        if trimmed > 0 {
            tracing::warn!(
                rows = trimmed,
                bytes = freed,
                "Disk full: deleted the oldest delivered events to make room for new ones."
            );
        }
        trimmed
    }

    /// Deletes up to `chunk` of the oldest delivered rows in one
    /// transaction: (rows, bytes) deleted.
    pub(super) fn trim_chunk(&mut self, chunk: i64) -> Result<(u64, u64), LogError> {
        let delivered = to_i64(self.delivered());
        let tx = FastTx::begin(&self.conn).map_err(sql_err("beginning a transaction"))?;
        let mut rows = self.rows;
        let mut bytes = self.bytes;
        let mut n = 0u64;
        let mut freed = 0u64;
        {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ?1 ORDER BY seq LIMIT ?2) RETURNING priority, size",
                )
                .map_err(sql_err("trimming history"))?;
            let it = stmt
                .query_map([delivered, chunk], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sql_err("trimming history"))?;
            for row in it {
                let (p, size) = row.map_err(sql_err("trimming history"))?;
                let p = Priority::from_i64(p).map_or(0, |p| p as usize);
                rows[p] = rows[p].saturating_sub(1);
                bytes = bytes.saturating_sub(to_u64(size));
                freed += to_u64(size);
                n += 1;
            }
        }
        if n > 0 {
            save_next_seq(&tx, self.next_seq)?;
        }
        // The rows went because of where the cursors stand: save that too.
        self.save_unsaved_cursors(&tx)?;
        tx.commit().map_err(sql_err("committing"))?;
        self.unsaved_cursors.clear();
        self.rows = rows;
        self.bytes = bytes;
        self.stats.trimmed_total += n;
        self.refresh_stats();
        Ok((n, freed))
    }

    /// Records that the consumer `name` has had every event up to `upto`
    /// acknowledged by its peer. Nothing is deleted: delivered events stay
    /// as history until a limit or a full disk needs their room.
    /// Acknowledging less than already acknowledged changes nothing.
    ///
    /// # Errors
    /// [`LogError::UnknownCursor`], [`LogError::AckBeyondEnd`], or a database
    /// failure.
    pub fn ack(&mut self, name: &str, upto: Seq) -> Result<(), LogError> {
        let Some(&current) = self.cursors.get(name) else {
            return Err(LogError::UnknownCursor(name.to_string()));
        };
        if upto.0 >= self.next_seq {
            return Err(LogError::AckBeyondEnd {
                cursor: name.to_string(),
                upto: upto.0,
                last: self.next_seq - 1,
            });
        }
        if upto.0 <= current {
            return Ok(());
        }
        self.cursors.insert(name.to_string(), upto.0);
        self.unsaved_cursors.insert(name.to_string());
        self.refresh_cursors();
        Ok(())
    }

    /// True while an acknowledgement is not yet in the database.
    pub fn has_unsaved_cursors(&self) -> bool {
        !self.unsaved_cursors.is_empty()
    }

    /// Writes acknowledgements not yet saved, in one transaction (the log's
    /// writer calls it after a second without a commit, and on close).
    ///
    /// # Errors
    /// When the database fails (the acknowledgements stay pending).
    pub fn flush_cursors(&mut self) -> Result<(), LogError> {
        if self.unsaved_cursors.is_empty() {
            return Ok(());
        }
        let mut r = self.flush_cursors_once();
        if matches!(r, Err(LogError::DiskFull)) {
            self.release_reserve();
            r = self.flush_cursors_once();
        }
        r
    }

    fn flush_cursors_once(&mut self) -> Result<(), LogError> {
        let tx = FastTx::begin(&self.conn).map_err(sql_err("beginning a transaction"))?;
        self.save_unsaved_cursors(&tx)?;
        tx.commit().map_err(sql_err("committing"))?;
        self.unsaved_cursors.clear();
        Ok(())
    }

    fn save_unsaved_cursors(&self, tx: &Connection) -> Result<(), LogError> {
        for name in &self.unsaved_cursors {
            let Some(acked) = self.cursors.get(name) else {
                continue;
            };
            tx.prepare_cached("UPDATE cursors SET acked = ?2 WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name, to_i64(*acked)]))
                .map_err(sql_err("saving the cursor"))?;
        }
        Ok(())
    }

    /// Every event in the log, oldest first (for tests and export).
    ///
    /// # Errors
    /// When the database fails.
    pub fn read_all(&mut self) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::new();
        let mut after = Seq(0);
        loop {
            let batch = self.read(after, 4096)?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            out.extend(batch);
        }
        Ok(out)
    }

    /// Raises or lowers the page cap (`PRAGMA max_page_count`).
    ///
    /// # Errors
    /// When the database fails.
    pub fn set_max_page_count(&mut self, pages: u32) -> Result<(), LogError> {
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(sql_err("setting max_page_count"))?;
        self.opts.max_page_count = Some(pages);
        Ok(())
    }
}

/// The seq after which events are stamped at or after `ts_ms`, bisecting
/// on seq over the rows in `[lo, hi)` (see [`Store::seq_before`]; the
/// export's reader uses it too).
pub(super) fn seq_before_in(
    conn: &Connection,
    ts_ms: i64,
    mut lo: u64,
    mut hi: u64,
) -> Result<u64, LogError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, ts_ms FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")
        .map_err(sql_err("preparing seek"))?;
    // The first row stamped at or after ts_ms lies in [lo, hi].
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let row: Option<(i64, i64)> = stmt
            .query_row(params![to_i64(mid)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql_err("seeking"))?;
        match row {
            Some((seq, ts)) if ts < ts_ms => lo = to_u64(seq) + 1,
            // Rows between mid and seq do not exist: the first one stamped
            // late enough is at or before mid.
            _ => hi = mid,
        }
    }
    Ok(lo.saturating_sub(1))
}

/// Takes the exclusive lock on `<log>.lock` (released when the file is
/// closed, also when the process dies).
fn lock_log(path: &Path) -> Result<std::fs::File, LogError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| LogError::Io {
            op: "opening the lock file",
            path: lock_path.clone(),
            source,
        })?;
    // A lock held for a moment (a child forked by this process between its
    // fork and exec; the previous daemon exiting as systemd starts the next)
    // is waited for, briefly; a lock still held is another owner.
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => break lock_result(other, file, lock_path),
        }
    }
}

fn lock_result(
    r: Result<(), std::fs::TryLockError>,
    file: std::fs::File,
    lock_path: PathBuf,
) -> Result<std::fs::File, LogError> {
    match r {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked { path: lock_path }),
        Err(std::fs::TryLockError::Error(source)) => Err(LogError::Io {
            op: "locking",
            path: lock_path,
            source,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
/// A write transaction on cached `BEGIN IMMEDIATE` / `COMMIT` statements
/// (rusqlite's `Transaction` parses them anew each time, which showed at
/// ~5 % of the daemon's CPU at 500 commits/s). Rolls back if dropped
/// before [`FastTx::commit`].
struct FastTx<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> FastTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self { conn, done: false })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.done = true;
        Ok(())
    }
}

impl std::ops::Deref for FastTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for FastTx<'_> {
    fn drop(&mut self) {
        if !self.done && !self.conn.is_autocommit() {
            // Nothing to report to: the caller already has the error that
            // made it give up, and a failed rollback leaves SQLite to roll
            // back itself.
            let _rolled_back = self.conn.execute_batch("ROLLBACK").is_ok();
        }
    }
}

#[allow(clippy::too_many_arguments)] // one row's every column and its accounting
fn insert_event(
    ins: &mut rusqlite::CachedStatement<'_>,
    buf: &mut Vec<u8>,
    sets: &mut TagsetCache,
    seq: u64,
    at_ms: Option<i64>,
    ev: &Event,
    rows: &mut [u64; 3],
    bytes: &mut u64,
) -> Result<(), LogError> {
    buf.clear();
    codec::encode_compact_into(ev, buf, sets).map_err(|e| LogError::Encode(e.to_string()))?;
    let size = buf.len() as u64 + ROW_OVERHEAD;
    let prio = ev.priority();
    ins.execute(params![
        to_i64(seq),
        at_ms,
        ev.ts.unix_ms,
        prio.as_i64(),
        ev.device,
        kind_code(ev),
        to_i64(size),
        &buf[..],
    ])
    .map_err(sql_err("inserting an event"))?;
    rows[prio as usize] += 1;
    *bytes += size;
    Ok(())
}

fn kind_code(ev: &Event) -> i64 {
    super::export::kind_code(ev.kind())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Age = 0,
    Rows = 1,
    Bytes = 2,
}

impl Reason {
    fn from_name(name: &str) -> Reason {
        match name {
            "age" => Reason::Age,
            "rows" => Reason::Rows,
            _ => Reason::Bytes,
        }
    }
}

/// Drops are logged at most once a minute, with the counts since the last
/// line: under a long outage every commit evicts, and a line per commit
/// would flood the journal.
#[derive(Debug, Default)]
struct GapWarn {
    counts: [u64; 3],
    last: Option<std::time::Instant>,
}

impl GapWarn {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    fn add(&mut self, e: &Eviction) {
        for (c, d) in self.counts.iter_mut().zip(&e.by_reason) {
            *c += d.count;
        }
    }

    fn maybe_log(&mut self, now: std::time::Instant) {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return;
        }
        self.last = Some(now);
        let [age, rows, bytes] = std::mem::take(&mut self.counts);
        tracing::warn!(
            rows,
            bytes,
            age,
            "Buffer limit reached; dropped the oldest lowest-priority events and recorded a gap (counts since the last such line; at most one a minute)."
        );
    }
}

#[derive(Debug, Default, Clone)]
struct Dropped {
    count: u64,
    first_seq: u64,
    last_seq: u64,
    from_ms: i64,
    to_ms: i64,
}

impl Dropped {
    fn add(&mut self, seq: u64, ts_ms: i64) {
        if self.count == 0 {
            *self = Dropped {
                count: 0,
                first_seq: seq,
                last_seq: seq,
                from_ms: ts_ms,
                to_ms: ts_ms,
            };
        }
        self.count += 1;
        self.first_seq = self.first_seq.min(seq);
        self.last_seq = self.last_seq.max(seq);
        self.from_ms = self.from_ms.min(ts_ms);
        self.to_ms = self.to_ms.max(ts_ms);
    }
}

#[derive(Debug, Default)]
struct Eviction {
    /// Undelivered events dropped, by reason (each recorded by a gap).
    by_reason: [Dropped; 3],
    /// Delivered events deleted (history given up; no gap record).
    trimmed: u64,
}

impl Eviction {
    /// Any row deleted.
    fn any(&self) -> bool {
        self.trimmed > 0 || self.lost()
    }

    /// Any undelivered event dropped.
    fn lost(&self) -> bool {
        self.by_reason.iter().any(|d| d.count > 0)
    }

    fn gaps(&self) -> impl Iterator<Item = Gap> + '_ {
        [Reason::Age, Reason::Rows, Reason::Bytes]
            .into_iter()
            .filter(|r| self.by_reason[*r as usize].count > 0)
            .map(|r| {
                let d = &self.by_reason[r as usize];
                Gap {
                    count: d.count,
                    first_seq: d.first_seq,
                    last_seq: d.last_seq,
                    from_ms: d.from_ms,
                    to_ms: d.to_ms,
                    reason: match r {
                        Reason::Age => "age",
                        Reason::Rows => "rows",
                        Reason::Bytes => "bytes",
                    }
                    .to_string(),
                }
            })
    }
}

/// Applies the limits inside the append transaction. `delivered`: every
/// seq up to it has been delivered by every uplink.
///
/// 1. Age: expired events (any priority, by append time; events appended
///    with an unsynced clock have no age and stay) go once the oldest is a
///    64th of `max_age` past it, and then every expired one, so an expiring
///    history is deleted in chunks, not a few rows per commit.
/// 2. Rows and bytes: delivered events first, oldest first, down to a 64th
///    below the limits (again in chunks); then, only if that is not enough,
///    undelivered ones, lowest priority first, oldest first, until one row
///    and a gap record's worth of bytes are free.
///
/// Undelivered events dropped are counted by reason (each reason gets a gap
/// record); delivered ones are counted as trimmed history.
#[allow(clippy::too_many_arguments)]
fn evict(
    tx: &Connection,
    limits: &Limits,
    now: Timestamp,
    delivered: u64,
    rows: &mut [u64; 3],
    bytes: &mut u64,
    age_skip: &mut i64,
    out: &mut Eviction,
) -> Result<(), LogError> {
    let delivered = to_i64(delivered);
    if now.clock == ClockQuality::Synced && limits.max_age_ms > 0 {
        let cutoff = now.unix_ms.saturating_sub(to_i64(limits.max_age_ms));
        let trigger = cutoff.saturating_sub(to_i64(limits.max_age_ms / 64));
        let mut expiring = false;
        // Rows before the first unexpired one are all dropped or ageless, so
        // the ageless ones need not be looked at again.
        let mut after = *age_skip;
        'scan: loop {
            let chunk: Vec<(i64, Option<i64>, i64, i64, i64)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, at_ms, ts_ms, priority, size FROM events WHERE seq > ?1 ORDER BY seq LIMIT 256",
                    )
                    .map_err(sql_err("scanning for expired events"))?;
                let it = stmt
                    .query_map([after], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .map_err(sql_err("scanning for expired events"))?;
                it.collect::<Result<_, _>>()
                    .map_err(sql_err("scanning for expired events"))?
            };
            if chunk.is_empty() {
                break;
            }
            for (seq, at, ts, prio, size) in chunk {
                after = seq;
                match at {
                    None => {
                        *age_skip = seq;
                        continue;
                    }
                    Some(at) if at < cutoff && (expiring || at < trigger) => {
                        expiring = true;
                        delete_row(tx, seq)?;
                        let p = Priority::from_i64(prio).map_or(0, |p| p as usize);
                        rows[p] = rows[p].saturating_sub(1);
                        *bytes = bytes.saturating_sub(to_u64(size));
                        if seq <= delivered {
                            out.trimmed += 1;
                        } else {
                            out.by_reason[Reason::Age as usize].add(to_u64(seq), ts);
                        }
                    }
                    Some(_) => break 'scan,
                }
            }
        }
    }

    let total = |rows: &[u64; 3]| rows.iter().sum::<u64>();
    if total(rows) <= limits.max_rows && *bytes <= limits.max_bytes {
        return Ok(());
    }
    let row_target = limits.max_rows.saturating_sub(1);
    let byte_target = limits.max_bytes.saturating_sub(GAP_RESERVE_BYTES);
    if delivered > 0 {
        let row_trim = row_target.saturating_sub(limits.max_rows / 64);
        let byte_trim = byte_target.saturating_sub(limits.max_bytes / 64);
        let mut after = 0i64;
        'trim: while total(rows) > row_trim || *bytes > byte_trim {
            let chunk: Vec<(i64, i64, i64)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, priority, size FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT 256",
                    )
                    .map_err(sql_err("choosing history to trim"))?;
                let it = stmt
                    .query_map(params![after, delivered], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(sql_err("choosing history to trim"))?;
                it.collect::<Result<_, _>>()
                    .map_err(sql_err("choosing history to trim"))?
            };
            if chunk.is_empty() {
                break;
            }
            for (seq, prio, size) in chunk {
                if !(total(rows) > row_trim || *bytes > byte_trim) {
                    break 'trim;
                }
                after = seq;
                delete_row(tx, seq)?;
                let p = Priority::from_i64(prio).map_or(0, |p| p as usize);
                rows[p] = rows[p].saturating_sub(1);
                *bytes = bytes.saturating_sub(to_u64(size));
                out.trimmed += 1;
            }
        }
    }
    for prio in Priority::ALL {
        let p = prio as usize;
        let mut after = delivered;
        while rows[p] > 0 && (total(rows) > row_target || *bytes > byte_target) {
            let chunk: Vec<(i64, i64, i64)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, ts_ms, size FROM events WHERE priority = ?1 AND seq > ?2 ORDER BY seq LIMIT 256",
                    )
                    .map_err(sql_err("choosing events to drop"))?;
                let it = stmt
                    .query_map(params![prio.as_i64(), after], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(sql_err("choosing events to drop"))?;
                it.collect::<Result<_, _>>()
                    .map_err(sql_err("choosing events to drop"))?
            };
            if chunk.is_empty() {
                break;
            }
            for (seq, ts, size) in chunk {
                if !(total(rows) > row_target || *bytes > byte_target) {
                    break;
                }
                after = seq;
                let reason = if total(rows) > row_target {
                    Reason::Rows
                } else {
                    Reason::Bytes
                };
                delete_row(tx, seq)?;
                rows[p] = rows[p].saturating_sub(1);
                *bytes = bytes.saturating_sub(to_u64(size));
                out.by_reason[reason as usize].add(to_u64(seq), ts);
            }
        }
    }
    Ok(())
}

/// Stores the next seq. Needed only in transactions that delete rows: as
/// long as the newest row exists, `max(seq) + 1` recovers it at open.
fn save_next_seq(tx: &Connection, next: u64) -> Result<(), LogError> {
    tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?1)")
        .and_then(|mut s| s.execute([to_i64(next)]))
        .map_err(sql_err("saving next_seq"))?;
    Ok(())
}

/// Deletes one row, returning its priority and size if it was there.
fn take_row(tx: &Connection, seq: i64) -> Result<Option<(i64, i64)>, LogError> {
    tx.prepare_cached("DELETE FROM events WHERE seq = ?1 RETURNING priority, size")
        .and_then(|mut s| {
            s.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql_err("merging a gap record"))
}

fn delete_row(tx: &Connection, seq: i64) -> Result<(), LogError> {
    tx.prepare_cached("DELETE FROM events WHERE seq = ?1")
        .and_then(|mut s| s.execute([seq]))
        .map_err(sql_err("dropping an event"))?;
    Ok(())
}

/// Renames the database (and its WAL and shared-memory files) to
/// `<name>.corrupt-<UTC time>`; never deletes anything.
fn move_aside(path: &Path, now: Timestamp) -> Result<PathBuf, LogError> {
    let stamp = utc_stamp(now.unix_ms);
    let mut target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.corrupt-{stamp}-{n}", path.display()));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|source| LogError::Io {
        op: "moving the unreadable log aside",
        path: path.to_path_buf(),
        source,
    })?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            let to = PathBuf::from(format!("{}{suffix}", target.display()));
            std::fs::rename(&side, &to).map_err(|source| LogError::Io {
                op: "moving the unreadable log aside",
                path: side.clone(),
                source,
            })?;
        }
    }
    Ok(target)
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in ms (proleptic Gregorian, UTC).
pub(crate) fn utc_stamp(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod stamp_tests {
    #[test]
    fn utc_stamps() {
        assert_eq!(super::utc_stamp(0), "19700101T000000Z");
        assert_eq!(super::utc_stamp(1_764_000_000_000), "20251124T160000Z");
        assert_eq!(super::utc_stamp(951_782_400_000), "20000229T000000Z");
    }
}
