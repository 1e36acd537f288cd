//! relaunch under test: start it, read its log, wait for events, tear it down.

use super::*;

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
    /// The control socket given on the command line (`--control PATH`) or in
    /// `RELAUNCH_CONTROL`, if any (see [`Relaunch::control_path`]).
    control: Option<PathBuf>,
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
        let control = explicit_control(&cmd);
        // A binary a test just copied (the self-hosted examples) can be busy for an instant:
        // a child that another test thread forked meanwhile holds the copy's write fd until it
        // execs (ETXTBSY). That clears by itself; retry until a deadline.
        let mut spawned = cmd.spawn();
        poll_until(TIMEOUT, || match &spawned {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) => {
                spawned = cmd.spawn();
                false
            }
            _ => true,
        });
        let mut child = spawned.unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
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
            control,
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

    /// The last `n` lines relaunch (and its children) wrote to stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let all = lock(&self.stderr);
        let lines: Vec<&str> = all.lines().collect();
        let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
        tail.push('\n');
        tail
    }

    /// True once relaunch's stderr reached its end (relaunch and every child that shared it
    /// are gone).
    pub fn stderr_closed(&self) -> bool {
        self.stderr_eof.load(Ordering::SeqCst)
    }

    /// The path of relaunch's control socket: the one given with `--control` (or
    /// `RELAUNCH_CONTROL`), else the one relaunch announced in its `control socket` line
    /// (waiting for it), which is where the default path, suffixed if taken, ended up.
    #[track_caller]
    pub fn control_path(&self) -> PathBuf {
        if let Some(path) = &self.control {
            return path.clone();
        }
        let line = self.wait_for_line("the `control socket path=...` line", TIMEOUT, |l| {
            is_event(l, "control socket") && field(l, "path").is_some()
        });
        PathBuf::from(field(&line, "path").expect("path="))
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
    /// The write end of relaunch's stdin, when the command was given `Stdio::piped()` for it
    /// (once: it is taken).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

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
        let victims = kill_tree(self.pid);
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

/// `--control PATH`, `--control=PATH` or `RELAUNCH_CONTROL` in a relaunch command line.
fn explicit_control(cmd: &Command) -> Option<PathBuf> {
    let mut args = cmd.get_args().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--control" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--control=") {
            return Some(PathBuf::from(path));
        }
    }
    cmd.get_envs()
        .find(|(k, _)| *k == "RELAUNCH_CONTROL")
        .and_then(|(_, v)| v.map(PathBuf::from))
}

fn describe(msg: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!("{msg:?}");
    for (k, v) in fields {
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

/// Fails the test (with relaunch's log) unless relaunch ended with exit code `expected`.
#[track_caller]
pub fn assert_exit_code(r: &Relaunch, status: ExitStatus, expected: i32) {
    if status.code() != Some(expected) {
        r.fail(&format!(
            "relaunch ended with {}, expected exit code {expected}",
            exit_description(status)
        ));
    }
}
