//! The namespace lab of design.md §4, checked hop by hop with kernel routing only.
//!
//! Every test needs root; without it each prints `SKIPPED: …` and passes, unless
//! `NAT444_REQUIRE_PRIVILEGED=1` makes the skip a failure.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nat444_tests::lab::{Lab, LabBuilder, LabError, Node, list_namespaces, plan};
use nat444_tests::require_privileges;

fn two_subscriber_lab() -> Lab {
    LabBuilder::new()
        .second_subscriber(true)
        .build()
        .expect("lab builds")
}

fn assert_reaches(lab: &Lab, from: Node, to: Ipv4Addr) {
    let ping = lab.ping(from, to).expect("ping runs");
    assert!(ping.replied, "{from} -> {to}: no reply\n{}", ping.output);
}

fn assert_gone(names: &[String]) {
    let existing: HashSet<String> = list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .collect();
    let left: Vec<&String> = names.iter().filter(|n| existing.contains(*n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn lan_host_reaches_its_cpe_lan_address() {
    require_privileges!();
    let lab = two_subscriber_lab();
    assert_reaches(&lab, Node::Lan, plan::CPE_LAN);
}

#[test]
fn cpe_wan_reaches_cgn_inside_address() {
    require_privileges!();
    let lab = two_subscriber_lab();
    assert_reaches(&lab, Node::Cpe, plan::CGN_INSIDE);
}

#[test]
fn second_cpe_reaches_cgn_inside_over_the_shared_bridge() {
    require_privileges!();
    let lab = two_subscriber_lab();
    assert_reaches(&lab, Node::Cpe2, plan::CGN_INSIDE);
    // Both CPEs sit on one 100.64.0.0/24 segment, as subscriber-to-subscriber tests need.
    assert_reaches(&lab, Node::Cpe, plan::CPE2_WAN);
}

#[test]
fn second_subscriber_reuses_the_same_private_plan() {
    require_privileges!();
    let lab = two_subscriber_lab();
    assert_reaches(&lab, Node::Lan2, plan::CPE_LAN);
    let lan2 = lab
        .exec_ok(Node::Lan2, &["ip", "-4", "-br", "addr", "show", "eth0"])
        .expect("ip addr");
    assert!(lan2.contains("192.168.0.10/24"), "{lan2}");
}

#[test]
fn cgn_outside_reaches_internet_peer() {
    require_privileges!();
    let lab = two_subscriber_lab();
    assert_reaches(&lab, Node::Cgn, plan::INET_PEER);
}

#[test]
fn internet_peer_reaches_cgn_outside_address() {
    require_privileges!();
    let lab = two_subscriber_lab();
    assert_reaches(&lab, Node::Inet, plan::CGN_OUTSIDE);
}

#[test]
fn internet_peer_routes_the_pool_to_cgn_outside() {
    require_privileges!();
    let lab = two_subscriber_lab();
    let route = lab
        .exec_ok(Node::Inet, &["ip", "-4", "route", "get", "198.51.100.5"])
        .expect("route");
    assert!(route.contains("via 203.0.113.1 dev eth0"), "{route}");
}

#[test]
fn multicast_route_points_at_lan_side_in_lan_cpe_and_cgn() {
    require_privileges!();
    let lab = two_subscriber_lab();
    for (node, dev) in [
        (Node::Lan, "eth0"),
        (Node::Cpe, "lan0"),
        (Node::Cgn, "inside0"),
    ] {
        let routes = lab
            .exec_ok(node, &["ip", "-4", "route", "show", "224.0.0.0/4"])
            .expect("ip route");
        assert!(
            routes.contains(&format!("224.0.0.0/4 dev {dev}")),
            "{node}: {routes:?}"
        );
        // The route is what decides where ANNOUNCE (224.0.0.1) and SSDP (239.255.255.250) go.
        for group in [plan::PCP_ANNOUNCE_GROUP, plan::SSDP_GROUP] {
            let get = lab
                .exec_ok(node, &["ip", "-4", "route", "get", &group.to_string()])
                .expect("ip route get");
            assert!(get.contains(&format!("dev {dev}")), "{node} {group}: {get}");
        }
    }
}

#[test]
fn routers_forward_and_rp_filter_is_off() {
    require_privileges!();
    let lab = two_subscriber_lab();
    for node in lab.nodes().to_vec() {
        let forward = lab
            .exec_ok(node, &["sysctl", "-n", "net.ipv4.ip_forward"])
            .expect("sysctl");
        let expected = if node.forwards() { "1" } else { "0" };
        assert_eq!(forward.trim(), expected, "{node} ip_forward");
        let rp = lab
            .exec_ok(node, &["sysctl", "-n", "net.ipv4.conf.all.rp_filter"])
            .expect("sysctl");
        assert_eq!(rp.trim(), "0", "{node} rp_filter");
    }
    assert!(Node::Cpe.forwards() && Node::Cpe2.forwards() && Node::Cgn.forwards());
}

#[test]
fn loopback_is_up_in_every_namespace() {
    require_privileges!();
    let lab = two_subscriber_lab();
    for node in lab.nodes().to_vec() {
        assert_reaches(&lab, node, Ipv4Addr::LOCALHOST);
    }
}

#[test]
fn second_subscriber_is_left_out_unless_asked_for() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab builds");
    assert_eq!(lab.nodes(), [Node::Lan, Node::Cpe, Node::Cgn, Node::Inet]);
    assert!(matches!(
        lab.exec(Node::Cpe2, &["true"]),
        Err(LabError::NodeAbsent { node: Node::Cpe2 })
    ));
    let ports = lab
        .exec_ok(
            Node::Cgn,
            &["ip", "-br", "link", "show", "master", "inside0"],
        )
        .expect("ip link");
    assert!(ports.contains("sub1") && !ports.contains("sub2"), "{ports}");
    assert_reaches(&lab, Node::Cpe, plan::CGN_INSIDE);
}

#[test]
fn lab_namespaces_are_removed_on_drop() {
    require_privileges!();
    let lab = two_subscriber_lab();
    let names = lab.namespaces();
    assert_eq!(names.len(), 6);
    let existing = list_namespaces().expect("ip netns list");
    assert!(
        names.iter().all(|n| existing.contains(n)),
        "{names:?} not in {existing:?}"
    );
    drop(lab);
    assert_gone(&names);
}

#[test]
fn lab_namespaces_are_removed_when_the_test_panics() {
    require_privileges!();
    let names = RefCell::new(Vec::new());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = two_subscriber_lab();
        names.borrow_mut().extend(lab.namespaces());
        panic!("deliberate panic with the lab up");
    }));
    assert!(result.is_err(), "the closure panicked");
    let names = names.into_inner();
    assert_eq!(names.len(), 6);
    assert_gone(&names);
}

#[test]
fn labs_built_concurrently_get_distinct_names_and_both_work() {
    require_privileges!();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(two_subscriber_lab);
        let b = s.spawn(two_subscriber_lab);
        (a.join().expect("thread a"), b.join().expect("thread b"))
    });
    let names_a: HashSet<String> = a.namespaces().into_iter().collect();
    let names_b: HashSet<String> = b.namespaces().into_iter().collect();
    assert_ne!(a.prefix(), b.prefix());
    assert!(names_a.is_disjoint(&names_b), "{names_a:?} vs {names_b:?}");
    // Same addresses in both labs, no interference.
    assert_reaches(&a, Node::Lan, plan::CPE_LAN);
    assert_reaches(&b, Node::Lan, plan::CPE_LAN);
    assert_reaches(&a, Node::Cgn, plan::INET_PEER);
    assert_reaches(&b, Node::Cgn, plan::INET_PEER);
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept_at_build() {
    require_privileges!();
    // A process that has exited and been reaped: its pid names a dead run.
    let mut dead = Command::new("true").spawn().expect("spawn true");
    let dead_pid = dead.id();
    dead.wait().expect("reap true");
    let stale = format!("n444-{dead_pid}-0-cgn");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .expect("ip netns add");
    assert!(status.success());
    let lab = LabBuilder::new().build().expect("lab builds");
    assert_gone(&[stale]);
    // Our own live lab is not swept by a second build.
    let other = LabBuilder::new().build().expect("second lab builds");
    let existing = list_namespaces().expect("ip netns list");
    assert!(lab.namespaces().iter().all(|n| existing.contains(n)));
    drop(other);
}

#[test]
fn spawned_child_runs_in_its_namespace_and_is_killed_and_reaped_on_drop() {
    require_privileges!();
    let lab = two_subscriber_lab();
    let child = lab
        .spawn(
            Node::Cgn,
            &["sh", "-c", "ip -4 -br addr show inside0; exec sleep 30"],
        )
        .expect("spawn");
    let pid = child.pid();
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists());
    let mut log = String::new();
    for _ in 0..100 {
        log = child.log();
        if log.contains("100.64.0.1/24") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        log.contains("100.64.0.1/24"),
        "child did not run in cgn: {log:?}"
    );
    assert_eq!(child.try_wait().expect("try_wait"), None, "still running");
    drop(child);
    assert!(
        !Path::new(&proc_dir).exists(),
        "pid {pid} still exists after drop"
    );
}

#[test]
fn dropping_the_lab_kills_children_still_running() {
    require_privileges!();
    let lab = two_subscriber_lab();
    let child = lab.spawn(Node::Inet, &["sleep", "30"]).expect("spawn");
    let proc_dir = format!("/proc/{}", child.pid());
    let names = lab.namespaces();
    drop(lab);
    assert!(!Path::new(&proc_dir).exists(), "child outlived the lab");
    assert!(child.try_wait().is_err(), "the lab reaped it");
    assert_gone(&names);
}

#[test]
fn terminate_stops_a_child_with_sigterm() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab builds");
    let child = lab
        .spawn(
            Node::Cpe,
            &[
                "sh",
                "-c",
                "trap 'echo got TERM; exit 7' TERM; while :; do sleep 0.05; done",
            ],
        )
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(200));
    let status = child.terminate(Duration::from_secs(5)).expect("terminate");
    assert_eq!(status.code(), Some(7), "{}", child.log());
    assert!(child.log().contains("got TERM"));
}

#[test]
fn exec_reports_the_namespace_and_stderr_of_a_failing_command() {
    require_privileges!();
    let lab = LabBuilder::new().build().expect("lab builds");
    let err = lab
        .exec_ok(Node::Lan, &["ip", "link", "show", "nosuchdev0"])
        .expect_err("fails");
    let text = err.to_string();
    assert!(
        text.contains(&lab.namespace(Node::Lan).expect("lan")),
        "{text}"
    );
    assert!(text.contains("nosuchdev0"), "{text}");
}
