//! Workers (`--workers N`): one [`Supervisor`] per worker index, run as one program.
//!
//! Each worker index has its own supervisor, so a crashed worker is restarted alone, with its
//! own backoff, retry count and FATAL rule, and the other workers are never touched. The fleet
//! numbers the generations (every worker of generation `g` is spawned with
//! `RELAUNCH_GENERATION=g`; a worker's restart stays in its generation) and runs reloads
//! across the workers:
//!
//! - **all** (`--reload-strategy all`): every worker's supervisor starts its new child at
//!   once and *holds* it once it is up; when all N are up they are released together and the
//!   N old ones are stopped. If any new one fails, every other new one is stopped and the old
//!   ones are left untouched.
//! - **rolling**: the workers are reloaded one after another, a new one started only while
//!   fewer than `workers + max_surge` processes are alive (a worker waiting for its backoff
//!   restart counts as alive). A failure pauses the roll: replaced and old workers keep
//!   serving; the next reload starts over with every worker.
//!
//! The fleet reports one reload attempt per reload (started, then ended with the failing
//! worker's reason), one program state (RUNNING once every worker is up) and one
//! [`Report::Ready`] per generation that is up as a whole; the workers' own spawns, exits and
//! restarts pass through. With one worker, the fleet is its supervisor, exactly.

use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{info, info_span, warn};

use super::events::{
    Action, Child, Event, Phase, ProgramState, ReloadFailure, Report, Step, Trigger,
};
use super::machine::Supervisor;
use super::settings::{ReloadStrategy, Settings};

/// Where a worker is in the fleet's reload in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not started yet (rolling).
    Todo,
    /// Its supervisor is reloading it.
    Active,
    /// Its new child took over.
    Done,
}

/// The fleet's reload attempt in progress.
#[derive(Debug)]
struct Roll {
    generation: u64,
    trigger: Trigger,
    slots: Vec<Slot>,
}

/// N supervisors run as one program. See the module docs.
#[derive(Debug)]
pub struct Fleet {
    workers: Vec<Supervisor>,
    settings: Settings,
    /// The newest generation number handed out.
    generation: u64,
    roll: Option<Roll>,
    /// A worker's reload failed: which, how and why (handled at the end of the step).
    failed: Option<(usize, ReloadFailure, String)>,
    queued: Option<Trigger>,
    state: ProgramState,
    reason: String,
    reported: Option<ProgramState>,
    stopping: bool,
    /// The worker whose own stop (FATAL, a first spawn that failed) stopped the fleet.
    stopped_by: Option<usize>,
    /// Each worker's exit code, once its supervisor asked to exit.
    exits: Vec<Option<i32>>,
    /// Workers whose new child was asked for when the reload failed: stop it once spawned.
    cancel_on_spawn: Vec<bool>,
    stopping_reported: bool,
    done: bool,
    reports: Vec<Report>,
}

impl Fleet {
    /// `settings.workers` supervisors, their jitter seeded from `seed`.
    pub fn with_seed(settings: Settings, seed: u64) -> Fleet {
        let n = settings.workers.max(1);
        let workers = (0..n)
            .map(|i| {
                let mut s = Supervisor::with_seed(
                    settings,
                    seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                );
                s.worker = i;
                if n > 1 {
                    s.pinned = Some(1);
                }
                s
            })
            .collect();
        Fleet {
            workers,
            settings,
            generation: 1,
            roll: None,
            failed: None,
            queued: None,
            state: ProgramState::Starting,
            reason: String::new(),
            reported: None,
            stopping: false,
            stopped_by: None,
            exits: vec![None; n],
            cancel_on_spawn: vec![false; n],
            stopping_reported: false,
            done: false,
            reports: Vec::new(),
        }
    }

    /// A fresh fleet for a program started again after it finished (stopped by name): a new
    /// restart policy for every worker, generation numbers continuing after `previous`'s.
    pub fn after(previous: &Fleet, seed: u64) -> Fleet {
        let mut next = Fleet::with_seed(previous.settings, seed);
        if next.single() {
            let mut first = Supervisor::after(&previous.workers[0], seed);
            first.worker = 0;
            next.workers[0] = first;
            return next;
        }
        let generation = previous.newest_generation() + 1;
        next.generation = generation;
        for w in &mut next.workers {
            w.pinned = Some(generation);
        }
        next
    }

    /// A fleet with new `settings` (an edited configuration file) taking over from
    /// `previous`: generation numbers continue after `previous`'s, with a fresh restart policy.
    pub fn successor(previous: &Fleet, settings: Settings, seed: u64) -> Fleet {
        let generation = previous.newest_generation() + 1;
        let mut next = Fleet::with_seed(settings, seed);
        if next.single() {
            next.workers[0].next_generation = generation;
            return next;
        }
        next.generation = generation;
        for w in &mut next.workers {
            w.pinned = Some(generation);
        }
        next
    }

    /// The newest generation number handed out so far.
    fn newest_generation(&self) -> u64 {
        match self.single() {
            true => self.workers[0].next_generation.saturating_sub(1),
            false => self.generation,
        }
    }

    /// Whether it has finished (it asked to exit): nothing more happens.
    pub fn is_done(&self) -> bool {
        match self.single() {
            true => self.workers[0].is_done(),
            false => self.done,
        }
    }

    /// A fleet with a fixed seed, for tests.
    #[cfg(test)]
    pub fn new(settings: Settings) -> Fleet {
        Fleet::with_seed(settings, 0x9E37_79B9_7F4A_7C15)
    }

    fn single(&self) -> bool {
        self.workers.len() == 1
    }

    /// How many workers each generation has.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// The supervisor of worker `i`.
    pub fn worker(&self, i: usize) -> Option<&Supervisor> {
        self.workers.get(i)
    }

    /// The first step, at `now`: spawn generation 1 (every worker of it).
    pub fn start(&mut self, now: Instant) -> Step {
        if self.single() {
            return self.workers[0].start();
        }
        let mut actions = Vec::new();
        self.state = ProgramState::Starting;
        self.reason = format!(
            "starting generation {} with {} workers",
            self.generation,
            self.count()
        );
        for i in 0..self.count() {
            let step = {
                let _span = info_span!("worker", worker = i).entered();
                self.workers[i].start()
            };
            self.absorb(i, step, &mut actions);
        }
        self.settle(now, &mut actions);
        Step {
            actions,
            reports: std::mem::take(&mut self.reports),
        }
    }

    /// Handles one event at `now`: routes it to the worker it concerns (by pid, or the
    /// spawn's worker), or to all of them, then drives the reload in progress.
    pub fn handle(&mut self, event: Event, now: Instant) -> Step {
        if self.single() {
            return self.workers[0].handle(event, now);
        }
        let mut actions = Vec::new();
        if self.done {
            return Step::default();
        }
        match event {
            Event::Reload(trigger) => self.reload(trigger, now, &mut actions),
            Event::Stop(signal) => {
                self.begin_stop("relaunch is stopping");
                for i in 0..self.count() {
                    self.feed(i, Event::Stop(signal), now, &mut actions);
                }
            }
            Event::Forward(_) | Event::Tick => {
                for i in 0..self.count() {
                    self.feed(i, event.clone(), now, &mut actions);
                }
            }
            Event::Exited { pid, .. } | Event::Notify { pid, .. } => {
                let i = self.owner(pid).unwrap_or(0);
                self.feed(i, event, now, &mut actions);
            }
            Event::Spawned { worker, .. } => {
                let i = worker.min(self.count() - 1);
                self.feed(i, event, now, &mut actions);
                if std::mem::take(&mut self.cancel_on_spawn[i]) {
                    self.abort(i, now, &mut actions);
                }
            }
        }
        self.settle(now, &mut actions);
        Step {
            actions,
            reports: std::mem::take(&mut self.reports),
        }
    }

    /// Sends `signal` to worker `worker` of the current generation alone.
    pub fn signal_worker(&mut self, worker: usize, signal: Signal, now: Instant) -> Step {
        if self.single() {
            return self.workers[0].handle(Event::Forward(signal), now);
        }
        let mut actions = Vec::new();
        if worker < self.count() {
            self.feed(worker, Event::Forward(signal), now, &mut actions);
        }
        self.settle(now, &mut actions);
        Step {
            actions,
            reports: std::mem::take(&mut self.reports),
        }
    }

    fn owner(&self, pid: nix::unistd::Pid) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.children().any(|c| c.pid == pid))
    }

    fn feed(&mut self, i: usize, event: Event, now: Instant, actions: &mut Vec<Action>) {
        let step = {
            let _span = info_span!("worker", worker = i).entered();
            self.workers[i].handle(event, now)
        };
        self.absorb(i, step, actions);
    }

    /// Takes a worker's step: its exit is the fleet's to decide; its reload and state reports
    /// are the fleet's to sum up; the rest passes through.
    fn absorb(&mut self, i: usize, step: Step, actions: &mut Vec<Action>) {
        for action in step.actions {
            match action {
                Action::Exit { code } => self.exits[i] = Some(code),
                other => actions.push(other),
            }
        }
        for report in step.reports {
            match report {
                Report::ReloadEnded {
                    generation,
                    failure,
                    reason,
                    ..
                } => {
                    let Some(roll) = &mut self.roll else { continue };
                    if roll.generation != generation || roll.slots[i] != Slot::Active {
                        continue;
                    }
                    match failure {
                        None => roll.slots[i] = Slot::Done,
                        Some(failure) => {
                            roll.slots[i] = Slot::Done;
                            if self.failed.is_none() {
                                self.failed = Some((i, failure, reason));
                            }
                        }
                    }
                }
                Report::ReloadRequested { .. }
                | Report::ReloadQueued
                | Report::ReloadStarted { .. }
                | Report::FollowUpDropped
                | Report::StateChanged { .. }
                | Report::Ready { .. } => {}
                Report::Stopping => {
                    if !std::mem::replace(&mut self.stopping_reported, true) {
                        self.reports.push(Report::Stopping);
                    }
                }
                other => self.reports.push(other),
            }
        }
    }

    fn reload(&mut self, trigger: Trigger, now: Instant, actions: &mut Vec<Action>) {
        if self.stopping {
            info!("not reloading: relaunch is stopping");
            return;
        }
        info!(trigger = %trigger, "reload requested");
        self.reports.push(Report::ReloadRequested {
            trigger: trigger.clone(),
        });
        if self.roll.is_some() {
            info!("reload queued: a reload is in progress; one more will follow once it ends");
            self.queued = Some(trigger);
            self.reports.push(Report::ReloadQueued);
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let strategy = self.settings.reload_strategy;
        info!(generation, workers = self.count(), strategy = %strategy, "reload started");
        self.reports.push(Report::ReloadStarted {
            generation,
            trigger: trigger.clone(),
        });
        self.roll = Some(Roll {
            generation,
            trigger,
            slots: vec![Slot::Todo; self.count()],
        });
        if strategy == ReloadStrategy::All {
            for i in 0..self.count() {
                self.start_worker(i, true, now, actions);
            }
        }
        // Rolling: `settle` starts the workers as room allows.
    }

    /// Starts worker `i`'s part of the reload in progress.
    fn start_worker(&mut self, i: usize, hold: bool, now: Instant, actions: &mut Vec<Action>) {
        let Some(roll) = &mut self.roll else { return };
        roll.slots[i] = Slot::Active;
        let (generation, trigger) = (roll.generation, roll.trigger.clone());
        let w = &mut self.workers[i];
        w.pinned = Some(generation);
        w.hold = hold;
        w.held_up = false;
        if let Some((at, _)) = w.backoff {
            // The restart it was waiting for becomes this generation's.
            w.backoff = Some((at, generation));
        }
        self.feed(i, Event::Reload(trigger), now, actions);
    }

    /// Stops worker `i`'s new child of the failed reload (its old one keeps serving).
    fn abort(&mut self, i: usize, now: Instant, actions: &mut Vec<Action>) {
        let w = &mut self.workers[i];
        w.hold = false;
        w.held_up = false;
        w.queued = None;
        if w.spawning.is_some() {
            self.cancel_on_spawn[i] = true;
            return;
        }
        let Some(new) = w.pending.take() else { return };
        let mut out = Vec::new();
        w.finish_reload(
            new.generation,
            Some(ReloadFailure::Exited),
            "another worker's reload failed".into(),
        );
        info!(worker = i, generation = new.generation, pid = %new.pid, "stopping the new worker: another worker of its generation failed");
        w.retire(new, now, &mut out);
        if let Some(c) = &w.current {
            w.pinned = Some(c.generation);
        }
        let reports = std::mem::take(&mut w.reports);
        self.absorb(
            i,
            Step {
                actions: out,
                reports,
            },
            actions,
        );
    }

    /// Processes live at most once each worker's pending restart runs: the rolling bound.
    pub fn alive(&self) -> usize {
        self.workers
            .iter()
            .map(|w| {
                w.children().count()
                    + usize::from(w.spawning.is_some())
                    + usize::from(w.backoff.is_some() || w.queued.is_some())
            })
            .sum()
    }

    fn begin_stop(&mut self, reason: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.queued.take().is_some() {
            self.reports.push(Report::FollowUpDropped);
        }
        if let Some(roll) = self.roll.take() {
            let serving = self.serving();
            self.reports.push(Report::ReloadEnded {
                generation: roll.generation,
                failure: Some(ReloadFailure::Stopping),
                reason: reason.to_owned(),
                serving,
                follow_up: false,
            });
        }
    }

    /// Worker 0's current child, as the one that serves for `serving` fields.
    fn serving(&self) -> Option<(u64, nix::unistd::Pid)> {
        self.workers
            .iter()
            .find_map(|w| w.current.as_ref().map(|c| (c.generation, c.pid)))
    }

    /// After every step: a worker that stopped on its own stops the rest; drives the reload
    /// in progress; exits once every worker has; reports the program's state.
    fn settle(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.stopping {
            if let Some(i) = self.workers.iter().position(|w| w.is_stopping() || w.done) {
                warn!(
                    worker = i,
                    "a worker stopped relaunch ({}); stopping every worker",
                    self.workers[i].state_reason()
                );
                self.stopped_by = Some(i);
                self.begin_stop("a worker stopped relaunch");
                for j in 0..self.count() {
                    if !self.workers[j].is_stopping() && !self.workers[j].done {
                        self.feed(j, Event::Stop(Signal::SIGTERM), now, actions);
                    }
                }
            }
        }
        if let Some((i, failure, reason)) = self.failed.take() {
            if let Some(roll) = self.roll.take() {
                for j in 0..self.count() {
                    if j != i && roll.slots[j] == Slot::Active {
                        self.abort(j, now, actions);
                    }
                }
                for w in &mut self.workers {
                    w.hold = false;
                    w.held_up = false;
                }
                let replaced = roll.slots.iter().filter(|s| **s == Slot::Done).count() - 1;
                let reason = format!("worker {i}: {reason}");
                warn!(generation = roll.generation, replaced, reason = %reason, "reload failed; the workers that serve keep serving");
                let serving = self.serving();
                self.reports.push(Report::ReloadEnded {
                    generation: roll.generation,
                    failure: Some(failure),
                    reason,
                    serving,
                    follow_up: self.queued.is_some(),
                });
            }
        }
        self.drive(now, actions);
        if self.roll.is_none() && !self.stopping {
            if let Some(trigger) = self.queued.take() {
                info!(trigger = %trigger, "starting the queued reload");
                self.reload(trigger, now, actions);
                self.drive(now, actions);
            }
        }
        if !self.done && self.exits.iter().all(Option::is_some) {
            let code = self
                .stopped_by
                .and_then(|i| self.exits[i])
                .or_else(|| self.exits.iter().flatten().copied().find(|c| *c != 0))
                .unwrap_or(0);
            self.report_state();
            self.done = true;
            info!(code, "exiting");
            actions.push(Action::Exit { code });
            return;
        }
        self.report_state();
    }

    /// Moves the reload in progress on: releases held workers once all are up (all), starts
    /// the next workers as room allows (rolling), and ends it once every worker took over.
    fn drive(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let Some(roll) = &self.roll else { return };
        let up = |w: &Supervisor| w.held_up && w.pending.is_some();
        match self.settings.reload_strategy {
            ReloadStrategy::All => {
                let all_up = roll
                    .slots
                    .iter()
                    .zip(&self.workers)
                    .all(|(s, w)| *s == Slot::Done || (*s == Slot::Active && w.hold && up(w)));
                if all_up && roll.slots.contains(&Slot::Active) {
                    for i in 0..self.count() {
                        self.workers[i].hold = false;
                        self.workers[i].held_up = false;
                        self.feed(i, Event::Tick, now, actions);
                    }
                }
            }
            ReloadStrategy::Rolling => {
                let limit = self.count() + self.settings.max_surge.max(1);
                while let Some(i) = self
                    .roll
                    .as_ref()
                    .and_then(|r| r.slots.iter().position(|s| *s == Slot::Todo))
                {
                    if self.alive() + 1 > limit {
                        break;
                    }
                    self.start_worker(i, false, now, actions);
                }
            }
        }
        // A failure reported while driving is handled at the next step's end.
        if self.failed.is_some() {
            return;
        }
        let Some(roll) = &self.roll else { return };
        if roll.slots.iter().all(|s| *s == Slot::Done) {
            let roll = self.roll.take().expect("checked above");
            let generation = roll.generation;
            info!(
                generation,
                workers = self.count(),
                "reload complete: every worker of generation {generation} serves"
            );
            let serving = self.serving();
            let pid = self
                .workers
                .iter()
                .find_map(|w| w.current.as_ref().filter(|c| c.generation == generation))
                .map(|c| c.pid);
            self.reports.push(Report::ReloadEnded {
                generation,
                failure: None,
                reason: String::new(),
                serving,
                follow_up: self.queued.is_some(),
            });
            if let Some(pid) = pid {
                self.reports.push(Report::Ready { generation, pid });
            }
        }
    }

    /// The program's state, summed up over the workers: RUNNING when all are up; otherwise
    /// the worst of them (FATAL, BACKOFF, STARTING, EXITED), with its worker's reason.
    fn report_state(&mut self) {
        let n = self.count();
        let fatal = self
            .workers
            .iter()
            .position(|w| w.state() == ProgramState::Fatal);
        let (state, reason) = if let (true, None) = (self.stopping, fatal) {
            (ProgramState::Stopping, "relaunch is stopping".to_owned())
        } else if let Some(i) = fatal {
            (
                ProgramState::Fatal,
                format!("worker {i}: {}", self.workers[i].state_reason()),
            )
        } else {
            let order = [
                ProgramState::Backoff,
                ProgramState::Starting,
                ProgramState::Exited,
            ];
            let worst = order.iter().find_map(|s| {
                self.workers
                    .iter()
                    .position(|w| w.state() == *s)
                    .map(|i| (*s, i))
            });
            match worst {
                Some((s, i)) => (s, format!("worker {i}: {}", self.workers[i].state_reason())),
                None => {
                    let mut gens: Vec<u64> = self
                        .workers
                        .iter()
                        .filter_map(|w| w.current.as_ref().map(|c| c.generation))
                        .collect();
                    gens.sort_unstable();
                    gens.dedup();
                    let list: Vec<String> = gens.iter().map(u64::to_string).collect();
                    (
                        ProgramState::Running,
                        format!("all {n} workers are up (generation {})", list.join(", ")),
                    )
                }
            }
        };
        self.reason = reason;
        if self.reported == Some(state) {
            self.state = state;
            return;
        }
        let from = self.reported;
        self.state = state;
        self.reported = Some(state);
        info!(from = %from.map_or("-", ProgramState::as_str), to = %state.as_str(), reason = %self.reason, "state changed");
        if state == ProgramState::Running && from != Some(ProgramState::Running) {
            if let Some(c) = self.workers[0].current.as_ref() {
                self.reports.push(Report::Ready {
                    generation: c.generation,
                    pid: c.pid,
                });
            }
        }
        self.reports.push(Report::StateChanged {
            from,
            to: state,
            reason: self.reason.clone(),
        });
    }

    /// The program's state (see [`ProgramState`]).
    pub fn state(&self) -> ProgramState {
        if self.single() {
            return self.workers[0].state();
        }
        self.state
    }

    /// Why the program is in its state.
    pub fn state_reason(&self) -> &str {
        if self.single() {
            return self.workers[0].state_reason();
        }
        &self.reason
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        if self.single() {
            return self.workers[0].is_stopping();
        }
        self.stopping
    }

    /// The reload attempt in progress, if any: its generation and trigger.
    pub fn reloading(&self) -> Option<(u64, &Trigger)> {
        if self.single() {
            return self.workers[0].reloading();
        }
        self.roll.as_ref().map(|r| (r.generation, &r.trigger))
    }

    /// Whether a follow-up reload is queued.
    pub fn reload_queued(&self) -> bool {
        if self.single() {
            return self.workers[0].reload_queued();
        }
        self.queued.is_some()
    }

    /// The first worker's scheduled restart, if any: when, and its generation.
    pub fn backoff(&self) -> Option<(Instant, u64)> {
        self.workers.iter().find_map(Supervisor::backoff)
    }

    /// The most restart attempts in a row of any worker.
    pub fn restart_attempt(&self) -> u32 {
        self.workers
            .iter()
            .map(Supervisor::restart_attempt)
            .max()
            .unwrap_or(0)
    }

    /// The most failed starts in a row of any worker.
    pub fn start_failures(&self) -> u32 {
        self.workers
            .iter()
            .map(Supervisor::start_failures)
            .max()
            .unwrap_or(0)
    }

    /// Worker 0's serving child (the one child with one worker).
    pub fn current(&self) -> Option<&Child> {
        self.workers[0].current()
    }

    /// Worker 0's pending child, in a reload.
    pub fn pending(&self) -> Option<&Child> {
        self.workers[0].pending()
    }

    /// Every live child of every worker.
    pub fn children(&self) -> impl Iterator<Item = &Child> {
        self.workers.iter().flat_map(Supervisor::children)
    }

    /// Every live child with its worker index and role (`current`, `pending`, `retiring`).
    pub fn members(&self) -> impl Iterator<Item = (usize, &'static str, &Child)> {
        self.workers.iter().enumerate().flat_map(|(i, w)| {
            w.current()
                .map(|c| (i, "current", c))
                .into_iter()
                .chain(w.pending().map(|c| (i, "pending", c)))
                .chain(w.retiring.iter().map(move |c| (i, "retiring", c)))
        })
    }

    /// How many workers are up (their serving child is RUNNING).
    pub fn workers_up(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.current().is_some_and(|c| c.phase == Phase::Running))
            .count()
    }

    /// The earliest deadline of any worker.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers
            .iter()
            .filter_map(Supervisor::next_deadline)
            .min()
    }
}
