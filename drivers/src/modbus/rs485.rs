//! The kernel's RS-485 mode (`TIOCSRS485`): the UART drives RTS to switch
//! the transceiver, so half-duplex lines work without an auto-direction
//! adapter. Not every driver supports it; then the port is used as is.

use std::os::fd::AsRawFd;

/// `struct serial_rs485` from `<linux/serial.h>` (32 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct SerialRs485 {
    flags: u32,
    delay_rts_before_send: u32,
    delay_rts_after_send: u32,
    padding: [u32; 5],
}

const SER_RS485_ENABLED: u32 = 1 << 0;
const SER_RS485_RTS_ON_SEND: u32 = 1 << 1;

/// Turns RS-485 mode on for the port.
///
/// # Errors
/// The OS error when the port's driver does not support it.
#[allow(unsafe_code)]
pub fn enable(port: &impl AsRawFd) -> std::io::Result<()> {
    let conf = SerialRs485 {
        flags: SER_RS485_ENABLED | SER_RS485_RTS_ON_SEND,
        ..SerialRs485::default()
    };
    // SAFETY: TIOCSRS485 reads a `struct serial_rs485`, which `conf` is (same
    // layout, repr(C)), and does not keep the pointer.
    let rc = unsafe {
        libc::ioctl(
            port.as_raw_fd(),
            libc::TIOCSRS485 as _,
            &conf as *const SerialRs485,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
