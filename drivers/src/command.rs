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

/// A driver's inbox. It outlives restarts of the driver: the supervisor
/// hands the same inbox to each new run.
pub type Inbox = Arc<Mutex<mpsc::Receiver<WriteCommand>>>;

/// A new inbox and the sender that feeds it (bounded).
pub fn inbox() -> (mpsc::Sender<WriteCommand>, Inbox) {
    let (tx, rx) = mpsc::channel(16);
    (tx, Arc::new(Mutex::new(rx)))
}

/// Sends writes to the driver serving each device.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: std::collections::BTreeMap<String, mpsc::Sender<WriteCommand>>,
}

impl Router {
    pub fn add(&mut self, device: &str, to: mpsc::Sender<WriteCommand>) {
        self.routes.insert(device.to_string(), to);
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
            .routes
            .get(device)
            .ok_or_else(|| WriteFailure::UnknownDevice(device.to_string()))?;
        let (reply, rx) = oneshot::channel();
        let cmd = WriteCommand {
            device: device.to_string(),
            tag: tag.to_string(),
            value,
            actor: actor.to_string(),
            reply,
        };
        to.send(cmd).await.map_err(|_| WriteFailure::NotRunning)?;
        rx.await.map_err(|_| WriteFailure::NotRunning)?
    }
}
