//! NAT-PMP responses (RFC 6886 §3.2, §3.3, §3.5): what a server sends and a client parses,
//! and the server's error replies.

use std::net::Ipv4Addr;

use super::{
    EXTERNAL_ADDRESS_RESPONSE_LEN, Error, MAP_RESPONSE_LEN, OP_EXTERNAL_ADDRESS, Packet,
    RESPONSE_BIT, RESPONSE_HEADER_LEN, ResultCode, Transport, VERSION,
};

/// The opcode of the external address response, 128 (RFC 6886 §3.2).
const OP_EXTERNAL_ADDRESS_RESPONSE: u8 = RESPONSE_BIT | OP_EXTERNAL_ADDRESS;

/// A NAT-PMP response. Successful answers to the two requests have their own variants; any
/// response with a non-zero result code is an [`ErrorResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseRepr {
    /// Success answer to the external address request, and the format of the gateway's
    /// multicast announcements (opcode 128, 12 bytes, RFC 6886 §3.2, §3.2.1).
    ExternalAddress {
        /// Seconds Since Start of Epoch (RFC 6886 §3.6).
        epoch: u32,
        /// The gateway's external IPv4 address.
        external_address: Ipv4Addr,
    },
    /// Success answer to a mapping request (opcode 129 or 130, 16 bytes, RFC 6886 §3.3). A
    /// deletion is confirmed with external port 0 and lifetime 0 (RFC 6886 §3.4), and a
    /// delete-all with internal port 0 too.
    Map {
        /// UDP (opcode 129) or TCP (opcode 130).
        protocol: Transport,
        /// Seconds Since Start of Epoch (RFC 6886 §3.6).
        epoch: u32,
        /// The internal port, echoed from the request.
        internal_port: u16,
        /// The external port the gateway mapped.
        external_port: u16,
        /// The granted lifetime in seconds; it may be shorter than requested.
        lifetime: u32,
    },
    /// Any response with a non-zero result code.
    Error(ErrorResponse),
}

/// A NAT-PMP response with a non-zero result code (RFC 6886 §3.5), in whichever of its three
/// sizes the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorResponse {
    /// Only the 8-byte header: the unsupported-version reply (opcode 0 as RFC 6886 §3.5 prints
    /// it, or 128 + the request opcode as miniupnpd sends it), the unsupported-opcode reply,
    /// or a short error from a server that does not send the full-size answer.
    Header {
        /// The opcode byte as received: 0, or 128 and above.
        opcode: u8,
        /// The result code; never 0.
        result: ResultCode,
        /// Seconds Since Start of Epoch.
        epoch: u32,
    },
    /// A full-size (12-byte) failed external address response. Its address field is
    /// undefined, sent as 0 and ignored on reception (RFC 6886 §3.2).
    ExternalAddress {
        /// The result code; never 0.
        result: ResultCode,
        /// Seconds Since Start of Epoch.
        epoch: u32,
    },
    /// A full-size (16-byte) failed mapping response. The internal port identifies the request
    /// that failed; the lifetime is undefined, sent as 0 and ignored on reception
    /// (RFC 6886 §3.4, §3.5).
    Map {
        /// UDP (opcode 129) or TCP (opcode 130).
        protocol: Transport,
        /// The result code; never 0.
        result: ResultCode,
        /// Seconds Since Start of Epoch.
        epoch: u32,
        /// The internal port of the failed request.
        internal_port: u16,
        /// The external port, 0 unless the request named an existing mapping (a failed
        /// deletion answers with the requested mapping, RFC 6886 §3.4).
        external_port: u16,
    },
}

impl ErrorResponse {
    /// The response opcode.
    pub const fn opcode(&self) -> u8 {
        match *self {
            ErrorResponse::Header { opcode, .. } => opcode,
            ErrorResponse::ExternalAddress { .. } => OP_EXTERNAL_ADDRESS_RESPONSE,
            ErrorResponse::Map { protocol, .. } => protocol.response_opcode(),
        }
    }

    /// The result code.
    pub const fn result(&self) -> ResultCode {
        match *self {
            ErrorResponse::Header { result, .. }
            | ErrorResponse::ExternalAddress { result, .. }
            | ErrorResponse::Map { result, .. } => result,
        }
    }

    /// Seconds Since Start of Epoch.
    pub const fn epoch(&self) -> u32 {
        match *self {
            ErrorResponse::Header { epoch, .. }
            | ErrorResponse::ExternalAddress { epoch, .. }
            | ErrorResponse::Map { epoch, .. } => epoch,
        }
    }

    /// The size on the wire: 8, 12 or 16 bytes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            ErrorResponse::Header { .. } => RESPONSE_HEADER_LEN,
            ErrorResponse::ExternalAddress { .. } => EXTERNAL_ADDRESS_RESPONSE_LEN,
            ErrorResponse::Map { .. } => MAP_RESPONSE_LEN,
        }
    }
}

impl ResponseRepr {
    /// The response opcode: 128 + the request opcode, or 0 for the unsupported-version reply
    /// as RFC 6886 prints it.
    pub const fn opcode(&self) -> u8 {
        match self {
            ResponseRepr::ExternalAddress { .. } => OP_EXTERNAL_ADDRESS_RESPONSE,
            ResponseRepr::Map { protocol, .. } => protocol.response_opcode(),
            ResponseRepr::Error(e) => e.opcode(),
        }
    }

    /// The result code: success unless this is an [`ResponseRepr::Error`].
    pub const fn result(&self) -> ResultCode {
        match self {
            ResponseRepr::Error(e) => e.result(),
            _ => ResultCode::Success,
        }
    }

    /// Seconds Since Start of Epoch, which every response carries (RFC 6886 §3.6).
    pub const fn epoch(&self) -> u32 {
        match *self {
            ResponseRepr::ExternalAddress { epoch, .. } | ResponseRepr::Map { epoch, .. } => epoch,
            ResponseRepr::Error(e) => e.epoch(),
        }
    }

    /// Parses a response, as a client does.
    ///
    /// Checks, in this order: at least 2 bytes, else [`Error::Truncated`]; version 0, else
    /// [`Error::UnsupportedVersion`] (a PCP response is not a NAT-PMP one); opcode top bit set,
    /// else [`Error::NotAResponse`], except for the unsupported-version reply with OP = 0 as
    /// RFC 6886 §3.5 prints it; at least the 8-byte header, else [`Error::Truncated`]. A
    /// non-zero result gives [`ResponseRepr::Error`], full-size or not. A success needs a known
    /// opcode ([`Error::UnknownOpcode`]) and its full size ([`Error::Truncated`]). Bytes past
    /// the message's size, and fields the RFC says to ignore, are ignored. Never panics.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let len = data.len();
        let (version, opcode) = match *data {
            [version, opcode, ..] => (version, opcode),
            _ => {
                return Err(Error::Truncated {
                    len,
                    need: RESPONSE_HEADER_LEN,
                });
            }
        };
        if version != VERSION {
            return Err(Error::UnsupportedVersion { version });
        }
        if opcode & RESPONSE_BIT == 0 && !(opcode == 0 && data.get(2..4) == Some(&[0, 1])) {
            return Err(Error::NotAResponse { opcode });
        }
        if len < RESPONSE_HEADER_LEN {
            return Err(Error::Truncated {
                len,
                need: RESPONSE_HEADER_LEN,
            });
        }
        let packet = Packet::new_unchecked(data);
        let (result, epoch) = (packet.result_code(), packet.epoch());
        let protocol = Transport::from_response_opcode(opcode);
        if !result.is_success() {
            return Ok(ResponseRepr::Error(match protocol {
                Some(protocol) if len >= MAP_RESPONSE_LEN => ErrorResponse::Map {
                    protocol,
                    result,
                    epoch,
                    internal_port: packet.response_internal_port(),
                    external_port: packet.mapped_external_port(),
                },
                _ if opcode == OP_EXTERNAL_ADDRESS_RESPONSE
                    && len >= EXTERNAL_ADDRESS_RESPONSE_LEN =>
                {
                    ErrorResponse::ExternalAddress { result, epoch }
                }
                _ => ErrorResponse::Header {
                    opcode,
                    result,
                    epoch,
                },
            }));
        }
        let need = match (opcode, protocol) {
            (OP_EXTERNAL_ADDRESS_RESPONSE, _) => EXTERNAL_ADDRESS_RESPONSE_LEN,
            (_, Some(_)) => MAP_RESPONSE_LEN,
            _ => return Err(Error::UnknownOpcode { opcode }),
        };
        if len < need {
            return Err(Error::Truncated { len, need });
        }
        Ok(match protocol {
            None => ResponseRepr::ExternalAddress {
                epoch,
                external_address: packet.external_address(),
            },
            Some(protocol) => ResponseRepr::Map {
                protocol,
                epoch,
                internal_port: packet.response_internal_port(),
                external_port: packet.mapped_external_port(),
                lifetime: packet.lifetime(),
            },
        })
    }

    /// The response's size on the wire: 8, 12 or 16 bytes.
    pub const fn buffer_len(&self) -> usize {
        match self {
            ResponseRepr::ExternalAddress { .. } => EXTERNAL_ADDRESS_RESPONSE_LEN,
            ResponseRepr::Map { .. } => MAP_RESPONSE_LEN,
            ResponseRepr::Error(e) => e.buffer_len(),
        }
    }

    /// Writes the response into the front of `buf` and returns its length; undefined fields
    /// (a failed response's address or lifetime) are written as 0.
    ///
    /// Refuses, writing nothing, what would not parse back as the same response:
    /// [`Error::SuccessInErrorResponse`] for an error with result 0, [`Error::NotAResponse`]
    /// for an [`ErrorResponse::Header`] whose opcode is below 128 (only opcode 0 with result 1,
    /// the RFC-printed unsupported-version reply, is allowed), and [`Error::BufferTooSmall`]
    /// if `buf` is shorter than [`ResponseRepr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if let ResponseRepr::Error(e) = self {
            let result = e.result();
            if result.is_success() {
                return Err(Error::SuccessInErrorResponse);
            }
            let opcode = e.opcode();
            if opcode & RESPONSE_BIT == 0 && !(opcode == 0 && result.to_u16() == 1) {
                return Err(Error::NotAResponse { opcode });
            }
        }
        let need = self.buffer_len();
        let Some(buf) = buf.get_mut(..need) else {
            return Err(Error::BufferTooSmall {
                len: buf.len(),
                need,
            });
        };
        let mut packet = Packet::new_unchecked(buf);
        packet.set_version(VERSION);
        packet.set_opcode(self.opcode());
        packet.set_result_code(self.result());
        packet.set_epoch(self.epoch());
        match *self {
            ResponseRepr::ExternalAddress {
                external_address, ..
            } => {
                packet.set_external_address(external_address);
            }
            ResponseRepr::Map {
                internal_port,
                external_port,
                lifetime,
                ..
            } => {
                packet.set_response_internal_port(internal_port);
                packet.set_mapped_external_port(external_port);
                packet.set_lifetime(lifetime);
            }
            ResponseRepr::Error(ErrorResponse::Header { .. }) => {}
            ResponseRepr::Error(ErrorResponse::ExternalAddress { .. }) => {
                packet.set_external_address(Ipv4Addr::UNSPECIFIED);
            }
            ResponseRepr::Error(ErrorResponse::Map {
                internal_port,
                external_port,
                ..
            }) => {
                packet.set_response_internal_port(internal_port);
                packet.set_mapped_external_port(external_port);
                packet.set_lifetime(0);
            }
        }
        Ok(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natpmp::MAX_MESSAGE_LEN;
    use proptest::prelude::*;

    /// RFC 6886 §3.2: epoch 0x1234, external address 198.51.100.7.
    static EXTERNAL_ADDRESS: [u8; 12] = [0, 0x80, 0, 0, 0, 0, 0x12, 0x34, 198, 51, 100, 7];
    /// RFC 6886 §3.3: UDP 5000 → 40000 for 7200 s, epoch 60.
    static MAP_UDP: [u8; 16] = [
        0, 0x81, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x9c, 0x40, 0, 0, 0x1c, 0x20,
    ];
    /// RFC 6886 §3.3: TCP 22 → 2222 for 3600 s, epoch 1.
    static MAP_TCP: [u8; 16] = [
        0, 0x82, 0, 0, 0, 0, 0, 1, 0, 22, 0x08, 0xae, 0, 0, 0x0e, 0x10,
    ];
    /// RFC 6886 §3.4: deletion of TCP 8080 confirmed (external port 0, lifetime 0).
    static DELETED_TCP: [u8; 16] = [0, 0x82, 0, 0, 0, 0, 0, 9, 0x1f, 0x90, 0, 0, 0, 0, 0, 0];
    /// RFC 6886 §3.2, §3.5: external address request failed with Network Failure (3).
    static EXTERNAL_ADDRESS_FAILED: [u8; 12] = [0, 0x80, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0];
    /// RFC 6886 §3.5: UDP 5000 refused with Not Authorized (2), full size.
    static MAP_REFUSED: [u8; 16] = [0, 0x81, 0, 2, 0, 0, 0, 2, 0x13, 0x88, 0, 0, 0, 0, 0, 0];
    /// A server sending only the 8-byte header for Out of Resources (4) on a TCP map.
    static MAP_SHORT_ERROR: [u8; 8] = [0, 0x82, 0, 4, 0, 0, 0, 2];
    /// RFC 6886 §3.5 as printed: unsupported version with OP = 0.
    static UNSUPP_VERSION_RFC: [u8; 8] = [0, 0, 0, 1, 0, 0, 0x01, 0x00];
    /// miniupnpd's unsupported version answer to a PCP MAP request: OP = 128 + 1.
    static UNSUPP_VERSION_MINIUPNPD: [u8; 8] = [0, 0x81, 0, 1, 0, 0, 0x01, 0x00];
    /// RFC 6886 §3.5: unsupported opcode 3, result 5.
    static UNSUPP_OPCODE: [u8; 8] = [0, 0x83, 0, 5, 0, 0, 0, 7];

    fn fixtures() -> [(&'static [u8], ResponseRepr); 10] {
        use ErrorResponse as E;
        use ResponseRepr as R;
        let (udp, tcp) = (Transport::Udp, Transport::Tcp);
        [
            (
                &EXTERNAL_ADDRESS,
                R::ExternalAddress {
                    epoch: 0x1234,
                    external_address: Ipv4Addr::new(198, 51, 100, 7),
                },
            ),
            (
                &MAP_UDP,
                R::Map {
                    protocol: udp,
                    epoch: 60,
                    internal_port: 5000,
                    external_port: 40000,
                    lifetime: 7200,
                },
            ),
            (
                &MAP_TCP,
                R::Map {
                    protocol: tcp,
                    epoch: 1,
                    internal_port: 22,
                    external_port: 2222,
                    lifetime: 3600,
                },
            ),
            (
                &DELETED_TCP,
                R::Map {
                    protocol: tcp,
                    epoch: 9,
                    internal_port: 8080,
                    external_port: 0,
                    lifetime: 0,
                },
            ),
            (
                &EXTERNAL_ADDRESS_FAILED,
                R::Error(E::ExternalAddress {
                    result: ResultCode::NetworkFailure,
                    epoch: 2,
                }),
            ),
            (
                &MAP_REFUSED,
                R::Error(E::Map {
                    protocol: udp,
                    result: ResultCode::NotAuthorized,
                    epoch: 2,
                    internal_port: 5000,
                    external_port: 0,
                }),
            ),
            (
                &MAP_SHORT_ERROR,
                R::Error(E::Header {
                    opcode: 0x82,
                    result: ResultCode::OutOfResources,
                    epoch: 2,
                }),
            ),
            (
                &UNSUPP_VERSION_RFC,
                R::Error(E::Header {
                    opcode: 0,
                    result: ResultCode::UnsupportedVersion,
                    epoch: 256,
                }),
            ),
            (
                &UNSUPP_VERSION_MINIUPNPD,
                R::Error(E::Header {
                    opcode: 0x81,
                    result: ResultCode::UnsupportedVersion,
                    epoch: 256,
                }),
            ),
            (
                &UNSUPP_OPCODE,
                R::Error(E::Header {
                    opcode: 0x83,
                    result: ResultCode::UnsupportedOpcode,
                    epoch: 7,
                }),
            ),
        ]
    }

    #[test]
    fn every_response_kind_parses_from_and_emits_to_its_exact_bytes() {
        // RFC 6886 §3.2, §3.3, §3.4, §3.5
        for (bytes, repr) in fixtures() {
            assert_eq!(ResponseRepr::parse(bytes), Ok(repr), "{bytes:?}");
            let mut buf = [0xeeu8; MAX_MESSAGE_LEN];
            assert_eq!(repr.emit(&mut buf), Ok(bytes.len()), "{repr:?}");
            assert_eq!(&buf[..bytes.len()], bytes);
            assert_eq!(buf[bytes.len()..], [0xee; MAX_MESSAGE_LEN][bytes.len()..]);
            assert_eq!(repr.buffer_len(), bytes.len());
            assert_eq!(repr.opcode(), bytes[1]);
            assert_eq!(
                repr.result().to_u16(),
                u16::from_be_bytes([bytes[2], bytes[3]])
            );
            assert_eq!(
                repr.epoch(),
                u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])
            );
        }
    }

    #[test]
    fn undefined_fields_of_failed_responses_are_ignored_on_reception() {
        // RFC 6886 §3.2: address undefined on error; §3.4: lifetime undefined on error
        let mut bytes = EXTERNAL_ADDRESS_FAILED;
        bytes[8..12].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(
            ResponseRepr::parse(&bytes),
            ResponseRepr::parse(&EXTERNAL_ADDRESS_FAILED)
        );
        let mut bytes = MAP_REFUSED;
        bytes[12..16].copy_from_slice(&[0, 0, 0x1c, 0x20]);
        assert_eq!(
            ResponseRepr::parse(&bytes),
            ResponseRepr::parse(&MAP_REFUSED)
        );
    }

    #[test]
    fn failed_deletion_keeps_the_requested_mapping() {
        // RFC 6886 §3.4: unsuccessful deletion carries the requested mapping, result 2 for a
        // manually configured one
        let bytes = [0, 0x82, 0, 2, 0, 0, 0, 5, 0, 80, 0, 80, 0, 0, 0, 0];
        assert_eq!(
            ResponseRepr::parse(&bytes),
            Ok(ResponseRepr::Error(ErrorResponse::Map {
                protocol: Transport::Tcp,
                result: ResultCode::NotAuthorized,
                epoch: 5,
                internal_port: 80,
                external_port: 80,
            }))
        );
    }

    #[test]
    fn error_response_shorter_than_full_size_keeps_only_its_header() {
        // RFC 6886 §3.5: servers send at least the 8-byte header for errors
        for len in [8, 11, 15] {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&[0, 0x81, 0, 4, 0, 0, 0, 3]);
            let expected = ErrorResponse::Header {
                opcode: 0x81,
                result: ResultCode::OutOfResources,
                epoch: 3,
            };
            assert_eq!(
                ResponseRepr::parse(&bytes[..len]),
                Ok(ResponseRepr::Error(expected))
            );
        }
        let expected = ErrorResponse::Header {
            opcode: 0x80,
            result: ResultCode::NetworkFailure,
            epoch: 2,
        };
        assert_eq!(
            ResponseRepr::parse(&EXTERNAL_ADDRESS_FAILED[..11]),
            Ok(ResponseRepr::Error(expected))
        );
    }

    #[test]
    fn unknown_result_codes_are_errors_of_the_request() {
        // RFC 6886 §3.5: undefined result codes MUST be treated as fatal errors
        let bytes = [0, 0x80, 0x01, 0x00, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            ResponseRepr::parse(&bytes),
            Ok(ResponseRepr::Error(ErrorResponse::ExternalAddress {
                result: ResultCode::Unknown(256),
                epoch: 1
            }))
        );
    }

    #[test]
    fn trailing_bytes_after_a_response_are_ignored() {
        // Liberal reception: the RFC fixes no maximum for responses.
        let mut long = [0xffu8; 20];
        long[..16].copy_from_slice(&MAP_UDP);
        assert_eq!(ResponseRepr::parse(&long), ResponseRepr::parse(&MAP_UDP));
    }

    #[test]
    fn pcp_v2_response_is_unsupported_version_not_a_natpmp_reply() {
        // RFC 6887 §7.2 header (version 2), RFC 6886 §3: only version 0
        let mut pcp = [0u8; 60];
        pcp[..4].copy_from_slice(&[2, 0x81, 0, 1]);
        assert_eq!(
            ResponseRepr::parse(&pcp),
            Err(Error::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            ResponseRepr::parse(&[1, 0x80]),
            Err(Error::UnsupportedVersion { version: 1 })
        );
    }

    #[test]
    fn response_shorter_than_its_kind_is_truncated() {
        // RFC 6886 §3.2: 12 bytes; §3.3: 16 bytes; §3.5: 8-byte header
        assert_eq!(
            ResponseRepr::parse(&[]),
            Err(Error::Truncated { len: 0, need: 8 })
        );
        assert_eq!(
            ResponseRepr::parse(&[0]),
            Err(Error::Truncated { len: 1, need: 8 })
        );
        assert_eq!(
            ResponseRepr::parse(&[0, 0x81, 0]),
            Err(Error::Truncated { len: 3, need: 8 })
        );
        assert_eq!(
            ResponseRepr::parse(&UNSUPP_VERSION_RFC[..7]),
            Err(Error::Truncated { len: 7, need: 8 })
        );
        assert_eq!(
            ResponseRepr::parse(&EXTERNAL_ADDRESS[..11]),
            Err(Error::Truncated { len: 11, need: 12 })
        );
        assert_eq!(
            ResponseRepr::parse(&MAP_TCP[..15]),
            Err(Error::Truncated { len: 15, need: 16 })
        );
        assert_eq!(
            ResponseRepr::parse(&MAP_TCP[..8]),
            Err(Error::Truncated { len: 8, need: 16 })
        );
    }

    #[test]
    fn request_bytes_are_not_a_response() {
        // RFC 6886 §3: opcodes 0 to 127 are requests
        assert_eq!(
            ResponseRepr::parse(&[0, 0]),
            Err(Error::NotAResponse { opcode: 0 })
        );
        let map_request = [0, 1, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20];
        assert_eq!(
            ResponseRepr::parse(&map_request),
            Err(Error::NotAResponse { opcode: 1 })
        );
        // Only result 1 makes OP = 0 a (RFC-printed) reply.
        assert_eq!(
            ResponseRepr::parse(&[0, 0, 0, 2, 0, 0, 0, 0]),
            Err(Error::NotAResponse { opcode: 0 })
        );
        assert_eq!(
            ResponseRepr::parse(&[0, 1, 0, 1, 0, 0, 0, 0]),
            Err(Error::NotAResponse { opcode: 1 })
        );
    }

    #[test]
    fn successful_response_with_unknown_opcode_is_unknown_opcode() {
        // RFC 6886 §3: responses defined are 128, 129, 130
        let bytes = [0, 0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            ResponseRepr::parse(&bytes),
            Err(Error::UnknownOpcode { opcode: 0x83 })
        );
        assert_eq!(
            ResponseRepr::parse(&[0, 0xff, 0, 0, 0, 0, 0, 0]),
            Err(Error::UnknownOpcode { opcode: 0xff })
        );
    }

    #[test]
    fn error_response_with_success_result_is_refused_on_emit() {
        // RFC 6886 §3.5: result 0 means success
        let e = ResponseRepr::Error(ErrorResponse::Header {
            opcode: 0x81,
            result: ResultCode::Success,
            epoch: 0,
        });
        assert_eq!(e.emit(&mut [0u8; 16]), Err(Error::SuccessInErrorResponse));
        let e = ResponseRepr::Error(ErrorResponse::ExternalAddress {
            result: ResultCode::Unknown(0),
            epoch: 0,
        });
        assert_eq!(e.emit(&mut [0u8; 16]), Err(Error::SuccessInErrorResponse));
    }

    #[test]
    fn error_header_with_request_opcode_is_refused_on_emit() {
        // RFC 6886 §3: responses have the top opcode bit set; OP = 0 only for §3.5's reply
        let e = ErrorResponse::Header {
            opcode: 3,
            result: ResultCode::UnsupportedOpcode,
            epoch: 0,
        };
        assert_eq!(
            ResponseRepr::Error(e).emit(&mut [0u8; 16]),
            Err(Error::NotAResponse { opcode: 3 })
        );
        let e = ErrorResponse::Header {
            opcode: 0,
            result: ResultCode::NotAuthorized,
            epoch: 0,
        };
        assert_eq!(
            ResponseRepr::Error(e).emit(&mut [0u8; 16]),
            Err(Error::NotAResponse { opcode: 0 })
        );
    }

    #[test]
    fn response_emit_into_short_buffer_is_buffer_too_small() {
        let (_, repr) = fixtures()[1];
        let mut buf = [0u8; 15];
        assert_eq!(
            repr.emit(&mut buf),
            Err(Error::BufferTooSmall { len: 15, need: 16 })
        );
        assert_eq!(buf, [0; 15]);
    }

    fn arb_result_error() -> impl Strategy<Value = ResultCode> {
        (1u16..=u16::MAX).prop_map(ResultCode::from_u16)
    }

    fn arb_protocol() -> impl Strategy<Value = Transport> {
        prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
    }

    fn arb_response() -> impl Strategy<Value = ResponseRepr> {
        use ErrorResponse as E;
        use ResponseRepr as R;
        prop_oneof![
            (any::<u32>(), any::<[u8; 4]>()).prop_map(|(epoch, a)| R::ExternalAddress {
                epoch,
                external_address: Ipv4Addr::from(a),
            }),
            (
                arb_protocol(),
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
                any::<u32>()
            )
                .prop_map(
                    |(protocol, epoch, internal_port, external_port, lifetime)| R::Map {
                        protocol,
                        epoch,
                        internal_port,
                        external_port,
                        lifetime,
                    }
                ),
            (0x80u8..=0xff, arb_result_error(), any::<u32>()).prop_map(
                |(opcode, result, epoch)| R::Error(E::Header {
                    opcode,
                    result,
                    epoch
                })
            ),
            any::<u32>().prop_map(|epoch| R::Error(E::Header {
                opcode: 0,
                result: ResultCode::UnsupportedVersion,
                epoch,
            })),
            (arb_result_error(), any::<u32>())
                .prop_map(|(result, epoch)| R::Error(E::ExternalAddress { result, epoch })),
            (
                arb_protocol(),
                arb_result_error(),
                any::<u32>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(protocol, result, epoch, internal_port, external_port)| {
                    R::Error(E::Map {
                        protocol,
                        result,
                        epoch,
                        internal_port,
                        external_port,
                    })
                }),
        ]
    }

    proptest! {
        #[test]
        fn response_repr_round_trips(repr in arb_response()) {
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let len = repr.emit(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(len, repr.buffer_len());
            prop_assert_eq!(ResponseRepr::parse(&buf[..len]), Ok(repr));
        }

        /// Whatever parses, re-emits and parses back the same (what the fuzz target checks).
        #[test]
        fn parsed_response_reemits_to_an_equal_response(
            data in proptest::collection::vec(any::<u8>(), 0..24),
            op in prop_oneof![Just(0u8), 0x80u8..=0x83],
        ) {
            let mut data = data;
            if data.len() >= 2 {
                data[0] = 0;
                data[1] = op;
            }
            if let Ok(repr) = ResponseRepr::parse(&data) {
                let mut buf = [0u8; MAX_MESSAGE_LEN];
                let len = repr.emit(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(ResponseRepr::parse(&buf[..len]), Ok(repr));
            }
        }
    }
}
