//! Where documents reach the manager from: the control-plane links of
//! `[remote]` (NATS KV, MQTT retained topic, ThingsBoard attributes) and the
//! local control socket `<data_dir>/control.sock` that `outpostd apply`
//! speaks to. Each link gets every report back.
//!
//! The socket takes one request per connection: the TOML configuration,
//! then end of input; it answers with the report as one JSON line.
//!
//! Local trust: a local apply is trusted for who sends it, not for what it
//! carries. Whoever runs as the daemon's user (or root) can already edit
//! its configuration file and data directory, so a signature would keep
//! nobody out; anybody else must not get in at all. So:
//! - the socket is made mode 0600, and each connection's peer credentials
//!   (`SO_PEERCRED`) are checked as well: a peer whose uid is neither the
//!   socket's owner (the daemon) nor root is answered `rejected` and its
//!   input is discarded unread, even if the mode was widened or raced;
//! - the body is taken as TOML (a document from the history gives its body;
//!   its version and signature are not used): a local apply keeps the
//!   running version (see the manager's invariants);
//! - at most [`CONCURRENT`] connections are served at once and each must
//!   send its whole body within [`READ_TIME`], so a stuck client holds
//!   nothing for long.

use std::path::{Path, PathBuf};

use outpost_config::document::Document;
use outpost_config::Config;
use outpost_sync::control::{Incoming, Payload, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Manager, Origin, Request};

/// The largest configuration taken through the socket.
const MAX_LOCAL: u64 = 4 << 20;
/// Connections served at once; more are answered `rejected` (busy).
pub const CONCURRENT: usize = 4;
/// Time a client has to send its whole configuration.
pub const READ_TIME: std::time::Duration = std::time::Duration::from_secs(30);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// The ends of the configuration link a ThingsBoard-mode uplink carries
/// in its own session (ThingsBoard allows one session per device).
pub struct TbLinkEnds {
    docs: mpsc::Receiver<Incoming>,
    reports: mpsc::Sender<Vec<u8>>,
}

/// When `[remote]` takes the configuration from ThingsBoard through an
/// uplink in ThingsBoard mode: the link for that uplink's sessions, and
/// the ends for [`start_links`].
pub fn thingsboard_link(
    cfg: &Config,
) -> (
    Option<(String, outpost_sync::uplink::TbControl)>,
    Option<TbLinkEnds>,
) {
    let r = &cfg.remote;
    let Some(name) = r.mqtt_uplink.as_deref() else {
        return (None, None);
    };
    let tb_mode = cfg.uplinks.iter().any(|u| {
        u.name == name
            && u.mqtt
                .as_ref()
                .is_some_and(|m| m.mode == outpost_config::MqttMode::Thingsboard)
    });
    if !tb_mode || !r.thingsboard {
        return (None, None);
    }
    let (docs_tx, docs) = mpsc::channel(4);
    let (reports, reports_rx) = mpsc::channel(8);
    let control = outpost_sync::uplink::TbControl {
        docs: docs_tx,
        reports: std::sync::Arc::new(tokio::sync::Mutex::new(reports_rx)),
        oversized: Default::default(),
    };
    (
        Some((name.to_string(), control)),
        Some(TbLinkEnds { docs, reports }),
    )
}

/// Starts the configured links; each reports to the manager's request
/// channel and takes the reports. With `thingsboard`, the MQTT link is the
/// ThingsBoard uplink's own session (see [`thingsboard_link`]): no second
/// connection, no retained topic.
pub fn start_links(
    cfg: &Config,
    manager: &mut Manager,
    requests: &mpsc::Sender<Request>,
    stop: &CancellationToken,
    thingsboard: Option<TbLinkEnds>,
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
        tasks.push(outpost_core::task::spawn(outpost_sync::control::nats_kv(
            n,
            r.kv_bucket.clone(),
            gateway.clone(),
            r.create_bucket,
            in_tx.clone(),
            rep_rx,
            stop.clone(),
        )));
    }
    if let Some(mut ends) = thingsboard {
        manager.report_to(ends.reports);
        let to_links = in_tx.clone();
        tasks.push(outpost_core::task::spawn(async move {
            while let Some(i) = ends.docs.recv().await {
                if to_links.send(i).await.is_err() {
                    return;
                }
            }
        }));
    } else if let Some(m) = r
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
        tasks.push(outpost_core::task::spawn(outpost_sync::control::mqtt(
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
    tasks.push(outpost_core::task::spawn(async move {
        while let Some(i) = in_rx.recv().await {
            let origin = match i.source {
                Source::NatsKv => Origin::NatsKv,
                Source::Mqtt => Origin::Mqtt,
                Source::Thingsboard => Origin::Thingsboard,
            };
            let doc = match i.payload {
                Payload::Bytes(b) => Document::from_json(&b).map_err(|e| e.to_string()),
                Payload::TooLarge { bytes } => {
                    Err(outpost_config::document::DocumentError::TooLarge { bytes }.to_string())
                }
            };
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
    // The socket's owner is the daemon's effective user.
    let owner = match std::fs::metadata(&path) {
        Ok(m) => std::os::unix::fs::MetadataExt::uid(&m),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Cannot read the control socket's owner; `outpostd apply` will not reach this daemon.");
            return;
        }
    };
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let requests = requests.clone();
        let slot = slots.clone().try_acquire_owned();
        outpost_core::task::spawn(async move {
            let peer = stream.peer_cred();
            let (read, mut write) = stream.into_split();
            let refusal = match (&peer, &slot) {
                (Err(e), _) => Some(format!("cannot read the peer's credentials: {e}")),
                (Ok(c), _) if c.uid() != owner && c.uid() != 0 => {
                    tracing::warn!(uid = c.uid(), pid = ?c.pid(), "Refused a control socket client that is neither outpostd's user nor root.");
                    Some(format!(
                        "uid {} may not configure this daemon (only uid {owner} or root)",
                        c.uid()
                    ))
                }
                (_, Err(_)) => Some(format!(
                    "{CONCURRENT} applies are already being sent; try again"
                )),
                _ => None,
            };
            if let Some(why) = refusal {
                let mut line = serde_json::json!({ "state": "rejected", "errors": [why] })
                    .to_string()
                    .into_bytes();
                line.push(b'\n');
                let _gone = write.write_all(&line).await;
                let _gone = write.shutdown().await;
                // What the client sends is discarded unread (at most 64 KiB,
                // for a second), so that it sees the answer instead of a
                // broken pipe.
                let mut discarded = read.take(64 * 1024);
                let _gone = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    tokio::io::copy(&mut discarded, &mut tokio::io::sink()),
                )
                .await;
                return;
            }
            let mut body = String::new();
            let mut limited = read.take(MAX_LOCAL + 1);
            let read = limited.read_to_string(&mut body);
            let doc = match tokio::time::timeout(READ_TIME, read).await {
                Ok(Ok(n)) if n as u64 > MAX_LOCAL => Err(format!("larger than {MAX_LOCAL} bytes")),
                Ok(Ok(_)) => Ok(Document::new(0, body)),
                Ok(Err(e)) => Err(format!("reading the configuration: {e}")),
                Err(_) => Err(format!(
                    "the configuration did not arrive within {} s",
                    READ_TIME.as_secs()
                )),
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
            drop(slot);
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

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    /// Sends `body` to the socket (as the user `as_uid` through setpriv, so
    /// the peer really is a process of another user) and returns the answer.
    fn send_as(path: &Path, as_uid: Option<u32>, body: &str) -> String {
        use std::io::Write;
        let socat = [
            "socat",
            "-t10",
            "-",
            &format!("UNIX-CONNECT:{}", path.display()),
        ];
        let mut cmd = match as_uid {
            Some(uid) => {
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ]);
                c.args(socat);
                c
            }
            None => {
                let mut c = std::process::Command::new(socat[0]);
                c.args(&socat[1..]);
                c
            }
        };
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("socat and setpriv are needed: apt-get install socat util-linux");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        // A refused client's input is discarded unread, so it sees the
        // answer and exits cleanly like any other.
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_user_is_refused_even_when_the_socket_mode_is_widened() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path()).unwrap()),
            0,
            "this test runs clients as another user and must run as root (CI and tests/run do)"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("control.sock");
        let (tx, mut rx) = mpsc::channel::<Request>(4);
        let stop = CancellationToken::new();
        let server = outpost_core::task::spawn(serve_socket(path.clone(), tx, stop.clone()));
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The mode is widened behind the daemon's back: credentials still hold.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let p = path.clone();
        let other = tokio::task::spawn_blocking(move || {
            send_as(&p, Some(65534), "[gateway]\nid = \"evil\"\n")
        })
        .await
        .unwrap();
        assert!(
            other.contains("\"rejected\"") && other.contains("uid 65534"),
            "{other}"
        );
        assert!(
            rx.try_recv().is_err(),
            "another user's configuration reached the manager"
        );
        // The daemon's own user (root here) gets through to the manager.
        let p = path.clone();
        let own =
            tokio::task::spawn_blocking(move || send_as(&p, None, "[gateway]\nid = \"mine\"\n"));
        let req = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the owner's apply reached the manager")
            .unwrap();
        assert!(req.doc.as_ref().unwrap().body.contains("mine"));
        drop(req);
        own.await.unwrap();
        stop.cancel();
        server.await.unwrap();
    }
}
