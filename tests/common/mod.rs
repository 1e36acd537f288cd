//! Shared helpers for relaunch's integration tests: start the real binary, wait on conditions
//! with deadlines, talk HTTP to the example server, read the probe's reports, and tear every
//! process down in `Drop`.
//!
//! Rules these helpers follow (and tests built on them should too):
//! * never sleep to synchronise: poll a condition every 10 ms up to a deadline, and on timeout
//!   panic with what was awaited and relaunch's stderr;
//! * every blocking socket operation has a timeout;
//! * every process a test starts is killed in `Drop`, including relaunch's descendants (they
//!   live in their own process groups), and relaunch itself is reaped.
#![allow(dead_code)]

mod load;
pub mod net;

#[allow(unused_imports)] // not every test file runs load
pub use load::{Load, LoadStats};

use std::collections::BTreeSet;
use std::env;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous deadline for anything that should happen "soon" on a loaded, shared machine.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Binaries

/// The relaunch binary built by cargo for this test run.
pub fn relaunch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_relaunch"))
}

/// An example binary (`target/<profile>/examples/<name>`); `cargo test` builds them.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = env::current_exe().expect("cannot locate the test binary (current_exe)");
    // target/<profile>/deps/<test binary> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let path = profile_dir.join("examples").join(name);
    if !path.is_file() {
        panic!(
            "example binary {} not found: run `cargo build --examples` (or `cargo test`, which \
             builds the examples)",
            path.display()
        );
    }
    // `cargo test --test <file>` builds the binaries but not the examples: refuse to test an
    // old build of an example that was edited since.
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(bin)) = (modified(&source), modified(&path)) {
        if src > bin {
            panic!(
                "example binary {} is older than {}: run `cargo build --examples` (`cargo test \
                 --test <file>` does not rebuild examples; a plain `cargo test` does)",
                path.display(),
                source.display()
            );
        }
    }
    path
}

pub fn hello_bin() -> PathBuf {
    example_bin("hello")
}

pub fn probe_bin() -> PathBuf {
    example_bin("probe")
}

/// A path as `&str`, for argument lists. Test paths are always UTF-8.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `f` every 10 ms until it returns true; false if `timeout` passed first.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `f` until it returns true; panics naming `what` after `timeout`.
/// Prefer [`Relaunch::wait_until`], which also prints relaunch's stderr.
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Time left until `deadline` (zero if it passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

// ---------------------------------------------------------------------------------------------
// Log lines

/// The value of `key=value` in a log line (up to the next whitespace).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
}

/// The value of `key=` to the end of the line, for fields that may contain spaces and always
/// come last (`reason=`, `status=`).
pub fn field_rest<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    let mut from = 0;
    while let Some(pos) = line[from..].find(&needle) {
        let start = from + pos;
        let at_token_start = start == 0 || line[..start].ends_with(char::is_whitespace);
        if at_token_start {
            return Some(line[start + needle.len()..].trim_end());
        }
        from = start + needle.len();
    }
    None
}

/// `field` parsed as a pid (or any integer).
pub fn field_i32(line: &str, key: &str) -> Option<i32> {
    field(line, key)?.parse().ok()
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// The message part of one of relaunch's own log lines (`<timestamp>  INFO message k=v`): the
/// words after the level. None for the output of its children, which shares the same stderr.
/// The level is looked for anywhere in the line, in case a child's partial write precedes it.
pub fn log_message(line: &str) -> Option<Vec<&str>> {
    let mut tokens = line.split_whitespace();
    tokens.by_ref().find(|t| LEVELS.contains(t))?;
    Some(tokens.collect())
}

/// True for relaunch's own log lines, as opposed to its children's output.
pub fn is_log_line(line: &str) -> bool {
    log_message(line).is_some()
}

/// True if `line` is a relaunch log line whose message contains the words of `msg` in order
/// (e.g. `is_event(line, "reload complete")`); punctuation at the end of a word is ignored, so
/// `"stop timeout"` matches `stop timeout, sending SIGKILL`.
pub fn is_event(line: &str, msg: &str) -> bool {
    let Some(message) = log_message(line) else {
        return false;
    };
    let word = |w: &str| w.trim_end_matches([',', ':', ';', '.']).to_owned();
    let wanted: Vec<String> = msg.split_whitespace().map(word).collect();
    let tokens: Vec<String> = message.into_iter().map(word).collect();
    !wanted.is_empty() && tokens.windows(wanted.len()).any(|w| w == wanted.as_slice())
}

/// `is_event` plus `key=value` for every pair of `fields`.
pub fn event_matches(line: &str, msg: &str, fields: &[(&str, &str)]) -> bool {
    is_event(line, msg) && fields.iter().all(|(k, v)| field(line, k) == Some(*v))
}

// ---------------------------------------------------------------------------------------------
// /proc

/// One line of `/proc/<pid>/stat`, the fields the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    /// Start time in clock ticks since boot: tells a process from a later one with a reused pid.
    pub start_time: u64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) state ppid ..." where comm may contain spaces and parentheses.
    let open = text.find(" (")?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        // Field 22 of stat; `rest` starts at field 3.
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat`, or None if there is no such process (any more).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process currently visible in /proc.
pub fn proc_table() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        proc_stat(pid)
    })
    .collect()
}

/// The process exists in /proc (possibly as a zombie).
pub fn proc_exists(pid: i32) -> bool {
    proc_stat(pid).is_some()
}

/// The process exists and is not a zombie.
pub fn proc_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|st| st.state != 'Z')
}

/// All descendants of `root` (children, grandchildren, ...), from one scan of /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let table = proc_table();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for st in table.iter().filter(|st| st.ppid == parent) {
            if !found.contains(&st.pid) {
                found.push(st.pid);
                frontier.push(st.pid);
            }
        }
    }
    found
}

/// Sends `sig` to `pid`; false if the process does not exist.
pub fn kill(pid: i32, sig: i32) -> bool {
    assert!(pid > 0, "refusing to signal pid {pid}");
    // SAFETY: kill(2) with a positive pid only signals that one process.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// The local (address family is IPv6, port) of the TCP socket at `/proc/<pid>/fd/<fd>`,
/// looked up by inode in /proc/net/tcp and /proc/net/tcp6.
pub fn tcp_socket_of_fd(pid: i32, fd: i32) -> Option<(bool, u16)> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .to_owned();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(table) = fs::read_to_string(file) else {
            continue;
        };
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.get(9) == Some(&inode.as_str()) {
                let port = cols.get(1)?.rsplit(':').next()?;
                return Some((v6, u16::from_str_radix(port, 16).ok()?));
            }
        }
    }
    None
}

/// Whether the host can bind `[::1]`; the reason if not.
pub fn ipv6_loopback() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0")
        .map(drop)
        .map_err(|err| format!("cannot bind [::1]:0 on this host: {err}"))
}

// ---------------------------------------------------------------------------------------------
// relaunch under test

/// A running relaunch, with its stderr captured. Dropping it kills relaunch and every
/// descendant and reaps relaunch.
pub struct Relaunch {
    child: Child,
    pid: i32,
    start_time: Option<u64>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    stderr_eof: Arc<AtomicBool>,
    status: Option<ExitStatus>,
    /// The private `XDG_RUNTIME_DIR` given to this relaunch (removed after it is gone).
    _runtime_dir: Option<TempDir>,
}

fn lock(m: &Mutex<String>) -> MutexGuard<'_, String> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies a pipe into `buf` line by line (and echoes it to the test's output, which the test
/// harness shows when the test fails).
fn spawn_reader(
    pipe: impl Read + Send + 'static,
    buf: Arc<Mutex<String>>,
    eof: Option<Arc<AtomicBool>>,
    prefix: String,
) {
    thread::Builder::new()
        .name(prefix.clone())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut bytes = Vec::new();
            loop {
                bytes.clear();
                match reader.read_until(b'\n', &mut bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let mut line = String::from_utf8_lossy(&bytes).into_owned();
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                eprint!("{prefix}{line}");
                lock(&buf).push_str(&line);
            }
            if let Some(eof) = eof {
                eof.store(true, Ordering::SeqCst);
            }
        })
        .expect("cannot start a pipe reader thread");
}

impl Relaunch {
    /// A `Command` for relaunch with `args`: stdin null, stdout and stderr piped, and none of
    /// the test environment's socket-activation variables. Customise it, then [`Self::spawn`].
    pub fn command(args: &[&str]) -> Command {
        Self::command_for(&relaunch_bin(), args)
    }

    /// Like [`Self::command`] for a relaunch binary at another path.
    pub fn command_for(bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "LISTEN_FDS_FIRST_FD",
            "NOTIFY_SOCKET",
        ] {
            cmd.env_remove(var);
        }
        // relaunch reads its options from RELAUNCH_* too: none of the test's own may leak in.
        for (var, _) in env::vars_os() {
            if var.to_string_lossy().starts_with("RELAUNCH_") {
                cmd.env_remove(var);
            }
        }
        cmd
    }

    /// Starts relaunch with `args`.
    pub fn start(args: &[&str]) -> Relaunch {
        Self::spawn(Self::command(args))
    }

    /// Starts relaunch with `args` and extra environment variables.
    pub fn start_with_env(args: &[&str], vars: &[(&str, &str)]) -> Relaunch {
        let mut cmd = Self::command(args);
        cmd.envs(vars.iter().copied());
        Self::spawn(cmd)
    }

    /// Starts a prepared command (see [`Self::command`]); stderr must be piped.
    ///
    /// Unless the command sets `XDG_RUNTIME_DIR` itself, relaunch gets a fresh one of its own,
    /// so the default control sockets (`$XDG_RUNTIME_DIR/relaunch/<name>.sock`) of tests running
    /// in parallel never collide. It is world-writable with the sticky bit, like /tmp, for the
    /// tests that run relaunch under another uid.
    pub fn spawn(mut cmd: Command) -> Relaunch {
        become_subreaper();
        let runtime_dir = if cmd.get_envs().any(|(k, _)| k == "XDG_RUNTIME_DIR") {
            None
        } else {
            let dir = TempDir::new("runtime");
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777))
                .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", dir.path().display()));
            cmd.env("XDG_RUNTIME_DIR", dir.path());
            Some(dir)
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
        let pid = child.id() as i32;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr_eof = Arc::new(AtomicBool::new(false));
        let err_pipe = child
            .stderr
            .take()
            .expect("relaunch's stderr must be piped");
        spawn_reader(
            err_pipe,
            Arc::clone(&stderr),
            Some(Arc::clone(&stderr_eof)),
            format!("[relaunch {pid}] "),
        );
        if let Some(out_pipe) = child.stdout.take() {
            spawn_reader(
                out_pipe,
                Arc::clone(&stdout),
                None,
                format!("[relaunch {pid} stdout] "),
            );
        }
        Relaunch {
            start_time: proc_stat(pid).map(|st| st.start_time),
            child,
            pid,
            stderr,
            stdout,
            stderr_eof,
            status: None,
            _runtime_dir: runtime_dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Everything relaunch (and its children) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    pub fn stdout(&self) -> String {
        lock(&self.stdout).clone()
    }

    pub fn lines(&self) -> Vec<String> {
        lock(&self.stderr).lines().map(str::to_owned).collect()
    }

    /// Panics with `msg` and relaunch's stderr.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n----- relaunch (pid {}) stderr -----\n{}-----",
            self.pid,
            self.stderr()
        )
    }

    /// Polls `f` until true; on timeout panics naming `what`, with relaunch's stderr.
    #[track_caller]
    pub fn wait_until(&self, timeout: Duration, what: &str, f: impl FnMut() -> bool) {
        if !poll_until(timeout, f) {
            self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
        }
    }

    /// The first stderr line satisfying `pred`, waiting up to `timeout`.
    #[track_caller]
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let mut found = None;
        let ok = poll_until(timeout, || {
            found = lock(&self.stderr)
                .lines()
                .find(|l| pred(l))
                .map(str::to_owned);
            found.is_some()
        });
        if !ok {
            self.fail(&format!(
                "timed out after {timeout:?} waiting for a log line: {what}"
            ));
        }
        found.expect("found")
    }

    /// The first stderr line containing `substring`.
    #[track_caller]
    pub fn wait_for_log(&self, substring: &str, timeout: Duration) -> String {
        self.wait_for_line(&format!("{substring:?}"), timeout, |l| {
            l.contains(substring)
        })
    }

    /// The first log event `msg` with all `fields` (e.g. `("generation", "2")`).
    #[track_caller]
    pub fn wait_for_event(&self, msg: &str, fields: &[(&str, &str)], timeout: Duration) -> String {
        self.wait_for_line(&describe(msg, fields), timeout, |l| {
            event_matches(l, msg, fields)
        })
    }

    /// The `n`-th (1-based) log event `msg`.
    #[track_caller]
    pub fn wait_for_nth_event(&self, msg: &str, n: usize, timeout: Duration) -> String {
        let mut found = None;
        let ok = poll_until(timeout, || {
            found = self.events(msg).into_iter().nth(n - 1);
            found.is_some()
        });
        if !ok {
            self.fail(&format!(
                "timed out after {timeout:?} waiting for event #{n} {msg:?}"
            ));
        }
        found.expect("found")
    }

    /// All log events `msg` so far.
    pub fn events(&self, msg: &str) -> Vec<String> {
        lock(&self.stderr)
            .lines()
            .filter(|l| is_event(l, msg))
            .map(str::to_owned)
            .collect()
    }

    /// Index (in [`Self::lines`]) of the first event `msg` with `fields`.
    pub fn event_index(&self, msg: &str, fields: &[(&str, &str)]) -> Option<usize> {
        lock(&self.stderr)
            .lines()
            .position(|l| event_matches(l, msg, fields))
    }

    /// The address of the socket named `name`, from its `listening` line.
    #[track_caller]
    pub fn addr(&self, name: &str) -> SocketAddr {
        let line = self.wait_for_event("listening", &[("name", name)], TIMEOUT);
        let addr =
            field(&line, "addr").unwrap_or_else(|| self.fail(&format!("no addr= in {line:?}")));
        addr.parse()
            .unwrap_or_else(|err| self.fail(&format!("bad addr= in {line:?}: {err}")))
    }

    /// Pid of the child started as generation `generation` (from its `spawned` line).
    #[track_caller]
    pub fn generation_pid(&self, generation: u32) -> i32 {
        let line = self.wait_for_event(
            "spawned",
            &[("generation", &generation.to_string())],
            TIMEOUT,
        );
        field_i32(&line, "pid").unwrap_or_else(|| self.fail(&format!("no pid= in {line:?}")))
    }

    /// Pids of every child relaunch said it spawned.
    pub fn spawned_pids(&self) -> Vec<i32> {
        self.events("spawned")
            .iter()
            .filter_map(|l| field_i32(l, "pid"))
            .collect()
    }

    /// Sends `sig` to relaunch.
    #[track_caller]
    pub fn signal(&self, sig: i32) {
        if self.status.is_some() || !kill(self.pid, sig) {
            self.fail(&format!("cannot send signal {sig} to relaunch: it is gone"));
        }
    }

    /// The exit status, if relaunch has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for relaunch to exit; None if it is still running.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.try_status().is_some());
        let status = self.status?;
        // Let the reader catch up with the last lines (bounded: a leaked child could keep the
        // pipe open forever).
        poll_until(Duration::from_secs(3), || {
            self.stderr_eof.load(Ordering::SeqCst)
        });
        Some(status)
    }

    /// Waits for relaunch to exit; panics with its stderr after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit_within(timeout) {
            Some(status) => status,
            None => self.fail(&format!("relaunch did not exit within {timeout:?}")),
        }
    }

    /// Direct children of relaunch: (pid, state char from /proc/<pid>/stat).
    pub fn children(&self) -> Vec<(i32, char)> {
        proc_table()
            .into_iter()
            .filter(|st| st.ppid == self.pid)
            .map(|st| (st.pid, st.state))
            .collect()
    }

    /// Direct children of relaunch that are not zombies.
    pub fn live_children(&self) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|&(_, state)| state != 'Z')
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Stops relaunch and everything below it, then kills them all and reaps relaunch.
    fn kill_all(&mut self) {
        // SIGSTOP first so relaunch cannot restart what we kill. Then stop descendants until a
        // scan finds no new one (a stopped process cannot fork), and kill them all.
        kill(self.pid, libc::SIGSTOP);
        let mut victims = BTreeSet::new();
        for _ in 0..100 {
            let new: Vec<i32> = descendants(self.pid)
                .into_iter()
                .filter(|pid| !victims.contains(pid))
                .collect();
            if new.is_empty() {
                break;
            }
            for pid in new {
                kill(pid, libc::SIGSTOP);
                victims.insert(pid);
            }
        }
        for &pid in &victims {
            kill(pid, libc::SIGKILL);
        }
        kill(self.pid, libc::SIGKILL);
        self.status = self.child.wait().ok();
        // The killed descendants are now orphans re-parented to this process (a subreaper, see
        // `become_subreaper`): reap them so no zombie is left behind.
        for &pid in &victims {
            reap_orphan(pid);
        }
    }

    /// After relaunch exited: kill and reap children it spawned that are still around (a bug in
    /// relaunch would leave them behind). The start time guards against reused pids.
    fn kill_leftovers(&self) {
        let Some(started) = self.start_time else {
            return;
        };
        for pid in self.spawned_pids() {
            let Some(st) = proc_stat(pid) else { continue };
            if st.start_time < started {
                continue;
            }
            if st.state != 'Z' {
                eprintln!("[relaunch {}] killing leftover child {pid}", self.pid);
                kill(pid, libc::SIGKILL);
            }
            reap_orphan(pid);
        }
    }
}

/// Makes this test process the reaper of orphans in its subtree (PR_SET_CHILD_SUBREAPER), so
/// processes killed below relaunch are re-parented here and reaped by `reap_orphan` instead of
/// depending on the PID 1 of a container, which may never reap them.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag on this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc == 0 {
            SUBREAPER.store(true, Ordering::SeqCst);
        } else {
            eprintln!(
                "NOTE: cannot become a child subreaper: {}",
                io::Error::last_os_error()
            );
        }
    });
}

/// Reaps `pid` once it is a (dead) child of this process; gives up when it is gone, or after
/// a few seconds.
fn reap_orphan(pid: i32) {
    if !SUBREAPER.load(Ordering::SeqCst) {
        return; // orphans go to init, nothing to reap here
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one specific pid, with a valid status out-pointer. It can only
        // reap a child of this process, and only that one.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return;
        }
        if !proc_exists(pid) || Instant::now() >= deadline {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

impl Drop for Relaunch {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill_all();
        } else {
            self.kill_leftovers();
        }
    }
}

fn describe(msg: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!("{msg:?}");
    for (k, v) in fields {
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// Connection refused: nothing was listening.
    Refused,
    /// Reset, aborted or broken pipe.
    Reset,
    /// No complete answer within the timeout.
    Timeout,
    /// Connected, but the answer was not a complete HTTP response.
    BadResponse(String),
    Other(io::Error),
}

impl Failure {
    /// A short name for counting failures by kind.
    pub fn kind(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Reset => "reset".into(),
            Failure::Timeout => "timeout".into(),
            Failure::BadResponse(_) => "bad response".into(),
            Failure::Other(err) => format!("other ({:?})", err.kind()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadResponse(what) => write!(f, "bad response: {what}"),
            Failure::Other(err) => write!(f, "error: {err}"),
            other => f.write_str(&other.kind()),
        }
    }
}

fn classify(err: io::Error) -> Failure {
    match err.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Failure::Reset
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Timeout,
        _ => Failure::Other(err),
    }
}

/// One `GET /` on a new connection with `Connection: close`, read to EOF, all within `timeout`.
/// Returns the status code and the body.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> Result<(u16, String), Failure> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(classify)?;
    http_get_on(&mut stream, remaining(deadline))
}

/// Like [`http_get`], on a connection the caller opened.
pub fn http_get_on(stream: &mut TcpStream, timeout: Duration) -> Result<(u16, String), Failure> {
    let deadline = Instant::now() + timeout;
    let _ = stream.set_nodelay(true);
    let left = remaining(deadline).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left)).map_err(classify)?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(classify)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(classify)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(classify(err)),
        }
    }
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<(u16, String), Failure> {
    if response.is_empty() {
        return Err(Failure::BadResponse(
            "connection closed without a response".into(),
        ));
    }
    let text = String::from_utf8_lossy(response);
    let bad = |why: &str| Failure::BadResponse(format!("{why}: {:?}", truncate(&text, 200)));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                let len: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("bad Content-Length"))?;
                if body.len() != len {
                    return Err(bad(&format!(
                        "body has {} bytes, Content-Length says {len}",
                        body.len()
                    )));
                }
            }
        }
    }
    Ok((status, body.to_owned()))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

/// The `pid=N` of a hello response body.
pub fn body_pid(body: &str) -> Option<i32> {
    field(body, "pid")?.parse().ok()
}

/// GETs until a 200 answer arrives (the server may still be starting); returns the serving pid.
#[track_caller]
pub fn wait_for_http(relaunch: &Relaunch, addr: SocketAddr, timeout: Duration) -> i32 {
    let mut last = String::new();
    let mut pid = None;
    let ok = poll_until(timeout, || match http_get(addr, Duration::from_secs(5)) {
        Ok((200, body)) => {
            pid = body_pid(&body);
            last = format!("200 with body {body:?}");
            pid.is_some()
        }
        Ok((status, body)) => {
            last = format!("status {status}, body {body:?}");
            false
        }
        Err(failure) => {
            last = failure.to_string();
            false
        }
    });
    if !ok {
        relaunch.fail(&format!(
            "no HTTP 200 from {addr} within {timeout:?}; last attempt: {last}"
        ));
    }
    pid.expect("pid")
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = env::temp_dir().join(format!(
            "relaunch-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        // Readable by other users too: some tests run relaunch under another uid.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Probe reports

/// One start-up line of `probe --report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub pid: i32,
    pub ppid: i32,
    /// None when the variable was unset (`-` in the report).
    pub listen_pid: Option<String>,
    pub listen_fds: Option<String>,
    pub listen_fdnames: Option<String>,
    pub notify_socket: Option<String>,
    /// Open fds, sorted.
    pub fds: Vec<i32>,
    /// Open fds with FD_CLOEXEC set.
    pub cloexec: Vec<i32>,
    /// Real uid and gid, supplementary groups (sorted), umask (`0022`), niceness, working
    /// directory and RLIMIT_NOFILE (`soft:hard`). None if the report lacks them.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Option<Vec<u32>>,
    pub umask: Option<String>,
    pub nice: Option<i32>,
    pub cwd: Option<String>,
    pub nofile: Option<String>,
    pub line: String,
}

impl ProbeReport {
    pub fn parse(line: &str) -> Option<ProbeReport> {
        let var = |key: &str| field(line, key).filter(|v| *v != "-").map(str::to_owned);
        let list = |key: &str| -> Option<Vec<i32>> {
            match field(line, key)? {
                "-" => Some(Vec::new()),
                v => v.split(',').map(|fd| fd.parse().ok()).collect(),
            }
        };
        Some(ProbeReport {
            pid: field_i32(line, "pid")?,
            ppid: field_i32(line, "ppid")?,
            listen_pid: var("LISTEN_PID"),
            listen_fds: var("LISTEN_FDS"),
            listen_fdnames: var("LISTEN_FDNAMES"),
            notify_socket: var("NOTIFY_SOCKET"),
            fds: list("fds")?,
            cloexec: list("cloexec")?,
            uid: field(line, "uid").and_then(|v| v.parse().ok()),
            gid: field(line, "gid").and_then(|v| v.parse().ok()),
            groups: list("groups").map(|g| g.into_iter().map(|g| g as u32).collect()),
            umask: var("umask"),
            nice: field_i32(line, "nice"),
            cwd: var("cwd"),
            nofile: var("nofile"),
            line: line.to_owned(),
        })
    }
}

impl ProbeReport {
    /// The probe's `sockN=DOMAIN:TYPE:ACCEPTCONN` description of fd `fd` (e.g.
    /// `inet:stream:listening`; `-` for an fd that is not a socket), if it reported one.
    pub fn sock(&self, fd: i32) -> Option<&str> {
        field(&self.line, &format!("sock{fd}"))
    }
}

/// The start-up reports in a `probe --report` file (empty if it does not exist yet).
pub fn read_reports(path: &Path) -> Vec<ProbeReport> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("pid="))
        .filter_map(ProbeReport::parse)
        .collect()
}

/// The `signal=NAME pid=N` lines in a `probe --report` file, as (NAME, pid).
pub fn read_signal_reports(path: &Path) -> Vec<(String, i32)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Some((field(l, "signal")?.to_owned(), field_i32(l, "pid")?)))
        .collect()
}

/// Waits for the report of the probe with pid `pid`. A probe writes it after setting up its
/// signal handling, so once it exists the probe reacts to signals as asked.
#[track_caller]
pub fn wait_for_report(relaunch: &Relaunch, path: &Path, pid: i32) -> ProbeReport {
    let mut found = None;
    relaunch.wait_until(TIMEOUT, &format!("the report of probe pid {pid}"), || {
        found = read_reports(path).into_iter().find(|r| r.pid == pid);
        found.is_some()
    });
    found.expect("found")
}
