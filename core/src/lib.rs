//! Outpost's event model: what a reading, an alarm or an audit entry is, once it
//! is inside the gateway.
//!
//! Invariants:
//! - An [`Event`] is immutable once built; the log assigns its [`Seq`] when the
//!   transaction holding it commits, never before.
//! - The kind of an event follows from its [`Body`]; there is no separate tag
//!   that could disagree with the payload.
//! - Every timestamp carries a [`ClockQuality`]: a gateway without a real-time
//!   clock boots in the past, and events stamped then must say so.
//! - Nothing here does I/O ([`task`] only counts the tasks it spawns). The encoding ([`codec`]) is postcard: compact,
//!   deterministic, and versioned by [`codec::FORMAT_VERSION`].

pub mod codec;
mod event;
pub mod liveness;
pub mod task;
mod time;
pub mod utc;

pub use event::{
    Alarm, AlarmSeverity, AlarmState, AttributeScope, Audit, Body, DeviceStatus, Event, EventKind,
    Gap, Point, Priority, Propagation, Publish, Quality, Route, Seq, Status, Value,
};
pub use time::{
    boot_ms_now, jitter, unix_ms_now, Clock, ClockPolicy, ClockQuality, FixedClock, ManualClock,
    SystemClock, Timestamp,
};
