//! Modbus RTU and TCP devices.
//!
//! Layers, bottom up: [`pdu`] (function codes, CRC), [`link`] (RTU framing
//! over a serial line or TCP, MBAP over TCP; faults classified and counted),
//! [`value`] (types, word order, scale, write checks), [`plan`] (merging
//! tags into few requests), [`poller`] (one device's poll groups,
//! report-by-exception, back-off) and [`bus`] (the task owning a link).
//!
//! The framing is our own rather than tokio-modbus's: its RTU decoder
//! resynchronises silently on CRC errors and has no per-request timeout,
//! while a gateway must count CRC errors, garbage and truncated frames,
//! keep the inter-frame gap, and give each request a deadline.

pub mod bus;
pub mod line_model;
pub mod link;
pub mod pdu;
pub mod plan;
pub mod poller;
pub(crate) mod rs485;
pub mod value;

pub use bus::{ModbusDriver, Opener};
