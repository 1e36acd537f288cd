//! relaunch: restart network servers with zero downtime.
//!
//! A master process owns the listening sockets and never closes them. It runs the server as a
//! child with the sockets at fds 3, 4, ... and the systemd socket-activation environment
//! (`LISTEN_FDS`, `LISTEN_PID` = the child's own pid, `LISTEN_FDNAMES`). On SIGHUP it starts a
//! new generation, waits until it is up, then stops the old one; if the new one fails, the old
//! one keeps serving. A crashed child is restarted with backoff while the sockets stay open.
//!
//! The library is the whole tool; the `relaunch` binary only parses arguments and maps the
//! result to an exit code:
//!
//! ```no_run
//! use clap::Parser;
//! let mut args = relaunch::cli::Args::parse()
//!     .validate()
//!     .unwrap_or_else(|e| e.exit());
//! use relaunch::cli::Subcommand;
//! match args.client.take() {
//!     // `relaunch status|reload|stop|...`: talk to a running master.
//!     Some(Subcommand::Client(command)) => std::process::exit(relaunch::client::run(command)),
//!     // `relaunch man|completions SHELL`: print documentation.
//!     Some(Subcommand::Docs(command)) => {
//!         use clap::CommandFactory;
//!         let cmd = relaunch::cli::Args::command();
//!         std::process::exit(relaunch::cli_docs::run(&command, cmd));
//!     }
//!     None => {}
//! }
//! let code = match relaunch::run(args.into_config()) {
//!     Ok(code) => code,
//!     Err(failure) => {
//!         eprintln!("relaunch: error: {:#}", failure.error);
//!         failure.code
//!     }
//! };
//! std::process::exit(code);
//! ```
//!
//! Modules, in the order data flows: [`cli`] (arguments) → [`config`] → [`spec`] (address
//! grammar) → [`activation`] (sockets inherited from relaunch's parent) → [`sockets`]
//! (binding) → [`runtime`] (the event loop, with [`signals`]) → [`supervisor`] (the pure state
//! machine, with the restart policy) → [`process`] (user, environment and limits of the
//! child, resolved before `fork`) → [`spawn`] (fork/exec; the only `unsafe` code).
//! Around them: [`output`] (capturing the children's output into rotated log files),
//! [`pidfile`] and [`daemon`] (background mode).
//! Beside the supervisor, driven by the same loop: [`control`] (the control socket, with
//! [`conn`], [`accept`] (no spinning at the fd limit) and [`locate`] (where control sockets
//! live)), [`status`] (what status reports) and [`metrics`] (Prometheus). [`client`] is the
//! other side: the `status`, `reload`, `stop` and `signal` subcommands; [`cli_docs`] prints the
//! man page and shell completions. [`watch`] reloads when
//! the program or other watched files change.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
pub mod activation;
pub mod cli;
pub mod cli_docs;
pub mod client;
pub mod config;
pub mod conn;
pub mod control;
pub mod daemon;
pub mod locate;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod pidfile;
pub mod process;
#[cfg(test)]
mod proptests;
pub mod runtime;
pub mod signals;
pub mod sockets;
#[allow(unsafe_code)]
pub mod spawn;
pub mod spec;
pub mod status;
pub mod supervisor;
pub mod watch;

pub use config::{Command, Config};

/// A failure that ends the master, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code: 1 runtime failure, 2 usage error (e.g. an unknown `--user`),
    /// 126 not executable, 127 not found.
    pub code: i32,
    /// What went wrong, with its causes.
    pub error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    /// Exit code 2 (usage) when the error comes from a `--listen` argument that asks for
    /// something impossible (a [`spec::SpecError`] anywhere in the chain), else 1.
    fn from(error: anyhow::Error) -> Self {
        let usage = error.chain().any(|e| e.is::<spec::SpecError>());
        Failure {
            code: if usage { 2 } else { 1 },
            error,
        }
    }
}

/// Runs the master with `config` until it stops. Returns the exit code: the status of the
/// child that was current when it stopped, as a shell reports it (128+N for signal N).
pub fn run(config: Config) -> Result<i32, Failure> {
    runtime::run(config, None)
}

/// Like [`run`], in a process that [`daemon::detach`]ed: reports to the waiting shell command
/// through `startup` once the first generation is up, or why it did not come up.
pub fn run_detached(config: Config, startup: daemon::Startup) -> Result<i32, Failure> {
    runtime::run(config, Some(startup))
}
