//! The daemon's TOML configuration (`--config FILE`); command-line flags override it.
//!
//! ```toml
//! igd_version = "auto"          # auto (IGD:2, IGD:1 for Microsoft/FDSSDP) | v1 | v2
//! secure_mode = true
//! rules = ["allow 1024-65535 192.168.0.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535"]
//! max_mappings_per_client = 128
//! max_mappings = 1024
//! http_port = 5000
//! external_address = "198.51.100.1"   # --upstream none: what GetExternalIPAddress reports
//! notify_interval = 900
//! ```

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use crate::description::VersionPolicy;

/// File configuration; every field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Version policy.
    pub igd_version: Option<VersionPolicy>,
    /// Secure mode.
    pub secure_mode: Option<bool>,
    /// Permission rules (`allow|deny ext ip/len int`).
    #[serde(default)]
    pub rules: Vec<String>,
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
    /// Re-announce period in seconds.
    pub notify_interval: Option<u64>,
    /// Extra LAN prefixes served besides the LAN interfaces' own.
    #[serde(default)]
    pub lan_prefixes: Vec<String>,
    /// `Layer1UpstreamMaxBitRate`.
    pub upstream_bps: Option<u32>,
    /// `Layer1DownstreamMaxBitRate`.
    pub downstream_bps: Option<u32>,
}

/// Error reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is invalid.
    #[error("parsing {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        source: toml::de::Error,
    },
}

impl FileConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse { path: p, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses_and_unknown_keys_are_refused() {
        let c = FileConfig::parse(
            "igd_version = \"v1\"\nsecure_mode = false\nrules = [\"deny 0-1023 0.0.0.0/0 0-65535\"]\n\
             http_port = 5000\nexternal_address = \"198.51.100.1\"\n",
        )
        .expect("valid");
        assert_eq!(c.igd_version, Some(VersionPolicy::V1));
        assert_eq!(c.secure_mode, Some(false));
        assert_eq!(c.external_address, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert!(FileConfig::parse("colour = \"blue\"").is_err());
    }
}
