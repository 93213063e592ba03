//! What a session publishes next: the backlog, read from the log in order
//! after the cursor, and — with the live lane — fresh events ahead of it.
//!
//! Without the live lane an uplink that comes back after an outage sends
//! nothing new until the whole backlog is through. With it, events
//! committed while the backlog is more than [`Feed::LAG`] events behind are
//! published at once ("live"), and the backlog skips them when it gets
//! there. The trade-off: upstream, a device's fresh events arrive before
//! its older ones; each event still arrives once per session and carries
//! its seq and timestamp, so consumers that order by those are unaffected.
//!
//! Invariants (with the window's: the cursor moves only over a contiguous,
//! acknowledged prefix of what was published):
//! - The live lane takes only events with seq above everything the backlog
//!   has read ([`Feed::live`]), and a session publishes live items before
//!   any backlog item read after them. So when a backlog message's
//!   acknowledgement moves the cursor to its last seq, every live event
//!   below that seq was published earlier and is acknowledged too.
//! - Live items never move the cursor themselves; the backlog passing over
//!   them does (a [`Item::Passed`] marker where the backlog read ends in
//!   skipped events).
//! - The set of live ranges is per session and bounded
//!   ([`Feed::MAX_RANGES`]); when it is full the live lane pauses and the
//!   backlog carries everything. After a failure the next session starts
//!   from the cursor, so events acknowledged on the live lane may be sent
//!   again (NATS removes them by message id; MQTT is at-least-once).

use std::borrow::Cow;
use std::collections::VecDeque;

use outpost_core::Seq;

use crate::log::{Committed, EventLog, LogError, StoredEvent};

/// Stored bytes read from the log at a time (besides the event count):
/// large events (a device with hundreds of tags) come in fewer per read, so
/// a draining uplink holds about this much decoded data, whatever the size
/// of its events.
const READ_BYTES: usize = 128 * 1024;

/// What a session queues for publishing, in order.
#[derive(Debug)]
pub(super) enum Item<T> {
    /// Something to publish; `live` items do not move the cursor.
    Publish { item: T, live: bool },
    /// The backlog has read up to this seq and skipped what followed its
    /// last published event (it went on the live lane): once everything
    /// published before this marker is acknowledged, the cursor may move
    /// here.
    Passed(u64),
}

/// What a session has queued, in publish order: live items first (in
/// arrival order), then the backlog with its markers.
#[derive(Debug)]
pub(super) struct Queue<T> {
    items: VecDeque<Item<T>>,
    /// How many items at the front are live.
    live: usize,
}

impl<T> Queue<T> {
    pub fn new() -> Self {
        Self {
            items: VecDeque::new(),
            live: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Live items waiting.
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Backlog items that read up to seq `upto`, at the back; then a
    /// [`Item::Passed`] marker if the last of them (`last_seq`) ends before
    /// `upto` (what followed went elsewhere).
    pub fn backlog(&mut self, items: Vec<T>, last_seq: impl Fn(&T) -> u64, upto: u64) {
        let covered = items.last().map(&last_seq);
        self.items.extend(
            items
                .into_iter()
                .map(|item| Item::Publish { item, live: false }),
        );
        if covered != Some(upto) {
            self.items.push_back(Item::Passed(upto));
        }
    }

    /// Live items: ahead of the queued backlog, behind earlier live items.
    pub fn live(&mut self, items: Vec<T>) {
        for item in items {
            self.items
                .insert(self.live, Item::Publish { item, live: true });
            self.live += 1;
        }
    }

    pub fn pop(&mut self) -> Option<Item<T>> {
        let next = self.items.pop_front();
        if matches!(next, Some(Item::Publish { live: true, .. })) {
            self.live -= 1;
        }
        next
    }
}

#[derive(Debug)]
pub(super) struct Feed {
    /// The last seq the backlog has read.
    next: u64,
    live_lane: bool,
    /// The uplink's name: events routed elsewhere are skipped (and passed).
    uplink: String,
    /// Seq ranges taken by the live lane and not yet passed by the
    /// backlog; ascending and disjoint.
    live: VecDeque<(u64, u64)>,
    /// The last log read found nothing new, and every committed batch
    /// since continued exactly where the backlog stood ([`Feed::follow`]):
    /// no need to read the log until that changes.
    caught_up: bool,
}

impl Feed {
    /// The live lane is used while the backlog is more than this many
    /// events behind the newest committed event.
    pub const LAG: u64 = 1000;
    /// Most live ranges remembered at once (adjacent ranges merge, so this
    /// is reached only when the live lane keeps missing broadcasts).
    pub const MAX_RANGES: usize = 1024;

    pub fn new(cursor: u64, live_lane: bool, uplink: &str) -> Self {
        Self {
            next: cursor,
            live_lane,
            uplink: uplink.to_string(),
            live: VecDeque::new(),
            caught_up: false,
        }
    }

    /// Up to `max` backlog events after what was read so far, without those
    /// the live lane took, and the last seq read (`None`: nothing new).
    pub async fn backlog(
        &mut self,
        log: &EventLog,
        max: usize,
    ) -> Result<Option<(Vec<StoredEvent>, u64)>, LogError> {
        if self.caught_up {
            return Ok(None);
        }
        let mut events = log.read_bounded(Seq(self.next), max, READ_BYTES).await?;
        let Some(last) = events.last().map(|e| e.seq.0) else {
            self.caught_up = true;
            return Ok(None);
        };
        self.next = last;
        events.retain(|e| e.event.route.allows(&self.uplink) && !self.taken(e.seq.0));
        while self.live.front().is_some_and(|&(_, hi)| hi <= last) {
            self.live.pop_front();
        }
        Ok(Some((events, last)))
    }

    /// A committed batch that continues exactly where the backlog stands,
    /// taken as backlog without reading the log again (the uplink is
    /// caught up). Anything else — a gap, a missed batch — sends the next
    /// [`Feed::backlog`] to the log.
    /// Returns the events for this uplink and the last seq taken (as
    /// [`Feed::backlog`] does).
    /// The batch is borrowed when every event in it is for this uplink (the
    /// usual case: no copy of the events).
    pub fn follow<'b>(&mut self, batch: &'b Committed) -> Option<(Cow<'b, [StoredEvent]>, u64)> {
        let (first, last) = (batch.first()?.seq.0, batch.last()?.seq.0);
        if !self.caught_up || first != self.next + 1 {
            self.caught_up = false;
            return None;
        }
        self.next = last;
        let mine = |e: &StoredEvent| e.event.route.allows(&self.uplink);
        if batch.iter().all(mine) {
            return Some((Cow::Borrowed(batch.as_slice()), last));
        }
        let events = batch.iter().filter(|e| mine(e)).cloned().collect();
        Some((Cow::Owned(events), last))
    }

    /// Forget being caught up (missed broadcasts, or as a safety net).
    pub fn reread(&mut self) {
        self.caught_up = false;
    }

    fn taken(&self, seq: u64) -> bool {
        self.live.iter().any(|&(lo, hi)| lo <= seq && seq <= hi)
    }

    /// The events of a committed batch to publish now on the live lane, if
    /// the lane is on, the backlog is far enough behind, and `room` says the
    /// session can queue them; they are then remembered as taken.
    pub fn live(&mut self, batch: &Committed, room: bool) -> Option<Vec<StoredEvent>> {
        let last = batch.last()?.seq.0;
        if !self.live_lane || !room || last <= self.next.saturating_add(Self::LAG) {
            return None;
        }
        let lo = batch.iter().find(|e| e.seq.0 > self.next)?.seq.0;
        // The whole range is taken (the backlog skips it), but only events
        // routed to this uplink are sent.
        let events: Vec<StoredEvent> = batch
            .iter()
            .filter(|e| e.seq.0 >= lo && e.event.route.allows(&self.uplink))
            .cloned()
            .collect();
        let full = self.live.len() >= Self::MAX_RANGES;
        match self.live.back_mut() {
            Some((_, hi)) if *hi + 1 >= lo => *hi = (*hi).max(last),
            _ if full => return None,
            _ => self.live.push_back((lo, last)),
        }
        Some(events)
    }

    /// Whether the live lane is configured (the session then listens to
    /// the broadcast even while it has a backlog queued).
    pub fn live_lane(&self) -> bool {
        self.live_lane
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use outpost_core::{Body, Event, Point, Timestamp, Value};

    use super::*;

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Committed {
        Arc::new(
            seqs.map(|s| StoredEvent {
                seq: Seq(s),
                event: Event::new(
                    "d",
                    Timestamp::synced(1),
                    Body::Telemetry(vec![Point::good("t", Value::U64(s))]),
                ),
            })
            .collect(),
        )
    }

    #[test]
    fn live_only_when_far_behind_and_only_unread_events() {
        let mut f = Feed::new(10, true, "up");
        assert!(f.live(&batch(11..=20), true).is_none(), "not behind");
        let far = Feed::LAG + 100;
        assert!(f.live(&batch(far..=far + 4), false).is_none(), "no room");
        let got = f.live(&batch(far..=far + 4), true).map(|v| v.len());
        assert_eq!(got, Some(5));
        assert!(f.taken(far) && f.taken(far + 4) && !f.taken(far + 5));
        // Adjacent batches merge into one range.
        assert!(f.live(&batch(far + 5..=far + 9), true).is_some());
        assert_eq!(f.live.len(), 1);
        let mut off = Feed::new(10, false, "up");
        assert!(off.live(&batch(far..=far + 4), true).is_none(), "lane off");
    }

    #[test]
    fn the_queue_puts_live_items_first_and_marks_skipped_backlog() {
        let mut q: Queue<u64> = Queue::new();
        q.backlog(vec![1, 2], |s| *s, 3); // 3 went live: a marker
        q.live(vec![10]);
        q.live(vec![11, 12]);
        q.backlog(vec![4], |s| *s, 4);
        assert_eq!(q.live_len(), 3);
        let mut order = Vec::new();
        while let Some(i) = q.pop() {
            order.push(match i {
                Item::Publish { item, live } => format!("{item}{}", if live { "L" } else { "" }),
                Item::Passed(s) => format!("P{s}"),
            });
        }
        assert_eq!(order, ["10L", "11L", "12L", "1", "2", "P3", "4"]);
        assert_eq!(q.live_len(), 0);
    }

    #[test]
    fn follows_only_contiguous_batches_once_caught_up() {
        let mut f = Feed::new(10, false, "up");
        assert!(f.follow(&batch(11..=12)).is_none(), "not caught up yet");
        f.caught_up = true;
        assert_eq!(
            f.follow(&batch(11..=12)).map(|(v, upto)| (v.len(), upto)),
            Some((2, 12))
        );
        assert_eq!(f.next, 12);
        assert!(f.follow(&batch(14..=15)).is_none(), "a gap (seq 13)");
        assert!(!f.caught_up, "so the next backlog call reads the log");
    }

    #[test]
    fn the_range_set_is_bounded() {
        let mut f = Feed::new(0, true, "up");
        let mut s = Feed::LAG + 10;
        for _ in 0..Feed::MAX_RANGES {
            assert!(f.live(&batch(s..=s), true).is_some());
            s += 2; // a gap: a new range each time
        }
        assert!(f.live(&batch(s..=s), true).is_none());
        assert_eq!(f.live.len(), Feed::MAX_RANGES);
    }
}
