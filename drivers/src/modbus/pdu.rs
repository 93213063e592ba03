//! Modbus PDUs (function code + data) for the functions the gateway uses:
//! reads FC01–04, writes FC05, FC06, FC15, FC16.

use outpost_config::modbus::Table;

/// A request the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Read {
        table: Table,
        address: u16,
        count: u16,
    },
    WriteCoil {
        address: u16,
        value: bool,
    },
    WriteRegister {
        address: u16,
        value: u16,
    },
    WriteCoils {
        address: u16,
        values: Vec<bool>,
    },
    WriteRegisters {
        address: u16,
        values: Vec<u16>,
    },
}

/// A successful response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
    Written,
}

/// A Modbus exception response: data, not a link failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception(pub u8);

impl Exception {
    pub const ILLEGAL_DATA_ADDRESS: Exception = Exception(2);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "illegal function",
            2 => "illegal data address",
            3 => "illegal data value",
            4 => "server device failure",
            5 => "acknowledge",
            6 => "server device busy",
            8 => "memory parity error",
            10 => "gateway path unavailable",
            11 => "gateway target device failed to respond",
            _ => "unknown exception",
        }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "modbus exception {}: {}", self.0, self.name())
    }
}

/// A response PDU that does not fit its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected response: {0}")]
pub struct Mismatch(pub String);

impl Request {
    pub fn function(&self) -> u8 {
        match self {
            Request::Read { table, .. } => match table {
                Table::Coil => 0x01,
                Table::Discrete => 0x02,
                Table::Holding => 0x03,
                Table::Input => 0x04,
            },
            Request::WriteCoil { .. } => 0x05,
            Request::WriteRegister { .. } => 0x06,
            Request::WriteCoils { .. } => 0x0F,
            Request::WriteRegisters { .. } => 0x10,
        }
    }

    /// Appends the PDU to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(self.function());
        match self {
            Request::Read { address, count, .. } => {
                buf.extend_from_slice(&address.to_be_bytes());
                buf.extend_from_slice(&count.to_be_bytes());
            }
            Request::WriteCoil { address, value } => {
                buf.extend_from_slice(&address.to_be_bytes());
                buf.extend_from_slice(if *value { &[0xFF, 0x00] } else { &[0x00, 0x00] });
            }
            Request::WriteRegister { address, value } => {
                buf.extend_from_slice(&address.to_be_bytes());
                buf.extend_from_slice(&value.to_be_bytes());
            }
            Request::WriteCoils { address, values } => {
                buf.extend_from_slice(&address.to_be_bytes());
                buf.extend_from_slice(&(values.len() as u16).to_be_bytes());
                let bytes = values.len().div_ceil(8);
                buf.push(bytes as u8);
                for chunk in values.chunks(8) {
                    let mut b = 0u8;
                    for (i, v) in chunk.iter().enumerate() {
                        if *v {
                            b |= 1 << i;
                        }
                    }
                    buf.push(b);
                }
            }
            Request::WriteRegisters { address, values } => {
                buf.extend_from_slice(&address.to_be_bytes());
                buf.extend_from_slice(&(values.len() as u16).to_be_bytes());
                buf.push((values.len() * 2) as u8);
                for v in values {
                    buf.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
    }

    /// Length of a normal (non-exception) response PDU.
    pub fn response_len(&self) -> usize {
        match self {
            Request::Read { table, count, .. } => {
                let n = usize::from(*count);
                if table.is_bits() {
                    2 + n.div_ceil(8)
                } else {
                    2 + 2 * n
                }
            }
            _ => 5,
        }
    }

    /// Decodes a response PDU (function code first).
    ///
    /// # Errors
    /// [`Mismatch`] when the PDU does not answer this request.
    pub fn decode_response(&self, pdu: &[u8]) -> Result<Result<Response, Exception>, Mismatch> {
        let fc = self.function();
        let Some((&got, data)) = pdu.split_first() else {
            return Err(Mismatch("empty PDU".into()));
        };
        if got == fc | 0x80 {
            return match data {
                [code] => Ok(Err(Exception(*code))),
                _ => Err(Mismatch(format!("exception PDU of {} bytes", pdu.len()))),
            };
        }
        if got != fc {
            return Err(Mismatch(format!(
                "function {got:#04x} answers a request {fc:#04x}"
            )));
        }
        match self {
            Request::Read { table, count, .. } => {
                let n = usize::from(*count);
                let Some((&byte_count, body)) = data.split_first() else {
                    return Err(Mismatch("no byte count".into()));
                };
                let want = if table.is_bits() {
                    n.div_ceil(8)
                } else {
                    2 * n
                };
                if usize::from(byte_count) != want || body.len() != want {
                    return Err(Mismatch(format!(
                        "{} data bytes for {n} {}, expected {want}",
                        body.len(),
                        if table.is_bits() { "bits" } else { "registers" }
                    )));
                }
                if table.is_bits() {
                    Ok(Ok(Response::Bits(
                        (0..n).map(|i| body[i / 8] & (1 << (i % 8)) != 0).collect(),
                    )))
                } else {
                    Ok(Ok(Response::Registers(
                        body.chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect(),
                    )))
                }
            }
            _ => {
                let mut expect = Vec::with_capacity(5);
                self.encode(&mut expect);
                // Writes echo function, address and value (FC05/06) or quantity (FC15/16).
                if data.len() == 4 && data == &expect[1..5] {
                    Ok(Ok(Response::Written))
                } else {
                    Err(Mismatch(format!(
                        "write echo {data:02x?} does not match the request"
                    )))
                }
            }
        }
    }
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), as sent:
/// low byte first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_spec_example() {
        // Modbus over serial line, appendix: 02 07 -> CRC 0x1241 (sent 41 12).
        assert_eq!(crc16(&[0x02, 0x07]), 0x1241);
        // Read holding registers 0..10 of unit 1: 01 03 00 00 00 0A C5 CD.
        assert_eq!(
            crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]).to_le_bytes(),
            [0xC5, 0xCD]
        );
    }

    #[test]
    fn read_requests_encode_and_responses_decode() {
        let r = Request::Read {
            table: Table::Holding,
            address: 0x006B,
            count: 3,
        };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(b, [0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(r.response_len(), 8);
        let resp = [0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        assert_eq!(
            r.decode_response(&resp),
            Ok(Ok(Response::Registers(vec![0x022B, 0, 0x64])))
        );
        assert_eq!(r.decode_response(&[0x83, 0x02]), Ok(Err(Exception(2))));
        assert!(r.decode_response(&[0x03, 0x04, 0, 0, 0, 0]).is_err());
        assert!(r.decode_response(&[0x04, 0x06, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn coils_decode_lsb_first() {
        let r = Request::Read {
            table: Table::Coil,
            address: 19,
            count: 10,
        };
        assert_eq!(r.response_len(), 4);
        let resp = [0x01, 0x02, 0b1100_1101, 0b0000_0001];
        let want = vec![
            true, false, true, true, false, false, true, true, true, false,
        ];
        assert_eq!(r.decode_response(&resp), Ok(Ok(Response::Bits(want))));
    }

    #[test]
    fn writes_encode_and_check_their_echo() {
        let w = Request::WriteCoils {
            address: 19,
            values: vec![
                true, false, true, true, false, false, true, true, true, false,
            ],
        };
        let mut b = Vec::new();
        w.encode(&mut b);
        assert_eq!(b, [0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02, 0xCD, 0x01]);
        assert_eq!(
            w.decode_response(&[0x0F, 0x00, 0x13, 0x00, 0x0A]),
            Ok(Ok(Response::Written))
        );
        assert!(w.decode_response(&[0x0F, 0x00, 0x13, 0x00, 0x09]).is_err());
        let w = Request::WriteRegisters {
            address: 1,
            values: vec![0x000A, 0x0102],
        };
        b.clear();
        w.encode(&mut b);
        assert_eq!(
            b,
            [0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02]
        );
        let w = Request::WriteCoil {
            address: 0xAC,
            value: true,
        };
        b.clear();
        w.encode(&mut b);
        assert_eq!(b, [0x05, 0x00, 0xAC, 0xFF, 0x00]);
        assert_eq!(w.decode_response(&b), Ok(Ok(Response::Written)));
    }
}
