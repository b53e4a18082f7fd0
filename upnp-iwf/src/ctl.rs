//! The control socket: `upnp-iwf ctl status|mappings [--json]|delete PROTO PORT [REMOTE]|
//! renew-all`. One request line over a Unix stream socket, the answer text, then the daemon
//! closes; an answer whose first line starts with `error: ` is a refusal.
//!
//! The socket is the router owner's, not the LAN's: it is created with mode 0600 (root only)
//! or 0660 with `--ctl-group` (that group may also control the daemon), in a directory only
//! root can write. What the LAN can reach over HTTP stays read-only.

use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::http::IgdServer;
use crate::mapping::{MappingKey, PortMappingBackend, Protocol};

/// Where the daemon listens and `upnp-iwf ctl` connects when no `--ctl` is given.
pub const DEFAULT_PATH: &str = "/run/upnp-iwf/ctl.sock";

/// Longest request line accepted.
const MAX_LINE: u64 = 512;

/// How long one client may take to send its line.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Health, mappings and recent events.
    Status {
        /// JSON (the `/status.json` document) instead of text.
        json: bool,
    },
    /// The mappings with their upstream state.
    Mappings {
        /// A JSON array instead of text lines.
        json: bool,
    },
    /// Delete one mapping on both NATs (PCP delete with its nonce, then NAT1).
    Delete(MappingKey),
    /// Refresh every mapping upstream now.
    RenewAll,
}

/// Why a request line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing was sent.
    #[error("empty request (try: status, mappings, delete PROTO PORT, renew-all)")]
    Empty,
    /// Unknown command word.
    #[error("unknown command {0:?} (try: status, mappings, delete PROTO PORT, renew-all)")]
    Unknown(String),
    /// A bad or missing argument.
    #[error("{0}")]
    Argument(String),
}

impl Request {
    /// The wire line.
    pub fn line(&self) -> String {
        let json = |j: bool| if j { " --json" } else { "" };
        match self {
            Request::Status { json: j } => format!("status{}", json(*j)),
            Request::Mappings { json: j } => format!("mappings{}", json(*j)),
            Request::Delete(k) => match k.remote_host {
                Some(r) => format!("delete {} {} {r}", k.protocol.as_str(), k.external_port),
                None => format!("delete {} {}", k.protocol.as_str(), k.external_port),
            },
            Request::RenewAll => "renew-all".into(),
        }
    }

    /// Parses a wire line (or the words of the command line).
    pub fn parse(line: &str) -> Result<Request, ParseError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, rest)) = words.split_first() else {
            return Err(ParseError::Empty);
        };
        let flag_json = |rest: &[&str]| match rest {
            [] => Ok(false),
            ["--json"] => Ok(true),
            other => Err(ParseError::Argument(format!(
                "{cmd}: unexpected {:?} (only --json)",
                other.join(" ")
            ))),
        };
        match cmd {
            "status" => Ok(Request::Status {
                json: flag_json(rest)?,
            }),
            "mappings" => Ok(Request::Mappings {
                json: flag_json(rest)?,
            }),
            "renew-all" if rest.is_empty() => Ok(Request::RenewAll),
            "renew-all" => Err(ParseError::Argument(
                "renew-all takes no argument".to_owned(),
            )),
            "delete" => {
                let usage = || {
                    ParseError::Argument(
                        "usage: delete TCP|UDP EXTERNAL-PORT [REMOTE-HOST]".to_owned(),
                    )
                };
                let (proto, port, remote) = match rest {
                    [p, port] => (p, port, None),
                    [p, port, r] => (p, port, Some(r)),
                    _ => return Err(usage()),
                };
                let protocol = Protocol::parse(proto).ok_or_else(|| {
                    ParseError::Argument(format!("delete: protocol {proto:?} is not TCP or UDP"))
                })?;
                let external_port =
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| {
                            ParseError::Argument(format!("delete: port {port:?} is not 1-65535"))
                        })?;
                let remote_host = match remote {
                    None => None,
                    Some(r) => Some(r.parse::<Ipv4Addr>().map_err(|_| {
                        ParseError::Argument(format!("delete: remote host {r:?} is not IPv4"))
                    })?),
                };
                Ok(Request::Delete(MappingKey {
                    external_port,
                    protocol,
                    remote_host,
                }))
            }
            other => Err(ParseError::Unknown(other.to_owned())),
        }
    }
}

/// The answer to one request (text; `error: …` first line for a refusal).
pub async fn answer<B: PortMappingBackend>(srv: &IgdServer<B>, req: Request) -> String {
    let now = Instant::now();
    match req {
        Request::Status { json: true } => srv.igd.backend.status(now).to_json(),
        Request::Status { json: false } => srv.igd.backend.status(now).to_text(),
        Request::Mappings { json } => {
            let st = srv.igd.backend.status(now);
            if json {
                let mut s =
                    serde_json::to_string_pretty(&st.mappings).unwrap_or_else(|_| "[]".into());
                s.push('\n');
                s
            } else {
                let text = st.to_text();
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("TCP ") || l.starts_with("UDP "))
                    .collect();
                if lines.is_empty() {
                    "no mappings\n".into()
                } else {
                    lines.join("\n") + "\n"
                }
            }
        }
        Request::Delete(key) => {
            let result = srv.igd.backend.delete(now, key).await;
            srv.changed.notify_one();
            match result {
                Ok(m) => {
                    tracing::info!(port = key.external_port, protocol = key.protocol.as_str(), client = %m.internal_client, "mapping deleted by the operator (ctl)");
                    format!(
                        "deleted {} {} ({}:{})\n",
                        key.protocol.as_str(),
                        key.external_port,
                        m.internal_client,
                        m.internal_port
                    )
                }
                Err(e) => format!(
                    "error: cannot delete {} {}: {e}\n",
                    key.protocol.as_str(),
                    key.external_port
                ),
            }
        }
        Request::RenewAll => {
            let n = srv.igd.backend.renew_all(now);
            format!("renewing {n} mappings upstream\n")
        }
    }
}

/// Binds the control socket at `path`: the parent directory is created (0755) if missing, a
/// stale socket left by a crash is replaced, and a live one (another daemon answers there) is
/// an error. Mode 0600, or 0660 owned by `group`.
pub fn bind(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another daemon answers on {} (give this one its own --ctl PATH)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Bind under a umask-independent name, then fix the mode before anyone can connect
    // through the final name.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(&tmp, None, Some(gid))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// The gid of a group name or number (from `/etc/group`).
pub fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    parse_group(&groups, name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group {name:?} in /etc/group"),
        )
    })
}

fn parse_group(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Serves the control socket until the task is aborted; each connection is one request.
pub async fn serve<B: PortMappingBackend>(listener: UnixListener, srv: Arc<IgdServer<B>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let srv = srv.clone();
        tokio::spawn(async move {
            if let Err(e) = one(stream, &srv).await {
                tracing::debug!(error = %e, "control connection");
            }
        });
    }
}

async fn one<B: PortMappingBackend>(stream: UnixStream, srv: &IgdServer<B>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE));
    match tokio::time::timeout(READ_LIMIT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    }
    let text = match Request::parse(&line) {
        Ok(req) => answer(srv, req).await,
        Err(e) => format!("error: {e}\n"),
    };
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Sends `request` to the daemon at `path`; the answer text, or why there is none.
pub fn call(path: &Path, request: &Request) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "no upnp-iwf answers on {} ({e}) — is the daemon running, with this --ctl path?",
            path.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "{}: permission denied — the control socket is for root (or the --ctl-group)",
            path.display()
        ),
        _ => format!("cannot connect to {}: {e}", path.display()),
    })?;
    let io = |e: io::Error| format!("talking to upnp-iwf on {}: {e}", path.display());
    // A delete waits for the CGN's answer (bounded by the core's delete wait).
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    s.write_all(format!("{}\n", request.line()).as_bytes())
        .map_err(io)?;
    s.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(io)?;
    Ok(answer)
}

/// `upnp-iwf ctl …` on the command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "upnp-iwf ctl",
    about = "Control a running upnp-iwf over its Unix socket (root or --ctl-group only)"
)]
pub struct CtlCli {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub ctl: PathBuf,
    /// status [--json] | mappings [--json] | delete TCP|UDP PORT [REMOTE-HOST] | renew-all
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Runs `upnp-iwf ctl` with `args` (after the word `ctl`); the process exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    use clap::Parser as _;
    let cli = match CtlCli::try_parse_from(std::iter::once("upnp-iwf ctl".to_owned()).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let req = match Request::parse(&cli.command.join(" ")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("upnp-iwf ctl: {e}");
            return 2;
        }
    };
    match call(&cli.ctl, &req) {
        Ok(answer) => match answer.strip_prefix("error: ") {
            Some(rest) => {
                eprint!("upnp-iwf ctl: {rest}");
                1
            }
            None => {
                print!("{answer}");
                0
            }
        },
        Err(e) => {
            eprintln!("upnp-iwf ctl: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_ones_say_what_is_wrong() {
        for req in [
            Request::Status { json: true },
            Request::Status { json: false },
            Request::Mappings { json: true },
            Request::RenewAll,
            Request::Delete(MappingKey {
                external_port: 20000,
                protocol: Protocol::Udp,
                remote_host: None,
            }),
            Request::Delete(MappingKey {
                external_port: 80,
                protocol: Protocol::Tcp,
                remote_host: Some(Ipv4Addr::new(203, 0, 113, 5)),
            }),
        ] {
            assert_eq!(Request::parse(&req.line()), Ok(req));
        }
        assert_eq!(Request::parse("  "), Err(ParseError::Empty));
        assert!(matches!(
            Request::parse("reboot"),
            Err(ParseError::Unknown(w)) if w == "reboot"
        ));
        let err = |l: &str| Request::parse(l).expect_err("refused").to_string();
        assert_eq!(
            err("delete SCTP 1"),
            "delete: protocol \"SCTP\" is not TCP or UDP"
        );
        assert_eq!(err("delete udp 0"), "delete: port \"0\" is not 1-65535");
        assert_eq!(
            err("delete udp 70000"),
            "delete: port \"70000\" is not 1-65535"
        );
        assert_eq!(
            err("delete udp 1 nowhere"),
            "delete: remote host \"nowhere\" is not IPv4"
        );
        assert_eq!(
            err("delete udp"),
            "usage: delete TCP|UDP EXTERNAL-PORT [REMOTE-HOST]"
        );
        assert_eq!(
            err("status --yaml"),
            "status: unexpected \"--yaml\" (only --json)"
        );
        assert_eq!(err("renew-all now"), "renew-all takes no argument");
    }

    #[test]
    fn group_names_resolve_from_etc_group_lines() {
        let g = "root:x:0:\nadm:x:4:syslog\nnetdev:x:108:\n";
        assert_eq!(parse_group(g, "netdev"), Some(108));
        assert_eq!(parse_group(g, "adm"), Some(4));
        assert_eq!(parse_group(g, "wheel"), None);
    }

    #[tokio::test]
    async fn the_socket_is_private_and_a_live_one_is_not_stolen() {
        let dir = std::env::temp_dir().join(format!("upnp-iwf-ctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("ctl.sock");
        let l = bind(&path, None).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = bind(&path, None).expect_err("live socket");
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        drop(l);
        // Stale (nobody listens): replaced.
        let _l = bind(&path, Some(0)).expect("rebind over a stale socket");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
