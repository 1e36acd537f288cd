//! The child side of self-hosting: telling a generation started by a self-hosted master from
//! a first run, and running a named entry point (frigate's registered tasks).
//!
//! The master marks each child's environment with [`HOST_VAR`] (its own pid) and, for a
//! program that runs an entry point, [`ENTRY_VAR`] (the entry's name). A process is a child
//! of a self-hosted master when the marker names its parent: a copy of the variable that
//! leaked into a subprocess of the server, or outlived its master, does not count (that run
//! is a first run, a master of its own).

use std::ffi::OsString;

use crate::child::{ChildError, Sockets, LISTEN_VARS};
use crate::sys;

/// The marker a self-hosted master puts into its children's environment: the master's pid.
pub const HOST_VAR: &str = "RELAUNCH_SELF_HOST";
/// The entry point a child of a self-hosted master runs (see [`entry`]); unset for the
/// program's main flow.
pub const ENTRY_VAR: &str = "RELAUNCH_ENTRY";

/// What this process is, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// A first run (no marker naming our parent): the master.
    Master,
    /// A generation of the program's main flow.
    Main,
    /// A generation of the named entry point.
    Entry(String),
}

/// Reads the role from the environment.
pub(crate) fn role() -> Role {
    let parent = nix::unistd::getppid().as_raw();
    role_of(
        std::env::var_os(HOST_VAR),
        std::env::var_os(ENTRY_VAR),
        parent,
    )
}

/// The role given the marker, the entry variable and the parent's pid.
fn role_of(marker: Option<OsString>, entry: Option<OsString>, parent: i32) -> Role {
    let ours = marker
        .and_then(|m| m.into_string().ok())
        .and_then(|m| m.parse::<i32>().ok())
        .is_some_and(|pid| pid == parent && pid > 1);
    match (ours, entry) {
        (false, _) => Role::Master,
        (true, None) => Role::Main,
        (true, Some(name)) => Role::Entry(name.to_string_lossy().into_owned()),
    }
}

/// Takes the inherited sockets, and removes the marker variables along with `LISTEN_*` when
/// that is sound (a single thread; see [`crate::child`]), so the server's own subprocesses do
/// not see them.
pub(crate) fn take_sockets() -> Result<Sockets, ChildError> {
    let sockets = Sockets::take()?;
    let mut vars = vec![HOST_VAR, ENTRY_VAR];
    vars.extend(LISTEN_VARS);
    sys::env::remove_vars_if_single_threaded(&vars);
    Ok(sockets)
}

/// What an entry point's function may return: how the process exits.
pub trait EntryResult {
    /// The exit code; an error is printed to stderr first.
    fn exit_code(self, name: &str) -> i32;
}

impl EntryResult for () {
    fn exit_code(self, _: &str) -> i32 {
        0
    }
}

impl EntryResult for i32 {
    fn exit_code(self, _: &str) -> i32 {
        self
    }
}

impl<E: std::fmt::Display> EntryResult for Result<(), E> {
    fn exit_code(self, name: &str) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{name}: error: {e}");
                1
            }
        }
    }
}

/// Runs `main` if this process is a generation of the self-hosted program whose entry point
/// is `name`, and exits with what it returns; otherwise returns at once, doing nothing.
///
/// Call one `entry` per entry point at the top of `main`, before [`crate::host::self_host`],
/// which starts each registered name as a program of its own
/// ([`crate::host::SelfHost::entry`]). One binary then runs, say, a web server and a job
/// runner as two supervised programs of one master, each restarted and reloaded on its own.
/// `main` gets the program's sockets (with the `LISTEN_*` variables removed when this is
/// called while the process has one thread); if they cannot be taken, the process prints why
/// and exits 1.
///
/// ```no_run
/// use relaunch::child::Sockets;
/// use relaunch::host::{self, HostedProgram, SelfHost};
///
/// fn jobs(_sockets: Sockets) -> Result<(), std::io::Error> {
///     relaunch::child::ready().map_err(std::io::Error::other)?;
///     loop { std::thread::park() } // ... run jobs
/// }
///
/// fn main() {
///     relaunch::entry("jobs", jobs); // returns unless this process is the "jobs" program
///     let options = SelfHost::new("site").entry(HostedProgram::entry("jobs"));
///     match host::self_host(options) {
///         Ok(done) => std::process::exit(done.exit_code()), // the master stopped
///         Err(e) => e.exit(),
///     }
/// }
/// ```
pub fn entry<R: EntryResult>(name: &str, main: impl FnOnce(Sockets) -> R) {
    if role() != Role::Entry(name.to_owned()) {
        return;
    }
    let sockets = match take_sockets() {
        Ok(sockets) => sockets,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            std::process::exit(1)
        }
    };
    let code = main(sockets).exit_code(name);
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn without_the_marker_it_is_a_first_run() {
        assert_eq!(role_of(None, None, 42), Role::Master);
        assert_eq!(role_of(None, os("jobs"), 42), Role::Master);
    }

    #[test]
    fn the_marker_must_name_the_parent() {
        assert_eq!(role_of(os("42"), None, 42), Role::Main);
        assert_eq!(
            role_of(os("42"), os("jobs"), 42),
            Role::Entry("jobs".into())
        );
        // Leaked into a grandchild, or the master is gone (reparented to init).
        assert_eq!(role_of(os("42"), None, 43), Role::Master);
        assert_eq!(role_of(os("1"), None, 1), Role::Master);
        assert_eq!(role_of(os("x"), None, 42), Role::Master);
    }
}
