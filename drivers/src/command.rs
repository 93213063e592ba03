//! Commands to devices (writes), from the rules, the API or the cloud.
//! Each driver has one inbox; the daemon routes by device name.

use std::sync::Arc;

use outpost_core::Value;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Write `value` to `tag` of `device`; the reply says how it went.
#[derive(Debug)]
pub struct WriteCommand {
    pub device: String,
    pub tag: String,
    pub value: Value,
    /// Who asked (user, "rules", "remote"); recorded in the audit event.
    pub actor: String,
    pub reply: oneshot::Sender<Result<(), WriteFailure>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteFailure {
    #[error("no device {0:?}")]
    UnknownDevice(String),
    #[error("device {device:?} has no tag {tag:?}")]
    UnknownTag { device: String, tag: String },
    #[error("{0}")]
    Rejected(String),
    #[error("the device refused: {0}")]
    Exception(String),
    #[error("the device did not confirm: {0}")]
    NoResponse(String),
    #[error("the driver is not running")]
    NotRunning,
}

/// An ad hoc read of raw Modbus data through the driver that owns the
/// line (commissioning: the web page's Modbus tool on a configured bus).
#[derive(Debug)]
pub struct ModbusRead {
    pub unit: u8,
    pub table: outpost_config::modbus::Table,
    pub address: u16,
    pub count: u16,
    pub reply: oneshot::Sender<Result<Raw, String>>,
}

/// Raw data as the device sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
}

/// What a driver's inbox carries.
#[derive(Debug)]
pub enum Command {
    Write(WriteCommand),
    ModbusRead(ModbusRead),
}

/// A driver's inbox. It outlives restarts of the driver: the supervisor
/// hands the same inbox to each new run.
pub type Inbox = Arc<Mutex<mpsc::Receiver<Command>>>;

/// A new inbox and the sender that feeds it (bounded).
pub fn inbox() -> (mpsc::Sender<Command>, Inbox) {
    let (tx, rx) = mpsc::channel(16);
    (tx, Arc::new(Mutex::new(rx)))
}

/// Longest a write or an ad hoc read waits for its driver.
pub const WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

type Routes = std::collections::BTreeMap<String, mpsc::Sender<Command>>;

/// Sends writes to the driver serving each device. Clones share the routes:
/// a driver restarted with a new configuration is reached by every holder.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Arc<std::sync::RwLock<Routes>>,
}

impl Router {
    pub fn add(&mut self, device: &str, to: mpsc::Sender<Command>) {
        if let Ok(mut r) = self.routes.write() {
            r.insert(device.to_string(), to);
        }
    }

    /// Forgets `device` (its driver was stopped).
    pub fn remove(&self, device: &str) {
        if let Ok(mut r) = self.routes.write() {
            r.remove(device);
        }
    }

    fn route(&self, device: &str) -> Option<mpsc::Sender<Command>> {
        self.routes.read().ok()?.get(device).cloned()
    }

    /// Writes `value` to `device`'s `tag` and waits for the outcome.
    ///
    /// # Errors
    /// [`WriteFailure`] saying why nothing (or nothing confirmed) was written.
    pub async fn write(
        &self,
        device: &str,
        tag: &str,
        value: Value,
        actor: &str,
    ) -> Result<(), WriteFailure> {
        let to = self
            .route(device)
            .ok_or_else(|| WriteFailure::UnknownDevice(device.to_string()))?;
        let (reply, rx) = oneshot::channel();
        let cmd = WriteCommand {
            device: device.to_string(),
            tag: tag.to_string(),
            value,
            actor: actor.to_string(),
            reply,
        };
        // A driver that never reads its inbox (one without writes) must
        // not hang the caller.
        tokio::time::timeout(WRITE_WAIT, async {
            to.send(Command::Write(cmd))
                .await
                .map_err(|_| WriteFailure::NotRunning)?;
            rx.await.map_err(|_| WriteFailure::NotRunning)?
        })
        .await
        .map_err(|_| {
            WriteFailure::NoResponse(format!(
                "the driver of {device:?} did not answer in {} s",
                WRITE_WAIT.as_secs()
            ))
        })?
    }

    /// Reads raw data from `unit` on the line that serves `device` (a
    /// Modbus device), between the driver's own polls.
    ///
    /// # Errors
    /// Why nothing was read: an unknown device, a driver that is not
    /// running or not Modbus, an exception, a timeout.
    pub async fn modbus_read(
        &self,
        device: &str,
        unit: u8,
        table: outpost_config::modbus::Table,
        address: u16,
        count: u16,
    ) -> Result<Raw, String> {
        let to = self
            .route(device)
            .ok_or_else(|| format!("no device {device:?}"))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::ModbusRead(ModbusRead {
            unit,
            table,
            address,
            count,
            reply,
        });
        let gone = || format!("the driver of {device:?} is not running");
        // A driver that never reads its inbox (not Modbus) must not hang
        // the caller.
        tokio::time::timeout(WRITE_WAIT, async {
            to.send(cmd).await.map_err(|_| gone())?;
            rx.await.map_err(|_| gone())?
        })
        .await
        .map_err(|_| {
            format!(
                "the driver of {device:?} did not answer in {} s",
                WRITE_WAIT.as_secs()
            )
        })?
    }
}
