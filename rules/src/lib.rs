//! The offline rule engine's interface. This release has one stage: pass
//! every event through unchanged. The rule-chain engine (ThingsBoard import,
//! scripts, native edge nodes) implements the same [`Stage`] trait.
//!
//! Invariants:
//! - A stage is synchronous and pure: it is given `now` and an event and
//!   pushes zero or more output events; it does no I/O, so it is tested with
//!   a fixed clock. The daemon's rules task owns the I/O around it.
//! - Timers run through [`Stage::on_tick`], never through sleeping.

use outpost_config::Rules;
use outpost_core::{Event, Timestamp};

/// One step of event processing between the drivers and the log.
pub trait Stage: Send + std::fmt::Debug {
    /// Processes one event, pushing what should go on to `out`.
    fn on_event(&mut self, now: Timestamp, event: Event, out: &mut Vec<Event>);

    /// Called periodically (windows, heartbeats, delays). Default: nothing.
    fn on_tick(&mut self, _now: Timestamp, _out: &mut Vec<Event>) {}
}

/// Forwards every event unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Stage for PassThrough {
    fn on_event(&mut self, _now: Timestamp, event: Event, out: &mut Vec<Event>) {
        out.push(event);
    }
}

/// Builds the processing stage for the configured rules.
pub fn build(_cfg: &Rules) -> Box<dyn Stage> {
    Box::new(PassThrough)
}

#[cfg(test)]
mod tests {
    use outpost_core::{Body, Point, Value};

    use super::*;

    #[test]
    fn pass_through_keeps_events_and_order() {
        let mut stage = build(&Rules::default());
        let now = Timestamp::synced(1_000);
        let mut out = Vec::new();
        for i in 0..3 {
            let ev = Event::new(
                "d",
                now,
                Body::Telemetry(vec![Point::good("v", Value::I64(i))]),
            );
            stage.on_event(now, ev, &mut out);
        }
        stage.on_tick(now, &mut out);
        let vals: Vec<_> = out
            .iter()
            .map(|e| match &e.body {
                Body::Telemetry(p) => p[0].value.clone(),
                _ => Value::Bool(false),
            })
            .collect();
        assert_eq!(vals, vec![Value::I64(0), Value::I64(1), Value::I64(2)]);
    }
}
