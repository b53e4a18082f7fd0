#!/usr/bin/env bash
# Side-by-side: upnp-iwf and Debian's miniupnpd (miniupnpd-nftables) on the CPE of a private
# namespace lab, driven from the LAN host with the same clients in the same run:
#   1. raw SOAP GetStatusInfo and AddPortMapping + DeletePortMapping round trips (python
#      http.client, one TCP connection per request, N pairs each, bounded),
#   2. the same `upnpc -u URL -s` runs and `upnpc -u URL -a … / -d …` invocations (M each),
#   3. multicast M-SEARCH → first reply latency per daemon (K samples; p50/p99).
# Traffic stays inside the lab's namespaces. Needs root, a built upnp-iwf and nat444-lab
# (cargo build -p upnp-iwf -p nat444-tests --release), miniupnpd-nftables, miniupnpc.
#
# miniupnpd 2.3.1 disables port forwarding (every AddPortMapping answers UPnP error 501) when
# its WAN address is reserved/private, as the CPE's 100.64.0.2 is ("Reserved / private IP
# address … Port forwarding is impossible"), unless a STUN check (ext_perform_stun=yes) finds
# it behind an unrestricted 1:1 NAT. So this lab gets: a static 1:1 NAT in the cgn namespace
# (100.64.0.2 <-> pool address 198.51.100.1, the address upnp-iwf is given too; no cgn-sim
# runs here), a tiny STUN responder in the inet namespace (203.0.113.50:3478, the one of
# pcp-client/tests/client_miniupnpd.rs), and ext_perform_stun in miniupnpd.conf. The run stops
# if miniupnpd does not log "Port forwarding is now enabled".
# Usage: upnp-iwf/benches/side_by_side.sh TARGET_DIR [N=2000] [M=100] [K=500]
set -euo pipefail
T=${1:?target dir, e.g. target/release}; N=${2:-2000}; M=${3:-100}; K=${4:-500}
P=igdbench$$
LAB="${NAT444_LAB:-$T/nat444-lab}"; IWF="$T/upnp-iwf"
"$LAB" up --prefix "$P" --one-subscriber >/dev/null
PIDS=()
# Kill only the daemons started here (by pid), delete only this lab's namespaces.
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # miniupnpd takes about a second to remove its rules and exit; wait (bounded) for all of them.
  for _ in $(seq 1 30); do
    alive=0; for p in "${PIDS[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
    if [ $alive = 0 ]; then break; fi; sleep 0.1
  done
  for n in lan cpe cgn inet; do ip netns delete "$P-$n" 2>/dev/null || true; done
}
trap cleanup EXIT
CPE="ip netns exec $P-cpe"; LAN="ip netns exec $P-lan"; CGN="ip netns exec $P-cgn"; INET="ip netns exec $P-inet"
W=$(mktemp -d /tmp/igdbench.XXXX)
# The CGN as a static full-cone 1:1 NAT for the CPE's WAN address (what miniupnpd's STUN check
# needs to enable port forwarding): out via outside0 as 198.51.100.1 with ports kept, and in.
cat > "$W/cgn.nft" <<NFT
table ip igdbench_cgn {
  chain prerouting { type nat hook prerouting priority -100; policy accept; iifname "outside0" ip daddr 198.51.100.1 dnat to 100.64.0.2; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; oifname "outside0" ip saddr 100.64.0.2 snat to 198.51.100.1; }
}
NFT
$CGN nft -f "$W/cgn.nft"
# A STUN binding responder on 203.0.113.50:3478 (XOR-MAPPED-ADDRESS = the request's source),
# bounded to 1000 requests and 30 minutes.
cat > "$W/stun.py" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 3478))
for _ in range(1000):
    data, (ip, port) = s.recvfrom(2048)
    if len(data) < 20 or data[0:2] != b"\x00\x01":
        continue
    xip = struct.unpack("!I", socket.inet_aton(ip))[0] ^ 0x2112A442
    attr = struct.pack("!HHBBHI", 0x0020, 8, 0, 1, port ^ 0x2112, xip)
    s.sendto(struct.pack("!HHI", 0x0101, len(attr), 0x2112A442) + data[8:20] + attr, (ip, port))
PY
$INET timeout 1800 /usr/bin/python3 "$W/stun.py" 203.0.113.50 > "$W/stun.log" 2>&1 & PIDS+=($!)
# miniupnpd: its nftables chains, then the daemon on lan0 port 5001 (SSDP 1900 shared via SO_REUSEADDR).
cat > "$W/miniupnpd.nft" <<NFT
table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
table ip filter {
  chain miniupnpd { }
}
table ip nat {
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
NFT
$CPE nft -f "$W/miniupnpd.nft"
cat > "$W/miniupnpd.conf" <<CONF
ext_ifname=wan0
listening_ip=lan0
http_port=5001
enable_natpmp=no
enable_upnp=yes
secure_mode=yes
system_uptime=yes
uuid=3b9c0000-0000-4000-8000-000000000001
ext_perform_stun=yes
ext_stun_host=203.0.113.50
ext_stun_port=3478
allow 1024-65535 192.168.0.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
CONF
sleep 0.3
# Its own pid file: the default /var/run/miniupnpd.pid clashes with other instances.
$CPE /usr/sbin/miniupnpd -f "$W/miniupnpd.conf" -P "$W/miniupnpd.pid" -d > "$W/miniupnpd.log" 2>&1 & PIDS+=($!)
$CPE "$IWF" --lan lan0 --wan wan0 --upstream none --nat none --http-port 5000 --no-announce --external-address 198.51.100.1 > "$W/iwf.log" 2>&1 & PIDS+=($!)
# miniupnpd's STUN check takes up to 3 s before it listens; wait (bounded) for its verdict.
for _ in $(seq 1 100); do grep -q 'HTTP listening on port' "$W/miniupnpd.log" && break; sleep 0.1; done
sleep 0.5
if ! grep -q 'Port forwarding is now enabled' "$W/miniupnpd.log"; then
  echo "miniupnpd did not enable port forwarding; its log ($W/miniupnpd.log):" >&2; cat "$W/miniupnpd.log" >&2; exit 1
fi
grep -o 'STUN: ext interface.*NAT 1:1 with public IP address [0-9.]*' "$W/miniupnpd.log" | sed 's/^/miniupnpd /' || true
cat > "$W/rt.py" <<'PY'
import http.client, sys, time
host, port, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
NS = 'urn:schemas-upnp-org:service:WANIPConnection:1'
def body(action, args):
    inner = ''.join('<%s>%s</%s>' % (k, v, k) for k, v in args)
    return ('<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%s xmlns:u="%s">%s</u:%s></s:Body></s:Envelope>\r\n' % (action, NS, inner, action))
add = body('AddPortMapping', [('NewRemoteHost', ''), ('NewExternalPort', '40000'), ('NewProtocol', 'UDP'), ('NewInternalPort', '40000'), ('NewInternalClient', '192.168.0.10'), ('NewEnabled', '1'), ('NewPortMappingDescription', 'bench'), ('NewLeaseDuration', '3600')])
dele = body('DeletePortMapping', [('NewRemoteHost', ''), ('NewExternalPort', '40000'), ('NewProtocol', 'UDP')])
def post(action, b):
    c = http.client.HTTPConnection(host, port, timeout=5)
    c.request('POST', '/ctl/IPConn', b, {'Content-Type': 'text/xml; charset="utf-8"', 'SOAPAction': '"%s#%s"' % (NS, action), 'Connection': 'close'})
    r = c.getresponse(); r.read(); c.close()
    if r.status != 200: raise SystemExit('%s -> HTTP %d' % (action, r.status))
lat = []
t0 = time.time()
status = body('GetStatusInfo', [])
for i in range(n):
    t = time.time()
    if mode == 'addel':
        post('AddPortMapping', add); post('DeletePortMapping', dele)
    else:
        post('GetStatusInfo', status); post('GetStatusInfo', status)
    lat.append(time.time() - t)
wall = time.time() - t0
lat.sort()
what = 'AddPortMapping+DeletePortMapping' if mode == 'addel' else 'GetStatusInfo x2'
print('soap %s:%d  %d x (%s) in %.2fs = %.0f round trips/s; pair p50 %.2f ms p99 %.2f ms' % (host, port, n, what, wall, 2 * n / wall, lat[n // 2] * 1e3, lat[int(n * 0.99)] * 1e3))
PY
cat > "$W/ssdp.py" <<'PY'
import socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
msg = b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n'
res = {}
for i in range(n):
    t = time.time(); s.sendto(msg, (host, 1900))
    end = t + 1.0
    while time.time() < end:
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            break
        loc = [l for l in data.decode('latin-1').split('\r\n') if l.upper().startswith('LOCATION')]
        key = loc[0].split(':', 1)[1].strip() if loc else '?'
        res.setdefault(key, []).append(time.time() - t)
        if len(res) == 2 and all(len(v) == i + 1 for v in res.values()):
            break
for k, v in sorted(res.items()):
    v.sort(); print('ssdp %-40s %d replies / %d searches: p50 %.2f ms p99 %.2f ms' % (k, len(v), n, v[len(v) // 2] * 1e3, v[int(len(v) * 0.99)] * 1e3))
PY
echo "== $(date -u +%FT%TZ) N=$N M=$M K=$K; $($IWF --version); $(/usr/sbin/miniupnpd --version 2>&1 | head -1)"
for mode in status addel; do for port in 5000 5001; do $LAN /usr/bin/python3 "$W/rt.py" 192.168.0.1 $port "$N" $mode 2>/dev/null || echo "soap 192.168.0.1:$port $mode: failed (see the daemon log)"; done; done
for port in 5000 5001; do
  url=http://192.168.0.1:$port/rootDesc.xml
  t0=$(date +%s.%N)
  fails=0
  for i in $(seq 1 "$M"); do $LAN upnpc -u "$url" -s >/dev/null 2>&1 || fails=$((fails+1)); done
  t1=$(date +%s.%N)
  echo "upnpc -u $url -s: $M runs in $(echo "$t1 - $t0" | bc) s ($fails failed)"
  t0=$(date +%s.%N); fails=0
  for i in $(seq 1 "$M"); do $LAN upnpc -u "$url" -a 192.168.0.10 41000 41000 UDP 3600 >/dev/null 2>&1 || fails=$((fails+1)); $LAN upnpc -u "$url" -d 41000 UDP >/dev/null 2>&1 || fails=$((fails+1)); done
  t1=$(date +%s.%N)
  echo "upnpc -u $url -a/-d: $M pairs in $(echo "$t1 - $t0" | bc) s ($fails of $((2*M)) failed)"
done
$LAN /usr/bin/python3 "$W/ssdp.py" 239.255.255.250 "$K"
echo "miniupnpd UPnPError counts: $(grep -o 'UPnPError [0-9]*' "$W/miniupnpd.log" | sort | uniq -c | tr '\n' ' ')"
