//! Following the router's DHCP server (RFC 6970 §5.10): when an internal address's lease
//! expires, is released, or passes to another device, every mapping bound to that address
//! goes, one PCP delete each.
//!
//! The source is the lease file of dnsmasq (OpenWrt's default DHCPv4 server keeps it in
//! `/tmp/dhcp.leases`, Debian's in `/var/lib/misc/dnsmasq.leases`), one line per lease:
//!
//! ```text
//! 1767312000 aa:bb:cc:dd:ee:01 192.168.0.10 laptop 01:aa:bb:cc:dd:ee:01
//! 0 aa:bb:cc:dd:ee:02 192.168.0.11 * *
//! duid 00:01:00:01:2c:4d:7e:11:aa:bb:cc:dd:ee:ff
//! 1767312000 1234 fd00::10 laptop 00:01:00:01:…
//! ```
//!
//! expiry (Unix seconds, 0 = infinite), hardware address, IP address, host name, client id.
//! IPv6 leases and the `duid` line are read and ignored (the IGD maps IPv4 only).
//!
//! [`parse_dnsmasq`] is the parser (a bad file is refused whole, with the line and the reason;
//! the previous view stays). [`LeaseTracker`] is sans-IO: given each new view and the wall
//! clock, it says which addresses lost their lease. Addresses never seen in the file (static
//! hosts) are never released: only a lease the file showed can end.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A lease file larger than this is refused (a home router has a few hundred leases; dnsmasq's
/// default `dhcp-lease-max` is 1 000, about 80 KiB).
pub const MAX_FILE: usize = 1 << 20;

/// One IPv4 lease of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// When it ends; `None` = infinite (expiry 0 in the file).
    pub expires: Option<SystemTime>,
    /// The hardware address as written (lower-cased).
    pub hwaddr: String,
}

/// The IPv4 leases of one read of the file, by address.
pub type Leases = HashMap<Ipv4Addr, Lease>;

/// Why a lease file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseFileError {
    /// Larger than [`MAX_FILE`].
    #[error("lease file of {0} bytes is larger than {MAX_FILE}")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("lease file is not text (line {line})")]
    NotText {
        /// 1-based line of the first bad byte.
        line: usize,
    },
    /// A line that is not `expiry hwaddr address hostname clientid`.
    #[error("lease file line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same IPv4 address leased twice.
    #[error("lease file line {line}: {address} is leased twice")]
    Duplicate {
        /// 1-based line number of the second lease.
        line: usize,
        /// The address.
        address: Ipv4Addr,
    },
}

/// Parses a dnsmasq lease file. Blank lines are skipped; anything else that is not a lease
/// line or the `duid` line refuses the whole file.
pub fn parse_dnsmasq(bytes: &[u8]) -> Result<Leases, LeaseFileError> {
    if bytes.len() > MAX_FILE {
        return Err(LeaseFileError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| LeaseFileError::NotText {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let mut leases = Leases::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason| LeaseFileError::BadLine { line, reason };
        let mut fields = raw.split_ascii_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if first == "duid" {
            fields.next().ok_or(bad("duid line without a DUID"))?;
            continue;
        }
        let expiry: u64 = first
            .parse()
            .map_err(|_| bad("expiry is not a number of seconds"))?;
        let hwaddr = fields.next().ok_or(bad("no hardware address"))?;
        let address: IpAddr = fields
            .next()
            .ok_or(bad("no IP address"))?
            .parse()
            .map_err(|_| bad("the IP address does not parse"))?;
        fields
            .next()
            .ok_or(bad("no host name (dnsmasq writes *)"))?;
        fields
            .next()
            .ok_or(bad("no client id (dnsmasq writes *)"))?;
        if fields.next().is_some() {
            return Err(bad("more than five fields"));
        }
        let IpAddr::V4(address) = address else {
            continue;
        };
        let expires = match expiry {
            0 => None,
            s => Some(
                UNIX_EPOCH
                    .checked_add(Duration::from_secs(s))
                    .ok_or(bad("expiry out of range"))?,
            ),
        };
        let lease = Lease {
            expires,
            hwaddr: hwaddr.to_ascii_lowercase(),
        };
        if leases.insert(address, lease).is_some() {
            return Err(LeaseFileError::Duplicate { line, address });
        }
    }
    Ok(leases)
}

/// Why an address's mappings go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ended {
    /// The lease passed its expiry time.
    Expired,
    /// The lease left the file (released by the client, or removed by the server).
    Released,
    /// The address is now leased to another hardware address.
    Reassigned,
}

impl Ended {
    /// For logs and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Expired => "DHCP lease expired",
            Ended::Released => "DHCP lease released",
            Ended::Reassigned => "DHCP lease passed to another device",
        }
    }
}

/// Which leased addresses lost their lease, from one view of the lease file to the next.
#[derive(Debug, Default)]
pub struct LeaseTracker {
    /// The live leases of the last view (ended ones are dropped once reported).
    live: Leases,
    /// Whether a view was taken.
    primed: bool,
}

impl LeaseTracker {
    /// An empty tracker: the first view sets what is known.
    pub fn new() -> LeaseTracker {
        LeaseTracker::default()
    }

    /// Takes a new view of the file at wall-clock `now`: the addresses whose lease ended since
    /// the last view (left the file, expired, or moved to another device), each once. On the
    /// first view, leases already expired are reported (the daemon may have been down when
    /// they ended).
    pub fn update(&mut self, view: Leases, now: SystemTime) -> Vec<(Ipv4Addr, Ended)> {
        let first = !self.primed;
        self.primed = true;
        let mut ended = Vec::new();
        for (address, old) in &self.live {
            match view.get(address) {
                None => ended.push((*address, Ended::Released)),
                Some(new) if new.hwaddr != old.hwaddr => {
                    ended.push((*address, Ended::Reassigned));
                }
                Some(_) => {}
            }
        }
        let mut live = Leases::new();
        for (address, lease) in view {
            if lease.expires.is_some_and(|t| t <= now) {
                // Reported when it ended since the last view (or before the first one), not
                // again each time the file still shows it.
                if first || self.live.contains_key(&address) {
                    ended.push((address, Ended::Expired));
                }
                continue;
            }
            // A lease that was reassigned starts anew for its new holder.
            live.insert(address, lease);
        }
        self.live = live;
        ended.sort();
        ended.dedup_by_key(|(a, _)| *a);
        ended
    }

    /// The addresses whose lease has passed its expiry at `now` (dnsmasq leaves an expired
    /// lease in its file until its next write), each once.
    pub fn expire(&mut self, now: SystemTime) -> Vec<(Ipv4Addr, Ended)> {
        let mut ended: Vec<_> = self
            .live
            .iter()
            .filter(|(_, l)| l.expires.is_some_and(|t| t <= now))
            .map(|(a, _)| (*a, Ended::Expired))
            .collect();
        for (a, _) in &ended {
            self.live.remove(a);
        }
        ended.sort();
        ended
    }

    /// Whether `address` holds a live lease.
    pub fn is_leased(&self, address: Ipv4Addr) -> bool {
        self.live.contains_key(&address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    const FILE: &str = "1000 AA:bb:cc:dd:ee:01 192.168.0.10 laptop 01:aa:bb:cc:dd:ee:01\n\
                        0 aa:bb:cc:dd:ee:02 192.168.0.11 * *\n\
                        duid 00:01:00:01:2c:4d:7e:11:aa:bb:cc:dd:ee:ff\n\
                        2000 1234 fd00::10 laptop 00:01:00:01\n\n";

    #[test]
    fn dnsmasq_file_gives_ipv4_leases_with_infinite_as_none() {
        let l = parse_dnsmasq(FILE.as_bytes()).expect("valid");
        assert_eq!(l.len(), 2, "IPv6 and duid lines ignored");
        assert_eq!(l[&A].expires, Some(at(1000)));
        assert_eq!(l[&A].hwaddr, "aa:bb:cc:dd:ee:01");
        assert_eq!(l[&B].expires, None);
    }

    #[test]
    fn bad_lease_files_are_refused_with_the_line_and_the_reason() {
        let cases: [(&[u8], LeaseFileError); 7] = [
            (
                b"x aa 192.168.0.1 * *",
                LeaseFileError::BadLine {
                    line: 1,
                    reason: "expiry is not a number of seconds",
                },
            ),
            (
                b"\n1 aa 192.168.0.300 * *",
                LeaseFileError::BadLine {
                    line: 2,
                    reason: "the IP address does not parse",
                },
            ),
            (
                b"1 aa 192.168.0.1 *",
                LeaseFileError::BadLine {
                    line: 1,
                    reason: "no client id (dnsmasq writes *)",
                },
            ),
            (
                b"1 aa 192.168.0.1 * * extra",
                LeaseFileError::BadLine {
                    line: 1,
                    reason: "more than five fields",
                },
            ),
            (
                b"duid",
                LeaseFileError::BadLine {
                    line: 1,
                    reason: "duid line without a DUID",
                },
            ),
            (
                b"1 aa 192.168.0.1 * *\n2 bb 192.168.0.1 * *",
                LeaseFileError::Duplicate {
                    line: 2,
                    address: Ipv4Addr::new(192, 168, 0, 1),
                },
            ),
            (
                b"1 aa 1.2.3.4 * *\n\xff",
                LeaseFileError::NotText { line: 2 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_dnsmasq(bytes), Err(want), "{bytes:?}");
        }
        let huge = vec![b'\n'; MAX_FILE + 1];
        assert_eq!(
            parse_dnsmasq(&huge),
            Err(LeaseFileError::TooLarge(MAX_FILE + 1))
        );
    }

    // RFC 6970 §5.10: released (gone from the file), expired, and passed to another device
    // each end the address's mappings, once.
    #[test]
    fn a_lease_that_leaves_expires_or_changes_hands_is_reported_once() {
        let mut t = LeaseTracker::new();
        let view = parse_dnsmasq(FILE.as_bytes()).expect("valid");
        assert!(t.update(view.clone(), at(10)).is_empty());
        assert!(t.expire(at(999)).is_empty());
        assert_eq!(t.expire(at(1000)), vec![(A, Ended::Expired)]);
        assert!(t.expire(at(5000)).is_empty(), "once");
        // dnsmasq rewrites the file without A; B leaves too.
        assert_eq!(
            t.update(view.clone(), at(1001)),
            Vec::new(),
            "A still in the file but already reported"
        );
        let mut only_a = view.clone();
        only_a.remove(&B);
        assert_eq!(t.update(only_a, at(1002)), vec![(B, Ended::Released)]);
        // B back, then leased to another device.
        t.update(view.clone(), at(1003));
        let mut moved = view;
        moved.get_mut(&B).expect("B").hwaddr = "aa:bb:cc:dd:ee:99".into();
        assert_eq!(t.update(moved, at(1004)), vec![(B, Ended::Reassigned)]);
        assert!(t.is_leased(B), "the new holder's lease is live");
    }

    #[test]
    fn a_lease_expired_while_the_daemon_was_down_is_reported_on_the_first_view() {
        let mut t = LeaseTracker::new();
        let view = parse_dnsmasq(FILE.as_bytes()).expect("valid");
        assert_eq!(t.update(view, at(1500)), vec![(A, Ended::Expired)]);
        // A static host never seen in the file is never released.
        assert!(!t.is_leased(Ipv4Addr::new(192, 168, 0, 50)));
    }
}
