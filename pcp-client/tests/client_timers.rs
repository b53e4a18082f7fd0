//! Fake-clock tests of every client timer: retransmission, renewal, expiry, epoch, ANNOUNCE
//! delay, hold-downs (RFC 6887 §8.1.1, §8.3, §8.5, §11.2.1, §14.1.3).

mod client_support;

use std::time::Duration;

use client_support::*;
use pcp_client::client::{Config, Engine, ErrorCode, Event, MapRequest, Path};
use pcp_client::wire::{Protocol, ResultCode};

// RFC 6887 §8.1.1: IRT 3 s, RT doubles with ±10 % drawn per RT, capped at MRT 1024 s; MRC and
// MRD unlimited by default; every retransmission carries the same nonce (MUST).
#[test]
fn retransmissions_follow_irt_doubling_to_mrt_with_the_same_nonce() {
    let mut h = Harness::new();
    h.map(udp_map(5000, 3600));
    h.advance(secs(10_000.0));
    let sent = h.take_sent();
    assert!(sent.len() >= 14, "still retransmitting: {}", sent.len());
    let nonce = sent[0].map().nonce;
    assert!(
        sent.iter()
            .all(|s| s.map().nonce == nonce && s.bytes == sent[0].bytes)
    );
    assert_eq!(sent[0].at, h.t0, "first transmission at once");
    let mut prev: f64 = 0.0;
    for (i, pair) in sent.windows(2).enumerate() {
        let rt = (pair[1].at - pair[0].at).as_secs_f64();
        let base: f64 = if i == 0 {
            3.0
        } else {
            (2.0 * prev).min(1024.0)
        };
        assert!(
            rt >= base * 0.9 - 1e-6 && rt <= base * 1.1 + 1e-6,
            "RT {i} = {rt}, base {base}"
        );
        prev = rt;
    }
    // The cap is reached, and the jitter differs between RTs (drawn per RT).
    assert!(prev > 900.0 && prev < 1130.0);
    let rts: Vec<_> = sent.windows(2).map(|p| p[1].at - p[0].at).collect();
    assert!(rts.windows(2).any(|w| w[0] * 2 != w[1]));
}

// RFC 6887 §8.1.1: with MRC set, the exchange fails after MRC transmissions.
#[test]
fn exchange_times_out_after_mrc_transmissions() {
    let mut h = Harness::with(
        Config {
            mrc: 3,
            ..Config::default()
        },
        2,
    );
    let id = h.map(udp_map(5000, 3600));
    h.advance(secs(100.0));
    assert_eq!(h.take_sent().len(), 3);
    assert_eq!(h.take_events(), vec![Event::TimedOut { id }]);
    assert_eq!(h.engine.mapping_count(), 0);
}

// RFC 6887 §8.1.1: with MRD set, the exchange fails once MRD has elapsed.
#[test]
fn exchange_times_out_after_mrd() {
    let mut h = Harness::with(
        Config {
            mrd: Duration::from_secs(20),
            ..Config::default()
        },
        2,
    );
    let id = h.map(udp_map(5000, 3600));
    h.advance(secs(19.9));
    assert!(h.take_events().is_empty());
    h.advance(secs(0.2));
    assert_eq!(h.take_events(), vec![Event::TimedOut { id }]);
    // 0, ~3, ~9 (and maybe ~21 is past MRD): at least 3 transmissions, none after 20 s.
    let sent = h.take_sent();
    assert!(sent.len() >= 3 && sent.iter().all(|s| h.elapsed(s.at) < 20.0));
}

// RFC 6887 §8.1.1: the RAND sequence SHOULD differ between runs; §11.2: a fresh random nonce
// each start (RECOMMENDED). Two engines seeded from the OS differ in both.
#[test]
fn rand_sequence_and_nonces_differ_between_client_runs() {
    let run = || {
        let mut e = Engine::new(Config::default());
        let s = e
            .add_server(vec![Path {
                remote: sa(SERVER),
                local: ip(CLIENT),
            }])
            .expect("server");
        let t0 = std::time::Instant::now();
        e.map(t0, s, udp_map(1, 60)).expect("valid");
        let mut buf = [0u8; 1100];
        let t = e.poll_transmit(t0, &mut buf).expect("sent");
        let nonce = pcp_client::wire::RequestRepr::parse(&buf[..t.len])
            .expect("valid")
            .data
            .map_fields()
            .expect("map")
            .nonce;
        (e.poll_timeout().expect("timer") - t0, nonce)
    };
    let (rt1, n1) = run();
    let (rt2, n2) = run();
    assert_ne!(n1, n2);
    assert_ne!(rt1, rt2);
}

// RFC 6887 §11.2.1, §11.4: after a success a renewal timer is set; attempt 1 falls in
// [½L, ⅝L], attempt 2 in [¾L, ¾L + L/16], attempt 3 in [⅞L, ⅞L + L/32]; renewals suggest the
// external address and port last assigned and keep the nonce.
#[test]
fn renewals_fall_in_the_halving_windows_and_suggest_the_assigned_endpoint() {
    for seed in 0..20 {
        let mut h = Harness::with(Config::default(), seed);
        let (_, first) = granted(&mut h, 5000, 3200, 100);
        h.advance(secs(3199.0));
        let sent = h.take_sent();
        assert!(sent.len() >= 3, "seed {seed}: {} renewals", sent.len());
        let windows = [(1600.0, 2000.0), (2400.0, 2600.0), (2800.0, 2900.0)];
        for (s, (lo, hi)) in sent.iter().zip(windows) {
            let t = h.elapsed(s.at);
            assert!(
                t >= lo && t <= hi,
                "seed {seed}: renewal at {t}, window {lo}..{hi}"
            );
            let m = s.map();
            assert_eq!(m.nonce, first.map().nonce);
            assert_eq!((m.external_address, m.external_port), (ip(EXTERNAL), 15000));
            assert_eq!(s.request().lifetime, 3200);
        }
    }
}

// RFC 6887 §11.2.1: renewals MUST NOT be sent less than 4 s apart, even near expiry.
#[test]
fn renewals_are_at_least_four_seconds_apart() {
    for seed in 0..50 {
        let mut h = Harness::with(Config::default(), seed);
        granted(&mut h, 5000, 40, 100);
        h.advance(secs(39.9));
        let sent = h.take_sent();
        assert!(!sent.is_empty());
        for pair in sent.windows(2) {
            assert!(
                pair[1].at - pair[0].at >= Duration::from_secs(4),
                "seed {seed}"
            );
        }
    }
}

// Digest §2.6 impl note: once the mapping expired unanswered, back to the §8.1.1 schedule.
#[test]
fn expiry_without_answer_reports_and_falls_back_to_irt_schedule() {
    let mut h = Harness::new();
    let (id, _) = granted(&mut h, 5000, 100, 100);
    h.advance(secs(99.999));
    h.take_sent();
    h.advance(secs(30.0));
    assert!(h.take_events().contains(&Event::Expired { id }));
    let sent = h.take_sent();
    let gaps: Vec<f64> = sent
        .windows(2)
        .map(|p| (p[1].at - p[0].at).as_secs_f64())
        .collect();
    assert!(gaps.len() >= 2);
    assert!(gaps[0] >= 2.7 && gaps[0] <= 3.3, "{gaps:?}");
    assert!(gaps[1] >= 2.0 * gaps[0] * 0.9 && gaps[1] <= 2.0 * gaps[0] * 1.1);
    // The re-create still suggests the last assigned endpoint.
    assert_eq!(h.sent.len(), 0);
    assert_eq!(sent[0].map().external_port, 15000);
}

// RFC 6887 §8.5: a 1 s backward step is valid (signed arithmetic), so nothing is re-sent.
#[test]
fn epoch_one_second_back_does_not_trigger_renewal() {
    let mut h = Harness::new();
    let (_, first) = granted(&mut h, 5000, 3600, 1000);
    let (_, _) = granted(&mut h, 5001, 3600, 1000);
    h.answer(&first, ResultCode::Success, 3600, 999, 15000);
    assert!(h.take_sent().is_empty());
    assert!(
        !h.take_events()
            .iter()
            .any(|e| matches!(e, Event::ServerStateLost { .. }))
    );
}

// RFC 6887 §8.5, §16.3.1: an epoch more than 1 s back means state loss: every other mapping
// at that server is renewed promptly, with its nonce and last external endpoint.
#[test]
fn epoch_more_than_one_second_back_renews_every_mapping_at_once() {
    let mut h = Harness::new();
    let (_, a) = granted(&mut h, 5000, 3600, 1000);
    let (_, b) = granted(&mut h, 5001, 3600, 1000);
    h.answer(&a, ResultCode::Success, 3600, 998, 15000);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "only the other mapping is re-sent");
    assert_eq!(sent[0].at, h.now);
    assert_eq!(sent[0].map().nonce, b.map().nonce);
    assert_eq!(sent[0].map().external_port, 15001);
    assert!(h.take_events().contains(&Event::ServerStateLost {
        server: h.server,
        announced: false
    }));
}

// RFC 6887 §8.5: the drift test in both directions, through the engine.
#[test]
fn epoch_drift_beyond_one_sixteenth_plus_two_seconds_is_state_loss() {
    let mut h = Harness::new();
    let (_, a) = granted(&mut h, 5000, 100_000, 0);
    granted(&mut h, 5001, 100_000, 0);
    h.advance(secs(1600.0));
    // server_delta 1600 + 102 + 7 = 1709 > 1602 + 100: invalid.
    h.answer(&a, ResultCode::Success, 100_000, 1709, 15000);
    let recreate = h.take_sent();
    assert_eq!(recreate.len(), 1);
    // The re-create is answered (or it would be retransmitted on the §8.1.1 schedule).
    h.answer(&recreate[0], ResultCode::Success, 100_000, 1709, 15001);
    // Now keep pace: valid.
    h.advance(secs(100.0));
    h.answer(&a, ResultCode::Success, 100_000, 1809, 15000);
    assert!(h.take_sent().is_empty());
}

// RFC 6887 §14.1.3: ANNOUNCE with an invalid epoch: wait uniform 0 to 5 s, then renew every
// mapping at that server; the delay varies.
#[test]
fn announce_with_invalid_epoch_renews_everything_after_zero_to_five_seconds() {
    let mut delays = Vec::new();
    for seed in 0..40 {
        let mut h = Harness::with(Config::default(), seed);
        granted(&mut h, 5000, 3600, 50_000);
        granted(&mut h, 5001, 3600, 50_000);
        h.advance(secs(60.0));
        h.deliver(&announce(2));
        assert!(h.take_sent().is_empty(), "not at once");
        let at = h.now;
        h.advance(secs(5.0));
        // The first wave: both mappings at one instant (retransmissions may follow 3 s later).
        let sent: Vec<_> = h.take_sent();
        let wave: Vec<_> = sent.iter().filter(|s| s.at == sent[0].at).collect();
        assert_eq!(wave.len(), 2, "seed {seed}");
        let delay = (sent[0].at - at).as_secs_f64();
        assert!((0.0..=5.0).contains(&delay));
        delays.push(delay);
    }
    let (lo, hi) = delays
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), &d| (l.min(d), h.max(d)));
    assert!(lo < 1.0 && hi > 4.0, "uniform over 0..5: {lo}..{hi}");
}

// RFC 6887 §14.1.3: ANNOUNCE with a valid epoch only updates the stored epoch; options in
// ANNOUNCE are tolerated.
#[test]
fn announce_with_valid_epoch_only_updates_the_epoch() {
    let mut h = Harness::new();
    granted(&mut h, 5000, 3600, 1000);
    h.advance(secs(60.0));
    let mut bytes = announce(1060);
    // An unknown mandatory option (code 99, 4 bytes of data) appended.
    bytes.extend_from_slice(&[99, 0, 0, 4, 1, 2, 3, 4]);
    h.deliver(&bytes);
    h.advance(secs(10.0));
    assert!(h.take_sent().is_empty());
    assert_eq!(h.engine.server_epoch(h.server), Some(1060));
}

// RFC 6887 §8.3: after an error, the same request is not resent within the error lifetime;
// a server's 0 means the §7.4 default (30 s short, 30 min long).
#[test]
fn error_lifetime_holds_the_request_down() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 3600));
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::CannotProvideExternal, 120, 1, 0);
    assert_eq!(
        h.take_events(),
        vec![Event::Failed {
            id,
            code: ErrorCode::Pcp(ResultCode::CannotProvideExternal),
            lifetime: 120
        }]
    );
    h.advance(secs(119.9));
    assert!(h.take_sent().is_empty());
    h.advance(secs(0.2));
    assert_eq!(h.take_sent().len(), 1);

    // Long error with lifetime 0: 30 minutes.
    let mut h = Harness::new();
    h.map(udp_map(5000, 3600));
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::NotAuthorized, 0, 1, 0);
    h.advance(secs(1799.0));
    assert!(h.take_sent().is_empty());
    h.advance(secs(2.0));
    assert_eq!(h.take_sent().len(), 1);
}

// RFC 6887 §11.4: NO_RESOURCES on a create: no new-mapping requests for the lifetime, while
// renewals of existing mappings go on.
#[test]
fn no_resources_on_create_blocks_new_mappings_but_not_renewals() {
    let mut h = Harness::new();
    granted(&mut h, 4000, 100, 1);
    h.map(udp_map(5000, 3600));
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::NoResources, 300, 1, 0);
    h.map(udp_map(6000, 3600));
    assert!(h.take_sent().is_empty(), "a new mapping waits");
    h.advance(secs(299.0));
    let sent = h.take_sent();
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|s| s.map().internal_port == 4000),
        "only renewals of 4000 went out"
    );
    h.advance(secs(2.0));
    let ports: Vec<u16> = h
        .take_sent()
        .iter()
        .map(|s| s.map().internal_port)
        .collect();
    assert!(ports.contains(&6000) && ports.contains(&5000), "{ports:?}");
}

// RFC 6887 §11.4: NO_RESOURCES on a delete: no request of any kind for the lifetime.
#[test]
fn no_resources_on_delete_blocks_every_request() {
    let mut h = Harness::new();
    let (a, _) = granted(&mut h, 4000, 100, 1);
    granted(&mut h, 4001, 100, 1);
    h.engine.delete(h.now, a).expect("known");
    h.drain();
    let del = h.take_sent().pop().expect("delete sent");
    assert_eq!(del.request().lifetime, 0);
    h.answer(&del, ResultCode::NoResources, 600, 1, 0);
    h.map(udp_map(6000, 3600));
    h.advance(secs(599.0));
    assert!(
        h.take_sent().is_empty(),
        "no renewals, no creates, no deletes"
    );
    h.advance(secs(2.0));
    assert!(!h.take_sent().is_empty());
}

// RFC 6887 §8.3 (MAY): on a new network the old hold-downs can be ignored.
#[test]
fn clearing_hold_downs_sends_at_once() {
    let mut h = Harness::new();
    h.map(udp_map(5000, 3600));
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::NoResources, 600, 1, 0);
    h.engine.clear_hold_downs(h.now);
    h.advance(secs(0.0));
    assert_eq!(h.take_sent().len(), 1);
}

// RFC 6887 §8.3, §15: absurd lifetimes are capped (24 h) and renewal uses the capped value.
#[test]
fn absurd_lifetime_is_capped_at_24_hours() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, u32::MAX));
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::Success, u32::MAX, 1, 15000);
    assert!(matches!(
        h.take_events()[..],
        [Event::Granted {
            lifetime: 86_400,
            ..
        }]
    ));
    assert_eq!(h.engine.mapping(id).and_then(|m| m.lifetime), Some(86_400));
    h.advance(secs(43_199.0));
    assert!(h.take_sent().is_empty());
    h.advance(secs(10_802.0));
    assert_eq!(h.take_sent().len(), 1, "renewed within [12 h, 15 h]");
}

// RFC 6887 §15: the client renews explicitly; nothing but the timer keeps the mapping.
#[test]
fn mapping_is_renewed_without_any_traffic() {
    let mut h = Harness::new();
    let (id, _) = granted(&mut h, 5000, 120, 1);
    let mut epoch = 1;
    for _ in 0..10 {
        h.advance(secs(76.0));
        let renewal = h.take_sent().pop().expect("renewal before 5/8 L");
        epoch += 76;
        h.answer(&renewal, ResultCode::Success, 120, epoch, 15000);
    }
    assert!(
        h.take_events()
            .iter()
            .all(|e| matches!(e, Event::Renewed { id: i, .. } if *i == id))
    );
}

// A PEER is renewed on the same schedule (RFC 6887 §12.2, "the recommended timing is the same").
#[test]
fn peer_is_renewed_like_map() {
    let mut h = Harness::new();
    let req = pcp_client::client::PeerRequest::new(Protocol::TCP, 5000, sa("203.0.113.50:80"), 800);
    h.engine.peer(h.now, h.server, req).expect("valid");
    h.drain();
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::Success, 800, 1, 15000);
    h.advance(secs(500.0));
    let renewal = h.take_sent().pop().expect("renewed");
    assert!((400.0..=500.0).contains(&h.elapsed(renewal.at)));
    let _ = MapRequest::new(Protocol::UDP, 1, 1);
}

// RFC 6887 §16.3.3 (SHOULD): SCTP, like TCP, suggests zeros first and echoes the assigned
// address and port on renewal.
#[test]
fn sctp_suggests_zeros_first_and_renewals_echo_the_assignment() {
    let mut h = Harness::new();
    h.map(MapRequest::new(Protocol::SCTP, 7000, 100));
    let first = h.take_sent().pop().expect("sent");
    let m = first.map();
    assert_eq!(
        (m.external_address, m.external_port),
        (ip("0.0.0.0"), 0),
        "zeros first"
    );
    h.answer(&first, ResultCode::Success, 100, 1, 17000);
    h.advance(secs(63.0));
    let renewal = h.take_sent().pop().expect("renewed");
    let m = renewal.map();
    assert_eq!((m.external_address, m.external_port), (ip(EXTERNAL), 17000));
}
