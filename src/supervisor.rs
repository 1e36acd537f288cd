//! The supervisor: a pure state machine over generations of the server.
//!
//! It takes [`Event`]s stamped with a monotonic `now` and returns [`Action`]s; it never forks,
//! signals, sleeps or reads a clock itself, so every rule below is unit-tested in
//! milliseconds, and the runtime that drives it stays thin.
//!
//! # Generations and their states
//! Each child is one *generation* (numbered from 1). A child is `Starting` until it has stayed
//! alive `start_secs` (after saying it is ready, with `--ready notify`/`fd:N`), then `Running`;
//! a child asked to stop is `Stopping` until it exits, and gets SIGKILL once `stop_wait` has
//! passed.
//!
//! The program as a whole is in one [`ProgramState`], named as supervisord's: STARTING,
//! RUNNING, BACKOFF (a restart is scheduled), STOPPING (relaunch shuts down), EXITED (the last
//! generation exited and `--restart` says not to restart it) and FATAL (restarting gave up).
//! A reload's pending generation does not change it. Every change is logged once, with its
//! reason (`state changed from=RUNNING to=BACKOFF reason=...`).
//!
//! # Rules (the invariants of the README)
//! - A reload starts a *pending* generation while the *current* one keeps serving. Only when the
//!   pending one has been alive `start_secs` is the old one sent the stop signal (plus SIGCONT).
//! - If the pending generation exits or fails to exec first, it is dropped and the current one
//!   is left untouched. A failed reload is not a failed start: the old generation serves.
//! - At most two generations are alive at any time, and at most one of them is not yet started:
//!   a reload requested while one is in progress, or while an old generation is still stopping,
//!   is *queued*; any number of requests in that time coalesce into one follow-up reload.
//! - On stop, every child gets the stop signal, SIGKILL after `stop_wait`; once all are gone the
//!   supervisor exits with the status of the child that was current, as a shell would.
//!
//! # Restart policy
//! | what happened, with nothing else serving | what follows |
//! |---|---|
//! | a started child exits; `--restart always` | restart after the backoff delay |
//! | … `on-failure`, killed by a signal or a code not in `--exit-codes` | restart after the delay |
//! | … `on-failure` with an expected code, or `--restart never` | EXITED: keep the sockets, wait for a reload |
//! | a child fails to start (exits before it counts as started, cannot be executed, is not ready in time), whatever `--restart` says, and no generation ever served | retry after the delay; the `start_retries + 1`-th failure in a row is FATAL (a deploy that never came up fails fast) |
//! | … once a generation has served (was RUNNING at least once) | BACKOFF: retry after the delay, capped at `backoff_max`, for as long as it takes, with the sockets open; `start_retries` does not apply |
//! | more than `max_restarts` restarts within `restart_window` | FATAL (crash loop); the only way a program that has served becomes FATAL |
//! | FATAL with `--on-fatal exit` | stop what is left, exit with the last failure's status (never 0) |
//! | FATAL with `--on-fatal wait` | keep the sockets, wait for a reload |
//! | a reload, in any state | a new generation now; fresh retry count, backoff and window |
//!
//! In BACKOFF the reason says what failed, how many restarts in a row failed, and which restart
//! attempt follows ([`Supervisor::restart_attempt`]). Each failure is logged as a warning;
//! while a program that has served keeps failing to come back, one error line is logged at the
//! first failure and then at most one per `backoff_max`, so a long outage does not flood the
//! log. The reason is kept true in every transition: a generation that is gone is never
//! said to be up.
//!
//! relaunch's own service manager hears `READY=1` once the first generation is up, and
//! `RELOADING=1` only after that, once per reload (a reload asked for during the first start is
//! queued, and announced when it starts), each followed by one `READY=1`.
//!
//! The delay after `n` restarts in a row without a start that counted is bounded by
//! `backoff_min × backoff_factor^n`, capped at `backoff_max`, and starts over once a child
//! counts as started. With jitter (the default) each delay is drawn uniformly between
//! `backoff_min` and that bound ("full jitter" with a floor: the first restart still comes after
//! `backoff_min`, and no delay is ever shorter). The randomness comes from a xorshift generator
//! seeded through [`Supervisor::with_seed`], so the machine stays pure and its tests
//! deterministic. All times are the caller's monotonic `now`.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::notify::Note;

/// Timing, signals and restart policy of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How long a new child must stay alive to count as started.
    pub start_secs: Duration,
    /// The signal that asks a child to stop.
    pub stop_signal: Signal,
    /// How long a child may take to stop before SIGKILL.
    pub stop_wait: Duration,
    /// The first restart delay after a crash.
    pub backoff_min: Duration,
    /// The longest restart delay.
    pub backoff_max: Duration,
    /// Each consecutive restart without a successful start multiplies the delay by this
    /// (at least 1).
    pub backoff_factor: f64,
    /// Draw each delay at random between `backoff_min` and its exponential bound, so that
    /// many supervisors restarting at once spread out.
    pub jitter: bool,
    /// Whether children announce readiness themselves (`--ready notify` or `fd:N`). Then a
    /// child counts as started `start_secs` after it said it is ready, and one that does not
    /// say so within `ready_timeout` has failed. Otherwise it counts as started once it has
    /// been alive `start_secs`.
    pub ready_signal: bool,
    /// How long a child may take to announce readiness.
    pub ready_timeout: Duration,
    /// Which exits of a started child are followed by a restart.
    pub restart: RestartPolicy,
    /// The exit codes that are expected (not failures) under [`RestartPolicy::OnFailure`].
    pub exit_codes: ExitCodes,
    /// Failed starts in a row allowed before FATAL, after the first one: `start_retries + 1`
    /// consecutive failures to start make the program FATAL, as long as no generation has
    /// ever served. Once one has, failed restarts are retried for as long as it takes.
    pub start_retries: u32,
    /// What relaunch does in FATAL.
    pub on_fatal: OnFatal,
    /// Crash-loop detection: more than this many automatic restarts within
    /// `restart_window` make the program FATAL. `None`: off. The only limit on the restarts
    /// of a program that has served.
    pub max_restarts: Option<u32>,
    /// The window of `max_restarts`.
    pub restart_window: Duration,
    /// Send the stop signal (and SIGCONT) to the child's whole process group.
    pub stop_as_group: bool,
    /// Send SIGKILL to the child's whole process group (implied by `stop_as_group`).
    pub kill_as_group: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            start_secs: Duration::from_secs(1),
            stop_signal: Signal::SIGTERM,
            stop_wait: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            backoff_factor: 2.0,
            jitter: true,
            ready_signal: false,
            ready_timeout: Duration::from_secs(60),
            restart: RestartPolicy::OnFailure,
            exit_codes: ExitCodes::default(),
            start_retries: 3,
            on_fatal: OnFatal::Exit,
            max_restarts: None,
            restart_window: Duration::from_secs(60),
            stop_as_group: false,
            kill_as_group: false,
        }
    }
}

/// Which exits of a child that had started are followed by a restart (`--restart`; supervisord's
/// `autorestart`). A child that fails to *start* is always retried, up to `start_retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Every exit (supervisord `autorestart=true`).
    Always,
    /// Exits by a signal, or with a code not in `exit_codes` (`autorestart=unexpected`).
    OnFailure,
    /// None: the program is EXITED until a reload (`autorestart=false`).
    Never,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "never" => Ok(RestartPolicy::Never),
            _ => Err(format!(
                "{s:?} is not a restart policy (expected always, on-failure or never)"
            )),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

/// What relaunch does when the program becomes FATAL (`--on-fatal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFatal {
    /// Stop whatever is left and exit with a non-zero code.
    Exit,
    /// Keep the sockets and wait for a reload (SIGHUP) to try again.
    Wait,
}

impl std::str::FromStr for OnFatal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exit" => Ok(OnFatal::Exit),
            "wait" => Ok(OnFatal::Wait),
            _ => Err(format!(
                "{s:?} is not an --on-fatal action (expected exit or wait)"
            )),
        }
    }
}

impl fmt::Display for OnFatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFatal::Exit => "exit",
            OnFatal::Wait => "wait",
        })
    }
}

/// A set of exit codes, 0 to 255 (`--exit-codes 0,2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodes([u64; 4]);

impl ExitCodes {
    /// The empty set.
    pub const NONE: ExitCodes = ExitCodes([0; 4]);

    /// The set of these codes (each 0..=255; others are ignored).
    pub fn of(codes: &[i32]) -> ExitCodes {
        let mut set = ExitCodes::NONE;
        for &c in codes {
            if (0..=255).contains(&c) {
                set.0[c as usize / 64] |= 1 << (c % 64);
            }
        }
        set
    }

    /// Whether `code` is in the set.
    pub fn contains(&self, code: i32) -> bool {
        (0..=255).contains(&code) && self.0[code as usize / 64] & (1 << (code % 64)) != 0
    }

    /// The codes, ascending.
    pub fn codes(&self) -> impl Iterator<Item = i32> + '_ {
        (0..=255).filter(|&c| self.contains(c))
    }
}

impl Default for ExitCodes {
    /// `0`, as supervisord's `exitcodes`.
    fn default() -> Self {
        ExitCodes::of(&[0])
    }
}

impl std::str::FromStr for ExitCodes {
    type Err = String;

    /// A comma-separated list of codes from 0 to 255 (`0,2`); empty means none is expected.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut codes = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<i32>() {
                Ok(c) if (0..=255).contains(&c) && !part.starts_with('+') => codes.push(c),
                _ => {
                    return Err(format!(
                        "{s:?} is not a list of exit codes (expected numbers from 0 to 255 separated by commas, like 0,2)"
                    ))
                }
            }
        }
        Ok(ExitCodes::of(&codes))
    }
}

impl fmt::Display for ExitCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.codes().map(|c| c.to_string()).collect();
        f.write_str(&list.join(","))
    }
}

/// The state of the supervised program, named as supervisord names them. A reload's new
/// generation, while it starts, is reported separately ([`Supervisor::pending`]); the state is
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

/// Something that happened, fed to [`Supervisor::handle`].
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

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start this generation of the server, then report [`Event::Spawned`].
    Spawn {
        /// The generation number, for logs.
        generation: u64,
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
    /// Tell relaunch's own service manager (sd_notify), if it has one.
    Manager(ManagerMessage),
    /// A reload attempt ended: the new generation took over (`ok`), or it failed and the old
    /// one (if any) keeps serving. Reported for every attempt, whatever triggered it.
    ReloadDone {
        /// The generation the reload started.
        generation: u64,
        /// Whether it is now the current generation.
        ok: bool,
        /// Why it failed (empty when `ok`).
        reason: String,
    },
    /// Exit the master with this code.
    Exit {
        /// The exit code.
        code: i32,
    },
}

/// A state change relaunch reports to its own service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerMessage {
    /// `READY=1`: the first generation is up, or a reload ended.
    Ready {
        /// `STATUS=` text.
        status: String,
    },
    /// `RELOADING=1`: a reload started.
    Reloading {
        /// `STATUS=` text.
        status: String,
    },
    /// `STOPPING=1`.
    Stopping,
    /// Just a `STATUS=` line: nothing serves, and why (BACKOFF, EXITED, FATAL).
    Status {
        /// `STATUS=` text.
        status: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The spawn replaces nothing: first start, or a restart after a crash.
    Current,
    /// The spawn is the new generation of a reload.
    Pending,
}

/// The supervisor state machine. See the module docs for its rules.
#[derive(Debug)]
pub struct Supervisor {
    settings: Settings,
    next_generation: u64,
    /// The generation that serves.
    current: Option<Child>,
    /// The new generation of a reload in progress, not yet started.
    pending: Option<Child>,
    /// Old generations asked to stop, not yet reaped.
    retiring: Vec<Child>,
    /// A spawn asked for and not yet reported.
    spawning: Option<(u64, Role)>,
    /// A restart scheduled after a crash: when, and its generation.
    backoff: Option<(Instant, u64)>,
    /// Consecutive failed starts (children that died, could not be executed or were not
    /// ready in time before counting as started). Reset when one starts, and by a reload.
    failures: u32,
    /// Automatic restarts since a child last counted as started: the backoff's exponent.
    backoff_step: u32,
    /// When automatic restarts were scheduled, within `restart_window` (`max_restarts`).
    restart_times: VecDeque<Instant>,
    /// Why nothing runs and nothing restarts by itself, if so: EXITED or FATAL.
    idle: Option<Idle>,
    /// The exit code a FATAL program would end relaunch with: the last failure's status.
    failure_code: i32,
    /// State of the jitter's xorshift generator (never 0).
    rng: u64,
    /// The state last logged.
    logged_state: Option<ProgramState>,
    /// Why the state is what it is, for the transition log and status.
    reason: String,
    /// A reload asked for while another was in progress.
    queued: Option<Trigger>,
    /// Set once a stop was asked for.
    stopping: bool,
    /// The child whose status becomes the exit code.
    exit_pid: Option<Pid>,
    /// Status of the last child that was current.
    last_status: Option<ExitStatus>,
    /// Whether any child was ever spawned (a first spawn that fails ends the master).
    ever_spawned: bool,
    /// Whether a generation ever counted as started (RUNNING). From then on, failed restarts
    /// back off for as long as it takes; only `max_restarts` gives up.
    served: bool,
    /// When the last error line about an outage (a served program failing to come back) was
    /// logged: at most one per `backoff_max`. Cleared once a generation counts as started.
    outage_logged_at: Option<Instant>,
    /// The generation of the reload attempt in progress, if any.
    reloading: Option<u64>,
    /// What triggered the reload attempt in progress (meaningful while `reloading` is set).
    reloading_trigger: Option<Trigger>,
    /// Whether the service manager was told `RELOADING=1` and not yet `READY=1`.
    manager_reloading: bool,
    /// Whether the service manager was ever told `READY=1`.
    manager_ready: bool,
    exited: bool,
}

/// Why no generation runs and none is scheduled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// The last one exited and `--restart` says not to restart it.
    Exited,
    /// Restarting gave up; relaunch exits with `code` when it stops.
    Fatal { code: i32 },
}

impl Supervisor {
    /// A supervisor that has not started anything yet; call [`Supervisor::start`]. Its jitter
    /// is drawn from a fixed seed (deterministic, for tests); the runtime uses
    /// [`Supervisor::with_seed`].
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
            failures: 0,
            backoff_step: 0,
            restart_times: VecDeque::new(),
            idle: None,
            failure_code: 1,
            rng: if seed == 0 {
                0x2545_F491_4F6C_DD1D
            } else {
                seed
            },
            logged_state: None,
            reason: String::new(),
            queued: None,
            stopping: false,
            exit_pid: None,
            last_status: None,
            ever_spawned: false,
            served: false,
            outage_logged_at: None,
            reloading: None,
            reloading_trigger: None,
            manager_reloading: false,
            manager_ready: false,
            exited: false,
        }
    }

    /// The first actions: spawn generation 1.
    pub fn start(&mut self) -> Vec<Action> {
        let generation = self.new_generation();
        self.reason = format!("starting generation {generation}");
        let mut out = vec![self.spawn(generation, Role::Current)];
        self.log_state(&mut out);
        out
    }

    /// The program's state, as supervisord would name it (see [`ProgramState`]).
    pub fn state(&self) -> ProgramState {
        if matches!(self.idle, Some(Idle::Fatal { .. })) {
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
            None if self.idle == Some(Idle::Exited) => ProgramState::Exited,
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
        self.failures
    }

    /// Automatic restarts in a row since a generation last counted as started (or since the
    /// last reload), counting the one scheduled: in BACKOFF, the number of the coming attempt.
    /// 0 when none was needed.
    pub fn restart_attempt(&self) -> u32 {
        self.backoff_step
    }

    /// Whether a generation ever counted as started (was RUNNING). From then on, failed
    /// restarts are retried with backoff for as long as it takes, and only `max_restarts`
    /// makes the program FATAL.
    pub fn has_served(&self) -> bool {
        self.served
    }

    /// When the scheduled restart is due, in BACKOFF.
    pub fn restart_at(&self) -> Option<Instant> {
        self.backoff.map(|(at, _)| at)
    }

    /// How the last generation that served (or tried to) ended, if one did.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_status
    }

    /// The settings the supervisor runs with.
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
    pub fn in_backoff(&self) -> bool {
        self.backoff.is_some()
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// The reload attempt in progress, if any: the generation it started (or is starting), and
    /// what triggered it. Every attempt ends with exactly one [`Action::ReloadDone`] for that
    /// generation.
    pub fn reloading(&self) -> Option<(u64, &Trigger)> {
        self.reloading.zip(self.reloading_trigger.as_ref())
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
        let starting = self
            .current
            .iter()
            .chain(self.pending.iter())
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

    /// Handles one event at time `now` and returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.exited {
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
            Event::Spawned { generation, result } => {
                self.spawned(generation, result, now, &mut out)
            }
            Event::Notify { pid, note } => self.notified(pid, note, now),
            Event::Tick => {}
        }
        self.log_state(&mut out);
        self.advance(now, &mut out);
        self.log_state(&mut out);
        self.start_queued(&mut out);
        self.check_done(&mut out);
        self.log_state(&mut out);
        out
    }

    /// Logs a change of [`ProgramState`] once, with its reason; the service manager hears of
    /// the states in which nothing serves (BACKOFF, EXITED, FATAL) as a `STATUS=` line.
    fn log_state(&mut self, out: &mut Vec<Action>) {
        let state = self.state();
        if self.logged_state == Some(state) {
            return;
        }
        let from = self.logged_state.map_or("-", ProgramState::as_str);
        self.logged_state = Some(state);
        let to = state.as_str();
        let reason = &self.reason;
        match state {
            ProgramState::Fatal => {
                error!(from = %from, to = %to, reason = %reason, "state changed")
            }
            ProgramState::Backoff | ProgramState::Exited => {
                warn!(from = %from, to = %to, reason = %reason, "state changed")
            }
            _ => info!(from = %from, to = %to, reason = %reason, "state changed"),
        }
        if matches!(
            state,
            ProgramState::Backoff | ProgramState::Exited | ProgramState::Fatal
        ) {
            out.push(Action::Manager(ManagerMessage::Status {
                status: format!("{to}: {reason}"),
            }));
        }
    }

    fn new_generation(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    fn spawn(&mut self, generation: u64, role: Role) -> Action {
        self.spawning = Some((generation, role));
        Action::Spawn { generation }
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
        // RELOADING=1 only after READY=1: a reload asked for during the first start follows it
        // (queued), and is announced when it really starts.
        if self.manager_ready && !self.manager_reloading && self.busy().is_none() {
            self.manager_reloading = true;
            out.push(Action::Manager(ManagerMessage::Reloading {
                status: format!("reloading ({trigger})"),
            }));
        }
        if let Some(why) = self.busy() {
            info!("reload queued: {why}");
            self.queued = Some(trigger);
            return;
        }
        // A reload starts with a clean slate: fresh retry count, backoff and crash-loop window.
        self.failures = 0;
        self.backoff_step = 0;
        self.restart_times.clear();
        let generation = if self.current.is_none() {
            // Nothing serves (crash, backoff, EXITED, FATAL): start the new generation right
            // away as current.
            let generation = match self.backoff.take() {
                Some((_, g)) => g,
                None => self.new_generation(),
            };
            self.idle = None;
            self.reason = format!("reload ({trigger}) starts generation {generation}");
            out.push(self.spawn(generation, Role::Current));
            generation
        } else {
            let generation = self.new_generation();
            out.push(self.spawn(generation, Role::Pending));
            generation
        };
        self.reloading = Some(generation);
        self.reloading_trigger = Some(trigger);
    }

    /// A reload attempt ended. Reports it, and tells the service manager once no follow-up
    /// reload is queued.
    fn finish_reload(&mut self, generation: u64, ok: bool, reason: String, out: &mut Vec<Action>) {
        if self.reloading != Some(generation) {
            return;
        }
        self.reloading = None;
        out.push(Action::ReloadDone {
            generation,
            ok,
            reason: reason.clone(),
        });
        if self.manager_reloading && (self.queued.is_none() || self.stopping) {
            self.manager_reloading = false;
            if !self.stopping {
                self.manager_ready = true;
                let status = match (&self.current, ok) {
                    (Some(c), true) => {
                        format!(
                            "generation {} (pid {}) serving; last reload succeeded",
                            c.generation, c.pid
                        )
                    }
                    (Some(c), false) => format!(
                        "generation {} (pid {}) serving; last reload failed: {reason}",
                        c.generation, c.pid
                    ),
                    (None, _) => format!("no generation serving; last reload failed: {reason}"),
                };
                out.push(Action::Manager(ManagerMessage::Ready { status }));
            }
        }
    }

    /// The first time a generation is up, tell the service manager.
    fn announce_first_ready(&mut self, generation: u64, pid: Pid, out: &mut Vec<Action>) {
        if !self.manager_ready {
            self.manager_ready = true;
            out.push(Action::Manager(ManagerMessage::Ready {
                status: format!("generation {generation} (pid {pid}) serving"),
            }));
        }
    }

    fn spawned(
        &mut self,
        generation: u64,
        result: Result<Pid, SpawnFailure>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let role = match self.spawning.take() {
            Some((g, role)) if g == generation => role,
            other => {
                error!(generation, expected = ?other, "spawn result for a generation that was not being spawned; ignored");
                self.spawning = other;
                return;
            }
        };
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
                        self.reason = format!("generation {generation} spawned as pid {pid}");
                        self.current = Some(child);
                    }
                    Role::Pending => self.pending = Some(child),
                }
            }
            Err(failure) if !self.ever_spawned => {
                error!(generation, reason = %failure.message, "cannot start the server");
                self.last_status = Some(ExitStatus::Code(failure.exit_code));
                self.reason = format!("generation {generation}: {}", failure.message);
                self.idle = Some(Idle::Fatal {
                    code: failure.exit_code,
                });
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
                    self.finish_reload(generation, false, failure.message, out);
                    self.after_reload_attempt(now, why, failure.exit_code, out);
                }
                Role::Current => {
                    if self.served {
                        warn!(generation, reason = %failure.message, "spawn failed");
                    } else {
                        error!(generation, reason = %failure.message, "spawn failed");
                    }
                    let why = format!("generation {generation}: {}", failure.message);
                    self.finish_reload(generation, false, failure.message, out);
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
            if failed_to_start {
                self.finish_reload(
                    child.generation,
                    false,
                    format!("exited with {status} before it was up"),
                    out,
                );
            }
            if let Some(new) = &self.pending {
                info!("the current generation died during a reload; the new one takes over once started");
                self.reason = format!(
                    "generation {} {} during the reload; generation {} (pid {}) takes over once it is up",
                    child.generation,
                    status.ended(),
                    new.generation,
                    new.pid
                );
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
            self.finish_reload(child.generation, false, reason, out);
            self.after_reload_attempt(now, why, failure_code(status), out);
        } else if let Some(i) = self.retiring.iter().position(|c| c.pid == pid) {
            let child = self.retiring.remove(i);
            if self.exit_pid == Some(pid) {
                self.last_status = Some(status);
            }
            info!(generation = child.generation, pid = %pid, status = %status, "exited");
        } else {
            debug!(pid = %pid, status = %status, "reaped a process that is not one of our generations");
        }
    }

    /// A generation that had counted as started exited: restart it or not, by `--restart`.
    fn ran_and_exited(
        &mut self,
        now: Instant,
        generation: u64,
        status: ExitStatus,
        out: &mut Vec<Action>,
    ) {
        let expected = match status {
            ExitStatus::Code(c) => self.settings.exit_codes.contains(c),
            // A signal is never an expected end, whatever the exit codes say.
            ExitStatus::Signal(_) => false,
        };
        let restart = match self.settings.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !expected,
            RestartPolicy::Never => false,
        };
        let why = format!("generation {generation} {}", status.ended());
        if restart {
            self.failure_code = failure_code(status);
            self.schedule_restart(now, why, out);
            return;
        }
        let rule = match self.settings.restart {
            RestartPolicy::Never => "--restart never".to_owned(),
            _ => format!(
                "an expected exit under --restart on-failure (--exit-codes {})",
                self.settings.exit_codes
            ),
        };
        self.reason = format!("{why}: {rule}, not restarted");
        self.idle = Some(Idle::Exited);
        warn!(
            generation,
            status = %status,
            "no restart ({rule}); relaunch keeps the sockets open and waits: send SIGHUP to start a new generation, or SIGTERM to exit"
        );
    }

    /// A generation failed to start (it exited, could not be executed, or was not ready in
    /// time) and none serves: retry after a backoff, or give up once `start_retries` retries
    /// have failed too.
    fn start_failed(&mut self, now: Instant, why: String, code: i32, out: &mut Vec<Action>) {
        if self.stopping {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.failure_code = code;
        if self.served {
            // The program has served: this is an outage, not a bad deploy. Keep the sockets
            // and retry with a capped backoff for as long as it takes; only --max-restarts
            // gives up (in schedule_restart).
            let failures = self.failures;
            self.schedule_restart(
                now,
                format!("{why} (failed restarts in a row: {failures})"),
                out,
            );
            self.log_outage(now, &why);
            return;
        }
        let allowed = self.settings.start_retries.saturating_add(1);
        if self.failures >= allowed {
            let reason = format!(
                "{} consecutive start failures (--start-retries {}); last: {why}",
                self.failures, self.settings.start_retries
            );
            self.fatal(now, reason, out);
        } else {
            let why = format!("{why} (start failure {} of {allowed})", self.failures);
            self.schedule_restart(now, why, out);
        }
    }

    /// Logs an error about a served program that keeps failing to come back, at most once per
    /// `backoff_max` (each failure is also a warning of its own), so that a long outage does
    /// not flood the log.
    fn log_outage(&mut self, now: Instant, why: &str) {
        if self.idle.is_some() || self.stopping {
            return;
        }
        let period = self.settings.backoff_max.max(Duration::from_millis(1));
        if self
            .outage_logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < period)
        {
            return;
        }
        self.outage_logged_at = Some(now);
        let limit = match self.settings.max_restarts {
            Some(max) => format!(
                "until more than {max} restarts within {:?} make it FATAL (--max-restarts)",
                self.settings.restart_window
            ),
            None => "without giving up (--max-restarts N would)".to_owned(),
        };
        error!(
            failures = self.failures,
            attempt = self.backoff_step,
            reason = %why,
            "the server keeps failing to come back; relaunch keeps the sockets open and retries, {:?} apart at most (--backoff-max), {limit}; this error repeats at most once per --backoff-max, each failure is a warning",
            self.settings.backoff_max
        );
    }

    /// A reload's new generation ended before it was promoted (it failed). If the old one is
    /// gone too, nothing serves: that counts as a failed start.
    fn after_reload_attempt(
        &mut self,
        now: Instant,
        why: String,
        code: i32,
        out: &mut Vec<Action>,
    ) {
        if self.stopping {
            return;
        }
        if self.current.is_none()
            && self.backoff.is_none()
            && self.spawning.is_none()
            && self.idle.is_none()
        {
            self.start_failed(now, why, code, out);
        }
    }

    fn start_queued(&mut self, out: &mut Vec<Action>) {
        if self.stopping || self.exited || self.busy().is_some() {
            return;
        }
        if let Some(trigger) = self.queued.take() {
            info!(trigger = %trigger, "starting the queued reload");
            self.reload(trigger, out);
        }
    }

    /// Schedules an automatic restart after the backoff delay, unless the crash-loop limit
    /// (`max_restarts` within `restart_window`) is reached, which makes the program FATAL.
    fn schedule_restart(&mut self, now: Instant, why: String, out: &mut Vec<Action>) {
        if self.stopping || self.backoff.is_some() {
            return;
        }
        if let Some(max) = self.settings.max_restarts {
            let window = self.settings.restart_window;
            while self
                .restart_times
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
            {
                self.restart_times.pop_front();
            }
            if self.restart_times.len() >= max as usize {
                let reason = format!(
                    "crash loop: {why}, after {} restarts within --restart-window {:?} (--max-restarts {max})",
                    self.restart_times.len(),
                    window
                );
                self.fatal(now, reason, out);
                return;
            }
            self.restart_times.push_back(now);
        }
        let delay = self.next_delay();
        self.backoff_step = self.backoff_step.saturating_add(1);
        let attempt = self.backoff_step;
        let generation = self.new_generation();
        let delay_ms = delay.as_millis() as u64;
        info!(generation, delay_ms, attempt, reason = %why, "restarting");
        self.reason = format!(
            "{why}; generation {generation} follows in {delay_ms} ms (restart attempt {attempt})"
        );
        self.backoff = Some((now + delay, generation));
    }

    /// The next restart delay: the exponential bound for `backoff_step`, or with jitter a
    /// uniform draw between `backoff_min` and that bound.
    fn next_delay(&mut self) -> Duration {
        let bound = backoff_delay(&self.settings, self.backoff_step);
        let min = self.settings.backoff_min;
        if !self.settings.jitter || bound <= min {
            return bound;
        }
        let span = (bound - min).as_nanos().min(u64::MAX as u128 - 1) as u64;
        min + Duration::from_nanos(self.random() % (span + 1))
    }

    /// xorshift64*: plenty for spreading restarts, and deterministic for a given seed.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Restarting gave up. Logs it loudly, then exits (stopping whatever is left) or waits
    /// for a reload, by `on_fatal`.
    fn fatal(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        let code = self.failure_code;
        self.backoff = None;
        self.idle = Some(Idle::Fatal { code });
        self.reason = reason;
        match self.settings.on_fatal {
            OnFatal::Exit => {
                error!(
                    code,
                    reason = %self.reason,
                    "FATAL: giving up on the server; relaunch exits with code {code} (--on-fatal exit). Fix the server (its output above says why it failed), then start relaunch again; --on-fatal wait keeps the sockets and waits for SIGHUP instead"
                );
                self.shutdown(now, out);
            }
            OnFatal::Wait => error!(
                reason = %self.reason,
                "FATAL: giving up on the server; relaunch keeps the sockets open and waits (--on-fatal wait). Fix the server (its output above says why it failed), then send SIGHUP to try again with a fresh retry count, or SIGTERM to exit"
            ),
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
    fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.stopping = true;
        self.queued = None;
        self.backoff = None;
        out.push(Action::Manager(ManagerMessage::Stopping));
        if let Some(generation) = self.reloading {
            self.finish_reload(generation, false, "relaunch is stopping".into(), out);
        }
        self.exit_pid = self.current.as_ref().map(|c| c.pid);
        for child in [self.current.take(), self.pending.take()]
            .into_iter()
            .flatten()
        {
            self.retire(child, now, out);
        }
    }

    fn retire(&mut self, mut child: Child, now: Instant, out: &mut Vec<Action>) {
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
        if self.exited {
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
            self.finish_reload(new.generation, false, reason, out);
            self.retire(new, now, out);
            self.after_reload_attempt(now, why, 1, out);
        }
        if let Some(new) = self.pending.take_if(|c| due(c, true)) {
            self.failures = 0;
            self.backoff_step = 0;
            self.served = true;
            self.outage_logged_at = None;
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
            self.reason = format!("reload complete: generation {generation} (pid {pid}) serves");
            self.finish_reload(generation, true, String::new(), out);
            self.announce_first_ready(generation, pid, out);
        }
        if let Some(child) = self.current.take_if(|c| due(c, false)) {
            let reason = self.not_ready_reason(&child);
            if self.served {
                warn!(generation = child.generation, pid = %child.pid, reason = %format!("{reason}; stopping it"), "start failed");
            } else {
                error!(generation = child.generation, pid = %child.pid, reason = %format!("{reason}; stopping it"), "start failed");
            }
            let why = format!("generation {} {reason}", child.generation);
            self.finish_reload(child.generation, false, reason, out);
            self.retire(child, now, out);
            self.start_failed(now, why, 1, out);
        }
        if let Some(child) = self.current.as_mut().filter(|c| due(c, true)) {
            child.phase = Phase::Running;
            self.failures = 0;
            self.backoff_step = 0;
            self.served = true;
            self.outage_logged_at = None;
            let (generation, pid) = (child.generation, child.pid);
            info!(generation, pid = %pid, "running");
            self.reason = format!("generation {generation} (pid {pid}) is up");
            self.finish_reload(generation, true, String::new(), out);
            self.announce_first_ready(generation, pid, out);
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
                self.reason = format!("backoff over: starting generation {generation}");
                out.push(self.spawn(generation, Role::Current));
            }
        }
    }

    fn check_done(&mut self, out: &mut Vec<Action>) {
        if self.stopping
            && !self.exited
            && self.current.is_none()
            && self.pending.is_none()
            && self.retiring.is_empty()
            && self.spawning.is_none()
        {
            let code = match self.idle {
                Some(Idle::Fatal { code }) => code,
                _ => self.last_status.map_or(0, ExitStatus::shell_code),
            };
            self.exit(code, out);
        }
    }

    fn exit(&mut self, code: i32, out: &mut Vec<Action>) {
        self.log_state(out);
        self.exited = true;
        info!(code, "exiting");
        out.push(Action::Exit { code });
    }
}

/// The exponential bound of the restart delay after `step` restarts in a row without a
/// start that counted: `backoff_min × backoff_factor^step`, at most `backoff_max`. With jitter,
/// the actual delay is drawn between `backoff_min` and this bound.
pub fn backoff_delay(settings: &Settings, step: u32) -> Duration {
    let factor = if settings.backoff_factor.is_finite() {
        settings.backoff_factor.max(1.0)
    } else {
        1.0
    };
    let nanos = settings.backoff_min.as_nanos() as f64 * factor.powi(step.min(4096) as i32);
    let max = settings.backoff_max;
    if !nanos.is_finite() || nanos >= max.as_nanos() as f64 {
        return max;
    }
    Duration::from_nanos(nanos.round() as u64).min(max)
}

/// The exit code relaunch would end with after a failure that ended with `status`: its shell
/// code, or 1 if that is 0 (a failure must not look like success).
fn failure_code(status: ExitStatus) -> i32 {
    match status.shell_code() {
        0 => 1,
        code => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: Signal = Signal::SIGTERM;
    const KILL: Signal = Signal::SIGKILL;
    const CONT: Signal = Signal::SIGCONT;
    const HUP: Trigger = Trigger::Signal(Signal::SIGHUP);

    /// A supervisor with a fake clock; `ms` is the time since the test began.
    struct Sim {
        sup: Supervisor,
        t0: Instant,
        ms: u64,
        next_pid: i32,
        /// Messages for the service manager, in order.
        manager: Vec<ManagerMessage>,
        /// Reload outcomes, in order: (generation, ok).
        done: Vec<(u64, bool)>,
        /// `STATUS=` lines for the service manager about states where nothing serves.
        statuses: Vec<String>,
    }

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    fn sig(p: i32, signal: Signal) -> Action {
        Action::Signal {
            pid: pid(p),
            signal,
            group: false,
        }
    }

    /// A signal to the process group of `p`.
    fn gsig(p: i32, signal: Signal) -> Action {
        Action::Signal {
            pid: pid(p),
            signal,
            group: true,
        }
    }

    /// Checks that the state's reason (logged with `state changed`, shown by `status`) is
    /// about the generations as they are: the one that serves, starts, or follows a backoff.
    /// Run after every event the harness handles (but while a spawn is outstanding, whose
    /// generation is not known from outside), so every transition of every test is checked.
    #[track_caller]
    fn assert_reason_is_true(sup: &Supervisor) {
        let reason = sup.state_reason();
        let state = sup.state();
        let ok = match state {
            ProgramState::Running => {
                let c = sup.current().expect("RUNNING has a current generation");
                reason.contains(&format!("generation {} (pid {})", c.generation, c.pid))
            }
            ProgramState::Starting => match sup.current().or(sup.pending()) {
                Some(c) => reason.contains(&format!("generation {}", c.generation)),
                None => !reason.is_empty(),
            },
            ProgramState::Backoff => {
                let (_, g) = sup.backoff().expect("BACKOFF has a restart scheduled");
                reason.contains(&format!("generation {g} follows in"))
                    && reason.contains(&format!("restart attempt {}", sup.restart_attempt()))
            }
            ProgramState::Exited => reason.contains("not restarted"),
            ProgramState::Stopping => reason.contains("stop"),
            ProgramState::Fatal => !reason.is_empty(),
        };
        // A generation that is gone is never said to be up or serving.
        let alive = |g: u64| sup.children().any(|c| c.generation == g);
        let stale = (1..=sup.next_generation).find(|&g| {
            !alive(g)
                && (reason.contains(&format!("generation {g} (pid"))
                    && (reason.ends_with(" is up") || reason.ends_with(" serves")))
        });
        assert!(
            ok && stale.is_none() || state == ProgramState::Stopping,
            "state {state} with a reason that is not true: {reason:?} (children: {:?})",
            sup.children().collect::<Vec<_>>()
        );
    }

    /// Settings with exact delays (no jitter) and unlimited start retries.
    fn exact() -> Settings {
        Settings {
            jitter: false,
            start_retries: u32::MAX,
            ..Settings::default()
        }
    }

    impl Sim {
        fn new() -> Sim {
            Sim::with(Settings::default())
        }

        fn with(settings: Settings) -> Sim {
            Sim {
                sup: Supervisor::new(settings),
                t0: Instant::now(),
                ms: 0,
                next_pid: 100,
                manager: Vec::new(),
                done: Vec::new(),
                statuses: Vec::new(),
            }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        /// Handles an event; manager messages and reload outcomes go to their logs, the
        /// other actions are returned.
        fn ev(&mut self, e: Event) -> Vec<Action> {
            let now = self.now();
            let actions = self.sup.handle(e, now);
            if !actions.iter().any(|a| matches!(a, Action::Spawn { .. })) {
                assert_reason_is_true(&self.sup);
            }
            let mut rest = Vec::new();
            for a in actions {
                match a {
                    Action::Manager(ManagerMessage::Status { status }) => {
                        self.statuses.push(status)
                    }
                    Action::Manager(m) => self.manager.push(m),
                    Action::ReloadDone { generation, ok, .. } => self.done.push((generation, ok)),
                    other => rest.push(other),
                }
            }
            rest
        }

        /// Runs actions the way the runtime does: every Spawn succeeds with the next pid.
        fn run(&mut self, actions: Vec<Action>) -> Vec<Action> {
            let mut rest = Vec::new();
            for a in actions {
                if let Action::Spawn { generation } = a {
                    self.next_pid += 100;
                    let p = pid(self.next_pid);
                    let more = self.ev(Event::Spawned {
                        generation,
                        result: Ok(p),
                    });
                    rest.extend(self.run(more));
                } else {
                    rest.push(a);
                }
            }
            rest
        }

        fn start(&mut self) -> Pid {
            let a = self.sup.start();
            assert_eq!(a, vec![Action::Spawn { generation: 1 }]);
            assert!(self.run(a).is_empty());
            self.sup.current().unwrap().pid
        }

        /// Moves the clock to `ms` and ticks.
        fn at(&mut self, ms: u64) -> Vec<Action> {
            assert!(ms >= self.ms);
            self.ms = ms;
            let a = self.ev(Event::Tick);
            self.run(a)
        }

        fn exit(&mut self, p: Pid, status: ExitStatus) -> Vec<Action> {
            let a = self.ev(Event::Exited { pid: p, status });
            self.run(a)
        }

        fn hup(&mut self) -> Vec<Action> {
            let a = self.ev(Event::Reload(HUP));
            self.run(a)
        }

        fn alive(&self) -> usize {
            self.sup.children().count()
        }
    }

    #[test]
    fn first_child_becomes_running_after_start_secs() {
        let mut s = Sim::new();
        let p = s.start();
        assert!(matches!(
            s.sup.current().unwrap().phase,
            Phase::Starting { .. }
        ));
        assert_eq!(s.sup.next_deadline(), Some(s.t0 + Duration::from_secs(1)));
        assert!(s.at(999).is_empty());
        assert!(matches!(
            s.sup.current().unwrap().phase,
            Phase::Starting { .. }
        ));
        assert!(s.at(1000).is_empty());
        assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
        assert_eq!(s.sup.current().unwrap().pid, p);
        assert_eq!(s.sup.next_deadline(), None);
    }

    #[test]
    fn reload_stops_the_old_child_only_after_the_new_one_started() {
        let mut s = Sim::new();
        let old = s.start();
        s.at(1000);
        assert!(
            s.hup().is_empty(),
            "nothing is signalled when the new one is spawned"
        );
        let new = s.sup.pending().unwrap().pid;
        assert_ne!(new, old);
        assert_eq!(s.alive(), 2);
        assert!(s.at(1999).is_empty(), "old one untouched before start_secs");
        assert_eq!(
            s.at(2000),
            vec![sig(old.as_raw(), TERM), sig(old.as_raw(), CONT)]
        );
        assert_eq!(s.sup.current().unwrap().pid, new);
        assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
        assert!(s.sup.pending().is_none());
        assert!(s.exit(old, ExitStatus::Code(0)).is_empty());
        assert_eq!(s.alive(), 1);
        assert_eq!(s.sup.next_deadline(), None);
    }

    #[test]
    fn a_new_child_that_exits_early_leaves_the_old_one_untouched() {
        let mut s = Sim::new();
        let old = s.start();
        s.at(1000);
        s.hup();
        let new = s.sup.pending().unwrap().pid;
        assert!(s.exit(new, ExitStatus::Code(1)).is_empty());
        assert_eq!(s.sup.current().unwrap().pid, old);
        assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
        assert!(s.sup.pending().is_none());
        assert!(!s.sup.in_backoff(), "a failed reload is not a crash");
        assert!(s.at(10_000).is_empty(), "nothing happens later either");
    }

    #[test]
    fn a_new_child_that_cannot_exec_leaves_the_old_one_untouched() {
        let mut s = Sim::new();
        let old = s.start();
        s.at(1000);
        let a = s.ev(Event::Reload(HUP));
        assert_eq!(a, vec![Action::Spawn { generation: 2 }]);
        let a = s.ev(Event::Spawned {
            generation: 2,
            result: Err(SpawnFailure {
                message: "program not found".into(),
                exit_code: 127,
            }),
        });
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(s.sup.current().unwrap().pid, old);
        assert_eq!(s.alive(), 1);
        // The next reload works normally.
        s.hup();
        assert_eq!(s.sup.pending().unwrap().generation, 3);
    }

    #[test]
    fn reloads_during_a_reload_coalesce_into_one_follow_up() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        for _ in 0..5 {
            assert!(s.hup().is_empty());
        }
        assert_eq!(s.alive(), 2);
        // g2 is promoted; g1 stops. The follow-up waits until g1 is gone (two alive at most).
        assert_eq!(
            s.at(2000),
            vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
        );
        assert!(s.sup.pending().is_none());
        assert_eq!(s.alive(), 2);
        assert!(s.exit(g1, ExitStatus::Code(0)).is_empty());
        let g3 = s.sup.pending().expect("the one queued reload starts").pid;
        assert_eq!(s.sup.pending().unwrap().generation, 3);
        assert_eq!(
            s.at(3000),
            vec![sig(g2.as_raw(), TERM), sig(g2.as_raw(), CONT)]
        );
        s.exit(g2, ExitStatus::Code(0));
        assert_eq!(s.sup.current().unwrap().pid, g3);
        assert!(s.sup.pending().is_none(), "exactly one follow-up");
        assert_eq!(s.alive(), 1);
    }

    #[test]
    fn a_reload_while_the_old_generation_drains_waits_for_it() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        s.at(2000); // g1 stopping
        assert!(s.hup().is_empty());
        assert!(s.sup.pending().is_none());
        // g1 ignores TERM: SIGKILL at stop_wait, then the queued reload starts.
        assert_eq!(s.at(12_000), vec![sig(g1.as_raw(), KILL)]);
        assert!(s.exit(g1, ExitStatus::Signal(9)).is_empty());
        assert_eq!(s.sup.pending().unwrap().generation, 3);
    }

    #[test]
    fn a_failed_reload_still_runs_the_queued_one() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.hup();
        s.exit(g2, ExitStatus::Code(3));
        let g3 = s
            .sup
            .pending()
            .expect("queued reload starts after the failure");
        assert_eq!(g3.generation, 3);
        assert_eq!(s.sup.current().unwrap().pid, g1);
    }

    #[test]
    fn an_old_child_ignoring_the_stop_signal_is_killed_after_stop_wait() {
        let mut s = Sim::with(Settings {
            stop_wait: Duration::from_millis(500),
            ..Settings::default()
        });
        let g1 = s.start();
        s.at(1000);
        s.hup();
        s.at(2000);
        assert!(s.at(2499).is_empty());
        assert_eq!(s.at(2500), vec![sig(g1.as_raw(), KILL)]);
        assert!(s.at(5000).is_empty(), "SIGKILL is sent once");
        s.exit(g1, ExitStatus::Signal(9));
        assert_eq!(s.alive(), 1);
    }

    #[test]
    fn stop_signals_the_child_and_exits_with_its_status() {
        let mut s = Sim::new();
        let p = s.start();
        s.at(1000);
        assert_eq!(
            s.ev(Event::Stop(TERM)),
            vec![sig(p.as_raw(), TERM), sig(p.as_raw(), CONT)]
        );
        assert!(s.sup.is_stopping());
        assert_eq!(
            s.exit(p, ExitStatus::Code(7)),
            vec![Action::Exit { code: 7 }]
        );
    }

    #[test]
    fn stop_exit_code_is_128_plus_signal() {
        let mut s = Sim::new();
        let p = s.start();
        s.ev(Event::Stop(Signal::SIGINT));
        assert_eq!(
            s.exit(p, ExitStatus::Signal(15)),
            vec![Action::Exit { code: 143 }]
        );
    }

    #[test]
    fn stop_kills_after_stop_wait_and_a_second_term_does_not_skip_the_grace() {
        let mut s = Sim::new();
        let p = s.start();
        s.ev(Event::Stop(TERM));
        s.ms = 5000;
        assert!(s.ev(Event::Stop(TERM)).is_empty());
        assert!(s.ev(Event::Stop(Signal::SIGINT)).is_empty());
        assert_eq!(s.at(10_000), vec![sig(p.as_raw(), KILL)]);
        assert_eq!(
            s.exit(p, ExitStatus::Signal(9)),
            vec![Action::Exit { code: 137 }]
        );
    }

    #[test]
    fn sigquit_during_a_stop_kills_at_once() {
        let mut s = Sim::new();
        let p = s.start();
        s.ev(Event::Stop(TERM));
        assert_eq!(
            s.ev(Event::Stop(Signal::SIGQUIT)),
            vec![sig(p.as_raw(), KILL)]
        );
        assert!(s.at(10_000).is_empty(), "not killed twice");
    }

    #[test]
    fn stop_during_a_reload_stops_both_and_uses_the_current_status() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        let a = s.ev(Event::Stop(TERM));
        assert_eq!(
            a,
            vec![
                sig(g1.as_raw(), TERM),
                sig(g1.as_raw(), CONT),
                sig(g2.as_raw(), TERM),
                sig(g2.as_raw(), CONT)
            ]
        );
        assert!(s.hup().is_empty(), "no reload while stopping");
        assert!(s.exit(g2, ExitStatus::Code(9)).is_empty());
        assert_eq!(
            s.exit(g1, ExitStatus::Code(4)),
            vec![Action::Exit { code: 4 }]
        );
    }

    #[test]
    fn stop_with_no_child_exits_at_once_with_the_last_status() {
        let mut s = Sim::new();
        let p = s.start();
        s.at(1000);
        s.exit(p, ExitStatus::Code(5));
        assert!(s.sup.in_backoff());
        assert_eq!(s.ev(Event::Stop(TERM)), vec![Action::Exit { code: 5 }]);
        assert!(s.at(60_000).is_empty(), "the backoff restart was cancelled");
    }

    #[test]
    fn crash_restarts_with_doubling_backoff_that_resets_once_started() {
        let mut s = Sim::with(exact());
        let mut p = s.start();
        s.at(1000);
        let mut t;
        // Crash after running: first delay is backoff_min.
        s.exit(p, ExitStatus::Signal(9));
        assert_eq!(
            s.sup.next_deadline(),
            Some(s.now() + Duration::from_millis(100))
        );
        let mut expected = vec![];
        let mut delays = vec![];
        for _ in 0..10 {
            let deadline = s.sup.next_deadline().unwrap();
            delays.push((deadline - s.now()).as_millis() as u64);
            t = (deadline - s.t0).as_millis() as u64;
            s.at(t);
            p = s.sup.current().unwrap().pid;
            // Dies before counting as started.
            s.exit(p, ExitStatus::Code(1));
        }
        for d in [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000] {
            expected.push(d);
        }
        assert_eq!(delays, expected);
        // One that stays up start_secs resets the backoff.
        let deadline = s.sup.next_deadline().unwrap();
        t = (deadline - s.t0).as_millis() as u64;
        s.at(t);
        p = s.sup.current().unwrap().pid;
        s.at(t + 1000);
        assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(
            s.sup.next_deadline(),
            Some(s.now() + Duration::from_millis(100))
        );
    }

    #[test]
    fn a_reload_during_backoff_starts_at_once() {
        let mut s = Sim::new();
        let p = s.start();
        s.at(1000);
        s.exit(p, ExitStatus::Code(1));
        assert!(s.sup.in_backoff());
        let a = s.ev(Event::Reload(HUP));
        assert_eq!(a, vec![Action::Spawn { generation: 2 }]);
        s.run(a);
        assert!(!s.sup.in_backoff());
        assert_eq!(s.sup.current().unwrap().generation, 2);
        assert!(s.sup.pending().is_none());
    }

    #[test]
    fn first_spawn_failure_exits_with_its_code() {
        let mut s = Sim::new();
        s.sup.start();
        let a = s.ev(Event::Spawned {
            generation: 1,
            result: Err(SpawnFailure {
                message: "program not executable".into(),
                exit_code: 126,
            }),
        });
        assert_eq!(a, vec![Action::Exit { code: 126 }]);
        assert!(s.ev(Event::Reload(HUP)).is_empty(), "nothing after exit");
    }

    #[test]
    fn a_later_spawn_failure_backs_off_instead_of_exiting() {
        let mut s = Sim::with(exact());
        let p = s.start();
        s.at(1000);
        s.exit(p, ExitStatus::Code(1));
        s.ms = 1100;
        let a = s.ev(Event::Tick);
        assert_eq!(a, vec![Action::Spawn { generation: 2 }]);
        let a = s.ev(Event::Spawned {
            generation: 2,
            result: Err(SpawnFailure {
                message: "gone".into(),
                exit_code: 127,
            }),
        });
        assert!(a.is_empty());
        assert!(s.sup.in_backoff());
        assert_eq!(
            s.sup.next_deadline(),
            Some(s.now() + Duration::from_millis(200))
        );
    }

    #[test]
    fn the_old_child_dying_during_a_reload_lets_the_new_one_take_over() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.exit(g1, ExitStatus::Signal(11));
        assert!(!s.sup.in_backoff());
        assert!(s.at(2000).is_empty());
        assert_eq!(s.sup.current().unwrap().pid, g2);
    }

    #[test]
    fn both_dying_during_a_reload_restarts_with_backoff() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.exit(g1, ExitStatus::Signal(11));
        s.exit(g2, ExitStatus::Code(1));
        assert!(s.sup.in_backoff());
        s.at(5000);
        assert!(s.sup.current().is_some());
    }

    #[test]
    fn signals_are_forwarded_to_the_current_child_only() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        s.hup();
        assert_eq!(
            s.ev(Event::Forward(Signal::SIGUSR1)),
            vec![sig(g1.as_raw(), Signal::SIGUSR1)]
        );
    }

    #[test]
    fn status_display() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
        assert_eq!(
            ExitStatus::Signal(9).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(ExitStatus::Signal(15).shell_code(), 143);
        assert_eq!(ExitStatus::Code(3).ended(), "exited with exit code 3");
        assert_eq!(
            ExitStatus::Signal(9).ended(),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    fn notify_settings() -> Settings {
        Settings {
            ready_signal: true,
            start_secs: Duration::ZERO,
            ready_timeout: Duration::from_secs(60),
            ..Settings::default()
        }
    }

    fn ready(p: Pid) -> Event {
        Event::Notify {
            pid: p,
            note: Note {
                ready: true,
                ..Note::default()
            },
        }
    }

    fn status(p: Pid, text: &str) -> Event {
        Event::Notify {
            pid: p,
            note: Note {
                status: Some(text.into()),
                ..Note::default()
            },
        }
    }

    #[test]
    fn notify_mode_waits_for_ready_then_stops_the_old_one_at_once() {
        let mut s = Sim::with(notify_settings());
        let g1 = s.start();
        assert!(
            s.at(30_000).is_empty(),
            "no timer promotes a child in notify mode"
        );
        assert!(matches!(
            s.sup.current().unwrap().phase,
            Phase::Starting { ready: false, .. }
        ));
        assert!(s.ev(ready(g1)).is_empty());
        assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        assert!(
            s.at(59_000).is_empty(),
            "the old one serves until the new one is ready"
        );
        assert_eq!(
            s.ev(ready(g2)),
            vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)],
            "READY=1 stops the old generation in the same step"
        );
        assert_eq!(s.sup.current().unwrap().pid, g2);
        assert_eq!(s.done, vec![(2, true)]);
    }

    #[test]
    fn notify_mode_start_secs_is_the_minimum_time_alive_after_ready() {
        let mut s = Sim::with(Settings {
            start_secs: Duration::from_millis(500),
            ..notify_settings()
        });
        let g1 = s.start();
        s.ev(ready(g1));
        s.at(500);
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.ms = 1000;
        assert!(s.ev(ready(g2)).is_empty());
        assert!(s.at(1499).is_empty());
        assert_eq!(
            s.at(1500),
            vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
        );
    }

    #[test]
    fn a_new_child_never_ready_is_stopped_at_the_timeout_and_the_old_one_stays() {
        let mut s = Sim::with(notify_settings());
        let g1 = s.start();
        s.ev(ready(g1));
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.ev(status(g2, "loading model"));
        assert!(s.at(59_999).is_empty());
        assert_eq!(
            s.at(60_000),
            vec![sig(g2.as_raw(), TERM), sig(g2.as_raw(), CONT)]
        );
        assert_eq!(
            s.sup.current().unwrap().pid,
            g1,
            "the old one keeps serving"
        );
        assert!(s.sup.pending().is_none());
        assert_eq!(s.done, vec![(2, false)]);
        // It still gets SIGKILL if it ignores the stop signal, and is reaped as retiring.
        assert_eq!(s.at(70_000), vec![sig(g2.as_raw(), KILL)]);
        assert!(s.exit(g2, ExitStatus::Signal(9)).is_empty());
        assert_eq!(s.alive(), 1);
        assert!(!s.sup.in_backoff());
    }

    #[test]
    fn not_ready_reason_carries_the_last_status() {
        let mut s = Sim::with(notify_settings());
        let g1 = s.start();
        s.ev(ready(g1));
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.ev(status(g2, "waiting for the database"));
        s.ms = 60_000;
        let actions = s.sup.handle(Event::Tick, s.now());
        let reason = actions
            .iter()
            .find_map(|a| match a {
                Action::ReloadDone {
                    reason, ok: false, ..
                } => Some(reason.clone()),
                _ => None,
            })
            .expect("a failed reload is reported");
        assert_eq!(
            reason,
            "not ready within --ready-timeout 60s (last status: waiting for the database)"
        );
    }

    #[test]
    fn extend_timeout_usec_moves_the_deadline() {
        let mut s = Sim::with(notify_settings());
        let g1 = s.start();
        s.ms = 50_000;
        s.ev(Event::Notify {
            pid: g1,
            note: Note {
                extend_timeout: Some(Duration::from_secs(30)),
                ..Note::default()
            },
        });
        assert!(s.at(79_999).is_empty(), "deadline moved to 80 s");
        assert!(matches!(
            s.sup.current().unwrap().phase,
            Phase::Starting { ready: false, .. }
        ));
        // Not ready by then: stopped, and a restart is scheduled.
        assert_eq!(
            s.at(80_000),
            vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
        );
        assert!(s.sup.current().is_none());
        assert!(s.sup.in_backoff());
    }

    #[test]
    fn ready_is_ignored_in_timer_mode_and_from_strangers() {
        let mut s = Sim::new();
        let g1 = s.start();
        assert!(s.ev(ready(g1)).is_empty());
        assert!(matches!(
            s.sup.current().unwrap().phase,
            Phase::Starting { .. }
        ));
        assert!(s.ev(ready(pid(4242))).is_empty());
        assert!(s.at(1000).is_empty());
        assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
    }

    #[test]
    fn the_service_manager_hears_ready_reloading_ready_stopping() {
        let mut s = Sim::new();
        let g1 = s.start();
        assert!(
            s.manager.is_empty(),
            "not ready before the first generation is up"
        );
        s.at(1000);
        assert_eq!(
            s.manager,
            vec![ManagerMessage::Ready {
                status: format!("generation 1 (pid {g1}) serving")
            }]
        );
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.hup(); // coalesced: one RELOADING, one READY at the very end
        assert_eq!(s.manager.len(), 2);
        assert!(matches!(&s.manager[1], ManagerMessage::Reloading { .. }));
        s.at(2000);
        assert_eq!(
            s.manager.len(),
            2,
            "no READY while a follow-up reload is queued"
        );
        s.exit(g1, ExitStatus::Code(0));
        s.at(3000);
        s.exit(g2, ExitStatus::Code(0));
        assert_eq!(s.done, vec![(2, true), (3, true)]);
        assert_eq!(s.manager.len(), 3);
        match &s.manager[2] {
            ManagerMessage::Ready { status } => {
                assert!(
                    status.contains("generation 3") && status.contains("succeeded"),
                    "{status}"
                )
            }
            other => panic!("expected READY, got {other:?}"),
        }
        // A failed reload also ends with READY, saying it failed.
        s.hup();
        let g4 = s.sup.pending().unwrap().pid;
        s.exit(g4, ExitStatus::Code(1));
        match s.manager.last().unwrap() {
            ManagerMessage::Ready { status } => {
                assert!(
                    status.contains("last reload failed: exited with exit code 1"),
                    "{status}"
                )
            }
            other => panic!("expected READY, got {other:?}"),
        }
        s.ev(Event::Stop(TERM));
        assert_eq!(s.manager.last(), Some(&ManagerMessage::Stopping));
    }

    #[test]
    fn the_service_manager_hears_why_nothing_serves() {
        let mut s = Sim::new();
        let p = s.start();
        s.at(1000);
        assert!(s.statuses.is_empty(), "nothing to say while it serves");
        s.exit(p, ExitStatus::Code(7));
        assert_eq!(s.statuses.len(), 1, "{:?}", s.statuses);
        assert!(
            s.statuses[0].starts_with("BACKOFF: ") && s.statuses[0].contains("exit code 7"),
            "{:?}",
            s.statuses
        );
    }

    #[test]
    fn every_reload_attempt_reports_its_outcome() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        // Success.
        s.hup();
        s.at(2000);
        s.exit(g1, ExitStatus::Code(0));
        // Early exit.
        s.hup();
        let g3 = s.sup.pending().unwrap().pid;
        s.exit(g3, ExitStatus::Code(1));
        // Exec failure.
        let a = s.ev(Event::Reload(HUP));
        assert_eq!(a, vec![Action::Spawn { generation: 4 }]);
        s.ev(Event::Spawned {
            generation: 4,
            result: Err(SpawnFailure {
                message: "program not found".into(),
                exit_code: 127,
            }),
        });
        // Interrupted by a stop.
        s.hup();
        s.ev(Event::Stop(TERM));
        assert_eq!(s.done, vec![(2, true), (3, false), (4, false), (5, false)]);
    }

    #[test]
    fn a_stop_between_a_spawn_request_and_its_result_stops_the_new_child_too() {
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        // The reload's spawn is requested, then a stop is handled before the spawn ran.
        let spawn = s.ev(Event::Reload(Trigger::Control));
        assert_eq!(spawn, vec![Action::Spawn { generation: 2 }]);
        assert_eq!(
            s.ev(Event::Stop(TERM)),
            vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
        );
        assert_eq!(s.done, vec![(2, false)], "the attempt ends with the stop");
        let a = s.ev(Event::Spawned {
            generation: 2,
            result: Ok(pid(777)),
        });
        assert_eq!(a, vec![sig(777, TERM), sig(777, CONT)]);
        assert!(s.exit(g1, ExitStatus::Code(0)).is_empty());
        assert_eq!(
            s.exit(pid(777), ExitStatus::Code(0)),
            vec![Action::Exit { code: 0 }]
        );
    }

    // ----------------------------------------------------------------------------------------
    // Restart policy

    fn policy(restart: RestartPolicy, codes: &[i32]) -> Settings {
        Settings {
            restart,
            exit_codes: ExitCodes::of(codes),
            ..exact()
        }
    }

    /// Starts generation 1 and lets it count as started (at 1000 ms).
    fn running(s: &mut Sim) -> Pid {
        let p = s.start();
        s.at(1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        p
    }

    #[test]
    fn on_failure_does_not_restart_an_expected_exit_code_and_waits_for_a_reload() {
        let mut s = Sim::with(policy(RestartPolicy::OnFailure, &[0, 2]));
        let p = running(&mut s);
        assert!(s.exit(p, ExitStatus::Code(2)).is_empty());
        assert_eq!(s.sup.state(), ProgramState::Exited);
        assert!(!s.sup.in_backoff());
        assert_eq!(s.sup.next_deadline(), None, "nothing is scheduled");
        assert!(s.at(600_000).is_empty(), "and nothing happens, ever");
        assert!(
            s.sup.state_reason().contains("exit code 2") && s.sup.state_reason().contains("0,2"),
            "{}",
            s.sup.state_reason()
        );
        // A reload starts a new generation as current.
        let a = s.ev(Event::Reload(HUP));
        assert_eq!(a, vec![Action::Spawn { generation: 2 }]);
        s.run(a);
        assert_eq!(s.sup.state(), ProgramState::Starting);
        assert_eq!(s.sup.current().unwrap().generation, 2);
        s.at(601_000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert_eq!(s.done, vec![(2, true)]);
    }

    #[test]
    fn on_failure_restarts_unexpected_codes_and_any_signal() {
        // Even a signal whose number is among the expected codes is a failure.
        let mut s = Sim::with(policy(RestartPolicy::OnFailure, &[0, 9]));
        let p = running(&mut s);
        s.exit(p, ExitStatus::Signal(9));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        s.at(1100);
        let p = s.sup.current().unwrap().pid;
        s.at(2100);
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        s.at(2200);
        let p = s.sup.current().unwrap().pid;
        s.at(3200);
        s.exit(p, ExitStatus::Code(0));
        assert_eq!(s.sup.state(), ProgramState::Exited);
    }

    #[test]
    fn always_restarts_even_a_clean_exit() {
        let mut s = Sim::with(policy(RestartPolicy::Always, &[0]));
        let p = running(&mut s);
        s.exit(p, ExitStatus::Code(0));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        assert_eq!(s.at(1100), Vec::<Action>::new());
        assert_eq!(s.sup.current().unwrap().generation, 2);
    }

    #[test]
    fn never_restarts_not_even_a_crash_and_stop_then_exits_with_its_status() {
        let mut s = Sim::with(policy(RestartPolicy::Never, &[0]));
        let p = running(&mut s);
        s.exit(p, ExitStatus::Signal(11));
        assert_eq!(s.sup.state(), ProgramState::Exited);
        assert!(s.at(100_000).is_empty());
        assert_eq!(
            s.ev(Event::Stop(TERM)),
            vec![Action::Exit { code: 139 }],
            "relaunch exits like a shell with the last child's status"
        );
    }

    #[test]
    fn accessors_show_the_attempt_in_progress_and_the_coalesced_follow_up() {
        let mut s = Sim::new();
        let g1 = s.start();
        assert_eq!(s.sup.reloading(), None);
        s.at(1000);
        s.hup();
        assert_eq!(s.sup.reloading(), Some((2, &HUP)));
        assert!(!s.sup.reload_queued());
        s.ev(Event::Reload(Trigger::Control));
        assert!(s.sup.reload_queued(), "a request during a reload is queued");
        assert_eq!(
            s.sup.reloading(),
            Some((2, &HUP)),
            "the attempt is unchanged"
        );
        s.at(2000);
        assert_eq!(s.sup.reloading(), None, "generation 2 took over");
        assert!(
            s.sup.reload_queued(),
            "the follow-up waits for generation 1 to exit"
        );
        s.exit(g1, ExitStatus::Code(0));
        assert_eq!(s.sup.reloading(), Some((3, &Trigger::Control)));
        assert!(!s.sup.reload_queued());
        let g2 = s.sup.current().unwrap().pid;
        s.at(3000);
        s.exit(g2, ExitStatus::Code(0));
        let g3 = s.sup.current().unwrap().pid;
        assert_eq!(s.sup.backoff(), None);
        s.exit(g3, ExitStatus::Code(1));
        assert_eq!(
            s.sup.backoff(),
            Some((s.now() + Duration::from_millis(100), 4))
        );
    }

    #[test]
    fn a_failed_start_is_retried_whatever_the_restart_policy() {
        // supervisord too retries a process that exits during startsecs, even with
        // autorestart=false and an expected code: a server that exits at once did not start.
        let mut s = Sim::with(policy(RestartPolicy::Never, &[0]));
        let p = s.start();
        s.at(500);
        s.exit(p, ExitStatus::Code(0));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        assert_eq!(s.sup.start_failures(), 1);
    }

    fn retries(n: u32, on_fatal: OnFatal) -> Settings {
        Settings {
            start_retries: n,
            on_fatal,
            ..exact()
        }
    }

    /// Lets the current child exit at once with `status`, then waits out the backoff;
    /// returns what the exit produced.
    fn fail_start(s: &mut Sim, status: ExitStatus) -> Vec<Action> {
        let p = s.sup.current().expect("a generation is starting").pid;
        s.ms += 10;
        let a = s.exit(p, status);
        if let Some(at) = s.sup.restart_at() {
            let ms = (at - s.t0).as_millis() as u64;
            s.at(ms);
        }
        a
    }

    #[test]
    fn start_retries_then_fatal_exits_with_the_last_status() {
        let mut s = Sim::with(retries(2, OnFatal::Exit));
        s.start();
        assert!(fail_start(&mut s, ExitStatus::Code(3)).is_empty());
        assert_eq!(s.sup.start_failures(), 1);
        assert!(fail_start(&mut s, ExitStatus::Code(4)).is_empty());
        assert_eq!(s.sup.start_failures(), 2);
        assert_eq!(s.sup.state(), ProgramState::Starting, "third attempt");
        let a = fail_start(&mut s, ExitStatus::Code(5));
        assert_eq!(a, vec![Action::Exit { code: 5 }]);
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        assert_eq!(s.manager.last(), Some(&ManagerMessage::Stopping));
        assert!(
            s.sup
                .state_reason()
                .starts_with("3 consecutive start failures (--start-retries 2)"),
            "{}",
            s.sup.state_reason()
        );
        assert!(s.ev(Event::Reload(HUP)).is_empty(), "nothing after exit");
    }

    #[test]
    fn fatal_exit_code_is_never_zero_and_follows_the_shell() {
        for (status, code) in [
            (ExitStatus::Code(0), 1),
            (ExitStatus::Code(7), 7),
            (ExitStatus::Signal(9), 137),
        ] {
            let mut s = Sim::with(retries(0, OnFatal::Exit));
            s.start();
            assert_eq!(
                fail_start(&mut s, status),
                vec![Action::Exit { code }],
                "{status}"
            );
        }
        // An exec failure of a later attempt: its 126/127 (after serving, only --max-restarts
        // makes the program FATAL).
        let mut s = Sim::with(Settings {
            max_restarts: Some(2),
            ..retries(1, OnFatal::Exit)
        });
        let p = running(&mut s);
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(s.ev(Event::Tick), vec![]);
        s.ms = 1100;
        assert_eq!(s.ev(Event::Tick), vec![Action::Spawn { generation: 2 }]);
        let gone = |generation| Event::Spawned {
            generation,
            result: Err(SpawnFailure {
                message: "program not found".into(),
                exit_code: 127,
            }),
        };
        assert!(s.ev(gone(2)).is_empty());
        s.ms = 1300;
        assert_eq!(s.ev(Event::Tick), vec![Action::Spawn { generation: 3 }]);
        assert_eq!(s.ev(gone(3)), vec![Action::Exit { code: 127 }]);
    }

    #[test]
    fn fatal_exit_waits_for_a_child_still_stopping() {
        // Not ready in time: the child is stopped, and relaunch exits only once it is reaped.
        let mut s = Sim::with(Settings {
            start_retries: 0,
            ..notify_settings()
        });
        let p = s.start();
        assert_eq!(
            s.at(60_000),
            vec![sig(p.as_raw(), TERM), sig(p.as_raw(), CONT)]
        );
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        assert_eq!(s.at(70_000), vec![sig(p.as_raw(), KILL)]);
        assert_eq!(
            s.exit(p, ExitStatus::Signal(9)),
            vec![Action::Exit { code: 1 }],
            "not ready in time is a failure of its own, not the kill's 137"
        );
    }

    #[test]
    fn on_fatal_wait_keeps_waiting_and_a_reload_starts_from_a_fresh_count() {
        let mut s = Sim::with(retries(1, OnFatal::Wait));
        s.start();
        fail_start(&mut s, ExitStatus::Code(1));
        assert!(fail_start(&mut s, ExitStatus::Code(1)).is_empty());
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        assert_eq!(s.sup.next_deadline(), None);
        assert!(s.at(1_000_000).is_empty(), "FATAL waits without restarting");
        // A reload: a new attempt with a fresh retry count (two attempts again).
        let a = s.ev(Event::Reload(HUP));
        assert_eq!(a, vec![Action::Spawn { generation: 3 }]);
        s.run(a);
        assert_eq!(s.sup.start_failures(), 0);
        assert_eq!(s.sup.state(), ProgramState::Starting);
        fail_start(&mut s, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Starting);
        fail_start(&mut s, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        // A stop in FATAL exits with the failure's code.
        assert_eq!(s.ev(Event::Stop(TERM)), vec![Action::Exit { code: 1 }]);
    }

    #[test]
    fn a_start_that_counts_resets_the_retry_count() {
        let mut s = Sim::with(retries(2, OnFatal::Exit));
        s.start();
        fail_start(&mut s, ExitStatus::Code(1));
        fail_start(&mut s, ExitStatus::Code(1));
        assert_eq!(s.sup.start_failures(), 2);
        s.at(s.ms + 1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert_eq!(s.sup.start_failures(), 0);
        let p = s.sup.current().unwrap().pid;
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(
            s.sup.start_failures(),
            0,
            "a crash after running is no start failure"
        );
        assert_eq!(s.sup.state(), ProgramState::Backoff);
    }

    #[test]
    fn a_failed_reload_does_not_count_as_a_start_failure() {
        let mut s = Sim::with(retries(0, OnFatal::Exit));
        running(&mut s);
        for _ in 0..3 {
            s.hup();
            let p = s.sup.pending().unwrap().pid;
            assert!(s.exit(p, ExitStatus::Code(1)).is_empty());
        }
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert_eq!(s.sup.start_failures(), 0);
    }

    #[test]
    fn a_crash_loop_within_the_window_is_fatal() {
        let mut s = Sim::with(Settings {
            max_restarts: Some(2),
            restart_window: Duration::from_secs(10),
            ..exact()
        });
        let mut p = running(&mut s);
        // Two restarts are allowed within 10 s; each child runs (1 s) before it crashes.
        for _ in 0..2 {
            s.exit(p, ExitStatus::Code(1));
            assert_eq!(s.sup.state(), ProgramState::Backoff);
            s.at(s.ms + 100);
            p = s.sup.current().unwrap().pid;
            s.at(s.ms + 1000);
            assert_eq!(s.sup.state(), ProgramState::Running);
        }
        let a = s.exit(p, ExitStatus::Code(1));
        assert_eq!(a, vec![Action::Exit { code: 1 }]);
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        assert!(
            s.sup
                .state_reason()
                .starts_with("crash loop: generation 3 exited with exit code 1"),
            "{}",
            s.sup.state_reason()
        );
    }

    /// A served program crashes and its next `n` restarts fail at once; checks the state,
    /// reason, attempt count and delay after each. Ends in BACKOFF.
    fn crash_then_failed_restarts(s: &mut Sim, n: u32) {
        let p = s.sup.current().unwrap().pid;
        s.ms += 10;
        assert!(s.exit(p, ExitStatus::Signal(9)).is_empty());
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        assert_eq!(s.sup.restart_attempt(), 1);
        for attempt in 1..=n {
            let at = s.sup.restart_at().expect("a restart is scheduled");
            let delay = at.saturating_duration_since(s.now());
            assert!(
                delay <= s.sup.settings().backoff_max,
                "attempt {attempt}: {delay:?} is over --backoff-max"
            );
            s.at((at - s.t0).as_millis() as u64);
            assert_eq!(s.sup.state(), ProgramState::Starting, "attempt {attempt}");
            s.ms += 10;
            let a = s.exit(s.sup.current().unwrap().pid, ExitStatus::Code(1));
            assert!(a.is_empty(), "attempt {attempt}: {a:?}");
            assert_eq!(s.sup.state(), ProgramState::Backoff, "attempt {attempt}");
            assert_eq!(s.sup.restart_attempt(), attempt + 1);
            assert_eq!(s.sup.start_failures(), attempt);
            let reason = s.sup.state_reason();
            assert!(
                reason.contains(&format!("(failed restarts in a row: {attempt})"))
                    && reason.contains(&format!("restart attempt {}", attempt + 1)),
                "{reason}"
            );
        }
    }

    #[test]
    fn after_serving_failed_restarts_back_off_for_as_long_as_it_takes() {
        // --start-retries 2 would make the third failed *first* start FATAL; after serving it
        // does not apply: 40 failed restarts in a row, delays capped at --backoff-max.
        let mut s = Sim::with(Settings {
            backoff_max: Duration::from_secs(2),
            ..retries(2, OnFatal::Exit)
        });
        running(&mut s);
        assert!(s.sup.has_served());
        // fail_start waits out each backoff itself; the helper checks each step.
        let p = s.sup.current().unwrap().pid;
        s.ms += 10;
        s.exit(p, ExitStatus::Signal(9));
        for attempt in 1..=40u32 {
            let at = s.sup.restart_at().expect("a restart is scheduled");
            assert!(at.saturating_duration_since(s.now()) <= Duration::from_secs(2));
            s.at((at - s.t0).as_millis() as u64);
            let a = s.exit(s.sup.current().unwrap().pid, ExitStatus::Code(1));
            assert!(a.is_empty(), "attempt {attempt}: {a:?}");
            assert_eq!(s.sup.state(), ProgramState::Backoff, "attempt {attempt}");
            assert_eq!(s.sup.restart_attempt(), attempt + 1);
        }
        assert!(
            s.statuses.iter().all(|t| t.starts_with("BACKOFF: ")),
            "{:?}",
            s.statuses
        );
        // Exec failures count the same way.
        let at = s.sup.restart_at().unwrap();
        s.ms = (at - s.t0).as_millis() as u64;
        let a = s.ev(Event::Tick);
        let Some(Action::Spawn { generation }) = a.first().cloned() else {
            panic!("expected a spawn, got {a:?}")
        };
        let failed = s.ev(Event::Spawned {
            generation,
            result: Err(SpawnFailure {
                message: "program not found".into(),
                exit_code: 127,
            }),
        });
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        // The outage ends: a restart that stays up counts, and the counts start over.
        let at = s.sup.restart_at().unwrap();
        s.at((at - s.t0).as_millis() as u64);
        s.at(s.ms + 1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert_eq!((s.sup.restart_attempt(), s.sup.start_failures()), (0, 0));
    }

    #[test]
    fn the_first_start_still_fails_fast_but_not_once_served() {
        // Never served: the --start-retries + 1-th failure is FATAL (a bad deploy).
        let mut s = Sim::with(retries(1, OnFatal::Wait));
        s.start();
        fail_start(&mut s, ExitStatus::Code(1));
        fail_start(&mut s, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        assert!(!s.sup.has_served());
        // The same settings after serving: five failed restarts and still BACKOFF.
        let mut s = Sim::with(retries(1, OnFatal::Wait));
        running(&mut s);
        crash_then_failed_restarts(&mut s, 5);
    }

    #[test]
    fn after_serving_only_max_restarts_makes_failed_restarts_fatal() {
        let mut s = Sim::with(Settings {
            max_restarts: Some(4),
            restart_window: Duration::from_secs(60),
            ..retries(0, OnFatal::Exit)
        });
        running(&mut s);
        // The crash is restart 1; three failed restarts are restarts 2 to 4.
        crash_then_failed_restarts(&mut s, 3);
        s.at((s.sup.restart_at().unwrap() - s.t0).as_millis() as u64);
        let a = fail_start(&mut s, ExitStatus::Code(7));
        assert_eq!(a, vec![Action::Exit { code: 7 }], "--on-fatal exit applies");
        assert_eq!(s.sup.state(), ProgramState::Fatal);
        assert!(
            s.sup.state_reason().starts_with("crash loop: ")
                && s.sup.state_reason().contains("--max-restarts 4"),
            "{}",
            s.sup.state_reason()
        );
    }

    #[test]
    fn the_outage_error_is_throttled_to_one_per_backoff_max() {
        // The error line's throttle: the first failure of an outage logs it, then at most one
        // per --backoff-max; a start that counts ends the outage.
        let mut s = Sim::with(Settings {
            backoff_max: Duration::from_secs(1),
            ..exact()
        });
        running(&mut s);
        let p = s.sup.current().unwrap().pid;
        s.exit(p, ExitStatus::Code(1));
        let mut logged = Vec::new();
        for _ in 0..30 {
            let at = s.sup.restart_at().unwrap();
            s.at((at - s.t0).as_millis() as u64);
            let before = s.sup.outage_logged_at;
            s.ms += 10;
            s.exit(s.sup.current().unwrap().pid, ExitStatus::Code(1));
            if s.sup.outage_logged_at != before {
                logged.push(s.ms);
            }
        }
        assert!(!logged.is_empty());
        for pair in logged.windows(2) {
            assert!(pair[1] - pair[0] >= 1000, "{logged:?}");
        }
        // 30 failures, each over 100 ms after the last and capped at 1 s: far fewer errors.
        assert!(logged.len() < 30, "{logged:?}");
        s.at(s
            .sup
            .restart_at()
            .map_or(s.ms, |at| (at - s.t0).as_millis() as u64));
        s.at(s.ms + 1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert_eq!(s.sup.outage_logged_at, None, "the next outage logs at once");
    }

    #[test]
    fn a_reload_asked_for_during_the_first_start_is_announced_after_ready() {
        // Old behaviour: RELOADING=1 went out at once, before any READY=1, and the reload that
        // followed was never announced.
        let mut s = Sim::new();
        let g1 = s.start();
        s.hup();
        assert!(s.manager.is_empty(), "{:?}", s.manager);
        s.at(1000);
        assert_eq!(
            s.manager[0],
            ManagerMessage::Ready {
                status: format!("generation 1 (pid {g1}) serving")
            }
        );
        assert!(
            matches!(&s.manager[1..], [ManagerMessage::Reloading { .. }]),
            "the queued reload starts now and is announced: {:?}",
            s.manager
        );
        assert_eq!(s.sup.pending().unwrap().generation, 2);
        s.at(2000);
        assert!(
            matches!(&s.manager[2..], [ManagerMessage::Ready { status }] if status.contains("generation 2")),
            "{:?}",
            s.manager
        );
        // The next reload: exactly one RELOADING, then one READY.
        s.exit(g1, ExitStatus::Code(0));
        s.hup();
        s.at(3000);
        assert!(
            matches!(
                &s.manager[3..],
                [
                    ManagerMessage::Reloading { .. },
                    ManagerMessage::Ready { .. }
                ]
            ),
            "{:?}",
            s.manager
        );
    }

    #[test]
    fn a_reload_during_a_first_start_in_backoff_sends_no_reloading() {
        let mut s = Sim::with(exact());
        s.start();
        fail_start(&mut s, ExitStatus::Code(1));
        let p = s.sup.current().unwrap().pid;
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        s.hup();
        s.at(s.ms + 1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert!(
            matches!(&s.manager[..], [ManagerMessage::Ready { .. }]),
            "{:?}",
            s.manager
        );
    }

    #[test]
    fn the_reason_stays_true_when_the_old_generation_dies_mid_reload() {
        let mut s = Sim::new();
        let g1 = running(&mut s);
        assert_eq!(
            s.sup.state_reason(),
            format!("generation 1 (pid {g1}) is up")
        );
        s.hup();
        let g2 = s.sup.pending().unwrap().pid;
        s.ms = 1500;
        s.exit(g1, ExitStatus::Signal(9));
        assert_eq!(s.sup.state(), ProgramState::Starting);
        assert_eq!(
            s.sup.state_reason(),
            format!(
                "generation 1 was killed by signal 9 (SIGKILL) during the reload; generation 2 (pid {g2}) takes over once it is up"
            )
        );
        s.at(2000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        assert_eq!(
            s.sup.state_reason(),
            format!("reload complete: generation 2 (pid {g2}) serves")
        );
        // And if the new one fails too: BACKOFF, saying so (a failed restart of a served
        // program).
        s.hup();
        let g3 = s.sup.pending().unwrap().pid;
        s.exit(g2, ExitStatus::Code(1));
        s.exit(g3, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        assert!(
            s.sup
                .state_reason()
                .starts_with("generation 3 exited with exit code 1"),
            "{}",
            s.sup.state_reason()
        );
    }

    #[test]
    fn restarts_spread_wider_than_the_window_are_no_crash_loop() {
        let mut s = Sim::with(Settings {
            max_restarts: Some(1),
            restart_window: Duration::from_secs(10),
            ..exact()
        });
        let mut p = running(&mut s);
        for _ in 0..5 {
            s.exit(p, ExitStatus::Code(1));
            assert_eq!(s.sup.state(), ProgramState::Backoff);
            s.at(s.ms + 100);
            p = s.sup.current().unwrap().pid;
            s.at(s.ms + 10_000);
        }
        assert_eq!(s.sup.state(), ProgramState::Running);
    }

    #[test]
    fn backoff_bounds_follow_min_factor_and_max() {
        let set = |min_ms, factor, max_ms| Settings {
            backoff_min: Duration::from_millis(min_ms),
            backoff_factor: factor,
            backoff_max: Duration::from_millis(max_ms),
            ..Settings::default()
        };
        let ms = |s: &Settings, step| backoff_delay(s, step).as_millis() as u64;
        let s = set(100, 1.5, 1000);
        let got: Vec<u64> = (0..8).map(|step| ms(&s, step)).collect();
        assert_eq!(got, [100, 150, 225, 337, 506, 759, 1000, 1000]);
        let s = set(250, 1.0, 1000);
        assert_eq!(ms(&s, 50), 250, "factor 1: constant delay");
        let s = set(100, 2.0, 30_000);
        assert_eq!(ms(&s, u32::MAX), 30_000, "no overflow");
        let s = set(0, 2.0, 1000);
        assert_eq!(ms(&s, 10), 0);
        // A factor below 1 would shrink the delay: treated as 1.
        let s = set(100, 0.5, 1000);
        assert_eq!(ms(&s, 3), 100);
    }

    #[test]
    fn jitter_draws_between_min_and_the_bound_and_is_seeded() {
        let delays = |seed| {
            let mut s = Supervisor::with_seed(Settings::default(), seed);
            (0..12)
                .map(|step| {
                    s.backoff_step = step;
                    s.next_delay()
                })
                .collect::<Vec<_>>()
        };
        let a = delays(1);
        assert_eq!(a, delays(1), "the same seed gives the same delays");
        assert_ne!(a, delays(2), "another seed gives others");
        let settings = Settings::default();
        for (step, d) in a.iter().enumerate() {
            assert!(
                *d >= settings.backoff_min && *d <= backoff_delay(&settings, step as u32),
                "step {step}: {d:?}"
            );
        }
        assert_eq!(a[0], settings.backoff_min, "the first delay is the minimum");
        let spread = a.iter().filter(|d| **d != settings.backoff_min).count();
        assert!(spread >= 8, "jitter spreads the delays: {a:?}");
    }

    #[test]
    fn states_follow_the_program_through_its_life() {
        let mut s = Sim::with(exact());
        assert_eq!(s.sup.state(), ProgramState::Starting);
        let p = s.start();
        assert_eq!(s.sup.state(), ProgramState::Starting);
        s.at(1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
        s.hup();
        assert!(s.sup.pending().is_some());
        assert_eq!(
            s.sup.state(),
            ProgramState::Running,
            "a reload's pending generation does not change the state"
        );
        s.at(2000);
        s.exit(p, ExitStatus::Code(0));
        let p = s.sup.current().unwrap().pid;
        s.exit(p, ExitStatus::Signal(9));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        assert!(s.sup.restart_at().is_some());
        s.at(2100);
        assert_eq!(s.sup.state(), ProgramState::Starting);
        s.ev(Event::Stop(TERM));
        assert_eq!(s.sup.state(), ProgramState::Stopping);
        assert_eq!(s.sup.last_exit(), Some(ExitStatus::Signal(9)));
        for name in [
            "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL",
        ] {
            assert!(
                [
                    ProgramState::Starting,
                    ProgramState::Running,
                    ProgramState::Backoff,
                    ProgramState::Stopping,
                    ProgramState::Exited,
                    ProgramState::Fatal
                ]
                .iter()
                .any(|st| st.to_string() == name),
                "{name}"
            );
        }
    }

    #[test]
    fn stop_as_group_signals_the_group_and_kill_as_group_only_the_kill() {
        let mut s = Sim::with(Settings {
            stop_as_group: true,
            ..Settings::default()
        });
        let p = s.start().as_raw();
        assert_eq!(
            s.ev(Event::Forward(Signal::SIGUSR1)),
            vec![sig(p, Signal::SIGUSR1)],
            "forwarded signals go to the child alone"
        );
        assert_eq!(s.ev(Event::Stop(TERM)), vec![gsig(p, TERM), gsig(p, CONT)]);
        assert_eq!(s.at(10_000), vec![gsig(p, KILL)]);

        let mut s = Sim::with(Settings {
            kill_as_group: true,
            ..Settings::default()
        });
        let p = s.start().as_raw();
        assert_eq!(s.ev(Event::Stop(TERM)), vec![sig(p, TERM), sig(p, CONT)]);
        assert_eq!(
            s.ev(Event::Stop(Signal::SIGQUIT)),
            vec![gsig(p, KILL)],
            "SIGQUIT's kill too"
        );

        // A stop signal of KILL is a kill: to the group with kill_as_group.
        let mut s = Sim::with(Settings {
            kill_as_group: true,
            stop_signal: KILL,
            ..Settings::default()
        });
        let p = s.start().as_raw();
        assert_eq!(s.ev(Event::Stop(TERM)), vec![gsig(p, KILL)]);
    }

    #[test]
    fn policy_values_parse_and_name_bad_input() {
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("On-Failure".parse(), Ok(RestartPolicy::OnFailure));
        assert_eq!("never".parse(), Ok(RestartPolicy::Never));
        assert_eq!(
            "sometimes".parse::<RestartPolicy>().unwrap_err(),
            "\"sometimes\" is not a restart policy (expected always, on-failure or never)"
        );
        assert_eq!("wait".parse(), Ok(OnFatal::Wait));
        assert_eq!("exit".parse(), Ok(OnFatal::Exit));
        assert_eq!(
            "retry".parse::<OnFatal>().unwrap_err(),
            "\"retry\" is not an --on-fatal action (expected exit or wait)"
        );
        let codes: ExitCodes = "0, 2,255".parse().unwrap();
        assert_eq!(codes.codes().collect::<Vec<_>>(), [0, 2, 255]);
        assert_eq!(codes.to_string(), "0,2,255");
        assert!(codes.contains(255) && !codes.contains(1) && !codes.contains(-1));
        assert_eq!("".parse::<ExitCodes>(), Ok(ExitCodes::NONE));
        assert_eq!(ExitCodes::default().to_string(), "0");
        for bad in ["256", "-1", "a", "1;2", "+1"] {
            assert_eq!(
                bad.parse::<ExitCodes>().unwrap_err(),
                format!("{bad:?} is not a list of exit codes (expected numbers from 0 to 255 separated by commas, like 0,2)")
            );
        }
    }

    #[test]
    fn watch_triggers_reload_coalesce_and_report_like_sighup() {
        let watch = |p: &str| Trigger::Watch { path: p.into() };
        assert_eq!(watch("/srv/app").to_string(), "watch");
        let mut s = Sim::new();
        let g1 = s.start();
        s.at(1000);
        let a = s.ev(Event::Reload(watch("/srv/app")));
        assert_eq!(a, vec![Action::Spawn { generation: 2 }]);
        s.run(a);
        // More changes during the reload coalesce into one follow-up.
        assert!(s.ev(Event::Reload(watch("/srv/app"))).is_empty());
        assert!(s.hup().is_empty());
        s.at(2000);
        s.exit(g1, ExitStatus::Code(0));
        assert_eq!(s.sup.pending().unwrap().generation, 3);
        let g3 = s.sup.pending().unwrap().pid;
        s.exit(g3, ExitStatus::Code(1));
        assert_eq!(s.done, vec![(2, true), (3, false)]);
        assert!(s.sup.pending().is_none(), "exactly one follow-up");
    }

    /// Drives the machine through a long pseudo-random mix of every event, over random
    /// policies, and checks the invariants after each step.
    #[test]
    fn invariants_hold_under_random_events() {
        // Which states the runs reached, and how many ended in a FATAL exit: the random walk
        // must cover every state, or it proves little.
        let mut seen = std::collections::HashSet::new();
        let mut fatal_exits = 0;
        for seed in 1..=300u64 {
            let mut rng = seed;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let restart = [
                RestartPolicy::Always,
                RestartPolicy::OnFailure,
                RestartPolicy::Never,
            ][(next() % 3) as usize];
            let on_fatal = if next() % 2 == 0 {
                OnFatal::Exit
            } else {
                OnFatal::Wait
            };
            let settings = Settings {
                stop_wait: Duration::from_millis(300),
                ready_signal: seed % 2 == 0,
                ready_timeout: Duration::from_millis(2000),
                restart,
                exit_codes: ExitCodes::of(&[0, 2]),
                start_retries: (next() % 4) as u32,
                on_fatal,
                max_restarts: (next() % 2 == 0).then_some((next() % 4) as u32),
                restart_window: Duration::from_millis(3000),
                stop_as_group: next() % 3 == 0,
                kill_as_group: next() % 2 == 0,
                jitter: true,
                ..Settings::default()
            };
            let mut s = Sim {
                sup: Supervisor::with_seed(settings, seed),
                ..Sim::with(settings)
            };
            s.start();
            let mut signalled_stop = std::collections::HashSet::new();
            let mut restarts: Vec<Instant> = Vec::new();
            let mut exited = false;
            for _ in 0..300 {
                let live: Vec<Pid> = s.sup.children().map(|c| c.pid).collect();
                let restart_before = s.sup.restart_at();
                let reload_before = s.sup.reloading;
                let actions = match next() % 9 {
                    6 if !live.is_empty() => {
                        let p = live[(next() % live.len() as u64) as usize];
                        s.ev(ready(p))
                    }
                    0 | 1 => s.hup(),
                    2 => {
                        let ms = s.ms + next() % 1500;
                        s.at(ms)
                    }
                    3..=5 if !live.is_empty() => {
                        let p = live[(next() % live.len() as u64) as usize];
                        let status = match next() % 4 {
                            0 => ExitStatus::Code(0),
                            1 => ExitStatus::Code(2),
                            2 => ExitStatus::Code(1),
                            _ => ExitStatus::Signal(9),
                        };
                        s.exit(p, status)
                    }
                    7 if s.sup.in_backoff() => {
                        // The next spawn fails (exec error).
                        let at = s.sup.restart_at().unwrap();
                        s.ms = s.ms.max((at - s.t0).as_millis() as u64 + 1);
                        let a = s.ev(Event::Tick);
                        let mut rest = Vec::new();
                        for a in a {
                            match a {
                                Action::Spawn { generation } => {
                                    let more = s.ev(Event::Spawned {
                                        generation,
                                        result: Err(SpawnFailure {
                                            message: "exec failed".into(),
                                            exit_code: 126,
                                        }),
                                    });
                                    rest.extend(s.run(more));
                                }
                                other => rest.push(other),
                            }
                        }
                        rest
                    }
                    _ => {
                        let a = s.ev(Event::Forward(Signal::SIGUSR2));
                        s.run(a)
                    }
                };
                let state = s.sup.state();
                seen.insert(state);
                for a in &actions {
                    match a {
                        Action::Signal { pid, signal, group } => {
                            assert!(
                                live.contains(pid),
                                "seed {seed}: signal to a dead pid {pid}"
                            );
                            if *signal == TERM {
                                signalled_stop.insert(*pid);
                            }
                            let want_group = match *signal {
                                KILL => settings.kill_as_group || settings.stop_as_group,
                                Signal::SIGUSR2 => false,
                                _ => settings.stop_as_group,
                            };
                            assert_eq!(*group, want_group, "seed {seed}: {a:?}");
                        }
                        Action::Exit { code } => {
                            assert!(
                                state == ProgramState::Fatal && on_fatal == OnFatal::Exit,
                                "seed {seed}: exit without stop in {state}"
                            );
                            assert_ne!(*code, 0, "seed {seed}: FATAL exits non-zero");
                            exited = true;
                            fatal_exits += 1;
                        }
                        _ => {}
                    }
                }
                if exited {
                    assert!(
                        s.sup.children().count() == 0,
                        "seed {seed}: exit with children"
                    );
                    assert!(s.hup().is_empty() && s.at(s.ms + 100_000).is_empty());
                    break;
                }
                assert!(s.alive() <= 2, "seed {seed}: {} alive", s.alive());
                let starting = s
                    .sup
                    .children()
                    .filter(|c| matches!(c.phase, Phase::Starting { .. }))
                    .count();
                assert!(starting <= 1, "seed {seed}: two generations starting");
                if let Some(c) = s.sup.current() {
                    assert!(
                        !signalled_stop.contains(&c.pid),
                        "seed {seed}: current was stopped"
                    );
                }
                // --start-retries bounds the first start only; once the program has served,
                // failed restarts go on, and only --max-restarts makes it FATAL.
                assert!(
                    s.sup.has_served() || s.sup.start_failures() <= settings.start_retries + 1,
                    "seed {seed}: {} failures",
                    s.sup.start_failures()
                );
                if state == ProgramState::Fatal && s.sup.has_served() {
                    assert!(
                        settings.max_restarts.is_some(),
                        "seed {seed}: FATAL after serving without --max-restarts: {}",
                        s.sup.state_reason()
                    );
                }
                match state {
                    ProgramState::Exited | ProgramState::Fatal => {
                        assert!(
                            s.sup.current().is_none()
                                && !s.sup.in_backoff()
                                && s.sup.spawning.is_none(),
                            "seed {seed}: {state} with something scheduled or serving"
                        );
                        if state == ProgramState::Fatal && on_fatal == OnFatal::Exit {
                            // Exiting, once the children still stopping are reaped.
                            assert!(
                                s.sup.is_stopping() && s.sup.pending().is_none(),
                                "seed {seed}: FATAL with --on-fatal exit must be stopping"
                            );
                        }
                    }
                    ProgramState::Backoff => assert!(s.sup.in_backoff(), "seed {seed}"),
                    ProgramState::Running => assert_eq!(
                        s.sup.current().map(|c| c.phase),
                        Some(Phase::Running),
                        "seed {seed}"
                    ),
                    ProgramState::Starting => assert!(
                        s.sup.current().is_some()
                            || s.sup.pending().is_some()
                            || s.sup.spawning.is_some(),
                        "seed {seed}: STARTING with nothing starting"
                    ),
                    ProgramState::Stopping => panic!("seed {seed}: stopping without a stop"),
                }
                if s.sup.current().is_none() && s.sup.pending().is_none() {
                    assert!(
                        s.sup.in_backoff()
                            || s.sup.spawning.is_some()
                            || matches!(state, ProgramState::Exited | ProgramState::Fatal),
                        "seed {seed}: nothing serves, no restart is scheduled, and the state is {state}"
                    );
                }
                // A reload that started begins a fresh crash-loop window.
                if s.sup.reloading.is_some() && s.sup.reloading != reload_before {
                    restarts.clear();
                }
                // A newly scheduled restart: its delay is within bounds, and the crash-loop
                // limit holds.
                if let Some(at) = s.sup.restart_at().filter(|at| Some(*at) != restart_before) {
                    let now = s.now();
                    let delay = at - now;
                    assert!(
                        delay >= settings.backoff_min && delay <= settings.backoff_max,
                        "seed {seed}: delay {delay:?}"
                    );
                    restarts.push(now);
                    if let Some(max) = settings.max_restarts {
                        let recent = restarts
                            .iter()
                            .filter(|t| now.duration_since(**t) < settings.restart_window)
                            .count();
                        assert!(
                            recent <= max as usize,
                            "seed {seed}: {recent} restarts in the window, max {max}"
                        );
                    }
                }
            }
            if exited {
                continue;
            }
            // Stop always ends in Exit once every child is reaped.
            let a = s.ev(Event::Stop(TERM));
            seen.insert(s.sup.state());
            let immediate = a.iter().any(|a| matches!(a, Action::Exit { .. }));
            s.run(a);
            let mut exit = None;
            for _ in 0..4 {
                let live: Vec<Pid> = s.sup.children().map(|c| c.pid).collect();
                for p in live {
                    for a in s.exit(p, ExitStatus::Code(0)) {
                        exit = Some(a);
                    }
                }
            }
            if s.sup.children().count() == 0 && exit.is_none() {
                // Already exited when Stop was handled (no child at the time).
                assert!(s.sup.exited && immediate, "seed {seed}");
            } else {
                assert!(
                    matches!(exit, Some(Action::Exit { .. })),
                    "seed {seed}: {exit:?}"
                );
            }
        }
        assert_eq!(seen.len(), 6, "states reached: {seen:?}");
        assert!(fatal_exits > 0);
    }
}
