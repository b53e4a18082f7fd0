//! Long-running processes started inside a lab namespace (daemons, capture tools, listeners).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::command::{DEFAULT_TIMEOUT, full_argv, run, wait_until};
use super::error::LabError;
use super::plan::Node;

/// The lab's children by id. The lab and every [`LabChild`] share it, so whichever is dropped
/// first kills and reaps the process; a pid is only signalled while its `Child` is unreaped,
/// so it can never belong to someone else.
pub(crate) type Registry = Arc<Mutex<HashMap<u64, Child>>>;

pub(crate) fn lock(registry: &Registry) -> MutexGuard<'_, HashMap<u64, Child>> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills (SIGKILL, by pid) and reaps every child still in `registry`.
pub(crate) fn kill_all(registry: &Registry) {
    let mut children = lock(registry);
    for (_, mut child) in children.drain() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A process started by [`Lab::spawn`](super::Lab::spawn) inside a lab namespace.
///
/// Standard input is closed; standard output and error go to [`LabChild::log_path`] (a pipe
/// nobody reads would stall a chatty daemon). Dropping the handle kills the process by its pid
/// with SIGKILL and reaps it; so does dropping the [`Lab`](super::Lab), whichever comes first.
#[derive(Debug)]
pub struct LabChild {
    id: u64,
    pid: u32,
    node: Node,
    command: String,
    log: PathBuf,
    registry: Registry,
}

impl LabChild {
    pub(crate) fn spawn(
        registry: &Registry,
        id: u64,
        node: Node,
        namespace: &str,
        argv: &[&str],
        log: PathBuf,
    ) -> Result<LabChild, LabError> {
        if argv.is_empty() {
            return Err(LabError::EmptyCommand);
        }
        let command = argv.join(" ");
        let io_err = |source| LabError::Io {
            action: "creating log file",
            path: log.clone(),
            source,
        };
        let out = File::create(&log).map_err(io_err)?;
        let err = out.try_clone().map_err(io_err)?;
        let full = full_argv(Some(namespace), argv);
        let (program, args) = full.split_first().ok_or(LabError::EmptyCommand)?;
        // Hold the lock across spawn so a concurrent Lab drop cannot miss this child.
        let mut children = lock(registry);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: command.clone(),
                namespace: Some(namespace.to_owned()),
                source,
            })?;
        let pid = child.id();
        children.insert(id, child);
        Ok(LabChild {
            id,
            pid,
            node,
            command,
            log,
            registry: Arc::clone(registry),
        })
    }

    /// Process id (of the program itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The namespace node it runs in.
    pub fn node(&self) -> Node {
        self.node
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// File receiving its standard output and error.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it has written so far (lossy UTF-8; empty if the log cannot be read).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn wait_error(&self, source: std::io::Error) -> LabError {
        LabError::Wait {
            command: self.command.clone(),
            pid: self.pid,
            source,
        }
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, LabError> {
        let mut children = lock(&self.registry);
        match children.get_mut(&self.id) {
            Some(child) => child.try_wait().map_err(|e| self.wait_error(e)),
            None => Err(self.wait_error(std::io::Error::other("the lab was dropped"))),
        }
    }

    /// Waits at most `timeout` for it to exit; `None` if it is still running then.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Kills it with SIGKILL (by pid) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus, LabError> {
        let mut children = lock(&self.registry);
        let Some(child) = children.get_mut(&self.id) else {
            return Err(self.wait_error(std::io::Error::other("the lab was dropped")));
        };
        child.kill().map_err(|e| self.wait_error(e))?;
        child.wait().map_err(|e| self.wait_error(e))
    }

    /// Sends SIGTERM (by pid), waits up to `grace` for a clean exit, then SIGKILLs it.
    /// For daemons whose shutdown path matters (state written on exit).
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus, LabError> {
        {
            let mut children = lock(&self.registry);
            let Some(child) = children.get_mut(&self.id) else {
                return Err(self.wait_error(std::io::Error::other("the lab was dropped")));
            };
            if let Some(status) = child.try_wait().map_err(|e| self.wait_error(e))? {
                return Ok(status);
            }
            // Still unreaped under the lock, so the pid is certainly this child's.
            let pid = self.pid.to_string();
            run(None, &["kill", "-s", "TERM", &pid], DEFAULT_TIMEOUT)?;
        }
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.kill()
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        let removed = lock(&self.registry).remove(&self.id);
        if let Some(mut child) = removed {
            let _ = child.kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            let _ = wait_until(&mut child, deadline);
        }
    }
}
