//! Parse and emit of a MAP request and response (the hot path of both the client and the
//! CGN's PCP server). Target on the 2-core reference machine: ≤ 40 ns each, no allocation
//! (the allocation count is asserted by `tests/no_alloc.rs`).
//!
//! Run: `cargo bench -p pcp-client --bench wire`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use pcp_client::wire::{
    Description, MapData, Nonce, OpcodeData, Options, PcpOption, Protocol, RequestRepr,
    ResponseRepr, ResultCode,
};

fn map_data(external: IpAddr, port: u16) -> MapData {
    MapData {
        nonce: Nonce([0x5a; 12]),
        protocol: Protocol::UDP,
        internal_port: 5000,
        external_port: port,
        external_address: external,
    }
}

fn bench(c: &mut Criterion) {
    let request = RequestRepr {
        lifetime: 7200,
        client_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
        data: OpcodeData::Map(map_data(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5000)),
        options: Options::EMPTY,
    };
    let response = ResponseRepr {
        result: ResultCode::Success,
        lifetime: 7200,
        epoch: 1234,
        data: OpcodeData::Map(map_data(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)), 5000)),
        options: Options::EMPTY,
    };
    let mut req_bytes = [0u8; 1100];
    let req_len = request.emit(&mut req_bytes).expect("emit");
    let mut resp_bytes = [0u8; 1100];
    let resp_len = response.emit(&mut resp_bytes).expect("emit");

    let mut g = c.benchmark_group("map");
    g.bench_function("request_parse", |b| {
        b.iter(|| RequestRepr::parse(black_box(&req_bytes[..req_len])))
    });
    g.bench_function("request_emit", |b| {
        let mut out = [0u8; 1100];
        b.iter(|| black_box(&request).emit(black_box(&mut out)))
    });
    g.bench_function("response_parse", |b| {
        b.iter(|| ResponseRepr::parse(black_box(&resp_bytes[..resp_len])))
    });
    g.bench_function("response_emit", |b| {
        let mut out = [0u8; 1100];
        b.iter(|| black_box(&response).emit(black_box(&mut out)))
    });

    // What the IWF sends: MAP with PREFER_FAILURE and a DESCRIPTION.
    let options = [
        PcpOption::PreferFailure,
        PcpOption::Description(Description::new("BitTorrent")),
    ];
    let iwf_request = RequestRepr {
        options: Options::List(&options),
        ..request
    };
    let mut iwf_bytes = [0u8; 1100];
    let iwf_len = iwf_request.emit(&mut iwf_bytes).expect("emit");
    g.bench_function("request_with_options_parse", |b| {
        b.iter(|| {
            let r = RequestRepr::parse(black_box(&iwf_bytes[..iwf_len]));
            // Walk the options, as a server does.
            r.map(|r| r.options.iter().count())
        })
    });
    g.bench_function("request_with_options_emit", |b| {
        let mut out = [0u8; 1100];
        b.iter(|| black_box(&iwf_request).emit(black_box(&mut out)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
