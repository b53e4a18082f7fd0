//! What the engine tells its driver: identifiers, datagrams to send and events.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::natpmp;
use crate::wire::ResultCode;

/// A server known to the engine (RFC 7488: one server may have several addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub usize);

/// A mapping (MAP or PEER) managed by the engine. Never reused within one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MappingId(pub u64);

/// One address of a server, as seen from this host: where requests go, and the local address
/// they leave from (the Client IP field, RFC 6887 §8.1; a driver learns it with `connect()` +
/// `getsockname()`, §16.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    /// The server's address and port (normally port 5351).
    pub remote: SocketAddr,
    /// The local source address of datagrams sent to `remote`.
    pub local: IpAddr,
}

/// Which protocol carried an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// PCP version 2 (RFC 6887).
    Pcp,
    /// NAT-PMP (RFC 6886), used as a fallback when the server speaks only version 0.
    NatPmp,
}

/// A datagram the driver must send now: `len` bytes at the start of the buffer given to
/// [`super::Engine::poll_transmit`], from `source` to `destination`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The source address the request's Client IP field carries.
    pub source: IpAddr,
    /// Bytes written to the buffer.
    pub len: usize,
}

/// Which kind of exchange a [`Event::GaveUp`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// The first request of a mapping.
    Create,
    /// An [`super::Engine::update`] of a granted mapping.
    Update,
}

/// An error result from a server: a PCP result code, or a NAT-PMP one after fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A non-zero PCP result code (RFC 6887 §7.4).
    Pcp(ResultCode),
    /// A non-zero NAT-PMP result code (RFC 6886 §3.5).
    NatPmp(natpmp::ResultCode),
}

impl ErrorCode {
    /// What the code means, in one line.
    pub fn description(&self) -> &'static str {
        match self {
            ErrorCode::Pcp(code) => code.description(),
            ErrorCode::NatPmp(code) => code.description(),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Pcp(code) => write!(f, "{code} ({})", u8::from(*code)),
            ErrorCode::NatPmp(code) => write!(f, "NAT-PMP {}", code.to_u16()),
        }
    }
}

/// Something the application should know. Events are queued in order; at most
/// [`super::config::MAX_QUEUED_EVENTS`] are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A mapping was granted for the first time (or again after it expired).
    Granted {
        /// The mapping.
        id: MappingId,
        /// The assigned external address and port. After a NAT-PMP fallback the address is
        /// the gateway's external address, or unspecified until the gateway tells it.
        external: SocketAddr,
        /// Granted lifetime in seconds (after the 24 h cap).
        lifetime: u32,
        /// The server's epoch in that response.
        epoch: u32,
        /// The protocol that carried the exchange.
        via: Version,
    },
    /// A renewal succeeded with the same external endpoint.
    Renewed {
        /// The mapping.
        id: MappingId,
        /// The external endpoint (unchanged).
        external: SocketAddr,
        /// Granted lifetime in seconds.
        lifetime: u32,
    },
    /// The external endpoint changed: a renewal got another one, or the server sent an
    /// unsolicited Mapping Update (RFC 6887 §14.2).
    Changed {
        /// The mapping.
        id: MappingId,
        /// The old external endpoint.
        previous: SocketAddr,
        /// The new one.
        external: SocketAddr,
        /// Granted lifetime in seconds.
        lifetime: u32,
    },
    /// The mapping's lifetime ran out with no answer, or the server removed it; the engine
    /// keeps asking for it with the §8.1.1 schedule until it is deleted or forgotten.
    Expired {
        /// The mapping.
        id: MappingId,
    },
    /// The server answered with an error. The engine waits for the error's lifetime before
    /// sending that request again (RFC 6887 §8.3), unless the mapping is deleted or forgotten.
    Failed {
        /// The mapping.
        id: MappingId,
        /// The result code.
        code: ErrorCode,
        /// How long the error is expected to last, in seconds (after defaults and the cap).
        lifetime: u32,
    },
    /// The server answered a PREFER_FAILURE request twice with another external endpoint than
    /// suggested (it ignores PREFER_FAILURE, RFC 6887 §13.2). The engine deletes what the
    /// server made (same nonce) and reports [`Event::Deleted`] when that is done.
    PreferFailureIgnored {
        /// The mapping.
        id: MappingId,
        /// What the server offered instead.
        offered: SocketAddr,
    },
    /// A mapping was answered again after the engine had to re-create it: the server lost its
    /// state (an invalid epoch in a response or an ANNOUNCE, RFC 6887 §8.5, §14.1.3), the
    /// server address failed (ICMP, RFC 7488 §3), or the mapping expired unanswered. Reported
    /// instead of [`Event::Granted`], [`Event::Renewed`] or [`Event::Changed`].
    Restored {
        /// The mapping.
        id: MappingId,
        /// The external endpoint held before the loss (what the re-create suggested).
        previous: SocketAddr,
        /// The external endpoint now.
        external: SocketAddr,
        /// True when the server gave back the same external endpoint.
        same_endpoint: bool,
        /// Granted lifetime in seconds.
        lifetime: u32,
        /// The server's epoch in that response.
        epoch: u32,
    },
    /// The server accepted an [`super::Engine::update`] (new lifetime, description, FILTER
    /// set or PREFER_FAILURE) of a granted mapping; same nonce, same mapping.
    Updated {
        /// The mapping.
        id: MappingId,
        /// The external endpoint (it may differ from before without PREFER_FAILURE).
        external: SocketAddr,
        /// Granted lifetime in seconds.
        lifetime: u32,
    },
    /// A bounded exchange ([`super::GiveUp`]) got no answer in time. A create is forgotten
    /// (a late grant may exist at the server: delete it with the nonce if that matters); an
    /// update is abandoned and the mapping goes on being renewed with its old parameters.
    GaveUp {
        /// The mapping.
        id: MappingId,
        /// Which exchange gave up.
        exchange: Exchange,
        /// Transmissions sent in that exchange.
        transmissions: u32,
    },
    /// The exchange ran out of transmissions (MRC) or time (MRD); the mapping is forgotten.
    TimedOut {
        /// The mapping.
        id: MappingId,
    },
    /// The mapping was deleted at the server (or, for PEER, which cannot be deleted, forgotten).
    Deleted {
        /// The mapping.
        id: MappingId,
    },
    /// The server's epoch shows it lost its state; every mapping there is being re-created
    /// (RFC 6887 §8.5, §14.1.3).
    ServerStateLost {
        /// The server.
        server: ServerId,
        /// True when an ANNOUNCE showed it (the engine then waits 0 to 5 s first).
        announced: bool,
    },
    /// The host's address towards the server changed ([`super::Engine::local_address_changed`]):
    /// every mapping there is being created again from the new address (RFC 6887 §11.5),
    /// each reported as [`Event::Restored`] when answered.
    Renumbered {
        /// The server.
        server: ServerId,
        /// The address requests came from until now.
        previous: IpAddr,
        /// The address they come from from now on.
        local: IpAddr,
    },
    /// Every address of a multi-address server failed; the engine tries again in 15 min
    /// (RFC 7488 §3).
    ServerUnreachable {
        /// The server.
        server: ServerId,
    },
    /// The answer to [`super::Engine::announce`].
    Announced {
        /// The server.
        server: ServerId,
        /// The result code (SUCCESS, or the error, e.g. UNSUPP_VERSION from a NAT-PMP gateway).
        result: ResultCode,
        /// The server's epoch (0 when the answer carried none).
        epoch: u32,
    },
}

impl Event {
    /// The mapping the event is about, if any.
    pub fn mapping(&self) -> Option<MappingId> {
        match *self {
            Event::Granted { id, .. }
            | Event::Renewed { id, .. }
            | Event::Changed { id, .. }
            | Event::Expired { id }
            | Event::Failed { id, .. }
            | Event::PreferFailureIgnored { id, .. }
            | Event::Restored { id, .. }
            | Event::Updated { id, .. }
            | Event::GaveUp { id, .. }
            | Event::TimedOut { id }
            | Event::Deleted { id } => Some(id),
            _ => None,
        }
    }
}
