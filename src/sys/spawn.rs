//! Starting a child: the one module with `unsafe`.
//!
//! systemd's protocol wants `LISTEN_PID` to be the child's own pid, which nobody knows before
//! `fork`. std's `Command` fixes the environment before forking, so relaunch forks and execs by
//! hand:
//!
//! 1. Before `fork`, in the master: resolve the program in the child's `PATH`, build `argv` and
//!    `envp` as C strings, with a reserved `LISTEN_PID=` slot of fixed size, open a
//!    close-on-exec pipe for error reports, and block every signal (so no handler of the master runs in the child).
//! 2. In the child, only async-signal-safe system calls, no allocation, no locks, no logging:
//!    reset the signal dispositions the master changed and the mask, `setpgid(0, 0)`,
//!    `setrlimit` (`--rlimit`), `setpriority` (`--nice`), drop privileges (`setgroups`,
//!    `setresgid`, `setresuid` as raw system calls, then check that uid 0 cannot be regained:
//!    any failure fails the spawn, so a child never runs with more than it was given),
//!    `PR_SET_PDEATHSIG` (after the credentials, which clear it; and exit if the master is
//!    already gone), `chdir` as the target user, `umask`, point fds 1 and 2 at the output pipes
//!    if relaunch captures the child's output ([`Extras::stdout`], [`Extras::stderr`]), move
//!    the sockets to fds 3.. (see `place_fds`), write the pid's digits into the reserved slot,
//!    and `execve`. Users, groups and the supplementary group list are looked up before `fork`
//!    (see [`crate::process`]).
//! 3. If any step fails, the child writes `(step, errno)` into the pipe and `_exit(127)`s. The
//!    master reads the pipe: end-of-file means `execve` succeeded (the pipe was close-on-exec).
//!
//! This costs one `fork` and one pipe read per spawn; `BENCHMARKS.md` has the measured latency.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{access, AccessFlags, Pid};

use crate::command::Command;

/// What the child is given besides the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Signal the child gets when the master dies (`PR_SET_PDEATHSIG`); `None` to disable.
    /// Set after the privileges are dropped (the kernel clears it on a change of credentials).
    pub pdeathsig: Option<Signal>,
    /// Working directory of the child, entered after dropping privileges.
    pub chdir: Option<PathBuf>,
    /// User and groups to switch to before exec (the master must be privileged).
    pub credentials: Option<Credentials>,
    /// The child's umask.
    pub umask: Option<u32>,
    /// The child's niceness (absolute, -20..=19).
    pub nice: Option<i32>,
    /// Resource limits, set before dropping privileges (raising a hard limit needs them).
    pub rlimits: Vec<ResourceLimit>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            pdeathsig: Some(Signal::SIGTERM),
            chdir: None,
            credentials: None,
            umask: None,
            nice: None,
            rlimits: Vec::new(),
        }
    }
}

/// The identity a child takes before exec: `setgroups(groups)`, `setgid(gid)`, then
/// `setuid(uid)`, in that order (each step needs the privilege the next one gives up). All
/// looked up before `fork`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id; `None` keeps the master's (`--group` alone).
    pub uid: Option<u32>,
    /// The primary group id.
    pub gid: u32,
    /// The supplementary groups (usually including `gid`).
    pub groups: Vec<u32>,
}

/// One resource limit for the child (`setrlimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimit {
    /// Its name, as `--rlimit` spells it (`nofile`).
    pub name: &'static str,
    /// The `RLIMIT_*` number.
    pub resource: i32,
    /// The soft limit (`RLIM_INFINITY` for unlimited).
    pub soft: u64,
    /// The hard limit (`RLIM_INFINITY` for unlimited).
    pub hard: u64,
}

/// A socket to pass: the master's fd and its name for `LISTEN_FDNAMES`.
#[derive(Debug, Clone, Copy)]
pub struct PassFd<'a> {
    /// The fd in the master (close-on-exec there).
    pub fd: RawFd,
    /// Its name.
    pub name: &'a str,
}

/// What a child gets beyond the sockets: more variables and more fds at fixed numbers.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// The child's whole environment, one entry per name (built by `crate::environment`),
    /// except `LISTEN_PID`: with sockets, a slot for it is added and filled in by the child.
    pub env: Vec<(OsString, OsString)>,
    /// `(fd in the master, fd number in the child)`; the child's numbers must lie above the
    /// sockets' (3 + number of sockets and up) and be distinct.
    pub fds: Vec<(RawFd, RawFd)>,
    /// An fd of the master to become the child's stdout (fd 1); `None` inherits relaunch's.
    pub stdout: Option<RawFd>,
    /// An fd of the master to become the child's stderr (fd 2); `None` inherits relaunch's.
    /// Applied after `stdout`, so `Some(1)` makes stderr a copy of the child's new stdout.
    pub stderr: Option<RawFd>,
}

/// The step of starting a child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the error-report pipe.
    Pipe,
    /// `fork` itself.
    Fork,
    /// `setpgid` in the child.
    ProcessGroup,
    /// `prctl(PR_SET_PDEATHSIG)` in the child.
    DeathSignal,
    /// Placing the sockets at fds 3.. in the child.
    Fds,
    /// `execve`.
    Exec,
    /// Redirecting the child's stdout or stderr (`dup2` onto fd 1 or 2).
    Output,
    /// `setrlimit` (`--rlimit`).
    ResourceLimit,
    /// `setpriority` (`--nice`).
    Nice,
    /// `setgroups`: the supplementary groups of `--user`.
    Groups,
    /// `setgid` (`--group`, or the group of `--user`).
    SetGid,
    /// `setuid` (`--user`), or the check that the privileges cannot be regained.
    SetUid,
    /// `chdir` (`--chdir`).
    Chdir,
}

impl Step {
    fn code(self) -> i32 {
        self as i32
    }

    fn from_code(code: i32) -> Step {
        match code {
            0 => Step::Pipe,
            1 => Step::Fork,
            2 => Step::ProcessGroup,
            3 => Step::DeathSignal,
            4 => Step::Fds,
            6 => Step::Output,
            7 => Step::ResourceLimit,
            8 => Step::Nice,
            9 => Step::Groups,
            10 => Step::SetGid,
            11 => Step::SetUid,
            12 => Step::Chdir,
            _ => Step::Exec,
        }
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Pipe => "creating a pipe",
            Step::Fork => "fork",
            Step::ProcessGroup => "setpgid",
            Step::DeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Step::Fds => "placing the sockets at fd 3 and up",
            Step::Exec => "exec",
            Step::Output => "redirecting stdout/stderr",
            Step::ResourceLimit => "setrlimit (--rlimit)",
            Step::Nice => "setpriority (--nice)",
            Step::Groups => "dropping privileges: setgroups (supplementary groups of --user)",
            Step::SetGid => "dropping privileges: setgid (--group, or the group of --user)",
            Step::SetUid => "dropping privileges: setuid (--user)",
            Step::Chdir => "chdir (--chdir)",
        }
    }
}

/// Why a child could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// No such program (not in `PATH`, or no file at that path).
    NotFound {
        /// The program as given.
        program: OsString,
        /// The `PATH` searched (the child's), if the name has no `/`.
        searched: Option<OsString>,
    },
    /// The program exists but is not an executable file.
    NotExecutable(PathBuf),
    /// A system call failed while starting the child.
    Os {
        /// The program being started.
        program: PathBuf,
        /// Which step failed.
        step: Step,
        /// The error.
        errno: Errno,
    },
}

impl SpawnError {
    /// The exit code a shell would use for this failure: 127 not found, 126 cannot execute,
    /// 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::NotExecutable(_) => 126,
            SpawnError::Os {
                step: Step::Exec,
                errno,
                ..
            } => match errno {
                Errno::ENOENT => 127,
                _ => 126,
            },
            SpawnError::Os { .. } => 1,
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NotFound {
                program,
                searched: None,
            } => write!(f, "program not found: {program:?}"),
            SpawnError::NotFound {
                program,
                searched: Some(path),
            } => write!(
                f,
                "program not found: {program:?} is in no directory of the child's PATH={}",
                path.to_string_lossy()
            ),
            SpawnError::NotExecutable(p) => write!(f, "program not executable: {p:?}"),
            SpawnError::Os {
                program,
                step,
                errno,
            } => write!(
                f,
                "starting {program:?}: {}: {}",
                step.describe(),
                io::Error::from(*errno)
            ),
        }
    }
}

impl std::error::Error for SpawnError {}

/// `PATH` when the child's environment has none (what relaunch has always used).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The `PATH` a child's program is searched in, as `execvpe` searches the environment it is
/// given: the last `PATH` of the child's environment `env`, else [`DEFAULT_PATH`].
pub fn search_path(env: &[(OsString, OsString)]) -> OsString {
    env.iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// Finds the program the way `execvpe` would: a name with a `/` is a path; otherwise the first
/// executable regular file of that name in `search`, the child's `PATH` (see
/// [`search_path`]). Called at every spawn, so a new binary at the same path is picked up by
/// the next generation. Runs in the master before `fork`, never in the child.
pub fn resolve_program(program: &OsStr, search: &OsStr) -> Result<PathBuf, SpawnError> {
    let not_found = |searched: Option<&OsStr>| SpawnError::NotFound {
        program: program.to_owned(),
        searched: searched.map(OsStr::to_owned),
    };
    if program.is_empty() {
        return Err(not_found(None));
    }
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return match check_executable(&path) {
            Check::Ok => Ok(path),
            Check::Missing => Err(not_found(None)),
            Check::NotExecutable => Err(SpawnError::NotExecutable(path)),
        };
    }
    let mut denied = None;
    for dir in std::env::split_paths(search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match check_executable(&candidate) {
            Check::Ok => return Ok(candidate),
            Check::NotExecutable => {
                denied.get_or_insert(candidate);
            }
            Check::Missing => {}
        }
    }
    Err(match denied {
        Some(path) => SpawnError::NotExecutable(path),
        None => not_found(Some(search)),
    })
}

enum Check {
    Ok,
    Missing,
    NotExecutable,
}

fn check_executable(path: &Path) -> Check {
    match fs::metadata(path) {
        Err(_) => Check::Missing,
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Check::NotExecutable,
        Ok(_) => match access(path, AccessFlags::X_OK) {
            Ok(()) => Check::Ok,
            Err(_) => Check::NotExecutable,
        },
    }
}

/// Everything the child needs, built before `fork` so the child allocates nothing.
struct ExecImage {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    /// `LISTEN_PID=` followed by room for the digits and a NUL; the child fills it in.
    listen_pid: Vec<u8>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// The fds to pass, as they are in the master; the child rewrites entries it moves.
    sources: Vec<RawFd>,
    /// Where each source goes in the child, ascending: 3.. for the sockets, then extras.
    targets: Vec<RawFd>,
    /// Sources for the child's fds 1 and 2 (-1: leave as inherited), applied in that order.
    stdio: [RawFd; 2],
    pdeathsig: libc::c_int,
    master_pid: libc::pid_t,
    /// `(resource, limits)` for `setrlimit`.
    rlimits: Vec<(i32, libc::rlimit)>,
    nice: Option<libc::c_int>,
    /// Supplementary groups, gid and uid to switch to, in that order.
    groups: Option<Vec<libc::gid_t>>,
    gid: Option<libc::gid_t>,
    uid: Option<libc::uid_t>,
    chdir: Option<CString>,
    umask: Option<libc::mode_t>,
    /// Signals whose disposition the child resets to the default.
    reset_signals: &'static [libc::c_int],
}

/// The signals whose disposition in this process is not the default, as recorded by
/// [`snapshot_signal_dispositions`].
static NON_DEFAULT_SIGNALS: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();

/// Every signal number a child may have to reset (all but SIGKILL and SIGSTOP).
fn all_signals() -> &'static [libc::c_int] {
    static ALL: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        // Up to the kernel's highest signal: glibc's SIGRTMAX excludes none above, but its
        // SIGRTMIN hides 32 and 33, which are included here.
        (1..=64)
            .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
            .collect()
    })
}

/// Records which signals this process catches or ignores, so each child resets just those
/// (a few system calls instead of one per signal number). Call it once, after the last change
/// of signal dispositions (the runtime does, after installing its handlers); a later call has
/// no effect. Without it, every child resets every signal, which is correct but slower.
pub fn snapshot_signal_dispositions() {
    NON_DEFAULT_SIGNALS.get_or_init(|| {
        all_signals()
            .iter()
            .copied()
            .filter(|&sig| !has_default_disposition(sig))
            .collect()
    });
}

/// The kernel's `struct sigaction` (not glibc's, whose mask is 128 bytes): same layout on
/// x86_64 and aarch64.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Whether `sig` has its default disposition. Uses the raw system call where its layout is
/// known, because glibc hides the two real-time signals it reserves (32 and 33), and those
/// too can be inherited as ignored.
fn has_default_disposition(sig: libc::c_int) -> bool {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: a query (null new action) writes only `old`, sized as the kernel expects.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            )
        };
        rc != 0 || old.handler == libc::SIG_DFL
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        // SAFETY: querying a disposition (null new action) writes only `old`.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction == libc::SIG_DFL
        }
    }
}

/// Sets `sig` to its default disposition. Async-signal-safe (one system call).
///
/// # Safety
/// Changes process-wide signal state; meant for the child between fork and exec.
unsafe fn set_default_disposition(sig: libc::c_int) {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &dfl as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        );
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
    }
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Os {
        program: PathBuf::from(what),
        step: Step::Exec,
        errno: Errno::EINVAL,
    })
}

impl ExecImage {
    fn new(
        path: &Path,
        command: &Command,
        fds: &[PassFd<'_>],
        extras: &Extras,
        options: &SpawnOptions,
    ) -> Result<ExecImage, SpawnError> {
        let path_c = cstring(path.as_os_str().as_bytes().to_vec(), "program path")?;
        let mut argv = Vec::with_capacity(command.args.len() + 1);
        argv.push(cstring(command.program.clone().into_vec(), "program")?);
        for arg in &command.args {
            argv.push(cstring(arg.clone().into_vec(), "argument")?);
        }
        // The environment is whole (`crate::environment` built it, `LISTEN_FDS` and
        // `LISTEN_FDNAMES` included); only the child knows `LISTEN_PID`.
        let mut env = Vec::with_capacity(extras.env.len());
        for (k, v) in &extras.env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env.push(cstring(kv, "environment")?);
        }
        let mut listen_pid = Vec::new();
        if !fds.is_empty() {
            // Room for the longest pid (20 digits of a u64) and the terminating NUL.
            listen_pid.extend_from_slice(LISTEN_PID_PREFIX);
            listen_pid.resize(LISTEN_PID_PREFIX.len() + 21, 0);
        }
        let mut pairs: Vec<(RawFd, RawFd)> = fds
            .iter()
            .enumerate()
            .map(|(i, f)| (f.fd, 3 + i as RawFd))
            .collect();
        let mut extra = extras.fds.clone();
        extra.sort_by_key(|&(_, target)| target);
        pairs.extend(extra);
        let ordered = pairs.windows(2).all(|w| w[0].1 < w[1].1);
        if !ordered || pairs.first().is_some_and(|p| p.1 < 3) {
            return Err(SpawnError::Os {
                program: path.to_owned(),
                step: Step::Fds,
                errno: Errno::EINVAL,
            });
        }
        let (sources, targets) = pairs.into_iter().unzip();
        let argv_ptrs = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let mut envp_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        if !listen_pid.is_empty() {
            envp_ptrs.push(listen_pid.as_ptr().cast());
        }
        envp_ptrs.push(std::ptr::null());
        Ok(ExecImage {
            path: path_c,
            _argv: argv,
            argv_ptrs,
            _env: env,
            listen_pid,
            envp_ptrs,
            sources,
            targets,
            stdio: [extras.stdout.unwrap_or(-1), extras.stderr.unwrap_or(-1)],
            pdeathsig: options.pdeathsig.map_or(0, |s| s as libc::c_int),
            master_pid: std::process::id() as libc::pid_t,
            rlimits: options
                .rlimits
                .iter()
                .map(|r| {
                    (
                        r.resource,
                        libc::rlimit {
                            rlim_cur: r.soft as libc::rlim_t,
                            rlim_max: r.hard as libc::rlim_t,
                        },
                    )
                })
                .collect(),
            nice: options.nice,
            groups: options
                .credentials
                .as_ref()
                .map(|c| c.groups.iter().map(|&g| g as libc::gid_t).collect()),
            gid: options.credentials.as_ref().map(|c| c.gid as libc::gid_t),
            uid: options
                .credentials
                .as_ref()
                .and_then(|c| c.uid)
                .map(|u| u as libc::uid_t),
            chdir: match &options.chdir {
                Some(dir) => Some(cstring(dir.as_os_str().as_bytes().to_vec(), "--chdir")?),
                None => None,
            },
            umask: options.umask.map(|m| m as libc::mode_t),
            reset_signals: NON_DEFAULT_SIGNALS
                .get()
                .map_or_else(all_signals, Vec::as_slice),
        })
    }
}

/// Starts `command` with `fds` at 3, 4, ... and the systemd socket-activation environment.
/// Returns once the child has exec'd, or with the reason it could not (the failed child is
/// reaped before returning).
pub fn spawn(
    command: &Command,
    fds: &[PassFd<'_>],
    extras: &Extras,
    options: &SpawnOptions,
) -> Result<(Pid, PathBuf), SpawnError> {
    let path = resolve_program(&command.program, &search_path(&extras.env))?;
    let mut image = ExecImage::new(&path, command, fds, extras, options)?;
    let os_err = |step, errno| SpawnError::Os {
        program: path.clone(),
        step,
        errno,
    };
    let (report_rd, report_wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| os_err(Step::Pipe, e))?;

    // Block every signal across fork: the child must not run the master's handlers before it
    // has reset them, and the master must not lose one (they stay pending until restored).
    // SAFETY: sigfillset/pthread_sigmask only write the sigset_t values we own on this stack.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // The child runs on its own stack in the master's memory (CLONE_VM) while the master waits
    // (CLONE_VFORK), as posix_spawn does: no page tables are copied, so starting a child costs
    // the same whatever the master's size. The child writes only to `image` (its pid digits, its
    // fd table) and to its own stack; the master resumes once the child has exec'd or exited.
    let mut stack = vec![0u8; CHILD_STACK];
    let mut args = CloneArgs {
        image: &mut image,
        report: report_wr.as_raw_fd(),
    };
    // SAFETY: the stack is writable, owned and outlives the child's use of it (the master is
    // suspended until the child execs or exits); `args` points to live data for the same span;
    // `clone_child` calls only async-signal-safe functions and never returns.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            clone_child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut CloneArgs<'_>).cast(),
        )
    };
    let fork_errno = Errno::last();
    drop(stack);
    // SAFETY: restores the mask saved above; `old_mask` is a valid sigset_t.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
    }
    drop(report_wr);
    if pid < 0 {
        return Err(os_err(Step::Fork, fork_errno));
    }
    let pid = Pid::from_raw(pid);
    // Also from this side, so signals to the group work even before the child ran setpgid.
    // EACCES here means the child already exec'd, which is fine.
    let _ = nix::unistd::setpgid(pid, pid);
    match read_report(&report_rd) {
        None => Ok((pid, path)),
        Some((step, errno)) => {
            // The child _exit(127)s right after writing; reap it so it never lingers.
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(os_err(step, errno))
        }
    }
}

/// Stack size of the child between clone and exec (it only makes system calls).
const CHILD_STACK: usize = 64 * 1024;

struct CloneArgs<'a> {
    image: &'a mut ExecImage,
    report: RawFd,
}

/// Entry point of the cloned child.
extern "C" fn clone_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `CloneArgs` the master passed to clone and keeps alive while it is
    // suspended; we are the new child, so `child`'s precondition holds.
    unsafe {
        let args = &mut *arg.cast::<CloneArgs<'_>>();
        child(args.image, args.report)
    }
}

/// Reads the child's `(step, errno)` report; `None` at end-of-file, i.e. exec succeeded.
fn read_report(fd: &OwnedFd) -> Option<(Step, Errno)> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if got < buf.len() {
        return None;
    }
    let step = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((Step::from_code(step), Errno::from_raw(errno)))
}

/// The child's side, between `fork` and `execve`. Async-signal-safe only.
///
/// # Safety
/// Must be called only in a child just created by `fork` or `clone`.
unsafe fn child(image: &mut ExecImage, report: RawFd) -> ! {
    let mut report = report;

    // Signals: default dispositions for every signal the master catches or ignores (ignored
    // ones survive exec otherwise, e.g. SIGPIPE, which Rust programs ignore; caught ones must
    // not run the master's handler in the child, which shares its memory until exec), then the
    // mask is cleared right before exec.
    for &sig in image.reset_signals.iter() {
        set_default_disposition(sig);
    }

    if libc::setpgid(0, 0) != 0 {
        fail(report, Step::ProcessGroup);
    }

    // Limits and priority first: raising a hard limit or lowering the niceness needs the
    // privileges dropped below.
    for (resource, limit) in &image.rlimits {
        if libc::setrlimit(*resource as _, limit) != 0 {
            fail(report, Step::ResourceLimit);
        }
    }
    if let Some(nice) = image.nice {
        if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
            fail(report, Step::Nice);
        }
    }

    // Dropping privileges: groups, then gid, then uid (each needs the privilege the next gives
    // up). Any failure ends the child before exec: it never runs with more than asked for.
    // Raw system calls, not glibc's wrappers: those broadcast the change to every thread glibc
    // knows of, and this child, sharing the master's memory (CLONE_VM), would see the master's
    // threads. The raw calls change exactly this process.
    if let Some(groups) = &image.groups {
        if libc::syscall(cred::SETGROUPS, groups.len(), groups.as_ptr()) != 0 {
            fail(report, Step::Groups);
        }
    }
    if let Some(gid) = image.gid {
        if libc::syscall(cred::SETRESGID, gid, gid, gid) != 0 {
            fail(report, Step::SetGid);
        }
        if libc::getgid() != gid || libc::getegid() != gid {
            *libc::__errno_location() = libc::EPERM;
            fail(report, Step::SetGid);
        }
    }
    if let Some(uid) = image.uid {
        if libc::syscall(cred::SETRESUID, uid, uid, uid) != 0 {
            fail(report, Step::SetUid);
        }
        // Fail closed: the switch must have taken, and must not be reversible.
        if libc::getuid() != uid
            || libc::geteuid() != uid
            || (uid != 0 && libc::syscall(cred::SETRESUID, 0, 0, 0) != -1)
        {
            *libc::__errno_location() = libc::EPERM;
            fail(report, Step::SetUid);
        }
    }

    // After the credentials: the kernel clears the parent-death signal when they change.
    if image.pdeathsig != 0 {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            image.pdeathsig as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(report, Step::DeathSignal);
        }
        // The master may have died between fork and prctl: then nobody would ever send the
        // signal, so act on it now.
        if libc::getppid() != image.master_pid {
            libc::_exit(1);
        }
    }

    // As the target user: a directory it may not enter fails the spawn.
    if let Some(dir) = &image.chdir {
        if libc::chdir(dir.as_ptr()) != 0 {
            fail(report, Step::Chdir);
        }
    }
    if let Some(mask) = image.umask {
        libc::umask(mask);
    }
    // stdout/stderr first: their sources may sit on numbers `place_fds` is about to reuse.
    // dup2 leaves the copy at 1 or 2 without close-on-exec.
    for (target, &source) in (1..).zip(image.stdio.iter()) {
        if source >= 0 && source != target && libc::dup2(source, target) != target {
            fail(report, Step::Output);
        }
    }

    if place_fds(&mut image.sources, &image.targets, &mut report).is_err() {
        fail(report, Step::Fds);
    }

    if !image.listen_pid.is_empty() {
        write_decimal(
            &mut image.listen_pid[LISTEN_PID_PREFIX.len()..],
            libc::getpid() as u64,
        );
    }

    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

    libc::execve(
        image.path.as_ptr(),
        image.argv_ptrs.as_ptr(),
        image.envp_ptrs.as_ptr(),
    );
    fail(report, Step::Exec)
}

/// The credential system calls with 32-bit ids.
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
mod cred {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups32;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid32;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid32;
}

/// The credential system calls (32-bit ids on every other Linux architecture).
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
mod cred {
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups;
    pub const SETRESGID: libc::c_long = libc::SYS_setresgid;
    pub const SETRESUID: libc::c_long = libc::SYS_setresuid;
}

/// Puts `sources[i]` at `targets[i]` without close-on-exec, and leaves every other fd from 3
/// up close-on-exec. `targets` must be ascending and at least 3. Async-signal-safe: no
/// allocation; `sources` and `report` are updated in place.
///
/// Three cases need care, all handled by first moving every fd that sits on some target but
/// not on its own (and the report pipe, if it sits on a target) to a number above all targets:
/// - a source on another source's target (`dup2` would close it before it is copied);
/// - a source already on its own target: `dup2(fd, fd)` does nothing, so close-on-exec is
///   cleared with `fcntl` instead;
/// - the report pipe on a target.
///
/// # Safety
/// Only fcntl/dup2/close_range on the given fds; safe to call between fork and exec.
unsafe fn place_fds(
    sources: &mut [RawFd],
    targets: &[RawFd],
    report: &mut RawFd,
) -> Result<(), ()> {
    let above = targets.last().map_or(3, |&t| t + 1);
    let on_target = |fd: RawFd| targets.contains(&fd);
    if on_target(*report) {
        let moved = libc::fcntl(*report, libc::F_DUPFD_CLOEXEC, above);
        if moved < 0 {
            return Err(());
        }
        *report = moved;
    }
    for (fd, &target) in sources.iter_mut().zip(targets) {
        if on_target(*fd) && *fd != target {
            let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
            if moved < 0 {
                return Err(());
            }
            *fd = moved;
        }
    }
    for (&fd, &target) in sources.iter().zip(targets) {
        let ok = if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0) == 0
        } else {
            libc::dup2(fd, target) == target
        };
        if !ok {
            return Err(());
        }
    }
    // Belt and braces: whatever else is open from 3 up, between and above the targets, becomes
    // close-on-exec (the master already marks its fds so; this covers anything a library opened
    // without the flag). Kernels before 5.11 lack the flag: the master's own marking suffices.
    let mut from: RawFd = 3;
    for &target in targets.iter().chain(std::iter::once(&RawFd::MAX)) {
        if target > from {
            let last = if target == RawFd::MAX {
                libc::c_uint::MAX
            } else {
                (target - 1) as libc::c_uint
            };
            libc::syscall(
                libc::SYS_close_range,
                from as libc::c_uint,
                last,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        from = target.saturating_add(1);
    }
    Ok(())
}

/// Writes `value` in decimal followed by a NUL into `buf`. Async-signal-safe.
fn write_decimal(buf: &mut [u8], mut value: u64) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = digits[n - 1 - i];
    }
    buf[n] = 0;
}

/// Reports `(step, errno)` to the master and exits. Async-signal-safe.
unsafe fn fail(report: RawFd, step: Step) -> ! {
    let errno = *libc::__errno_location();
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.code().to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    let mut off = 0;
    while off < buf.len() {
        let n = libc::write(report, buf[off..].as_ptr().cast(), buf.len() - off);
        if n > 0 {
            off += n as usize;
        } else if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        } else {
            break;
        }
    }
    libc::_exit(127)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::pidfd::{pidfd_open, pidfd_send_signal};

    #[test]
    fn decimal_digits() {
        let mut buf = [0xffu8; 21];
        write_decimal(&mut buf, 0);
        assert_eq!(&buf[..2], b"0\0");
        write_decimal(&mut buf, 4194304);
        assert_eq!(&buf[..8], b"4194304\0");
        write_decimal(&mut buf, u64::MAX);
        assert_eq!(&buf[..21], b"18446744073709551615\0");
    }

    #[test]
    fn resolves_like_execvp() {
        assert_eq!(
            resolve_program(OsStr::new("sh"), &search_path(&[]))
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
        assert_eq!(
            resolve_program(OsStr::new("no-such-program-relaunch"), OsStr::new("/a:/b"))
                .unwrap_err(),
            SpawnError::NotFound {
                program: "no-such-program-relaunch".into(),
                searched: Some("/a:/b".into())
            }
        );
        // The PATH given, not relaunch's own: `sh` is in neither of these.
        let e = resolve_program(OsStr::new("sh"), OsStr::new("/nonexistent-relaunch")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "program not found: \"sh\" is in no directory of the child's PATH=/nonexistent-relaunch"
        );
        assert_eq!(
            search_path(&[
                ("PATH".into(), "/first".into()),
                ("PATH".into(), "/last".into())
            ]),
            "/last"
        );
        assert_eq!(
            resolve_program(OsStr::new("/nonexistent/x"), &search_path(&[]))
                .unwrap_err()
                .exit_code(),
            127
        );
        assert_eq!(
            resolve_program(OsStr::new(""), &search_path(&[]))
                .unwrap_err()
                .exit_code(),
            127
        );
        // A directory is not executable.
        assert_eq!(
            resolve_program(OsStr::new("/tmp/"), &search_path(&[])).unwrap_err(),
            SpawnError::NotExecutable("/tmp/".into())
        );
    }

    #[test]
    fn children_start_with_default_signal_dispositions() {
        // Rust ignores SIGPIPE in this test process; a child must not inherit that.
        snapshot_signal_dispositions();
        assert!(NON_DEFAULT_SIGNALS.get().unwrap().contains(&libc::SIGPIPE));
        let out = std::env::temp_dir().join(format!("relaunch-sigign-{}", std::process::id()));
        let command = Command {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                // Builtins only: dash blocks every signal while it waits for a child, so a
                // forked `grep` would see the shell's mask mid-wait.
                format!(
                    "while IFS= read -r l; do case $l in Sig[IB]*) echo \"$l\";; esac; done < /proc/$$/status > {}",
                    out.display()
                )
                .into(),
            ],
        };
        let (pid, _) = spawn(&command, &[], &Extras::default(), &SpawnOptions::default()).unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap();
        let text = fs::read_to_string(&out).unwrap();
        fs::remove_file(&out).unwrap();
        assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
        assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    }

    #[test]
    fn not_executable_file_is_126() {
        let path = std::env::temp_dir().join(format!("relaunch-noexec-{}", std::process::id()));
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = resolve_program(path.as_os_str(), &search_path(&[])).unwrap_err();
        fs::remove_file(&path).unwrap();
        assert_eq!(e, SpawnError::NotExecutable(path));
        assert_eq!(e.exit_code(), 126);
    }

    #[test]
    fn exec_failure_is_reported_and_reaped() {
        // A script with a missing interpreter: exists and is executable, but execve fails.
        let path = std::env::temp_dir().join(format!("relaunch-badinterp-{}", std::process::id()));
        fs::write(&path, "#!/nonexistent/interpreter\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let command = Command {
            program: path.clone().into(),
            args: vec![],
        };
        let e = spawn(&command, &[], &Extras::default(), &SpawnOptions::default()).unwrap_err();
        fs::remove_file(&path).unwrap();
        match &e {
            SpawnError::Os { step, errno, .. } => {
                assert_eq!(*step, Step::Exec);
                assert_eq!(*errno, Errno::ENOENT);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.exit_code(), 127);
        assert!(
            e.to_string().contains("exec: No such file or directory"),
            "{e}"
        );
    }

    #[test]
    fn spawned_child_runs_and_reports_its_own_pid() {
        let out = std::env::temp_dir().join(format!("relaunch-spawn-{}", std::process::id()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let command = Command {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "echo \"$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES $(ls /proc/$$/fd | sort -n | tr '\\n' ,)\" > {}",
                    out.display()
                )
                .into(),
            ],
        };
        let fds = [PassFd {
            fd: listener.as_raw_fd(),
            name: "web",
        }];
        // `crate::environment` sets these; spawn adds `LISTEN_PID`, filled in by the child.
        let extras = Extras {
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("LISTEN_FDS".into(), "1".into()),
                ("LISTEN_FDNAMES".into(), "web".into()),
            ],
            ..Extras::default()
        };
        let (pid, path) = spawn(&command, &fds, &extras, &SpawnOptions::default()).unwrap();
        assert!(path.ends_with("sh"));
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        let text = fs::read_to_string(&out).unwrap();
        fs::remove_file(&out).unwrap();
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields[0], pid.to_string(), "{text}");
        assert_eq!(fields[1], pid.to_string(), "LISTEN_PID: {text}");
        assert_eq!(fields[2], "1", "{text}");
        assert_eq!(fields[3], "web", "{text}");
        // The shell itself may hold its script fd and the redirection (fd 1 reopened), but
        // fd 3 is the socket and nothing of the test process beyond it leaked.
        assert!(fields[4].starts_with("0,1,2,3,"), "{text}");
    }

    #[test]
    fn stdout_and_stderr_are_redirected() {
        use std::io::Read;
        let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let command = Command {
            program: "sh".into(),
            args: vec!["-c".into(), "echo out; echo err >&2".into()],
        };
        // stderr follows the new stdout (2>&1).
        let extras = Extras {
            stdout: Some(wr.as_raw_fd()),
            stderr: Some(1),
            ..Extras::default()
        };
        let (pid, _) = spawn(&command, &[], &extras, &SpawnOptions::default()).unwrap();
        drop(wr);
        let mut text = String::new();
        fs::File::from(rd).read_to_string(&mut text).unwrap();
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        assert_eq!(text, "out\nerr\n");
    }

    /// Port of the socket at `fd`, with no allocation (for use in a forked child).
    unsafe fn port_of(fd: RawFd) -> u16 {
        // SAFETY (of the body): getsockname writes at most `len` bytes into `addr`.
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) != 0 {
            return 0;
        }
        u16::from_be(addr.sin_port)
    }

    #[test]
    fn place_fds_handles_every_collision() {
        // In a forked child, arrange the sockets so that source 0 sits on target 1, source 1
        // on target 0, source 2 on its own target (close-on-exec, as in the master), and the
        // report pipe inside the range; then check each target holds the right socket
        // without close-on-exec. The child reports through its exit code.
        let ls: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        let raw: Vec<RawFd> = ls.iter().map(|l| l.as_raw_fd()).collect();
        let mut fds = vec![4, 3, 5];
        // SAFETY: the child uses only dup2/fcntl/close/getsockname/_exit and memory prepared
        // before fork (`fds`, `ports`, `raw`).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: forked child of the test; see above.
            unsafe {
                for (i, &fd) in raw.iter().enumerate() {
                    libc::dup2(fd, 500 + i as RawFd);
                }
                for (i, &target) in [4, 3, 5].iter().enumerate() {
                    libc::dup2(500 + i as RawFd, target);
                    libc::fcntl(target, libc::F_SETFD, libc::FD_CLOEXEC);
                    libc::close(500 + i as RawFd);
                }
                let mut report: RawFd = 6;
                libc::dup2(2, 6);
                if place_fds(&mut fds, &[3, 4, 5], &mut report).is_err() {
                    libc::_exit(2);
                }
                for (i, &port) in ports.iter().enumerate() {
                    let target = 3 + i as RawFd;
                    if port_of(target) != port {
                        libc::_exit(10 + i as i32);
                    }
                    if libc::fcntl(target, libc::F_GETFD) & libc::FD_CLOEXEC != 0 {
                        libc::_exit(20 + i as i32);
                    }
                }
                // Everything above the range is close-on-exec now.
                if libc::fcntl(report, libc::F_GETFD) & libc::FD_CLOEXEC == 0 {
                    libc::_exit(30);
                }
                libc::_exit(0);
            }
        }
        let status = nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(Pid::from_raw(pid), 0),
            "exit 1x: wrong socket at 3+x; 2x: close-on-exec left on 3+x; 30: fd above range inheritable"
        );
    }

    #[test]
    fn report_pipe_inside_the_range_is_moved_first() {
        let ls: Vec<std::net::TcpListener> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        let raw: Vec<RawFd> = ls.iter().map(|l| l.as_raw_fd()).collect();
        let mut fds = vec![10, 11];
        // SAFETY: as above, only async-signal-safe calls in the child.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: forked child of the test; see above.
            unsafe {
                libc::dup2(raw[0], 10);
                libc::dup2(raw[1], 11);
                // The report pipe sits on fd 4, the second socket's target.
                libc::dup2(2, 4);
                let mut report: RawFd = 4;
                if place_fds(&mut fds, &[3, 4], &mut report).is_err() {
                    libc::_exit(2);
                }
                if report < 5 {
                    libc::_exit(3);
                }
                if port_of(3) != ports[0] || port_of(4) != ports[1] {
                    libc::_exit(4);
                }
                libc::_exit(0);
            }
        }
        let status = nix::sys::wait::waitpid(Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(Pid::from_raw(pid), 0)
        );
    }

    /// Runs `script` with `sh -c` through [`spawn`], waits for it, and returns what it wrote
    /// to `$OUT` (a file in a fresh directory any user may write to).
    fn run_script(
        script: &str,
        extras: &Extras,
        options: &SpawnOptions,
    ) -> Result<String, SpawnError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "relaunch-spawn-opts-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let out = dir.join("out");
        let command = Command {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                format!("exec > {}; {script}", out.display()).into(),
            ],
        };
        let result = spawn(&command, &[], extras, options).map(|(pid, _)| {
            let status = nix::sys::wait::waitpid(pid, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
            fs::read_to_string(&out).unwrap()
        });
        fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn the_child_gets_exactly_the_environment_given() {
        // `crate::environment` builds the whole environment; spawn adds nothing without sockets.
        let extras = Extras {
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/override".into()),
                ("RELAUNCH_TEST_EXTRA".into(), "1".into()),
            ],
            ..Extras::default()
        };
        let script = "echo \"$HOME $RELAUNCH_TEST_EXTRA\"; env | grep -v -e '^HOME=' -e '^PATH=' -e '^RELAUNCH_TEST_EXTRA=' -e '^PWD=' -e '^SHLVL=' -e '^_=' | wc -l";
        let text = run_script(script, &extras, &SpawnOptions::default()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "/override 1", "{text}");
        assert_eq!(
            lines[1].trim(),
            "0",
            "nothing but what was given (and what sh sets itself): {text}"
        );
    }

    #[test]
    fn umask_nice_limits_and_directory_apply_in_the_child() {
        let dir = std::env::temp_dir();
        let options = SpawnOptions {
            umask: Some(0o027),
            nice: Some(7),
            rlimits: vec![ResourceLimit {
                name: "nofile",
                resource: libc::RLIMIT_NOFILE as i32,
                soft: 100,
                hard: 200,
            }],
            chdir: Some(dir.clone()),
            ..SpawnOptions::default()
        };
        let text = run_script(
            "umask; ulimit -S -n; ulimit -H -n; pwd -P; cut -d ' ' -f 19 /proc/$$/stat",
            &Extras::default(),
            &options,
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "0027", "{text}");
        assert_eq!(lines[1..3], ["100", "200"], "{text}");
        assert_eq!(
            lines[3],
            fs::canonicalize(&dir).unwrap().to_str().unwrap(),
            "{text}"
        );
        assert_eq!(lines[4], "7", "{text}");
    }

    #[test]
    fn a_missing_directory_fails_the_spawn_naming_chdir() {
        let options = SpawnOptions {
            chdir: Some("/nonexistent/relaunch-dir".into()),
            ..SpawnOptions::default()
        };
        let e = run_script("true", &Extras::default(), &options).unwrap_err();
        assert!(
            matches!(
                e,
                SpawnError::Os {
                    step: Step::Chdir,
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("chdir (--chdir)"), "{e}");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn credentials_are_dropped_before_exec_or_the_spawn_fails() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let creds = Credentials {
            uid: Some(65534),
            gid: 65534,
            groups: vec![65534, 100],
        };
        let options = SpawnOptions {
            credentials: Some(creds),
            ..SpawnOptions::default()
        };
        let result = run_script("id -u; id -g; id -G", &Extras::default(), &options);
        if !root {
            // Fail closed: without the privilege the child never runs.
            let e = result.unwrap_err();
            assert!(
                matches!(
                    e,
                    SpawnError::Os {
                        step: Step::Groups,
                        errno: Errno::EPERM,
                        ..
                    }
                ),
                "{e:?}"
            );
            return;
        }
        let text = result.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["65534", "65534"], "{text}");
        let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
        groups.sort_unstable();
        assert_eq!(groups, ["100", "65534"], "{text}");
        // As that user, a private directory cannot be entered: the spawn fails there.
        let private = std::env::temp_dir().join(format!("relaunch-private-{}", std::process::id()));
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let e = run_script(
            "true",
            &Extras::default(),
            &SpawnOptions {
                chdir: Some(private.clone()),
                ..options
            },
        )
        .unwrap_err();
        fs::remove_dir(&private).unwrap();
        assert!(
            matches!(
                e,
                SpawnError::Os {
                    step: Step::Chdir,
                    errno: Errno::EACCES,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_pidfd_signals_its_process_and_nothing_after_it_is_reaped() {
        let command = Command {
            program: "sleep".into(),
            args: vec!["60".into()],
        };
        let (pid, _) = spawn(&command, &[], &Extras::default(), &SpawnOptions::default()).unwrap();
        let fd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("NOTE: no pidfd on this kernel ({e}); relaunch falls back to kill()");
                nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
                nix::sys::wait::waitpid(pid, None).unwrap();
                return;
            }
        };
        // SAFETY: F_GETFD only queries the descriptor table.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0, "a pidfd is close-on-exec");
        pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), Signal::SIGTERM).unwrap();
        assert_eq!(
            nix::sys::wait::waitpid(pid, None).unwrap(),
            nix::sys::wait::WaitStatus::Signaled(pid, Signal::SIGTERM, false)
        );
        // Reaped: whatever process gets this pid next, the pidfd reaches none.
        assert_eq!(
            pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), Signal::SIGTERM),
            Err(Errno::ESRCH)
        );
    }
}
