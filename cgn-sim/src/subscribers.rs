//! Who the server serves, and what each subscriber holds.
//!
//! One part of the [`Server`](crate::server::Server)'s state with its own invariants: the
//! subscriber prefixes and THIRD_PARTY policy fixed at start-up (RFC 6887 §8.2, §13.1,
//! RFC 7843), and per subscriber (realm, address) the paired-pooling anchor (RFC 6888 REQ-2),
//! the number of bindings it holds (quota, RFC 6888 REQ-4) and its creation token bucket. A
//! subscriber has usage exactly while it holds at least one binding; the pool's anchor counts
//! follow that (the caller adjusts them from what [`Subscribers::account`],
//! [`Subscribers::release`] and [`Subscribers::clear_usage`] return).

use std::net::Ipv4Addr;

use pcp_client::wire::ResultCode;

use crate::config::{EngineConfig, ThirdPartyRule};
use crate::fasthash::{FastMap, KeyedState};
use crate::options::OptionPolicy;
use crate::prefix::Ipv4Prefix;

/// Per-subscriber usage: the paired-pooling anchor, the number of external ports held and
/// the creation token bucket.
#[derive(Debug, Clone, Copy)]
struct Usage {
    anchor: u16,
    bindings: u32,
    tokens: u32,
    refilled: u32,
}

/// The limits [`Subscribers::admit`] applies (from [`EngineConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bindings per subscriber.
    pub quota: u32,
    /// New bindings per second per subscriber (0: no limit).
    pub rate: u32,
    /// Token bucket size.
    pub burst: u32,
}

impl Limits {
    /// The limits in `config`.
    pub fn of(config: &EngineConfig) -> Limits {
        Limits {
            quota: config.quota_per_subscriber,
            rate: config.creation_rate,
            burst: config.creation_burst,
        }
    }
}

/// Subscriber prefixes, THIRD_PARTY policy and per-subscriber usage.
#[derive(Debug)]
pub(crate) struct Subscribers {
    prefixes: Vec<Ipv4Prefix>,
    third_party_hosts: Vec<ThirdPartyRule>,
    third_party_ids: Vec<Vec<u8>>,
    usage: FastMap<(u16, Ipv4Addr), Usage>,
}

impl Subscribers {
    /// The policy in `config`, nobody holding anything yet.
    pub fn new(config: &EngineConfig) -> Subscribers {
        Subscribers {
            prefixes: config.subscribers.clone(),
            third_party_hosts: config.third_party_hosts.clone(),
            third_party_ids: config
                .third_party_ids
                .iter()
                .map(|t| t.id.as_bytes().to_vec())
                .collect(),
            usage: FastMap::with_hasher(KeyedState::random()),
        }
    }

    /// True if `ip` is inside the subscriber prefixes.
    pub fn is_subscriber(&self, ip: Ipv4Addr) -> bool {
        self.prefixes.iter().any(|p| p.contains(ip))
    }

    /// True if `ip` may send THIRD_PARTY (RFC 6887 §13.1).
    pub fn is_third_party_host(&self, ip: Ipv4Addr) -> bool {
        self.third_party_hosts.iter().any(|r| r.hosts.contains(ip))
    }

    /// The subscriber prefixes.
    pub fn prefixes(&self) -> &[Ipv4Prefix] {
        &self.prefixes
    }

    /// The option rules' view of the policy.
    pub fn policy(&self, config: &EngineConfig) -> OptionPolicy<'_> {
        OptionPolicy {
            third_party_hosts: &self.third_party_hosts,
            subscribers: &self.prefixes,
            third_party_ids: &self.third_party_ids,
            third_party_id_max_len: config.third_party_id_max_len,
            max_description: config.max_description,
        }
    }

    /// The address index the subscriber is anchored to, if it holds bindings.
    pub fn anchor(&self, realm: u16, subscriber: Ipv4Addr) -> Option<u16> {
        self.usage.get(&(realm, subscriber)).map(|u| u.anchor)
    }

    /// Bindings the subscriber holds (0 for one without usage).
    pub fn held(&self, realm: u16, subscriber: Ipv4Addr) -> u32 {
        self.usage
            .get(&(realm, subscriber))
            .map_or(0, |u| u.bindings)
    }

    /// True if the subscriber holds at least one binding.
    pub fn has_bindings(&self, realm: u16, subscriber: Ipv4Addr) -> bool {
        self.usage.contains_key(&(realm, subscriber))
    }

    /// Checks quota and creation rate for one more binding (refilling the token bucket to
    /// `now_s`). Nothing but the bucket's refill changes.
    pub fn admit(
        &mut self,
        realm: u16,
        subscriber: Ipv4Addr,
        now_s: u32,
        limits: Limits,
    ) -> Result<(), ResultCode> {
        match self.usage.get_mut(&(realm, subscriber)) {
            Some(u) => {
                if u.bindings >= limits.quota {
                    return Err(ResultCode::UserExQuota);
                }
                if limits.rate > 0 {
                    let refill = now_s.saturating_sub(u.refilled).saturating_mul(limits.rate);
                    u.tokens = u.tokens.saturating_add(refill).min(limits.burst);
                    u.refilled = now_s;
                    if u.tokens == 0 {
                        return Err(ResultCode::UserExQuota);
                    }
                }
                Ok(())
            }
            None if limits.quota == 0 => Err(ResultCode::UserExQuota),
            None => Ok(()),
        }
    }

    /// Records one more binding of the subscriber, anchored to `anchor` if it is its first.
    /// Returns true when it is its first (the caller counts the anchor in the pool).
    pub fn account(
        &mut self,
        realm: u16,
        subscriber: Ipv4Addr,
        anchor: u16,
        now_s: u32,
        burst: u32,
    ) -> bool {
        match self.usage.get_mut(&(realm, subscriber)) {
            Some(u) => {
                u.bindings += 1;
                u.tokens = u.tokens.saturating_sub(1);
                false
            }
            None => {
                self.usage.insert(
                    (realm, subscriber),
                    Usage {
                        anchor,
                        bindings: 1,
                        tokens: burst.saturating_sub(1),
                        refilled: now_s,
                    },
                );
                true
            }
        }
    }

    /// One binding fewer. Returns the subscriber's anchor when that was its last binding
    /// (its usage is then gone; the caller releases the anchor and its port block).
    pub fn release(&mut self, realm: u16, subscriber: Ipv4Addr) -> Option<u16> {
        let key = (realm, subscriber);
        let u = self.usage.get_mut(&key)?;
        u.bindings = u.bindings.saturating_sub(1);
        if u.bindings > 0 {
            return None;
        }
        let anchor = u.anchor;
        self.usage.remove(&key);
        Some(anchor)
    }

    /// Forgets every subscriber's usage (state loss, renumbering); returns the anchors they
    /// held, one per subscriber.
    pub fn clear_usage(&mut self) -> Vec<u16> {
        let anchors = self.usage.values().map(|u| u.anchor).collect();
        self.usage.clear();
        anchors
    }
}
