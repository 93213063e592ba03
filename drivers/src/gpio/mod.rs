//! GPIO: contacts, alarms and pulse outputs read from lines, relays
//! switched on lines. The logic here is generic over embedded-hal's
//! `InputPin` / `OutputPin` and an edge-event source, so it is tested with
//! scripted fakes; the Linux implementation (character device, kernel edge
//! events) is a thin wrapper around it.
//!
//! Invariants:
//! - Time is passed in (`Instant`s), never read here: the same edge train
//!   gives the same result in a test and on a gateway.
//! - A bouncing contact yields one change: a level counts only once it has
//!   held for the debounce time.
//! - A pulse counter only grows; it starts from the count the daemon
//!   restores from the log, so it survives restarts and power cuts.
//! - An output is driven to its initial state at start and to its safe
//!   state on shutdown, whatever happened in between.

pub mod core;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod logic;
