//! The task that owns one link: a serial bus with all its devices, or one
//! TCP (or RTU-over-TCP) device.
//!
//! Invariants:
//! - One task per link; devices on a bus take turns (the earliest due poll
//!   goes next), so requests never overlap on the wire.
//! - Poll groups start staggered across one period, so devices on one bus do
//!   not all fire at once.
//! - A link that fails is reopened with capped exponential back-off; devices
//!   report Offline meanwhile. The driver itself only returns when stopped.
//! - Writes are served between polls, checked before anything is sent, and
//!   each produces an audit event.

use std::path::PathBuf;
use std::time::Duration;

use outpost_config::modbus::{Bus, ModbusDevice, Parity};
use outpost_core::{Audit, Body, Event};
use tokio::time::Instant;

use super::link::{Fault, Link, RtuLink, Stream, TcpLink};
use super::pdu::Request;
use super::poller::DevicePoller;
use super::value::{self, Encoded};
use crate::command::{Command, ModbusRead, Raw, WriteCommand, WriteFailure};
use crate::metrics::{DeviceMetrics, Metrics};
use crate::{Driver, DriverContext, DriverError, DriverFuture};

const REOPEN_MIN: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// How to open the link.
#[derive(Debug, Clone)]
pub enum Opener {
    Serial {
        port: PathBuf,
        baud: u32,
        parity: Parity,
        data_bits: u8,
        stop_bits: u8,
        gap: Duration,
        char_time: Duration,
        rs485: bool,
    },
    Tcp {
        addr: String,
    },
    RtuOverTcp {
        addr: String,
        gap: Duration,
    },
}

impl Opener {
    pub fn serial(bus: &Bus) -> Self {
        Opener::Serial {
            port: bus.port.clone(),
            baud: bus.baud,
            parity: bus.parity,
            data_bits: bus.data_bits,
            stop_bits: bus.stop_bits,
            gap: bus.frame_gap(),
            char_time: Duration::from_secs_f64(
                f64::from(bus.bits_per_char()) / f64::from(bus.baud.max(1)),
            ),
            rs485: bus.rs485,
        }
    }

    async fn open(&self) -> std::io::Result<Link> {
        match self {
            Opener::Tcp { addr } => Ok(Link::Tcp(TcpLink::new(connect(addr).await?))),
            Opener::RtuOverTcp { addr, gap } => Ok(Link::Rtu(RtuLink::new(
                connect(addr).await?,
                Duration::ZERO,
                *gap,
            ))),
            Opener::Serial {
                port,
                baud,
                parity,
                data_bits,
                stop_bits,
                gap,
                char_time,
                rs485,
            } => {
                let stream = crate::port::open(
                    port,
                    crate::port::LineSettings {
                        baud: *baud,
                        parity: *parity,
                        data_bits: *data_bits,
                        stop_bits: *stop_bits,
                        flow_control: outpost_config::serial::FlowControl::None,
                        rs485: *rs485,
                    },
                )?;
                Ok(Link::Rtu(RtuLink::new(Box::new(stream), *char_time, *gap)))
            }
        }
    }

    /// Where the link goes: `/dev/ttyUSB0 at 9600 baud`, `tcp://host:port`...
    pub fn describe(&self) -> String {
        match self {
            Opener::Serial { port, baud, .. } => format!("{} at {baud} baud", port.display()),
            Opener::Tcp { addr } => format!("tcp://{addr}"),
            Opener::RtuOverTcp { addr, .. } => format!("rtu-over-tcp://{addr}"),
        }
    }
}

/// The time an ad hoc read may take: the slowest device's timeout on the
/// line, at least one second.
fn read_timeout(pollers: &[DevicePoller]) -> Duration {
    pollers
        .iter()
        .map(|p| p.timeout)
        .max()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1))
}

/// Serves an ad hoc read on the line. Returns `Some(reason)` if the link failed.
async fn read_raw(pollers: &[DevicePoller], link: &mut Link, r: ModbusRead) -> Option<String> {
    let req = Request::Read {
        table: r.table,
        address: r.address,
        count: r.count,
    };
    let (result, lost) = raw_outcome(link.transact(r.unit, &req, read_timeout(pollers)).await);
    let _gone = r.reply.send(result);
    lost
}

/// The caller's view of an outcome, and the link failure if there was one.
fn raw_outcome(out: super::link::Outcome) -> (Result<Raw, String>, Option<String>) {
    use super::pdu::Response;
    match out {
        Ok(Ok(Response::Bits(b))) => (Ok(Raw::Bits(b)), None),
        Ok(Ok(Response::Registers(r))) => (Ok(Raw::Registers(r)), None),
        Ok(Ok(Response::Written)) => (Err("unexpected write response".into()), None),
        Ok(Err(exc)) => (Err(format!("the device answered with {exc}")), None),
        Err(Fault::Io(e)) => (Err(e.to_string()), Some(e.to_string())),
        Err(f) => (Err(f.to_string()), None),
    }
}

impl Opener {
    /// Opens the link, reads once from `unit`, and closes it: the Modbus
    /// tool on an endpoint that is not configured.
    ///
    /// # Errors
    /// Why nothing was read (connection, exception, timeout).
    pub async fn read_once(
        &self,
        unit: u8,
        table: outpost_config::modbus::Table,
        address: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<Raw, String> {
        let mut link = self
            .open()
            .await
            .map_err(|e| format!("cannot open {}: {e}", self.describe()))?;
        let req = Request::Read {
            table,
            address,
            count,
        };
        raw_outcome(link.transact(unit, &req, timeout).await).0
    }
}

async fn connect(addr: &str) -> std::io::Result<Box<dyn Stream>> {
    let s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {addr} timed out"),
            )
        })??;
    s.set_nodelay(true)?;
    Ok(Box::new(s))
}

/// A Modbus link and the devices on it.
#[derive(Debug)]
pub struct ModbusDriver {
    name: String,
    opener: Opener,
    devices: Vec<(String, ModbusDevice)>,
}

impl ModbusDriver {
    pub fn new(name: &str, opener: Opener, devices: Vec<(String, ModbusDevice)>) -> Self {
        Self {
            name: name.to_string(),
            opener,
            devices,
        }
    }
}

impl Driver for ModbusDriver {
    fn device(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, cx: DriverContext) -> DriverFuture {
        Box::pin(async move { self.serve(cx).await })
    }
}

impl ModbusDriver {
    async fn serve(self, cx: DriverContext) -> Result<(), DriverError> {
        let metrics: Metrics = cx.metrics.clone();
        let mut pollers: Vec<DevicePoller> = self
            .devices
            .iter()
            .map(|(n, d)| DevicePoller::new(n, d, &metrics))
            .collect();
        stagger(&mut pollers);
        let mut inbox = cx.commands.lock().await;
        // A closed inbox returns at once; listening to it would spin.
        let mut inbox_open = true;
        let mut reopen = REOPEN_MIN;
        let mut events: Vec<Event> = Vec::new();
        loop {
            let mut link = tokio::select! {
                biased;
                () = cx.stop.cancelled() => return Ok(()),
                opened = self.opener.open() => match opened {
                    Ok(l) => {
                        tracing::info!(link = %self.opener.describe(), devices = pollers.len(), "Modbus link open.");
                        reopen = REOPEN_MIN;
                        l
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        for p in &mut pollers {
                            DeviceMetrics::add(&p.metrics.io_errors, 1);
                            p.metrics.set_error(format!("cannot open {}: {reason}", self.opener.describe()));
                            p.link_lost(&reason, cx.clock.as_ref(), &mut events);
                        }
                        send_all(&cx, &mut events).await?;
                        tracing::warn!(link = %self.opener.describe(), error = %reason, retry_in_ms = reopen.as_millis() as u64, "Cannot open the Modbus link.");
                        tokio::select! {
                            biased;
                            () = cx.stop.cancelled() => return Ok(()),
                            () = tokio::time::sleep(reopen) => {}
                        }
                        reopen = (reopen * 2).min(REOPEN_MAX);
                        continue;
                    }
                }
            };
            // Serve polls and writes until the link fails or we are stopped.
            let lost: String = loop {
                let next = pollers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.next_due().map(|(at, g)| (at, i, g)))
                    .min_by_key(|(at, _, _)| *at);
                let Some((at, i, g)) = next else {
                    // No tags at all: only writes to serve.
                    tokio::select! {
                        biased;
                        () = cx.stop.cancelled() => return Ok(()),
                        cmd = inbox.recv(), if inbox_open => match cmd {
                            Some(cmd) => { if let Some(l) = self.command(&mut pollers, &mut link, cmd, &cx).await { break l; } continue; }
                            None => { inbox_open = false; continue; }
                        },
                    }
                };
                tokio::select! {
                    biased;
                    () = cx.stop.cancelled() => return Ok(()),
                    cmd = inbox.recv(), if inbox_open => match cmd {
                        Some(cmd) => {
                            if let Some(l) = self.command(&mut pollers, &mut link, cmd, &cx).await { break l; }
                        }
                        // Nobody can send writes any more: stop listening.
                        None => inbox_open = false,
                    },
                    () = tokio::time::sleep_until(at) => {
                        let p = &mut pollers[i];
                        let result = p.poll(g, &mut link, cx.clock.as_ref(), &mut events).await;
                        send_all(&cx, &mut events).await?;
                        if let Err(down) = result {
                            break down.0;
                        }
                    }
                }
            };
            tracing::warn!(link = %self.opener.describe(), error = %lost, "Modbus link lost; reopening.");
            for p in &mut pollers {
                p.link_lost(&lost, cx.clock.as_ref(), &mut events);
            }
            send_all(&cx, &mut events).await?;
            drop(link);
            tokio::select! {
                biased;
                () = cx.stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(reopen) => {}
            }
            reopen = (reopen * 2).min(REOPEN_MAX);
        }
    }

    /// Serves one command. Returns `Some(reason)` if the link failed.
    async fn command(
        &self,
        pollers: &mut [DevicePoller],
        link: &mut Link,
        cmd: Command,
        cx: &DriverContext,
    ) -> Option<String> {
        match cmd {
            Command::Write(w) => self.write(pollers, link, w, cx).await,
            Command::ModbusRead(r) => read_raw(pollers, link, r).await,
        }
    }

    /// Serves one write. Returns `Some(reason)` if the link failed.
    async fn write(
        &self,
        pollers: &mut [DevicePoller],
        link: &mut Link,
        cmd: WriteCommand,
        cx: &DriverContext,
    ) -> Option<String> {
        let WriteCommand {
            device,
            tag,
            value,
            actor,
            reply,
        } = cmd;
        let mut lost = None;
        let result: Result<(), WriteFailure> = 'w: {
            let Some(p) = pollers.iter_mut().find(|p| p.name == device) else {
                break 'w Err(WriteFailure::UnknownDevice(device.clone()));
            };
            let Some(t) = p.tags.iter().position(|t| t.name == tag) else {
                break 'w Err(WriteFailure::UnknownTag {
                    device: device.clone(),
                    tag: tag.clone(),
                });
            };
            let spec = &p.tags[t];
            let req = match value::encode_write(spec, &value) {
                Err(e) => break 'w Err(WriteFailure::Rejected(e.to_string())),
                Ok(Encoded::Coil(b)) => Request::WriteCoil {
                    address: spec.address,
                    value: b,
                },
                Ok(Encoded::Registers(regs)) if regs.len() == 1 => Request::WriteRegister {
                    address: spec.address,
                    value: regs[0],
                },
                Ok(Encoded::Registers(regs)) => Request::WriteRegisters {
                    address: spec.address,
                    values: regs,
                },
            };
            DeviceMetrics::add(&p.metrics.writes, 1);
            let out = p.transact(link, &req).await;
            let r = match out {
                Ok(Ok(_)) => {
                    p.poll_soon(t);
                    Ok(())
                }
                Ok(Err(exc)) => Err(WriteFailure::Exception(exc.to_string())),
                Err(Fault::Io(e)) => {
                    lost = Some(e.to_string());
                    Err(WriteFailure::NoResponse(e.to_string()))
                }
                Err(f) => Err(WriteFailure::NoResponse(f.to_string())),
            };
            if r.is_err() {
                DeviceMetrics::add(&p.metrics.write_errors, 1);
            }
            r
        };
        let detail = match &result {
            Ok(()) => format!("{tag} = {value}: done"),
            Err(e) => format!("{tag} = {value}: failed: {e}"),
        };
        tracing::info!(%device, %actor, %detail, "Device write.");
        let audit = Event::new(
            device,
            cx.clock.now(),
            Body::Audit(Audit {
                action: "device.write".into(),
                actor,
                detail,
            }),
        );
        // The caller may have given up; the audit event is recorded anyway.
        let _gone = reply.send(result);
        if cx.out.send(audit).await.is_err() {
            return Some("the pipeline closed".into());
        }
        lost
    }
}

/// Spreads every (device, group) first poll evenly over the shortest period.
fn stagger(pollers: &mut [DevicePoller]) {
    let slots: Vec<(usize, usize)> = pollers
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..p.group_count()).map(move |g| (i, g)))
        .collect();
    let span = pollers
        .iter()
        .filter(|p| p.group_count() > 0)
        .map(|p| p.min_period())
        .min()
        .unwrap_or(Duration::from_secs(1));
    let now = Instant::now();
    let n = slots.len().max(1) as u32;
    for (k, (i, g)) in slots.into_iter().enumerate() {
        pollers[i].stagger(g, now + span * k as u32 / n);
    }
}

async fn send_all(cx: &DriverContext, events: &mut Vec<Event>) -> Result<(), DriverError> {
    for ev in events.drain(..) {
        let device = ev.device.clone();
        cx.out
            .send(ev)
            .await
            .map_err(|_| DriverError::PipelineClosed { device })?;
    }
    Ok(())
}
