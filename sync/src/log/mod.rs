//! The event log: the gateway's single source of record, and the store half
//! of store-and-forward.
//!
//! # Invariants
//!
//! - **Accepted means committed.** [`EventLog::append`] resolves with the
//!   events' seqs only after the SQLite transaction holding them committed
//!   (with `durability = "full"`, after fsync). Until then the caller still
//!   owns the events; on an error none of them was written.
//! - **Seqs are assigned at commit, strictly increasing, and never reused**,
//!   not even after every row was reclaimed or the process was killed: at
//!   open the next seq is `max(seq) + 1`, or the value stored by the last
//!   transaction that deleted rows, whichever is greater (every deleting
//!   transaction stores it).
//! - **Delivery deletes nothing.** The log is the gateway's history: an
//!   event every uplink has acknowledged ([`EventLog::ack`]) stays, and
//!   trends and exports read delivered and undelivered events alike.
//! - **Who deletes:** only the writer thread, and only for three reasons.
//!   (1) *Age*: events appended longer than `max_age` ago go, whatever
//!   their priority (those appended with an unsynced clock have no age and
//!   stay), in chunks: once the oldest is a 64th of `max_age` past it.
//!   (2) *Limits*: when `max_rows` or `max_bytes` is exceeded, delivered
//!   events go first, oldest first, down to a 64th below the limits (so a
//!   full log deletes in chunks); only then undelivered ones, the oldest of
//!   the lowest priority first (telemetry, then attributes and status, then
//!   alarms, audit and gap records). (3) *A full disk*: delivered events,
//!   oldest first, until there is room again. Every undelivered event
//!   dropped is recorded by a `gap` event appended in the same transaction
//!   (count, seq and time range); delivered ones are counted as trimmed
//!   history ([`LogStats::trimmed_total`]), since nothing was lost upstream.
//! - **Schema versions:** a log of an older schema is migrated at open, one
//!   numbered step per transaction ([`MIGRATIONS`]); one of a newer schema
//!   is refused ([`LogError::NewerSchema`]) and left as it is.
//! - **Cursors move forward only**, and only on explicit acknowledgement;
//!   reading never moves a cursor. An acknowledgement is saved with the
//!   next commit, or after [`CURSOR_SAVE_DELAY`] without one, and when the
//!   log closes: after a crash, at most that second's acknowledged events
//!   are sent again; none is lost.
//! - **Disk full is a state, not a crash.** An append that finds no room
//!   fails with [`LogError::DiskFull`], writes nothing, and leaves the log
//!   usable; the caller keeps its events and retries (which is how
//!   back-pressure reaches the drivers). [`LogStats::disk_full`] reports it.
//! - **An unreadable database is moved aside, never deleted** (see
//!   [`Store::open`]), and the fresh log starts with an audit event saying so.
//! - **Group commit:** appends that arrive together share one transaction, up
//!   to `commit_max_events` events or `commit_max_delay` after the first.
//!
//! The log runs on its own thread ([`EventLog`]) that owns the only
//! connection; [`Store`] is the synchronous core it drives, used directly by
//! tests and benchmarks.

pub mod export;
mod seqfloor;
mod store;
pub mod tagsets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use outpost_config::Durability;
use outpost_core::liveness::Stage;
use outpost_core::{Clock, Event, Seq};
pub use seqfloor::SEQ_BLOCK;
pub use store::Migration;
pub use store::{
    Appended, Corrected, LogStats, OpenReport, Recovery, ScanFilter, Scanned, Store, StoreOptions,
    DEFAULT_RESERVE_BYTES, MIGRATIONS, PAGE_SIZE, ROW_OVERHEAD, SCHEMA_VERSION,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// A device's rows a look back for its last values examines at most.
pub const LOOK_BACK_ROWS: usize = 100_000;

/// The longest an acknowledgement waits in memory for a commit to ride on
/// before it is written by itself. A crash loses at most this much of the
/// acknowledgements: those events are sent again (at-least-once), never lost.
pub const CURSOR_SAVE_DELAY: Duration = Duration::from_secs(1);

/// Rows one scan slice examines at most.
pub const SCAN_WINDOW: u64 = 20_000;
/// Stored bytes one scan slice returns at most.
pub const SCAN_BYTES: usize = 256 * 1024;

/// Buffer limits, in the units the store counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: u64,
    /// Encoded bytes plus [`ROW_OVERHEAD`] per row.
    pub max_bytes: u64,
    /// 0 = no age limit.
    pub max_age_ms: u64,
}

impl Limits {
    pub fn from_config(b: &outpost_config::BufferLimits) -> Self {
        Self {
            max_rows: b.max_rows,
            max_bytes: b.max_bytes.0,
            max_age_ms: b.max_age.as_millis(),
        }
    }

    pub const UNLIMITED: Limits = Limits {
        max_rows: u64::MAX,
        max_bytes: u64::MAX,
        max_age_ms: 0,
    };
}

/// An event as stored, with its seq.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: Seq,
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("the disk is full: the event log cannot take more events until space is freed")]
    DiskFull,
    #[error("the event log database is unreadable: {reason}")]
    Corrupt { reason: String },
    #[error("event log: {op}: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("event log: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event log: encoding an event: {0}")]
    Encode(String),
    #[error("event log: no cursor named {0:?}")]
    UnknownCursor(String),
    #[error("event log: cursor {cursor:?} acknowledged up to seq {upto}, but the last seq given out is {last}")]
    AckBeyondEnd {
        cursor: String,
        upto: u64,
        last: u64,
    },
    #[error("event log: {0}")]
    Write(String),
    #[error("the event log is in use by another process (it holds {path}); is another outpostd running on this data directory?")]
    Locked { path: PathBuf },
    #[error("the event log {path} has schema version {version}: it was written by a newer outpostd (this one knows versions up to {known}). It is left as it is; run the newer outpostd, or move the log away yourself to start a new one")]
    NewerSchema {
        path: PathBuf,
        version: i64,
        known: i64,
    },
    #[error("event log {path}: migrating to schema version {to} failed, and the log was left at its old version (it is tried again at the next start): {source}")]
    Migration {
        path: PathBuf,
        to: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("event log: the writer has stopped")]
    Closed,
}

impl LogError {
    /// True for conditions that pass by themselves (space freed): retry later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::DiskFull)
    }
}

/// An append that was not committed: why, and the events, untouched.
#[derive(Debug)]
pub struct Refused {
    pub error: LogError,
    pub events: Vec<Event>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} events not accepted)",
            self.error,
            self.events.len()
        )
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Settings of the running log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub store: StoreOptions,
    pub commit_max_events: usize,
    pub commit_max_delay: Duration,
    /// For this long after boot, while the clock is not synchronised,
    /// uplinks are not given events stamped without it: they wait to be
    /// re-stamped with the true time. Zero: sent as they are.
    pub clock_wait: Duration,
}

impl LogOptions {
    pub fn from_config(g: &outpost_config::Gateway) -> Self {
        Self {
            store: StoreOptions {
                durability: g.durability,
                limits: Limits::from_config(&g.buffer),
                max_page_count: None,
                reserve_bytes: DEFAULT_RESERVE_BYTES,
            },
            commit_max_events: g.log.commit_max_events as usize,
            commit_max_delay: g.log.commit_max_delay.get(),
            clock_wait: if g.clock == outpost_core::ClockPolicy::Trust {
                Duration::ZERO
            } else {
                g.log.clock_wait.get()
            },
        }
    }
}

/// Committed events, as broadcast to live views. Lagging receivers miss
/// batches; nothing depends on this for correctness.
pub type Committed = Arc<Vec<StoredEvent>>;

enum Command {
    Append {
        events: Vec<Event>,
        /// Since when the events have been waiting (the group commit's
        /// delay counts from the oldest batch in it); `None`: no waiting.
        since: Option<tokio::time::Instant>,
        reply: oneshot::Sender<Result<Appended, Refused>>,
    },
    Read {
        after: Seq,
        max: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, LogError>>,
    },
    Ack {
        cursor: String,
        upto: Seq,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    Scan {
        filter: ScanFilter,
        after: Seq,
        reply: oneshot::Sender<Result<Scanned, LogError>>,
    },
    SeqBefore {
        ts_ms: i64,
        reply: oneshot::Sender<Result<Seq, LogError>>,
    },
    Current {
        reply: oneshot::Sender<Result<(Vec<Event>, u64), LogError>>,
    },
    LastValues {
        device: String,
        tags: Vec<String>,
        reply: oneshot::Sender<
            Result<std::collections::BTreeMap<String, outpost_core::Value>, LogError>,
        >,
    },
    Cursor {
        name: String,
        reply: oneshot::Sender<Option<Seq>>,
    },
    SetCursors {
        names: Vec<String>,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    /// [`EventLog::close`]: the writer finishes what came before and stops,
    /// whatever handles are still about (they get [`LogError::Closed`]).
    Close,
}

/// An append handed to the writer ([`EventLog::submit_append`]).
#[derive(Debug)]
pub struct Submitted(oneshot::Receiver<Result<Appended, Refused>>);

/// Resolves once the events are committed (or refused, as
/// [`EventLog::append`]).
impl std::future::Future for Submitted {
    type Output = Result<Appended, Refused>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(Refused {
                    error: LogError::Closed,
                    events: Vec::new(),
                })
            })
        })
    }
}

/// Handle to the log's writer thread. Cheap to clone; the thread ends when
/// every handle is dropped or [`EventLog::close`] is called, after finishing
/// every command it had received.
#[derive(Debug, Clone)]
pub struct EventLog {
    tx: mpsc::Sender<Command>,
    stats: watch::Receiver<LogStats>,
    committed: broadcast::Sender<Committed>,
    done: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl EventLog {
    /// Opens the log at `path` and starts its writer thread.
    ///
    /// # Errors
    /// When the database can be neither opened nor recreated.
    pub fn open(
        path: &Path,
        opts: LogOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<(EventLog, OpenReport), LogError> {
        Self::open_watched(path, opts, clock, Stage::detached("event log writer"))
    }

    /// [`EventLog::open`], with the writer thread busy on `stage` during each
    /// command it carries out (a commit, a read, a scan), so that a writer
    /// stuck in SQLite or on the disk stops the watchdog's pings.
    ///
    /// # Errors
    /// When the database can be neither opened nor recreated.
    pub fn open_watched(
        path: &Path,
        opts: LogOptions,
        clock: Arc<dyn Clock>,
        stage: Stage,
    ) -> Result<(EventLog, OpenReport), LogError> {
        let (mut store, report) = Store::open(path, opts.store.clone(), clock.now())?;
        if store.note_boot(clock.boot_id())? {
            tracing::debug!(
                first_seq = store.stats().next_seq,
                "A new boot: events stamped before the clock is synchronised from here on are corrected when it is."
            );
        }
        let (tx, rx) = mpsc::channel(64);
        let (stats_tx, stats) = watch::channel(store.stats().clone());
        // Live views only need recent batches; a lagging receiver skips ahead.
        let (committed, _) = broadcast::channel(16);
        let writer = Writer {
            store,
            rx,
            stats: stats_tx,
            committed: committed.clone(),
            clock,
            max_events: opts.commit_max_events.max(1),
            max_delay: opts.commit_max_delay,
            clock_wait_ms: i64::try_from(opts.clock_wait.as_millis()).unwrap_or(i64::MAX),
            stage,
            // An earlier run in this boot may have left events to correct.
            uncorrected: true,
            closing: false,
            last_offset: None,
        };
        let handle = std::thread::Builder::new()
            .name("outpost-log".into())
            .spawn(move || writer.run())
            .map_err(|source| LogError::Io {
                op: "starting the writer thread for",
                path: path.to_path_buf(),
                source,
            })?;
        Ok((
            EventLog {
                tx,
                stats,
                committed,
                done: Arc::new(std::sync::Mutex::new(Some(handle))),
            },
            report,
        ))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, LogError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)
    }

    /// Appends `events` (in order) and resolves once they are committed, with
    /// the seqs they got. On error none of them was written, and they are
    /// handed back in [`Refused`] for a retry.
    ///
    /// # Errors
    /// [`LogError::DiskFull`] (retry later) or a failing database.
    ///
    /// These events do not wait for others to share their commit (an audit
    /// entry, the daemon's start): they are committed with whatever is
    /// queued. The data path uses [`EventLog::append_since`].
    pub async fn append(&self, events: Vec<Event>) -> Result<Appended, Refused> {
        self.send_append(events, None).await
    }

    /// As [`EventLog::append`], for events that have already waited since
    /// `since` (gathered while an earlier batch was being committed): the
    /// group commit waits for others only until `since + commit_max_delay`,
    /// so that no event waits for two delays.
    ///
    /// # Errors
    /// As [`EventLog::append`].
    pub async fn append_since(
        &self,
        events: Vec<Event>,
        since: tokio::time::Instant,
    ) -> Result<Appended, Refused> {
        self.send_append(events, Some(since)).await
    }

    async fn send_append(
        &self,
        events: Vec<Event>,
        since: Option<tokio::time::Instant>,
    ) -> Result<Appended, Refused> {
        self.submit_append(events, since).await?.await
    }

    /// Hands `events` to the log's writer and returns at once: the commit is
    /// awaited on the returned [`PendingAppend`]. Appends submitted one after
    /// the other are committed in that order (several may share a commit),
    /// so a producer can keep a few in flight while the group commit waits.
    ///
    /// # Errors
    /// [`LogError::Closed`] when the writer has stopped.
    pub async fn submit_append(
        &self,
        events: Vec<Event>,
        since: Option<tokio::time::Instant>,
    ) -> Result<Submitted, Refused> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(cmd)) = self
            .tx
            .send(Command::Append {
                events,
                since,
                reply,
            })
            .await
        {
            let events = match cmd {
                Command::Append { events, .. } => events,
                _ => Vec::new(),
            };
            return Err(Refused {
                error: LogError::Closed,
                events,
            });
        }
        Ok(Submitted(rx))
    }

    /// Up to `max` events with seq greater than `after`, oldest first.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn read(&self, after: Seq, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.read_bounded(after, max, usize::MAX).await
    }

    /// As [`EventLog::read`], stopping once `max_bytes` of stored events
    /// are read (at least one event is returned).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn read_bounded(
        &self,
        after: Seq,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.call(|reply| Command::Read {
            after,
            max,
            max_bytes,
            reply,
        })
        .await?
    }

    /// One slice of the events matching `filter` after `after` (see
    /// [`Store::scan`]): at most [`SCAN_WINDOW`] rows examined and
    /// [`SCAN_BYTES`] returned, so a long scan (an export, a trend over a
    /// week) never holds the writer for long or memory for much.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn scan(&self, filter: ScanFilter, after: Seq) -> Result<Scanned, LogError> {
        self.call(|reply| Command::Scan {
            filter,
            after,
            reply,
        })
        .await?
    }

    /// The current attributes (every scope) and the alarms not both
    /// cleared and acknowledged: one event each, oldest first, whatever
    /// retention has removed from the history. Rows that do not decode are
    /// skipped (and logged).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn current(&self) -> Result<Vec<Event>, LogError> {
        let (events, bad) = self.call(|reply| Command::Current { reply }).await??;
        if bad > 0 {
            tracing::warn!(
                rows = bad,
                "Rows of the current state do not decode; skipped."
            );
        }
        Ok(events)
    }

    /// Where a scan from time `ts_ms` may start (see [`Store::seq_before`]).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn seq_before(&self, ts_ms: i64) -> Result<Seq, LogError> {
        self.call(|reply| Command::SeqBefore { ts_ms, reply })
            .await?
    }

    /// The last value of each of `tags` that `device` reported (see
    /// [`Store::last_values`]), looking back over at most
    /// [`LOOK_BACK_ROWS`] of its events.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn last_values(
        &self,
        device: &str,
        tags: Vec<String>,
    ) -> Result<std::collections::BTreeMap<String, outpost_core::Value>, LogError> {
        let device = device.to_string();
        self.call(|reply| Command::LastValues {
            device,
            tags,
            reply,
        })
        .await?
    }

    /// Where a scan of `filter`'s time range starts (the seq before its
    /// first event) and the seq past which it can stop: one slice past the
    /// range's end, as timestamps grow with seq give or take clock steps.
    /// An open end (`i64::MIN`, `i64::MAX`) needs no lookup; a failed
    /// lookup scans the whole log.
    pub async fn scan_bounds(&self, filter: &ScanFilter) -> (Seq, u64) {
        let start = if filter.from_ms == i64::MIN {
            Seq(0)
        } else {
            self.seq_before(filter.from_ms).await.unwrap_or(Seq(0))
        };
        let end = if filter.to_ms == i64::MAX {
            u64::MAX
        } else {
            self.seq_before(filter.to_ms)
                .await
                .map_or(u64::MAX, |q| q.0.saturating_add(SCAN_WINDOW))
        };
        (start, end)
    }

    /// Acknowledges every event up to `upto` for the consumer `cursor`.
    ///
    /// # Errors
    /// Unknown cursor, a seq never given out, or a failing database.
    pub async fn ack(&self, cursor: &str, upto: Seq) -> Result<(), LogError> {
        let cursor = cursor.to_string();
        self.call(|reply| Command::Ack {
            cursor,
            upto,
            reply,
        })
        .await?
    }

    /// Where the cursor stands.
    ///
    /// # Errors
    /// When the writer has stopped.
    pub async fn cursor(&self, name: &str) -> Result<Option<Seq>, LogError> {
        let name = name.to_string();
        self.call(|reply| Command::Cursor { name, reply }).await
    }

    /// Makes the set of cursors exactly `names` (see [`Store::set_cursors`]).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn set_cursors(&self, names: Vec<String>) -> Result<(), LogError> {
        self.call(|reply| Command::SetCursors { names, reply })
            .await?
    }

    /// The latest counters; `changed()` on the receiver waits for news.
    pub fn stats(&self) -> watch::Receiver<LogStats> {
        self.stats.clone()
    }

    /// Live feed of committed events.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// Stops taking commands, lets the writer finish what it received, and
    /// waits for its thread (on a blocking thread, so the runtime is free).
    pub async fn close(self) {
        let EventLog { tx, done, .. } = self;
        // Other handles may live on (a page's stream the web server left
        // behind): the writer is told to stop, not left to wait for them.
        let _stopping = tx.send(Command::Close).await.is_ok();
        drop(tx);
        let handle = done.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let joined = tokio::task::spawn_blocking(move || h.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("The event log writer thread ended abnormally.");
            }
        }
    }
}

/// Events waiting to be committed, and where to say how it went.
type PendingAppend = (Vec<Event>, oneshot::Sender<Result<Appended, Refused>>);

struct Writer {
    store: Store,
    rx: mpsc::Receiver<Command>,
    stats: watch::Sender<LogStats>,
    committed: broadcast::Sender<Committed>,
    clock: Arc<dyn Clock>,
    max_events: usize,
    max_delay: Duration,
    clock_wait_ms: i64,
    stage: Stage,
    /// Events with a boot-relative stamp may be in the log uncorrected.
    uncorrected: bool,
    /// [`Command::Close`] came during a gathering: stop after its commit.
    closing: bool,
    /// (wall clock − boot clock, boot clock) at the last synchronised commit:
    /// a change beyond drift is a clock step, audited.
    last_offset: Option<(i64, i64)>,
}

/// A change of the wall clock against the boot clock beyond this (plus
/// 1 ms per second between the two readings, well above NTP's 500 ppm
/// slewing) is a step of the clock, not drift.
const CLOCK_STEP_MS: i64 = 1000;

impl Writer {
    fn run(mut self) {
        // A single-threaded runtime on this thread only waits on the channel
        // and the group-commit timer; SQLite runs here, off the main runtime.
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "Cannot start the event log writer.");
                return;
            }
        };
        rt.block_on(async move {
            loop {
                let cmd = if self.store.has_unsaved_cursors() {
                    // Acknowledgements ride on the next commit; with
                    // none coming, they are saved after CURSOR_SAVE_DELAY.
                    match tokio::time::timeout(CURSOR_SAVE_DELAY, self.rx.recv()).await {
                        Ok(Some(c)) => c,
                        Ok(None) => break,
                        Err(_) => {
                            let stage = self.stage.clone();
                            let _busy = stage.busy();
                            if let Err(e) = self.store.flush_cursors() {
                                tracing::warn!(error = %e, "Saving acknowledgements failed; tried again later.");
                            }
                            continue;
                        }
                    }
                } else {
                    match self.rx.recv().await {
                        Some(c) => c,
                        None => break,
                    }
                };
                match cmd {
                    Command::Append {
                        events,
                        since,
                        reply,
                    } => {
                        let mut batch = vec![(events, reply)];
                        let deadline = match since {
                            Some(t) => t + self.max_delay,
                            None => tokio::time::Instant::now(),
                        };
                        self.gather(&mut batch, deadline).await;
                        let stage = self.stage.clone();
                        let _busy = stage.busy();
                        self.commit(batch);
                        if self.closing {
                            break;
                        }
                    }
                    Command::Close => break,
                    // `commit` publishes the stats itself, before replying.
                    other => {
                        let stage = self.stage.clone();
                        let _busy = stage.busy();
                        self.handle(other);
                        self.stats.send_replace(self.store.stats().clone());
                    }
                }
            }
        });
    }

    /// Collects appends that arrive within `max_delay` of the first, up to
    /// `max_events`. Other commands (reads, acknowledgements) are served
    /// meanwhile, from what is committed: they do not cut the batch short,
    /// or an uplink reading after every commit would undo the batching.
    async fn gather(&mut self, batch: &mut Vec<PendingAppend>, deadline: tokio::time::Instant) {
        let mut n: usize = batch.iter().map(|(e, _)| e.len()).sum();
        while n < self.max_events {
            let next = match self.rx.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.max_delay.is_zero() {
                        None
                    } else {
                        tokio::time::timeout_at(deadline, self.rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                }
            };
            match next {
                Some(Command::Append {
                    events,
                    reply,
                    since,
                }) => {
                    n += events.len();
                    batch.push((events, reply));
                    if since.is_none() {
                        // An append that does not wait (an audit entry,
                        // the start): commit the batch now.
                        break;
                    }
                }
                Some(Command::Close) => {
                    // Commit what was gathered, then stop.
                    self.closing = true;
                    break;
                }
                Some(other) => {
                    let stage = self.stage.clone();
                    let _busy = stage.busy();
                    self.handle(other);
                }
                None => break,
            }
        }
    }

    fn commit(&mut self, batch: Vec<PendingAppend>) {
        let total = batch.iter().map(|(e, _)| e.len()).sum();
        let mut all: Vec<Event> = Vec::with_capacity(total);
        let mut replies = Vec::with_capacity(batch.len());
        for (events, reply) in batch {
            replies.push((events.len(), reply));
            all.extend(events);
        }
        let now = self.clock.now();
        self.follow_clock(now, &mut all);
        let result = self.store.append(&all, now);
        // Stats first: whoever hears "committed" must find it counted.
        self.stats.send_replace(self.store.stats().clone());
        match result {
            Ok(appended) => {
                // The live feed before the replies: whoever hears back
                // finds the events in the feed too.
                if self.committed.receiver_count() > 0 {
                    let stored: Vec<StoredEvent> = all
                        .into_iter()
                        .zip(appended.first.0..)
                        .map(|(event, seq)| StoredEvent {
                            seq: Seq(seq),
                            event,
                        })
                        .collect();
                    let _no_listeners = self.committed.send(Arc::new(stored));
                }
                let mut next = appended.first.0;
                for (n, reply) in replies {
                    let n = n as u64;
                    let mine = Appended {
                        first: Seq(next),
                        last: Seq((next + n).saturating_sub(1)),
                    };
                    next += n;
                    // A caller that gave up still had its events committed.
                    let _ignored = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                if !e.is_retryable() {
                    tracing::error!(error = %e, events = all.len(), "Event log append failed.");
                }
                let msg = e.to_string();
                let mut rest = all.into_iter();
                for (n, reply) in replies {
                    let events: Vec<Event> = rest.by_ref().take(n).collect();
                    let error = if e.is_retryable() {
                        LogError::DiskFull
                    } else {
                        LogError::Write(msg.clone())
                    };
                    let _ignored = reply.send(Err(Refused { error, events }));
                }
            }
        }
    }

    /// Clock correction and step detection, once per commit. With the clock
    /// synchronised: boot-relative stamps in `all` are corrected in place,
    /// those already in the log are corrected (the first time after the
    /// sync), and a step since the last commit is audited. Audit entries go
    /// at the end of `all`, after every caller's events.
    fn follow_clock(&mut self, now: outpost_core::Timestamp, all: &mut Vec<Event>) {
        if now.clock != outpost_core::ClockQuality::Synced {
            self.last_offset = None;
            if all
                .iter()
                .any(|e| matches!(e.ts.clock, outpost_core::ClockQuality::SinceBoot { .. }))
            {
                self.uncorrected = true;
            }
            return;
        }
        let boot = self.clock.boot_ms();
        let offset = now.unix_ms.saturating_sub(boot);
        for ev in all.iter_mut() {
            if let Some(ts) = store::corrected(ev, offset) {
                ev.ts = ts;
            }
        }
        if let Some((prev, prev_boot)) = self.last_offset {
            let step = offset.saturating_sub(prev);
            let allowed = CLOCK_STEP_MS + boot.saturating_sub(prev_boot).max(0) / 1000;
            if step.abs() > allowed {
                tracing::warn!(step_ms = step, "The clock stepped while synchronised.");
                all.push(Event::new(
                    "",
                    now,
                    outpost_core::Body::Audit(outpost_core::Audit {
                        action: "clock.jump".into(),
                        actor: "gateway".into(),
                        detail: format!(
                            "the clock stepped {} by {} ms while synchronised; events keep their order in the log (by seq), their stamps follow the clock",
                            if step > 0 { "forward" } else { "back" },
                            step.abs()
                        ),
                    }),
                ));
            }
        }
        self.last_offset = Some((offset, boot));
        if self.uncorrected {
            match self.store.correct_clock(offset) {
                Ok(c) => {
                    self.uncorrected = false;
                    if c.rows > 0 {
                        tracing::info!(
                            events = c.rows,
                            offset_ms = c.offset_ms,
                            "Clock synchronised: this boot's earlier events re-stamped with the true time."
                        );
                        all.push(store::correction_audit(now, &c));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Re-stamping events after the clock sync failed; tried again at the next commit.");
                }
            }
        }
    }

    /// What uplinks are given of `events`: while the clock is not
    /// synchronised and this boot is younger than `clock_wait`, the events
    /// before the first one stamped without the clock (that one and those
    /// after wait to be re-stamped; order is kept, so nothing overtakes
    /// it).
    fn hold_unsynced(&self, mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        if self.clock_wait_ms == 0
            || self.clock.now().clock == outpost_core::ClockQuality::Synced
            || self.clock.boot_ms() >= self.clock_wait_ms
        {
            return events;
        }
        if let Some(at) = events.iter().position(|e| {
            matches!(
                e.event.ts.clock,
                outpost_core::ClockQuality::SinceBoot { .. }
            )
        }) {
            events.truncate(at);
        }
        events
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append { events, reply, .. } => self.commit(vec![(events, reply)]),
            Command::Read {
                after,
                max,
                max_bytes,
                reply,
            } => {
                let read = self
                    .store
                    .read_bounded(after, max, max_bytes)
                    .map(|events| self.hold_unsynced(events));
                let _ignored = reply.send(read);
            }
            Command::Scan {
                filter,
                after,
                reply,
            } => {
                let _ignored = reply.send(self.store.scan(&filter, after, SCAN_WINDOW, SCAN_BYTES));
            }
            Command::SeqBefore { ts_ms, reply } => {
                let _ignored = reply.send(self.store.seq_before(ts_ms));
            }
            Command::Current { reply } => {
                let _ignored = reply.send(self.store.current());
            }
            Command::LastValues {
                device,
                tags,
                reply,
            } => {
                let _ignored = reply.send(self.store.last_values(&device, &tags, LOOK_BACK_ROWS));
            }
            Command::Ack {
                cursor,
                upto,
                reply,
            } => {
                let r = self.store.ack(&cursor, upto);
                // Stats first: whoever hears "acknowledged" must see it.
                self.stats.send_replace(self.store.stats().clone());
                let _ignored = reply.send(r);
            }
            Command::Cursor { name, reply } => {
                let _ignored = reply.send(self.store.cursor(&name));
            }
            Command::SetCursors { names, reply } => {
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let r = self.store.set_cursors(&refs);
                self.stats.send_replace(self.store.stats().clone());
                let _ignored = reply.send(r);
            }
            Command::Close => self.closing = true,
        }
    }
}

#[cfg(test)]
mod tests;
