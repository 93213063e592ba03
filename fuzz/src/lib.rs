//! What the fuzz targets share: a runtime with paused time (timeouts pass
//! at once, so a target spends its time on parsing, not waiting), and the
//! Modbus requests the poller sends, shaped from fuzz input.
//!
//! Invariant: nothing here talks to the network or the real clock.

use std::time::Duration;

use outpost_config::modbus::Table;
use outpost_drivers::modbus::pdu::{Request, Response};

/// A single-threaded runtime whose clock only moves when every task waits.
///
/// # Panics
/// When the runtime cannot be built (the fuzz run cannot start at all).
#[allow(clippy::expect_used)]
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// Reads a fuzz input front to back; past the end, every read is zero or
/// empty. The inputs are simple byte formats (each target's doc says which)
/// so that seeds can be written from the tests' own data.
#[derive(Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    /// Big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// A request the poller could send, read as `kind, address (2), count (2)`:
/// kind 0–3 reads coils, discrete inputs, input or holding registers; 4 and
/// 5 write one coil or register (the count is the value); 6 and 7 write
/// `count` coils or registers (of a pattern). Counts are kept within what
/// Modbus allows, as the planner keeps them.
pub fn request(b: &mut Bytes<'_>) -> Request {
    let kind = b.u8() % 8;
    let address = b.u16();
    let count = b.u16();
    match kind {
        0..=3 => {
            let table =
                [Table::Coil, Table::Discrete, Table::Input, Table::Holding][usize::from(kind)];
            let max = if table.is_bits() { 2000 } else { 125 };
            Request::Read {
                table,
                address,
                count: count % max + 1,
            }
        }
        4 => Request::WriteCoil {
            address,
            value: count != 0,
        },
        5 => Request::WriteRegister {
            address,
            value: count,
        },
        6 => Request::WriteCoils {
            address,
            values: (0..count % 1968 + 1).map(|i| i % 3 == 0).collect(),
        },
        _ => Request::WriteRegisters {
            address,
            values: (0..count % 123 + 1).collect(),
        },
    }
}

/// What the device sends back for one request, read as `chunks`, then per
/// chunk `pause (×4 ms), length, bytes`, then `hang up after` (odd: close).
#[derive(Debug)]
pub struct Reply<'a> {
    pub chunks: Vec<(Duration, &'a [u8])>,
    pub hang_up: bool,
}

pub fn reply<'a>(b: &mut Bytes<'a>) -> Reply<'a> {
    let n = b.u8() % 17;
    let chunks = (0..n)
        .map(|_| {
            let pause = Duration::from_millis(u64::from(b.u8()) * 4);
            let len = usize::from(b.u8());
            (pause, b.take(len))
        })
        .collect();
    Reply {
        chunks,
        hang_up: b.u8() % 2 == 1,
    }
}
/// Checks that a response the link accepted answers `req` in full.
///
/// # Panics
/// When it does not.
pub fn check_response(req: &Request, resp: &Response) {
    match (req, resp) {
        (Request::Read { table, count, .. }, Response::Bits(b)) if table.is_bits() => {
            assert_eq!(b.len(), usize::from(*count));
        }
        (Request::Read { table, count, .. }, Response::Registers(r)) if !table.is_bits() => {
            assert_eq!(r.len(), usize::from(*count));
        }
        (Request::Read { .. }, other) => panic!("{other:?} answers {req:?}"),
        (_, Response::Written) => {}
        (_, other) => panic!("{other:?} answers the write {req:?}"),
    }
}
