//! Unit tests of the mapping table.

use std::net::{Ipv4Addr, SocketAddrV4};

use pcp_client::wire::{Nonce, Protocol};

use super::*;

fn ep(last: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, last), port)
}

fn ext(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), port)
}

// Lookups by internal tuple, external tuple and nonce stay right through inserts, shared
// nonces (one nonce per process, as Bitcoin Core does) and removals.
#[test]
fn lookups_by_internal_external_and_nonce_follow_changes() {
    let mut t = Table::new(1);
    let n = Nonce([1; 12]);
    let ids: Vec<u32> = (0..5u16)
        .map(|i| {
            let id = t.insert_binding(Protocol::UDP, 0, ep(2, 1000 + i), ext(40_000 + i), 0, 1, 0);
            t.set_map(id, n, 100, 99, 0, None);
            id
        })
        .collect();
    assert_eq!(t.lookup_nonce(&n).len(), 5);
    let key = InternalKey {
        protocol: 17,
        realm: 0,
        addr: Ipv4Addr::new(100, 64, 0, 2),
        port: 1002,
    };
    assert_eq!(t.lookup_internal(&key), Some(ids[2]));
    let ek = ExternalKey {
        protocol: 17,
        addr: *ext(0).ip(),
        port: 40_002,
    };
    assert_eq!(t.lookup_external(&ek), Some(ids[2]));
    // Remove from the middle, the head and the tail of the nonce chain.
    for i in [2usize, 4, 0] {
        assert!(t.remove_map(ids[i]).is_some());
        t.check_invariants().expect("invariants");
    }
    let left: Vec<EntryRef> = t.lookup_nonce(&n);
    assert_eq!(left.len(), 2);
    assert!(left.contains(&EntryRef::Map(ids[1])) && left.contains(&EntryRef::Map(ids[3])));
    assert_eq!(t.lookup_internal(&key), None);
    // A PEER session shares the chain of its nonce.
    let p = t
        .insert_peer(ids[1], ep(50, 80), n, 200, 199, None)
        .expect("peer");
    assert_eq!(t.lookup_nonce(&n).len(), 3);
    assert_eq!(t.lookup_peer(ids[1], ep(50, 80)), Some(p));
    t.check_invariants().expect("invariants");
}

// Expiry: a refreshed deadline is not fired early (lazy deletion), the binding lives while
// a PEER session does, then its external port is reported freed.
#[test]
fn expiry_respects_refreshes_and_remaining_parts() {
    let mut t = Table::new(1);
    let id = t.insert_binding(Protocol::TCP, 0, ep(2, 80), ext(8080), 0, 1, 0);
    t.set_map(id, Nonce([2; 12]), 10, 9, 0, None);
    t.insert_peer(id, ep(50, 1), Nonce([3; 12]), 30, 29, None);
    t.refresh_map(id, 20, 19);
    let mut freed = Vec::new();
    t.expire(15, |f| freed.push(f));
    assert!(t.binding(id).is_some_and(Binding::has_map));
    t.expire(25, |f| freed.push(f));
    assert!(t.binding(id).is_some_and(|b| !b.has_map()));
    assert!(freed.is_empty(), "the PEER session keeps the binding");
    t.expire(30, |f| freed.push(f));
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0].external.port, 8080);
    assert_eq!(t.counts(), TableCounts::default());
    t.check_invariants().expect("invariants");
}
