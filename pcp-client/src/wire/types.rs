//! Small protocol value types: opcodes, result codes, nonces and protocol numbers.

use std::fmt;
use std::str::FromStr;

/// A PCP opcode (RFC 6887 §19.2, RFC 7652 §5.1). The R bit is not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opcode {
    /// ANNOUNCE (0): learn the server's epoch; sent unsolicited after state loss (§14.1).
    Announce,
    /// MAP (1): create an inbound mapping (§11).
    Map,
    /// PEER (2): create or learn an outbound mapping to one remote peer (§12).
    Peer,
    /// AUTHENTICATION (3), RFC 7652. Recognised so it is reported, not misparsed; this crate
    /// does not implement PCP authentication.
    Authentication,
    /// Any other value (7 bits).
    Unknown(u8),
}

impl Opcode {
    /// Length of the opcode-specific data that follows the common header, if the opcode is
    /// known. Requests and responses use the same length.
    pub const fn body_len(self) -> Option<usize> {
        match self {
            Opcode::Announce => Some(0),
            Opcode::Map => Some(super::MAP_LEN),
            Opcode::Peer => Some(super::PEER_LEN),
            Opcode::Authentication => Some(super::AUTHENTICATION_LEN),
            Opcode::Unknown(_) => None,
        }
    }
}

impl From<u8> for Opcode {
    /// Reads the low 7 bits (the R bit is masked off).
    fn from(value: u8) -> Self {
        match value & 0x7f {
            0 => Opcode::Announce,
            1 => Opcode::Map,
            2 => Opcode::Peer,
            3 => Opcode::Authentication,
            other => Opcode::Unknown(other),
        }
    }
}

impl From<Opcode> for u8 {
    fn from(value: Opcode) -> Self {
        match value {
            Opcode::Announce => 0,
            Opcode::Map => 1,
            Opcode::Peer => 2,
            Opcode::Authentication => 3,
            Opcode::Unknown(other) => other & 0x7f,
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opcode::Announce => f.write_str("ANNOUNCE"),
            Opcode::Map => f.write_str("MAP"),
            Opcode::Peer => f.write_str("PEER"),
            Opcode::Authentication => f.write_str("AUTHENTICATION"),
            Opcode::Unknown(v) => write!(f, "opcode {v}"),
        }
    }
}

macro_rules! result_codes {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal, $name:literal, $long:literal, $text:literal; )*) => {
        /// A PCP result code: RFC 6887 §7.4, RFC 7652 §5.2 (14 to 23) and RFC 7843 §3 (24 to 26).
        /// Unknown values are kept, and any non-zero value is an error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ResultCode {
            $( $(#[$doc])* $variant, )*
            /// A value this crate does not know; still an error.
            Unknown(u8),
        }

        impl From<u8> for ResultCode {
            fn from(value: u8) -> Self {
                match value {
                    $( $value => ResultCode::$variant, )*
                    other => ResultCode::Unknown(other),
                }
            }
        }

        impl From<ResultCode> for u8 {
            fn from(value: ResultCode) -> Self {
                match value {
                    $( ResultCode::$variant => $value, )*
                    ResultCode::Unknown(other) => other,
                }
            }
        }

        impl ResultCode {
            /// Every result code this crate knows, in numeric order.
            pub const ALL: &'static [ResultCode] = &[ $( ResultCode::$variant, )* ];

            /// The registered name, e.g. `NO_RESOURCES`; `None` for an unknown code.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( ResultCode::$variant => Some($name), )*
                    ResultCode::Unknown(_) => None,
                }
            }

            /// One line saying what the code means to a user.
            pub const fn description(self) -> &'static str {
                match self {
                    $( ResultCode::$variant => $text, )*
                    ResultCode::Unknown(_) => "unknown result code; treated as an error",
                }
            }

            /// True for the errors RFC 6887 §7.4 calls long-lifetime (the suggested error
            /// lifetime is 30 minutes rather than 30 seconds). CANNOT_PROVIDE_EXTERNAL depends
            /// on its cause and counts as short here.
            pub const fn is_long_lifetime_error(self) -> bool {
                match self {
                    $( ResultCode::$variant => $long, )*
                    ResultCode::Unknown(_) => false,
                }
            }
        }
    };
}

result_codes! {
    /// The request succeeded.
    Success = 0, "SUCCESS", false, "success";
    /// The server does not support this version (version negotiation, RFC 6887 §9).
    UnsuppVersion = 1, "UNSUPP_VERSION", true, "the server does not speak this PCP version";
    /// Refused by policy, or the nonce does not own the mapping.
    NotAuthorized = 2, "NOT_AUTHORIZED", true, "refused by the server's policy or the mapping belongs to another nonce";
    /// The request could not be parsed.
    MalformedRequest = 3, "MALFORMED_REQUEST", true, "the server could not parse the request";
    /// The opcode is not supported.
    UnsuppOpcode = 4, "UNSUPP_OPCODE", true, "the server does not support this opcode";
    /// A mandatory-to-process option is not supported or not allowed.
    UnsuppOption = 5, "UNSUPP_OPTION", true, "the server does not support or allow a mandatory option";
    /// An option is malformed, repeated or makes no sense here.
    MalformedOption = 6, "MALFORMED_OPTION", true, "an option is malformed, repeated or makes no sense here";
    /// The server has a network failure (e.g. no external address yet).
    NetworkFailure = 7, "NETWORK_FAILURE", false, "the server has a network failure (e.g. no external address)";
    /// The server is out of resources.
    NoResources = 8, "NO_RESOURCES", false, "the server is out of resources";
    /// The protocol is not supported.
    UnsuppProtocol = 9, "UNSUPP_PROTOCOL", true, "the server does not support this transport protocol";
    /// The subscriber's mapping quota is exhausted.
    UserExQuota = 10, "USER_EX_QUOTA", false, "the subscriber's mapping quota is exhausted";
    /// The suggested external address/port cannot be provided.
    CannotProvideExternal = 11, "CANNOT_PROVIDE_EXTERNAL", false, "the suggested external address or port cannot be provided";
    /// The packet's source differs from the Client IP field: a NAT sits in between.
    AddressMismatch = 12, "ADDRESS_MISMATCH", true, "the source address differs from the Client IP field (a NAT is in the path)";
    /// More FILTER options than the server supports.
    ExcessiveRemotePeers = 13, "EXCESSIVE_REMOTE_PEERS", true, "more FILTER remote peers than the server supports";
    /// RFC 7652: authentication initiation.
    Initiation = 14, "INITIATION", false, "authentication: the client must authenticate (RFC 7652)";
    /// RFC 7652.
    AuthenticationRequired = 15, "AUTHENTICATION_REQUIRED", false, "authentication is required (RFC 7652)";
    /// RFC 7652.
    AuthenticationFailed = 16, "AUTHENTICATION_FAILED", false, "authentication failed (RFC 7652)";
    /// RFC 7652.
    AuthenticationSucceeded = 17, "AUTHENTICATION_SUCCEEDED", false, "authentication succeeded (RFC 7652)";
    /// RFC 7652.
    AuthorizationFailed = 18, "AUTHORIZATION_FAILED", false, "authorization failed (RFC 7652)";
    /// RFC 7652.
    SessionTerminated = 19, "SESSION_TERMINATED", false, "the authentication session was terminated (RFC 7652)";
    /// RFC 7652.
    UnknownSessionId = 20, "UNKNOWN_SESSION_ID", false, "unknown authentication session (RFC 7652)";
    /// RFC 7652.
    DowngradeAttackDetected = 21, "DOWNGRADE_ATTACK_DETECTED", false, "a downgrade attack was detected (RFC 7652)";
    /// RFC 7652.
    AuthenticationRequest = 22, "AUTHENTICATION_REQUEST", false, "authentication request (RFC 7652)";
    /// RFC 7652.
    AuthenticationReply = 23, "AUTHENTICATION_REPLY", false, "authentication reply (RFC 7652)";
    /// RFC 7843: the THIRD_PARTY_ID is unknown.
    ThirdPartyIdUnknown = 24, "THIRD_PARTY_ID_UNKNOWN", true, "the THIRD_PARTY_ID is unknown to the server (RFC 7843)";
    /// RFC 7843: THIRD_PARTY_ID without THIRD_PARTY.
    ThirdPartyMissingOption = 25, "THIRD_PARTY_MISSING_OPTION", true, "THIRD_PARTY_ID was sent without THIRD_PARTY (RFC 7843)";
    /// RFC 7843: the THIRD_PARTY_ID length is not supported.
    UnsuppThirdPartyIdLength = 26, "UNSUPP_THIRD_PARTY_ID_LENGTH", true, "the THIRD_PARTY_ID length is not supported (RFC 7843)";
}

impl ResultCode {
    /// True for [`ResultCode::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, ResultCode::Success)
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RESULT_{}", u8::from(*self)),
        }
    }
}

/// A 96-bit mapping nonce (RFC 6887 §11.1). Displayed as `0x` and 24 hex digits, the form
/// operators see in a CGN's mapping table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Nonce(pub [u8; 12]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a string is not a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonceParseError {
    /// Not exactly 24 hex digits (after an optional `0x`).
    #[error("a nonce is 24 hex digits, got {0}")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("character {ch:?} at {index} is not a hex digit")]
    NotHex {
        /// Position in the digits (after any `0x`).
        index: usize,
        /// The character found.
        ch: char,
    },
}

impl FromStr for Nonce {
    type Err = NonceParseError;

    /// Parses 24 hex digits, with or without a leading `0x`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if digits.chars().count() != 24 {
            return Err(NonceParseError::Length(digits.chars().count()));
        }
        let mut out = [0u8; 12];
        for (index, ch) in digits.chars().enumerate() {
            let v = ch
                .to_digit(16)
                .ok_or(NonceParseError::NotHex { index, ch })? as u8;
            out[index / 2] |= if index % 2 == 0 { v << 4 } else { v };
        }
        Ok(Nonce(out))
    }
}

/// An IANA protocol number as carried in MAP and PEER (RFC 6887 §11.1). 0 means "all protocols".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Protocol(pub u8);

impl Protocol {
    /// All protocols (MAP only, with internal port 0).
    pub const ALL: Protocol = Protocol(0);
    /// ICMP.
    pub const ICMP: Protocol = Protocol(1);
    /// TCP.
    pub const TCP: Protocol = Protocol(6);
    /// UDP.
    pub const UDP: Protocol = Protocol(17);
    /// DCCP.
    pub const DCCP: Protocol = Protocol(33);
    /// ICMPv6.
    pub const ICMPV6: Protocol = Protocol(58);
    /// SCTP.
    pub const SCTP: Protocol = Protocol(132);
    /// UDP-Lite.
    pub const UDPLITE: Protocol = Protocol(136);

    /// True for the protocols whose packets carry 16-bit ports; for the others the port fields
    /// MUST be 0 (RFC 6887 §11.2).
    pub const fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17 | 33 | 132 | 136)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Protocol::ALL => f.write_str("ANY"),
            Protocol::ICMP => f.write_str("ICMP"),
            Protocol::TCP => f.write_str("TCP"),
            Protocol::UDP => f.write_str("UDP"),
            Protocol::DCCP => f.write_str("DCCP"),
            Protocol::ICMPV6 => f.write_str("ICMPv6"),
            Protocol::SCTP => f.write_str("SCTP"),
            Protocol::UDPLITE => f.write_str("UDPLite"),
            Protocol(n) => write!(f, "{n}"),
        }
    }
}

/// An option code (RFC 6887 §19.4). Codes 128 to 255 are optional to process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OptionCode(pub u8);

impl OptionCode {
    /// THIRD_PARTY (RFC 6887 §13.1): the request is on behalf of another internal host.
    pub const THIRD_PARTY: OptionCode = OptionCode(1);
    /// PREFER_FAILURE (RFC 6887 §13.2): fail rather than assign another external port.
    pub const PREFER_FAILURE: OptionCode = OptionCode(2);
    /// FILTER (RFC 6887 §13.3): admit inbound traffic only from these remote peers.
    pub const FILTER: OptionCode = OptionCode(3);
    /// THIRD_PARTY_ID (RFC 7843).
    pub const THIRD_PARTY_ID: OptionCode = OptionCode(13);
    /// DESCRIPTION (RFC 7220).
    pub const DESCRIPTION: OptionCode = OptionCode(128);
    /// PORT_SET (RFC 7753).
    pub const PORT_SET: OptionCode = OptionCode(130);

    /// True when a receiver that does not know the option may ignore it (the MSB is set).
    pub const fn is_optional(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// The registered name, if known (RFC 6887, 7220, 7652, 7753, 7843).
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "THIRD_PARTY",
            2 => "PREFER_FAILURE",
            3 => "FILTER",
            4 => "NONCE",
            5 => "AUTHENTICATION_TAG",
            6 => "PA_AUTHENTICATION_TAG",
            7 => "EAP_PAYLOAD",
            8 => "PRF",
            9 => "MAC_ALGORITHM",
            10 => "SESSION_LIFETIME",
            11 => "RECEIVED_PAK",
            12 => "ID_INDICATOR",
            13 => "THIRD_PARTY_ID",
            128 => "DESCRIPTION",
            130 => "PORT_SET",
            _ => return None,
        })
    }
}

impl fmt::Debug for OptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OptionCode({self})")
    }
}

impl fmt::Display for OptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "option {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_masks_r_bit_and_round_trips() {
        for v in 0u8..=127 {
            assert_eq!(u8::from(Opcode::from(v)), v);
            assert_eq!(Opcode::from(v | 0x80), Opcode::from(v));
        }
        assert_eq!(Opcode::from(3), Opcode::Authentication);
        assert_eq!(Opcode::Unknown(99).body_len(), None);
        assert_eq!(Opcode::Peer.to_string(), "PEER");
    }

    // RFC 6887 §7.4, RFC 7652 §5.2, RFC 7843 §3: every registered code has its name.
    #[test]
    fn every_registered_result_code_has_a_name() {
        assert_eq!(ResultCode::ALL.len(), 27);
        for (i, code) in ResultCode::ALL.iter().enumerate() {
            assert_eq!(u8::from(*code) as usize, i);
            assert_eq!(ResultCode::from(i as u8), *code);
            assert!(code.name().is_some());
        }
        assert_eq!(ResultCode::from(27), ResultCode::Unknown(27));
        assert_eq!(ResultCode::Unknown(200).to_string(), "RESULT_200");
        assert_eq!(ResultCode::NoResources.to_string(), "NO_RESOURCES");
        assert_eq!(
            ResultCode::from(26).name(),
            Some("UNSUPP_THIRD_PARTY_ID_LENGTH")
        );
        assert!(ResultCode::MalformedOption.is_long_lifetime_error());
        assert!(!ResultCode::UserExQuota.is_long_lifetime_error());
    }

    #[test]
    fn nonce_prints_and_parses_as_hex() {
        let n = Nonce(*b"517859516\0\0\0");
        assert_eq!(n.to_string(), "0x353137383539353136000000");
        assert_eq!("0x353137383539353136000000".parse::<Nonce>(), Ok(n));
        assert_eq!("353137383539353136000000".parse::<Nonce>(), Ok(n));
        assert_eq!("0x12".parse::<Nonce>(), Err(NonceParseError::Length(2)));
        assert_eq!(
            "35313738353935313600000g".parse::<Nonce>(),
            Err(NonceParseError::NotHex { index: 23, ch: 'g' })
        );
        assert_eq!(
            "é53137383539353136000000".parse::<Nonce>(),
            Err(NonceParseError::NotHex { index: 0, ch: 'é' })
        );
    }

    #[test]
    fn protocol_names_and_ports() {
        assert_eq!(Protocol::ALL.to_string(), "ANY");
        assert_eq!(Protocol(47).to_string(), "47");
        assert!(Protocol::UDP.has_ports());
        assert!(!Protocol::ICMP.has_ports());
    }
}
