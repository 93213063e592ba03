#![allow(clippy::disallowed_methods)] // test code: spawns and opens SQLite freely
use std::collections::BTreeMap;

use outpost_core::{
    codec, Alarm, AlarmSeverity, Audit, Body, ClockQuality, Event, FixedClock, Gap, Point,
    Priority, Seq, Timestamp, Value,
};
use proptest::prelude::*;

use super::*;

const T0: i64 = 1_764_000_000_000;

fn opts(limits: Limits, durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        limits,
        max_page_count: None,
        reserve_bytes: 256 * 1024,
    }
}

fn reading(device: &str, v: i64, ts: i64) -> Event {
    Event::new(
        device,
        Timestamp::synced(ts),
        Body::Telemetry(vec![Point::good("v", Value::I64(v))]),
    )
}

// ---------------------------------------------------------------------------
// The model: what the log must hold, computed the simple way.

#[derive(Debug, Clone)]
struct Row {
    event: Event,
    at: Option<i64>,
    size: u64,
}

#[derive(Debug, Default)]
struct Model {
    rows: BTreeMap<u64, Row>,
    next: u64,
    cursors: BTreeMap<String, u64>,
    /// The newest gap record per reason, while it may be merged into
    /// (forgotten on reopen).
    last_gaps: [Option<(u64, Gap)>; 3],
    /// Tag lists in the order the log meets them (sizes depend on the ids).
    sets: super::tagsets::TagsetCache,
}

/// A row's encoded size with `sets` as the log's tag lists.
fn encoded_len(ev: &Event, sets: &mut super::tagsets::TagsetCache) -> usize {
    let mut buf = Vec::new();
    codec::encode_compact_into(ev, &mut buf, sets).unwrap();
    sets.committed();
    buf.len()
}

impl Model {
    fn new(cursors: &[&str]) -> Self {
        Model {
            rows: BTreeMap::new(),
            next: 1,
            cursors: cursors.iter().map(|c| (c.to_string(), 0)).collect(),
            last_gaps: Default::default(),
            sets: Default::default(),
        }
    }

    fn bytes(&self) -> u64 {
        self.rows.values().map(|r| r.size).sum()
    }

    /// Every seq up to this one is delivered everywhere (0 without cursors).
    fn delivered(&self) -> u64 {
        self.cursors.values().min().copied().unwrap_or(0)
    }

    fn insert(&mut self, ev: Event, now: Timestamp) {
        let size = encoded_len(&ev, &mut self.sets) as u64 + ROW_OVERHEAD;
        let at = (now.clock == ClockQuality::Synced).then_some(now.unix_ms);
        self.rows.insert(
            self.next,
            Row {
                event: ev,
                at,
                size,
            },
        );
        self.next += 1;
    }

    fn append(&mut self, evs: &[Event], now: Timestamp, limits: &Limits) -> Option<(u64, u64)> {
        if evs.is_empty() {
            return None;
        }
        let first = self.next;
        for ev in evs {
            self.insert(ev.clone(), now);
        }
        let last = self.next - 1;
        // [age, rows, bytes]: (count, first_seq, last_seq, from_ms, to_ms)
        let mut dropped: [Option<Dropped>; 3] = [None, None, None];
        let mut note = |slot: usize, seq: u64, ts: i64| {
            let d = dropped[slot].get_or_insert((0, seq, seq, ts, ts));
            d.0 += 1;
            d.1 = d.1.min(seq);
            d.2 = d.2.max(seq);
            d.3 = d.3.min(ts);
            d.4 = d.4.max(ts);
        };
        let delivered = self.delivered();
        if now.clock == ClockQuality::Synced && limits.max_age_ms > 0 {
            // The oldest expired event must be a 64th of max_age past the
            // limit before any goes; then every expired one goes.
            let cutoff = now.unix_ms - limits.max_age_ms as i64;
            let trigger = cutoff - (limits.max_age_ms / 64) as i64;
            let oldest = self.rows.values().find_map(|r| r.at);
            if oldest.is_some_and(|at| at < trigger) {
                let seqs: Vec<u64> = self.rows.keys().copied().collect();
                for seq in seqs {
                    match self.rows[&seq].at {
                        None => continue,
                        Some(at) if at < cutoff => {
                            let r = self.rows.remove(&seq).unwrap();
                            if seq > delivered {
                                note(0, seq, r.event.ts.unix_ms);
                            }
                        }
                        Some(_) => break,
                    }
                }
            }
        }
        if self.rows.len() as u64 > limits.max_rows || self.bytes() > limits.max_bytes {
            let row_target = limits.max_rows.saturating_sub(1);
            let byte_target = limits.max_bytes.saturating_sub(160);
            // Delivered history first, oldest first, a 64th below the limits.
            let row_trim = row_target.saturating_sub(limits.max_rows / 64);
            let byte_trim = byte_target.saturating_sub(limits.max_bytes / 64);
            while self.rows.len() as u64 > row_trim || self.bytes() > byte_trim {
                let Some(seq) = self.rows.keys().next().copied().filter(|s| *s <= delivered) else {
                    break;
                };
                self.rows.remove(&seq);
            }
            for prio in Priority::ALL {
                loop {
                    let over_rows = self.rows.len() as u64 > row_target;
                    if !(over_rows || self.bytes() > byte_target) {
                        break;
                    }
                    let Some(seq) = self
                        .rows
                        .iter()
                        .find(|(_, r)| r.event.priority() == prio)
                        .map(|(s, _)| *s)
                    else {
                        break;
                    };
                    let r = self.rows.remove(&seq).unwrap();
                    note(if over_rows { 1 } else { 2 }, seq, r.event.ts.unix_ms);
                }
            }
        }
        for (slot, reason) in ["age", "rows", "bytes"].iter().enumerate() {
            if let Some((count, first_seq, last_seq, from_ms, to_ms)) = dropped[slot] {
                let mut gap = Gap {
                    count,
                    first_seq,
                    last_seq,
                    from_ms,
                    to_ms,
                    reason: reason.to_string(),
                };
                // An unsent earlier gap of the same reason is replaced by
                // one holding both.
                if let Some((old_seq, old)) = &self.last_gaps[slot] {
                    if self.cursors.values().all(|c| c < old_seq)
                        && self.rows.remove(old_seq).is_some()
                    {
                        gap.count += old.count;
                        gap.first_seq = gap.first_seq.min(old.first_seq);
                        gap.last_seq = gap.last_seq.max(old.last_seq);
                        gap.from_ms = gap.from_ms.min(old.from_ms);
                        gap.to_ms = gap.to_ms.max(old.to_ms);
                    }
                }
                self.last_gaps[slot] = Some((self.next, gap.clone()));
                self.insert(Event::new("", now, Body::Gap(gap)), now);
            }
        }
        Some((first, last))
    }

    /// Acknowledging deletes nothing: delivered events are history.
    fn ack(&mut self, cursor: &str, upto: u64) {
        let c = self.cursors.get_mut(cursor).unwrap();
        *c = (*c).max(upto);
    }
}

/// (count, first_seq, last_seq, from_ms, to_ms) of dropped events.
type Dropped = (u64, u64, u64, i64, i64);

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Event>),
    Read { skip: usize, max: usize },
    Ack { cursor: usize, pick: u8 },
    Reopen,
    Tick { ms: i64, synced: bool },
}

fn event_strategy() -> impl Strategy<Value = Event> {
    let body = prop_oneof![
        6 => any::<i64>().prop_map(|v| Body::Telemetry(vec![Point::good("v", Value::I64(v))])),
        2 => "[a-z]{0,20}".prop_map(|s| Body::Attributes(vec![Point::good("fw", Value::Str(s))])),
        1 => Just(Body::Alarm(Alarm::raised("High", AlarmSeverity::Major, "", 0))),
        1 => "[a-z ]{0,30}".prop_map(|d| Body::Audit(Audit {
            action: "config.applied".into(),
            actor: "test".into(),
            detail: d,
        })),
    ];
    (
        prop::sample::select(vec!["a", "b", "boiler-7"]),
        -5_000i64..5_000,
        body,
    )
        .prop_map(|(d, dt, body)| Event::new(d, Timestamp::synced(T0 + dt), body))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(event_strategy(), 0..12).prop_map(Op::Append),
        2 => (0usize..20, 1usize..30).prop_map(|(skip, max)| Op::Read { skip, max }),
        4 => (0usize..2, any::<u8>()).prop_map(|(cursor, pick)| Op::Ack { cursor, pick }),
        1 => Just(Op::Reopen),
        2 => (0i64..40_000, prop::bool::weighted(0.8)).prop_map(|(ms, synced)| Op::Tick { ms, synced }),
    ]
}

fn check(store: &mut Store, model: &Model) -> Result<(), TestCaseError> {
    let got: Vec<(u64, Event)> = store
        .read_all()
        .unwrap()
        .into_iter()
        .map(|s| (s.seq.0, s.event))
        .collect();
    let want: Vec<(u64, Event)> = model
        .rows
        .iter()
        .map(|(s, r)| (*s, r.event.clone()))
        .collect();
    prop_assert_eq!(got, want);
    prop_assert_eq!(store.stats().rows, model.rows.len() as u64);
    prop_assert_eq!(store.stats().bytes, model.bytes());
    prop_assert_eq!(store.stats().next_seq, model.next);
    for (name, acked) in &model.cursors {
        prop_assert_eq!(store.cursor(name), Some(Seq(*acked)));
    }
    Ok(())
}

fn run_model(ops: Vec<Op>, limits: Limits, cursors: &[&str]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let o = opts(limits, Durability::Normal);
    let mut now = Timestamp::synced(T0);
    let (mut store, report) = Store::open(&path, o.clone(), now).unwrap();
    prop_assert!(report.recovered.is_none());
    store.set_cursors(cursors).unwrap();
    let mut model = Model::new(cursors);
    for op in ops {
        match op {
            Op::Append(evs) => {
                let got = store.append(&evs, now).unwrap();
                if let Some((first, last)) = model.append(&evs, now, &limits) {
                    prop_assert_eq!((got.first.0, got.last.0), (first, last));
                }
            }
            Op::Read { skip, max } => {
                let after = model.rows.keys().nth(skip).copied().unwrap_or(0);
                let got: Vec<u64> = store
                    .read(Seq(after), max)
                    .unwrap()
                    .iter()
                    .map(|s| s.seq.0)
                    .collect();
                let want: Vec<u64> = model
                    .rows
                    .range(after + 1..)
                    .take(max)
                    .map(|(s, _)| *s)
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::Ack { cursor, pick } => {
                let Some(name) = cursors.get(cursor) else {
                    continue;
                };
                let current = model.cursors[*name];
                let last = model.next - 1;
                if last == 0 {
                    continue;
                }
                let upto = current + (u64::from(pick) * (last - current)) / 255;
                store.ack(name, Seq(upto)).unwrap();
                model.ack(name, upto);
                // Acknowledging past the end is refused and changes nothing.
                let beyond = store.ack(name, Seq(model.next));
                prop_assert!(
                    matches!(beyond, Err(LogError::AckBeyondEnd { .. })),
                    "{:?}",
                    beyond
                );
            }
            Op::Reopen => {
                drop(store);
                let (s, report) = Store::open(&path, o.clone(), now).unwrap();
                prop_assert!(report.recovered.is_none());
                prop_assert!(report.continued_at.is_none());
                store = s;
                model.last_gaps = Default::default();
            }
            Op::Tick { ms, synced } => {
                now = Timestamp {
                    unix_ms: now.unix_ms + ms,
                    clock: if synced {
                        ClockQuality::Synced
                    } else {
                        ClockQuality::Unsynced
                    },
                };
            }
        }
        check(&mut store, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_model_under_tight_limits(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let limits = Limits { max_rows: 25, max_bytes: 2_500, max_age_ms: 60_000 };
        run_model(ops, limits, &["mqtt", "nats"])?;
    }

    #[test]
    fn log_agrees_with_model_without_cursors(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let limits = Limits { max_rows: 15, max_bytes: 100_000, max_age_ms: 0 };
        run_model(ops, limits, &[])?;
    }

    #[test]
    fn log_agrees_with_model_keeping_history_in_chunks(ops in prop::collection::vec(op_strategy(), 1..80)) {
        // Limits large enough that a 64th of them is more than one row.
        let limits = Limits { max_rows: 130, max_bytes: 9_000, max_age_ms: 640_000 };
        run_model(ops, limits, &["mqtt", "nats"])?;
    }

    #[test]
    fn log_agrees_with_model_without_limits(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run_model(ops, Limits::UNLIMITED, &["only"])?;
    }
}

// ---------------------------------------------------------------------------

#[test]
fn bounded_reads_stop_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::synced(T0);
    let (mut store, _) = Store::open(
        &dir.path().join("events.db"),
        opts(Limits::UNLIMITED, Durability::Full),
        now,
    )
    .unwrap();
    let events: Vec<Event> = (0..10).map(|v| reading("d", v, T0)).collect();
    store.append(&events, now).unwrap();
    let one = encoded_len(&events[0], &mut Default::default());
    // The row that reaches the budget is the last one read.
    let got = store.read_bounded(Seq(0), 100, 3 * one).unwrap();
    assert_eq!(
        got.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // At least one row, however small the budget.
    assert_eq!(store.read_bounded(Seq(4), 100, 1).unwrap().len(), 1);
    // The count still applies; unbounded reads are unchanged.
    assert_eq!(store.read_bounded(Seq(0), 2, usize::MAX).unwrap().len(), 2);
    assert_eq!(store.read(Seq(0), 100).unwrap().len(), 10);
}

/// Scans filter on device and time in slices, and resume where a slice
/// ended; the time seek finds where a range starts.
#[test]
fn scans_filter_by_device_and_time_in_resumable_slices() {
    use super::store::ScanFilter;
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::synced(T0);
    let (mut store, _) = Store::open(
        &dir.path().join("events.db"),
        opts(Limits::UNLIMITED, Durability::Normal),
        now,
    )
    .unwrap();
    // 1,000 events, one per second, alternating devices a and b.
    let events: Vec<Event> = (0..1000)
        .map(|i| reading(if i % 2 == 0 { "a" } else { "b" }, i, T0 + i * 1000))
        .collect();
    store.append(&events, now).unwrap();
    let filter = ScanFilter {
        device: Some("a".into()),
        from_ms: T0 + 100_000,
        to_ms: T0 + 200_000,
    };
    // Whole scan, in slices of 64 rows examined.
    let mut got = Vec::new();
    let mut after = Seq(0);
    let mut slices = 0;
    loop {
        let s = store.scan(&filter, after, 64, usize::MAX).unwrap();
        slices += 1;
        got.extend(s.events.iter().map(|e| e.seq.0));
        after = s.next;
        if s.done {
            break;
        }
    }
    assert_eq!(slices, 1000usize.div_ceil(64));
    // Seqs 101..=200 are stamped 100 s..199 s; device a has the odd seqs.
    let want: Vec<u64> = (101..=200).filter(|q| q % 2 == 1).collect();
    assert_eq!(got, want);
    // The byte budget cuts a slice early, and the next starts after it.
    let one = encoded_len(&events[0], &mut Default::default());
    let s = store.scan(&filter, Seq(0), 1000, 3 * one).unwrap();
    assert_eq!(s.events.len(), 3);
    assert!(!s.done);
    let rest = store.scan(&filter, s.next, 1000, usize::MAX).unwrap();
    assert_eq!(rest.events.first().map(|e| e.seq.0), Some(107));
    // Seeking: the seq before the first event at or after a time.
    assert_eq!(store.seq_before(T0 + 100_000).unwrap(), Seq(100));
    assert_eq!(store.seq_before(T0 + 100_500).unwrap(), Seq(101));
    assert_eq!(store.seq_before(T0 - 5).unwrap(), Seq(0));
    assert_eq!(store.seq_before(T0 + 10_000_000).unwrap(), Seq(1000));
    // An empty log.
    let dir2 = tempfile::tempdir().unwrap();
    let (mut empty, _) = Store::open(
        &dir2.path().join("events.db"),
        opts(Limits::UNLIMITED, Durability::Normal),
        now,
    )
    .unwrap();
    assert_eq!(empty.seq_before(T0).unwrap(), Seq(0));
    let s = empty.scan(&filter, Seq(0), 64, usize::MAX).unwrap();
    assert!(s.done && s.events.is_empty());
}

/// The last value of a tag, looking back from the newest event: how
/// counters continue across restarts.
#[test]
fn last_values_look_back_from_the_newest_event() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::synced(T0);
    let (mut store, _) = Store::open(
        &dir.path().join("events.db"),
        opts(Limits::UNLIMITED, Durability::Normal),
        now,
    )
    .unwrap();
    let mut events: Vec<Event> = (0..50).map(|i| reading("meter", i, T0 + i)).collect();
    events.extend((0..50).map(|i| reading("other", 1000 + i, T0 + i)));
    store.append(&events, now).unwrap();
    let got = store
        .last_values("meter", &["v".to_string(), "absent".to_string()], 1000)
        .unwrap();
    assert_eq!(got.get("v"), Some(&Value::I64(49)));
    assert!(!got.contains_key("absent"));
    assert!(store
        .last_values("nobody", &["v".to_string()], 1000)
        .unwrap()
        .is_empty());
    // The look back is bounded.
    let got = store
        .last_values("other", &["absent".to_string()], 10)
        .unwrap();
    assert!(got.is_empty());
}

#[test]
fn seqs_are_never_reused_after_everything_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let (mut store, _) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    store.set_cursors(&["up"]).unwrap();
    let a = store
        .append(&[reading("d", 1, T0), reading("d", 2, T0)], now)
        .unwrap();
    assert_eq!((a.first, a.last), (Seq(1), Seq(2)));
    store.ack("up", Seq(2)).unwrap();
    assert_eq!(store.stats().rows, 2, "delivered events stay as history");
    // Every delivered row trimmed, as a full disk does: the deleting
    // transaction stores the next seq.
    assert_eq!(store.trim_chunk(256).unwrap().0, 2);
    assert_eq!(store.stats().rows, 0);
    drop(store);
    let (mut store, _) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    let b = store.append(&[reading("d", 3, T0)], now).unwrap();
    assert_eq!(b.first, Seq(3));
}

#[test]
fn limits_drop_telemetry_before_alarms_and_record_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_rows: 10,
        max_bytes: u64::MAX,
        max_age_ms: 0,
    };
    let now = Timestamp::synced(T0);
    let (mut store, _) = Store::open(
        &dir.path().join("e.db"),
        opts(limits, Durability::Normal),
        now,
    )
    .unwrap();
    let alarm = Event::new(
        "d",
        now,
        Body::Alarm(Alarm::raised("Overheat", AlarmSeverity::Critical, "", 0)),
    );
    store.append(std::slice::from_ref(&alarm), now).unwrap();
    let readings: Vec<Event> = (0..20).map(|i| reading("d", i, T0 + i)).collect();
    store.append(&readings, now).unwrap();
    let all = store.read_all().unwrap();
    assert!(all.len() <= 10, "{} rows", all.len());
    assert_eq!(all[0].event, alarm, "the alarm survives");
    let gap = all
        .iter()
        .find_map(|s| match &s.event.body {
            Body::Gap(g) => Some(g.clone()),
            _ => None,
        })
        .expect("a gap event");
    assert_eq!(gap.reason, "rows");
    assert_eq!(gap.count, 12, "20 readings + 1 alarm + 1 gap into 10 rows");
    assert_eq!((gap.first_seq, gap.last_seq), (2, 13));
    assert_eq!((gap.from_ms, gap.to_ms), (T0, T0 + 11));
    assert_eq!(store.stats().evicted_rows_total, 12);
    assert_eq!(store.stats().gaps_total, 1);
}

#[test]
fn the_current_state_keeps_the_last_attribute_values_and_unfinished_alarms_past_eviction() {
    use outpost_core::{AlarmState, AttributeScope};
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_rows: 100,
        max_bytes: u64::MAX,
        max_age_ms: u64::MAX,
    };
    let now = Timestamp::synced(T0);
    let path = dir.path().join("e.db");
    let (mut store, _) = Store::open(&path, opts(limits, Durability::Normal), now).unwrap();
    let attr = |body| Event::new("d", now, body);
    let mut raised = Alarm::raised("Overheat", AlarmSeverity::Critical, "{}", T0);
    let mut other = Alarm::raised("Low", AlarmSeverity::Minor, "{}", T0);
    store
        .append(
            &[
                attr(Body::Attributes(vec![
                    Point::good("fw", Value::Str("1.0".into())),
                    Point::good("model", Value::Str("X".into())),
                ])),
                attr(Body::ScopedAttributes(
                    AttributeScope::Shared,
                    vec![Point::good("fw", Value::I64(7))],
                )),
                attr(Body::Alarm(raised.clone())),
                attr(Body::Alarm(other.clone())),
            ],
            now,
        )
        .unwrap();
    // Changes: a newer firmware, the alarm cleared, the other cleared and
    // acknowledged (finished: it leaves the state).
    raised.state = AlarmState::Cleared;
    raised.clear_ms = Some(T0 + 1);
    other.state = AlarmState::Cleared;
    other.acknowledged = true;
    store
        .append(
            &[
                attr(Body::Attributes(vec![Point::good(
                    "fw",
                    Value::Str("1.1".into()),
                )])),
                attr(Body::Alarm(raised.clone())),
                attr(Body::Alarm(other)),
            ],
            now,
        )
        .unwrap();
    // Retention takes the attribute and alarm events out of the history
    // (done here directly: limits take telemetry first).
    drop(store);
    #[allow(clippy::disallowed_methods)]
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(conn.execute("DELETE FROM events", []).unwrap(), 7);
    drop(conn);
    let (mut store, _) = Store::open(&path, opts(limits, Durability::Normal), now).unwrap();
    let (current, bad) = store.current().unwrap();
    assert_eq!(bad, 0);
    let shown: Vec<String> = current
        .iter()
        .map(|e| match &e.body {
            Body::Attributes(p) => format!("client {}={}", p[0].tag, p[0].value),
            Body::ScopedAttributes(s, p) => format!("{} {}={}", s.as_str(), p[0].tag, p[0].value),
            Body::Alarm(a) => format!("alarm {} {}", a.name, a.status()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "client model=\"X\"",
            "shared fw=7",
            "client fw=\"1.1\"",
            "alarm Overheat CLEARED_UNACK"
        ]
    );
}

#[test]
fn events_stamped_with_an_unsynced_clock_are_not_aged_out() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_rows: 1_000,
        max_bytes: u64::MAX,
        max_age_ms: 60_000,
    };
    let boot = Timestamp::unsynced(0); // the gateway booted in 1970
    let (mut store, _) = Store::open(
        &dir.path().join("e.db"),
        opts(limits, Durability::Normal),
        boot,
    )
    .unwrap();
    store.append(&[reading("d", 1, 0)], boot).unwrap();
    let synced = Timestamp::synced(T0);
    store.append(&[reading("d", 2, T0)], synced).unwrap();
    let later = Timestamp::synced(T0 + 120_000);
    store
        .append(&[reading("d", 3, T0 + 120_000)], later)
        .unwrap();
    let seqs: Vec<u64> = store.read_all().unwrap().iter().map(|s| s.seq.0).collect();
    // seq 2 expired; seq 1 has no age; seq 4 records the gap.
    assert_eq!(seqs, vec![1, 3, 4]);
}

fn fill_until_full(store: &mut Store, acked: &mut Vec<(u64, Event)>) -> usize {
    let mut n = 0i64;
    loop {
        let batch: Vec<Event> = (0..50).map(|i| reading("dev", n * 50 + i, T0)).collect();
        match store.append(&batch, Timestamp::synced(T0)) {
            Ok(a) => {
                for (i, ev) in batch.into_iter().enumerate() {
                    acked.push((a.first.0 + i as u64, ev));
                }
                n += 1;
                assert!(n < 100_000, "never filled up");
            }
            Err(LogError::DiskFull) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // Top up with single events until not even one fits.
    let mut i = 0;
    loop {
        let ev = reading("dev", -i, T0);
        match store.append(std::slice::from_ref(&ev), Timestamp::synced(T0)) {
            Ok(a) => acked.push((a.first.0, ev)),
            Err(LogError::DiskFull) => return n as usize,
            Err(e) => panic!("unexpected error {e}"),
        }
        i += 1;
        assert!(i < 100_000, "never filled up");
    }
}

fn assert_all_present(store: &mut Store, acked: &[(u64, Event)]) {
    let all: BTreeMap<u64, Event> = store
        .read_all()
        .unwrap()
        .into_iter()
        .map(|s| (s.seq.0, s.event))
        .collect();
    for (seq, ev) in acked {
        assert_eq!(
            all.get(seq),
            Some(ev),
            "acknowledged seq {seq} lost or changed"
        );
    }
}

#[test]
fn disk_full_by_page_cap_refuses_reports_recovers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let mut o = opts(Limits::UNLIMITED, Durability::Full);
    o.max_page_count = Some(64);
    let now = Timestamp::synced(T0);
    let (mut store, _) = Store::open(&path, o.clone(), now).unwrap();
    let mut acked = Vec::new();
    let batches = fill_until_full(&mut store, &mut acked);
    assert!(batches > 0);
    assert!(store.stats().disk_full);
    let episodes = store.stats().disk_full_total;
    assert!(episodes >= 1);
    // Still refusing, still readable.
    assert!(matches!(
        store.append(&[reading("d", 0, T0)], now),
        Err(LogError::DiskFull)
    ));
    assert_eq!(
        store.stats().disk_full_total,
        episodes,
        "one episode is counted once"
    );
    assert_all_present(&mut store, &acked);
    // A refused event with a tag list the log has not seen: the list is
    // forgotten with the transaction, never referred to without being saved.
    let novel = |tag: &str, v: i64| {
        Event::new(
            "d",
            Timestamp::synced(T0),
            Body::Telemetry(vec![Point::good(tag, Value::I64(v))]),
        )
    };
    assert!(matches!(
        store.append(&[novel("never_seen", 1)], now),
        Err(LogError::DiskFull)
    ));
    // Space returns.
    store.set_max_page_count(100_000).unwrap();
    let a = store.append(&[reading("d", -100_000, T0)], now).unwrap();
    acked.push((a.first.0, reading("d", -100_000, T0)));
    let b = store
        .append(&[novel("second", 2), novel("never_seen", 3)], now)
        .unwrap();
    let late = vec![
        (b.first.0, novel("second", 2)),
        (b.last.0, novel("never_seen", 3)),
    ];
    assert!(!store.stats().disk_full);
    assert_eq!(
        a.first.0,
        acked[acked.len() - 2].0 + 1,
        "no seq skipped or reused"
    );
    drop(store);
    let (mut store, _) = Store::open(&path, o, now).unwrap();
    assert_all_present(&mut store, &acked);
    assert_all_present(&mut store, &late);
}

/// A size-limited tmpfs, unmounted on drop. `None` where mounting is not
/// allowed (not root, no CAP_SYS_ADMIN).
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallFs { dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _unmounted = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn disk_full_on_a_real_small_file_system() {
    let Some(fs) = SmallFs::mount("2m") else {
        eprintln!("cannot mount a tmpfs here; disk full is covered by the max_page_count test");
        return;
    };
    let path = fs.dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let o = opts(Limits::UNLIMITED, Durability::Full);
    let (mut store, _) = Store::open(&path, o.clone(), now).unwrap();
    store.set_cursors(&["up"]).unwrap();
    let mut acked = Vec::new();
    fill_until_full(&mut store, &mut acked);
    assert!(store.stats().disk_full);
    assert!(store.stats().reserve_held, "appends never eat the reserve");
    assert_all_present(&mut store, &acked);
    // The uplink acknowledges the older half: delivered history, which gives
    // way (oldest first) to new events and to the reserve; nothing that is
    // not yet delivered is touched.
    let half = acked[acked.len() / 2].0;
    store.ack("up", Seq(half)).unwrap();
    acked.retain(|(s, _)| *s > half);
    // The reserve's hysteresis waits RESERVE_RETRY after a release; shortened here.
    store.set_reserve_retry(std::time::Duration::ZERO);
    let ev = reading("d", 42, T0);
    let mut ok = None;
    for _ in 0..5 {
        match store.append(std::slice::from_ref(&ev), now) {
            Ok(a) => {
                ok = Some(a);
                break;
            }
            Err(LogError::DiskFull) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    }
    let a = ok.expect("appends resume once space is freed");
    acked.push((a.first.0, ev));
    assert!(!store.stats().disk_full);
    assert!(
        store.stats().reserve_held,
        "the reserve is rebuilt once space returns"
    );
    let trimmed = store.stats().trimmed_total;
    assert!(trimmed > 0, "delivered history was trimmed to make room");
    let oldest = store.read(Seq(0), 1).unwrap()[0].seq.0;
    assert_eq!(
        oldest,
        trimmed + 1,
        "the oldest delivered events went first, and only they"
    );
    assert!(oldest <= half);
    drop(store);
    let (mut store, _) = Store::open(&path, o, now).unwrap();
    assert_all_present(&mut store, &acked);
}

#[test]
fn a_garbage_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::write(
        &path,
        b"this is not an sqlite database, just bytes on a flaky SD card".repeat(100),
    )
    .unwrap();
    let now = Timestamp::synced(T0);
    let (mut store, report) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    let rec = report.recovered.expect("recovered");
    assert!(rec.moved_to.exists(), "the bad file is kept");
    assert!(rec
        .moved_to
        .to_string_lossy()
        .contains(".corrupt-20251124T160000Z"));
    let all = store.read_all().unwrap();
    assert_eq!(all.len(), 1);
    assert!(matches!(&all[0].event.body, Body::Audit(a) if a.action == "log.recovered"));
    store.append(&[reading("d", 1, T0)], now).unwrap();
}

#[test]
fn a_truncated_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    {
        let (mut store, _) =
            Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
        let evs: Vec<Event> = (0..5_000).map(|i| reading("d", i, T0)).collect();
        store.append(&evs, now).unwrap();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let (mut store, report) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    let rec = report.recovered.expect("a truncated log is detected");
    assert!(rec.moved_to.exists());
    assert_eq!(
        store.read_all().unwrap().len(),
        1,
        "fresh log with the audit event"
    );
}

#[test]
fn a_database_of_another_application_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE users(name TEXT); INSERT INTO users VALUES ('x');")
            .unwrap();
    }
    let now = Timestamp::synced(T0);
    let (_store, report) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    let rec = report.recovered.expect("moved aside");
    assert!(
        rec.reason.contains("not an Outpost event log"),
        "{}",
        rec.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits_and_get_distinct_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FixedClock::new(T0));
    let lo = LogOptions {
        store: opts(Limits::UNLIMITED, Durability::Full),
        commit_max_events: 1000,
        commit_max_delay: Duration::from_millis(20),
        clock_wait: Duration::ZERO,
    };
    let (log, _) = EventLog::open(&dir.path().join("e.db"), lo, clock).unwrap();
    let mut live = log.subscribe();
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                // The data path's append, which waits for others.
                let a = log
                    .append_since(
                        vec![reading("d", t * 1000 + i, T0)],
                        tokio::time::Instant::now(),
                    )
                    .await
                    .unwrap();
                assert_eq!(a.first, a.last);
                got.push(a.first.0);
            }
            got
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let stats = log.stats().borrow().clone();
    assert_eq!(stats.appended_total, 200);
    assert!(
        stats.commits_total < 200,
        "group commit shared transactions: {} commits",
        stats.commits_total
    );
    // The live feed keeps only recent batches: a receiver this far behind
    // is told it lagged, and then sees new commits as they happen.
    while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = live.try_recv()
    {
    }
    let a = log.append(vec![reading("d", 9999, T0)]).await.unwrap();
    let fresh = live.recv().await.unwrap();
    assert_eq!((fresh.len(), fresh[0].seq), (1, a.first));
    log.set_cursors(vec!["up".into()]).await.unwrap();
    log.ack("up", Seq(150)).await.unwrap();
    let all = log.read(Seq(0), 1000).await.unwrap();
    assert_eq!(all.len(), 201, "acknowledged events stay as history");
    let rest = log.read(Seq(150), 1000).await.unwrap();
    assert_eq!(rest.len(), 51);
    assert_eq!(log.cursor("up").await.unwrap(), Some(Seq(150)));
    log.close().await;
}

/// Appends `n` readings (in batches) and returns the last seq.
fn append_readings(store: &mut Store, n: i64) -> u64 {
    let now = Timestamp::synced(T0);
    let mut last = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let evs: Vec<Event> = chunk.iter().map(|i| reading("d", *i, T0 + i)).collect();
        last = store.append(&evs, now).unwrap().last.0;
    }
    last
}

fn audits(store: &mut Store) -> Vec<Audit> {
    store
        .read_all()
        .unwrap()
        .into_iter()
        .filter_map(|s| match s.event.body {
            Body::Audit(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn seqs_continue_after_an_unreadable_log_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let o = opts(Limits::UNLIMITED, Durability::Full);
    let (mut store, _) = Store::open(&path, o.clone(), now).unwrap();
    let last = append_readings(&mut store, 500);
    assert_eq!(last, 500);
    drop(store);
    // Garble the header: the file is moved aside.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].copy_from_slice(b"not sqlite, no!!");
    std::fs::write(&path, &bytes).unwrap();
    let (mut store, report) = Store::open(&path, o, now).unwrap();
    assert!(report.recovered.is_some());
    let first = report.continued_at.expect("continues above the old seqs");
    assert!(
        first > last,
        "fresh log starts at {first}, old one reached {last}"
    );
    let all = store.read_all().unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].seq.0 > last, "the audit event itself has a new seq");
    let Body::Audit(a) = &all[0].event.body else {
        panic!("{:?}", all[0])
    };
    assert_eq!(a.action, "log.recovered");
    assert!(
        a.detail.contains(&format!("continues at seq {first}")),
        "{}",
        a.detail
    );
    let next = store.append(&[reading("d", 1, T0)], now).unwrap();
    assert!(next.first.0 > all[0].seq.0);
}

#[test]
fn an_emptied_or_deleted_log_continues_above_its_seqs_and_says_so() {
    for how in ["emptied", "deleted"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let now = Timestamp::synced(T0);
        let o = opts(Limits::UNLIMITED, Durability::Full);
        let (mut store, _) = Store::open(&path, o.clone(), now).unwrap();
        let last = append_readings(&mut store, 300);
        drop(store);
        for side in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{side}", path.display()));
            if how == "emptied" && side.is_empty() {
                std::fs::write(&p, b"").unwrap();
            } else if p.exists() {
                std::fs::remove_file(&p).unwrap();
            }
        }
        let (mut store, report) = Store::open(&path, o.clone(), now).unwrap();
        assert!(
            report.recovered.is_none(),
            "{how}: an empty file is a valid database"
        );
        let first = report
            .continued_at
            .unwrap_or_else(|| panic!("{how}: not reported"));
        assert!(first > last, "{how}: {first} <= {last}");
        let a = audits(&mut store);
        assert_eq!(a.len(), 1, "{how}");
        assert_eq!(a[0].action, "log.recreated", "{how}");
        assert!(
            a[0].detail.contains(&format!("up to {}", first - 1)),
            "{how}: {}",
            a[0].detail
        );
        drop(store);
        // Reopened as it is: nothing more to report.
        let (mut store, report) = Store::open(&path, o, now).unwrap();
        assert!(report.continued_at.is_none(), "{how}");
        assert_eq!(audits(&mut store).len(), 1, "{how}");
    }
}

#[test]
fn the_seq_floor_is_written_once_per_block_not_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let (mut store, _) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Normal), now).unwrap();
    let floor = || super::seqfloor::SeqFloor::open(&path).unwrap().0.value();
    let at_open = floor();
    assert_eq!(at_open, 1 + SEQ_BLOCK);
    append_readings(&mut store, 1_000);
    assert_eq!(floor(), at_open, "no rewrite inside the block");
    // Crossing the block raises it once, ahead of the seqs given out.
    let evs: Vec<Event> = (0..SEQ_BLOCK as i64).map(|i| reading("d", i, T0)).collect();
    let a = store.append(&evs, now).unwrap();
    assert!(floor() > a.last.0 + 3);
}

#[test]
fn gap_records_of_a_long_outage_are_merged_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_rows: u64::MAX,
        max_bytes: 16 * 1024,
        max_age_ms: 0,
    };
    let now = Timestamp::synced(T0);
    let (mut store, _) = Store::open(
        &dir.path().join("e.db"),
        opts(limits, Durability::Normal),
        now,
    )
    .unwrap();
    store.set_cursors(&["up"]).unwrap();
    // The uplink is down: 2,000 commits, nearly every one of them evicting.
    for i in 0..2_000 {
        store.append(&[reading("d", i, T0 + i)], now).unwrap();
    }
    let all = store.read_all().unwrap();
    let gaps: Vec<&Gap> = all
        .iter()
        .filter_map(|s| match &s.event.body {
            Body::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    let telemetry = all.len() - gaps.len();
    assert_eq!(gaps.len(), 1, "one gap record, not one per commit");
    assert!(
        telemetry > 100,
        "the buffer still holds telemetry: {telemetry}"
    );
    let g = gaps[0];
    assert_eq!(
        g.count,
        store.stats().evicted_bytes_total,
        "the merged count is every drop"
    );
    assert_eq!(g.first_seq, 1);
    assert_eq!(store.stats().gaps_total, 1);
    // Once the uplink has the gap record, the next drop starts a new one.
    let gap_seq = all
        .iter()
        .find(|s| matches!(s.event.body, Body::Gap(_)))
        .unwrap()
        .seq;
    store.ack("up", gap_seq).unwrap();
    for i in 0..400 {
        store.append(&[reading("d", i, T0 + i)], now).unwrap();
    }
    let gaps: Vec<Gap> = store
        .read_all()
        .unwrap()
        .into_iter()
        .filter_map(|s| match s.event.body {
            Body::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(
        gaps.len(),
        1,
        "the delivered gap was reclaimed, a new one holds the rest"
    );
    assert!(gaps[0].first_seq > g.last_seq, "{:?} after {g:?}", gaps[0]);
}

#[test]
fn a_row_that_no_longer_decodes_reaches_readers_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let (mut store, _) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Normal), now).unwrap();
    append_readings(&mut store, 3);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute("UPDATE events SET body = x'ffffffff' WHERE seq = 2", [])
            .unwrap();
    }
    let got = store.read(Seq(0), 10).unwrap();
    assert_eq!(got.len(), 3);
    let Body::Gap(g) = &got[1].event.body else {
        panic!("{:?}", got[1])
    };
    assert_eq!(
        (got[1].seq, g.count, g.first_seq, g.last_seq),
        (Seq(2), 1, 2, 2)
    );
    assert_eq!(g.reason, "corrupt");
    assert_eq!(got[1].event.device, "d");
    assert_eq!(g.from_ms, T0 + 1);
    assert_eq!(store.stats().corrupt_rows_total, 1);
}

#[test]
fn the_reserve_does_not_thrash_on_a_full_disk_with_a_caught_up_log() {
    let Some(fs) = SmallFs::mount("4m") else {
        panic!("cannot mount a tmpfs: this test needs root (CAP_SYS_ADMIN)");
    };
    let path = fs.dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let (mut store, _) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    store.set_cursors(&["up"]).unwrap();
    assert!(store.stats().reserve_held);
    // Something else fills the disk.
    let filler = fs.dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _full = f.sync_all();
    }
    // The pipeline keeps trying: append, and acknowledge what was sent.
    let created = store.stats().reserve_created_total;
    for i in 0..300 {
        match store.append(&[reading("d", i, T0)], now) {
            Ok(a) => match store.ack("up", a.last) {
                Ok(()) | Err(LogError::DiskFull) => {}
                Err(e) => panic!("{e}"),
            },
            Err(LogError::DiskFull) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let s = store.stats().clone();
    assert!(
        s.reserve_created_total - created <= 1,
        "the reserve was rewritten {} times on a full disk",
        s.reserve_created_total - created
    );
    // Space returns: the reserve comes back (retry shortened for the test).
    std::fs::remove_file(&filler).unwrap();
    store.set_reserve_retry(std::time::Duration::ZERO);
    store.append(&[reading("d", -1, T0)], now).unwrap();
    assert!(store.stats().reserve_held, "{:?}", store.stats());
}

#[test]
fn a_log_open_elsewhere_is_refused_not_recovered_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let o = opts(Limits::UNLIMITED, Durability::Normal);
    let now = Timestamp::synced(T0);
    let (mut first, _) = Store::open(&path, o.clone(), now).unwrap();
    first.append(&[reading("d", 1, T0)], now).unwrap();
    match Store::open(&path, o.clone(), now) {
        Err(LogError::Locked { path: p }) => {
            assert_eq!(p, dir.path().join("events.db.lock"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second store opened a log that is in use"),
    }
    let msg = LogError::Locked { path: path.clone() }.to_string();
    assert!(msg.contains("another outpostd"), "{msg}");
    drop(first);
    let (mut again, report) = Store::open(&path, o, now).unwrap();
    assert!(report.recovered.is_none());
    assert_eq!(again.read_all().unwrap().len(), 1);
}

#[test]
fn a_file_where_the_data_directory_should_be_is_named_as_such_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, "not a directory").unwrap();
    let err = Store::open(
        &data.join("events.db"),
        opts(Limits::UNLIMITED, Durability::Normal),
        Timestamp::synced(T0),
    )
    .expect_err("a file is not a data directory");
    let said = err.to_string();
    assert!(said.contains(&*data.to_string_lossy()), "{said}");
    assert!(said.contains("is not a directory"), "{said}");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "not a directory");
}

#[test]
fn acknowledgements_ride_on_the_next_commit_and_are_saved_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let now = Timestamp::synced(T0);
    let saved = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row("SELECT acked FROM cursors WHERE name = 'up'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let (mut store, _) =
        Store::open(&path, opts(Limits::UNLIMITED, Durability::Full), now).unwrap();
    store.set_cursors(&["up"]).unwrap();
    append_readings(&mut store, 10);
    let commits = store.stats().commits_total;
    store.ack("up", Seq(4)).unwrap();
    store.ack("up", Seq(7)).unwrap();
    assert_eq!(store.cursor("up"), Some(Seq(7)));
    assert_eq!(saved(&path), 0, "an acknowledgement alone writes nothing");
    assert!(store.has_unsaved_cursors());
    store.append(&[reading("d", 1, T0)], now).unwrap();
    assert_eq!(saved(&path), 7, "saved with the next commit");
    assert_eq!(store.stats().commits_total, commits + 1, "in that commit");
    store.ack("up", Seq(9)).unwrap();
    store.flush_cursors().unwrap();
    assert_eq!(saved(&path), 9, "or by itself when no commit comes");
    store.ack("up", Seq(10)).unwrap();
    drop(store);
    assert_eq!(saved(&path), 10, "and when the log closes");
}
