//! Reloading when files change: `--watch` (the program relaunch runs) and `--watch-path`
//! (anything else, such as a configuration file or a release directory).
//!
//! # What counts as a change
//! Paths are followed *by name*, not by inode, because that is how deploys work: a new build is
//! renamed onto the old name (a new inode; `cp` over a running binary fails with `ETXTBSY`),
//! compilers and `cp` write in place in several steps, packages delete and recreate, and
//! Capistrano-style releases swap a symlink (`current -> releases/N`). So the watcher resolves
//! each path the way the kernel does and watches, with inotify:
//! - the directory that holds the final name, for that name being created, deleted, or renamed
//!   onto or away;
//! - the file the name points to, for writes, closes after writing and metadata changes (or, for
//!   a directory, anything happening to its entries, not recursively);
//! - every directory that holds a symlink met along the way, for that symlink being replaced
//!   (both the directory holding `current` and the one holding the file it points to);
//! - when a directory on the way is missing, the nearest existing one, for it to reappear.
//!
//! Directories are watched for names only: a server writing its log next to its binary does not
//! wake the master at every write.
//!
//! A structural event (a name created, deleted or renamed, a watched directory deleted or moved,
//! or an event-queue overflow) makes the watcher resolve every path again and re-aim its watches
//! at what the names now point to. A directory renamed two or more levels above a watched file,
//! without a symlink involved, is not noticed (nothing on the path to the file changes name in
//! the directories watched); deploys that swap directories should swap a symlink.
//!
//! # Debounce and fingerprints
//! Each change only arms a timer: a reload is considered once every watched path has been quiet
//! for `--watch-settle` (default 500 ms), so a burst of events (a copy in many writes, 50
//! touches, a deploy that replaces several files) becomes one reload. At that moment each
//! watched path is sampled again (`stat`); if a path that changed differs from its sample at its
//! last event (it changed without an event, e.g. through a writable mapping), the wait starts
//! over. The program must then be a regular executable file.
//!
//! The state of all watched paths is a *version*: for each path, its fingerprint (device,
//! inode, size, mtime, mode; missing is a state too) and, for directories, a count of the events
//! seen inside them. The watcher remembers the version each generation was started from, and
//! learns from [`Report::ReloadEnded`](crate::supervisor::Report::ReloadEnded) whether that
//! reload worked (whatever triggered it, SIGHUP included; a new generation that exits early, is
//! not ready in time or cannot be executed fails). Then:
//! - a version equal to the one the serving generation runs is no change (a symlink swapped
//!   back, an event that changed nothing, a SIGHUP that already picked the build up);
//! - a version that failed before (its generation exited early, was not ready in time or could
//!   not be executed, the program was not an executable file, or `--check-cmd` rejected it) is
//!   not tried again: a broken deploy costs one failed reload, not a retry loop. The next
//!   change makes a new version, which is tried;
//! - if every changed path was removed, nothing happens until one reappears.
//!
//! # The pre-flight check
//! With `--check-cmd CMD`, a settled change runs `/bin/sh -c CMD` before the reload, with the
//! program's path in `RELAUNCH_PROGRAM`, stdin from `/dev/null` and stdout and stderr on
//! relaunch's stderr. It is started the way the server is (same user and groups, directory,
//! umask, limits and environment rules, its own process group, `PR_SET_PDEATHSIG`), without the
//! sockets: a check that runs the new build does not run it as root when the server would
//! not. It runs asynchronously: the event loop keeps
//! going, the runtime routes its exit here (`Watcher::reaped`) rather than to the supervisor,
//! and it is killed (its whole process group, SIGKILL) after `--check-timeout` or when a watched
//! path changes while it runs (then it starts over once the change settles). A non-zero exit
//! aborts that reload and marks the version as failed.
//!
//! # Why nix's inotify
//! The watcher is one inotify file descriptor in the master's `poll` set: no thread, no timer
//! while nothing is settling, so an idle master makes no wake-ups. nix (already a dependency)
//! wraps the three system calls; the `notify` crate would bring a thread, a channel and
//! cross-platform backends the master does not need. inotify is Linux-only, like the rest of
//! relaunch (`PR_SET_PDEATHSIG`, `/proc`).
//!
//! The decisions live in `Debounce`, a sans-IO state machine like the supervisor: it is fed
//! events and samples with timestamps and returns `Decision`s, and is unit-tested without
//! files or clocks. `Watcher` is the thin driver around it.

mod debounce;
mod plan;
mod watcher;

pub(crate) use watcher::Watcher;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Default of `--watch-settle`.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(500);
/// Default of `--check-timeout`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What to watch, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Watch the program relaunch runs (`--watch`).
    pub program: bool,
    /// Other files or directories to watch (`--watch-path`).
    pub paths: Vec<PathBuf>,
    /// How long the watched paths must be quiet before a change counts (`--watch-settle`).
    pub settle: Duration,
    /// The pre-flight check (`--check-cmd`, `--check-timeout`).
    pub check: Option<CheckCommand>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            program: false,
            paths: Vec::new(),
            settle: DEFAULT_SETTLE,
            check: None,
        }
    }
}

impl WatchConfig {
    /// Whether anything is watched at all.
    pub fn is_enabled(&self) -> bool {
        self.program || !self.paths.is_empty()
    }
}

/// A shell command that must succeed before a watch-triggered reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckCommand {
    /// Run as `/bin/sh -c COMMAND`.
    pub command: OsString,
    /// Killed (with its process group) and counted as failed after this long.
    pub timeout: Duration,
}
