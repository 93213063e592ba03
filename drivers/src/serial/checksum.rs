//! Checksums that serial instruments put at the end of a frame: XOR and
//! sum of the bytes (one byte), CRC-16/MODBUS and CRC-16/CCITT (two),
//! carried as raw bytes or as hex text.

use crate::modbus::pdu::crc16 as crc16_modbus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// XOR of the bytes (NMEA's `*hh` is this, as hex).
    Xor,
    /// Sum of the bytes, modulo 256.
    Sum8,
    /// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), low byte first
    /// when binary.
    Crc16Modbus,
    /// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), high byte first when
    /// binary.
    Crc16Ccitt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The checksum's bytes as they are.
    Binary,
    /// Upper- or lower-case hex digits (2 per byte).
    Hex,
}

/// A checksum at the end of each frame, over the bytes from `skip` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub kind: Kind,
    pub encoding: Encoding,
    /// Leading bytes the checksum does not cover (e.g. NMEA's `$`).
    pub skip: usize,
    /// Bytes between the covered data and the checksum (e.g. NMEA's `*`),
    /// not covered either.
    pub separator: usize,
}

fn crc16_ccitt(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl Kind {
    /// The checksum's bytes, in the order they appear on the line.
    pub fn compute(self, data: &[u8]) -> Vec<u8> {
        match self {
            Kind::Xor => vec![data.iter().fold(0u8, |a, b| a ^ b)],
            Kind::Sum8 => vec![data.iter().fold(0u8, |a, b| a.wrapping_add(*b))],
            Kind::Crc16Modbus => crc16_modbus(data).to_le_bytes().to_vec(),
            Kind::Crc16Ccitt => crc16_ccitt(data).to_be_bytes().to_vec(),
        }
    }

    fn width(self) -> usize {
        match self {
            Kind::Xor | Kind::Sum8 => 1,
            Kind::Crc16Modbus | Kind::Crc16Ccitt => 2,
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Checksum {
    /// The covered data of a frame whose checksum is right; why not
    /// otherwise.
    pub fn verify<'a>(&self, frame: &'a [u8]) -> Result<&'a [u8], String> {
        let n = self.kind.width();
        let tail = match self.encoding {
            Encoding::Binary => n,
            Encoding::Hex => 2 * n,
        };
        let need = self.skip + self.separator + tail;
        if frame.len() < need {
            return Err(format!(
                "frame of {} bytes is too short for its checksum",
                frame.len()
            ));
        }
        let body_end = frame.len() - tail - self.separator;
        let data = &frame[self.skip..body_end];
        let given: Vec<u8> = match self.encoding {
            Encoding::Binary => frame[frame.len() - tail..].to_vec(),
            Encoding::Hex => frame[frame.len() - tail..]
                .chunks(2)
                .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| "the checksum is not hex".to_string())?,
        };
        let want = self.kind.compute(data);
        if given == want {
            Ok(data)
        } else {
            Err(format!(
                "checksum {} where {} was expected",
                hex(&given),
                hex(&want)
            ))
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // The catalogue's check value of each CRC over "123456789".
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
        assert_eq!(crc16_ccitt(b"123456789"), 0x29B1);
        assert_eq!(Kind::Xor.compute(&[0x01, 0x02, 0x04]), [0x07]);
        assert_eq!(Kind::Sum8.compute(&[0xFF, 0x02]), [0x01]);
    }

    #[test]
    fn an_nmea_sentence_checks_and_a_changed_byte_does_not() {
        let nmea = Checksum {
            kind: Kind::Xor,
            encoding: Encoding::Hex,
            skip: 1,
            separator: 1,
        };
        let s = b"$GPGLL,4916.45,N,12311.12,W,225444,A*31";
        assert_eq!(nmea.verify(s), Ok(&s[1..s.len() - 3]));
        let bad = b"$GPGLL,4916.46,N,12311.12,W,225444,A*31";
        assert!(nmea.verify(bad).unwrap_err().contains("expected"));
        assert!(nmea.verify(b"$A*").is_err(), "too short");
        assert!(nmea.verify(b"$AB*ZZ").unwrap_err().contains("not hex"));
    }

    #[test]
    fn binary_crcs_in_their_byte_order() {
        let mut f = b"payload".to_vec();
        f.extend_from_slice(&crc16_modbus(b"payload").to_le_bytes());
        let c = Checksum {
            kind: Kind::Crc16Modbus,
            encoding: Encoding::Binary,
            skip: 0,
            separator: 0,
        };
        assert_eq!(c.verify(&f), Ok(&b"payload"[..]));
        let mut g = b"payload".to_vec();
        g.extend_from_slice(&crc16_ccitt(b"payload").to_be_bytes());
        let c = Checksum {
            kind: Kind::Crc16Ccitt,
            ..c
        };
        assert_eq!(c.verify(&g), Ok(&b"payload"[..]));
        assert!(c.verify(&f).is_err());
    }
}
