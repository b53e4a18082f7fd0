//! Running a short command to completion with a time limit, optionally inside a namespace.

use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::error::LabError;

/// Time limit for lab plumbing commands (`ip …`, `sysctl …`) and the default for
/// [`Lab::exec`](super::Lab::exec).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest sleep between two polls of a running command.
const MAX_POLL: Duration = Duration::from_millis(20);

/// The full argv for running `argv` in `namespace` (or in the root namespace).
pub(crate) fn full_argv<'a>(namespace: Option<&'a str>, argv: &[&'a str]) -> Vec<&'a str> {
    let mut full = Vec::with_capacity(argv.len() + 4);
    if let Some(ns) = namespace {
        full.extend(["ip", "netns", "exec", ns]);
    }
    full.extend_from_slice(argv);
    full
}

/// Runs `argv` (in `namespace` via `ip netns exec`, or in the root namespace) with standard
/// input closed, captures standard output and error, and kills it after `timeout`.
///
/// The exit status is not judged here: see [`check`].
pub(crate) fn run(
    namespace: Option<&str>,
    argv: &[&str],
    timeout: Duration,
) -> Result<Output, LabError> {
    let full = full_argv(namespace, argv);
    let (program, args) = full.split_first().ok_or(LabError::EmptyCommand)?;
    if argv.is_empty() {
        return Err(LabError::EmptyCommand);
    }
    let command_line = argv.join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command_line.clone(),
            namespace: namespace.map(str::to_owned),
            source,
        })?;

    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    let mut readers = 0;
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        readers += 1;
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            let _ = tx.send((true, buf));
        });
    }
    if let Some(mut err) = child.stderr.take() {
        let tx = tx.clone();
        readers += 1;
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            let _ = tx.send((false, buf));
        });
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let status = wait_until(&mut child, deadline).map_err(|source| LabError::Wait {
        command: command_line.clone(),
        pid: child.id(),
        source,
    })?;
    let Some(status) = status else {
        // Our own child, not yet reaped: killing it by its pid cannot hit another process.
        let _ = child.kill();
        let _ = child.wait();
        return Err(LabError::TimedOut {
            command: command_line,
            namespace: namespace.map(str::to_owned),
            timeout,
        });
    };

    // The pipes close when the command exits, unless it left a grandchild holding them; give
    // the readers a bounded moment and keep whatever arrived.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let collect_deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        let left = collect_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, buf)) => stdout = buf,
            Ok((false, buf)) => stderr = buf,
            Err(_) => break,
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Polls `child` until it exits or `deadline` passes; `Ok(None)` means it is still running.
pub(crate) fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Turns an unsuccessful [`Output`] into [`LabError::Failed`].
pub(crate) fn check(
    namespace: Option<&str>,
    argv: &[&str],
    output: Output,
) -> Result<Output, LabError> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::Failed {
            command: argv.join(" "),
            namespace: namespace.map(str::to_owned),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Runs `argv` in the root namespace and requires success.
pub(crate) fn run_ok(argv: &[&str]) -> Result<Output, LabError> {
    let output = run(None, argv, DEFAULT_TIMEOUT)?;
    check(None, argv, output)
}

/// Runs `argv` inside `namespace` and requires success.
pub(crate) fn run_in_ok(namespace: &str, argv: &[&str]) -> Result<Output, LabError> {
    let output = run(Some(namespace), argv, DEFAULT_TIMEOUT)?;
    check(Some(namespace), argv, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_stderr_of_a_finished_command() {
        let out = run(
            None,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            DEFAULT_TIMEOUT,
        )
        .expect("sh runs");
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
        let err = check(None, &["sh"], out).expect_err("exit 3 is a failure");
        assert!(err.to_string().contains("err"), "{err}");
    }

    #[test]
    fn command_over_its_time_limit_is_killed_and_reported() {
        let started = Instant::now();
        let err = run(None, &["sleep", "30"], Duration::from_millis(200)).expect_err("times out");
        assert!(matches!(err, LabError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program_is_a_spawn_error_naming_it() {
        let err = run(
            None,
            &["/nonexistent/n444-no-such-program"],
            DEFAULT_TIMEOUT,
        )
        .expect_err("cannot start");
        assert!(matches!(err, LabError::Spawn { .. }));
        assert!(err.to_string().contains("n444-no-such-program"));
    }

    #[test]
    fn empty_command_is_rejected() {
        assert!(matches!(
            run(None, &[], DEFAULT_TIMEOUT),
            Err(LabError::EmptyCommand)
        ));
    }

    #[test]
    fn namespace_commands_go_through_ip_netns_exec() {
        assert_eq!(
            full_argv(Some("x-lan"), &["ping", "-c1"]),
            ["ip", "netns", "exec", "x-lan", "ping", "-c1"]
        );
        assert_eq!(full_argv(None, &["ip", "link"]), ["ip", "link"]);
    }
}
