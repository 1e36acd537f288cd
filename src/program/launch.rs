//! Launching a generation of a program: what the child gets besides the command (sockets,
//! environment, readiness pipe, output pipes, process options), how a failed spawn is named,
//! and signalling a child afterwards (through its pidfd when there is one).

use std::os::fd::{AsFd, AsRawFd};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use super::Program;
use crate::config::{ProgramConfig, ReadyMode};
use crate::environment::Environment;
use crate::process;
use crate::supervisor::SpawnFailure;
use crate::sys::pidfd;
use crate::sys::spawn::{self, Extras, PassFd, SpawnError, SpawnOptions, Step};

/// A spawn that failed.
#[derive(Debug)]
pub(crate) struct Failed {
    /// What the supervisor is told.
    pub(crate) failure: SpawnFailure,
    /// What a waiting `--daemon` shell command is told, when this ends relaunch's startup.
    pub(crate) startup: Option<String>,
}

impl Program {
    /// Starts generation `generation` of this program: its sockets at 3.., its environment
    /// (`--env-file` read again, `--env`, `NOTIFY_SOCKET`), its readiness pipe, its output
    /// pipes. On failure, also says what the `--daemon` shell command should hear, if anything.
    pub(crate) fn spawn(&mut self, generation: u64, worker: usize) -> Result<Pid, Failed> {
        if let Some(watch) = &mut self.watch {
            watch.spawning(generation);
        }
        let fds: Vec<PassFd<'_>> = self
            .listeners
            .iter()
            .map(|l| PassFd {
                fd: l.raw_fd(),
                name: &l.name,
            })
            .collect();
        // --env-file is read again at every spawn, so a reload picks up its new contents; a
        // bad file fails this spawn (a reload then keeps the old generation serving).
        let mut env = Environment::of_program(&self.config.process).map_err(|message| Failed {
            failure: SpawnFailure {
                message,
                exit_code: 1,
            },
            startup: None,
        })?;
        let names: Vec<&str> = fds.iter().map(|f| f.name).collect();
        let notify = self.notify_socket.as_ref().map(|sock| sock.env_value());
        env.for_spawn(generation, worker, notify, &names);
        let mut extras = Extras {
            env: env.into_vars(),
            ..Extras::default()
        };
        let mut ready_read = None;
        let mut _ready_write = None;
        if let ReadyMode::Fd(n) = self.config.ready {
            let (rd, wr) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| Failed {
                    failure: SpawnFailure {
                        message: format!("creating the readiness pipe: {e}"),
                        exit_code: 1,
                    },
                    startup: None,
                })?;
            // The child's end must block like any fresh fd would.
            let _ = nix::fcntl::fcntl(
                wr.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()),
            );
            extras.fds.push((wr.as_raw_fd(), n));
            ready_read = Some(rd);
            // Closed in the master once the child has its copy.
            _ready_write = Some(wr);
        }
        let pipes = match self.output.pipes_for_child() {
            Ok(pipes) => pipes,
            Err(e) => {
                let message = format!("creating the output pipes: {e}");
                return Err(Failed {
                    startup: Some(format!("cannot start the server: {message}")),
                    failure: SpawnFailure {
                        message,
                        exit_code: 1,
                    },
                });
            }
        };
        extras.stdout = pipes.stdout;
        extras.stderr = pipes.stderr;
        match spawn::spawn(&self.config.command, &fds, &extras, &self.options) {
            Ok((pid, path)) => {
                debug!(generation, pid = %pid, program = %path.display(), "exec'd");
                // The child is not reaped yet (only this loop reaps), so the pid is still its.
                match pidfd::pidfd_open(pid) {
                    Ok(fd) => {
                        self.pidfds.insert(pid, fd);
                    }
                    Err(e) => {
                        debug!(pid = %pid, error = %e, "no pidfd (signals go through kill)")
                    }
                }
                if let Some(rd) = ready_read {
                    self.ready_pipes.push((pid, crate::poll::Polled::new(rd)));
                }
                self.output.attach(generation, pid, pipes);
                Ok(pid)
            }
            Err(e) => Err(Failed {
                startup: Some(format!("cannot start the server: {e}")),
                failure: spawn_failure(&e, &self.config),
            }),
        }
    }

    /// Sends `signal` to a child (through its pidfd when there is one), or to its process
    /// group.
    pub(crate) fn send(&self, pid: Pid, signal: Signal, group: bool) {
        let result = if group {
            // The child leads its group, and is not reaped yet: the group id is still its.
            killpg(pid, signal)
        } else if let Some(fd) = self.pidfds.get(&pid) {
            pidfd::pidfd_send_signal(fd.as_fd(), signal)
        } else {
            kill(pid, signal)
        };
        let to = if group { "process group" } else { "process" };
        match result {
            Ok(()) => debug!(pid = %pid, signal = %signal.as_str(), to, "sent signal"),
            // Already gone: its exit is about to be reaped.
            Err(Errno::ESRCH) => {
                debug!(pid = %pid, signal = %signal.as_str(), to, "already gone")
            }
            Err(e) => {
                warn!(pid = %pid, signal = %signal.as_str(), to, error = %e, "could not signal")
            }
        }
    }
}

fn spawn_failure(e: &SpawnError, config: &ProgramConfig) -> SpawnFailure {
    // Name the value of the option whose step failed.
    let detail = match e {
        SpawnError::Os { step, .. } => match step {
            Step::Chdir => config
                .process
                .chdir
                .as_ref()
                .map(|d| format!(" (--chdir {})", d.display())),
            Step::Groups | Step::SetGid | Step::SetUid => {
                let mut who = Vec::new();
                if let Some(u) = &config.process.user {
                    who.push(format!("--user {u}"));
                }
                if let Some(g) = &config.process.group {
                    who.push(format!("--group {g}"));
                }
                Some(format!(
                    " ({}; relaunch must run as root to switch users)",
                    who.join(" ")
                ))
            }
            Step::ResourceLimit => {
                let all: Vec<String> = config
                    .process
                    .rlimits
                    .iter()
                    .map(|r| r.to_string())
                    .collect();
                Some(format!(
                    " (--rlimit {}; raising a hard limit needs privileges)",
                    all.join(",")
                ))
            }
            Step::Nice => config
                .process
                .nice
                .map(|n| format!(" (--nice {n}; lowering the niceness needs privileges)")),
            _ => None,
        },
        _ => None,
    };
    SpawnFailure {
        message: format!("{e}{}", detail.unwrap_or_default()),
        exit_code: e.exit_code(),
    }
}

/// Checks what the supervisor's settings cannot express on their own.
pub(super) fn check_settings(settings: &crate::supervisor::Settings) -> anyhow::Result<()> {
    if settings.backoff_min > settings.backoff_max {
        return Err(anyhow!(
            "--backoff-min {:?} is longer than --backoff-max {:?}; the first restart delay cannot exceed the longest",
            settings.backoff_min,
            settings.backoff_max
        ));
    }
    Ok(())
}

/// Resolves the process options of `config` into what [`spawn::spawn`] applies: looks up
/// `--user`/`--group`, and checks `--chdir` and `--env-file`. Any error here is a usage error.
pub(super) fn spawn_options(config: &ProgramConfig) -> anyhow::Result<SpawnOptions> {
    let p = &config.process;
    let credentials = process::resolve_credentials(p.user.as_deref(), p.group.as_deref())
        .map_err(|e| anyhow!(e))?;
    if let Some(creds) = &credentials {
        info!(
            uid = %creds.uid.map_or("-".to_owned(), |u| u.to_string()),
            gid = creds.gid,
            groups = %creds.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(","),
            "children drop privileges"
        );
    }
    if let Some(dir) = &p.chdir {
        process::check_chdir(dir).map_err(|e| anyhow!(e))?;
    }
    if let Some(path) = &p.env_file {
        process::read_env_file(path).map_err(|e| anyhow!(e))?;
    }
    Ok(SpawnOptions {
        pdeathsig: p.pdeathsig,
        chdir: p.chdir.clone(),
        credentials,
        umask: p.umask.map(|m| m.0),
        nice: p.nice,
        rlimits: p.rlimits.clone(),
    })
}
