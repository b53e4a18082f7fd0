//! NAT-PMP requests (RFC 6886 §3.2, §3.3, §3.4): what a client sends and a server parses.

use std::num::{NonZeroU16, NonZeroU32};

use super::{
    EXTERNAL_ADDRESS_REQUEST_LEN, Error, MAP_REQUEST_LEN, OP_EXTERNAL_ADDRESS, Packet,
    RESPONSE_BIT, Transport, VERSION,
};

/// A NAT-PMP request.
///
/// RFC 6886 overloads the mapping request: lifetime 0 deletes (§3.4), and lifetime 0 with
/// internal port 0 deletes all of the client's mappings for the protocol (§3.4). These are
/// separate variants so neither side can mistake one for another; [`RequestRepr::from_fields`]
/// does the classification from raw field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestRepr {
    /// "What is your external IPv4 address?" (opcode 0, 2 bytes, RFC 6886 §3.2).
    ExternalAddress,
    /// Create or renew a mapping (opcode 1 or 2, 12 bytes, RFC 6886 §3.3). For a renewal the
    /// suggested external port is the port previously granted.
    Map {
        /// UDP (opcode 1) or TCP (opcode 2).
        protocol: Transport,
        /// The client's local port.
        internal_port: u16,
        /// The external port the client would like, or 0 for "any".
        suggested_external_port: u16,
        /// Requested lifetime in seconds ([`super::RECOMMENDED_LIFETIME`] is 7200).
        lifetime: NonZeroU32,
    },
    /// Delete the client's mapping of `internal_port` (lifetime 0, RFC 6886 §3.4). The
    /// suggested external port is sent as 0 and ignored on reception.
    Delete {
        /// UDP (opcode 1) or TCP (opcode 2).
        protocol: Transport,
        /// The internal port of the mapping to delete.
        internal_port: NonZeroU16,
    },
    /// Delete all of the client's mappings for `protocol`: internal port, suggested external
    /// port and lifetime all 0 (RFC 6886 §3.4). PCP has no equivalent.
    DeleteAll {
        /// UDP (opcode 1) or TCP (opcode 2).
        protocol: Transport,
    },
}

impl RequestRepr {
    /// Classifies mapping-request field values the way a gateway reads them (RFC 6886 §3.4):
    /// lifetime 0 with internal port 0 is [`RequestRepr::DeleteAll`], lifetime 0 otherwise is
    /// [`RequestRepr::Delete`] (the suggested external port is then ignored), anything else is
    /// [`RequestRepr::Map`]. Never fails.
    pub const fn from_fields(
        protocol: Transport,
        internal_port: u16,
        suggested_external_port: u16,
        lifetime: u32,
    ) -> Self {
        match (NonZeroU32::new(lifetime), NonZeroU16::new(internal_port)) {
            (Some(lifetime), _) => RequestRepr::Map {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            },
            (None, Some(internal_port)) => RequestRepr::Delete {
                protocol,
                internal_port,
            },
            (None, None) => RequestRepr::DeleteAll { protocol },
        }
    }

    /// The request opcode: 0, or 1 (UDP) / 2 (TCP) for the mapping requests.
    pub const fn opcode(&self) -> u8 {
        match self.protocol() {
            Some(protocol) => protocol.request_opcode(),
            None => OP_EXTERNAL_ADDRESS,
        }
    }

    /// The mapping protocol, or `None` for the external address request.
    pub const fn protocol(&self) -> Option<Transport> {
        match *self {
            RequestRepr::ExternalAddress => None,
            RequestRepr::Map { protocol, .. }
            | RequestRepr::Delete { protocol, .. }
            | RequestRepr::DeleteAll { protocol } => Some(protocol),
        }
    }

    /// Parses a request, as a server does.
    ///
    /// Checks, in this order (RFC 6886 §3, §3.5): at least 2 bytes, else
    /// [`Error::Truncated`]; opcode top bit clear, else [`Error::NotARequest`] (a server MUST
    /// ignore responses); version 0, else [`Error::UnsupportedVersion`]; opcode 0, 1 or 2,
    /// else [`Error::UnknownOpcode`]; then the exact size, [`Error::Truncated`] when short
    /// and [`Error::TrailingBytes`] when long. The Reserved field, and the suggested external
    /// port of a deletion, are ignored as the RFC requires. [`Error::result_code`] says how a
    /// server answers each error. Never panics.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let packet = Packet::new_unchecked(data);
        if data.len() < EXTERNAL_ADDRESS_REQUEST_LEN {
            return Err(Error::Truncated {
                len: data.len(),
                need: EXTERNAL_ADDRESS_REQUEST_LEN,
            });
        }
        let opcode = packet.opcode();
        if opcode & RESPONSE_BIT != 0 {
            return Err(Error::NotARequest { opcode });
        }
        if packet.version() != VERSION {
            return Err(Error::UnsupportedVersion {
                version: packet.version(),
            });
        }
        let (expected, protocol) = match opcode {
            OP_EXTERNAL_ADDRESS => (EXTERNAL_ADDRESS_REQUEST_LEN, None),
            _ => match Transport::from_request_opcode(opcode) {
                Some(protocol) => (MAP_REQUEST_LEN, Some(protocol)),
                None => return Err(Error::UnknownOpcode { opcode }),
            },
        };
        let len = data.len();
        if len < expected {
            return Err(Error::Truncated {
                len,
                need: expected,
            });
        }
        if len > expected {
            return Err(Error::TrailingBytes {
                opcode,
                len,
                expected,
            });
        }
        Ok(match protocol {
            None => RequestRepr::ExternalAddress,
            Some(protocol) => Self::from_fields(
                protocol,
                packet.request_internal_port(),
                packet.suggested_external_port(),
                packet.requested_lifetime(),
            ),
        })
    }

    /// The request's size on the wire: 2 for the external address request, 12 otherwise.
    pub const fn buffer_len(&self) -> usize {
        match self {
            RequestRepr::ExternalAddress => EXTERNAL_ADDRESS_REQUEST_LEN,
            _ => MAP_REQUEST_LEN,
        }
    }

    /// Writes the request into the front of `buf` and returns its length. Reserved is 0, and
    /// so are the fields a deletion leaves empty (RFC 6886 §3.3, §3.4). Returns
    /// [`Error::BufferTooSmall`] (writing nothing) if `buf` is shorter than
    /// [`RequestRepr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
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
        let (internal, suggested, lifetime) = match *self {
            RequestRepr::ExternalAddress => return Ok(need),
            RequestRepr::Map {
                internal_port,
                suggested_external_port,
                lifetime,
                ..
            } => (internal_port, suggested_external_port, lifetime.get()),
            RequestRepr::Delete { internal_port, .. } => (internal_port.get(), 0, 0),
            RequestRepr::DeleteAll { .. } => (0, 0, 0),
        };
        packet.set_reserved(0);
        packet.set_request_internal_port(internal);
        packet.set_suggested_external_port(suggested);
        packet.set_requested_lifetime(lifetime);
        Ok(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::natpmp::MAX_MESSAGE_LEN;
    use proptest::prelude::*;

    /// RFC 6886 §3.2.
    static EXTERNAL_ADDRESS: [u8; 2] = [0x00, 0x00];
    /// RFC 6886 §3.3: map UDP 5000, suggest 5000, 7200 s.
    static MAP_UDP: [u8; 12] = [0, 1, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20];
    /// RFC 6886 §3.3: map TCP 22, any external port, 3600 s.
    static MAP_TCP_ANY: [u8; 12] = [0, 2, 0, 0, 0, 22, 0, 0, 0, 0, 0x0e, 0x10];
    /// RFC 6886 §3.4: delete the TCP mapping of 8080.
    static DELETE_TCP: [u8; 12] = [0, 2, 0, 0, 0x1f, 0x90, 0, 0, 0, 0, 0, 0];
    /// RFC 6886 §3.4: delete all UDP mappings.
    static DELETE_ALL_UDP: [u8; 12] = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn nz32(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
    }

    fn nz16(v: u16) -> NonZeroU16 {
        NonZeroU16::new(v).unwrap_or(NonZeroU16::MIN)
    }

    fn fixtures() -> [(&'static [u8], RequestRepr); 5] {
        [
            (&EXTERNAL_ADDRESS, RequestRepr::ExternalAddress),
            (
                &MAP_UDP,
                RequestRepr::Map {
                    protocol: Transport::Udp,
                    internal_port: 5000,
                    suggested_external_port: 5000,
                    lifetime: nz32(7200),
                },
            ),
            (
                &MAP_TCP_ANY,
                RequestRepr::Map {
                    protocol: Transport::Tcp,
                    internal_port: 22,
                    suggested_external_port: 0,
                    lifetime: nz32(3600),
                },
            ),
            (
                &DELETE_TCP,
                RequestRepr::Delete {
                    protocol: Transport::Tcp,
                    internal_port: nz16(8080),
                },
            ),
            (
                &DELETE_ALL_UDP,
                RequestRepr::DeleteAll {
                    protocol: Transport::Udp,
                },
            ),
        ]
    }

    #[test]
    fn every_request_kind_parses_from_and_emits_to_its_exact_bytes() {
        // RFC 6886 §3.2, §3.3, §3.4
        for (bytes, repr) in fixtures() {
            assert_eq!(RequestRepr::parse(bytes), Ok(repr), "{bytes:?}");
            let mut buf = [0xeeu8; MAX_MESSAGE_LEN];
            assert_eq!(repr.emit(&mut buf), Ok(bytes.len()));
            assert_eq!(&buf[..bytes.len()], bytes);
            assert_eq!(buf[bytes.len()..], [0xee; MAX_MESSAGE_LEN][bytes.len()..]);
            assert_eq!(repr.buffer_len(), bytes.len());
        }
    }

    #[test]
    fn reserved_field_is_ignored_on_reception() {
        // RFC 6886 §3.3: Reserved MUST be ignored on reception (and sent as 0)
        let mut bytes = MAP_UDP;
        bytes[2..4].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(RequestRepr::parse(&bytes), RequestRepr::parse(&MAP_UDP));
    }

    #[test]
    fn deletion_suggested_external_port_is_ignored_on_reception() {
        // RFC 6886 §3.4: the Suggested External Port MUST be ignored by the gateway
        let mut bytes = DELETE_TCP;
        bytes[6..8].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            RequestRepr::parse(&bytes),
            Ok(RequestRepr::Delete {
                protocol: Transport::Tcp,
                internal_port: nz16(8080)
            })
        );
        let mut bytes = DELETE_ALL_UDP;
        bytes[6..8].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(
            RequestRepr::parse(&bytes),
            Ok(RequestRepr::DeleteAll {
                protocol: Transport::Udp
            })
        );
    }

    #[test]
    fn lifetime_zero_means_delete_and_internal_port_zero_too_means_delete_all() {
        // RFC 6886 §3.4
        assert_eq!(
            RequestRepr::from_fields(Transport::Udp, 5000, 6000, 0),
            RequestRepr::Delete {
                protocol: Transport::Udp,
                internal_port: nz16(5000)
            }
        );
        assert_eq!(
            RequestRepr::from_fields(Transport::Tcp, 0, 6000, 0),
            RequestRepr::DeleteAll {
                protocol: Transport::Tcp
            }
        );
        // Internal port 0 with a lifetime is a (meaningless) map request, not a delete-all.
        assert!(matches!(
            RequestRepr::from_fields(Transport::Tcp, 0, 0, 1),
            RequestRepr::Map {
                internal_port: 0,
                ..
            }
        ));
        assert_eq!(RequestRepr::ExternalAddress.opcode(), 0);
        assert_eq!(
            RequestRepr::DeleteAll {
                protocol: Transport::Tcp
            }
            .opcode(),
            2
        );
        assert_eq!(RequestRepr::ExternalAddress.protocol(), None);
    }

    #[test]
    fn request_with_nonzero_version_is_unsupported_version() {
        // RFC 6886 §3: a gateway receiving version ≠ 0 MUST return result 1
        assert_eq!(
            RequestRepr::parse(&[1, 0]),
            Err(Error::UnsupportedVersion { version: 1 })
        );
        // A PCP (version 2) MAP request: R = 0, opcode 1.
        let mut pcp = [0u8; 60];
        pcp[..2].copy_from_slice(&[2, 1]);
        assert_eq!(
            RequestRepr::parse(&pcp),
            Err(Error::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn request_with_unknown_opcode_is_unsupported_opcode_whatever_its_length() {
        // RFC 6886 §3.5: opcodes < 128 other than 0, 1, 2 get result 5
        assert_eq!(
            RequestRepr::parse(&[0, 3]),
            Err(Error::UnknownOpcode { opcode: 3 })
        );
        assert_eq!(
            RequestRepr::parse(&[0, 127, 0, 0]),
            Err(Error::UnknownOpcode { opcode: 127 })
        );
    }

    #[test]
    fn request_with_response_opcode_is_not_a_request() {
        // RFC 6886 §3.5: opcode ≥ 128 is a response, which the server MUST silently ignore
        assert_eq!(
            RequestRepr::parse(&[0, 0x80]),
            Err(Error::NotARequest { opcode: 0x80 })
        );
        // Also for other versions, so two servers never bounce replies at each other.
        assert_eq!(
            RequestRepr::parse(&[2, 0x81, 0, 1]),
            Err(Error::NotARequest { opcode: 0x81 })
        );
    }

    #[test]
    fn request_shorter_than_its_kind_is_truncated() {
        // RFC 6886 §3.2: 2 bytes; §3.3: 12 bytes
        assert_eq!(
            RequestRepr::parse(&[]),
            Err(Error::Truncated { len: 0, need: 2 })
        );
        assert_eq!(
            RequestRepr::parse(&[0]),
            Err(Error::Truncated { len: 1, need: 2 })
        );
        assert_eq!(
            RequestRepr::parse(&MAP_UDP[..11]),
            Err(Error::Truncated { len: 11, need: 12 })
        );
        assert_eq!(
            RequestRepr::parse(&MAP_UDP[..2]),
            Err(Error::Truncated { len: 2, need: 12 })
        );
    }

    #[test]
    fn request_longer_than_its_kind_has_trailing_bytes() {
        // RFC 6886 §3.2, §3.3: fixed sizes
        assert_eq!(
            RequestRepr::parse(&[0, 0, 0]),
            Err(Error::TrailingBytes {
                opcode: 0,
                len: 3,
                expected: 2
            })
        );
        let mut long = [0u8; 13];
        long[..12].copy_from_slice(&MAP_TCP_ANY);
        assert_eq!(
            RequestRepr::parse(&long),
            Err(Error::TrailingBytes {
                opcode: 2,
                len: 13,
                expected: 12
            })
        );
    }

    #[test]
    fn emit_into_short_buffer_is_buffer_too_small() {
        let mut buf = [0u8; 11];
        assert_eq!(
            RequestRepr::DeleteAll {
                protocol: Transport::Udp
            }
            .emit(&mut buf),
            Err(Error::BufferTooSmall { len: 11, need: 12 })
        );
        assert_eq!(buf, [0; 11]);
        assert_eq!(
            RequestRepr::ExternalAddress.emit(&mut [0u8; 1]),
            Err(Error::BufferTooSmall { len: 1, need: 2 })
        );
    }

    pub(crate) fn arb_protocol() -> impl Strategy<Value = Transport> {
        prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
    }

    fn arb_request() -> impl Strategy<Value = RequestRepr> {
        prop_oneof![
            Just(RequestRepr::ExternalAddress),
            (arb_protocol(), any::<u16>(), any::<u16>(), 1..=u32::MAX).prop_map(
                |(protocol, internal_port, suggested_external_port, lifetime)| RequestRepr::Map {
                    protocol,
                    internal_port,
                    suggested_external_port,
                    lifetime: nz32(lifetime),
                }
            ),
            (arb_protocol(), 1..=u16::MAX).prop_map(|(protocol, port)| RequestRepr::Delete {
                protocol,
                internal_port: nz16(port),
            }),
            arb_protocol().prop_map(|protocol| RequestRepr::DeleteAll { protocol }),
        ]
    }

    proptest! {
        #[test]
        fn request_repr_round_trips(repr in arb_request()) {
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let len = repr.emit(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(len, repr.buffer_len());
            prop_assert_eq!(RequestRepr::parse(&buf[..len]), Ok(repr));
        }

        /// Every parsable request re-emits to the same bytes, except the fields the RFC says
        /// to ignore (Reserved; the suggested port of a deletion).
        #[test]
        fn parsed_request_reemits_to_canonical_bytes(
            mut bytes in proptest::collection::vec(any::<u8>(), 12..=12),
            op in 1u8..=2,
        ) {
            bytes[0] = 0;
            bytes[1] = op;
            let repr = RequestRepr::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let len = repr.emit(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            bytes[2..4].fill(0);
            if bytes[8..12] == [0, 0, 0, 0] {
                bytes[6..8].fill(0);
            }
            prop_assert_eq!(&buf[..len], &bytes[..]);
        }
    }
}
