//! The control protocol between `cgn-sim ctl …` and the daemon: one request line over a Unix
//! socket, the answer text, then the daemon closes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Pool usage per pool and section, and per subscriber ([`crate::usage`]).
    Status {
        /// JSON instead of text.
        json: bool,
    },
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
    /// Answer the next `count` creating or refreshing MAP requests with the PCP error
    /// `result` (1 to 13) and `lifetime` (default: the server's error lifetime), changing no
    /// state (tests of RFC 6970 §4.5 error mapping; see [`crate::inject`]).
    Inject {
        /// The result code number.
        result: u8,
        /// The error lifetime, seconds.
        lifetime: Option<u32>,
        /// How many MAP requests get it.
        count: u32,
    },
}

impl Request {
    /// The wire line.
    pub fn line(&self) -> String {
        match self {
            Request::Status { json: false } => "status".into(),
            Request::Status { json: true } => "status --json".into(),
            Request::Mappings { json: false } => "mappings".into(),
            Request::Mappings { json: true } => "mappings --json".into(),
            Request::Restart { keep_state: false } => "restart".into(),
            Request::Restart { keep_state: true } => "restart --keep-state".into(),
            Request::Stats => "stats".into(),
            Request::Config => "config".into(),
            Request::Pool(ranges) => format!("pool {}", ranges.join(" ")),
            Request::Inject {
                result,
                lifetime,
                count,
            } => match lifetime {
                Some(l) => format!("inject {result} --lifetime {l} --count {count}"),
                None => format!("inject {result} --count {count}"),
            },
        }
    }

    /// Parses a wire line.
    pub fn parse(line: &str) -> Option<Request> {
        Some(match line.trim() {
            "status" => Request::Status { json: false },
            "status --json" => Request::Status { json: true },
            "mappings" => Request::Mappings { json: false },
            "mappings --json" => Request::Mappings { json: true },
            "restart" => Request::Restart { keep_state: false },
            "restart --keep-state" => Request::Restart { keep_state: true },
            "stats" => Request::Stats,
            "config" => Request::Config,
            other => {
                if let Some(ranges) = other.strip_prefix("pool ") {
                    Request::Pool(ranges.split_whitespace().map(String::from).collect())
                } else if let Some(args) = other.strip_prefix("inject ") {
                    parse_inject(args)?
                } else {
                    return None;
                }
            }
        })
    }
}

/// `RESULT [--lifetime SECS] [--count N]` of an inject line.
fn parse_inject(args: &str) -> Option<Request> {
    let mut words = args.split_whitespace();
    let result = u8::from(crate::inject::parse_result(words.next()?).ok()?);
    let (mut lifetime, mut count) = (None, 1);
    while let Some(flag) = words.next() {
        let value = words.next()?;
        match flag {
            "--lifetime" => lifetime = Some(value.parse().ok()?),
            "--count" => count = value.parse().ok()?,
            _ => return None,
        }
    }
    Some(Request::Inject {
        result,
        lifetime,
        count,
    })
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

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn inject_lines_round_trip_and_bad_ones_are_refused() {
        for req in [
            Request::Inject {
                result: 2,
                lifetime: Some(1800),
                count: 3,
            },
            Request::Inject {
                result: 11,
                lifetime: None,
                count: 1,
            },
        ] {
            assert_eq!(Request::parse(&req.line()), Some(req));
        }
        assert_eq!(
            Request::parse("inject USER_EX_QUOTA"),
            Some(Request::Inject {
                result: 10,
                lifetime: None,
                count: 1
            })
        );
        assert_eq!(Request::parse("inject SUCCESS"), None);
        assert_eq!(Request::parse("inject 2 --lifetime"), None);
        assert_eq!(Request::parse("inject 2 --bogus 1"), None);
    }
}
