//! Manage servers from Rust code: relaunch as a library.
//!
//! Build each [`Program`] with the command line's knobs (and the command line's checks and
//! messages), put them in a [`Master`], and either [`Master::run`] it on the calling thread
//! until it stops, or [`Master::start`] it on a thread of its own and drive it through a
//! [`Handle`]: reload a program and get the typed outcome of `reload --wait`
//! ([`ReloadOutcome`]), start, stop, add and remove programs, send signals, read the status
//! (the record of `status --json`, as serde structs: [`Status`]) and [`Handle::subscribe`]
//! to [`Event`]s. Errors are an [`Error`]: usage (a bad value), runtime, or spawn.
//!
//! ```no_run
//! use relaunch::api::{Master, Program, ReadyMode};
//!
//! let handle = Master::new("shop")?
//!     .program(
//!         Program::new("web", "/usr/local/bin/web")
//!             .arg("--threads=4")
//!             .listen("http=127.0.0.1:8080")?
//!             .ready(ReadyMode::Notify)?,
//!     )?
//!     .start()?;
//! let outcome = handle.reload("web")?;
//! println!("{outcome:?}");
//! handle.shutdown()?;
//! # Ok::<(), relaunch::api::Error>(())
//! ```
//!
//! # Threads, signals and children: what the master takes over in your process
//!
//! The master is the same as the `relaunch` command's: **one thread** runs its whole event
//! loop (a `poll` over the signal pipe, the programs' notify sockets, pipes and watchers, the
//! control socket and the handles' wake socket); handles only send it requests through a
//! channel and a wake socket, and wait for its answers. Children are started with the
//! command's fork-and-exec, which prepares everything before `fork` and does only
//! async-signal-safe work between `fork` and `exec` (no allocation, no lock), so it is sound
//! in a process with other threads.
//!
//! While it runs, the master owns process-wide state, which is why **only one master runs per
//! process** ([`RuntimeError::AlreadyRunning`] for a second):
//!
//! - **Signal handlers** for `SIGCHLD`, `SIGTERM`, `SIGINT`, `SIGQUIT`, `SIGHUP`, `SIGUSR1`,
//!   `SIGUSR2` and `SIGWINCH`, through `signal-hook` (a handler installed before is called
//!   too). As for the command: `SIGTERM`, `SIGINT` and `SIGQUIT` stop the master and every
//!   program, `SIGHUP` reloads every program, `SIGUSR1` reopens log files (with log files) and
//!   the others are forwarded to the programs' current generations. When the master stops,
//!   its actions are unregistered but the default dispositions are not restored: from then
//!   on the process ignores those signals (end the process when the master is done, or
//!   install handlers of your own).
//! - **Every child of the process is reaped** by the master (`waitpid(-1)`), including
//!   children the host started itself.
//! - **File descriptors**: at start every fd above 2 is made close-on-exec (so nothing of the
//!   host leaks into the servers), and fds 0-2 are opened on `/dev/null` if they are closed.
//! - If `NOTIFY_SOCKET` is set, the master tells that service manager `READY=1`, `RELOADING=1`
//!   and `STATUS=` about its programs, as the command does.
//! - A control socket only with [`Master::control_socket`] or
//!   [`Master::default_control_socket`]; a pid file only with [`Master::pid_file`].
//!
//! The children inherit the process's environment (less `LISTEN_*`, `NOTIFY_SOCKET` and
//! `RELAUNCH_*`), and its stdout and stderr receive their captured output.
//!
//! So the host process **must not**: handle `SIGCHLD` or `SIGHUP` (or the stop signals)
//! itself, or change their disposition to ignored; `wait` for children, or run child
//! processes whose exit status it needs (use [`std::process::Command::output`] and the like
//! only before the master starts or after it stops); set `SIG_IGN` for `SIGCHLD`; or run a
//! second master. It may use threads, log with `tracing` (the master logs through it, and
//! installs no subscriber), and run its own servers and clients.
//!
//! # One master per process, and tests
//!
//! A test binary runs its tests on several threads of one process, so at most one test at a
//! time can run a master; the integration tests of this crate run each master in a process of
//! its own (the test binary re-executed for one test).

mod error;
mod handle;
mod master;
mod program;

pub use error::{Error, RuntimeError};
pub use handle::{Events, Handle, ReloadOutcome, Status};
pub use master::Master;
pub use program::Program;

pub use crate::config::ReadyMode;
pub use crate::control::Event;
pub use crate::output::OutputMode;
pub use crate::status::{OutputLine, StatusRecord};
pub use crate::supervisor::{
    ExitStatus, OnExit, OnFatal, ProgramState, ReloadFailure, ReloadStrategy, RestartPolicy,
};
pub use nix::sys::signal::Signal;
