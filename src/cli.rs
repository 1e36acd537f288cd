//! Command-line arguments, and their conversion into a validated [`Config`].
//!
//! Every flag's help text states its default. Value parsers return messages that name the bad
//! value and say what would be valid; `main` prints them on one line and exits with 2.

use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;

use crate::client::ClientCommand;
use crate::config::{Command, Config, ReadyMode};
use crate::control::{default_path, parse_name, program_name, ControlConfig, PathEnv};
use crate::metrics::MetricsAddr;
use crate::spec::ListenSpec;
use crate::supervisor::Settings;

/// Restart a network server with zero downtime.
///
/// relaunch binds the listening sockets itself, keeps them open for its whole life, and runs
/// COMMAND with them as fds 3, 4, ... (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, as systemd
/// socket activation does). On SIGHUP it starts a new generation, waits until it is up, then
/// stops the old one. If the new one fails, the old one keeps serving.
#[derive(Debug, Parser)]
#[command(
    name = "relaunch",
    version,
    override_usage = "relaunch [OPTIONS] --listen <[NAME=]ADDR> -- <COMMAND>...\n       \
relaunch <status|reload|restart|stop|signal> [OPTIONS]   (talk to a running relaunch)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Subcommands (talk to a running relaunch; see relaunch SUBCOMMAND --help)",
    after_help = "Signals: HUP reloads; TERM, INT and QUIT stop (QUIT during a stop kills at once); \
USR1, USR2 and WINCH are forwarded to the current child.\n\
Exit codes: the child's status (128+N if killed by signal N); 1 runtime failure (also: another \
relaunch with this --name runs); 2 usage error; 126 program not executable; 127 program not found. \
Subcommands: 0 ok/running, 1 failed (or not serving), 3 no relaunch running, 4 permission denied, \
124 --timeout.\n\
Logging: RELAUNCH_LOG=error|warn|info|debug|trace sets the level (default info); -v and -q \
override it."
)]
pub struct Args {
    /// A subcommand that talks to a running relaunch instead of starting one.
    #[command(subcommand)]
    pub client: Option<ClientCommand>,

    /// Sockets to listen on, passed to the child in the order given (fd 3, 4, ...).
    #[arg(
        short,
        long = "listen",
        value_name = "[NAME=]ADDR",
        required = true,
        help = "Socket to listen on, passed to the child in the order given (fd 3, 4, ...). \
ADDR: PORT or :PORT (all interfaces: [::] dual-stack, else 0.0.0.0), IP:PORT, [IPv6]:PORT, \
HOST:PORT (must resolve to one address), tcp://HOST:PORT. Port 0 picks a free port. NAME goes \
into LISTEN_FDNAMES (default: derived from the address, e.g. tcp-127.0.0.1-8080). Repeatable; \
at least one."
    )]
    pub listen: Vec<ListenSpec>,

    /// How long a new child must stay alive to count as started; with --ready notify or
    /// fd:N, how long it must stay alive after saying it is ready [default: 1 with --ready
    /// timer, 0 otherwise]. Durations are seconds with fractions (1.5) or with a unit (500ms,
    /// 2s, 1m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub start_secs: Option<Duration>,

    /// How a new child says it is up: `timer` (alive for --start-secs), `notify` (sends
    /// READY=1 to $NOTIFY_SOCKET, sd_notify protocol), or `fd:N` (writes a newline to fd N,
    /// which must be above the sockets) [default: timer].
    #[arg(
        long,
        value_name = "MODE",
        default_value = "timer",
        hide_default_value = true
    )]
    pub ready: ReadyMode,

    /// With --ready notify or fd:N: how long a new child may take to say it is ready before it
    /// is stopped as failed (the old generation keeps serving) [default: 60].
    #[arg(long, value_name = "DURATION", default_value = "60", hide_default_value = true, value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// Signal that asks a child to stop, by name or number (TERM, SIGTERM, 15) [default: TERM].
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", hide_default_value = true, value_parser = parse_signal)]
    pub stop_signal: Signal,

    /// How long a child may take to exit after the stop signal before it gets SIGKILL
    /// [default: 10].
    #[arg(long, value_name = "DURATION", default_value = "10", hide_default_value = true, value_parser = parse_duration)]
    pub stop_wait_secs: Duration,

    /// Listen backlog of each socket, capped by the kernel's net.core.somaxconn [default: 4096].
    #[arg(long, value_name = "N", default_value_t = 4096, hide_default_value = true, value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub backlog: u32,

    /// More log output (-v debug, -vv trace). Overrides RELAUNCH_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output (-q warnings and errors only, -qq errors only). Overrides RELAUNCH_LOG.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Name of this relaunch, for its control socket and status [default: the program's file
    /// name]. 1 to 64 characters out of A-Z a-z 0-9 . _ - @ +.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Control socket for `relaunch status|reload|stop|signal` (mode 0600, only this user and
    /// root may use it) [default: $XDG_RUNTIME_DIR/relaunch/NAME.sock; as root without
    /// XDG_RUNTIME_DIR /run/relaunch/NAME.sock; else $TMPDIR/relaunch-UID/NAME.sock].
    #[arg(long, value_name = "PATH", conflicts_with = "no_control")]
    pub control: Option<PathBuf>,

    /// Do not open a control socket (the subcommands then only work with --pid-file, through
    /// signals).
    #[arg(long)]
    pub no_control: bool,

    /// Serve Prometheus metrics over HTTP at ADDR (e.g. 127.0.0.1:9100 or :9100), path
    /// /metrics [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<MetricsAddr>,

    /// The server to run, with its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl Args {
    /// Converts the parsed arguments into the immutable configuration the master runs with.
    pub fn into_config(self) -> Config {
        let mut command = self.command.into_iter();
        let program = command.next().unwrap_or_default();
        let name = self.name.unwrap_or_else(|| program_name(&program));
        let start_secs = self.start_secs.unwrap_or(match self.ready {
            ReadyMode::Timer => Duration::from_secs(1),
            _ => Duration::ZERO,
        });
        Config {
            listen: self.listen,
            backlog: self.backlog,
            ready: self.ready,
            command: Command {
                program,
                args: command.collect(),
            },
            settings: Settings {
                start_secs,
                ready_signal: self.ready != ReadyMode::Timer,
                ready_timeout: self.ready_timeout,
                stop_signal: self.stop_signal,
                stop_wait: self.stop_wait_secs,
                ..Settings::default()
            },
            control: ControlConfig {
                default_path: !self.no_control && self.control.is_none(),
                // `default_path` puts the socket next to a pid file when there is one (and no
                // runtime dir); the master writes no pid file yet, hence `None`.
                socket: match (self.no_control, self.control) {
                    (true, _) => None,
                    (false, Some(path)) => Some(path),
                    (false, None) => Some(default_path(&name, None, &PathEnv::current())),
                },
                metrics: self.metrics,
            },
            name,
        }
    }

    /// The log level asked for with -v/-q, if any.
    pub fn log_level(&self) -> Option<tracing::Level> {
        use tracing::Level;
        match (self.verbose, self.quiet) {
            (0, 0) => None,
            (1, _) => Some(Level::DEBUG),
            (v, _) if v >= 2 => Some(Level::TRACE),
            (_, 1) => Some(Level::WARN),
            _ => Some(Level::ERROR),
        }
    }
}

/// Parses a duration: seconds with an optional fraction (`1.5`), or a number with a unit
/// (`250ms`, `2s`, `1.5m`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration (expected seconds like 1.5, or a number with ms, s, m or h, like 500ms)"
            ))
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("{s:?} is not a duration (expected seconds like 1.5, or a number with ms, s, m or h, like 500ms)")
    })?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| *d <= Duration::from_secs(100 * 365 * 24 * 3600))
        .ok_or_else(|| format!("duration {s:?} is out of range (0 to 100 years)"))
}

/// Parses a signal by name or number, in any case: `TERM`, `sigterm`, `15`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    let sig = if let Ok(n) = t.parse::<i32>() {
        Signal::try_from(n).ok()
    } else {
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name).ok()
    };
    match sig {
        Some(Signal::SIGSTOP) | None => Err(format!(
            "{s:?} is not a usable signal (expected a name like TERM, SIGINT, QUIT or a number like 15)"
        )),
        Some(sig) => Ok(sig),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0.2").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_name_the_value() {
        for bad in ["", "-1", "abc", "1x", "1..2", "ms", "1 s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("500ms"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            parse_duration("1e400").unwrap_err(),
            "\"1e400\" is not a duration (expected seconds like 1.5, or a number with ms, s, m or h, like 500ms)"
        );
        assert_eq!(
            parse_duration("99999999999h").unwrap_err(),
            "duration \"99999999999h\" is out of range (0 to 100 years)"
        );
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("quit").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("Int").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
    }

    #[test]
    fn bad_signals_name_the_value() {
        for bad in ["BOGUS", "0", "99", "", "STOP", "SIGSTOP", "-15"] {
            let e = parse_signal(bad).unwrap_err();
            assert_eq!(
                e,
                format!("{bad:?} is not a usable signal (expected a name like TERM, SIGINT, QUIT or a number like 15)")
            );
        }
    }

    #[test]
    fn cli_defaults() {
        let args =
            Args::try_parse_from(["relaunch", "--listen", ":8080", "--", "srv", "-x"]).unwrap();
        assert_eq!(args.start_secs, None);
        assert_eq!(args.ready, ReadyMode::Timer);
        assert_eq!(args.ready_timeout, Duration::from_secs(60));
        assert_eq!(args.stop_wait_secs, Duration::from_secs(10));
        assert_eq!(args.stop_signal, Signal::SIGTERM);
        assert_eq!(args.backlog, 4096);
        let config = args.into_config();
        assert_eq!(config.settings.start_secs, Duration::from_secs(1));
        assert!(!config.settings.ready_signal);
        assert_eq!(config.command.program, "srv");
        assert_eq!(config.command.args, vec![OsString::from("-x")]);
    }

    #[test]
    fn ready_modes() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["relaunch", "-l", ":1"];
            argv.extend_from_slice(extra);
            argv.extend_from_slice(&["--", "srv"]);
            Args::try_parse_from(argv).map(Args::into_config)
        };
        let c = parse(&["--ready", "notify"]).unwrap();
        assert_eq!(c.ready, ReadyMode::Notify);
        assert!(c.settings.ready_signal);
        assert_eq!(
            c.settings.start_secs,
            Duration::ZERO,
            "0 by default in notify mode"
        );
        let c = parse(&[
            "--ready",
            "fd:5",
            "--start-secs",
            "2",
            "--ready-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(c.ready, ReadyMode::Fd(5));
        assert_eq!(c.settings.start_secs, Duration::from_secs(2));
        assert_eq!(c.settings.ready_timeout, Duration::from_secs(3));
        for bad in ["fd:2", "fd:x", "fd:", "sometimes", "fd:99999"] {
            let e = parse(&["--ready", bad]).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "{bad:?} is not a readiness mode (expected timer, notify, or fd:N with N >= 3)"
                )),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn cli_requires_listen_and_command() {
        let e = Args::try_parse_from(["relaunch", "--", "srv"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = Args::try_parse_from(["relaunch", "--listen", ":1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = Args::try_parse_from(["relaunch", "--listen", ":1", "srv"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }
}
