//! The control protocol between `cgn-sim ctl …` and the daemon: one request line over a Unix
//! socket, the answer text, then the daemon closes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Request {
    /// The wire line.
    pub fn line(&self) -> &'static str {
        match self {
            Request::Mappings { json: false } => "mappings",
            Request::Mappings { json: true } => "mappings --json",
            Request::Restart { keep_state: false } => "restart",
            Request::Restart { keep_state: true } => "restart --keep-state",
            Request::Stats => "stats",
            Request::Config => "config",
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
            _ => return None,
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
