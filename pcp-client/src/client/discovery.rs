//! Default-gateway discovery (RFC 6887 §8.1: without a configured server, the PCP server is
//! the default router of each family). Linux: `/proc/net/route` and `/proc/net/ipv6_route`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use crate::wire::SERVER_PORT;

/// The default gateways of this host, IPv4 first, as PCP server addresses (port 5351). Empty
/// when there is none or the tables cannot be read (non-Linux systems).
pub fn discover_gateways() -> Vec<SocketAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        out.extend(
            parse_ipv4_routes(&text)
                .into_iter()
                .map(|gw| SocketAddr::new(IpAddr::V4(gw), SERVER_PORT)),
        );
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for (gw, iface) in parse_ipv6_routes(&text) {
            let scope = if gw.is_unicast_link_local() {
                interface_index(&iface).unwrap_or(0)
            } else {
                0
            };
            out.push(SocketAddr::V6(SocketAddrV6::new(gw, SERVER_PORT, 0, scope)));
        }
    }
    out.dedup();
    out
}

/// Default routes (destination 0, mask 0, gateway set) in `/proc/net/route` format; the
/// addresses are little-endian hex.
pub fn parse_ipv4_routes(text: &str) -> Vec<Ipv4Addr> {
    parse_ipv4_default_routes(text)
        .into_iter()
        .map(|(gw, _)| gw)
        .collect()
}

/// [`parse_ipv4_routes`] with the interface of each default route (e.g. to find the PCP
/// server of one WAN interface).
pub fn parse_ipv4_default_routes(text: &str) -> Vec<(Ipv4Addr, String)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gw, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
            if *dest != "00000000" || *mask != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(gw, 16).ok()?;
            (gw != 0).then(|| (Ipv4Addr::from(gw.swap_bytes()), (*iface).to_owned()))
        })
        .collect()
}

/// The index of interface `name`, from sysfs (no `unsafe` FFI needed).
pub(crate) fn interface_index(name: &str) -> std::io::Result<u32> {
    use std::io::{Error, ErrorKind};
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    text.trim().parse().map_err(|_| {
        Error::new(
            ErrorKind::InvalidData,
            format!("interface {name}: unreadable ifindex {text:?}"),
        )
    })
}

/// Default routes (`::/0` with a next hop) in `/proc/net/ipv6_route` format, with the
/// interface name.
pub fn parse_ipv6_routes(text: &str) -> Vec<(Ipv6Addr, String)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, plen, hop, iface) = (f.first()?, f.get(1)?, f.get(4)?, f.get(9)?);
            if dest.chars().any(|c| c != '0') || *plen != "00" {
                return None;
            }
            let hop = u128::from_str_radix(hop, 16).ok()?;
            (hop != 0).then(|| (Ipv6Addr::from(hop), (*iface).to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6887 §8.1: without a configured server, the default router of each family.
    #[test]
    fn default_routes_are_read_from_proc_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_ipv4_routes(v4), vec![Ipv4Addr::new(192, 168, 0, 1)]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(
            parse_ipv6_routes(v6),
            vec![("fe80::1".parse().expect("literal"), "eth0".to_string())]
        );
        assert!(parse_ipv4_routes("garbage\nx y z").is_empty());
        assert!(parse_ipv6_routes("garbage").is_empty());
    }
}
