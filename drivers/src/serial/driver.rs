//! The serial driver: opens the port, cuts frames, checks and parses them
//! into telemetry; polls request/response instruments; sends write
//! commands; and rides out a port that vanishes (a USB adapter unplugged)
//! by reopening it with back-off, without a restart of the daemon.
//!
//! Invariants:
//! - A frame that fails its checksum or does not parse is counted, kept as
//!   the device's last error (bytes escaped), and dropped; reading goes on.
//! - The port going away is a status event (offline, with the reason), and
//!   coming back another (online); in between the driver retries with
//!   back-off from 0.5 s to 30 s.
//! - Memory is bounded by the framer's maximum frame length.

use std::time::Duration;

use outpost_config::serial::SerialDevice;
use outpost_core::{Body, Event, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::checksum::{self, Checksum};
use super::frame::{Framer, Framing};
use super::parse::{escaped, BinField, BinType, Parser, TextType};
use crate::command::{Command, WriteFailure};
use crate::metrics::DeviceMetrics;
use crate::{Driver, DriverContext, DriverError, DriverFuture};

const REOPEN_MIN: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SerialDriver {
    name: String,
    cfg: SerialDevice,
    framing: Framing,
    parser: Parser,
    checksum: Option<Checksum>,
}

impl SerialDriver {
    /// The driver of a validated `[device.serial]`.
    ///
    /// # Errors
    /// A part of the section the configuration check would have refused.
    pub fn new(name: &str, cfg: &SerialDevice) -> Result<Self, String> {
        let f = &cfg.frame;
        let framing = match (&f.delimiter, f.length, &f.start, &f.end, f.idle) {
            (Some(d), None, None, None, None) => Framing::Delimiter(d.as_bytes().to_vec()),
            (None, Some(n), None, None, None) => Framing::Length(n as usize),
            (None, None, Some(s), Some(e), None) => Framing::Markers {
                start: s.as_bytes().to_vec(),
                end: e.as_bytes().to_vec(),
            },
            (None, None, None, None, Some(_)) => Framing::IdleGap,
            _ => return Err("frame: exactly one way of framing is needed".into()),
        };
        let p = &cfg.parse;
        let parser = if let Some(pattern) = &p.regex {
            let re = regex_lite::Regex::new(pattern).map_err(|e| format!("parse.regex: {e}"))?;
            let types = p
                .types
                .iter()
                .map(|(k, t)| {
                    let t = match t.as_str() {
                        "f64" => TextType::F64,
                        "i64" => TextType::I64,
                        "bool" => TextType::Bool,
                        _ => TextType::Str,
                    };
                    (k.clone(), t)
                })
                .collect();
            Parser::Regex { re, types }
        } else if p.json {
            Parser::Json
        } else if let Some(kv) = &p.key_value {
            Parser::KeyValue {
                pairs: kv.pairs.clone(),
                assign: kv.assign.clone(),
            }
        } else {
            Parser::Binary(
                p.binary
                    .iter()
                    .map(|b| BinField {
                        name: b.name.clone(),
                        offset: b.offset as usize,
                        kind: match b.kind.as_str() {
                            "u8" => BinType::U8,
                            "i8" => BinType::I8,
                            "u16" => BinType::U16,
                            "i16" => BinType::I16,
                            "u32" => BinType::U32,
                            "i32" => BinType::I32,
                            "f32" => BinType::F32,
                            _ => BinType::F64,
                        },
                        little_endian: b.order == "little",
                    })
                    .collect(),
            )
        };
        let checksum = cfg.checksum.as_ref().map(|c| Checksum {
            kind: match c.kind.as_str() {
                "xor" => checksum::Kind::Xor,
                "sum8" => checksum::Kind::Sum8,
                "crc16-modbus" => checksum::Kind::Crc16Modbus,
                _ => checksum::Kind::Crc16Ccitt,
            },
            encoding: if c.encoding == "hex" {
                checksum::Encoding::Hex
            } else {
                checksum::Encoding::Binary
            },
            skip: c.skip as usize,
            separator: c.separator as usize,
        });
        Ok(SerialDriver {
            name: name.to_string(),
            cfg: cfg.clone(),
            framing,
            parser,
            checksum,
        })
    }

    /// `path at baud`.
    pub fn describe(&self) -> String {
        format!("{} at {} baud", self.cfg.port.display(), self.cfg.baud)
    }

    fn open(&self) -> std::io::Result<tokio_serial::SerialStream> {
        let c = &self.cfg;
        crate::port::open(
            &c.port,
            crate::port::LineSettings {
                baud: c.baud,
                parity: c.parity,
                data_bits: c.data_bits,
                stop_bits: c.stop_bits,
                flow_control: c.flow_control,
                rs485: c.rs485,
            },
        )
    }

    async fn send(&self, cx: &DriverContext, ev: Event) -> Result<(), DriverError> {
        cx.send(&self.name, ev).await
    }

    async fn serve(self, cx: DriverContext) -> Result<(), DriverError> {
        let metrics = cx.metrics.device(&self.name);
        let mut inbox = cx.commands.lock().await;
        let mut reopen = REOPEN_MIN;
        let mut offline_reported = false;
        loop {
            let port = tokio::select! {
                biased;
                () = cx.stop.cancelled() => return Ok(()),
                opened = async { self.open() } => opened,
            };
            match port {
                Ok(port) => {
                    reopen = REOPEN_MIN;
                    tracing::info!(device = %self.name, port = %self.describe(), "Serial port open.");
                    self.send(
                        &cx,
                        cx.status(&self.name, true, format!("{} open", self.describe())),
                    )
                    .await?;
                    let why = self.session(port, &cx, &metrics, &mut inbox).await?;
                    let Some(why) = why else { return Ok(()) };
                    DeviceMetrics::add(&metrics.io_errors, 1);
                    metrics.set_error(why.clone());
                    tracing::warn!(device = %self.name, error = %why, "Serial port lost; reopening.");
                    self.send(&cx, cx.status(&self.name, false, why.clone()))
                        .await?;
                    offline_reported = true;
                }
                Err(e) => {
                    let why = format!("cannot open {}: {e}", self.cfg.port.display());
                    DeviceMetrics::add(&metrics.io_errors, 1);
                    metrics.set_error(why.clone());
                    if !offline_reported {
                        tracing::warn!(device = %self.name, error = %why, "Serial port unavailable; retrying.");
                        self.send(&cx, cx.status(&self.name, false, why.clone()))
                            .await?;
                        offline_reported = true;
                    }
                }
            }
            if cx.pause(reopen).await {
                return Ok(());
            }
            reopen = (reopen * 2).min(REOPEN_MAX);
        }
    }

    /// Serves an open port until it fails (`Some(reason)`) or the driver is
    /// stopped (`None`).
    async fn session<P: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut port: P,
        cx: &DriverContext,
        metrics: &DeviceMetrics,
        inbox: &mut tokio::sync::mpsc::Receiver<Command>,
    ) -> Result<Option<String>, DriverError> {
        let mut framer = Framer::new(self.framing.clone(), self.cfg.max_frame as usize);
        let idle = self.cfg.frame.idle.map(|d| d.get());
        let mut buf = vec![0u8; 4096];
        let mut frames = Vec::new();
        let mut last_byte: Option<Instant> = None;
        let poll = self.cfg.poll.clone();
        let mut next_poll = Instant::now();
        // A poll awaiting its response, by when.
        let mut awaiting: Option<Instant> = None;
        let mut inbox_open = true;
        loop {
            let idle_at = match (idle, last_byte) {
                (Some(gap), Some(t)) if framer.pending() > 0 => Some(t + gap),
                _ => None,
            };
            let poll_at = poll.as_ref().map(|_| next_poll);
            tokio::select! {
                biased;
                () = cx.stop.cancelled() => return Ok(None),
                r = port.read(&mut buf) => match r {
                    Ok(0) => return Ok(Some("the port closed".into())),
                    Ok(n) => {
                        last_byte = Some(Instant::now());
                        framer.push(&buf[..n], &mut frames);
                    }
                    Err(e) => return Ok(Some(format!("reading the port: {e}"))),
                },
                () = sleep_until(idle_at) => framer.idle(&mut frames),
                () = sleep_until(awaiting) => {
                    DeviceMetrics::add(&metrics.timeouts, 1);
                    metrics.set_error(format!(
                        "no response within {}",
                        poll.as_ref().map_or_else(String::new, |p| p.timeout.to_string())
                    ));
                    awaiting = None;
                }
                () = sleep_until(poll_at) => {
                    if let Some(p) = &poll {
                        next_poll = Instant::now() + p.period.get();
                        DeviceMetrics::add(&metrics.requests, 1);
                        if let Err(e) = port.write_all(p.command.as_bytes()).await {
                            return Ok(Some(format!("writing the poll command: {e}")));
                        }
                        awaiting = Some(Instant::now() + p.timeout.get());
                    }
                }
                cmd = inbox.recv(), if inbox_open => match cmd {
                    None => inbox_open = false,
                    Some(Command::ModbusRead(r)) => {
                        let _gone = r.reply.send(Err(format!("{} is a serial device, not Modbus", self.name)));
                    }
                    Some(Command::Write(w)) => {
                        let result = match self.cfg.write.iter().find(|c| c.tag == w.tag) {
                            None => Err(WriteFailure::UnknownTag { device: w.device.clone(), tag: w.tag.clone() }),
                            Some(c) => {
                                let text = match &w.value {
                                    Value::Str(s) => s.clone(),
                                    v => v.to_string(),
                                };
                                let command = c.command.replace("{value}", &text);
                                DeviceMetrics::add(&metrics.writes, 1);
                                match port.write_all(command.as_bytes()).await {
                                    Ok(()) => Ok(()),
                                    Err(e) => {
                                        DeviceMetrics::add(&metrics.write_errors, 1);
                                        Err(WriteFailure::NoResponse(e.to_string()))
                                    }
                                }
                            }
                        };
                        let detail = match &result {
                            Ok(()) => format!("{} = {}: sent", w.tag, w.value),
                            Err(e) => format!("{} = {}: failed: {e}", w.tag, w.value),
                        };
                        tracing::info!(device = %self.name, actor = %w.actor, %detail, "Device write.");
                        let audit = Event::new(
                            self.name.clone(),
                            cx.clock.now(),
                            Body::Audit(outpost_core::Audit {
                                action: "device.write".into(),
                                actor: w.actor.clone(),
                                detail,
                            }),
                        );
                        let _gone = w.reply.send(result);
                        self.send(cx, audit).await?;
                    }
                },
            }
            let d = framer.dropped;
            if d.overlong > 0 || d.bytes > 0 {
                DeviceMetrics::add(&metrics.truncated, d.overlong);
                DeviceMetrics::add(&metrics.noise_bytes, d.bytes);
                framer.dropped = super::frame::Dropped::default();
                if d.overlong > 0 {
                    metrics.set_error(format!(
                        "a frame longer than {} bytes was dropped",
                        self.cfg.max_frame
                    ));
                }
            }
            for frame in frames.drain(..) {
                awaiting = None;
                let data = match &self.checksum {
                    None => Ok(frame.as_slice()),
                    Some(c) => c.verify(&frame),
                };
                let data = match data {
                    Ok(d) => d,
                    Err(e) => {
                        DeviceMetrics::add(&metrics.crc_errors, 1);
                        metrics.set_error(format!("{e}: {}", escaped(&frame)));
                        continue;
                    }
                };
                match self.parser.parse(data) {
                    Ok(points) if !points.is_empty() => {
                        DeviceMetrics::add(&metrics.responses, 1);
                        let ev =
                            Event::new(self.name.clone(), cx.clock.now(), Body::Telemetry(points));
                        self.send(cx, ev).await?;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        DeviceMetrics::add(&metrics.garbage, 1);
                        metrics.set_error(e);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Driver for SerialDriver {
    fn device(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, cx: DriverContext) -> DriverFuture {
        Box::pin(async move { self.serve(cx).await })
    }
}
