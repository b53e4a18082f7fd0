# A tiny UPnP IGD control point for the IWF lab tests (iwf_errors_lab.rs, iwf_load_lab.rs):
# raw SOAP over HTTP from a chosen LAN source address, so that upnp-iwf's secure mode
# (InternalClient == the caller) holds for every LAN host of the test. Standard library only.
#
#   python3 iwf_soap_client.py SRC AT add    EXT INT PROTO LEASE
#   python3 iwf_soap_client.py SRC AT addany EXT INT PROTO LEASE
#   python3 iwf_soap_client.py SRC AT adddisabled EXT INT PROTO LEASE   (NewEnabled = 0)
#   python3 iwf_soap_client.py SRC AT delete EXT PROTO
#   python3 iwf_soap_client.py SRC AT batch  FIRST N PROTO RETRIES
#
# AT is a Unix time to start at (0: now; waits at most 5 s), so two processes can race.
# Every request waits at most 5 s for the answer, as miniupnpc does. Output lines:
#   ADD <ext> <OK|code|TIMEOUT> [tries]      ADDANY <ext> <OK reserved|code>
#   DELETE <ext> <OK|code>                   RETRIES <n> / OK <n> (batch)
# `batch` adds FIRST..FIRST+N-1 (internal = external = port, InternalClient = SRC) and retries
# an add that failed with 501 ActionFailed or timed out up to RETRIES times, as P2P apps do.
import http.client, re, sys, time

SRC, AT, CMD, ARGS = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
HOST, PORT, TIMEOUT = "192.168.0.1", 5000, 5


def request(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(HOST, PORT, timeout=TIMEOUT, source_address=(SRC, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def service():
    for attempt in range(5):
        try:
            _, desc = request("GET", "/rootDesc.xml")
            break
        except Exception:
            time.sleep(0.5)
    else:
        sys.exit("no description")
    for block in re.findall(r"<service>(.*?)</service>", desc, re.S):
        kind = re.search(r"<serviceType>(.*?)</serviceType>", block).group(1)
        if ":WANIPConnection:" in kind:
            return kind, re.search(r"<controlURL>(.*?)</controlURL>", block).group(1)
    sys.exit("no WANIPConnection in the description")


KIND, CONTROL = service()


def call(action, args):
    inner = "".join("<%s>%s</%s>" % (k, v, k) for k, v in args)
    body = ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            '<u:%s xmlns:u="%s">%s</u:%s></s:Body></s:Envelope>' % (action, KIND, inner, action))
    headers = {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": '"%s#%s"' % (KIND, action)}
    try:
        status, data = request("POST", CONTROL, body.encode(), headers)
    except Exception:
        return "TIMEOUT", ""
    if status == 200:
        return "OK", data
    m = re.search(r"<errorCode>\s*(\d+)\s*</errorCode>", data)
    return (m.group(1) if m else "HTTP%d" % status), data


def add(action, ext, internal, proto, lease, enabled=1):
    return call(action, [("NewRemoteHost", ""), ("NewExternalPort", ext), ("NewProtocol", proto),
                         ("NewInternalPort", internal), ("NewInternalClient", SRC),
                         ("NewEnabled", enabled), ("NewPortMappingDescription", "lab"),
                         ("NewLeaseDuration", lease)])


time.sleep(min(max(0.0, AT - time.time()), 5.0))
if CMD == "add":
    print("ADD", ARGS[0], add("AddPortMapping", *ARGS)[0], flush=True)
elif CMD == "adddisabled":
    print("ADD", ARGS[0], add("AddPortMapping", *ARGS, enabled=0)[0], flush=True)
elif CMD == "addany":
    code, data = add("AddAnyPortMapping", *ARGS)
    m = re.search(r"<NewReservedPort>\s*(\d+)\s*</NewReservedPort>", data)
    print("ADDANY", ARGS[0], code, m.group(1) if m else "-", flush=True)
elif CMD == "delete":
    code, _ = call("DeletePortMapping", [("NewRemoteHost", ""), ("NewExternalPort", ARGS[0]),
                                         ("NewProtocol", ARGS[1])])
    print("DELETE", ARGS[0], code, flush=True)
elif CMD == "batch":
    first, n, proto, retries = int(ARGS[0]), int(ARGS[1]), ARGS[2], int(ARGS[3])
    total_retries, ok = 0, 0
    for port in range(first, first + n):
        for tries in range(1, retries + 2):
            code, _ = add("AddPortMapping", port, port, proto, 3600)
            if code not in ("501", "TIMEOUT") or tries == retries + 1:
                break
            total_retries += 1
        ok += code == "OK"
        print("ADD", port, code, tries, flush=True)
    print("RETRIES", total_retries, flush=True)
    print("OK", ok, flush=True)
else:
    sys.exit("unknown command " + CMD)
