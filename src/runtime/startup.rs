//! `--daemon` with several programs: the waiting shell command hears of success once every
//! autostart program is up (each of its workers), and of a failure, naming the program, as
//! soon as one of them fails to come up (its first generation exited, was not ready in time,
//! or could not be started); relaunch then stops the others and exits non-zero.

use nix::sys::signal::Signal;
use tracing::{error, info};

use super::Master;
use crate::program::Run;
use crate::supervisor::ProgramState;

impl Master {
    /// With several programs: like [`Master::check_startup`] for the command line's one.
    pub(super) fn check_startup_named(&mut self) -> Option<Signal> {
        let startup = self.startup.as_ref()?;
        if startup.reason.is_some() {
            return None; // already failed; stopping
        }
        let mut failed = None;
        for i in self.live_programs() {
            let p = &self.programs[i];
            if !p.config().autostart || self.ready_each[i] || p.run_state() != Run::Started {
                continue; // up already, or not started yet (waiting for its turn)
            }
            let sup = p.supervisor();
            let down = sup.is_done()
                || sup.is_stopping()
                || matches!(
                    sup.state(),
                    ProgramState::Backoff | ProgramState::Fatal | ProgramState::Exited
                );
            if down {
                failed = Some(format!(
                    "program {} did not come up: {}",
                    p.name(),
                    sup.state_reason()
                ));
                break;
            }
        }
        if failed.is_none() && self.stopping.is_some() {
            failed = Some("relaunch was asked to stop before every program was up".to_owned());
        }
        if let Some(reason) = failed {
            error!(reason = %reason, "not detaching: a program did not come up; stopping");
            let stopping = self.stopping.is_some();
            if let Some(startup) = &mut self.startup {
                startup.reason = Some(reason);
            }
            return (!stopping).then_some(Signal::SIGTERM);
        }
        if self.to_start.is_empty() && self.all_up() {
            info!("every program is up; detached");
            if let Some(startup) = self.startup.take() {
                startup.succeeded();
            }
        }
        None
    }
}
