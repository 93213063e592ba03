//! The web server's sockets and connections: plain TCP or TLS, a bound on
//! open connections, the timeouts that keep an idle or stalled client from
//! holding one, and the certificate the TLS side serves.
//!
//! Invariants:
//! - At most [`Limits::connections`] connections are open at once (TLS
//!   handshakes and live-update streams included).
//! - Nobody holds a connection by saying nothing: a TLS handshake must finish
//!   within [`Limits::handshake`]; a request's head (and, on a kept-alive
//!   connection, the next request's head) must arrive within
//!   [`Limits::header_read`]; a response the client stops reading is dropped
//!   after [`Limits::write_stall`].
//! - A connection that has carried a request with a valid session or API
//!   token is *trusted*. When every slot is taken and another client
//!   connects, the oldest untrusted connection (idle ones first) is closed to
//!   make room, so idle or anonymous connections can never keep a logged-in
//!   user out; trusted connections are never closed for this.
//! - Without a configured certificate the gateway makes a self-signed one on
//!   first start and keeps it (`web/cert.pem`, `web/key.pem`, mode 0600), so
//!   a browser that accepted it once keeps accepting it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Bounds on the web server's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// From accepting to the end of the TLS handshake.
    pub handshake: Duration,
    /// From being ready for a request to having its whole head.
    pub header_read: Duration,
    /// A write that makes no progress for this long ends the connection.
    pub write_stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 128,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            write_stall: Duration::from_secs(30),
        }
    }
}

/// One open connection, as the accept loop and the router see it.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    opened: Instant,
    trusted: AtomicBool,
    in_flight: AtomicUsize,
    close: CancellationToken,
}

impl Conn {
    /// Marks the connection as carrying an authenticated user.
    pub fn trust(&self) {
        self.trusted.store(true, Ordering::Relaxed);
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Relaxed)
    }

    /// Counts a request in progress until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in progress on a [`Conn`].
#[derive(Debug)]
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections, for choosing one to close when all slots are taken.
#[derive(Debug, Default)]
struct Table {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Table {
    fn register(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Registered {
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            opened: Instant::now(),
            trusted: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            close: CancellationToken::new(),
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(conn.id, conn.clone());
        }
        Registered {
            conn,
            table: self.clone(),
            _permit: permit,
        }
    }

    /// Closes the oldest untrusted connection, idle ones first; false when
    /// every connection is trusted.
    fn evict_one(&self) -> bool {
        let Ok(open) = self.open.lock() else {
            return false;
        };
        let victim = open
            .values()
            .filter(|c| !c.is_trusted() && !c.close.is_cancelled())
            .min_by_key(|c| (c.in_flight.load(Ordering::Relaxed) > 0, c.opened));
        match victim {
            Some(c) => {
                tracing::debug!(
                    connection = c.id,
                    "All web slots taken: closing an idle untrusted connection."
                );
                c.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the table and its slot, both given back on drop.
#[derive(Debug)]
struct Registered {
    conn: Arc<Conn>,
    table: Arc<Table>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock() {
            open.remove(&self.conn.id);
        }
    }
}

/// The client's address and connection, for login limits, the audit trail
/// and trust.
#[derive(Debug, Clone)]
pub struct Peer(pub SocketAddr, pub Arc<Conn>);

/// A connection holding its slot until it is dropped; a write that stalls
/// past its limit fails.
#[derive(Debug)]
pub struct Slot<Io> {
    io: Io,
    reg: Registered,
    write_stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<Io> Slot<Io> {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.reg.conn
    }

    /// `Pending` from the inner writer: starts or checks the stall timer.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let limit = self.write_stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<Io: AsyncRead + Unpin> AsyncRead for Slot<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Slot<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.as_mut().get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.stall(cx),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.as_mut().get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.stall(cx).map_ok(|_| ()),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.as_mut().get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stall(cx),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

type TlsIo = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepted connections, plain or after the TLS handshake.
#[derive(Debug)]
pub struct Accepted {
    rx: mpsc::Receiver<(Slot<Io>, SocketAddr)>,
    local: SocketAddr,
}

/// Either kind of accepted stream.
#[derive(Debug)]
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsIo>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Accepted {
    /// Accepts on `listener`, with TLS when `tls` is given, until `stop`.
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        stop: CancellationToken,
    ) -> std::io::Result<Accepted> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(limits.connections));
        let table = Arc::new(Table::default());
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        outpost_core::task::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    () = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and the like: wait
                            // instead of spinning.
                            tracing::debug!(error = %e, "Web accept failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Full: make room by closing an untrusted
                        // connection if there is one, else wait for a slot.
                        table.evict_one();
                        tokio::select! {
                            () = stop.cancelled() => return,
                            p = slots.clone().acquire_owned() => match p {
                                Ok(p) => p,
                                Err(_) => return,
                            },
                        }
                    }
                };
                let reg = table.register(permit);
                let _nodelay = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        let conn = Slot {
                            io: Io::Plain(stream),
                            reg,
                            write_stall: limits.write_stall,
                            stalled: None,
                        };
                        if tx.send((conn, addr)).await.is_err() {
                            return;
                        }
                    }
                    Some(acc) => {
                        let (acc, tx) = (acc.clone(), tx.clone());
                        outpost_core::task::spawn(async move {
                            let closed = reg.conn.close.clone();
                            let handshake =
                                tokio::time::timeout(limits.handshake, acc.accept(stream));
                            let done = tokio::select! {
                                () = closed.cancelled() => return,
                                r = handshake => r,
                            };
                            match done {
                                Ok(Ok(s)) => {
                                    let conn = Slot {
                                        io: Io::Tls(Box::new(s)),
                                        reg,
                                        write_stall: limits.write_stall,
                                        stalled: None,
                                    };
                                    let _closed = tx.send((conn, addr)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(client = %addr, error = %e, "TLS handshake failed.");
                                }
                                Err(_) => {
                                    tracing::debug!(client = %addr, "TLS handshake timed out.");
                                }
                            }
                        });
                    }
                }
            }
        });
        Ok(Accepted { rx, local })
    }

    /// The next connection; `None` once the accept task has ended.
    pub async fn accept(&mut self) -> Option<(Slot<Io>, SocketAddr)> {
        self.rx.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Serves `app` on every accepted connection (HTTP/1.1 with the limits'
/// timeouts) until `stop`; then lets open requests finish, for at most a few
/// seconds, and returns.
pub async fn serve(
    mut accepted: Accepted,
    app: axum::Router,
    limits: Limits,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    loop {
        let (slot, addr) = tokio::select! {
            () = stop.cancelled() => break,
            c = accepted.accept() => match c {
                Some(c) => c,
                None => break,
            },
        };
        let conn = slot.conn().clone();
        let peer = Peer(addr, conn.clone());
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer.clone()));
                let app = app.clone();
                async move { tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await }
            });
        let (stop, done) = (stop.clone(), done_rx.clone());
        outpost_core::task::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(true);
            let served = builder.serve_connection(TokioIo::new(slot), svc);
            tokio::pin!(served);
            let ended = tokio::select! {
                r = served.as_mut() => Some(r),
                () = conn.close.cancelled() => None,
                () = stop.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(5), served.as_mut()).await.ok()
                }
            };
            if let Some(Err(e)) = ended {
                tracing::debug!(client = %addr, error = %e, "A web connection ended with an error.");
            }
            drop(done);
        });
    }
    drop(done_rx);
    done_tx.closed().await;
}

/// The TLS server config: the configured certificate and key, or the
/// gateway's own (made on first start in `dir`).
pub fn tls_config(
    dir: &Path,
    configured: Option<(&Path, &Path)>,
    names: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (cert_path, key_path) = match configured {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => {
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                make_self_signed(&c, &k, names)?;
            }
            (c, k)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(Iterator::collect)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn make_self_signed(cert: &Path, key: &Path, names: Vec<String>) -> Result<(), String> {
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    super::auth::write_private(key, ck.signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    super::auth::write_private(cert, ck.cert.pem().as_bytes())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "Made a self-signed certificate for the web page.");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_generated_certificate_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        tls_config(
            dir.path(),
            None,
            vec!["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
        let first = std::fs::read(dir.path().join("cert.pem")).unwrap();
        tls_config(dir.path(), None, vec!["localhost".into()]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("cert.pem")).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
        }
    }

    #[test]
    fn a_broken_configured_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, "not a certificate").unwrap();
        std::fs::write(&k, "not a key").unwrap();
        let e = tls_config(dir.path(), Some((&c, &k)), vec![]).unwrap_err();
        assert!(e.contains("c.pem"), "{e}");
    }
}
