//! Parsing and emitting never touch the heap: a counting global allocator proves it for MAP
//! and PEER requests and responses with up to four options (and more), and for error responses.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};

use pcp_client::wire::{
    Description, ErrorResponse, Filter, MapData, Nonce, OpcodeData, Options, PcpOption, PeerData,
    Protocol, RequestRepr, ResponseRepr, ResultCode, emit_error_response,
};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not see each other's allocations. A const
    // initialiser without destructor: touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// `GlobalAlloc` is an unsafe trait; this impl only counts and delegates to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator, which has the same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn parse_and_emit_do_not_allocate() {
    let map = MapData {
        nonce: Nonce([9; 12]),
        protocol: Protocol::UDP,
        internal_port: 5000,
        external_port: 5000,
        external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let filter = Filter {
        prefix_length: 128,
        remote_peer_port: 9000,
        remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)),
    };
    let options = [
        PcpOption::PreferFailure,
        PcpOption::Description(Description::new("BitTorrent")),
        PcpOption::Filter(filter),
        PcpOption::ThirdParty(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9))),
        PcpOption::Filter(filter),
        PcpOption::Filter(filter),
    ];
    let peer = PeerData {
        map: MapData {
            external_port: 0,
            ..map
        },
        remote_peer_port: 9000,
        remote_peer_address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50)),
    };
    let mut buf = [0u8; 1100];
    let mut out = [0u8; 1100];
    let n = allocations_during(|| {
        for (data, opts) in [
            (OpcodeData::Map(map), &options[..0]),
            (OpcodeData::Map(map), &options[..4]),
            (OpcodeData::Map(map), &options[..]),
            (OpcodeData::Peer(peer), &options[1..2]),
            (OpcodeData::Announce, &options[..0]),
        ] {
            let req = RequestRepr {
                lifetime: 7200,
                client_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
                data,
                options: Options::List(opts),
            };
            let len = req.emit(&mut buf).expect("emit");
            let parsed = RequestRepr::parse(&buf[..len]).expect("parse");
            assert_eq!(parsed.options.iter().count(), opts.len());
            let resp = ResponseRepr {
                result: ResultCode::Success,
                lifetime: 7200,
                epoch: 1,
                data: parsed.data,
                options: parsed.options,
            };
            let rlen = resp.emit(&mut out).expect("emit");
            let back = ResponseRepr::parse(&out[..rlen]).expect("parse");
            assert!(back == resp);
            let e = ErrorResponse {
                result: ResultCode::NoResources,
                lifetime: 30,
                epoch: 1,
                request_parsed: true,
            };
            emit_error_response(&buf[..len], &e, &mut out).expect("emit");
        }
        let _ = RequestRepr::parse(&[2, 1, 0]);
    });
    assert_eq!(n, 0, "parse/emit allocated {n} times");
}

// The counter is live: a test that could not fail would prove nothing.
#[test]
fn counter_sees_allocations() {
    let n = allocations_during(|| {
        std::hint::black_box(Box::new(5u64));
    });
    assert_eq!(n, 1);
}
