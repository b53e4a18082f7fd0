//! The daemon's TOML configuration (`--config FILE`); command-line flags override it. Every
//! flag has a key (see `packaging/upnp-iwf.toml`, every key commented). The file is checked
//! at start and on SIGHUP: an error names the file, the line and the key.
//!
//! ```toml
//! lan = ["br-lan"]
//! wan = "wan"
//! igd_version = "auto"          # auto (IGD:2, IGD:1 for Microsoft/FDSSDP) | v1 | v2
//! secure_mode = true
//! rules = ["allow 1024-65535 192.168.0.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535"]
//! max_mappings_per_client = 128
//! http_port = 5000
//! log_level = "info"
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::cli::{Nat, Upstream};
use crate::description::VersionPolicy;
use crate::policy::{Ipv4Prefix, PermissionRule};

/// File configuration; every field optional. Keys are named after the flags (`--http-port`
/// → `http_port`), except `quota` → `max_mappings_per_client` and `--no-announce` →
/// `announce = false`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--lan`: LAN interfaces.
    #[serde(default)]
    pub lan: Vec<String>,
    /// `--wan`: WAN interface.
    pub wan: Option<String>,
    /// `--pcp-server`: `ADDR:PORT`.
    pub pcp_server: Option<Spanned<String>>,
    /// `--upstream`: `pcp` | `none`.
    pub upstream: Option<Upstream>,
    /// `--nat`: `nftables` | `none`.
    pub nat: Option<Nat>,
    /// `--third-party`.
    pub third_party: Option<bool>,
    /// `--dhcp-leases`.
    pub dhcp_leases: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--ctl`: control socket path (`none` = no socket).
    pub ctl: Option<PathBuf>,
    /// `--ctl-group`: group that may use the control socket.
    pub ctl_group: Option<String>,
    /// Version policy.
    pub igd_version: Option<VersionPolicy>,
    /// Secure mode.
    pub secure_mode: Option<bool>,
    /// Permission rules (`allow|deny ext ip/len int`), before the `--rule` flags.
    #[serde(default)]
    pub rules: Vec<Spanned<String>>,
    /// Built-in rules after `rules` (deny 21 23 135 137-139 445 3389, allow 1024-65535,
    /// deny the rest).
    pub default_rules: Option<bool>,
    /// Per-client mapping quota (0 = unlimited).
    pub max_mappings_per_client: Option<usize>,
    /// Table size.
    pub max_mappings: Option<usize>,
    /// HTTP port.
    pub http_port: Option<u16>,
    /// SSDP port.
    pub ssdp_port: Option<u16>,
    /// Root device UUID.
    pub uuid: Option<String>,
    /// friendlyName.
    pub friendly_name: Option<String>,
    /// External address reported with `--upstream none`.
    pub external_address: Option<Ipv4Addr>,
    /// Send SSDP NOTIFY announcements (`--no-announce` = false).
    pub announce: Option<bool>,
    /// Re-announce period in seconds.
    pub notify_interval: Option<u64>,
    /// Extra LAN prefixes served besides the LAN interfaces' own.
    #[serde(default)]
    pub lan_prefixes: Vec<Spanned<String>>,
    /// `Layer1UpstreamMaxBitRate`.
    pub upstream_bps: Option<u32>,
    /// `Layer1DownstreamMaxBitRate`.
    pub downstream_bps: Option<u32>,
    /// `--log-level`: a tracing filter (`info`, `debug`, `upnp_iwf=debug,info`).
    pub log_level: Option<Spanned<String>>,
}

/// Error reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        cause: std::io::Error,
    },
    /// The TOML is invalid, or a value is.
    #[error("{path}:{line}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        /// File.
        path: String,
        /// 1-based line.
        line: usize,
        /// The key concerned, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The line the error is on (`Read`: 0).
    pub fn line(&self) -> usize {
        match self {
            ConfigError::Read { .. } => 0,
            ConfigError::Invalid { line, .. } => *line,
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// The key assigned on `line` (1-based), if the line has `key = …`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('#')).then(|| k.to_owned())
}

impl FileConfig {
    /// Parses and checks TOML text; `path` names the file in errors.
    pub fn parse_named(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
        let c: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let message = e.message().trim().to_owned();
            let key = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .map(str::to_owned)
                .or_else(|| key_on_line(text, line));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                key,
                message,
            }
        })?;
        c.check(text, path)?;
        Ok(c)
    }

    /// Parses TOML text (errors name the file as `<config>`).
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        Self::parse_named(text, "<config>")
    }

    /// Reads, parses and checks a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: p.clone(),
            cause,
        })?;
        Self::parse_named(&text, &p)
    }

    fn check(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        let bad = |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key: Some(key.to_owned()),
            message,
        };
        for r in &self.rules {
            if let Err(e) = r.get_ref().parse::<PermissionRule>() {
                return Err(bad(
                    r.span(),
                    "rules",
                    format!("{e} (expected `allow|deny EXT-PORTS IP/LEN INT-PORTS`)"),
                ));
            }
        }
        for p in &self.lan_prefixes {
            if let Err(e) = p.get_ref().parse::<Ipv4Prefix>() {
                return Err(bad(p.span(), "lan_prefixes", e.to_string()));
            }
        }
        if let Some(s) = &self.pcp_server {
            if s.get_ref().parse::<SocketAddr>().is_err() {
                return Err(bad(
                    s.span(),
                    "pcp_server",
                    format!(
                        "{:?} is not ADDR:PORT (e.g. \"100.64.0.1:5351\")",
                        s.get_ref()
                    ),
                ));
            }
        }
        if let Some(l) = &self.log_level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(l.get_ref()) {
                return Err(bad(l.span(), "log_level", format!("{e}")));
            }
        }
        Ok(())
    }

    /// The rules as text.
    pub fn rule_texts(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.get_ref().as_str())
    }

    /// `pcp_server`, checked by [`FileConfig::load`].
    pub fn pcp_server(&self) -> Option<SocketAddr> {
        self.pcp_server
            .as_ref()
            .and_then(|s| s.get_ref().parse().ok())
    }

    /// `log_level` as text.
    pub fn log_level(&self) -> Option<&str> {
        self.log_level.as_ref().map(|l| l.get_ref().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses_and_unknown_keys_are_refused() {
        let c = FileConfig::parse(
            "igd_version = \"v1\"\nsecure_mode = false\nrules = [\"deny 0-1023 0.0.0.0/0 0-65535\"]\n\
             http_port = 5000\nexternal_address = \"198.51.100.1\"\nupstream = \"none\"\nnat = \"none\"\n",
        )
        .expect("valid");
        assert_eq!(c.igd_version, Some(VersionPolicy::V1));
        assert_eq!(c.secure_mode, Some(false));
        assert_eq!(c.upstream, Some(Upstream::None));
        assert_eq!(c.external_address, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert!(FileConfig::parse("colour = \"blue\"").is_err());
    }

    // Issue #13 item 4: an error names the key and the line.
    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let e = FileConfig::parse_named("http_port = 5000\n\ncolour = \"blue\"\n", "/etc/x.toml")
            .expect_err("unknown key");
        assert_eq!(e.line(), 3);
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/x.toml:3: key `colour`: unknown field"),
            "{s}"
        );

        let e = FileConfig::parse("lan = [\"lo\"]\nhttp_port = \"eighty\"\n").expect_err("type");
        assert_eq!(e.line(), 2);
        assert!(e.to_string().contains("key `http_port`"), "{e}");

        let e = FileConfig::parse(
            "rules = [\n  \"allow 1024-65535 192.168.0.0/24 1024-65535\",\n  \"permit 80\",\n]\n",
        )
        .expect_err("bad rule");
        assert_eq!(e.line(), 3, "{e}");
        assert!(e.to_string().contains("key `rules`"), "{e}");
        assert!(e.to_string().contains("permit 80"), "{e}");

        let e = FileConfig::parse("pcp_server = \"100.64.0.1\"\n").expect_err("no port");
        assert!(e.to_string().contains("ADDR:PORT"), "{e}");
    }

    #[test]
    fn the_packaged_sample_is_valid_and_sets_every_key() {
        let text = include_str!("../../packaging/upnp-iwf.toml");
        FileConfig::parse(text).expect("sample parses");
        // Every key appears in the sample (commented or not).
        for key in [
            "lan",
            "wan",
            "pcp_server",
            "upstream",
            "nat",
            "third_party",
            "dhcp_leases",
            "state_dir",
            "ctl",
            "ctl_group",
            "igd_version",
            "secure_mode",
            "rules",
            "default_rules",
            "max_mappings_per_client",
            "max_mappings",
            "http_port",
            "ssdp_port",
            "uuid",
            "friendly_name",
            "external_address",
            "announce",
            "notify_interval",
            "lan_prefixes",
            "upstream_bps",
            "downstream_bps",
            "log_level",
        ] {
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))),
                "{key} missing from packaging/upnp-iwf.toml"
            );
        }
        // Uncommented, the whole sample still parses (each documented value is valid).
        let all: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        r.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        })
                    })
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        FileConfig::parse(&all).expect("uncommented sample parses");
    }
}
