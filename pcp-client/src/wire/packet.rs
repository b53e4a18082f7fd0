//! A typed view over the PCP common header (RFC 6887 §7.1, §7.2).

use std::net::IpAddr;

use super::address::{decode_address, encode_address, read_field};
use super::error::Error;
use super::types::{Opcode, ResultCode};
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// Field offsets of the common header.
pub(crate) mod field {
    use std::ops::Range;

    /// Version (both directions).
    pub const VERSION: usize = 0;
    /// R bit (0x80) and opcode (both directions).
    pub const OPCODE: usize = 1;
    /// Request: 16 reserved bits.
    pub const REQUEST_RESERVED: Range<usize> = 2..4;
    /// Response: 8 reserved bits.
    pub const RESPONSE_RESERVED: usize = 2;
    /// Response: result code.
    pub const RESULT_CODE: usize = 3;
    /// Requested (request) or granted (response) lifetime.
    pub const LIFETIME: Range<usize> = 4..8;
    /// Request: PCP Client's IP Address.
    pub const CLIENT_IP: usize = 8;
    /// Response: Epoch Time.
    pub const EPOCH: Range<usize> = 8..12;
    /// Response: 96 reserved bits (the last 96 bits of the request's Client IP field).
    pub const RESPONSE_RESERVED_96: Range<usize> = 12..24;
}

/// Bit set in the opcode byte of a response.
pub(crate) const R_BIT: u8 = 0x80;

/// A read/write view of a PCP message's common header over a buffer.
///
/// [`Packet::new_checked`] applies the length rules every PCP message obeys; the accessors
/// then cannot panic. [`Packet::new_unchecked`] skips them; its accessors panic on a buffer
/// shorter than 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the rules on length every PCP message obeys: at least 24 bytes
    /// ([`Error::Truncated`]), at most 1100 ([`Error::TooLong`]), a multiple of 4
    /// ([`Error::NotMultipleOf4`]).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(Error::Truncated { len })
        } else if len > MAX_MESSAGE_LEN {
            Err(Error::TooLong { len })
        } else if len % 4 != 0 {
            Err(Error::NotMultipleOf4 { len })
        } else {
            Ok(())
        }
    }

    /// Consumes the view and returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// True if the R bit is set (a response).
    pub fn is_response(&self) -> bool {
        self.buffer.as_ref()[field::OPCODE] & R_BIT != 0
    }

    /// Opcode (R bit masked off).
    pub fn opcode(&self) -> Opcode {
        Opcode::from(self.buffer.as_ref()[field::OPCODE])
    }

    /// Requested (request) or granted (response) lifetime, in seconds.
    pub fn lifetime(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::LIFETIME.start)
    }

    /// Request: the PCP Client's IP Address field.
    pub fn client_ip(&self) -> IpAddr {
        decode_address(&read_field(self.buffer.as_ref(), field::CLIENT_IP))
    }

    /// Response: the result code.
    pub fn result_code(&self) -> ResultCode {
        ResultCode::from(self.buffer.as_ref()[field::RESULT_CODE])
    }

    /// Response: the server's Epoch Time, in seconds.
    pub fn epoch(&self) -> u32 {
        be_u32(self.buffer.as_ref(), field::EPOCH.start)
    }

    /// Everything after the common header: opcode-specific data, then options.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    pub fn set_version(&mut self, version: u8) {
        self.buffer.as_mut()[field::VERSION] = version;
    }

    /// Sets R bit and opcode together.
    pub fn set_opcode(&mut self, response: bool, opcode: Opcode) {
        let r = if response { R_BIT } else { 0 };
        self.buffer.as_mut()[field::OPCODE] = r | u8::from(opcode);
    }

    /// Sets the lifetime.
    pub fn set_lifetime(&mut self, lifetime: u32) {
        self.buffer.as_mut()[field::LIFETIME].copy_from_slice(&lifetime.to_be_bytes());
    }

    /// Request: sets the Client IP field and zeroes the 16 reserved bits.
    pub fn set_request_header_fields(&mut self, client_ip: IpAddr) {
        let buf = self.buffer.as_mut();
        buf[field::REQUEST_RESERVED].fill(0);
        buf[field::CLIENT_IP..field::CLIENT_IP + 16].copy_from_slice(&encode_address(client_ip));
    }

    /// Response: sets the result code and zeroes the 8 reserved bits.
    pub fn set_result_code(&mut self, result: ResultCode) {
        let buf = self.buffer.as_mut();
        buf[field::RESPONSE_RESERVED] = 0;
        buf[field::RESULT_CODE] = result.into();
    }

    /// Response: sets the Epoch Time.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&epoch.to_be_bytes());
    }

    /// Response: zeroes the 96 reserved bits (as for a request that parsed, RFC 6887 §7.2).
    pub fn clear_response_reserved(&mut self) {
        self.buffer.as_mut()[field::RESPONSE_RESERVED_96].fill(0);
    }

    /// Everything after the common header, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Reads the first fields of a datagram that claims to be a PCP response, before any length
/// rule: `Some((version, opcode, result))` when it is at least 4 bytes and the R bit is set.
///
/// This is the order of RFC 6887 §8.3: a client checks for UNSUPP_VERSION before it requires
/// 24 bytes, so short answers from older servers reach version negotiation.
pub fn peek_response(datagram: &[u8]) -> Option<(u8, Opcode, ResultCode)> {
    match datagram {
        [version, op, _, result, ..] if op & R_BIT != 0 => {
            Some((*version, Opcode::from(*op), ResultCode::from(*result)))
        }
        _ => None,
    }
}

pub(crate) fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

pub(crate) fn be_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules() {
        assert_eq!(
            Packet::new_checked(&[0u8; 20][..]),
            Err(Error::Truncated { len: 20 })
        );
        assert_eq!(
            Packet::new_checked(&[0u8; 26][..]),
            Err(Error::NotMultipleOf4 { len: 26 })
        );
        assert_eq!(
            Packet::new_checked(&[0u8; 1104][..]),
            Err(Error::TooLong { len: 1104 })
        );
        assert!(Packet::new_checked(&[0u8; 1100][..]).is_ok());
        assert!(Packet::new_checked(&[0u8; 24][..]).is_ok());
    }

    #[test]
    fn peek_response_needs_four_bytes_and_r_bit() {
        assert_eq!(peek_response(&[2, 0x81, 0]), None);
        assert_eq!(peek_response(&[2, 0x01, 0, 0]), None);
        assert_eq!(
            peek_response(&[2, 0x81, 0, 1]),
            Some((2, Opcode::Map, ResultCode::UnsuppVersion))
        );
    }

    #[test]
    fn setters_write_the_fields() {
        let mut buf = [0xffu8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version(2);
        p.set_opcode(true, Opcode::Peer);
        p.set_result_code(ResultCode::NoResources);
        p.set_lifetime(30);
        p.set_epoch(1234);
        p.clear_response_reserved();
        assert_eq!(
            buf,
            [
                2, 0x82, 0, 8, 0, 0, 0, 30, 0, 0, 4, 0xd2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }
}
