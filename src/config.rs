//! The validated, immutable configuration the master runs with: the master's own settings,
//! and one [`ProgramConfig`] per program it runs (the command line describes exactly one).
//!
//! One `Config` is built at startup; every generation of a program is started from the same
//! [`Command`], so a reload changes nothing but the program file found at its path (and the
//! contents of `--env-file`, which is read again at every spawn).

use std::path::PathBuf;

use crate::command::Command;
use crate::control::ControlConfig;
use crate::output::OutputConfig;
use crate::process::ProcessOptions;
use crate::spec::ListenSpec;
use crate::supervisor::Settings;
use crate::watch::WatchConfig;

/// The start priority of a program that sets none (supervisord's default).
pub const DEFAULT_PRIORITY: u32 = 999;

/// Everything the master needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to write relaunch's pid (`--pid-file`), as an absolute path. Other features put
    /// their files next to it (e.g. a control socket).
    pub pid_file: Option<PathBuf>,
    /// Whether relaunch detached into the background (`--daemon`).
    pub daemon: bool,
    /// This relaunch's name (`--name`; default: the program's file name), for its control
    /// socket and status.
    pub name: String,
    /// The control socket and metrics endpoint.
    pub control: ControlConfig,
    /// The programs to run: the command line gives one.
    pub programs: Vec<ProgramConfig>,
    /// The configuration file it was read from (`--config`), as given: SIGHUP and `relaunch
    /// reload` read it again. `None` for the command line.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Whether the master runs its programs by name (several programs, or a config file):
    /// status lists them, control commands take names, log lines name the program. The
    /// command line's single program runs exactly as it always did.
    pub fn named(&self) -> bool {
        self.programs.len() > 1 || self.source.is_some()
    }

    /// The first program: the one the command line describes.
    pub fn program(&self) -> &ProgramConfig {
        &self.programs[0]
    }

    /// The first program, to change it (e.g. `--daemon` makes its path absolute).
    pub fn program_mut(&mut self) -> &mut ProgramConfig {
        &mut self.programs[0]
    }
}

/// Everything about one program: its sockets, command, readiness, restart policy, process
/// options, output capture and file watching. Two are equal when every key is (an edited
/// configuration file reloads the programs whose settings changed).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramConfig {
    /// Its name, carried in logs and status (the command line's program is named as the
    /// master).
    pub name: String,
    /// The `--listen` sockets, in the order they are passed (fd 3, 4, ..., after the sockets of
    /// socket activation unless `systemd:NAME` picks those); may be empty when relaunch was
    /// socket-activated.
    pub listen: Vec<ListenSpec>,
    /// Listen backlog requested for each socket (the kernel caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// The server to run.
    pub command: Command,
    /// How a child says it is up.
    pub ready: ReadyMode,
    /// Timing, signals and restart policy of the supervisor.
    pub settings: Settings,
    /// What each child gets besides its sockets: user, environment, limits, ...
    pub process: ProcessOptions,
    /// Where the children's output goes (inherited, or captured into log files).
    pub output: OutputConfig,
    /// Files whose change triggers a reload (`--watch`, `--watch-path`); off by default.
    pub watch: WatchConfig,
    /// Start order among several programs (`priority` in the configuration file): ascending
    /// to start, descending to stop. The command line's program has the default, 999.
    pub priority: u32,
    /// Whether the program starts with the master (`autostart` in the configuration file);
    /// `false` configures it without starting it until asked. Always true on the command line.
    pub autostart: bool,
}

/// How a new child says it is up (`--ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// It is up once it has stayed alive `--start-secs`.
    Timer,
    /// It sends `READY=1` to `NOTIFY_SOCKET` (sd_notify), then stays alive `--start-secs`.
    Notify,
    /// It writes a newline to this inherited fd (s6's notification-fd), then stays alive
    /// `--start-secs`.
    Fd(std::os::fd::RawFd),
}

impl std::str::FromStr for ReadyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{s:?} is not a readiness mode (expected timer, notify, or fd:N with N >= 3)")
        };
        match s {
            "timer" => Ok(ReadyMode::Timer),
            "notify" => Ok(ReadyMode::Notify),
            _ => match s.strip_prefix("fd:").map(str::parse::<i32>) {
                Some(Ok(n)) if (3..=65535).contains(&n) => Ok(ReadyMode::Fd(n)),
                _ => Err(bad()),
            },
        }
    }
}
