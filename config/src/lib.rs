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

use std::collections::HashMap;
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

/// Parses and validates configuration text. `file` names it in errors.
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
    let root = de::Node {
        span: 0..0,
        kind: de::Kind::Table(de::table_entries(table.get_ref())),
    };

    let cfg: Config = de::from_node(&root).map_err(|diags| {
        let mut errors: Vec<ConfigError> = diags
            .into_iter()
            .map(|d| at(d.span.start, d.path, d.message))
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors(errors)
    })?;

    let problems = validate::validate(&cfg);
    if !problems.is_empty() {
        let mut spans = HashMap::new();
        de::index_spans(&root, "", &mut spans);
        let mut errors: Vec<ConfigError> = problems
            .into_iter()
            .map(|p| {
                let start = spans.get(&p.path).map_or(0, |s| s.start);
                at(start, p.path, p.message)
            })
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    Ok(cfg)
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

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let src = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&src, &path.display().to_string()).map_err(LoadError::Invalid)
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
