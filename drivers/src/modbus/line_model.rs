//! A serial line that keeps time, for benchmarks and tests: pseudo-terminals
//! ignore the baud rate, so throughput and framing figures need this model.
//!
//! [`pair`] gives two ends; a byte written at one end becomes readable at the
//! other one character time after the line is free (11 bits at 9600 baud:
//! 1.146 ms). [`ModelSlave`] is an RTU slave on one end: it finds the end of
//! a request by 3.5 characters of silence, as a device must, ignores a
//! request that started less than 3.5 characters after its own last reply
//! (a master that does not keep the gap merges frames), and answers
//! FC03/FC04 reads from a register map.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::pdu::crc16;

#[derive(Debug, Default)]
struct Wire {
    /// Bytes with the moment they are fully received.
    bytes: VecDeque<(Instant, u8)>,
    /// When the last byte written finishes on the line.
    busy_until: Option<Instant>,
    reader: Option<Waker>,
}

/// One end of a modelled line.
#[derive(Debug)]
pub struct LineEnd {
    tx: Arc<Mutex<Wire>>,
    rx: Arc<Mutex<Wire>>,
    char_time: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the last byte read had fully arrived.
    last_arrival: Option<Instant>,
}

/// Two connected ends of a line running at `baud` with `bits` per character.
pub fn pair(baud: u32, bits: u32) -> (LineEnd, LineEnd) {
    let char_time = Duration::from_secs_f64(f64::from(bits) / f64::from(baud));
    let (a, b) = (
        Arc::new(Mutex::new(Wire::default())),
        Arc::new(Mutex::new(Wire::default())),
    );
    (
        LineEnd {
            tx: a.clone(),
            rx: b.clone(),
            char_time,
            sleep: None,
            last_arrival: None,
        },
        LineEnd {
            tx: b,
            rx: a,
            char_time,
            sleep: None,
            last_arrival: None,
        },
    )
}

fn poisoned() -> io::Error {
    io::Error::other("line model lock poisoned")
}

impl AsyncRead for LineEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let now = Instant::now();
            let mut arrived = None;
            let next = {
                let rx = self.rx.clone();
                let mut w = rx.lock().map_err(|_| poisoned())?;
                let mut got = false;
                while buf.remaining() > 0 {
                    match w.bytes.front() {
                        Some((at, b)) if *at <= now => {
                            buf.put_slice(&[*b]);
                            let at = *at;
                            w.bytes.pop_front();
                            got = true;
                            arrived = Some(at);
                        }
                        _ => break,
                    }
                }
                if got {
                    drop(w);
                    self.last_arrival = arrived;
                    return Poll::Ready(Ok(()));
                }
                match w.bytes.front() {
                    Some((at, _)) => *at,
                    None => {
                        w.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            sleep.as_mut().reset(next);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl LineEnd {
    /// Puts `data` on the line starting at `at` (or when the line is free),
    /// as a device with exact timers would, however late this task runs.
    pub fn send_at(&self, at: Instant, data: &[u8]) -> io::Result<Instant> {
        let mut w = self.tx.lock().map_err(|_| poisoned())?;
        let mut t = w.busy_until.filter(|b| *b > at).unwrap_or(at);
        for b in data {
            t += self.char_time;
            w.bytes.push_back((t, *b));
        }
        w.busy_until = Some(t);
        if let Some(waker) = w.reader.take() {
            waker.wake();
        }
        Ok(t)
    }
}

impl AsyncWrite for LineEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.send_at(Instant::now(), data)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

use std::future::Future;

/// Counters of the model slave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlaveStats {
    pub answered: u64,
    /// Requests that started too soon after the previous reply.
    pub gap_violations: u64,
    pub bad_frames: u64,
}

/// An RTU slave on a modelled line (see the module doc).
#[derive(Debug)]
pub struct ModelSlave {
    pub unit: u8,
    /// Register `i` holds `registers[i]`.
    pub registers: Vec<u16>,
    pub gap: Duration,
    pub stats: Arc<Mutex<SlaveStats>>,
}

impl ModelSlave {
    /// Serves until the other end goes away.
    pub async fn serve(self, mut line: LineEnd) {
        use tokio::io::AsyncReadExt;
        let mut frame = Vec::new();
        let mut first_at = Instant::now();
        let mut last_at = Instant::now();
        let mut last_reply_end: Option<Instant> = None;
        let mut byte = [0u8; 1];
        loop {
            // Wait for a byte; with a frame in progress, only for the gap.
            let read = if frame.is_empty() {
                match line.read(&mut byte).await {
                    Ok(1) => Some(byte[0]),
                    _ => return,
                }
            } else {
                match tokio::time::timeout_at(last_at + self.gap, line.read(&mut byte)).await {
                    Ok(Ok(1)) => Some(byte[0]),
                    Ok(_) => return,
                    Err(_) => None,
                }
            };
            if let Some(b) = read {
                let at = line.last_arrival.unwrap_or_else(Instant::now);
                if frame.is_empty() {
                    // The first character's start, by the line's clock.
                    first_at = at - line.char_time;
                }
                last_at = at;
                frame.push(b);
                continue;
            }
            // 3.5 characters of silence after `last_at`: the frame is complete.
            let req = std::mem::take(&mut frame);
            let mut stats = self.stats.lock().map(|g| *g).unwrap_or_default();
            let too_soon = last_reply_end.is_some_and(|end| first_at < end + self.gap);
            let reply = if too_soon {
                stats.gap_violations += 1;
                None
            } else {
                self.answer(&req)
            };
            match reply {
                Some(r) => {
                    stats.answered += 1;
                    match line.send_at(last_at + self.gap, &r) {
                        Ok(end) => last_reply_end = Some(end),
                        Err(_) => return,
                    }
                }
                None if !too_soon => stats.bad_frames += 1,
                None => {}
            }
            if let Ok(mut g) = self.stats.lock() {
                *g = stats;
            }
        }
    }

    fn answer(&self, req: &[u8]) -> Option<Vec<u8>> {
        if req.len() != 8 || req[0] != self.unit || !matches!(req[1], 3 | 4) {
            return None;
        }
        if crc16(&req[..6]).to_le_bytes() != [req[6], req[7]] {
            return None;
        }
        let addr = usize::from(u16::from_be_bytes([req[2], req[3]]));
        let count = usize::from(u16::from_be_bytes([req[4], req[5]]));
        let regs = self.registers.get(addr..addr + count)?;
        let mut r = vec![self.unit, req[1], (count * 2) as u8];
        for v in regs {
            r.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc16(&r);
        r.extend_from_slice(&crc.to_le_bytes());
        Some(r)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // test code
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn poll_with_gap(link_gap: Duration) -> SlaveStats {
        use crate::modbus::link::RtuLink;
        use crate::modbus::pdu::Request;
        use outpost_config::modbus::Table;
        let (master, slave_end) = pair(115_200, 11);
        let stats = Arc::new(Mutex::new(SlaveStats::default()));
        let gap = Duration::from_micros(1750);
        tokio::spawn(
            ModelSlave {
                unit: 1,
                registers: vec![7; 10],
                gap,
                stats: stats.clone(),
            }
            .serve(slave_end),
        );
        let char_time = Duration::from_secs_f64(11.0 / 115_200.0);
        let mut link = RtuLink::new(Box::new(master), char_time, link_gap);
        let req = Request::Read {
            table: Table::Holding,
            address: 0,
            count: 10,
        };
        for _ in 0..20 {
            let _outcome = link.transact(1, &req, Duration::from_millis(30)).await;
        }
        let s = *stats.lock().unwrap();
        s
    }

    #[tokio::test]
    async fn the_link_keeps_the_gap_the_model_enforces() {
        let kept = poll_with_gap(Duration::from_micros(1750)).await;
        assert_eq!((kept.answered, kept.gap_violations), (20, 0), "{kept:?}");
        let ignored = poll_with_gap(Duration::ZERO).await;
        assert!(
            ignored.gap_violations > 0,
            "a master without a gap is caught: {ignored:?}"
        );
    }

    #[tokio::test]
    async fn bytes_arrive_at_the_line_rate() {
        let (mut a, mut b) = pair(9600, 11);
        let start = Instant::now();
        a.write_all(&[0u8; 96]).await.unwrap();
        let mut buf = [0u8; 96];
        b.read_exact(&mut buf).await.unwrap();
        let took = start.elapsed();
        // 96 characters of 11 bits at 9600 baud = 110 ms.
        assert!(took >= Duration::from_millis(110), "{took:?}");
    }
}
