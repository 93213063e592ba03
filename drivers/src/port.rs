//! Opening a serial port with its line settings: one place for the Modbus
//! RTU buses and the plain serial instruments.

use std::path::Path;

use outpost_config::modbus::Parity;
use outpost_config::serial::FlowControl;

/// A port's settings.
#[derive(Debug, Clone, Copy)]
pub struct LineSettings {
    pub baud: u32,
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
    pub flow_control: FlowControl,
    /// RS-485 mode where the kernel supports it (a warning otherwise).
    pub rs485: bool,
}

/// Opens `path` with `s`.
///
/// # Errors
/// When the port cannot be opened (missing, busy, no permission).
pub fn open(path: &Path, s: LineSettings) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt;
    let port = tokio_serial::new(path.to_string_lossy(), s.baud)
        .parity(match s.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(if s.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        })
        .stop_bits(if s.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(match s.flow_control {
            FlowControl::None => tokio_serial::FlowControl::None,
            FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
            FlowControl::Software => tokio_serial::FlowControl::Software,
        })
        .open_native_async()
        .map_err(std::io::Error::other)?;
    if s.rs485 {
        if let Err(e) = crate::modbus::rs485::enable(&port) {
            tracing::warn!(port = %path.display(), error = %e, "RS-485 mode is not available on this port; using it as is.");
        }
    }
    Ok(port)
}
