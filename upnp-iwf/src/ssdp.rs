//! SSDP message parsing (UDA 1.1 §1, upnp-igd.md §1.2): a tolerant reader of M-SEARCH,
//! NOTIFY and search responses — header names in any case, with or without a space after
//! the colon, trailing blank lines ignored — and the search-target grammar.

/// Largest datagram parsed; longer ones are refused (miniupnpd reads 1500 bytes).
pub const MAX_DATAGRAM: usize = 1500;
/// Most header lines read from one message.
pub const MAX_HEADERS: usize = 32;
/// The IPv4 SSDP group.
pub const SSDP_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(239, 255, 255, 250);
/// The SSDP port.
pub const SSDP_PORT: u16 = 1900;

/// A parsed SSDP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsdpMessage {
    /// `M-SEARCH * HTTP/1.1`.
    Search(SearchRequest),
    /// `NOTIFY * HTTP/1.1` (ignored by a device).
    Notify,
    /// `HTTP/1.1 200 OK` (another device's search answer; ignored).
    Response,
}

/// The parts of an M-SEARCH a device acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// `ST`, blanks trimmed.
    pub st: String,
    /// `MX` seconds if present and numeric.
    pub mx: Option<u32>,
    /// `MAN` value as sent (quoted or not).
    pub man: Option<String>,
    /// `USER-AGENT`, if any.
    pub user_agent: Option<String>,
}

/// Why a datagram is not an SSDP message this device answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SsdpError {
    /// Larger than [`MAX_DATAGRAM`].
    #[error("datagram too long")]
    TooLong,
    /// Not UTF-8 text.
    #[error("not text")]
    NotText,
    /// Unknown start line.
    #[error("unknown start line")]
    BadStartLine,
    /// A header line without `:` or too many lines.
    #[error("malformed header")]
    BadHeader,
    /// M-SEARCH without `ST`.
    #[error("M-SEARCH without ST")]
    MissingSt,
}

/// Header lines of a message, names matched case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Headers<'a> {
    /// First value of header `name` (any case), trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Splits a message into its start line and headers; stops at the first empty line.
pub fn split(datagram: &[u8]) -> Result<(&str, Headers<'_>), SsdpError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(SsdpError::TooLong);
    }
    let text = std::str::from_utf8(datagram).map_err(|_| SsdpError::NotText)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or("").trim();
    let mut headers = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(SsdpError::BadHeader)?;
        if headers.len() >= MAX_HEADERS {
            return Err(SsdpError::BadHeader);
        }
        headers.push((name.trim(), value.trim()));
    }
    Ok((start, Headers(headers)))
}

/// Parses an SSDP datagram.
pub fn parse(datagram: &[u8]) -> Result<SsdpMessage, SsdpError> {
    let (start, headers) = split(datagram)?;
    let mut parts = start.split_ascii_whitespace();
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    match (a, b, c) {
        (Some(m), Some("*"), Some(v))
            if m.eq_ignore_ascii_case("M-SEARCH") && v.starts_with("HTTP/1.") =>
        {
            let st = headers.get("ST").ok_or(SsdpError::MissingSt)?;
            if st.is_empty() {
                return Err(SsdpError::MissingSt);
            }
            Ok(SsdpMessage::Search(SearchRequest {
                st: st.to_owned(),
                mx: headers.get("MX").and_then(|v| v.parse().ok()),
                man: headers.get("MAN").map(str::to_owned),
                user_agent: headers.get("USER-AGENT").map(str::to_owned),
            }))
        }
        (Some(m), Some("*"), Some(_)) if m.eq_ignore_ascii_case("NOTIFY") => {
            Ok(SsdpMessage::Notify)
        }
        (Some(v), Some("200"), _) if v.starts_with("HTTP/1.") => Ok(SsdpMessage::Response),
        _ => Err(SsdpError::BadStartLine),
    }
}

/// A search target (`ST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchTarget {
    /// `ssdp:all`.
    All,
    /// `upnp:rootdevice`.
    RootDevice,
    /// `uuid:<X>` (X without the prefix).
    Uuid(String),
    /// `urn:schemas-upnp-org:device:<name>:<version>`.
    Device {
        /// Type name.
        name: String,
        /// Version asked for.
        version: u32,
    },
    /// `urn:schemas-upnp-org:service:<name>:<version>`.
    Service {
        /// Type name.
        name: String,
        /// Version asked for.
        version: u32,
    },
    /// Anything else (vendor domains, malformed): never answered.
    Other,
}

impl SearchTarget {
    /// Classifies an `ST` value (already trimmed).
    pub fn parse(st: &str) -> SearchTarget {
        if st == "ssdp:all" {
            return SearchTarget::All;
        }
        if st == "upnp:rootdevice" {
            return SearchTarget::RootDevice;
        }
        if let Some(u) = st.strip_prefix("uuid:") {
            return SearchTarget::Uuid(u.to_owned());
        }
        let Some(rest) = st.strip_prefix("urn:schemas-upnp-org:") else {
            return SearchTarget::Other;
        };
        let mut it = rest.splitn(3, ':');
        let (kind, name, ver) = (it.next(), it.next(), it.next());
        let (Some(kind), Some(name), Some(ver)) = (kind, name, ver) else {
            return SearchTarget::Other;
        };
        let Ok(version) = ver.parse::<u32>() else {
            return SearchTarget::Other;
        };
        if name.is_empty() || version == 0 {
            return SearchTarget::Other;
        }
        let name = name.to_owned();
        match kind {
            "device" => SearchTarget::Device { name, version },
            "service" => SearchTarget::Service { name, version },
            _ => SearchTarget::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(bytes: &str) -> SearchRequest {
        match parse(bytes.as_bytes()) {
            Ok(SsdpMessage::Search(s)) => s,
            other => panic!("not a search: {other:?}"),
        }
    }

    // Checklist: header names case-insensitive, with or without a space after ':'
    // (igd-next bytes).
    #[test]
    fn igd_next_compact_mixed_case_search_parses() {
        let s = search(
            "M-SEARCH * HTTP/1.1\r\nHost:239.255.255.250:1900\r\n\
             ST:urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
             Man:\"ssdp:discover\"\r\nMX:3\r\n\r\n",
        );
        assert_eq!(s.st, "urn:schemas-upnp-org:device:InternetGatewayDevice:1");
        assert_eq!(s.mx, Some(3));
        assert_eq!(s.man.as_deref(), Some("\"ssdp:discover\""));
    }

    // Checklist: an M-SEARCH ending with three CRLFs (libtorrent bytes).
    #[test]
    fn libtorrent_search_with_extra_crlf_parses() {
        let s = search(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST:upnp:rootdevice\r\n\
             MAN:\"ssdp:discover\"\r\nMX:3\r\n\r\n\r\n",
        );
        assert_eq!(s.st, "upnp:rootdevice");
    }

    // Checklist: no MX and unquoted MAN still parse.
    #[test]
    fn search_without_mx_and_with_unquoted_man_parses() {
        let s = search("M-SEARCH * HTTP/1.1\nst:  ssdp:all  \nman: ssdp:discover\n\n");
        assert_eq!(s.st, "ssdp:all");
        assert_eq!(s.mx, None);
    }

    #[test]
    fn notify_and_responses_are_recognised_and_garbage_refused() {
        assert_eq!(
            parse(b"NOTIFY * HTTP/1.1\r\nNTS: ssdp:alive\r\n\r\n"),
            Ok(SsdpMessage::Notify)
        );
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(SsdpMessage::Response));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(SsdpError::BadStartLine)
        );
        assert_eq!(
            parse(b"M-SEARCH * HTTP/1.1\r\nMX: 1\r\n\r\n"),
            Err(SsdpError::MissingSt)
        );
        assert_eq!(
            parse(b"M-SEARCH * HTTP/1.1\r\nnocolon\r\n\r\n"),
            Err(SsdpError::BadHeader)
        );
        assert_eq!(parse(&[0xff; 10]), Err(SsdpError::NotText));
        assert_eq!(parse(&[b'a'; 2000]), Err(SsdpError::TooLong));
    }

    #[test]
    fn search_targets_are_classified() {
        assert_eq!(SearchTarget::parse("ssdp:all"), SearchTarget::All);
        assert_eq!(
            SearchTarget::parse("urn:schemas-upnp-org:service:WANIPConnection:2"),
            SearchTarget::Service {
                name: "WANIPConnection".into(),
                version: 2
            }
        );
        assert_eq!(
            SearchTarget::parse("uuid:abc"),
            SearchTarget::Uuid("abc".into())
        );
        for other in [
            "urn:microsoft-com:service:X:1",
            "urn:schemas-upnp-org:device:IGD",
            "urn:schemas-upnp-org:device:IGD:x",
            "urn:schemas-upnp-org:thing:IGD:1",
        ] {
            assert_eq!(SearchTarget::parse(other), SearchTarget::Other);
        }
    }
}
