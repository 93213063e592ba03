//! Reading the log from outside the daemon, and the export formats.
//!
//! [`Reader`] opens the database read-only, beside a running daemon (SQLite
//! WAL readers never block the writer) or with none: `outpostd export` and
//! `outpostd log stats` use it, and the web page's export uses the same
//! formats ([`write_events`]).
//!
//! Invariants:
//! - The reader never writes: the database is opened `SQLITE_OPEN_READ_ONLY`
//!   and takes neither the log's lock nor part in its recovery. A file that
//!   is not an Outpost log, or of a newer schema, is refused.
//! - Memory is constant whatever the range: rows are read in slices of
//!   [`SLICE_ROWS`] seqs, each in its own short read transaction, so a long
//!   export neither holds the whole result nor keeps the daemon's WAL from
//!   being checkpointed.
//! - CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`,
//!   `@` at the start of a text) are prefixed with `'`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::tagsets::TagsetCache;
use outpost_core::{codec, utc, Body, EventKind, Quality, Seq, Value};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::store::{seq_before_in, to_u64};
use super::{LogError, StoredEvent, SCHEMA_VERSION};

/// Seqs one read transaction covers.
pub const SLICE_ROWS: i64 = 10_000;

/// The CSV header [`write_events`] rows follow.
/// `clock` is `synced`, `unsynced` or `corrected` (taken before the clock
/// was synchronised, re-stamped with the true time after).
pub const CSV_HEADER: &str = "seq,time,ts_ms,device,kind,tag,value,quality,clock\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// `csv`, or `jsonl` (also `ndjson`, `json`).
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "" | "csv" => Ok(Format::Csv),
            "jsonl" | "ndjson" | "json" => Ok(Format::JsonLines),
            other => Err(format!("format {other:?}: use csv or jsonl")),
        }
    }
}

/// Which events an export takes. Empty lists mean all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub devices: Vec<String>,
    pub kinds: Vec<EventKind>,
    /// Telemetry and attribute points of these tags only (events of other
    /// kinds are not affected; a telemetry event left with no point is
    /// skipped).
    pub tags: Vec<String>,
    /// Event timestamps in `[from_ms, to_ms)`.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl Selection {
    fn takes_row(&self, device: &str, kind: i64, ts: i64) -> bool {
        self.from_ms.is_none_or(|f| ts >= f)
            && self.to_ms.is_none_or(|t| ts < t)
            && (self.devices.is_empty() || self.devices.iter().any(|d| d == device))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| kind_code(*k) == kind))
    }

    /// The event with only the selected tags, or `None` if none is left.
    fn narrow(&self, mut e: StoredEvent) -> Option<StoredEvent> {
        if self.tags.is_empty() {
            return Some(e);
        }
        if let Body::Telemetry(points) | Body::Attributes(points) = &mut e.event.body {
            points.retain(|p| self.tags.contains(&p.tag));
            if points.is_empty() {
                return None;
            }
        }
        Some(e)
    }
}

/// The code the `kind` column stores for `k`.
pub fn kind_code(k: EventKind) -> i64 {
    EventKind::ALL
        .iter()
        .position(|x| *x == k)
        .map_or(-1, |p| p as i64)
}

/// What `outpostd log stats` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub schema_version: i64,
    pub events: u64,
    /// Bytes counted against `max_bytes`.
    pub bytes: u64,
    /// Size of the database file (and its WAL).
    pub file_bytes: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub oldest_ts_ms: Option<i64>,
    pub newest_ts_ms: Option<i64>,
    /// (device, events); the gateway's own events under `""`.
    pub per_device: Vec<(String, u64)>,
    /// (kind, events)
    pub per_kind: Vec<(String, u64)>,
    /// (uplink, acknowledged up to, events not yet acknowledged)
    pub cursors: Vec<(String, u64, u64)>,
    /// Set on a log migrated from version 1: history before this seq was
    /// deleted by that version.
    pub history_from: Option<u64>,
}

/// A read-only view of a log file.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
    /// The log's tag lists, read again when a row refers to one added
    /// since (the daemon appending while the export runs).
    tagsets: std::cell::RefCell<TagsetCache>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

fn read_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> LogError {
    move |source| LogError::Sqlite { op, source }
}

impl Reader {
    fn decode(&self, bytes: &[u8]) -> Result<outpost_core::Event, codec::CodecError> {
        let first = codec::decode_with(bytes, &*self.tagsets.borrow());
        match first {
            Err(codec::CodecError::UnknownTagset(_)) => {
                if let Ok(fresh) = TagsetCache::load(&self.conn) {
                    *self.tagsets.borrow_mut() = fresh;
                }
                codec::decode_with(bytes, &*self.tagsets.borrow())
            }
            other => other,
        }
    }

    /// Opens `path` read-only.
    ///
    /// # Errors
    /// A missing file, one that is not an Outpost log, or one of a newer
    /// schema.
    pub fn open(path: &Path) -> Result<Reader, LogError> {
        if !path.is_file() {
            return Err(LogError::Io {
                op: "opening",
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no event log here (is --data-dir right?)",
                ),
            });
        }
        #[allow(clippy::disallowed_methods)] // the event log's own database, read-only
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(read_err("opening the database read-only"))?;
        let app_id: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| LogError::Corrupt {
                reason: format!("reading the header: {e}"),
            })?;
        if app_id != super::store::APPLICATION_ID {
            return Err(LogError::Corrupt {
                reason: format!("not an Outpost event log (application_id {app_id:#x})"),
            });
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(read_err("reading user_version"))?;
        if version > SCHEMA_VERSION {
            return Err(LogError::NewerSchema {
                path: path.to_path_buf(),
                version,
                known: SCHEMA_VERSION,
            });
        }
        // Every version so far has the same events table: older logs are
        // read as they are (the daemon migrates them when it opens them).
        conn.execute_batch("PRAGMA cache_size = -1024;")
            .map_err(read_err("setting pragmas"))?;
        let tagsets = TagsetCache::load(&conn).map_err(read_err("reading the tag lists"))?;
        Ok(Reader {
            conn,
            path: path.to_path_buf(),
            tagsets: std::cell::RefCell::new(tagsets),
        })
    }

    /// Rows matching `sel` (by seq, oldest first) are handed to `each`; it
    /// may stop the export by returning an error. `progress` is called after
    /// each slice with the last seq read and the last seq of the log.
    /// Returns the events handed over; rows that do not decode are skipped
    /// and counted in the second figure.
    ///
    /// # Errors
    /// When the database fails, or `each` does.
    pub fn for_each(
        &self,
        sel: &Selection,
        mut each: impl FnMut(&StoredEvent) -> std::io::Result<()>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(u64, u64), LogError> {
        let (first, last) = self.seq_range()?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok((0, 0));
        };
        let mut after = match sel.from_ms {
            // Exact with one clock; after clock jumps an approximation, which
            // the row filter corrects.
            Some(f) => seq_before_in(&self.conn, f, first, last + 1)?,
            None => first.saturating_sub(1),
        };
        let (mut n, mut bad) = (0u64, 0u64);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, device, kind, ts_ms, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
            )
            .map_err(read_err("preparing the export"))?;
        while after < last {
            let upto = after.saturating_add(SLICE_ROWS as u64).min(last);
            let mut q = stmt
                .query(params![after as i64, upto as i64])
                .map_err(read_err("reading"))?;
            while let Some(r) = q.next().map_err(read_err("reading"))? {
                let seq = to_u64(r.get(0).map_err(read_err("reading seq"))?);
                let device = r.get_ref(1).map_err(read_err("reading device"))?;
                let device = device.as_str().unwrap_or("");
                let kind: i64 = r.get(2).map_err(read_err("reading kind"))?;
                let ts: i64 = r.get(3).map_err(read_err("reading ts"))?;
                if !sel.takes_row(device, kind, ts) {
                    continue;
                }
                let body = r.get_ref(4).map_err(read_err("reading body"))?;
                let Ok(event) = body
                    .as_blob()
                    .map_err(|e| e.to_string())
                    .and_then(|b| self.decode(b).map_err(|e| e.to_string()))
                else {
                    bad += 1;
                    continue;
                };
                let Some(e) = sel.narrow(StoredEvent {
                    seq: Seq(seq),
                    event,
                }) else {
                    continue;
                };
                each(&e).map_err(|source| LogError::Io {
                    op: "writing the export of",
                    path: self.path.clone(),
                    source,
                })?;
                n += 1;
            }
            after = upto;
            progress(after, last);
        }
        Ok((n, bad))
    }

    fn seq_range(&self) -> Result<(Option<u64>, Option<u64>), LogError> {
        self.conn
            .query_row("SELECT min(seq), max(seq) FROM events", [], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?.map(to_u64),
                    r.get::<_, Option<i64>>(1)?.map(to_u64),
                ))
            })
            .map_err(read_err("reading the seq range"))
    }

    /// Counts for `outpostd log stats`.
    ///
    /// # Errors
    /// When the database fails.
    pub fn summary(&self) -> Result<Summary, LogError> {
        let mut s = Summary {
            schema_version: self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(read_err("reading user_version"))?,
            ..Summary::default()
        };
        let (events, bytes, oldest, newest): (i64, i64, Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0), min(ts_ms), max(ts_ms) FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(read_err("counting"))?;
        s.events = to_u64(events);
        s.bytes = to_u64(bytes);
        s.oldest_ts_ms = oldest;
        s.newest_ts_ms = newest;
        (s.first_seq, s.last_seq) = self.seq_range()?;
        let mut by_device = BTreeMap::new();
        let mut by_kind = BTreeMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT device, kind, count(*) FROM events GROUP BY device, kind")
                .map_err(read_err("counting"))?;
            let mut q = stmt.query([]).map_err(read_err("counting"))?;
            while let Some(r) = q.next().map_err(read_err("counting"))? {
                let d: String = r.get(0).map_err(read_err("counting"))?;
                let k: i64 = r.get(1).map_err(read_err("counting"))?;
                let n = to_u64(r.get(2).map_err(read_err("counting"))?);
                *by_device.entry(d).or_insert(0) += n;
                let kind = usize::try_from(k)
                    .ok()
                    .and_then(|i| EventKind::ALL.get(i))
                    .map_or("unknown", |k| k.as_str());
                *by_kind.entry(kind.to_string()).or_insert(0) += n;
            }
        }
        s.per_device = by_device.into_iter().collect();
        s.per_kind = by_kind.into_iter().collect();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT name, acked, (SELECT count(*) FROM events WHERE seq > acked) FROM cursors ORDER BY name")
                .map_err(read_err("reading cursors"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?), to_u64(r.get(2)?)))
                })
                .map_err(read_err("reading cursors"))?;
            for c in rows {
                s.cursors.push(c.map_err(read_err("reading cursors"))?);
            }
        }
        s.history_from = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'history_from'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(read_err("reading meta"))?
            .map(to_u64);
        for f in [
            self.path.clone(),
            PathBuf::from(format!("{}-wal", self.path.display())),
        ] {
            s.file_bytes += std::fs::metadata(&f).map_or(0, |m| m.len());
        }
        Ok(s)
    }
}

/// `good`, `stale` or `bad: <reason>`.
pub fn quality_text(q: &Quality) -> String {
    match q {
        Quality::Good => "good".into(),
        Quality::Stale => "stale".into(),
        Quality::Bad { reason } => format!("bad: {reason}"),
    }
}

/// Appends `events` to `out` in `format` (CSV: one row per point, after
/// [`CSV_HEADER`]; JSON lines: one object per event).
pub fn write_events(out: &mut Vec<u8>, events: &[StoredEvent], format: Format) {
    for e in events {
        write_event(out, e, format);
    }
}

/// One event, as [`write_events`] writes it.
pub fn write_event(out: &mut Vec<u8>, e: &StoredEvent, format: Format) {
    match format {
        Format::Csv => csv_rows(out, e),
        Format::JsonLines => {
            if serde_json::to_writer(&mut *out, &json_line(e)).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

fn csv_rows(out: &mut Vec<u8>, e: &StoredEvent) {
    let ev = &e.event;
    let kind = ev.kind().as_str();
    let clock = ev.ts.clock.as_str();
    let head = format!(
        "{},{},{},{},{kind},",
        e.seq.0,
        utc::format_utc(ev.ts.unix_ms),
        ev.ts.unix_ms,
        csv_cell(&ev.device)
    );
    let mut row = |tag: &str, value: &str, quality: &str| {
        let _infallible = write!(
            out,
            "{head}{},{},{},{clock}\r\n",
            csv_cell(tag),
            csv_cell(value),
            csv_cell(quality)
        );
    };
    match &ev.body {
        Body::Telemetry(points) | Body::Attributes(points) => {
            for p in points {
                let v = match &p.value {
                    Value::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                row(&p.tag, &v, &quality_text(&p.quality));
            }
        }
        Body::Alarm(a) => row(
            &a.name,
            &format!("{:?} {:?}", a.severity, a.state).to_lowercase(),
            &a.details,
        ),
        Body::Status(st) => row(
            "status",
            &format!("{:?}", st.status).to_lowercase(),
            &st.detail,
        ),
        Body::Audit(a) => row(&a.action, &a.detail, &a.actor),
        other => {
            let detail = serde_json::to_string(other).unwrap_or_default();
            row("", &detail, "");
        }
    }
}

/// A CSV cell: quoted when it must be, defused when a spreadsheet would
/// take it for a formula.
pub fn csv_cell(s: &str) -> String {
    let numeric = s.parse::<f64>().is_ok();
    let risky = !numeric && s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let s = if risky {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One event as a flat JSON object.
pub fn json_line(e: &StoredEvent) -> serde_json::Value {
    let ev = &e.event;
    let mut o = serde_json::json!({
        "seq": e.seq.0,
        "time": utc::format_utc(ev.ts.unix_ms),
        "ts_ms": ev.ts.unix_ms,
        "clock": ev.ts.clock.as_str(),
        "device": ev.device,
        "kind": ev.kind().as_str(),
    });
    match &ev.body {
        Body::Telemetry(points) | Body::Attributes(points) => {
            let values: serde_json::Map<String, serde_json::Value> = points
                .iter()
                .map(|p| (p.tag.clone(), crate::uplink::format::value_json(&p.value)))
                .collect();
            o["values"] = values.into();
            let bad: serde_json::Map<String, serde_json::Value> = points
                .iter()
                .filter(|p| p.quality != Quality::Good)
                .map(|p| (p.tag.clone(), quality_text(&p.quality).into()))
                .collect();
            if !bad.is_empty() {
                o["quality"] = bad.into();
            }
        }
        other => {
            if let Ok(v) = serde_json::to_value(other) {
                o["detail"] = v;
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("-12.5"), "-12.5");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
    }
}
