//! Background mode from code, as the `--daemon` flag gives it on the command line (and as
//! xdaemon's `Background` does for Go programs): the calling process detaches a master with a
//! pid file and log files, and returns only once the first generation is up.
//!
//! [`run`] is the whole of it; [`detach`] is the first half, for a caller that wants to do
//! something in the daemon before its master starts (the `relaunch` binary sets up logging
//! there). The mechanics (double fork, new session, `/` as working directory, `/dev/null` as
//! stdio, the report through a pipe) are [`crate::daemon`]'s.
//!
//! ```no_run
//! use relaunch::background::{self, Backgrounded};
//! # fn config() -> relaunch::Config { unimplemented!() }
//! let mut config = config(); // with `pid_file` set, and the log files in its program's output
//! config.daemon = true;
//! match background::run(config) {
//!     // The original process: the server is up, under a master in the background.
//!     Ok(Backgrounded::Up) => std::process::exit(0),
//!     // The daemon: its master stopped.
//!     Ok(Backgrounded::Finished(code)) => std::process::exit(code),
//!     Err(failure) => {
//!         eprintln!("error: {:#}", failure.error);
//!         std::process::exit(failure.code)
//!     }
//! }
//! ```

use std::os::fd::RawFd;

use anyhow::anyhow;

use crate::config::Config;
use crate::daemon::{self, Detached, Startup};
use crate::spec::ListenAddr;
use crate::Failure;

/// Where [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backgrounded {
    /// In the original process: the first generation is up (every worker of it ready), and the
    /// master runs in the background; its pid is in the pid file.
    Up,
    /// In the daemon, once its master stopped: the exit code, as [`crate::run`] returns it.
    Finished(i32),
}

/// Which process [`detach`] returned in.
#[derive(Debug)]
pub enum Side {
    /// The original process: the first generation is up.
    Original,
    /// The daemon: run the master with [`crate::run_detached`] and this startup report.
    Daemon(Startup),
}

/// Detaches, and runs the master in the background (see the [module docs](self)). In the
/// original process, returns [`Backgrounded::Up`] once the first generation is up, or the
/// failure that kept it from coming up, with the exit code `--daemon` would give (the
/// server's status, 126/127 when it cannot be executed, 1 or 2 for relaunch's own failures).
/// In the daemon, returns once the master stopped.
///
/// Call it first thing in `main`, while the process has one thread and before it opens
/// sockets or installs signal handlers. `config.pid_file` is required.
pub fn run(config: Config) -> Result<Backgrounded, Failure> {
    let mut config = config;
    match detach(&mut config)? {
        Side::Original => Ok(Backgrounded::Up),
        Side::Daemon(startup) => crate::run_detached(config, startup).map(Backgrounded::Finished),
    }
}

/// The first half of [`run`]: checks `config` for background mode, makes the relative paths
/// it holds absolute (the daemon runs in `/`), and detaches, keeping the fds that `--listen
/// fd:N` names. Sets `config.daemon`.
pub fn detach(config: &mut Config) -> Result<Side, Failure> {
    if config.pid_file.is_none() {
        return Err(Failure {
            code: 2,
            error: anyhow!(
                "background mode needs a pid file: without one nothing could find the master again"
            ),
        });
    }
    config.daemon = true;
    for program in &mut config.programs {
        daemon::absolute_program(&mut program.command).map_err(|e| Failure {
            code: 1,
            error: anyhow!(
                "cannot make the program path {:?} absolute: {e}",
                program.command.program
            ),
        })?;
    }
    let keep: Vec<RawFd> = config
        .programs
        .iter()
        .flat_map(|program| &program.listen)
        .filter_map(|spec| match spec.addr {
            ListenAddr::Fd(fd) => Some(fd),
            _ => None,
        })
        .collect();
    match daemon::detach(&keep) {
        Ok(Detached::Parent { code: 0, .. }) => Ok(Side::Original),
        Ok(Detached::Parent { code, message }) => Err(Failure {
            code,
            error: anyhow!(message),
        }),
        Ok(Detached::Daemon(startup)) => Ok(Side::Daemon(startup)),
        Err(e) => Err(Failure {
            code: 1,
            error: anyhow!("cannot detach: {e}"),
        }),
    }
}
