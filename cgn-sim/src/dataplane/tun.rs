//! The TUN adapter: the device the dataplane reads untranslated packets from and writes
//! translated ones to, and the routing that steers traffic through it (set up over netlink with
//! `rtnetlink`, no shelling out).
//!
//! Routing in the CGN's network namespace, with `T` the TUN device:
//!
//! * `PREFIX dev T` in the main table for every pool prefix: packets from the Internet to pool
//!   addresses enter the translator (and so do hairpinned ones, which then leave it translated
//!   back towards the other subscriber);
//! * `ip rule iif INSIDE lookup TABLE` (priority `rule_priority`) with `default dev T` in
//!   `TABLE`: everything subscribers send is translated. Packets for the CGN's own addresses
//!   (PCP on UDP 5351) still reach it, because the `local` table is consulted first; packets
//!   the CGN sends itself (PCP answers, ANNOUNCE) have no input interface and are not caught;
//! * translated packets written to `T` are routed by the main table: towards the outside
//!   interface, or back to the inside for inbound traffic.
//!
//! The device is not persistent: it disappears when the daemon exits, and so do the routes
//! through it. The policy rule is removed by [`Tun::close`] (and a stale one with the same
//! priority and table is replaced at start).

use std::io;
use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::{Handle, RouteMessageBuilder};

/// How to build the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Device name (at most 15 bytes).
    pub name: String,
    /// Device MTU.
    pub mtu: u16,
    /// Pool prefixes routed into the device.
    pub pool: Vec<(Ipv4Addr, u8)>,
    /// Subscriber-facing interfaces whose forwarded traffic goes into the device.
    pub inside_interfaces: Vec<String>,
    /// Routing table for subscriber traffic.
    pub table: u32,
    /// Priority of the `iif` rules.
    pub rule_priority: u32,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: "cgn0".to_string(),
            mtu: 1500,
            pool: Vec::new(),
            inside_interfaces: Vec::new(),
            table: 4444,
            rule_priority: 4444,
        }
    }
}

/// Why the adapter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// Opening or configuring the device failed (usually: not root / no CAP_NET_ADMIN, or no
    /// /dev/net/tun).
    #[error("TUN device {name}: {source}")]
    Device {
        /// Device name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// An interface was not found.
    #[error("interface {0} not found")]
    NoSuchInterface(String),
}

/// The open adapter.
pub struct Tun {
    device: tun_rs::AsyncDevice,
    handle: Handle,
    rules: Vec<netlink_packet_route::rule::RuleMessage>,
    name: String,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> TunError {
    let what = what.into();
    move |source| TunError::Netlink { what, source }
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, TunError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
            Err(TunError::NoSuchInterface(name.to_string()))
        }
        Err(e) => Err(netlink(format!("look up {name}"))(e)),
    }
}

impl Tun {
    /// Creates the device, brings it up and installs the routes and rules described in the
    /// module documentation. Must run inside a tokio runtime.
    pub async fn open(config: &TunConfig) -> Result<Tun, TunError> {
        let device = tun_rs::DeviceBuilder::new()
            .name(config.name.clone())
            .mtu(config.mtu)
            .build_async()
            .map_err(|source| TunError::Device {
                name: config.name.clone(),
                source,
            })?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| TunError::Device {
                name: "netlink".into(),
                source,
            })?;
        tokio::spawn(connection);
        // The translator is IPv4 only: keep the kernel from sending router solicitations and
        // other IPv6 chatter into it. Best effort (IPv6 may be disabled altogether).
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.name),
            "1",
        );
        // ICMP errors the translator originates carry the CGN's own inside or outside
        // address as source; without `accept_local` the kernel drops them as martians when
        // they come back out of the device. No reverse-path check on the device either:
        // translated packets arrive from pool addresses routed through it.
        for (key, value) in [("accept_local", "1"), ("rp_filter", "0")] {
            let path = format!("/proc/sys/net/ipv4/conf/{}/{key}", config.name);
            if let Err(source) = std::fs::write(&path, value) {
                return Err(TunError::Device {
                    name: format!("{} ({path})", config.name),
                    source,
                });
            }
        }
        let index = link_index(&handle, &config.name).await?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("set {} up", config.name)))?;
        for (prefix, len) in &config.pool {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(*prefix, *len)
                .output_interface(index)
                .build();
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(netlink(format!("route {prefix}/{len} dev {}", config.name)))?;
        }
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .table_id(config.table)
            .build();
        handle
            .route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "default dev {} table {}",
                config.name, config.table
            )))?;
        let mut rules = Vec::new();
        for iface in &config.inside_interfaces {
            // Fail early with a clear message if the interface does not exist.
            link_index(&handle, iface).await?;
            let mut add = handle
                .rule()
                .add()
                .v4()
                .input_interface(iface.clone())
                .table_id(config.table)
                // rtnetlink leaves the action unspecified, which the kernel treats as a
                // failed lookup (`ip rule` shows `none`): it must say "go to the table".
                .action(netlink_packet_route::rule::RuleAction::ToTable)
                .priority(config.rule_priority)
                .replace();
            let message = add.message_mut().clone();
            add.execute()
                .await
                .map_err(netlink(format!("rule iif {iface} lookup {}", config.table)))?;
            rules.push(message);
        }
        Ok(Tun {
            device,
            handle,
            rules,
            name: config.name.clone(),
        })
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Receives one packet (an IPv4 or IPv6 datagram without any header in front).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf).await
    }

    /// Waits until a packet can be read (cancel-safe: nothing is consumed).
    pub async fn readable(&self) -> io::Result<()> {
        self.device.readable().await
    }

    /// Receives one packet if one is queued (`WouldBlock` otherwise), for draining a batch
    /// after [`Tun::recv`] woke up.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.try_recv(buf)
    }

    /// Sends one packet.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet).await
    }

    /// Sends one packet without waiting (`WouldBlock` if the device queue is full).
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.try_send(packet)
    }

    /// Removes the policy rules; the device and its routes go when `self` is dropped.
    pub async fn close(self) -> Result<(), TunError> {
        for rule in self.rules.iter().cloned() {
            self.handle
                .rule()
                .del(rule)
                .execute()
                .await
                .map_err(netlink("delete rule"))?;
        }
        Ok(())
    }
}

/// The name of the interface carrying `addr` (the default `--inside-iface`), looked up over
/// netlink. Must run inside a tokio runtime.
pub async fn interface_with_address(addr: Ipv4Addr) -> Result<String, TunError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| TunError::Device {
            name: "netlink".into(),
            source,
        })?;
    let task = tokio::spawn(connection);
    let result = async {
        let mut addrs = handle
            .address()
            .get()
            .set_address_filter(addr.into())
            .execute();
        let index = loop {
            match addrs.try_next().await {
                Ok(Some(m)) => {
                    let carries = m.attributes.iter().any(|a| {
                        matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a)
                            if *a == std::net::IpAddr::V4(addr))
                    });
                    if carries {
                        break m.header.index;
                    }
                }
                Ok(None) => return Err(TunError::NoSuchInterface(format!("with {addr}"))),
                Err(e) => return Err(netlink(format!("list addresses for {addr}"))(e)),
            }
        };
        let mut links = handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(link)) => link
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
                .ok_or_else(|| TunError::NoSuchInterface(format!("index {index}"))),
            Ok(None) => Err(TunError::NoSuchInterface(format!("index {index}"))),
            Err(e) => Err(netlink(format!("look up link {index}"))(e)),
        }
    }
    .await;
    task.abort();
    result
}

/// The fewest prefixes covering exactly `addrs` (the pool addresses), for the routes into
/// the device.
pub fn covering_prefixes(addrs: &[Ipv4Addr]) -> Vec<(Ipv4Addr, u8)> {
    let mut v: Vec<u32> = addrs.iter().map(|a| u32::from(*a)).collect();
    v.sort_unstable();
    v.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        // Length of the run of consecutive addresses from `start`.
        let mut run = 1usize;
        while i + run < v.len() && u64::from(v[i + run]) == u64::from(start) + run as u64 {
            run += 1;
        }
        // Largest aligned block at `start` that fits in the run.
        let mut len = 32u8;
        while len > 0 {
            let size = 1u64 << (32 - (len - 1));
            let aligned = u64::from(start) % size == 0;
            if !aligned || size > run as u64 {
                break;
            }
            len -= 1;
        }
        out.push((Ipv4Addr::from(start), len));
        i += 1usize << (32 - u32::from(len));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_routes_cover_exactly_the_pool_addresses() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let p28: Vec<Ipv4Addr> = (0..16).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
        assert_eq!(covering_prefixes(&p28), vec![(a("198.51.100.0"), 28)]);
        let range: Vec<Ipv4Addr> = (9..=12).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
        assert_eq!(
            covering_prefixes(&range),
            vec![
                (a("198.51.100.9"), 32),
                (a("198.51.100.10"), 31),
                (a("198.51.100.12"), 32)
            ]
        );
        assert_eq!(covering_prefixes(&[]), vec![]);
    }
}
