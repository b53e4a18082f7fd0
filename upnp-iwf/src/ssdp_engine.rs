//! The sans-IO SSDP responder of one LAN interface (upnp-igd.md §1.5, §1.8): datagrams and
//! instants in, datagrams to send out. It answers searches after a short random delay
//! (unicast at once, multicast within [`MAX_FIRST_DELAY`], `ssdp:all` parts spaced by
//! [`PART_SPACING`] whatever MX says), announces the alive set twice at start and again
//! before half the max-age, and produces the byebye set on shutdown.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::description::{DeviceIdentity, IgdVersion};
use crate::policy::Ipv4Prefix;
use crate::source_limit::SourceLimiter;
use crate::ssdp::{SSDP_GROUP, SsdpMessage, parse};
use crate::ssdp_reply::{
    Advert, MessageContext, announcement_set, notify_alive, notify_byebye, search_answers,
    search_response,
};

/// Longest random delay before the first answer to a multicast search (Tailscale listens
/// 250 ms in all; the checklist asks for ≤ 200 ms).
pub const MAX_FIRST_DELAY: Duration = Duration::from_millis(20);
/// Spacing of the parts of a multi-part answer (`ssdp:all`).
pub const PART_SPACING: Duration = Duration::from_millis(5);
/// Largest MX honoured (UDA: MX > 5 is treated as 5).
pub const MX_MAX: u32 = 5;
/// Random delay before the first announcement (UDA: 0–100 ms).
pub const ANNOUNCE_DELAY_MAX: Duration = Duration::from_millis(100);
/// Gap between the two copies of the alive set at start (miniupnpd: 250 ms).
pub const ANNOUNCE_REPEAT: Duration = Duration::from_millis(250);
/// Most datagrams waiting to be sent; searches beyond are dropped (storm guard).
pub const MAX_QUEUE: usize = 2048;

/// A datagram to send from the interface's port-1900 socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Message bytes.
    pub payload: Vec<u8>,
}

/// Why a datagram produced no answer (for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many answers were scheduled.
    Answered(usize),
    /// The sender is not on the LAN.
    NotLan,
    /// A NOTIFY or response from another device.
    NotASearch,
    /// Unparsable.
    Malformed,
    /// Search target this device does not have (or a higher version).
    NoMatch,
    /// Queue full.
    Overloaded,
    /// The sender's answer budget ([`crate::source_limit`]) is spent: not answered, so the
    /// daemon cannot be used as an amplifier.
    RateLimited,
}

/// Settings of one interface's responder.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Device identity (UDNs).
    pub identity: DeviceIdentity,
    /// Highest version served (announced).
    pub version: IgdVersion,
    /// LOCATION, SERVER, BOOTID, CONFIGID, max-age, port.
    pub context: MessageContext,
    /// LAN prefixes whose hosts are answered.
    pub lan: Vec<Ipv4Prefix>,
    /// Re-announce period (miniupnpd: 900 s; max-age is twice this).
    pub notify_interval: Duration,
    /// Send the byebye set before the first alive set (after a LAN address change, when the
    /// old address may already be gone and its own byebye could not leave).
    pub revoke_first: bool,
}

/// The responder.
#[derive(Debug)]
pub struct SsdpEngine {
    cfg: EngineConfig,
    adverts: Vec<Advert>,
    queue: BTreeMap<(Instant, u64), Transmit>,
    seq: u64,
    next_announce: Option<Instant>,
    rng: StdRng,
    limiter: SourceLimiter,
}

impl SsdpEngine {
    /// A responder; `seed` feeds its delays (inject a fixed one in tests).
    pub fn new(cfg: EngineConfig, seed: u64) -> SsdpEngine {
        let adverts = announcement_set(&cfg.identity, cfg.version);
        SsdpEngine {
            cfg,
            adverts,
            queue: BTreeMap::new(),
            seq: 0,
            next_announce: None,
            rng: StdRng::seed_from_u64(seed),
            limiter: SourceLimiter::default(),
        }
    }

    /// The message context (LOCATION, BOOTID, …).
    pub fn context(&self) -> &MessageContext {
        &self.cfg.context
    }

    fn group(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(SSDP_GROUP, self.cfg.context.port))
    }

    fn push(&mut self, at: Instant, t: Transmit) -> bool {
        if self.queue.len() >= MAX_QUEUE {
            return false;
        }
        self.seq += 1;
        self.queue.insert((at, self.seq), t);
        true
    }

    fn queue_alive_set(&mut self, at: Instant) {
        let msgs: Vec<Vec<u8>> = self
            .adverts
            .iter()
            .map(|a| notify_alive(&self.cfg.context, a).into_bytes())
            .collect();
        let to = self.group();
        for payload in msgs {
            self.push(at, Transmit { to, payload });
        }
    }

    fn reannounce_delay(&mut self) -> Duration {
        let jitter = Duration::from_secs(self.rng.gen_range(1..=64));
        self.cfg
            .notify_interval
            .saturating_sub(jitter)
            .max(Duration::from_secs(1))
    }

    /// Schedules the start-up announcements: the alive set after a random 0–100 ms, again
    /// 250 ms later, then every notify interval minus 1–64 s of jitter.
    pub fn start(&mut self, now: Instant) {
        let mut d = Duration::from_millis(
            self.rng
                .gen_range(0..=ANNOUNCE_DELAY_MAX.as_millis() as u64),
        );
        if self.cfg.revoke_first {
            let to = self.group();
            let byes: Vec<Vec<u8>> = self
                .adverts
                .iter()
                .map(|a| notify_byebye(&self.cfg.context, a).into_bytes())
                .collect();
            for payload in byes {
                self.push(now + d, Transmit { to, payload });
            }
            d += PART_SPACING * 10;
        }
        self.queue_alive_set(now + d);
        self.queue_alive_set(now + d + ANNOUNCE_REPEAT);
        self.next_announce = Some(now + self.reannounce_delay());
    }

    /// Handles one received datagram; `multicast` tells whether it came to the group.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        multicast: bool,
        data: &[u8],
    ) -> Outcome {
        let lan = match from.ip().to_canonical() {
            IpAddr::V4(v4) => self.cfg.lan.iter().any(|p| p.contains(v4)),
            IpAddr::V6(_) => false,
        };
        if !lan {
            return Outcome::NotLan;
        }
        let search = match parse(data) {
            Ok(SsdpMessage::Search(s)) => s,
            Ok(_) => return Outcome::NotASearch,
            Err(_) => return Outcome::Malformed,
        };
        let answers = search_answers(&self.cfg.identity, self.cfg.version, &search.st);
        if answers.is_empty() {
            return Outcome::NoMatch;
        }
        if self.queue.len() + answers.len() > MAX_QUEUE {
            return Outcome::Overloaded;
        }
        let cost = u32::try_from(answers.len()).unwrap_or(u32::MAX);
        if !self.limiter.try_take(from.ip().to_canonical(), cost, now) {
            return Outcome::RateLimited;
        }
        // MX (clamped to 5) only bounds the window; the first answer always leaves quickly.
        let window = Duration::from_secs(u64::from(search.mx.unwrap_or(1).clamp(1, MX_MAX)));
        let first = if multicast {
            let max = MAX_FIRST_DELAY.min(window).as_millis() as u64;
            Duration::from_millis(self.rng.gen_range(0..=max))
        } else {
            Duration::ZERO
        };
        let n = answers.len();
        for (i, a) in answers.iter().enumerate() {
            let at = now + first + PART_SPACING * i as u32;
            let payload = search_response(&self.cfg.context, a).into_bytes();
            self.push(at, Transmit { to: from, payload });
        }
        Outcome::Answered(n)
    }

    /// Runs timers: the periodic re-announcement.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.next_announce {
            if t <= now {
                self.queue_alive_set(now);
                self.next_announce = Some(now + self.reannounce_delay());
            }
        }
    }

    /// Next datagram due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let (&key, _) = self.queue.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }

    /// When [`SsdpEngine::poll_transmit`] or [`SsdpEngine::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let q = self.queue.keys().next().map(|k| k.0);
        match (q, self.next_announce) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The byebye set, one per alive message; pending answers are dropped.
    pub fn shutdown(&mut self) -> Vec<Transmit> {
        self.queue.clear();
        self.next_announce = None;
        let to = self.group();
        self.adverts
            .iter()
            .map(|a| Transmit {
                to,
                payload: notify_byebye(&self.cfg.context, a).into_bytes(),
            })
            .collect()
    }
}

/// BOOTID for this start: Unix time in seconds (31-bit), but at least `previous + 1`.
pub fn next_boot_id(unix_secs: u64, previous: Option<u32>) -> u32 {
    let now = (unix_secs & 0x7fff_ffff) as u32;
    match previous {
        Some(p) if p >= now => p.saturating_add(1) & 0x7fff_ffff,
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssdp::split;
    use crate::ssdp_reply::server_string;

    fn engine() -> SsdpEngine {
        SsdpEngine::new(
            EngineConfig {
                identity: DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001"),
                version: IgdVersion::V2,
                context: MessageContext {
                    location: "http://192.168.0.1:5000/rootDesc.xml".into(),
                    server: server_string(),
                    boot_id: 7,
                    config_id: 9,
                    max_age: 1800,
                    port: 1900,
                },
                lan: vec!["192.168.0.0/24".parse().expect("prefix")],
                notify_interval: Duration::from_secs(900),
                revoke_first: false,
            },
            42,
        )
    }

    const CP: &str = "192.168.0.10:50000";

    fn drain(e: &mut SsdpEngine, until: Instant) -> Vec<(Instant, Transmit)> {
        let mut out = Vec::new();
        while let Some(t) = e.poll_timeout() {
            if t > until {
                break;
            }
            e.handle_timeout(t);
            while let Some(x) = e.poll_transmit(t) {
                out.push((t, x));
            }
        }
        out
    }

    fn search(st: &str, mx: &str) -> Vec<u8> {
        format!("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n{mx}ST: {st}\r\n\r\n").into_bytes()
    }

    // Checklist: MX 10 still answered, first reply within 200 ms; no MX answered.
    #[test]
    fn multicast_search_with_mx_10_or_none_is_answered_within_200ms() {
        for mx in ["MX: 10\r\n", ""] {
            let mut e = engine();
            let now = Instant::now();
            let st = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
            assert_eq!(
                e.handle(now, CP.parse().expect("addr"), true, &search(st, mx)),
                Outcome::Answered(1)
            );
            let sent = drain(&mut e, now + Duration::from_secs(6));
            assert_eq!(sent.len(), 1);
            assert!(sent[0].0 - now <= Duration::from_millis(200));
            assert_eq!(sent[0].1.to, CP.parse::<SocketAddr>().expect("addr"));
        }
    }

    // Checklist: unicast searches are answered at once.
    #[test]
    fn unicast_search_is_answered_immediately_to_the_sender() {
        let mut e = engine();
        let now = Instant::now();
        e.handle(
            now,
            CP.parse().expect("addr"),
            false,
            &search("upnp:rootdevice", ""),
        );
        let t = e.poll_transmit(now).expect("due now");
        let (start, h) = split(&t.payload).expect("parses");
        assert_eq!(start, "HTTP/1.1 200 OK");
        assert_eq!(
            h.get("LOCATION"),
            Some("http://192.168.0.1:5000/rootDesc.xml")
        );
    }

    #[test]
    fn ssdp_all_parts_are_spread_but_finish_quickly() {
        let mut e = engine();
        let now = Instant::now();
        assert_eq!(
            e.handle(
                now,
                CP.parse().expect("addr"),
                true,
                &search("ssdp:all", "MX: 3\r\n")
            ),
            Outcome::Answered(10)
        );
        let sent = drain(&mut e, now + Duration::from_secs(1));
        assert_eq!(sent.len(), 10);
        assert!(sent[9].0 - now <= Duration::from_millis(200));
    }

    // Checklist: SSDP from non-LAN sources and NOTIFY packets are ignored.
    #[test]
    fn non_lan_sources_notifies_and_garbage_are_ignored() {
        let mut e = engine();
        let now = Instant::now();
        let wan: SocketAddr = "100.64.0.1:1900".parse().expect("addr");
        assert_eq!(
            e.handle(now, wan, true, &search("ssdp:all", "")),
            Outcome::NotLan
        );
        let notify = b"NOTIFY * HTTP/1.1\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n";
        assert_eq!(
            e.handle(now, CP.parse().expect("addr"), true, notify),
            Outcome::NotASearch
        );
        assert_eq!(
            e.handle(now, CP.parse().expect("addr"), true, b"\x00\x01"),
            Outcome::Malformed
        );
        assert_eq!(
            e.handle(
                now,
                CP.parse().expect("addr"),
                true,
                &search("urn:schemas-upnp-org:device:InternetGatewayDevice:3", "")
            ),
            Outcome::NoMatch
        );
        assert_eq!(e.poll_timeout(), None);
    }

    // Checklist: at start the alive set twice, ~250 ms apart, after 0–100 ms; re-announce
    // before max-age/2; byebye for every alive NT/USN.
    #[test]
    fn announcements_twice_at_start_then_periodically_and_byebye_at_the_end() {
        let mut e = engine();
        let now = Instant::now();
        e.start(now);
        let first = drain(&mut e, now + Duration::from_secs(1));
        assert_eq!(first.len(), 20);
        assert!(first[0].0 - now <= ANNOUNCE_DELAY_MAX);
        assert_eq!(first[10].0 - first[0].0, ANNOUNCE_REPEAT);
        for (_, t) in &first {
            assert_eq!(
                t.to,
                "239.255.255.250:1900".parse::<SocketAddr>().expect("addr")
            );
            assert!(String::from_utf8_lossy(&t.payload).contains("NTS: ssdp:alive"));
        }
        let again = drain(&mut e, now + Duration::from_secs(900));
        assert_eq!(again.len(), 10);
        assert!(again[0].0 - now < Duration::from_secs(900));
        assert!(again[0].0 - now >= Duration::from_secs(900 - 64));
        let bye = e.shutdown();
        assert_eq!(bye.len(), 10);
        assert!(
            bye.iter()
                .all(|t| String::from_utf8_lossy(&t.payload).contains("NTS: ssdp:byebye"))
        );
        assert_eq!(e.poll_timeout(), None);
    }

    // upnp-igd.md §1.8: after a LAN address change, revoke then announce again.
    #[test]
    fn restart_after_address_change_sends_byebye_before_alive() {
        let mut e = engine();
        e.cfg.revoke_first = true;
        let now = Instant::now();
        e.start(now);
        let sent = drain(&mut e, now + Duration::from_secs(1));
        assert_eq!(sent.len(), 30);
        let nts: Vec<bool> = sent
            .iter()
            .map(|(_, t)| String::from_utf8_lossy(&t.payload).contains("ssdp:byebye"))
            .collect();
        assert!(nts[..10].iter().all(|b| *b));
        assert!(nts[10..].iter().all(|b| !*b));
    }

    #[test]
    fn queue_is_bounded_under_a_search_storm() {
        let mut e = engine();
        let now = Instant::now();
        let mut overloaded = 0;
        for i in 0..(MAX_QUEUE / 10 + 10) {
            // Many sources, each within its own answer budget.
            let from = SocketAddr::from(([192, 168, 0, (i % 250) as u8 + 1], 1900 + i as u16));
            if e.handle(now, from, true, &search("ssdp:all", "")) == Outcome::Overloaded {
                overloaded += 1;
            }
        }
        assert!(overloaded > 0);
        assert!(e.queue.len() <= MAX_QUEUE);
    }

    // Issue #13 item 5: one source gets a bounded number of answers per second, whatever
    // it sends (no amplification); other sources are still answered.
    #[test]
    fn answers_to_one_source_are_bounded_per_second() {
        let mut e = engine();
        let now = Instant::now();
        let from: SocketAddr = CP.parse().expect("addr");
        let outcomes: Vec<Outcome> = (0..5000)
            .map(|_| e.handle(now, from, true, &search("ssdp:all", "")))
            .collect();
        let answered = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Answered(_)))
            .count();
        assert_eq!(answered, 4);
        assert!(outcomes[4..].iter().all(|o| *o == Outcome::RateLimited));
        let sent = drain(&mut e, now + Duration::from_secs(1));
        assert_eq!(sent.len(), crate::source_limit::ANSWER_BURST as usize);
        let other: SocketAddr = "192.168.0.11:50000".parse().expect("addr");
        assert_eq!(
            e.handle(now, other, true, &search("ssdp:all", "")),
            Outcome::Answered(10)
        );
    }

    // Checklist: BOOTID increases on every restart.
    #[test]
    fn boot_id_increases_across_restarts_even_with_a_clock_step_back() {
        assert_eq!(next_boot_id(1000, None), 1000);
        assert_eq!(next_boot_id(1000, Some(999)), 1000);
        assert_eq!(next_boot_id(1000, Some(1000)), 1001);
        assert_eq!(next_boot_id(5, Some(1000)), 1001);
        assert!(next_boot_id(u64::MAX, None) <= 0x7fff_ffff);
    }
}
