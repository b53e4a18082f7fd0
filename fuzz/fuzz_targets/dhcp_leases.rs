//! Fuzzes the DHCP lease file parser (`upnp_iwf::dhcp::parse_dnsmasq`) and the tracker fed by
//! it: no input may panic; an accepted file holds only IPv4 leases with lower-case hardware
//! addresses, and a tracker never reports an address twice in one update.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use upnp_iwf::dhcp::{LeaseTracker, parse_dnsmasq};

fuzz_target!(|data: &[u8]| {
    // Two views: the input split at its first NUL byte (before / after).
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let mut tracker = LeaseTracker::new();
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    for (view, at) in [(a, now), (b, now + Duration::from_secs(60))] {
        let Ok(leases) = parse_dnsmasq(view) else {
            continue;
        };
        for lease in leases.values() {
            assert_eq!(lease.hwaddr, lease.hwaddr.to_ascii_lowercase());
        }
        let ended = tracker.update(leases, at);
        let mut addresses: Vec<_> = ended.iter().map(|(a, _)| *a).collect();
        addresses.dedup();
        assert_eq!(addresses.len(), ended.len(), "an address reported twice");
    }
    let _ = tracker.expire(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX as u64));
});
