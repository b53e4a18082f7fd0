//! A BitTorrent-style client flow end to end (issue #12, end-to-end suite): a LAN program
//! finds the home router's IGD by SSDP with the igd-next crate (as many Rust P2P clients do),
//! maps its TCP listening port with AddPortMapping, learns its external address with
//! GetExternalIPAddress, and "announces" address:port; the Internet host connects to exactly
//! that endpoint through both NATs (upnp-iwf with PCP upstream and nftables NAT1, cgn-sim with
//! its TUN dataplane), and the two exchange a BitTorrent handshake and a piece. On exit the
//! client removes its mapping, and both NATs forget it. Needs root (SKIPPED otherwise), nft
//! and python3.

use std::time::Duration;

use nat444_tests::e2e::{Nat444, out, table_lines, wait};
use nat444_tests::lab::Node;
use nat444_tests::require_privileges;

/// The client's listening port, which it asks to have mapped as the same external port.
const PORT: u16 = 6881;
/// The torrent's info hash (20 bytes) both sides agree on.
const INFO_HASH: [u8; 20] = *b"nat444-e2e-infohash!";
/// The block the LAN client serves as piece 0 (1 KiB of a fixed pattern).
fn block() -> Vec<u8> {
    (0..1024u32).map(|i| (i % 251) as u8).collect()
}

/// The Internet peer: `HOST PORT INFO_HASH_HEX`. Connects, sends its handshake and
/// `interested`, reads the client's handshake, `unchoke` and `piece` and prints
/// `HANDSHAKE <peer id> <info hash hex>`, `UNCHOKE`, `PIECE <index> <begin> <len> <sum>`.
const BT_PEER: &str = r#"
import socket, struct, sys
host, port, info = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
s.settimeout(5)
def read(n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += d
    return b
pstr = b"BitTorrent protocol"
s.sendall(bytes([len(pstr)]) + pstr + bytes(8) + info + b"-PY0001-inetpeer0001")
s.sendall(struct.pack("!IB", 1, 2))
h = read(68)
assert h[0] == 19 and h[1:20] == pstr, h
print("HANDSHAKE %s %s" % (h[48:68].decode(errors="replace"), h[28:48].hex()), flush=True)
while True:
    length, = struct.unpack("!I", read(4))
    msg = read(length)
    if msg[0] == 1:
        print("UNCHOKE", flush=True)
    elif msg[0] == 7:
        index, begin = struct.unpack("!II", msg[1:9])
        data = msg[9:]
        print("PIECE %d %d %d %d" % (index, begin, len(data), sum(data)), flush=True)
        break
"#;

// RFC 6970 §5.5 (AddPortMapping), §5.6.1 (GetExternalIPAddress from the PCP answers), §5.7
// (DeletePortMapping): what a BitTorrent client does, through both NATs.
#[test]
fn igd_next_client_maps_its_port_learns_its_address_and_an_internet_peer_connects() {
    require_privileges!();
    let n = Nat444::start();
    let exe = std::env::current_exe().expect("exe");
    let client = n
        .lab
        .spawn(
            Node::Lan,
            &[
                "env",
                "E2E_BITTORRENT_CLIENT=1",
                &exe.to_string_lossy(),
                "--exact",
                "lan_bittorrent_client",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ],
        )
        .expect("client");
    assert!(
        wait(40, || client.log().contains("ANNOUNCE ")),
        "{}\n{}",
        client.log(),
        n.logs()
    );
    let log = client.log();
    let announced = log
        .lines()
        .find_map(|l| l.strip_prefix("ANNOUNCE "))
        .expect("announced")
        .trim()
        .to_string();
    let (ip, port) = announced.split_once(':').expect("addr:port");
    assert!(
        ip.starts_with("198.51.100."),
        "an address of the CGN's pool: {log}"
    );
    assert_eq!(port, PORT.to_string(), "{log}");
    // What the client learned is what the CGN holds, and the router's NAT1 points at it.
    let table = n.cgn_ctl(&["mappings"]);
    let map_in = table_lines(&table, "MAP IN", "TCP", &format!("[100.64.0.2:{PORT}]"));
    assert_eq!(map_in.len(), 1, "{table}");
    assert!(
        map_in[0].contains(&format!("ANY -> {announced}[")),
        "{table}"
    );
    assert!(
        n.nft_table()
            .contains(&format!("tcp dport {PORT} dnat to 192.168.0.10:{PORT}")),
        "{}",
        n.nft_table()
    );

    let hex: String = INFO_HASH.iter().map(|b| format!("{b:02x}")).collect();
    let peer = out(
        &n.lab,
        Node::Inet,
        &["python3", "-c", BT_PEER, ip, port, &hex],
        20,
    );
    assert!(
        peer.contains(&format!("HANDSHAKE -NX0001-lanclient-01 {hex}")),
        "{peer}\n{}",
        client.log()
    );
    assert!(peer.contains("UNCHOKE"), "{peer}");
    let sum: u32 = block().iter().map(|&b| u32::from(b)).sum();
    assert!(peer.contains(&format!("PIECE 0 0 1024 {sum}")), "{peer}");

    assert!(
        wait(20, || client.log().contains("HELPER OK")),
        "{}",
        client.log()
    );
    let log = client.log();
    assert!(
        log.contains("PEER 203.0.113.50:") && log.contains("INTERESTED"),
        "the client saw the Internet peer's own address and its message: {log}"
    );
    assert!(log.contains("REMOVED"), "{log}");
    // The client's DeletePortMapping reached both NATs.
    assert!(
        wait(5, || !n.cgn_ctl(&["mappings"]).contains("Type: MAP IN")),
        "{}",
        n.cgn_ctl(&["mappings"])
    );
    assert!(
        wait(5, || !n.nft_table().contains(&format!("dport {PORT}"))),
        "{}",
        n.nft_table()
    );
}

#[test]
#[ignore = "runs inside the lab's lan namespace, started by igd_next_client_maps_its_port_learns_its_address_and_an_internet_peer_connects"]
fn lan_bittorrent_client() {
    if std::env::var_os("E2E_BITTORRENT_CLIENT").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use igd_next::PortMappingProtocol;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        // Listen first, as a client does, then ask for the port.
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", PORT))
            .await
            .expect("listen");
        let gw = igd_next::aio::tokio::search_gateway(igd_next::SearchOptions {
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .await
        .expect("igd-next finds the gateway by SSDP");
        println!("GATEWAY {}", gw.addr);
        let local = format!("192.168.0.10:{PORT}").parse().expect("addr");
        gw.add_port(
            PortMappingProtocol::TCP,
            PORT,
            local,
            3600,
            "nat444 bittorrent",
        )
        .await
        .expect("AddPortMapping");
        let ip = gw.get_external_ip().await.expect("GetExternalIPAddress");
        println!("ANNOUNCE {ip}:{PORT}");

        let (mut conn, peer) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
            .await
            .expect("a peer connects within 20 s")
            .expect("accept");
        println!("PEER {peer}");
        let mut hs = [0u8; 68];
        conn.read_exact(&mut hs).await.expect("handshake");
        assert_eq!(&hs[1..20], b"BitTorrent protocol");
        assert_eq!(hs[28..48], INFO_HASH, "same torrent");
        let mut interested = [0u8; 5];
        conn.read_exact(&mut interested).await.expect("interested");
        if interested == [0, 0, 0, 1, 2] {
            println!("INTERESTED");
        }
        let mut reply = vec![19u8];
        reply.extend_from_slice(b"BitTorrent protocol");
        reply.extend_from_slice(&[0; 8]);
        reply.extend_from_slice(&INFO_HASH);
        reply.extend_from_slice(b"-NX0001-lanclient-01");
        reply.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
        let block = block();
        let len = u32::try_from(9 + block.len()).expect("small");
        reply.extend_from_slice(&len.to_be_bytes());
        reply.push(7); // piece
        reply.extend_from_slice(&0u32.to_be_bytes());
        reply.extend_from_slice(&0u32.to_be_bytes());
        reply.extend_from_slice(&block);
        conn.write_all(&reply).await.expect("send");
        conn.flush().await.expect("flush");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;

        gw.remove_port(PortMappingProtocol::TCP, PORT)
            .await
            .expect("DeletePortMapping");
        println!("REMOVED");
    });
    println!("HELPER OK");
}
