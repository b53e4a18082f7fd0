//! Running `nft` and `conntrack`, optionally inside a network namespace (`ip netns exec NAME`,
//! for the lab), with standard input fed and both output streams captured.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a command ended.
#[derive(Debug)]
pub(crate) enum Ran {
    /// It ran; exit status success flag, standard output and error (lossy UTF-8).
    Exited {
        success: bool,
        stdout: String,
        stderr: String,
    },
    /// It could not be started (the program, or the one `ip netns exec` should start, is
    /// missing or not executable): the message says which.
    Missing(String),
}

/// Starts programs, in the root namespace or inside `netns`.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    /// `ip`, used only with a namespace.
    pub ip_program: PathBuf,
    /// Namespace to enter, if any.
    pub netns: Option<String>,
}

impl Runner {
    /// `program` as a command to start, inside the namespace if there is one.
    pub fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new(&self.ip_program);
                c.args(["netns", "exec", ns.as_str()]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `program args…`, writing `stdin` to it, and waits for it.
    pub fn run(&self, program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Ran {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = || match &self.netns {
            Some(ns) => format!("ip netns exec {ns} {}", program.display()),
            None => program.display().to_string(),
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
                return Ran::Missing(format!("cannot run {}: {e}", shown()));
            }
            Err(e) => {
                return Ran::Exited {
                    success: false,
                    stdout: String::new(),
                    stderr: format!("cannot run {}: {e}", shown()),
                };
            }
        };
        let mut write_error = None;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads the whole document before it answers, so writing first cannot
            // deadlock on its output; a write error shows up as nft's own failure.
            if let Err(e) = pipe.write_all(input) {
                write_error = Some(e);
            }
        }
        let out = match child.wait_with_output() {
            Ok(out) => out,
            Err(e) => {
                return Ran::Exited {
                    success: false,
                    stdout: String::new(),
                    stderr: format!("waiting for {}: {e}", shown()),
                };
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        // `ip netns exec` reports a program it cannot start as `exec of "nft" failed: …`.
        if self.netns.is_some() && !out.status.success() && stderr.starts_with("exec of \"") {
            return Ran::Missing(format!("cannot run {}: {stderr}", shown()));
        }
        if let (Some(e), true) = (write_error, stderr.is_empty()) {
            stderr = format!("writing to {}: {e}", shown());
        }
        Ran::Exited {
            success: out.status.success(),
            stdout,
            stderr,
        }
    }
}
