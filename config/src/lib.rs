//! Outpost's configuration: one TOML file, read into [`Config`].
//!
//! Invariants:
//! - A [`Config`] value exists only if the whole file parsed, matched the
//!   schema, and passed validation. There is no partially valid config.
//! - Every problem is reported, not just the first, each with file, line,
//!   column and key path ([`ConfigError`]), ordered by position in the file.
//! - Unknown keys are errors (`deny_unknown_fields` on every struct).
//! - Secrets ([`Secret`]) never show in `Debug` output or error messages.

mod de;
pub mod document;
pub mod gpio;
pub mod modbus;
pub mod schema;
pub mod secret;
pub mod serial;
pub mod units;
mod validate;
mod validate_gpio;
mod validate_modbus;
mod validate_serial;

use std::fmt;
use std::path::{Path, PathBuf};

pub use schema::*;
pub use secret::Secret;
pub use units::{ByteSize, Duration};

/// The demo configuration that `outpostd` runs when given no file.
pub const DEMO_TOML: &str = include_str!("demo.toml");

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted key path with array indexes, e.g. `device[1].sim.interval`;
    /// empty for the document as a whole.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Line starts of a source text, to turn byte offsets into line and column.
struct Lines<'a> {
    src: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(src: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Self { src, starts }
    }

    fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line).copied().unwrap_or(0);
        let col = self
            .src
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }
}

/// The largest configuration file (or document body) read: 1 MiB. A
/// gateway's file is tens of kilobytes (1 MiB holds some 600 devices of 20
/// tags each). toml's parser holds its whole token stream and tree: a check
/// takes about 55 times the file's size for a moment, so the bound keeps
/// one within a gateway's memory whoever sends the file.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The largest configuration document (JSON) read: 2 MiB and a little, room
/// for a body of [`MAX_CONFIG_BYTES`] with JSON's escapes.
pub const MAX_DOCUMENT_BYTES: usize = (2 << 20) + 4096;

/// Parses and validates configuration bytes: as [`parse`], and text that is
/// not UTF-8 or larger than [`MAX_CONFIG_BYTES`] is an error located where
/// it goes wrong.
pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Config, ConfigErrors> {
    let one = |line, column, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            key_path: String::new(),
            message,
        }])
    };
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(one(1, 1, too_large()));
    }
    match std::str::from_utf8(bytes) {
        Ok(src) => parse(src, file),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let valid = std::str::from_utf8(good).unwrap_or_default();
            let (line, column) = Lines::new(valid).locate(valid.len());
            let bad = &bytes[e.valid_up_to()..];
            let shown: Vec<String> = bad
                .iter()
                .take(e.error_len().unwrap_or(bad.len()).min(4))
                .map(|b| format!("{b:#04x}"))
                .collect();
            Err(one(
                line,
                column,
                format!(
                    "not UTF-8: byte(s) {} cannot start or continue a character (a configuration file is UTF-8 text)",
                    shown.join(" ")
                ),
            ))
        }
    }
}

fn too_large() -> String {
    format!(
        "the configuration is larger than {} MiB, the most that is read",
        MAX_CONFIG_BYTES >> 20
    )
}

/// Parses and validates configuration text. `file` names it in errors.
///
/// Every problem is reported at once: syntax errors (then nothing else can
/// be said), and otherwise the schema's problems together with the checks
/// made on the values (names, ranges, references), except checks on values
/// the schema had to stand in for.
pub fn parse(src: &str, file: &str) -> Result<Config, ConfigErrors> {
    let lines = Lines::new(src);
    let at = |span_start: usize, key_path: String, message: String| {
        let (line, column) = lines.locate(span_start);
        ConfigError {
            file: file.to_string(),
            line,
            column,
            key_path,
            message,
        }
    };
    if src.len() > MAX_CONFIG_BYTES {
        return Err(ConfigErrors(vec![at(0, String::new(), too_large())]));
    }

    let root = {
        let (table, syntax) = toml::de::DeTable::parse_recoverable(src);
        if !syntax.is_empty() {
            let errors = syntax
                .iter()
                .map(|e| {
                    let start = e.span().map_or(0, |s| s.start);
                    let msg = e.message().trim().replace('\n', " ");
                    at(start, String::new(), format!("TOML syntax: {msg}"))
                })
                .collect();
            return Err(ConfigErrors(errors));
        }
        // toml's own tree is dropped here, before the passes below.
        de::Node {
            span: 0..0,
            kind: de::Kind::Table(de::table_entries(table.get_ref())),
        }
    };

    let partial = de::from_node_partial::<Config>(&root);
    let mut errors: Vec<ConfigError> = partial
        .diags
        .into_iter()
        .map(|d| at(d.span.start, d.path, d.message))
        .collect();
    if let Some(cfg) = &partial.value {
        let removed: std::collections::HashSet<String> = partial
            .patched
            .iter()
            .filter(|(p, removed)| *removed && p.ends_with(']'))
            .map(|(p, _)| p.clone())
            .collect();
        for p in validate::validate(cfg) {
            let path = de::original_path(&p.path, &removed);
            if partial.patched.iter().any(|(q, _)| overlaps(&path, q)) {
                continue;
            }
            let start = nearest_span(&root, &path);
            errors.push(at(start, path, p.message));
        }
    }
    if errors.is_empty() {
        if let Some(cfg) = partial.value {
            return Ok(cfg);
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Err(ConfigErrors(errors))
}

/// Where `path` starts in the file, or the nearest table holding it (a
/// check on a key left out points at its table).
fn nearest_span(root: &de::Node, path: &str) -> usize {
    let mut p = path;
    loop {
        if let Some(s) = de::span_of(root, p) {
            return s.start;
        }
        match p.rfind(['.', '[']) {
            Some(i) => p = &p[..i],
            None => return 0,
        }
    }
}

/// Whether a check on `path` may have seen a stand-in made at `patched`:
/// one is the other or holds it.
fn overlaps(path: &str, patched: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        outer.is_empty()
            || inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
    };
    within(path, patched) || within(patched, path)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Reads at most [`MAX_CONFIG_BYTES`] (and one more, to know) of `path`.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let bytes = read_bounded(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bytes(&bytes, &path.display().to_string()).map_err(LoadError::Invalid)
}

/// The embedded demo configuration.
pub fn demo() -> Result<Config, ConfigErrors> {
    parse(DEMO_TOML, "<embedded demo config>")
}

impl Config {
    /// Writes the configuration back as TOML (defaults spelled out).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

#[cfg(test)]
mod tests;
