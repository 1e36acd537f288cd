//! The service-manager bookkeeping: which sd_notify messages relaunch sends *upward*, to its
//! own service manager (`NOTIFY_SOCKET` of relaunch itself), worked out from the supervisor's
//! [`Report`]s alone. `READY=1` once the first generation is up; `RELOADING=1` when a reload
//! starts after that, then `READY=1` with the outcome once no follow-up is queued; `STOPPING=1`; and a
//! `STATUS=` line for the states in which nothing serves (BACKOFF, EXITED, FATAL). Pure: the
//! runtime sends what it returns.

use super::events::{ProgramState, Report};

/// A state change relaunch reports to its own service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerMessage {
    /// `READY=1`: the first generation is up, or a reload ended.
    Ready {
        /// `STATUS=` text.
        status: String,
    },
    /// `RELOADING=1`: a reload started.
    Reloading {
        /// `STATUS=` text.
        status: String,
    },
    /// `STOPPING=1`.
    Stopping,
    /// Just a `STATUS=` line: nothing serves, and why (BACKOFF, EXITED, FATAL).
    Status {
        /// `STATUS=` text.
        status: String,
    },
}

/// What the service manager was told so far.
#[derive(Debug, Clone, Default)]
pub struct ServiceManager {
    /// Told `RELOADING=1` and not yet `READY=1`.
    reloading: bool,
    /// Ever told `READY=1`.
    ready: bool,
    /// The program began to stop.
    stopping: bool,
}

impl ServiceManager {
    /// The messages `report` calls for, in order (usually none or one).
    pub fn on(&mut self, report: &Report) -> Option<ManagerMessage> {
        match report {
            // RELOADING=1 only after READY=1, when a reload really starts: one asked for during
            // the first start, or behind another, is announced when it starts.
            Report::ReloadStarted { trigger, .. } if self.ready && !self.reloading => {
                self.reloading = true;
                Some(ManagerMessage::Reloading {
                    status: format!("reloading ({trigger})"),
                })
            }
            Report::ReloadEnded {
                failure,
                reason,
                serving,
                follow_up,
                ..
            } if self.reloading && (!*follow_up || self.stopping) => {
                self.reloading = false;
                if self.stopping {
                    return None;
                }
                self.ready = true;
                let status = match (serving, failure) {
                    (Some((generation, pid)), None) => format!(
                        "generation {generation} (pid {pid}) serving; last reload succeeded"
                    ),
                    (Some((generation, pid)), Some(_)) => format!(
                        "generation {generation} (pid {pid}) serving; last reload failed: {reason}"
                    ),
                    (None, _) => format!("no generation serving; last reload failed: {reason}"),
                };
                Some(ManagerMessage::Ready { status })
            }
            Report::Ready { generation, pid } if !self.ready => {
                self.ready = true;
                Some(ManagerMessage::Ready {
                    status: format!("generation {generation} (pid {pid}) serving"),
                })
            }
            Report::Stopping => {
                self.stopping = true;
                Some(ManagerMessage::Stopping)
            }
            Report::StateChanged { to, reason, .. }
                if matches!(
                    to,
                    ProgramState::Backoff | ProgramState::Exited | ProgramState::Fatal
                ) =>
            {
                Some(ManagerMessage::Status {
                    status: format!("{to}: {reason}"),
                })
            }
            _ => None,
        }
    }
}
