//! Engine configuration: pools, subscriber prefixes, lifetimes, quotas, THIRD_PARTY policy,
//! ANNOUNCE schedule. Deserialised from TOML (`--config FILE`); flags override it.
//!
//! Every default is the RFC's recommended value, cited on the field.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::prefix::{Ipv4Prefix, PrefixError, parse_range};

/// One address pool (`Pool: N` in the mapping table) made of sections (`Section: M`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool id shown in the table.
    pub id: u16,
    /// Sections of the pool; each is a list of ranges (prefix, address or `first-last`).
    pub sections: Vec<SectionConfig>,
}

/// A section of a pool: non-contiguous ranges are allowed (RFC 6888 REQ-3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionConfig {
    /// Section id shown in the table.
    pub id: u8,
    /// Ranges: `198.51.100.0/28`, `198.51.100.9`, `198.51.100.9-198.51.100.12`.
    pub ranges: Vec<String>,
}

/// A THIRD_PARTY_ID the server knows (RFC 7843): requests carrying it are keyed by
/// (THIRD_PARTY address, id), so overlapping inside address spaces stay apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThirdPartyIdConfig {
    /// The identifier, as text (its UTF-8 bytes are compared with the option's data).
    pub id: String,
}

/// Who may send THIRD_PARTY, and for whom (RFC 6887 §13.1: authorized hosts only). Written
/// `HOSTS` (may speak for any subscriber) or `HOSTS=SUBNET`, e.g.
/// `100.64.0.2/32=192.168.0.0/24`, in config files and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThirdPartyRule {
    /// The authorized senders.
    pub hosts: Ipv4Prefix,
    /// The internal addresses they may speak for; `None`: any subscriber.
    pub subnet: Option<Ipv4Prefix>,
}

impl std::str::FromStr for ThirdPartyRule {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.split_once('=') {
            Some((hosts, subnet)) => ThirdPartyRule {
                hosts: hosts.trim().parse()?,
                subnet: Some(subnet.trim().parse()?),
            },
            None => ThirdPartyRule {
                hosts: s.trim().parse()?,
                subnet: None,
            },
        })
    }
}

impl std::fmt::Display for ThirdPartyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.subnet {
            Some(subnet) => write!(f, "{}={subnet}", self.hosts),
            None => write!(f, "{}", self.hosts),
        }
    }
}

impl Serialize for ThirdPartyRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ThirdPartyRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything the sans-IO engine needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Address pools. The first pool is `Pool: 1, Section: 0` when given with `--pool`.
    pub pools: Vec<PoolConfig>,
    /// Prefixes whose hosts are subscribers: requests from elsewhere are ignored silently
    /// (RFC 6887 §8.2 interface check). Default: 100.64.0.0/10 (RFC 6598) and 127.0.0.0/8.
    pub subscribers: Vec<Ipv4Prefix>,
    /// Hosts allowed to send THIRD_PARTY (RFC 6887 §13.1), each `HOSTS` (may speak for any
    /// subscriber) or `HOSTS=SUBNET` (only for addresses in SUBNET), e.g.
    /// `100.64.0.2/32=192.168.0.0/24`. Empty (the default) disables the option: it is
    /// answered UNSUPP_OPTION.
    pub third_party_hosts: Vec<ThirdPartyRule>,
    /// Accept THIRD_PARTY requests arriving on the outside interface (RFC 6887 §8.2 MAY).
    pub third_party_on_outside: bool,
    /// Known THIRD_PARTY_IDs (RFC 7843). Empty: the option is unsupported (UNSUPP_OPTION).
    pub third_party_ids: Vec<ThirdPartyIdConfig>,
    /// Longest THIRD_PARTY_ID accepted, in bytes; longer gives UNSUPP_THIRD_PARTY_ID_LENGTH.
    pub third_party_id_max_len: usize,
    /// Lowest port handed out (default 1).
    pub port_min: u16,
    /// Highest port handed out (default 65535).
    pub port_max: u16,
    /// Ports the NAT itself uses, never mapped (UDP 5350 and 5351 are always excluded,
    /// RFC 6887 §11.3).
    pub reserved_ports: Vec<u16>,
    /// Preserve port parity when allocating (RFC 4787 REQ-4, RECOMMENDED).
    pub preserve_parity: bool,
    /// Minimum granted mapping lifetime, seconds (RFC 6887 §15: 120).
    pub min_lifetime: u32,
    /// Maximum granted mapping lifetime, seconds (RFC 6887 §15: 24 h).
    pub max_lifetime: u32,
    /// Lifetime of short-lifetime errors, seconds (RFC 6887 §7.4: 30).
    pub short_error_lifetime: u32,
    /// Lifetime of long-lifetime errors, seconds (RFC 6887 §7.4: 30 min).
    pub long_error_lifetime: u32,
    /// External ports (mappings) one subscriber may hold (RFC 6888 REQ-4, RFC 6887 §17.2);
    /// beyond it USER_EX_QUOTA.
    pub quota_per_subscriber: u32,
    /// Mappings the whole system may hold; beyond it NO_RESOURCES.
    pub max_mappings: usize,
    /// Mapping creations per second per subscriber (token bucket; 0 = unlimited;
    /// RFC 6888 REQ-4 RECOMMENDED). Over the rate: USER_EX_QUOTA.
    pub creation_rate: u32,
    /// Burst of the creation rate limit.
    pub creation_burst: u32,
    /// Seconds a freed external port is held before reuse (RFC 6888 REQ-8, RFC 6887 §15: 120).
    pub port_hold_secs: u32,
    /// Most ports held at once (RFC 6888 REQ-8 MUST be configurable); the oldest hold is
    /// released early beyond it.
    pub max_held_ports: usize,
    /// FILTERs kept per MAP mapping (RFC 6887 §13.3: at least 1); more gives
    /// EXCESSIVE_REMOTE_PEERS.
    pub max_filters: usize,
    /// Longest DESCRIPTION stored, bytes (RFC 7220 §3: at least 128).
    pub max_description: usize,
    /// Most ports one PORT_SET request maps (RFC 7753 §4.2: as many as possible, never more
    /// than requested).
    pub max_port_set: u16,
    /// Serve MAP (RFC 6887 §11 SHOULD be configurable). Disabled: NOT_AUTHORIZED.
    pub allow_map: bool,
    /// Serve PEER (RFC 6887 §12 SHOULD be configurable). Disabled: NOT_AUTHORIZED.
    pub allow_peer: bool,
    /// Serve NAT-PMP (RFC 6886) on the same port; off: UNSUPP_VERSION.
    pub natpmp: bool,
    /// Unsolicited ANNOUNCE copies after state loss (RFC 6887 §14.1.3: up to 10).
    pub announce_count: u32,
    /// Also multicast ANNOUNCE to 224.0.0.1:5350 (RFC 6887 §14.1.3). Off by default: a CGN is
    /// routed hops away from its clients, and tests must not send multicast off-host.
    pub announce_multicast: bool,
    /// Also unicast ANNOUNCE to port 5350 of each remembered client, besides the port it
    /// sent from.
    pub announce_client_port: bool,
    /// Implicit (outbound) UDP idle timeout, seconds (RFC 4787 REQ-5: ≥ 120, 300 RECOMMENDED).
    pub udp_idle_secs: u32,
    /// Implicit TCP established idle timeout, seconds (RFC 5382 REQ-5: ≥ 7440).
    pub tcp_idle_secs: u32,
    /// Remembered clients kept for unicast ANNOUNCE.
    pub max_remembered_clients: usize,
    /// Port Block Allocation (RFC 7422; RFC 6888 REQ-14: one log line per subscriber, not per
    /// mapping): every subscriber's mappings, PCP and implicit, come from one block of ports
    /// on its address. `None` (the default): ports are drawn from the whole address.
    pub port_blocks: Option<PortBlocks>,
}

/// Port Block Allocation settings (`[port_blocks]` in the TOML file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortBlocks {
    /// Ports per block. Blocks tile `max(port_min, 1024)..=port_max` of each address (the
    /// well-known ports are never in a block, RFC 7422 §2).
    pub size: u16,
    /// How a subscriber gets its block.
    pub mode: BlockMode,
}

/// How subscribers get their port blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockMode {
    /// RFC 7422 deterministic mapping: the block is a function of the subscriber address
    /// alone (its ordinal k in the subscriber prefixes: address k mod N, block k div N), so
    /// nothing needs logging and it survives restarts.
    Deterministic,
    /// A free block on the subscriber's address at its first mapping, given back when its
    /// last mapping goes (each assignment is logged, RFC 7422 §2).
    Dynamic,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pools: Vec::new(),
            subscribers: vec![
                Ipv4Prefix::new(Ipv4Addr::new(100, 64, 0, 0), 10),
                Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 8),
            ],
            third_party_hosts: Vec::new(),
            third_party_on_outside: false,
            third_party_ids: Vec::new(),
            third_party_id_max_len: 64,
            port_min: 1,
            port_max: 65535,
            reserved_ports: Vec::new(),
            preserve_parity: true,
            min_lifetime: 120,
            max_lifetime: 86_400,
            short_error_lifetime: 30,
            long_error_lifetime: 1800,
            quota_per_subscriber: 4096,
            max_mappings: 4_000_000,
            creation_rate: 0,
            creation_burst: 1000,
            port_hold_secs: 120,
            max_held_ports: 1_000_000,
            max_filters: 8,
            max_description: 128,
            max_port_set: 64,
            allow_map: true,
            allow_peer: true,
            natpmp: true,
            announce_count: 10,
            announce_multicast: false,
            announce_client_port: true,
            udp_idle_secs: 300,
            tcp_idle_secs: 7440,
            max_remembered_clients: 65_536,
            port_blocks: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A range or prefix did not parse.
    #[error("bad address range: {0}")]
    Range(#[from] PrefixError),
    /// No pool address at all.
    #[error("no NAT pool configured (give --pool PREFIX)")]
    NoPool,
    /// An address appears twice in the pools.
    #[error("pool address {0} appears twice")]
    DuplicateAddress(std::net::Ipv4Addr),
    /// More than 65535 pool addresses.
    #[error("more than 65535 pool addresses")]
    TooManyAddresses,
    /// Min lifetime above max, or port_min above port_max.
    #[error("{0}")]
    Inconsistent(&'static str),
}

impl EngineConfig {
    /// A configuration with one pool (`Pool: 1, Section: 0`) per given range.
    pub fn with_pools<S: AsRef<str>>(ranges: &[S]) -> EngineConfig {
        let mut config = EngineConfig::default();
        config.set_pool_ranges(ranges);
        config
    }

    /// Replaces the pools by one pool per range (ids 1, 2, …, section 0).
    pub fn set_pool_ranges<S: AsRef<str>>(&mut self, ranges: &[S]) {
        self.pools = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| PoolConfig {
                id: (i + 1) as u16,
                sections: vec![SectionConfig {
                    id: 0,
                    ranges: vec![r.as_ref().to_string()],
                }],
            })
            .collect();
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for p in &self.pools {
            for s in &p.sections {
                for r in &s.ranges {
                    parse_range(r)?;
                }
            }
        }
        if self.min_lifetime > self.max_lifetime {
            return Err(ConfigError::Inconsistent("min_lifetime > max_lifetime"));
        }
        if self.port_min > self.port_max || self.port_min == 0 {
            return Err(ConfigError::Inconsistent(
                "port_min must be ≥ 1 and ≤ port_max",
            ));
        }
        if let Some(b) = self.port_blocks {
            let lo = u32::from(self.port_min.max(1024));
            let span = (u32::from(self.port_max) + 1).saturating_sub(lo);
            if b.size == 0 || u32::from(b.size) > span {
                return Err(ConfigError::Inconsistent(
                    "port_blocks.size must be ≥ 1 and fit in max(port_min, 1024)..=port_max",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Port Block Allocation as a pool option (RFC 7422): `[port_blocks]` in the TOML file;
    // a block that cannot fit in 1024..=port_max is refused.
    #[test]
    fn port_blocks_parse_from_toml_and_are_checked() {
        let c: EngineConfig = toml::from_str(
            "[port_blocks]\nsize = 64\nmode = \"deterministic\"\n[[pools]]\nid = 1\n[[pools.sections]]\nid = 0\nranges = [\"198.51.100.0/30\"]\n",
        )
        .expect("parses");
        assert_eq!(
            c.port_blocks,
            Some(PortBlocks {
                size: 64,
                mode: BlockMode::Deterministic
            })
        );
        assert_eq!(c.validate(), Ok(()));
        let text = toml::to_string(&c).expect("serializes");
        assert!(text.contains("[port_blocks]"), "{text}");
        for size in [0u16, 65_000] {
            let bad = EngineConfig {
                port_blocks: Some(PortBlocks {
                    size,
                    mode: BlockMode::Dynamic,
                }),
                ..c.clone()
            };
            assert!(bad.validate().is_err(), "size {size}");
        }
    }

    // The TOML file of `--config`: pools with ids and sections, as in the vendor table.
    #[test]
    fn toml_config_with_pools_and_sections_parses() {
        let text = r#"
            quota_per_subscriber = 32
            min_lifetime = 300
            third_party_hosts = ["100.64.0.2/32"]

            [[pools]]
            id = 30
            [[pools.sections]]
            id = 1
            ranges = ["198.51.100.0/29", "198.51.100.9-198.51.100.12"]
        "#;
        let c: EngineConfig = toml::from_str(text).expect("parses");
        assert_eq!(c.quota_per_subscriber, 32);
        assert_eq!(c.pools[0].id, 30);
        assert_eq!(c.pools[0].sections[0].id, 1);
        assert_eq!(c.max_lifetime, 86_400, "defaults fill the rest");
        assert_eq!(c.validate(), Ok(()));
        assert!(toml::from_str::<EngineConfig>("no_such_key = 1").is_err());
        let round: EngineConfig =
            toml::from_str(&toml::to_string(&c).expect("emits")).expect("round trip");
        assert_eq!(round, c);
    }

    // Typed fields: a bad prefix or THIRD_PARTY rule is refused when the file is read (with
    // toml's line and column), not later when the server starts.
    #[test]
    fn subscribers_and_third_party_hosts_are_prefixes_checked_when_the_file_is_read() {
        let c: EngineConfig = toml::from_str(
            "subscribers = [\"100.64.0.0/24\"]\nthird_party_hosts = [\"100.64.0.2/32=192.168.0.0/24\", \"10.0.0.1\"]\n",
        )
        .expect("parses");
        assert_eq!(
            c.subscribers,
            vec![Ipv4Prefix::new(Ipv4Addr::new(100, 64, 0, 0), 24)]
        );
        assert_eq!(
            c.third_party_hosts[0],
            ThirdPartyRule {
                hosts: Ipv4Prefix::new(Ipv4Addr::new(100, 64, 0, 2), 32),
                subnet: Some(Ipv4Prefix::new(Ipv4Addr::new(192, 168, 0, 0), 24)),
            }
        );
        assert_eq!(c.third_party_hosts[1].subnet, None);
        assert_eq!(
            c.third_party_hosts[0].to_string(),
            "100.64.0.2/32=192.168.0.0/24"
        );
        let err = toml::from_str::<EngineConfig>("subscribers = [\"100.64.0.0/33\"]")
            .expect_err("length over 32");
        assert!(err.to_string().contains("prefix length"), "{err}");
        assert!(toml::from_str::<EngineConfig>("third_party_hosts = [\"x=10.0.0.0/8\"]").is_err());
        let round: EngineConfig =
            toml::from_str(&toml::to_string(&c).expect("emits")).expect("round trip");
        assert_eq!(round, c);
    }
}
