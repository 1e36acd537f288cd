//! Background mode (`--daemon`), for hosts without a service manager. Under systemd, s6,
//! runit, Docker or Kubernetes, run relaunch in the foreground instead: they supervise it
//! directly and capture its output.
//!
//! [`detach`] must run first thing, while relaunch has a single thread and before the event
//! loop, sockets or signal handlers exist (`spawn::fork_process` refuses otherwise):
//!
//! 1. A close-on-exec pipe is made; the process forks. The **original process** waits on the
//!    pipe and becomes the shell's answer: exit 0 once the first generation of the server is
//!    up (`running generation=1`, i.e. after `--start-secs`, or after `READY=1` with
//!    `--ready notify`), or the daemon's exit code and reason (printed as
//!    `relaunch: error: ...`) if it is not. If the daemon dies without a word, exit 1.
//! 2. The child calls `setsid` (a new session, no controlling terminal: a closing terminal
//!    sends it no SIGHUP) and forks again; the intermediate process exits, so the grandchild
//!    is not a session leader and can never acquire a terminal. The **grandchild** is the
//!    master: its pid goes into `--pid-file` and never changes afterwards.
//! 3. The master changes to `/`, so it holds no mount point busy, points fds 0, 1 and 2 at
//!    `/dev/null` and closes every other fd it inherited (a pipe of the calling shell or `ssh`
//!    held open by the daemon would make whoever waits for its end hang). Once the log files are open, fd 1 becomes `--stdout-log` and fd 2
//!    `--stderr-log` (or the stdout log with `--redirect-stderr`), so relaunch's own log lines
//!    land there too (see [`crate::output::Output::open`]).
//!
//! Because of the `chdir("/")`, relative paths given to relaunch (`--pid-file`, the log files,
//! a program like `./server`) are made absolute before detaching. The server itself runs in
//! `/`: its own arguments are passed unchanged, so give it absolute paths.
//!
//! `--daemon` requires `--pid-file`: without it nothing could find the detached master again
//! (to reload, stop or check it) except by scanning the process table.
//!
//! If the first generation does not come up (it exits, is not ready in time, or cannot be
//! executed), the daemon stops and exits instead of retrying in the background, and removes its
//! pid file *before* the waiting shell command returns, so it can be re-run at once. The shell
//! command then exits with the server's status as a shell would report it (1 if that was 0;
//! 126/127 if it could not be executed; 1 for relaunch's own failures, 2 for usage errors
//! found only at startup).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;

use crate::config::Command;
use crate::spawn::{fork_process, Forked};

/// Which process [`detach`] returned in.
#[derive(Debug)]
pub enum Detached {
    /// The original process, after the daemon reported: exit with this code (0: the server
    /// is up), printing the message if there is one.
    Parent {
        /// The exit code for the shell.
        code: i32,
        /// Why the daemon did not start (empty on success).
        message: String,
    },
    /// The daemon (detached master): go on starting, and report through this.
    Daemon(Startup),
}

/// The daemon's line to the waiting shell command. Dropping it without reporting makes the
/// shell command fail with a generic message.
#[derive(Debug)]
pub struct Startup {
    pipe: File,
    /// Why the first generation did not come up, once known.
    pub reason: Option<String>,
}

impl Startup {
    /// The server is up: the shell command exits 0.
    pub fn succeeded(self) {
        self.send(0, "");
    }

    /// Starting failed: the shell command prints `message` and exits with `code` (1 if 0).
    pub fn failed(self, code: i32, message: &str) {
        let code = if (1..=255).contains(&code) { code } else { 1 };
        self.send(code as u8, message);
    }

    fn send(mut self, code: u8, message: &str) {
        let mut bytes = vec![code];
        bytes.extend_from_slice(message.as_bytes());
        // The shell command may be gone (killed): nothing to do about it.
        let _ = self.pipe.write_all(&bytes);
    }
}

/// Detaches from the terminal and the shell (see the module docs). Returns in the original
/// process once the daemon reported, and in the daemon right away. `keep` are inherited fds
/// the daemon still needs (the sockets of `--listen fd:N`); every other one is closed.
/// Socket activation does not survive detaching (its `LISTEN_PID` names the original
/// process), and needs no `--daemon` anyway: the service manager is there.
pub fn detach(keep: &[RawFd]) -> io::Result<Detached> {
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    match fork_process()? {
        Forked::Parent(child) => {
            drop(wr);
            let mut report = Vec::new();
            let read = File::from(rd).read_to_end(&mut report);
            // The intermediate process exits right after its fork.
            let _ = waitpid(child, None);
            read?;
            return Ok(match report.split_first() {
                Some((&code, message)) => Detached::Parent {
                    code: i32::from(code),
                    message: String::from_utf8_lossy(message).into_owned(),
                },
                None => Detached::Parent {
                    code: 1,
                    message: "the daemon exited before it reported whether the server started (see its --stderr-log)".into(),
                },
            });
        }
        Forked::Child => drop(rd),
    }
    let mut pipe = File::from(wr);
    let result = (|| -> io::Result<bool> {
        nix::unistd::setsid()?;
        match fork_process()? {
            Forked::Parent(_) => return Ok(false),
            Forked::Child => {}
        }
        nix::unistd::chdir(Path::new("/"))?;
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        for fd in 0..3 {
            nix::unistd::dup2(null.as_raw_fd(), fd)?;
        }
        drop(null);
        close_inherited(pipe.as_raw_fd(), keep)?;
        Ok(true)
    })();
    match result {
        Ok(true) => Ok(Detached::Daemon(Startup { pipe, reason: None })),
        // The intermediate process: its only job was the second fork.
        Ok(false) => std::process::exit(0),
        Err(e) => {
            let mut bytes = vec![1u8];
            bytes.extend_from_slice(format!("cannot detach: {e}").as_bytes());
            let _ = pipe.write_all(&bytes);
            std::process::exit(1)
        }
    }
}

/// Closes every fd from 3 up but `pipe` and `keep`: a daemon must not hold open what it
/// inherited (a pipe of the shell or of `ssh` would never see end-of-file, and the command
/// waiting on it would hang). Nothing in this process owns those fds yet: this runs before
/// anything opens. `keep` are the sockets handed over with `--listen fd:N`.
fn close_inherited(pipe: RawFd, keep: &[RawFd]) -> io::Result<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    crate::spawn::forget_inherited_except(keep);
    for fd in fds {
        if fd > 2 && fd != pipe && !keep.contains(&fd) {
            // EBADF for the directory's own fd, closed by now.
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}

/// Makes a program path with a `/` absolute (the daemon runs in `/`); a bare name is left for
/// the `PATH` lookup.
pub fn absolute_program(command: &mut Command) -> io::Result<()> {
    let program = Path::new(&command.program);
    if program.is_relative() && program.as_os_str().as_encoded_bytes().contains(&b'/') {
        command.program = std::path::absolute(program)?.into_os_string();
    }
    Ok(())
}
