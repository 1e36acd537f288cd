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
//! learns from [`Action::ReloadDone`](crate::supervisor::Action::ReloadDone) whether that
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
//! going, the runtime routes its exit here ([`Watcher::reaped`]) rather than to the supervisor,
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
//! The decisions live in [`Debounce`], a sans-IO state machine like the supervisor: it is fed
//! events and samples with timestamps and returns [`Decision`]s, and is unit-tested without
//! files or clocks. [`Watcher`] is the thin driver around it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::command::Command;
use crate::sys::spawn::{self, Extras, SpawnOptions};
use crate::supervisor::{ExitStatus, Trigger};

/// Default of `--watch-settle`.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(500);
/// Default of `--check-timeout`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How many failed versions are remembered (the oldest is forgotten first).
const REMEMBERED_FAILURES: usize = 16;
/// How many spawned generations' versions are kept until their outcome arrives.
const REMEMBERED_SPAWNS: usize = 16;

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

// ---------------------------------------------------------------------------------------------
// Fingerprints

/// The fingerprint of a file or directory, from `stat` (following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stat {
    /// Device.
    pub dev: u64,
    /// Inode: a rename onto the path makes a new one.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// File type and permission bits (`st_mode`): `chmod +x` is a change.
    pub mode: u32,
}

impl Stat {
    /// Stats `path`, following symlinks; `None` if there is nothing (usable) there.
    pub fn of(path: &Path) -> Option<Stat> {
        let m = fs::metadata(path).ok()?;
        Some(Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            mode: m.mode(),
        })
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A regular file with an execute bit.
    pub fn is_executable(&self) -> bool {
        self.is_file() && self.mode & 0o111 != 0
    }
}

/// One watched path's state at one moment: its fingerprint and, for a directory, how many
/// changes inside it the watcher has seen (its own mtime misses files written in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathVersion {
    /// The fingerprint; `None` when the path does not exist.
    pub stat: Option<Stat>,
    /// Changes seen inside it (always 0 for files).
    pub changes: u64,
}

/// The state of every watched path, in the order they were given (the program first).
pub type Version = Vec<PathVersion>;

// ---------------------------------------------------------------------------------------------
// The sans-IO core

/// What the driver must do after feeding [`Debounce`] something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Nothing,
    /// Run the pre-flight check, then report it with [`Debounce::check_finished`].
    RunCheck,
    /// Kill the running check: a watched path changed, so its result no longer counts.
    CancelCheck,
    /// Ask the supervisor for a reload, naming this changed path.
    Reload(PathBuf),
}

struct Target {
    path: PathBuf,
    program: bool,
    changes: u64,
    /// The sample taken at the last event, while a change is settling.
    dirty: Option<Option<Stat>>,
}

/// The debounce and fingerprint logic, without IO: events and samples in, [`Decision`]s out.
/// See the module docs for the rules.
pub struct Debounce {
    settle: Duration,
    has_check: bool,
    targets: Vec<Target>,
    /// When the settling change is considered, if one is settling.
    deadline: Option<Instant>,
    /// The version the serving generation was started from.
    running: Version,
    /// Versions that failed, and why (for the log), oldest first.
    failed: VecDeque<(Version, String)>,
    /// The version each recent generation was started from, until its outcome arrives.
    spawned: VecDeque<(u64, Version)>,
    /// The version a running check is about, and the path to name in the reload.
    checking: Option<(Version, PathBuf)>,
}

impl Debounce {
    /// A debouncer for `targets` (`(path, is_the_program)`), `sample` giving their current
    /// fingerprints: the version found now is taken as the one the first generation runs.
    pub fn new(
        settle: Duration,
        targets: Vec<(PathBuf, bool)>,
        has_check: bool,
        mut sample: impl FnMut(&Path) -> Option<Stat>,
    ) -> Debounce {
        let targets: Vec<Target> = targets
            .into_iter()
            .map(|(path, program)| Target {
                path,
                program,
                changes: 0,
                dirty: None,
            })
            .collect();
        let running = targets
            .iter()
            .map(|t| PathVersion {
                stat: sample(&t.path),
                changes: 0,
            })
            .collect();
        Debounce {
            settle,
            has_check,
            targets,
            deadline: None,
            running,
            failed: VecDeque::new(),
            spawned: VecDeque::new(),
            checking: None,
        }
    }

    /// The watched paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.targets.iter().map(|t| t.path.as_path())
    }

    /// When [`Debounce::tick`] has something to do: the end of the settle window, if a change
    /// is settling. `None` when idle.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether a check is running (asked for and not yet finished or cancelled).
    pub fn is_checking(&self) -> bool {
        self.checking.is_some()
    }

    /// Target `target` changed at `now`; `stat` is its fingerprint right after the event.
    pub fn changed(&mut self, target: usize, stat: Option<Stat>, now: Instant) -> Decision {
        let t = &mut self.targets[target];
        if stat.is_some_and(|s| s.is_dir()) {
            t.changes += 1;
        }
        t.dirty = Some(stat);
        self.deadline = Some(now + self.settle);
        if self.checking.take().is_some() {
            info!(
                path = %t.path.display(),
                "a watched path changed during --check-cmd; the check starts over once it settles"
            );
            Decision::CancelCheck
        } else {
            Decision::Nothing
        }
    }

    /// Time passed. Once the settle window has passed, `sample` is called for every target and
    /// the change is decided.
    pub fn tick(
        &mut self,
        now: Instant,
        mut sample: impl FnMut(&Path) -> Option<Stat>,
    ) -> Decision {
        match self.deadline {
            Some(deadline) if deadline <= now => {}
            _ => return Decision::Nothing,
        }
        let mut unstable = None;
        let mut version = Vec::with_capacity(self.targets.len());
        for t in &mut self.targets {
            let stat = sample(&t.path);
            if let Some(at_event) = t.dirty {
                if at_event != stat {
                    // Changed without an event since the last one: wait another window.
                    t.dirty = Some(stat);
                    unstable.get_or_insert_with(|| t.path.clone());
                }
            }
            version.push(PathVersion {
                stat,
                changes: t.changes,
            });
        }
        if let Some(path) = unstable {
            debug!(path = %path.display(), "still changing; waiting for it to settle");
            self.deadline = Some(now + self.settle);
            return Decision::Nothing;
        }
        self.deadline = None;
        for t in &mut self.targets {
            t.dirty = None;
        }
        self.decide(version)
    }

    fn decide(&mut self, version: Version) -> Decision {
        let changed: Vec<usize> = (0..self.targets.len())
            .filter(|&i| version[i] != self.running[i])
            .collect();
        let Some(&first) = changed.first() else {
            debug!("the watched paths are as the serving generation found them; no reload");
            return Decision::Nothing;
        };
        let name = |i: usize| self.targets[i].path.display();
        if let Some((_, why)) = self.failed.iter().find(|(v, _)| *v == version) {
            info!(
                path = %name(first),
                reason = %why,
                "not reloading: these files failed before; waiting for the next change"
            );
            return Decision::Nothing;
        }
        let program = changed.iter().copied().find(|&i| self.targets[i].program);
        if let Some(p) = program {
            let problem = match version[p].stat {
                None => Some("it does not exist"),
                Some(s) if !s.is_file() => Some("it is not a regular file"),
                Some(s) if !s.is_executable() => Some("it is not executable"),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                warn!(
                    path = %name(p),
                    reason = %format!("{problem}; the old generation keeps serving"),
                    "not reloading: the program is not an executable file"
                );
                self.remember_failure(version, format!("the program was not usable ({problem})"));
                return Decision::Nothing;
            }
        }
        let Some(path) =
            program.or_else(|| changed.iter().copied().find(|&i| version[i].stat.is_some()))
        else {
            info!(
                path = %name(first),
                "not reloading: the changed path was removed; waiting for it to reappear"
            );
            return Decision::Nothing;
        };
        let path = self.targets[path].path.clone();
        if self.has_check {
            self.checking = Some((version, path));
            Decision::RunCheck
        } else {
            Decision::Reload(path)
        }
    }

    /// The check asked for with [`Decision::RunCheck`] ended: `Ok` if it passed, else why not.
    pub fn check_finished(&mut self, result: Result<(), String>) -> Decision {
        let Some((version, path)) = self.checking.take() else {
            return Decision::Nothing; // cancelled: a newer change is settling
        };
        match result {
            Ok(()) => Decision::Reload(path),
            Err(why) => {
                self.remember_failure(version, format!("--check-cmd failed ({why})"));
                Decision::Nothing
            }
        }
    }

    /// Generation `generation` is being spawned now; `sample` gives the fingerprints it starts
    /// from.
    pub fn spawning(&mut self, generation: u64, mut sample: impl FnMut(&Path) -> Option<Stat>) {
        let version = self
            .targets
            .iter()
            .map(|t| PathVersion {
                stat: sample(&t.path),
                changes: t.changes,
            })
            .collect();
        if self.spawned.len() == REMEMBERED_SPAWNS {
            self.spawned.pop_front();
        }
        self.spawned.push_back((generation, version));
    }

    /// The reload that started `generation` succeeded (`ok`) or failed.
    pub fn reload_outcome(&mut self, generation: u64, ok: bool) {
        let Some(i) = self.spawned.iter().position(|(g, _)| *g == generation) else {
            return;
        };
        let (_, version) = self.spawned.remove(i).expect("index found above");
        // Generations before it can have no outcome any more.
        self.spawned.retain(|(g, _)| *g > generation);
        if ok {
            self.running = version;
        } else {
            self.remember_failure(
                version,
                format!("the reload to generation {generation} failed"),
            );
        }
    }

    fn remember_failure(&mut self, version: Version, why: String) {
        if self.failed.iter().any(|(v, _)| *v == version) {
            return;
        }
        if self.failed.len() == REMEMBERED_FAILURES {
            self.failed.pop_front();
        }
        self.failed.push_back((version, why));
    }
}

// ---------------------------------------------------------------------------------------------
// Where to watch

/// One inotify watch for one path, and what to look for with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// What to watch (resolved: no symlinks in it): a directory, for its entry `name`; or, with
    /// `name` `None`, the watched file itself or every entry of the watched directory.
    pub path: PathBuf,
    /// The directory entry that matters, or `None` (see `path`).
    pub name: Option<OsString>,
    /// Whether writes and metadata changes matter too, not only names appearing, disappearing
    /// or being replaced.
    pub content: bool,
}

/// Resolves `path` (absolute) as the kernel would, and returns what to watch so that any change
/// of what `path` names is seen: the final name's directory (for that name being created,
/// deleted or replaced), the file or directory it names (for writes, metadata, and a
/// directory's entries), each directory holding a symlink met on the way, and the nearest
/// existing directory when one is missing.
///
/// Directories are watched for names only, and files for their content: a server writing its
/// log next to its binary does not wake the master up at every write.
pub fn plan(path: &Path) -> Vec<Spot> {
    let mut spots = Vec::new();
    let mut dir = PathBuf::from("/");
    let mut rest = names(path);
    let mut links = 0;
    while let Some(name) = rest.pop_front() {
        if name == ".." {
            // `dir` holds no symlink, so its parent is the real one.
            dir.pop();
            continue;
        }
        let here = dir.join(&name);
        let last = rest.is_empty();
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                spots.push(Spot {
                    path: dir.clone(),
                    name: Some(name),
                    content: false,
                });
                links += 1;
                let target = match fs::read_link(&here) {
                    Ok(t) if links <= 40 => t,
                    _ => break, // a loop, or it changed under us: the next event re-plans
                };
                if target.is_absolute() {
                    dir = PathBuf::from("/");
                }
                for n in names(&target).into_iter().rev() {
                    rest.push_front(n);
                }
            }
            Ok(m) if m.is_dir() && !last => dir = here,
            Ok(_) => {
                // The final name (or a file where a directory was expected), and what it is.
                spots.push(Spot {
                    path: dir.clone(),
                    name: Some(name),
                    content: false,
                });
                spots.push(Spot {
                    path: here,
                    name: None,
                    content: true,
                });
                break;
            }
            Err(_) => {
                // Missing: watch the nearest existing directory for it to appear.
                spots.push(Spot {
                    path: dir.clone(),
                    name: Some(name),
                    content: false,
                });
                break;
            }
        }
    }
    spots
}

fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn structure_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

fn content_mask() -> AddWatchFlags {
    structure_mask()
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
}

fn self_gone_mask() -> AddWatchFlags {
    AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_IGNORED
        | AddWatchFlags::IN_UNMOUNT
}

fn names_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
}

// ---------------------------------------------------------------------------------------------
// The driver

struct Interest {
    target: usize,
    name: Option<OsString>,
    content: bool,
}

struct Watched {
    path: PathBuf,
    interests: Vec<Interest>,
}

struct RunningCheck {
    pid: Pid,
    kill_at: Instant,
    /// A newer change made its result irrelevant (it was killed).
    cancelled: bool,
    /// It ran past `--check-timeout` and was killed.
    timed_out: bool,
}

/// The file watcher the runtime drives: one inotify fd for its `poll` set, a deadline, and a
/// few hooks (see [`crate::runtime`]).
pub struct Watcher {
    inotify: Inotify,
    core: Debounce,
    watches: HashMap<WatchDescriptor, Watched>,
    check: Option<CheckCommand>,
    /// How children are started (`--user`, `--chdir`, ...): the check is started the same way.
    options: SpawnOptions,
    program: PathBuf,
    checks: Vec<RunningCheck>,
    /// Checks reaped and not yet looked at.
    finished: Vec<(RunningCheck, ExitStatus)>,
}

impl Watcher {
    /// Starts watching what `config` asks for; `program` is the program as resolved at startup
    /// (watched with `--watch`, and passed to `--check-cmd` as `RELAUNCH_PROGRAM`); `options`
    /// are the server's, which `--check-cmd` is started with too.
    pub fn new(
        config: &WatchConfig,
        program: &Path,
        options: &SpawnOptions,
    ) -> anyhow::Result<Watcher> {
        let absolute =
            |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {p:?}"));
        let program = absolute(program)?;
        let mut targets = Vec::new();
        if config.program {
            targets.push((program.clone(), true));
        }
        for p in &config.paths {
            targets.push((absolute(p)?, false));
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| match e {
                Errno::EMFILE => anyhow!(
                    "creating an inotify instance: {} (raise the sysctl fs.inotify.max_user_instances)",
                    e.desc()
                ),
                e => anyhow!("creating an inotify instance: {}", e.desc()),
            })?;
        let core = Debounce::new(config.settle, targets, config.check.is_some(), Stat::of);
        let mut watcher = Watcher {
            inotify,
            core,
            watches: HashMap::new(),
            check: config.check.clone(),
            options: options.clone(),
            program,
            checks: Vec::new(),
            finished: Vec::new(),
        };
        watcher.rebuild().map_err(|e| anyhow!(e))?;
        if config.settle >= Duration::from_secs(60) {
            warn!(
                settle = ?config.settle,
                "--watch-settle is in seconds unless it has a unit: write 500ms for milliseconds"
            );
        }
        for (i, path) in watcher.core.paths().enumerate() {
            info!(
                path = %path.display(),
                kind = %if config.program && i == 0 { "program" } else { "path" },
                settle = ?config.settle,
                "watching"
            );
        }
        Ok(watcher)
    }

    /// When [`Watcher::poll`] has something to do even without an event: the end of a settle
    /// window, or a check's timeout. `None` when idle.
    pub fn next_deadline(&self) -> Option<Instant> {
        let checks = self
            .checks
            .iter()
            .filter(|c| !c.cancelled && !c.timed_out)
            .map(|c| c.kill_at);
        checks.chain(self.core.next_deadline()).min()
    }

    /// Takes the exit of a process the runtime reaped, if it is a check command of ours.
    /// Returns false for any other process (the supervisor's business).
    pub fn reaped(&mut self, pid: Pid, status: ExitStatus) -> bool {
        match self.checks.iter().position(|c| c.pid == pid) {
            Some(i) => {
                let check = self.checks.remove(i);
                self.finished.push((check, status));
                true
            }
            None => false,
        }
    }

    /// Handles everything that happened: inotify events, finished checks, timeouts and the
    /// end of a settle window. Returns the reload to ask the supervisor for, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Trigger> {
        let mut reload = None;
        self.read_events(now, &mut reload);
        for (check, status) in std::mem::take(&mut self.finished) {
            self.check_ended(check, status, now, &mut reload);
        }
        for check in &mut self.checks {
            if !check.cancelled && !check.timed_out && check.kill_at <= now {
                check.timed_out = true;
                warn!(pid = %check.pid, "--check-cmd timed out; killing it");
                kill_group(check.pid);
            }
        }
        let due = self.core.next_deadline().filter(|d| *d <= now);
        let decision = self.core.tick(now, Stat::of);
        if let Some(due) = due {
            debug!(
                late_us = now.saturating_duration_since(due).as_micros() as u64,
                took_us = now.elapsed().as_micros() as u64,
                decision = ?decision,
                "settle window over"
            );
        }
        self.apply(decision, now, &mut reload);
        reload
    }

    /// Generation `generation` is about to be spawned: remembers the files it starts from.
    pub fn spawning(&mut self, generation: u64) {
        self.core.spawning(generation, Stat::of);
    }

    /// The reload attempt that started `generation` ended
    /// ([`Action::ReloadDone`](crate::supervisor::Action::ReloadDone)).
    pub fn reload_done(&mut self, generation: u64, ok: bool) {
        self.core.reload_outcome(generation, ok);
    }

    fn apply(&mut self, decision: Decision, now: Instant, reload: &mut Option<Trigger>) {
        match decision {
            Decision::Nothing => {}
            Decision::CancelCheck => {
                for check in &mut self.checks {
                    if !check.cancelled {
                        check.cancelled = true;
                        kill_group(check.pid);
                    }
                }
                for (check, _) in &mut self.finished {
                    check.cancelled = true;
                }
            }
            Decision::RunCheck => self.start_check(now, reload),
            Decision::Reload(path) => *reload = Some(Trigger::Watch { path }),
        }
    }

    fn read_events(&mut self, now: Instant, reload: &mut Option<Trigger>) {
        let mut touched = BTreeSet::new();
        let mut replan = false;
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    for ev in events {
                        self.classify(
                            ev.wd,
                            ev.mask,
                            ev.name.as_deref(),
                            &mut touched,
                            &mut replan,
                        );
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    warn!(error = %e.desc(), "reading inotify events");
                    break;
                }
            }
        }
        if replan {
            if let Err(e) = self.rebuild() {
                warn!(error = %e, "cannot watch a path; changes there will be missed until the next event");
            }
        }
        for target in touched {
            let path = self
                .core
                .paths()
                .nth(target)
                .expect("targets are indexed")
                .to_owned();
            let stat = Stat::of(&path);
            debug!(path = %path.display(), exists = stat.is_some(), "changed");
            let decision = self.core.changed(target, stat, now);
            self.apply(decision, now, reload);
        }
    }

    fn classify(
        &self,
        wd: WatchDescriptor,
        mask: AddWatchFlags,
        name: Option<&OsStr>,
        touched: &mut BTreeSet<usize>,
        replan: &mut bool,
    ) {
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            warn!("inotify queue overflow; checking every watched path");
            touched.extend(0..self.core.paths().count());
            *replan = true;
            return;
        }
        let Some(watched) = self.watches.get(&wd) else {
            return; // a watch removed since
        };
        if mask.intersects(self_gone_mask()) {
            debug!(path = %watched.path.display(), "watched file or directory gone or moved");
            touched.extend(watched.interests.iter().map(|i| i.target));
            *replan = true;
            return;
        }
        let structural = mask.intersects(names_mask());
        for interest in &watched.interests {
            let matches = match (&interest.name, name) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            };
            if matches && (interest.content || structural) {
                touched.insert(interest.target);
                if structural && interest.name.is_some() {
                    *replan = true;
                }
            }
        }
    }

    /// Resolves every watched path again and points the inotify watches at the result.
    fn rebuild(&mut self) -> Result<(), String> {
        // A directory can vanish between resolving and watching it: resolve again then.
        for _ in 0..3 {
            let mut wanted: BTreeMap<PathBuf, (AddWatchFlags, Vec<Interest>)> = BTreeMap::new();
            for (target, path) in self.core.paths().enumerate() {
                for spot in plan(path) {
                    let entry = wanted
                        .entry(spot.path)
                        .or_insert_with(|| (AddWatchFlags::empty(), Vec::new()));
                    entry.0 |= if spot.content {
                        content_mask()
                    } else {
                        structure_mask()
                    };
                    entry.1.push(Interest {
                        target,
                        name: spot.name,
                        content: spot.content,
                    });
                }
            }
            let mut fresh: HashMap<WatchDescriptor, Watched> = HashMap::new();
            let mut vanished = false;
            let mut error = None;
            for (path, (mask, interests)) in wanted {
                let flags = mask | AddWatchFlags::IN_DONT_FOLLOW;
                match self.inotify.add_watch(&path, flags) {
                    Ok(wd) => fresh
                        .entry(wd)
                        .or_insert_with(|| Watched {
                            path,
                            interests: Vec::new(),
                        })
                        .interests
                        .extend(interests),
                    Err(Errno::ENOENT | Errno::ENOTDIR) => vanished = true,
                    Err(e) => {
                        let hint = if e == Errno::ENOSPC {
                            " (raise the sysctl fs.inotify.max_user_watches)"
                        } else {
                            ""
                        };
                        error.get_or_insert(format!(
                            "watching {}: {}{hint}",
                            path.display(),
                            e.desc()
                        ));
                    }
                }
            }
            for wd in self.watches.keys() {
                if !fresh.contains_key(wd) {
                    // EINVAL when the kernel already dropped it (directory deleted): fine.
                    let _ = self.inotify.rm_watch(*wd);
                }
            }
            self.watches = fresh;
            if let Some(e) = error {
                return Err(e);
            }
            if !vanished {
                return Ok(());
            }
        }
        debug!("watched directories keep changing; the next event re-plans");
        Ok(())
    }

    fn start_check(&mut self, now: Instant, reload: &mut Option<Trigger>) {
        let Some(check) = &self.check else {
            let d = self.core.check_finished(Ok(()));
            return self.apply(d, now, reload);
        };
        // Started like a generation of the server (same user, groups, directory, limits,
        // environment rules, own process group, PDEATHSIG), without the sockets; stdin from
        // /dev/null, stdout onto relaunch's stderr.
        let mut script = OsString::from("exec </dev/null\n");
        script.push(&check.command);
        let command = Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script],
        };
        let extras = Extras {
            env: vec![("RELAUNCH_PROGRAM".into(), self.program.clone().into())],
            stdout: Some(2),
            ..Extras::default()
        };
        match spawn::spawn(&command, &[], &extras, &self.options) {
            Ok((pid, _)) => {
                // Reaped by the runtime's waitpid loop and handed back through `reaped`.
                info!(pid = %pid, command = ?check.command, "running --check-cmd");
                self.checks.push(RunningCheck {
                    pid,
                    kill_at: now + check.timeout,
                    cancelled: false,
                    timed_out: false,
                });
            }
            Err(e) => {
                let why = format!("cannot run --check-cmd: {e}");
                warn!(reason = %format!("{why}; the old generation keeps serving"), "check failed");
                let d = self.core.check_finished(Err(why));
                self.apply(d, now, reload);
            }
        }
    }

    fn check_ended(
        &mut self,
        check: RunningCheck,
        status: ExitStatus,
        now: Instant,
        reload: &mut Option<Trigger>,
    ) {
        if check.cancelled {
            debug!(pid = %check.pid, status = %status, "cancelled --check-cmd ended");
            return;
        }
        let result = if check.timed_out {
            let timeout = self.check.as_ref().map_or(Duration::ZERO, |c| c.timeout);
            Err(format!("timed out after {timeout:?}"))
        } else if status == ExitStatus::Code(0) {
            Ok(())
        } else {
            Err(status.to_string())
        };
        match &result {
            Ok(()) => info!(pid = %check.pid, "check passed"),
            Err(why) => warn!(
                pid = %check.pid,
                reason = %format!("--check-cmd {why}; not reloading, the old generation keeps serving"),
                "check failed"
            ),
        }
        let d = self.core.check_finished(result);
        self.apply(d, now, reload);
    }
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // relaunch is exiting: a check still running would outlive it.
        for check in &self.checks {
            kill_group(check.pid);
        }
    }
}

/// SIGKILL to a check's process group (the shell and whatever it started).
fn kill_group(pid: Pid) {
    match kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(pid = %pid, error = %e.desc(), "cannot kill --check-cmd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap as Map;

    const SETTLE: Duration = Duration::from_millis(500);

    fn stat(ino: u64, size: u64, mtime: i64, mode: u32) -> Option<Stat> {
        Some(Stat {
            dev: 1,
            ino,
            size,
            mtime: (mtime, 0),
            mode,
        })
    }
    const EXE: u32 = libc::S_IFREG | 0o755;
    const DATA: u32 = libc::S_IFREG | 0o644;
    const DIR: u32 = libc::S_IFDIR | 0o755;

    /// A fake file system and clock around a `Debounce`.
    struct Sim {
        core: Debounce,
        files: RefCell<Map<PathBuf, Option<Stat>>>,
        t0: Instant,
        ms: u64,
    }

    impl Sim {
        /// The program `/app/server` (watched) and `/app/conf` (a data file).
        fn new(check: bool) -> Sim {
            let files = RefCell::new(Map::from([
                (PathBuf::from("/app/server"), stat(1, 100, 10, EXE)),
                (PathBuf::from("/app/conf"), stat(2, 10, 10, DATA)),
            ]));
            let core = Debounce::new(
                SETTLE,
                vec![("/app/server".into(), true), ("/app/conf".into(), false)],
                check,
                |p| files.borrow()[p],
            );
            Sim {
                core,
                files,
                t0: Instant::now(),
                ms: 0,
            }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        /// At `ms`, `path` becomes `stat` and an event for it arrives.
        fn write(&mut self, ms: u64, target: usize, st: Option<Stat>) -> Decision {
            self.ms = ms;
            let path = self.core.targets[target].path.clone();
            self.files.borrow_mut().insert(path, st);
            self.core.changed(target, st, self.now())
        }

        /// Changes a file without any event.
        fn silently(&mut self, target: usize, st: Option<Stat>) {
            let path = self.core.targets[target].path.clone();
            self.files.borrow_mut().insert(path, st);
        }

        fn tick(&mut self, ms: u64) -> Decision {
            self.ms = ms;
            let now = self.now();
            let files = &self.files;
            self.core.tick(now, |p| files.borrow()[p])
        }

        /// Spawns `generation` from the files as they are, and reports its outcome.
        fn reload_ends(&mut self, generation: u64, ok: bool) {
            let files = &self.files;
            self.core.spawning(generation, |p| files.borrow()[p]);
            self.core.reload_outcome(generation, ok);
        }

        fn deadline_ms(&self) -> Option<u64> {
            self.core
                .next_deadline()
                .map(|d| (d - self.t0).as_millis() as u64)
        }
    }

    fn reload_of(path: &str) -> Decision {
        Decision::Reload(PathBuf::from(path))
    }

    #[test]
    fn idle_means_no_deadline() {
        let mut s = Sim::new(false);
        assert_eq!(s.deadline_ms(), None);
        assert_eq!(s.tick(10_000), Decision::Nothing);
    }

    #[test]
    fn a_burst_of_events_is_one_reload_a_settle_after_the_last() {
        let mut s = Sim::new(false);
        for i in 0..50 {
            assert_eq!(
                s.write(i * 10, 0, stat(1, 100, 100 + i as i64, EXE)),
                Decision::Nothing
            );
            assert_eq!(s.deadline_ms(), Some(i * 10 + 500));
        }
        // Last event at 490 ms: nothing before 990 ms.
        assert_eq!(s.tick(989), Decision::Nothing);
        assert_eq!(s.tick(990), reload_of("/app/server"));
        assert_eq!(s.deadline_ms(), None);
        assert_eq!(s.tick(5000), Decision::Nothing, "exactly one");
    }

    #[test]
    fn a_file_that_changes_without_an_event_settles_again() {
        let mut s = Sim::new(false);
        s.write(0, 0, stat(1, 50, 11, EXE));
        s.silently(0, stat(1, 100, 12, EXE)); // e.g. written through a mapping
        assert_eq!(s.tick(500), Decision::Nothing);
        assert_eq!(s.deadline_ms(), Some(1000), "another window");
        assert_eq!(s.tick(1000), reload_of("/app/server"));
    }

    #[test]
    fn a_rename_in_one_step_reloads_one_settle_later() {
        let mut s = Sim::new(false);
        s.write(100, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(599), Decision::Nothing);
        assert_eq!(s.tick(600), reload_of("/app/server"));
    }

    #[test]
    fn the_program_must_be_an_executable_regular_file() {
        for (st, why) in [
            (None, "missing"),
            (stat(7, 100, 20, DATA), "not executable"),
            (stat(7, 100, 20, DIR), "a directory"),
        ] {
            let mut s = Sim::new(false);
            s.write(0, 0, st);
            assert_eq!(s.tick(500), Decision::Nothing, "{why}");
            // The same state again (a stray event) is not reconsidered as new.
            s.write(600, 0, st);
            assert_eq!(s.tick(1100), Decision::Nothing, "{why}");
            // chmod +x (or the file appearing) is a new version.
            s.write(1200, 0, stat(7, 100, 20, EXE));
            assert_eq!(s.tick(1700), reload_of("/app/server"), "{why}");
        }
    }

    #[test]
    fn a_version_that_failed_is_not_retried_until_the_next_change() {
        let mut s = Sim::new(false);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), reload_of("/app/server"));
        s.reload_ends(2, false);
        // Stray events on the same files, and a config change back and forth: no retry.
        s.write(1000, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(1500), Decision::Nothing);
        // Touching the broken build makes a new version: tried once more.
        s.write(2000, 0, stat(7, 100, 21, EXE));
        assert_eq!(s.tick(2500), reload_of("/app/server"));
        s.reload_ends(3, false);
        assert_eq!(s.tick(9000), Decision::Nothing);
        // A config fix with the same binary is a new version too (the config may have been
        // what failed).
        s.write(10_000, 1, stat(2, 11, 30, DATA));
        assert_eq!(s.tick(10_500), reload_of("/app/server"));
    }

    #[test]
    fn a_state_equal_to_what_runs_is_no_change() {
        let mut s = Sim::new(false);
        // A symlink swapped away and back within the window: same inode as running.
        s.write(0, 0, stat(9, 1, 1, EXE));
        s.write(100, 0, stat(1, 100, 10, EXE));
        assert_eq!(s.tick(600), Decision::Nothing);
        // A SIGHUP reload already picked up the new build; the settle then finds no change.
        s.write(1000, 0, stat(8, 100, 30, EXE));
        s.reload_ends(2, true);
        assert_eq!(s.tick(1500), Decision::Nothing);
        // And a later change is compared with that new build.
        s.write(2000, 0, stat(8, 100, 31, EXE));
        assert_eq!(s.tick(2500), reload_of("/app/server"));
    }

    #[test]
    fn a_successful_reload_becomes_the_reference() {
        let mut s = Sim::new(false);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), reload_of("/app/server"));
        s.reload_ends(2, true);
        s.write(1000, 0, stat(7, 100, 20, EXE)); // nothing really changed
        assert_eq!(s.tick(1500), Decision::Nothing);
    }

    #[test]
    fn a_removed_data_file_waits_for_it_to_reappear() {
        let mut s = Sim::new(false);
        s.write(0, 1, None);
        assert_eq!(s.tick(500), Decision::Nothing);
        s.write(1000, 1, stat(3, 12, 40, DATA));
        assert_eq!(s.tick(1500), reload_of("/app/conf"));
    }

    #[test]
    fn the_program_is_named_when_it_is_among_the_changes() {
        let mut s = Sim::new(false);
        s.write(0, 1, stat(2, 11, 30, DATA));
        s.write(10, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(510), reload_of("/app/server"));
    }

    #[test]
    fn the_check_gates_the_reload_and_its_failure_is_remembered() {
        let mut s = Sim::new(true);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), Decision::RunCheck);
        assert!(s.core.is_checking());
        assert_eq!(
            s.core.check_finished(Err("exit code 1".into())),
            Decision::Nothing
        );
        s.write(1000, 0, stat(7, 100, 20, EXE));
        assert_eq!(
            s.tick(1500),
            Decision::Nothing,
            "no retry of a rejected version"
        );
        s.write(2000, 0, stat(8, 100, 21, EXE));
        assert_eq!(s.tick(2500), Decision::RunCheck);
        assert_eq!(s.core.check_finished(Ok(())), reload_of("/app/server"));
    }

    #[test]
    fn a_change_during_the_check_cancels_it_and_starts_over() {
        let mut s = Sim::new(true);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), Decision::RunCheck);
        assert_eq!(
            s.write(700, 0, stat(8, 100, 21, EXE)),
            Decision::CancelCheck
        );
        assert!(!s.core.is_checking());
        // The old check's result no longer counts.
        assert_eq!(s.core.check_finished(Ok(())), Decision::Nothing);
        assert_eq!(s.tick(1200), Decision::RunCheck);
        assert_eq!(s.core.check_finished(Ok(())), reload_of("/app/server"));
    }

    #[test]
    fn changes_inside_a_watched_directory_are_changes() {
        let files = RefCell::new(Map::from([(PathBuf::from("/rel"), stat(5, 4096, 1, DIR))]));
        let mut core = Debounce::new(SETTLE, vec![("/rel".into(), false)], false, |p| {
            files.borrow()[p]
        });
        let t0 = Instant::now();
        // A file inside is written in place: the directory's own stat does not change.
        core.changed(0, stat(5, 4096, 1, DIR), t0);
        let d = core.tick(t0 + SETTLE, |p| files.borrow()[p]);
        assert_eq!(d, Decision::Reload("/rel".into()));
    }

    #[test]
    fn outcomes_of_unknown_or_old_generations_are_ignored() {
        let mut s = Sim::new(false);
        s.reload_ends(2, true);
        s.core.reload_outcome(2, false); // already taken
        s.core.reload_outcome(99, false); // never spawned
        assert!(s.core.failed.is_empty());
    }

    // ---- plan(): which directories get watched --------------------------------------------

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p = std::env::temp_dir()
                .join(format!("relaunch-watch-unit-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Tmp(fs::canonicalize(&p).unwrap())
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn spot(path: &Path, name: Option<&str>, content: bool) -> Spot {
        Spot {
            path: path.to_owned(),
            name: name.map(OsString::from),
            content,
        }
    }

    #[test]
    fn plan_watches_a_plain_file_and_its_name_in_its_directory() {
        let t = Tmp::new("plain");
        fs::write(t.0.join("server"), b"x").unwrap();
        assert_eq!(
            plan(&t.0.join("server")),
            vec![
                spot(&t.0, Some("server"), false),
                spot(&t.0.join("server"), None, true)
            ]
        );
        // Missing files are fine: watched for appearing.
        assert_eq!(
            plan(&t.0.join("later")),
            vec![spot(&t.0, Some("later"), false)]
        );
    }

    #[test]
    fn plan_follows_a_capistrano_symlink_chain() {
        let t = Tmp::new("chain");
        let rel = t.0.join("releases/2/bin");
        fs::create_dir_all(&rel).unwrap();
        fs::write(rel.join("server"), b"x").unwrap();
        std::os::unix::fs::symlink("releases/2", t.0.join("current")).unwrap();
        // The program itself is a symlink too, in another directory.
        fs::create_dir(t.0.join("bin")).unwrap();
        std::os::unix::fs::symlink("../current/bin/server", t.0.join("bin/app")).unwrap();
        assert_eq!(
            plan(&t.0.join("bin/app")),
            vec![
                spot(&t.0.join("bin"), Some("app"), false),
                spot(&t.0, Some("current"), false),
                spot(&rel, Some("server"), false),
                spot(&rel.join("server"), None, true),
            ]
        );
    }

    #[test]
    fn plan_watches_the_nearest_existing_directory_of_a_missing_one() {
        let t = Tmp::new("missing");
        assert_eq!(
            plan(&t.0.join("conf/app.toml")),
            vec![spot(&t.0, Some("conf"), false)]
        );
        fs::create_dir(t.0.join("conf")).unwrap();
        assert_eq!(
            plan(&t.0.join("conf/app.toml")),
            vec![spot(&t.0.join("conf"), Some("app.toml"), false)]
        );
    }

    #[test]
    fn plan_watches_a_directory_and_its_entries() {
        let t = Tmp::new("dir");
        fs::create_dir(t.0.join("release")).unwrap();
        assert_eq!(
            plan(&t.0.join("release")),
            vec![
                spot(&t.0, Some("release"), false),
                spot(&t.0.join("release"), None, true)
            ]
        );
    }

    #[test]
    fn plan_stops_at_a_symlink_loop() {
        let t = Tmp::new("loop");
        std::os::unix::fs::symlink("b", t.0.join("a")).unwrap();
        std::os::unix::fs::symlink("a", t.0.join("b")).unwrap();
        let spots = plan(&t.0.join("a"));
        assert!(spots.len() <= 41, "{}", spots.len());
        assert!(spots.iter().all(|s| s.path == t.0));
    }
}
