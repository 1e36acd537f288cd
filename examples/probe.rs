//! `probe`: a child process for relaunch's integration tests.
//!
//! It reports what it inherited (file descriptors, close-on-exec flags, socket-activation
//! environment) and then behaves on signals the way a test asks it to.
//!
//! ```text
//! probe [--report PATH] [--on-term exit:N|raise|ignore] [--exit-after-ms N [--exit-code C]]
//!       [--notify-status TEXT] [--ready-after-ms N | --ready-on-usr2] [--ready-fd N] [--echo]
//! ```
//!
//! * `--report PATH`: at start, append ONE line to PATH (single `write()`, `O_APPEND`, so lines of
//!   concurrent probes never interleave):
//!   `pid=P ppid=Q LISTEN_PID=v LISTEN_FDS=v LISTEN_FDNAMES=v NOTIFY_SOCKET=v RELAUNCH_WORKER=v
//!   RELAUNCH_GENERATION=v fds=0,1,2,3 cloexec=-
//!   start_ns=T sock3=inet:stream:listening uid=U gid=G groups=G1,G2 umask=0022 nice=N cwd=DIR
//!   nofile=SOFT:HARD` (`start_ns`: CLOCK_MONOTONIC when `main` began).
//!   Each open fd from 3 up gets a `sockN=DOMAIN:TYPE:ACCEPTCONN` field from `SO_DOMAIN`,
//!   `SO_TYPE` and `SO_ACCEPTCONN` (`inet`, `inet6`, `unix`; `stream`, `dgram`, `seqpacket`;
//!   `listening` or `-`), or `sockN=-` if it is not a socket. `groups`: the supplementary
//!   groups, sorted; `nofile`: RLIMIT_NOFILE, `unlimited` for RLIM_INFINITY.
//!   (`-` for an unset variable or an empty list). When it receives SIGUSR1, SIGUSR2 or SIGWINCH
//!   it appends `signal=USR1 pid=P`. The report line is also printed to stderr (cut
//!   short if it is too long to be written atomically into a pipe shared with other processes).
//! * `--on-term`: what to do on SIGTERM: `exit:N` exits with code N (default `exit:0`), `raise`
//!   restores the default action and dies by SIGTERM, `ignore` ignores SIGTERM entirely.
//! * `--exit-after-ms N`: exit by itself after N ms with `--exit-code C` (default 0).
//! * `--notify-status TEXT`: at start, send `STATUS=TEXT` to `$NOTIFY_SOCKET`.
//! * `--ready-after-ms N` / `--ready-on-usr2`: announce readiness N ms after start / when
//!   SIGUSR2 arrives: `READY=1` to `$NOTIFY_SOCKET`, or a newline on fd `--ready-fd N`. Just
//!   before, it appends `ready pid=P mono_ns=T` (CLOCK_MONOTONIC) to the report.
//! * On SIGTERM it first appends `term pid=P mono_ns=T` to the report (for latency figures).
//! * `--echo`: serve every socket passed by socket activation (fds 3..3+LISTEN_FDS-1 when
//!   LISTEN_PID is this process): on a stream socket every line `MSG\n` of a connection is
//!   answered with `pid=P MSG\n` until the client closes; on a seqpacket socket every packet
//!   `MSG` with a packet `pid=P MSG\n`; on a datagram socket every datagram `MSG` with a datagram
//!   `pid=P MSG` to the sender. On SIGTERM (with `--on-term exit:N`) it stops accepting and
//!   receiving, finishes the connections it has (each read times out after 10 s), and exits
//!   with N; a datagram it received is always answered before that. The sockets are shared
//!   with other generations, so they are set to O_NONBLOCK and polled before every accept or
//!   receive.
//!
//! Without `--exit-after-ms` it waits for signals forever (blocked in `sigwait`, no busy loop).
//!
//! Uses only std and libc, so what it reports is exactly what the parent handed over.

use std::env;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process;
use std::ptr;
use std::thread;
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
[--notify-status TEXT] [--ready-after-ms N | --ready-on-usr2] [--ready-fd N] [--echo]";

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
    echo: bool,
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
        echo: false,
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
            "--echo" => opts.echo = true,
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
    let sockets: Vec<String> = fds
        .iter()
        .filter(|&&fd| fd >= 3)
        .map(|&fd| format!(" sock{fd}={}", describe_socket(fd)))
        .collect();

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
        "pid={pid} ppid={ppid} LISTEN_PID={} LISTEN_FDS={} LISTEN_FDNAMES={} NOTIFY_SOCKET={} RELAUNCH_WORKER={} RELAUNCH_GENERATION={} fds={} cloexec={} start_ns={start_ns}{} {}",
        env_or_dash("LISTEN_PID"),
        env_or_dash("LISTEN_FDS"),
        env_or_dash("LISTEN_FDNAMES"),
        env_or_dash("NOTIFY_SOCKET"),
        env_or_dash("RELAUNCH_WORKER"),
        env_or_dash("RELAUNCH_GENERATION"),
        join_or_dash(&fds),
        join_or_dash(&cloexec),
        sockets.concat(),
        identity(),
        // SAFETY: getppid cannot fail.
        ppid = unsafe { libc::getppid() },
    );
    // One write into a pipe is atomic only up to PIPE_BUF (4096) bytes: a longer line (a child
    // with many sockets) could interleave with relaunch's own log lines, so print less of it.
    if line.len() <= 3000 {
        say!("{line}");
    } else {
        let mut cut = 2000;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        say!(
            "{} ... ({} bytes; see the report file)",
            &line[..cut],
            line.len()
        );
    }
    report(opts.report.as_deref(), &line);
    if let Some(text) = &opts.notify_status {
        sd_notify(&format!("STATUS={text}"));
    }

    let start = Instant::now();
    let exit_at = opts.exit_after.map(|d| start + d);
    let mut ready_at = opts.ready_after.map(|d| start + d);
    if opts.echo {
        echo(&opts, &set, exit_at, ready_at);
    }
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

/// `DOMAIN:TYPE:ACCEPTCONN` of the socket at `fd` (`inet:stream:listening`), or `-` if `fd` is
/// not a socket.
fn describe_socket(fd: i32) -> String {
    let (Some(domain), Some(ty)) = (sockopt(fd, libc::SO_DOMAIN), sockopt(fd, libc::SO_TYPE))
    else {
        return "-".into();
    };
    let domain = match domain {
        libc::AF_INET => "inet".to_owned(),
        libc::AF_INET6 => "inet6".to_owned(),
        libc::AF_UNIX => "unix".to_owned(),
        libc::AF_NETLINK => "netlink".to_owned(),
        other => format!("af{other}"),
    };
    let ty = match ty {
        libc::SOCK_STREAM => "stream".to_owned(),
        libc::SOCK_DGRAM => "dgram".to_owned(),
        libc::SOCK_SEQPACKET => "seqpacket".to_owned(),
        libc::SOCK_RAW => "raw".to_owned(),
        other => format!("type{other}"),
    };
    let listening = if sockopt(fd, libc::SO_ACCEPTCONN) == Some(1) {
        "listening"
    } else {
        "-"
    };
    format!("{domain}:{ty}:{listening}")
}

/// An integer `SOL_SOCKET` option of `fd`; None if `fd` is not a socket.
fn sockopt(fd: i32, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// A socket `--echo` serves.
#[derive(Clone, Copy)]
enum Served {
    /// A listening stream (`packet: false`) or seqpacket (`packet: true`) socket.
    Listener { fd: i32, packet: bool },
    /// A datagram socket.
    Datagram { fd: i32 },
}

impl Served {
    fn fd(self) -> i32 {
        match self {
            Served::Listener { fd, .. } | Served::Datagram { fd } => fd,
        }
    }
}

/// How many of the sockets at 3.. are ours: LISTEN_FDS, if LISTEN_PID is this process.
fn passed_fds() -> i32 {
    let ours = env::var("LISTEN_PID").ok() == Some(process::id().to_string());
    match env::var("LISTEN_FDS").ok().and_then(|n| n.parse().ok()) {
        Some(n) if ours => n,
        _ => 0,
    }
}

/// Connections accepted, or datagrams answered, per wake-up and socket.
const ECHO_BATCH: usize = 64;
/// A connection that sends nothing for this long is closed.
const ECHO_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `--echo`: serves every passed socket until SIGTERM (see the module docs), with the same
/// readiness and exit timers as the plain loop in `main`; never returns.
fn echo(
    opts: &Options,
    set: &libc::sigset_t,
    exit_at: Option<Instant>,
    mut ready_at: Option<Instant>,
) -> ! {
    let pid = process::id();
    // SAFETY: `set` is an initialised sigset_t whose signals are blocked in this thread (and
    // so in every thread started from it): they are only ever read from the signalfd.
    let sigfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) };
    if sigfd < 0 {
        die("signalfd", io::Error::last_os_error());
    }
    let mut served = Vec::new();
    for fd in 3..3 + passed_fds() {
        let socket = match (sockopt(fd, libc::SO_TYPE), sockopt(fd, libc::SO_ACCEPTCONN)) {
            (Some(libc::SOCK_STREAM), Some(1)) => Served::Listener { fd, packet: false },
            (Some(libc::SOCK_SEQPACKET), Some(1)) => Served::Listener { fd, packet: true },
            (Some(libc::SOCK_DGRAM), _) => Served::Datagram { fd },
            _ => {
                say!("pid {pid}: --echo: fd {fd} is neither listening nor a datagram socket; not serving it");
                continue;
            }
        };
        // Shared with the other generation: never block in accept() or recv() on it.
        // SAFETY: F_GETFL/F_SETFL only change the file status flags of `fd`.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        served.push(socket);
    }
    say!("pid {pid}: echoing on {} sockets", served.len());

    let mut workers: Vec<thread::JoinHandle<()>> = Vec::new();
    let code = 'serve: loop {
        if ready_at.is_some_and(|at| at <= Instant::now()) {
            ready_at = None;
            announce_ready(opts, pid);
        }
        if exit_at.is_some_and(|at| at <= Instant::now()) {
            break 'serve opts.exit_code;
        }
        let timeout = match [exit_at, ready_at].into_iter().flatten().min() {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up: waking early would spin until the deadline.
                left.as_nanos()
                    .div_ceil(1_000_000)
                    .clamp(1, i32::MAX as u128) as i32
            }
        };
        let mut fds: Vec<libc::pollfd> = served
            .iter()
            .map(|s| s.fd())
            .chain([sigfd])
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for the whole call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            die("poll", err);
        }
        // Sockets first: a datagram that arrived with the stop signal is still answered.
        for (socket, pfd) in served.iter().zip(&fds) {
            if pfd.revents == 0 {
                continue;
            }
            match *socket {
                Served::Listener { fd, packet } => accept_ready(fd, packet, &mut workers),
                Served::Datagram { fd } => answer_datagrams(fd),
            }
        }
        workers.retain(|w| !w.is_finished());
        if fds.last().is_some_and(|p| p.revents != 0) {
            if let Some(signal) = read_signalfd(sigfd) {
                match signal {
                    libc::SIGTERM => {
                        report(
                            opts.report.as_deref(),
                            &format!("term pid={pid} mono_ns={}", monotonic_ns()),
                        );
                        match opts.on_term {
                            OnTerm::Exit(code) => break 'serve code,
                            other => on_term(other),
                        }
                    }
                    libc::SIGUSR2 if opts.ready_on_usr2 => announce_ready(opts, pid),
                    _ => {
                        let name = signal_name(signal);
                        say!("pid {pid} received SIG{name}");
                        report(opts.report.as_deref(), &format!("signal={name} pid={pid}"));
                    }
                }
            }
        }
    };
    // Stop: close our copies of the sockets (the others keep them open; nothing queued is
    // lost), then let the connections in progress finish.
    for socket in &served {
        // SAFETY: closing fds this process owns and no longer uses.
        unsafe { libc::close(socket.fd()) };
    }
    for worker in workers {
        let _ = worker.join();
    }
    process::exit(code);
}

fn read_signalfd(sigfd: i32) -> Option<i32> {
    // SAFETY: an all-zero signalfd_siginfo is valid; read() fills at most its size.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe {
        libc::read(
            sigfd,
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(info.ssi_signo as i32)
}

fn accept_ready(fd: i32, packet: bool, workers: &mut Vec<thread::JoinHandle<()>>) {
    for _ in 0..ECHO_BATCH {
        // SAFETY: accept4 with null address pointers only returns a new fd (or -1).
        let conn =
            unsafe { libc::accept4(fd, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if conn < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // Nothing (left): the other generation may have taken it.
                Some(libc::EAGAIN) => return,
                Some(libc::ECONNABORTED | libc::EINTR) => continue,
                _ => {
                    say!("accept: {err}");
                    return;
                }
            }
        }
        // SAFETY: accept4 returned a new fd that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        workers.push(thread::spawn(move || serve_connection(conn, packet)));
    }
}

/// Answers every line (stream) or packet (seqpacket) of one connection until it closes.
fn serve_connection(conn: OwnedFd, packet: bool) {
    let pid = process::id();
    // Any connected socket reads and writes like this; UnixStream is just the std wrapper.
    let mut conn = UnixStream::from(conn);
    if conn.set_read_timeout(Some(ECHO_READ_TIMEOUT)).is_err()
        || conn.set_write_timeout(Some(ECHO_READ_TIMEOUT)).is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if packet {
            let msg = String::from_utf8_lossy(&buf[..n]);
            let reply = format!("pid={pid} {}\n", msg.trim_end_matches('\n'));
            if conn.write_all(reply.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let msg = String::from_utf8_lossy(&line[..line.len() - 1]);
            if conn
                .write_all(format!("pid={pid} {msg}\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    }
    // A last line without its newline is answered too.
    if !pending.is_empty() {
        let msg = String::from_utf8_lossy(&pending);
        let _ = conn.write_all(format!("pid={pid} {msg}\n").as_bytes());
    }
}

/// Answers the datagrams queued on `fd`, each to its sender.
fn answer_datagrams(fd: i32) {
    let pid = process::id();
    let mut buf = vec![0u8; 65536];
    for _ in 0..ECHO_BATCH {
        // SAFETY: an all-zero sockaddr_storage is valid; recvfrom fills at most `len` bytes of
        // it and at most `buf.len()` bytes of `buf`.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: see above; both buffers are valid and exclusively borrowed.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return,
                Some(libc::EINTR) => continue,
                _ => {
                    say!("recvfrom: {err}");
                    return;
                }
            }
        }
        let msg = String::from_utf8_lossy(&buf[..n as usize]);
        let reply = format!("pid={pid} {}", msg.trim_end_matches('\n'));
        if len as usize <= std::mem::size_of::<libc::sa_family_t>() {
            say!("pid {pid}: datagram from an unnamed socket; cannot answer");
            continue;
        }
        // SAFETY: `from`/`len` are the sender's address as recvfrom returned it; `reply` is a
        // valid buffer.
        let sent = unsafe {
            libc::sendto(
                fd,
                reply.as_ptr().cast(),
                reply.len(),
                0,
                (&from as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if sent < 0 {
            say!("sendto: {}", io::Error::last_os_error());
        }
    }
}

fn die(what: &str, err: io::Error) -> ! {
    say!("{what}: {err}");
    process::exit(1);
}
