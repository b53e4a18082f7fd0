//! Parse and emit errors. Each parse error names the rule the message broke, and knows which
//! result code a server answers it with.

use super::types::{Opcode, OptionCode, ResultCode};

/// Why a datagram is not a valid PCP message. Every variant names the rule broken; offsets are
/// from the start of the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than the 24-byte common header (RFC 6887 §8.2: dropped silently).
    #[error("datagram of {len} bytes is shorter than the 24-byte PCP header")]
    Truncated {
        /// Datagram length.
        len: usize,
    },
    /// Longer than 1100 bytes (RFC 6887 §7).
    #[error("message of {len} bytes exceeds the 1100-byte maximum")]
    TooLong {
        /// Datagram length.
        len: usize,
    },
    /// Length not a multiple of 4 (RFC 6887 §8.2, §8.3).
    #[error("message length {len} is not a multiple of 4")]
    NotMultipleOf4 {
        /// Datagram length.
        len: usize,
    },
    /// Version byte is not 2 (RFC 6887 §7.1, §9).
    #[error("version {version} is not PCP version 2")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A request was expected but the R bit is set (RFC 6887 §8.2: dropped silently).
    #[error("R bit set: this is a response, not a request")]
    NotARequest,
    /// A response was expected but the R bit is clear (RFC 6887 §8.3: dropped silently).
    #[error("R bit clear: this is a request, not a response")]
    NotAResponse,
    /// The opcode is not one this codec knows (RFC 6887 §8.2: UNSUPP_OPCODE).
    #[error("opcode {opcode} is not supported")]
    UnsupportedOpcode {
        /// The 7-bit opcode.
        opcode: u8,
    },
    /// Too short for the opcode's fixed data (RFC 6887 §8.2).
    #[error("{opcode} message of {len} bytes is shorter than its {need}-byte fixed part")]
    OpcodeTruncated {
        /// The opcode.
        opcode: Opcode,
        /// Datagram length.
        len: usize,
        /// Header plus opcode-specific length.
        need: usize,
    },
    /// MAP creating a mapping (lifetime ≠ 0) with protocol 0 ("all protocols") and a non-zero
    /// internal port (RFC 6887 §11.3: MALFORMED_REQUEST).
    #[error("MAP for all protocols with internal port {port} (must be 0)")]
    AllProtocolsWithPort {
        /// The internal port found.
        port: u16,
    },
    /// PEER with protocol, internal port or remote peer port zero (RFC 6887 §12.1).
    #[error("PEER field {field} is zero")]
    PeerFieldZero {
        /// Which field: `protocol`, `internal port` or `remote peer port`.
        field: &'static str,
    },
    /// Fewer than 4 bytes left for an option header (RFC 6887 §7.3).
    #[error("option header at offset {offset} overruns the message")]
    OptionHeaderTruncated {
        /// Offset of the partial header.
        offset: usize,
    },
    /// The option's data (plus padding) overruns the message (RFC 6887 §7.3).
    #[error("option {code} at offset {offset} has {length} data bytes, overrunning the message")]
    OptionOverrun {
        /// Option code.
        code: OptionCode,
        /// Offset of the option header.
        offset: usize,
        /// The Option Length field.
        length: u16,
    },
    /// Wrong data length for a fixed-size option (RFC 6887 §13; RFC 7753 §4; RFC 7843 §3).
    #[error("option {code} at offset {offset} has length {length}, expected {expected}")]
    OptionLength {
        /// Option code.
        code: OptionCode,
        /// Offset of the option header.
        offset: usize,
        /// The Option Length field.
        length: u16,
        /// The length the option must have (for THIRD_PARTY_ID, the maximum).
        expected: u16,
    },
    /// A known option on an opcode it is not defined for (RFC 6887 §7.3, §13).
    #[error("option {code} at offset {offset} is not valid in a {opcode} message")]
    OptionNotAllowed {
        /// Option code.
        code: OptionCode,
        /// Offset of the option header.
        offset: usize,
        /// The message's opcode.
        opcode: Opcode,
    },
    /// A single-use option appears again (RFC 6887 §7.3).
    #[error("option {code} at offset {offset} repeats a single-use option")]
    OptionRepeated {
        /// Option code.
        code: OptionCode,
        /// Offset of the repeated option.
        offset: usize,
    },
    /// FILTER prefix length outside the range for the remote address's family
    /// (RFC 6887 §13.3: IPv4 96..=128, IPv6 0..=128).
    #[error("FILTER at offset {offset} has prefix length {prefix_length}, invalid for its address")]
    FilterPrefixLength {
        /// Offset of the option header.
        offset: usize,
        /// The Prefix Length found.
        prefix_length: u8,
    },
    /// An option that makes no sense in a delete (lifetime 0): PREFER_FAILURE or FILTER
    /// (RFC 6887 §13.2, §13.3).
    #[error("option {code} at offset {offset} makes no sense in a delete (lifetime 0)")]
    OptionInDelete {
        /// Option code.
        code: OptionCode,
        /// Offset of the option header.
        offset: usize,
    },
    /// PREFER_FAILURE without a suggested external port (RFC 6887 §13.2).
    #[error("PREFER_FAILURE at offset {offset} with suggested external port 0")]
    PreferFailureWithoutPort {
        /// Offset of the option header.
        offset: usize,
    },
    /// PREFER_FAILURE in a PEER request (RFC 6887 §13.2: MALFORMED_REQUEST).
    #[error("PREFER_FAILURE at offset {offset} in a PEER request")]
    PreferFailureInPeer {
        /// Offset of the option header.
        offset: usize,
    },
    /// PORT_SET with Port Set Size 0 in a non-delete request (RFC 7753 §4).
    #[error("PORT_SET at offset {offset} with Port Set Size 0")]
    PortSetSizeZero {
        /// Offset of the option header.
        offset: usize,
    },
    /// PORT_SET together with PREFER_FAILURE (RFC 7753 §5.1).
    #[error("PORT_SET and PREFER_FAILURE together (second one at offset {offset})")]
    PortSetWithPreferFailure {
        /// Offset of whichever of the two came second.
        offset: usize,
    },
    /// PORT_SET whose First Internal Port differs from the MAP Internal Port (RFC 7753 §4).
    #[error("PORT_SET at offset {offset} starts at internal port {first}, MAP says {internal}")]
    PortSetInternalPortMismatch {
        /// Offset of the option header.
        offset: usize,
        /// First Internal Port of the option.
        first: u16,
        /// Internal Port of the MAP.
        internal: u16,
    },
    /// THIRD_PARTY naming the client itself (RFC 6887 §13.1: MALFORMED_REQUEST).
    #[error("THIRD_PARTY at offset {offset} names the client's own address")]
    ThirdPartyIsClient {
        /// Offset of the option header.
        offset: usize,
    },
}

impl Error {
    /// The result code a PCP server answers a request with this error with, or `None` when the
    /// request must be dropped silently (RFC 6887 §8.2).
    pub const fn result_code(&self) -> Option<ResultCode> {
        match self {
            Error::Truncated { .. } | Error::NotARequest | Error::NotAResponse => None,
            Error::UnsupportedVersion { .. } => Some(ResultCode::UnsuppVersion),
            Error::UnsupportedOpcode { .. } => Some(ResultCode::UnsuppOpcode),
            Error::TooLong { .. }
            | Error::NotMultipleOf4 { .. }
            | Error::OpcodeTruncated { .. }
            | Error::AllProtocolsWithPort { .. }
            | Error::PeerFieldZero { .. }
            | Error::PreferFailureInPeer { .. }
            | Error::ThirdPartyIsClient { .. } => Some(ResultCode::MalformedRequest),
            Error::OptionHeaderTruncated { .. }
            | Error::OptionOverrun { .. }
            | Error::OptionLength { .. }
            | Error::OptionNotAllowed { .. }
            | Error::OptionRepeated { .. }
            | Error::FilterPrefixLength { .. }
            | Error::OptionInDelete { .. }
            | Error::PreferFailureWithoutPort { .. }
            | Error::PortSetSizeZero { .. }
            | Error::PortSetWithPreferFailure { .. }
            | Error::PortSetInternalPortMismatch { .. } => Some(ResultCode::MalformedOption),
        }
    }
}

/// Why a `Repr` could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The caller's buffer is too small.
    #[error("buffer of {have} bytes is too small, need {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The message would exceed 1100 bytes (RFC 6887 §7).
    #[error("message of {len} bytes would exceed the 1100-byte maximum")]
    TooLong {
        /// Length the message would have.
        len: usize,
    },
}
