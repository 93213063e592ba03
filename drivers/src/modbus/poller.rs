//! One Modbus device's polling state: its poll groups and their planned
//! reads, report-by-exception per tag, and back-off when it stops answering.
//!
//! Invariants:
//! - A poll group is due once per period. When it falls behind, it is polled
//!   once right away and the missed periods are dropped, never caught up in a
//!   burst; a group whose poll outlasts its period is polled back to back.
//! - A device that did not answer any read of a poll (silence, or only bytes
//!   that never formed a frame from its unit; a garbled frame from it shows it
//!   is there) is not asked again before its back-off has passed (1 s, or
//!   its shortest period if longer, doubling up to `backoff_max`), and then
//!   once, without retries; this is what keeps a dead device from stalling
//!   the others on a shared bus. The first valid response resets it.
//! - Exceptions are data: the tags get quality `Bad` with the exception, and
//!   polling goes on. "Illegal data address" on a merged read splits the read
//!   for good (for this run of the driver).
//! - A tag is reported when its quality changes, or as its report rule says
//!   (every poll, on change, deadband, heartbeat).

use std::sync::Arc;
use std::time::Duration;

use outpost_config::modbus::{ModbusDevice, ModbusTag};
use outpost_core::{Body, Clock, DeviceStatus, Event, Point, Quality, Status, Value};
use tokio::time::Instant;

use super::link::{Fault, Link};
use super::pdu::{Exception, Request, Response};
use super::plan::{self, Limits, Read, Span};
use super::value;
use crate::metrics::{DeviceMetrics, Metrics};

#[derive(Debug)]
struct Group {
    period: Duration,
    /// Indexes into the device's tags.
    tags: Vec<usize>,
    reads: Vec<Read>,
    due: Instant,
}

#[derive(Debug, Default, Clone)]
struct Reported {
    last: Option<(Value, Quality, Instant)>,
}

/// The link failed (not the device): reopen or reconnect it.
#[derive(Debug)]
pub struct LinkDown(pub String);

#[derive(Debug)]
pub struct DevicePoller {
    pub name: String,
    unit: u8,
    pub timeout: Duration,
    retries: u32,
    pub tags: Vec<ModbusTag>,
    spans: Vec<Span>,
    limits: Limits,
    groups: Vec<Group>,
    reported: Vec<Reported>,
    backoff_min: Duration,
    backoff: Duration,
    backoff_max: Duration,
    retry_at: Option<Instant>,
    online: Option<bool>,
    pub metrics: Arc<DeviceMetrics>,
}

impl DevicePoller {
    pub fn new(name: &str, cfg: &ModbusDevice, metrics: &Metrics) -> Self {
        let spans: Vec<Span> = cfg
            .tags
            .iter()
            .map(|t| Span {
                table: t.table,
                address: t.address,
                width: t.width(),
            })
            .collect();
        let limits = Limits {
            max_registers: cfg.max_registers,
            max_bits: cfg.max_bits,
            max_gap: cfg.max_gap,
        };
        let mut periods: Vec<Duration> = cfg
            .tags
            .iter()
            .map(|t| t.period.unwrap_or(cfg.period).get())
            .collect();
        periods.sort_unstable();
        periods.dedup();
        let now = Instant::now();
        let groups = periods
            .iter()
            .map(|&period| {
                let tags: Vec<usize> = (0..cfg.tags.len())
                    .filter(|&i| cfg.tags[i].period.unwrap_or(cfg.period).get() == period)
                    .collect();
                let sub: Vec<Span> = tags.iter().map(|&i| spans[i]).collect();
                let reads = plan::plan(&sub, limits)
                    .into_iter()
                    .map(|mut r| {
                        r.tags = r.tags.iter().map(|&j| tags[j]).collect();
                        r
                    })
                    .collect();
                Group {
                    period,
                    tags,
                    reads,
                    due: now,
                }
            })
            .collect();
        // First re-probe after a second (or a period, if longer), doubling.
        let backoff_max = cfg.backoff_max.get();
        let backoff_min = periods
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1))
            .min(backoff_max.max(Duration::from_millis(100)));
        Self {
            name: name.to_string(),
            unit: cfg.unit,
            timeout: cfg.timeout.get(),
            retries: cfg.retries,
            tags: cfg.tags.clone(),
            reported: vec![Reported::default(); cfg.tags.len()],
            spans,
            limits,
            groups,
            backoff_min,
            backoff: backoff_min,
            backoff_max: backoff_max.max(backoff_min),
            retry_at: None,
            online: None,
            metrics: metrics.device(name),
        }
    }

    /// The shortest poll period of the device.
    pub fn min_period(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.period)
            .min()
            .unwrap_or(Duration::from_secs(1))
    }

    /// How many poll groups the device has (for staggering).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Sets the first due time of group `g`.
    pub fn stagger(&mut self, g: usize, at: Instant) {
        if let Some(group) = self.groups.get_mut(g) {
            group.due = at;
        }
    }

    /// The next moment a poll is due, and which group.
    pub fn next_due(&self) -> Option<(Instant, usize)> {
        let (g, group) = self.groups.iter().enumerate().min_by_key(|(_, g)| g.due)?;
        let at = match self.retry_at {
            Some(r) if r > group.due => r,
            _ => group.due,
        };
        Some((at, g))
    }

    /// Asks for group `g` to be polled now (after a write, say).
    pub fn poll_soon(&mut self, tag: usize) {
        let now = Instant::now();
        for group in &mut self.groups {
            if group.tags.contains(&tag) {
                group.due = group.due.min(now);
            }
        }
    }

    pub fn unit(&self) -> u8 {
        self.unit
    }

    /// One transaction with retries and metrics.
    pub async fn transact(
        &self,
        link: &mut Link,
        req: &Request,
    ) -> Result<Result<Response, Exception>, Fault> {
        let m = &self.metrics;
        let mut attempt = 0;
        loop {
            DeviceMetrics::add(&m.requests, 1);
            let started = Instant::now();
            let out = link.transact(self.unit, req, self.timeout).await;
            DeviceMetrics::add(&m.noise_bytes, link.take_noise());
            match &out {
                Ok(Ok(_)) => {
                    DeviceMetrics::add(&m.responses, 1);
                    m.latency(started.elapsed().as_micros() as u64);
                }
                Ok(Err(e)) => {
                    DeviceMetrics::add(&m.exceptions, 1);
                    m.latency(started.elapsed().as_micros() as u64);
                    m.set_error(e.to_string());
                }
                Err(f) => {
                    let c = match f {
                        Fault::Timeout => &m.timeouts,
                        Fault::Crc => &m.crc_errors,
                        Fault::Truncated => &m.truncated,
                        Fault::Garbage => &m.garbage,
                        Fault::Mismatch(_) => &m.mismatches,
                        Fault::Io(_) => &m.io_errors,
                    };
                    DeviceMetrics::add(c, 1);
                    m.set_error(f.to_string());
                }
            }
            // A device known to be offline is probed once, not with retries:
            // it must cost the bus as little as possible.
            let retries = if self.online == Some(false) {
                0
            } else {
                self.retries
            };
            match out {
                Err(Fault::Io(e)) => return Err(Fault::Io(e)),
                Err(_) if attempt < retries => attempt += 1,
                other => return other,
            }
        }
    }

    /// Polls group `g`, pushing the events it produces.
    ///
    /// # Errors
    /// [`LinkDown`] when the link failed; the caller reopens it.
    pub async fn poll(
        &mut self,
        g: usize,
        link: &mut Link,
        clock: &dyn Clock,
        out: &mut Vec<Event>,
    ) -> Result<(), LinkDown> {
        let Some(group) = self.groups.get(g) else {
            return Ok(());
        };
        let period = group.period;
        // Taken for the poll (a refused merged read may be split in place)
        // and always put back.
        let mut reads: Vec<Read> = match self.groups.get_mut(g) {
            Some(group) => std::mem::take(&mut group.reads),
            None => return Ok(()),
        };
        let tags_in_group: usize = reads.iter().map(|r| r.tags.len()).sum();
        let mut results: Vec<(usize, Value, Quality)> = Vec::with_capacity(tags_in_group);
        let mut answered = false;
        let mut faults: Vec<String> = Vec::new();
        let mut k = 0;
        while k < reads.len() {
            let read = &reads[k];
            let req = Request::Read {
                table: read.table,
                address: read.address,
                count: read.count,
            };
            match self.transact(link, &req).await {
                Ok(Ok(resp)) => {
                    answered = true;
                    for &t in &read.tags {
                        let v = self.decode(t, read, &resp);
                        results.push((t, v, Quality::Good));
                    }
                }
                Ok(Err(exc)) => {
                    answered = true;
                    if exc == Exception::ILLEGAL_DATA_ADDRESS {
                        if let Some(parts) = plan::split(read, &self.spans, self.limits) {
                            tracing::info!(
                                device = %self.name,
                                address = read.address,
                                count = read.count,
                                parts = parts.len(),
                                "The device refused a merged read; splitting it."
                            );
                            reads.splice(k..=k, parts);
                            continue;
                        }
                    }
                    for &t in &read.tags {
                        results.push((t, Value::Bool(false), Quality::bad(exc.to_string())));
                    }
                }
                Err(Fault::Io(e)) => {
                    if let Some(group) = self.groups.get_mut(g) {
                        group.reads = reads;
                    }
                    return Err(LinkDown(e.to_string()));
                }
                Err(f) => {
                    // A garbled frame from our unit shows the device is there
                    // and the line is noisy; silence or bytes that never
                    // formed our frame count as not answering.
                    if matches!(f, Fault::Crc | Fault::Truncated | Fault::Mismatch(_)) {
                        answered = true;
                    }
                    faults.push(f.to_string());
                    for &t in &read.tags {
                        results.push((
                            t,
                            Value::Bool(false),
                            Quality::bad(format!("no response: {f}")),
                        ));
                    }
                }
            }
            k += 1;
        }
        let now = Instant::now();
        if let Some(group) = self.groups.get_mut(g) {
            group.reads = reads;
            group.due += period;
            if group.due < now {
                // Late (the bus was busy, or the poll outlasted its period):
                // one poll right away, the missed ones are dropped.
                group.due = now;
            }
        }
        if answered {
            self.retry_at = None;
            self.backoff = self.backoff_min;
            self.set_online(true, "answering", clock, out);
        } else {
            self.retry_at = Some(now + self.backoff);
            let detail = format!(
                "not answering ({}); next try in {} ms",
                faults.first().map_or("no response", String::as_str),
                self.backoff.as_millis()
            );
            self.backoff = (self.backoff * 2).min(self.backoff_max);
            self.set_online(false, &detail, clock, out);
        }
        self.emit(results, now, clock, out);
        Ok(())
    }

    fn decode(&self, t: usize, read: &Read, resp: &Response) -> Value {
        let tag = &self.tags[t];
        let off = usize::from(tag.address - read.address);
        match resp {
            Response::Bits(bits) => Value::Bool(bits.get(off).copied().unwrap_or(false)),
            Response::Registers(regs) => {
                let end = (off + usize::from(tag.width())).min(regs.len());
                value::decode_registers(tag, &regs[off.min(end)..end])
            }
            Response::Written => Value::Bool(false),
        }
    }

    /// Marks every tag bad (the link is down) and reports it once.
    pub fn link_lost(&mut self, reason: &str, clock: &dyn Clock, out: &mut Vec<Event>) {
        let now = Instant::now();
        let results = (0..self.tags.len())
            .map(|t| {
                (
                    t,
                    Value::Bool(false),
                    Quality::bad(format!("link down: {reason}")),
                )
            })
            .collect();
        self.set_online(false, &format!("link down: {reason}"), clock, out);
        self.emit(results, now, clock, out);
    }

    fn set_online(&mut self, online: bool, detail: &str, clock: &dyn Clock, out: &mut Vec<Event>) {
        if self.online == Some(online) {
            return;
        }
        self.online = Some(online);
        if !online {
            tracing::warn!(device = %self.name, %detail, "Modbus device is not answering.");
        }
        out.push(Event::new(
            self.name.clone(),
            clock.now(),
            Body::Status(Status {
                status: if online {
                    DeviceStatus::Online
                } else {
                    DeviceStatus::Offline
                },
                detail: detail.to_string(),
            }),
        ));
    }

    /// Reports what the rules let through as one telemetry event.
    fn emit(
        &mut self,
        results: Vec<(usize, Value, Quality)>,
        now: Instant,
        clock: &dyn Clock,
        out: &mut Vec<Event>,
    ) {
        let points = self.report(results, now);
        if !points.is_empty() {
            out.push(Event::new(
                self.name.clone(),
                clock.now(),
                Body::Telemetry(points),
            ));
        }
    }

    /// Applies each tag's report rule; returns the points to send.
    fn report(&mut self, results: Vec<(usize, Value, Quality)>, now: Instant) -> Vec<Point> {
        let mut points = Vec::with_capacity(results.len());
        for (t, v, q) in results {
            let tag = &self.tags[t];
            // A bad reading carries the last good value, if there was one.
            let v = match (&q, &self.reported[t].last) {
                (Quality::Bad { .. }, Some((last, _, _))) => last.clone(),
                _ => v,
            };
            let send = match &self.reported[t].last {
                None => true,
                Some((lv, lq, at)) => {
                    if *lq != q {
                        true
                    } else if !q.is_good() {
                        false
                    } else if tag
                        .heartbeat
                        .is_some_and(|h| now.duration_since(*at) >= h.get())
                    {
                        true
                    } else if let Some(db) = tag.deadband {
                        moved(lv, &v).is_some_and(|d| d > db)
                    } else if let Some(pct) = tag.deadband_percent {
                        match (num(lv), moved(lv, &v)) {
                            (Some(last), Some(d)) => d > last.abs() * pct / 100.0,
                            _ => lv != &v,
                        }
                    } else if tag.on_change {
                        lv != &v
                    } else {
                        true
                    }
                }
            };
            if send {
                self.reported[t].last = Some((v.clone(), q.clone(), now));
                points.push(Point {
                    tag: tag.name.clone(),
                    value: v,
                    quality: q,
                });
            }
        }
        points
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::I64(i) => Some(*i as f64),
        Value::U64(u) => Some(*u as f64),
        Value::F64(f) => Some(*f),
        _ => None,
    }
}

fn moved(a: &Value, b: &Value) -> Option<f64> {
    Some((num(a)? - num(b)?).abs())
}
