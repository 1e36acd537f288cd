//! `probe`: a child process for relaunch's integration tests.
//!
//! It reports what it inherited (file descriptors, close-on-exec flags, socket-activation
//! environment) and then behaves on signals the way a test asks it to.
//!
//! ```text
//! probe [--report PATH] [--on-term exit:N|raise|ignore] [--exit-after-ms N [--exit-code C]]
//!       [--notify-status TEXT] [--ready-after-ms N | --ready-on-usr2] [--ready-fd N]
//! ```
//!
//! * `--report PATH`: at start, append ONE line to PATH (single `write()`, `O_APPEND`, so lines of
//!   concurrent probes never interleave):
//!   `pid=P ppid=Q LISTEN_PID=v LISTEN_FDS=v LISTEN_FDNAMES=v NOTIFY_SOCKET=v fds=0,1,2,3 cloexec=-
//!   start_ns=T uid=U gid=G groups=G1,G2 umask=0022 nice=N cwd=DIR nofile=SOFT:HARD`
//!   (`start_ns`: CLOCK_MONOTONIC when `main` began; `groups`: the supplementary groups,
//!   sorted; `nofile`: RLIMIT_NOFILE, `unlimited` for RLIM_INFINITY)
//!   (`-` for an unset variable or an empty list). When it receives SIGUSR1, SIGUSR2 or SIGWINCH
//!   it appends `signal=USR1 pid=P`. The report line is also printed to stderr.
//! * `--on-term`: what to do on SIGTERM: `exit:N` exits with code N (default `exit:0`), `raise`
//!   restores the default action and dies by SIGTERM, `ignore` ignores SIGTERM entirely.
//! * `--exit-after-ms N`: exit by itself after N ms with `--exit-code C` (default 0).
//! * `--notify-status TEXT`: at start, send `STATUS=TEXT` to `$NOTIFY_SOCKET`.
//! * `--ready-after-ms N` / `--ready-on-usr2`: announce readiness N ms after start / when
//!   SIGUSR2 arrives: `READY=1` to `$NOTIFY_SOCKET`, or a newline on fd `--ready-fd N`. Just
//!   before, it appends `ready pid=P mono_ns=T` (CLOCK_MONOTONIC) to the report.
//! * On SIGTERM it first appends `term pid=P mono_ns=T` to the report (for latency figures).
//!
//! Without `--exit-after-ms` it waits for signals forever (blocked in `sigwait`, no busy loop).
//!
//! Uses only std and libc, so what it reports is exactly what the parent handed over.

use std::env;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process;
use std::ptr;
use std::time::{Duration, Instant};

/// Prints one line to stderr in a single `write()`, so it never interleaves with the output of
/// the other processes sharing stderr (relaunch, other generations).
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("probe: {}\n", format_args!($($arg)*));
        let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
    }};
}

const USAGE: &str =
    "usage: probe [--report PATH] [--on-term exit:N|raise|ignore] [--exit-after-ms N [--exit-code C]] \
[--notify-status TEXT] [--ready-after-ms N | --ready-on-usr2] [--ready-fd N]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum OnTerm {
    Exit(i32),
    Raise,
    Ignore,
}

struct Options {
    report: Option<PathBuf>,
    on_term: OnTerm,
    exit_after: Option<Duration>,
    exit_code: i32,
    notify_status: Option<String>,
    ready_after: Option<Duration>,
    ready_on_usr2: bool,
    ready_fd: Option<i32>,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        report: None,
        on_term: OnTerm::Exit(0),
        exit_after: None,
        exit_code: 0,
        notify_status: None,
        ready_after: None,
        ready_on_usr2: false,
        ready_fd: None,
    };
    let mut exit_code_given = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--report" => opts.report = Some(PathBuf::from(value("--report")?)),
            "--on-term" => {
                let v = value("--on-term")?;
                opts.on_term = match v.as_str() {
                    "raise" => OnTerm::Raise,
                    "ignore" => OnTerm::Ignore,
                    _ => match v.strip_prefix("exit:").map(str::parse) {
                        Some(Ok(code)) => OnTerm::Exit(code),
                        _ => return Err(format!("invalid --on-term value {v:?}")),
                    },
                }
            }
            "--exit-after-ms" => {
                let v = value("--exit-after-ms")?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("invalid --exit-after-ms value {v:?}"))?;
                opts.exit_after = Some(Duration::from_millis(ms));
            }
            "--exit-code" => {
                let v = value("--exit-code")?;
                opts.exit_code = v
                    .parse()
                    .map_err(|_| format!("invalid --exit-code value {v:?}"))?;
                exit_code_given = true;
            }
            "--notify-status" => opts.notify_status = Some(value("--notify-status")?),
            "--ready-after-ms" => {
                let v = value("--ready-after-ms")?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("invalid --ready-after-ms value {v:?}"))?;
                opts.ready_after = Some(Duration::from_millis(ms));
            }
            "--ready-on-usr2" => opts.ready_on_usr2 = true,
            "--ready-fd" => {
                let v = value("--ready-fd")?;
                opts.ready_fd = Some(
                    v.parse()
                        .map_err(|_| format!("invalid --ready-fd value {v:?}"))?,
                );
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if exit_code_given && opts.exit_after.is_none() {
        return Err("--exit-code only makes sense with --exit-after-ms".into());
    }
    Ok(opts)
}

fn main() {
    // First thing: when this process started running its own code (for spawn latency).
    let start_ns = monotonic_ns();
    let opts = parse_args().unwrap_or_else(|msg| {
        say!("{msg}\n{USAGE}");
        process::exit(2);
    });

    // Take the inventory first, before this process opens anything itself.
    let fds = open_fds();
    let cloexec: Vec<i32> = fds.iter().copied().filter(|&fd| is_cloexec(fd)).collect();

    // Then settle signal handling, before reporting: once the report line exists, a test may
    // signal us and must get the behaviour it asked for.
    let mut waited = vec![libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];
    if opts.on_term == OnTerm::Ignore {
        // SAFETY: installing SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    } else {
        waited.push(libc::SIGTERM);
    }
    let set = sigset(&waited);
    // SAFETY: `set` is a valid, initialised sigset_t; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if rc != 0 {
        die("pthread_sigmask", io::Error::from_raw_os_error(rc));
    }

    let pid = process::id();
    let line = format!(
        "pid={pid} ppid={ppid} LISTEN_PID={} LISTEN_FDS={} LISTEN_FDNAMES={} NOTIFY_SOCKET={} fds={} cloexec={} start_ns={start_ns} {}",
        env_or_dash("LISTEN_PID"),
        env_or_dash("LISTEN_FDS"),
        env_or_dash("LISTEN_FDNAMES"),
        env_or_dash("NOTIFY_SOCKET"),
        join_or_dash(&fds),
        join_or_dash(&cloexec),
        identity(),
        // SAFETY: getppid cannot fail.
        ppid = unsafe { libc::getppid() },
    );
    say!("{line}");
    report(opts.report.as_deref(), &line);
    if let Some(text) = &opts.notify_status {
        sd_notify(&format!("STATUS={text}"));
    }

    let start = Instant::now();
    let exit_at = opts.exit_after.map(|d| start + d);
    let mut ready_at = opts.ready_after.map(|d| start + d);
    loop {
        if ready_at.is_some_and(|at| at <= Instant::now()) {
            ready_at = None;
            announce_ready(&opts, pid);
        }
        if exit_at.is_some_and(|at| at <= Instant::now()) {
            process::exit(opts.exit_code);
        }
        let deadline = [exit_at, ready_at].into_iter().flatten().min();
        let signal = match deadline {
            None => wait_signal(&set, None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    continue;
                }
                wait_signal(&set, Some(left))
            }
        };
        let Some(signal) = signal else { continue };
        match signal {
            libc::SIGTERM => {
                report(
                    opts.report.as_deref(),
                    &format!("term pid={pid} mono_ns={}", monotonic_ns()),
                );
                on_term(opts.on_term)
            }
            libc::SIGUSR2 if opts.ready_on_usr2 => announce_ready(&opts, pid),
            _ => {
                let name = signal_name(signal);
                say!("pid {pid} received SIG{name}");
                report(opts.report.as_deref(), &format!("signal={name} pid={pid}"));
            }
        }
    }
}

/// `uid= gid= groups= umask= nice= cwd= nofile=`: who and where this process runs, and its
/// limits.
fn identity() -> String {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut groups = vec![0 as libc::gid_t; 1024];
    // SAFETY: the buffer holds `groups.len()` entries, as the size argument says.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    if n < 0 {
        die("getgroups", io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    groups.sort_unstable();
    groups.dedup();
    let groups: Vec<i32> = groups.into_iter().map(|g| g as i32).collect();
    // Read, not set: umask(2) can only be queried by changing it.
    let umask = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "-".into());
    // SAFETY: getpriority has no memory arguments; -1 is a valid niceness, so errno decides.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if n == -1 && *libc::__errno_location() != 0 {
            die("getpriority", io::Error::last_os_error());
        }
        n
    };
    let cwd = env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "-".into());
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        die("getrlimit", io::Error::last_os_error());
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            v.to_string()
        }
    };
    format!(
        "uid={uid} gid={gid} groups={} umask={umask} nice={nice} cwd={cwd} nofile={}:{}",
        join_or_dash(&groups),
        show(limit.rlim_cur),
        show(limit.rlim_max)
    )
}

/// CLOCK_MONOTONIC in nanoseconds: shared by every process on the machine, so figures from
/// two processes can be subtracted.
fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Records, then announces, readiness: `READY=1` to `$NOTIFY_SOCKET`, or a newline on the
/// readiness fd.
fn announce_ready(opts: &Options, pid: u32) {
    report(
        opts.report.as_deref(),
        &format!("ready pid={pid} mono_ns={}", monotonic_ns()),
    );
    match opts.ready_fd {
        Some(fd) => {
            // SAFETY: writing a byte from a valid buffer to an fd has no memory preconditions;
            // a bad fd only makes write fail.
            let n = unsafe { libc::write(fd, b"\n".as_ptr().cast(), 1) };
            if n != 1 {
                die(
                    &format!("writing to readiness fd {fd}"),
                    io::Error::last_os_error(),
                );
            }
        }
        None => sd_notify("READY=1"),
    }
}

/// Sends one sd_notify datagram to `$NOTIFY_SOCKET` (a path, or `@` for an abstract name).
fn sd_notify(message: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Ok(target) = env::var("NOTIFY_SOCKET") else {
        die("sd_notify", io::Error::other("NOTIFY_SOCKET is not set"));
    };
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    };
    let sent =
        addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr));
    if let Err(err) = sent {
        die(&format!("sending {message:?} to {target}"), err);
    }
}

fn on_term(action: OnTerm) {
    match action {
        OnTerm::Exit(code) => process::exit(code),
        OnTerm::Raise => {
            // SAFETY: restoring the default action and raising a signal have no preconditions.
            // SIGTERM is blocked, so raise() leaves it pending; unblocking delivers it and the
            // default action ends the process, killed by SIGTERM.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::raise(libc::SIGTERM);
                let set = sigset(&[libc::SIGTERM]);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
            }
            die(
                "raise(SIGTERM)",
                io::Error::other("still alive after SIGTERM"),
            );
        }
        // Not reached: an ignored SIGTERM is never in the waited set.
        OnTerm::Ignore => {}
    }
}

/// Waits for one signal of `set` (all blocked). `None` on timeout or interruption.
fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<i32> {
    let rc = match timeout {
        None => {
            let mut signal = 0;
            // SAFETY: `set` is initialised and `signal` is a valid out-pointer.
            match unsafe { libc::sigwait(set, &mut signal) } {
                0 => signal,
                err => die("sigwait", io::Error::from_raw_os_error(err)),
            }
        }
        Some(timeout) => {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `set` and `ts` are initialised; the siginfo out-pointer may be null.
            unsafe { libc::sigtimedwait(set, ptr::null_mut(), &ts) }
        }
    };
    if rc > 0 {
        return Some(rc);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => None,
        _ => die("sigtimedwait", err),
    }
}

/// The open file descriptors of this process, sorted, without the one used to list them.
fn open_fds() -> Vec<i32> {
    let listed: Vec<i32> = match fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(err) => die("listing /proc/self/fd", err),
    };
    // The directory is closed now, so its descriptor no longer passes F_GETFD.
    let mut fds: Vec<i32> = listed
        .into_iter()
        // SAFETY: F_GETFD only queries the descriptor table.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .collect();
    fds.sort_unstable();
    fds
}

fn is_cloexec(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags != -1 && flags & libc::FD_CLOEXEC != 0
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Appends `line` to the report file with one `write()`, so concurrent writers never interleave.
fn report(path: Option<&Path>, line: &str) {
    let Some(path) = path else { return };
    let buf = format!("{line}\n");
    let written = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut file| file.write(buf.as_bytes()));
    match written {
        Ok(n) if n == buf.len() => {}
        Ok(n) => die(
            &format!("writing {}", path.display()),
            io::Error::other(format!("short write: {n} of {} bytes", buf.len())),
        ),
        Err(err) => die(&format!("writing {}", path.display()), err),
    }
}

fn env_or_dash(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| "-".into())
}

fn join_or_dash(fds: &[i32]) -> String {
    if fds.is_empty() {
        return "-".into();
    }
    fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        libc::SIGWINCH => "WINCH",
        libc::SIGTERM => "TERM",
        _ => "UNKNOWN",
    }
}

fn die(what: &str, err: io::Error) -> ! {
    say!("{what}: {err}");
    process::exit(1);
}
