//! Southbound drivers: each turns one configured device into a stream of
//! [`Event`]s.
//!
//! Invariants:
//! - A driver owns its device's I/O and nothing else; it never knows about
//!   the log, the rules or the uplinks (only the daemon wires them).
//! - It sends into a bounded channel and waits when the channel is full: a
//!   slow log slows polling down, it never grows memory.
//! - It checks its stop token first and returns promptly when cancelled.
//! - It returns `Err` for a failure the supervisor should restart it for
//!   (with back-off); it never panics on anything from outside.
//! - Drivers are built in one explicit `match` ([`build`]); adding a driver is
//!   adding an arm.

pub mod command;
pub mod gpio;
pub mod metrics;
pub mod modbus;
pub mod port;
pub mod serial;
pub mod sim;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use outpost_config::Config;
use outpost_core::{Clock, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a running driver is given.
#[derive(Debug, Clone)]
pub struct DriverContext {
    /// Where events go. Bounded; `send` waits when the pipeline is behind.
    pub out: mpsc::Sender<Event>,
    /// Cancelled when the driver must stop.
    pub stop: CancellationToken,
    pub clock: Arc<dyn Clock>,
    /// Writes addressed to this driver's devices.
    pub commands: command::Inbox,
    /// Where the driver keeps its per-device counters.
    pub metrics: metrics::Metrics,
}

impl DriverContext {
    /// A status event of `device`: online or offline, with the reason.
    pub fn status(&self, device: &str, online: bool, detail: impl Into<String>) -> Event {
        Event::new(
            device,
            self.clock.now(),
            outpost_core::Body::Status(outpost_core::Status {
                status: if online {
                    outpost_core::DeviceStatus::Online
                } else {
                    outpost_core::DeviceStatus::Offline
                },
                detail: detail.into(),
            }),
        )
    }

    /// Sends an event of `device` into the pipeline (waits when it is full).
    ///
    /// # Errors
    /// [`DriverError::PipelineClosed`] when the pipeline has shut down.
    pub async fn send(&self, device: &str, ev: Event) -> Result<(), DriverError> {
        self.out
            .send(ev)
            .await
            .map_err(|_| DriverError::PipelineClosed {
                device: device.to_string(),
            })
    }

    /// Waits `d`, or less if the driver is stopped meanwhile (then `true`).
    pub async fn pause(&self, d: std::time::Duration) -> bool {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => true,
            () = tokio::time::sleep(d) => false,
        }
    }
}

pub type DriverFuture = Pin<Box<dyn Future<Output = Result<(), DriverError>> + Send>>;

/// A device driver, built from its config and consumed by running it.
pub trait Driver: Send + std::fmt::Debug {
    /// The device's name.
    fn device(&self) -> &str;
    /// Runs until stopped (`Ok`) or failed (`Err`: the supervisor restarts it).
    fn run(self: Box<Self>, cx: DriverContext) -> DriverFuture;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    #[error("device {device}: the event pipeline has shut down")]
    PipelineClosed { device: String },
    #[error("device {device}: {message}")]
    Failed { device: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("device {device}: no driver section configured")]
    NoDriver { device: String },
    #[error("device {device}: no bus named {bus:?}")]
    NoBus { device: String, bus: String },
    #[error("device {device}: {message}")]
    Invalid { device: String, message: String },
}

/// One driver task to run: its name, the devices it serves, and how to
/// build it (again, after a failure).
#[derive(Debug, Clone)]
pub struct DriverSpec {
    /// The device name, or the bus name for a shared serial bus.
    pub name: String,
    pub devices: Vec<String>,
    kind: SpecKind,
}

#[derive(Debug, Clone)]
enum SpecKind {
    Sim(outpost_config::SimDevice),
    Modbus(
        modbus::Opener,
        Vec<(String, outpost_config::modbus::ModbusDevice)>,
    ),
    /// A built serial driver, cloned for each run.
    Serial(Box<serial::SerialDriver>),
    /// A GPIO driver, cloned for each run.
    #[cfg(target_os = "linux")]
    Gpio(Box<gpio::linux::GpioDriver>),
}

impl DriverSpec {
    /// Everything the driver is built from, as text: two specs with the same
    /// name and fingerprint run the same way, so a new configuration that
    /// leaves it alone needs no restart. (Taken before counters are restored.)
    pub fn fingerprint(&self) -> String {
        format!("{:?}", self.kind)
    }

    /// Builds a fresh driver.
    pub fn build(&self) -> Box<dyn Driver> {
        match &self.kind {
            SpecKind::Sim(sim) => Box::new(sim::SimDriver::new(&self.name, sim)),
            SpecKind::Modbus(opener, devices) => Box::new(modbus::ModbusDriver::new(
                &self.name,
                opener.clone(),
                devices.clone(),
            )),
            SpecKind::Serial(d) => d.clone(),
            #[cfg(target_os = "linux")]
            SpecKind::Gpio(d) => d.clone(),
        }
    }

    /// Tags whose last counts the daemon restores from the log before the
    /// first run (GPIO pulse counters).
    pub fn counters(&self) -> Vec<String> {
        match &self.kind {
            #[cfg(target_os = "linux")]
            SpecKind::Gpio(d) => d.counters(),
            _ => Vec::new(),
        }
    }

    /// Hands the restored counts (by tag) to the driver.
    pub fn restore(&mut self, counts: std::collections::BTreeMap<String, u64>) {
        match &mut self.kind {
            #[cfg(target_os = "linux")]
            SpecKind::Gpio(d) => d.restore(counts),
            _ => drop(counts),
        }
    }

    /// A short description: "sim", "modbus /dev/ttyUSB0 at 9600 baud",
    /// "modbus tcp://10.0.0.5:502"...
    pub fn describe(&self) -> String {
        match &self.kind {
            SpecKind::Sim(_) => "sim".into(),
            SpecKind::Modbus(opener, _) => format!("modbus {}", opener.describe()),
            SpecKind::Serial(d) => format!("serial {}", d.describe()),
            #[cfg(target_os = "linux")]
            SpecKind::Gpio(d) => format!("gpio {}", d.describe()),
        }
    }
}

/// Plans the driver tasks for the enabled devices: one per simulated device,
/// one per Modbus TCP device, one per serial bus (shared by its devices).
///
/// # Errors
/// When a device has no driver or names an unknown bus (validation normally
/// prevents both).
pub fn specs(cfg: &Config) -> Result<Vec<DriverSpec>, BuildError> {
    let mut out: Vec<DriverSpec> = Vec::new();
    let mut on_bus: std::collections::BTreeMap<
        &str,
        Vec<(String, outpost_config::modbus::ModbusDevice)>,
    > = std::collections::BTreeMap::new();
    for dev in cfg.devices.iter().filter(|d| d.enabled) {
        match (&dev.sim, &dev.modbus) {
            (Some(sim), _) => out.push(DriverSpec {
                name: dev.name.clone(),
                devices: vec![dev.name.clone()],
                kind: SpecKind::Sim(sim.clone()),
            }),
            (None, Some(m)) => {
                if let Some(bus) = &m.bus {
                    if !cfg.buses.iter().any(|b| &b.name == bus) {
                        return Err(BuildError::NoBus {
                            device: dev.name.clone(),
                            bus: bus.clone(),
                        });
                    }
                    on_bus
                        .entry(bus.as_str())
                        .or_default()
                        .push((dev.name.clone(), m.clone()));
                } else {
                    let opener = match (&m.tcp, &m.rtu_over_tcp) {
                        (Some(addr), _) => modbus::Opener::Tcp { addr: addr.clone() },
                        (None, Some(addr)) => modbus::Opener::RtuOverTcp {
                            addr: addr.clone(),
                            gap: std::time::Duration::from_micros(1750),
                        },
                        (None, None) => {
                            return Err(BuildError::NoDriver {
                                device: dev.name.clone(),
                            })
                        }
                    };
                    out.push(DriverSpec {
                        name: dev.name.clone(),
                        devices: vec![dev.name.clone()],
                        kind: SpecKind::Modbus(opener, vec![(dev.name.clone(), m.clone())]),
                    });
                }
            }
            #[cfg(target_os = "linux")]
            (None, None) if dev.gpio.is_some() => {
                if let Some(g) = &dev.gpio {
                    out.push(DriverSpec {
                        name: dev.name.clone(),
                        devices: vec![dev.name.clone()],
                        kind: SpecKind::Gpio(Box::new(gpio::linux::GpioDriver::new(&dev.name, g))),
                    });
                }
            }
            (None, None) => match &dev.serial {
                Some(sc) => out.push(DriverSpec {
                    name: dev.name.clone(),
                    devices: vec![dev.name.clone()],
                    kind: SpecKind::Serial(Box::new(
                        serial::SerialDriver::new(&dev.name, sc).map_err(|message| {
                            BuildError::Invalid {
                                device: dev.name.clone(),
                                message,
                            }
                        })?,
                    )),
                }),
                None => {
                    return Err(BuildError::NoDriver {
                        device: dev.name.clone(),
                    })
                }
            },
        }
    }
    for bus in &cfg.buses {
        if let Some(devices) = on_bus.remove(bus.name.as_str()) {
            out.push(DriverSpec {
                name: bus.name.clone(),
                devices: devices.iter().map(|(n, _)| n.clone()).collect(),
                kind: SpecKind::Modbus(modbus::Opener::serial(bus), devices),
            });
        }
    }
    Ok(out)
}
