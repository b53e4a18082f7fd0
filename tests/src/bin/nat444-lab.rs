//! `nat444-lab`: build, remove or tour the NAT444 network-namespace lab (design.md §4), or
//! run many subscribers behind one CGN (`scale`).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nat444_tests::demo::{self, DemoError};
use nat444_tests::lab::{Lab, LabBuilder, UP_PREFIX, check_privileges};
use nat444_tests::scale::{self, ScaleError, ScaleOptions};

/// Exit code when the process may not create network namespaces.
const EXIT_NOT_PRIVILEGED: u8 = 2;
/// Exit code for options that cannot be run.
const EXIT_USAGE: u8 = 2;
/// Exit code after an interrupt (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Build, remove or tour the NAT444 network-namespace lab: lan (192.168.0.10) - cpe
/// (192.168.0.1 | 100.64.0.2) - cgn (100.64.0.1 | 203.0.113.1, pool 198.51.100.0/28) - inet
/// (203.0.113.50), plus a second subscriber cpe2 (100.64.0.3) / lan2. Needs root.
///
/// Exit codes: 0 success, 1 failure, 2 not root (no CAP_NET_ADMIN) or bad usage, 130
/// interrupted.
#[derive(Debug, Parser)]
#[command(name = "nat444-lab", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the lab under a fixed prefix and leave it up; prints namespaces and addresses.
    Up {
        /// Namespace name prefix (namespaces are PREFIX-lan, PREFIX-cpe, ...).
        #[arg(long, default_value = UP_PREFIX)]
        prefix: String,
        /// Leave out the second subscriber (cpe2, lan2).
        #[arg(long)]
        one_subscriber: bool,
    },
    /// Remove the lab that `up` built.
    Down {
        /// Namespace name prefix given to `up`.
        #[arg(long, default_value = UP_PREFIX)]
        prefix: String,
    },
    /// The NAT444 tour: build a lab with two subscribers, run cgn-sim (CGN with TUN
    /// dataplane) and one upnp-iwf per home router, map a UDP and a TCP port with upnpc, reach
    /// it from the Internet and from the other subscriber (hairpin), run a PEER flow with pcpc
    /// (unsolicited inbound refused), print the CGN's table, NAT1 and the IWF status, restart
    /// the CGN and show the mappings restored, tear down (also on Ctrl-C). Needs the workspace
    /// binaries built (`cargo build --workspace`).
    Demo,
    /// Many subscribers behind one CGN: N CPE namespaces (WAN 100.64.0.2 … 100.64.0.N+1,
    /// every LAN 192.168.0.0/24), each with a LAN host and upnp-iwf (its defaults), behind one
    /// cgn-sim (TUN dataplane); every LAN host maps M UDP ports with upnpc; then
    /// `cgn-sim ctl restart` and the wait until every mapping is back on the same external
    /// port (the CGN's table and every IWF's status page). Prints set-up time, mapping rate,
    /// recovery time, CGN and IWF RSS, lost and duplicated mappings; exits 1 if any was lost
    /// or duplicated or the recovery timed out. Needs the workspace binaries built.
    Scale {
        /// Subscribers (1–253).
        #[arg(long, default_value_t = 4)]
        subscribers: u16,
        /// UDP mappings per subscriber (1–1000).
        #[arg(long, default_value_t = 5)]
        mappings: u16,
        /// Subscribers whose clients (and status page reads) run at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Longest wait for the recovery after the restart, seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Namespace prefix (default: generated n444-<pid>-<n>, swept once this process is
        /// gone).
        #[arg(long)]
        prefix: Option<String>,
        /// Print the figures as one JSON object (progress goes to standard error).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check_privileges() {
        eprintln!("nat444-lab: {e}");
        eprintln!("nat444-lab: run it as root, e.g. `sudo nat444-lab ...`");
        return ExitCode::from(EXIT_NOT_PRIVILEGED);
    }
    match cli.command {
        Command::Up {
            prefix,
            one_subscriber,
        } => up(&prefix, !one_subscriber),
        Command::Down { prefix } => down(&prefix),
        Command::Demo => run_demo(),
        Command::Scale {
            subscribers,
            mappings,
            parallel,
            timeout,
            prefix,
            json,
        } => run_scale(
            &ScaleOptions {
                subscribers,
                mappings,
                parallel,
                timeout: Duration::from_secs(timeout),
                prefix,
            },
            json,
        ),
    }
}

/// A flag raised by SIGINT/SIGTERM (a second signal exits at once, without cleanup).
fn interrupt_flag(command: &str) -> Option<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let registered = signal_hook::flag::register_conditional_shutdown(
            signal,
            EXIT_INTERRUPTED.into(),
            Arc::clone(&interrupted),
        )
        .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&interrupted)));
        if let Err(e) = registered {
            eprintln!("nat444-lab {command}: cannot install signal handler: {e}");
            return None;
        }
    }
    Some(interrupted)
}

fn run_scale(opts: &ScaleOptions, json: bool) -> ExitCode {
    let Some(interrupted) = interrupt_flag("scale") else {
        return ExitCode::FAILURE;
    };
    let mut progress = std::io::stderr();
    eprintln!(
        "nat444-lab scale: {} subscribers × {} UDP mappings behind one cgn-sim",
        opts.subscribers, opts.mappings
    );
    match scale::run(opts, &mut progress, &interrupted) {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                println!(
                    "\nnat444-lab scale: {} subscribers × {} mappings\n{}",
                    report.subscribers,
                    report.mappings,
                    report.table()
                );
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "nat444-lab scale: FAILED: {} lost, {} duplicated{}",
                    report.lost,
                    report.duplicated,
                    if report.recovery_timed_out {
                        ", recovery timed out"
                    } else {
                        ""
                    }
                );
                ExitCode::FAILURE
            }
        }
        Err(ScaleError::Interrupted) => {
            eprintln!("nat444-lab scale: interrupted; the lab was torn down");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e @ ScaleError::Options(_)) => {
            eprintln!("nat444-lab scale: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("nat444-lab scale: {e} (the lab was torn down)");
            ExitCode::FAILURE
        }
    }
}

fn up(prefix: &str, second_subscriber: bool) -> ExitCode {
    let lab = match LabBuilder::new()
        .prefix(prefix)
        .second_subscriber(second_subscriber)
        .build()
    {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("nat444-lab up: {e}");
            eprintln!("nat444-lab up: if the lab is up already, run `nat444-lab down` first");
            return ExitCode::FAILURE;
        }
    };
    println!("Lab {prefix} is up ({} namespaces):\n", lab.nodes().len());
    println!("{}", lab.describe());
    match lab.keep() {
        Ok(prefix) => {
            if prefix == UP_PREFIX {
                println!("Remove it with: nat444-lab down");
            } else {
                println!("Remove it with: nat444-lab down --prefix {prefix}");
            }
            ExitCode::SUCCESS
        }
        Err(_lab) => {
            eprintln!("nat444-lab up: lab has running children, tearing it down");
            ExitCode::FAILURE
        }
    }
}

fn down(prefix: &str) -> ExitCode {
    match Lab::running_pids(prefix) {
        Ok(running) => {
            for (ns, pids) in running {
                eprintln!(
                    "nat444-lab down: warning: processes {pids:?} still run in {ns}; it lives on \
                     until they exit (they are not killed)"
                );
            }
        }
        Err(e) => eprintln!("nat444-lab down: cannot list processes: {e}"),
    }
    match Lab::remove_by_prefix(prefix) {
        Ok(removed) if removed.is_empty() => {
            println!("No lab with prefix {prefix} is up; nothing to remove.");
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            println!("Removed {}", removed.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nat444-lab down: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo() -> ExitCode {
    let Some(interrupted) = interrupt_flag("demo") else {
        return ExitCode::FAILURE;
    };
    let mut stdout = std::io::stdout();
    let result = demo::run(&mut stdout, &interrupted);
    let _ = stdout.flush();
    match result {
        Ok(summary) if summary.all_ok() => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!(
                "nat444-lab demo: incomplete: {}/{} hops, UDP {}, TCP {}, hairpin {}, PEER peer \
                 admitted {}, stranger refused {}, restored {}",
                summary.hops_ok,
                summary.hops_total,
                summary.udp_delivered,
                summary.tcp_delivered,
                summary.hairpin_delivered,
                summary.peer_admitted,
                summary.peer_refused,
                summary.restored
            );
            ExitCode::FAILURE
        }
        Err(DemoError::Interrupted) => {
            eprintln!("nat444-lab demo: interrupted; the lab was torn down");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("nat444-lab demo: {e} (the lab was torn down)");
            ExitCode::FAILURE
        }
    }
}
