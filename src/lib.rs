//! relaunch: restart network servers with zero downtime.
//!
//! A master process owns the listening sockets and never closes them. It runs the server as a
//! child with the sockets at fds 3, 4, ... and the systemd socket-activation environment
//! (`LISTEN_FDS`, `LISTEN_PID` = the child's own pid, `LISTEN_FDNAMES`). On SIGHUP it starts a
//! new generation, waits until it is up, then stops the old one; if the new one fails, the old
//! one keeps serving. A crashed child is restarted with backoff while the sockets stay open.
//!
//! To manage servers from Rust code, use [`api`]: build [`api::Program`]s with the command
//! line's knobs, run them in an [`api::Master`] on this thread or its own, and reload, start,
//! stop, add and remove them, read their typed status and subscribe to their events through
//! an [`api::Handle`].
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
//!     // `relaunch check-config FILE`: validate a configuration file.
//!     Some(Subcommand::CheckConfig { file }) => {
//!         std::process::exit(relaunch::config_file::check(&file))
//!     }
//!     None => {}
//! }
//! // `--config FILE`: the programs come from the file.
//! let config = match &args.config {
//!     Some(file) => relaunch::config_file::load(file).unwrap_or_else(|e| {
//!         eprintln!("relaunch: error: {e}");
//!         std::process::exit(2)
//!     }),
//!     None => args.into_config(),
//! };
//! let code = match relaunch::run(config) {
//!     Ok(code) => code,
//!     Err(failure) => {
//!         eprintln!("relaunch: error: {:#}", failure.error);
//!         failure.code
//!     }
//! };
//! std::process::exit(code);
//! ```
//!
//! The module map, the layering and the data flow from argv to exec are in `ARCHITECTURE.md`.
//! Besides [`api`], the public modules are what the binary uses and the value types of the
//! API:
//! [`cli`] (arguments) → [`config`] (with [`command`], [`spec`], [`process`], [`output`],
//! [`watch`], [`control`] and [`metrics`] settings, parsed with [`parse`]) → [`run`]; the
//! [`supervisor`]'s settings, states and reports; [`status`] records; [`client`] (the
//! `status`, `reload`, `stop` and `signal` subcommands); [`config_file`] (`--config`,
//! `check-config`); [`cli_docs`] (the man page and shell
//! completions); [`daemon`] (background mode). [`cli`], [`client`], [`config_file`] and
//! [`cli_docs`] need the `cli` cargo feature (on by default).
//!
//! A server can also be its own master: [`self_host`] at the top of `main` runs the master in
//! the first run and returns the sockets in each generation, [`entry`] runs named entry points
//! of one binary as programs of their own, and [`background`] detaches a master as
//! `--daemon` does (see [`host`]).
//! Everything else (the event loop, the program value, sockets, spawning, the poll registry)
//! is internal.

#![deny(unsafe_code)]
#![deny(missing_docs)]
// Without the `cli` feature, the crate docs' links to the modules it gates have no target.
#![cfg_attr(not(feature = "cli"), allow(rustdoc::broken_intra_doc_links))]

pub(crate) mod accept;
pub mod api;
pub mod background;
pub mod child;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod cli_docs;
#[cfg(feature = "cli")]
pub mod client;
pub mod command;
pub mod config;
pub(crate) mod config_diff;
#[cfg(feature = "cli")]
pub mod config_file;
pub(crate) mod conn;
pub mod control;
pub mod daemon;
pub(crate) mod environment;
pub mod host;
pub mod logging;
pub mod metrics;
pub(crate) mod notify;
pub mod output;
pub mod parse;
pub(crate) mod pidfile;
pub(crate) mod poll;
pub mod process;
pub(crate) mod program;
#[cfg(test)]
mod proptests;
pub(crate) mod runtime;
pub(crate) mod signals;
pub(crate) mod sockets;
pub mod spec;
pub mod status;
pub mod supervisor;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub mod watch;

pub use command::Command;
pub use config::{Config, ProgramConfig};
pub use host::{entry, self_host};

/// Records which file descriptors this process inherited from its parent (sockets passed by
/// socket activation or named with `--listen fd:N`): the only ones relaunch will adopt. Call
/// it first thing in `main`, before anything opens a file descriptor.
pub fn record_inherited_fds() {
    sys::fds::record_inherited_fds();
}

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
    api_master(config)?.run_reporting(None)
}

/// Like [`run`], in a process that [`daemon::detach`]ed: reports to the waiting shell command
/// through `startup` once the first generation is up, or why it did not come up.
pub fn run_detached(config: Config, startup: daemon::Startup) -> Result<i32, Failure> {
    api_master(config)?.run_reporting(Some(startup))
}

/// The embedding API's master for a configuration the command line (or a self-hosted server)
/// built: the binary runs through the same [`api::Master`] as code does.
fn api_master(config: Config) -> Result<api::Master, Failure> {
    api::Master::from_config(config).map_err(|e| Failure {
        code: e.exit_code(),
        error: anyhow::anyhow!(e.to_string()),
    })
}

/// How the master reads its configuration file again (SIGHUP, `relaunch reload`): the
/// runtime is handed this function rather than depending on the front end's parser.
#[cfg(feature = "cli")]
pub(crate) fn read_config_file(path: &std::path::Path) -> Result<Config, String> {
    config_file::load(path).map_err(|e| e.to_string())
}

/// Without the `cli` feature there is no configuration file parser; a [`Config`] built in code
/// has no `source`, so this is never called.
#[cfg(not(feature = "cli"))]
pub(crate) fn read_config_file(path: &std::path::Path) -> Result<Config, String> {
    Err(format!(
        "cannot read {}: relaunch was built without the cli feature, which reads configuration files",
        path.display()
    ))
}
