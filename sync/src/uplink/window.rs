//! The in-flight window: messages published and not yet acknowledged, in
//! publish order. The cursor may advance to a message's last seq only when
//! it and every message before it are acknowledged. Live-lane messages
//! (see `feed`) hold a place in the order but never move the cursor;
//! markers of where the backlog has passed do, once everything before them
//! is acknowledged.

use std::collections::VecDeque;

use tokio::time::Instant;

#[derive(Debug)]
struct Slot<Id> {
    id: Option<Id>,
    last_seq: u64,
    events: usize,
    sent: Instant,
    acked: bool,
    /// Whether releasing this slot moves the cursor to `last_seq`.
    advances: bool,
}

#[derive(Debug)]
pub struct Window<Id> {
    slots: VecDeque<Slot<Id>>,
    capacity: usize,
}

impl<Id: PartialEq + Copy> Window<Id> {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn has_room(&self) -> bool {
        self.slots.len() < self.capacity
    }

    /// Records a published message; `id` may come later ([`Window::assign`]).
    /// A `live` message never moves the cursor.
    pub fn push(&mut self, id: Option<Id>, last_seq: u64, events: usize, live: bool) {
        self.slots.push_back(Slot {
            id,
            last_seq,
            events,
            sent: Instant::now(),
            acked: false,
            advances: !live,
        });
    }

    /// Records that the backlog has passed `seq` (what followed its last
    /// message went on the live lane); releases like an acknowledgement.
    pub fn push_passed(&mut self, seq: u64) -> Option<(Option<u64>, usize)> {
        self.slots.push_back(Slot {
            id: None,
            last_seq: seq,
            events: 0,
            sent: Instant::now(),
            acked: true,
            advances: true,
        });
        self.release()
    }

    /// Gives the oldest message still without an id this id (MQTT packet ids
    /// are assigned when the client sends, in publish order).
    pub fn assign(&mut self, id: Id) -> bool {
        match self.slots.iter_mut().find(|s| s.id.is_none() && !s.acked) {
            Some(s) => {
                s.id = Some(id);
                true
            }
            None => false,
        }
    }

    /// Marks `id` acknowledged. Returns the seq the cursor may now advance
    /// to (`None` if it stays) and how many events that releases, if
    /// anything was released.
    pub fn ack(&mut self, id: Id) -> Option<(Option<u64>, usize)> {
        if let Some(s) = self.slots.iter_mut().find(|s| s.id == Some(id) && !s.acked) {
            s.acked = true;
        }
        self.release()
    }

    /// Pops the acknowledged prefix.
    fn release(&mut self) -> Option<(Option<u64>, usize)> {
        let mut released = false;
        let mut upto = None;
        let mut events = 0;
        while self.slots.front().is_some_and(|s| s.acked) {
            if let Some(s) = self.slots.pop_front() {
                released = true;
                if s.advances {
                    upto = Some(s.last_seq);
                }
                events += s.events;
            }
        }
        released.then_some((upto, events))
    }

    /// When the oldest unacknowledged message was published.
    pub fn oldest(&self) -> Option<Instant> {
        self.slots.iter().find(|s| !s.acked).map(|s| s.sent)
    }

    /// Forgets everything (the link is being re-established; unacknowledged
    /// messages will be published again from the cursor).
    pub fn clear(&mut self) -> usize {
        let n = self.slots.len();
        self.slots.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cursor_only_moves_over_contiguous_acks() {
        let mut w: Window<u16> = Window::new(3);
        w.push(None, 10, 10, false);
        w.push(None, 20, 10, false);
        w.push(None, 25, 5, false);
        assert!(!w.has_room());
        assert!(w.assign(1) && w.assign(2) && w.assign(3));
        assert_eq!(w.ack(2), None, "an ack out of order releases nothing yet");
        assert_eq!(w.ack(1), Some((Some(20), 20)));
        assert_eq!(w.ack(9), None, "unknown ids are ignored");
        assert_eq!(w.ack(3), Some((Some(25), 5)));
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn live_messages_hold_their_place_but_do_not_move_the_cursor() {
        let mut w: Window<u16> = Window::new(8);
        w.push(None, 10, 10, false); // backlog ..10
        w.push(None, 5000, 3, true); // live 4998..5000
        w.push(None, 20, 10, false); // backlog ..20
        assert_eq!(
            w.push_passed(30),
            None,
            "a marker waits for what is before it"
        );
        assert!(w.assign(1) && w.assign(2) && w.assign(3));
        assert!(!w.assign(4), "markers take no packet id");
        assert_eq!(w.ack(2), None);
        assert_eq!(
            w.ack(1),
            Some((Some(10), 13)),
            "the live ack released, not moved"
        );
        assert_eq!(
            w.ack(3),
            Some((Some(30), 10)),
            "the marker moves the cursor"
        );
        assert!(w.is_empty());
        w.push(None, 6000, 1, true);
        assert_eq!(w.ack(4), None);
        assert!(w.assign(5));
        assert_eq!(
            w.ack(5),
            Some((None, 1)),
            "live alone: released, cursor stays"
        );
        assert_eq!(
            w.push_passed(40),
            Some((Some(40), 0)),
            "a marker at the front releases at once"
        );
    }
}
