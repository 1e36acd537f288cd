//! The master's event loop: one thread, one `poll`, one deadline.
//!
//! It binds the sockets, installs the signal handlers, then alternates between waiting (on the
//! signal self-pipe, the notify socket, the children's readiness pipes, their output pipes,
//! and the control socket and metrics connections, until the nearest deadline) and feeding what happened to the [`Supervisor`], carrying out the actions it
//! returns. Each wake-up handles, in this order: the children's captured output (a bounded
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
//! An idle master arms no timer at all: `poll` waits without a timeout unless the supervisor
//! has a deadline (a child starting, stopping or backing off), relaunch's own service
//! manager asked for watchdog pings, or a watched file's change is settling.
//!
//! With `--watch`/`--watch-path`, a [`Watcher`] adds its inotify fd to the poll set and its
//! deadline to the timeout; it claims the exits of its `--check-cmd` processes from the reaped
//! ones, turns settled changes into [`Trigger::Watch`] reloads, and is told which files each
//! generation is spawned from and how each reload ended ([`Action::ReloadDone`]).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::activation;
use crate::config::{Config, ReadyMode};
use crate::control::Control;
use crate::daemon::Startup;
use crate::notify::{self, Manager, Note, NotifySocket};
use crate::output::Output;
use crate::pidfile::{self, PidFile};
use crate::process;
use crate::signals::Signals;
use crate::sockets::{self, Listener};
use crate::spawn::{self, Extras, PassFd, SpawnError, SpawnOptions, Step};
use crate::supervisor::{
    Action, Event, ExitStatus, ManagerMessage, Phase, SpawnFailure, Supervisor, Trigger,
};
use crate::watch::Watcher;
use crate::Failure;

/// Runs the master until it stops; returns the exit code (the last current child's status).
/// With `startup` (`--daemon`), reports to the waiting shell command whether the first
/// generation came up; a failure is reported only after everything is cleaned up.
pub fn run(config: Config, startup: Option<Startup>) -> Result<i32, Failure> {
    let mut startup = startup;
    let own_log = config.output.stderr_log.clone().or_else(|| {
        config
            .output
            .stdout_log
            .clone()
            .filter(|_| config.output.redirect_stderr)
    });
    let result = run_master(config, &mut startup);
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

fn run_master(config: Config, startup: &mut Option<Startup>) -> Result<i32, Failure> {
    let started = Instant::now();
    // First, before relaunch opens any fd of its own: take over the sockets of socket
    // activation and of `--listen fd:N` (sanitizing then leaves them close-on-exec too).
    let inherited = activation::take_inherited(&config.listen)?;
    spawn::sanitize_inherited_fds(&[]).context("preparing inherited file descriptors")?;
    // Everything about the child that can be wrong is checked before a socket is bound.
    check_settings(&config.settings).map_err(|error| Failure { code: 2, error })?;
    let options = spawn_options(&config).map_err(|error| Failure { code: 2, error })?;
    let output = Output::open(&config.output, config.daemon)?;
    let manager = Manager::from_env().context("reading NOTIFY_SOCKET")?;
    if let Some(path) = &config.pid_file {
        pidfile::check(path)?;
    }
    let mut signals = Signals::install().context("installing signal handlers")?;
    spawn::snapshot_signal_dispositions();
    let listeners = sockets::open_all(&config.listen, config.backlog, inherited)?;
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
    let extra_env = process::extra_env(&config.process).map_err(|e| anyhow!(e))?;
    let search = spawn::search_path(&extra_env);
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
            Watcher::new(&config.watch, &program, &options).context("starting the file watcher")?,
        ),
        false => None,
    };
    let notify_socket = match config.ready {
        ReadyMode::Notify => {
            // Where the user the children run as can reach it, and nobody else can.
            let children = options.credentials.as_ref().map(|c| (c.uid, c.gid));
            Some(NotifySocket::bind(children).context("creating the notify socket")?)
        }
        _ => None,
    };
    // The supervisor is pure: its backoff jitter gets its randomness from here.
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    // Removed when this function returns, before a failed start is reported to the shell.
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    let control = Control::new(&config.name, &config.control, &listeners, started)?;
    let mut master = Master {
        control,
        supervisor: Supervisor::with_seed(config.settings, seed),
        config,
        listeners,
        options,
        pidfds: HashMap::new(),
        notify_socket,
        ready_pipes: Vec::new(),
        next_watchdog: manager
            .as_ref()
            .and_then(|m| m.watchdog_every)
            .map(|every| Instant::now() + every),
        manager,
        output,
        startup: startup.take(),
        first: None,
        watch,
    };
    let result = master.run(&mut signals);
    *startup = master.startup.take();
    result
}

struct Master {
    config: Config,
    listeners: Vec<Listener>,
    supervisor: Supervisor,
    options: SpawnOptions,
    /// A pidfd per live child, where the kernel has them: signals go through it, so they can
    /// never reach a process that reused a child's pid. Closed when the child is reaped.
    pidfds: HashMap<Pid, OwnedFd>,
    /// The socket children send sd_notify messages to (`--ready notify`).
    notify_socket: Option<NotifySocket>,
    /// Read ends of the children's readiness pipes (`--ready fd:N`), until they say ready.
    ready_pipes: Vec<(Pid, OwnedFd)>,
    /// relaunch's own service manager, if `NOTIFY_SOCKET` named one.
    manager: Option<Manager>,
    /// When the next `WATCHDOG=1` is due.
    next_watchdog: Option<Instant>,
    /// The control socket, metrics and status tracking (see [`crate::control`]).
    control: Control,
    /// The children's captured output.
    output: Output,
    /// With `--daemon`: the shell command waiting to hear whether the first generation is up.
    startup: Option<Startup>,
    /// While `startup` waits: the first child's pid, and its exit status once reaped.
    first: Option<(Pid, Option<ExitStatus>)>,
    /// The file watcher (`--watch`, `--watch-path`).
    watch: Option<Watcher>,
}

impl Master {
    fn run(&mut self, signals: &mut Signals) -> Result<i32, Failure> {
        let mut queue: VecDeque<Action> = self.supervisor.start().into();
        loop {
            if let Some(code) = self.execute(&mut queue) {
                self.output.finish();
                return Ok(code);
            }
            if let Some(event) = self.check_startup() {
                queue.extend(self.handle(event, Instant::now()));
                continue;
            }
            let readable = self.wait(signals)?;
            if readable.output {
                self.output.drain();
            }
            let now = Instant::now();
            let mut events = Vec::new();
            let pending = signals.drain();
            // Reap first: a child that died just before its deadline must not be promoted.
            let mut exits = reap();
            if let Some(watch) = &mut self.watch {
                // The watcher's check commands are reaped here too; their exits are its own.
                exits.retain(|e| match e {
                    Event::Exited { pid, status } => !watch.reaped(*pid, *status),
                    _ => true,
                });
            }
            for e in &exits {
                if let Event::Exited { pid, status } = e {
                    self.ready_pipes.retain(|(p, _)| p != pid);
                    self.pidfds.remove(pid);
                    if let Some((first, exit)) = &mut self.first {
                        if first == pid {
                            *exit = Some(*status);
                        }
                    }
                }
            }
            events.extend(exits);
            if readable.notify {
                events.extend(self.notifications());
            }
            if readable.pipes {
                events.extend(self.ready_pipe_events());
            }
            if let Some(trigger) = self.watch.as_mut().and_then(|w| w.poll(now)) {
                events.push(Event::Reload(trigger));
            }
            for sig in pending {
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGHUP => events.push(Event::Reload(Trigger::Signal(sig))),
                    // Capturing output: USR1 reopens the log files (logrotate's postrotate).
                    Signal::SIGUSR1 if self.output.is_capturing() => self.output.reopen(),
                    Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                        events.push(Event::Stop(sig))
                    }
                    other => events.push(Event::Forward(other)),
                }
            }
            for event in events {
                queue.extend(self.handle(event, now));
            }
            // Control requests see this wake-up's exits and signals already handled.
            queue.extend(
                self.control
                    .run(&readable.control, &mut self.supervisor, now),
            );
            queue.extend(self.handle(Event::Tick, now));
            self.watchdog(now);
        }
    }

    /// Feeds one event to the supervisor, with the control plane watching.
    fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.control.before(&event, &self.supervisor, now);
        let actions = self.supervisor.handle(event, now);
        self.control.after(&self.supervisor, now);
        actions
    }

    /// Carries out actions in order; a spawn's result is fed back before the next action.
    /// Returns the exit code once the supervisor asks to exit.
    fn execute(&mut self, queue: &mut VecDeque<Action>) -> Option<i32> {
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spawn { generation } => {
                    let result = self.spawn(generation);
                    let now = Instant::now();
                    self.control.spawned(generation, &result, now);
                    let more = self.handle(Event::Spawned { generation, result }, now);
                    // The spawn's consequences come before anything queued after it.
                    for a in more.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Signal { pid, signal, group } => self.send(pid, signal, group),
                Action::Manager(message) => self.tell_manager(&message),
                Action::ReloadDone {
                    generation,
                    ok,
                    reason,
                } => {
                    debug!(generation, ok, reason = %reason, "reload attempt ended");
                    if let Some(watch) = &mut self.watch {
                        watch.reload_done(generation, ok);
                    }
                    let now = Instant::now();
                    self.control
                        .reload_done(generation, ok, &reason, &self.supervisor, now);
                }
                Action::Exit { code } => {
                    self.control.exit(code);
                    return Some(code);
                }
            }
        }
        None
    }

    /// With `--daemon`, until the shell command has its answer: reports success once the
    /// first child runs; if it is gone before that, records why and returns the event that
    /// stops relaunch (the answer is sent once everything is cleaned up, see [`run`]).
    fn check_startup(&mut self) -> Option<Event> {
        let startup = self.startup.as_mut()?;
        if startup.reason.is_some() {
            return None; // already failed; stopping
        }
        let (first, exit) = self.first?;
        match self.supervisor.current() {
            Some(c) if c.pid == first && c.phase == Phase::Running => {
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
                if exit.is_none() && self.config.settings.ready_signal {
                    reason.push_str(&format!(
                        " (not ready within --ready-timeout {:?})",
                        self.config.settings.ready_timeout
                    ));
                }
                if self.supervisor.is_stopping() {
                    reason = "relaunch was asked to stop before the server was up".to_owned();
                }
                error!(reason = %reason, "not detaching: the first generation did not come up; stopping");
                startup.reason = Some(reason);
                (!self.supervisor.is_stopping()).then_some(Event::Stop(Signal::SIGTERM))
            }
        }
    }

    fn spawn(&mut self, generation: u64) -> Result<Pid, SpawnFailure> {
        if let Some(watch) = &mut self.watch {
            watch.spawning(generation);
        }
        let fds: Vec<PassFd<'_>> = self
            .listeners
            .iter()
            .map(|l| PassFd {
                fd: l.raw_fd(),
                name: &l.name,
            })
            .collect();
        // --env-file is read again at every spawn, so a reload picks up its new contents; a
        // bad file fails this spawn (a reload then keeps the old generation serving).
        let mut extras = Extras {
            env: process::extra_env(&self.config.process).map_err(|message| SpawnFailure {
                message,
                exit_code: 1,
            })?,
            ..Extras::default()
        };
        if let Some(sock) = &self.notify_socket {
            extras.env.push(("NOTIFY_SOCKET".into(), sock.env_value()));
        }
        let mut ready_read = None;
        let mut _ready_write = None;
        if let ReadyMode::Fd(n) = self.config.ready {
            let (rd, wr) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| {
                    SpawnFailure {
                        message: format!("creating the readiness pipe: {e}"),
                        exit_code: 1,
                    }
                })?;
            // The child's end must block like any fresh fd would.
            let _ = nix::fcntl::fcntl(
                wr.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()),
            );
            extras.fds.push((wr.as_raw_fd(), n));
            ready_read = Some(rd);
            // Closed in the master once the child has its copy.
            _ready_write = Some(wr);
        }
        let pipes = match self.output.pipes_for_child() {
            Ok(pipes) => pipes,
            Err(e) => {
                let message = format!("creating the output pipes: {e}");
                if let Some(startup) = &mut self.startup {
                    startup.reason = Some(format!("cannot start the server: {message}"));
                }
                return Err(SpawnFailure {
                    message,
                    exit_code: 1,
                });
            }
        };
        extras.stdout = pipes.stdout;
        extras.stderr = pipes.stderr;
        match spawn::spawn(&self.config.command, &fds, &extras, &self.options) {
            Ok((pid, path)) => {
                debug!(generation, pid = %pid, program = %path.display(), "exec'd");
                // The child is not reaped yet (only this loop reaps), so the pid is still its.
                match spawn::pidfd_open(pid) {
                    Ok(fd) => {
                        self.pidfds.insert(pid, fd);
                    }
                    Err(e) => {
                        debug!(pid = %pid, error = %e, "no pidfd (signals go through kill)")
                    }
                }
                if let Some(rd) = ready_read {
                    self.ready_pipes.push((pid, rd));
                }
                self.output.attach(generation, pid, pipes);
                if self.startup.is_some() && self.first.is_none() {
                    self.first = Some((pid, None));
                }
                Ok(pid)
            }
            Err(e) => {
                if let Some(startup) = &mut self.startup {
                    startup.reason = Some(format!("cannot start the server: {e}"));
                }
                Err(spawn_failure(&e, &self.config))
            }
        }
    }

    /// Sends `signal` to a child (through its pidfd when there is one), or to its process
    /// group.
    fn send(&self, pid: Pid, signal: Signal, group: bool) {
        let result = if group {
            // The child leads its group, and is not reaped yet: the group id is still its.
            killpg(pid, signal)
        } else if let Some(fd) = self.pidfds.get(&pid) {
            spawn::pidfd_send_signal(fd.as_fd(), signal)
        } else {
            kill(pid, signal)
        };
        let to = if group { "process group" } else { "process" };
        match result {
            Ok(()) => debug!(pid = %pid, signal = %signal.as_str(), to, "sent signal"),
            // Already gone: its exit is about to be reaped.
            Err(Errno::ESRCH) => {
                debug!(pid = %pid, signal = %signal.as_str(), to, "already gone")
            }
            Err(e) => {
                warn!(pid = %pid, signal = %signal.as_str(), to, error = %e, "could not signal")
            }
        }
    }

    /// Messages on the notify socket, attributed to the child they come from.
    fn notifications(&mut self) -> Vec<Event> {
        let Some(sock) = &self.notify_socket else {
            return Vec::new();
        };
        let children: Vec<Pid> = self.supervisor.children().map(|c| c.pid).collect();
        sock.receive()
            .into_iter()
            .filter_map(|r| match notify::owning_child(r.pid, &children) {
                Some(pid) => Some(Event::Notify { pid, note: r.note }),
                None => {
                    debug!(sender = %r.pid, "dropped a notification from a process that is not one of relaunch's children or their descendants");
                    None
                }
            })
            .collect()
    }

    /// A newline on a child's readiness pipe means ready; end-of-file means it closed the
    /// pipe without saying so (its deadline still applies).
    fn ready_pipe_events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.ready_pipes.retain(|(pid, fd)| {
            let mut buf = [0u8; 256];
            loop {
                match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                    Ok(0) => {
                        debug!(pid = %pid, "readiness pipe closed without a newline");
                        return false;
                    }
                    Ok(n) if buf[..n].contains(&b'\n') => {
                        events.push(Event::Notify {
                            pid: *pid,
                            note: Note {
                                ready: true,
                                ..Note::default()
                            },
                        });
                        return false;
                    }
                    Ok(_) => continue,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return true, // EAGAIN: nothing more yet
                }
            }
        });
        events
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

    /// Pings the manager's watchdog, at half its interval, while a generation is running.
    fn watchdog(&mut self, now: Instant) {
        let (Some(due), Some(manager)) = (self.next_watchdog, &mut self.manager) else {
            return;
        };
        if now < due {
            return;
        }
        let every = manager.watchdog_every.unwrap_or(Duration::from_secs(1));
        self.next_watchdog = Some(now + every);
        let running = self
            .supervisor
            .current()
            .is_some_and(|c| c.phase == Phase::Running);
        if running && !self.supervisor.is_stopping() {
            manager.send("WATCHDOG=1");
        }
    }

    /// Sleeps until something is readable or the nearest deadline passes.
    fn wait(&mut self, signals: &Signals) -> Result<Readable, Failure> {
        let deadline = [
            self.supervisor.next_deadline(),
            self.next_watchdog,
            self.control.next_deadline(Instant::now()),
            self.watch.as_ref().and_then(Watcher::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up to whole milliseconds: waking early would spin until the deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(sock) = &self.notify_socket {
            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        }
        let pipes_from = fds.len();
        for (_, fd) in &self.ready_pipes {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let output_from = fds.len();
        for fd in self.output.poll_fds() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let output_to = fds.len();
        if let Some(watch) = &self.watch {
            fds.push(PollFd::new(watch.as_fd(), PollFlags::POLLIN));
        }
        let control_from = fds.len();
        self.control.poll_fds(&mut fds);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow!("poll: {e}").into()),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok(Readable {
            notify: self.notify_socket.is_some() && ready(&fds[1]),
            pipes: fds[pipes_from..output_from].iter().any(ready),
            output: fds[output_from..output_to].iter().any(ready),
            control: fds[control_from..]
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect(),
        })
    }
}

/// Which of the optional fds `poll` found readable.
struct Readable {
    notify: bool,
    pipes: bool,
    output: bool,
    /// `revents` of the control plane's fds, in the order it added them.
    control: Vec<PollFlags>,
}

fn spawn_failure(e: &SpawnError, config: &Config) -> SpawnFailure {
    // Name the value of the option whose step failed.
    let detail = match e {
        SpawnError::Os { step, .. } => match step {
            Step::Chdir => config
                .process
                .chdir
                .as_ref()
                .map(|d| format!(" (--chdir {})", d.display())),
            Step::Groups | Step::SetGid | Step::SetUid => {
                let mut who = Vec::new();
                if let Some(u) = &config.process.user {
                    who.push(format!("--user {u}"));
                }
                if let Some(g) = &config.process.group {
                    who.push(format!("--group {g}"));
                }
                Some(format!(
                    " ({}; relaunch must run as root to switch users)",
                    who.join(" ")
                ))
            }
            Step::ResourceLimit => {
                let all: Vec<String> = config
                    .process
                    .rlimits
                    .iter()
                    .map(|r| r.to_string())
                    .collect();
                Some(format!(
                    " (--rlimit {}; raising a hard limit needs privileges)",
                    all.join(",")
                ))
            }
            Step::Nice => config
                .process
                .nice
                .map(|n| format!(" (--nice {n}; lowering the niceness needs privileges)")),
            _ => None,
        },
        _ => None,
    };
    SpawnFailure {
        message: format!("{e}{}", detail.unwrap_or_default()),
        exit_code: e.exit_code(),
    }
}

/// Checks what the supervisor's settings cannot express on their own.
fn check_settings(settings: &crate::supervisor::Settings) -> anyhow::Result<()> {
    if settings.backoff_min > settings.backoff_max {
        return Err(anyhow!(
            "--backoff-min {:?} is longer than --backoff-max {:?}; the first restart delay cannot exceed the longest",
            settings.backoff_min,
            settings.backoff_max
        ));
    }
    Ok(())
}

/// Resolves the process options of `config` into what [`spawn::spawn`] applies: looks up
/// `--user`/`--group`, and checks `--chdir` and `--env-file`. Any error here is a usage error.
fn spawn_options(config: &Config) -> anyhow::Result<SpawnOptions> {
    let p = &config.process;
    let credentials = process::resolve_credentials(p.user.as_deref(), p.group.as_deref())
        .map_err(|e| anyhow!(e))?;
    if let Some(creds) = &credentials {
        info!(
            uid = %creds.uid.map_or("-".to_owned(), |u| u.to_string()),
            gid = creds.gid,
            groups = %creds.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(","),
            "children drop privileges"
        );
    }
    if let Some(dir) = &p.chdir {
        process::check_chdir(dir).map_err(|e| anyhow!(e))?;
    }
    if let Some(path) = &p.env_file {
        process::read_env_file(path).map_err(|e| anyhow!(e))?;
    }
    Ok(SpawnOptions {
        pdeathsig: p.pdeathsig,
        clear_env: p.clear_env,
        chdir: p.chdir.clone(),
        credentials,
        umask: p.umask.map(|m| m.0),
        nice: p.nice,
        rlimits: p.rlimits.clone(),
    })
}

/// Reaps every child that has exited, ours or adopted.
fn reap() -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => events.push(Event::Exited {
                pid,
                status: ExitStatus::Code(code),
            }),
            Ok(WaitStatus::Signaled(pid, sig, _)) => events.push(Event::Exited {
                pid,
                status: ExitStatus::Signal(sig as i32),
            }),
            Ok(WaitStatus::StillAlive) => break,
            Ok(_) => continue, // stopped/continued: not reported without WUNTRACED
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: no children at all
        }
    }
    events
}
