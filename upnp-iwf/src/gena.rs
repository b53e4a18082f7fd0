//! GENA eventing state (upnp-igd.md §5), sans-IO: SUBSCRIBE/renew/UNSUBSCRIBE with bounded
//! timeouts and subscriber count, the CallStranger rule (callback host = subscriber), SEQ
//! numbering, initial event and change events. Delivery is the driver's job
//! ([`crate::gena_delivery`]); this module only says what to send where.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::description::Service;
use crate::xml::escape;

/// Shortest subscription granted (UDA: SHOULD be ≥ 1800 s).
pub const MIN_TIMEOUT: u32 = 1800;
/// Longest subscription granted.
pub const MAX_TIMEOUT: u32 = 86_400;
/// Most subscriptions held at once; further SUBSCRIBEs get 503.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Most CALLBACK URLs kept per subscription.
pub const MAX_CALLBACKS: usize = 4;

/// HTTP status of a refused GENA request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GenaError {
    /// 400: SID together with CALLBACK or NT.
    #[error("400 incompatible header fields")]
    Incompatible,
    /// 412: missing/invalid CALLBACK, NT not `upnp:event`, unknown SID, or a callback not on
    /// the subscriber (CallStranger).
    #[error("412 precondition failed")]
    PreconditionFailed,
    /// 503: subscriber table full.
    #[error("503 too many subscriptions")]
    Full,
}

impl GenaError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            GenaError::Incompatible => 400,
            GenaError::PreconditionFailed => 412,
            GenaError::Full => 503,
        }
    }
}

/// A callback URL reduced to what delivery needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Callback {
    /// Host and port (host must be an IPv4 literal).
    pub addr: SocketAddr,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Callback {
    /// Parses `http://a.b.c.d[:port][/path]`; `None` otherwise.
    pub fn parse(url: &str) -> Option<Callback> {
        let rest = url.trim().strip_prefix("http://")?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()?),
            None => (hostport, 80),
        };
        let ip: Ipv4Addr = host.parse().ok()?;
        if port == 0 || path.len() > 256 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return None;
        }
        Some(Callback {
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            path: path.to_owned(),
        })
    }
}

/// Parses a `CALLBACK` header: one or more `<url>`; `None` if none is a usable http URL.
pub fn parse_callbacks(header: &str) -> Option<Vec<Callback>> {
    let mut out = Vec::new();
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        if let Some(cb) = Callback::parse(&after[..end]) {
            if out.len() < MAX_CALLBACKS {
                out.push(cb);
            }
        }
        rest = &after[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

/// `TIMEOUT: Second-N` → granted seconds (missing/`infinite`/garbage → the minimum; clamped
/// to [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`]).
pub fn granted_timeout(header: Option<&str>) -> u32 {
    header
        .and_then(|h| {
            let h = h.trim();
            let n = h.get(..7).filter(|p| p.eq_ignore_ascii_case("Second-"))?;
            let _ = n;
            h[7..].trim().parse::<u32>().ok()
        })
        .unwrap_or(MIN_TIMEOUT)
        .clamp(MIN_TIMEOUT, MAX_TIMEOUT)
}

/// A NOTIFY to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Subscription id (`uuid:…`).
    pub sid: String,
    /// `SEQ`.
    pub seq: u32,
    /// URLs to try in order.
    pub callbacks: Vec<Callback>,
    /// The `e:propertyset` body.
    pub body: String,
}

/// Answer to a successful SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// `SID` header value.
    pub sid: String,
    /// Granted seconds (`TIMEOUT: Second-N`).
    pub timeout: u32,
    /// For a new subscription: the initial event (SEQ 0), to send after the response.
    pub initial: Option<Notify>,
}

#[derive(Debug, Clone)]
struct Subscription {
    service: Service,
    callbacks: Vec<Callback>,
    expires: Instant,
    next_seq: u32,
}

/// The property-set body for `vars`, with `<e:propertyset` starting a line (rupnp's reader
/// looks for it at a line start).
pub fn property_set(vars: &[(&str, String)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\r\n<e:propertyset xmlns:e=\"urn:schemas-upnp-org:event-1-0\">",
    );
    for (name, value) in vars {
        let _ = write!(
            s,
            "<e:property><{name}>{}</{name}></e:property>",
            escape(value)
        );
    }
    s.push_str("</e:propertyset>\r\n");
    s
}

/// All subscriptions of the daemon.
#[derive(Debug, Default)]
pub struct Subscriptions {
    subs: HashMap<String, Subscription>,
    last: HashMap<Service, Vec<(&'static str, String)>>,
}

impl Subscriptions {
    /// An empty table.
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Handles SUBSCRIBE on `service`'s event URL from `subscriber`. `state` is the current
    /// evented state of the service (for the initial event); `new_sid` makes a fresh
    /// `uuid:…`.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &mut self,
        now: Instant,
        subscriber: Ipv4Addr,
        service: Service,
        callback: Option<&str>,
        nt: Option<&str>,
        sid: Option<&str>,
        timeout: Option<&str>,
        state: &[(&'static str, String)],
        new_sid: impl FnOnce() -> String,
    ) -> Result<Subscribed, GenaError> {
        self.expire(now);
        let secs = granted_timeout(timeout);
        if let Some(sid) = sid {
            if callback.is_some() || nt.is_some() {
                return Err(GenaError::Incompatible);
            }
            let sub = self
                .subs
                .get_mut(sid.trim())
                .filter(|s| s.service == service)
                .ok_or(GenaError::PreconditionFailed)?;
            sub.expires = now + Duration::from_secs(u64::from(secs));
            return Ok(Subscribed {
                sid: sid.trim().to_owned(),
                timeout: secs,
                initial: None,
            });
        }
        if nt.map(str::trim) != Some("upnp:event") {
            return Err(GenaError::PreconditionFailed);
        }
        let callbacks = callback
            .and_then(parse_callbacks)
            .ok_or(GenaError::PreconditionFailed)?;
        // CallStranger (CVE-2020-12695): every callback must point at the subscriber itself.
        if callbacks
            .iter()
            .any(|c| c.addr.ip() != IpAddr::V4(subscriber))
        {
            return Err(GenaError::PreconditionFailed);
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(GenaError::Full);
        }
        let sid = new_sid();
        let initial = Notify {
            sid: sid.clone(),
            seq: 0,
            callbacks: callbacks.clone(),
            body: property_set(state),
        };
        self.subs.insert(
            sid.clone(),
            Subscription {
                service,
                callbacks,
                expires: now + Duration::from_secs(u64::from(secs)),
                next_seq: 1,
            },
        );
        self.last.entry(service).or_insert_with(|| state.to_vec());
        Ok(Subscribed {
            sid,
            timeout: secs,
            initial: Some(initial),
        })
    }

    /// Handles UNSUBSCRIBE (412 for an unknown SID, 400 with CALLBACK/NT).
    pub fn unsubscribe(
        &mut self,
        sid: Option<&str>,
        callback: Option<&str>,
        nt: Option<&str>,
    ) -> Result<(), GenaError> {
        if callback.is_some() || nt.is_some() {
            return Err(GenaError::Incompatible);
        }
        let sid = sid.ok_or(GenaError::PreconditionFailed)?;
        self.subs
            .remove(sid.trim())
            .map(|_| ())
            .ok_or(GenaError::PreconditionFailed)
    }

    /// Drops a subscription whose deliveries keep failing.
    pub fn drop_subscription(&mut self, sid: &str) {
        self.subs.remove(sid);
    }

    /// Drops expired subscriptions.
    pub fn expire(&mut self, now: Instant) {
        self.subs.retain(|_, s| s.expires > now);
    }

    /// Compares `state` of `service` with the last one seen and returns one NOTIFY per
    /// subscriber with the variables that changed (SEQ + 1 each), or nothing.
    pub fn on_state(
        &mut self,
        now: Instant,
        service: Service,
        state: Vec<(&'static str, String)>,
    ) -> Vec<Notify> {
        self.expire(now);
        let previous = self.last.insert(service, state.clone());
        let changed: Vec<(&str, String)> = match previous {
            None => return Vec::new(),
            Some(prev) => state.into_iter().filter(|v| !prev.contains(v)).collect(),
        };
        if changed.is_empty() {
            return Vec::new();
        }
        let body = property_set(&changed);
        let mut out = Vec::new();
        for (sid, sub) in self.subs.iter_mut().filter(|(_, s)| s.service == service) {
            let seq = sub.next_seq;
            // SEQ wraps to 1, never back to 0 (0 marks the initial event).
            sub.next_seq = sub.next_seq.checked_add(1).unwrap_or(1);
            out.push(Notify {
                sid: sid.clone(),
                seq,
                callbacks: sub.callbacks.clone(),
                body: body.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);

    fn state(n: u32) -> Vec<(&'static str, String)> {
        vec![
            ("ConnectionStatus", "Connected".into()),
            ("PortMappingNumberOfEntries", n.to_string()),
        ]
    }

    fn sub(
        s: &mut Subscriptions,
        now: Instant,
        cb: &str,
        timeout: Option<&str>,
    ) -> Result<Subscribed, GenaError> {
        s.subscribe(
            now,
            CP,
            Service::WanIpConnection,
            Some(cb),
            Some("upnp:event"),
            None,
            timeout,
            &state(0),
            || "uuid:sub-1".into(),
        )
    }

    // Checklist: SUBSCRIBE → SID + TIMEOUT Second-1800; initial event SEQ 0 with every var.
    #[test]
    fn subscribe_grants_sid_timeout_and_an_initial_event() {
        let mut s = Subscriptions::new();
        let now = Instant::now();
        let r = sub(
            &mut s,
            now,
            "<http://192.168.0.10:4000/evt>",
            Some("Second-1800"),
        )
        .expect("ok");
        assert_eq!(r.sid, "uuid:sub-1");
        assert_eq!(r.timeout, 1800);
        let init = r.initial.expect("initial event");
        assert_eq!(init.seq, 0);
        assert!(
            init.body
                .contains("<ConnectionStatus>Connected</ConnectionStatus>")
        );
        assert!(
            init.body
                .contains("<PortMappingNumberOfEntries>0</PortMappingNumberOfEntries>")
        );
        assert!(init.body.contains("\n<e:propertyset"));
        assert_eq!(init.callbacks[0].path, "/evt");
    }

    // Checklist: TIMEOUT infinite or missing → finite ≥ 1800.
    #[test]
    fn infinite_missing_or_tiny_timeouts_become_finite() {
        assert_eq!(granted_timeout(Some("Second-infinite")), MIN_TIMEOUT);
        assert_eq!(granted_timeout(None), MIN_TIMEOUT);
        assert_eq!(granted_timeout(Some("Second-5")), MIN_TIMEOUT);
        assert_eq!(granted_timeout(Some("second-3600")), 3600);
        assert_eq!(granted_timeout(Some("Second-99999999")), MAX_TIMEOUT);
        assert_eq!(granted_timeout(Some("Minute-3")), MIN_TIMEOUT);
    }

    // Checklist: CALLBACK host ≠ subscriber IP → 412 (CallStranger).
    #[test]
    fn callback_to_another_host_is_412() {
        let mut s = Subscriptions::new();
        let now = Instant::now();
        assert_eq!(
            sub(&mut s, now, "<http://203.0.113.9:80/x>", None),
            Err(GenaError::PreconditionFailed)
        );
        assert_eq!(
            sub(
                &mut s,
                now,
                "<http://192.168.0.10:80/a><http://192.168.0.99/b>",
                None
            ),
            Err(GenaError::PreconditionFailed)
        );
        assert_eq!(
            sub(&mut s, now, "<ftp://192.168.0.10/>", None),
            Err(GenaError::PreconditionFailed)
        );
        assert_eq!(
            sub(&mut s, now, "http://192.168.0.10/", None),
            Err(GenaError::PreconditionFailed)
        );
        assert!(s.is_empty());
    }

    // Checklist: renewal with SID → 200; unknown SID → 412; SID + CALLBACK → 400;
    // UNSUBSCRIBE → no further events; expired subscriptions dropped.
    #[test]
    fn renew_unsubscribe_and_expiry() {
        let mut s = Subscriptions::new();
        let now = Instant::now();
        let r = sub(&mut s, now, "<http://192.168.0.10:4000/>", None).expect("ok");
        let renew = |s: &mut Subscriptions, sid: &str, cb: Option<&str>, at: Instant| {
            s.subscribe(
                at,
                CP,
                Service::WanIpConnection,
                cb,
                None,
                Some(sid),
                Some("Second-1800"),
                &[],
                || unreachable!(),
            )
        };
        assert_eq!(
            renew(&mut s, &r.sid, None, now).expect("renewed").timeout,
            1800
        );
        assert_eq!(
            renew(&mut s, "uuid:nope", None, now),
            Err(GenaError::PreconditionFailed)
        );
        assert_eq!(
            renew(&mut s, &r.sid, Some("<http://192.168.0.10:1/>"), now),
            Err(GenaError::Incompatible)
        );
        let later = now + Duration::from_secs(1700);
        renew(&mut s, &r.sid, None, later).expect("renewed before expiry");
        assert_eq!(s.len(), 1);
        s.expire(later + Duration::from_secs(1801));
        assert!(s.is_empty());
        let r = sub(&mut s, now, "<http://192.168.0.10:4000/>", None).expect("ok");
        assert_eq!(s.unsubscribe(Some(&r.sid), None, None), Ok(()));
        assert_eq!(
            s.unsubscribe(Some(&r.sid), None, None),
            Err(GenaError::PreconditionFailed)
        );
        assert!(
            s.on_state(now, Service::WanIpConnection, state(3))
                .is_empty()
        );
    }

    // Checklist: a mapping change sends PortMappingNumberOfEntries with SEQ+1.
    #[test]
    fn changes_are_notified_with_increasing_seq_and_only_changed_vars() {
        let mut s = Subscriptions::new();
        let now = Instant::now();
        sub(&mut s, now, "<http://192.168.0.10:4000/>", None).expect("ok");
        assert!(
            s.on_state(now, Service::WanIpConnection, state(0))
                .is_empty()
        );
        let n = s.on_state(now, Service::WanIpConnection, state(1));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].seq, 1);
        assert!(
            n[0].body
                .contains("<PortMappingNumberOfEntries>1</PortMappingNumberOfEntries>")
        );
        assert!(!n[0].body.contains("ConnectionStatus"));
        let n = s.on_state(now, Service::WanIpConnection, state(2));
        assert_eq!(n[0].seq, 2);
        assert!(
            s.on_state(now, Service::WanCommonInterfaceConfig, vec![])
                .is_empty()
        );
    }

    #[test]
    fn subscriber_table_is_bounded() {
        let mut s = Subscriptions::new();
        let now = Instant::now();
        for i in 0..MAX_SUBSCRIPTIONS {
            s.subscribe(
                now,
                CP,
                Service::WanIpConnection,
                Some("<http://192.168.0.10:1/>"),
                Some("upnp:event"),
                None,
                None,
                &[],
                || format!("uuid:{i}"),
            )
            .expect("room");
        }
        assert_eq!(
            s.subscribe(
                now,
                CP,
                Service::WanIpConnection,
                Some("<http://192.168.0.10:1/>"),
                Some("upnp:event"),
                None,
                None,
                &[],
                || "uuid:x".into()
            ),
            Err(GenaError::Full)
        );
    }
}
