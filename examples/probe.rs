//! `probe`: a child process for relaunch's integration tests.
//!
//! It reports what it inherited (file descriptors, close-on-exec flags, socket-activation
//! environment) and then behaves on signals the way a test asks it to.
//!
//! ```text
//! probe [--report PATH] [--on-term exit:N|raise|ignore] [--exit-after-ms N [--exit-code C]]
//! ```
//!
//! * `--report PATH`: at start, append ONE line to PATH (single `write()`, `O_APPEND`, so lines of
//!   concurrent probes never interleave):
//!   `pid=P ppid=Q LISTEN_PID=v LISTEN_FDS=v LISTEN_FDNAMES=v NOTIFY_SOCKET=v fds=0,1,2,3 cloexec=-`
//!   (`-` for an unset variable or an empty list). When it receives SIGUSR1, SIGUSR2 or SIGWINCH
//!   it appends `signal=USR1 pid=P`. The report line is also printed to stderr.
//! * `--on-term`: what to do on SIGTERM: `exit:N` exits with code N (default `exit:0`), `raise`
//!   restores the default action and dies by SIGTERM, `ignore` ignores SIGTERM entirely.
//! * `--exit-after-ms N`: exit by itself after N ms with `--exit-code C` (default 0).
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
    "usage: probe [--report PATH] [--on-term exit:N|raise|ignore] [--exit-after-ms N [--exit-code C]]";

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
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        report: None,
        on_term: OnTerm::Exit(0),
        exit_after: None,
        exit_code: 0,
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
        "pid={pid} ppid={ppid} LISTEN_PID={} LISTEN_FDS={} LISTEN_FDNAMES={} NOTIFY_SOCKET={} fds={} cloexec={}",
        env_or_dash("LISTEN_PID"),
        env_or_dash("LISTEN_FDS"),
        env_or_dash("LISTEN_FDNAMES"),
        env_or_dash("NOTIFY_SOCKET"),
        join_or_dash(&fds),
        join_or_dash(&cloexec),
        // SAFETY: getppid cannot fail.
        ppid = unsafe { libc::getppid() },
    );
    say!("{line}");
    report(opts.report.as_deref(), &line);

    let deadline = opts.exit_after.map(|d| Instant::now() + d);
    loop {
        let signal = match deadline {
            None => wait_signal(&set, None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    process::exit(opts.exit_code);
                }
                wait_signal(&set, Some(left))
            }
        };
        let Some(signal) = signal else { continue };
        match signal {
            libc::SIGTERM => on_term(opts.on_term),
            _ => {
                let name = signal_name(signal);
                say!("pid {pid} received SIG{name}");
                report(opts.report.as_deref(), &format!("signal={name} pid={pid}"));
            }
        }
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
