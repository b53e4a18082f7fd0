//! The Port Control Protocol wire format (RFC 6887 §5, §7, §11.1, §12.1, §13, §14), with the
//! options of RFC 7220 (DESCRIPTION), RFC 7753 (PORT_SET) and RFC 7843 (THIRD_PARTY_ID), and
//! the opcode and result codes of RFC 7652.
//!
//! The shape follows smoltcp's `wire` module:
//!
//! * [`Packet`] is a typed view over a byte buffer with one accessor per common-header field.
//!   [`Packet::new_checked`] enforces the length rules (24 ≤ len ≤ 1100, multiple of 4).
//! * [`RequestRepr`] and [`ResponseRepr`] are plain structs with `parse`, `buffer_len` and
//!   `emit`. Parsing borrows from the input and never allocates; emitting writes into a buffer
//!   the caller owns.
//! * Every rule a message can break has its own [`Error`] variant, and
//!   [`Error::result_code`] says which PCP result code a server answers with (or that the
//!   datagram is dropped silently), so a server can pick MALFORMED_REQUEST, MALFORMED_OPTION,
//!   UNSUPP_OPCODE or UNSUPP_VERSION without re-deriving the rule.
//! * [`emit_error_response`] builds the RFC-exact error response from any request bytes.
//!
//! ```
//! use pcp_client::wire::{MapData, Nonce, OpcodeData, Options, Protocol, RequestRepr};
//! use std::net::{IpAddr, Ipv4Addr};
//!
//! let request = RequestRepr {
//!     lifetime: 7200,
//!     client_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
//!     data: OpcodeData::Map(MapData {
//!         nonce: Nonce([7; 12]),
//!         protocol: Protocol::TCP,
//!         internal_port: 8080,
//!         external_port: 0,
//!         external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED), // "no preference", IPv4
//!     }),
//!     options: Options::EMPTY,
//! };
//! let mut buf = [0u8; 1100];
//! let len = request.emit(&mut buf)?;
//! assert_eq!(len, 60);
//! assert_eq!(RequestRepr::parse(&buf[..len])?, request);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod address;
mod error;
mod error_response;
mod message;
mod option;
mod packet;
mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod vectors;

pub use address::{decode_address, encode_address, is_ipv4_mapped};
pub use error::{EmitError, Error};
pub use error_response::{ErrorResponse, emit_error_response};
pub use message::{AuthData, MapData, OpcodeData, PeerData, RequestRepr, ResponseRepr};
pub use option::{Description, Filter, Options, OptionsIter, PcpOption, PortSet, UnknownOption};
pub use packet::{Packet, peek_response};
pub use types::{Nonce, NonceParseError, Opcode, OptionCode, Protocol, ResultCode};

/// PCP version carried by every request and response (RFC 6887 §7.1). Version 1 is never used;
/// version 0 is NAT-PMP (RFC 6886).
pub const VERSION: u8 = 2;
/// UDP port a PCP server listens on (RFC 6887 §19.1).
pub const SERVER_PORT: u16 = 5351;
/// UDP port a PCP client listens on for unsolicited ANNOUNCE and Mapping Update messages
/// (RFC 6887 §14.1.1). Requests are sent from a random port, not this one.
pub const CLIENT_PORT: u16 = 5350;
/// Largest PCP message, in octets of UDP payload (RFC 6887 §7).
pub const MAX_MESSAGE_LEN: usize = 1100;
/// Size of the common request and response header (RFC 6887 §7.1, §7.2).
pub const HEADER_LEN: usize = 24;
/// Size of the MAP opcode-specific data (RFC 6887 §11.1).
pub const MAP_LEN: usize = 36;
/// Size of the PEER opcode-specific data (RFC 6887 §12.1).
pub const PEER_LEN: usize = 56;
/// Size of the AUTHENTICATION opcode-specific data (RFC 7652 §5.1).
pub const AUTHENTICATION_LEN: usize = 8;
/// Size of an option header (RFC 6887 §7.3).
pub const OPTION_HEADER_LEN: usize = 4;
