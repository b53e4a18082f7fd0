//! The IGD service tables (upnp-igd.md §2.5–§2.7): every action with its arguments in
//! template order and every state variable with type, evented flag and allowed values. The
//! SCPDs ([`crate::description::scpd`]) and the SOAP out-argument order
//! ([`crate::actions::out_names`]) are both generated from these tables.

/// Argument direction in an SCPD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// In argument.
    In,
    /// Out argument.
    Out,
}

/// One action of an SCPD: name, arguments (name, direction, related state variable) in
/// template order, and whether it exists only in WANIPConnection:2.
#[derive(Debug, Clone, Copy)]
pub struct ActionDef {
    /// Action name.
    pub name: &'static str,
    /// Arguments in SCPD order.
    pub args: &'static [(&'static str, Dir, &'static str)],
    /// Only listed in the v2 SCPD.
    pub v2_only: bool,
}

impl ActionDef {
    /// Out argument names in SCPD order.
    pub fn out_args(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.args.iter().filter(|a| a.1 == Dir::Out).map(|a| a.0)
    }
}

use Dir::{In, Out};

pub(crate) const KEY_ARGS: [(&str, Dir, &str); 3] = [
    ("NewRemoteHost", In, "RemoteHost"),
    ("NewExternalPort", In, "ExternalPort"),
    ("NewProtocol", In, "PortMappingProtocol"),
];

pub(crate) const ADD_ARGS: [(&str, Dir, &str); 8] = [
    KEY_ARGS[0],
    KEY_ARGS[1],
    KEY_ARGS[2],
    ("NewInternalPort", In, "InternalPort"),
    ("NewInternalClient", In, "InternalClient"),
    ("NewEnabled", In, "PortMappingEnabled"),
    ("NewPortMappingDescription", In, "PortMappingDescription"),
    ("NewLeaseDuration", In, "PortMappingLeaseDuration"),
];

const fn a(name: &'static str, args: &'static [(&'static str, Dir, &'static str)]) -> ActionDef {
    ActionDef {
        name,
        args,
        v2_only: false,
    }
}

/// WANIPConnection actions; the three IGD:2-only ones come last so the IGD:1 SCPD is a prefix
/// (as miniupnpd does for Microsoft clients).
pub const WANIP_ACTIONS: &[ActionDef] = &[
    a(
        "SetConnectionType",
        &[("NewConnectionType", In, "ConnectionType")],
    ),
    a(
        "GetConnectionTypeInfo",
        &[
            ("NewConnectionType", Out, "ConnectionType"),
            ("NewPossibleConnectionTypes", Out, "PossibleConnectionTypes"),
        ],
    ),
    a("RequestConnection", &[]),
    a("ForceTermination", &[]),
    a(
        "GetStatusInfo",
        &[
            ("NewConnectionStatus", Out, "ConnectionStatus"),
            ("NewLastConnectionError", Out, "LastConnectionError"),
            ("NewUptime", Out, "Uptime"),
        ],
    ),
    a(
        "GetNATRSIPStatus",
        &[
            ("NewRSIPAvailable", Out, "RSIPAvailable"),
            ("NewNATEnabled", Out, "NATEnabled"),
        ],
    ),
    a(
        "GetGenericPortMappingEntry",
        &[
            ("NewPortMappingIndex", In, "PortMappingNumberOfEntries"),
            ("NewRemoteHost", Out, "RemoteHost"),
            ("NewExternalPort", Out, "ExternalPort"),
            ("NewProtocol", Out, "PortMappingProtocol"),
            ("NewInternalPort", Out, "InternalPort"),
            ("NewInternalClient", Out, "InternalClient"),
            ("NewEnabled", Out, "PortMappingEnabled"),
            ("NewPortMappingDescription", Out, "PortMappingDescription"),
            ("NewLeaseDuration", Out, "PortMappingLeaseDuration"),
        ],
    ),
    a(
        "GetSpecificPortMappingEntry",
        &[
            KEY_ARGS[0],
            KEY_ARGS[1],
            KEY_ARGS[2],
            ("NewInternalPort", Out, "InternalPort"),
            ("NewInternalClient", Out, "InternalClient"),
            ("NewEnabled", Out, "PortMappingEnabled"),
            ("NewPortMappingDescription", Out, "PortMappingDescription"),
            ("NewLeaseDuration", Out, "PortMappingLeaseDuration"),
        ],
    ),
    a("AddPortMapping", &ADD_ARGS),
    a("DeletePortMapping", &KEY_ARGS),
    a(
        "GetExternalIPAddress",
        &[("NewExternalIPAddress", Out, "ExternalIPAddress")],
    ),
    ActionDef {
        name: "DeletePortMappingRange",
        args: &[
            ("NewStartPort", In, "ExternalPort"),
            ("NewEndPort", In, "ExternalPort"),
            ("NewProtocol", In, "PortMappingProtocol"),
            ("NewManage", In, "A_ARG_TYPE_Manage"),
        ],
        v2_only: true,
    },
    ActionDef {
        name: "GetListOfPortMappings",
        args: &[
            ("NewStartPort", In, "ExternalPort"),
            ("NewEndPort", In, "ExternalPort"),
            ("NewProtocol", In, "PortMappingProtocol"),
            ("NewManage", In, "A_ARG_TYPE_Manage"),
            ("NewNumberOfPorts", In, "PortMappingNumberOfEntries"),
            ("NewPortListing", Out, "A_ARG_TYPE_PortListing"),
        ],
        v2_only: true,
    },
    ActionDef {
        name: "AddAnyPortMapping",
        args: &[
            ADD_ARGS[0],
            ADD_ARGS[1],
            ADD_ARGS[2],
            ADD_ARGS[3],
            ADD_ARGS[4],
            ADD_ARGS[5],
            ADD_ARGS[6],
            ADD_ARGS[7],
            ("NewReservedPort", Out, "ExternalPort"),
        ],
        v2_only: true,
    },
];

/// WANCommonInterfaceConfig actions.
pub const WANCFG_ACTIONS: &[ActionDef] = &[
    a(
        "GetCommonLinkProperties",
        &[
            ("NewWANAccessType", Out, "WANAccessType"),
            (
                "NewLayer1UpstreamMaxBitRate",
                Out,
                "Layer1UpstreamMaxBitRate",
            ),
            (
                "NewLayer1DownstreamMaxBitRate",
                Out,
                "Layer1DownstreamMaxBitRate",
            ),
            ("NewPhysicalLinkStatus", Out, "PhysicalLinkStatus"),
        ],
    ),
    a(
        "GetTotalBytesSent",
        &[("NewTotalBytesSent", Out, "TotalBytesSent")],
    ),
    a(
        "GetTotalBytesReceived",
        &[("NewTotalBytesReceived", Out, "TotalBytesReceived")],
    ),
    a(
        "GetTotalPacketsSent",
        &[("NewTotalPacketsSent", Out, "TotalPacketsSent")],
    ),
    a(
        "GetTotalPacketsReceived",
        &[("NewTotalPacketsReceived", Out, "TotalPacketsReceived")],
    ),
];

/// Layer3Forwarding actions.
pub const L3F_ACTIONS: &[ActionDef] = &[
    a(
        "SetDefaultConnectionService",
        &[(
            "NewDefaultConnectionService",
            In,
            "DefaultConnectionService",
        )],
    ),
    a(
        "GetDefaultConnectionService",
        &[(
            "NewDefaultConnectionService",
            Out,
            "DefaultConnectionService",
        )],
    ),
];

/// A state variable: name, data type, evented, allowed values, (min, max), v2 only.
pub(crate) type VarDef = (
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    Option<(u32, u32)>,
    bool,
);

pub(crate) const WANIP_VARS: &[VarDef] = &[
    ("ConnectionType", "string", false, &[], None, false),
    (
        "PossibleConnectionTypes",
        "string",
        true,
        &["Unconfigured", "IP_Routed", "IP_Bridged"],
        None,
        false,
    ),
    (
        "ConnectionStatus",
        "string",
        true,
        &[
            "Unconfigured",
            "Connecting",
            "Connected",
            "PendingDisconnect",
            "Disconnecting",
            "Disconnected",
        ],
        None,
        false,
    ),
    ("Uptime", "ui4", false, &[], None, false),
    (
        "LastConnectionError",
        "string",
        false,
        &["ERROR_NONE", "ERROR_UNKNOWN"],
        None,
        false,
    ),
    ("RSIPAvailable", "boolean", false, &[], None, false),
    ("NATEnabled", "boolean", false, &[], None, false),
    ("ExternalIPAddress", "string", true, &[], None, false),
    ("PortMappingNumberOfEntries", "ui2", true, &[], None, false),
    ("PortMappingEnabled", "boolean", false, &[], None, false),
    ("PortMappingLeaseDuration", "ui4", false, &[], None, false),
    ("RemoteHost", "string", false, &[], None, false),
    ("ExternalPort", "ui2", false, &[], None, false),
    ("InternalPort", "ui2", false, &[], Some((1, 65535)), false),
    (
        "PortMappingProtocol",
        "string",
        false,
        &["TCP", "UDP"],
        None,
        false,
    ),
    ("InternalClient", "string", false, &[], None, false),
    ("PortMappingDescription", "string", false, &[], None, false),
    ("SystemUpdateID", "ui4", true, &[], None, true),
    ("A_ARG_TYPE_Manage", "boolean", false, &[], None, true),
    ("A_ARG_TYPE_PortListing", "string", false, &[], None, true),
];

pub(crate) const WANCFG_VARS: &[VarDef] = &[
    (
        "WANAccessType",
        "string",
        false,
        &["DSL", "POTS", "Cable", "Ethernet"],
        None,
        false,
    ),
    ("Layer1UpstreamMaxBitRate", "ui4", false, &[], None, false),
    ("Layer1DownstreamMaxBitRate", "ui4", false, &[], None, false),
    (
        "PhysicalLinkStatus",
        "string",
        true,
        &["Up", "Down", "Initializing", "Unavailable"],
        None,
        false,
    ),
    ("TotalBytesSent", "ui4", false, &[], None, false),
    ("TotalBytesReceived", "ui4", false, &[], None, false),
    ("TotalPacketsSent", "ui4", false, &[], None, false),
    ("TotalPacketsReceived", "ui4", false, &[], None, false),
];

pub(crate) const L3F_VARS: &[VarDef] =
    &[("DefaultConnectionService", "string", true, &[], None, false)];
