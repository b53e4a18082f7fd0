//! Port Block Allocation as a pool option (RFC 7422; RFC 6888 REQ-13, REQ-14): every external
//! port of a subscriber, PCP or implicit, comes from its one block; the block is the table's
//! `Section`; a full block is USER_EX_QUOTA.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4};

use cgn_sim::config::{BlockMode, EngineConfig, PortBlocks};
use pcp_client::wire::{PcpOption, PortSet, Protocol, ResultCode};
use support::*;

fn blocks(mode: BlockMode, size: u16, pool: &str) -> Harness {
    let mut c = EngineConfig::with_pools(&[pool]);
    c.port_blocks = Some(PortBlocks { size, mode });
    Harness::with(c)
}

fn tcp(h: &mut Harness, client: Ipv4Addr, n: u8, port: u16, opts: &[PcpOption<'_>]) -> Answer {
    h.request(
        client,
        &map_req(client, nonce(n), Protocol::TCP, port, 3600, None, opts),
    )
}

// RFC 7422 §2 (dynamic blocks, RFC 6888 REQ-14): a subscriber's MAP, PORT_SET, PEER and
// implicit (dataplane) bindings all come from one block of 16 ports on its address, at random
// inside it; `ctl mappings` shows the block as the Section (`Section: N (ports F-L)`); another
// subscriber gets another block; a suggestion outside the block is not honoured (another port
// of the block, or CANNOT_PROVIDE_EXTERNAL with PREFER_FAILURE); when the block is full the
// next mapping gets USER_EX_QUOTA (and the dataplane's next flow is refused the same way), the
// existing ones stay.
#[test]
fn dynamic_blocks_keep_every_mapping_of_a_subscriber_inside_its_block() {
    let mut h = blocks(BlockMode::Dynamic, 16, "198.51.100.1");
    let first = tcp(&mut h, CLIENT, 1, 5000, &[]);
    assert_eq!(first.result(), ResultCode::Success);
    let block = h.server.port_block(0, CLIENT).expect("a block");
    assert_eq!(block.last - block.first, 15);
    assert!(block.first >= 1024);
    let inside =
        |e: SocketAddrV4| block.contains(e.port()) && *e.ip() == Ipv4Addr::new(198, 51, 100, 1);
    assert!(inside(first.external()), "{}", first.external());
    let set = tcp(
        &mut h,
        CLIENT,
        2,
        6000,
        &[PcpOption::PortSet(PortSet {
            size: 4,
            first_internal_port: 6000,
            parity: false,
        })],
    );
    assert_eq!(set.result(), ResultCode::Success);
    for i in 0..4 {
        let e = SocketAddrV4::new(*set.external().ip(), set.external().port() + i);
        assert!(inside(e), "PORT_SET port {e}");
    }
    let remote = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 50), 80);
    let peer = h.request(
        CLIENT,
        &peer_req(CLIENT, nonce(3), 7000, 3600, remote, None, &[]),
    );
    assert!(inside(peer.external()), "PEER {}", peer.external());
    let now = h.now;
    let implicit = h
        .server
        .outbound(now, Protocol::UDP, SocketAddrV4::new(CLIENT, 40_000))
        .expect("implicit");
    assert!(inside(implicit), "implicit {implicit}");
    // A suggestion outside the block.
    let outside = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), block.last + 1);
    let hint = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(4),
            Protocol::TCP,
            5001,
            3600,
            Some(outside),
            &[],
        ),
    );
    assert!(inside(hint.external()), "{}", hint.external());
    let pf = h.request(
        CLIENT,
        &map_req(
            CLIENT,
            nonce(5),
            Protocol::TCP,
            5002,
            3600,
            Some(outside),
            &[PcpOption::PreferFailure],
        ),
    );
    assert_eq!(pf.result(), ResultCode::CannotProvideExternal);
    // The table shows the block as the Section.
    let table = h.server.render_table(h.now);
    let section = format!(
        "Section: {} (ports {}-{})",
        block.number, block.first, block.last
    );
    assert_eq!(table.lines().count(), 2 + 2 * 4 + 1 + 1 + 2, "{table}");
    assert!(
        table.lines().all(|l| l.contains(&section)),
        "{section}\n{table}"
    );
    // Another subscriber: another block.
    let other = tcp(&mut h, CLIENT2, 6, 5000, &[]);
    let block2 = h.server.port_block(0, CLIENT2).expect("a block");
    assert_ne!(block2.number, block.number);
    assert!(block2.contains(other.external().port()));
    // Fill the block: TCP has 16 - (1 + 4 + 1) = 10 ports left.
    for i in 0..10u16 {
        let a = tcp(&mut h, CLIENT, 10, 8000 + i, &[]);
        assert_eq!(a.result(), ResultCode::Success, "mapping {i}");
        assert!(inside(a.external()));
    }
    let over = tcp(&mut h, CLIENT, 10, 9000, &[]);
    assert_eq!(over.result(), ResultCode::UserExQuota);
    let now = h.now;
    assert_eq!(
        h.server
            .outbound(now, Protocol::TCP, SocketAddrV4::new(CLIENT, 40_001)),
        Err(ResultCode::UserExQuota),
        "the dataplane's next TCP flow is over the block too"
    );
    assert_eq!(
        tcp(&mut h, CLIENT, 1, 5000, &[]).result(),
        ResultCode::Success,
        "renewals still work"
    );
    h.check();
}

// RFC 7422 §2 (dynamic blocks are assigned and given back, each logged): the block is the
// subscriber's while it has a mapping; after its last one goes the block is free, and the next
// subscriber gets it.
#[test]
fn dynamic_block_is_given_back_with_the_last_mapping() {
    let mut h = blocks(BlockMode::Dynamic, 16, "198.51.100.1");
    let a = tcp(&mut h, CLIENT, 1, 5000, &[]);
    assert_eq!(a.result(), ResultCode::Success);
    let block = h.server.port_block(0, CLIENT).expect("a block");
    let gone = h.request(
        CLIENT,
        &map_req(CLIENT, nonce(1), Protocol::TCP, 5000, 0, None, &[]),
    );
    assert_eq!(gone.result(), ResultCode::Success);
    assert_eq!(h.server.port_block(0, CLIENT), None);
    let b = tcp(&mut h, CLIENT2, 2, 5000, &[]);
    assert_eq!(h.server.port_block(0, CLIENT2), Some(block));
    assert!(block.contains(b.external().port()));
}

// RFC 7422 deterministic blocks: the subscriber's ordinal k among the subscriber prefixes
// gives address k mod N and block k div N, with nothing stored: 100.64.0.2 (k = 2) on the
// third of 4 addresses, block 0 (ports 1024-2031 with 1008-port blocks), 100.64.0.6 (k = 6) on
// the same address, block 1 (2032-3039); the same after a restart (state loss).
#[test]
fn deterministic_blocks_are_a_function_of_the_subscriber_address() {
    let mut c = EngineConfig::with_pools(&["198.51.100.0/30"]);
    c.subscribers = vec!["100.64.0.0/24".parse().expect("prefix")];
    c.port_blocks = Some(PortBlocks {
        size: 1008,
        mode: BlockMode::Deterministic,
    });
    let mut h = Harness::with(c);
    let six = Ipv4Addr::new(100, 64, 0, 6);
    for round in 0..2 {
        let a = tcp(&mut h, CLIENT, 1, 5000, &[]);
        assert_eq!(
            *a.external().ip(),
            Ipv4Addr::new(198, 51, 100, 2),
            "round {round}"
        );
        assert!(
            (1024..=2031).contains(&a.external().port()),
            "{}",
            a.external()
        );
        let b = tcp(&mut h, six, 2, 5000, &[]);
        assert_eq!(*b.external().ip(), Ipv4Addr::new(198, 51, 100, 2));
        assert!(
            (2032..=3039).contains(&b.external().port()),
            "{}",
            b.external()
        );
        assert!(
            h.server.render_table(h.now).contains(
                "[100.64.0.6:5000] TTL: 3600, Left: 3600, Pool: 1, Section: 1 (ports 2032-3039)"
            ),
            "{}",
            h.server.render_table(h.now)
        );
        let now = h.now;
        h.server.restart(now, false);
        h.advance(std::time::Duration::from_secs(200));
    }
}
