//! Plain serial instruments (scales, barcode readers, gas analysers, GPS,
//! meters that print a line per reading): frames cut from the byte stream,
//! checked, and parsed into tags.

pub mod checksum;
mod driver;
pub mod frame;
pub mod parse;

pub use driver::SerialDriver;
