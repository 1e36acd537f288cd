//! The client subcommands: `relaunch status | reload | restart | update | start | stop | signal`.
//!
//! They find a running master's control socket (`--control PATH`; `--name NAME` in the
//! default directories; `--pid-file PATH`: the socket next to it or the one whose master has
//! that pid; or the only live socket there, several being listed for the user to choose, exit
//! 2), connect without blocking ([`crate::control::probe`]), send one request ([`crate::control`]), and
//! turn the answer into output and an exit code. Without a control socket, `--pid-file PATH`
//! falls back to signals: `status` checks the pid with `kill(pid, 0)`, `reload` sends SIGHUP
//! (it cannot wait for the result then), `stop` sends SIGTERM, and `signal` works for the
//! signals relaunch forwards (USR1, USR2, WINCH).
//!
//! Exit codes (LSB style for `status`): 0 success / running; 1 failure (the reload failed, or
//! for `status`: relaunch runs but its server is not running); 2 usage; 3 no relaunch is
//! running; 4 permission denied; 124 `--timeout` expired.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Pid;

use crate::control::{
    parse_name, probe, socket_next_to, write_request, PathEnv, Probe, Request, Response, PROTOCOL,
};
use crate::parse::{parse_duration, parse_signal};
use crate::status::{OutputLine, ReloadRecord, StatusRecord};

/// Success; for `status`: relaunch and its server are running.
pub const OK: i32 = 0;
/// Failure: the reload failed, the request was refused, or (`status`) relaunch runs but its
/// server is not running.
pub const FAILED: i32 = 1;
/// Usage error.
pub const USAGE: i32 = 2;
/// No relaunch is running there.
pub const NOT_RUNNING: i32 = 3;
/// The control socket refused this user.
pub const DENIED: i32 = 4;
/// `--timeout` expired before the answer.
pub const TIMED_OUT: i32 = 124;

/// How long a request without `--wait` may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer line read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// A subcommand that talks to a running relaunch.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Show the state of a running relaunch: its sockets, generations, last reload, counters and
    /// recent events. Exit code: 0 running, 1 relaunch up but its server not running (starting,
    /// backoff, stopping), 3 no relaunch running, 4 permission denied. With several programs:
    /// a table NAME STATE PID GEN UPTIME LAST-RELOAD, exit 0 when every program named (or
    /// every program not stopped) is running; an unknown name exits 2.
    Status {
        /// Which relaunch.
        #[command(flatten)]
        target: Target,
        /// Print the JSON status record (see the README) instead of a table.
        #[arg(long)]
        json: bool,
        /// With several programs: only these (default: all). An unknown name exits 2.
        #[arg(value_name = "PROGRAM")]
        programs: Vec<String>,
    },
    /// Reload: start a new generation, switch to it once it is up, then stop the old one.
    /// Requests during a reload coalesce into one follow-up reload.
    Reload(ReloadArgs),
    /// The same as `reload` (relaunch never stops the server to restart it); a program that
    /// is stopped is started.
    Restart(ReloadArgs),
    /// Stop relaunch: the stop signal to the server, SIGKILL after --stop-wait-secs. With
    /// program names: stop only those programs; relaunch keeps their sockets open and keeps
    /// running (`start` them again).
    Stop(StopArgs),
    /// Apply the edited configuration file's changes only, like supervisorctl's update: start
    /// programs added to it, stop programs removed from it (their sockets are closed once
    /// their last child is gone), and start changed programs under their new settings (the old
    /// generation serves until the new one is up). Unchanged programs are left alone (their
    /// pids stay the same). Prints what it did. An invalid file, or a new address that cannot
    /// be bound, changes nothing (exit 1; status shows config_error).
    Update(UpdateArgs),
    /// Start programs that do not run: stopped by name, or configured with autostart = false.
    Start {
        /// Which relaunch.
        #[command(flatten)]
        target: Target,
        /// The programs to start.
        #[arg(value_name = "PROGRAM", required = true)]
        programs: Vec<String>,
    },
    /// Send a signal to the current generation of the server.
    Signal {
        /// Which relaunch.
        #[command(flatten)]
        target: Target,
        /// The signal, by name or number (USR1, SIGUSR1, 10).
        #[arg(value_parser = parse_signal, value_name = "SIGNAL")]
        signal: Signal,
        /// With several programs: the programs to signal (required then).
        #[arg(value_name = "PROGRAM")]
        programs: Vec<String>,
        /// Only this worker (its index, 0 to --workers minus 1) [default: every worker of
        /// the current generation].
        #[arg(long, value_name = "INDEX")]
        worker: Option<usize>,
    },
}

/// Which relaunch to talk to.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The relaunch with this name (default: the only one running; when several run, they are
    /// listed and the exit code is 2).
    #[arg(long, value_name = "NAME", value_parser = parse_name, conflicts_with = "control")]
    pub name: Option<String>,
    /// Its control socket, when it was started with --control PATH.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Its pid file: the control socket next to it (PATH with the extension .sock) is used if
    /// there is one, else the control socket of the master whose pid it holds; otherwise
    /// relaunch is reached with signals (no --wait for reload then).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

/// Options of `reload` and `restart`.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Which relaunch.
    #[command(flatten)]
    pub target: Target,
    /// Wait until the reload is done: exit 0 and print the new pid, or exit 1 with the reason
    /// it failed (the new generation exited, was not ready in time, or could not be executed).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after DURATION and exit 124 (the reload itself goes on)
    /// [default: no limit; relaunch ends every reload within its own timeouts].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// With several programs: reload only these. Without names and with a configuration
    /// file, relaunch reads the file again and applies it (programs added, removed and
    /// changed, see update) and reloads every other program; --wait then waits for all of it.
    #[arg(value_name = "PROGRAM")]
    pub programs: Vec<String>,
}

/// Options of `update`.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// Which relaunch.
    #[command(flatten)]
    pub target: Target,
    /// Wait until every change has ended: exit 0 when every added and changed program is up
    /// and every removed one has stopped, 1 with the reasons otherwise.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after DURATION and exit 124 (the update itself goes on)
    /// [default: no limit].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `stop`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Which relaunch.
    #[command(flatten)]
    pub target: Target,
    /// Wait until relaunch has exited.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after DURATION and exit 124 [default: no limit].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
    /// Stop only these programs (their sockets stay open; relaunch keeps running).
    #[arg(value_name = "PROGRAM")]
    pub programs: Vec<String>,
}

/// A client failure: its exit code and message.
#[derive(Debug)]
struct Fail(i32, String);

type Result<T> = std::result::Result<T, Fail>;

/// Runs a client subcommand; returns the exit code. Output goes to stdout, errors to stderr.
pub fn run(command: ClientCommand) -> i32 {
    let result = match command {
        ClientCommand::Status {
            target,
            json,
            programs,
        } => status(&target, json, &programs),
        ClientCommand::Reload(args) => by_name(&args.target, &args.programs, "reload", |name| {
            reload(&args, "reload", name)
        }),
        ClientCommand::Restart(args) => by_name(&args.target, &args.programs, "restart", |name| {
            reload(&args, "restart", name)
        }),
        ClientCommand::Update(args) => {
            edit(&args.target, "update", args.wait, args.timeout, args.json)
        }
        ClientCommand::Stop(args) if args.programs.is_empty() => stop(&args),
        ClientCommand::Stop(args) => by_name(&args.target, &args.programs, "stop", |name| {
            simple(&args.target, "stop", name)
        }),
        ClientCommand::Start { target, programs } => by_name(&target, &programs, "start", |name| {
            simple(&target, "start", name)
        }),
        ClientCommand::Signal {
            target,
            signal,
            programs,
            worker,
        } => match programs.is_empty() {
            true => send_signal(&target, signal, None, worker),
            false => by_name(&target, &programs, "signal", |name| {
                send_signal(&target, signal, name, worker)
            }),
        },
    };
    match result {
        Ok(code) => code,
        Err(Fail(code, message)) => {
            eprintln!("relaunch: {message}");
            code
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the master

/// How to reach the master.
#[derive(Debug)]
enum Endpoint {
    /// Its control socket.
    Socket(PathBuf),
    /// Its pid, from a pid file, when there is no control socket.
    Pid(Pid, PathBuf),
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A master found by its control socket.
struct Running {
    path: PathBuf,
    /// Its pid (`SO_PEERCRED` of the listening socket); `None` when it does not accept
    /// connections right now (stopped, or its backlog is full).
    pid: Option<i32>,
}

/// Every master with a control socket in the default directories (stale sockets, left behind
/// by a relaunch that was killed, do not count).
fn running(dirs: &[PathBuf]) -> Vec<Running> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !(path.extension().is_some_and(|e| e == "sock") && is_socket(&path)) {
                continue;
            }
            match probe(&path) {
                Ok(Probe::Answers(stream)) => {
                    let pid = getsockopt(&stream, sockopt::PeerCredentials)
                        .ok()
                        .map(|c| c.pid());
                    found.push(Running { path, pid });
                }
                Ok(Probe::Busy) => found.push(Running { path, pid: None }),
                Ok(Probe::Stale | Probe::Missing) => {}
                // Not ours to judge (permission denied, say): list it.
                Err(_) => found.push(Running { path, pid: None }),
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// The lines that list `found` for the user to choose from: name, pid, socket.
fn choices(found: &[Running]) -> String {
    let mut lines = format!("{:<24} {:>8}  {}", "NAME", "PID", "CONTROL SOCKET");
    for r in found {
        let name = r
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pid = r.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        lines.push_str(&format!("\n{name:<24} {pid:>8}  {}", r.path.display()));
    }
    lines
}

fn locate(target: &Target) -> Result<Endpoint> {
    if let Some(path) = &target.control {
        return Ok(Endpoint::Socket(path.clone()));
    }
    let env = PathEnv::current();
    let dirs = env.search_dirs();
    if let Some(pid_file) = &target.pid_file {
        let next_to = socket_next_to(pid_file);
        if is_socket(&next_to) {
            return Ok(Endpoint::Socket(next_to));
        }
        if let Some(name) = &target.name {
            if let Some(p) = dirs
                .iter()
                .map(|d| d.join(format!("{name}.sock")))
                .find(|p| is_socket(p))
            {
                return Ok(Endpoint::Socket(p));
            }
        }
        let pid = read_pid_file(pid_file)?;
        // The control socket of the master with that pid, wherever its name put it.
        if let Some(r) = running(&dirs)
            .into_iter()
            .find(|r| r.pid == Some(pid.as_raw()))
        {
            return Ok(Endpoint::Socket(r.path));
        }
        return Ok(Endpoint::Pid(pid, pid_file.clone()));
    }
    if let Some(name) = &target.name {
        return dirs
            .iter()
            .map(|d| d.join(format!("{name}.sock")))
            .find(|p| is_socket(p))
            .map(Endpoint::Socket)
            .ok_or_else(|| {
                Fail(
                    NOT_RUNNING,
                    format!(
                        "no relaunch named {name:?} is running (no control socket {name}.sock in {})",
                        list(&dirs)
                    ),
                )
            });
    }
    let mut found = running(&dirs);
    match found.len() {
        0 => Err(Fail(
            NOT_RUNNING,
            format!(
                "no relaunch is running (no control socket in {}); give --control PATH or --pid-file PATH if it was started with them",
                list(&dirs)
            ),
        )),
        1 => Ok(Endpoint::Socket(found.remove(0).path)),
        n => Err(Fail(
            USAGE,
            format!(
                "{n} relaunch masters are running; choose one with --name NAME, --pid-file PATH or --control PATH:\n{}",
                choices(&found)
            ),
        )),
    }
}

fn read_pid_file(path: &Path) -> Result<Pid> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Fail(
                NOT_RUNNING,
                format!(
                    "relaunch is not running: pid file {} does not exist",
                    path.display()
                ),
            ))
        }
        Err(e) => {
            return Err(Fail(
                FAILED,
                format!("reading pid file {}: {e}", path.display()),
            ))
        }
    };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(Pid::from_raw(pid)),
        _ => Err(Fail(
            FAILED,
            format!(
                "pid file {} holds {:?}, not a pid",
                path.display(),
                text.trim()
            ),
        )),
    }
}

/// Whether `pid` runs: it exists (EPERM: it does, owned by someone else) and is not a zombie
/// waiting for its parent to reap it (it has exited).
fn alive(pid: Pid) -> bool {
    if matches!(kill(pid, None), Err(Errno::ESRCH)) {
        return false;
    }
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // "pid (comm) STATE ...": comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("Z")
    });
    !zombie
}

// ---------------------------------------------------------------------------------------------
// Talking to the master

/// A connection to a master's control socket.
struct Session {
    path: PathBuf,
    reader: BufReader<std::io::Take<UnixStream>>,
    stream: UnixStream,
}

impl Session {
    fn connect(path: &Path) -> Result<Session> {
        // Without blocking: a stopped master with a full backlog would hang a blocking connect.
        let stream = match probe(path) {
            Ok(Probe::Answers(stream)) => stream,
            Ok(Probe::Stale | Probe::Missing) => {
                return Err(Fail(
                    NOT_RUNNING,
                    format!(
                        "relaunch is not running: nothing answers on {}",
                        path.display()
                    ),
                ))
            }
            Ok(Probe::Busy) => {
                return Err(Fail(
                    FAILED,
                    format!(
                        "{} does not accept connections (its backlog is full: is relaunch stopped or overloaded?)",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(Fail(
                    DENIED,
                    format!(
                        "permission denied: cannot connect to {} ({e})",
                        path.display()
                    ),
                ))
            }
            Err(e) => return Err(Fail(FAILED, format!("connecting to {}: {e}", path.display()))),
        };
        stream
            .set_nonblocking(false)
            .map_err(|e| Fail(FAILED, format!("{}: {e}", path.display())))?;
        // Only talk to a master run by this user or root (or anyone, for root).
        let me = nix::unistd::geteuid().as_raw();
        if let Ok(peer) = getsockopt(&stream, sockopt::PeerCredentials) {
            if me != 0 && peer.uid() != me && peer.uid() != 0 {
                return Err(Fail(
                    DENIED,
                    format!(
                        "{} is served by uid {}, not by you (uid {me}) or root; not talking to it",
                        path.display(),
                        peer.uid()
                    ),
                ));
            }
        }
        let reader = stream
            .try_clone()
            .map_err(|e| Fail(FAILED, format!("{}: {e}", path.display())))?;
        Ok(Session {
            path: path.to_owned(),
            reader: BufReader::new(reader.take(MAX_ANSWER)),
            stream,
        })
    }

    /// Sends `request` and reads one answer, within `timeout` (`None`: no limit).
    fn ask(&mut self, request: &Request, timeout: Option<Duration>) -> Result<Response> {
        // A refused client gets its answer before it writes; a failed write still reads it.
        let sent = write_request(&mut self.stream, request);
        self.answer(timeout).map_err(|fail| match sent {
            Err(e) if fail.0 == FAILED => Fail(
                FAILED,
                format!("sending the request to {}: {e}", self.path.display()),
            ),
            _ => fail,
        })
    }

    /// Reads one answer line.
    fn answer(&mut self, timeout: Option<Duration>) -> Result<Response> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut line = Vec::new();
        loop {
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Fail(
                            TIMED_OUT,
                            format!("no answer from {} in time", self.path.display()),
                        ));
                    }
                    Some(left)
                }
                None => None,
            };
            let _ = self.stream.set_read_timeout(left);
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    return Err(Fail(
                        FAILED,
                        format!(
                            "{} closed the connection without an answer (relaunch exited?)",
                            self.path.display()
                        ),
                    ))
                }
                Ok(_) if line.ends_with(b"\n") => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue; // the deadline check above decides
                }
                Err(e) => {
                    return Err(Fail(
                        FAILED,
                        format!("reading the answer from {}: {e}", self.path.display()),
                    ))
                }
            }
        }
        let response: Response = serde_json::from_slice(&line).map_err(|e| {
            Fail(
                FAILED,
                format!(
                    "unreadable answer from {} ({e}): {}",
                    self.path.display(),
                    String::from_utf8_lossy(&line).trim_end()
                ),
            )
        })?;
        if !response.ok {
            if let Some(error) = &response.error {
                if error.starts_with("permission denied") {
                    return Err(Fail(DENIED, error.clone()));
                }
            }
        }
        if response.v != PROTOCOL {
            return Err(Fail(
                FAILED,
                format!(
                    "{} speaks protocol version {}, this client {PROTOCOL}",
                    self.path.display(),
                    response.v
                ),
            ));
        }
        Ok(response)
    }
}

fn refused(response: &Response) -> Fail {
    Fail(
        if response.usage { USAGE } else { FAILED },
        response
            .error
            .clone()
            .unwrap_or_else(|| "the request failed".into()),
    )
}

// ---------------------------------------------------------------------------------------------
// Subcommands

fn status(target: &Target, json: bool, names: &[String]) -> Result<i32> {
    let path = match locate(target)? {
        Endpoint::Socket(path) => path,
        Endpoint::Pid(pid, file) => {
            if !alive(pid) {
                return Err(Fail(
                    NOT_RUNNING,
                    format!(
                        "relaunch is not running (pid file {} names pid {pid}, which does not exist)",
                        file.display()
                    ),
                ));
            }
            if json {
                let record = StatusRecord {
                    pid: pid.as_raw(),
                    state: "UNKNOWN".into(),
                    ..StatusRecord::default()
                };
                println!("{}", to_json(&record));
            } else {
                println!(
                    "relaunch is running (pid {pid}, from {}); it has no control socket, so there are no details",
                    file.display()
                );
            }
            return Ok(OK);
        }
    };
    let mut session = Session::connect(&path)?;
    let response = session.ask(&Request::new("status"), Some(ANSWER_TIMEOUT))?;
    if !response.ok {
        return Err(refused(&response));
    }
    let Some(record) = response.status else {
        return Err(Fail(
            FAILED,
            format!("{} answered without a status record", path.display()),
        ));
    };
    let mut record = record;
    if record.programs.is_empty() {
        // The command line's single program: its name is the master's.
        if let Some(bad) = names.iter().find(|n| **n != record.name) {
            return Err(unknown_program(bad, &[record.name.clone()]));
        }
    } else if !names.is_empty() {
        let valid: Vec<String> = record.programs.iter().map(|p| p.name.clone()).collect();
        if let Some(bad) = names.iter().find(|n| !valid.contains(n)) {
            return Err(unknown_program(bad, &valid));
        }
        record.programs.retain(|p| names.contains(&p.name));
        let down = record.programs.iter().find(|p| p.state != "RUNNING");
        record.state = down.map_or("RUNNING".into(), |p| p.state.clone());
    }
    if json {
        println!("{}", to_json(&record));
    } else if record.programs.is_empty() {
        print!("{}", table(&record));
    } else {
        print!("{}", programs_table(&record));
    }
    Ok(if record.state == "RUNNING" {
        OK
    } else {
        FAILED
    })
}

/// The error for a program name the master does not have: exit 2, with the valid names.
fn unknown_program(name: &str, valid: &[String]) -> Fail {
    Fail(
        USAGE,
        format!(
            "no program named {name:?} (the programs are: {})",
            valid.join(", ")
        ),
    )
}

/// Runs `one` for each named program at once (each on a connection of its own, so that
/// `reload --wait a b` waits for both reloads side by side), or once with `None` when no
/// name is given. The exit code is the first failure's, in the order the names were given.
fn by_name(
    target: &Target,
    names: &[String],
    what: &str,
    one: impl Fn(Option<&str>) -> Result<i32> + Sync,
) -> Result<i32> {
    let _ = target;
    if names.is_empty() {
        return one(None);
    }
    let mut unique: Vec<&String> = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    let results: Vec<Result<i32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = unique
            .iter()
            .map(|name| {
                let one = &one;
                scope.spawn(move || one(Some(name.as_str())))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Fail(FAILED, format!("{what}: the request failed"))))
            })
            .collect()
    });
    let mut code = OK;
    for (name, result) in unique.iter().zip(results) {
        match result {
            Ok(c) if code == OK => code = c,
            Ok(_) => {}
            Err(Fail(c, message)) => {
                eprintln!("relaunch: {name}: {message}");
                if code == OK {
                    code = c;
                }
            }
        }
    }
    Ok(code)
}

/// A request that needs nothing but a yes (`start NAME`, `stop NAME`).
fn simple(target: &Target, cmd: &str, name: Option<&str>) -> Result<i32> {
    let path = match locate(target)? {
        Endpoint::Socket(path) => path,
        Endpoint::Pid(_, file) => {
            return Err(Fail(
                FAILED,
                format!(
                    "{cmd} by name needs the control socket (only the pid file {} was found)",
                    file.display()
                ),
            ))
        }
    };
    let mut session = Session::connect(&path)?;
    let request = Request {
        program: name.map(str::to_owned),
        ..Request::new(cmd)
    };
    let response = session.ask(&request, Some(ANSWER_TIMEOUT))?;
    if !response.ok {
        return Err(refused(&response));
    }
    let name = name.unwrap_or("relaunch");
    match cmd {
        "start" => println!("{name}: started"),
        _ => println!("{name}: stopping (its sockets stay open)"),
    }
    Ok(OK)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn reload(args: &ReloadArgs, cmd: &str, name: Option<&str>) -> Result<i32> {
    let path = match locate(&args.target)? {
        Endpoint::Socket(path) => path,
        Endpoint::Pid(pid, file) => {
            if args.wait {
                return Err(Fail(
                    FAILED,
                    format!(
                        "cannot wait for a reload without a control socket (only the pid file {} was found); nothing was sent. Drop --wait to send SIGHUP, and read relaunch's log for the result",
                        file.display()
                    ),
                ));
            }
            return signal_pid(pid, &file, Signal::SIGHUP).map(|()| {
                println!(
                    "sent SIGHUP to relaunch (pid {pid}); without a control socket the result is only in relaunch's log"
                );
                OK
            });
        }
    };
    let mut session = Session::connect(&path)?;
    if name.is_none() && cmd == "reload" {
        // With a configuration file (the master lists its programs), `reload` without names
        // reads the file again and applies it: one request, answered with what it did.
        let response = session.ask(&Request::new("status"), Some(ANSWER_TIMEOUT))?;
        if response.status.is_some_and(|s| !s.programs.is_empty()) {
            drop(session);
            return edit(&args.target, "reload", args.wait, args.timeout, args.json);
        }
    }
    let request = Request {
        wait: args.wait,
        program: name.map(str::to_owned),
        ..Request::new(cmd)
    };
    let timeout = if args.wait {
        args.timeout
    } else {
        Some(ANSWER_TIMEOUT)
    };
    let response = session.ask(&request, timeout).map_err(|f| match f.0 {
        TIMED_OUT => Fail(
            TIMED_OUT,
            format!(
                "timed out after {:?} waiting for the reload; it goes on (see relaunch status)",
                args.timeout.unwrap_or_default()
            ),
        ),
        _ => f,
    })?;
    if args.json {
        println!("{}", to_json(&response));
    }
    if let Some(record) = &response.reload {
        if !args.json {
            if let Some(name) = name {
                print!("{name}: ");
            }
            report_reload(record);
        }
        return Ok(if record.ok() { OK } else { FAILED });
    }
    if !response.ok {
        return Err(refused(&response));
    }
    if !args.json {
        if let Some(name) = name {
            print!("{name}: ");
        }
        match response.accepted {
            Some(a) if a.queued => println!(
                "reload queued: it follows the reload in progress (use --wait for the result)"
            ),
            Some(a) => println!(
                "reload started: generation {} (use --wait for the result)",
                a.generation.map_or("?".into(), |g| g.to_string())
            ),
            None if cmd == "restart" => println!("restart requested"),
            None => println!("reload requested"),
        }
    }
    Ok(OK)
}

/// `update`, and `reload` without names with a configuration file: one request; prints what
/// the edit did and, with `wait`, how each program's part ended.
fn edit(
    target: &Target,
    cmd: &str,
    wait: bool,
    timeout: Option<Duration>,
    json: bool,
) -> Result<i32> {
    let path = match locate(target)? {
        Endpoint::Socket(path) => path,
        Endpoint::Pid(pid, file) if cmd == "reload" && !wait => {
            return signal_pid(pid, &file, Signal::SIGHUP).map(|()| {
                println!(
                    "sent SIGHUP to relaunch (pid {pid}); without a control socket the result is only in relaunch's log"
                );
                OK
            });
        }
        Endpoint::Pid(_, file) => {
            return Err(Fail(
                FAILED,
                format!(
                "{cmd} needs the control socket (only the pid file {} was found); nothing was sent",
                file.display()
            ),
            ))
        }
    };
    let mut session = Session::connect(&path)?;
    let request = Request {
        wait,
        ..Request::new(cmd)
    };
    let response = session
        .ask(&request, if wait { timeout } else { Some(ANSWER_TIMEOUT) })
        .map_err(|f| match f.0 {
            TIMED_OUT => Fail(
                TIMED_OUT,
                format!(
                    "timed out after {:?} waiting for the {cmd}; it goes on (see relaunch status)",
                    timeout.unwrap_or_default()
                ),
            ),
            _ => f,
        })?;
    if json {
        println!("{}", to_json(&response));
        return Ok(if response.ok { OK } else { FAILED });
    }
    let Some(reply) = &response.edit else {
        return Err(refused(&response));
    };
    print!("{}", describe_edit(reply));
    for o in reply.outcomes.iter().filter(|o| !o.ok) {
        eprintln!(
            "relaunch: {} ({}): {}",
            o.program,
            o.what,
            o.reason.as_deref().unwrap_or("failed")
        );
    }
    Ok(if response.ok { OK } else { FAILED })
}

/// What an edit did, one line per kind of change, then with `--wait` one line per program.
fn describe_edit(reply: &crate::control::EditReply) -> String {
    let mut out = String::new();
    for (what, names) in [
        ("added", &reply.added),
        ("removed", &reply.removed),
        ("changed", &reply.changed),
        ("reloaded", &reply.reloaded),
    ] {
        if !names.is_empty() {
            out.push_str(&format!("{what}: {}\n", names.join(", ")));
        }
    }
    if out.is_empty() {
        out.push_str("no program changed\n");
    }
    for o in &reply.outcomes {
        let generation = o
            .generation
            .map_or(String::new(), |g| format!(" (generation {g})"));
        let result = if o.ok { "done" } else { "FAILED" };
        out.push_str(&format!("{}: {} {result}{generation}\n", o.program, o.what));
    }
    out
}

fn report_reload(record: &ReloadRecord) {
    if record.ok() {
        println!(
            "reload complete: generation {} (pid {}) is serving, after {:.2}s",
            record.generation,
            record.pid.map_or("?".into(), |p| p.to_string()),
            record.duration_secs
        );
    } else {
        eprintln!(
            "relaunch: reload failed: generation {}: {}; the old generation keeps serving",
            record.generation,
            record.reason.as_deref().unwrap_or("unknown reason")
        );
        if !record.output_tail.is_empty() {
            eprint!(
                "relaunch: the last output of generation {}:\n{}",
                record.generation,
                output_tail(&record.output_tail, "  ")
            );
        }
    }
}

/// The lines a failed generation wrote, one per line, each as `INDENTstream| line`.
fn output_tail(lines: &[OutputLine], indent: &str) -> String {
    lines
        .iter()
        .map(|l| format!("{indent}{}| {}\n", l.stream, l.line))
        .collect()
}

fn stop(args: &StopArgs) -> Result<i32> {
    let path = match locate(&args.target)? {
        Endpoint::Socket(path) => path,
        Endpoint::Pid(pid, file) => {
            signal_pid(pid, &file, Signal::SIGTERM)?;
            if !args.wait {
                println!("sent SIGTERM to relaunch (pid {pid})");
                return Ok(OK);
            }
            let deadline = args.timeout.map(|t| Instant::now() + t);
            // Without a control socket there is nothing to wait on but the pid itself.
            while alive(pid) {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Fail(
                        TIMED_OUT,
                        format!(
                            "relaunch (pid {pid}) still runs after {:?}",
                            args.timeout.unwrap_or_default()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("relaunch (pid {pid}) has exited");
            return Ok(OK);
        }
    };
    let mut session = Session::connect(&path)?;
    let request = Request {
        wait: args.wait,
        ..Request::new("stop")
    };
    let timeout = if args.wait {
        args.timeout
    } else {
        Some(ANSWER_TIMEOUT)
    };
    match session.ask(&request, timeout) {
        Ok(response) if response.ok => {
            match response.stop.and_then(|s| s.exit_code) {
                Some(code) => println!("relaunch has exited with code {code}"),
                None => println!("relaunch is stopping"),
            }
            Ok(OK)
        }
        Ok(response) => Err(refused(&response)),
        // With --wait the master may exit before its last line reaches us.
        Err(Fail(FAILED, _)) if args.wait => {
            println!("relaunch has exited");
            Ok(OK)
        }
        Err(Fail(TIMED_OUT, _)) => Err(Fail(
            TIMED_OUT,
            format!(
                "relaunch still runs after {:?}",
                args.timeout.unwrap_or_default()
            ),
        )),
        Err(e) => Err(e),
    }
}

fn send_signal(
    target: &Target,
    signal: Signal,
    name: Option<&str>,
    worker: Option<usize>,
) -> Result<i32> {
    let path = match locate(target)? {
        Endpoint::Socket(path) => path,
        Endpoint::Pid(_, file) if worker.is_some() => {
            return Err(Fail(
                FAILED,
                format!(
                    "signal --worker needs the control socket (only the pid file {} was found)",
                    file.display()
                ),
            ));
        }
        Endpoint::Pid(pid, file) => {
            // relaunch forwards these to the current child.
            if matches!(signal, Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGWINCH) {
                signal_pid(pid, &file, signal)?;
                println!(
                    "sent {} to relaunch (pid {pid}), which forwards it to the current child",
                    signal.as_str()
                );
                return Ok(OK);
            }
            return Err(Fail(
                FAILED,
                format!(
                    "sending {} to the server needs the control socket (only the pid file {} was found; relaunch forwards USR1, USR2 and WINCH sent to it)",
                    signal.as_str(),
                    file.display()
                ),
            ));
        }
    };
    let mut session = Session::connect(&path)?;
    let request = Request {
        signal: Some(signal.as_str().to_owned()),
        program: name.map(str::to_owned),
        worker,
        ..Request::new("signal")
    };
    let response = session.ask(&request, Some(ANSWER_TIMEOUT))?;
    match response.signal.as_ref().filter(|_| response.ok) {
        Some(s) => {
            match s.worker {
                Some(w) => println!(
                    "sent {} to worker {w} of generation {} (pid {})",
                    s.signal, s.generation, s.pid
                ),
                None if s.sent_to > 1 => println!(
                    "sent {} to the {} workers of generation {}",
                    s.signal, s.sent_to, s.generation
                ),
                None => println!(
                    "sent {} to generation {} (pid {})",
                    s.signal, s.generation, s.pid
                ),
            }
            Ok(OK)
        }
        None => Err(refused(&response)),
    }
}

fn signal_pid(pid: Pid, file: &Path, signal: Signal) -> Result<()> {
    match kill(pid, signal) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => Err(Fail(
            NOT_RUNNING,
            format!(
                "relaunch is not running (pid file {} names pid {pid}, which does not exist)",
                file.display()
            ),
        )),
        Err(Errno::EPERM) => Err(Fail(
            DENIED,
            format!("permission denied: cannot signal pid {pid}"),
        )),
        Err(e) => Err(Fail(FAILED, format!("kill {pid}: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// The human table

/// `1h 02m 03s`, `4m 05s`, `6.1s`.
fn human_duration(secs: f64) -> String {
    let total = secs.max(0.0) as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{secs:.1}s")
    }
}

/// The status of several programs as a table for people, in the manner of supervisorctl:
/// NAME STATE PID GEN UPTIME LAST-RELOAD, then the config file's error if there is one.
pub fn programs_table(r: &StatusRecord) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".to_owned(),
        "PID".to_owned(),
        "GEN".to_owned(),
        "UPTIME".to_owned(),
        "LAST-RELOAD".to_owned(),
    ]];
    for p in &r.programs {
        let current = p.generations.iter().find(|g| g.role == "current");
        let last = match &p.last_reload {
            None => "-".to_owned(),
            Some(l) if l.ok() => format!("gen {} ok", l.generation),
            Some(l) => format!(
                "gen {} failed: {}",
                l.generation,
                l.reason.as_deref().unwrap_or("unknown reason")
            ),
        };
        rows.push([
            p.name.clone(),
            p.state.clone(),
            current.map_or("-".into(), |g| g.pid.to_string()),
            current.map_or("-".into(), |g| g.generation.to_string()),
            match current {
                Some(_) if p.state == "RUNNING" => human_duration(p.uptime_secs),
                _ => "-".into(),
            },
            last,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(error) = &r.config_error {
        out.push_str(&format!("config_error: {error}\n"));
    }
    out
}

/// The status record as a table for people.
pub fn table(r: &StatusRecord) -> String {
    let mut out = String::new();
    let current = r.generations.iter().find(|g| g.role == "current");
    let serving = match current {
        Some(g) => format!("generation {} (pid {})", g.generation, g.pid),
        None => "no generation".into(),
    };
    out.push_str(&format!(
        "{}: {}{}, {serving}\n",
        r.name,
        r.state,
        if r.reloading {
            ", reloading"
        } else if r.reload_queued {
            ", reload queued"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "  relaunch  pid {}, version {}, up {} (since {})\n",
        r.pid,
        r.version,
        human_duration(r.uptime_secs),
        r.started_at
    ));
    if let Some(control) = &r.control {
        out.push_str(&format!("  control   {control}\n"));
    }
    for s in &r.sockets {
        out.push_str(&format!(
            "  socket    fd {} {} {} {}\n",
            s.fd, s.name, s.kind, s.address
        ));
    }
    if r.state != "RUNNING" && !r.state_reason.is_empty() {
        out.push_str(&format!("  reason    {}\n", r.state_reason));
    }
    if let Some(b) = &r.backoff {
        out.push_str(&format!(
            "  backoff   generation {} starts in {:.1}s (restart attempt {}; failed starts in a row: {})\n",
            b.generation, b.restart_in_secs, b.attempt, b.start_failures
        ));
    }
    if r.workers > 1 {
        out.push_str(&format!(
            "  workers   {} of {} up\n",
            r.workers_up, r.workers
        ));
    }
    let c = &r.counters;
    out.push_str(&format!(
        "  counters  reloads {} ok, {} failed; restarts {}; spawn failures {}\n",
        c.reloads_ok, c.reloads_failed, c.restarts, c.spawn_failures
    ));
    if let Some(l) = &r.last_reload {
        let outcome = if l.ok() {
            "ok".to_owned()
        } else {
            format!(
                "failed: {}",
                l.reason.as_deref().unwrap_or("unknown reason")
            )
        };
        out.push_str(&format!(
            "  last reload  generation {} ({}) after {:.2}s: {outcome}\n",
            l.generation, l.trigger, l.duration_secs
        ));
        if !l.output_tail.is_empty() {
            out.push_str("  its last output:\n");
            out.push_str(&output_tail(&l.output_tail, "    "));
        }
    }
    if !r.generations.is_empty() {
        let rows: Vec<[String; 7]> = r
            .generations
            .iter()
            .map(|g| {
                [
                    match r.workers > 1 {
                        true => format!("{}/{}", g.generation, g.worker),
                        false => g.generation.to_string(),
                    },
                    g.pid.to_string(),
                    g.role.clone(),
                    g.state.clone(),
                    g.started_at.clone().unwrap_or_else(|| "-".into()),
                    g.ready_at.clone().unwrap_or_else(|| "-".into()),
                    g.status.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let first = if r.workers > 1 { "GEN/WORKER" } else { "GEN" };
        let header =
            [first, "PID", "ROLE", "STATE", "STARTED", "READY", "STATUS"].map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        out.push('\n');
        for row in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
        }
    }
    if !r.history.is_empty() {
        out.push_str("\n  recent events (oldest first)\n");
        for e in &r.history {
            let mut what = format!("{} generation {}", e.event, e.generation);
            if let Some(pid) = e.pid {
                what.push_str(&format!(" pid {pid}"));
            }
            if let Some(t) = &e.trigger {
                what.push_str(&format!(" by {t}"));
            }
            if let Some(result) = &e.result {
                what.push_str(&format!(" {result}"));
            }
            if let Some(d) = e.duration_secs {
                what.push_str(&format!(" in {d:.2}s"));
            }
            if let Some(code) = e.code {
                what.push_str(&format!(" exit code {code}"));
            }
            if let Some(sig) = e.signal {
                what.push_str(&format!(" killed by signal {sig}"));
            }
            if e.expected == Some(false) {
                what.push_str(" (unexpected)");
            }
            if let Some(reason) = &e.reason {
                what.push_str(&format!(": {reason}"));
            }
            out.push_str(&format!("  {}  {what}\n", e.at));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Counters, GenerationRecord, HistoryEntry, SocketRecord};

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(6.14), "6.1s");
        assert_eq!(human_duration(245.0), "4m 05s");
        assert_eq!(human_duration(3723.0), "1h 02m 03s");
    }

    #[test]
    fn table_shows_the_essentials() {
        let r = StatusRecord {
            name: "web".into(),
            pid: 10,
            version: "0.1.0".into(),
            state: "RUNNING".into(),
            sockets: vec![SocketRecord {
                fd: 3,
                name: "http".into(),
                kind: "tcp".into(),
                address: "127.0.0.1:8080".into(),
            }],
            generations: vec![GenerationRecord {
                generation: 2,
                pid: 12,
                worker: 0,
                role: "current".into(),
                state: "RUNNING".into(),
                started_at: Some("2026-01-01T00:00:00.000Z".into()),
                ready_at: None,
                status: Some("serving".into()),
            }],
            counters: Counters {
                reloads_ok: 1,
                ..Counters::default()
            },
            history: vec![HistoryEntry {
                at: "2026-01-01T00:00:01.000Z".into(),
                event: "exit".into(),
                generation: 1,
                pid: Some(11),
                code: Some(0),
                expected: Some(true),
                ..HistoryEntry::default()
            }],
            ..StatusRecord::default()
        };
        let t = table(&r);
        assert!(
            t.starts_with("web: RUNNING, generation 2 (pid 12)\n"),
            "{t}"
        );
        assert!(t.contains("socket    fd 3 http tcp 127.0.0.1:8080"), "{t}");
        assert!(t.contains("reloads 1 ok, 0 failed"), "{t}");
        assert!(t.contains("2    12   current  RUNNING"), "{t}");
        assert!(t.contains("exit generation 1 pid 11 exit code 0\n"), "{t}");
    }
}
