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

    /// Sends one packet.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet).await
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
