//! What can go wrong while building, using or tearing down the lab.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::plan::Node;

/// A lab failure, naming the command, the namespace (if any) and what the command said.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The program could not be started at all (not installed, not executable).
    #[error("could not start `{command}`{}: {source}", in_ns(.namespace))]
    Spawn {
        /// The command line.
        command: String,
        /// Namespace it was to run in, `None` for the root namespace.
        namespace: Option<String>,
        /// Why `exec` failed.
        #[source]
        source: io::Error,
    },
    /// The command ran and exited unsuccessfully.
    #[error("`{command}`{} failed ({status}): {}", in_ns(.namespace), stderr.trim())]
    Failed {
        /// The command line.
        command: String,
        /// Namespace it ran in, `None` for the root namespace.
        namespace: Option<String>,
        /// Exit status as printed by the OS (`exit status: 1`, `signal: 9`).
        status: String,
        /// What it wrote to standard error.
        stderr: String,
    },
    /// The command did not finish in time and was killed.
    #[error("`{command}`{} did not finish within {timeout:?} and was killed", in_ns(.namespace))]
    TimedOut {
        /// The command line.
        command: String,
        /// Namespace it ran in, `None` for the root namespace.
        namespace: Option<String>,
        /// The limit it exceeded.
        timeout: Duration,
    },
    /// Waiting for or signalling a child failed.
    #[error("waiting for `{command}` (pid {pid}): {source}")]
    Wait {
        /// The command line.
        command: String,
        /// Its process id.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A command was given with no program.
    #[error("empty command line")]
    EmptyCommand,
    /// The node was asked for but the lab was built without it.
    #[error("node {node} is not part of this lab (build it with second_subscriber(true))")]
    NodeAbsent {
        /// The missing node.
        node: Node,
    },
    /// A [`MultiLab`](super::MultiLab) was asked for no subscribers or more than fit.
    #[error(
        "{asked} subscribers asked for: a lab has 1 to {max} (their WAN addresses fill 100.64.0.0/24)"
    )]
    TooManySubscribers {
        /// The number asked for.
        asked: u16,
        /// The most there can be.
        max: u16,
    },
    /// The site was asked for but the [`MultiLab`](super::MultiLab) does not have it.
    #[error("{site} is not part of this lab (it has {subscribers} subscribers)")]
    SiteAbsent {
        /// The missing site's name (`cpe7`).
        site: String,
        /// How many subscribers the lab has.
        subscribers: u16,
    },
    /// A namespace with the lab's name already exists.
    #[error("namespace {namespace} already exists: lab {prefix} is up already (remove it first)")]
    AlreadyExists {
        /// The lab prefix.
        prefix: String,
        /// The namespace that exists.
        namespace: String,
    },
    /// The requested prefix cannot be used in namespace names.
    #[error("invalid lab prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file or directory operation for the lab's logs failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`creating log directory`).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// This process may not create network namespaces.
    #[error("needs root (CAP_NET_ADMIN) for network namespaces: {reason}")]
    NotPrivileged {
        /// What the probe found.
        reason: String,
    },
}

fn in_ns(namespace: &Option<String>) -> String {
    match namespace {
        Some(ns) => format!(" in namespace {ns}"),
        None => String::new(),
    }
}
