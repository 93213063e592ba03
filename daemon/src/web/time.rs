//! UTC times on the pages: the shared ISO 8601 formatting and parsing.
pub use outpost_core::utc::*;
