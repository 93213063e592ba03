//! Debounced inputs, pulse counters with a rate, and outputs with an
//! initial state, a safe state and timed pulses.

use std::collections::VecDeque;
use std::time::Duration;

use embedded_hal::digital::{InputPin, OutputPin};
use tokio::time::Instant;

/// An edge the kernel (or a fake) reports: the new level and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The line's logical level after the edge (active-low already applied).
    pub high: bool,
    pub at: Instant,
}

/// A contact whose level counts once it has held for `debounce`.
#[derive(Debug, Clone)]
pub struct Debouncer {
    debounce: Duration,
    stable: bool,
    /// The last level seen and since when, if it differs from `stable`.
    pending: Option<(bool, Instant)>,
}

impl Debouncer {
    pub fn new(initial: bool, debounce: Duration) -> Self {
        Debouncer {
            debounce,
            stable: initial,
            pending: None,
        }
    }

    pub fn level(&self) -> bool {
        self.stable
    }

    /// Feeds an edge; returns the new stable level if the change needs no
    /// waiting (no debounce).
    pub fn edge(&mut self, e: Edge) -> Option<bool> {
        if e.high == self.stable {
            // Back to the stable level before the debounce time: a bounce.
            self.pending = None;
            return None;
        }
        if self.debounce.is_zero() {
            self.stable = e.high;
            return Some(e.high);
        }
        self.pending = Some((e.high, e.at));
        None
    }

    /// When the pending level will have held long enough.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.map(|(_, at)| at + self.debounce)
    }

    /// At `now`: the new stable level, if a pending one has held.
    pub fn settle(&mut self, now: Instant) -> Option<bool> {
        let (level, at) = self.pending?;
        if now >= at + self.debounce {
            self.pending = None;
            self.stable = level;
            Some(level)
        } else {
            None
        }
    }
}

/// Counts rising edges (pulses of a flow or energy meter) and derives a
/// rate over a sliding window.
#[derive(Debug, Clone)]
pub struct PulseCounter {
    count: u64,
    window: Duration,
    /// Pulse times within the window, oldest first (bounded by `max_kept`).
    recent: VecDeque<Instant>,
    max_kept: usize,
    last_level: bool,
}

impl PulseCounter {
    /// A counter starting from `restored` (the last count in the log).
    pub fn new(restored: u64, window: Duration) -> Self {
        PulseCounter {
            count: restored,
            window,
            recent: VecDeque::new(),
            max_kept: 100_000,
            last_level: false,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Feeds an edge; a low-to-high transition is a pulse.
    pub fn edge(&mut self, e: Edge) {
        if e.high && !self.last_level {
            self.count += 1;
            if self.recent.len() >= self.max_kept {
                self.recent.pop_front();
            }
            self.recent.push_back(e.at);
        }
        self.last_level = e.high;
    }

    /// Pulses per minute over the window ending at `now`.
    pub fn per_minute(&mut self, now: Instant) -> f64 {
        while let Some(t) = self.recent.front() {
            if now.duration_since(*t) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.len() as f64 * 60.0 / self.window.as_secs_f64().max(1e-9)
    }
}

/// A level input read directly (no edge events): for the periodic state
/// report, or lines without edge support.
pub fn read_level<P: InputPin>(pin: &mut P, active_low: bool) -> Result<bool, P::Error> {
    Ok(pin.is_high()? != active_low)
}

/// An output with its initial and safe states and optional timed pulses.
#[derive(Debug)]
pub struct Output<P: OutputPin> {
    pin: P,
    active_low: bool,
    safe: bool,
    on: bool,
    /// A pulse in progress ends at this time (back to `!level`).
    pulse_until: Option<(Instant, bool)>,
}

impl<P: OutputPin> Output<P> {
    /// Drives the line to `initial` at once.
    pub fn new(pin: P, active_low: bool, initial: bool, safe: bool) -> Result<Self, P::Error> {
        let mut o = Output {
            pin,
            active_low,
            safe,
            on: initial,
            pulse_until: None,
        };
        o.drive(initial)?;
        Ok(o)
    }

    fn drive(&mut self, on: bool) -> Result<(), P::Error> {
        if on != self.active_low {
            self.pin.set_high()?;
        } else {
            self.pin.set_low()?;
        }
        self.on = on;
        Ok(())
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Sets the output (ends a pulse in progress).
    pub fn set(&mut self, on: bool) -> Result<(), P::Error> {
        self.pulse_until = None;
        self.drive(on)
    }

    /// `on` for `length`, then back to the level it had.
    pub fn pulse(&mut self, on: bool, length: Duration, now: Instant) -> Result<(), P::Error> {
        let back = self.on;
        self.drive(on)?;
        self.pulse_until = Some((now + length, back));
        Ok(())
    }

    /// When a pulse in progress ends.
    pub fn deadline(&self) -> Option<Instant> {
        self.pulse_until.map(|(t, _)| t)
    }

    /// At `now`: ends a pulse that is due.
    pub fn tick(&mut self, now: Instant) -> Result<(), P::Error> {
        if let Some((t, back)) = self.pulse_until {
            if now >= t {
                self.pulse_until = None;
                self.drive(back)?;
            }
        }
        Ok(())
    }

    /// Drives the safe state (shutdown); returns the pin.
    pub fn shut_down(mut self) -> Result<P, P::Error> {
        let safe = self.safe;
        self.drive(safe)?;
        Ok(self.pin)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::RefCell;
    use std::convert::Infallible;
    use std::rc::Rc;

    use embedded_hal::digital::{ErrorType, PinState};

    use super::*;

    /// An output pin that records what it was driven to.
    #[derive(Debug, Clone, Default)]
    struct FakeOut(Rc<RefCell<Vec<PinState>>>);

    impl ErrorType for FakeOut {
        type Error = Infallible;
    }

    impl OutputPin for FakeOut {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.0.borrow_mut().push(PinState::Low);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            self.0.borrow_mut().push(PinState::High);
            Ok(())
        }
    }

    /// An input pin reading a scripted level.
    #[derive(Debug)]
    struct FakeIn(bool);

    impl ErrorType for FakeIn {
        type Error = Infallible;
    }

    impl InputPin for FakeIn {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            Ok(self.0)
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            Ok(!self.0)
        }
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_bouncing_edge_train_yields_one_change() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(false, Duration::from_millis(20));
        // A contact closing: 5 bounces within 8 ms, then high for good.
        let mut changes = Vec::new();
        for (ms, high) in [
            (0, true),
            (1, false),
            (3, true),
            (4, false),
            (6, true),
            (8, false),
            (9, true),
        ] {
            if let Some(l) = d.edge(Edge {
                high,
                at: at(t0, ms),
            }) {
                changes.push(l);
            }
            if let Some(l) = d.settle(at(t0, ms)) {
                changes.push(l);
            }
        }
        assert!(changes.is_empty(), "no change while bouncing: {changes:?}");
        assert_eq!(d.deadline(), Some(at(t0, 29)));
        assert_eq!(d.settle(at(t0, 28)), None);
        assert_eq!(d.settle(at(t0, 29)), Some(true));
        assert!(d.level());
        // A glitch shorter than the debounce is ignored.
        d.edge(Edge {
            high: false,
            at: at(t0, 100),
        });
        d.edge(Edge {
            high: true,
            at: at(t0, 105),
        });
        assert_eq!(d.settle(at(t0, 200)), None);
        assert!(d.level());
        // Without debounce, every change counts at once.
        let mut raw = Debouncer::new(false, Duration::ZERO);
        assert_eq!(raw.edge(Edge { high: true, at: t0 }), Some(true));
    }

    #[test]
    fn pulses_count_from_the_restored_value_and_give_a_rate() {
        let t0 = Instant::now();
        let mut c = PulseCounter::new(1_000, Duration::from_secs(60));
        // 30 pulses 1 s apart (each: rising, then falling 100 ms later).
        for i in 0..30 {
            c.edge(Edge {
                high: true,
                at: at(t0, i * 1000),
            });
            c.edge(Edge {
                high: false,
                at: at(t0, i * 1000 + 100),
            });
        }
        // A repeated high (no falling edge between) is not a new pulse.
        c.edge(Edge {
            high: true,
            at: at(t0, 30_000),
        });
        c.edge(Edge {
            high: true,
            at: at(t0, 30_050),
        });
        assert_eq!(c.count(), 1_031);
        assert!((c.per_minute(at(t0, 30_100)) - 31.0).abs() < 1e-9);
        // A minute later, only what falls in the window counts.
        assert!(
            (c.per_minute(at(t0, 80_500)) - 10.0).abs() < 1e-9,
            "{}",
            c.per_minute(at(t0, 80_500))
        );
        assert_eq!(c.per_minute(at(t0, 200_000)), 0.0);
        assert_eq!(c.count(), 1_031, "the count never goes back");
    }

    #[test]
    fn outputs_start_initial_pulse_and_end_in_the_safe_state() {
        let t0 = Instant::now();
        let pin = FakeOut::default();
        let log = pin.0.clone();
        // Active-low relay: "on" drives the line low.
        let mut o = Output::new(pin, true, false, false).unwrap();
        assert_eq!(*log.borrow(), [PinState::High]);
        o.pulse(true, Duration::from_millis(500), t0).unwrap();
        assert!(o.is_on());
        assert_eq!(o.deadline(), Some(at(t0, 500)));
        o.tick(at(t0, 499)).unwrap();
        assert!(o.is_on());
        o.tick(at(t0, 500)).unwrap();
        assert!(!o.is_on());
        o.set(true).unwrap();
        let _pin = o.shut_down().unwrap();
        assert_eq!(
            *log.borrow(),
            [
                PinState::High,
                PinState::Low,
                PinState::High,
                PinState::Low,
                PinState::High
            ],
            "initial off, pulse on, back off, set on, safe off"
        );
        assert!(
            read_level(&mut FakeIn(false), true).unwrap(),
            "active-low reads low as on"
        );
        assert!(!read_level(&mut FakeIn(false), false).unwrap());
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any train of bounces shorter than the debounce time, ending on a
        /// level that then holds, gives exactly one change (none if it ends
        /// where it began).
        #[test]
        fn bounces_give_at_most_one_change(
            gaps in proptest::collection::vec(0u64..20, 0..40),
            end_high in any::<bool>(),
        ) {
            let t0 = Instant::now();
            let debounce = Duration::from_millis(20);
            let mut d = Debouncer::new(false, debounce);
            let mut t = t0;
            let mut level = false;
            let mut changes = 0;
            for g in &gaps {
                t += Duration::from_millis(*g);
                level = !level;
                if d.edge(Edge { high: level, at: t }).is_some() { changes += 1; }
                if d.settle(t).is_some() { changes += 1; }
            }
            if level != end_high {
                t += Duration::from_millis(1);
                d.edge(Edge { high: end_high, at: t });
            }
            if d.settle(t + debounce).is_some() { changes += 1; }
            prop_assert_eq!(changes, usize::from(end_high));
            prop_assert_eq!(d.level(), end_high);
        }
    }
}
