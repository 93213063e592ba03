//! Where documents reach the manager from: the control-plane links of
//! `[remote]` (NATS KV, MQTT retained topic, ThingsBoard attributes) and the
//! local control socket `<data_dir>/control.sock` that `outpostd apply`
//! speaks to. Each link gets every report back.
//!
//! The socket takes one request per connection: the TOML configuration,
//! then end of input; it answers with the report as one JSON line. It is
//! created mode 0600 (the daemon's own user, or root).

use std::path::{Path, PathBuf};

use outpost_config::document::Document;
use outpost_config::Config;
use outpost_sync::control::{Incoming, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Manager, Origin, Request};

/// The largest configuration taken through the socket.
const MAX_LOCAL: u64 = 4 << 20;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Starts the configured links; each reports to the manager's request
/// channel and takes the reports.
pub fn start_links(
    cfg: &Config,
    manager: &mut Manager,
    requests: &mpsc::Sender<Request>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let r = &cfg.remote;
    let gateway = cfg.gateway.id.clone();
    let mut tasks = Vec::new();
    let uplink = |name: &str| cfg.uplinks.iter().find(|u| u.name == name);
    let (in_tx, mut in_rx) = mpsc::channel::<Incoming>(4);
    if let Some(n) = r
        .nats_uplink
        .as_deref()
        .and_then(uplink)
        .and_then(|u| u.nats.clone())
    {
        let (rep_tx, rep_rx) = mpsc::channel::<Vec<u8>>(8);
        manager.report_to(rep_tx);
        tasks.push(tokio::spawn(outpost_sync::control::nats_kv(
            n,
            r.kv_bucket.clone(),
            gateway.clone(),
            r.create_bucket,
            in_tx.clone(),
            rep_rx,
            stop.clone(),
        )));
    }
    if let Some(m) = r
        .mqtt_uplink
        .as_deref()
        .and_then(uplink)
        .and_then(|u| u.mqtt.clone())
    {
        let (rep_tx, rep_rx) = mpsc::channel::<Vec<u8>>(8);
        manager.report_to(rep_tx);
        let topic = Some(r.topic.replace("{gateway}", &gateway)).filter(|t| !t.is_empty());
        let id = format!(
            "{}-config",
            m.client_id.clone().unwrap_or_else(|| gateway.clone())
        );
        tasks.push(tokio::spawn(outpost_sync::control::mqtt(
            m,
            id,
            topic,
            r.thingsboard,
            in_tx.clone(),
            rep_rx,
            stop.clone(),
        )));
    }
    drop(in_tx);
    let to_manager = requests.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(i) = in_rx.recv().await {
            let origin = match i.source {
                Source::NatsKv => Origin::NatsKv,
                Source::Mqtt => Origin::Mqtt,
                Source::Thingsboard => Origin::Thingsboard,
            };
            let doc = Document::from_json(&i.payload).map_err(|e| e.to_string());
            let req = Request {
                origin,
                doc,
                reply: None,
            };
            if to_manager.send(req).await.is_err() {
                return;
            }
        }
    }));
    tasks
}

/// Serves the local control socket until `stop`.
#[cfg(unix)]
pub async fn serve_socket(path: PathBuf, requests: mpsc::Sender<Request>, stop: CancellationToken) {
    use std::os::unix::fs::PermissionsExt;
    let _stale = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Cannot open the control socket; `outpostd apply` will not reach this daemon.");
            return;
        }
    };
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(error = %e, "Cannot restrict the control socket's permissions.");
    }
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let requests = requests.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut body = String::new();
            let doc = match read.take(MAX_LOCAL + 1).read_to_string(&mut body).await {
                Ok(n) if n as u64 > MAX_LOCAL => Err(format!("larger than {MAX_LOCAL} bytes")),
                Ok(_) => Ok(Document::new(0, body)),
                Err(e) => Err(format!("reading the configuration: {e}")),
            };
            let (reply, rx) = oneshot::channel();
            let req = Request {
                origin: Origin::Local,
                doc,
                reply: Some(reply),
            };
            if requests.send(req).await.is_err() {
                return;
            }
            if let Ok(report) = rx.await {
                let mut line = report.to_json();
                line.push(b'\n');
                let _gone = write.write_all(&line).await;
            }
        });
    }
    let _gone = std::fs::remove_file(&path);
}

#[cfg(not(unix))]
pub async fn serve_socket(
    _path: PathBuf,
    _requests: mpsc::Sender<Request>,
    stop: CancellationToken,
) {
    stop.cancelled().await;
}
