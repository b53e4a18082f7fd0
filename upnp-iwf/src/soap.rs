//! SOAP 1.1 envelopes for UPnP control (upnp-igd.md §3): the `SOAPAction` header, a tolerant
//! request parser (any envelope prefix or none, no XML declaration, BOM, whitespace, CDATA,
//! empty-element forms, entities decoded, values trimmed, matched by local name), the success
//! response writer that echoes the request's service namespace, and the UPnPError fault.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::xml::escape;

/// SOAP 1.1 envelope namespace.
pub const SOAP_ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP encoding style.
pub const SOAP_ENCODING: &str = "http://schemas.xmlsoap.org/soap/encoding/";
/// Deepest element nesting accepted in a request.
pub const MAX_DEPTH: usize = 16;
/// Most arguments accepted in one action.
pub const MAX_ARGS: usize = 32;

/// A UPnP control error (UDA and IGD error codes, upnp-igd.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("UPnP error {} {}", self.code(), self.description())]
#[allow(missing_docs)]
pub enum UpnpError {
    InvalidAction,
    InvalidArgs,
    InvalidVar,
    ActionFailed,
    ArgumentValueOutOfRange,
    StringArgumentTooLong,
    ActionNotAuthorized,
    SpecifiedArrayIndexInvalid,
    NoSuchEntryInArray,
    WildCardNotPermittedInSrcIp,
    WildCardNotPermittedInExtPort,
    ConflictInMappingEntry,
    InvalidDeviceUuid,
    InvalidServiceId,
    InvalidConnServiceSelection,
    SamePortValuesRequired,
    OnlyPermanentLeasesSupported,
    NoPortMapsAvailable,
    ConflictWithOtherMechanisms,
    PortMappingNotFound,
    ReadOnly,
    WildCardNotPermittedInIntPort,
    InconsistentParameter,
}

impl UpnpError {
    /// The numeric `errorCode`.
    pub fn code(self) -> u16 {
        use UpnpError::*;
        match self {
            InvalidAction => 401,
            InvalidArgs => 402,
            InvalidVar => 404,
            ActionFailed => 501,
            ArgumentValueOutOfRange => 601,
            StringArgumentTooLong => 605,
            ActionNotAuthorized => 606,
            SpecifiedArrayIndexInvalid => 713,
            NoSuchEntryInArray => 714,
            WildCardNotPermittedInSrcIp => 715,
            WildCardNotPermittedInExtPort => 716,
            ConflictInMappingEntry => 718,
            InvalidDeviceUuid => 720,
            InvalidServiceId => 721,
            InvalidConnServiceSelection => 723,
            SamePortValuesRequired => 724,
            OnlyPermanentLeasesSupported => 725,
            NoPortMapsAvailable => 728,
            ConflictWithOtherMechanisms => 729,
            PortMappingNotFound => 730,
            ReadOnly => 731,
            WildCardNotPermittedInIntPort => 732,
            InconsistentParameter => 733,
        }
    }

    /// The `errorDescription` string.
    pub fn description(self) -> &'static str {
        use UpnpError::*;
        match self {
            InvalidAction => "Invalid Action",
            InvalidArgs => "Invalid Args",
            InvalidVar => "Invalid Var",
            ActionFailed => "Action Failed",
            ArgumentValueOutOfRange => "Argument Value Out of Range",
            StringArgumentTooLong => "String Argument Too Long",
            ActionNotAuthorized => "Action not authorized",
            SpecifiedArrayIndexInvalid => "SpecifiedArrayIndexInvalid",
            NoSuchEntryInArray => "NoSuchEntryInArray",
            WildCardNotPermittedInSrcIp => "WildCardNotPermittedInSrcIP",
            WildCardNotPermittedInExtPort => "WildCardNotPermittedInExtPort",
            ConflictInMappingEntry => "ConflictInMappingEntry",
            InvalidDeviceUuid => "InvalidDeviceUUID",
            InvalidServiceId => "InvalidServiceID",
            InvalidConnServiceSelection => "InvalidConnServiceSelection",
            SamePortValuesRequired => "SamePortValuesRequired",
            OnlyPermanentLeasesSupported => "OnlyPermanentLeasesSupported",
            NoPortMapsAvailable => "NoPortMapsAvailable",
            ConflictWithOtherMechanisms => "ConflictWithOtherMechanisms",
            PortMappingNotFound => "PortMappingNotFound",
            ReadOnly => "ReadOnly",
            WildCardNotPermittedInIntPort => "WildCardNotPermittedInIntPort",
            InconsistentParameter => "InconsistentParameter",
        }
    }
}

/// A parsed `SOAPAction` header: `"<serviceType>#<actionName>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapAction {
    /// The namespace (service type) before `#`; echoed in the response.
    pub namespace: String,
    /// The action name after `#`; dispatch uses only this.
    pub action: String,
}

impl SoapAction {
    /// Parses the header value, quoted with `"`, with `'` or unquoted, surrounding blanks
    /// ignored. `None` when there is no `#`, the action name is empty or not a plain name.
    pub fn parse(value: &str) -> Option<SoapAction> {
        let v = value.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .unwrap_or(v)
            .trim();
        let (ns, action) = v.rsplit_once('#')?;
        let action = action.trim();
        if action.is_empty()
            || action.len() > 63
            || !action
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || ns.len() > 256
        {
            return None;
        }
        Some(SoapAction {
            namespace: ns.trim().to_owned(),
            action: action.to_owned(),
        })
    }
}

/// The body of a control request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SoapRequest {
    /// Local name of the first element inside `Body`.
    pub action: String,
    /// Arguments by local name, in document order, values entity-decoded and trimmed
    /// (`<X/>` and `<X></X>` are both "").
    pub args: Vec<(String, String)>,
}

impl SoapRequest {
    /// The value of argument `name`, if present.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a body could not be read (answered with 402 Invalid Args, or 401 when no action
/// element was found).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapParseError {
    /// Not UTF-8.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// Ill-formed XML or an undecodable entity.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// No element inside `Body`.
    #[error("no action element in the SOAP body")]
    NoAction,
    /// Nesting or argument count over the limits.
    #[error("request too complex")]
    TooComplex,
    /// The body carries a document type declaration. SOAP 1.1 §3: "A SOAP message MUST NOT
    /// contain a Document Type Declaration"; refused rather than read with its entities
    /// unexpanded (issue #13 item 5).
    #[error("SOAP body has a DTD (<!DOCTYPE …>); SOAP messages must not contain one")]
    Dtd,
}

fn local(name: &[u8]) -> String {
    let n = name.rsplit(|b| *b == b':').next().unwrap_or(name);
    String::from_utf8_lossy(n).into_owned()
}

/// Parses a SOAP request body. Well-formed XML is read with quick-xml; a body that is not
/// well-formed only because argument values carry unescaped `&` or `<…>` (upnpc, Syncthing
/// and igd-next ≤ 0.17 do not escape descriptions) is read by [`parse_lenient`].
pub fn parse_request(body: &[u8]) -> Result<SoapRequest, SoapParseError> {
    let text = std::str::from_utf8(body).map_err(|_| SoapParseError::NotUtf8)?;
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if has_doctype(text) {
        return Err(SoapParseError::Dtd);
    }
    match parse_strict(text) {
        Err(SoapParseError::Xml(e)) => parse_lenient(text).ok_or(SoapParseError::Xml(e)),
        other => other,
    }
}

/// Whether `text` has a `<!DOCTYPE` (any case) anywhere: the lenient reader would
/// otherwise skip it, and no UPnP control point sends one.
fn has_doctype(text: &str) -> bool {
    text.as_bytes()
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"<!DOCTYPE"))
}

fn qname_end(s: &str) -> usize {
    s.find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .unwrap_or(s.len())
}

fn decode_lenient(raw: &str) -> String {
    if let Some(inner) = raw
        .trim()
        .strip_prefix("<![CDATA[")
        .and_then(|r| r.strip_suffix("]]>"))
    {
        return inner.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let known = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .iter()
        .find(|(e, _)| tail.starts_with(e));
        match known {
            Some((e, c)) => {
                out.push(*c);
                rest = &tail[e.len()..];
            }
            None => {
                let num = tail.strip_prefix("&#").and_then(|t| {
                    let end = t.find(';')?;
                    let n = &t[..end];
                    let v = match n.strip_prefix('x') {
                        Some(h) => u32::from_str_radix(h, 16).ok()?,
                        None => n.parse().ok()?,
                    };
                    Some((char::from_u32(v)?, end + 3))
                });
                match num {
                    Some((c, len)) => {
                        out.push(c);
                        rest = &tail[len..];
                    }
                    None => {
                        out.push('&');
                        rest = &tail[1..];
                    }
                }
            }
        }
    }
    out.push_str(rest);
    out
}

/// The minixml-style reader miniupnpd uses: finds `Body`, takes its first element as the
/// action and each child `<Name>…</Name>` as an argument whose raw text runs up to the
/// matching closing tag, decoding the entities it recognises and keeping bare `&` and `<`.
pub fn parse_lenient(text: &str) -> Option<SoapRequest> {
    let mut i = 0;
    let body_end = loop {
        let lt = text[i..].find('<')? + i;
        let name = &text[lt + 1..lt + 1 + qname_end(&text[lt + 1..])];
        let gt = text[lt..].find('>')? + lt;
        i = gt + 1;
        if name.rsplit(':').next() == Some("Body") {
            break gt + 1;
        }
    };
    let rest = text[body_end..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let action_q = &rest[..qname_end(rest)];
    let gt = rest.find('>')?;
    let mut req = SoapRequest {
        action: action_q.rsplit(':').next()?.to_owned(),
        args: Vec::new(),
    };
    if req.action.is_empty() {
        return None;
    }
    if rest[..gt].ends_with('/') {
        return Some(req);
    }
    let mut rest = &rest[gt + 1..];
    loop {
        rest = rest.trim_start();
        if rest.starts_with("</") || rest.is_empty() {
            return Some(req);
        }
        let r = rest.strip_prefix('<')?;
        let q = &r[..qname_end(r)];
        let gt = r.find('>')?;
        if q.is_empty() || q.starts_with('!') || q.starts_with('?') {
            return None;
        }
        let name = q.rsplit(':').next()?.to_owned();
        if r[..gt].ends_with('/') {
            push_arg(&mut req, name, String::new()).ok()?;
            rest = &r[gt + 1..];
            continue;
        }
        let after = &r[gt + 1..];
        let close = format!("</{q}>");
        let end = after.find(&close)?;
        push_arg(
            &mut req,
            name,
            decode_lenient(&after[..end]).trim().to_owned(),
        )
        .ok()?;
        rest = &after[end + close.len()..];
    }
}

fn parse_strict(text: &str) -> Result<SoapRequest, SoapParseError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut body_depth: Option<usize> = None;
    let mut action_depth: Option<usize> = None;
    let mut req = SoapRequest::default();
    let mut arg: Option<(String, String)> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| SoapParseError::Xml(e.to_string()))?;
        match ev {
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SoapParseError::TooComplex);
                }
                let name = local(e.name().as_ref());
                match (body_depth, action_depth) {
                    (None, _) if name == "Body" => body_depth = Some(depth),
                    (Some(b), None) if depth == b + 1 => {
                        req.action = name;
                        action_depth = Some(depth);
                    }
                    (_, Some(a)) if depth == a + 1 => arg = Some((name, String::new())),
                    _ => {}
                }
            }
            Event::Empty(e) => {
                let name = local(e.name().as_ref());
                match (body_depth, action_depth) {
                    (Some(b), None) if depth == b => {
                        req.action = name;
                        return Ok(req);
                    }
                    (_, Some(a)) if depth == a => push_arg(&mut req, name, String::new())?,
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some((_, v)) = arg.as_mut() {
                    let s = t
                        .unescape()
                        .map_err(|e| SoapParseError::Xml(e.to_string()))?;
                    v.push_str(&s);
                }
            }
            Event::CData(c) => {
                if let Some((_, v)) = arg.as_mut() {
                    v.push_str(&String::from_utf8_lossy(&c.into_inner()));
                }
            }
            Event::End(_) => {
                if action_depth.is_some_and(|a| depth == a + 1) {
                    if let Some((n, v)) = arg.take() {
                        push_arg(&mut req, n, v.trim().to_owned())?;
                    }
                } else if action_depth == Some(depth) {
                    return Ok(req);
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if req.action.is_empty() {
        Err(SoapParseError::NoAction)
    } else {
        Err(SoapParseError::Xml("unexpected end of document".into()))
    }
}

fn push_arg(req: &mut SoapRequest, name: String, value: String) -> Result<(), SoapParseError> {
    if req.args.len() >= MAX_ARGS {
        return Err(SoapParseError::TooComplex);
    }
    req.args.push((name, value));
    Ok(())
}

/// One out-argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutValue {
    /// Escaped text.
    Text(String),
    /// An XML document carried in CDATA (`NewPortListing`; miniupnpc decodes no entities).
    CData(String),
}

/// A success response: `<u:{action}Response xmlns:u="{namespace}">` with the out arguments
/// in the given (SCPD) order.
pub fn response(namespace: &str, action: &str, outs: &[(&str, OutValue)]) -> String {
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"{SOAP_ENVELOPE_NS}\" \
         s:encodingStyle=\"{SOAP_ENCODING}\"><s:Body><u:{action}Response xmlns:u=\"{}\">",
        escape(namespace)
    );
    for (name, value) in outs {
        match value {
            OutValue::Text(t) => {
                let _ = write!(s, "<{name}>{}</{name}>", escape(t));
            }
            OutValue::CData(t) => {
                let _ = write!(
                    s,
                    "<{name}><![CDATA[{}]]></{name}>",
                    t.replace("]]>", "]]]]><![CDATA[>")
                );
            }
        }
    }
    let _ = write!(s, "</u:{action}Response></s:Body></s:Envelope>\r\n");
    s
}

/// The fault body for `err` (sent with HTTP 500).
pub fn fault(err: UpnpError) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"{SOAP_ENVELOPE_NS}\" \
         s:encodingStyle=\"{SOAP_ENCODING}\"><s:Body><s:Fault><faultcode>s:Client</faultcode>\
         <faultstring>UPnPError</faultstring><detail><UPnPError \
         xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{}</errorCode>\
         <errorDescription>{}</errorDescription></UPnPError></detail></s:Fault></s:Body>\
         </s:Envelope>\r\n",
        err.code(),
        err.description()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Checklist: SOAPAction quoted with ", with ' and unquoted.
    #[test]
    fn soap_action_is_accepted_quoted_single_quoted_or_bare() {
        for v in [
            "\"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"",
            "'urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping'",
            " urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping ",
        ] {
            let a = SoapAction::parse(v).expect("parses");
            assert_eq!(a.action, "AddPortMapping");
            assert_eq!(
                a.namespace,
                "urn:schemas-upnp-org:service:WANIPConnection:1"
            );
        }
        assert_eq!(SoapAction::parse("no-hash"), None);
        assert_eq!(SoapAction::parse("\"ns#\""), None);
        assert_eq!(SoapAction::parse("ns#Add<x>"), None);
    }

    const MINIUPNPC: &str = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\"><NewRemoteHost></NewRemoteHost><NewExternalPort>5000</NewExternalPort><NewProtocol>UDP</NewProtocol><NewInternalPort>5000</NewInternalPort><NewInternalClient>192.168.0.10</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>a &amp; b</NewPortMappingDescription><NewLeaseDuration>0</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>\r\n";

    #[test]
    fn miniupnpc_add_port_mapping_body_parses() {
        let r = parse_request(MINIUPNPC.as_bytes()).expect("parses");
        assert_eq!(r.action, "AddPortMapping");
        assert_eq!(r.args.len(), 8);
        assert_eq!(r.arg("NewRemoteHost"), Some(""));
        assert_eq!(r.arg("NewPortMappingDescription"), Some("a & b"));
    }

    // Checklist: any envelope prefix, no declaration, BOM/whitespace, prefixed or unprefixed
    // arguments; <X/> and <X></X> both empty.
    #[test]
    fn tolerant_bodies_parse_by_local_name() {
        let body = "\u{feff}  \n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"x\"><SOAP-ENV:Body>\n\
            <m:DeletePortMapping xmlns:m=\"y\"><m:NewRemoteHost/>\n<NewExternalPort> 80 \
            </NewExternalPort><NewProtocol><![CDATA[tcp]]></NewProtocol></m:DeletePortMapping>\
            </SOAP-ENV:Body></SOAP-ENV:Envelope>";
        let r = parse_request(body.as_bytes()).expect("parses");
        assert_eq!(r.action, "DeletePortMapping");
        assert_eq!(
            r.args,
            vec![
                ("NewRemoteHost".into(), "".into()),
                ("NewExternalPort".into(), "80".into()),
                ("NewProtocol".into(), "tcp".into())
            ]
        );
        let unprefixed = "<Envelope><Body><GetExternalIPAddress/></Body></Envelope>";
        assert_eq!(
            parse_request(unprefixed.as_bytes()).expect("parses").action,
            "GetExternalIPAddress"
        );
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        assert_eq!(parse_request(b"\xff\xfe"), Err(SoapParseError::NotUtf8));
        assert_eq!(
            parse_request(b"<Envelope><Body></Body></Envelope>"),
            Err(SoapParseError::NoAction)
        );
        assert!(parse_request(b"<a><Body><X><Y>1</Z></X></Body></a>").is_err());
        assert!(parse_request(b"<a><Body><X><Y>1</Y").is_err());
        let deep = "<a>".repeat(40);
        assert_eq!(
            parse_request(deep.as_bytes()),
            Err(SoapParseError::TooComplex)
        );
        let many = format!(
            "<E><Body><X>{}</X></Body></E>",
            "<A>1</A>".repeat(MAX_ARGS + 1)
        );
        assert_eq!(
            parse_request(many.as_bytes()),
            Err(SoapParseError::TooComplex)
        );
    }

    // upnpc, Syncthing and igd-next ≤ 0.17 send descriptions unescaped.
    #[test]
    fn unescaped_ampersands_and_brackets_in_values_are_tolerated() {
        let body = "<s:Envelope><s:Body><u:AddPortMapping xmlns:u=\"x\"><NewRemoteHost></NewRemoteHost>\
            <NewPortMappingDescription>game & <voice> &amp; &#65;&bogus;</NewPortMappingDescription>\
            <NewLeaseDuration>0</NewLeaseDuration><NewEnabled/></u:AddPortMapping></s:Body></s:Envelope>";
        let r = parse_request(body.as_bytes()).expect("lenient parse");
        assert_eq!(r.action, "AddPortMapping");
        assert_eq!(
            r.arg("NewPortMappingDescription"),
            Some("game & <voice> & A&bogus;")
        );
        assert_eq!(r.arg("NewLeaseDuration"), Some("0"));
        assert_eq!(r.arg("NewEnabled"), Some(""));
        assert_eq!(r.arg("NewRemoteHost"), Some(""));
    }

    // Checklist: fault is s:Client / UPnPError / errorCode + errorDescription.
    // Issue #13 item 5; SOAP 1.1 §3: a message must not contain a DTD. Refused with a
    // precise error, whatever the case or position, and never read with entities unexpanded.
    #[test]
    fn a_body_with_a_dtd_is_refused() {
        let body = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"192.168.0.66\">]>\
                    <s:Envelope><s:Body><u:AddPortMapping><NewInternalClient>&e;</NewInternalClient>\
                    </u:AddPortMapping></s:Body></s:Envelope>";
        assert_eq!(parse_request(body.as_bytes()), Err(SoapParseError::Dtd));
        let lower = body.replace("DOCTYPE", "doctype");
        assert_eq!(parse_request(lower.as_bytes()), Err(SoapParseError::Dtd));
        assert!(
            SoapParseError::Dtd.to_string().contains("DTD"),
            "the error names the problem"
        );
        // Without the DTD the same envelope is read.
        let plain = "<s:Envelope><s:Body><u:AddPortMapping><NewInternalClient>192.168.0.10</NewInternalClient>\
                     </u:AddPortMapping></s:Body></s:Envelope>";
        assert!(parse_request(plain.as_bytes()).is_ok());
    }

    #[test]
    fn fault_carries_code_and_description() {
        let f = fault(UpnpError::ConflictInMappingEntry);
        assert!(f.contains("<faultcode>s:Client</faultcode>"));
        assert!(f.contains("<faultstring>UPnPError</faultstring>"));
        assert!(f.contains("<errorCode>718</errorCode>"));
        assert!(f.contains("<errorDescription>ConflictInMappingEntry</errorDescription>"));
    }

    #[test]
    fn response_echoes_namespace_and_wraps_listing_in_cdata() {
        let r = response(
            "urn:schemas-upnp-org:service:WANIPConnection:1",
            "GetListOfPortMappings",
            &[("NewPortListing", OutValue::CData("<p>a]]>b</p>".into()))],
        );
        assert!(r.contains(
            "<u:GetListOfPortMappingsResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">"
        ));
        assert!(
            r.contains("<NewPortListing><![CDATA[<p>a]]]]><![CDATA[>b</p>]]></NewPortListing>")
        );
        let back = parse_request(r.as_bytes()).expect("own output parses");
        assert_eq!(back.arg("NewPortListing"), Some("<p>a]]>b</p>"));
    }
}
