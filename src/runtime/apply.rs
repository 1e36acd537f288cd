//! Applying an edited configuration file (SIGHUP, `relaunch reload` without names, `relaunch
//! update`): the difference [`crate::config_diff`] computes, carried out on the running set.
//!
//! - **Everything that can fail comes first**: the file is read, every new address is bound
//!   and every new or changed program is prepared (its settings checked, its program found,
//!   its log files open) before anything changes. A failure refuses the edit as a whole: the
//!   error is logged and `status` shows it as `config_error`; new sockets are closed again.
//! - **Added** programs start in priority order; **removed** ones are stopped, and forgotten
//!   (their sockets closed) once their last child is gone; **unchanged** ones are reloaded
//!   (HUP means reload; `update` leaves them alone).
//! - **Changed** programs get a *successor*: a program value under the new settings, its
//!   generation numbers continuing, that starts while the old one serves. Once every worker
//!   of the successor is up it takes the old one's place (and name) and the old one is
//!   stopped; if it fails to come up it is stopped instead, the old one keeps serving with its
//!   old settings, and `config_error` says why.
//! - **Sockets**: an address written the same keeps its open socket (a `dup` of it: the same
//!   socket, also when it moves to another program or another fd); an address that went away
//!   is closed when the last program value holding it is forgotten, i.e. after its last child
//!   exited.
//!
//! Successors and programs on their way out sit in the master's list of programs like the
//! others (so their children are reaped, their output drained and their deadlines kept), with
//! a [`Role`] that hides them from names, status, metrics and the summary. One edit at a time:
//! a SIGHUP during an edit is applied once its successors have settled.

use std::collections::VecDeque;
use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{error, info, warn};

use super::{order, Master, Queued};
use crate::config::Config;
use crate::config_diff::{self, Source};
use crate::control::{EditOutcome, EditReply, Joined, ReloadWaiters, Response};
use crate::program::{Prepared, Program, Run};
use crate::sockets::{self, activation::Inherited, Listener};
use crate::spec::{ListenAddr, ListenSpec};
use crate::supervisor::{Event, ProgramState, Report, ServiceManager, Trigger};

/// A program's part in the running set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Configured: named, listed, serving.
    Live,
    /// A changed program's new settings, starting while the live one serves.
    Successor,
    /// Removed, replaced or failed: stopping, forgotten once idle.
    Leaving,
}

/// What an edit did to one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Added,
    Removed,
    Changed,
    Reloaded,
}

impl What {
    fn as_str(self) -> &'static str {
        match self {
            What::Added => "added",
            What::Removed => "removed",
            What::Changed => "changed",
            What::Reloaded => "reloaded",
        }
    }
}

/// One program's part in an edit, until it has ended.
#[derive(Debug)]
struct Part {
    program: String,
    what: What,
    /// For a reload: the attempt whose end answers it.
    reload: Joined,
    outcome: Option<EditOutcome>,
}

/// An edit whose clients wait for its outcome.
#[derive(Debug)]
struct Edit {
    reply: EditReply,
    parts: Vec<Part>,
    waiters: Vec<u64>,
}

/// The edits' state in the master.
#[derive(Debug)]
pub(super) struct Edits {
    /// Each program's role, by index.
    roles: Vec<Role>,
    /// The master's settings as started: `[relaunch]` keys cannot change while it runs.
    master: Config,
    /// Edits with clients waiting for the outcome.
    waiting: Vec<Edit>,
    /// A SIGHUP during an edit: applied once it has settled.
    queued: bool,
    /// When the master started (the programs' status trackers count from it).
    started: Instant,
}

impl Edits {
    /// The edits' state for the master started with `config`, `started` at that instant.
    pub(super) fn new(config: &Config, started: Instant) -> Edits {
        Edits {
            roles: vec![Role::Live; config.programs.len()],
            master: Config {
                programs: Vec::new(),
                ..config.clone()
            },
            waiting: Vec::new(),
            queued: false,
            started,
        }
    }
}

/// Why an edit was not applied.
type Refused = String;

impl Master {
    /// Whether program `i` is a configured one (not a successor, not on its way out).
    pub(super) fn live(&self, i: usize) -> bool {
        self.edits.roles.get(i).is_none_or(|r| *r == Role::Live)
    }

    /// The indices of the configured programs.
    pub(super) fn live_programs(&self) -> Vec<usize> {
        (0..self.programs.len()).filter(|&i| self.live(i)).collect()
    }

    /// SIGHUP with a configuration file: applies it, reloading every program. During an
    /// edit, it is applied once the edit has settled.
    pub(super) fn hangup(&mut self, now: Instant, queue: &mut VecDeque<Queued>) {
        if self.edits.roles.contains(&Role::Successor) {
            info!("SIGHUP during an edit: the file is read again once the new settings are up");
            self.edits.queued = true;
            return;
        }
        let _ = self.apply_file(false, Trigger::Signal(Signal::SIGHUP), None, now, queue);
    }

    /// `reload` without names (`update`: false) or `update` (true), asked by client `id`.
    pub(super) fn edit_asked(
        &mut self,
        update: bool,
        id: u64,
        wait: bool,
        now: Instant,
        queue: &mut VecDeque<Queued>,
    ) {
        if self.source.is_none() {
            let message =
                "relaunch runs without a configuration file (--config); nothing to update";
            self.control.refuse(id, message.into(), false, now);
            return;
        }
        if self.edits.roles.contains(&Role::Successor) {
            let message = "an edit of the configuration file is being applied (a changed program's new settings are starting); try again once it is done (see relaunch status)";
            self.control.refuse(id, message.into(), false, now);
            return;
        }
        if let Err(why) = self.apply_file(update, Trigger::Control, Some((id, wait)), now, queue) {
            let message = format!("the configuration file was not applied; nothing changed: {why}");
            self.control.refuse(id, message, false, now);
        }
    }

    /// Reads the file and applies it (see the module docs). `update`: only the difference;
    /// else the unchanged programs are reloaded too, by `trigger`.
    fn apply_file(
        &mut self,
        update: bool,
        trigger: Trigger,
        client: Option<(u64, bool)>,
        now: Instant,
        queue: &mut VecDeque<Queued>,
    ) -> Result<(), Refused> {
        if self.stopping.is_some() {
            return Err("relaunch is stopping".into());
        }
        let Some(path) = self.source.clone() else {
            return Err("no configuration file".into());
        };
        let config = match (self.read)(&path) {
            Ok(config) => config,
            Err(e) => {
                error!(error = %e, "the configuration file is invalid; nothing changes, every program keeps serving");
                self.config_error = Some(e.clone());
                return Err(e);
            }
        };
        for key in config_diff::master_keys(&self.edits.master, &config) {
            warn!(file = %path.display(), key, "[relaunch] {key} cannot change while relaunch runs; keeping the value it started with (restart relaunch to change it)");
        }
        let live = self.live_programs();
        let old: Vec<&crate::config::ProgramConfig> =
            live.iter().map(|&i| self.programs[i].config()).collect();
        let diff = config_diff::programs(&old, &config.programs);
        if diff.is_empty() && update {
            info!(file = %path.display(), "configuration file read again: no program changed");
        }
        // Everything that can fail, before anything changes.
        let mut built = match self.build(&live, &config, &diff) {
            Ok(built) => built,
            Err(e) => {
                let e = format!("{}: {e}", path.display());
                error!(error = %e, "the edited configuration file cannot be applied; nothing changes, every program keeps serving");
                self.config_error = Some(e.clone());
                return Err(e);
            }
        };
        self.config_error = None;
        let mut edit = Edit {
            reply: EditReply::default(),
            parts: Vec::new(),
            waiters: Vec::new(),
        };
        let part = |edit: &mut Edit, program: &str, what: What| {
            let names = match what {
                What::Added => &mut edit.reply.added,
                What::Removed => &mut edit.reply.removed,
                What::Changed => &mut edit.reply.changed,
                What::Reloaded => &mut edit.reply.reloaded,
            };
            names.push(program.to_owned());
            edit.parts.push(Part {
                program: program.to_owned(),
                what,
                reload: Joined::Refused,
                outcome: None,
            });
        };
        for &r in &diff.removed {
            let i = live[r];
            let name = self.programs[i].name().to_owned();
            part(&mut edit, &name, What::Removed);
            info!(program = %name, "removed from the configuration file: stopping it");
            self.leave(i, now, queue);
        }
        for &(r, _) in &diff.changed {
            let i = live[r];
            let name = self.programs[i].name().to_owned();
            let Some(mut next) = built.pop_front() else {
                break;
            };
            next.succeed(&self.programs[i]);
            part(&mut edit, &name, What::Changed);
            let old = &self.programs[i];
            let serving = old.run_state() == Run::Started && !old.supervisor().is_done();
            let run = old.run_state();
            let s = self.push_program(next, Role::Successor);
            if serving {
                info!(program = %name, "settings changed: starting a generation under the new settings");
                self.start_program(s, now, queue);
            } else {
                // Nothing runs: the new settings take its place at once.
                if let Some(last) = edit.parts.last_mut() {
                    last.outcome = Some(EditOutcome {
                        program: name.clone(),
                        what: What::Changed.as_str().to_owned(),
                        ok: true,
                        generation: None,
                        reason: None,
                    });
                }
                self.take_over(i, s, now, queue);
                if run == Run::Stopped {
                    self.programs[i].stopped_by_name();
                } else if run == Run::Started {
                    self.start_program(i, now, queue);
                }
            }
        }
        let mut added = Vec::new();
        for _ in &diff.added {
            let Some(next) = built.pop_front() else {
                break;
            };
            let name = next.name().to_owned();
            info!(program = %name, "added to the configuration file");
            part(&mut edit, &name, What::Added);
            added.push(self.push_program(next, Role::Live));
        }
        let priorities: Vec<u32> = added
            .iter()
            .map(|&i| self.programs[i].config().priority)
            .collect();
        let autostart: Vec<bool> = added
            .iter()
            .map(|&i| self.programs[i].config().autostart)
            .collect();
        for group in order::start_groups(&priorities, &autostart) {
            self.to_start
                .push_back(group.into_iter().map(|k| added[k]).collect());
        }
        if !update {
            for &(r, _) in &diff.unchanged {
                let i = live[r];
                let p = &self.programs[i];
                if p.run_state() != Run::Started || p.supervisor().is_stopping() || p.is_idle() {
                    continue; // not running: nothing to reload
                }
                let name = p.name().to_owned();
                part(&mut edit, &name, What::Reloaded);
                let reports = self.feed_for(i, Event::Reload(trigger.clone()), now, queue);
                if let Some(last) = edit.parts.last_mut() {
                    last.reload = ReloadWaiters::<u64>::classify(&reports);
                }
            }
        }
        info!(
            file = %path.display(),
            added = ?edit.reply.added,
            removed = ?edit.reply.removed,
            changed = ?edit.reply.changed,
            reloaded = edit.reply.reloaded.len(),
            "configuration file applied"
        );
        match client {
            Some((id, false)) => {
                let mut r = Response::ok();
                r.edit = Some(edit.reply);
                self.control.edit_asked(id, Some(r), now);
            }
            Some((id, true)) => {
                edit.waiters.push(id);
                self.control.edit_asked(id, None, now);
                self.edits.waiting.push(edit);
            }
            None => {}
        }
        Ok(())
    }

    /// Binds the new addresses and prepares the new and changed programs, in the order
    /// `diff.changed` then `diff.added`. On error, everything opened so far is closed again.
    fn build(
        &self,
        live: &[usize],
        config: &Config,
        diff: &config_diff::Diff,
    ) -> Result<VecDeque<Program>, String> {
        let running: Vec<(&str, &[ListenSpec])> = live
            .iter()
            .map(|&i| {
                let p = &self.programs[i];
                (p.name(), p.config().listen.as_slice())
            })
            .collect();
        let mut taken = Vec::new();
        let mut built = VecDeque::new();
        let wanted = diff
            .changed
            .iter()
            .map(|&(_, j)| j)
            .chain(diff.added.iter().copied());
        for j in wanted {
            let new = &config.programs[j];
            let sources = config_diff::sockets(&new.name, &new.listen, &running, &mut taken);
            let mut listeners = Vec::new();
            // Sockets of socket activation passed on as a whole (no `systemd:NAME` picks
            // them) stay with the program they were given to.
            if let Some(k) = running.iter().position(|(n, _)| *n == new.name) {
                for l in self.programs[live[k]].listeners() {
                    if l.origin.is_none() {
                        listeners.push(dup(l, l.name.clone())?);
                    }
                }
            }
            for (spec, source) in new.listen.iter().zip(sources) {
                match source {
                    Source::Keep { program, spec: s } => {
                        let holder = &self.programs[live[program]];
                        for l in kept(holder, s) {
                            let name = spec.name.clone().unwrap_or_else(|| l.name.clone());
                            listeners.push(dup(l, name)?);
                        }
                    }
                    Source::Bind => {
                        if matches!(spec.addr, ListenAddr::Systemd(_) | ListenAddr::Fd(_)) {
                            return Err(format!(
                                "[program.{}] listen {:?}: inherited sockets are handed out at startup; an edit can only keep them where they were (restart relaunch to pass it)",
                                new.name,
                                spec.to_string()
                            ));
                        }
                        let opened = sockets::open_all(
                            std::slice::from_ref(spec),
                            new.backlog,
                            Inherited::default(),
                        )
                        .map_err(|e| format!("[program.{}] listen: {e:#}", new.name))?;
                        listeners.extend(opened);
                    }
                }
            }
            // relaunch's own stdout and stderr stay where startup put them.
            let prepared = Prepared::new(new.clone(), false)
                .map_err(|f| format!("[program.{}]: {:#}", new.name, f.error))?;
            let program = prepared
                .with_listeners(listeners, self.edits.started, true)
                .map_err(|f| format!("[program.{}]: {:#}", new.name, f.error))?;
            built.push_back(program);
        }
        Ok(built)
    }

    /// Adds a program to the set with `role`; returns its index.
    pub(super) fn push_program(&mut self, program: Program, role: Role) -> usize {
        self.programs.push(program);
        self.edits.roles.push(role);
        self.exits.push(None);
        self.upward_each.push(ServiceManager::default());
        self.ready_each.push(false);
        self.control.add_program();
        self.programs.len() - 1
    }

    /// Program `i` is removed or replaced: hidden, and stopped if it runs.
    pub(super) fn leave(&mut self, i: usize, now: Instant, queue: &mut VecDeque<Queued>) {
        self.edits.roles[i] = Role::Leaving;
        let p = &self.programs[i];
        if p.run_state() == Run::Started && !p.supervisor().is_done() {
            self.feed(i, Event::Stop(Signal::SIGTERM), now, queue);
        }
    }

    /// The successor at `s` takes the place (index and name) of the live program at `i`,
    /// which leaves.
    fn take_over(&mut self, i: usize, s: usize, now: Instant, queue: &mut VecDeque<Queued>) {
        self.programs.swap(i, s);
        self.edits.roles.swap(i, s);
        self.exits.swap(i, s);
        self.upward_each.swap(i, s);
        self.ready_each.swap(i, s);
        self.control.swap_programs(i, s);
        self.remap(|k| {
            Some(if k == i {
                s
            } else if k == s {
                i
            } else {
                k
            })
        });
        self.edits.roles[i] = Role::Live;
        self.leave(s, now, queue);
    }

    /// Program `k` is gone: removed from every list, the programs after it move down.
    fn forget(&mut self, k: usize, now: Instant) {
        let mut program = self.programs.remove(k);
        program.finish_output();
        self.edits.roles.remove(k);
        self.exits.remove(k);
        self.upward_each.remove(k);
        self.ready_each.remove(k);
        self.control.forget_program(k, now);
        self.remap(|i| match i.cmp(&k) {
            std::cmp::Ordering::Less => Some(i),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(i - 1),
        });
        info!(program = %program.name(), "its last child is gone: its sockets are closed unless another program keeps them");
        // Dropping it closes its sockets (those no other program holds a copy of).
        drop(program);
    }

    /// Renumbers the program indices the master keeps (start and stop groups, `--daemon`'s
    /// first program).
    fn remap(&mut self, f: impl Fn(usize) -> Option<usize>) {
        let fix = |group: &mut Vec<usize>| *group = group.iter().filter_map(|&i| f(i)).collect();
        self.to_start.iter_mut().for_each(fix);
        self.to_start.retain(|g| !g.is_empty());
        fix(&mut self.starting);
        if let Some(stopping) = &mut self.stopping {
            stopping.groups.iter_mut().for_each(fix);
            fix(&mut stopping.current);
        }
        self.first_program = f(self.first_program).unwrap_or(0);
    }

    /// Called every round: successors that came up take over, failed ones leave; programs
    /// on their way out are forgotten once idle; waiting clients get their answers; a SIGHUP
    /// that came during an edit is applied.
    pub(super) fn advance_edits(&mut self, now: Instant, queue: &mut VecDeque<Queued>) {
        if self.edits.roles.len() == self.programs.len()
            && self.edits.roles.iter().all(|r| *r == Role::Live)
            && self.edits.waiting.is_empty()
            && !self.edits.queued
        {
            return; // nothing in progress (the common case)
        }
        for s in 0..self.programs.len() {
            if self.edits.roles[s] != Role::Successor || self.stopping.is_some() {
                continue;
            }
            let name = self.programs[s].name().to_owned();
            let Some(i) = (0..self.programs.len())
                .find(|&i| self.edits.roles[i] == Role::Live && self.programs[i].name() == name)
            else {
                continue;
            };
            let sup = self.programs[s].supervisor();
            let up = sup.state() == ProgramState::Running
                && sup.workers_up() == sup.count()
                && !sup.is_stopping();
            let failed = sup.is_done()
                || sup.is_stopping()
                || matches!(
                    sup.state(),
                    ProgramState::Backoff | ProgramState::Fatal | ProgramState::Exited
                );
            if up {
                let generation = sup.current().map(|c| c.generation);
                info!(program = %name, generation, "the new settings are up: they take over, the old generation stops");
                self.take_over(i, s, now, queue);
                self.resolve(&name, What::Changed, true, generation, None);
            } else if failed {
                let generation = sup.current().map(|c| c.generation);
                let reason = format!(
                    "program {name}: the edited settings did not come up ({}); it keeps running with its previous settings",
                    sup.state_reason()
                );
                error!(program = %name, reason = %reason, "edit failed for this program");
                self.config_error = Some(reason.clone());
                self.leave(s, now, queue);
                self.resolve(&name, What::Changed, false, generation, Some(reason));
            }
        }
        // Programs on their way out, once idle: forgotten (one per pass, indices shift).
        while let Some(k) = (0..self.programs.len())
            .find(|&k| self.edits.roles[k] == Role::Leaving && self.programs[k].is_idle())
        {
            let name = self.programs[k].name().to_owned();
            self.forget(k, now);
            let gone = !(0..self.programs.len())
                .any(|k| self.edits.roles[k] == Role::Leaving && self.programs[k].name() == name);
            if gone {
                self.resolve(&name, What::Removed, true, None, None);
            }
        }
        self.check_parts();
        self.answer_edits(now);
        if self.edits.queued && !self.edits.roles.contains(&Role::Successor) {
            self.edits.queued = false;
            let _ = self.apply_file(false, Trigger::Signal(Signal::SIGHUP), None, now, queue);
        }
    }

    /// Resolves the parts still open of the programs added and reloaded, from their state.
    fn check_parts(&mut self) {
        let mut done = Vec::new();
        for edit in &self.edits.waiting {
            for part in edit.parts.iter().filter(|p| p.outcome.is_none()) {
                let Some(i) = (0..self.programs.len()).find(|&i| {
                    self.edits.roles[i] == Role::Live && self.programs[i].name() == part.program
                }) else {
                    continue;
                };
                let p = &self.programs[i];
                let sup = p.supervisor();
                let generation = sup.current().map(|c| c.generation);
                match part.what {
                    What::Added if !p.config().autostart => {
                        done.push((part.program.clone(), What::Added, true, None, None))
                    }
                    What::Added if p.run_state() == Run::Started => {
                        let up =
                            sup.state() == ProgramState::Running && sup.workers_up() == sup.count();
                        let failed = sup.is_done()
                            || matches!(
                                sup.state(),
                                ProgramState::Backoff | ProgramState::Fatal | ProgramState::Exited
                            );
                        if up || failed {
                            let reason = failed.then(|| sup.state_reason().to_owned());
                            done.push((part.program.clone(), What::Added, up, generation, reason));
                        }
                    }
                    What::Reloaded if p.is_idle() || part.reload == Joined::Refused => {
                        let reason = "it stopped before its reload ended".to_owned();
                        done.push((
                            part.program.clone(),
                            What::Reloaded,
                            false,
                            generation,
                            Some(reason),
                        ));
                    }
                    _ => {}
                }
            }
        }
        for (name, what, ok, generation, reason) in done {
            self.resolve(&name, what, ok, generation, reason);
        }
    }

    /// Records how `program`'s part `what` ended, in every edit waiting for it.
    fn resolve(
        &mut self,
        program: &str,
        what: What,
        ok: bool,
        generation: Option<u64>,
        reason: Option<String>,
    ) {
        for edit in &mut self.edits.waiting {
            for part in &mut edit.parts {
                if part.outcome.is_none() && part.program == program && part.what == what {
                    part.outcome = Some(EditOutcome {
                        program: program.to_owned(),
                        what: what.as_str().to_owned(),
                        ok,
                        generation,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }

    /// A report of program `i`: the reload parts of waiting edits follow it.
    pub(super) fn edit_report(&mut self, i: usize, report: &Report) {
        if self.edits.waiting.is_empty() || !self.live(i) {
            return;
        }
        let name = self.programs[i].name().to_owned();
        let mut ended = None;
        for edit in &mut self.edits.waiting {
            for part in &mut edit.parts {
                if part.outcome.is_some() || part.what != What::Reloaded || part.program != name {
                    continue;
                }
                match report {
                    Report::ReloadStarted { generation, .. } if part.reload == Joined::FollowUp => {
                        part.reload = Joined::Attempt(*generation)
                    }
                    Report::FollowUpDropped if part.reload == Joined::FollowUp => {
                        part.reload = Joined::Refused
                    }
                    Report::ReloadEnded {
                        generation,
                        failure,
                        reason,
                        ..
                    } if part.reload == Joined::Attempt(*generation) => {
                        ended = Some((
                            failure.is_none(),
                            *generation,
                            failure.is_some().then(|| reason.clone()),
                        ));
                    }
                    _ => {}
                }
            }
        }
        if let Some((ok, generation, reason)) = ended {
            self.resolve(&name, What::Reloaded, ok, Some(generation), reason);
        }
    }

    /// Answers the clients of every edit whose parts have all ended.
    fn answer_edits(&mut self, now: Instant) {
        let (done, waiting): (Vec<Edit>, Vec<Edit>) = std::mem::take(&mut self.edits.waiting)
            .into_iter()
            .partition(|e| e.parts.iter().all(|p| p.outcome.is_some()));
        self.edits.waiting = waiting;
        for mut edit in done {
            edit.reply.outcomes = edit.parts.drain(..).filter_map(|p| p.outcome).collect();
            let failed: Vec<String> = edit
                .reply
                .outcomes
                .iter()
                .filter(|o| !o.ok)
                .map(|o| {
                    format!(
                        "{} ({}): {}",
                        o.program,
                        o.what,
                        o.reason.as_deref().unwrap_or("failed")
                    )
                })
                .collect();
            let mut r = Response::ok();
            r.ok = failed.is_empty();
            r.error = (!failed.is_empty()).then(|| failed.join("; "));
            r.edit = Some(edit.reply);
            for id in edit.waiters {
                self.control.edit_done(id, &r, now);
            }
        }
    }
}

/// The running sockets of `holder` opened for its `listen` entry number `spec` (several for
/// a `systemd:NAME` that matched several sockets).
fn kept(holder: &Program, spec: usize) -> Vec<&Listener> {
    let specs = &holder.config().listen;
    let addr = &specs[spec].addr;
    let with_addr: Vec<&Listener> = holder
        .listeners()
        .iter()
        .filter(|l| l.origin.as_ref() == Some(addr))
        .collect();
    if matches!(addr, ListenAddr::Systemd(_)) {
        return with_addr;
    }
    // The n-th entry with this address is the n-th socket opened for it.
    let nth = specs[..spec].iter().filter(|s| s.addr == *addr).count();
    with_addr.into_iter().skip(nth).take(1).collect()
}

fn dup(l: &Listener, name: String) -> Result<Listener, String> {
    l.try_clone(name)
        .map_err(|e| format!("duplicating the socket {}: {e}", l.local_addr))
}
