//! The in-flight window: messages published and not yet acknowledged, in
//! publish order. The cursor may advance to a message's last seq only when
//! it and every message before it are acknowledged.

use std::collections::VecDeque;

use tokio::time::Instant;

#[derive(Debug)]
struct Slot<Id> {
    id: Option<Id>,
    last_seq: u64,
    events: usize,
    sent: Instant,
    acked: bool,
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
    pub fn push(&mut self, id: Option<Id>, last_seq: u64, events: usize) {
        self.slots.push_back(Slot {
            id,
            last_seq,
            events,
            sent: Instant::now(),
            acked: false,
        });
    }

    /// Gives the oldest message still without an id this id (MQTT packet ids
    /// are assigned when the client sends, in publish order).
    pub fn assign(&mut self, id: Id) -> bool {
        match self.slots.iter_mut().find(|s| s.id.is_none()) {
            Some(s) => {
                s.id = Some(id);
                true
            }
            None => false,
        }
    }

    /// Marks `id` acknowledged. Returns the seq the cursor may now advance
    /// to, and how many events that releases, if anything was released.
    pub fn ack(&mut self, id: Id) -> Option<(u64, usize)> {
        if let Some(s) = self.slots.iter_mut().find(|s| s.id == Some(id) && !s.acked) {
            s.acked = true;
        }
        let mut upto = None;
        let mut events = 0;
        while self.slots.front().is_some_and(|s| s.acked) {
            if let Some(s) = self.slots.pop_front() {
                upto = Some(s.last_seq);
                events += s.events;
            }
        }
        upto.map(|u| (u, events))
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
        w.push(None, 10, 10);
        w.push(None, 20, 10);
        w.push(None, 25, 5);
        assert!(!w.has_room());
        assert!(w.assign(1) && w.assign(2) && w.assign(3));
        assert_eq!(w.ack(2), None, "an ack out of order releases nothing yet");
        assert_eq!(w.ack(1), Some((20, 20)));
        assert_eq!(w.ack(9), None, "unknown ids are ignored");
        assert_eq!(w.ack(3), Some((25, 5)));
        assert!(w.is_empty());
    }
}
