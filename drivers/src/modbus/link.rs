//! Links: carry one request and its response at a time, over RTU framing
//! (serial line, or RTU over TCP) or Modbus TCP framing (MBAP).
//!
//! Invariants:
//! - At most one transaction is on a link at a time (`&mut self`).
//! - RTU: the line is quiet for at least the inter-frame gap before a request
//!   goes out; bytes waiting before a request are line noise, counted and
//!   dropped; a response is searched for at any offset of what arrived, so
//!   leading garbage does not lose it. Nothing that fails its CRC is used.
//! - RTU: a transaction ends by `timeout` plus the wire time of one whole
//!   response (and two gaps) after its request left, whatever arrives: bytes
//!   that are arriving extend the wait only up to that cap, so a babbling
//!   line cannot hold a shared bus.
//! - Every failure has a [`Fault`] kind; only [`Fault::Io`] means the link
//!   itself is gone (reopen or reconnect). A Modbus exception is not a fault.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::pdu::{crc16, Exception, Request, Response};

/// Why a transaction got no usable response.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("no response within the timeout")]
    Timeout,
    #[error("CRC error in the response")]
    Crc,
    #[error("truncated response")]
    Truncated,
    #[error("garbage on the line instead of a response")]
    Garbage,
    #[error("{0}")]
    Mismatch(String),
    #[error("link error: {0}")]
    Io(#[from] io::Error),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout => "timeout",
            Fault::Crc => "crc",
            Fault::Truncated => "truncated",
            Fault::Garbage => "garbage",
            Fault::Mismatch(_) => "mismatch",
            Fault::Io(_) => "io",
        }
    }
}

pub type Outcome = Result<Result<Response, Exception>, Fault>;

/// A byte stream a link runs over (serial port, TCP socket, test pipe).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Reads whatever is already waiting, without waiting.
fn read_ready(io: &mut (dyn Stream + '_), buf: &mut [u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut rb = ReadBuf::new(buf);
    match Pin::new(io).poll_read(&mut cx, &mut rb) {
        Poll::Ready(Ok(())) => Ok(rb.filled().len()),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(0),
    }
}

/// Waits until `at` with sub-millisecond precision. Tokio's timer rounds up
/// to whole milliseconds, which at 115200 baud would stretch a 1.75 ms frame
/// gap to 2–3 ms (10 % of a 125-register transaction); the last stretch is
/// therefore slept on the blocking pool, which has the OS timer's precision.
async fn sleep_precisely_until(at: Instant) {
    const COARSE: Duration = Duration::from_millis(2);
    let now = Instant::now();
    if at <= now {
        return;
    }
    if at - now > COARSE {
        tokio::time::sleep_until(at - COARSE).await;
    }
    let rest = at.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let slept = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
        if slept.is_err() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// RTU framing: `unit, PDU, CRC (low byte first)`, frames separated by silence.
pub struct RtuLink {
    io: Box<dyn Stream>,
    /// Time one character takes on the wire (zero over TCP).
    char_time: Duration,
    /// Silence kept between frames.
    gap: Duration,
    quiet_since: Instant,
    buf: Vec<u8>,
    /// Noise bytes dropped since the last [`RtuLink::take_noise`].
    noise: u64,
}

impl std::fmt::Debug for RtuLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtuLink")
            .field("gap", &self.gap)
            .finish_non_exhaustive()
    }
}

enum Scan {
    Frame {
        start: usize,
        len: usize,
    },
    /// No valid frame yet; what the bytes so far look like.
    Partial(Fault),
}

impl RtuLink {
    pub fn new(io: Box<dyn Stream>, char_time: Duration, gap: Duration) -> Self {
        Self {
            io,
            char_time,
            gap,
            quiet_since: Instant::now(),
            buf: Vec::with_capacity(300),
            noise: 0,
        }
    }

    /// Line-noise bytes dropped since the last call.
    pub fn take_noise(&mut self) -> u64 {
        std::mem::take(&mut self.noise)
    }

    fn scan(&self, unit: u8, fc: u8, normal_len: usize) -> Scan {
        let buf = &self.buf;
        let mut seen = Fault::Garbage;
        for start in 0..buf.len() {
            if buf[start] != unit {
                continue;
            }
            let Some(&f) = buf.get(start + 1) else {
                if matches!(seen, Fault::Garbage) {
                    seen = Fault::Truncated;
                }
                continue;
            };
            let len = if f == fc {
                1 + normal_len + 2
            } else if f == fc | 0x80 {
                5
            } else {
                continue;
            };
            if buf.len() < start + len {
                if !matches!(seen, Fault::Crc) {
                    seen = Fault::Truncated;
                }
                continue;
            }
            let body = &buf[start..start + len - 2];
            let crc = u16::from_le_bytes([buf[start + len - 2], buf[start + len - 1]]);
            if crc16(body) == crc {
                return Scan::Frame { start, len };
            }
            seen = Fault::Crc;
        }
        Scan::Partial(seen)
    }

    /// Sends `req` to `unit` and waits for its response.
    pub async fn transact(&mut self, unit: u8, req: &Request, timeout: Duration) -> Outcome {
        sleep_precisely_until(self.quiet_since + self.gap).await;
        // Whatever is waiting now belongs to no request of ours.
        let mut junk = [0u8; 256];
        loop {
            let n = read_ready(self.io.as_mut(), &mut junk)?;
            if n == 0 {
                break;
            }
            self.noise += n as u64;
        }

        let mut frame = Vec::with_capacity(260);
        frame.push(unit);
        req.encode(&mut frame);
        let crc = crc16(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        self.io.write_all(&frame).await?;
        self.io.flush().await?;
        let sent = Instant::now();
        // The request is still leaving the UART: count its wire time in.
        let tx_time = self.char_time * frame.len() as u32;
        let fc = req.function();
        let normal_len = req.response_len();
        let full = 1 + normal_len + 2;
        let mut deadline = sent + tx_time + timeout;
        // However much arrives, never longer than this.
        let cap = deadline + self.char_time * full as u32 + self.gap * 2;

        self.buf.clear();
        let mut chunk = [0u8; 512];
        loop {
            let read = tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await;
            match read {
                Ok(Ok(0)) => {
                    return Err(Fault::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the link closed",
                    )))
                }
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Scan::Frame { start, len } = self.scan(unit, fc, normal_len) {
                        self.noise += start as u64;
                        // Anything after the frame is noise the next request drains.
                        let pdu = &self.buf[start + 1..start + len - 2];
                        let out = req.decode_response(pdu).map_err(|m| Fault::Mismatch(m.0));
                        self.quiet_since = Instant::now();
                        return out;
                    }
                    // A response is arriving: give the rest of it its wire time.
                    let rest = full.saturating_sub(self.buf.len()) as u32;
                    deadline = deadline
                        .max(Instant::now() + self.char_time * rest + self.gap * 2)
                        .min(cap);
                    if self.buf.len() > 4 * full + 64 {
                        // Far more than any response: the line is babbling.
                        self.noise += self.buf.len() as u64;
                        self.buf.clear();
                    }
                }
                Ok(Err(e)) => return Err(Fault::Io(e)),
                Err(_elapsed) => {
                    self.quiet_since = Instant::now();
                    if self.buf.is_empty() {
                        return Err(Fault::Timeout);
                    }
                    self.noise += self.buf.len() as u64;
                    return Err(match self.scan(unit, fc, normal_len) {
                        Scan::Partial(f) => f,
                        Scan::Frame { .. } => Fault::Garbage,
                    });
                }
            }
        }
    }
}

/// Modbus TCP framing: MBAP header (transaction id, protocol 0, length, unit).
pub struct TcpLink {
    io: Box<dyn Stream>,
    tid: u16,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("tid", &self.tid)
            .finish_non_exhaustive()
    }
}

impl TcpLink {
    pub fn new(io: Box<dyn Stream>) -> Self {
        Self { io, tid: 0 }
    }

    pub async fn transact(&mut self, unit: u8, req: &Request, timeout: Duration) -> Outcome {
        self.tid = self.tid.wrapping_add(1);
        let mut pdu = Vec::with_capacity(260);
        req.encode(&mut pdu);
        let mut frame = Vec::with_capacity(pdu.len() + 7);
        frame.extend_from_slice(&self.tid.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(&pdu);
        self.io.write_all(&frame).await?;
        self.io.flush().await?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut head = [0u8; 7];
            match tokio::time::timeout_at(deadline, self.io.read_exact(&mut head)).await {
                Err(_) => return Err(Fault::Timeout),
                Ok(Err(e)) => return Err(Fault::Io(e)),
                Ok(Ok(_)) => {}
            }
            let tid = u16::from_be_bytes([head[0], head[1]]);
            let proto = u16::from_be_bytes([head[2], head[3]]);
            let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
            if proto != 0 || !(2..=254).contains(&len) {
                // The stream is out of step; only a new connection fixes that.
                return Err(Fault::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad MBAP header (protocol {proto}, length {len})"),
                )));
            }
            let mut body = vec![0u8; len - 1];
            match tokio::time::timeout_at(deadline, self.io.read_exact(&mut body)).await {
                Err(_) => return Err(Fault::Truncated),
                Ok(Err(e)) => return Err(Fault::Io(e)),
                Ok(Ok(_)) => {}
            }
            if tid != self.tid {
                // A late answer to an earlier request that timed out.
                continue;
            }
            if head[6] != unit {
                return Err(Fault::Mismatch(format!(
                    "response from unit {} to unit {unit}",
                    head[6]
                )));
            }
            return req.decode_response(&body).map_err(|m| Fault::Mismatch(m.0));
        }
    }
}

/// Either framing.
#[derive(Debug)]
pub enum Link {
    Rtu(RtuLink),
    Tcp(TcpLink),
}

impl Link {
    pub async fn transact(&mut self, unit: u8, req: &Request, timeout: Duration) -> Outcome {
        match self {
            Link::Rtu(l) => l.transact(unit, req, timeout).await,
            Link::Tcp(l) => l.transact(unit, req, timeout).await,
        }
    }

    pub fn take_noise(&mut self) -> u64 {
        match self {
            Link::Rtu(l) => l.take_noise(),
            Link::Tcp(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code
    use super::*;
    use crate::modbus::pdu::Request;
    use outpost_config::modbus::Table;

    /// A device that answers nothing but a byte of garbage every `every`.
    fn babbling(every: Duration) -> RtuLink {
        let (master, mut device) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut drain = [0u8; 256];
            loop {
                tokio::time::sleep(every).await;
                // Never a unit address of 1: no frame can start.
                if device.write_all(&[0x55]).await.is_err() {
                    return;
                }
                let _none = read_ready(&mut device, &mut drain);
            }
        });
        let char_time = Duration::from_secs_f64(11.0 / 9600.0);
        RtuLink::new(Box::new(master), char_time, Duration::from_micros(4010))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_garbage_cannot_stretch_a_request_past_its_cap() {
        let req = Request::Read {
            table: Table::Holding,
            address: 0,
            count: 125,
        };
        let timeout = Duration::from_millis(300);
        let mut link = babbling(Duration::from_millis(2));
        for _ in 0..5 {
            let start = Instant::now();
            let out =
                tokio::time::timeout(Duration::from_secs(30), link.transact(1, &req, timeout))
                    .await
                    .unwrap_or(Err(Fault::Timeout));
            let took = start.elapsed();
            assert!(out.is_err(), "{out:?}");
            // The request's own wire time, the timeout, one full response
            // (255 bytes at 9600 baud = 292 ms) and two gaps: 0.61 s.
            assert!(
                took <= Duration::from_millis(650),
                "a request took {took:?} under a stream of garbage"
            );
        }
    }
}
