//! Command-line arguments, and their conversion into a validated [`Config`].
//!
//! Every flag's help text states its default. Value parsers return messages that name the bad
//! value and say what would be valid; `main` prints them on one line and exits with 2.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgGroup, Parser};
use nix::sys::signal::Signal;

use crate::cli_docs::DocsCommand;
use crate::client::ClientCommand;
use crate::command::Command;
use crate::config::{Config, ProgramConfig, ReadyMode};
use crate::control::{default_path, parse_name, program_name, ControlConfig, PathEnv};
use crate::metrics::MetricsAddr;
use crate::output::{OutputConfig, OutputMode, DEFAULT_BACKUPS};
use crate::parse::{parse_duration, parse_signal, parse_size};
// The value parsers of flags that the library's program builder shares live in `parse`.
pub use crate::parse::{parse_factor, parse_path, parse_watch_path, parse_workers};
use crate::process::{parse_nice, parse_pdeathsig, EnvVar, ProcessOptions, Umask};
use crate::spec::ListenSpec;
use crate::supervisor::{ExitCodes, OnExit, OnFatal, ReloadStrategy, RestartPolicy, Settings};
use crate::sys::spawn::ResourceLimit;
use crate::watch::{CheckCommand, WatchConfig, DEFAULT_CHECK_TIMEOUT, DEFAULT_SETTLE};

/// The subcommands: those that talk to a running relaunch, then those that print documentation.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// `status`, `reload`, `restart`, `stop`, `signal`: run by [`crate::client::run`].
    #[command(flatten)]
    Client(ClientCommand),
    /// `man`, `completions`: run by [`crate::cli_docs::run`].
    #[command(flatten)]
    Docs(DocsCommand),
    /// Check a configuration file without starting anything, and print the programs it
    /// describes (exit 0), or the first error with its file, line and key (exit 2).
    #[command(name = "check-config")]
    CheckConfig {
        /// The TOML file, as for --config.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Restart a network server with zero downtime.
///
/// relaunch binds the listening sockets itself, keeps them open for its whole life, and runs
/// COMMAND with them as fds 3, 4, ... (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, as systemd
/// socket activation does). On SIGHUP it starts a new generation, waits until it is up, then
/// stops the old one. If the new one fails, the old one keeps serving.
#[derive(Debug, Parser)]
#[command(
    name = "relaunch",
    version = env!("RELAUNCH_VERSION"),
    override_usage = "relaunch [OPTIONS] --listen <[NAME=]ADDR> -- <COMMAND>...\n       \
relaunch <status|reload|restart|update|start|stop|signal> [OPTIONS] [PROGRAM...]   (talk to a running relaunch)\n       \
relaunch [OPTIONS] --config <FILE>   (several programs, from a TOML file)\n       \
relaunch check-config <FILE>   (check a configuration file and print its programs)\n       \
relaunch man | relaunch completions <SHELL>   (print the man page or shell completions)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Subcommands (see relaunch SUBCOMMAND --help)",
    after_help = "Signals: HUP reloads (with --config: applies the edited file, then reloads the \
programs it did not change); TERM, INT and QUIT stop (QUIT during a stop kills at once); \
USR1, USR2 and WINCH are forwarded to the current child (USR1 reopens the log files instead \
when --stdout-log or --stderr-log is set).\n\
Exit codes: the child's status (128+N if killed by signal N; also when it exits and is not \
restarted, with --on-exit exit); 1 runtime failure (also: another \
relaunch with this --name runs); 2 usage error; \
126 program not executable; 127 program not found. When the program is FATAL (with --on-fatal \
exit): the last failed attempt's status, or 1 if that was 0. Subcommands: 0 ok/running, 1 failed \
(or not serving), 3 no relaunch running, 4 permission denied, 124 --timeout.\n\
States (logged as 'state changed from=.. to=..'): STARTING, RUNNING, BACKOFF (a restart is \
scheduled), STOPPING, EXITED (not restarted, by --restart; with --on-exit wait relaunch keeps the \
sockets and waits for SIGHUP), FATAL (restarting gave up; see --on-fatal).\n\
Environment: the restart-policy, process, output, pid file and --daemon options also read the \
RELAUNCH_* variable shown with each; the command line wins. RELAUNCH_* variables are not passed \
to the child. Relative paths are made absolute at startup.\n\
Logging: RELAUNCH_LOG=error|warn|info|debug|trace sets the level (default info); -v and -q \
override it.",
    group(ArgGroup::new("log_files").args(["stdout_log", "stderr_log"]).multiple(true))
)]
pub struct Args {
    /// A subcommand that talks to a running relaunch or prints documentation, instead of
    /// starting a relaunch.
    #[command(subcommand)]
    pub client: Option<Subcommand>,

    /// Sockets to listen on, passed to the child in the order given (fd 3, 4, ...); the
    /// grammar is in [`crate::spec`].
    #[arg(
        short,
        long = "listen",
        value_name = "[NAME=]ADDR",
        help = "Socket to listen on, passed to the child in the order given (fd 3, 4, ...). \
ADDR: PORT or :PORT (TCP on all interfaces: [::] dual-stack, else 0.0.0.0), IP:PORT, \
[IPv6]:PORT, HOST:PORT (must resolve to one address), tcp://HOST:PORT; tcp4:// and tcp6:// \
force a family; udp://HOST:PORT (also udp4://, udp6://); unix:/path, /abs/path or ./rel/path \
(unix stream), unixgram:PATH, unixpacket:PATH, unix:@name (abstract); fd:N (a socket relaunch \
inherited at fd N); systemd:NAME (the socket-activation sockets named NAME). Port 0 picks a \
free port. Options after '?', joined by '&': backlog=N, reuseport, v6only, nodelay, keepalive, \
freebind (true|false), rcvbuf=BYTES, sndbuf=BYTES, and for socket files mode=660, owner=USER, \
group=GROUP; e.g. 'unix:/run/app.sock?mode=660&group=www-data'. NAME goes into LISTEN_FDNAMES \
(default: derived from the address, e.g. tcp-127.0.0.1-8080, unix-app.sock, fd-7). \
Repeatable. Without --listen, relaunch passes the sockets it got by systemd socket activation; \
with neither it refuses to start."
    )]
    pub listen: Vec<ListenSpec>,

    /// How long a new child must stay alive to count as started; with --ready notify or
    /// fd:N, how long it must stay alive after saying it is ready [default: 1 with --ready
    /// timer, 0 otherwise]. Durations are seconds with fractions (1.5) or with a unit (500ms,
    /// 2s, 1m).
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_START_SECS", value_parser = parse_duration)]
    pub start_secs: Option<Duration>,

    /// How a new child says it is up: `timer` (alive for --start-secs), `notify` (sends
    /// READY=1 to $NOTIFY_SOCKET, sd_notify protocol), or `fd:N` (writes a newline to fd N,
    /// which must be above the sockets) [default: timer].
    #[arg(
        long,
        value_name = "MODE",
        env = "RELAUNCH_READY",
        default_value = "timer",
        hide_default_value = true
    )]
    pub ready: ReadyMode,

    /// With --ready notify or fd:N: how long a new child may take to say it is ready before it
    /// is stopped as failed (the old generation keeps serving) [default: 60].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_READY_TIMEOUT", default_value = "60", hide_default_value = true, value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// Signal that asks a child to stop, by name or number (TERM, SIGTERM, 15) [default: TERM].
    #[arg(long, value_name = "SIGNAL", env = "RELAUNCH_STOP_SIGNAL", default_value = "TERM", hide_default_value = true, value_parser = parse_signal)]
    pub stop_signal: Signal,

    /// How long a child may take to exit after the stop signal before it gets SIGKILL
    /// [default: 10].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_STOP_WAIT_SECS", default_value = "10", hide_default_value = true, value_parser = parse_duration)]
    pub stop_wait_secs: Duration,

    /// Listen backlog of each socket, capped by the kernel's net.core.somaxconn [default: 4096].
    #[arg(long, value_name = "N", env = "RELAUNCH_BACKLOG", default_value_t = 4096, hide_default_value = true, value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub backlog: u32,

    /// Which exits of a child that had started are followed by a restart: `always`,
    /// `on-failure` (killed by a signal, or an exit code not in --exit-codes) or `never`
    /// (supervisord's autorestart=true|unexpected|false). Not restarted, the program is EXITED:
    /// relaunch keeps the sockets and waits for SIGHUP. A child that fails to start is retried
    /// whatever this says (see --start-retries) [default: on-failure].
    #[arg(
        long,
        value_name = "POLICY",
        env = "RELAUNCH_RESTART",
        default_value = "on-failure",
        hide_default_value = true,
        help_heading = "Restart policy"
    )]
    pub restart: RestartPolicy,

    /// The expected exit codes of --restart on-failure, separated by commas (supervisord's
    /// exitcodes) [default: 0].
    #[arg(
        long,
        value_name = "CODES",
        env = "RELAUNCH_EXIT_CODES",
        default_value = "0",
        hide_default_value = true,
        help_heading = "Restart policy"
    )]
    pub exit_codes: ExitCodes,

    /// How many times a child that fails to start (exits before it counts as started, cannot
    /// be executed, or is not ready in time) is retried; N+1 failures in a row make the program
    /// FATAL. Applies until a generation has served: after that, failed restarts back off (up
    /// to --backoff-max) with the sockets open until one comes up, and only --max-restarts
    /// gives up. A reload starts from a fresh count [default: 3].
    #[arg(
        long,
        value_name = "N",
        env = "RELAUNCH_START_RETRIES",
        default_value_t = 3,
        hide_default_value = true,
        help_heading = "Restart policy"
    )]
    pub start_retries: u32,

    /// What relaunch does when the program is FATAL: `exit` (stop and exit with the last
    /// failure's status, or 1) or `wait` (keep the sockets, log, and wait for SIGHUP to try
    /// again) [default: exit].
    #[arg(
        long,
        value_name = "ACTION",
        env = "RELAUNCH_ON_FATAL",
        default_value = "exit",
        hide_default_value = true,
        help_heading = "Restart policy"
    )]
    pub on_fatal: OnFatal,

    /// What relaunch does when the program exits and --restart does not restart it.
    #[arg(
        long,
        value_name = "ACTION",
        env = "RELAUNCH_ON_EXIT",
        help_heading = "Restart policy",
        help = "What relaunch does when the program exits and --restart does not restart it \
(--restart never, or an expected exit under on-failure): exit (stop and exit with the \
program's status as a shell gives it, 128+N if killed by signal N, as tini does; for \
containers under a restart policy of their own) or wait (state EXITED: keep the sockets and \
wait for SIGHUP or a reload) [default: exit when relaunch is PID 1, wait otherwise]"
    )]
    pub on_exit: Option<OnExit>,

    /// The first restart delay [default: 100ms].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_BACKOFF_MIN", default_value = "100ms", hide_default_value = true, value_parser = parse_duration, help_heading = "Restart policy")]
    pub backoff_min: Duration,

    /// The longest restart delay [default: 30s].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_BACKOFF_MAX", default_value = "30s", hide_default_value = true, value_parser = parse_duration, help_heading = "Restart policy")]
    pub backoff_max: Duration,

    /// Each restart without a successful start in between multiplies the delay by this (1 to
    /// 1000). The delay starts over once a child stays up --start-secs [default: 2].
    #[arg(long, value_name = "FACTOR", env = "RELAUNCH_BACKOFF_FACTOR", default_value = "2", hide_default_value = true, value_parser = parse_factor, help_heading = "Restart policy")]
    pub backoff_factor: f64,

    /// Use the exact exponential delays. By default each delay is drawn at random between
    /// --backoff-min and its exponential bound, so that many restarting servers spread out
    /// [default: jitter on].
    #[arg(long, env = "RELAUNCH_NO_JITTER", value_parser = BoolishValueParser::new(), help_heading = "Restart policy")]
    pub no_jitter: bool,

    /// Crash-loop detection: more than N automatic restarts within --restart-window make the
    /// program FATAL; the only limit on the restarts of a program that has served [default:
    /// off].
    #[arg(
        long,
        value_name = "N",
        env = "RELAUNCH_MAX_RESTARTS",
        help_heading = "Restart policy"
    )]
    pub max_restarts: Option<u32>,

    /// The window of --max-restarts [default: 60].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_RESTART_WINDOW", default_value = "60", hide_default_value = true, requires = "max_restarts", value_parser = parse_duration, help_heading = "Restart policy")]
    pub restart_window: Duration,

    /// Send the stop signal (and SIGCONT) to the child's whole process group, reaching the
    /// processes it started; implies --kill-as-group (supervisord's stopasgroup) [default:
    /// off: the child alone].
    #[arg(long, env = "RELAUNCH_STOP_AS_GROUP", value_parser = BoolishValueParser::new(), help_heading = "Process")]
    pub stop_as_group: bool,

    /// Send SIGKILL (after --stop-wait-secs) to the child's whole process group
    /// (supervisord's killasgroup) [default: off: the child alone].
    #[arg(long, env = "RELAUNCH_KILL_AS_GROUP", value_parser = BoolishValueParser::new(), help_heading = "Process")]
    pub kill_as_group: bool,

    /// Worker processes per generation (1 to 1024). Each gets the same sockets at fds 3..,
    /// its own LISTEN_PID, RELAUNCH_WORKER=i (0..N-1) and RELAUNCH_GENERATION=g; a generation
    /// is up when all N are up, and a crashed worker is restarted alone, with its own backoff
    /// [default: 1].
    #[arg(long, value_name = "N", env = "RELAUNCH_WORKERS", default_value = "1", hide_default_value = true, value_parser = parse_workers, help_heading = "Workers")]
    pub workers: usize,

    /// How a reload replaces the workers: `all` (start N new ones, switch once all are up; if
    /// one fails, stop the new ones and keep the old) or `rolling` (a few at a time, at most
    /// N + --max-surge alive; a failure pauses the roll) [default: all].
    #[arg(
        long,
        value_name = "STRATEGY",
        env = "RELAUNCH_RELOAD_STRATEGY",
        default_value = "all",
        hide_default_value = true,
        help_heading = "Workers"
    )]
    pub reload_strategy: ReloadStrategy,

    /// With --reload-strategy rolling: how many workers beyond --workers may be alive during
    /// a reload (1 to 1024) [default: 1].
    #[arg(long, value_name = "K", env = "RELAUNCH_MAX_SURGE", default_value = "1", hide_default_value = true, value_parser = parse_workers, help_heading = "Workers")]
    pub max_surge: usize,

    /// The child's working directory, entered as --user [default: relaunch's own].
    #[arg(
        long,
        value_name = "DIR",
        env = "RELAUNCH_CHDIR",
        value_parser = parse_path,
        help_heading = "Process"
    )]
    pub chdir: Option<PathBuf>,

    /// A variable for the child's environment; repeatable. Overrides --env-file and
    /// relaunch's own environment; LISTEN_* and NOTIFY_SOCKET cannot be set. The variable
    /// holds one KEY=VALUE (use --env-file for more) [default: none].
    #[arg(long, value_name = "KEY=VALUE", env = "RELAUNCH_ENV", action = clap::ArgAction::Append, help_heading = "Process")]
    pub env: Vec<EnvVar>,

    /// A file of KEY=VALUE lines (# comments and blank lines allowed, values verbatim), read
    /// again at every spawn so a reload picks up new values. It must exist at startup; a bad
    /// line fails the spawn, naming file:line [default: none].
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAUNCH_ENV_FILE",
        value_parser = parse_path,
        help_heading = "Process"
    )]
    pub env_file: Option<PathBuf>,

    /// Pass only PATH of relaunch's environment, plus LISTEN_*, NOTIFY_SOCKET,
    /// RELAUNCH_WORKER, RELAUNCH_GENERATION, --env and --env-file [default: off: relaunch's whole environment, less LISTEN_*, NOTIFY_SOCKET
    /// and RELAUNCH_*].
    #[arg(long, env = "RELAUNCH_CLEAR_ENV", value_parser = BoolishValueParser::new(), help_heading = "Process")]
    pub clear_env: bool,

    /// Run the child as this user (name or uid), with its primary and supplementary groups.
    /// relaunch (as root) binds the sockets first; the child drops privileges before exec and
    /// is never started if that fails [default: relaunch's user].
    #[arg(
        long,
        value_name = "USER",
        env = "RELAUNCH_USER",
        help_heading = "Process"
    )]
    pub user: Option<String>,

    /// Run the child with this primary group (name or gid); alone, as its only group
    /// [default: the primary group of --user, else relaunch's].
    #[arg(
        long,
        value_name = "GROUP",
        env = "RELAUNCH_GROUP",
        help_heading = "Process"
    )]
    pub group: Option<String>,

    /// The child's umask, in octal (022, 0027) [default: relaunch's].
    #[arg(
        long,
        value_name = "OCTAL",
        env = "RELAUNCH_UMASK",
        help_heading = "Process"
    )]
    pub umask: Option<Umask>,

    /// The child's niceness, -20 (first in line) to 19 (last) [default: relaunch's].
    #[arg(long, value_name = "N", env = "RELAUNCH_NICE", value_parser = parse_nice, allow_negative_numbers = true, help_heading = "Process")]
    pub nice: Option<i32>,

    /// A resource limit for the child: NAME=N (soft and hard), NAME=SOFT:HARD, N may be
    /// `unlimited`. NAME: nofile, nproc, core, memlock, as, fsize, stack, cpu, data, rss,
    /// locks, sigpending, msgqueue, nice, rtprio, rttime. Repeatable, or separated by commas
    /// [default: relaunch's limits].
    #[arg(long, value_name = "NAME=LIMIT", env = "RELAUNCH_RLIMIT", action = clap::ArgAction::Append, value_delimiter = ',', help_heading = "Process")]
    pub rlimit: Vec<ResourceLimit>,

    /// The signal a child gets when relaunch dies (PR_SET_PDEATHSIG), so a killed relaunch
    /// leaves no server holding the port; `none` to disable [default: TERM].
    #[arg(long, value_name = "SIGNAL", env = "RELAUNCH_PDEATHSIG", default_value = "TERM", hide_default_value = true, value_parser = parse_pdeathsig_arg, help_heading = "Process")]
    pub pdeathsig: DeathSignal,
    /// Reload when the program's file changes: a new build renamed onto its path, written in
    /// place, deleted and recreated, or a symlink on its path swapped (current -> releases/N).
    /// The path is the one found at startup. A build whose reload failed is not retried until it
    /// changes again [default: off].
    #[arg(long, env = "RELAUNCH_WATCH", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Reloading on file changes")]
    pub watch: bool,

    /// Also reload when PATH changes: a file (e.g. the configuration) or a directory (its
    /// entries, not recursively). It may be missing at startup, but its directory must exist.
    /// Repeatable, or separated by colons; works with or without --watch [default: none].
    #[arg(long, value_name = "PATH", env = "RELAUNCH_WATCH_PATH", action = clap::ArgAction::Append, value_delimiter = ':', value_parser = parse_watch_path, help_heading = "Reloading on file changes")]
    pub watch_path: Vec<PathBuf>,

    /// How long the watched files must be unchanged before a change counts; a burst of changes
    /// is one reload [default: 500ms].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_WATCH_SETTLE", value_parser = parse_duration, help_heading = "Reloading on file changes")]
    pub watch_settle: Option<Duration>,

    /// Before a watch-triggered reload, run `/bin/sh -c CMD` as the server would be run (same
    /// user, directory, limits; RELAUNCH_PROGRAM holds the program's path; its output goes to
    /// relaunch's stderr); a failure keeps the old generation and is not retried until the
    /// files change again. SIGHUP reloads do not run it [default: none].
    #[arg(
        long,
        value_name = "CMD",
        env = "RELAUNCH_CHECK_CMD",
        help_heading = "Reloading on file changes"
    )]
    pub check_cmd: Option<OsString>,

    /// How long --check-cmd may run before it is killed (with its process group) and counts as
    /// failed [default: 30].
    #[arg(long, value_name = "DURATION", env = "RELAUNCH_CHECK_TIMEOUT", value_parser = parse_duration, help_heading = "Reloading on file changes")]
    pub check_timeout: Option<Duration>,

    /// More log output (-v debug, -vv trace). Overrides RELAUNCH_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output (-q warnings and errors only, -qq errors only). Overrides RELAUNCH_LOG.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Capture the children's stdout into FILE (default: inherit relaunch's stdout).
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAUNCH_STDOUT_LOG",
        value_parser = parse_path,
        help_heading = "Output",
        help = "Write the children's stdout to FILE, with size rotation (--log-max-bytes, \
--log-backups); SIGUSR1 then reopens the log files instead of being forwarded [default: none, \
children inherit relaunch's stdout]"
    )]
    pub stdout_log: Option<PathBuf>,

    /// Capture the children's stderr into FILE (default: inherit relaunch's stderr).
    #[arg(
        long,
        value_name = "FILE",
        env = "RELAUNCH_STDERR_LOG",
        value_parser = parse_path,
        conflicts_with = "redirect_stderr",
        help_heading = "Output",
        help = "Write the children's stderr to FILE, with size rotation; with --daemon, \
relaunch's own log goes there too [default: none, children inherit relaunch's stderr]"
    )]
    pub stderr_log: Option<PathBuf>,

    /// Whether the children's output passes through relaunch.
    #[arg(
        long,
        value_name = "MODE",
        env = "RELAUNCH_OUTPUT",
        default_value = "capture",
        hide_default_value = true,
        help_heading = "Output",
        help = "capture: the children write into pipes that relaunch reads; it forwards whole \
lines to its own stdout and stderr (or the log files) and keeps each generation's last 20 \
lines (4 KiB) for failure reports (reload --wait, status, the log). inherit: streams without \
a log file are the children's own, inherited from relaunch (cheapest for very chatty \
programs; failure reports then show no output) [default: capture]"
    )]
    pub output: OutputMode,

    /// Send the children's stderr where their stdout goes.
    #[arg(
        long,
        env = "RELAUNCH_REDIRECT_STDERR",
        value_parser = BoolishValueParser::new(),
        help_heading = "Output",
        help = "Send the children's stderr where their stdout goes: into --stdout-log, else \
relaunch's stdout (2>&1) [default: off]"
    )]
    pub redirect_stderr: bool,

    /// Rotate a log file before it grows past SIZE.
    #[arg(
        long,
        value_name = "SIZE",
        env = "RELAUNCH_LOG_MAX_BYTES",
        default_value = "50MB",
        hide_default_value = true,
        value_parser = parse_size,
        help_heading = "Output",
        help = "Rotate a log file before a line would take it past SIZE: bytes, or KB, MB, GB \
(powers of 1024: 10KiB, 50MB); 0 never rotates. Lines are never split across files; a \
single longer line gets a file of its own [default: 50MB]"
    )]
    pub log_max_bytes: u64,

    /// Rotated log files to keep.
    #[arg(
        long,
        value_name = "N",
        env = "RELAUNCH_LOG_BACKUPS",
        default_value_t = DEFAULT_BACKUPS,
        hide_default_value = true,
        help_heading = "Output",
        help = "Rotated files to keep, FILE.1 (newest) to FILE.N; 0 truncates FILE instead \
[default: 10]"
    )]
    pub log_backups: u32,

    /// Start each captured line with `[GENERATION PID] `.
    #[arg(
        long,
        env = "RELAUNCH_LOG_PREFIX",
        value_parser = BoolishValueParser::new(),
        requires = "log_files",
        help_heading = "Output",
        help = "Start each captured line with [GENERATION PID] of the child that wrote it \
(needs --stdout-log or --stderr-log) [default: off]"
    )]
    pub log_prefix: bool,

    /// Write relaunch's pid to PATH.
    #[arg(
        long,
        value_name = "PATH",
        env = "RELAUNCH_PID_FILE",
        value_parser = parse_path,
        help_heading = "Background",
        help = "Write relaunch's pid to PATH (atomically, once the sockets are bound; removed \
at exit). Refuses to start if PATH names a running relaunch; a stale file is replaced \
[default: none]"
    )]
    pub pid_file: Option<PathBuf>,

    /// Detach into the background.
    #[arg(
        long,
        env = "RELAUNCH_DAEMON",
        value_parser = BoolishValueParser::new(),
        requires = "pid_file",
        help_heading = "Background",
        help = "Detach into the background (for hosts without a service manager): returns 0 \
once the first generation is up, else prints why and exits non-zero. Needs --pid-file. Runs \
in /, with stdin, stdout and stderr on /dev/null unless --stdout-log/--stderr-log; relaunch's \
own log goes to the stderr log [default: off]"
    )]
    pub daemon: bool,

    /// Name of this relaunch, for its control socket and status [default: the program's file
    /// name, or if a running relaunch has it, the first free NAME-2, NAME-3, …]. 1 to 64
    /// characters out of A-Z a-z 0-9 . _ - @ +. A name given here that is taken is an error.
    #[arg(long, value_name = "NAME", env = "RELAUNCH_NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Control socket for `relaunch status|reload|stop|signal` (mode 0600, only this user and
    /// root may use it) [default: $RELAUNCH_CONTROL_DIR/NAME.sock if that is set; else
    /// $XDG_RUNTIME_DIR/relaunch/NAME.sock; as root without XDG_RUNTIME_DIR
    /// /run/relaunch/NAME.sock; else $TMPDIR/relaunch-UID/NAME.sock]. A PATH given here that a
    /// running relaunch uses is an error.
    #[arg(
        long,
        value_name = "PATH",
        env = "RELAUNCH_CONTROL",
        conflicts_with = "no_control"
    )]
    pub control: Option<PathBuf>,

    /// Do not open a control socket (the subcommands then only work with --pid-file, through
    /// signals).
    #[arg(long, env = "RELAUNCH_NO_CONTROL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_control: bool,

    /// Serve Prometheus metrics over HTTP at ADDR (e.g. 127.0.0.1:9100 or :9100), path
    /// /metrics [default: off].
    #[arg(long, value_name = "ADDR", env = "RELAUNCH_METRICS")]
    pub metrics: Option<MetricsAddr>,

    /// Run the programs of this TOML file instead of one COMMAND: the master's settings under
    /// `[relaunch]`, one `[program.NAME]` table per program whose keys are the long flags above
    /// (see `relaunch check-config`). Only -v and -q may be given with it; the other RELAUNCH_*
    /// variables are ignored. Cannot be combined with -- COMMAND. SIGHUP and `relaunch reload`
    /// apply an edited file (programs added, removed, changed; unchanged addresses keep their
    /// socket); `relaunch update` applies only the changes. `[relaunch]` keys are read once.
    #[arg(short = 'c', long, value_name = "FILE", env = "RELAUNCH_CONFIG", conflicts_with = "command", value_parser = parse_path)]
    pub config: Option<PathBuf>,

    /// The server to run, with its arguments, after `--`.
    #[arg(
        last = true,
        required_unless_present = "config",
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

impl Args {
    /// Checks what the flags mean together: the watch options need something to watch. The
    /// message names the flag that has no effect. `main` calls this right after parsing.
    pub fn validate(self) -> Result<Args, clap::Error> {
        let watching = self.watch || !self.watch_path.is_empty();
        let useless = [
            (
                self.watch_settle.is_some() && !watching,
                "--watch-settle",
                "--watch or --watch-path",
            ),
            (
                self.check_cmd.is_some() && !watching,
                "--check-cmd",
                "--watch or --watch-path",
            ),
            (
                self.check_timeout.is_some() && self.check_cmd.is_none(),
                "--check-timeout",
                "--check-cmd",
            ),
        ];
        match useless.into_iter().find(|(bad, _, _)| *bad) {
            Some((_, flag, needs)) => Err(clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("{flag} has no effect without {needs}\n"),
            )),
            None => Ok(self),
        }
    }

    /// Converts the parsed arguments into the immutable configuration the master runs with.
    pub fn into_config(self) -> Config {
        let mut command = self.command.into_iter();
        let program = command.next().unwrap_or_default();
        let default_name = self.name.is_none();
        let name = self.name.unwrap_or_else(|| program_name(&program));
        let pid_file = self.pid_file;
        let start_secs = self.start_secs.unwrap_or(match self.ready {
            ReadyMode::Timer => Duration::from_secs(1),
            _ => Duration::ZERO,
        });
        let program = ProgramConfig {
            name: name.clone(),
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
                backoff_min: self.backoff_min,
                backoff_max: self.backoff_max,
                backoff_factor: self.backoff_factor,
                jitter: !self.no_jitter,
                restart: self.restart,
                exit_codes: self.exit_codes,
                start_retries: self.start_retries,
                on_fatal: self.on_fatal,
                // PID 1 is a container's entrypoint: exit as tini does, and let the runtime's
                // restart policy decide.
                on_exit: self.on_exit.unwrap_or(if std::process::id() == 1 {
                    OnExit::Exit
                } else {
                    OnExit::Wait
                }),
                max_restarts: self.max_restarts,
                restart_window: self.restart_window,
                stop_as_group: self.stop_as_group,
                kill_as_group: self.kill_as_group || self.stop_as_group,
                workers: self.workers,
                reload_strategy: self.reload_strategy,
                max_surge: self.max_surge,
            },
            process: ProcessOptions {
                chdir: self.chdir,
                env: self.env,
                env_file: self.env_file,
                clear_env: self.clear_env,
                user: self.user,
                group: self.group,
                umask: self.umask,
                nice: self.nice,
                rlimits: self.rlimit,
                pdeathsig: self.pdeathsig.0,
            },
            output: OutputConfig {
                mode: self.output,
                stdout_log: self.stdout_log,
                stderr_log: self.stderr_log,
                redirect_stderr: self.redirect_stderr,
                max_bytes: self.log_max_bytes,
                backups: self.log_backups,
                prefix: self.log_prefix,
            },
            watch: WatchConfig {
                program: self.watch,
                paths: self.watch_path,
                settle: self.watch_settle.unwrap_or(DEFAULT_SETTLE),
                check: self.check_cmd.map(|command| CheckCommand {
                    command,
                    timeout: self.check_timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT),
                }),
            },
            priority: crate::config::DEFAULT_PRIORITY,
            autostart: true,
        };
        Config {
            pid_file: pid_file.clone(),
            daemon: self.daemon,
            control: ControlConfig {
                default_path: !self.no_control && self.control.is_none(),
                default_name,
                // `default_path` puts the socket next to the pid file when there is one (and
                // no runtime dir).
                socket: match (self.no_control, self.control) {
                    (true, _) => None,
                    (false, Some(path)) => Some(path),
                    (false, None) => Some(default_path(
                        &name,
                        pid_file.as_deref(),
                        &PathEnv::current(),
                    )),
                },
                metrics: self.metrics,
            },
            name,
            programs: vec![program],
            source: None,
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

/// With `--config` (or `RELAUNCH_CONFIG`), the file says everything: a flag given on the
/// command line besides -v and -q is a usage error naming it. `RELAUNCH_*` variables other
/// than `RELAUNCH_CONFIG` and `RELAUNCH_LOG` are ignored then.
pub fn alone_with_config(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    use clap::parser::ValueSource;
    if matches.subcommand().is_some() || !matches.contains_id("config") {
        return Ok(());
    }
    if matches.value_source("config").is_none() {
        return Ok(());
    }
    let cmd = <Args as clap::CommandFactory>::command();
    let beside = cmd.get_arguments().find(|a| {
        let id = a.get_id().as_str();
        !["config", "verbose", "quiet", "command"].contains(&id)
            && matches.value_source(id) == Some(ValueSource::CommandLine)
    });
    match beside {
        Some(arg) => Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "--{} cannot be used with --config: set it in the configuration file\n",
                arg.get_long().unwrap_or(arg.get_id().as_str())
            ),
        )),
        None => Ok(()),
    }
}

/// `--pdeathsig`: a signal, or `None` for `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeathSignal(pub Option<Signal>);

fn parse_pdeathsig_arg(s: &str) -> Result<DeathSignal, String> {
    parse_pdeathsig(s).map(DeathSignal)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let program = config.program();
        assert_eq!(program.settings.start_secs, Duration::from_secs(1));
        assert!(!program.settings.ready_signal);
        assert_eq!(program.command.program, "srv");
        assert_eq!(program.command.args, vec![OsString::from("-x")]);
    }

    #[test]
    fn workers_options_and_their_errors() {
        let args = Args::try_parse_from(["relaunch", "--", "srv"]).unwrap();
        let st = args.into_config().program().settings;
        assert_eq!((st.workers, st.max_surge), (1, 1));
        assert_eq!(st.reload_strategy, ReloadStrategy::All);
        let args = Args::try_parse_from([
            "relaunch",
            "--workers",
            "8",
            "--reload-strategy",
            "rolling",
            "--max-surge",
            "2",
            "--",
            "srv",
        ])
        .unwrap();
        let st = args.into_config().program().settings;
        assert_eq!((st.workers, st.max_surge), (8, 2));
        assert_eq!(st.reload_strategy, ReloadStrategy::Rolling);
        for bad in ["0", "1025", "-1", "two", ""] {
            let e = parse_workers(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("1 to 1024"),
                "{e}"
            );
        }
        let e = Args::try_parse_from(["relaunch", "--reload-strategy", "fast", "--", "srv"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"fast\"") && e.contains("all or rolling"),
            "{e}"
        );
    }

    #[test]
    fn core_options_read_relaunch_variables_and_flags_win() {
        use clap::CommandFactory;
        let cmd = Args::command();
        for (id, var) in [
            ("start_secs", "RELAUNCH_START_SECS"),
            ("ready", "RELAUNCH_READY"),
            ("ready_timeout", "RELAUNCH_READY_TIMEOUT"),
            ("stop_signal", "RELAUNCH_STOP_SIGNAL"),
            ("stop_wait_secs", "RELAUNCH_STOP_WAIT_SECS"),
            ("workers", "RELAUNCH_WORKERS"),
            ("reload_strategy", "RELAUNCH_RELOAD_STRATEGY"),
            ("max_surge", "RELAUNCH_MAX_SURGE"),
            ("backlog", "RELAUNCH_BACKLOG"),
            ("name", "RELAUNCH_NAME"),
            ("control", "RELAUNCH_CONTROL"),
            ("no_control", "RELAUNCH_NO_CONTROL"),
            ("metrics", "RELAUNCH_METRICS"),
            ("watch", "RELAUNCH_WATCH"),
            ("watch_path", "RELAUNCH_WATCH_PATH"),
            ("watch_settle", "RELAUNCH_WATCH_SETTLE"),
            ("check_cmd", "RELAUNCH_CHECK_CMD"),
            ("check_timeout", "RELAUNCH_CHECK_TIMEOUT"),
        ] {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(var), "{id}");
        }
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
        assert_eq!(c.program().ready, ReadyMode::Notify);
        assert!(c.program().settings.ready_signal);
        assert_eq!(
            c.program().settings.start_secs,
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
        assert_eq!(c.program().ready, ReadyMode::Fd(5));
        assert_eq!(c.program().settings.start_secs, Duration::from_secs(2));
        assert_eq!(c.program().settings.ready_timeout, Duration::from_secs(3));
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
    fn output_pid_file_and_daemon_options() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["relaunch", "-l", ":1"];
            argv.extend_from_slice(extra);
            argv.extend_from_slice(&["--", "srv"]);
            Args::try_parse_from(argv).map(Args::into_config)
        };
        let c = parse(&[]).unwrap();
        assert_eq!(c.program().output, OutputConfig::default());
        assert_eq!(c.program().output.max_bytes, 50 * 1024 * 1024);
        assert_eq!(c.program().output.backups, 10);
        assert!(!c.program().output.has_log_files() && c.pid_file.is_none() && !c.daemon);

        let c = parse(&[
            "--stdout-log",
            "out.log",
            "--stderr-log",
            "/var/log/err.log",
            "--log-max-bytes",
            "10KiB",
            "--log-backups",
            "0",
            "--log-prefix",
            "--pid-file",
            "run/r.pid",
            "--daemon",
        ])
        .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.program().output.stdout_log, Some(cwd.join("out.log")));
        assert_eq!(
            c.program().output.stderr_log,
            Some(PathBuf::from("/var/log/err.log"))
        );
        assert_eq!(c.program().output.max_bytes, 10 * 1024);
        assert_eq!(c.program().output.backups, 0);
        assert!(c.program().output.prefix && c.program().output.has_log_files());
        assert_eq!(c.pid_file, Some(cwd.join("run/r.pid")));
        assert!(c.daemon);

        let c = parse(&["--redirect-stderr"]).unwrap();
        assert!(c.program().output.redirect_stderr && !c.program().output.has_log_files());

        let kind = |extra: &[&str]| parse(extra).unwrap_err().kind();
        use clap::error::ErrorKind;
        assert_eq!(kind(&["--daemon"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--log-prefix"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["--stderr-log", "e", "--redirect-stderr"]),
            ErrorKind::ArgumentConflict
        );
        let e = parse(&["--log-max-bytes", "lots"]).unwrap_err().to_string();
        assert!(e.contains("\"lots\" is not a size"), "{e}");
        let e = parse(&["--pid-file", ""]).unwrap_err().to_string();
        assert!(e.contains("\"\" is not a path (empty)"), "{e}");
    }

    #[test]
    fn on_exit_and_output_modes() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["relaunch", "-l", ":1"];
            argv.extend_from_slice(extra);
            argv.extend_from_slice(&["--", "srv"]);
            Args::try_parse_from(argv).map(Args::into_config)
        };
        let c = parse(&[]).unwrap();
        // The test runner is not PID 1: the default is wait.
        assert_eq!(c.program().settings.on_exit, OnExit::Wait);
        assert_eq!(c.program().output.mode, OutputMode::Capture);
        assert!(c.program().output.captures());
        let c = parse(&["--on-exit", "exit", "--output", "inherit"]).unwrap();
        assert_eq!(c.program().settings.on_exit, OnExit::Exit);
        assert_eq!(c.program().output.mode, OutputMode::Inherit);
        assert!(!c.program().output.captures());
        let c = parse(&["--on-exit", "wait"]).unwrap();
        assert_eq!(c.program().settings.on_exit, OnExit::Wait);
        let e = parse(&["--on-exit", "restart"]).unwrap_err().to_string();
        assert!(
            e.contains("\"restart\" is not an --on-exit action (expected exit or wait)"),
            "{e}"
        );
        let e = parse(&["--output", "file"]).unwrap_err().to_string();
        assert!(e.contains("expected capture or inherit"), "{e}");
    }

    #[test]
    fn policy_and_process_defaults() {
        let c = Args::try_parse_from(["relaunch", "-l", ":1", "--", "srv"])
            .unwrap()
            .into_config();
        let st = c.program().settings;
        assert_eq!(st.restart, RestartPolicy::OnFailure);
        assert_eq!(st.exit_codes, ExitCodes::of(&[0]));
        assert_eq!(st.start_retries, 3);
        assert_eq!(st.on_fatal, OnFatal::Exit);
        assert_eq!(st.backoff_min, Duration::from_millis(100));
        assert_eq!(st.backoff_max, Duration::from_secs(30));
        assert_eq!(st.backoff_factor, 2.0);
        assert!(st.jitter);
        assert_eq!(st.max_restarts, None);
        assert_eq!(st.restart_window, Duration::from_secs(60));
        assert!(!st.stop_as_group && !st.kill_as_group);
        assert_eq!(c.program().process, ProcessOptions::default());
        assert_eq!(c.program().process.pdeathsig, Some(Signal::SIGTERM));
    }

    #[test]
    fn policy_and_process_flags() {
        let c = Args::try_parse_from([
            "relaunch",
            "-l",
            ":1",
            "--restart",
            "never",
            "--exit-codes",
            "0,2",
            "--start-retries",
            "0",
            "--on-fatal",
            "wait",
            "--backoff-min",
            "1s",
            "--backoff-max",
            "1m",
            "--backoff-factor",
            "1.5",
            "--no-jitter",
            "--max-restarts",
            "5",
            "--restart-window",
            "30",
            "--stop-as-group",
            "--chdir",
            "/srv",
            "--env",
            "A=1",
            "--env",
            "B=2=3",
            "--env-file",
            "/etc/app.env",
            "--clear-env",
            "--user",
            "www-data",
            "--group",
            "100",
            "--umask",
            "027",
            "--nice",
            "-5",
            "--rlimit",
            "nofile=1024,core=unlimited",
            "--rlimit",
            "nproc=10:20",
            "--pdeathsig",
            "none",
            "--",
            "srv",
        ])
        .unwrap()
        .into_config();
        let st = c.program().settings;
        assert_eq!(st.restart, RestartPolicy::Never);
        assert_eq!(st.exit_codes, ExitCodes::of(&[0, 2]));
        assert_eq!(st.start_retries, 0);
        assert_eq!(st.on_fatal, OnFatal::Wait);
        assert_eq!(st.backoff_min, Duration::from_secs(1));
        assert_eq!(st.backoff_max, Duration::from_secs(60));
        assert_eq!(st.backoff_factor, 1.5);
        assert!(!st.jitter);
        assert_eq!(st.max_restarts, Some(5));
        assert_eq!(st.restart_window, Duration::from_secs(30));
        assert!(
            st.stop_as_group && st.kill_as_group,
            "stop-as-group implies kill-as-group"
        );
        let p = c.program().process.clone();
        assert_eq!(p.chdir, Some(PathBuf::from("/srv")));
        let env: Vec<String> = p
            .env
            .iter()
            .map(|v| crate::process::show_pair(&v.key, &v.value))
            .collect();
        assert_eq!(env, ["A=1", "B=2=3"]);
        assert_eq!(p.env_file, Some(PathBuf::from("/etc/app.env")));
        assert!(p.clear_env);
        assert_eq!(p.user.as_deref(), Some("www-data"));
        assert_eq!(p.group.as_deref(), Some("100"));
        assert_eq!(p.umask, Some(Umask(0o27)));
        assert_eq!(p.nice, Some(-5));
        let limits: Vec<String> = p.rlimits.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            limits,
            [
                "nofile=1024:1024",
                "core=unlimited:unlimited",
                "nproc=10:20"
            ]
        );
        assert_eq!(p.pdeathsig, None);
    }

    #[test]
    fn policy_flag_errors_name_the_value() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["relaunch", "-l", ":1"];
            argv.extend_from_slice(extra);
            argv.extend_from_slice(&["--", "srv"]);
            Args::try_parse_from(argv)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["--backoff-factor", "0.9"]).contains(
            "\"0.9\" is not a backoff factor (expected a number from 1 to 1000, like 2 or 1.5)"
        ));
        assert!(parse(&["--backoff-factor", "inf"]).contains("\"inf\""));
        assert!(parse(&["--restart-window", "5"]).contains("--max-restarts"));
        assert!(parse(&["--no-jitter=maybe"]).contains("maybe"));
    }

    #[test]
    fn cli_requires_a_command_but_not_listen() {
        // Without --listen, the sockets can come from socket activation; `sockets::open_all`
        // refuses to start with none at all.
        let args = Args::try_parse_from(["relaunch", "--", "srv"]).unwrap();
        assert!(args.listen.is_empty());
        let e = Args::try_parse_from(["relaunch", "--listen", ":1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let e = Args::try_parse_from(["relaunch", "--listen", ":1", "srv"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn watch_flags_default_to_off_500ms_and_30s() {
        let args = Args::try_parse_from(["relaunch", "-l", ":1", "--", "srv"]).unwrap();
        let watch = args
            .validate()
            .unwrap()
            .into_config()
            .programs
            .remove(0)
            .watch;
        assert!(!watch.is_enabled());
        assert_eq!(watch.settle, Duration::from_millis(500));
        assert_eq!(watch.check, None);

        let args = Args::try_parse_from([
            "relaunch",
            "-l",
            ":1",
            "--watch",
            "--watch-settle",
            "0.25",
            "--check-cmd",
            "make check",
            "--",
            "srv",
        ])
        .unwrap();
        let watch = args
            .validate()
            .unwrap()
            .into_config()
            .programs
            .remove(0)
            .watch;
        assert!(watch.program && watch.paths.is_empty());
        assert_eq!(watch.settle, Duration::from_millis(250));
        let check = watch.check.unwrap();
        assert_eq!(check.command, "make check");
        assert_eq!(check.timeout, Duration::from_secs(30));
    }

    #[test]
    fn watch_options_without_anything_to_watch_are_errors_naming_the_flag() {
        for (flags, message) in [
            (
                &["--check-cmd", "true"][..],
                "--check-cmd has no effect without --watch or --watch-path",
            ),
            (
                &["--watch-settle", "1"][..],
                "--watch-settle has no effect without --watch or --watch-path",
            ),
            (
                &["--watch", "--check-timeout", "1"][..],
                "--check-timeout has no effect without --check-cmd",
            ),
        ] {
            let mut argv = vec!["relaunch", "-l", ":1"];
            argv.extend_from_slice(flags);
            argv.extend(["--", "srv"]);
            let e = Args::try_parse_from(argv).unwrap().validate().unwrap_err();
            assert_eq!(
                e.to_string().trim(),
                format!("error: {message}"),
                "{flags:?}"
            );
        }
    }

    #[test]
    fn watch_paths_need_an_existing_directory() {
        let cwd = std::env::current_dir().unwrap();
        let dir = std::env::temp_dir();
        let missing_file = dir.join("relaunch-no-such-file.conf");
        let p = missing_file.to_str().unwrap();
        assert_eq!(parse_watch_path(p).unwrap(), missing_file);
        // Relative paths are made absolute at once (`--daemon` changes to `/` later).
        assert_eq!(
            parse_watch_path("Cargo.toml").unwrap(),
            cwd.join("Cargo.toml")
        );
        assert_eq!(
            parse_watch_path("not-yet.conf").unwrap(),
            cwd.join("not-yet.conf")
        );
        assert_eq!(
            parse_watch_path("/nonexistent/dir/app.conf").unwrap_err(),
            "cannot watch \"/nonexistent/dir/app.conf\": its directory /nonexistent/dir does not exist"
        );
        assert_eq!(
            parse_watch_path("Cargo.toml/x").unwrap_err(),
            format!(
                "cannot watch \"Cargo.toml/x\": {} is not a directory",
                cwd.join("Cargo.toml").display()
            )
        );
        assert_eq!(
            parse_watch_path("").unwrap_err(),
            "the path to watch is empty"
        );
    }
}
