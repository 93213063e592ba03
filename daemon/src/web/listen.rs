//! The web server's sockets: plain TCP or TLS, with a bound on open
//! connections, and the certificate the TLS side serves.
//!
//! Invariants:
//! - At most [`MAX_CONNECTIONS`] connections are open at once (live-update
//!   streams included); further clients wait in the kernel's backlog.
//! - A TLS handshake runs in its own task with a deadline, so a client that
//!   stalls mid-handshake holds one slot for at most [`HANDSHAKE_TIMEOUT`]
//!   and never blocks other clients.
//! - Without a configured certificate the gateway makes a self-signed one on
//!   first start and keeps it (`web/cert.pem`, `web/key.pem`, mode 0600), so
//!   a browser that accepted it once keeps accepting it.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub const MAX_CONNECTIONS: usize = 128;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's address, for login limits and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A connection holding its slot until it is dropped.
#[derive(Debug)]
pub struct Slot<Io> {
    io: Io,
    _slot: OwnedSemaphorePermit,
}

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
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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
        stop: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Accepted> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let slot = tokio::select! {
                    () = stop.cancelled() => return,
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                };
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
                let _nodelay = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        let conn = Slot {
                            io: Io::Plain(stream),
                            _slot: slot,
                        };
                        if tx.send((conn, addr)).await.is_err() {
                            return;
                        }
                    }
                    Some(acc) => {
                        let (acc, tx) = (acc.clone(), tx.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acc.accept(stream)).await
                            {
                                Ok(Ok(s)) => {
                                    let conn = Slot {
                                        io: Io::Tls(Box::new(s)),
                                        _slot: slot,
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
}

impl Listener for Accepted {
    type Io = Slot<Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, Accepted>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Accepted>) -> Self {
        Peer(*stream.remote_addr())
    }
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
