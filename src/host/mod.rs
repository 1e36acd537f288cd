//! Self-hosting: a server that is its own master, on tableflip's model but keeping the pid.
//!
//! One call at the top of `main`, [`self_host`], decides what this process is:
//!
//! - **A first run is the master.** It binds the sockets, keeps its pid (the one the service
//!   manager or the shell knows), and starts the same program as a child, with the sockets at
//!   fds 3, 4, ... (systemd's `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) and a marker in the
//!   child's environment ([`HOST_VAR`]). It is relaunch's own master, the one the command line
//!   runs: readiness (`notify` or `fd:N`), stop escalation, crash restarts with backoff, the
//!   control socket (`relaunch status|reload|stop --control PATH` or by name) and
//!   `--daemon`-style background mode all apply. `self_host` returns once it stopped.
//! - **In the child,** the same call returns the sockets ([`Hosted::Serve`]) and the server
//!   runs. The child is an ordinary [`crate::child`] server: it says `READY=1` with
//!   [`crate::child::ready`] when [`SelfHost::ready`] asks for it.
//!
//! **Reloading into a new build.** The master reads `/proc/self/exe` once, at startup, as a
//! path, and every generation execs that path: rename a new build over the binary and send the
//! master SIGHUP (or `relaunch reload`); the new generation runs the new build, the old one
//! keeps serving until the new one is up, and the master's pid does not change. A reload whose
//! new build fails to start keeps the old generation serving. (When the master's own file was
//! replaced before it read the link, the kernel's ` (deleted)` suffix is dropped, so the path is
//! run, not the old inode.)
//!
//! **Entry points** ([`entry`], frigate's registered tasks): one binary can run several
//! functions as programs of one master, e.g. a web server and a job runner, each supervised,
//! restarted and reloaded on its own. Each is a [`HostedProgram::entry`]; the child runs the
//! function registered for its name at the top of `main`.
//!
//! **Background mode** ([`SelfHost::background`], xdaemon's `Background`): the first run
//! detaches a master that writes a pid file, and returns [`Hosted::Detached`] in the original
//! process only once the first generation is up (or the reason it did not come up, as an
//! error with `--daemon`'s exit code).
//!
//! ```no_run
//! use relaunch::config::ReadyMode;
//! use relaunch::host::{self, Hosted, SelfHost};
//!
//! let options = SelfHost::new("web")
//!     .listen("http=127.0.0.1:8080")
//!     .ready(ReadyMode::Notify);
//! let mut sockets = match host::self_host(options) {
//!     Ok(Hosted::Serve(sockets)) => sockets,     // a generation: serve
//!     Ok(done) => std::process::exit(done.exit_code()), // the master stopped
//!     Err(e) => e.exit(),                         // prints why, exits 1 or 2
//! };
//! let listener = sockets.tcp_listener("http").unwrap();
//! relaunch::child::ready().unwrap();
//! # drop(listener);
//! ```
//!
//! # What the master process is
//!
//! The master is the process that called `self_host`, running relaunch's event loop on the
//! calling thread. Call `self_host` first thing in `main`: before any thread exists, before
//! anything opens a file descriptor (the master adopts the fds it inherited only by socket
//! activation), and without SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 or
//! SIGWINCH handlers of the program's own: relaunch installs its handlers for them, and reaps
//! every child of the process. Unless [`SelfHost::log`] turns it off, the master logs to
//! stderr like the `relaunch` binary (level from `RELAUNCH_LOG`, default info).

mod entry;
mod exe;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use entry::{entry, EntryResult, ENTRY_VAR, HOST_VAR};

use crate::child::{ChildError, Sockets};
use crate::command::Command;
use crate::config::{Config, ProgramConfig, ReadyMode, DEFAULT_PRIORITY};
use crate::control::{default_path, parse_name, ControlConfig, PathEnv};
use crate::output::OutputConfig;
use crate::process::{EnvVar, ProcessOptions};
use crate::spec::ListenSpec;
use crate::supervisor::Settings;
use crate::watch::WatchConfig;
use crate::Failure;
use entry::Role;

/// The listen backlog of each socket unless [`HostedProgram::backlog`] sets one (the command
/// line's default).
pub const DEFAULT_BACKLOG: u32 = 4096;

/// One program of a self-hosted master: the program's main flow ([`HostedProgram::main`]) or a
/// named entry point ([`HostedProgram::entry`]), with the same knobs as the command line's
/// program. Errors in what it is given (a bad listen address) are reported by [`self_host`].
#[derive(Debug, Clone)]
pub struct HostedProgram {
    entry: Option<String>,
    listen: Vec<String>,
    backlog: u32,
    ready: ReadyMode,
    start_secs: Option<Duration>,
    settings: Settings,
    process: ProcessOptions,
    output: OutputConfig,
    priority: u32,
}

impl HostedProgram {
    fn new(entry: Option<String>) -> HostedProgram {
        HostedProgram {
            entry,
            listen: Vec::new(),
            backlog: DEFAULT_BACKLOG,
            ready: ReadyMode::Timer,
            start_secs: None,
            settings: Settings::default(),
            process: ProcessOptions::default(),
            output: OutputConfig::default(),
            priority: DEFAULT_PRIORITY,
        }
    }

    /// The program's main flow: its child gets [`Hosted::Serve`] from [`self_host`]. It is
    /// named after the master.
    pub fn main() -> HostedProgram {
        HostedProgram::new(None)
    }

    /// The entry point `name`: its child runs the function given to [`entry`] for `name`. The
    /// program is named `name` (1 to 64 characters out of `A-Z a-z 0-9 . _ - @ +`).
    pub fn entry(name: &str) -> HostedProgram {
        HostedProgram::new(Some(name.to_owned()))
    }

    /// Adds a socket, as `--listen` takes it (`[NAME=]ADDR`, e.g. `http=127.0.0.1:8080`,
    /// `unix:/run/app.sock`, `udp://[::1]:5353`); passed to each child in the order given.
    pub fn listen(mut self, spec: &str) -> HostedProgram {
        self.listen.push(spec.to_owned());
        self
    }

    /// The listen backlog of each socket (`--backlog`; default 4096, capped by the kernel).
    pub fn backlog(mut self, backlog: u32) -> HostedProgram {
        self.backlog = backlog;
        self
    }

    /// How a child says it is up (`--ready`): after `--start-secs` alive (the default,
    /// [`ReadyMode::Timer`]), or by [`crate::child::ready`] ([`ReadyMode::Notify`]).
    pub fn ready(mut self, ready: ReadyMode) -> HostedProgram {
        self.ready = ready;
        self
    }

    /// How long a child must stay alive to count as started (`--start-secs`; default 1 s with
    /// the timer, 0 after `READY=1`).
    pub fn start_secs(mut self, secs: Duration) -> HostedProgram {
        self.start_secs = Some(secs);
        self
    }

    /// Changes the supervisor's settings: stop signal and wait, restart policy, backoff,
    /// workers, ... (the command line's restart-policy and timing flags).
    pub fn settings(mut self, change: impl FnOnce(&mut Settings)) -> HostedProgram {
        change(&mut self.settings);
        self
    }

    /// Changes the process options: environment, user, limits, ... (the command line's
    /// process flags).
    pub fn process(mut self, change: impl FnOnce(&mut ProcessOptions)) -> HostedProgram {
        change(&mut self.process);
        self
    }

    /// Changes where the children's output goes: log files, rotation, prefix (the command
    /// line's output flags). In background mode, the first program's log files also get the
    /// master's own log lines.
    pub fn output(mut self, change: impl FnOnce(&mut OutputConfig)) -> HostedProgram {
        change(&mut self.output);
        self
    }

    /// Its start priority among the master's programs: ascending to start, descending to stop.
    pub fn priority(mut self, priority: u32) -> HostedProgram {
        self.priority = priority;
        self
    }

    /// The program's configuration, running `exe` with `args`.
    fn into_config(
        self,
        name: &str,
        exe: &std::path::Path,
        args: &[OsString],
    ) -> Result<ProgramConfig, String> {
        let name = match &self.entry {
            Some(entry) => parse_name(entry).map_err(|e| format!("entry point: {e}"))?,
            None => name.to_owned(),
        };
        let listen = self
            .listen
            .iter()
            .map(|spec| spec.parse::<ListenSpec>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut settings = self.settings;
        settings.ready_signal = self.ready != ReadyMode::Timer;
        settings.start_secs = self.start_secs.unwrap_or(match self.ready {
            ReadyMode::Timer => Duration::from_secs(1),
            _ => Duration::ZERO,
        });
        // The marker with the master's pid is added once that pid is final (after a detach).
        let mut process = self.process;
        if let Some(entry) = self.entry {
            process.env.push(EnvVar {
                key: ENTRY_VAR.into(),
                value: entry.into(),
            });
        }
        Ok(ProgramConfig {
            name,
            listen,
            backlog: self.backlog,
            command: Command {
                program: exe.as_os_str().to_owned(),
                args: args.to_vec(),
            },
            ready: self.ready,
            settings,
            process,
            output: self.output,
            watch: WatchConfig::default(),
            priority: self.priority,
            autostart: true,
        })
    }
}

/// Where the master's control socket goes.
#[derive(Debug, Clone)]
enum ControlSocket {
    /// The default path for the master's name (as `relaunch` without `--control`).
    Default,
    /// This path (`--control`).
    Path(PathBuf),
    /// None (`--no-control`).
    Off,
}

/// What [`self_host`] runs: the master's name, settings and programs. Built with chained
/// calls; [`SelfHost::listen`], [`SelfHost::ready`] and the like configure the program's main
/// flow, [`SelfHost::entry`] adds entry points.
#[derive(Debug, Clone)]
pub struct SelfHost {
    name: String,
    main: Option<HostedProgram>,
    entries: Vec<HostedProgram>,
    control: ControlSocket,
    pid_file: Option<PathBuf>,
    background: bool,
    log: bool,
}

impl SelfHost {
    /// A master named `name` (its control socket's name, as `--name`; 1 to 64 characters out
    /// of `A-Z a-z 0-9 . _ - @ +`), with no program yet.
    pub fn new(name: &str) -> SelfHost {
        SelfHost {
            name: name.to_owned(),
            main: None,
            entries: Vec::new(),
            control: ControlSocket::Default,
            pid_file: None,
            background: false,
            log: true,
        }
    }

    /// Changes the program's main flow (created with [`HostedProgram::main`] on first use).
    pub fn main(mut self, change: impl FnOnce(HostedProgram) -> HostedProgram) -> SelfHost {
        let main = self.main.take().unwrap_or_else(HostedProgram::main);
        self.main = Some(change(main));
        self
    }

    /// Adds a socket to the main flow ([`HostedProgram::listen`]).
    pub fn listen(self, spec: &str) -> SelfHost {
        self.main(|p| p.listen(spec))
    }

    /// Sets how the main flow's children say they are up ([`HostedProgram::ready`]).
    pub fn ready(self, ready: ReadyMode) -> SelfHost {
        self.main(|p| p.ready(ready))
    }

    /// Changes the main flow's supervisor settings ([`HostedProgram::settings`]).
    pub fn settings(self, change: impl FnOnce(&mut Settings)) -> SelfHost {
        self.main(|p| p.settings(change))
    }

    /// Adds an entry point as a program of its own (see [`entry`]).
    pub fn entry(mut self, program: HostedProgram) -> SelfHost {
        self.entries.push(program);
        self
    }

    /// Serves the control socket at `path` instead of the default path for the name.
    pub fn control(mut self, path: PathBuf) -> SelfHost {
        self.control = ControlSocket::Path(path);
        self
    }

    /// Serves no control socket.
    pub fn no_control(mut self) -> SelfHost {
        self.control = ControlSocket::Off;
        self
    }

    /// Writes the master's pid to `path` while it runs (`--pid-file`; made absolute).
    pub fn pid_file(mut self, path: PathBuf) -> SelfHost {
        self.pid_file = Some(path);
        self
    }

    /// Runs the master in the background with its pid in `pid_file`, as `--daemon`: the first
    /// run returns [`Hosted::Detached`] once the first generation is up. Give the programs
    /// log files ([`HostedProgram::output`]) to keep their output (and, in the first
    /// program's, the master's own log lines); without them it goes to `/dev/null`.
    pub fn background(mut self, pid_file: PathBuf) -> SelfHost {
        self.pid_file = Some(pid_file);
        self.background = true;
        self
    }

    /// Whether the master installs its stderr logger (default: yes; no when the program set
    /// up a `tracing` subscriber of its own, which then gets the master's events).
    pub fn log(mut self, on: bool) -> SelfHost {
        self.log = on;
        self
    }

    /// The master's configuration, its programs running `exe` with `args`.
    fn config(&self, exe: &std::path::Path, args: &[OsString]) -> Result<Config, String> {
        let name = parse_name(&self.name)?;
        let programs = self
            .main
            .iter()
            .chain(&self.entries)
            .map(|p| p.clone().into_config(&name, exe, args))
            .collect::<Result<Vec<_>, _>>()?;
        if programs.is_empty() {
            return Err(
                "nothing to run: give the main flow a socket or settings, or add an entry point"
                    .into(),
            );
        }
        for (i, p) in programs.iter().enumerate() {
            if programs[..i].iter().any(|q| q.name == p.name) {
                return Err(format!(
                    "two programs are named {:?} (entry points need names of their own, other than the master's)",
                    p.name
                ));
            }
        }
        let pid_file = self
            .pid_file
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .map_err(|e| format!("cannot make the pid file path absolute: {e}"))?;
        let socket = match &self.control {
            ControlSocket::Default => Some(default_path(
                &name,
                pid_file.as_deref(),
                &PathEnv::current(),
            )),
            ControlSocket::Path(path) => Some(path.clone()),
            ControlSocket::Off => None,
        };
        Ok(Config {
            control: ControlConfig {
                default_path: matches!(self.control, ControlSocket::Default),
                default_name: false,
                socket,
                metrics: None,
            },
            pid_file,
            daemon: false,
            name,
            programs,
            source: None,
        })
    }
}

/// What [`self_host`] returned in: a generation to serve, or a master that is done.
#[derive(Debug)]
pub enum Hosted {
    /// This process is a generation of the main flow: serve on these sockets, and say
    /// `READY=1` ([`crate::child::ready`]) if the program was configured with
    /// [`ReadyMode::Notify`].
    Serve(Sockets),
    /// This process was the master, and it stopped: exit with this code (the status of the
    /// child that was current, as a shell reports it; see `relaunch --help`).
    Exited(i32),
    /// Background mode, in the original process: the first generation is up under a master
    /// in the background (its pid in the pid file). Exit 0.
    Detached,
}

impl Hosted {
    /// The code to exit with: 0 for [`Hosted::Serve`] and [`Hosted::Detached`].
    pub fn exit_code(&self) -> i32 {
        match self {
            Hosted::Exited(code) => *code,
            Hosted::Serve(_) | Hosted::Detached => 0,
        }
    }

    /// The sockets of a generation; in a master that stopped, or the original process of
    /// background mode, exits the process with [`Hosted::exit_code`] instead.
    pub fn serve_or_exit(self) -> Sockets {
        match self {
            Hosted::Serve(sockets) => sockets,
            done => std::process::exit(done.exit_code()),
        }
    }
}

/// Why [`self_host`] failed.
#[derive(Debug)]
pub enum HostError {
    /// The options are wrong (a bad listen address, name or program set), or this child was
    /// started for an entry point that `main` does not dispatch: exit code 2.
    Usage(String),
    /// The path of the running program could not be read from `/proc/self/exe`.
    Exe(std::io::Error),
    /// In a generation: its sockets could not be taken.
    Child(ChildError),
    /// The master failed (it could not bind a socket, start the first generation, detach, ...),
    /// with the exit code the `relaunch` binary would give.
    Master(Failure),
}

impl HostError {
    /// The process exit code for this error: 2 usage, else the master's code, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            HostError::Usage(_) => 2,
            HostError::Exe(_) | HostError::Child(_) => 1,
            HostError::Master(failure) => failure.code,
        }
    }

    /// Prints the error to stderr (`NAME: error: ...`, with the program's file name) and exits
    /// with [`HostError::exit_code`].
    pub fn exit(self) -> ! {
        let program = std::env::args_os()
            .next()
            .map(|a| crate::control::program_name(&a))
            .unwrap_or_else(|| "relaunch".into());
        eprintln!("{program}: error: {self}");
        std::process::exit(self.exit_code())
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Usage(msg) => f.write_str(msg),
            HostError::Exe(e) => write!(f, "cannot read the program's path (/proc/self/exe): {e}"),
            HostError::Child(e) => e.fmt(f),
            HostError::Master(failure) => write!(f, "{:#}", failure.error),
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Exe(e) => Some(e),
            HostError::Child(e) => Some(e),
            HostError::Usage(_) | HostError::Master(_) => None,
        }
    }
}

/// Runs this process as a self-hosted server (see the [module docs](self)): in a first run, as
/// the master of `options`' programs, each a child running this same program (returns once the
/// master stopped, or, in background mode, once the first generation is up); in a generation
/// of the main flow, returns its sockets.
///
/// Call it first thing in `main` (after the [`entry`] calls), while the process has a single
/// thread.
pub fn self_host(options: SelfHost) -> Result<Hosted, HostError> {
    match entry::role() {
        Role::Main if options.main.is_some() => entry::take_sockets()
            .map(Hosted::Serve)
            .map_err(HostError::Child),
        Role::Main => Err(HostError::Usage(
            "this process was started as the main flow of a self-hosted master, but the options configure no main flow".into(),
        )),
        Role::Entry(name) => Err(HostError::Usage(format!(
            "this process was started for the entry point {name:?}, but main does not dispatch it: call relaunch::entry({name:?}, ...) before self_host"
        ))),
        Role::Master => run_master(options),
    }
}

/// The first run: the master.
fn run_master(options: SelfHost) -> Result<Hosted, HostError> {
    // Before this process opens an fd of its own: which ones came from its parent.
    crate::record_inherited_fds();
    let exe = exe::current_exe_path().map_err(HostError::Exe)?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut config = options.config(&exe, &args).map_err(HostError::Usage)?;
    let startup = if options.background {
        match crate::background::detach(&mut config).map_err(HostError::Master)? {
            crate::background::Side::Original => return Ok(Hosted::Detached),
            crate::background::Side::Daemon(startup) => Some(startup),
        }
    } else {
        None
    };
    // The master's pid, final now: each child checks that it names its parent.
    let master = std::process::id().to_string();
    for program in &mut config.programs {
        program.process.env.push(EnvVar {
            key: HOST_VAR.into(),
            value: master.clone().into(),
        });
    }
    if options.log {
        crate::logging::init(None, None);
    }
    let result = match startup {
        Some(startup) => crate::run_detached(config, startup),
        None => crate::run(config),
    };
    result.map(Hosted::Exited).map_err(HostError::Master)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: SelfHost) -> Result<Config, String> {
        options.config(
            std::path::Path::new("/srv/app"),
            &["--port".into(), "1".into()],
        )
    }

    #[test]
    fn the_programs_run_this_binary_with_its_arguments() {
        let c = config(
            SelfHost::new("site")
                .listen("http=127.0.0.1:0")
                .ready(ReadyMode::Notify)
                .entry(HostedProgram::entry("jobs")),
        )
        .unwrap();
        let names: Vec<_> = c.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["site", "jobs"]);
        for p in &c.programs {
            assert_eq!(p.command.program, "/srv/app");
            assert_eq!(p.command.args, ["--port", "1"]);
        }
        let main = &c.programs[0];
        assert!(main.settings.ready_signal);
        assert_eq!(main.settings.start_secs, Duration::ZERO);
        assert!(main.process.env.iter().all(|v| v.key != ENTRY_VAR));
        let jobs = &c.programs[1];
        assert_eq!(jobs.settings.start_secs, Duration::from_secs(1));
        assert!(jobs
            .process
            .env
            .iter()
            .any(|v| v.key == ENTRY_VAR && v.value == "jobs"));
        assert!(c.named());
    }

    #[test]
    fn bad_options_are_usage_errors_naming_the_value() {
        let err = config(SelfHost::new("site").listen("nowhere:port")).unwrap_err();
        assert!(err.contains("nowhere:port"), "{err}");
        let err = config(SelfHost::new("a/b").listen("127.0.0.1:0")).unwrap_err();
        assert!(err.contains("\"a/b\""), "{err}");
        let err = config(SelfHost::new("site")).unwrap_err();
        assert!(err.contains("nothing to run"), "{err}");
        let err = config(
            SelfHost::new("site")
                .entry(HostedProgram::entry("jobs"))
                .entry(HostedProgram::entry("jobs")),
        )
        .unwrap_err();
        assert!(err.contains("\"jobs\""), "{err}");
        let err = config(SelfHost::new("site").entry(HostedProgram::entry(""))).unwrap_err();
        assert!(err.starts_with("entry point: "), "{err}");
        assert_eq!(HostError::Usage(err).exit_code(), 2);
    }

    #[test]
    fn the_control_socket_is_the_named_default_a_path_or_none() {
        let c = config(SelfHost::new("site").listen(":0")).unwrap();
        assert!(c.control.default_path);
        assert!(c.control.socket.unwrap().ends_with("site.sock"));
        let c = config(
            SelfHost::new("site")
                .listen(":0")
                .control("/run/x.sock".into()),
        )
        .unwrap();
        assert_eq!(c.control.socket, Some(PathBuf::from("/run/x.sock")));
        let c = config(SelfHost::new("site").listen(":0").no_control()).unwrap();
        assert_eq!(c.control.socket, None);
    }
}
