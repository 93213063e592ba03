//! Store-and-forward: the SQLite event log ([`log`]), and (in later
//! releases) the uplinks that drain it, each from its own cursor.
//!
//! Uplinks reach the log only through its cursor API (`read`, `ack`); the
//! log knows nothing about them.

pub mod control;
pub mod log;
pub mod uplink;

pub use log::{EventLog, LogError, LogOptions, LogStats, Refused, StoredEvent};
