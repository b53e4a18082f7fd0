//! Field formats of the state file that serde has no built-in spelling for: the protocol
//! (`"TCP"`/`"UDP"`), the nonce (24 hex digits) and the lease end (unix seconds or
//! `"permanent"`). Bad values become serde errors, which carry line and column.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::LeaseEnd;

/// `Protocol` as exactly `"TCP"` or `"UDP"` (upper case, as written).
pub(super) mod protocol {
    use super::*;
    use crate::mapping::Protocol;

    pub(in crate::state) fn serialize<S: Serializer>(
        p: &Protocol,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub(in crate::state) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Protocol, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match &*name {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            other => Err(de::Error::invalid_value(
                de::Unexpected::Str(other),
                &"\"TCP\" or \"UDP\"",
            )),
        }
    }
}

/// The 96-bit nonce as 24 hex digits (written lower case, read in either case).
pub(super) mod nonce {
    use super::*;

    pub(in crate::state) fn serialize<S: Serializer>(
        n: &[u8; 12],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut hex = String::with_capacity(24);
        for b in n {
            hex.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&hex)
    }

    pub(in crate::state) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; 12], D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_hex(&hex)
            .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&hex), &"24 hex digits"))
    }

    fn parse_hex(hex: &str) -> Option<[u8; 12]> {
        let digits = hex.as_bytes();
        if digits.len() != 24 {
            return None;
        }
        let mut out = [0u8; 12];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            *byte = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(out)
    }
}

const PERMANENT: &str = "permanent";

impl Serialize for LeaseEnd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LeaseEnd::Permanent => s.serialize_str(PERMANENT),
            LeaseEnd::At(t) => {
                s.serialize_u64(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
            }
        }
    }
}

impl<'de> Deserialize<'de> for LeaseEnd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LeaseEnd, D::Error> {
        d.deserialize_any(LeaseEndVisitor)
    }
}

struct LeaseEndVisitor;

impl Visitor<'_> for LeaseEndVisitor {
    type Value = LeaseEnd;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unix seconds (an unsigned integer) or \"permanent\"")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<LeaseEnd, E> {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .map(LeaseEnd::At)
            .ok_or_else(|| {
                E::invalid_value(de::Unexpected::Unsigned(secs), &"a representable time")
            })
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<LeaseEnd, E> {
        if s == PERMANENT {
            Ok(LeaseEnd::Permanent)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(s), &self))
        }
    }
}
