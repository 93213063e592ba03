//! Secrets in the configuration: passwords, tokens, keys.
//!
//! A secret is given inline (`password = "..."`) or, better, as a path
//! (`password_file = "/etc/outpost/mqtt.pass"`). Either way it never appears
//! in `Debug` output, logs, or error messages.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An inline secret. `Debug` prints `***`; there is no `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must hand it to a peer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves an inline-or-file pair (validated so that at most one is set).
/// The file's content is trimmed of a trailing newline.
pub fn resolve(
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SecretError> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(Secret(
        text.trim_end_matches(['\r', '\n']).to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn file_secret_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("outpost-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = resolve(None, Some(&p)).unwrap().unwrap();
        assert_eq!(s.expose(), "s3cret");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
