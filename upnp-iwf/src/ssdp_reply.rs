//! What the device says on SSDP (upnp-igd.md §1.3, §1.4, §1.6, §1.7): the announcement set
//! (3 + 2d + k NT/USN pairs), which of them answer a given search target with the requested
//! version echoed, and the text of search responses and NOTIFY alive/byebye messages.

use std::fmt::Write as _;

use crate::description::{DeviceIdentity, IgdVersion, Service};
use crate::ssdp::{SSDP_GROUP, SearchTarget};

/// One NT (or ST) with its USN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// `NT` in NOTIFY, `ST` in a search response.
    pub nt: String,
    /// `USN`.
    pub usn: String,
}

fn adv(nt: String, udn: &str) -> Advert {
    let usn = if nt == udn {
        udn.to_owned()
    } else {
        format!("{udn}::{nt}")
    };
    Advert { nt, usn }
}

/// Devices of the tree: (UDN, type name), version = the IGD version.
fn devices(id: &DeviceIdentity) -> [(String, &'static str); 3] {
    [
        (id.root_udn(), "InternetGatewayDevice"),
        (id.wan_udn(), "WANDevice"),
        (id.conn_udn(), "WANConnectionDevice"),
    ]
}

/// Services of the tree with the UDN of the device holding them.
fn services(id: &DeviceIdentity) -> [(String, Service); 3] {
    [
        (id.root_udn(), Service::Layer3Forwarding),
        (id.wan_udn(), Service::WanCommonInterfaceConfig),
        (id.conn_udn(), Service::WanIpConnection),
    ]
}

/// The full alive set for version `v` (10 messages for this tree), root first.
pub fn announcement_set(id: &DeviceIdentity, v: IgdVersion) -> Vec<Advert> {
    let mut out = Vec::with_capacity(10);
    let root = id.root_udn();
    out.push(adv("upnp:rootdevice".into(), &root));
    let svc = services(id);
    for (udn, ty) in devices(id) {
        out.push(adv(udn.clone(), &udn));
        out.push(adv(
            format!("urn:schemas-upnp-org:device:{ty}:{}", v.number()),
            &udn,
        ));
        for (sudn, s) in svc.iter().filter(|(sudn, _)| *sudn == udn) {
            out.push(adv(s.service_type(v), sudn));
        }
    }
    out
}

/// Answers to a search for `st` by a device of version `v`: ST echoed with the requested
/// version for device/service types (any version ≤ ours), nothing for higher versions or
/// foreign targets.
pub fn search_answers(id: &DeviceIdentity, v: IgdVersion, st: &str) -> Vec<Advert> {
    match SearchTarget::parse(st) {
        SearchTarget::All => announcement_set(id, v),
        SearchTarget::RootDevice => vec![adv("upnp:rootdevice".into(), &id.root_udn())],
        SearchTarget::Uuid(u) => {
            let udn = format!("uuid:{u}");
            devices(id)
                .into_iter()
                .filter(|(d, _)| *d == udn)
                .map(|(d, _)| adv(d.clone(), &d))
                .collect()
        }
        SearchTarget::Device { name, version } => devices(id)
            .into_iter()
            .filter(|(_, ty)| *ty == name && version <= v.number())
            .map(|(udn, _)| adv(st.to_owned(), &udn))
            .collect(),
        SearchTarget::Service { name, version } => services(id)
            .into_iter()
            .filter(|(_, s)| s.type_name() == name && version <= s.version(v))
            .map(|(udn, _)| adv(st.to_owned(), &udn))
            .collect(),
        SearchTarget::Other => Vec::new(),
    }
}

/// Values common to every message of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContext {
    /// Absolute LOCATION URL (host = the interface's IPv4 literal).
    pub location: String,
    /// `SERVER` value, `<OS>/<ver> UPnP/1.1 <product>/<ver>`.
    pub server: String,
    /// `BOOTID.UPNP.ORG` (31-bit).
    pub boot_id: u32,
    /// `CONFIGID.UPNP.ORG` (24-bit).
    pub config_id: u32,
    /// `CACHE-CONTROL: max-age` seconds (≥ 1800).
    pub max_age: u32,
    /// Port of the SSDP group the NOTIFYs go to (1900).
    pub port: u16,
}

/// Default SERVER header.
pub fn server_string() -> String {
    format!(
        "Linux/{} UPnP/1.1 upnp-iwf/{}",
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION")
    )
}

/// A unicast search response (upper-case names as in UDA; `EXT:` empty).
pub fn search_response(ctx: &MessageContext, a: &Advert) -> String {
    let mut s = String::with_capacity(400);
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age={}\r\nEXT:\r\nLOCATION: {}\r\n\
         SERVER: {}\r\nST: {}\r\nUSN: {}\r\nBOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {}\r\n\
         CONTENT-LENGTH: 0\r\n\r\n",
        ctx.max_age, ctx.location, ctx.server, a.nt, a.usn, ctx.boot_id, ctx.config_id
    );
    s
}

/// `NOTIFY ssdp:alive`.
pub fn notify_alive(ctx: &MessageContext, a: &Advert) -> String {
    format!(
        "NOTIFY * HTTP/1.1\r\nHOST: {SSDP_GROUP}:{}\r\nCACHE-CONTROL: max-age={}\r\n\
         LOCATION: {}\r\nNT: {}\r\nNTS: ssdp:alive\r\nSERVER: {}\r\nUSN: {}\r\n\
         BOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {}\r\n\r\n",
        ctx.port, ctx.max_age, ctx.location, a.nt, ctx.server, a.usn, ctx.boot_id, ctx.config_id
    )
}

/// `NOTIFY ssdp:byebye`.
pub fn notify_byebye(ctx: &MessageContext, a: &Advert) -> String {
    format!(
        "NOTIFY * HTTP/1.1\r\nHOST: {SSDP_GROUP}:{}\r\nNT: {}\r\nNTS: ssdp:byebye\r\nUSN: {}\r\n\
         BOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {}\r\n\r\n",
        ctx.port, a.nt, a.usn, ctx.boot_id, ctx.config_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssdp::{Headers, split};

    fn id() -> DeviceIdentity {
        DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001")
    }

    // Checklist: ssdp:all yields 3+2d+k replies, one with ST ...:device:InternetGatewayDevice:N.
    #[test]
    fn ssdp_all_yields_the_full_set_including_the_igd_type() {
        for v in [IgdVersion::V1, IgdVersion::V2] {
            let set = search_answers(&id(), v, "ssdp:all");
            assert_eq!(set.len(), 3 + 2 * 2 + 3);
            let igd = format!(
                "urn:schemas-upnp-org:device:InternetGatewayDevice:{}",
                v.number()
            );
            assert!(set.iter().any(|a| a.nt == igd));
            assert_eq!(set, announcement_set(&id(), v));
        }
    }

    // Checklist: upnp:rootdevice → exactly one, USN uuid:<root>::upnp:rootdevice.
    #[test]
    fn rootdevice_search_yields_one_reply() {
        let r = search_answers(&id(), IgdVersion::V2, "upnp:rootdevice");
        assert_eq!(
            r,
            vec![Advert {
                nt: "upnp:rootdevice".into(),
                usn: format!("{}::upnp:rootdevice", id().root_udn())
            }]
        );
    }

    // Checklist: uuid:<W> for an embedded device → one reply with USN uuid:<W>.
    #[test]
    fn uuid_search_for_embedded_device_yields_its_usn() {
        let w = id().wan_udn();
        let r = search_answers(&id(), IgdVersion::V2, &w);
        assert_eq!(
            r,
            vec![Advert {
                nt: w.clone(),
                usn: w
            }]
        );
        assert!(search_answers(&id(), IgdVersion::V2, "uuid:nobody").is_empty());
    }

    // Checklist: IGD:2 answers ...InternetGatewayDevice:1 with :1; WANIPConnection:1 → USN of
    // the WANConnectionDevice; :3 → nothing.
    #[test]
    fn lower_versions_are_echoed_and_higher_ones_ignored() {
        let st = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
        let r = search_answers(&id(), IgdVersion::V2, st);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].nt, st);
        assert_eq!(r[0].usn, format!("{}::{st}", id().root_udn()));
        let st = "urn:schemas-upnp-org:service:WANIPConnection:1";
        let r = search_answers(&id(), IgdVersion::V2, st);
        assert_eq!(r.len(), 1);
        assert!(r[0].usn.starts_with(&format!("{}::", id().conn_udn())));
        assert!(
            search_answers(
                &id(),
                IgdVersion::V2,
                "urn:schemas-upnp-org:device:InternetGatewayDevice:3"
            )
            .is_empty()
        );
        assert!(
            search_answers(
                &id(),
                IgdVersion::V1,
                "urn:schemas-upnp-org:service:WANIPConnection:2"
            )
            .is_empty()
        );
        assert!(
            search_answers(
                &id(),
                IgdVersion::V2,
                "urn:schemas-upnp-org:service:WANPPPConnection:1"
            )
            .is_empty()
        );
    }

    fn ctx() -> MessageContext {
        MessageContext {
            location: "http://192.168.0.1:5000/rootDesc.xml".into(),
            server: server_string(),
            boot_id: 1_767_225_600,
            config_id: 0xff_ffff,
            max_age: 1800,
            port: 1900,
        }
    }

    fn headers(msg: &str) -> (String, Headers<'_>) {
        let (start, h) = split(msg.as_bytes()).expect("parses");
        (start.to_owned(), h)
    }

    // Checklist: start line exactly HTTP/1.1 200 OK; required headers; ≤ 1024 bytes.
    #[test]
    fn search_response_has_every_required_header_and_fits_1024_bytes() {
        for a in announcement_set(&id(), IgdVersion::V2) {
            let msg = search_response(&ctx(), &a);
            assert!(msg.starts_with("HTTP/1.1 200 OK\r\n"));
            assert!(msg.contains("\r\nEXT:\r\n"));
            assert!(
                msg.contains("\r\nLOCATION: http://"),
                "upper-case LOCATION (Natter)"
            );
            let (_, h) = headers(&msg);
            assert_eq!(h.get("CACHE-CONTROL"), Some("max-age=1800"));
            assert_eq!(h.get("ST"), Some(a.nt.as_str()));
            assert_eq!(h.get("USN"), Some(a.usn.as_str()));
            assert!(h.get("SERVER").is_some_and(|s| s.contains(" UPnP/1.1 ")));
            assert_eq!(h.get("BOOTID.UPNP.ORG"), Some("1767225600"));
            assert_eq!(h.get("CONFIGID.UPNP.ORG"), Some("16777215"));
            assert!(msg.len() <= 1024);
            for m in [notify_alive(&ctx(), &a), notify_byebye(&ctx(), &a)] {
                assert!(m.len() <= 1024);
                assert!(m.ends_with("\r\n\r\n"));
            }
        }
    }

    #[test]
    fn notify_messages_carry_nt_nts_usn_and_ids() {
        let a = &announcement_set(&id(), IgdVersion::V2)[2];
        let alive = notify_alive(&ctx(), a);
        let (start, h) = headers(&alive);
        assert_eq!(start, "NOTIFY * HTTP/1.1");
        assert_eq!(h.get("NTS"), Some("ssdp:alive"));
        assert_eq!(h.get("HOST"), Some("239.255.255.250:1900"));
        assert!(h.get("LOCATION").is_some());
        let bye = notify_byebye(&ctx(), a);
        let (_, h) = headers(&bye);
        assert_eq!(h.get("NTS"), Some("ssdp:byebye"));
        assert_eq!(h.get("NT"), Some(a.nt.as_str()));
        assert_eq!(h.get("LOCATION"), None);
        assert_eq!(h.get("BOOTID.UPNP.ORG"), Some("1767225600"));
    }
}
