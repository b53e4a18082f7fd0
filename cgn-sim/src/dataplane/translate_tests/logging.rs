//! What the CGN logs (RFC 6888 §4, REQ-12): subscribers and their external endpoints, never the
//! destinations they talk to.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::{PoolConfig, SectionConfig};
use pcp_client::wire::PeerData;

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }
}

fn peer_request(r: &mut Rig, client: Ipv4Addr, remote: SocketAddrV4) {
    let req = RequestRepr {
        lifetime: 3600,
        client_ip: IpAddr::V4(client),
        data: OpcodeData::Peer(PeerData {
            map: MapData {
                nonce: Nonce([3; 12]),
                protocol: Protocol::UDP,
                internal_port: 7000,
                external_port: 0,
                external_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
            remote_peer_port: remote.port(),
            remote_peer_address: IpAddr::V4(*remote.ip()),
        }),
        options: Options::EMPTY,
    };
    let mut buf = [0u8; 1100];
    let len = req.emit(&mut buf).expect("emit");
    let mut out = [0u8; 1100];
    let from = SocketAddr::new(IpAddr::V4(client), 40000);
    let n = r
        .server
        .handle(r.start, from, Interface::Inside, &buf[..len], &mut out)
        .expect("answer");
    let resp = ResponseRepr::parse(&out[..n]).expect("response");
    assert!(resp.result.is_success(), "{:?}", resp.result);
}

// RFC 6888 REQ-12 (SHOULD NOT log destinations): with every log level on (TRACE), a
// subscriber's MAP with a FILTER, a PEER to a remote peer, outbound flows to two Internet
// hosts, their answers, an ICMP error, an unsolicited SYN answered after 6 s, expiry, a
// restart and a renumbering leave log lines about the subscriber and its mappings, and none
// of them names a destination (the remote peers 203.0.113.50 and 203.0.113.77).
#[test]
fn destinations_are_never_logged() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut r = rig();
        let filter = [PcpOption::Filter(Filter {
            prefix_length: 128,
            remote_peer_port: 0,
            remote_peer_address: IpAddr::V4(OTHER),
        })];
        let ext = r.map(A, 6000, &filter);
        peer_request(&mut r, A, SocketAddrV4::new(PEER, 80));
        let mut p = udp((A, 5000), (PEER, 9000), b"hi");
        assert_eq!(r.send(1, &mut p), Verdict::Forward);
        let mut q = udp((A, 5000), (OTHER, 53), b"q");
        assert_eq!(r.send(1, &mut q), Verdict::Forward);
        let out = flow(&p).0;
        let mut reply = udp((PEER, 9000), out, b"back");
        assert_eq!(r.send(2, &mut reply), Verdict::Forward);
        let mut inbound = udp((OTHER, 1), (*ext.ip(), ext.port()), b"in");
        assert_eq!(r.send(2, &mut inbound), Verdict::Forward);
        let mut err = port_unreachable(&udp((out.0, out.1), (PEER, 9000), b"x"), PEER);
        let _ = r.send(3, &mut err);
        let mut syn = tcp((OTHER, 4000), (out.0, 4444), true, false);
        assert_eq!(
            r.send(3, &mut syn),
            Verdict::Drop(DropReason::UnsolicitedSyn)
        );
        let mut tick = udp((PEER, 1), (OTHER, 2), b"t");
        let _ = r.send(10, &mut tick);
        while r.nat.poll_transmit().is_some() {}
        let pools = vec![PoolConfig {
            id: 2,
            sections: vec![SectionConfig {
                id: 0,
                ranges: vec!["192.0.2.0/29".into()],
            }],
        }];
        let now = r.at(20);
        r.server.replace_pools(now, pools).expect("pools");
        let now = r.at(30);
        r.server.restart(now, false);
        let _ = r.send(100_000, &mut tick);
    });
    let text = log.text();
    assert!(
        text.contains("MAP created") && text.contains("PEER created"),
        "the capture works and mappings are logged:\n{text}"
    );
    assert!(
        text.contains("100.64.0.2"),
        "subscribers are logged:\n{text}"
    );
    for destination in [PEER.to_string(), OTHER.to_string()] {
        assert!(
            !text.contains(&destination),
            "destination {destination} in the log:\n{text}"
        );
    }
}
