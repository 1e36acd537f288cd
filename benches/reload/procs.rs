//! Processes the benchmark starts (killed with all their descendants on drop, also on error
//! and panic) and what `/proc` says about them.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

/// Set by SIGINT/SIGTERM to the benchmark: every wait gives up, every guard cleans up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Fails if the benchmark was interrupted.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` in small steps, returning early (with an error) if interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    loop {
        check_interrupted()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Polls `f` every `every` until it returns Some, until `deadline`.
pub fn wait_for<T>(
    deadline: Instant,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    loop {
        check_interrupted()?;
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(every);
    }
}

/// Prepares the benchmark process: reap orphans of the processes it starts (so killed trees
/// leave no zombies behind), catch SIGINT/SIGTERM so guards run, and make inherited fds
/// close-on-exec so that what the measured processes hold is only their own.
pub fn init() -> Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The handler only wakes a thread, which sets the flag every wait checks.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .context("installing signal handlers")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                eprintln!("bench: interrupted; stopping everything it started");
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        })?;
    if let Ok(dir) = fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in fds {
            // SAFETY: setting FD_CLOEXEC on an fd number; harmless if it is not open any more.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in ns (the clock `hello --stamp-file` uses).
pub fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Sends `sig` to `pid`; false if it does not exist.
pub fn kill(pid: i32, sig: i32) -> bool {
    assert!(pid > 0, "refusing to signal pid {pid}");
    // SAFETY: kill(2) with a positive pid signals that one process.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// The moment a reload was asked for, on every clock the analysis uses.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub at: Instant,
    pub mono_ns: i128,
    pub wall: SystemTime,
}

impl Stamp {
    pub fn now() -> Stamp {
        let wall = SystemTime::now();
        let mono_ns = monotonic_ns();
        Stamp {
            at: Instant::now(),
            mono_ns,
            wall,
        }
    }
}

/// Takes a [`Stamp`] and sends `sig` to `pid` right after it.
pub fn signal_stamped(pid: i32, sig: i32) -> Result<Stamp> {
    let stamp = Stamp::now();
    if !kill(pid, sig) {
        bail!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(stamp)
}

/// One line of output, with the time the benchmark read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// A process the benchmark started, in its own process group, with stdout and stderr captured
/// line by line (and copied to a log file). Dropping it kills it and all its descendants.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: i32,
    output: Arc<Output>,
    exited: bool,
}

/// A process's output lines so far, and a condition variable notified when one is added (or
/// the output ends), so the benchmark can wait for a line without polling. (Polling every
/// millisecond, as it did, woke the benchmark ~1,000 times a second inside every reload window
/// and never outside one: load on the machine only during the windows it measures.)
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<Line>>,
    grew: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proc {
    /// Starts `cmd` (stdin null, stdout/stderr captured and appended to `log`).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        for var in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "LISTEN_FDS_FIRST_FD",
            "NOTIFY_SOCKET",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets this child's death signal, so a
        // benchmark killed with SIGKILL leaves no measured process behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id() as i32;
        let output = Arc::new(Output::default());
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let file = Arc::new(Mutex::new(file));
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        spawn_reader(out, Arc::clone(&output), Arc::clone(&file), name)?;
        spawn_reader(err, Arc::clone(&output), file, name)?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            pid,
            output,
            exited: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Number of lines read so far.
    pub fn line_count(&self) -> usize {
        lock(&self.output.lines).len()
    }

    /// The first line at index ≥ `from` satisfying `pred`, with its index.
    pub fn find_line(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<(usize, Line)> {
        find(&lock(&self.output.lines), from, &pred)
    }

    /// Waits until `until` for a line at index ≥ `from` satisfying `pred`; `None` if none came.
    pub fn wait_line_until(
        &self,
        from: usize,
        until: Instant,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, Line)> {
        let mut lines = lock(&self.output.lines);
        loop {
            if let Some(found) = find(&lines, from, &pred) {
                return Some(found);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            lines = match self.output.grew.wait_timeout(lines, left) {
                Ok((lines, _)) => lines,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Waits for a line at index ≥ `from` satisfying `pred`; fails if the process exits first.
    pub fn wait_line(
        &mut self,
        from: usize,
        deadline: Instant,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, Line)> {
        let name = self.name.clone();
        loop {
            check_interrupted()?;
            // Wake at least every 100 ms to notice an exit or an interruption.
            let until = (Instant::now() + Duration::from_millis(100)).min(deadline);
            if let Some(found) = self.wait_line_until(from, until, &pred) {
                return Ok(found);
            }
            if let Some(status) = self.try_wait()? {
                if let Some(found) = self.find_line(from, &pred) {
                    return Ok(found);
                }
                bail!(
                    "{name} exited ({status}) before {what}; last output:\n{}",
                    self.tail(15)
                );
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for {name}: {what}");
            }
        }
    }

    /// The last `n` lines of output.
    pub fn tail(&self, n: usize) -> String {
        let lines = lock(&self.output.lines);
        let from = lines.len().saturating_sub(n);
        lines[from..]
            .iter()
            .map(|l| format!("  {}\n", l.text))
            .collect()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.exited || !kill(self.pid, sig) {
            bail!("{} (pid {}) is not running", self.name, self.pid);
        }
        Ok(())
    }

    /// Its exit status if it exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.exited = true;
        }
        Ok(status)
    }

    /// Asks it to stop with `sig` and waits up to `grace`; then kills everything left.
    pub fn stop(mut self, sig: i32, grace: Duration) -> Result<()> {
        if !self.exited {
            kill(self.pid, sig);
            let deadline = Instant::now() + grace;
            while self.try_wait()?.is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(()) // Drop kills whatever is left.
    }

    /// Stops the process and every descendant: SIGSTOP the tree top-down until no new
    /// process appears (a stopped process cannot fork), SIGKILL them all, reap.
    fn kill_tree(&mut self) {
        let root_alive = !self.exited && self.try_wait().ok().flatten().is_none();
        let mut victims = BTreeSet::new();
        if root_alive {
            kill(self.pid, libc::SIGSTOP);
        }
        for _ in 0..100 {
            let new: Vec<i32> = descendants(self.pid)
                .into_iter()
                .filter(|p| !victims.contains(p))
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
        if root_alive {
            kill(self.pid, libc::SIGKILL);
            let _ = self.child.wait();
            self.exited = true;
        }
        for pid in victims {
            reap_orphan(pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

/// Reaps `pid` once it is a dead child of this process (orphans are re-parented here because
/// the benchmark is a subreaper); gives up when it is gone or after 5 s.
pub fn reap_orphan(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one specific pid with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid || !Path::new(&format!("/proc/{pid}")).exists() || Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The first of `lines` at index ≥ `from` satisfying `pred`, with its index.
fn find(lines: &[Line], from: usize, pred: &impl Fn(&str) -> bool) -> Option<(usize, Line)> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| pred(&l.text))
        .map(|(i, l)| (i, l.clone()))
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    output: Arc<Output>,
    log: Arc<Mutex<fs::File>>,
    name: &str,
) -> Result<()> {
    let name = name.to_owned();
    thread::Builder::new()
        .name(format!("{name}-output"))
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut bytes = Vec::new();
            loop {
                bytes.clear();
                match reader.read_until(b'\n', &mut bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let at = Instant::now();
                let text = String::from_utf8_lossy(&bytes).trim_end().to_owned();
                let _ = writeln!(lock(&log), "[{name}] {text}");
                lock(&output.lines).push(Line { at, text });
                output.grew.notify_all();
            }
            // The end of the output: a waiter may want to look at the process's exit.
            output.grew.notify_all();
        })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// /proc

/// The fields of `/proc/<pid>/stat` the benchmark uses.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    Some(Stat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        cpu_ticks: rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
    })
}

/// Every process in /proc.
pub fn table() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| stat(e.ok()?.file_name().to_str()?.parse().ok()?))
        .collect()
}

/// All descendants of `root`, from one scan.
pub fn descendants(root: i32) -> Vec<i32> {
    let table = table();
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

/// Direct children of `pid` as (pid, state).
pub fn children(pid: i32) -> Vec<(i32, char)> {
    table()
        .into_iter()
        .filter(|s| s.ppid == pid)
        .map(|s| (s.pid, s.state))
        .collect()
}

/// Direct children of `pid` that are not zombies.
pub fn live_children(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|&(_, st)| st != 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// The process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

/// A snapshot of one process's resource use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
    /// RssAnon, KiB.
    pub anon_kib: u64,
    /// RssFile, KiB.
    pub file_kib: u64,
    /// Open fds.
    pub fds: usize,
    /// Children in state Z.
    pub zombies: usize,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

impl Usage {
    pub fn of(pid: i32) -> Option<Usage> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Some(Usage {
            rss_kib: field("VmRSS"),
            hwm_kib: field("VmHWM"),
            anon_kib: field("RssAnon"),
            file_kib: field("RssFile"),
            fds: fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count(),
            zombies: children(pid).iter().filter(|c| c.1 == 'Z').count(),
            cpu_ticks: stat(pid)?.cpu_ticks,
            voluntary_switches: field("voluntary_ctxt_switches"),
            involuntary_switches: field("nonvoluntary_ctxt_switches"),
        })
    }
}

/// What the threads of `pid` are doing, grouped: `N× STATE where`, where `where` is the top of
/// the kernel stack (`/proc/PID/task/TID/stack`, readable as root) or the wait channel. For a
/// process that does not stop when asked, this tells whether it is blocked in the kernel.
pub fn diagnose(pid: i32) -> String {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("pid {pid} is gone");
    };
    let mut groups: Vec<(String, usize)> = Vec::new();
    for entry in dir.flatten() {
        let task = entry.path();
        let state = fs::read_to_string(task.join("stat"))
            .ok()
            .and_then(|t| {
                let close = t.rfind(')')?;
                t.get(close + 2..close + 3).map(str::to_owned)
            })
            .unwrap_or_else(|| "?".into());
        let stack: Vec<String> = fs::read_to_string(task.join("stack"))
            .unwrap_or_default()
            .lines()
            .take(3)
            .filter_map(|l| {
                let f = l.split_whitespace().nth(1)?;
                Some(f.split('+').next().unwrap_or(f).to_owned())
            })
            .collect();
        let place = if stack.is_empty() {
            fs::read_to_string(task.join("wchan")).unwrap_or_default()
        } else {
            stack.join("<")
        };
        let key = format!("{state} {}", if place.is_empty() { "-" } else { &place });
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some(g) => g.1 += 1,
            None => groups.push((key, 1)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    let parts: Vec<String> = groups.iter().map(|(k, n)| format!("{n}× {k}")).collect();
    format!("pid {pid} threads: {}", parts.join("; "))
}

/// Restricts thread `tid` (0: the calling thread) to `cpus`. Threads it starts afterwards
/// inherit the mask; threads that already exist keep theirs.
pub fn pin(tid: i32, cpus: &[usize]) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET writes one bit of the set we own; cpu is below CPU_SETSIZE here.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: we pass the set's real size and a pointer to it.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        bail!(
            "sched_setaffinity({tid}, {cpus:?}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Clock ticks per second (for utime/stime).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// RSS of `pid` by mapping, from `/proc/<pid>/smaps`: (what, KiB), largest first. File
/// mappings are named by file; anonymous ones are grouped as heap, stack or anonymous.
pub fn rss_breakdown(pid: i32) -> Vec<(String, u64)> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut totals: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = match fields.get(5) {
                Some(path) if path.starts_with('/') => Path::new(path)
                    .file_name()
                    .map_or_else(|| path.to_string(), |f| f.to_string_lossy().into_owned()),
                Some(&"[heap]") => "heap".into(),
                Some(&"[stack]") => "stack".into(),
                Some(other) => other.trim_matches(['[', ']']).to_string(),
                None => "anonymous".into(),
            };
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kib: u64 = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            match totals.iter_mut().find(|(n, _)| *n == current) {
                Some(entry) => entry.1 += kib,
                None => totals.push((current.clone(), kib)),
            }
        }
    }
    totals.retain(|(_, k)| *k > 0);
    totals.sort_by_key(|t| std::cmp::Reverse(t.1));
    totals
}

/// A free TCP port on 127.0.0.1 (for peers that need a number up front). The port is free
/// when this returns; another process could take it before the peer binds it, which is
/// unlikely on a test machine and reported as a bind error if it happens.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `name` found in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
