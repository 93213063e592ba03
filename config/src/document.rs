//! Configuration documents for remote management: `{version, hash, body,
//! signature?}` as JSON, where `body` is the TOML configuration.
//!
//! - `hash` is `sha256:<hex>` of the body's bytes; a document whose body
//!   does not match it is refused.
//! - `signature`, when present, is the hex ed25519 signature of
//!   [`signed_message`]: the version and the hash, so that neither an old
//!   body under a new version nor a new body under an old signature passes.
//! - With a fleet public key configured, a document without a valid
//!   signature is refused; without one, signatures are not required (but a
//!   present one that cannot be checked is still an error).
//!
//! Parsing and verifying never panics on input from outside: every problem
//! is a [`DocumentError`] saying what is wrong.

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// A configuration document as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Grows with every new desired configuration; one not newer than the
    /// running version is refused (no replay).
    pub version: u64,
    /// `sha256:<64 hex digits>` of `body`.
    pub hash: String,
    /// The TOML configuration.
    pub body: String,
    /// Hex ed25519 signature of [`signed_message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("not a configuration document: {0}")]
    Malformed(String),
    #[error(
        "the document is {bytes} bytes; at most {} is accepted",
        crate::MAX_DOCUMENT_BYTES
    )]
    TooLarge { bytes: usize },
    #[error("the hash does not match the body (document says {said}, body is {actual})")]
    HashMismatch { said: String, actual: String },
    #[error("unsigned, and this gateway only applies documents signed with its fleet key")]
    Unsigned,
    #[error("the signature is not valid for this version and hash with the fleet key")]
    BadSignature,
    #[error("the signature is not hex-encoded ed25519 (128 hex digits)")]
    SignatureFormat,
    #[error("the fleet public key is not 64 hex digits")]
    KeyFormat,
}

/// `sha256:<hex>` of `body`.
pub fn hash_of(body: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    format!("sha256:{}", hex(d.as_ref()))
}

/// What a signature covers.
pub fn signed_message(version: u64, hash: &str) -> Vec<u8> {
    format!("outpost-config\n{version}\n{hash}\n").into_bytes()
}

impl Document {
    /// A document for `body` at `version`, unsigned.
    pub fn new(version: u64, body: String) -> Self {
        Document {
            version,
            hash: hash_of(&body),
            body,
            signature: None,
        }
    }

    /// Reads a document from JSON. A JSON string holding the document (as
    /// ThingsBoard attributes may carry it) is read too.
    ///
    /// # Errors
    /// [`DocumentError::TooLarge`] over [`crate::MAX_DOCUMENT_BYTES`] (nothing
    /// is parsed), [`DocumentError::Malformed`] with serde's reason.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DocumentError> {
        if bytes.len() > crate::MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge { bytes: bytes.len() });
        }
        match serde_json::from_slice::<Document>(bytes) {
            Ok(d) => Ok(d),
            Err(e) => match serde_json::from_slice::<String>(bytes) {
                Ok(inner) => serde_json::from_str(&inner)
                    .map_err(|e| DocumentError::Malformed(e.to_string())),
                Err(_) => Err(DocumentError::Malformed(e.to_string())),
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks the hash, and the signature against `fleet_key` (hex) when
    /// one is configured.
    ///
    /// # Errors
    /// The first problem found.
    pub fn verify(&self, fleet_key: Option<&str>) -> Result<(), DocumentError> {
        let actual = hash_of(&self.body);
        if !self.hash.eq_ignore_ascii_case(&actual) {
            return Err(DocumentError::HashMismatch {
                said: self.hash.clone(),
                actual,
            });
        }
        let Some(key) = fleet_key else {
            return Ok(());
        };
        let key = unhex(key)
            .filter(|k| k.len() == 32)
            .ok_or(DocumentError::KeyFormat)?;
        let sig = self.signature.as_deref().ok_or(DocumentError::Unsigned)?;
        let sig = unhex(sig)
            .filter(|s| s.len() == 64)
            .ok_or(DocumentError::SignatureFormat)?;
        UnparsedPublicKey::new(&signature::ED25519, key)
            .verify(&signed_message(self.version, &actual), &sig)
            .map_err(|_| DocumentError::BadSignature)
    }

    /// Signs with a 32-byte ed25519 seed (hex).
    ///
    /// # Errors
    /// [`DocumentError::KeyFormat`] for a seed that is not 64 hex digits.
    pub fn sign(&mut self, seed_hex: &str) -> Result<(), DocumentError> {
        let pair = key_pair(seed_hex)?;
        let sig = pair.sign(&signed_message(self.version, &self.hash));
        self.signature = Some(hex(sig.as_ref()));
        Ok(())
    }
}

fn key_pair(seed_hex: &str) -> Result<Ed25519KeyPair, DocumentError> {
    let seed = unhex(seed_hex.trim())
        .filter(|s| s.len() == 32)
        .ok_or(DocumentError::KeyFormat)?;
    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| DocumentError::KeyFormat)
}

/// The public key (hex) of a seed (hex).
///
/// # Errors
/// [`DocumentError::KeyFormat`].
pub fn public_key_of(seed_hex: &str) -> Result<String, DocumentError> {
    Ok(hex(key_pair(seed_hex)?.public_key().as_ref()))
}

/// A fresh random seed (hex).
///
/// # Errors
/// When the system's random source fails.
pub fn new_seed() -> Result<String, DocumentError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| DocumentError::Malformed("no random source".into()))?;
    Ok(hex(&seed))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _infallible = write!(s, "{b:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    #[test]
    fn rfc8032_test_vector_key() {
        // RFC 8032 section 7.1, test 1.
        assert_eq!(
            public_key_of(SEED).unwrap(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn signed_documents_verify_and_tampering_is_caught() {
        let key = public_key_of(SEED).unwrap();
        let mut d = Document::new(7, "[gateway]\nid = \"gw\"\n".into());
        assert_eq!(d.verify(Some(&key)), Err(DocumentError::Unsigned));
        assert_eq!(d.verify(None), Ok(()));
        d.sign(SEED).unwrap();
        assert_eq!(d.verify(Some(&key)), Ok(()));
        let back = Document::from_json(d.to_json().as_bytes()).unwrap();
        assert_eq!(back, d);
        // A string holding the document is read too.
        let quoted = serde_json::to_string(&d.to_json()).unwrap();
        assert_eq!(Document::from_json(quoted.as_bytes()).unwrap(), d);

        let mut newer = d.clone();
        newer.version = 8;
        assert_eq!(newer.verify(Some(&key)), Err(DocumentError::BadSignature));
        let mut body = d.clone();
        body.body.push('#');
        assert!(matches!(
            body.verify(Some(&key)),
            Err(DocumentError::HashMismatch { .. })
        ));
        body.hash = hash_of(&body.body);
        assert_eq!(body.verify(Some(&key)), Err(DocumentError::BadSignature));
        let other = public_key_of(&new_seed().unwrap()).unwrap();
        assert_eq!(d.verify(Some(&other)), Err(DocumentError::BadSignature));
        let mut junk = d.clone();
        junk.signature = Some("zz".into());
        assert_eq!(junk.verify(Some(&key)), Err(DocumentError::SignatureFormat));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"version\":1}",
            b"{\"version\":-1,\"hash\":\"\",\"body\":\"\"}",
            b"\xff",
        ] {
            assert!(matches!(
                Document::from_json(bad),
                Err(DocumentError::Malformed(_))
            ));
        }
        let extra = br#"{"version":1,"hash":"x","body":"","colour":1}"#;
        assert!(Document::from_json(extra).is_err());
    }

    #[test]
    fn an_oversized_document_is_refused_unread() {
        let big = Document::new(1, "#".repeat(crate::MAX_DOCUMENT_BYTES));
        let json = big.to_json();
        assert_eq!(
            Document::from_json(json.as_bytes()),
            Err(DocumentError::TooLarge { bytes: json.len() })
        );
        let fits = Document::new(1, "\n".repeat(crate::MAX_CONFIG_BYTES));
        assert_eq!(Document::from_json(fits.to_json().as_bytes()), Ok(fits));
    }
}
