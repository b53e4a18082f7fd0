# Every HTTP response upnp-iwf gives a LAN host, printed (status_lab.rs looks for nonces in
# them). Standard library only. Fetches /, /index.html, /status.json, /status.txt, /metrics,
# the description and every SCPD; calls every SOAP action that takes no argument, every
# GetGenericPortMappingEntry index until 713, GetSpecificPortMappingEntry for each mapping
# listed, GetListOfPortMappings (IGD:2); subscribes to every service's events and prints the
# initial NOTIFY each sends to our callback.
#
#   python3 status_lab_crawl.py            (from the LAN host 192.168.0.10)
#
# Output: one "=== WHAT STATUS" line per response, then its body.
import http.client, http.server, re, socket, sys, threading

HOST, PORT, TIMEOUT = "192.168.0.1", 5000, 5
ME = "192.168.0.10"
count = 0


def show(what, status, body):
    global count
    count += 1
    print("=== %s %s" % (what, status))
    print(body)


def request(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(HOST, PORT, timeout=TIMEOUT)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read().decode(errors="replace")
        head = "".join("%s: %s\n" % kv for kv in r.getheaders())
        return r.status, head + "\n" + data
    finally:
        c.close()


def get(path):
    status, body = request("GET", path)
    show("GET " + path, status, body)
    return body


def soap(kind, control, action, args):
    inner = "".join("<%s>%s</%s>" % (k, v, k) for k, v in args)
    body = ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            '<u:%s xmlns:u="%s">%s</u:%s></s:Body></s:Envelope>' % (action, kind, inner, action))
    headers = {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": '"%s#%s"' % (kind, action)}
    status, data = request("POST", control, body.encode(), headers)
    show("SOAP " + action, status, data)
    return status, data


notifies = []


class Callback(http.server.BaseHTTPRequestHandler):
    def do_NOTIFY(self):
        n = int(self.headers.get("Content-Length", "0"))
        notifies.append(str(self.headers) + "\n" + self.rfile.read(n).decode(errors="replace"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


for path in ["/", "/index.html", "/status.json", "/status.txt", "/metrics"]:
    get(path)
desc = get("/rootDesc.xml")
services = []
for block in re.findall(r"<service>(.*?)</service>", desc, re.S):
    field = lambda name: re.search(r"<%s>(.*?)</%s>" % (name, name), block).group(1)
    services.append((field("serviceType"), field("SCPDURL"), field("controlURL"), field("eventSubURL")))

cb = http.server.HTTPServer((ME, 0), Callback)
threading.Thread(target=cb.serve_forever, daemon=True).start()

for kind, scpd_url, control, event_url in services:
    scpd = get(scpd_url)
    for action in re.findall(r"<action>(.*?)</action>", scpd, re.S):
        name = re.search(r"<name>(.*?)</name>", action).group(1)
        if "<direction>in</direction>" not in action:
            soap(kind, control, name, [])
    if ":WANIPConnection:" in kind:
        listed, proto = [], "UDP"
        for i in range(0, 64):
            status, data = soap(kind, control, "GetGenericPortMappingEntry",
                                [("NewPortMappingIndex", i)])
            if status != 200:
                break
            port = re.search(r"<NewExternalPort>(\d+)</NewExternalPort>", data).group(1)
            proto = re.search(r"<NewProtocol>(\w+)</NewProtocol>", data).group(1)
            listed.append((port, proto))
        for port, proto in listed:
            soap(kind, control, "GetSpecificPortMappingEntry",
                 [("NewRemoteHost", ""), ("NewExternalPort", port), ("NewProtocol", proto)])
        if kind.endswith(":2"):
            soap(kind, control, "GetListOfPortMappings",
                 [("NewStartPort", 0), ("NewEndPort", 65535), ("NewProtocol", proto),
                  ("NewManage", 1), ("NewNumberOfPorts", 1000)])
        print("LISTED %d" % len(listed))
    status, body = request("SUBSCRIBE", event_url, headers={
        "CALLBACK": "<http://%s:%d/>" % (ME, cb.server_address[1]), "NT": "upnp:event",
        "TIMEOUT": "Second-300"})
    show("SUBSCRIBE " + event_url, status, body)

deadline = __import__("time").time() + 5
while len(notifies) < len(services) and __import__("time").time() < deadline:
    __import__("time").sleep(0.05)
for n in notifies:
    show("NOTIFY", "-", n)
print("RESPONSES %d" % count)
