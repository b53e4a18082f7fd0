//! The routing that steers traffic through the TUN device (see the parent module's docs):
//! pool routes, the policy rule's removal, renumbering, and finding interfaces and covering
//! prefixes, all over netlink.

use super::*;

pub(super) fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> TunError {
    let what = what.into();
    move |source| TunError::Netlink { what, source }
}

pub(super) async fn link_index(handle: &Handle, name: &str) -> Result<u32, TunError> {
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
    /// Routes `pool` into the device instead of the prefixes routed so far (`ctl pool`
    /// renumbering): the new routes are added first, then the old ones no longer wanted are
    /// removed, so pool addresses in both never lose their route.
    pub async fn set_pool(&mut self, pool: &[(Ipv4Addr, u8)]) -> Result<(), TunError> {
        for (prefix, len) in pool {
            add_pool_route(&self.handle, self.index, &self.name, *prefix, *len).await?;
        }
        for (prefix, len) in self.pool.iter().filter(|p| !pool.contains(p)) {
            self.handle
                .route()
                .del(pool_route(self.index, *prefix, *len))
                .execute()
                .await
                .map_err(netlink(format!(
                    "delete route {prefix}/{len} dev {}",
                    self.name
                )))?;
        }
        self.pool = pool.to_vec();
        Ok(())
    }

    /// Pool prefixes routed into the device.
    pub fn pool(&self) -> &[(Ipv4Addr, u8)] {
        &self.pool
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

/// The route `PREFIX/LEN dev T` in the main table.
fn pool_route(index: u32, prefix: Ipv4Addr, len: u8) -> netlink_packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(prefix, len)
        .output_interface(index)
        .build()
}

/// Adds [`pool_route`] (replacing a route to the same prefix).
pub(super) async fn add_pool_route(
    handle: &Handle,
    index: u32,
    name: &str,
    prefix: Ipv4Addr,
    len: u8,
) -> Result<(), TunError> {
    handle
        .route()
        .add(pool_route(index, prefix, len))
        .replace()
        .execute()
        .await
        .map_err(netlink(format!("route {prefix}/{len} dev {name}")))
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
