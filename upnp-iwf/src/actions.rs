//! SOAP action dispatch (upnp-igd.md §3.4–§3.6, §4): every argument is validated into a typed
//! [`Action`] with the right error code, policy is applied, and the [`PortMappingBackend`] is
//! asked. Dispatch uses only the action name (any control URL, any service version); the
//! HTTP layer echoes the request's namespace in the response.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use crate::description::{self, DeviceIdentity, IgdVersion, Service, default_connection_service};
use crate::mapping::{
    AddRequest, Lease, MappingError, MappingKey, PortChoice, PortMapping, PortMappingBackend,
    Protocol,
};
use crate::policy::{Denied, LivePolicy};
use crate::soap::{OutValue, SoapRequest, UpnpError};
use crate::xml::escape;

/// Longest lease an IGD:2 grants; 0 and longer requests become this (WANIPConnection:2).
pub const MAX_LEASE_V2: u32 = 604_800;
/// Longest `NewPortMappingDescription` accepted (miniupnpd's buffer); longer → 605.
pub const MAX_DESCRIPTION: usize = 1024;
/// Most entries one `GetListOfPortMappings` returns (miniupnpd's cap).
pub const MAX_LISTING: usize = 1000;

/// Who is asking, under which IGD version, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// TCP peer address of the control point (IPv4, unmapped).
    pub caller: Ipv4Addr,
    /// IGD version served to this client (decides lease and error-code rules).
    pub version: IgdVersion,
    /// Current time.
    pub now: Instant,
}

/// Arguments of `AddPortMapping` / `AddAnyPortMapping`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddArgs {
    /// Remote host, external port (0 = any, only for AddAny), protocol.
    pub key: MappingKey,
    /// Internal port (≥ 1).
    pub internal_port: u16,
    /// Internal client (the caller when the argument was empty).
    pub internal_client: Ipv4Addr,
    /// `NewEnabled`.
    pub enabled: bool,
    /// Description.
    pub description: String,
    /// Lease seconds after the version rules (IGD:2: 1..=604800; IGD:1: 0 = permanent).
    pub lease_secs: u32,
}

/// A validated control action.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Action {
    GetExternalIpAddress,
    GetStatusInfo,
    GetConnectionTypeInfo,
    GetNatRsipStatus,
    SetConnectionType,
    RequestConnection,
    ForceTermination,
    AddPortMapping(AddArgs),
    AddAnyPortMapping(AddArgs),
    DeletePortMapping(MappingKey),
    DeletePortMappingRange {
        start: u16,
        end: u16,
        protocol: Protocol,
        manage: bool,
    },
    GetSpecificPortMappingEntry(MappingKey),
    GetGenericPortMappingEntry(u32),
    GetListOfPortMappings {
        start: u16,
        end: u16,
        protocol: Protocol,
        manage: bool,
        max: usize,
    },
    GetCommonLinkProperties,
    GetTotalBytesSent,
    GetTotalBytesReceived,
    GetTotalPacketsSent,
    GetTotalPacketsReceived,
    GetDefaultConnectionService,
    SetDefaultConnectionService(String),
    QueryStateVariable(String),
}

fn required<'a>(req: &'a SoapRequest, name: &str) -> Result<&'a str, UpnpError> {
    req.arg(name).map(str::trim).ok_or(UpnpError::InvalidArgs)
}

fn port_arg(req: &SoapRequest, name: &str, star_is_zero: bool) -> Result<u16, UpnpError> {
    let v = required(req, name)?;
    if star_is_zero && v == "*" {
        return Ok(0);
    }
    v.parse().map_err(|_| UpnpError::InvalidArgs)
}

fn protocol_arg(req: &SoapRequest) -> Result<Protocol, UpnpError> {
    Protocol::parse(required(req, "NewProtocol")?).ok_or(UpnpError::InvalidArgs)
}

fn bool_arg(v: Option<&str>, default: bool) -> Result<bool, UpnpError> {
    match v.map(str::trim) {
        None | Some("") => Ok(default),
        Some(s) if s == "1" || s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes") => {
            Ok(true)
        }
        Some(s) if s == "0" || s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("no") => {
            Ok(false)
        }
        Some(_) => Err(UpnpError::InvalidArgs),
    }
}

fn remote_host_arg(req: &SoapRequest) -> Result<Option<Ipv4Addr>, UpnpError> {
    match req.arg("NewRemoteHost").map(str::trim) {
        None | Some("") | Some("*") => Ok(None),
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| UpnpError::InvalidArgs)?;
            if ip.is_unspecified() {
                Ok(None)
            } else {
                Ok(Some(ip))
            }
        }
    }
}

fn key_args(req: &SoapRequest) -> Result<MappingKey, UpnpError> {
    Ok(MappingKey {
        remote_host: remote_host_arg(req)?,
        external_port: port_arg(req, "NewExternalPort", true)?,
        protocol: protocol_arg(req)?,
    })
}

fn add_args(req: &SoapRequest, ctx: &Context, any: bool) -> Result<AddArgs, UpnpError> {
    let key = key_args(req)?;
    if key.external_port == 0 && !any {
        return Err(UpnpError::WildCardNotPermittedInExtPort);
    }
    let internal_port = port_arg(req, "NewInternalPort", false)?;
    if internal_port == 0 {
        return Err(match ctx.version {
            IgdVersion::V1 => UpnpError::InvalidArgs,
            IgdVersion::V2 => UpnpError::WildCardNotPermittedInIntPort,
        });
    }
    let internal_client = match req.arg("NewInternalClient").map(str::trim) {
        None | Some("") => ctx.caller,
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| UpnpError::InvalidArgs)?;
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                return Err(UpnpError::InvalidArgs);
            }
            ip
        }
    };
    let enabled = bool_arg(req.arg("NewEnabled"), true)?;
    let description = req
        .arg("NewPortMappingDescription")
        .unwrap_or("")
        .to_owned();
    if description.len() > MAX_DESCRIPTION {
        return Err(UpnpError::StringArgumentTooLong);
    }
    let lease: u32 = match req.arg("NewLeaseDuration").map(str::trim) {
        None | Some("") => 0,
        Some(s) => s.parse().map_err(|_| UpnpError::InvalidArgs)?,
    };
    let lease_secs = match ctx.version {
        IgdVersion::V1 => lease,
        IgdVersion::V2 if lease == 0 => MAX_LEASE_V2,
        IgdVersion::V2 => lease.min(MAX_LEASE_V2),
    };
    Ok(AddArgs {
        key,
        internal_port,
        internal_client,
        enabled,
        description,
        lease_secs,
    })
}

impl Action {
    /// Validates the arguments of action `name` (from SOAPAction) into an [`Action`].
    /// Unknown names are [`UpnpError::InvalidAction`]; bad arguments get the code of
    /// upnp-igd.md §3.5 (402 by default).
    pub fn parse(name: &str, req: &SoapRequest, ctx: &Context) -> Result<Action, UpnpError> {
        Ok(match name {
            "GetExternalIPAddress" => Action::GetExternalIpAddress,
            "GetStatusInfo" => Action::GetStatusInfo,
            "GetConnectionTypeInfo" => Action::GetConnectionTypeInfo,
            "GetNATRSIPStatus" => Action::GetNatRsipStatus,
            "SetConnectionType" => {
                required(req, "NewConnectionType")?;
                Action::SetConnectionType
            }
            "RequestConnection" => Action::RequestConnection,
            "ForceTermination" | "RequestTermination" => Action::ForceTermination,
            "AddPortMapping" => Action::AddPortMapping(add_args(req, ctx, false)?),
            "AddAnyPortMapping" => Action::AddAnyPortMapping(add_args(req, ctx, true)?),
            "DeletePortMapping" => Action::DeletePortMapping(key_args(req)?),
            "GetSpecificPortMappingEntry" => Action::GetSpecificPortMappingEntry(key_args(req)?),
            "GetGenericPortMappingEntry" => Action::GetGenericPortMappingEntry(
                required(req, "NewPortMappingIndex")?
                    .parse()
                    .map_err(|_| UpnpError::InvalidArgs)?,
            ),
            "DeletePortMappingRange" | "GetListOfPortMappings" => {
                let start = port_arg(req, "NewStartPort", false)?;
                let end = port_arg(req, "NewEndPort", false)?;
                let protocol = protocol_arg(req)?;
                let manage = bool_arg(req.arg("NewManage"), false)?;
                if start > end {
                    return Err(UpnpError::InconsistentParameter);
                }
                if name == "DeletePortMappingRange" {
                    Action::DeletePortMappingRange {
                        start,
                        end,
                        protocol,
                        manage,
                    }
                } else {
                    let n: u32 = match req.arg("NewNumberOfPorts").map(str::trim) {
                        None | Some("") => 0,
                        Some(s) => s.parse().map_err(|_| UpnpError::InvalidArgs)?,
                    };
                    let max = match usize::try_from(n) {
                        Ok(0) | Err(_) => MAX_LISTING,
                        Ok(n) => n.min(MAX_LISTING),
                    };
                    Action::GetListOfPortMappings {
                        start,
                        end,
                        protocol,
                        manage,
                        max,
                    }
                }
            }
            "GetCommonLinkProperties" => Action::GetCommonLinkProperties,
            "GetTotalBytesSent" => Action::GetTotalBytesSent,
            "GetTotalBytesReceived" => Action::GetTotalBytesReceived,
            "GetTotalPacketsSent" => Action::GetTotalPacketsSent,
            "GetTotalPacketsReceived" => Action::GetTotalPacketsReceived,
            "GetDefaultConnectionService" => Action::GetDefaultConnectionService,
            "SetDefaultConnectionService" => Action::SetDefaultConnectionService(
                required(req, "NewDefaultConnectionService")?.to_owned(),
            ),
            "QueryStateVariable" => {
                Action::QueryStateVariable(required(req, "varName")?.to_owned())
            }
            _ => return Err(UpnpError::InvalidAction),
        })
    }
}

/// Names of the out arguments of `action`, in SCPD order (`return` for QueryStateVariable).
pub fn out_names(action: &str) -> Vec<&'static str> {
    if action == "QueryStateVariable" {
        return vec!["return"];
    }
    description::find_action(action)
        .map(|(_, d)| d.out_args().collect())
        .unwrap_or_default()
}

/// WAN link facts for WANCommonInterfaceConfig.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// WAN interface whose `/sys/class/net/<if>/statistics` counters are reported.
    pub wan_interface: Option<String>,
    /// `NewLayer1UpstreamMaxBitRate`.
    pub upstream_bps: u32,
    /// `NewLayer1DownstreamMaxBitRate`.
    pub downstream_bps: u32,
    /// Where the per-interface directories are read from; `None`: `/sys/class/net` (tests
    /// point it at a directory of their own).
    pub statistics_root: Option<std::path::PathBuf>,
}

/// Default [`LinkInfo::statistics_root`].
const SYS_CLASS_NET: &str = "/sys/class/net";

impl LinkInfo {
    /// A statistics counter of the WAN interface as a ui4: the kernel's 64-bit count wraps
    /// around at 2^32 (IGD WANCommonInterfaceConfig counters are ui4 and wrap, they do not
    /// stick at the maximum); 0 if unknown or unreadable.
    pub fn counter(&self, name: &str) -> u32 {
        let Some(ifname) = &self.wan_interface else {
            return 0;
        };
        if ifname.contains('/') || ifname.contains("..") || name.contains('/') {
            return 0;
        }
        let root = self
            .statistics_root
            .as_deref()
            .unwrap_or(std::path::Path::new(SYS_CLASS_NET));
        std::fs::read_to_string(root.join(ifname).join("statistics").join(name))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|v| (v & 0xffff_ffff) as u32)
            .unwrap_or(0)
    }
}

/// The IGD's control logic: policy + identity + backend.
#[derive(Debug)]
pub struct Igd<B> {
    /// Port-mapping service.
    pub backend: Arc<B>,
    /// Authorization policy (replaced on SIGHUP).
    pub policy: LivePolicy,
    /// Device identity (for Layer3Forwarding).
    pub identity: DeviceIdentity,
    /// WAN link facts.
    pub link: LinkInfo,
}

fn text(s: impl Into<String>) -> OutValue {
    OutValue::Text(s.into())
}

fn map_err(e: MappingError, v: IgdVersion) -> UpnpError {
    let v2 = v == IgdVersion::V2;
    match e {
        MappingError::Conflict => UpnpError::ConflictInMappingEntry,
        MappingError::NoPortsAvailable if v2 => UpnpError::NoPortMapsAvailable,
        MappingError::NoPortsAvailable => UpnpError::ActionFailed,
        MappingError::NotAuthorized if v2 => UpnpError::ActionNotAuthorized,
        MappingError::NotAuthorized => UpnpError::ConflictInMappingEntry,
        MappingError::ConflictWithOtherMechanisms if v2 => UpnpError::ConflictWithOtherMechanisms,
        MappingError::ConflictWithOtherMechanisms => UpnpError::ConflictInMappingEntry,
        MappingError::NotFound => UpnpError::NoSuchEntryInArray,
        MappingError::DisabledNotSupported => UpnpError::InvalidArgs,
        MappingError::Upstream(_) => UpnpError::ActionFailed,
    }
}

fn denied(d: Denied, v: IgdVersion) -> UpnpError {
    let v2 = v == IgdVersion::V2;
    match d {
        Denied::Quota if v2 => UpnpError::NoPortMapsAvailable,
        Denied::Quota => UpnpError::ActionFailed,
        _ if v2 => UpnpError::ActionNotAuthorized,
        _ => UpnpError::ConflictInMappingEntry,
    }
}

fn entry_outs(m: &PortMapping, now: Instant) -> Vec<OutValue> {
    vec![
        text(m.internal_port.to_string()),
        text(m.internal_client.to_string()),
        text(if m.enabled { "1" } else { "0" }),
        text(m.description.clone()),
        text(m.lease.remaining_secs(now).to_string()),
    ]
}

/// The `p:PortMappingList` document of `GetListOfPortMappings` (upnp-igd.md §3.6).
pub fn port_listing(entries: &[PortMapping], now: Instant) -> String {
    let mut s = String::from(
        "<p:PortMappingList xmlns:p=\"urn:schemas-upnp-org:gw:WANIPConnection\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"urn:schemas-upnp-org:gw:WANIPConnection \
         http://www.upnp.org/schemas/gw/WANIPConnection-v2.xsd\">\n",
    );
    for m in entries {
        s.push_str(&format!(
            "<p:PortMappingEntry>\n<p:NewRemoteHost>{}</p:NewRemoteHost>\n\
             <p:NewExternalPort>{}</p:NewExternalPort>\n<p:NewProtocol>{}</p:NewProtocol>\n\
             <p:NewInternalPort>{}</p:NewInternalPort>\n\
             <p:NewInternalClient>{}</p:NewInternalClient>\n<p:NewEnabled>{}</p:NewEnabled>\n\
             <p:NewDescription>{}</p:NewDescription>\n<p:NewLeaseTime>{}</p:NewLeaseTime>\n\
             </p:PortMappingEntry>\n",
            m.key.remote_host.map(|h| h.to_string()).unwrap_or_default(),
            m.key.external_port,
            m.key.protocol.as_str(),
            m.internal_port,
            m.internal_client,
            u8::from(m.enabled),
            escape(&m.description),
            m.lease.remaining_secs(now),
        ));
    }
    s.push_str("</p:PortMappingList>");
    s
}

impl<B: PortMappingBackend> Igd<B> {
    /// Current value of an evented or queryable WANIPConnection variable.
    pub fn state_variable(&self, name: &str, now: Instant) -> Option<String> {
        let wan = self.backend.wan_status(now);
        Some(match name {
            "ConnectionStatus" => if wan.connected {
                "Connected"
            } else {
                "Disconnected"
            }
            .into(),
            "ExternalIPAddress" => wan
                .external_address
                .map(|a| a.to_string())
                .unwrap_or_default(),
            "PortMappingNumberOfEntries" => self.backend.count(now).to_string(),
            "PossibleConnectionTypes" => "IP_Routed".into(),
            "ConnectionType" => "IP_Routed".into(),
            "Uptime" => wan.uptime.as_secs().to_string(),
            "SystemUpdateID" => self.backend.update_id().to_string(),
            "PhysicalLinkStatus" => if wan.connected { "Up" } else { "Down" }.into(),
            "DefaultConnectionService" => default_connection_service(&self.identity),
            _ => return None,
        })
    }

    /// Evented variables of `service` with their current values (GENA property set).
    pub fn evented_state(
        &self,
        service: Service,
        version: IgdVersion,
        now: Instant,
    ) -> Vec<(&'static str, String)> {
        service
            .evented_vars(version)
            .into_iter()
            .filter_map(|n| self.state_variable(n, now).map(|v| (n, v)))
            .collect()
    }

    fn held_by(&self, client: Ipv4Addr, except: &MappingKey, now: Instant) -> usize {
        self.backend
            .list(now)
            .iter()
            .filter(|m| m.internal_client == client && m.key != *except)
            .count()
    }

    async fn add(&self, ctx: &Context, a: AddArgs, any: bool) -> Result<PortMapping, UpnpError> {
        let v = ctx.version;
        self.policy
            .get()
            .check_client(ctx.caller, a.internal_client)
            .map_err(|d| denied(d, v))?;
        if !any
            && !self
                .policy
                .get()
                .permits(a.key.external_port, a.internal_client, a.internal_port)
        {
            return Err(denied(Denied::Rule, v));
        }
        self.policy
            .get()
            .check_quota(self.held_by(a.internal_client, &a.key, ctx.now))
            .map_err(|d| denied(d, v))?;
        let choice = if any {
            let ranges = self
                .policy
                .get()
                .permitted_ports(a.internal_client, a.internal_port);
            if ranges.is_empty() {
                return Err(denied(Denied::Rule, v));
            }
            PortChoice::Any(ranges)
        } else {
            PortChoice::Exact
        };
        let mapping = PortMapping {
            key: a.key,
            internal_client: a.internal_client,
            internal_port: a.internal_port,
            enabled: a.enabled,
            description: a.description,
            lease: Lease::from_secs(ctx.now, a.lease_secs),
            owner: ctx.caller,
        };
        self.backend
            .add(ctx.now, AddRequest { mapping, choice })
            .await
            .map_err(|e| map_err(e, v))
    }

    fn mine(&self, ctx: &Context, m: &PortMapping) -> bool {
        !self.policy.get().secure_mode || m.internal_client == ctx.caller
    }

    /// Executes a validated action; the values are the out arguments in SCPD order
    /// (see [`out_names`]).
    pub async fn execute(&self, ctx: &Context, action: Action) -> Result<Vec<OutValue>, UpnpError> {
        let now = ctx.now;
        let v = ctx.version;
        let var = |n: &str| self.state_variable(n, now).unwrap_or_default();
        Ok(match action {
            Action::GetExternalIpAddress => {
                let known = self.backend.external_address_for(now, ctx.caller);
                let address = match known {
                    Some(a) => Some(a),
                    None => self.backend.probe_external(now).await,
                };
                vec![text(address.map(|a| a.to_string()).unwrap_or_default())]
            }
            Action::GetStatusInfo => vec![
                text(var("ConnectionStatus")),
                text("ERROR_NONE"),
                text(var("Uptime")),
            ],
            Action::GetConnectionTypeInfo => vec![text("IP_Routed"), text("IP_Routed")],
            Action::GetNatRsipStatus => vec![text("0"), text("1")],
            Action::SetConnectionType => return Err(UpnpError::ReadOnly),
            Action::RequestConnection | Action::ForceTermination => {
                return Err(UpnpError::ActionNotAuthorized);
            }
            Action::AddPortMapping(a) => {
                self.add(ctx, a, false).await?;
                vec![]
            }
            Action::AddAnyPortMapping(a) => {
                let m = self.add(ctx, a, true).await?;
                vec![text(m.key.external_port.to_string())]
            }
            Action::DeletePortMapping(key) => {
                let m = self
                    .backend
                    .get(now, &key)
                    .ok_or(UpnpError::NoSuchEntryInArray)?;
                if !self.mine(ctx, &m) {
                    return Err(match v {
                        IgdVersion::V2 => UpnpError::ActionNotAuthorized,
                        IgdVersion::V1 => UpnpError::NoSuchEntryInArray,
                    });
                }
                self.backend
                    .delete(now, key)
                    .await
                    .map_err(|e| map_err(e, v))?;
                vec![]
            }
            Action::DeletePortMappingRange {
                start,
                end,
                protocol,
                manage,
            } => {
                if manage && self.policy.get().secure_mode {
                    return Err(UpnpError::ActionNotAuthorized);
                }
                let victims: Vec<PortMapping> = self
                    .backend
                    .list(now)
                    .into_iter()
                    .filter(|m| {
                        m.key.protocol == protocol
                            && (start..=end).contains(&m.key.external_port)
                            && (manage || m.internal_client == ctx.caller)
                    })
                    .collect();
                if victims.is_empty() {
                    return Err(UpnpError::PortMappingNotFound);
                }
                // All deletes at once: each waits for its PCP answer (at most the core's
                // delete wait), so the range is answered within one wait, not one per
                // mapping, and under a control point's SOAP timeout whatever its size.
                let deletes = victims.iter().map(|m| self.backend.delete(now, m.key));
                for result in futures_util::future::join_all(deletes).await {
                    match result {
                        Ok(_) | Err(MappingError::NotFound) => {}
                        Err(e) => return Err(map_err(e, v)),
                    }
                }
                vec![]
            }
            Action::GetSpecificPortMappingEntry(key) => match self.backend.get(now, &key) {
                Some(m) => entry_outs(&m, now),
                None => return Err(map_err(self.backend.probe_specific(now, key).await, v)),
            },
            Action::GetGenericPortMappingEntry(index) => {
                let list = self.backend.list(now);
                let m = usize::try_from(index)
                    .ok()
                    .and_then(|i| list.get(i))
                    .ok_or(UpnpError::SpecifiedArrayIndexInvalid)?;
                let mut outs = vec![
                    text(m.key.remote_host.map(|h| h.to_string()).unwrap_or_default()),
                    text(m.key.external_port.to_string()),
                    text(m.key.protocol.as_str()),
                ];
                outs.extend(entry_outs(m, now));
                outs
            }
            Action::GetListOfPortMappings {
                start,
                end,
                protocol,
                manage,
                max,
            } => {
                let entries: Vec<PortMapping> = self
                    .backend
                    .list(now)
                    .into_iter()
                    .filter(|m| {
                        m.key.protocol == protocol
                            && (start..=end).contains(&m.key.external_port)
                            && (manage || m.internal_client == ctx.caller)
                    })
                    .take(max)
                    .collect();
                if entries.is_empty() {
                    return Err(UpnpError::PortMappingNotFound);
                }
                vec![OutValue::CData(port_listing(&entries, now))]
            }
            Action::GetCommonLinkProperties => vec![
                text("Ethernet"),
                text(self.link.upstream_bps.to_string()),
                text(self.link.downstream_bps.to_string()),
                text(var("PhysicalLinkStatus")),
            ],
            Action::GetTotalBytesSent => vec![text(self.link.counter("tx_bytes").to_string())],
            Action::GetTotalBytesReceived => vec![text(self.link.counter("rx_bytes").to_string())],
            Action::GetTotalPacketsSent => vec![text(self.link.counter("tx_packets").to_string())],
            Action::GetTotalPacketsReceived => {
                vec![text(self.link.counter("rx_packets").to_string())]
            }
            Action::GetDefaultConnectionService => vec![text(var("DefaultConnectionService"))],
            Action::SetDefaultConnectionService(value) => {
                let (udn, sid) = value.split_once(',').ok_or(UpnpError::InvalidArgs)?;
                if !udn.trim().starts_with(&self.identity.conn_udn()) {
                    return Err(UpnpError::InvalidDeviceUuid);
                }
                if sid.trim() != Service::WanIpConnection.service_id() {
                    return Err(UpnpError::InvalidServiceId);
                }
                vec![]
            }
            Action::QueryStateVariable(name) => {
                let value = self
                    .state_variable(&name, now)
                    .ok_or(UpnpError::InvalidVar)?;
                vec![text(value)]
            }
        })
    }

    /// Parses and executes `action` with the SOAP arguments of `req`; returns the named out
    /// arguments ready for [`crate::soap::response`].
    pub async fn handle(
        &self,
        ctx: &Context,
        action: &str,
        req: &SoapRequest,
    ) -> Result<Vec<(&'static str, OutValue)>, UpnpError> {
        let parsed = Action::parse(action, req, ctx)?;
        let values = self.execute(ctx, parsed).await?;
        Ok(out_names(action).into_iter().zip(values).collect())
    }
}

#[cfg(test)]
#[path = "actions_tests.rs"]
mod tests;
