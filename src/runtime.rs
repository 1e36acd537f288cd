//! The master's event loop: one thread, one `poll`, one deadline.
//!
//! It binds the sockets, installs the signal handlers, then alternates between waiting (on the
//! signal self-pipe, until the supervisor's next deadline) and feeding what happened to the
//! [`Supervisor`], carrying out the actions it returns. Each wake-up handles, in this order:
//! reaped children (every one, including orphans when relaunch is PID 1 or a subreaper), then
//! signals, then due deadlines. The sockets are owned here and stay open until `run` returns.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::Instant;

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::signals::Signals;
use crate::sockets::{self, Listener};
use crate::spawn::{self, PassFd, SpawnError, SpawnOptions};
use crate::supervisor::{Action, Event, ExitStatus, SpawnFailure, Supervisor, Trigger};
use crate::Failure;

/// Runs the master until it stops; returns the exit code (the last current child's status).
pub fn run(config: Config) -> Result<i32, Failure> {
    spawn::sanitize_inherited_fds(&[]).context("preparing inherited file descriptors")?;
    let mut signals = Signals::install().context("installing signal handlers")?;
    let listeners = sockets::bind_all(&config.listen, config.backlog)?;
    for (i, l) in listeners.iter().enumerate() {
        info!(
            fd = 3 + i,
            name = %l.name,
            kind = %l.kind,
            backlog = l.backlog,
            addr = %l.local_addr,
            "listening"
        );
    }
    // Fail fast, with the shell's exit codes, if the program cannot be found at all.
    if let Err(e) = spawn::resolve_program(&config.command.program) {
        return Err(Failure {
            code: e.exit_code(),
            error: anyhow!(e),
        });
    }
    let mut master = Master {
        config,
        listeners,
        supervisor: None,
        options: SpawnOptions::default(),
    };
    let code = master.run(&mut signals)?;
    drop(master);
    Ok(code)
}

struct Master {
    config: Config,
    listeners: Vec<Listener>,
    supervisor: Option<Supervisor>,
    options: SpawnOptions,
}

impl Master {
    fn run(&mut self, signals: &mut Signals) -> Result<i32, Failure> {
        let mut sup = Supervisor::new(self.config.settings);
        let mut queue: VecDeque<Action> = sup.start().into();
        self.supervisor = Some(sup);
        loop {
            if let Some(code) = self.execute(&mut queue) {
                return Ok(code);
            }
            self.wait(signals)?;
            let now = Instant::now();
            let mut events = Vec::new();
            let pending = signals.drain();
            // Reap first: a child that died just before its deadline must not be promoted.
            events.extend(reap());
            for sig in pending {
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGHUP => events.push(Event::Reload(Trigger::Signal(sig))),
                    Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                        events.push(Event::Stop(sig))
                    }
                    other => events.push(Event::Forward(other)),
                }
            }
            events.push(Event::Tick);
            let sup = self.sup();
            for event in events {
                queue.extend(sup.handle(event, now));
            }
        }
    }

    fn sup(&mut self) -> &mut Supervisor {
        self.supervisor
            .as_mut()
            .expect("the supervisor exists while the loop runs")
    }

    /// Carries out actions in order; a spawn's result is fed back before the next action.
    /// Returns the exit code once the supervisor asks to exit.
    fn execute(&mut self, queue: &mut VecDeque<Action>) -> Option<i32> {
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spawn { generation } => {
                    let result = self.spawn(generation);
                    let now = Instant::now();
                    let more = self
                        .sup()
                        .handle(Event::Spawned { generation, result }, now);
                    // The spawn's consequences come before anything queued after it.
                    for a in more.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Signal { pid, signal } => send(pid, signal),
                Action::Exit { code } => return Some(code),
            }
        }
        None
    }

    fn spawn(&self, generation: u64) -> Result<Pid, SpawnFailure> {
        let fds: Vec<PassFd<'_>> = self
            .listeners
            .iter()
            .map(|l| PassFd {
                fd: l.raw_fd(),
                name: &l.name,
            })
            .collect();
        match spawn::spawn(&self.config.command, &fds, &self.options) {
            Ok((pid, path)) => {
                debug!(generation, pid = %pid, program = %path.display(), "exec'd");
                Ok(pid)
            }
            Err(e) => Err(spawn_failure(&e)),
        }
    }

    /// Sleeps until a signal arrives or the supervisor's next deadline passes.
    fn wait(&mut self, signals: &Signals) -> Result<(), Failure> {
        let timeout = match self.sup().next_deadline() {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up to whole milliseconds: waking early would spin until the deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(anyhow!("poll: {e}").into()),
        }
    }
}

fn spawn_failure(e: &SpawnError) -> SpawnFailure {
    SpawnFailure {
        message: e.to_string(),
        exit_code: e.exit_code(),
    }
}

/// Reaps every child that has exited, ours or adopted.
fn reap() -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => events.push(Event::Exited {
                pid,
                status: ExitStatus::Code(code),
            }),
            Ok(WaitStatus::Signaled(pid, sig, _)) => events.push(Event::Exited {
                pid,
                status: ExitStatus::Signal(sig as i32),
            }),
            Ok(WaitStatus::StillAlive) => break,
            Ok(_) => continue, // stopped/continued: not reported without WUNTRACED
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: no children at all
        }
    }
    events
}

fn send(pid: Pid, signal: Signal) {
    match kill(pid, signal) {
        Ok(()) => debug!(pid = %pid, signal = %signal.as_str(), "sent signal"),
        // Already gone: its exit is about to be reaped.
        Err(Errno::ESRCH) => debug!(pid = %pid, signal = %signal.as_str(), "process already gone"),
        Err(e) => warn!(pid = %pid, signal = %signal.as_str(), error = %e, "could not signal"),
    }
}
