//! [`Program`]: one program to run, built from code with the command line's knobs, values
//! and messages.
//!
//! A setter whose value can be wrong checks it at once and returns `Result`; its error is a
//! [`Error::Usage`] that names the flag and carries the very message the command line and the
//! configuration file give (the parsers are shared). Settings that only mean something
//! together (a log prefix without log files, a watch option without anything to watch) are
//! checked when the program is handed to a master.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::Error;
use crate::command::Command;
use crate::config::{ProgramConfig, ReadyMode, DEFAULT_PRIORITY};
use crate::output::{OutputConfig, OutputMode, DEFAULT_BACKUPS};
use crate::parse::{
    check_factor, check_workers, parse_path, parse_signal, parse_size, parse_watch_path,
};
use crate::process::{parse_nice, EnvVar, ProcessOptions};
use crate::spec::ListenSpec;
use crate::supervisor::{OnExit, OnFatal, ReloadStrategy, RestartPolicy, Settings};
use crate::watch::{CheckCommand, WatchConfig, DEFAULT_CHECK_TIMEOUT, DEFAULT_SETTLE};

/// One program for a [`super::Master`]: its command, sockets, readiness, restart policy,
/// process options, output and file watching. Every default is the command line's.
///
/// ```
/// use std::time::Duration;
/// use relaunch::api::{Program, ReadyMode, RestartPolicy};
///
/// let web = Program::new("web", "/usr/local/bin/server")
///     .arg("--verbose")
///     .listen("http=127.0.0.1:0")?
///     .env("RUST_LOG", "info")?
///     .ready(ReadyMode::Notify)?
///     .restart(RestartPolicy::Always)
///     .stop_wait(Duration::from_secs(5))
///     .workers(2)?;
/// # let _ = web;
///
/// // Bad values are refused with the command line's message, naming the flag.
/// let bad = Program::new("web", "server").listen("127.0.0.1:99999").unwrap_err();
/// assert!(bad.to_string().starts_with("--listen: "), "{bad}");
/// assert!(bad.to_string().contains("99999"), "{bad}");
/// # Ok::<(), relaunch::api::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Program {
    config: ProgramConfig,
    /// `--start-secs`, when set (its default depends on the readiness mode).
    start_secs: Option<Duration>,
    /// `--on-exit`, when set (its default depends on whether the process is PID 1).
    on_exit: Option<OnExit>,
    watch_settle: Option<Duration>,
    check_timeout: Option<Duration>,
}

fn usage(flag: &str) -> impl Fn(String) -> Error + '_ {
    move |message| Error::usage(flag, message)
}

impl Program {
    /// A program named `name` (1 to 64 characters out of `A-Z a-z 0-9 . _ - @ +`; checked
    /// when it is added to a master) that runs `command` (found in `PATH` as a shell does),
    /// with the command line's defaults.
    pub fn new(name: impl Into<String>, command: impl Into<OsString>) -> Program {
        Program {
            config: ProgramConfig {
                name: name.into(),
                listen: Vec::new(),
                backlog: 4096,
                command: Command {
                    program: command.into(),
                    args: Vec::new(),
                },
                ready: ReadyMode::Timer,
                // The command line's defaults are the supervisor's.
                settings: Settings::default(),
                process: ProcessOptions {
                    pdeathsig: Some(Signal::SIGTERM),
                    ..ProcessOptions::default()
                },
                output: OutputConfig {
                    mode: OutputMode::Capture,
                    stdout_log: None,
                    stderr_log: None,
                    redirect_stderr: false,
                    max_bytes: 50 << 20,
                    backups: DEFAULT_BACKUPS,
                    prefix: false,
                },
                watch: WatchConfig {
                    program: false,
                    paths: Vec::new(),
                    settle: DEFAULT_SETTLE,
                    check: None,
                },
                priority: DEFAULT_PRIORITY,
                autostart: true,
            },
            start_secs: None,
            on_exit: None,
            watch_settle: None,
            check_timeout: None,
        }
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Appends an argument to the command.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Program {
        self.config.command.args.push(arg.into());
        self
    }

    /// Appends arguments to the command.
    pub fn args<I, S>(mut self, args: I) -> Program
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.config
            .command
            .args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// A socket to listen on (`--listen`), passed to the children in the order given (fd 3,
    /// 4, ...): `[NAME=]ADDR` in the command line's grammar, e.g. `http=127.0.0.1:8080`,
    /// `:0`, `unix:/run/app.sock?mode=660`.
    pub fn listen(mut self, spec: &str) -> Result<Program, Error> {
        let spec: ListenSpec = spec
            .parse()
            .map_err(|e: crate::spec::SpecError| Error::usage("--listen", e.to_string()))?;
        self.config.listen.push(spec);
        Ok(self)
    }

    /// The listen backlog of each socket (`--backlog`, 1 to 2147483647; default 4096).
    pub fn backlog(mut self, backlog: u32) -> Result<Program, Error> {
        if backlog == 0 || backlog > i32::MAX as u32 {
            return Err(Error::usage(
                "--backlog",
                format!("{backlog} is not in 1..=2147483647"),
            ));
        }
        self.config.backlog = backlog;
        Ok(self)
    }

    /// A variable for the children's environment (`--env KEY=VALUE`); `LISTEN_*` and
    /// `NOTIFY_SOCKET` cannot be set.
    pub fn env(mut self, key: &str, value: &str) -> Result<Program, Error> {
        let var: EnvVar = format!("{key}={value}").parse().map_err(usage("--env"))?;
        self.config.process.env.push(var);
        Ok(self)
    }

    /// A file of `KEY=VALUE` lines read at every spawn (`--env-file`).
    pub fn env_file(mut self, path: impl AsRef<Path>) -> Result<Program, Error> {
        let path = path_arg(path.as_ref(), "--env-file")?;
        self.config.process.env_file = Some(path);
        Ok(self)
    }

    /// Pass only `PATH` of this process's environment (`--clear-env`).
    pub fn clear_env(mut self, clear: bool) -> Program {
        self.config.process.clear_env = clear;
        self
    }

    /// How a new child says it is up (`--ready`; default [`ReadyMode::Timer`]).
    /// [`ReadyMode::Fd`] takes 3 to 65535.
    pub fn ready(mut self, mode: ReadyMode) -> Result<Program, Error> {
        if let ReadyMode::Fd(n) = mode {
            format!("fd:{n}")
                .parse::<ReadyMode>()
                .map_err(usage("--ready"))?;
        }
        self.config.ready = mode;
        Ok(self)
    }

    /// How long a new child must stay alive to count as started (`--start-secs`; default
    /// 1s with the timer, 0 otherwise).
    pub fn start_secs(mut self, secs: Duration) -> Program {
        self.start_secs = Some(secs);
        self
    }

    /// How long a child may take to say it is ready (`--ready-timeout`; default 60s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Program {
        self.config.settings.ready_timeout = timeout;
        self
    }

    /// The signal that asks a child to stop (`--stop-signal`; default `SIGTERM`).
    pub fn stop_signal(mut self, signal: Signal) -> Result<Program, Error> {
        parse_signal(signal.as_str()).map_err(usage("--stop-signal"))?;
        self.config.settings.stop_signal = signal;
        Ok(self)
    }

    /// How long a child may take to exit before it gets `SIGKILL` (`--stop-wait-secs`;
    /// default 10s).
    pub fn stop_wait(mut self, wait: Duration) -> Program {
        self.config.settings.stop_wait = wait;
        self
    }

    /// Which exits are followed by a restart (`--restart`; default on-failure).
    pub fn restart(mut self, policy: RestartPolicy) -> Program {
        self.config.settings.restart = policy;
        self
    }

    /// The expected exit codes of [`RestartPolicy::OnFailure`] (`--exit-codes 0,2`).
    pub fn exit_codes(mut self, codes: &str) -> Result<Program, Error> {
        self.config.settings.exit_codes = codes.parse().map_err(usage("--exit-codes"))?;
        Ok(self)
    }

    /// How many times a child that fails to start is retried (`--start-retries`; default 3).
    pub fn start_retries(mut self, retries: u32) -> Program {
        self.config.settings.start_retries = retries;
        self
    }

    /// What happens when the program is FATAL (`--on-fatal`; default exit: the program
    /// ends, and the master ends once every program has).
    pub fn on_fatal(mut self, action: OnFatal) -> Program {
        self.config.settings.on_fatal = action;
        self
    }

    /// What happens when the program exits and is not restarted (`--on-exit`; default wait,
    /// or exit when this process is PID 1).
    pub fn on_exit(mut self, action: OnExit) -> Program {
        self.on_exit = Some(action);
        self
    }

    /// The restart delays (`--backoff-min`, `--backoff-max`, `--backoff-factor` 1 to 1000;
    /// default 100ms, 30s, 2).
    pub fn backoff(mut self, min: Duration, max: Duration, factor: f64) -> Result<Program, Error> {
        let s = &mut self.config.settings;
        s.backoff_factor = check_factor(factor).map_err(usage("--backoff-factor"))?;
        s.backoff_min = min;
        s.backoff_max = max;
        Ok(self)
    }

    /// Draw each restart delay at random below its bound (default on; `--no-jitter` off).
    pub fn jitter(mut self, jitter: bool) -> Program {
        self.config.settings.jitter = jitter;
        self
    }

    /// Crash-loop detection: more than `max` automatic restarts within `window` make the
    /// program FATAL (`--max-restarts`, `--restart-window`; default off).
    pub fn max_restarts(mut self, max: u32, window: Duration) -> Program {
        self.config.settings.max_restarts = Some(max);
        self.config.settings.restart_window = window;
        self
    }

    /// Send the stop signal to the child's process group (`--stop-as-group`; implies
    /// `kill_as_group`).
    pub fn stop_as_group(mut self, group: bool) -> Program {
        self.config.settings.stop_as_group = group;
        self
    }

    /// Send `SIGKILL` to the child's process group (`--kill-as-group`).
    pub fn kill_as_group(mut self, group: bool) -> Program {
        self.config.settings.kill_as_group = group;
        self
    }

    /// Worker processes per generation (`--workers`, 1 to 1024; default 1).
    pub fn workers(mut self, workers: usize) -> Result<Program, Error> {
        self.config.settings.workers = check_workers(workers).map_err(usage("--workers"))?;
        Ok(self)
    }

    /// How a reload replaces the workers (`--reload-strategy`; default all).
    pub fn reload_strategy(mut self, strategy: ReloadStrategy) -> Program {
        self.config.settings.reload_strategy = strategy;
        self
    }

    /// With the rolling strategy, how many workers beyond `workers` may be alive
    /// (`--max-surge`, 1 to 1024; default 1).
    pub fn max_surge(mut self, surge: usize) -> Result<Program, Error> {
        self.config.settings.max_surge = check_workers(surge).map_err(usage("--max-surge"))?;
        Ok(self)
    }

    /// The children's working directory (`--chdir`), made absolute now.
    pub fn chdir(mut self, dir: impl AsRef<Path>) -> Result<Program, Error> {
        self.config.process.chdir = Some(path_arg(dir.as_ref(), "--chdir")?);
        Ok(self)
    }

    /// Run the children as this user, name or uid (`--user`; checked when the program is
    /// added).
    pub fn user(mut self, user: &str) -> Program {
        self.config.process.user = Some(user.to_owned());
        self
    }

    /// Run the children with this primary group, name or gid (`--group`).
    pub fn group(mut self, group: &str) -> Program {
        self.config.process.group = Some(group.to_owned());
        self
    }

    /// The children's umask in octal, e.g. `"027"` (`--umask`).
    pub fn umask(mut self, umask: &str) -> Result<Program, Error> {
        self.config.process.umask = Some(umask.parse().map_err(usage("--umask"))?);
        Ok(self)
    }

    /// The children's niceness, -20 to 19 (`--nice`).
    pub fn nice(mut self, nice: i32) -> Result<Program, Error> {
        self.config.process.nice = Some(parse_nice(&nice.to_string()).map_err(usage("--nice"))?);
        Ok(self)
    }

    /// A resource limit, `NAME=N` or `NAME=SOFT:HARD`, e.g. `"nofile=65536"` (`--rlimit`).
    pub fn rlimit(mut self, limit: &str) -> Result<Program, Error> {
        let limit = limit.parse().map_err(usage("--rlimit"))?;
        self.config.process.rlimits.push(limit);
        Ok(self)
    }

    /// The signal a child gets when this process dies (`--pdeathsig`; default `SIGTERM`;
    /// `None`: none).
    pub fn pdeathsig(mut self, signal: Option<Signal>) -> Program {
        self.config.process.pdeathsig = signal;
        self
    }

    /// Whether the children's output passes through the master (`--output`; default
    /// capture, which keeps each generation's last lines for failure reports).
    pub fn output(mut self, mode: OutputMode) -> Program {
        self.config.output.mode = mode;
        self
    }

    /// Write the children's stdout to this file, with rotation (`--stdout-log`).
    pub fn stdout_log(mut self, file: impl AsRef<Path>) -> Result<Program, Error> {
        self.config.output.stdout_log = Some(path_arg(file.as_ref(), "--stdout-log")?);
        Ok(self)
    }

    /// Write the children's stderr to this file, with rotation (`--stderr-log`).
    pub fn stderr_log(mut self, file: impl AsRef<Path>) -> Result<Program, Error> {
        self.config.output.stderr_log = Some(path_arg(file.as_ref(), "--stderr-log")?);
        Ok(self)
    }

    /// Send the children's stderr where their stdout goes (`--redirect-stderr`).
    pub fn redirect_stderr(mut self, redirect: bool) -> Program {
        self.config.output.redirect_stderr = redirect;
        self
    }

    /// Rotate a log file before it grows past this size, e.g. `"50MB"` (`--log-max-bytes`).
    pub fn log_max_bytes(mut self, size: &str) -> Result<Program, Error> {
        self.config.output.max_bytes = parse_size(size).map_err(usage("--log-max-bytes"))?;
        Ok(self)
    }

    /// Rotated log files to keep (`--log-backups`; default 10).
    pub fn log_backups(mut self, backups: u32) -> Program {
        self.config.output.backups = backups;
        self
    }

    /// Start each captured line with `[GENERATION PID] ` (`--log-prefix`; needs a log file).
    pub fn log_prefix(mut self, prefix: bool) -> Program {
        self.config.output.prefix = prefix;
        self
    }

    /// Reload when the program's file changes (`--watch`).
    pub fn watch(mut self, watch: bool) -> Program {
        self.config.watch.program = watch;
        self
    }

    /// Reload when this file or directory changes (`--watch-path`; its directory must exist).
    pub fn watch_path(mut self, path: impl AsRef<Path>) -> Result<Program, Error> {
        let path = path.as_ref().to_str().ok_or_else(|| {
            Error::usage("--watch-path", format!("{:?} is not UTF-8", path.as_ref()))
        })?;
        let path = parse_watch_path(path).map_err(usage("--watch-path"))?;
        self.config.watch.paths.push(path);
        Ok(self)
    }

    /// How long watched files must stay unchanged before the reload (`--watch-settle`).
    pub fn watch_settle(mut self, settle: Duration) -> Program {
        self.watch_settle = Some(settle);
        self
    }

    /// A shell command that must succeed before a watched change reloads (`--check-cmd`).
    pub fn check_cmd(mut self, command: impl Into<OsString>, timeout: Option<Duration>) -> Program {
        self.config.watch.check = Some(CheckCommand {
            command: command.into(),
            timeout: DEFAULT_CHECK_TIMEOUT,
        });
        self.check_timeout = timeout;
        self
    }

    /// Start order among the master's programs, ascending (`priority`; default 999).
    pub fn priority(mut self, priority: u32) -> Program {
        self.config.priority = priority;
        self
    }

    /// Whether the program starts with the master (`autostart`; default true); `false`
    /// waits for [`super::Handle::start`].
    pub fn autostart(mut self, autostart: bool) -> Program {
        self.config.autostart = autostart;
        self
    }

    /// The checked configuration the master runs: the settings that only mean something
    /// together are checked here, with the command line's messages.
    pub(crate) fn into_config(self) -> Result<ProgramConfig, Error> {
        let mut config = self.config;
        crate::control::parse_name(&config.name).map_err(usage("name"))?;
        if config.command.program.is_empty() {
            return Err(Error::usage("command", "the command is empty"));
        }
        let watching = config.watch.is_enabled();
        let logs = config.output.stdout_log.is_some() || config.output.stderr_log.is_some();
        let useless = [
            (
                self.watch_settle.is_some() && !watching,
                "--watch-settle has no effect without --watch or --watch-path",
            ),
            (
                config.watch.check.is_some() && !watching,
                "--check-cmd has no effect without --watch or --watch-path",
            ),
            (
                config.output.prefix && !logs,
                "--log-prefix needs --stdout-log or --stderr-log",
            ),
            (
                config.output.redirect_stderr && config.output.stderr_log.is_some(),
                "--redirect-stderr cannot be used with --stderr-log",
            ),
        ];
        if let Some((_, message)) = useless.into_iter().find(|(bad, _)| *bad) {
            let flag = message.split(' ').next().unwrap_or_default();
            return Err(Error::usage(flag, message));
        }
        let s = &mut config.settings;
        s.ready_signal = config.ready != ReadyMode::Timer;
        s.start_secs = self.start_secs.unwrap_or(match config.ready {
            ReadyMode::Timer => Duration::from_secs(1),
            _ => Duration::ZERO,
        });
        s.on_exit = self.on_exit.unwrap_or(if std::process::id() == 1 {
            OnExit::Exit
        } else {
            OnExit::Wait
        });
        s.kill_as_group |= s.stop_as_group;
        config.watch.settle = self.watch_settle.unwrap_or(DEFAULT_SETTLE);
        if let Some(check) = &mut config.watch.check {
            check.timeout = self.check_timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT);
        }
        Ok(config)
    }
}

/// A path setting made absolute now, with the command line's message.
fn path_arg(path: &Path, flag: &str) -> Result<std::path::PathBuf, Error> {
    match path.to_str() {
        Some(s) => parse_path(s).map_err(usage(flag)),
        None => std::path::absolute(path)
            .map_err(|e| Error::usage(flag, format!("{path:?} cannot be made absolute: {e}"))),
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;
    use clap::Parser;

    /// The builder's defaults are the command line's: the same configuration, field by field.
    #[test]
    fn defaults_are_the_command_lines() {
        let cli = crate::cli::Args::try_parse_from(["relaunch", "--name", "web", "--", "srv"])
            .unwrap()
            .into_config();
        let api = Program::new("web", "srv").into_config().unwrap();
        assert_eq!(format!("{:?}", cli.programs[0]), format!("{api:?}"));
        let cli = crate::cli::Args::try_parse_from([
            "relaunch", "--name", "web", "--ready", "notify", "--", "srv", "a",
        ])
        .unwrap()
        .into_config();
        let api = Program::new("web", "srv")
            .arg("a")
            .ready(ReadyMode::Notify)
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(format!("{:?}", cli.programs[0]), format!("{api:?}"));
    }

    /// Bad values get the command line's message, naming the flag.
    #[test]
    fn bad_values_name_the_flag_and_say_what_is_valid() {
        let p = || Program::new("web", "srv");
        let e = p().listen("127.0.0.1:99999").unwrap_err();
        assert!(
            matches!(&e, Error::Usage { setting, .. } if setting == "--listen"),
            "{e:?}"
        );
        let cli =
            crate::cli::Args::try_parse_from(["relaunch", "-l", "127.0.0.1:99999", "--", "x"])
                .unwrap_err()
                .to_string();
        let Error::Usage { message, .. } = &e else {
            unreachable!()
        };
        assert!(cli.contains(message.as_str()), "{cli} vs {message}");
        let e = p().workers(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--workers: \"0\" is not a worker count (expected a whole number from 1 to 1024)"
        );
        let e = p().env("LISTEN_FDS", "3").unwrap_err();
        assert!(e.to_string().starts_with("--env: "), "{e}");
        assert!(e.to_string().contains("LISTEN_FDS"), "{e}");
        let e = p().ready(ReadyMode::Fd(2)).unwrap_err();
        assert!(e.to_string().contains("fd:N with N >= 3"), "{e}");
        let e = p()
            .backoff(Duration::ZERO, Duration::ZERO, 0.5)
            .unwrap_err();
        assert!(e.to_string().contains("backoff factor"), "{e}");
        let e = Program::new("no spaces", "srv").into_config().unwrap_err();
        assert!(e.to_string().starts_with("name: "), "{e}");
        let e = p().log_prefix(true).into_config().unwrap_err();
        assert_eq!(
            e.to_string(),
            "--log-prefix: --log-prefix needs --stdout-log or --stderr-log"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
