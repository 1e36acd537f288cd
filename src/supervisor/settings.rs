//! The supervisor's settings: timing, signals and the restart policy (`--restart`,
//! `--exit-codes`, `--on-fatal`, `--on-exit`, backoff and crash-loop limits).

use std::fmt;
use std::time::Duration;

use nix::sys::signal::Signal;

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
    /// What relaunch does when a generation that ran exits and the restart policy does not
    /// restart it (`--restart never`, or an expected exit under `on-failure`).
    pub on_exit: OnExit,
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
    /// Worker processes per generation (`--workers`, at least 1).
    pub workers: usize,
    /// How a reload replaces the workers (`--reload-strategy`).
    pub reload_strategy: ReloadStrategy,
    /// With [`ReloadStrategy::Rolling`], how many workers beyond `workers` may be alive
    /// (`--max-surge`, at least 1).
    pub max_surge: usize,
}

/// How a reload replaces the workers of a generation (`--reload-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReloadStrategy {
    /// Start all N new workers, wait until all are up, then stop the N old ones; if any new
    /// one fails, stop every new one and leave the old ones untouched.
    #[default]
    All,
    /// Replace the workers a few at a time, never more than `workers + max_surge` alive; a
    /// failure pauses the roll, leaving old and replaced workers serving.
    Rolling,
}

impl std::str::FromStr for ReloadStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(ReloadStrategy::All),
            "rolling" => Ok(ReloadStrategy::Rolling),
            _ => Err(format!(
                "{s:?} is not a reload strategy (expected all or rolling)"
            )),
        }
    }
}

impl fmt::Display for ReloadStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadStrategy::All => "all",
            ReloadStrategy::Rolling => "rolling",
        })
    }
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
            on_exit: OnExit::Wait,
            max_restarts: None,
            restart_window: Duration::from_secs(60),
            stop_as_group: false,
            kill_as_group: false,
            workers: 1,
            reload_strategy: ReloadStrategy::All,
            max_surge: 1,
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

/// What relaunch does when the program exits and `--restart` does not restart it
/// (`--on-exit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    /// Exit with the program's status, as a shell would report it (as tini does).
    Exit,
    /// Keep the sockets and wait for a reload (SIGHUP) to start a new generation (EXITED).
    Wait,
}

impl std::str::FromStr for OnExit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exit" => Ok(OnExit::Exit),
            "wait" => Ok(OnExit::Wait),
            _ => Err(format!(
                "{s:?} is not an --on-exit action (expected exit or wait)"
            )),
        }
    }
}

impl fmt::Display for OnExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnExit::Exit => "exit",
            OnExit::Wait => "wait",
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
