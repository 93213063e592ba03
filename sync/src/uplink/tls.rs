//! TLS client configuration (rustls with ring) from PEM files.

use std::sync::Arc;

use outpost_config::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client configuration trusting `tls.ca_file` (required), with the
/// client certificate when one is configured.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(ca) = &tls.ca_file else {
        return Err("TLS needs `tls.ca_file` (the CA that signed the server's certificate)".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("reading CA file {}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading CA file {}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("CA file {} holds no certificate", ca.display()));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("reading {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("reading {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("reading {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}
