//! The control protocol between `cgn-sim ctl …` and the daemon: one request line over a Unix
//! socket, the answer text, then the daemon closes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The mapping table, as operator lines or JSON.
    Mappings {
        /// JSON instead of text.
        json: bool,
    },
    /// Simulate a restart.
    Restart {
        /// Engine restart that keeps the table (else: state lost, epoch reset).
        keep_state: bool,
    },
    /// Counters (OpenMetrics text).
    Stats,
    /// The configuration in force (TOML).
    Config,
    /// Renumber: replace the pools by these ranges (pool ids 1, 2, …); mappings move and
    /// clients get Mapping Updates (RFC 6887 §14.2).
    Pool(Vec<String>),
}

impl Request {
    /// The wire line.
    pub fn line(&self) -> String {
        match self {
            Request::Mappings { json: false } => "mappings".into(),
            Request::Mappings { json: true } => "mappings --json".into(),
            Request::Restart { keep_state: false } => "restart".into(),
            Request::Restart { keep_state: true } => "restart --keep-state".into(),
            Request::Stats => "stats".into(),
            Request::Config => "config".into(),
            Request::Pool(ranges) => format!("pool {}", ranges.join(" ")),
        }
    }

    /// Parses a wire line.
    pub fn parse(line: &str) -> Option<Request> {
        Some(match line.trim() {
            "mappings" => Request::Mappings { json: false },
            "mappings --json" => Request::Mappings { json: true },
            "restart" => Request::Restart { keep_state: false },
            "restart --keep-state" => Request::Restart { keep_state: true },
            "stats" => Request::Stats,
            "config" => Request::Config,
            other => match other.strip_prefix("pool ") {
                Some(ranges) => {
                    Request::Pool(ranges.split_whitespace().map(String::from).collect())
                }
                None => return None,
            },
        })
    }
}

/// Sends `request` to the daemon listening on `path` and returns its answer.
pub fn call(path: &Path, request: Request) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.line().as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}
