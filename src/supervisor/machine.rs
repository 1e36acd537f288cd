use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use super::backoff::failure_code;
use super::events::{
    Action, Child, Event, ExitStatus, Phase, ProgramState, ReloadFailure, Report, SpawnCause,
    SpawnFailure, Step, Trigger,
};
use super::policy::Restarts;
use super::settings::Settings;
use crate::notify::Note;

/// What a spawn asked for will be once it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The spawn replaces nothing: first start, a restart after a crash, or a reload while
    /// nothing serves.
    Current,
    /// The spawn is the new generation of a reload, beside the one that serves.
    Pending,
}

/// The reload attempt in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reload {
    /// The generation it starts.
    pub(super) generation: u64,
    /// What asked for it.
    pub(super) trigger: Trigger,
}

/// The supervisor state machine. See the module docs for its rules. The fields are shared
/// with the restart policy (`policy.rs`), which holds the other half of its methods.
#[derive(Debug)]
pub struct Supervisor {
    pub(super) settings: Settings,
    /// The program's state: stored, changed only by the transitions below and in the policy.
    pub(super) state: ProgramState,
    /// Why the state is what it is, for the transition log and status.
    pub(super) reason: String,
    /// The state last reported (and logged); a change is reported once per step segment.
    pub(super) reported_state: Option<ProgramState>,
    pub(super) next_generation: u64,
    /// The generation that serves.
    pub(super) current: Option<Child>,
    /// The new generation of a reload in progress, not yet started.
    pub(super) pending: Option<Child>,
    /// Old generations asked to stop, not yet reaped.
    pub(super) retiring: Vec<Child>,
    /// A spawn asked for and not yet reported: its generation, role and cause.
    pub(super) spawning: Option<(u64, Role, SpawnCause)>,
    /// A restart scheduled after a crash: when, and its generation.
    pub(super) backoff: Option<(Instant, u64)>,
    /// The restart policy's bookkeeping: failed starts and restarts in a row, the crash-loop
    /// window, the jitter's generator, whether the program has served.
    pub(super) restarts: Restarts,
    /// The reload attempt in progress.
    pub(super) reload: Option<Reload>,
    /// A reload asked for while another was in progress.
    pub(super) queued: Option<Trigger>,
    /// Set once a stop was asked for (the state is STOPPING, or stays FATAL).
    pub(super) stopping: bool,
    /// The child whose status becomes the exit code.
    pub(super) exit_pid: Option<Pid>,
    /// Status of the last child that was current.
    pub(super) last_status: Option<ExitStatus>,
    /// Whether any child was ever spawned (a first spawn that fails ends the master).
    pub(super) ever_spawned: bool,
    /// Set once [`Action::Exit`] was returned: nothing more happens.
    pub(super) done: bool,
    /// What happened during the current step, handed out with its actions.
    pub(super) reports: Vec<Report>,
    /// This supervisor's worker index in its [`Fleet`](super::Fleet) (0 alone), carried by
    /// its spawns.
    pub(super) worker: usize,
    /// Set by the fleet during an all-at-once reload: a reload's new child that is up waits
    /// here, not promoted, until every worker's is (the fleet clears it).
    pub(super) hold: bool,
    /// Set while held: the new child is up and waits for the fleet (it has no deadline).
    pub(super) held_up: bool,
    /// Set by the fleet: the generation number every new child of this worker gets (a
    /// worker's restart stays in its generation), instead of counting up.
    pub(super) pinned: Option<u64>,
}

impl Supervisor {
    /// A supervisor that has not started anything yet; call [`Supervisor::start`]. Its jitter
    /// is drawn from a fixed seed (deterministic, for tests); the runtime uses
    /// [`Supervisor::with_seed`].
    #[cfg(test)]
    pub fn new(settings: Settings) -> Supervisor {
        Supervisor::with_seed(settings, 0x9E37_79B9_7F4A_7C15)
    }

    /// Like [`Supervisor::new`], with the seed of the random backoff jitter. The supervisor
    /// reads no clock and no entropy itself: pass a random seed for real use.
    pub fn with_seed(settings: Settings, seed: u64) -> Supervisor {
        Supervisor {
            settings,
            next_generation: 1,
            current: None,
            pending: None,
            retiring: Vec::new(),
            spawning: None,
            backoff: None,
            restarts: Restarts::new(seed),
            state: ProgramState::Starting,
            reason: String::new(),
            reported_state: None,
            reload: None,
            queued: None,
            stopping: false,
            exit_pid: None,
            last_status: None,
            ever_spawned: false,
            done: false,
            reports: Vec::new(),
            worker: 0,
            hold: false,
            held_up: false,
            pinned: None,
        }
    }

    /// A fresh supervisor for a program started again by name after it stopped: its
    /// generations continue from `previous`'s.
    pub fn after(previous: &Supervisor, seed: u64) -> Supervisor {
        let mut next = Supervisor::with_seed(previous.settings, seed);
        next.next_generation = previous.next_generation;
        next
    }

    /// Whether it has finished ([`Action::Exit`] was returned): nothing more happens.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The first step: spawn generation 1.
    pub fn start(&mut self) -> Step {
        let generation = self.new_generation();
        self.set_state(
            ProgramState::Starting,
            format!("starting generation {generation}"),
        );
        let out = vec![self.spawn(generation, Role::Current, SpawnCause::First)];
        self.log_state();
        Step {
            actions: out,
            reports: std::mem::take(&mut self.reports),
        }
    }

    /// Records what happened, for the [`Step`] being built.
    pub(super) fn report(&mut self, report: Report) {
        self.reports.push(report);
    }

    /// Moves the program to `state`, for `reason`. The change is logged and reported at the
    /// next step boundary ([`Supervisor::log_state`]).
    pub(super) fn set_state(&mut self, state: ProgramState, reason: String) {
        self.state = state;
        self.reason = reason;
    }

    /// The program's state, as supervisord would name it (see [`ProgramState`]).
    pub fn state(&self) -> ProgramState {
        self.state
    }

    /// The state as the old five-flag derivation computed it: the tests check after every
    /// step that the stored state agrees.
    #[cfg(test)]
    pub(super) fn derived_state(&self) -> ProgramState {
        if self.state == ProgramState::Fatal {
            return ProgramState::Fatal;
        }
        if self.stopping {
            return ProgramState::Stopping;
        }
        match &self.current {
            Some(Child {
                phase: Phase::Running,
                ..
            }) => ProgramState::Running,
            Some(_) => ProgramState::Starting,
            None if self.spawning.is_some() || self.pending.is_some() => ProgramState::Starting,
            None if self.backoff.is_some() => ProgramState::Backoff,
            None if self.state == ProgramState::Exited => ProgramState::Exited,
            None => ProgramState::Starting,
        }
    }

    /// Why the program is in its [`state`](Supervisor::state): the event that put it there,
    /// e.g. `generation 3 exited with exit code 1 before it was up (start failure 2 of 4)`.
    pub fn state_reason(&self) -> &str {
        &self.reason
    }

    /// Consecutive failed starts so far (reset when a generation counts as started, and by a
    /// reload). Before the program has served, it is FATAL once this exceeds `start_retries`;
    /// after, this only counts.
    pub fn start_failures(&self) -> u32 {
        self.restarts.failures
    }

    /// Automatic restarts in a row since a generation last counted as started (or since the
    /// last reload), counting the one scheduled: in BACKOFF, the number of the coming attempt.
    /// 0 when none was needed.
    pub fn restart_attempt(&self) -> u32 {
        self.restarts.backoff_step
    }

    /// Whether a generation ever counted as started (was RUNNING). From then on, failed
    /// restarts are retried with backoff for as long as it takes, and only `max_restarts`
    /// makes the program FATAL.
    #[cfg(test)]
    pub fn has_served(&self) -> bool {
        self.restarts.served
    }

    /// When the scheduled restart is due, in BACKOFF.
    #[cfg(test)]
    pub fn restart_at(&self) -> Option<Instant> {
        self.backoff.map(|(at, _)| at)
    }

    /// How the last generation that served (or tried to) ended, if one did.
    #[cfg(test)]
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_status
    }

    /// The settings the supervisor runs with.
    #[cfg(test)]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The generation that serves, if any.
    pub fn current(&self) -> Option<&Child> {
        self.current.as_ref()
    }

    /// The new generation of a reload in progress, if any.
    pub fn pending(&self) -> Option<&Child> {
        self.pending.as_ref()
    }

    /// Every live child: current, pending and stopping ones.
    pub fn children(&self) -> impl Iterator<Item = &Child> {
        self.current
            .iter()
            .chain(self.pending.iter())
            .chain(self.retiring.iter())
    }

    /// Whether a restart is scheduled after a crash.
    #[cfg(test)]
    pub fn in_backoff(&self) -> bool {
        self.backoff.is_some()
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// The reload attempt in progress, if any: the generation it started (or is starting), and
    /// what triggered it. Every attempt ends with exactly one [`Report::ReloadEnded`] for that
    /// generation.
    pub fn reloading(&self) -> Option<(u64, &Trigger)> {
        self.reload.as_ref().map(|r| (r.generation, &r.trigger))
    }

    /// Whether a reload is queued to follow the attempt in progress (or the old generation
    /// still stopping). Every request that arrives meanwhile is coalesced into that one
    /// follow-up, which becomes [`Supervisor::reloading`] when it starts.
    pub fn reload_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// The restart scheduled after a crash, if any: when it is due, and its generation.
    pub fn backoff(&self) -> Option<(Instant, u64)> {
        self.backoff
    }

    /// The earliest moment at which [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Held and up (an all-at-once reload): it waits for the fleet, not for a deadline.
        let held = self.hold && self.held_up;
        let starting = self
            .current
            .iter()
            .chain(self.pending.iter().filter(|_| !held))
            .filter_map(|c| match c.phase {
                Phase::Starting { until, .. } => Some(until),
                _ => None,
            });
        let killing = self.retiring.iter().filter_map(|c| match c.phase {
            Phase::Stopping {
                kill_at,
                killed: false,
            } => Some(kill_at),
            _ => None,
        });
        let restart = self
            .backoff
            .filter(|_| self.room_for_restart())
            .map(|(at, _)| at);
        starting.chain(killing).chain(restart).min()
    }

    /// Whether a restart may spawn now without a third live generation (children that failed
    /// to get ready are stopped, not waited for, and may still be exiting).
    fn room_for_restart(&self) -> bool {
        self.spawning.is_none() && self.children().count() < 2
    }

    /// Handles one event at time `now`; returns what to do and what happened, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Step {
        let actions = self.step(event, now);
        Step {
            actions,
            reports: std::mem::take(&mut self.reports),
        }
    }

    fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        match event {
            Event::Reload(trigger) => {
                match &trigger {
                    Trigger::Watch { path } => {
                        info!(trigger = %trigger, path = %path.display(), "reload requested")
                    }
                    _ => info!(trigger = %trigger, "reload requested"),
                }
                self.reload(trigger, &mut out);
            }
            Event::Stop(signal) => self.stop(signal, now, &mut out),
            Event::Forward(signal) => match &self.current {
                Some(c) => {
                    debug!(generation = c.generation, pid = %c.pid, signal = %signal.as_str(), "forwarding signal");
                    out.push(Action::Signal {
                        pid: c.pid,
                        signal,
                        group: false,
                    });
                }
                None => {
                    info!(signal = %signal.as_str(), "no running child to forward the signal to")
                }
            },
            Event::Exited { pid, status } => self.exited(pid, status, now, &mut out),
            Event::Spawned {
                generation, result, ..
            } => self.spawned(generation, result, now, &mut out),
            Event::Notify { pid, note } => self.notified(pid, note, now),
            Event::Tick => {}
        }
        self.log_state();
        self.advance(now, &mut out);
        self.log_state();
        self.start_queued(&mut out);
        self.check_done(&mut out);
        self.log_state();
        out
    }

    /// Logs and reports a change of [`ProgramState`] once, with its reason. Called at the
    /// boundaries of a step's segments, so a state held only within a segment goes unreported.
    pub(super) fn log_state(&mut self) {
        let state = self.state;
        if self.reported_state == Some(state) {
            return;
        }
        let from = self.reported_state;
        self.reported_state = Some(state);
        let (from_name, to) = (from.map_or("-", ProgramState::as_str), state.as_str());
        let reason = &self.reason;
        match state {
            ProgramState::Fatal => {
                error!(from = %from_name, to = %to, reason = %reason, "state changed")
            }
            ProgramState::Backoff | ProgramState::Exited => {
                warn!(from = %from_name, to = %to, reason = %reason, "state changed")
            }
            _ => info!(from = %from_name, to = %to, reason = %reason, "state changed"),
        }
        let reason = reason.clone();
        self.report(Report::StateChanged {
            from,
            to: state,
            reason,
        });
    }

    pub(super) fn new_generation(&mut self) -> u64 {
        if let Some(g) = self.pinned {
            return g;
        }
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    pub(super) fn spawn(&mut self, generation: u64, role: Role, cause: SpawnCause) -> Action {
        self.spawning = Some((generation, role, cause));
        Action::Spawn {
            generation,
            worker: self.worker,
        }
    }

    /// Why a reload cannot start right now, if it cannot: it would make a third live
    /// generation, or a second one that has not started yet.
    fn busy(&self) -> Option<&'static str> {
        if self.pending.is_some() || self.spawning.is_some() {
            Some("a reload is in progress; one more will follow once it ends")
        } else if !self.retiring.is_empty() {
            Some("an old generation is still stopping; the reload follows once it has exited")
        } else if matches!(
            self.current,
            Some(Child {
                phase: Phase::Starting { .. },
                ..
            })
        ) {
            Some("the current generation has not started yet; the reload follows once it has")
        } else {
            None
        }
    }

    fn reload(&mut self, trigger: Trigger, out: &mut Vec<Action>) {
        if self.stopping {
            info!("not reloading: relaunch is stopping");
            return;
        }
        self.report(Report::ReloadRequested {
            trigger: trigger.clone(),
        });
        if let Some(why) = self.busy() {
            info!("reload queued: {why}");
            self.queued = Some(trigger);
            self.report(Report::ReloadQueued);
            return;
        }
        // A reload starts with a clean slate: fresh retry count, backoff and crash-loop window.
        self.restarts.failures = 0;
        self.restarts.backoff_step = 0;
        self.restarts.restart_times.clear();
        let generation = if self.current.is_none() {
            // Nothing serves (crash, backoff, EXITED, FATAL): start the new generation right
            // away as current.
            let generation = match self.backoff.take() {
                Some((_, g)) => g,
                None => self.new_generation(),
            };
            self.set_state(
                ProgramState::Starting,
                format!("reload ({trigger}) starts generation {generation}"),
            );
            out.push(self.spawn(generation, Role::Current, SpawnCause::Reload));
            generation
        } else {
            let generation = self.new_generation();
            out.push(self.spawn(generation, Role::Pending, SpawnCause::Reload));
            generation
        };
        self.report(Report::ReloadStarted {
            generation,
            trigger: trigger.clone(),
        });
        self.reload = Some(Reload {
            generation,
            trigger,
        });
    }

    /// A reload attempt ended (`failure`: how, if it failed): reports it, once.
    pub(super) fn finish_reload(
        &mut self,
        generation: u64,
        failure: Option<ReloadFailure>,
        reason: String,
    ) {
        if self.reload.as_ref().map(|r| r.generation) != Some(generation) {
            return;
        }
        self.reload = None;
        let serving = self.current.as_ref().map(|c| (c.generation, c.pid));
        self.report(Report::ReloadEnded {
            generation,
            failure,
            reason,
            serving,
            follow_up: self.queued.is_some(),
        });
    }

    fn spawned(
        &mut self,
        generation: u64,
        result: Result<Pid, SpawnFailure>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let (role, cause) = match self.spawning.take() {
            Some((g, role, cause)) if g == generation => (role, cause),
            other => {
                error!(generation, expected = ?other, "spawn result for a generation that was not being spawned; ignored");
                self.spawning = other;
                return;
            }
        };
        match &result {
            Ok(pid) => self.report(Report::Spawned {
                generation,
                pid: *pid,
                cause,
            }),
            Err(failure) => self.report(Report::SpawnFailed {
                generation,
                message: failure.message.clone(),
            }),
        }
        match result {
            Ok(pid) => {
                self.ever_spawned = true;
                info!(generation, pid = %pid, "spawned");
                let phase = if self.settings.ready_signal {
                    Phase::Starting {
                        until: now + self.settings.ready_timeout,
                        ready: false,
                    }
                } else {
                    Phase::Starting {
                        until: now + self.settings.start_secs,
                        ready: true,
                    }
                };
                let child = Child {
                    generation,
                    pid,
                    phase,
                    status: None,
                };
                if self.stopping {
                    // A stop arrived between the spawn request and its result (e.g. a reload
                    // and a stop handled in the same wake-up): stop this one too.
                    info!(generation, pid = %pid, "relaunch is stopping; stopping the new child");
                    self.retire(child, now, out);
                    return;
                }
                match role {
                    Role::Current => {
                        self.set_state(
                            ProgramState::Starting,
                            format!("generation {generation} spawned as pid {pid}"),
                        );
                        self.current = Some(child);
                    }
                    Role::Pending => self.pending = Some(child),
                }
            }
            Err(failure) if !self.ever_spawned => {
                error!(generation, reason = %failure.message, "cannot start the server");
                self.last_status = Some(ExitStatus::Code(failure.exit_code));
                self.restarts.failure_code = failure.exit_code;
                self.set_state(
                    ProgramState::Fatal,
                    format!("generation {generation}: {}", failure.message),
                );
                self.exit(failure.exit_code, out);
            }
            Err(failure) => match role {
                Role::Pending => {
                    warn!(
                        generation,
                        reason = %format!("{}; the old generation keeps serving", failure.message),
                        "reload failed"
                    );
                    let why = format!("generation {generation}: {}", failure.message);
                    self.finish_reload(generation, Some(ReloadFailure::Spawn), failure.message);
                    self.after_reload_attempt(now, why, failure.exit_code, out);
                }
                Role::Current => {
                    if self.restarts.served {
                        warn!(generation, reason = %failure.message, "spawn failed");
                    } else {
                        error!(generation, reason = %failure.message, "spawn failed");
                    }
                    let why = format!("generation {generation}: {}", failure.message);
                    self.finish_reload(generation, Some(ReloadFailure::Spawn), failure.message);
                    self.start_failed(now, why, failure.exit_code, out);
                }
            },
        }
    }

    fn notified(&mut self, pid: Pid, note: Note, now: Instant) {
        let settings = self.settings;
        let Some(child) = self
            .current
            .iter_mut()
            .chain(self.pending.iter_mut())
            .chain(self.retiring.iter_mut())
            .find(|c| c.pid == pid)
        else {
            debug!(pid = %pid, "notification for a process that is no longer a generation");
            return;
        };
        if let Some(status) = &note.status {
            info!(generation = child.generation, pid = %pid, status = %status, "status");
            child.status = Some(status.clone());
        }
        if let Some(errno) = note.errno {
            warn!(generation = child.generation, pid = %pid, errno, error = %std::io::Error::from_raw_os_error(errno), "child reports an error");
        }
        if let Some(main) = note.mainpid {
            debug!(generation = child.generation, pid = %pid, mainpid = main, "child reports MAINPID (noted; relaunch keeps supervising the process it started)");
        }
        if note.stopping {
            debug!(generation = child.generation, pid = %pid, "child reports STOPPING=1");
        }
        if note.reloading {
            debug!(generation = child.generation, pid = %pid, "child reports RELOADING=1");
        }
        if let Phase::Starting { until, ready } = &mut child.phase {
            if !*ready && settings.ready_signal {
                if let Some(extra) = note.extend_timeout {
                    let extended = now + extra;
                    if extended > *until {
                        *until = extended;
                        info!(generation = child.generation, pid = %pid, extend_ms = extra.as_millis() as u64, "readiness deadline extended");
                    }
                }
                if note.ready {
                    *ready = true;
                    *until = now + settings.start_secs;
                    info!(generation = child.generation, pid = %pid, "ready");
                }
            }
        }
    }

    fn exited(&mut self, pid: Pid, status: ExitStatus, now: Instant, out: &mut Vec<Action>) {
        if let Some(child) = self.current.take_if(|c| c.pid == pid) {
            self.last_status = Some(status);
            let failed_to_start = matches!(child.phase, Phase::Starting { .. });
            warn!(generation = child.generation, pid = %pid, status = %status, "exited");
            self.report(Report::Exited {
                generation: child.generation,
                pid,
                status,
                expected: false,
            });
            if failed_to_start {
                self.finish_reload(
                    child.generation,
                    Some(ReloadFailure::Exited),
                    format!("exited with {status} before it was up"),
                );
            }
            if let Some(new) = &self.pending {
                info!("the current generation died during a reload; the new one takes over once started");
                // Nothing serves until the new one counts as started.
                let reason = format!(
                    "generation {} {} during the reload; generation {} (pid {}) takes over once it is up",
                    child.generation,
                    status.ended(),
                    new.generation,
                    new.pid
                );
                self.set_state(ProgramState::Starting, reason);
            } else if failed_to_start {
                let why = format!(
                    "generation {} {} before it was up",
                    child.generation,
                    status.ended()
                );
                self.start_failed(now, why, failure_code(status), out);
            } else {
                self.ran_and_exited(now, child.generation, status, out);
            }
        } else if let Some(child) = self.pending.take_if(|c| c.pid == pid) {
            self.report(Report::Exited {
                generation: child.generation,
                pid,
                status,
                expected: false,
            });
            let reason = match &child.status {
                Some(text) => {
                    format!("exited with {status} before it was up (last status: {text})")
                }
                None => format!("exited with {status} before it was up"),
            };
            warn!(
                generation = child.generation,
                pid = %pid,
                reason = %format!("{reason}; the old generation keeps serving"),
                "reload failed"
            );
            let why = format!("generation {} {reason}", child.generation);
            self.finish_reload(child.generation, Some(ReloadFailure::Exited), reason);
            self.after_reload_attempt(now, why, failure_code(status), out);
        } else if let Some(i) = self.retiring.iter().position(|c| c.pid == pid) {
            let child = self.retiring.remove(i);
            self.report(Report::Exited {
                generation: child.generation,
                pid,
                status,
                expected: true,
            });
            if self.exit_pid == Some(pid) {
                self.last_status = Some(status);
            }
            info!(generation = child.generation, pid = %pid, status = %status, "exited");
        } else {
            debug!(pid = %pid, status = %status, "reaped a process that is not one of our generations");
        }
    }

    fn start_queued(&mut self, out: &mut Vec<Action>) {
        if self.stopping || self.done || self.busy().is_some() {
            return;
        }
        if let Some(trigger) = self.queued.take() {
            info!(trigger = %trigger, "starting the queued reload");
            self.reload(trigger, out);
        }
    }

    fn stop(&mut self, signal: Signal, now: Instant, out: &mut Vec<Action>) {
        if self.stopping {
            if signal == Signal::SIGQUIT {
                warn!("SIGQUIT while stopping: killing every child now");
                for child in &mut self.retiring {
                    if let Phase::Stopping { killed, .. } = &mut child.phase {
                        if !*killed {
                            *killed = true;
                            out.push(Action::Signal {
                                pid: child.pid,
                                signal: Signal::SIGKILL,
                                group: self.settings.kill_as_group || self.settings.stop_as_group,
                            });
                        }
                    }
                }
            } else {
                info!(
                    signal = %signal.as_str(),
                    "already stopping; waiting for the children (send SIGQUIT to kill them now)"
                );
            }
            return;
        }
        info!(signal = %signal.as_str(), "shutting down");
        self.reason = format!("{} asked relaunch to stop", signal.as_str());
        self.shutdown(now, out);
    }

    /// Stops every child; the supervisor exits once all are reaped.
    pub(super) fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.stopping = true;
        if self.state != ProgramState::Fatal {
            // FATAL stays FATAL while what is left stops; the reason was set by the caller.
            self.state = ProgramState::Stopping;
        }
        if self.queued.take().is_some() {
            self.report(Report::FollowUpDropped);
        }
        self.backoff = None;
        self.report(Report::Stopping);
        if let Some(generation) = self.reload.as_ref().map(|r| r.generation) {
            self.finish_reload(
                generation,
                Some(ReloadFailure::Stopping),
                "relaunch is stopping".into(),
            );
        }
        self.exit_pid = self.current.as_ref().map(|c| c.pid);
        for child in [self.current.take(), self.pending.take()]
            .into_iter()
            .flatten()
        {
            self.retire(child, now, out);
        }
    }

    pub(super) fn retire(&mut self, mut child: Child, now: Instant, out: &mut Vec<Action>) {
        let signal = self.settings.stop_signal;
        child.phase = Phase::Stopping {
            kill_at: now + self.settings.stop_wait,
            killed: signal == Signal::SIGKILL,
        };
        let group = if signal == Signal::SIGKILL {
            self.settings.kill_as_group || self.settings.stop_as_group
        } else {
            self.settings.stop_as_group
        };
        out.push(Action::Signal {
            pid: child.pid,
            signal,
            group,
        });
        if signal != Signal::SIGKILL && signal != Signal::SIGCONT {
            // A stopped (SIGSTOP'd) child could not act on the signal otherwise.
            out.push(Action::Signal {
                pid: child.pid,
                signal: Signal::SIGCONT,
                group,
            });
        }
        debug!(generation = child.generation, pid = %child.pid, signal = %signal.as_str(), "stopping");
        self.retiring.push(child);
    }

    /// The reason a child that never got ready failed.
    fn not_ready_reason(&self, child: &Child) -> String {
        let mut reason = format!(
            "not ready within --ready-timeout {:?}",
            self.settings.ready_timeout
        );
        if let Some(text) = &child.status {
            reason.push_str(&format!(" (last status: {text})"));
        }
        reason
    }

    /// Acts on every deadline that is due at `now`.
    fn advance(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.done {
            return;
        }
        let due = |c: &Child, want_ready: bool| matches!(c.phase, Phase::Starting { until, ready } if until <= now && ready == want_ready);
        if let Some(new) = self.pending.take_if(|c| due(c, false)) {
            let reason = self.not_ready_reason(&new);
            warn!(
                generation = new.generation,
                pid = %new.pid,
                reason = %format!("{reason}; stopping it, the old generation keeps serving"),
                "reload failed"
            );
            let why = format!("generation {} {reason}", new.generation);
            self.finish_reload(new.generation, Some(ReloadFailure::NotReady), reason);
            self.retire(new, now, out);
            self.after_reload_attempt(now, why, 1, out);
        }
        let hold = self.hold;
        if hold && self.pending.as_ref().is_some_and(|c| due(c, true)) {
            self.held_up = true;
        }
        if let Some(new) = self.pending.take_if(|c| !hold && due(c, true)) {
            self.restarts.started();
            let promoted = Child {
                phase: Phase::Running,
                ..new
            };
            let (generation, pid) = (promoted.generation, promoted.pid);
            match self.current.take() {
                Some(old) => {
                    info!(
                        generation,
                        pid = %pid,
                        old_generation = old.generation,
                        old_pid = %old.pid,
                        "reload complete"
                    );
                    self.retire(old, now, out);
                }
                None => info!(
                    generation,
                    pid = %pid,
                    "reload complete (the old generation had already exited)"
                ),
            }
            self.current = Some(promoted);
            self.set_state(
                ProgramState::Running,
                format!("reload complete: generation {generation} (pid {pid}) serves"),
            );
            self.finish_reload(generation, None, String::new());
            self.report(Report::Ready { generation, pid });
        }
        if let Some(child) = self.current.take_if(|c| due(c, false)) {
            let reason = self.not_ready_reason(&child);
            if self.restarts.served {
                warn!(generation = child.generation, pid = %child.pid, reason = %format!("{reason}; stopping it"), "start failed");
            } else {
                error!(generation = child.generation, pid = %child.pid, reason = %format!("{reason}; stopping it"), "start failed");
            }
            let why = format!("generation {} {reason}", child.generation);
            self.finish_reload(child.generation, Some(ReloadFailure::NotReady), reason);
            self.retire(child, now, out);
            self.start_failed(now, why, 1, out);
        }
        if let Some(child) = self.current.as_mut().filter(|c| due(c, true)) {
            child.phase = Phase::Running;
            self.restarts.started();
            let (generation, pid) = (child.generation, child.pid);
            info!(generation, pid = %pid, "running");
            self.set_state(
                ProgramState::Running,
                format!("generation {generation} (pid {pid}) is up"),
            );
            self.finish_reload(generation, None, String::new());
            self.report(Report::Ready { generation, pid });
        }
        for child in &mut self.retiring {
            if let Phase::Stopping { kill_at, killed } = &mut child.phase {
                if !*killed && *kill_at <= now {
                    *killed = true;
                    warn!(
                        generation = child.generation,
                        pid = %child.pid,
                        "stop timeout, sending SIGKILL"
                    );
                    out.push(Action::Signal {
                        pid: child.pid,
                        signal: Signal::SIGKILL,
                        group: self.settings.kill_as_group || self.settings.stop_as_group,
                    });
                }
            }
        }
        if let Some((at, generation)) = self.backoff {
            if at <= now && self.room_for_restart() {
                self.backoff = None;
                self.set_state(
                    ProgramState::Starting,
                    format!("backoff over: starting generation {generation}"),
                );
                out.push(self.spawn(generation, Role::Current, SpawnCause::Restart));
            }
        }
    }

    fn check_done(&mut self, out: &mut Vec<Action>) {
        if self.stopping
            && !self.done
            && self.current.is_none()
            && self.pending.is_none()
            && self.retiring.is_empty()
            && self.spawning.is_none()
        {
            let code = match self.state {
                ProgramState::Fatal => self.restarts.failure_code,
                _ => self.last_status.map_or(0, ExitStatus::shell_code),
            };
            self.exit(code, out);
        }
    }

    fn exit(&mut self, code: i32, out: &mut Vec<Action>) {
        self.log_state();
        self.done = true;
        info!(code, "exiting");
        out.push(Action::Exit { code });
    }
}
