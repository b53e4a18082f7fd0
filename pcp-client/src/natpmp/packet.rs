//! A typed view over a NAT-PMP datagram (RFC 6886 §3.2, §3.3, §3.5), one accessor per field.

use std::net::Ipv4Addr;

use super::{
    EXTERNAL_ADDRESS_REQUEST_LEN, EXTERNAL_ADDRESS_RESPONSE_LEN, Error, MAP_REQUEST_LEN,
    MAP_RESPONSE_LEN, OP_EXTERNAL_ADDRESS, OP_MAP_TCP, OP_MAP_UDP, RESPONSE_BIT,
    RESPONSE_HEADER_LEN, ResultCode,
};

/// Field offsets. Requests and responses share the first two bytes; after that the layouts
/// differ, so each field is named for the message it belongs to.
mod field {
    pub(super) type Field = core::ops::Range<usize>;

    /// Version, every message (RFC 6886 §3).
    pub(super) const VERSION: usize = 0;
    /// Opcode, every message (RFC 6886 §3).
    pub(super) const OPCODE: usize = 1;

    // Mapping request (RFC 6886 §3.3).
    pub(super) const RESERVED: Field = 2..4;
    pub(super) const REQ_INTERNAL_PORT: Field = 4..6;
    pub(super) const REQ_SUGGESTED_EXTERNAL_PORT: Field = 6..8;
    pub(super) const REQ_LIFETIME: Field = 8..12;

    // Every response (RFC 6886 §3.2, §3.3, §3.5).
    pub(super) const RESULT_CODE: Field = 2..4;
    pub(super) const EPOCH: Field = 4..8;
    // External address response (RFC 6886 §3.2).
    pub(super) const EXTERNAL_ADDRESS: Field = 8..12;
    // Mapping response (RFC 6886 §3.3).
    pub(super) const RESP_INTERNAL_PORT: Field = 8..10;
    pub(super) const RESP_EXTERNAL_PORT: Field = 10..12;
    pub(super) const RESP_LIFETIME: Field = 12..16;
}

/// A read (and, over a mutable buffer, write) view of a NAT-PMP datagram.
///
/// As in smoltcp, [`Packet::new_checked`] verifies the buffer holds every field of the message
/// kind its opcode (and, for responses, result code) names; the accessors then cannot fail. An
/// accessor for a field the message kind does not have, or any accessor on a packet made with
/// [`Packet::new_unchecked`] over too short a buffer, panics. The `Repr` parsers never do
/// either, so parsing never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(bytes: &[u8], range: field::Field) -> u16 {
    let b = &bytes[range];
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(bytes: &[u8], range: field::Field) -> u32 {
    let b = &bytes[range];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length (see the type's panic rules).
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`]; returns [`Error::Truncated`] when the
    /// buffer is too short for its message kind.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// The length the message kind named by the buffer's opcode (and result code) needs:
    /// 2 for an external address request or an unknown request opcode, 12 for a mapping
    /// request, 8 for any response whose result is not success or whose opcode is unknown,
    /// 12 for a successful external address response, 16 for a successful mapping response.
    /// Buffers too short to hold the opcode (or a response's result code) need 2 (or 8).
    /// The version byte is not looked at.
    pub fn kind_len(&self) -> usize {
        let data = self.buffer.as_ref();
        let Some(&opcode) = data.get(field::OPCODE) else {
            return EXTERNAL_ADDRESS_REQUEST_LEN;
        };
        if opcode & RESPONSE_BIT == 0 {
            return match opcode {
                OP_MAP_UDP | OP_MAP_TCP => MAP_REQUEST_LEN,
                _ => EXTERNAL_ADDRESS_REQUEST_LEN,
            };
        }
        match data.get(field::RESULT_CODE) {
            Some([0, 0]) if data.len() >= RESPONSE_HEADER_LEN => match opcode & !RESPONSE_BIT {
                OP_EXTERNAL_ADDRESS => EXTERNAL_ADDRESS_RESPONSE_LEN,
                OP_MAP_UDP | OP_MAP_TCP => MAP_RESPONSE_LEN,
                _ => RESPONSE_HEADER_LEN,
            },
            _ => RESPONSE_HEADER_LEN,
        }
    }

    /// Checks that the buffer is at least [`Packet::kind_len`] long; returns
    /// [`Error::Truncated`] otherwise. Longer buffers are accepted.
    pub fn check_len(&self) -> Result<(), Error> {
        let (len, need) = (self.buffer.as_ref().len(), self.kind_len());
        if len < need {
            Err(Error::Truncated { len, need })
        } else {
            Ok(())
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version byte (0 for NAT-PMP).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The opcode byte: 0 to 127 for requests, 128 + request opcode for responses.
    pub fn opcode(&self) -> u8 {
        self.buffer.as_ref()[field::OPCODE]
    }

    /// True when the opcode's top bit marks a response (RFC 6886 §3).
    pub fn is_response(&self) -> bool {
        self.opcode() & RESPONSE_BIT != 0
    }

    /// Mapping request: the Reserved field, which a server MUST ignore (RFC 6886 §3.3).
    pub fn reserved(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RESERVED)
    }

    /// Mapping request: the client's internal port (RFC 6886 §3.3).
    pub fn request_internal_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::REQ_INTERNAL_PORT)
    }

    /// Mapping request: the suggested external port, 0 for "any" (RFC 6886 §3.3).
    pub fn suggested_external_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::REQ_SUGGESTED_EXTERNAL_PORT)
    }

    /// Mapping request: the requested lifetime in seconds, 0 to delete (RFC 6886 §3.3, §3.4).
    pub fn requested_lifetime(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REQ_LIFETIME)
    }

    /// Response: the result code (RFC 6886 §3.5).
    pub fn result_code(&self) -> ResultCode {
        ResultCode::from_u16(be16(self.buffer.as_ref(), field::RESULT_CODE))
    }

    /// Response: Seconds Since Start of Epoch (RFC 6886 §3.6).
    pub fn epoch(&self) -> u32 {
        be32(self.buffer.as_ref(), field::EPOCH)
    }

    /// External address response: the gateway's external IPv4 address (RFC 6886 §3.2).
    pub fn external_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buffer.as_ref(), field::EXTERNAL_ADDRESS))
    }

    /// Mapping response: the internal port, echoed from the request (RFC 6886 §3.3, §3.5).
    pub fn response_internal_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RESP_INTERNAL_PORT)
    }

    /// Mapping response: the mapped external port, 0 when none was created (RFC 6886 §3.3).
    pub fn mapped_external_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RESP_EXTERNAL_PORT)
    }

    /// Mapping response: the granted lifetime in seconds (RFC 6886 §3.3).
    pub fn lifetime(&self) -> u32 {
        be32(self.buffer.as_ref(), field::RESP_LIFETIME)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn put(&mut self, range: field::Field, bytes: &[u8]) {
        self.buffer.as_mut()[range].copy_from_slice(bytes);
    }

    /// Sets the version byte.
    pub fn set_version(&mut self, version: u8) {
        self.buffer.as_mut()[field::VERSION] = version;
    }

    /// Sets the opcode byte.
    pub fn set_opcode(&mut self, opcode: u8) {
        self.buffer.as_mut()[field::OPCODE] = opcode;
    }

    /// Sets a mapping request's Reserved field (MUST be 0 on transmission, RFC 6886 §3.3).
    pub fn set_reserved(&mut self, value: u16) {
        self.put(field::RESERVED, &value.to_be_bytes());
    }

    /// Sets a mapping request's internal port.
    pub fn set_request_internal_port(&mut self, port: u16) {
        self.put(field::REQ_INTERNAL_PORT, &port.to_be_bytes());
    }

    /// Sets a mapping request's suggested external port.
    pub fn set_suggested_external_port(&mut self, port: u16) {
        self.put(field::REQ_SUGGESTED_EXTERNAL_PORT, &port.to_be_bytes());
    }

    /// Sets a mapping request's requested lifetime.
    pub fn set_requested_lifetime(&mut self, seconds: u32) {
        self.put(field::REQ_LIFETIME, &seconds.to_be_bytes());
    }

    /// Sets a response's result code.
    pub fn set_result_code(&mut self, code: ResultCode) {
        self.put(field::RESULT_CODE, &code.to_u16().to_be_bytes());
    }

    /// Sets a response's Seconds Since Start of Epoch.
    pub fn set_epoch(&mut self, seconds: u32) {
        self.put(field::EPOCH, &seconds.to_be_bytes());
    }

    /// Sets an external address response's address.
    pub fn set_external_address(&mut self, address: Ipv4Addr) {
        self.put(field::EXTERNAL_ADDRESS, &address.octets());
    }

    /// Sets a mapping response's internal port.
    pub fn set_response_internal_port(&mut self, port: u16) {
        self.put(field::RESP_INTERNAL_PORT, &port.to_be_bytes());
    }

    /// Sets a mapping response's mapped external port.
    pub fn set_mapped_external_port(&mut self, port: u16) {
        self.put(field::RESP_EXTERNAL_PORT, &port.to_be_bytes());
    }

    /// Sets a mapping response's lifetime.
    pub fn set_lifetime(&mut self, seconds: u32) {
        self.put(field::RESP_LIFETIME, &seconds.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static MAP_REQUEST: [u8; 12] = [0, 1, 0xab, 0xcd, 0x13, 0x88, 0x13, 0x89, 0, 0, 0x1c, 0x20];
    static MAP_RESPONSE: [u8; 16] = [
        0, 0x82, 0, 0, 0, 1, 0, 0, 0x13, 0x88, 0x9c, 0x40, 0, 0, 0x0e, 0x10,
    ];
    static EXTERNAL_ADDRESS_RESPONSE: [u8; 12] = [0, 0x80, 0, 0, 0, 0, 0, 5, 198, 51, 100, 3];

    #[test]
    fn map_request_fields_read_at_rfc_6886_section_3_3_offsets() {
        // RFC 6886 §3.3
        let p = Packet::new_checked(&MAP_REQUEST[..]).expect("complete");
        assert_eq!((p.version(), p.opcode(), p.is_response()), (0, 1, false));
        assert_eq!(p.reserved(), 0xabcd);
        assert_eq!(p.request_internal_port(), 5000);
        assert_eq!(p.suggested_external_port(), 5001);
        assert_eq!(p.requested_lifetime(), 7200);
    }

    #[test]
    fn response_fields_read_at_rfc_6886_offsets() {
        // RFC 6886 §3.2, §3.3
        let p = Packet::new_checked(&MAP_RESPONSE[..]).expect("complete");
        assert!(p.is_response());
        assert_eq!(p.result_code(), ResultCode::Success);
        assert_eq!(p.epoch(), 0x10000);
        assert_eq!(p.response_internal_port(), 5000);
        assert_eq!(p.mapped_external_port(), 40000);
        assert_eq!(p.lifetime(), 3600);
        let p = Packet::new_checked(&EXTERNAL_ADDRESS_RESPONSE[..]).expect("complete");
        assert_eq!(p.external_address(), Ipv4Addr::new(198, 51, 100, 3));
        assert_eq!(p.epoch(), 5);
    }

    #[test]
    fn setters_write_what_accessors_read() {
        let mut buf = [0u8; 16];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version(0);
        p.set_opcode(0x82);
        p.set_result_code(ResultCode::Success);
        p.set_epoch(0x10000);
        p.set_response_internal_port(5000);
        p.set_mapped_external_port(40000);
        p.set_lifetime(3600);
        assert_eq!(buf, MAP_RESPONSE);
        let mut buf = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_opcode(1);
        p.set_reserved(0xabcd);
        p.set_request_internal_port(5000);
        p.set_suggested_external_port(5001);
        p.set_requested_lifetime(7200);
        assert_eq!(buf, MAP_REQUEST);
        let mut buf = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_opcode(0x80);
        p.set_epoch(5);
        p.set_external_address(Ipv4Addr::new(198, 51, 100, 3));
        assert_eq!(p.into_inner(), &EXTERNAL_ADDRESS_RESPONSE[..]);
    }

    #[test]
    fn truncated_packet_is_rejected_by_new_checked() {
        // RFC 6886 §3.2, §3.3, §3.5: each kind has a fixed size
        let cases: [(&[u8], usize); 8] = [
            (&[], 2),
            (&[0], 2),
            (&MAP_REQUEST[..11], 12),
            (&MAP_RESPONSE[..15], 16),
            (&MAP_RESPONSE[..7], 8),
            (&EXTERNAL_ADDRESS_RESPONSE[..11], 12),
            (&[0, 0x81, 0, 3, 0, 0, 0], 8),
            (&[0, 0x83, 0, 0, 0, 0, 0], 8),
        ];
        for (data, need) in cases {
            assert_eq!(
                Packet::new_checked(data),
                Err(Error::Truncated {
                    len: data.len(),
                    need
                }),
                "{data:?}"
            );
        }
        // Error responses and unknown opcodes only need their 8-byte header.
        assert!(Packet::new_checked(&[0u8, 0x81, 0, 3, 0, 0, 0, 0][..]).is_ok());
        assert!(Packet::new_checked(&[0u8, 0x83, 0, 0, 0, 0, 0, 0][..]).is_ok());
        assert!(Packet::new_checked(&[0u8, 0x00][..]).is_ok());
        assert!(Packet::new_checked(&[0u8, 0x05][..]).is_ok());
    }
}
