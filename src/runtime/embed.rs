//! The master run from code ([`crate::api`]): one master per process, the in-process
//! callers' inbox, events for subscribers, and programs added and removed at runtime.
//!
//! Requests of a library handle reach the runtime as the same `Ask`s the control socket
//! produces (see [`crate::control::local`]); only adding and removing programs are handled
//! here. Adding binds the new program's sockets and starts it; removing stops it by name and,
//! once its last child is gone, drops it, which closes its sockets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use tracing::info;

use super::apply::Role;
use super::{Master, Queued};
use crate::config::{Config, ProgramConfig};
use crate::control::local::Inbox;
use crate::program::Prepared;
use crate::sockets::activation::Inherited;
use crate::status::ReloadRecord;
use crate::supervisor::Report;
use crate::Failure;

/// Whether a master runs in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The right to run the one master of this process: it reaps every child of the process and
/// owns its signal handlers, so two would steal each other's children. Released on drop.
#[derive(Debug)]
pub(crate) struct Claim(());

impl Claim {
    /// Takes the claim, or says why not.
    pub(crate) fn take() -> Result<Claim, String> {
        match RUNNING.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => Ok(Claim(())),
            Err(_) => Err(
                "a relaunch master already runs in this process (one per process: \
                 it reaps every child of the process and owns its signal handlers)"
                    .to_owned(),
            ),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// A change to the set of programs, from a library caller.
#[derive(Debug)]
pub(crate) enum EditKind {
    /// Add this program (and start it if it autostarts).
    Add(Box<ProgramConfig>),
    /// Stop this program and remove it once its last child is gone.
    Remove(String),
}

/// An [`EditKind`], with where to answer: `Ok`, or why it was refused.
#[derive(Debug)]
pub(crate) struct Edit {
    /// What to change.
    pub(crate) kind: EditKind,
    /// Where the answer goes.
    pub(crate) reply: Sender<Result<(), String>>,
}

/// Runs the master for a library caller until it stops, taking requests from `inbox` and
/// changes to the set of programs from `edits` (each round; the sender wakes the master
/// through the inbox's wake socket).
pub(crate) fn run_embedded(
    config: Config,
    inbox: Inbox,
    edits: Receiver<Edit>,
    claim: Claim,
) -> Result<i32, Failure> {
    super::run_master(
        config,
        &mut None,
        no_file,
        Some((inbox, edits)),
        true,
        claim,
    )
}

/// A master run from code has no configuration file to read again.
fn no_file(_: &std::path::Path) -> Result<Config, String> {
    Err("no configuration file".to_owned())
}

/// A program being removed, and who to tell once it is gone.
#[derive(Debug)]
pub(super) struct Removing {
    name: String,
    reply: Sender<Result<(), String>>,
}

impl Master {
    /// Hands the reports of one step of program `i` to the library's subscribers, in the
    /// order they happened, except that a generation's `Ready` comes before the `ReloadEnded`
    /// of the reload it completed (the supervisor reports the reload's end first).
    pub(super) fn publish(&mut self, i: usize, reports: &[(Report, Option<ReloadRecord>)]) {
        let mut order: Vec<&Report> = Vec::with_capacity(reports.len());
        for (report, _) in reports {
            let ended = |r: &&Report, g: u64| matches!(r, Report::ReloadEnded { generation, failure: None, .. } if *generation == g);
            match report {
                Report::Ready { generation, .. } => {
                    match order.iter().position(|r| ended(r, *generation)) {
                        Some(at) => order.insert(at, report),
                        None => order.push(report),
                    }
                }
                _ => order.push(report),
            }
        }
        let program = &self.programs[i];
        let supervisor = program.supervisor();
        let worker = |pid: i32| {
            supervisor
                .members()
                .find(|(_, _, c)| c.pid.as_raw() == pid)
                .map(|(w, _, _)| w)
        };
        for report in order {
            self.control.publish(program.name(), report, worker);
        }
    }

    /// Adds and removes the programs library callers asked for.
    pub(super) fn apply_api_edits(&mut self, now: Instant, queue: &mut VecDeque<Queued>) {
        let edits: Vec<Edit> = match &self.api_edits {
            Some(rx) => rx.try_iter().collect(),
            None => return,
        };
        for edit in edits {
            let result = match edit.kind {
                EditKind::Add(config) => self.add_program(*config, now, queue),
                EditKind::Remove(name) => match self.remove_program(&name, now, queue) {
                    // Answered once the program is gone.
                    Ok(()) => {
                        self.removing.push(Removing {
                            name,
                            reply: edit.reply,
                        });
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            let _ = edit.reply.send(result);
        }
    }

    fn add_program(
        &mut self,
        config: ProgramConfig,
        now: Instant,
        queue: &mut VecDeque<Queued>,
    ) -> Result<(), String> {
        if self.stopping.is_some() {
            return Err("relaunch is stopping; not adding".to_owned());
        }
        let live = self.live_programs();
        if live.iter().any(|&i| self.programs[i].name() == config.name) {
            return Err(format!("a program named {:?} runs already", config.name));
        }
        let autostart = config.autostart;
        let program = Prepared::new(config, false)
            .and_then(|p| p.open(Inherited::default(), self.started, true))
            .map_err(|f: Failure| format!("{:#}", f.error))?;
        info!(program = %program.name(), "program added");
        // The same bookkeeping as a program added by an edited configuration file.
        let i = self.push_program(program, Role::Live);
        if autostart {
            self.start_program(i, now, queue);
        }
        Ok(())
    }

    fn remove_program(
        &mut self,
        name: &str,
        now: Instant,
        queue: &mut VecDeque<Queued>,
    ) -> Result<(), String> {
        let live = self.live_programs();
        let Some(i) = live
            .iter()
            .copied()
            .find(|&i| self.programs[i].name() == name)
        else {
            let valid: Vec<&str> = live.iter().map(|&i| self.programs[i].name()).collect();
            return Err(format!(
                "no program named {name:?} (the programs are: {})",
                valid.join(", ")
            ));
        };
        if live.len() == 1 {
            return Err(format!(
                "{name} is the last program; stop the master instead of removing it"
            ));
        }
        // As a program removed from the configuration file: hidden, stopped, and forgotten
        // (its sockets closed) once its last child is gone.
        self.leave(i, now, queue);
        Ok(())
    }

    /// Tells each caller whose program was removed, once it is gone: no program on its way
    /// out has its name any more.
    pub(super) fn finish_removals(&mut self) {
        let leaving = |m: &Master, name: &str| {
            (0..m.programs.len()).any(|i| !m.live(i) && m.programs[i].name() == name)
        };
        let mut k = 0;
        while k < self.removing.len() {
            if leaving(self, &self.removing[k].name) {
                k += 1;
                continue;
            }
            let r = self.removing.remove(k);
            info!(program = %r.name, "program removed");
            let _ = r.reply.send(Ok(()));
        }
    }
}
