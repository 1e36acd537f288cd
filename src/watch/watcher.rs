//! The driver: one inotify fd in the master's poll set, the `--check-cmd` processes, and the
//! [`Debounce`] state machine they feed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::command::Command;
use crate::environment::Environment;
use crate::poll::{Source, SourceId};
use crate::process::ProcessOptions;
use crate::supervisor::{ExitStatus, Trigger};
use crate::sys::spawn::{self, Extras, SpawnOptions};

use super::debounce::{Debounce, Decision, Stat};
use super::plan::plan;
use super::plan::{content_mask, names_mask, self_gone_mask, structure_mask};
use super::{CheckCommand, WatchConfig};

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
/// few hooks (see the runtime).
pub struct Watcher {
    inotify: Inotify,
    /// The inotify fd's id in the master's wait (it never changes).
    id: SourceId,
    core: Debounce,
    watches: HashMap<WatchDescriptor, Watched>,
    check: Option<CheckCommand>,
    /// How children are started (`--user`, `--chdir`, ...): the check is started the same way.
    options: SpawnOptions,
    /// The server's environment options (`--env`, `--env-file`, `--clear-env`): the check's
    /// environment follows the same rules.
    process: ProcessOptions,
    program: PathBuf,
    checks: Vec<RunningCheck>,
    /// Checks reaped and not yet looked at.
    finished: Vec<(RunningCheck, ExitStatus)>,
}

impl Watcher {
    /// Starts watching what `config` asks for; `program` is the program as resolved at startup
    /// (watched with `--watch`, and passed to `--check-cmd` as `RELAUNCH_PROGRAM`); `options`
    /// and `process` are the server's, which `--check-cmd` is started with too.
    pub fn new(
        config: &WatchConfig,
        program: &Path,
        options: &SpawnOptions,
        process: &ProcessOptions,
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
            id: SourceId::new(),
            core,
            watches: HashMap::new(),
            check: config.check.clone(),
            options: options.clone(),
            process: process.clone(),
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
    /// ([`Report::ReloadEnded`](crate::supervisor::Report::ReloadEnded)).
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
        let env = Environment::of_program(&self.process).map(|mut env| {
            env.set("RELAUNCH_PROGRAM", self.program.clone());
            env.into_vars()
        });
        let started = env.map_err(|e| e.to_string()).and_then(|env| {
            let extras = Extras {
                env,
                stdout: Some(2),
                ..Extras::default()
            };
            spawn::spawn(&command, &[], &extras, &self.options).map_err(|e| e.to_string())
        });
        match started {
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

impl Source for Watcher {
    fn poll_id(&self) -> SourceId {
        self.id
    }
    fn poll_fd(&self) -> BorrowedFd<'_> {
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
