//! The engine as a daemon's engine (upnp-iwf drives hundreds of mappings through it for days):
//! re-creates after state loss that retransmit until answered, bounded first requests and
//! updates, live updates with the same nonce, distinct restore events, and a lossy CGN restart
//! with 200 mappings. Fake clock and scripted peers throughout (RFC 6887 §8.1.1, §8.5, §11.2,
//! §14.1.3; RFC 7488 §3).

mod client_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_support::*;
use pcp_client::client::{
    Config, Engine, ErrorCode, Event, Exchange, GiveUp, MapRequest, MappingId, MappingPhase,
    MappingUpdate, Path,
};
use pcp_client::wire::{
    Filter, MapData, Nonce, OpcodeData, Options, PcpOption, Protocol, RequestRepr, ResponseRepr,
    ResultCode,
};
use rand::{Rng, SeedableRng};

/// Gaps between consecutive sends, in seconds.
fn gaps(sent: &[Sent]) -> Vec<f64> {
    sent.windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect()
}

fn has_prefer_failure(s: &Sent) -> bool {
    s.request()
        .options
        .iter()
        .any(|o| matches!(o, PcpOption::PreferFailure))
}

/// A PREFER_FAILURE mapping of `port`, granted as EXTERNAL:`port + 10000` at `epoch`.
fn granted_pf(h: &mut Harness, port: u16, lifetime: u32, epoch: u32) -> (MappingId, Sent) {
    let request = udp_map(port, lifetime)
        .suggest(SocketAddr::new(ip(EXTERNAL), port + 10000))
        .prefer_failure();
    let id = h.map(request);
    let sent = h.take_sent().pop().expect("sent at once");
    h.answer(&sent, ResultCode::Success, lifetime, epoch, port + 10000);
    h.take_events();
    (id, sent)
}

// RFC 6887 §8.5, §14.1.3, §8.1.1: after state loss shown by a response's epoch, every other
// mapping is re-created at once and, when that copy is lost, resent within IRT ± RAND, then
// after a doubled RT — same nonce, PREFER_FAILURE kept, the last external endpoint suggested.
#[test]
fn recreate_after_state_loss_is_retransmitted_on_the_irt_schedule() {
    let mut h = Harness::new();
    let (_, a) = granted_pf(&mut h, 5000, 3600, 1000);
    let (b_id, b) = granted_pf(&mut h, 5001, 3600, 1000);
    h.advance(secs(100.0));
    // The server restarted: its epoch went back to 2.
    h.answer(&a, ResultCode::Success, 3600, 2, 15000);
    // The re-create of b goes out at once; the server never answers (every copy lost).
    h.advance(secs(20.0));
    let sent = h.take_sent();
    assert!(sent.len() >= 3, "retransmitted: {} copies", sent.len());
    assert_eq!(h.elapsed(sent[0].at), 100.0, "first copy at once");
    let g = gaps(&sent);
    assert!((2.7..=3.3).contains(&g[0]), "IRT ± RAND: {g:?}");
    assert!(
        g[1] >= 2.0 * g[0] * 0.9 && g[1] <= 2.0 * g[0] * 1.1,
        "{g:?}"
    );
    for s in &sent {
        assert_eq!(s.map().nonce, b.map().nonce, "same nonce");
        assert_eq!(
            s.map().external_port,
            15001,
            "suggests the last external port"
        );
        assert_eq!(s.map().external_address, ip(EXTERNAL));
        assert!(has_prefer_failure(s), "PREFER_FAILURE kept");
    }
    assert_eq!(
        h.engine.mapping(b_id).map(|m| m.phase),
        Some(MappingPhase::Recovering)
    );
}

// RFC 6887 §14.1.3: the same after an ANNOUNCE with an invalid epoch (after the 0–5 s wait).
#[test]
fn recreate_after_announce_is_retransmitted_until_answered() {
    let mut h = Harness::with(Config::default(), 7);
    let (id, first) = granted_pf(&mut h, 5000, 3600, 50_000);
    h.advance(secs(60.0));
    h.deliver(&announce(3));
    h.advance(secs(5.0));
    let wave = h.take_sent();
    assert_eq!(wave.len(), 1, "re-created after the wait");
    // That copy is lost; the next one comes within IRT ± RAND.
    h.advance(secs(3.31));
    let again = h.take_sent();
    assert_eq!(again.len(), 1, "resent");
    let gap = (again[0].at - wave[0].at).as_secs_f64();
    assert!((2.7..=3.3).contains(&gap), "{gap}");
    assert_eq!(again[0].map().nonce, first.map().nonce);
    // Answered: a restore on the same endpoint, and back to renewals (next send ≥ ½ L).
    h.answer(&again[0], ResultCode::Success, 3600, 10, 15000);
    let events: Vec<Event> = h
        .take_events()
        .into_iter()
        .filter(|e| !matches!(e, Event::ServerStateLost { .. }))
        .collect();
    assert!(
        matches!(events.as_slice(), [Event::Restored { id: got, same_endpoint: true, .. }] if *got == id),
        "{events:?}"
    );
    h.advance(secs(1700.0));
    assert!(h.take_sent().is_empty(), "renewal schedule again");
}

// Defect 1: a renewal that ran past expiry is a re-create that never gives up, even when the
// engine's MRC would end a first create, and its answer is a restore.
#[test]
fn renewal_past_expiry_recreates_without_giving_up_and_reports_a_restore() {
    let mut h = Harness::with(
        Config {
            mrc: 3,
            ..Config::default()
        },
        3,
    );
    let (id, _) = granted(&mut h, 5000, 60, 100);
    h.advance(secs(600.0));
    let events = h.take_events();
    assert!(events.contains(&Event::Expired { id }));
    assert!(!events.iter().any(|e| matches!(e, Event::TimedOut { .. })));
    assert_eq!(h.engine.mapping_count(), 1, "still held");
    let sent = h.take_sent();
    assert!(sent.len() > 3 + 4, "keeps retransmitting: {}", sent.len());
    let last = sent.last().expect("sent").clone();
    h.answer(&last, ResultCode::Success, 60, 700, 16000);
    let events = h.take_events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Restored { previous, external, same_endpoint: false, .. }]
                if previous.port() == 15000 && external.port() == 16000
        ),
        "{events:?}"
    );
}

// RFC 7488 §3: a renewal that got a hard ICMP error moves to the next address and is
// retransmitted there on the §8.1.1 schedule.
#[test]
fn icmp_error_on_a_renewal_recreates_at_the_next_address_on_the_irt_schedule() {
    let servers = ["192.168.0.1:5351", "192.168.0.2:5351"];
    let mut h = Harness::with_paths(Config::default(), 5, &servers);
    let id = h.map(udp_map(5000, 100));
    let sent = h.take_sent().pop().expect("sent");
    h.answer(&sent, ResultCode::Success, 100, 1, 15000);
    h.take_events();
    h.advance(secs(62.6));
    let renewal = h.take_sent();
    assert_eq!(renewal.len(), 1, "first renewal in [50, 62.5]");
    h.engine.handle_icmp_error(h.now, sa(servers[0]));
    h.drain();
    // 0, RT1 ≤ 3.3 s, RT1 + RT2 ≤ 3.3 + 7.26 s.
    h.advance(secs(10.6));
    let sent = h.take_sent();
    assert!(sent.len() >= 3, "{}", sent.len());
    assert!(sent.iter().all(|s| s.to == sa(servers[1])));
    assert!((2.7..=3.3).contains(&gaps(&sent)[0]));
    assert_eq!(
        h.engine.mapping(id).map(|m| m.phase),
        Some(MappingPhase::Recovering)
    );
}

// Defect 2: a first request bounded to two transmissions gives up with its own event after
// the second timeout, while a renewal of another mapping goes on for ever.
#[test]
fn bounded_first_request_gives_up_after_the_second_timeout_while_renewals_keep_retrying() {
    let mut h = Harness::new();
    let (renewed, _) = granted(&mut h, 5000, 40, 100);
    let bounded = h.map(udp_map(5001, 3600).give_up(GiveUp::after_transmissions(2)));
    h.advance(secs(3.4));
    assert!(
        h.take_events().is_empty(),
        "first timeout: resend, no event"
    );
    h.advance(secs(6.7));
    let events = h.take_events();
    assert_eq!(
        events,
        vec![Event::GaveUp {
            id: bounded,
            exchange: Exchange::Create,
            transmissions: 2
        }],
        "gives up when the second copy times out"
    );
    let to_bounded = h
        .take_sent()
        .iter()
        .filter(|s| s.map().internal_port == 5001)
        .count();
    assert_eq!(to_bounded, 2);
    assert!(h.engine.mapping(bounded).is_none(), "forgotten");
    // The renewed mapping: nobody answers for 10 minutes; it keeps asking.
    h.advance(secs(600.0));
    let late: Vec<_> = h
        .take_sent()
        .into_iter()
        .filter(|s| s.map().internal_port == 5000 && h.elapsed(s.at) > 300.0)
        .collect();
    assert!(!late.is_empty(), "still retrying after 5 minutes");
    assert!(h.engine.mapping(renewed).is_some());
}

// Defect 2: a time bound ends a first request too.
#[test]
fn first_request_bounded_in_time_gives_up_at_that_time() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5001, 3600).give_up(GiveUp::after(Duration::from_secs(5))));
    h.advance(secs(4.9));
    assert!(h.take_events().is_empty());
    h.advance(secs(0.2));
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::GaveUp { id: got, exchange: Exchange::Create, transmissions: 2 }] if *got == id
    ));
}

// Defect 3: an update of a live mapping keeps the nonce and changes the lifetime (and the
// description) on the server; the answer is `Updated`.
#[test]
fn update_keeps_the_nonce_and_changes_the_lifetime_on_the_server() {
    let mut h = Harness::new();
    let (id, first) = granted_pf(&mut h, 5000, 600, 100);
    h.advance(secs(30.0));
    h.engine
        .update(
            h.now,
            id,
            MappingUpdate {
                lifetime: Some(7200),
                description: Some(Some("game".into())),
                ..MappingUpdate::default()
            },
        )
        .expect("valid update");
    h.drain();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "sent at once");
    let r = sent[0].request();
    assert_eq!(r.lifetime, 7200);
    assert_eq!(sent[0].map().nonce, first.map().nonce);
    assert_eq!(sent[0].map().external_port, 15000);
    assert!(
        r.options
            .iter()
            .any(|o| matches!(o, PcpOption::Description(d) if d.as_str() == Some("game")))
    );
    assert!(has_prefer_failure(&sent[0]));
    h.answer(&sent[0], ResultCode::Success, 7200, 130, 15000);
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::Updated { id: got, lifetime: 7200, .. }] if *got == id
    ));
    let info = h.engine.mapping(id).expect("held");
    assert_eq!(
        (info.requested_lifetime, info.lifetime, info.phase),
        (7200, Some(7200), MappingPhase::Active)
    );
    // Renewals now follow the new lifetime: none before 3600 s.
    h.advance(secs(3500.0));
    assert!(h.take_sent().is_empty());
}

// Defect 3: an update retransmits until answered, within its own bound; giving up leaves the
// mapping renewed with its old grant. A new FILTER set replaces the old one (remove-all first).
#[test]
fn bounded_update_gives_up_and_the_mapping_lives_on() {
    let mut h = Harness::new();
    let (id, _) = granted(&mut h, 5000, 600, 100);
    let filter = Filter {
        prefix_length: 128,
        remote_peer_port: 0,
        remote_peer_address: ip("203.0.113.50"),
    };
    h.engine
        .update(
            h.now,
            id,
            MappingUpdate {
                filters: Some(vec![filter]),
                give_up: Some(GiveUp::after_transmissions(2)),
                ..MappingUpdate::default()
            },
        )
        .expect("valid");
    h.drain();
    h.advance(secs(12.0));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2);
    let filters: Vec<Filter> = sent[0]
        .request()
        .options
        .iter()
        .filter_map(|o| match o {
            PcpOption::Filter(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(filters, vec![Filter::REMOVE_ALL, filter]);
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::GaveUp { id: got, exchange: Exchange::Update, transmissions: 2 }] if *got == id
    ));
    let info = h.engine.mapping(id).expect("still held");
    assert_eq!(info.phase, MappingPhase::Active);
    // Renewed as before: the next attempt comes before the old grant runs out.
    h.advance(secs(600.0));
    assert!(!h.take_sent().is_empty());
}

// Defect 3: an invalid update is refused and changes nothing.
#[test]
fn invalid_update_is_refused_and_changes_nothing() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 600));
    h.take_sent();
    let before = h.engine.mapping(id);
    let bad = MappingUpdate {
        lifetime: Some(0),
        ..MappingUpdate::default()
    };
    assert!(h.engine.update(h.now, id, bad).is_err());
    let bad = MappingUpdate {
        prefer_failure: Some(true),
        ..MappingUpdate::default()
    };
    assert!(
        h.engine.update(h.now, id, bad).is_err(),
        "no port to prefer"
    );
    h.drain();
    assert!(h.take_sent().is_empty());
    assert_eq!(h.engine.mapping(id), before);
}

// Defect 4: a restore says whether the endpoint stayed the same.
#[test]
fn restore_after_state_loss_reports_whether_the_endpoint_stayed_the_same() {
    let mut h = Harness::new();
    let (a_id, a) = granted(&mut h, 5000, 3600, 1000);
    let (b_id, _) = granted(&mut h, 5001, 3600, 1000);
    h.advance(secs(10.0));
    // a's answer shows the loss (and re-created a on another port).
    h.answer(&a, ResultCode::Success, 3600, 1, 25000);
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(e,
        Event::Restored { id, same_endpoint: false, external, .. } if *id == a_id && external.port() == 25000)));
    let b = h.take_sent().pop().expect("b re-created");
    h.answer(&b, ResultCode::Success, 3600, 2, 15001);
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::Restored { id, same_endpoint: true, .. }] if *id == b_id
    ));
    assert_eq!(h.engine.stats().restores, 2);
}

// Defect 6 (engine part): a driver that drains after every input can ask the engine to keep
// every event; with the default cap the oldest are dropped and counted.
#[test]
fn uncapped_event_queue_keeps_every_state_change() {
    let run = |cap: usize| {
        let mut e = Engine::with_seed(
            Config {
                max_queued_events: cap,
                ..Config::default()
            },
            1,
        );
        let s = e
            .add_server(vec![Path {
                remote: sa(SERVER),
                local: ip(CLIENT),
            }])
            .expect("server");
        let t0 = Instant::now();
        for port in 1..=300 {
            e.map(
                t0,
                s,
                udp_map(port, 60).give_up(GiveUp::after_transmissions(1)),
            )
            .expect("valid");
        }
        let mut buf = [0u8; 1100];
        while e.poll_transmit(t0, &mut buf).is_some() {}
        e.handle_timeout(t0 + Duration::from_secs(10));
        let mut n = 0;
        while e.poll_event().is_some() {
            n += 1;
        }
        (n, e.stats().events_dropped)
    };
    assert_eq!(run(0), (300, 0));
    assert_eq!(run(100), (100, 200));
}

/// A PCP server holding MAP state per (protocol, internal port), like a CGN's table for one
/// subscriber: a new nonce for an existing mapping is NOT_AUTHORIZED (RFC 6887 §11.3), a
/// restart forgets everything and resets the epoch. Counts what it created.
struct ScriptedCgn {
    table: HashMap<(Protocol, u16), (Nonce, u16)>,
    started: Instant,
    creations: HashMap<(Protocol, u16), u32>,
    not_authorized: u32,
    next_port: u16,
    /// When the table last became full (`full` entries).
    full: usize,
    full_at: Option<Instant>,
    /// When each mapping was created since the last restart.
    created_at: Vec<Instant>,
}

impl ScriptedCgn {
    fn new(now: Instant) -> Self {
        ScriptedCgn {
            table: HashMap::new(),
            started: now,
            creations: HashMap::new(),
            not_authorized: 0,
            next_port: 20000,
            full: usize::MAX,
            full_at: None,
            created_at: Vec::new(),
        }
    }

    fn restart(&mut self, now: Instant) {
        self.table.clear();
        self.started = now;
        self.full_at = None;
        self.created_at.clear();
    }

    fn epoch(&self, now: Instant) -> u32 {
        (now - self.started).as_secs() as u32
    }

    /// Answers one request.
    fn handle(&mut self, now: Instant, bytes: &[u8]) -> Vec<u8> {
        let request = RequestRepr::parse(bytes).expect("client sends valid PCP");
        let OpcodeData::Map(map) = request.data else {
            panic!("MAP only");
        };
        let key = (map.protocol, map.internal_port);
        let (result, lifetime, port) = match self.table.get(&key) {
            Some(&(nonce, _)) if nonce != map.nonce => {
                self.not_authorized += 1;
                (ResultCode::NotAuthorized, 30, 0)
            }
            Some(&(_, port)) => (ResultCode::Success, request.lifetime.min(3600), port),
            None => {
                // PREFER_FAILURE: the suggested port, which is free after the restart.
                let port = if map.external_port != 0 {
                    map.external_port
                } else {
                    self.next_port += 1;
                    self.next_port
                };
                self.table.insert(key, (map.nonce, port));
                *self.creations.entry(key).or_default() += 1;
                self.created_at.push(now);
                if self.table.len() == self.full {
                    self.full_at = Some(now);
                }
                (ResultCode::Success, request.lifetime.min(3600), port)
            }
        };
        let options: Vec<PcpOption<'_>> = request.options.iter().collect();
        let mut buf = [0u8; 1100];
        let len = ResponseRepr {
            result,
            lifetime,
            epoch: self.epoch(now),
            data: OpcodeData::Map(MapData {
                external_port: port,
                external_address: ip(EXTERNAL),
                ..map
            }),
            options: Options::List(&options),
        }
        .emit(&mut buf)
        .expect("fits");
        buf[..len].to_vec()
    }
}

/// One run of the restart scenario: 200 PREFER_FAILURE mappings granted, the CGN restarts at
/// t = 300 s and sends its ANNOUNCE burst; from then on the link loses `loss` of the
/// datagrams each way (ANNOUNCE copies included).
/// Returns the seconds from the restart until every mapping was back at the server, and how
/// many were back within 15 s.
fn lossy_restart(seed: u64, loss: f64) -> (f64, usize) {
    const N: u16 = 200;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut announce_rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xa11);
    let mut h = Harness::with(Config::default(), seed);
    let mut cgn = ScriptedCgn::new(h.now);
    cgn.full = usize::from(N);
    let mut nonces = HashMap::new();
    let mut ids = Vec::new();
    for port in 1..=N {
        let request = MapRequest::new(Protocol::UDP, 10_000 + port, 3600)
            .suggest(SocketAddr::new(ip(EXTERNAL), 30_000 + port))
            .prefer_failure();
        ids.push(h.map(request));
    }
    // Runs the link (lossy both ways) and the clock until `until`, or until `done` holds.
    let mut run = |h: &mut Harness,
                   cgn: &mut ScriptedCgn,
                   loss: f64,
                   until: Instant,
                   done: &dyn Fn(&ScriptedCgn) -> bool|
     -> Option<Instant> {
        loop {
            for s in h.take_sent() {
                if rng.gen_bool(loss) {
                    continue;
                }
                let reply = cgn.handle(h.now, &s.bytes);
                if !rng.gen_bool(loss) {
                    h.deliver(&reply);
                }
            }
            if done(cgn) {
                return Some(h.now);
            }
            match h.engine.poll_timeout() {
                Some(t) if t <= until => {
                    h.now = h.now.max(t);
                    h.engine.handle_timeout(h.now);
                    h.drain();
                }
                _ => {
                    h.now = until;
                    return None;
                }
            }
        }
    };
    let t_restart = h.t0 + secs(300.0);
    // Set up on a clean link, then the loss starts.
    run(&mut h, &mut cgn, 0.0, t_restart, &|_| false);
    assert_eq!(
        cgn.table.len(),
        usize::from(N),
        "seed {seed}: all granted first"
    );
    for &id in &ids {
        let m = h.engine.mapping(id).expect("held");
        assert_eq!(m.phase, MappingPhase::Active, "seed {seed}");
        nonces.insert(m.internal_port, m.nonce);
    }
    h.take_events();
    // Restart; the ANNOUNCE burst (RFC 6887 §14.1.2), each copy lost with `loss`.
    cgn.restart(h.now);
    let mut at = h.now;
    let mut interval = secs(0.25);
    for _ in 0..10 {
        run(&mut h, &mut cgn, loss, at, &|_| false);
        if !announce_rng.gen_bool(loss) {
            let epoch = cgn.epoch(h.now);
            h.deliver(&announce(epoch));
        }
        at += interval;
        interval *= 2;
    }
    let all_back = |c: &ScriptedCgn| c.table.len() == usize::from(N);
    run(&mut h, &mut cgn, loss, t_restart + secs(600.0), &all_back);
    let back = cgn
        .full_at
        .unwrap_or_else(|| panic!("seed {seed}: not all back in 600 s"));
    // Let the answers settle, then check the engine's view.
    run(&mut h, &mut cgn, loss, back + secs(900.0), &|_| false);
    assert_eq!(cgn.not_authorized, 0, "seed {seed}: same nonces");
    assert!(
        cgn.creations.values().all(|&n| n == 2),
        "seed {seed}: each created once before and once after the restart, never duplicated"
    );
    for (&(_, port), &(nonce, external)) in &cgn.table {
        assert_eq!(nonces[&port], nonce, "seed {seed}: stored nonce");
        assert_eq!(external, port + 20_000, "seed {seed}: same external port");
    }
    // The engine's view: every mapping restored (its answer came through) or still asking
    // (its answers were lost; it never gives up), none dropped.
    let events = h.take_events();
    for &id in &ids {
        let phase = h.engine.mapping(id).map(|m| m.phase);
        let restored = events.iter().any(
            |e| matches!(e, Event::Restored { id: got, same_endpoint: true, .. } if *got == id),
        );
        assert!(
            (phase == Some(MappingPhase::Active) && restored)
                || phase == Some(MappingPhase::Recovering),
            "seed {seed}: {phase:?} restored={restored}"
        );
    }
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::Failed {
                code: ErrorCode::Pcp(_),
                ..
            }
        )),
        "seed {seed}"
    );
    let within_15 = cgn
        .created_at
        .iter()
        .filter(|&&t| t - t_restart <= secs(15.0))
        .count();
    ((back - t_restart).as_secs_f64(), within_15)
}

// Done-when of the daemon-engine issue: with 30 % loss both ways and a CGN restart in the
// middle, 200 mappings come back on the server, none duplicated, same nonces and ports.
//
// Timing: RFC 6887 §14.1.3 waits 0–5 s after the ANNOUNCE, then §8.1.1 sends at +0, +3 and +9 s
// (±10 %), so a mapping has at most 3 transmissions in the first 15 s. At 30 % request loss
// 2.7 % of the mappings lose all three, and with 200 mappings the chance that all are back by
// 15 s is 0.973^200 ≈ 0.4 %: "all 200 within 15 s" is out of reach of any client that keeps
// the RFC's timers. What holds, and is asserted: ≥ 90 % back within 15 s (expected ≈ 97 %), and every one back
// later on the doubling schedule (never given up), once each, with its nonce and port.
#[test]
fn two_hundred_mappings_survive_a_cgn_restart_with_thirty_percent_loss() {
    let mut runs = Vec::new();
    for seed in 1..=5 {
        let (all, within_15) = lossy_restart(seed, 0.3);
        assert!(
            within_15 >= 180,
            "seed {seed}: {within_15}/200 back within 15 s"
        );
        runs.push((all, within_15));
    }
    // Without loss: all back within the 0–5 s ANNOUNCE wait.
    let (clean, n) = lossy_restart(9, 0.0);
    assert!(clean <= 5.0 && n == 200, "{clean}");
    eprintln!("(all back after s, back within 15 s): {runs:?}; lossless: {clean:.2} s");
}

// RFC 6887 §11.3, §15.1: a create never asks for lifetime 0, so a SUCCESS with lifetime 0
// before any grant answers an older delete with the same nonce (a retried mapping whose first
// attempt was deleted). It is stale: it neither restarts the bounded exchange nor reports
// the mapping lost.
#[test]
fn stale_delete_answer_before_a_grant_changes_nothing() {
    let mut h = Harness::new();
    let id = h.map(udp_map(5000, 3600).give_up(GiveUp::after(Duration::from_secs(4))));
    let sent = h.take_sent().pop().expect("sent");
    h.advance(secs(1.0));
    h.answer(&sent, ResultCode::Success, 0, 10, 0);
    assert!(h.take_events().is_empty(), "no Expired for a stale answer");
    h.advance(secs(3.1));
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::GaveUp { id: got, exchange: Exchange::Create, .. }] if *got == id
    ));
}

// RFC 6887 §11.5 (host renumbering), §8.4: the host's address towards the server changed.
// Every mapping is created again from the new address at once — the request's Client IP and
// the datagram's source are the new address, same nonce, PREFER_FAILURE kept, the last
// external endpoint suggested — retransmitted on the §8.1.1 schedule until answered, and the
// answer is a restore; an unchanged address or an unknown path changes nothing.
#[test]
fn renumbered_host_recreates_every_mapping_from_its_new_address() {
    let mut h = Harness::new();
    let (a_id, a) = granted_pf(&mut h, 5000, 3600, 1000);
    let (b_id, b) = granted_pf(&mut h, 5001, 3600, 1000);
    h.advance(secs(100.0));
    assert!(h.take_sent().is_empty());
    let old = ip(CLIENT);
    let new = ip("192.168.0.77");
    let server = h.server;
    assert_eq!(h.engine.local_address_changed(h.now, server, 0, old), 0);
    assert_eq!(h.engine.local_address_changed(h.now, server, 9, new), 0);
    assert_eq!(h.engine.stats().renumberings, 0);
    assert_eq!(h.engine.local_address_changed(h.now, server, 0, new), 2);
    h.drain();
    assert_eq!(
        h.take_events(),
        [Event::Renumbered {
            server,
            previous: old,
            local: new
        }]
    );
    assert_eq!(h.engine.server_paths(server).map(|p| p[0].local), Some(new));
    let wave = h.take_sent();
    assert_eq!(wave.len(), 2, "both re-created at once");
    for (s, (port, first)) in wave.iter().zip([(15000, &a), (15001, &b)]) {
        assert_eq!(s.from, new, "sent from the new address");
        assert_eq!(s.request().client_ip, new, "Client IP is the new address");
        assert_eq!(s.map().nonce, first.map().nonce, "same nonce");
        assert_eq!(
            s.map().external_port,
            port,
            "suggests the last external port"
        );
        assert!(has_prefer_failure(s));
    }
    // The first copies are lost: resent after IRT ± RAND, still from the new address.
    h.advance(secs(3.31));
    let again = h.take_sent();
    assert_eq!(again.len(), 2, "resent until answered");
    assert!(again.iter().all(|s| s.from == new));
    // The answers come to the new address (one to the old address would be dropped).
    for s in &again {
        let bytes = response(
            s,
            ResultCode::Success,
            3600,
            1103,
            s.map().external_port,
            &[],
        );
        h.engine
            .handle_datagram(h.now, s.to, SocketAddr::new(new, 40001), &bytes);
    }
    h.drain();
    let events = h.take_events();
    for id in [a_id, b_id] {
        assert!(
            events.iter().any(
                |e| matches!(e, Event::Restored { id: got, same_endpoint: true, .. } if *got == id)
            ),
            "{events:?}"
        );
    }
    assert_eq!(h.engine.stats().renumberings, 1);
    // Back to renewals from the new address.
    h.advance(secs(1900.0));
    let renewals = h.take_sent();
    assert!(!renewals.is_empty() && renewals.iter().all(|s| s.from == new));
}
