//! Durable state of the interworking function: every UPnP → PCP mapping, kept in
//! `--state-dir`/[`STATE_FILE`] so the daemon survives its own restarts (RFC 6970 §5.3: the
//! IWF SHOULD persist its mappings; design §3 "Nothing lost").
//!
//! The file is written on create and delete only, never on renewals (router flash), atomically
//! by [`StateDir::save`]. On start [`StateDir::load`] reads it back; a file that does not parse
//! is moved aside and the daemon starts empty, so a bad file never causes a crash loop.
//! [`split_expired`] then drops what expired while the daemon was down.
//!
//! The format is pretty-printed JSON, one object per mapping, sorted by key
//! (external port, protocol, remote host), so an operator can read and diff it:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use upnp_iwf::mapping::Protocol;
//! use upnp_iwf::state::{self, CreatedBy, FrontEnd, LeaseEnd, StoredMapping};
//!
//! let m = StoredMapping {
//!     owner: Ipv4Addr::new(192, 168, 0, 10),
//!     front_end: FrontEnd::Igd,
//!     remote_host: None,
//!     protocol: Protocol::Udp,
//!     external_port: 5000,
//!     internal_client: Ipv4Addr::new(192, 168, 0, 10),
//!     internal_port: 5000,
//!     nat1_port: 40000,
//!     external: Some("198.51.100.3:5000".parse().expect("literal")),
//!     nonce: [7; 12],
//!     lease_end: LeaseEnd::Permanent,
//!     description: "game".to_owned(),
//!     created_by: CreatedBy::AddPortMapping,
//!     enabled: true,
//! };
//! let bytes = state::render(std::slice::from_ref(&m));
//! assert!(String::from_utf8_lossy(&bytes).contains("\"nonce\": \"070707070707070707070707\""));
//! assert_eq!(state::parse(&bytes).expect("own output parses"), vec![m]);
//! // Anything else gets an error that names the place.
//! let err = state::parse(b"{\"version\": 1, \"mappings\": [}").expect_err("broken");
//! assert!(err.to_string().starts_with("mappings.json:1:"));
//! ```

mod dir;
mod serde_helpers;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::actions::MAX_DESCRIPTION;
use crate::mapping::{MappingKey, Protocol};

pub use dir::{Loaded, MAX_CORRUPT_COPIES, StateDir};

/// Name of the state file inside `--state-dir`.
pub const STATE_FILE: &str = "mappings.json";

/// Version of the file format this build writes and reads (`"version"` at the top level).
pub const FORMAT_VERSION: u32 = 1;

/// Most mappings a file may hold; a longer list is rejected as [`StateError::Invalid`].
pub const MAX_MAPPINGS: usize = 65_536;

/// Which LAN front-end created a mapping; serialized as a lower-case string (`"igd"`).
/// NAT-PMP and PCP front-ends will add variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontEnd {
    /// UPnP IGD (SOAP `AddPortMapping` / `AddAnyPortMapping`).
    Igd,
}

/// How a mapping was created; decides whether renewals carry PREFER_FAILURE (RFC 6970 §5.6).
/// Serialized as the UPnP action name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CreatedBy {
    /// `AddPortMapping`: exactly the requested port, so PCP MAP with PREFER_FAILURE (§5.6.2).
    AddPortMapping,
    /// `AddAnyPortMapping`: any port, so PCP MAP without PREFER_FAILURE (§5.6.1).
    AddAnyPortMapping,
}

/// When the UPnP lease ends, as wall-clock time so it means the same after a restart.
/// Serialized as unix seconds (`u64`), or the string `"permanent"`. Sub-second parts are not
/// stored: a reloaded lease ends at the whole second before. A time before 1970 is stored as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseEnd {
    /// No expiry (IGD:1 `NewLeaseDuration` 0).
    Permanent,
    /// Ends at this time.
    At(SystemTime),
}

impl LeaseEnd {
    /// A lease of `secs` seconds from `now`; 0 means [`LeaseEnd::Permanent`].
    pub fn from_secs(now: SystemTime, secs: u32) -> LeaseEnd {
        if secs == 0 {
            return LeaseEnd::Permanent;
        }
        now.checked_add(Duration::from_secs(u64::from(secs)))
            .map_or(LeaseEnd::Permanent, LeaseEnd::At)
    }

    /// Whether the lease has run out at `now` (its end is `now` or earlier).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        matches!(self, LeaseEnd::At(end) if *end <= now)
    }
}

/// One persisted mapping: what the IWF needs to renew or delete it at the PCP server after a
/// restart (RFC 6970 §5.3; design §7). Field formats are checked when the file is parsed;
/// [`validate`] checks the rules across fields and entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredMapping {
    /// Control point that created it.
    pub owner: Ipv4Addr,
    /// Front-end that created it.
    pub front_end: FrontEnd,
    /// `NewRemoteHost`; `None` (JSON `null`, which must be written out) is the wildcard.
    #[serde(deserialize_with = "Option::deserialize")]
    pub remote_host: Option<Ipv4Addr>,
    /// `NewProtocol`, `"TCP"` or `"UDP"` in the file.
    #[serde(with = "serde_helpers::protocol")]
    pub protocol: Protocol,
    /// The UPnP key's external port: the one the CP asked for, or the assigned one for
    /// `AddAnyPortMapping`. 1..=65535.
    pub external_port: u16,
    /// `NewInternalClient`.
    pub internal_client: Ipv4Addr,
    /// `NewInternalPort`, 1..=65535.
    pub internal_port: u16,
    /// WAN port on the CPE (the PCP MAP's internal port); 0 when there is no local NAT.
    pub nat1_port: u16,
    /// Last external endpoint granted by PCP (`"198.51.100.3:5000"`), `None` before any.
    /// Its port is never 0. `null` must be written out, like every field.
    #[serde(deserialize_with = "Option::deserialize")]
    pub external: Option<SocketAddrV4>,
    /// PCP mapping nonce, 24 hex digits in the file. A secret: PCP uses it to authorize
    /// renewals and deletes, hence the file's mode 0600.
    #[serde(with = "serde_helpers::nonce")]
    pub nonce: [u8; 12],
    /// When the UPnP lease ends.
    pub lease_end: LeaseEnd,
    /// `NewPortMappingDescription`, at most [`MAX_DESCRIPTION`] bytes.
    pub description: String,
    /// `AddPortMapping` or `AddAnyPortMapping`.
    pub created_by: CreatedBy,
    /// `NewEnabled`.
    pub enabled: bool,
}

impl StoredMapping {
    /// The UPnP key: remote host, external port, protocol.
    pub fn key(&self) -> MappingKey {
        MappingKey {
            external_port: self.external_port,
            protocol: self.protocol,
            remote_host: self.remote_host,
        }
    }
}

/// Why the state could not be read or written. Messages name the file and the place.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed JSON of the expected shape, or a field has a bad value.
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Parse {
        /// The file ([`STATE_FILE`] when parsed from bytes).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based byte column within the line (0 at the very start of an empty file).
        column: usize,
        /// What is wrong there.
        reason: String,
    },
    /// The file was written by a build with another format version.
    #[error(
        "{STATE_FILE}: format version {found} is not supported (this build reads version {supported})"
    )]
    Version {
        /// `"version"` in the file.
        found: u32,
        /// [`FORMAT_VERSION`].
        supported: u32,
    },
    /// An entry breaks a rule across fields or entries (port 0, duplicate key, too many).
    #[error("{STATE_FILE}: mappings[{index}]: {reason}")]
    Invalid {
        /// 0-based position in the `mappings` array.
        index: usize,
        /// The rule it breaks.
        reason: String,
    },
}

/// Top level of the file, for reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    /// Already checked by [`VersionOnly`]; listed so `deny_unknown_fields` accepts it.
    #[serde(rename = "version")]
    _version: u32,
    mappings: Vec<StoredMapping>,
}

/// Top level of the file, for writing.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    mappings: Vec<&'a StoredMapping>,
}

/// First pass: only the version, so a newer file gets [`StateError::Version`] rather than a
/// complaint about fields this build does not know.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Parses a state file strictly: UTF-8 JSON `{"version": 1, "mappings": [...]}` with no unknown
/// or repeated fields, no trailing bytes, and entries that pass [`validate`]. Returns the
/// mappings sorted by key (as [`render`] writes them). Never panics; every rejection says where.
pub fn parse(bytes: &[u8]) -> Result<Vec<StoredMapping>, StateError> {
    parse_file(Path::new(STATE_FILE), bytes)
}

/// [`parse`], naming `path` in [`StateError::Parse`].
fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<StoredMapping>, StateError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = 1 + good.iter().filter(|b| **b == b'\n').count();
        let column = 1 + good.iter().rev().take_while(|b| **b != b'\n').count();
        StateError::Parse {
            path: path.to_owned(),
            line,
            column,
            reason: format!("not UTF-8 (byte offset {})", e.valid_up_to()),
        }
    })?;
    let head: VersionOnly = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
    if head.version != FORMAT_VERSION {
        return Err(StateError::Version {
            found: head.version,
            supported: FORMAT_VERSION,
        });
    }
    let file: FileIn = serde_json::from_str(text).map_err(|e| json_error(path, &e))?;
    validate(&file.mappings)?;
    let mut mappings = file.mappings;
    mappings.sort_by_key(StoredMapping::key);
    Ok(mappings)
}

/// Turns a serde_json error into [`StateError::Parse`] with its line and column.
fn json_error(path: &Path, e: &serde_json::Error) -> StateError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    StateError::Parse {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        reason,
    }
}

/// Checks the rules a single field's format cannot express: external and internal ports are
/// not 0, a granted external endpoint has a port, descriptions fit [`MAX_DESCRIPTION`], no two
/// entries share a key (remote host + external port + protocol), at most [`MAX_MAPPINGS`]
/// entries. [`StateDir::save`] runs it first, so the daemon never writes a file it would
/// refuse to load.
pub fn validate(mappings: &[StoredMapping]) -> Result<(), StateError> {
    if mappings.len() > MAX_MAPPINGS {
        return Err(StateError::Invalid {
            index: MAX_MAPPINGS,
            reason: format!("more than {MAX_MAPPINGS} mappings"),
        });
    }
    let mut keys = HashSet::with_capacity(mappings.len());
    for (index, m) in mappings.iter().enumerate() {
        let invalid = |reason: String| Err(StateError::Invalid { index, reason });
        if m.external_port == 0 {
            return invalid("external_port is 0".to_owned());
        }
        if m.internal_port == 0 {
            return invalid("internal_port is 0".to_owned());
        }
        if let Some(ext) = m.external {
            if ext.port() == 0 {
                return invalid(format!("external {ext} has port 0"));
            }
        }
        if m.description.len() > MAX_DESCRIPTION {
            return invalid(format!(
                "description is {} bytes, more than {MAX_DESCRIPTION}",
                m.description.len()
            ));
        }
        if !keys.insert(m.key()) {
            let remote = m
                .remote_host
                .map_or_else(|| "*".to_owned(), |h| h.to_string());
            return invalid(format!(
                "duplicate key: remote host {remote}, external port {}, {}",
                m.external_port,
                m.protocol.as_str()
            ));
        }
    }
    Ok(())
}

/// Renders mappings as the state file: pretty JSON, `{"version": 1, "mappings": [...]}`, one
/// object per mapping, sorted by key, fields in declaration order, ending in a newline. The same
/// set always gives the same bytes. Does not check the rules; [`StateDir::save`] does.
pub fn render(mappings: &[StoredMapping]) -> Vec<u8> {
    let mut out = Vec::new();
    // Not input-dependent: every field serializes (no maps, no fallible custom impl), and a
    // Vec never fails to take bytes.
    #[allow(clippy::expect_used)]
    render_to(mappings, &mut out).expect("plain data always serializes into a Vec");
    out
}

/// [`render`] streamed into `out` (the state file through a small buffer: a router with a
/// thousand mappings never holds the whole ~0.5 MB document in memory).
pub fn render_to(mappings: &[StoredMapping], mut out: impl std::io::Write) -> std::io::Result<()> {
    let mut sorted: Vec<&StoredMapping> = mappings.iter().collect();
    sorted.sort_by_key(|m| m.key());
    let file = FileOut {
        version: FORMAT_VERSION,
        mappings: sorted,
    };
    serde_json::to_writer_pretty(&mut out, &file).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Splits off what expired while the daemon was down (lease end at or before `now`). Returns
/// `(kept, dropped)`, each in the input order; permanent leases are always kept.
pub fn split_expired(
    mappings: Vec<StoredMapping>,
    now: SystemTime,
) -> (Vec<StoredMapping>, Vec<StoredMapping>) {
    mappings
        .into_iter()
        .partition(|m| !m.lease_end.is_expired(now))
}
