//! The master's programs as a set: control requests by name, the start and stop order, when
//! the master is done and with which exit code, and the summary its own service manager hears.

use std::collections::VecDeque;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{order, Master, Queued, Stopping};
use crate::control::{Ask, Asked};
use crate::program::Run;
use crate::status::StatusRecord;
use crate::supervisor::{Event, ManagerMessage, ProgramState, Trigger};

impl Master {
    /// The programs a request is about: the one it names, or every program (`None`). An
    /// unknown name is answered here, with the valid names (the client exits 2).
    fn named_programs(&mut self, asked: &Asked, now: Instant) -> Option<Vec<usize>> {
        let live = self.live_programs();
        let Some(name) = &asked.program else {
            return Some(live);
        };
        if let Some(&i) = live.iter().find(|&&i| self.programs[i].name() == name) {
            return Some(vec![i]);
        }
        let valid: Vec<&str> = live.iter().map(|&i| self.programs[i].name()).collect();
        let message = format!(
            "no program named {name:?} (the programs are: {})",
            valid.join(", ")
        );
        self.control.refuse(asked.id, message, true, now);
        None
    }

    /// Carries out what a control client asked, through the one path into the state machine.
    pub(super) fn serve(&mut self, asked: Asked, now: Instant, queue: &mut VecDeque<Queued>) {
        let id = asked.id;
        let Some(targets) = self.named_programs(&asked, now) else {
            return;
        };
        match asked.ask {
            Ask::Status => {
                let record = self.status_record(&targets, asked.program.is_some(), now);
                self.control.status(id, record, now);
            }
            Ask::Restart { .. } if targets.iter().all(|&i| self.programs[i].is_idle()) => {
                self.serve(
                    Asked {
                        ask: Ask::Start,
                        ..asked
                    },
                    now,
                    queue,
                );
            }
            Ask::Update { wait } => self.edit_asked(true, id, wait, now, queue),
            // With a configuration file, `reload` without names applies it.
            Ask::Reload { wait } if asked.program.is_none() && self.source.is_some() => {
                self.edit_asked(false, id, wait, now, queue)
            }
            Ask::Reload { wait } | Ask::Restart { wait } => {
                if targets.len() == 1 && self.programs[targets[0]].is_idle() {
                    let message = format!(
                        "{} is stopped; not reloading (start it with: relaunch start {})",
                        self.programs[targets[0]].name(),
                        self.programs[targets[0]].name()
                    );
                    self.control.refuse(id, message, false, now);
                    return;
                }
                if targets.len() > 1 && wait {
                    let message = "reload --wait needs one program per request (the client asks for each by name)";
                    self.control.refuse(id, message.into(), false, now);
                    return;
                }
                let mut last = None;
                for &i in &targets {
                    let program = &self.programs[i];
                    let reports = (program.run_state() == Run::Started
                        && !program.supervisor().is_stopping())
                    .then(|| self.feed_for(i, Event::Reload(Trigger::Control), now, queue));
                    last = Some((i, reports));
                }
                match last {
                    Some((i, reports)) if targets.len() == 1 => {
                        self.control
                            .reload_asked(i, id, wait, reports.as_deref(), now)
                    }
                    _ => self.control.done(id, now),
                }
            }
            Ask::Stop { wait } => match &asked.program {
                None => {
                    self.stop_master(Signal::SIGTERM, now, queue);
                    self.control.stop_asked(id, wait, now);
                }
                Some(_) => {
                    let i = targets[0];
                    if self.programs[i].run_state() == Run::Started {
                        self.programs[i].stopped_by_name();
                        self.feed(i, Event::Stop(Signal::SIGTERM), now, queue);
                    }
                    self.programs[i].stopped_by_name();
                    self.control.done(id, now);
                }
            },
            Ask::Start => {
                if self.stopping.is_some() {
                    self.control.refuse(
                        id,
                        "relaunch is stopping; not starting".into(),
                        false,
                        now,
                    );
                    return;
                }
                for &i in &targets {
                    if self.programs[i].is_idle() {
                        self.start_program(i, now, queue);
                    }
                }
                self.control.done(id, now);
            }
            Ask::Signal { signal, worker } => {
                if targets.len() > 1 {
                    let message = "name the program to signal (relaunch signal SIG PROGRAM)";
                    self.control.refuse(id, message.into(), true, now);
                    return;
                }
                let i = targets[0];
                let target = self.signal_target(i, worker);
                if target.is_ok() {
                    match worker {
                        Some(w) => {
                            let handled = self.programs[i].signal_worker(w, signal, now);
                            let actions = self.route(i, handled, now);
                            queue.extend(actions.into_iter().map(|a| (i, a)));
                        }
                        None => self.feed(i, Event::Forward(signal), now, queue),
                    }
                }
                self.control.signal_asked(id, signal, target, worker, now);
            }
        }
    }

    /// Whom `signal` (to `worker`, or every worker) would reach in program `i`: the current
    /// generation's number, a pid, and how many processes; or why there is nobody.
    fn signal_target(&self, i: usize, worker: Option<usize>) -> Result<(u64, Pid, usize), String> {
        let sup = self.programs[i].supervisor();
        let none = "no current generation to signal (starting, restarting or stopping)";
        if sup.is_stopping() || sup.is_done() {
            return Err(none.to_owned());
        }
        match worker {
            Some(w) if w >= sup.count() => Err(format!(
                "there is no worker {w}: --workers is {}, so workers are 0 to {}",
                sup.count(),
                sup.count() - 1
            )),
            Some(w) => sup
                .worker(w)
                .and_then(|s| s.current())
                .map(|c| (c.generation, c.pid, 1))
                .ok_or_else(|| {
                    format!(
                        "worker {w} has no current child to signal (starting, restarting or stopping)"
                    )
                }),
            None => {
                let current = (0..sup.count()).filter_map(|w| sup.worker(w).and_then(|s| s.current()));
                let sent_to = current.clone().count();
                current
                    .clone()
                    .next()
                    .map(|c| (c.generation, c.pid, sent_to))
                    .ok_or_else(|| none.to_owned())
            }
        }
    }

    /// The status record: the single program's as always; with several programs, the
    /// master's fields plus one record per program (`targets`), and a summary state.
    fn status_record(&self, targets: &[usize], by_name: bool, now: Instant) -> StatusRecord {
        let base = self.control.base();
        if !self.named {
            return self.programs[0].record(base, now);
        }
        // Each program's record lists its own sockets: cloning the master's list of every
        // program's sockets into each made status O(programs²) (260 ms for 1,000).
        let program_base = StatusRecord {
            sockets: Vec::new(),
            ..base.clone()
        };
        let programs: Vec<StatusRecord> = targets
            .iter()
            .map(|&i| self.programs[i].named_record(&program_base, now))
            .collect();
        let mut record = StatusRecord {
            started_at: String::new(),
            ..base.clone()
        };
        if let Some(first) = programs.first() {
            record.started_at = first.started_at.clone();
            record.uptime_secs = first.uptime_secs;
        }
        // RUNNING when every program asked about that should run does; else the first state
        // that is not (a program stopped by name, or not started, does not count unless named).
        let should_run = |r: &StatusRecord| by_name || r.state != "STOPPED";
        record.state = programs
            .iter()
            .filter(|r| should_run(r))
            .map(|r| r.state.clone())
            .find(|s| s != "RUNNING")
            .unwrap_or_else(|| "RUNNING".into());
        record.state_reason = self.summary();
        record.config_error = self.config_error.clone();
        record.programs = programs;
        record
    }

    /// Starts the next group of programs once each of the last group is up or has failed.
    pub(super) fn advance_start(&mut self, now: Instant, queue: &mut VecDeque<Queued>) {
        if self.stopping.is_some() {
            return;
        }
        let settled = |p: &crate::program::Program| {
            p.run_state() != Run::Started
                || p.supervisor().is_done()
                || p.supervisor().state() != ProgramState::Starting
        };
        if !self.starting.iter().all(|&i| settled(&self.programs[i])) {
            return;
        }
        let Some(group) = self.to_start.pop_front() else {
            self.starting.clear();
            return;
        };
        for &i in &group {
            // A program started by name before its turn is left alone.
            if self.programs[i].run_state() == Run::NotStarted {
                self.start_program(i, now, queue);
            }
        }
        self.starting = group;
    }

    /// The master stops (SIGTERM, SIGINT, SIGQUIT, or `relaunch stop`): every program, in
    /// reverse priority order. Asked again while stopping, the signal goes to every program
    /// that is stopping (SIGQUIT kills what is left of it), or with SIGQUIT to every program.
    pub(super) fn stop_master(
        &mut self,
        signal: Signal,
        now: Instant,
        queue: &mut VecDeque<Queued>,
    ) {
        if self.stopping.is_some() {
            for i in 0..self.programs.len() {
                let p = &self.programs[i];
                let running = p.run_state() == Run::Started && !p.supervisor().is_done();
                if running && (p.supervisor().is_stopping() || signal == Signal::SIGQUIT) {
                    self.feed(i, Event::Stop(signal), now, queue);
                }
            }
            return;
        }
        let priorities: Vec<u32> = self.programs.iter().map(|p| p.config().priority).collect();
        self.stopping = Some(Stopping {
            signal,
            groups: order::stop_groups(&priorities),
            current: Vec::new(),
        });
        self.to_start.clear();
        self.starting.clear();
        if self.named {
            self.tell_manager(&ManagerMessage::Stopping);
        }
        self.advance_stop(now, queue);
    }

    /// Tells the next group to stop once each program of the group before is done.
    pub(super) fn advance_stop(&mut self, now: Instant, queue: &mut VecDeque<Queued>) {
        loop {
            let Some(stopping) = &self.stopping else {
                return;
            };
            if !stopping.current.iter().all(|&i| self.programs[i].is_idle()) {
                return;
            }
            let signal = stopping.signal;
            let Some(group) = self.stopping.as_mut().and_then(|s| s.groups.pop_front()) else {
                return;
            };
            for &i in &group {
                let p = &self.programs[i];
                if p.run_state() == Run::Started && !p.supervisor().is_done() {
                    self.feed(i, Event::Stop(signal), now, queue);
                }
            }
            if let Some(s) = &mut self.stopping {
                s.current = group;
            }
        }
    }

    /// The master's exit code, once it is done: when it was asked to stop and every program
    /// has stopped, or when every program was started and has ended on its own (gave up:
    /// FATAL with `--on-fatal exit`). A program stopped by name or never started keeps the
    /// master running. The code is the first non-zero exit code of the programs in start
    /// order (for one program: its own, as always), else 0.
    pub(super) fn finished(&self) -> Option<i32> {
        if !self.programs.iter().all(|p| p.is_idle()) {
            return None;
        }
        let ended_on_their_own =
            self.to_start.is_empty() && self.programs.iter().all(|p| p.run_state() == Run::Started);
        if self.stopping.is_none() && !ended_on_their_own {
            return None;
        }
        let priorities: Vec<u32> = self.programs.iter().map(|p| p.config().priority).collect();
        let all = vec![true; priorities.len()];
        let code = order::start_groups(&priorities, &all)
            .into_iter()
            .flatten()
            .filter_map(|i| self.exits[i])
            .find(|&c| c != 0)
            .unwrap_or(0);
        Some(code)
    }

    /// One line about every program, for `STATUS=` upward and the status record:
    /// `web RUNNING, jobs BACKOFF`.
    pub(super) fn summary(&self) -> String {
        self.live_programs()
            .into_iter()
            .map(|i| &self.programs[i])
            .map(|p| {
                let state = match p.run_state() {
                    Run::Started => p.supervisor().state().as_str(),
                    _ => "STOPPED",
                };
                format!("{} {state}", p.name())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// With several programs: what program `i` would tell a service manager becomes the
    /// master's summary. `READY=1` goes once every autostart program has been up; after
    /// that, and before, each change is a `STATUS=` line.
    pub(super) fn tell_manager_summary(&mut self, i: usize, message: &ManagerMessage) {
        if matches!(message, ManagerMessage::Stopping) {
            return; // the master says STOPPING=1 when it stops itself
        }
        let was_ready = self.all_up();
        if matches!(message, ManagerMessage::Ready { .. }) {
            self.ready_each[i] = true;
        }
        let status = self.summary();
        if !was_ready && self.all_up() {
            self.tell_manager(&ManagerMessage::Ready { status });
        } else {
            self.tell_manager(&ManagerMessage::Status { status });
        }
    }

    /// Whether every autostart program has been up.
    pub(super) fn all_up(&self) -> bool {
        self.live_programs()
            .into_iter()
            .all(|i| self.ready_each[i] || !self.programs[i].config().autostart)
    }
}
