//! What goes into the state machine and what comes out: [`Event`]s in; [`Action`]s (what the
//! runtime must do) and [`Report`]s (what happened) out, together as a [`Step`]. Also the
//! values they carry: program and child states, exit statuses, reload triggers.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::notify::Note;

/// The state of the supervised program, named as supervisord names them. A reload's new
/// generation, while it starts, is reported separately (`Supervisor::pending`); the state is
/// that of the generation that serves (or of its absence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgramState {
    /// A generation was spawned (or is being spawned) and has not counted as started yet, and
    /// none serves.
    Starting,
    /// A generation is up and serving.
    Running,
    /// Nothing serves; a restart is scheduled after a delay.
    Backoff,
    /// relaunch is shutting down; the children were asked to stop.
    Stopping,
    /// The last generation exited and, by `--restart`, is not restarted. relaunch keeps the
    /// sockets and waits for a reload.
    Exited,
    /// Restarting gave up: `--start-retries` exhausted before any generation served, or
    /// `--max-restarts` exhausted. relaunch exits, or with `--on-fatal wait` keeps the sockets
    /// and waits for a reload.
    Fatal,
}

impl ProgramState {
    /// The supervisord name: `STARTING`, `RUNNING`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramState::Starting => "STARTING",
            ProgramState::Running => "RUNNING",
            ProgramState::Backoff => "BACKOFF",
            ProgramState::Stopping => "STOPPING",
            ProgramState::Exited => "EXITED",
            ProgramState::Fatal => "FATAL",
        }
    }
}

impl fmt::Display for ProgramState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// How the process ended, as a phrase: `exited with exit code 3`, `was killed by signal 9
    /// (SIGKILL)`.
    pub fn ended(self) -> String {
        match self {
            ExitStatus::Code(_) => format!("exited with {self}"),
            ExitStatus::Signal(_) => format!("was {self}"),
        }
    }

    /// The status a shell would report: the exit code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => match Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// What asked for a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A signal sent to the master (SIGHUP).
    Signal(Signal),
    /// A `reload` request on the control socket.
    Control,
    /// A watched file changed and settled (`--watch`, `--watch-path`; see [`crate::watch`]).
    Watch {
        /// The changed path (the program's, when it is among the changes).
        path: PathBuf,
    },
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Signal(s) => f.write_str(s.as_str()),
            Trigger::Control => f.write_str("control"),
            Trigger::Watch { .. } => f.write_str("watch"),
        }
    }
}

/// Why a spawn failed, as the supervisor needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnFailure {
    /// The error, for logs.
    pub message: String,
    /// The exit code to use if this ends the master (127 not found, 126 not executable, 1).
    pub exit_code: i32,
}

/// Something that happened, fed to [`Supervisor::handle`](super::Supervisor::handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start a new generation and switch to it once it is up.
    Reload(Trigger),
    /// Stop everything and exit; the signal that asked for it (SIGQUIT while stopping kills).
    Stop(Signal),
    /// Pass this signal on to the current child.
    Forward(Signal),
    /// A child was reaped.
    Exited {
        /// Its pid.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
    },
    /// The result of the last [`Action::Spawn`]; the runtime reports it before anything else.
    Spawned {
        /// The generation that was asked for.
        generation: u64,
        /// The worker it was asked for (its index, 0 with one worker).
        worker: usize,
        /// Its pid, or why it could not be started.
        result: Result<Pid, SpawnFailure>,
    },
    /// A child (or one of its descendants) sent an sd_notify message, or wrote to its
    /// readiness fd (`READY=1`).
    Notify {
        /// The child it came from.
        pid: Pid,
        /// What it said.
        note: Note,
    },
    /// Time passed; deadlines up to `now` are due.
    Tick,
}

/// Something the runtime must do. What happened is reported apart, as [`Report`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this generation of the server, then report [`Event::Spawned`].
    Spawn {
        /// The generation number (`RELAUNCH_GENERATION`).
        generation: u64,
        /// The worker's index (`RELAUNCH_WORKER`), 0 with one worker.
        worker: usize,
    },
    /// Send a signal to a child, or to its process group.
    Signal {
        /// The child (which leads its own process group).
        pid: Pid,
        /// The signal.
        signal: Signal,
        /// Send it to the child's whole process group (`--stop-as-group`, `--kill-as-group`),
        /// reaching the processes it started, rather than to the child alone.
        group: bool,
    },
    /// Exit the master with this code.
    Exit {
        /// The exit code.
        code: i32,
    },
}

/// The state of one child, named as supervisord names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not yet counted as started.
    Starting {
        /// When it counts as started (if `ready`), or when it has failed to get ready.
        until: Instant,
        /// Whether it is ready: always in timer mode; after `READY=1` in notify mode.
        ready: bool,
    },
    /// Up and serving.
    Running,
    /// Sent the stop signal.
    Stopping {
        /// When it gets SIGKILL.
        kill_at: Instant,
        /// Whether SIGKILL was sent.
        killed: bool,
    },
}

/// One live child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Its generation.
    pub generation: u64,
    /// Its pid.
    pub pid: Pid,
    /// Its state.
    pub phase: Phase,
    /// The last `STATUS=` it sent.
    pub status: Option<String>,
}

/// What one call of [`Supervisor::handle`](super::Supervisor::handle) (or
/// [`start`](super::Supervisor::start)) produced: what to do, and what happened, each in
/// order. The runtime hands the reports to status, metrics, the service manager and the
/// control plane's waiters before it carries out the actions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// What the runtime must do, in order.
    pub actions: Vec<Action>,
    /// What happened, in order.
    pub reports: Vec<Report>,
}

/// Why a generation was spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnCause {
    /// The first generation, at startup.
    First,
    /// An automatic restart after a crash or a failed start (the backoff delay is over).
    Restart,
    /// A reload asked for it.
    Reload,
}

/// How a reload attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadFailure {
    /// The new generation could not be started (exec failed, program missing, ...).
    Spawn,
    /// It exited before it was up.
    Exited,
    /// It was not up in time (`--ready-timeout`).
    NotReady,
    /// relaunch began to stop.
    Stopping,
}

impl ReloadFailure {
    /// The name status and `reload --wait` use: `spawn`, `exited`, `not_ready`, `stopping`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadFailure::Spawn => "spawn",
            ReloadFailure::Exited => "exited",
            ReloadFailure::NotReady => "not_ready",
            ReloadFailure::Stopping => "stopping",
        }
    }
}

/// Something that happened inside the supervisor. Every consumer (status and its history,
/// metrics, the service manager, `reload --wait` callers, the file watcher) learns what
/// happened from these, never by comparing snapshots.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A generation was started.
    Spawned {
        /// Its generation.
        generation: u64,
        /// Its pid.
        pid: Pid,
        /// Why it was started.
        cause: SpawnCause,
    },
    /// A generation could not be started.
    SpawnFailed {
        /// The generation that was asked for.
        generation: u64,
        /// Why.
        message: String,
    },
    /// A generation counted as started (RUNNING): the first one, a restart, or a reload's
    /// new one taking over.
    Ready {
        /// Its generation.
        generation: u64,
        /// Its pid.
        pid: Pid,
    },
    /// A generation was reaped.
    Exited {
        /// Its generation.
        generation: u64,
        /// Its pid.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
        /// Whether relaunch had asked it to stop (an old generation after a reload, or at
        /// shutdown) rather than it ending on its own.
        expected: bool,
    },
    /// An automatic restart was scheduled.
    RestartScheduled {
        /// The generation it will start.
        generation: u64,
        /// When.
        at: Instant,
    },
    /// A reload was asked for and accepted: it starts now ([`Report::ReloadStarted`] follows)
    /// or is queued behind the one in progress ([`Report::ReloadQueued`] follows).
    ReloadRequested {
        /// What asked for it.
        trigger: Trigger,
    },
    /// The reload asked for is coalesced into the follow-up queued behind the attempt in
    /// progress (or behind an old generation still stopping).
    ReloadQueued,
    /// A reload attempt started this generation.
    ReloadStarted {
        /// The generation it starts.
        generation: u64,
        /// What asked for it.
        trigger: Trigger,
    },
    /// A reload attempt ended: exactly one per [`Report::ReloadStarted`].
    ReloadEnded {
        /// The generation the attempt started.
        generation: u64,
        /// How it failed; `None`: the new generation took over.
        failure: Option<ReloadFailure>,
        /// Why it failed, in words (empty when it succeeded).
        reason: String,
        /// The generation that serves now, with its pid, if one does.
        serving: Option<(u64, Pid)>,
        /// Whether a follow-up reload is queued behind it.
        follow_up: bool,
    },
    /// The queued follow-up reload was dropped: relaunch began to stop.
    FollowUpDropped,
    /// The program's state changed.
    StateChanged {
        /// The state before (`None` at the first report).
        from: Option<ProgramState>,
        /// The new state.
        to: ProgramState,
        /// Why, in words (as logged with `state changed`).
        reason: String,
    },
    /// relaunch began to stop the program.
    Stopping,
}
