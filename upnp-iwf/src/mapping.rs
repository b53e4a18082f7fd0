//! The port-mapping layer behind the IGD: the [`PortMappingBackend`] trait that the RFC 6970
//! interworking function implements, the pure [`MappingTable`] with UPnP lease and conflict
//! rules, and [`MemoryBackend`], the local in-memory implementation used with `--upstream none`.
//!
//! The SOAP layer ([`crate::actions`]) validates arguments and applies policy; it then asks the
//! backend to create, refresh or delete mappings. The backend owns the table, so an upstream
//! implementation can keep its own per-mapping state (PCP nonce, assigned port, renewal
//! timers) next to each entry. Time is always passed in (`now: Instant`), never read, so
//! lease expiry is testable with a fake clock.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Transport protocol of a mapping (`PortMappingProtocol`). UPnP IGD knows only TCP and UDP:
/// the workspace's one closed type for them; parsing is case-insensitive and output is always
/// upper case (igd-next rejects anything else).
pub use pcp_client::transport::Transport as Protocol;

/// What identifies a mapping: `NewRemoteHost` + `NewExternalPort` + `NewProtocol`.
/// Ordered by port first so listings come out sorted by external port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingKey {
    /// External port (1..=65535 in a stored mapping).
    pub external_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Remote host the mapping is restricted to; `None` is the wildcard (empty string or `*`).
    pub remote_host: Option<Ipv4Addr>,
}

impl MappingKey {
    /// Whether two keys could match the same inbound packet (same port and protocol, and
    /// remote hosts equal or one of them a wildcard).
    pub fn overlaps(&self, other: &MappingKey) -> bool {
        self.external_port == other.external_port
            && self.protocol == other.protocol
            && match (self.remote_host, other.remote_host) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// How long a mapping lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// No expiry (IGD:1 `NewLeaseDuration` 0).
    Permanent,
    /// Expires at this instant.
    Until(Instant),
}

impl Lease {
    /// A lease of `secs` seconds from `now`; 0 means [`Lease::Permanent`].
    pub fn from_secs(now: Instant, secs: u32) -> Lease {
        if secs == 0 {
            Lease::Permanent
        } else {
            Lease::Until(now + Duration::from_secs(u64::from(secs)))
        }
    }

    /// Whole seconds left (rounded up, at least 1 while alive); 0 for a permanent lease,
    /// as `NewLeaseDuration` reports it.
    pub fn remaining_secs(&self, now: Instant) -> u32 {
        match self {
            Lease::Permanent => 0,
            Lease::Until(end) => {
                let left = end.saturating_duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
            }
        }
    }

    /// Whether the lease has run out at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        matches!(self, Lease::Until(end) if *end <= now)
    }
}

/// One port mapping as the IGD reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// Remote host, external port, protocol.
    pub key: MappingKey,
    /// LAN host receiving the traffic.
    pub internal_client: Ipv4Addr,
    /// Port on the LAN host.
    pub internal_port: u16,
    /// `NewEnabled`.
    pub enabled: bool,
    /// `NewPortMappingDescription` (already length-checked by the SOAP layer).
    pub description: String,
    /// When it ends.
    pub lease: Lease,
    /// Control point (TCP peer address) that created or last refreshed it.
    pub owner: Ipv4Addr,
}

/// How the external port is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChoice {
    /// Exactly `key.external_port` (`AddPortMapping`; PCP PREFER_FAILURE).
    Exact,
    /// `key.external_port` if free, else any port in these ranges (`AddAnyPortMapping`; the
    /// ranges come from the permission rules). An external port of 0 means "any".
    Any(Vec<RangeInclusive<u16>>),
}

/// A validated, authorized request to create or refresh a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    /// The mapping wanted (its `key.external_port` is the suggestion for [`PortChoice::Any`]).
    pub mapping: PortMapping,
    /// Exact or any port.
    pub choice: PortChoice,
}

/// Why a backend refused or failed an operation. The SOAP layer maps each to the UPnP error
/// code of the IGD version in use (RFC 6970 §5.x).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// The external port/protocol is held by another internal client (718; PCP
    /// CANNOT_PROVIDE_EXTERNAL).
    #[error("external port already mapped to another internal client")]
    Conflict,
    /// No external port is free, or the table is full (IGD:2 728, IGD:1 501; PCP
    /// NO_RESOURCES / USER_EX_QUOTA).
    #[error("no port mappings available")]
    NoPortsAvailable,
    /// The upstream refused (IGD:2 606, IGD:1 718; PCP NOT_AUTHORIZED).
    #[error("not authorized upstream")]
    NotAuthorized,
    /// The port is used by the router itself or a static rule (IGD:2 729).
    #[error("port used by another mechanism")]
    ConflictWithOtherMechanisms,
    /// No such mapping (714).
    #[error("no such mapping")]
    NotFound,
    /// `NewEnabled` = 0 where the backend can only make enabled mappings: an RFC 6970
    /// interworking function cannot hold a disabled mapping upstream (PCP has no such
    /// state), so it refuses rather than stores one that silently does nothing (402).
    #[error("PortMappingEnabled must be 1 (a PCP mapping cannot be disabled)")]
    DisabledNotSupported,
    /// Any other failure, e.g. the upstream did not answer (501).
    #[error("upstream failure: {0}")]
    Upstream(String),
}

/// State of the WAN side as the IGD reports it (`GetStatusInfo`, `GetExternalIPAddress`,
/// evented `ConnectionStatus`/`ExternalIPAddress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WanStatus {
    /// Public IPv4 address if known (reported as an empty string otherwise, never 0.0.0.0).
    pub external_address: Option<Ipv4Addr>,
    /// Whether mappings can be made (`Connected`), else `Disconnected`.
    pub connected: bool,
    /// Time since the connection came up.
    pub uptime: Duration,
}

/// The port-mapping service behind the IGD. `upnp-iwf --upstream none` uses [`MemoryBackend`];
/// the RFC 6970 interworking function implements it with PCP MAP requests to the CGN.
///
/// Contract:
/// * `add` creates a mapping, or refreshes it when a mapping with the same key and the same
///   internal client exists (that is how clients renew leases; never a conflict). It returns
///   the mapping as stored — for [`PortChoice::Any`] with the external port really obtained.
///   A mapping whose key overlaps one of another internal client is [`MappingError::Conflict`].
/// * `delete` removes exactly `key` ([`MappingError::NotFound`] if absent) and returns it.
/// * `get`, `list`, `count` answer from the local table without upstream traffic, never
///   listing expired leases.
/// * `expire` drops every mapping whose lease ended at `now` and returns them; the daemon
///   calls it periodically.
/// * `update_id` changes whenever the table changes (IGD:2 `SystemUpdateID`).
pub trait PortMappingBackend: Send + Sync + 'static {
    /// Current WAN state.
    fn wan_status(&self, now: Instant) -> WanStatus;
    /// ExternalIPAddress as one control point sees it (RFC 6970 §4.1 keeps it per CP); by
    /// default the WAN status's address.
    fn external_address_for(&self, now: Instant, cp: Ipv4Addr) -> Option<Ipv4Addr> {
        let _ = cp;
        self.wan_status(now).external_address
    }
    /// Health, mappings and recent events for the status page, `/status.json` and
    /// `upnp-iwf ctl` (never secrets such as PCP nonces). By default: local mappings only.
    fn status(&self, now: Instant) -> crate::status::Status {
        let wan = self.wan_status(now);
        crate::status::Status {
            schema: crate::status::SCHEMA,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: wan.uptime.as_secs(),
            health: crate::status::Health {
                upstream: "none".into(),
                pcp_server: None,
                pcp_answering: false,
                pcp_epoch: None,
                external_address: wan.external_address,
                nat1_backend: "none".into(),
                nat1_state: "ok".into(),
                state_file_error: None,
            },
            mappings: self
                .list(now)
                .iter()
                .map(|m| crate::status::MappingStatus {
                    protocol: m.key.protocol.as_str().to_owned(),
                    external_port: m.key.external_port,
                    remote_host: m.key.remote_host,
                    lan_host: m.internal_client,
                    internal_port: m.internal_port,
                    description: m.description.clone(),
                    nat1_port: None,
                    external: wan
                        .external_address
                        .map(|a| std::net::SocketAddrV4::new(a, m.key.external_port)),
                    phase: "local".into(),
                    lease_left_s: match m.lease {
                        Lease::Permanent => None,
                        l => Some(u64::from(l.remaining_secs(now))),
                    },
                    pcp_lifetime_left_s: None,
                    last_pcp_result: None,
                    restores: 0,
                })
                .collect(),
            events: Vec::new(),
        }
    }
    /// The operator's `renew-all`: refresh every mapping upstream now; the number started.
    /// Nothing to do by default.
    fn renew_all(&self, now: Instant) -> usize {
        let _ = now;
        0
    }
    /// The upstream's OpenMetrics families (without `# EOF`). Empty by default.
    fn upstream_metrics(&self, now: Instant) -> String {
        let _ = now;
        String::new()
    }
    /// Creates or refreshes a mapping.
    fn add(
        &self,
        now: Instant,
        request: AddRequest,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send;
    /// Deletes a mapping.
    fn delete(
        &self,
        now: Instant,
        key: MappingKey,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send;
    /// The live mapping with exactly this key.
    fn get(&self, now: Instant, key: &MappingKey) -> Option<PortMapping>;
    /// GetSpecificPortMappingEntry for a key not in the table: an upstream that can, asks
    /// (RFC 6970 §5.7 probe). The answer is always an error (714 or the upstream's).
    fn probe_specific(
        &self,
        now: Instant,
        key: MappingKey,
    ) -> impl Future<Output = MappingError> + Send {
        let _ = (now, key);
        std::future::ready(MappingError::NotFound)
    }
    /// GetExternalIPAddress while no address is known: an upstream that can, learns it
    /// (RFC 6970 §4.2 short mapping). Default: nothing to learn.
    fn probe_external(&self, now: Instant) -> impl Future<Output = Option<Ipv4Addr>> + Send {
        let _ = now;
        std::future::ready(None)
    }
    /// Every live mapping, in a stable order (by external port, protocol, remote host).
    fn list(&self, now: Instant) -> Vec<PortMapping>;
    /// Number of live mappings.
    fn count(&self, now: Instant) -> usize {
        self.list(now).len()
    }
    /// Removes and returns the mappings whose lease has ended.
    fn expire(&self, now: Instant) -> Vec<PortMapping>;
    /// Counter bumped on every table change.
    fn update_id(&self) -> u32;
}

/// The local mapping table with the IGD's overwrite/conflict and lease rules; pure data,
/// reused by every backend.
#[derive(Debug, Clone, Default)]
pub struct MappingTable {
    entries: BTreeMap<MappingKey, PortMapping>,
    capacity: Option<usize>,
    update_id: u32,
}

impl MappingTable {
    /// An empty table holding at most `capacity` mappings (`None`: unbounded).
    pub fn new(capacity: Option<usize>) -> MappingTable {
        MappingTable {
            entries: BTreeMap::new(),
            capacity,
            update_id: 1,
        }
    }

    fn bump(&mut self) {
        self.update_id = self.update_id.wrapping_add(1).max(1);
    }

    /// `SystemUpdateID`-style change counter (starts at 1, never 0).
    pub fn update_id(&self) -> u32 {
        self.update_id
    }

    /// Whether `key` could be given to `client`: `Ok(true)` if it refreshes an existing
    /// mapping of that client, `Ok(false)` if it is free, `Err(Conflict)` otherwise.
    pub fn check(&self, key: &MappingKey, client: Ipv4Addr) -> Result<bool, MappingError> {
        let mut refresh = false;
        for (k, m) in self.entries.range(range_for_port(key.external_port)) {
            if !k.overlaps(key) {
                continue;
            }
            if k == key && m.internal_client == client {
                refresh = true;
            } else {
                return Err(MappingError::Conflict);
            }
        }
        Ok(refresh)
    }

    /// Inserts or refreshes `request.mapping` per the rules of [`PortMappingBackend::add`],
    /// choosing a free port for [`PortChoice::Any`]. Expired entries are dropped first.
    pub fn add(&mut self, now: Instant, request: AddRequest) -> Result<PortMapping, MappingError> {
        self.expire(now);
        let AddRequest {
            mut mapping,
            choice,
        } = request;
        let client = mapping.internal_client;
        let first = match choice {
            PortChoice::Exact => {
                if mapping.key.external_port == 0 {
                    return Err(MappingError::NoPortsAvailable);
                }
                self.check(&mapping.key, client)
            }
            PortChoice::Any(ranges) => {
                let wanted = mapping.key;
                let suggested_ok = wanted.external_port != 0
                    && ranges.iter().any(|r| r.contains(&wanted.external_port));
                match suggested_ok.then(|| self.check(&wanted, client)) {
                    Some(Ok(refresh)) => Ok(refresh),
                    _ => {
                        let port = self
                            .free_port(&wanted, client, &ranges)
                            .ok_or(MappingError::NoPortsAvailable)?;
                        mapping.key.external_port = port;
                        Ok(false)
                    }
                }
            }
        };
        let refresh = first?;
        if !refresh && self.capacity.is_some_and(|c| self.entries.len() >= c) {
            return Err(MappingError::NoPortsAvailable);
        }
        self.entries.insert(mapping.key, mapping.clone());
        self.bump();
        Ok(mapping)
    }

    fn free_port(
        &self,
        wanted: &MappingKey,
        client: Ipv4Addr,
        ranges: &[RangeInclusive<u16>],
    ) -> Option<u16> {
        // Search upwards from the suggestion, then wrap around, within the permitted ranges.
        let start = wanted.external_port.max(1);
        let candidates = (start..=u16::MAX).chain(1..start);
        candidates
            .filter(|p| ranges.iter().any(|r| r.contains(p)))
            .find(|&p| {
                let key = MappingKey {
                    external_port: p,
                    ..*wanted
                };
                matches!(self.check(&key, client), Ok(false))
            })
    }

    /// Removes exactly `key`.
    pub fn delete(&mut self, now: Instant, key: &MappingKey) -> Result<PortMapping, MappingError> {
        self.expire(now);
        let removed = self.entries.remove(key).ok_or(MappingError::NotFound)?;
        self.bump();
        Ok(removed)
    }

    /// The live mapping with exactly `key`.
    pub fn get(&self, now: Instant, key: &MappingKey) -> Option<PortMapping> {
        self.entries
            .get(key)
            .filter(|m| !m.lease.expired(now))
            .cloned()
    }

    /// Every live mapping in key order.
    pub fn list(&self, now: Instant) -> Vec<PortMapping> {
        self.entries
            .values()
            .filter(|m| !m.lease.expired(now))
            .cloned()
            .collect()
    }

    /// Number of live mappings.
    pub fn count(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|m| !m.lease.expired(now))
            .count()
    }

    /// Drops and returns expired mappings.
    pub fn expire(&mut self, now: Instant) -> Vec<PortMapping> {
        let dead: Vec<MappingKey> = self
            .entries
            .iter()
            .filter(|(_, m)| m.lease.expired(now))
            .map(|(k, _)| *k)
            .collect();
        let removed: Vec<PortMapping> =
            dead.iter().filter_map(|k| self.entries.remove(k)).collect();
        if !removed.is_empty() {
            self.bump();
        }
        removed
    }

    /// Earliest lease end, for the daemon's expiry timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|m| match m.lease {
                Lease::Until(t) => Some(t),
                Lease::Permanent => None,
            })
            .min()
    }
}

fn range_for_port(port: u16) -> RangeInclusive<MappingKey> {
    let lo = MappingKey {
        external_port: port,
        protocol: Protocol::Tcp,
        remote_host: None,
    };
    let hi = MappingKey {
        external_port: port,
        protocol: Protocol::Udp,
        remote_host: Some(Ipv4Addr::BROADCAST),
    };
    lo..=hi
}

/// Local mappings only (`--upstream none`): a [`MappingTable`] behind a mutex, with a fixed
/// or settable external address. Leases are honoured: expired mappings disappear from every
/// answer and are removed by [`PortMappingBackend::expire`].
#[derive(Debug)]
pub struct MemoryBackend {
    table: Mutex<MappingTable>,
    wan: Mutex<(Option<Ipv4Addr>, Instant)>,
}

impl MemoryBackend {
    /// A backend reporting `external_address` (connected when `Some`), holding at most
    /// `capacity` mappings, up since `now`.
    pub fn new(now: Instant, external_address: Option<Ipv4Addr>, capacity: Option<usize>) -> Self {
        MemoryBackend {
            table: Mutex::new(MappingTable::new(capacity)),
            wan: Mutex::new((external_address, now)),
        }
    }

    fn table(&self) -> MutexGuard<'_, MappingTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the reported external address (e.g. after a WAN address change); evented to
    /// GENA subscribers by the daemon.
    pub fn set_external_address(&self, now: Instant, address: Option<Ipv4Addr>) {
        let mut wan = self.wan.lock().unwrap_or_else(PoisonError::into_inner);
        if wan.0 != address {
            *wan = (address, now);
        }
    }

    /// Earliest lease end.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.table().next_expiry()
    }
}

impl PortMappingBackend for MemoryBackend {
    fn wan_status(&self, now: Instant) -> WanStatus {
        let wan = *self.wan.lock().unwrap_or_else(PoisonError::into_inner);
        WanStatus {
            external_address: wan.0,
            connected: wan.0.is_some(),
            uptime: now.saturating_duration_since(wan.1),
        }
    }

    fn add(
        &self,
        now: Instant,
        request: AddRequest,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send {
        let result = self.table().add(now, request);
        std::future::ready(result)
    }

    fn delete(
        &self,
        now: Instant,
        key: MappingKey,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send {
        let result = self.table().delete(now, &key);
        std::future::ready(result)
    }

    fn get(&self, now: Instant, key: &MappingKey) -> Option<PortMapping> {
        self.table().get(now, key)
    }

    fn list(&self, now: Instant) -> Vec<PortMapping> {
        self.table().list(now)
    }

    fn count(&self, now: Instant) -> usize {
        self.table().count(now)
    }

    fn expire(&self, now: Instant) -> Vec<PortMapping> {
        self.table().expire(now)
    }

    fn update_id(&self) -> u32 {
        self.table().update_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

    fn mapping(port: u16, client: Ipv4Addr, lease: Lease) -> PortMapping {
        PortMapping {
            key: MappingKey {
                external_port: port,
                protocol: Protocol::Udp,
                remote_host: None,
            },
            internal_client: client,
            internal_port: port,
            enabled: true,
            description: "t".into(),
            lease,
            owner: client,
        }
    }

    fn exact(m: PortMapping) -> AddRequest {
        AddRequest {
            mapping: m,
            choice: PortChoice::Exact,
        }
    }

    #[test]
    fn protocol_parses_any_case_and_prints_upper_case() {
        assert_eq!(Protocol::parse(" tcp "), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("Udp"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("UDPLITE"), None);
        assert_eq!(Protocol::Udp.as_str(), "UDP");
    }

    // upnp-igd.md §3.5: re-adding an identical mapping from the same host refreshes it.
    #[test]
    fn same_client_refresh_is_not_a_conflict_other_client_is() {
        let now = Instant::now();
        let mut t = MappingTable::new(None);
        t.add(now, exact(mapping(5000, A, Lease::Permanent)))
            .expect("first add");
        let id = t.update_id();
        let refreshed = t
            .add(now, exact(mapping(5000, A, Lease::from_secs(now, 60))))
            .expect("refresh");
        assert_eq!(refreshed.lease.remaining_secs(now), 60);
        assert_eq!(t.count(now), 1);
        assert_ne!(t.update_id(), id);
        assert_eq!(
            t.add(now, exact(mapping(5000, B, Lease::Permanent))),
            Err(MappingError::Conflict)
        );
    }

    #[test]
    fn wildcard_remote_host_overlaps_specific_ones() {
        let now = Instant::now();
        let mut t = MappingTable::new(None);
        let mut m = mapping(6000, A, Lease::Permanent);
        m.key.remote_host = Some(Ipv4Addr::new(203, 0, 113, 5));
        t.add(now, exact(m)).expect("specific");
        let mut other = mapping(6000, B, Lease::Permanent);
        other.key.remote_host = Some(Ipv4Addr::new(203, 0, 113, 6));
        t.add(now, exact(other))
            .expect("another specific host does not overlap");
        assert_eq!(
            t.add(now, exact(mapping(6000, B, Lease::Permanent))),
            Err(MappingError::Conflict)
        );
    }

    #[test]
    fn leases_expire_and_vanish_from_answers() {
        let now = Instant::now();
        let backend = MemoryBackend::new(now, None, None);
        let m = mapping(7000, A, Lease::from_secs(now, 10));
        backend.table().add(now, exact(m.clone())).expect("add");
        assert_eq!(backend.count(now + Duration::from_secs(9)), 1);
        assert_eq!(backend.get(now + Duration::from_secs(10), &m.key), None);
        assert_eq!(backend.list(now + Duration::from_secs(11)), vec![]);
        assert_eq!(backend.expire(now + Duration::from_secs(11)), vec![m]);
        assert_eq!(backend.next_expiry(), None);
    }

    #[test]
    fn any_port_takes_the_suggestion_or_the_next_free_permitted_port() {
        let now = Instant::now();
        let mut t = MappingTable::new(None);
        t.add(now, exact(mapping(5000, B, Lease::Permanent)))
            .expect("b");
        let req = AddRequest {
            mapping: mapping(5000, A, Lease::Permanent),
            choice: PortChoice::Any(vec![1024..=65535]),
        };
        assert_eq!(t.add(now, req).expect("any").key.external_port, 5001);
        let req = AddRequest {
            mapping: mapping(0, A, Lease::Permanent),
            choice: PortChoice::Any(vec![2000..=2000]),
        };
        assert_eq!(
            t.add(now, req.clone()).expect("any").key.external_port,
            2000
        );
        let mut req2 = req;
        req2.mapping.internal_client = B;
        assert_eq!(t.add(now, req2), Err(MappingError::NoPortsAvailable));
    }

    #[test]
    fn capacity_limits_new_mappings_but_not_refreshes() {
        let now = Instant::now();
        let mut t = MappingTable::new(Some(1));
        t.add(now, exact(mapping(1, A, Lease::Permanent)))
            .expect("first");
        t.add(now, exact(mapping(1, A, Lease::Permanent)))
            .expect("refresh");
        assert_eq!(
            t.add(now, exact(mapping(2, A, Lease::Permanent))),
            Err(MappingError::NoPortsAvailable)
        );
    }

    #[test]
    fn remaining_lease_rounds_up_and_permanent_is_zero() {
        let now = Instant::now();
        assert_eq!(Lease::Permanent.remaining_secs(now), 0);
        let l = Lease::Until(now + Duration::from_millis(1500));
        assert_eq!(l.remaining_secs(now), 2);
        assert!(l.expired(now + Duration::from_secs(2)));
    }
}
