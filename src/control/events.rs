//! What a library subscriber hears ([`crate::api::Handle::subscribe`]): one [`Event`] per
//! report of a program's supervisor that says something happened to a process or to the
//! program, in the order the master saw them.

use std::collections::HashMap;

use crate::supervisor::{ExitStatus, ProgramState, ReloadFailure, Report};

/// Something that happened to a program, named by its program. Events of one program come in
/// the order they happened: a generation is `Spawned` (once per worker), then `Ready` (once
/// every worker is up), and each child ends `Exited`; a reload attempt ends with exactly one
/// `ReloadEnded`, after its new generation's `Ready` when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A child was started.
    Spawned {
        /// The program.
        program: String,
        /// Its generation.
        generation: u64,
        /// Its worker index (0 with one worker).
        worker: usize,
        /// Its pid.
        pid: i32,
    },
    /// A generation counted as up (with several workers: all of them). `pid` is its first
    /// worker's child.
    Ready {
        /// The program.
        program: String,
        /// The generation.
        generation: u64,
        /// The worker of `pid`.
        worker: usize,
        /// A child of the generation.
        pid: i32,
    },
    /// A child was reaped.
    Exited {
        /// The program.
        program: String,
        /// Its generation.
        generation: u64,
        /// Its worker index.
        worker: usize,
        /// Its pid.
        pid: i32,
        /// How it ended.
        status: ExitStatus,
        /// Whether relaunch had asked it to stop (an old generation after a reload, or a
        /// stop) rather than it ending on its own.
        expected: bool,
    },
    /// A child could not be started (exec failed, program missing, ...).
    SpawnFailed {
        /// The program.
        program: String,
        /// The generation asked for.
        generation: u64,
        /// Why.
        message: String,
    },
    /// A reload attempt ended.
    ReloadEnded {
        /// The program.
        program: String,
        /// The generation the attempt started.
        generation: u64,
        /// How it failed; `None`: the new generation took over.
        failure: Option<ReloadFailure>,
        /// Why it failed, in words (empty when it succeeded).
        reason: String,
    },
    /// The program's state changed (`STARTING`, `RUNNING`, `BACKOFF`, `STOPPING`, `EXITED`,
    /// `FATAL`).
    StateChanged {
        /// The program.
        program: String,
        /// The state before (`None` at the first).
        from: Option<ProgramState>,
        /// The new state.
        to: ProgramState,
        /// Why, in words.
        reason: String,
    },
}

impl Event {
    /// The program the event is about.
    pub fn program(&self) -> &str {
        match self {
            Event::Spawned { program, .. }
            | Event::Ready { program, .. }
            | Event::Exited { program, .. }
            | Event::SpawnFailed { program, .. }
            | Event::ReloadEnded { program, .. }
            | Event::StateChanged { program, .. } => program,
        }
    }

    /// The event a report makes, if any; `workers` maps live children to their worker.
    pub(crate) fn from_report(
        program: &str,
        report: &Report,
        workers: &HashMap<i32, usize>,
    ) -> Option<Event> {
        let program = program.to_owned();
        let worker = |pid: i32| workers.get(&pid).copied().unwrap_or(0);
        Some(match report {
            Report::Spawned {
                generation, pid, ..
            } => Event::Spawned {
                program,
                generation: *generation,
                worker: worker(pid.as_raw()),
                pid: pid.as_raw(),
            },
            Report::Ready { generation, pid } => Event::Ready {
                program,
                generation: *generation,
                worker: worker(pid.as_raw()),
                pid: pid.as_raw(),
            },
            Report::Exited {
                generation,
                pid,
                status,
                expected,
            } => Event::Exited {
                program,
                generation: *generation,
                worker: worker(pid.as_raw()),
                pid: pid.as_raw(),
                status: *status,
                expected: *expected,
            },
            Report::SpawnFailed {
                generation,
                message,
            } => Event::SpawnFailed {
                program,
                generation: *generation,
                message: message.clone(),
            },
            Report::ReloadEnded {
                generation,
                failure,
                reason,
                ..
            } => Event::ReloadEnded {
                program,
                generation: *generation,
                failure: *failure,
                reason: reason.clone(),
            },
            Report::StateChanged { from, to, reason } => Event::StateChanged {
                program,
                from: *from,
                to: *to,
                reason: reason.clone(),
            },
            _ => return None,
        })
    }
}
