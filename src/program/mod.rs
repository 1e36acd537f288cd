//! One program as one value: its settings, its sockets, its supervisor, its readiness channel,
//! its output capture, its file watcher, and what status reports about it.
//!
//! The runtime hosts a set of programs (the command line describes a set of one) and owns the
//! one path into each program's state machine, [`Program::handle`]: the program feeds the
//! event to its supervisor, hands the reports to its own status tracker and watcher, and
//! returns the step with each reload outcome's record, for the runtime to route on (control
//! plane waiters, the service manager, `--daemon` startup).
//!
//! Files: `launch.rs` (spawning a generation, signalling a child), `readiness.rs` (the notify
//! socket and readiness pipes), and here the value itself and its construction.

mod launch;
mod readiness;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Instant;

use anyhow::{anyhow, Context};
use nix::unistd::Pid;
use tracing::warn;

use crate::config::{ProgramConfig, ReadyMode};
use crate::environment::Environment;
use crate::notify::NotifySocket;
use crate::output::Output;
use crate::poll::{PollSet, Polled, Ready, Token};
use crate::sockets::activation::Inherited;
use crate::sockets::{self, Listener};
use crate::status::{Clock, OutputLine, ReloadRecord, SocketRecord, StatusRecord, Tracker};
use crate::supervisor::{Action, Event, ExitStatus, Fleet, Report, Step, Trigger};
use crate::sys::spawn::{self, SpawnOptions};
use crate::watch::Watcher;
use crate::Failure;

/// A program whose settings are checked and whose output files are open, before anything is
/// bound (the first half of the startup order, see [`crate::runtime`]).
pub(crate) struct Prepared {
    config: ProgramConfig,
    options: SpawnOptions,
    output: Output,
}

impl Prepared {
    /// Its settings.
    pub(crate) fn config(&self) -> &ProgramConfig {
        &self.config
    }

    /// Checks what can be wrong about the child before a socket is bound (usage errors, exit
    /// code 2), and opens the output log files (`mirror_stdio`: relaunch's own stdout and
    /// stderr go there too, with `--daemon`).
    pub(crate) fn new(config: ProgramConfig, mirror_stdio: bool) -> Result<Prepared, Failure> {
        launch::check_settings(&config.settings).map_err(|error| Failure { code: 2, error })?;
        let options = launch::spawn_options(&config).map_err(|error| Failure { code: 2, error })?;
        let output = Output::open(&config.output, mirror_stdio)?;
        Ok(Prepared {
            config,
            options,
            output,
        })
    }

    /// The most fds this program holds in the master at once: its sockets, notify socket and
    /// watcher, and per child (two generations of `--workers` during a reload) a pidfd, a
    /// readiness pipe and the output pipes.
    pub(crate) fn open_files(&self) -> u64 {
        let c = &self.config;
        let per_child = 1
            + u64::from(matches!(c.ready, ReadyMode::Fd(_)))
            + if c.output.captures() { 2 } else { 0 };
        let children = 2 * c.settings.workers.max(1) as u64;
        c.listen.len() as u64
            + u64::from(c.ready == ReadyMode::Notify)
            + u64::from(c.watch.is_enabled())
            + children * per_child
    }

    /// Binds (or takes over) the sockets, finds the program, and starts the watcher and the
    /// notify socket: the program is ready to start.
    pub(crate) fn open(
        self,
        inherited: Inherited,
        started: Instant,
        named: bool,
    ) -> Result<Program, Failure> {
        let config = &self.config;
        let span = named.then(|| tracing::info_span!("program", program = %config.name));
        let _entered = span.as_ref().map(tracing::Span::enter);
        // One of several programs may have no sockets at all (a worker); the command line's
        // single program needs some.
        let listeners = if named && config.listen.is_empty() && inherited.activation.is_empty() {
            Vec::new()
        } else {
            sockets::open_all(&config.listen, config.backlog, inherited)?
        };
        self.with_listeners(listeners, started, named)
    }

    /// Like [`Prepared::open`], with the sockets already open (an edited configuration file:
    /// kept and newly bound ones, in the program's order).
    pub(crate) fn with_listeners(
        self,
        listeners: Vec<Listener>,
        started: Instant,
        named: bool,
    ) -> Result<Program, Failure> {
        let Prepared {
            config,
            options,
            mut output,
        } = self;
        // With several programs, every line about this one names it.
        let span = named.then(|| tracing::info_span!("program", program = %config.name));
        let _entered = span.as_ref().map(tracing::Span::enter);
        if named {
            output.name_lines(&config.name);
        }
        sockets::log_listening(&listeners);
        if let ReadyMode::Fd(n) = config.ready {
            let first_free = 3 + listeners.len() as RawFd;
            if n < first_free {
                return Err(Failure {
                    code: 2,
                    error: anyhow!(
                        "--ready fd:{n} collides with the sockets at fds 3..{}; use fd:{first_free} or higher",
                        first_free - 1
                    ),
                });
            }
        }
        // Fail fast, with the shell's exit codes, if the program cannot be found at all: in the
        // children's PATH, as each spawn looks for it.
        let search = Environment::of_program(&config.process)
            .map_err(|e| anyhow!(e))?
            .search_path();
        let program = match spawn::resolve_program(&config.command.program, &search) {
            Ok(program) => program,
            Err(e) => {
                return Err(Failure {
                    code: e.exit_code(),
                    error: anyhow!(e),
                })
            }
        };
        let watch = match config.watch.is_enabled() {
            true => Some(
                Watcher::new(&config.watch, &program, &options, &config.process)
                    .context("starting the file watcher")?,
            ),
            false => None,
        };
        let notify_socket = match config.ready {
            ReadyMode::Notify => {
                // Where the user the children run as can reach it, and nobody else can.
                let children = options.credentials.as_ref().map(|c| (c.uid, c.gid));
                Some(Polled::new(
                    NotifySocket::bind(children).context("creating the notify socket")?,
                ))
            }
            _ => None,
        };
        // The supervisor is pure: its backoff jitter gets its randomness from here.
        let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Ok(Program {
            supervisor: Fleet::with_seed(config.settings, seed),
            seed,
            span: span.clone(),
            run: Run::NotStarted,
            up_since: None,
            config,
            listeners,
            options,
            status: Tracker::new(started),
            pidfds: HashMap::new(),
            notify_socket,
            ready_pipes: Vec::new(),
            output,
            watch,
        })
    }
}

/// One supervised program. See the module docs.
pub(crate) struct Program {
    config: ProgramConfig,
    listeners: Vec<Listener>,
    options: SpawnOptions,
    /// Its state machine: one supervisor per worker (`--workers`).
    supervisor: Fleet,
    /// What status and metrics report, kept from the supervisor's reports.
    status: Tracker,
    /// A pidfd per live child, where the kernel has them: signals go through it, so they can
    /// never reach a process that reused a child's pid. Closed when the child is reaped.
    pidfds: HashMap<Pid, OwnedFd>,
    /// The socket children send sd_notify messages to (`--ready notify`).
    notify_socket: Option<Polled<NotifySocket>>,
    /// Read ends of the children's readiness pipes (`--ready fd:N`), until they say ready.
    ready_pipes: Vec<(Pid, Polled<OwnedFd>)>,
    /// The children's captured output.
    output: Output,
    /// The file watcher (`--watch`, `--watch-path`).
    watch: Option<Watcher>,
    /// The seed of the backoff jitter (a supervisor made for a start by name gets the next).
    seed: u64,
    /// With several programs: the span that names this program in every log line.
    span: Option<tracing::Span>,
    /// Whether it was started, and whether it was stopped by name.
    run: Run,
    /// When the generation serving now came up (for the status table's UPTIME).
    up_since: Option<Instant>,
}

/// Where a program is in its life, as the master (not its supervisor) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// Not started yet: waiting for its turn in the start order, or `autostart = false`.
    NotStarted,
    /// Started: its supervisor runs it (until its supervisor is done).
    Started,
    /// Stopped by name (`relaunch stop NAME`): its sockets stay open for a `start`.
    Stopped,
}

/// What one step of a program produced: the actions to carry out, and the reports, each with
/// the status record of a reload attempt that ended.
#[derive(Debug, Default)]
pub(crate) struct Handled {
    /// What the runtime must do, in order.
    pub(crate) actions: Vec<Action>,
    /// What happened, in order; a [`Report::ReloadEnded`] comes with its record.
    pub(crate) reports: Vec<(Report, Option<ReloadRecord>)>,
}

/// The tokens of one poll round.
#[derive(Debug, Default)]
pub(crate) struct ProgramTokens {
    notify: Option<Token>,
    pipes: Vec<Token>,
    output: Vec<Token>,
}

/// What `poll` found for one program.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Readable {
    /// Its notify socket has messages.
    pub(crate) notify: bool,
    /// A readiness pipe has something.
    pub(crate) pipes: bool,
    /// An output pipe has something.
    pub(crate) output: bool,
}

impl Program {
    /// Its settings.
    pub(crate) fn config(&self) -> &ProgramConfig {
        &self.config
    }

    /// Its state machine, read-only: every change goes through [`Program::handle`].
    pub(crate) fn supervisor(&self) -> &Fleet {
        &self.supervisor
    }

    /// Its status tracker (for metrics).
    pub(crate) fn status(&self) -> &Tracker {
        &self.status
    }

    /// Its sockets, in the order of its fds 3, 4, ...
    pub(crate) fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Makes this program (not started yet) the successor of `previous`, the same program
    /// under its old settings: its generation numbers continue after `previous`'s.
    pub(crate) fn succeed(&mut self, previous: &Program) {
        self.supervisor = Fleet::successor(&previous.supervisor, self.config.settings, self.seed);
    }

    /// Its sockets, as the status record lists them.
    pub(crate) fn socket_records(&self) -> Vec<SocketRecord> {
        self.listeners
            .iter()
            .enumerate()
            .map(|(i, l)| SocketRecord {
                fd: 3 + i as i32,
                name: l.name.clone(),
                kind: l.kind.to_string(),
                address: l.local_addr.clone(),
            })
            .collect()
    }

    /// Its status record, with the master's fields from `base`.
    pub(crate) fn record(&self, base: &StatusRecord, now: Instant) -> StatusRecord {
        self.status
            .record(&self.supervisor, base, &Clock::now(), now)
    }

    /// The first step: spawn generation 1 (or, for a program stopped by name and started
    /// again, the next generation, with a fresh restart policy).
    pub(crate) fn start(&mut self, now: Instant) -> Handled {
        if self.supervisor.is_done() {
            self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            self.supervisor = Fleet::after(&self.supervisor, self.seed);
        }
        self.run = Run::Started;
        let step = self.supervisor.start(now);
        self.absorb(step, now)
    }

    /// Its name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// With several programs: the span that names it, to enter around its work.
    pub(crate) fn span(&self) -> Option<tracing::Span> {
        self.span.clone()
    }

    /// Where it is in its life (see [`Run`]).
    pub(crate) fn run_state(&self) -> Run {
        self.run
    }

    /// Marks it stopped by name (its supervisor is told to stop by the caller).
    pub(crate) fn stopped_by_name(&mut self) {
        self.run = Run::Stopped;
    }

    /// Whether it has nothing running and nothing to do: never started, or its supervisor
    /// finished.
    pub(crate) fn is_idle(&self) -> bool {
        self.run == Run::NotStarted || self.supervisor.is_done()
    }

    /// Its record for a status with several programs: `name` is the program's, and a
    /// program that does not run (not started, or stopped by name) is `STOPPED`.
    pub(crate) fn named_record(&self, base: &StatusRecord, now: Instant) -> StatusRecord {
        let mut record = self.record(base, now);
        record.name = self.config.name.clone();
        record.sockets = self.socket_records();
        record.control = None;
        record.version = String::new();
        // A program's uptime: how long the generation serving now has been up.
        let serving = self.supervisor.current().is_some() && !self.supervisor.is_done();
        record.uptime_secs = match (serving, self.up_since) {
            (true, Some(since)) => now.saturating_duration_since(since).as_secs_f64(),
            _ => 0.0,
        };
        if self.is_idle() && self.run != Run::Started {
            record.state = "STOPPED".into();
            record.state_reason = match self.run {
                Run::Stopped => "stopped by name; its sockets stay open".into(),
                _ if self.config.autostart => "waiting for its turn to start".into(),
                _ => "autostart = false: waiting for relaunch start".into(),
            };
        }
        record
    }

    /// The one path into the state machine: feeds `event`, and hands the reports to the
    /// status tracker and the watcher before returning them.
    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Handled {
        let step = self.supervisor.handle(event, now);
        self.absorb(step, now)
    }

    /// Sends `signal` to worker `worker` of the current generation alone (`signal --worker`).
    pub(crate) fn signal_worker(
        &mut self,
        worker: usize,
        signal: nix::sys::signal::Signal,
        now: Instant,
    ) -> Handled {
        let step = self.supervisor.signal_worker(worker, signal, now);
        self.absorb(step, now)
    }

    fn absorb(&mut self, step: Step, now: Instant) -> Handled {
        let clock = Clock::now();
        let mut reports = Vec::with_capacity(step.reports.len());
        for report in step.reports {
            let record = self.status.on(&report, &clock, now);
            if let Report::Ready { .. } = report {
                self.up_since = Some(now);
            }
            if let (
                Report::ReloadEnded {
                    generation,
                    failure,
                    ..
                },
                Some(watch),
            ) = (&report, &mut self.watch)
            {
                watch.reload_done(*generation, failure.is_none());
            }
            let record = match (&report, record) {
                (
                    Report::ReloadEnded {
                        generation,
                        failure: Some(_),
                        reason,
                        ..
                    },
                    Some(record),
                ) => Some(self.with_output_tail(*generation, reason, record)),
                (_, record) => record,
            };
            reports.push((report, record));
        }
        Handled {
            actions: step.actions,
            reports,
        }
    }

    /// A failed reload's record, with the last lines the failed generation wrote (kept in
    /// status and logged with the reason).
    fn with_output_tail(
        &mut self,
        generation: u64,
        reason: &str,
        mut record: ReloadRecord,
    ) -> ReloadRecord {
        let tail: Vec<OutputLine> = self
            .output
            .tail(generation)
            .into_iter()
            .map(|l| OutputLine {
                stream: l.stream.to_owned(),
                line: l.line,
            })
            .collect();
        if !tail.is_empty() {
            let shown: Vec<String> = tail
                .iter()
                .map(|l| format!("{}: {}", l.stream, l.line))
                .collect();
            warn!(
                generation,
                reason = %reason,
                output_tail = ?shown,
                "last output of the failed generation"
            );
            self.status.set_output_tail(generation, &tail);
        }
        record.output_tail = tail;
        record
    }

    /// Whether `pid` is one of this program's processes (a generation, or a check command of
    /// its watcher).
    pub(crate) fn owns(&self, pid: Pid) -> bool {
        self.supervisor.children().any(|c| c.pid == pid)
    }

    /// `pid` was reaped: forgets its pidfd and readiness pipe. Returns whether the exit is
    /// the watcher's own (a `--check-cmd` process), not an event for the supervisor.
    pub(crate) fn reaped(&mut self, pid: Pid, status: ExitStatus) -> bool {
        if let Some(watch) = &mut self.watch {
            if watch.reaped(pid, status) {
                return true;
            }
        }
        // What it wrote before it died is read now, for the report of its exit.
        self.output.drain_child(pid);
        self.ready_pipes.retain(|(p, _)| *p != pid);
        self.pidfds.remove(&pid);
        false
    }

    /// A reload the watcher asks for, once a change has settled.
    pub(crate) fn watch_poll(&mut self, now: Instant) -> Option<Trigger> {
        self.watch.as_mut().and_then(|w| w.poll(now))
    }

    /// The nearest deadline: the supervisor's and the watcher's.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.supervisor.next_deadline(),
            self.watch.as_ref().and_then(Watcher::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Registers the fds to poll this round.
    pub(crate) fn register<'a>(&'a self, set: &mut PollSet<'a>) -> ProgramTokens {
        if let Some(watch) = &self.watch {
            // It wakes the loop; the watcher reads its fd itself in `watch_poll`.
            set.add(watch);
        }
        ProgramTokens {
            notify: self.notify_socket.as_ref().map(|s| set.add(s)),
            pipes: self.ready_pipes.iter().map(|(_, fd)| set.add(fd)).collect(),
            output: self.output.poll_sources().map(|fd| set.add(fd)).collect(),
        }
    }

    /// What `poll` found for this program's tokens. (The watcher reads its own fd in
    /// [`Program::watch_poll`].)
    pub(crate) fn readable(ready: &Ready, tokens: &ProgramTokens) -> Readable {
        Readable {
            notify: tokens.notify.is_some_and(|t| ready.any(t)),
            pipes: tokens.pipes.iter().any(|t| ready.any(*t)),
            output: tokens.output.iter().any(|t| ready.any(*t)),
        }
    }

    /// Copies what the children wrote into the log files (a bounded amount per pipe).
    pub(crate) fn drain_output(&mut self) {
        self.output.drain();
    }

    /// Whether the children's output is captured into log files.
    pub(crate) fn captures_output(&self) -> bool {
        self.output.is_capturing()
    }

    /// Reopens the log files (SIGUSR1, logrotate's postrotate).
    pub(crate) fn reopen_output(&mut self) {
        self.output.reopen();
    }

    /// Flushes what is left of the children's output, at exit.
    pub(crate) fn finish_output(&mut self) {
        self.output.finish();
    }
}
