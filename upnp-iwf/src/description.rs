//! Device and service descriptions (upnp-igd.md §2): the IGD:1 / IGD:2 device tree, the SCPDs
//! generated from one action/state-variable table (so the SCPD argument order and the SOAP
//! out-argument order can never disagree), the version policy (IGD:2 by default, IGD:1 for
//! `Microsoft`/`FDSSDP` user agents) and the CONFIGID derived from every served document.

use std::fmt::Write as _;

#[cfg(test)]
use crate::service_table::ADD_ARGS;
pub use crate::service_table::{ActionDef, Dir, L3F_ACTIONS, WANCFG_ACTIONS, WANIP_ACTIONS};
use crate::service_table::{L3F_VARS, VarDef, WANCFG_VARS, WANIP_VARS};
use crate::xml::escape;

/// Version of the IGD device tree served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IgdVersion {
    /// InternetGatewayDevice:1 / WANIPConnection:1.
    V1,
    /// InternetGatewayDevice:2 / WANIPConnection:2.
    V2,
}

impl IgdVersion {
    /// 1 or 2.
    pub fn number(self) -> u32 {
        match self {
            IgdVersion::V1 => 1,
            IgdVersion::V2 => 2,
        }
    }
}

/// Which description a client gets (upnp-igd.md §2.4, §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// IGD:2, but IGD:1 for user agents containing `Microsoft` (any case) or `FDSSDP`.
    #[default]
    Auto,
    /// Always IGD:1.
    V1,
    /// Always IGD:2.
    V2,
}

impl VersionPolicy {
    /// The version to serve to a request with this `User-Agent`.
    pub fn for_user_agent(self, user_agent: Option<&str>) -> IgdVersion {
        match self {
            VersionPolicy::V1 => IgdVersion::V1,
            VersionPolicy::V2 => IgdVersion::V2,
            VersionPolicy::Auto => {
                let ua = user_agent.unwrap_or("").to_ascii_lowercase();
                if ua.contains("microsoft") || ua.contains("fdssdp") {
                    IgdVersion::V1
                } else {
                    IgdVersion::V2
                }
            }
        }
    }

    /// The highest version served (advertised in SSDP).
    pub fn highest(self) -> IgdVersion {
        match self {
            VersionPolicy::V1 => IgdVersion::V1,
            _ => IgdVersion::V2,
        }
    }
}

/// The three services of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// `Layer3Forwarding:1` on the root device.
    Layer3Forwarding,
    /// `WANCommonInterfaceConfig:1` on the WANDevice.
    WanCommonInterfaceConfig,
    /// `WANIPConnection:N` on the WANConnectionDevice.
    WanIpConnection,
}

impl Service {
    /// All services.
    pub const ALL: [Service; 3] = [
        Service::Layer3Forwarding,
        Service::WanCommonInterfaceConfig,
        Service::WanIpConnection,
    ];

    /// Type name without version.
    pub fn type_name(self) -> &'static str {
        match self {
            Service::Layer3Forwarding => "Layer3Forwarding",
            Service::WanCommonInterfaceConfig => "WANCommonInterfaceConfig",
            Service::WanIpConnection => "WANIPConnection",
        }
    }

    /// Version of this service in an IGD of `v` (only WANIPConnection follows the device).
    pub fn version(self, v: IgdVersion) -> u32 {
        match self {
            Service::WanIpConnection => v.number(),
            _ => 1,
        }
    }

    /// `urn:schemas-upnp-org:service:<T>:<n>`.
    pub fn service_type(self, v: IgdVersion) -> String {
        format!(
            "urn:schemas-upnp-org:service:{}:{}",
            self.type_name(),
            self.version(v)
        )
    }

    /// `serviceId`.
    pub fn service_id(self) -> &'static str {
        match self {
            Service::Layer3Forwarding => "urn:upnp-org:serviceId:L3Forwarding1",
            Service::WanCommonInterfaceConfig => "urn:upnp-org:serviceId:WANCommonIFC1",
            Service::WanIpConnection => "urn:upnp-org:serviceId:WANIPConn1",
        }
    }

    /// SCPD path.
    pub fn scpd_path(self) -> &'static str {
        match self {
            Service::Layer3Forwarding => "/L3F.xml",
            Service::WanCommonInterfaceConfig => "/WANCfg.xml",
            Service::WanIpConnection => "/WANIPCn.xml",
        }
    }

    /// Control URL path.
    pub fn control_path(self) -> &'static str {
        match self {
            Service::Layer3Forwarding => "/ctl/L3F",
            Service::WanCommonInterfaceConfig => "/ctl/CmnIfCfg",
            Service::WanIpConnection => "/ctl/IPConn",
        }
    }

    /// Event subscription path.
    pub fn event_path(self) -> &'static str {
        match self {
            Service::Layer3Forwarding => "/evt/L3F",
            Service::WanCommonInterfaceConfig => "/evt/CmnIfCfg",
            Service::WanIpConnection => "/evt/IPConn",
        }
    }
}

/// Path of the root description (the SSDP LOCATION path).
pub const ROOT_DESC_PATH: &str = "/rootDesc.xml";

impl Service {
    /// The actions this service lists for version `v`.
    pub fn actions(self, v: IgdVersion) -> impl Iterator<Item = &'static ActionDef> {
        let all = match self {
            Service::Layer3Forwarding => L3F_ACTIONS,
            Service::WanCommonInterfaceConfig => WANCFG_ACTIONS,
            Service::WanIpConnection => WANIP_ACTIONS,
        };
        all.iter()
            .filter(move |d| v == IgdVersion::V2 || !d.v2_only)
    }

    fn vars(self) -> &'static [VarDef] {
        match self {
            Service::Layer3Forwarding => L3F_VARS,
            Service::WanCommonInterfaceConfig => WANCFG_VARS,
            Service::WanIpConnection => WANIP_VARS,
        }
    }

    /// Names of the evented state variables of this service in version `v`.
    pub fn evented_vars(self, v: IgdVersion) -> Vec<&'static str> {
        self.vars()
            .iter()
            .filter(|d| d.2 && (v == IgdVersion::V2 || !d.5))
            .map(|d| d.0)
            .collect()
    }
}

/// Finds an action definition by name in any service (dispatch ignores the control URL).
pub fn find_action(name: &str) -> Option<(Service, &'static ActionDef)> {
    Service::ALL.into_iter().find_map(|s| {
        s.actions(IgdVersion::V2)
            .find(|d| d.name == name)
            .map(|d| (s, d))
    })
}

/// Identity strings of the device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Root device UUID (without `uuid:`); the WANDevice and WANConnectionDevice UUIDs are
    /// derived from it by incrementing the last hex digit (as miniupnpd does).
    pub uuid: String,
    /// `friendlyName`.
    pub friendly_name: String,
    /// `manufacturer`.
    pub manufacturer: String,
    /// `modelName`.
    pub model_name: String,
    /// `modelNumber`.
    pub model_number: String,
    /// `serialNumber`.
    pub serial_number: String,
}

impl DeviceIdentity {
    /// Identity with the given root UUID and this crate's names.
    pub fn new(uuid: impl Into<String>) -> DeviceIdentity {
        DeviceIdentity {
            uuid: uuid.into(),
            friendly_name: "NAT444 home router (upnp-iwf)".into(),
            manufacturer: "nat444".into(),
            model_name: "upnp-iwf".into(),
            model_number: env!("CARGO_PKG_VERSION").into(),
            serial_number: "1".into(),
        }
    }

    fn derived(&self, step: u32) -> String {
        let mut s = self.uuid.clone();
        if let Some(last) = s.pop() {
            let digit = last.to_digit(16).unwrap_or(0);
            let next = char::from_digit((digit + step) % 16, 16).unwrap_or('0');
            s.push(next);
        }
        s
    }

    /// Root device UDN (`uuid:R`).
    pub fn root_udn(&self) -> String {
        format!("uuid:{}", self.uuid)
    }

    /// WANDevice UDN (`uuid:W`).
    pub fn wan_udn(&self) -> String {
        format!("uuid:{}", self.derived(1))
    }

    /// WANConnectionDevice UDN (`uuid:C`).
    pub fn conn_udn(&self) -> String {
        format!("uuid:{}", self.derived(2))
    }

    /// A random version-4 UUID string.
    pub fn random_uuid() -> String {
        let b: [u8; 16] = rand::random();
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6] & 0x0f,
            b[7],
            8 | (b[8] & 0x3),
            b[8] >> 4,
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// `Layer3Forwarding` `DefaultConnectionService` value.
pub fn default_connection_service(id: &DeviceIdentity) -> String {
    format!(
        "{}:WANConnectionDevice:1,{}",
        id.conn_udn(),
        Service::WanIpConnection.service_id()
    )
}

fn service_xml(out: &mut String, s: Service, v: IgdVersion) {
    let _ = write!(
        out,
        "<serviceList><service><serviceType>{}</serviceType><serviceId>{}</serviceId>\
         <SCPDURL>{}</SCPDURL><controlURL>{}</controlURL><eventSubURL>{}</eventSubURL>\
         </service></serviceList>",
        s.service_type(v),
        s.service_id(),
        s.scpd_path(),
        s.control_path(),
        s.event_path()
    );
}

fn device_head(out: &mut String, id: &DeviceIdentity, ty: &str, v: IgdVersion, udn: &str) {
    let _ = write!(
        out,
        "<device><deviceType>urn:schemas-upnp-org:device:{ty}:{}</deviceType>\
         <friendlyName>{}</friendlyName><manufacturer>{}</manufacturer>\
         <modelDescription>{}</modelDescription><modelName>{}</modelName>\
         <modelNumber>{}</modelNumber><serialNumber>{}</serialNumber><UDN>{udn}</UDN>",
        v.number(),
        escape(&id.friendly_name),
        escape(&id.manufacturer),
        escape(ty),
        escape(&id.model_name),
        escape(&id.model_number),
        escape(&id.serial_number),
    );
}

/// The root description for version `v`; `presentation_url` is usually `http://<lan>:<port>/`.
pub fn root_description(
    id: &DeviceIdentity,
    v: IgdVersion,
    presentation_url: &str,
    config_id: u32,
) -> String {
    let mut s = String::with_capacity(3000);
    let _ = write!(
        s,
        "<?xml version=\"1.0\"?>\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\" \
         configId=\"{config_id}\"><specVersion><major>1</major><minor>1</minor></specVersion>"
    );
    device_head(&mut s, id, "InternetGatewayDevice", v, &id.root_udn());
    service_xml(&mut s, Service::Layer3Forwarding, v);
    s.push_str("<deviceList>");
    device_head(&mut s, id, "WANDevice", v, &id.wan_udn());
    service_xml(&mut s, Service::WanCommonInterfaceConfig, v);
    s.push_str("<deviceList>");
    device_head(&mut s, id, "WANConnectionDevice", v, &id.conn_udn());
    service_xml(&mut s, Service::WanIpConnection, v);
    s.push_str("</device></deviceList></device></deviceList>");
    let _ = write!(
        s,
        "<presentationURL>{}</presentationURL></device></root>\r\n",
        escape(presentation_url)
    );
    s
}

/// The SCPD of `service` for version `v`.
pub fn scpd(service: Service, v: IgdVersion) -> String {
    let mut s = String::with_capacity(6000);
    s.push_str(
        "<?xml version=\"1.0\"?>\r\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\">\
         <specVersion><major>1</major><minor>1</minor></specVersion><actionList>",
    );
    for action in service.actions(v) {
        let _ = write!(s, "<action><name>{}</name>", action.name);
        if !action.args.is_empty() {
            s.push_str("<argumentList>");
            for (name, dir, var) in action.args {
                let dir = if *dir == Dir::In { "in" } else { "out" };
                let _ = write!(
                    s,
                    "<argument><name>{name}</name><direction>{dir}</direction>\
                     <relatedStateVariable>{var}</relatedStateVariable></argument>"
                );
            }
            s.push_str("</argumentList>");
        }
        s.push_str("</action>");
    }
    s.push_str("</actionList><serviceStateTable>");
    for (name, ty, evented, allowed, range, v2_only) in service.vars() {
        if *v2_only && v == IgdVersion::V1 {
            continue;
        }
        let ev = if *evented { "yes" } else { "no" };
        let _ = write!(
            s,
            "<stateVariable sendEvents=\"{ev}\"><name>{name}</name><dataType>{ty}</dataType>"
        );
        if !allowed.is_empty() {
            s.push_str("<allowedValueList>");
            for a in *allowed {
                let _ = write!(s, "<allowedValue>{a}</allowedValue>");
            }
            s.push_str("</allowedValueList>");
        }
        if let Some((min, max)) = range {
            let _ = write!(
                s,
                "<allowedValueRange><minimum>{min}</minimum><maximum>{max}</maximum>\
                 </allowedValueRange>"
            );
        }
        s.push_str("</stateVariable>");
    }
    s.push_str("</serviceStateTable></scpd>\r\n");
    s
}

/// CONFIGID.UPNP.ORG / `configId`: a 24-bit FNV-1a hash of every served document (both
/// versions), so it changes whenever any description or SCPD changes.
pub fn config_id(id: &DeviceIdentity) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |text: &str| {
        for b in text.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for v in [IgdVersion::V1, IgdVersion::V2] {
        feed(&root_description(id, v, "", 0));
        for s in Service::ALL {
            feed(&scpd(s, v));
        }
    }
    h & 0x00ff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> DeviceIdentity {
        DeviceIdentity::new("2b9c0000-0000-4000-8000-000000000001")
    }

    // upnp-igd.md §2.4 / §6.6: Microsoft and FDSSDP agents get IGD:1.
    #[test]
    fn microsoft_and_fdssdp_user_agents_get_igd1_by_default() {
        let p = VersionPolicy::Auto;
        assert_eq!(
            p.for_user_agent(Some("Microsoft-Windows/10.0 UPnP/1.0")),
            IgdVersion::V1
        );
        assert_eq!(p.for_user_agent(Some("FDSSDP")), IgdVersion::V1);
        assert_eq!(p.for_user_agent(Some("miniupnpc")), IgdVersion::V2);
        assert_eq!(p.for_user_agent(None), IgdVersion::V2);
        assert_eq!(VersionPolicy::V1.for_user_agent(None), IgdVersion::V1);
        assert_eq!(
            VersionPolicy::V2.for_user_agent(Some("Microsoft")),
            IgdVersion::V2
        );
    }

    // Checklist: device tree versions consistent; WANCommonInterfaceConfig present;
    // every service has the five elements; URLs relative and < 128 bytes; distinct UDNs.
    #[test]
    fn root_description_has_a_consistent_tree_per_version() {
        for (v, n) in [(IgdVersion::V1, 1), (IgdVersion::V2, 2)] {
            let d = root_description(&id(), v, "http://192.168.0.1:5000/", 7);
            for ty in ["InternetGatewayDevice", "WANDevice", "WANConnectionDevice"] {
                assert!(d.contains(&format!(
                    "<deviceType>urn:schemas-upnp-org:device:{ty}:{n}</deviceType>"
                )));
            }
            assert!(d.contains(&format!(
                "urn:schemas-upnp-org:service:WANIPConnection:{n}<"
            )));
            assert!(d.contains("urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1<"));
            assert!(d.contains("urn:schemas-upnp-org:service:Layer3Forwarding:1<"));
            assert_eq!(d.matches("<service>").count(), 3);
            assert_eq!(d.matches("<eventSubURL>/").count(), 3);
            assert!(d.contains("configId=\"7\""));
            assert!(d.contains("<presentationURL>http://192.168.0.1:5000/</presentationURL>"));
            assert!(!d.contains("URLBase"));
            assert!(!d.starts_with('\u{feff}'));
            for udn in [id().root_udn(), id().wan_udn(), id().conn_udn()] {
                assert_eq!(d.matches(&format!("<UDN>{udn}</UDN>")).count(), 1);
            }
        }
    }

    #[test]
    fn derived_udns_differ_from_the_root() {
        let i = id();
        assert_eq!(i.wan_udn(), "uuid:2b9c0000-0000-4000-8000-000000000002");
        assert_eq!(i.conn_udn(), "uuid:2b9c0000-0000-4000-8000-000000000003");
        let r = DeviceIdentity::random_uuid();
        assert_eq!(r.len(), 36);
        assert_eq!(r.as_bytes()[14], b'4');
    }

    // Checklist: the IGD:1 SCPD drops the three IGD:2-only actions.
    #[test]
    fn igd1_scpd_lists_no_v2_only_actions() {
        let v1 = scpd(Service::WanIpConnection, IgdVersion::V1);
        let v2 = scpd(Service::WanIpConnection, IgdVersion::V2);
        for name in [
            "AddAnyPortMapping",
            "GetListOfPortMappings",
            "DeletePortMappingRange",
        ] {
            assert!(!v1.contains(&format!("<name>{name}</name>")));
            assert!(v2.contains(&format!("<name>{name}</name>")));
        }
        assert!(!v1.contains("SystemUpdateID"));
        // AddPortMapping in-args in template order.
        let add = &v2[v2.find("<name>AddPortMapping</name>").expect("listed")..];
        let order: Vec<usize> = ADD_ARGS
            .iter()
            .map(|(n, _, _)| add.find(&format!("<name>{n}</name>")).expect("arg"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn config_id_is_24_bit_and_changes_with_the_documents() {
        let a = config_id(&id());
        assert!(a <= 0x00ff_ffff);
        let mut other = id();
        other.friendly_name = "renamed".into();
        assert_ne!(a, config_id(&other));
    }

    #[test]
    fn evented_variables_per_service_and_version() {
        assert_eq!(
            Service::WanIpConnection.evented_vars(IgdVersion::V2),
            vec![
                "PossibleConnectionTypes",
                "ConnectionStatus",
                "ExternalIPAddress",
                "PortMappingNumberOfEntries",
                "SystemUpdateID"
            ]
        );
        assert!(
            !Service::WanIpConnection
                .evented_vars(IgdVersion::V1)
                .contains(&"SystemUpdateID")
        );
    }
}
