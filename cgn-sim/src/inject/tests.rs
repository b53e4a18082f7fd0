//! Error injection through the server: the next MAPs get the injected answer, nothing changes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use pcp_client::wire::{MapData, Nonce, OpcodeData, Options, Protocol, RequestRepr};
use pcp_client::wire::{ResponseRepr, ResultCode};
use rand::SeedableRng;

use super::parse_result;
use crate::config::EngineConfig;
use crate::server::{Interface, Server};

fn map(server: &mut Server, now: Instant, port: u16, lifetime: u32) -> (ResultCode, u32) {
    let client = Ipv4Addr::new(100, 64, 0, 2);
    let request = RequestRepr {
        lifetime,
        client_ip: IpAddr::V4(client),
        data: OpcodeData::Map(MapData {
            nonce: Nonce([7; 12]),
            protocol: Protocol::UDP,
            internal_port: port,
            external_port: 0,
            external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }),
        options: Options::EMPTY,
    };
    let mut buf = [0u8; 1100];
    let len = request.emit(&mut buf).expect("emit");
    let mut out = [0u8; 1100];
    let from = SocketAddr::new(IpAddr::V4(client), 40000);
    let n = server
        .handle(now, from, Interface::Inside, &buf[..len], &mut out)
        .expect("answer");
    let r = ResponseRepr::parse(&out[..n]).expect("response");
    (r.result, r.lifetime)
}

// RFC 6887 §7.4; RFC 6970 §4.5: the injected error reaches the client with the injected
// lifetime, for exactly `count` creating/refreshing MAPs, and leaves the table, the pool
// and the counts untouched; deletes are not affected.
#[test]
fn injected_error_answers_the_next_map_and_changes_nothing() {
    let now = Instant::now();
    let config = EngineConfig::with_pools(&["198.51.100.0/28"]);
    let mut server =
        Server::new(config, now, Box::new(rand::rngs::StdRng::seed_from_u64(1))).expect("server");
    assert_eq!(map(&mut server, now, 5000, 3600).0, ResultCode::Success);
    let table = server.render_table(now);
    let counts = server.table().counts();

    server.inject(ResultCode::NotAuthorized, Some(1800), 2);
    // A new mapping and the refresh of the existing one both get the error.
    assert_eq!(
        map(&mut server, now, 5001, 3600),
        (ResultCode::NotAuthorized, 1800)
    );
    assert_eq!(
        map(&mut server, now, 5000, 3600),
        (ResultCode::NotAuthorized, 1800)
    );
    assert_eq!(server.render_table(now), table, "no state changed");
    assert_eq!(server.table().counts(), counts);
    assert_eq!(server.injection(), None, "count used up");
    assert_eq!(map(&mut server, now, 5001, 3600).0, ResultCode::Success);

    // Deletes pass through an armed injection, which stays armed.
    server.inject(ResultCode::NoResources, None, 1);
    assert_eq!(map(&mut server, now, 5001, 0).0, ResultCode::Success);
    assert!(server.injection().is_some());
    let (result, lifetime) = map(&mut server, now, 5002, 3600);
    assert_eq!(result, ResultCode::NoResources);
    assert_eq!(lifetime, server.config().short_error_lifetime, "default");
}

#[test]
fn injectable_results_are_names_or_numbers_1_to_13() {
    assert_eq!(
        parse_result("NOT_AUTHORIZED"),
        Ok(ResultCode::NotAuthorized)
    );
    assert_eq!(parse_result("user_ex_quota"), Ok(ResultCode::UserExQuota));
    assert_eq!(parse_result("11"), Ok(ResultCode::CannotProvideExternal));
    assert!(parse_result("SUCCESS").is_err());
    assert!(parse_result("0").is_err());
    assert!(parse_result("14").is_err());
    assert!(parse_result("BOGUS").is_err());
}
