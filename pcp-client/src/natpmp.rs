//! The NAT Port Mapping Protocol (RFC 6886), the protocol PCP calls "version 0".
//!
//! A PCP client meets NAT-PMP when an old gateway answers its PCP request with a NAT-PMP
//! "unsupported version" reply (RFC 6887 App. A); it may then fall back to NAT-PMP. A PCP server
//! (the CGN simulator) meets it when a NAT-PMP client sends it a version-0 request. This module
//! gives both sides the complete RFC 6886 codec, in the same smoltcp shape as [`crate::wire`]:
//!
//! * [`Packet`] is a typed view over a byte buffer with one accessor per field.
//! * [`RequestRepr`] and [`ResponseRepr`] are plain enums with `parse`, `buffer_len` and `emit`.
//!   Parsing never allocates and never panics, whatever the input; emitting writes into a
//!   buffer the caller owns.
//! * Every rule a datagram can break has its own [`Error`] variant, and
//!   [`Error::result_code`] tells a server which result code to answer with (or that it must
//!   stay silent); [`emit_error_reply`] then builds that answer from the request bytes.
//! * [`is_unsupp_version_reply`] recognises a NAT-PMP server refusing a PCP request whatever
//!   form the server chose (RFC 6886 prints OP = 0; miniupnpd sends 128 + the request opcode).
//! * [`gateway_lost_state`] is the RFC 6886 §3.6 epoch test.
//!
//! ```
//! use pcp_client::natpmp::{Transport, RequestRepr, ResponseRepr, RECOMMENDED_LIFETIME};
//! use std::net::Ipv4Addr;
//!
//! // A client asks for TCP port 8080 for the recommended two hours.
//! let request = RequestRepr::from_fields(Transport::Tcp, 8080, 8080, RECOMMENDED_LIFETIME);
//! let mut buf = [0u8; pcp_client::natpmp::MAX_MESSAGE_LEN];
//! let len = request.emit(&mut buf)?;
//! assert_eq!(&buf[..len], &[0, 2, 0, 0, 0x1f, 0x90, 0x1f, 0x90, 0, 0, 0x1c, 0x20]);
//!
//! // The gateway grants external port 40000.
//! let reply = [0, 130, 0, 0, 0, 0, 0, 60, 0x1f, 0x90, 0x9c, 0x40, 0, 0, 0x1c, 0x20];
//! let ResponseRepr::Map { external_port, lifetime, epoch, .. } = ResponseRepr::parse(&reply)? else {
//!     panic!("not a map response");
//! };
//! assert_eq!((external_port, lifetime, epoch), (40000, 7200, 60));
//!
//! // A NAT-PMP-only gateway refusing a PCP request, as miniupnpd words it.
//! assert!(pcp_client::natpmp::is_unsupp_version_reply(&[0, 0x81, 0, 1, 0, 0, 0, 9]));
//! # let _ = Ipv4Addr::UNSPECIFIED;
//! # Ok::<(), pcp_client::natpmp::Error>(())
//! ```

mod epoch;
mod packet;
mod reply;
mod request;
mod response;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use epoch::gateway_lost_state;
pub use packet::Packet;
pub use reply::emit_error_reply;
pub use request::RequestRepr;
pub use response::{ErrorResponse, ResponseRepr};

/// The NAT-PMP version number, 0. A gateway answers any other version with
/// [`ResultCode::UnsupportedVersion`] (RFC 6886 §3, §3.5).
pub const VERSION: u8 = 0;

/// The UDP port a NAT-PMP gateway listens on for requests, 5351 (RFC 6886 §3.1).
pub const SERVER_PORT: u16 = 5351;

/// The UDP port clients listen on for gateway announcements, 5350 (RFC 6886 §3.2.1).
pub const CLIENT_PORT: u16 = 5350;

/// Where a gateway multicasts its address announcements: 224.0.0.1, port [`CLIENT_PORT`]
/// (RFC 6886 §3.2.1).
pub const ANNOUNCE_ADDRESS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);

/// How many address announcements a gateway SHOULD multicast after a change, 10
/// (RFC 6886 §3.2.1).
pub const ANNOUNCE_COUNT: u32 = 10;

/// The interval between the first two announcements, 250 ms; it doubles after each one
/// (RFC 6886 §3.2.1).
pub const ANNOUNCE_INITIAL_INTERVAL: Duration = Duration::from_millis(250);

/// How long a client waits for the first response before retransmitting, 250 ms; the wait
/// doubles on every retransmission (RFC 6886 §3.1).
pub const INITIAL_RETRANSMIT_TIMEOUT: Duration = Duration::from_millis(250);

/// How many times a client sends a request before concluding the gateway does not speak
/// NAT-PMP, 9 (RFC 6886 §3.1).
pub const MAX_ATTEMPTS: u32 = 9;

/// How long a client waits after its ninth attempt before giving up, 64 s; this is the
/// doubled interval, 250 ms × 2⁸ (RFC 6886 §3.1).
pub const FINAL_WAIT: Duration = Duration::from_secs(64);

/// The RECOMMENDED requested mapping lifetime, 7200 s (two hours); clients renew at half of
/// it (RFC 6886 §3.3).
pub const RECOMMENDED_LIFETIME: u32 = 7200;

/// How far below the expected Seconds Since Start of Epoch a gateway's value may fall before
/// the client concludes the gateway lost its mappings, 2 s (RFC 6886 §3.6).
pub const STATE_LOSS_TOLERANCE: Duration = Duration::from_secs(2);

/// The opcode bit that marks a response: a response's opcode is 128 + the request's opcode
/// (RFC 6886 §3).
pub const RESPONSE_BIT: u8 = 0x80;

/// Opcode of the external address request, 0; its response is 128 (RFC 6886 §3.2).
pub const OP_EXTERNAL_ADDRESS: u8 = 0;

/// Opcode of a UDP mapping request, 1; its response is 129 (RFC 6886 §3.3).
pub const OP_MAP_UDP: u8 = 1;

/// Opcode of a TCP mapping request, 2; its response is 130 (RFC 6886 §3.3).
pub const OP_MAP_TCP: u8 = 2;

/// Length of the external address request, 2 bytes (RFC 6886 §3.2).
pub const EXTERNAL_ADDRESS_REQUEST_LEN: usize = 2;

/// Length of a mapping request, 12 bytes (RFC 6886 §3.3).
pub const MAP_REQUEST_LEN: usize = 12;

/// Length of the header every response starts with (version, opcode, result code, Seconds
/// Since Start of Epoch), 8 bytes; the unsupported-version reply is exactly this
/// (RFC 6886 §3.5).
pub const RESPONSE_HEADER_LEN: usize = 8;

/// Length of the external address response, 12 bytes (RFC 6886 §3.2).
pub const EXTERNAL_ADDRESS_RESPONSE_LEN: usize = 12;

/// Length of a mapping response, 16 bytes (RFC 6886 §3.3).
pub const MAP_RESPONSE_LEN: usize = 16;

/// The longest message this codec emits, 16 bytes: a buffer this long fits any `emit`.
pub const MAX_MESSAGE_LEN: usize = MAP_RESPONSE_LEN;

/// Why a NAT-PMP datagram could not be parsed or a message could not be emitted. Each variant
/// names the rule that was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The datagram is shorter than its kind requires (RFC 6886 §3.2, §3.3, §3.5).
    #[error("NAT-PMP message truncated: {len} bytes, this kind needs {need}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the message kind needs.
        need: usize,
    },
    /// A request is longer than its fixed size (RFC 6886 §3.2, §3.3). Responses tolerate
    /// trailing bytes; requests do not.
    #[error("NAT-PMP request with opcode {opcode} is {len} bytes, must be exactly {expected}")]
    TrailingBytes {
        /// The request opcode.
        opcode: u8,
        /// Bytes received.
        len: usize,
        /// The request's fixed size.
        expected: usize,
    },
    /// The version byte is not 0 (RFC 6886 §3). A server answers with result 1.
    #[error("NAT-PMP version {version} is not supported (only version 0 is)")]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The opcode is not one RFC 6886 defines (requests 0, 1, 2; responses 128, 129, 130). A
    /// server answers a request with result 5 (RFC 6886 §3.5).
    #[error("NAT-PMP opcode {opcode} is not supported")]
    UnknownOpcode {
        /// The opcode received.
        opcode: u8,
    },
    /// A datagram parsed as a response has the top opcode bit clear, so it is a request
    /// (RFC 6886 §3). The one exception accepted is the unsupported-version reply printed with
    /// OP = 0 in RFC 6886 §3.5.
    #[error("NAT-PMP opcode {opcode} is a request, not a response")]
    NotAResponse {
        /// The opcode received.
        opcode: u8,
    },
    /// A datagram parsed as a request has the top opcode bit set, so it is a response, which
    /// a server MUST silently ignore (RFC 6886 §3.5).
    #[error("NAT-PMP opcode {opcode} is a response, not a request")]
    NotARequest {
        /// The opcode received.
        opcode: u8,
    },
    /// The caller's buffer is too small for the message being emitted.
    #[error("buffer of {len} bytes is too small for a {need}-byte NAT-PMP message")]
    BufferTooSmall {
        /// The buffer's length.
        len: usize,
        /// Bytes the message needs.
        need: usize,
    },
    /// An error response was asked to carry result code 0, which would read back as success
    /// (RFC 6886 §3.5).
    #[error("a NAT-PMP error response cannot carry result code 0 (success)")]
    SuccessInErrorResponse,
}

impl Error {
    /// The result code a NAT-PMP server answers a request with when parsing it failed with
    /// this error, or `None` when the server must stay silent (RFC 6886 §3.5).
    ///
    /// [`Error::UnsupportedVersion`] gives [`ResultCode::UnsupportedVersion`] and
    /// [`Error::UnknownOpcode`] gives [`ResultCode::UnsupportedOpcode`]; pass the bytes and the
    /// code to [`emit_error_reply`]. A response sent to the server ([`Error::NotARequest`]) is
    /// ignored, as RFC 6886 §3.5 requires, and so is a malformed request (NAT-PMP has no
    /// result code for one). Errors that only `emit` or response parsing produce give `None`.
    pub const fn result_code(&self) -> Option<ResultCode> {
        match self {
            Error::UnsupportedVersion { .. } => Some(ResultCode::UnsupportedVersion),
            Error::UnknownOpcode { .. } => Some(ResultCode::UnsupportedOpcode),
            Error::Truncated { .. }
            | Error::TrailingBytes { .. }
            | Error::NotAResponse { .. }
            | Error::NotARequest { .. }
            | Error::BufferTooSmall { .. }
            | Error::SuccessInErrorResponse => None,
        }
    }
}

/// A NAT-PMP result code (RFC 6886 §3.5).
///
/// Codes the RFC does not define are kept as [`ResultCode::Unknown`]; a client MUST treat them
/// as fatal errors of the request (RFC 6886 §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0: the request succeeded.
    Success,
    /// 1: the gateway does not speak the request's version; it speaks version 0.
    UnsupportedVersion,
    /// 2: the gateway supports mapping but refuses it (e.g. the user turned it off), or the
    /// mapping was configured manually and may not be deleted.
    NotAuthorized,
    /// 3: the gateway itself has no working external connection (e.g. no DHCP lease).
    NetworkFailure,
    /// 4: the gateway cannot create any more mappings now.
    OutOfResources,
    /// 5: the gateway does not support the request's opcode.
    UnsupportedOpcode,
    /// Any other code. [`ResultCode::from_u16`] only produces it for codes 6 and above;
    /// `Unknown(n)` with n ≤ 5 is emitted as n and parses back as the named variant.
    Unknown(u16),
}

impl ResultCode {
    /// Decodes a result code; never fails, codes above 5 become [`ResultCode::Unknown`].
    pub const fn from_u16(value: u16) -> Self {
        match value {
            0 => ResultCode::Success,
            1 => ResultCode::UnsupportedVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::NetworkFailure,
            4 => ResultCode::OutOfResources,
            5 => ResultCode::UnsupportedOpcode,
            other => ResultCode::Unknown(other),
        }
    }

    /// The code's numeric value on the wire.
    pub const fn to_u16(self) -> u16 {
        match self {
            ResultCode::Success => 0,
            ResultCode::UnsupportedVersion => 1,
            ResultCode::NotAuthorized => 2,
            ResultCode::NetworkFailure => 3,
            ResultCode::OutOfResources => 4,
            ResultCode::UnsupportedOpcode => 5,
            ResultCode::Unknown(value) => value,
        }
    }

    /// True for result 0, whatever variant spells it.
    pub const fn is_success(self) -> bool {
        self.to_u16() == 0
    }

    /// A one-line English description, as RFC 6886 §3.5 words it.
    pub const fn description(self) -> &'static str {
        match Self::from_u16(self.to_u16()) {
            ResultCode::Success => "success",
            ResultCode::UnsupportedVersion => "unsupported version",
            ResultCode::NotAuthorized => "not authorized/refused",
            ResultCode::NetworkFailure => "network failure",
            ResultCode::OutOfResources => "out of resources",
            ResultCode::UnsupportedOpcode => "unsupported opcode",
            ResultCode::Unknown(_) => "unknown result code (fatal error of the request)",
        }
    }
}

impl From<u16> for ResultCode {
    fn from(value: u16) -> Self {
        Self::from_u16(value)
    }
}

impl From<ResultCode> for u16 {
    fn from(code: ResultCode) -> Self {
        code.to_u16()
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.to_u16())
    }
}

/// The transport protocol of a NAT-PMP mapping: NAT-PMP maps only UDP (opcode 1) and TCP
/// (opcode 2) (RFC 6886 §3.3). The workspace's one closed UDP/TCP type, shared with UPnP IGD.
pub use crate::transport::Transport;

/// NAT-PMP's opcodes for each transport.
impl Transport {
    /// The protocol a mapping request opcode (1 or 2) names, or `None` for any other opcode.
    pub const fn from_request_opcode(opcode: u8) -> Option<Self> {
        match opcode {
            OP_MAP_UDP => Some(Transport::Udp),
            OP_MAP_TCP => Some(Transport::Tcp),
            _ => None,
        }
    }

    /// The protocol a mapping response opcode (129 or 130) names, or `None` for any other.
    pub const fn from_response_opcode(opcode: u8) -> Option<Self> {
        match opcode {
            0x81 => Some(Transport::Udp),
            0x82 => Some(Transport::Tcp),
            _ => None,
        }
    }

    /// The mapping request opcode: 1 for UDP, 2 for TCP.
    pub const fn request_opcode(self) -> u8 {
        match self {
            Transport::Udp => OP_MAP_UDP,
            Transport::Tcp => OP_MAP_TCP,
        }
    }

    /// The mapping response opcode: 129 for UDP, 130 for TCP.
    pub const fn response_opcode(self) -> u8 {
        RESPONSE_BIT | self.request_opcode()
    }
}

/// True iff `datagram` is a NAT-PMP server's "unsupported version" reply: version byte 0, at
/// least 4 bytes, and result code 1 in bytes 2 and 3, whatever the opcode byte (and so the PCP
/// R bit) and the length.
///
/// A PCP client runs this on every datagram from its server *before* the RFC 6887 §8.3 rule
/// that drops responses with R = 0: RFC 6886 §3.5 prints the reply with OP = 0 (R clear) and
/// is only 8 bytes long, while miniupnpd sends OP = 128 + the request opcode. Either way the
/// server speaks NAT-PMP only (RFC 6887 §9, App. A). Never panics; any other input, including
/// a PCP response (version 2), gives `false`.
pub fn is_unsupp_version_reply(datagram: &[u8]) -> bool {
    matches!(datagram, [VERSION, _, 0, 1, ..])
}

/// The Seconds Since Start of Epoch of an "unsupported version" reply, when
/// [`is_unsupp_version_reply`] holds and the datagram has the 8 bytes that carry it
/// (RFC 6886 §3.5); `None` otherwise. Feed it to the epoch check ([`gateway_lost_state`]).
pub fn unsupp_version_reply_epoch(datagram: &[u8]) -> Option<u32> {
    match datagram {
        [VERSION, _, 0, 1, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 6886 §3.5 as printed: OP = 0, so the PCP R bit is clear.
    static UNSUPP_VERSION_RFC: [u8; 8] = [0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x12, 0x34];
    /// miniupnpd's form answering a PCP MAP request: OP = 128 + 1.
    static UNSUPP_VERSION_MINIUPNPD: [u8; 8] = [0x00, 0x81, 0x00, 0x01, 0x00, 0x00, 0x12, 0x34];
    /// A PCP (version 2) MAP response with result UNSUPP_VERSION (1), 24-byte header only.
    static PCP_V2_UNSUPP_VERSION: [u8; 24] = [
        0x02, 0x81, 0x00, 0x01, 0x00, 0x00, 0x07, 0x08, 0x00, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn unsupp_version_reply_detected_with_op_zero_as_rfc_prints() {
        // RFC 6886 §3.5; digest §1.11 gotcha
        assert!(is_unsupp_version_reply(&UNSUPP_VERSION_RFC));
        assert_eq!(
            unsupp_version_reply_epoch(&UNSUPP_VERSION_RFC),
            Some(0x1234)
        );
    }

    #[test]
    fn unsupp_version_reply_detected_with_op_128_plus_x_as_miniupnpd_sends() {
        // RFC 6887 §8.3 vs RFC 6886 §3.5; digest §7.10
        assert!(is_unsupp_version_reply(&UNSUPP_VERSION_MINIUPNPD));
        assert_eq!(
            unsupp_version_reply_epoch(&UNSUPP_VERSION_MINIUPNPD),
            Some(0x1234)
        );
    }

    #[test]
    fn unsupp_version_reply_detected_whatever_the_length() {
        // digest §1.11: "whatever its R bit and length"
        assert!(is_unsupp_version_reply(&UNSUPP_VERSION_RFC[..4]));
        assert_eq!(unsupp_version_reply_epoch(&UNSUPP_VERSION_RFC[..4]), None);
        assert_eq!(unsupp_version_reply_epoch(&UNSUPP_VERSION_RFC[..7]), None);
        let mut long = [0u8; 24];
        long[..8].copy_from_slice(&UNSUPP_VERSION_MINIUPNPD);
        assert!(is_unsupp_version_reply(&long));
        assert_eq!(unsupp_version_reply_epoch(&long), Some(0x1234));
    }

    #[test]
    fn pcp_v2_response_is_not_a_natpmp_unsupp_version_reply() {
        // RFC 6887 §9: a PCP server's UNSUPP_VERSION carries its own version, not 0
        assert!(!is_unsupp_version_reply(&PCP_V2_UNSUPP_VERSION));
        assert_eq!(unsupp_version_reply_epoch(&PCP_V2_UNSUPP_VERSION), None);
    }

    #[test]
    fn short_or_other_result_datagrams_are_not_unsupp_version_replies() {
        assert!(!is_unsupp_version_reply(&[]));
        assert!(!is_unsupp_version_reply(&[0x00, 0x81, 0x00]));
        // Result 5 (unsupported opcode) and 2 (not authorized) are other errors.
        assert!(!is_unsupp_version_reply(&[
            0x00, 0x83, 0x00, 0x05, 0, 0, 0, 1
        ]));
        assert!(!is_unsupp_version_reply(&[
            0x00, 0x81, 0x00, 0x02, 0, 0, 0, 1
        ]));
        // Result 0x0101 is not 1: both bytes count.
        assert!(!is_unsupp_version_reply(&[
            0x00, 0x80, 0x01, 0x01, 0, 0, 0, 1
        ]));
    }

    #[test]
    fn result_codes_decode_as_rfc_6886_section_3_5_lists_them() {
        // RFC 6886 §3.5
        let named = [
            (0, ResultCode::Success),
            (1, ResultCode::UnsupportedVersion),
            (2, ResultCode::NotAuthorized),
            (3, ResultCode::NetworkFailure),
            (4, ResultCode::OutOfResources),
            (5, ResultCode::UnsupportedOpcode),
            (6, ResultCode::Unknown(6)),
            (0xffff, ResultCode::Unknown(0xffff)),
        ];
        for (value, code) in named {
            assert_eq!(ResultCode::from(value), code);
            assert_eq!(u16::from(code), value);
        }
        assert!(ResultCode::Success.is_success());
        assert!(ResultCode::Unknown(0).is_success());
        assert!(!ResultCode::NotAuthorized.is_success());
        assert_eq!(
            ResultCode::NotAuthorized.description(),
            "not authorized/refused"
        );
        assert_eq!(ResultCode::Unknown(3).description(), "network failure");
        assert_eq!(
            ResultCode::OutOfResources.to_string(),
            "out of resources (4)"
        );
        // RFC 6886 §3.5: undefined codes are fatal errors of the request.
        assert!(ResultCode::Unknown(77).description().contains("fatal"));
    }

    #[test]
    fn server_answers_only_version_and_opcode_errors() {
        // RFC 6886 §3.5: unsupported version → 1, unsupported opcode → 5, responses ignored
        assert_eq!(
            Error::UnsupportedVersion { version: 2 }.result_code(),
            Some(ResultCode::UnsupportedVersion)
        );
        assert_eq!(
            Error::UnknownOpcode { opcode: 3 }.result_code(),
            Some(ResultCode::UnsupportedOpcode)
        );
        assert_eq!(Error::NotARequest { opcode: 0x80 }.result_code(), None);
        assert_eq!(Error::Truncated { len: 3, need: 12 }.result_code(), None);
    }

    #[test]
    fn protocol_opcodes_match_rfc_6886_section_3_3() {
        // RFC 6886 §3.3: 1 UDP, 2 TCP; responses 128 + x
        for p in [Transport::Udp, Transport::Tcp] {
            assert_eq!(Transport::from_request_opcode(p.request_opcode()), Some(p));
            assert_eq!(
                Transport::from_response_opcode(p.response_opcode()),
                Some(p)
            );
        }
        assert_eq!(Transport::Udp.response_opcode(), 129);
        assert_eq!(Transport::Tcp.response_opcode(), 130);
        assert_eq!(Transport::from_request_opcode(0), None);
        assert_eq!(Transport::from_request_opcode(3), None);
        assert_eq!(Transport::from_response_opcode(0x80), None);
    }

    #[test]
    fn retransmission_constants_follow_rfc_6886_section_3_1() {
        // RFC 6886 §3.1: 250 ms doubling, ninth attempt then 64 s
        let last = INITIAL_RETRANSMIT_TIMEOUT * 2u32.pow(MAX_ATTEMPTS - 1);
        assert_eq!(last, FINAL_WAIT);
        assert_eq!((SERVER_PORT, CLIENT_PORT, VERSION), (5351, 5350, 0));
        assert_eq!(RECOMMENDED_LIFETIME, 7200);
    }

    proptest! {
        #[test]
        fn result_code_round_trips(value: u16) {
            prop_assert_eq!(ResultCode::from_u16(value).to_u16(), value);
        }

        /// The detector is exactly the digest §1.11 predicate, and never panics.
        #[test]
        fn detector_matches_its_definition(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let expected = data.len() >= 4 && data[0] == 0 && data[2..4] == [0, 1];
            prop_assert_eq!(is_unsupp_version_reply(&data), expected);
            prop_assert_eq!(
                unsupp_version_reply_epoch(&data).is_some(),
                expected && data.len() >= 8
            );
        }

        /// No parser or server helper panics on any datagram, and every request error the
        /// server must answer can be answered. RFC 6886 §3.5.
        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let _ = ResponseRepr::parse(&data);
            if let Err(e) = RequestRepr::parse(&data) {
                if let Some(code) = e.result_code() {
                    let n = emit_error_reply(&data, code, 7, &mut buf);
                    prop_assert!(n.is_ok(), "{:?} for {:?}", n, data);
                }
            }
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                let _ = (packet.version(), packet.opcode());
            }
            let _ = emit_error_reply(&data, ResultCode::NotAuthorized, 7, &mut buf);
        }
    }
}
