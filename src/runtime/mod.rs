//! The master's event loop: one thread, one wait (epoll, see [`crate::poll`]), one deadline.
//!
//! It binds the sockets, installs the signal handlers, then alternates between waiting (on the
//! signal self-pipe, each program's notify socket, readiness pipes and output pipes, and the
//! control socket and metrics connections, registered in one [`PollSet`] each round and waited
//! on by the [`Poller`], which keeps one epoll list in step with them, until the nearest
//! deadline) and feeding what happened to the programs ([`Program::handle`], the one
//! path into each state machine), carrying out the actions they return and routing what they
//! report: to the control plane's waiters, to relaunch's own service manager
//! ([`ServiceManager`]), and to the `--daemon` startup. Each wake-up handles, in this order: the children's captured output (a bounded
//! amount per pipe, see [`crate::output`]), reaped children (every one, including orphans
//! when relaunch is PID 1 or a subreaper), then readiness messages, then signals, then due
//! deadlines. The sockets are owned here and stay open until `run` returns; dropping them
//! then removes the socket files relaunch created (after the children are gone).
//!
//! Startup order: log files (so `--daemon` has its log from the start), pid-file check,
//! sockets, pid file, first spawn. With `--daemon`, the waiting shell command is told once the
//! first generation is running; if it fails to come up instead, relaunch stops it, removes the
//! pid file and exits, and only then tells the shell command why.
//!
//! An idle master arms no timer at all: it waits without a timeout unless the supervisor
//! has a deadline (a child starting, stopping or backing off), relaunch's own service
//! manager asked for watchdog pings, or a watched file's change is settling.
//!
//! With `--watch`/`--watch-path`, a [`Watcher`] adds its inotify fd to the poll set and its
//! deadline to the timeout; it claims the exits of its `--check-cmd` processes from the reaped
//! ones, turns settled changes into [`Trigger::Watch`] reloads, and is told which files each
//! generation is spawned from and how each reload ended ([`Report::ReloadEnded`]).

mod apply;
mod embed;
mod order;
mod serve;
mod startup;

pub(crate) use embed::{run_embedded, Claim, Edit, EditKind};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, error, info};

use crate::config::Config;
use crate::control::Control;
use crate::daemon::Startup;
use crate::notify::{self, Manager};
use crate::pidfile::{self, PidFile};
use crate::poll::{PollSet, Poller};
use crate::program::{Handled, Prepared, Program, Run};
use crate::signals::Signals;
use crate::sockets::activation;
use crate::supervisor::{
    Action, Event, ExitStatus, ManagerMessage, Phase, Report, ServiceManager, Trigger,
};
use crate::sys::fds;
use crate::Failure;

/// What a library caller's master is driven by: the inbox of its handles' requests, and the
/// programs they add and remove.
type Local = (
    crate::control::local::Inbox,
    std::sync::mpsc::Receiver<Edit>,
);

/// Runs the master until it stops; returns the exit code (the last current child's status).
/// With `startup` (`--daemon`), reports to the waiting shell command whether the first
/// generation came up; a failure is reported only after everything is cleaned up.
/// `read` reads the configuration file again (`Config::source`) on SIGHUP. `local` carries a
/// library handle's requests when the master is driven by a [`crate::api::Handle`] too;
/// `named`: the several-programs status shape even for one program (a master built in code).
/// Called through [`crate::api::Master`], which the command line uses as well.
pub(crate) fn run_reporting(
    config: Config,
    startup: Option<Startup>,
    read: ReadConfig,
    local: Option<Local>,
    named: bool,
) -> Result<i32, Failure> {
    let mut startup = startup;
    let output = &config.program().output;
    let own_log = output
        .stderr_log
        .clone()
        .or_else(|| output.stdout_log.clone().filter(|_| output.redirect_stderr));
    let result = match Claim::take() {
        Ok(claim) => run_master(config, &mut startup, read, local, named, claim),
        Err(e) => Err(Failure::from(anyhow!(e))),
    };
    if let Some(startup) = startup {
        let (code, mut message) = match &result {
            Err(failure) => (failure.code, format!("{:#}", failure.error)),
            Ok(code) => (
                *code,
                startup.reason.clone().unwrap_or_else(|| {
                    format!("relaunch stopped (exit code {code}) before the server was up")
                }),
            ),
        };
        let code = if startup.reason.is_some() && code == 0 {
            1
        } else {
            code
        };
        if let Some(log) = own_log {
            message.push_str(&format!(" (relaunch's log: {})", log.display()));
        }
        startup.failed(code, &message);
    }
    result
}

/// Reads a configuration file: the valid configuration, or the error (file, line, key).
pub type ReadConfig = fn(&std::path::Path) -> Result<Config, String>;

fn run_master(
    config: Config,
    startup: &mut Option<Startup>,
    read: ReadConfig,
    local: Option<Local>,
    named: bool,
    _claim: Claim,
) -> Result<i32, Failure> {
    let started = Instant::now();
    // Programs managed from code are always named (status lists them, requests name them).
    let named = config.named() || named;
    let edits = apply::Edits::new(&config, started);
    let Config {
        pid_file,
        daemon,
        name,
        control,
        programs,
        source,
    } = config;
    // First, before relaunch opens any fd of its own: take over the sockets of socket
    // activation and of `--listen fd:N` (sanitizing then leaves them close-on-exec too).
    let specs: Vec<_> = programs.iter().flat_map(|p| p.listen.clone()).collect();
    let inherited = activation::take_inherited(&specs)?;
    fds::sanitize_inherited_fds(&[]).context("preparing inherited file descriptors")?;
    // Everything about the child that can be wrong is checked before a socket is bound; the
    // log files are opened first, so `--daemon` has its log from the start.
    let prepared = programs
        .into_iter()
        .map(|p| Prepared::new(p, daemon))
        .collect::<Result<Vec<_>, _>>()?;
    // Every program's fds together, before any is opened (each program's sockets alone are
    // checked as they are bound): 1,000 programs of one socket need thousands.
    crate::sockets::ensure_open_files(prepared.iter().map(Prepared::open_files).sum())?;
    let manager = Manager::from_env().context("reading NOTIFY_SOCKET")?;
    if let Some(path) = &pid_file {
        pidfile::check(path)?;
    }
    let mut signals = Signals::install().context("installing signal handlers")?;
    crate::sys::spawn::snapshot_signal_dispositions();
    let poller = Poller::new().context("creating the epoll instance")?;
    // Each program gets its share of the inherited sockets (the command line's one program
    // gets every one).
    let lists: Vec<&[crate::spec::ListenSpec]> = prepared
        .iter()
        .map(|p| p.config().listen.as_slice())
        .collect();
    let shares = activation::share(inherited, &lists)?;
    let programs = prepared
        .into_iter()
        .zip(shares)
        .map(|(p, share)| p.open(share, started, named))
        .collect::<Result<Vec<_>, _>>()?;
    // Removed when this function returns, before a failed start is reported to the shell.
    let _pid_file = pid_file.as_deref().map(PidFile::write).transpose()?;
    let sockets = programs.iter().flat_map(Program::socket_records).collect();
    let mut control = Control::new(&name, &control, sockets, programs.len())?;
    let api_edits = local.map(|(inbox, edits)| {
        control.attach(inbox);
        edits
    });
    let count = programs.len();
    let mut master = Master {
        poller,
        control,
        named,
        to_start: VecDeque::new(),
        starting: Vec::new(),
        stopping: None,
        exits: vec![None; count],
        upward_each: vec![ServiceManager::default(); count],
        ready_each: vec![false; count],
        programs,
        next_watchdog: manager
            .as_ref()
            .and_then(|m| m.watchdog_every)
            .map(|every| Instant::now() + every),
        manager,
        upward: ServiceManager::default(),
        startup: startup.take(),
        first: None,
        first_program: 0,
        source,
        read,
        config_error: None,
        busy: true,
        started,
        removing: Vec::new(),
        api_edits,
        edits,
    };
    let result = master.run(&mut signals);
    *startup = master.startup.take();
    result
}

/// The running master: its programs, its control plane, and what it tells its own service
/// manager and the `--daemon` shell command.
struct Master {
    /// What the loop waits with: an epoll list kept in step with the fds registered each round.
    poller: Poller,
    /// The programs (the command line's set of one).
    programs: Vec<Program>,
    /// The control socket and metrics endpoint (see [`crate::control`]).
    control: Control,
    /// relaunch's own service manager, if `NOTIFY_SOCKET` named one.
    manager: Option<Manager>,
    /// What to tell that manager, worked out from the programs' reports.
    upward: ServiceManager,
    /// When the next `WATCHDOG=1` is due.
    next_watchdog: Option<Instant>,
    /// With `--daemon`: the shell command waiting to hear whether the first generation is up.
    startup: Option<Startup>,
    /// While `startup` waits: the first child's pid, and its exit status once reaped.
    first: Option<(Pid, Option<ExitStatus>)>,
    /// The program of that first child.
    first_program: usize,
    /// The configuration file (`--config`), read again on SIGHUP and `reload` without names.
    source: Option<std::path::PathBuf>,
    /// How to read it.
    read: ReadConfig,
    /// Why the file last read could not be applied; `None` once a valid file is loaded.
    config_error: Option<String>,
    /// When the master started (programs added later count their uptime from it).
    started: Instant,
    /// Programs being removed by a library caller: removed once idle, then the caller hears.
    removing: Vec<embed::Removing>,
    /// Programs to add or remove, from library callers.
    api_edits: Option<std::sync::mpsc::Receiver<Edit>>,
    /// Edits of the configuration file being applied (see `apply.rs`).
    edits: apply::Edits,
    /// Whether the programs run by name (several, or a config file): logs and status name them.
    named: bool,
    /// The groups of programs still to start, in priority order.
    to_start: VecDeque<Vec<usize>>,
    /// The group started last: the next starts once each of these is up or has failed.
    starting: Vec<usize>,
    /// Once the master stops: the groups still to stop, in reverse priority order.
    stopping: Option<Stopping>,
    /// Each program's exit code, once its supervisor is done.
    exits: Vec<Option<i32>>,
    /// With several programs: what each program would tell a service manager of its own; the
    /// master sends one summary upward.
    upward_each: Vec<ServiceManager>,
    /// With several programs: which programs have been up (READY goes upward once every
    /// autostart program has).
    ready_each: Vec<bool>,
    /// Whether the last wait had a deadline (something scheduled: a start, a reload, a stop, a
    /// control client). The first wait without one gives the free heap back to the kernel.
    busy: bool,
}

/// The master's stop, group by group in reverse priority order.
#[derive(Debug)]
struct Stopping {
    /// The signal that asked for it.
    signal: Signal,
    /// The groups not yet told to stop.
    groups: VecDeque<Vec<usize>>,
    /// The group being stopped: the next is told once each of these is done.
    current: Vec<usize>,
}

/// An action of one program (by its index).
type Queued = (usize, Action);

impl Master {
    fn run(&mut self, signals: &mut Signals) -> Result<i32, Failure> {
        let mut queue: VecDeque<Queued> = VecDeque::new();
        let priorities: Vec<u32> = self.programs.iter().map(|p| p.config().priority).collect();
        let autostart: Vec<bool> = self.programs.iter().map(|p| p.config().autostart).collect();
        self.to_start = order::start_groups(&priorities, &autostart);
        loop {
            self.execute(&mut queue);
            self.advance_stop(Instant::now(), &mut queue);
            self.advance_start(Instant::now(), &mut queue);
            self.advance_edits(Instant::now(), &mut queue);
            if !queue.is_empty() {
                continue;
            }
            self.finish_removals();
            if let Some(code) = self.finished() {
                self.control.exit(code);
                for program in &mut self.programs {
                    program.finish_output();
                }
                return Ok(code);
            }
            if let Some(signal) = self.check_startup() {
                self.stop_master(signal, Instant::now(), &mut queue);
                continue;
            }
            let mut set = PollSet::new();
            let signal_token = set.add(&*signals);
            let program_tokens: Vec<_> =
                self.programs.iter().map(|p| p.register(&mut set)).collect();
            let control_tokens = self.control.register(&mut set);
            let deadline = self.deadline();
            if deadline.is_none() && std::mem::replace(&mut self.busy, false) {
                // Idle now, after a startup, a reload or a request: what they allocated and
                // freed, the code they ran and the stack they reached need not stay resident
                // while the master waits.
                crate::sys::memory::release_idle_memory();
            }
            self.busy |= deadline.is_some();
            let ready = self
                .poller
                .wait(set, deadline)
                .map_err(|e| anyhow!("epoll: {e}"))?;
            let _ = signal_token; // the signal pipe is drained every round
            let readable: Vec<_> = program_tokens
                .iter()
                .map(|t| Program::readable(&ready, t))
                .collect();
            for (program, r) in self.programs.iter_mut().zip(&readable) {
                if r.output {
                    program.drain_output();
                }
            }
            let now = Instant::now();
            let mut events: Vec<(usize, Event)> = Vec::new();
            let pending = signals.drain();
            // Reap first: a child that died just before its deadline must not be promoted.
            for (pid, status) in reap() {
                if let Some(i) = self.owner(pid, status) {
                    events.push((i, Event::Exited { pid, status }));
                }
            }
            for (i, r) in readable.iter().enumerate() {
                if r.notify {
                    events.extend(self.programs[i].notifications().into_iter().map(|e| (i, e)));
                }
                if r.pipes {
                    events.extend(
                        self.programs[i]
                            .ready_pipe_events()
                            .into_iter()
                            .map(|e| (i, e)),
                    );
                }
            }
            for (i, program) in self.programs.iter_mut().enumerate() {
                if let Some(trigger) = program.watch_poll(now) {
                    events.push((i, Event::Reload(trigger)));
                }
            }
            let mut stop = Vec::new();
            let mut pending = pending;
            // With a configuration file, SIGHUP applies it (and so reloads every program).
            let hangup = self.source.is_some() && pending.contains(&Signal::SIGHUP);
            if hangup {
                pending.retain(|s| *s != Signal::SIGHUP);
            }
            for sig in pending {
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                    stop.push(sig);
                    continue;
                }
                for i in 0..self.programs.len() {
                    if self.programs[i].run_state() != Run::Started {
                        continue; // not running: nothing to reload or forward to
                    }
                    match sig {
                        Signal::SIGCHLD => {}
                        Signal::SIGHUP => events.push((i, Event::Reload(Trigger::Signal(sig)))),
                        // Capturing output: USR1 reopens the log files (logrotate's postrotate).
                        Signal::SIGUSR1 if self.programs[i].captures_output() => {
                            self.programs[i].reopen_output()
                        }
                        other => events.push((i, Event::Forward(other))),
                    }
                }
            }
            for (i, event) in events {
                self.feed(i, event, now, &mut queue);
            }
            if hangup {
                self.hangup(now, &mut queue);
            }
            for sig in stop {
                self.stop_master(sig, now, &mut queue);
            }
            // Control requests see this wake-up's exits and signals already handled.
            let asks = {
                let live = self.live_programs();
                let (programs, named) = (&self.programs, self.named);
                self.control
                    .io(&ready, &control_tokens, now, || match named {
                        false => {
                            crate::metrics::render(programs[0].status(), programs[0].supervisor())
                        }
                        true => crate::metrics::render_named(
                            &live
                                .iter()
                                .map(|&i| &programs[i])
                                .map(|p| (p.name(), p.status(), p.supervisor()))
                                .collect::<Vec<_>>(),
                        ),
                    })
            };
            for asked in asks {
                self.serve(asked, now, &mut queue);
            }
            self.apply_api_edits(now, &mut queue);
            for i in 0..self.programs.len() {
                // A program not started yet has no clock running.
                if self.programs[i].run_state() != Run::NotStarted {
                    self.feed(i, Event::Tick, now, &mut queue);
                }
            }
            self.watchdog(now);
        }
    }

    /// The program a reaped process belongs to, with the bookkeeping of the reap done; `None`
    /// for a watcher's check command. Orphans adopted by relaunch (as PID 1 or subreaper) go to
    /// the first program, which logs and ignores them.
    fn owner(&mut self, pid: Pid, status: ExitStatus) -> Option<usize> {
        let i = self.programs.iter().position(|p| p.owns(pid)).unwrap_or(0);
        if self.programs.iter_mut().any(|p| p.reaped(pid, status)) {
            return None; // a watcher's check command: its exit is its own
        }
        if let Some((first, exit)) = &mut self.first {
            if *first == pid {
                *exit = Some(status);
            }
        }
        Some(i)
    }

    /// The one path into a program's state machine: feeds `event` to program `i`, routes
    /// what it reported, and queues its actions.
    fn feed(&mut self, i: usize, event: Event, now: Instant, queue: &mut VecDeque<Queued>) {
        let span = self.programs[i].span();
        let _entered = span.as_ref().map(tracing::Span::enter);
        let handled = self.programs[i].handle(event, now);
        let actions = self.route(i, handled, now);
        queue.extend(actions.into_iter().map(|a| (i, a)));
    }

    /// Starts program `i` (its first generation, or the next after a stop by name).
    fn start_program(&mut self, i: usize, now: Instant, queue: &mut VecDeque<Queued>) {
        let span = self.programs[i].span();
        let _entered = span.as_ref().map(tracing::Span::enter);
        self.exits[i] = None;
        let handled = self.programs[i].start(now);
        let actions = self.route(i, handled, now);
        queue.extend(actions.into_iter().map(|a| (i, a)));
    }

    /// Routes a step's reports (control waiters, the service manager upward, `--daemon`
    /// startup) and returns its actions.
    fn route(&mut self, i: usize, handled: Handled, now: Instant) -> Vec<Action> {
        self.publish(i, &handled.reports);
        for (report, record) in &handled.reports {
            self.control.on(i, report, record.as_ref(), now);
            self.edit_report(i, report);
            if self.named {
                if let Some(message) = self.upward_each[i].on(report) {
                    self.tell_manager_summary(i, &message);
                }
            } else if let Some(message) = self.upward.on(report) {
                self.tell_manager(&message);
            }
            if let Report::Spawned { pid, .. } = report {
                if self.startup.is_some() && self.first.is_none() {
                    self.first = Some((*pid, None));
                    self.first_program = i;
                }
            }
            if let Report::ReloadEnded {
                generation,
                failure,
                reason,
                ..
            } = report
            {
                debug!(generation, ok = failure.is_none(), reason = %reason, "reload attempt ended");
            }
        }
        handled.actions
    }

    /// Feeds `event` to program `i` and returns its reports (for the control plane).
    fn feed_for(
        &mut self,
        i: usize,
        event: Event,
        now: Instant,
        queue: &mut VecDeque<Queued>,
    ) -> Vec<Report> {
        let span = self.programs[i].span();
        let _entered = span.as_ref().map(tracing::Span::enter);
        let handled = self.programs[i].handle(event, now);
        let reports = handled.reports.iter().map(|(r, _)| r.clone()).collect();
        let actions = self.route(i, handled, now);
        queue.extend(actions.into_iter().map(|a| (i, a)));
        reports
    }

    /// Carries out actions in order; a spawn's result is fed back before the next action.
    /// A program whose supervisor asks to exit is done; [`Master::finished`] says whether
    /// the master is.
    fn execute(&mut self, queue: &mut VecDeque<Queued>) {
        while let Some((i, action)) = queue.pop_front() {
            let span = self.programs[i].span();
            let _entered = span.as_ref().map(tracing::Span::enter);
            match action {
                Action::Spawn { generation, worker } => {
                    let result = self.programs[i]
                        .spawn(generation, worker)
                        .map_err(|failed| {
                            if let (Some(startup), Some(why)) = (&mut self.startup, failed.startup)
                            {
                                startup.reason = Some(why);
                            }
                            failed.failure
                        });
                    let now = Instant::now();
                    let handled = self.programs[i].handle(
                        Event::Spawned {
                            generation,
                            worker,
                            result,
                        },
                        now,
                    );
                    let more = self.route(i, handled, now);
                    // The spawn's consequences come before anything queued after it.
                    for a in more.into_iter().rev() {
                        queue.push_front((i, a));
                    }
                }
                Action::Signal { pid, signal, group } => self.programs[i].send(pid, signal, group),
                Action::Exit { code } => self.exits[i] = Some(code),
            }
        }
    }

    /// With `--daemon`, until the shell command has its answer: reports success once the
    /// first child runs; if it is gone before that, records why and returns the event that
    /// stops relaunch (the answer is sent once everything is cleaned up, see [`run`]).
    fn check_startup(&mut self) -> Option<Signal> {
        if self.named {
            return self.check_startup_named();
        }
        let startup = self.startup.as_mut()?;
        if startup.reason.is_some() {
            return None; // already failed; stopping
        }
        let (first, exit) = self.first?;
        let program = &self.programs[self.first_program];
        let supervisor = program.supervisor();
        match supervisor.current() {
            // With several workers, every one of them must be up.
            Some(c)
                if c.pid == first
                    && c.phase == Phase::Running
                    && supervisor.workers_up() == supervisor.count() =>
            {
                info!(generation = c.generation, pid = %c.pid, "the server is up; detached");
                if let Some(startup) = self.startup.take() {
                    startup.succeeded();
                }
                None
            }
            Some(c) if c.pid == first => None,
            _ => {
                let what = match exit {
                    Some(status) => format!("exited with {status}"),
                    None => "was stopped".to_owned(),
                };
                let mut reason =
                    format!("the server (generation 1, pid {first}) {what} before it was up");
                let settings = &program.config().settings;
                if exit.is_none() && settings.ready_signal {
                    reason.push_str(&format!(
                        " (not ready within --ready-timeout {:?})",
                        settings.ready_timeout
                    ));
                }
                if supervisor.is_stopping() {
                    reason = "relaunch was asked to stop before the server was up".to_owned();
                }
                error!(reason = %reason, "not detaching: the first generation did not come up; stopping");
                let stopping = supervisor.is_stopping();
                startup.reason = Some(reason);
                (!stopping).then_some(Signal::SIGTERM)
            }
        }
    }

    fn tell_manager(&mut self, message: &ManagerMessage) {
        let Some(manager) = &mut self.manager else {
            return;
        };
        let text = match message {
            ManagerMessage::Ready { status } => {
                format!("READY=1\nMAINPID={}\nSTATUS={status}", std::process::id())
            }
            ManagerMessage::Reloading { status } => format!(
                "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}",
                notify::monotonic_usec()
            ),
            ManagerMessage::Stopping => "STOPPING=1\nSTATUS=stopping".to_owned(),
            ManagerMessage::Status { status } => format!("STATUS={status}"),
        };
        manager.send(&text);
    }

    /// Pings the manager's watchdog, at half its interval, while every program's current
    /// generation is running.
    fn watchdog(&mut self, now: Instant) {
        let live = self.live_programs();
        let (Some(due), Some(manager)) = (self.next_watchdog, &mut self.manager) else {
            return;
        };
        if now < due {
            return;
        }
        let every = manager.watchdog_every.unwrap_or(Duration::from_secs(1));
        self.next_watchdog = Some(now + every);
        let running = live.iter().map(|&i| &self.programs[i]).all(|p| {
            let sup = p.supervisor();
            sup.current().is_some_and(|c| c.phase == Phase::Running) && !sup.is_stopping()
        });
        if running {
            manager.send("WATCHDOG=1");
        }
    }

    /// The nearest deadline of anything: the programs', the watchdog's, the control plane's.
    fn deadline(&self) -> Option<Instant> {
        self.programs
            .iter()
            .filter_map(Program::next_deadline)
            .chain(self.next_watchdog)
            .chain(self.control.next_deadline(Instant::now()))
            .min()
    }
}

/// Reaps every child that has exited, ours or adopted.
fn reap() -> Vec<(Pid, ExitStatus)> {
    let mut exits = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => exits.push((pid, ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                exits.push((pid, ExitStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) => break,
            Ok(_) => continue, // stopped/continued: not reported without WUNTRACED
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: no children at all
        }
    }
    exits
}
