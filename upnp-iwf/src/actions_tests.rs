//! Unit tests of the action layer, one per SOAP checklist line of upnp-igd.md §10.

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use super::*;
use crate::mapping::MemoryBackend;
use crate::policy::{Ipv4Prefix, Policy};

const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

/// Drives a future that completes without waiting (the in-memory backend never waits).
pub(crate) fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = TaskContext::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete");
}

fn igd(now: Instant) -> Igd<MemoryBackend> {
    Igd {
        backend: Arc::new(MemoryBackend::new(
            now,
            Some(Ipv4Addr::new(198, 51, 100, 7)),
            None,
        )),
        policy: Policy {
            lan: vec![Ipv4Prefix::new(Ipv4Addr::new(192, 168, 0, 0), 24)],
            ..Policy::default()
        }
        .into(),
        identity: DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001"),
        link: LinkInfo::default(),
    }
}

fn ctx(now: Instant, caller: Ipv4Addr, version: IgdVersion) -> Context {
    Context {
        caller,
        version,
        now,
    }
}

fn req(args: &[(&str, &str)]) -> SoapRequest {
    SoapRequest {
        action: String::new(),
        args: args
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

fn add_req(ext: &str, proto: &str, int: &str, client: &str, lease: &str) -> SoapRequest {
    req(&[
        ("NewRemoteHost", ""),
        ("NewExternalPort", ext),
        ("NewProtocol", proto),
        ("NewInternalPort", int),
        ("NewInternalClient", client),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", "test"),
        ("NewLeaseDuration", lease),
    ])
}

fn call(
    g: &Igd<MemoryBackend>,
    c: &Context,
    action: &str,
    r: &SoapRequest,
) -> Result<Vec<(&'static str, OutValue)>, UpnpError> {
    ready(g.handle(c, action, r))
}

fn out<'a>(outs: &'a [(&'static str, OutValue)], name: &str) -> &'a str {
    match outs.iter().find(|(n, _)| *n == name).map(|(_, v)| v) {
        Some(OutValue::Text(t)) | Some(OutValue::CData(t)) => t,
        None => panic!("no out arg {name}"),
    }
}

#[test]
fn unknown_action_is_401() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    assert_eq!(
        call(&g, &c, "FormatHardDisk", &req(&[])),
        Err(UpnpError::InvalidAction)
    );
}

// GetExternalIPAddress returns the public IPv4, or an empty element when unknown.
#[test]
fn external_ip_is_reported_or_empty_never_zero() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    let o = call(&g, &c, "GetExternalIPAddress", &req(&[])).expect("ok");
    assert_eq!(out(&o, "NewExternalIPAddress"), "198.51.100.7");
    g.backend.set_external_address(now, None);
    let o = call(&g, &c, "GetExternalIPAddress", &req(&[])).expect("ok");
    assert_eq!(out(&o, "NewExternalIPAddress"), "");
    let o = call(&g, &c, "GetStatusInfo", &req(&[])).expect("ok");
    assert_eq!(out(&o, "NewConnectionStatus"), "Disconnected");
}

#[test]
fn status_info_says_connected_error_none_and_uptime() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now + Duration::from_secs(42), ME, IgdVersion::V2);
    let o = call(&g, &c, "GetStatusInfo", &req(&[])).expect("ok");
    assert_eq!(
        o.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["NewConnectionStatus", "NewLastConnectionError", "NewUptime"]
    );
    assert_eq!(out(&o, "NewConnectionStatus"), "Connected");
    assert_eq!(out(&o, "NewLastConnectionError"), "ERROR_NONE");
    assert_eq!(out(&o, "NewUptime"), "42");
}

// Lease 0 succeeds; IGD:2 reports ≤ 604800; IGD:1 keeps it permanent (0).
#[test]
fn lease_zero_is_604800_on_igd2_and_permanent_on_igd1() {
    let now = Instant::now();
    let g = igd(now);
    let c2 = ctx(now, ME, IgdVersion::V2);
    call(
        &g,
        &c2,
        "AddPortMapping",
        &add_req("5000", "UDP", "5000", "192.168.0.10", "0"),
    )
    .expect("lease 0 accepted");
    let key = req(&[
        ("NewRemoteHost", ""),
        ("NewExternalPort", "5000"),
        ("NewProtocol", "UDP"),
    ]);
    let o = call(&g, &c2, "GetSpecificPortMappingEntry", &key).expect("present");
    assert_eq!(out(&o, "NewLeaseDuration"), "604800");
    let c1 = ctx(now, ME, IgdVersion::V1);
    call(
        &g,
        &c1,
        "AddPortMapping",
        &add_req("5001", "UDP", "5001", "", "0"),
    )
    .expect("v1");
    let key1 = req(&[("NewExternalPort", "5001"), ("NewProtocol", "UDP")]);
    let o = call(&g, &c1, "GetSpecificPortMappingEntry", &key1).expect("present");
    assert_eq!(out(&o, "NewLeaseDuration"), "0");
}

#[test]
fn lease_above_604800_is_clamped_on_igd2() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("5000", "TCP", "5000", "", "9999999"),
    )
    .expect("clamped, not rejected");
    let m = g.backend.list(now);
    assert_eq!(m[0].lease.remaining_secs(now), MAX_LEASE_V2);
}

// Repeating an identical AddPortMapping refreshes; another host gets 718.
#[test]
fn identical_add_refreshes_and_other_host_conflicts() {
    let now = Instant::now();
    let mut g = igd(now);
    g.policy.get_mut().secure_mode = false;
    let c = ctx(now, ME, IgdVersion::V2);
    let r = add_req("6000", "TCP", "6000", "192.168.0.10", "3600");
    call(&g, &c, "AddPortMapping", &r).expect("first");
    let later = ctx(now + Duration::from_secs(100), ME, IgdVersion::V2);
    call(&g, &later, "AddPortMapping", &r).expect("refresh");
    assert_eq!(
        g.backend.list(later.now)[0].lease.remaining_secs(later.now),
        3600
    );
    let c_other = ctx(now, OTHER, IgdVersion::V2);
    assert_eq!(
        call(
            &g,
            &c_other,
            "AddPortMapping",
            &add_req("6000", "TCP", "6000", "192.168.0.11", "3600")
        ),
        Err(UpnpError::ConflictInMappingEntry)
    );
}

#[test]
fn external_port_zero_is_716_internal_port_zero_is_402_or_732() {
    let now = Instant::now();
    let g = igd(now);
    let c2 = ctx(now, ME, IgdVersion::V2);
    let c1 = ctx(now, ME, IgdVersion::V1);
    assert_eq!(
        call(
            &g,
            &c2,
            "AddPortMapping",
            &add_req("0", "TCP", "80", "", "0")
        ),
        Err(UpnpError::WildCardNotPermittedInExtPort)
    );
    assert_eq!(
        call(
            &g,
            &c2,
            "AddPortMapping",
            &add_req("80", "TCP", "0", "", "0")
        ),
        Err(UpnpError::WildCardNotPermittedInIntPort)
    );
    assert_eq!(
        call(
            &g,
            &c1,
            "AddPortMapping",
            &add_req("80", "TCP", "0", "", "0")
        ),
        Err(UpnpError::InvalidArgs)
    );
}

#[test]
fn ill_typed_or_missing_arguments_are_402() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    for r in [
        add_req("http", "TCP", "80", "", "0"),
        add_req("80", "SCTP", "80", "", "0"),
        add_req("80", "TCP", "70000", "", "0"),
        add_req("80", "TCP", "80", "host.example", "0"),
        add_req("80", "TCP", "80", "", "-1"),
        req(&[("NewExternalPort", "80"), ("NewProtocol", "TCP")]),
    ] {
        assert_eq!(
            call(&g, &c, "AddPortMapping", &r),
            Err(UpnpError::InvalidArgs)
        );
    }
    let long = "x".repeat(MAX_DESCRIPTION + 1);
    let mut r = add_req("80", "TCP", "80", "", "0");
    r.args[6].1 = long;
    assert_eq!(
        call(&g, &c, "AddPortMapping", &r),
        Err(UpnpError::StringArgumentTooLong)
    );
}

// Empty NewInternalClient maps to the caller's address.
#[test]
fn empty_internal_client_means_the_caller() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("7000", "TCP", "7000", " ", "0"),
    )
    .expect("ok");
    assert_eq!(g.backend.list(now)[0].internal_client, ME);
}

// Secure mode: InternalClient ≠ caller → 606 (IGD:2) / 718 (IGD:1).
#[test]
fn foreign_internal_client_is_606_on_v2_and_718_on_v1() {
    let now = Instant::now();
    let g = igd(now);
    let r = add_req("7000", "TCP", "7000", "192.168.0.11", "0");
    assert_eq!(
        call(&g, &ctx(now, ME, IgdVersion::V2), "AddPortMapping", &r),
        Err(UpnpError::ActionNotAuthorized)
    );
    assert_eq!(
        call(&g, &ctx(now, ME, IgdVersion::V1), "AddPortMapping", &r),
        Err(UpnpError::ConflictInMappingEntry)
    );
}

// Lower-case tcp accepted; responses say TCP.
#[test]
fn lower_case_protocol_is_accepted_and_reported_upper_case() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("8000", "tcp", "8000", "", "0"),
    )
    .expect("ok");
    let o = call(
        &g,
        &c,
        "GetGenericPortMappingEntry",
        &req(&[("NewPortMappingIndex", "0")]),
    )
    .expect("entry");
    assert_eq!(out(&o, "NewProtocol"), "TCP");
    assert_eq!(o.len(), 8, "all eight out arguments (igd-next needs them)");
    assert_eq!(out(&o, "NewRemoteHost"), "");
    assert_eq!(out(&o, "NewEnabled"), "1");
}

// GetGenericPortMappingEntry index = count → 713; non-numeric → 402.
#[test]
fn generic_entry_past_the_end_is_713_and_non_numeric_is_402() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("8000", "UDP", "8000", "", "0"),
    )
    .expect("ok");
    assert_eq!(
        call(
            &g,
            &c,
            "GetGenericPortMappingEntry",
            &req(&[("NewPortMappingIndex", "1")])
        ),
        Err(UpnpError::SpecifiedArrayIndexInvalid)
    );
    assert_eq!(
        call(
            &g,
            &c,
            "GetGenericPortMappingEntry",
            &req(&[("NewPortMappingIndex", "one")])
        ),
        Err(UpnpError::InvalidArgs)
    );
}

// GetSpecificPortMappingEntry absent → 714; present → remaining lease.
#[test]
fn specific_entry_absent_is_714_present_reports_remaining_lease() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    let key = req(&[("NewExternalPort", "9000"), ("NewProtocol", "TCP")]);
    assert_eq!(
        call(&g, &c, "GetSpecificPortMappingEntry", &key),
        Err(UpnpError::NoSuchEntryInArray)
    );
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("9000", "TCP", "9001", "", "100"),
    )
    .expect("ok");
    let later = ctx(now + Duration::from_secs(40), ME, IgdVersion::V2);
    let o = call(&g, &later, "GetSpecificPortMappingEntry", &key).expect("present");
    assert_eq!(out(&o, "NewLeaseDuration"), "60");
    assert_eq!(out(&o, "NewInternalPort"), "9001");
    let gone = ctx(now + Duration::from_secs(100), ME, IgdVersion::V2);
    assert_eq!(
        call(&g, &gone, "GetSpecificPortMappingEntry", &key),
        Err(UpnpError::NoSuchEntryInArray),
        "lease honoured"
    );
}

// DeletePortMapping absent → 714; other host's → 606 (v2) / 714 (v1).
#[test]
fn delete_absent_is_714_and_foreign_is_606() {
    let now = Instant::now();
    let g = igd(now);
    let key = req(&[("NewExternalPort", "9100"), ("NewProtocol", "UDP")]);
    let me = ctx(now, ME, IgdVersion::V2);
    assert_eq!(
        call(&g, &me, "DeletePortMapping", &key),
        Err(UpnpError::NoSuchEntryInArray)
    );
    call(
        &g,
        &me,
        "AddPortMapping",
        &add_req("9100", "UDP", "9100", "", "0"),
    )
    .expect("ok");
    assert_eq!(
        call(
            &g,
            &ctx(now, OTHER, IgdVersion::V2),
            "DeletePortMapping",
            &key
        ),
        Err(UpnpError::ActionNotAuthorized)
    );
    assert_eq!(
        call(
            &g,
            &ctx(now, OTHER, IgdVersion::V1),
            "DeletePortMapping",
            &key
        ),
        Err(UpnpError::NoSuchEntryInArray)
    );
    call(&g, &me, "DeletePortMapping", &key).expect("own mapping deleted");
    assert_eq!(g.backend.count(now), 0);
}

// Issue #13 item 5: with no rule configured a LAN host's AddPortMapping of TCP 80 is refused
// (606 on IGD:2, 718 on IGD:1, upnp-igd.md §4.2) and allowed once a rule says so;
// AddAnyPortMapping for internal port 80 finds no permitted port.
#[test]
fn add_port_mapping_of_tcp_80_needs_a_rule() {
    let now = Instant::now();
    let mut g = igd(now);
    for (v, code) in [
        (IgdVersion::V2, UpnpError::ActionNotAuthorized),
        (IgdVersion::V1, UpnpError::ConflictInMappingEntry),
    ] {
        let c = ctx(now, ME, v);
        assert_eq!(
            call(
                &g,
                &c,
                "AddPortMapping",
                &add_req("80", "TCP", "80", "", "0")
            ),
            Err(code)
        );
    }
    let c = ctx(now, ME, IgdVersion::V2);
    assert_eq!(
        call(
            &g,
            &c,
            "AddAnyPortMapping",
            &add_req("80", "TCP", "80", "", "0")
        ),
        Err(UpnpError::ActionNotAuthorized)
    );
    assert_eq!(g.backend.count(now), 0);
    g.policy.get_mut().rules = vec!["allow 80 192.168.0.10/32 80".parse().expect("rule")];
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("80", "TCP", "80", "", "0"),
    )
    .expect("allowed");
    assert_eq!(g.backend.count(now), 1);
}

// AddAnyPortMapping returns NewReservedPort = the port really mapped.
#[test]
fn add_any_returns_the_reserved_port() {
    let now = Instant::now();
    let mut g = igd(now);
    g.policy.get_mut().secure_mode = false;
    call(
        &g,
        &ctx(now, OTHER, IgdVersion::V2),
        "AddPortMapping",
        &add_req("10000", "TCP", "10000", "192.168.0.11", "0"),
    )
    .expect("taken by other");
    let c = ctx(now, ME, IgdVersion::V2);
    let o = call(
        &g,
        &c,
        "AddAnyPortMapping",
        &add_req("10000", "TCP", "10000", "", "0"),
    )
    .expect("any");
    assert_eq!(out(&o, "NewReservedPort"), "10001");
    let o = call(
        &g,
        &c,
        "AddAnyPortMapping",
        &add_req("0", "TCP", "10000", "", "0"),
    )
    .expect("any port");
    let p: u16 = out(&o, "NewReservedPort").parse().expect("number");
    assert!(p >= 1);
}

// DeletePortMappingRange Start > End → 733; empty range → 730.
#[test]
fn delete_range_inconsistent_is_733_and_empty_is_730() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    let range = |s: &str, e: &str| {
        req(&[
            ("NewStartPort", s),
            ("NewEndPort", e),
            ("NewProtocol", "TCP"),
            ("NewManage", "0"),
        ])
    };
    assert_eq!(
        call(&g, &c, "DeletePortMappingRange", &range("200", "100")),
        Err(UpnpError::InconsistentParameter)
    );
    assert_eq!(
        call(&g, &c, "DeletePortMappingRange", &range("100", "200")),
        Err(UpnpError::PortMappingNotFound)
    );
    for p in ["1150", "1160"] {
        call(&g, &c, "AddPortMapping", &add_req(p, "TCP", p, "", "0")).expect("ok");
    }
    call(
        &g,
        &c,
        "AddPortMapping",
        &add_req("1150", "UDP", "1150", "", "0"),
    )
    .expect("ok");
    call(&g, &c, "DeletePortMappingRange", &range("1100", "1200")).expect("deleted");
    assert_eq!(g.backend.count(now), 1, "UDP one kept");
    let manage = req(&[
        ("NewStartPort", "1"),
        ("NewEndPort", "65535"),
        ("NewProtocol", "UDP"),
        ("NewManage", "1"),
    ]);
    assert_eq!(
        call(&g, &c, "DeletePortMappingRange", &manage),
        Err(UpnpError::ActionNotAuthorized),
        "Manage=1 needs authorization in secure mode"
    );
}

/// A backend whose deletes each wait, like a PCP delete waiting for its answer, until
/// `expected` deletes are waiting at once: a DeletePortMappingRange that deleted one mapping
/// after another would never finish.
struct SlowDeletes {
    inner: MemoryBackend,
    expected: usize,
    waiting: std::sync::atomic::AtomicUsize,
    most_at_once: std::sync::atomic::AtomicUsize,
}

impl crate::mapping::PortMappingBackend for SlowDeletes {
    fn wan_status(&self, now: Instant) -> crate::mapping::WanStatus {
        self.inner.wan_status(now)
    }
    fn add(
        &self,
        now: Instant,
        request: crate::mapping::AddRequest,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send {
        self.inner.add(now, request)
    }
    fn delete(
        &self,
        now: Instant,
        key: crate::mapping::MappingKey,
    ) -> impl Future<Output = Result<PortMapping, MappingError>> + Send {
        use std::sync::atomic::Ordering::SeqCst;
        let mut counted = false;
        std::future::poll_fn(move |_| {
            if !counted {
                counted = true;
                let now_waiting = self.waiting.fetch_add(1, SeqCst) + 1;
                self.most_at_once.fetch_max(now_waiting, SeqCst);
            }
            if self.most_at_once.load(SeqCst) < self.expected {
                return Poll::Pending;
            }
            Poll::Ready(ready(self.inner.delete(now, key)))
        })
    }
    fn get(&self, now: Instant, key: &crate::mapping::MappingKey) -> Option<PortMapping> {
        self.inner.get(now, key)
    }
    fn list(&self, now: Instant) -> Vec<PortMapping> {
        self.inner.list(now)
    }
    fn expire(&self, now: Instant) -> Vec<PortMapping> {
        self.inner.expire(now)
    }
    fn update_id(&self) -> u32 {
        self.inner.update_id()
    }
}

// RFC 6970 §5.8: one PCP delete per mapping of the range. They run at once, so a range is
// answered within one delete's wait (the core's 4 s at most), under a control point's 5 s
// SOAP timeout however many mappings it holds, and not one wait per mapping.
#[test]
fn delete_range_sends_every_delete_at_once() {
    let now = Instant::now();
    let memory = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    for p in 2000..2010u16 {
        let p = p.to_string();
        call(
            &memory,
            &c,
            "AddPortMapping",
            &add_req(&p, "UDP", &p, "", "0"),
        )
        .expect("ok");
    }
    let slow = Igd {
        backend: Arc::new(SlowDeletes {
            inner: Arc::try_unwrap(memory.backend).unwrap_or_else(|_| panic!("one owner")),
            expected: 10,
            waiting: 0.into(),
            most_at_once: 0.into(),
        }),
        policy: memory.policy,
        identity: memory.identity,
        link: memory.link,
    };
    let range = req(&[
        ("NewStartPort", "2000"),
        ("NewEndPort", "2009"),
        ("NewProtocol", "UDP"),
        ("NewManage", "0"),
    ]);
    ready(slow.handle(&c, "DeletePortMappingRange", &range)).expect("deleted");
    assert_eq!(
        slow.backend
            .most_at_once
            .load(std::sync::atomic::Ordering::SeqCst),
        10,
        "all ten deletes waited at the same time"
    );
    assert_eq!(slow.backend.inner.count(now), 0);
}

// GetListOfPortMappings: CDATA-wrapped p:PortMappingList with NewDescription/NewLeaseTime;
// descriptions with & < > stay well-formed.
#[test]
fn list_of_port_mappings_is_cdata_with_escaped_descriptions() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    let mut r = add_req("4000", "TCP", "4000", "", "3600");
    r.args[6].1 = "a&b <c>".into();
    call(&g, &c, "AddPortMapping", &r).expect("ok");
    let list = req(&[
        ("NewStartPort", "1"),
        ("NewEndPort", "65535"),
        ("NewProtocol", "TCP"),
        ("NewManage", "1"),
        ("NewNumberOfPorts", "1000"),
    ]);
    let o = call(&g, &c, "GetListOfPortMappings", &list).expect("listing");
    assert!(matches!(o[0].1, OutValue::CData(_)));
    let doc = out(&o, "NewPortListing");
    assert!(doc.contains("<p:NewDescription>a&amp;b &lt;c&gt;</p:NewDescription>"));
    assert!(doc.contains("<p:NewLeaseTime>3600</p:NewLeaseTime>"));
    assert!(doc.starts_with("<p:PortMappingList"));
    let udp = req(&[
        ("NewStartPort", "1"),
        ("NewEndPort", "65535"),
        ("NewProtocol", "UDP"),
        ("NewManage", "1"),
        ("NewNumberOfPorts", "0"),
    ]);
    assert_eq!(
        call(&g, &c, "GetListOfPortMappings", &udp),
        Err(UpnpError::PortMappingNotFound)
    );
}

// Permission rules and quota.
#[test]
fn deny_rule_is_606_and_quota_is_728() {
    let now = Instant::now();
    let mut g = igd(now);
    g.policy.get_mut().rules = vec!["deny 0-1023 0.0.0.0/0 0-65535".parse().expect("rule")];
    // This test is about a configured rule: no built-in rules after it.
    g.policy.get_mut().builtin_rules = false;
    g.policy.get_mut().max_per_client = Some(1);
    let c = ctx(now, ME, IgdVersion::V2);
    assert_eq!(
        call(
            &g,
            &c,
            "AddPortMapping",
            &add_req("80", "TCP", "80", "", "0")
        ),
        Err(UpnpError::ActionNotAuthorized)
    );
    let o = call(
        &g,
        &c,
        "AddAnyPortMapping",
        &add_req("80", "TCP", "80", "", "0"),
    )
    .expect("any port skips denied ports");
    assert_eq!(out(&o, "NewReservedPort"), "1024");
    assert_eq!(
        call(
            &g,
            &c,
            "AddPortMapping",
            &add_req("2000", "TCP", "80", "", "0")
        ),
        Err(UpnpError::NoPortMapsAvailable)
    );
    assert_eq!(
        call(
            &g,
            &ctx(now, ME, IgdVersion::V1),
            "AddPortMapping",
            &add_req("2000", "TCP", "80", "", "0")
        ),
        Err(UpnpError::ActionFailed)
    );
}

#[test]
fn query_state_variable_answers_known_vars_and_404_otherwise() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V1);
    let o = call(
        &g,
        &c,
        "QueryStateVariable",
        &req(&[("varName", "ConnectionStatus")]),
    )
    .expect("known");
    assert_eq!(o, vec![("return", OutValue::Text("Connected".into()))]);
    assert_eq!(
        call(
            &g,
            &c,
            "QueryStateVariable",
            &req(&[("varName", "Password")])
        ),
        Err(UpnpError::InvalidVar)
    );
}

#[test]
fn connection_control_actions_are_refused_with_their_codes() {
    let now = Instant::now();
    let g = igd(now);
    let c = ctx(now, ME, IgdVersion::V2);
    assert_eq!(
        call(
            &g,
            &c,
            "SetConnectionType",
            &req(&[("NewConnectionType", "IP_Bridged")])
        ),
        Err(UpnpError::ReadOnly)
    );
    assert_eq!(
        call(&g, &c, "ForceTermination", &req(&[])),
        Err(UpnpError::ActionNotAuthorized)
    );
    let o = call(&g, &c, "GetNATRSIPStatus", &req(&[])).expect("ok");
    assert_eq!(out(&o, "NewNATEnabled"), "1");
    let o = call(&g, &c, "GetDefaultConnectionService", &req(&[])).expect("ok");
    let v = out(&o, "NewDefaultConnectionService").to_owned();
    assert!(v.ends_with(",urn:upnp-org:serviceId:WANIPConn1"));
    call(
        &g,
        &c,
        "SetDefaultConnectionService",
        &req(&[("NewDefaultConnectionService", &v)]),
    )
    .expect("own service accepted");
    assert_eq!(
        call(
            &g,
            &c,
            "SetDefaultConnectionService",
            &req(&[(
                "NewDefaultConnectionService",
                "uuid:x:WANConnectionDevice:1,y"
            )])
        ),
        Err(UpnpError::InvalidDeviceUuid)
    );
}

// WANCommonInterfaceConfig counters are ui4 (upnp-igd.md, WANCommonInterfaceConfig:1 §2.2):
// the kernel's 64-bit counts are reported modulo 2^32, so a counter past 4294967295 wraps
// around to small values instead of overflowing the ui4 or sticking at its maximum; an
// unreadable counter reads 0.
#[test]
fn link_counters_wrap_around_at_two_to_the_32() {
    let now = Instant::now();
    let root = std::env::temp_dir().join(format!("iwf-link-counters-{}", std::process::id()));
    let stats = root.join("wan0").join("statistics");
    std::fs::create_dir_all(&stats).expect("statistics dir");
    for (file, value) in [
        ("tx_bytes", "4294967301\n"),    // 2^32 + 5
        ("rx_bytes", "4294967295\n"),    // 2^32 - 1: the largest ui4, as is
        ("tx_packets", "12884901890\n"), // 3 * 2^32 + 2
        ("rx_packets", "not a number\n"),
    ] {
        std::fs::write(stats.join(file), value).expect("counter file");
    }
    let mut g = igd(now);
    g.link.wan_interface = Some("wan0".into());
    g.link.statistics_root = Some(root.clone());
    let c = ctx(now, ME, IgdVersion::V2);
    let got: Vec<String> = [
        "GetTotalBytesSent",
        "GetTotalBytesReceived",
        "GetTotalPacketsSent",
        "GetTotalPacketsReceived",
    ]
    .iter()
    .map(|a| {
        let o = call(&g, &c, a, &req(&[])).expect("counter");
        o[0].1.clone().into_text()
    })
    .collect();
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(got, ["5", "4294967295", "2", "0"]);
    let o = call(&g, &c, "GetCommonLinkProperties", &req(&[])).expect("ok");
    assert_eq!(out(&o, "NewPhysicalLinkStatus"), "Up");
    assert_eq!(out(&o, "NewWANAccessType"), "Ethernet");
}

impl OutValue {
    fn into_text(self) -> String {
        match self {
            OutValue::Text(t) | OutValue::CData(t) => t,
        }
    }
}
