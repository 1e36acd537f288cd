//! Forking the whole master, for `--daemon`: the one fork after which the child runs arbitrary
//! code (the children of the server are started by [`super::spawn`], which execs at once).

use std::fs;
use std::io;

use nix::unistd::Pid;

/// Which side of [`fork_process`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child has this pid.
    Parent(Pid),
    /// The new process.
    Child,
}

/// `fork(2)` for detaching (`--daemon`), where the child goes on to run arbitrary code: it
/// allocates, logs and takes locks. That is only sound while the process has exactly one
/// thread (no other thread can hold a lock or be half-way through `malloc` at the moment of
/// the fork), so this checks `/proc/self/task` first and refuses otherwise.
pub fn fork_process() -> io::Result<Forked> {
    let threads = fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork with {threads} threads running (detaching must happen before any thread starts)"
        )));
    }
    // SAFETY: the process has a single thread (checked just above; nothing in between starts
    // one), so the child inherits no lock held by another thread and may run any code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}
