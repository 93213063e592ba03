//! Uplinks: one worker per configured upstream, each draining the event log
//! from its own cursor.
//!
//! ```text
//!            ┌────────────── back-off (100 ms .. 30 s, jitter) ◀─────────────┐
//!            ▼                                                               │
//!   connecting ──connected──▶ draining: read after the cursor, publish,      │
//!                             keep ≤ max_inflight unacknowledged;            │
//!                             ack ⇒ advance the cursor over contiguous acks  │
//!                                 │                                          │
//!                                 ├── link error / keep-alive lost ──────────┤
//!                                 └── oldest publish older than ack_timeout ─┘
//! ```
//!
//! Invariants:
//! - The cursor moves only over events whose messages the broker
//!   acknowledged (MQTT PUBACK, JetStream publish ack), and only over a
//!   contiguous run of them; so no event is skipped, and after any failure
//!   the worker resumes from the cursor. Duplicates are limited to the
//!   in-flight window at the moment of a failure (MQTT); NATS removes them
//!   with the message id `<gateway>:<seq>`.
//! - Events are published in log order, so order per device holds on each
//!   uplink.
//! - A session that fails is dropped whole (client, connection, window);
//!   the next one starts from the cursor. Nothing is kept in memory that the
//!   log does not also hold.

mod feed;
pub mod format;
pub(crate) mod mqtt;
pub(crate) mod nats;
pub mod tls;
pub mod window;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_config::{MqttUplink, NatsUplink, Secret};
use tokio_util::sync::CancellationToken;

use crate::log::{EventLog, LogError};

/// What a worker reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkStatus {
    pub connected: bool,
    /// Where the cursor stands.
    pub cursor: u64,
    pub messages_published: u64,
    pub events_acked: u64,
    pub inflight: usize,
    pub reconnects: u64,
    /// Publishes the broker called duplicates of a different message (NATS:
    /// another message already held the id); each was sent again under an
    /// id of its own.
    pub duplicates_conflicting: u64,
    pub last_error: Option<String>,
}

pub type SharedStatus = Arc<Mutex<UplinkStatus>>;

fn update(status: &SharedStatus, f: impl FnOnce(&mut UplinkStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("{0}")]
    Link(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A writer for requests from upstream (ThingsBoard RPC): device, tag,
/// value; answers with the outcome text.
pub type RpcHandler = Arc<
    dyn Fn(
            String,
            String,
            outpost_core::Value,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// One uplink to run.
#[derive(Clone)]
pub struct UplinkSpec {
    pub name: String,
    pub gateway: String,
    pub protocol: Protocol,
    /// Events read from the log at a time.
    pub read_batch: usize,
    /// Publish fresh events while a backlog drains (see `feed`).
    pub live_lane: bool,
    /// Serves ThingsBoard RPC writes; none: RPCs are answered with an error.
    pub rpc: Option<RpcHandler>,
    /// ThingsBoard mode: what the one session carries beside the log
    /// (device types, shared attributes, the remote configuration).
    pub thingsboard: Option<TbLink>,
}

/// What a ThingsBoard-mode session needs beyond the log: ThingsBoard
/// allows one session per device (the gateway is one), so attributes, RPC
/// and the remote configuration all go over the uplink's own connection.
#[derive(Clone, Debug)]
pub struct TbLink {
    /// Per device: its type and the shared attribute keys asked for when it
    /// is connected; follows applied configurations.
    pub devices: Arc<std::sync::RwLock<TbDevices>>,
    /// Shared attributes as they arrive (responses and updates): device
    /// and values; the daemon records them (stamped by its clock).
    pub shared: tokio::sync::mpsc::Sender<(String, Vec<outpost_core::Point>)>,
    /// The gateway's remote configuration: its shared attribute
    /// `configuration`, and reports as the client attribute
    /// `configurationState`.
    pub control: Option<TbControl>,
}

/// Per device: (type, shared keys to request).
#[derive(Debug, Clone, Default)]
pub struct TbDevices {
    pub types: std::collections::BTreeMap<String, String>,
    pub shared_keys: std::collections::BTreeMap<String, Vec<String>>,
}

/// The configuration link's ends, held by whichever session is connected.
#[derive(Clone, Debug)]
pub struct TbControl {
    pub docs: tokio::sync::mpsc::Sender<crate::control::Incoming>,
    pub reports: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Vec<u8>>>>,
    /// Set when the last configuration was too large to read: the next
    /// session does not ask for it again (an update still arrives).
    pub oversized: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for UplinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkSpec")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum Protocol {
    Mqtt(MqttUplink),
    Nats(NatsUplink),
}

/// Reads an inline-or-file secret.
pub(crate) fn secret(
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<String>, UplinkError> {
    outpost_config::secret::resolve(inline, file)
        .map(|s| s.map(|s| s.expose().to_string()))
        .map_err(|e| UplinkError::Config(e.to_string()))
}

/// Capped exponential back-off with ±20 % jitter.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self { next: Self::MIN }
    }

    fn reset(&mut self) {
        self.next = Self::MIN;
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        outpost_core::jitter(d)
    }
}

/// Runs the uplink until `stop`; never returns early on errors.
pub async fn run(spec: UplinkSpec, log: EventLog, stop: CancellationToken, status: SharedStatus) {
    let mut backoff = Backoff::new();
    loop {
        if stop.is_cancelled() {
            return;
        }
        let before = status.lock().map(|s| s.events_acked).unwrap_or(0);
        let ended = match &spec.protocol {
            Protocol::Mqtt(m) => mqtt::session(&spec, m, &log, &stop, &status).await,
            Protocol::Nats(n) => nats::session(&spec, n, &log, &stop, &status).await,
        };
        update(&status, |s| {
            s.connected = false;
            s.inflight = 0;
        });
        let err = match ended {
            Ok(()) => return,
            // A session cut short by the stop (its event loop ended with
            // it) is the shutdown, not a link error: the last real error
            // stays what the status shows.
            Err(_) if stop.is_cancelled() => return,
            Err(e) => e,
        };
        let progressed = status
            .lock()
            .map(|s| s.events_acked > before)
            .unwrap_or(false);
        if progressed {
            backoff.reset();
        }
        let wait = backoff.take();
        tracing::warn!(uplink = %spec.name, error = %err, retry_in_ms = wait.as_millis() as u64, "Uplink session ended; reconnecting.");
        update(&status, |s| {
            s.last_error = Some(err.to_string());
            s.reconnects += 1;
        });
        // Wait out the back-off, but probe the server's port meanwhile: a
        // broker that comes back is used within ~100 ms, while full session
        // attempts stay spaced by the back-off.
        let probe = async {
            let Some(addr) = spec.protocol.host_port() else {
                return std::future::pending::<()>().await;
            };
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let c = tokio::time::timeout(
                    Duration::from_millis(100),
                    tokio::net::TcpStream::connect(addr.as_str()),
                )
                .await;
                if matches!(c, Ok(Ok(_))) {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = probe, if wait > Duration::from_millis(200) => {}
        }
    }
}

impl Protocol {
    /// `host:port` of the server, for reachability probes.
    fn host_port(&self) -> Option<String> {
        let url = match self {
            Protocol::Mqtt(m) => &m.url,
            Protocol::Nats(n) => &n.url,
        };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let rest = rest
            .rsplit_once('@')
            .map_or(rest, |(_, r)| r)
            .trim_end_matches('/');
        rest.contains(':').then(|| rest.to_string())
    }
}
