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

pub mod sim;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use outpost_config::Device;
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
}

/// Builds the driver for a configured device.
///
/// # Errors
/// When the device has no driver section (validation normally prevents it).
pub fn build(dev: &Device) -> Result<Box<dyn Driver>, BuildError> {
    match &dev.sim {
        Some(sim) => Ok(Box::new(sim::SimDriver::new(&dev.name, sim))),
        None => Err(BuildError::NoDriver {
            device: dev.name.clone(),
        }),
    }
}
