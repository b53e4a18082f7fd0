//! `pcpc`: command-line PCP client (design.md §5).
//!
//! ```text
//! pcpc [--server ADDR]... [--json] map --protocol udp --internal-port 5000 --lifetime 3600
//! pcpc --server 192.168.0.1 peer --protocol tcp --internal-port 5000 --remote 203.0.113.50:80
//! pcpc announce
//! pcpc delete --protocol udp --internal-port 5000 --nonce 0x0123456789abcdef01234567
//! ```

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pcp_client::client::{Config, ErrorCode, Event, MapRequest, PeerRequest, RequestOptions};
use pcp_client::wire::{Filter, Nonce, Protocol, SERVER_PORT};
use pcp_client::{Client, ClientConfig, ClientError, Mapping};

/// Port Control Protocol client (RFC 6887, NAT-PMP fallback): create, renew and delete
/// mappings on a PCP server.
#[derive(Debug, Parser)]
#[command(name = "pcpc", version, about)]
struct Cli {
    /// PCP server address, `IP` or `IP:PORT` (port 5351 by default); repeat for several
    /// addresses of one server (RFC 7488: tried in order). Default: the default gateways.
    #[arg(long, value_name = "ADDR", value_parser = parse_server, global = true)]
    server: Vec<SocketAddr>,
    /// Print JSON (fields result, lifetime, epoch, external_address, external_port, nonce).
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many seconds without an answer.
    #[arg(long, value_name = "SECS", default_value_t = 30, global = true)]
    timeout: u64,
    /// First retransmission timeout in milliseconds (RFC 6887 IRT, default 3000).
    #[arg(long, value_name = "MS", default_value_t = 3000, global = true)]
    irt_ms: u64,
    /// With --keep: the interface facing the PCP server, where multicast ANNOUNCE is heard
    /// (default: the interface of the address used towards the server).
    #[arg(long, value_name = "IFACE", global = true)]
    announce_interface: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (or renew, with --nonce) a MAP mapping: inbound traffic to an internal port.
    ///
    /// pcpc does not hold the internal port: the application that listens on it must own it
    /// (RFC 6887 §11). Without --keep, pcpc exits after the answer and the mapping lasts for
    /// its lifetime unless renewed (same --nonce) or deleted.
    Map(MapArgs),
    /// Create a PEER mapping: the outbound mapping towards one remote peer.
    Peer(PeerArgs),
    /// Send ANNOUNCE and print the server's epoch.
    Announce,
    /// Delete a MAP mapping (needs its --nonce).
    Delete(DeleteArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Proto {
    Udp,
    Tcp,
    All,
}

impl From<Proto> for Protocol {
    fn from(p: Proto) -> Self {
        match p {
            Proto::Udp => Protocol::UDP,
            Proto::Tcp => Protocol::TCP,
            Proto::All => Protocol::ALL,
        }
    }
}

#[derive(Debug, Args)]
struct Common {
    /// Transport protocol (`all` needs internal port 0).
    #[arg(long, value_enum, default_value = "udp")]
    protocol: Proto,
    /// Internal port.
    #[arg(long, value_name = "N")]
    internal_port: u16,
    /// Requested lifetime in seconds.
    #[arg(long, value_name = "S", default_value_t = 7200)]
    lifetime: u32,
    /// Suggested external address and port.
    #[arg(long, value_name = "ADDR:PORT")]
    suggest: Option<SocketAddr>,
    /// Ask for an IPv6 external address (default IPv4).
    #[arg(long)]
    ipv6: bool,
    /// THIRD_PARTY: map for this internal address (trusted networks only, RFC 6887 §13.1).
    #[arg(long, value_name = "ADDR")]
    third_party: Option<IpAddr>,
    /// DESCRIPTION (RFC 7220).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Mapping nonce (24 hex digits); default: a fresh random one.
    #[arg(long, value_name = "HEX24")]
    nonce: Option<Nonce>,
    /// Stay: renew and print events until Ctrl-C, then delete the mapping.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
struct MapArgs {
    #[command(flatten)]
    common: Common,
    /// PREFER_FAILURE: fail rather than get another external port (needs --suggest).
    #[arg(long)]
    prefer_failure: bool,
    /// FILTER: admit only this remote prefix, `ADDR/LEN[:PORT]` (IPv6 with port: `[ADDR/LEN]:PORT`).
    #[arg(long, value_name = "PREFIX[:PORT]", value_parser = parse_filter)]
    filter: Vec<Filter>,
    /// Replace the server's filter set instead of adding to it.
    #[arg(long)]
    replace_filters: bool,
    /// PORT_SET (RFC 7753): map this many consecutive ports.
    #[arg(long, value_name = "N")]
    port_set: Option<u16>,
    /// Preserve parity in the port set.
    #[arg(long)]
    parity: bool,
}

#[derive(Debug, Args)]
struct PeerArgs {
    #[command(flatten)]
    common: Common,
    /// The remote peer.
    #[arg(long, value_name = "ADDR:PORT")]
    remote: SocketAddr,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// Transport protocol.
    #[arg(long, value_enum, default_value = "udp")]
    protocol: Proto,
    /// Internal port.
    #[arg(long, value_name = "N")]
    internal_port: u16,
    /// The mapping's nonce (24 hex digits).
    #[arg(long, value_name = "HEX24")]
    nonce: Nonce,
    /// Delete the IPv6 external mapping (default IPv4).
    #[arg(long)]
    ipv6: bool,
    /// THIRD_PARTY address the mapping was made for.
    #[arg(long, value_name = "ADDR")]
    third_party: Option<IpAddr>,
}

fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, SERVER_PORT))
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

fn parse_filter(s: &str) -> Result<Filter, String> {
    let (prefix, port) = if let Some(rest) = s.strip_prefix('[') {
        let (p, tail) = rest.split_once(']').ok_or("missing ]")?;
        let port = tail.strip_prefix(':').map(str::parse::<u16>).transpose();
        (p, port.map_err(|e| e.to_string())?)
    } else {
        match s.rsplit_once(':') {
            Some((p, port)) if !p.contains(':') => {
                (p, Some(port.parse::<u16>().map_err(|e| e.to_string())?))
            }
            _ => (s, None),
        }
    };
    let (addr, len) = prefix.split_once('/').ok_or("expected ADDR/LEN")?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    let prefix_length = match addr {
        IpAddr::V4(_) if len <= 32 => len + 96,
        IpAddr::V6(_) if len <= 128 => len,
        _ => return Err(format!("prefix length {len} too long")),
    };
    Ok(Filter {
        prefix_length,
        remote_peer_port: port.unwrap_or(0),
        remote_peer_address: addr,
    })
}

fn options(c: &Common) -> RequestOptions {
    RequestOptions {
        third_party: c.third_party,
        description: c.description.clone(),
        ..RequestOptions::default()
    }
}

fn suggested(c: &Common) -> (IpAddr, u16) {
    match c.suggest {
        Some(s) => (s.ip(), s.port()),
        None if c.ipv6 => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
        None => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pcpc: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let config = ClientConfig {
        servers: cli.server.clone(),
        engine: Config {
            irt: Duration::from_millis(cli.irt_ms.max(1)),
            ..Config::default()
        },
        no_announce_listener: !matches!(
            &cli.command,
            Command::Map(MapArgs {
                common: Common { keep: true, .. },
                ..
            }) | Command::Peer(PeerArgs {
                common: Common { keep: true, .. },
                ..
            })
        ),
        announce_interface: cli.announce_interface.clone(),
        ..ClientConfig::default()
    };
    let client = match Client::new(config).await {
        Ok(c) => c,
        Err(e) => return fail(&cli, "pcpc", &e),
    };
    let servers: Vec<String> = client
        .paths()
        .iter()
        .map(|p| p.remote.to_string())
        .collect();
    let _ = SERVERS.set(servers.join(", "));
    let timeout = Duration::from_secs(cli.timeout.max(1));
    match &cli.command {
        Command::Map(a) => {
            let (address, port) = suggested(&a.common);
            let mut options = options(&a.common);
            options.prefer_failure = a.prefer_failure;
            options.filters = a.filter.clone();
            options.replace_filters = a.replace_filters;
            options.port_set = a.port_set.map(|size| pcp_client::client::PortSetRequest {
                size,
                parity: a.parity,
            });
            let request = MapRequest {
                protocol: a.common.protocol.into(),
                internal_port: a.common.internal_port,
                lifetime: a.common.lifetime,
                suggested_address: address,
                suggested_port: port,
                nonce: a.common.nonce,
                options,
                give_up: None,
            };
            match tokio::time::timeout(timeout, client.map(request)).await {
                Ok(Ok(m)) => granted(&cli, "MAP", &a.common, m).await,
                Ok(Err(e)) => fail(&cli, "MAP", &e),
                Err(_) => fail(&cli, "MAP", &ClientError::TimedOut),
            }
        }
        Command::Peer(a) => {
            let (address, port) = suggested(&a.common);
            let request = PeerRequest {
                protocol: a.common.protocol.into(),
                internal_port: a.common.internal_port,
                lifetime: a.common.lifetime,
                remote: a.remote,
                suggested_address: address,
                suggested_port: port,
                nonce: a.common.nonce,
                options: options(&a.common),
            };
            match tokio::time::timeout(timeout, client.peer(request)).await {
                Ok(Ok(m)) => granted(&cli, "PEER", &a.common, m).await,
                Ok(Err(e)) => fail(&cli, "PEER", &e),
                Err(_) => fail(&cli, "PEER", &ClientError::TimedOut),
            }
        }
        Command::Announce => match tokio::time::timeout(timeout, client.announce()).await {
            Ok(Ok(a)) => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"result": a.result.to_string(), "lifetime": 0, "epoch": a.epoch})
                    );
                } else {
                    println!("ANNOUNCE {} epoch {}", a.result, a.epoch);
                }
                if a.result.is_success() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "pcpc: ANNOUNCE failed: {} ({}): {}",
                        a.result,
                        u8::from(a.result),
                        a.result.description()
                    );
                    ExitCode::FAILURE
                }
            }
            Ok(Err(e)) => fail(&cli, "ANNOUNCE", &e),
            Err(_) => fail(&cli, "ANNOUNCE", &ClientError::TimedOut),
        },
        Command::Delete(a) => {
            let mut request = MapRequest::new(a.protocol.into(), a.internal_port, 1).nonce(a.nonce);
            if a.ipv6 {
                request = request.ipv6();
            }
            request.options.third_party = a.third_party;
            match tokio::time::timeout(timeout, client.delete(request)).await {
                Ok(Ok(())) => {
                    if cli.json {
                        println!(
                            "{}",
                            serde_json::json!({"result": "SUCCESS", "lifetime": 0, "nonce": a.nonce.to_string()})
                        );
                    } else {
                        println!(
                            "deleted {} port {} nonce {}",
                            Protocol::from(a.protocol),
                            a.internal_port,
                            a.nonce
                        );
                    }
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) => fail(&cli, "delete", &e),
                Err(_) => fail(&cli, "delete", &ClientError::TimedOut),
            }
        }
    }
}

fn print_mapping(cli: &Cli, what: &str, common: &Common, m: &Mapping) {
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "result": "SUCCESS",
                "opcode": what,
                "protocol": Protocol::from(common.protocol).to_string(),
                "internal_port": common.internal_port,
                "lifetime": m.lifetime(),
                "epoch": m.epoch(),
                "external_address": m.external().ip().to_string(),
                "external_port": m.external().port(),
                "nonce": m.nonce().to_string(),
                "via": format!("{:?}", m.via()),
            })
        );
    } else {
        println!(
            "{what} {} internal port {} -> {} lifetime {} s epoch {} nonce {}{}",
            Protocol::from(common.protocol),
            common.internal_port,
            m.external(),
            m.lifetime(),
            m.epoch(),
            m.nonce(),
            if m.via() == pcp_client::client::Version::NatPmp {
                " (NAT-PMP)"
            } else {
                ""
            }
        );
    }
}

async fn granted(cli: &Cli, what: &str, common: &Common, mut m: Mapping) -> ExitCode {
    print_mapping(cli, what, common, &m);
    if !common.keep {
        // Stop renewing but leave the mapping in place for its lifetime.
        return ExitCode::SUCCESS;
    }
    loop {
        tokio::select! {
            event = m.next_event() => match event {
                Some(e) => print_event(cli, &e),
                None => return ExitCode::FAILURE,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if what == "PEER" {
        return ExitCode::SUCCESS;
    }
    match tokio::time::timeout(Duration::from_secs(cli.timeout.max(1)), m.delete()).await {
        Ok(Ok(())) => {
            if !cli.json {
                println!("deleted");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => fail(cli, "delete", &e),
        Err(_) => fail(cli, "delete", &ClientError::TimedOut),
    }
}

fn print_event(cli: &Cli, e: &Event) {
    if cli.json {
        let v = match *e {
            Event::Renewed {
                external, lifetime, ..
            }
            | Event::Changed {
                external, lifetime, ..
            } => serde_json::json!({
                "event": if matches!(e, Event::Renewed { .. }) { "renewed" } else { "changed" },
                "result": "SUCCESS", "lifetime": lifetime,
                "external_address": external.ip().to_string(), "external_port": external.port(),
            }),
            Event::Granted {
                external,
                lifetime,
                epoch,
                ..
            } => serde_json::json!({
                "event": "granted", "result": "SUCCESS", "lifetime": lifetime, "epoch": epoch,
                "external_address": external.ip().to_string(), "external_port": external.port(),
            }),
            Event::Restored {
                previous,
                external,
                same_endpoint,
                lifetime,
                epoch,
                ..
            } => serde_json::json!({
                "event": "restored", "result": "SUCCESS", "lifetime": lifetime, "epoch": epoch,
                "same_endpoint": same_endpoint,
                "previous_address": previous.ip().to_string(), "previous_port": previous.port(),
                "external_address": external.ip().to_string(), "external_port": external.port(),
            }),
            Event::Failed { code, lifetime, .. } => serde_json::json!({
                "event": "error", "result": result_name(&code), "lifetime": lifetime,
            }),
            Event::Expired { .. } => serde_json::json!({"event": "lost"}),
            _ => serde_json::json!({"event": format!("{e:?}")}),
        };
        println!("{v}");
    } else {
        println!("{e:?}");
    }
}

fn result_name(code: &ErrorCode) -> String {
    match code {
        ErrorCode::Pcp(c) => c.to_string(),
        ErrorCode::NatPmp(c) => format!("NATPMP_{}", c.to_u16()),
    }
}

/// One line on stderr naming the result code and its meaning; JSON on stdout with --json.
/// The PCP server addresses in use, for the "no answer" message.
static SERVERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One line saying what failed and what to try.
fn explain(cli: &Cli, e: &ClientError) -> String {
    match e {
        ClientError::TimedOut => format!(
            "no answer from PCP server {} within {} s — is PCP enabled on the CGN, and UDP 5351 \
             open towards it? (--server ADDR names another server, --timeout SECS waits longer)",
            SERVERS.get().map_or("?", String::as_str),
            cli.timeout.max(1)
        ),
        ClientError::NoServer => format!("{e} — name one with --server ADDR"),
        other => other.to_string(),
    }
}

fn fail(cli: &Cli, what: &str, e: &ClientError) -> ExitCode {
    if cli.json {
        let v = match e {
            ClientError::Server { code, lifetime } => serde_json::json!({
                "result": result_name(code),
                "result_code": match code { ErrorCode::Pcp(c) => u16::from(u8::from(*c)), ErrorCode::NatPmp(c) => c.to_u16() },
                "lifetime": lifetime,
                "error": e.to_string(),
            }),
            _ => serde_json::json!({"result": "ERROR", "error": e.to_string()}),
        };
        println!("{v}");
    }
    eprintln!("pcpc: {what} failed: {}", explain(cli, e));
    ExitCode::FAILURE
}
