//! The restart policy: what follows when a generation exits or fails to start, with nothing
//! else serving. `--restart` and `--exit-codes` for a generation that ran; `--start-retries`
//! for one that never started; the backoff delay with its jitter; crash-loop detection
//! (`--max-restarts` within `--restart-window`); FATAL with `--on-fatal`; and what follows an
//! exit that is not restarted (`--on-exit`). The other half of
//! [`Supervisor`]'s methods; see the module docs of [`super`] for the table.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::backoff::{backoff_delay, failure_code};
use super::events::{Action, ExitStatus, ProgramState, Report};
use super::machine::Supervisor;
use super::settings::{OnExit, OnFatal, RestartPolicy};

/// The restart policy's bookkeeping.
#[derive(Debug)]
pub(super) struct Restarts {
    /// Consecutive failed starts (children that died, could not be executed or were not
    /// ready in time before counting as started). Reset when one starts, and by a reload.
    pub(super) failures: u32,
    /// Automatic restarts since a child last counted as started: the backoff's exponent.
    pub(super) backoff_step: u32,
    /// When automatic restarts were scheduled, within `restart_window` (`max_restarts`).
    pub(super) restart_times: VecDeque<Instant>,
    /// The exit code a FATAL program would end relaunch with: the last failure's status.
    pub(super) failure_code: i32,
    /// State of the jitter's xorshift generator (never 0).
    pub(super) rng: u64,
    /// Whether a generation ever counted as started (RUNNING). From then on, failed restarts
    /// back off for as long as it takes; only `max_restarts` gives up.
    pub(super) served: bool,
    /// When the last error line about an outage (a served program failing to come back) was
    /// logged: at most one per `backoff_max`. Cleared once a generation counts as started.
    pub(super) outage_logged_at: Option<Instant>,
}

impl Restarts {
    /// Nothing failed yet; the jitter seeded with `seed`.
    pub(super) fn new(seed: u64) -> Restarts {
        Restarts {
            failures: 0,
            backoff_step: 0,
            restart_times: VecDeque::new(),
            failure_code: 1,
            rng: if seed == 0 {
                0x2545_F491_4F6C_DD1D
            } else {
                seed
            },
            served: false,
            outage_logged_at: None,
        }
    }

    /// A generation counted as started: the counts start over, and the program has served.
    pub(super) fn started(&mut self) {
        self.failures = 0;
        self.backoff_step = 0;
        self.served = true;
        self.outage_logged_at = None;
    }
}

impl Supervisor {
    /// A generation that had counted as started exited: restart it or not, by `--restart`.
    pub(super) fn ran_and_exited(
        &mut self,
        now: Instant,
        generation: u64,
        status: ExitStatus,
        out: &mut Vec<Action>,
    ) {
        let expected = match status {
            ExitStatus::Code(c) => self.settings.exit_codes.contains(c),
            // A signal is never an expected end, whatever the exit codes say.
            ExitStatus::Signal(_) => false,
        };
        let restart = match self.settings.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !expected,
            RestartPolicy::Never => false,
        };
        let why = format!("generation {generation} {}", status.ended());
        if restart {
            self.restarts.failure_code = failure_code(status);
            self.schedule_restart(now, why, out);
            return;
        }
        let rule = match self.settings.restart {
            RestartPolicy::Never => "--restart never".to_owned(),
            _ => format!(
                "an expected exit under --restart on-failure (--exit-codes {})",
                self.settings.exit_codes
            ),
        };
        self.set_state(
            ProgramState::Exited,
            format!("{why}: {rule}, not restarted"),
        );
        match self.settings.on_exit {
            OnExit::Wait => warn!(
                generation,
                status = %status,
                "no restart ({rule}); relaunch keeps the sockets open and waits (--on-exit wait): send SIGHUP to start a new generation, or SIGTERM to exit"
            ),
            OnExit::Exit => {
                warn!(
                    generation,
                    status = %status,
                    code = status.shell_code(),
                    "no restart ({rule}); relaunch exits with the program's status (--on-exit exit)"
                );
                // The exit code is the last status, as a shell would give it (`check_done`).
                self.shutdown(now, out);
            }
        }
    }

    /// A generation failed to start (it exited, could not be executed, or was not ready in
    /// time) and none serves: retry after a backoff, or give up once `start_retries` retries
    /// have failed too.
    pub(super) fn start_failed(
        &mut self,
        now: Instant,
        why: String,
        code: i32,
        out: &mut Vec<Action>,
    ) {
        if self.stopping {
            return;
        }
        self.restarts.failures = self.restarts.failures.saturating_add(1);
        self.restarts.failure_code = code;
        if self.restarts.served {
            // The program has served: this is an outage, not a bad deploy. Keep the sockets
            // and retry with a capped backoff for as long as it takes; only --max-restarts
            // gives up (in schedule_restart).
            let failures = self.restarts.failures;
            self.schedule_restart(
                now,
                format!("{why} (failed restarts in a row: {failures})"),
                out,
            );
            self.log_outage(now, &why);
            return;
        }
        let allowed = self.settings.start_retries.saturating_add(1);
        if self.restarts.failures >= allowed {
            let reason = format!(
                "{} consecutive start failures (--start-retries {}); last: {why}",
                self.restarts.failures, self.settings.start_retries
            );
            self.fatal(now, reason, out);
        } else {
            let why = format!(
                "{why} (start failure {} of {allowed})",
                self.restarts.failures
            );
            self.schedule_restart(now, why, out);
        }
    }

    /// Logs an error about a served program that keeps failing to come back, at most once per
    /// `backoff_max` (each failure is also a warning of its own), so that a long outage does
    /// not flood the log.
    fn log_outage(&mut self, now: Instant, why: &str) {
        let idle = matches!(self.state, ProgramState::Exited | ProgramState::Fatal);
        if idle || self.stopping {
            return;
        }
        let period = self.settings.backoff_max.max(Duration::from_millis(1));
        if self
            .restarts
            .outage_logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < period)
        {
            return;
        }
        self.restarts.outage_logged_at = Some(now);
        let limit = match self.settings.max_restarts {
            Some(max) => format!(
                "until more than {max} restarts within {:?} make it FATAL (--max-restarts)",
                self.settings.restart_window
            ),
            None => "without giving up (--max-restarts N would)".to_owned(),
        };
        error!(
            failures = self.restarts.failures,
            attempt = self.restarts.backoff_step,
            reason = %why,
            "the server keeps failing to come back; relaunch keeps the sockets open and retries, {:?} apart at most (--backoff-max), {limit}; this error repeats at most once per --backoff-max, each failure is a warning",
            self.settings.backoff_max
        );
    }

    /// A reload's new generation ended before it was promoted (it failed). If the old one is
    /// gone too, nothing serves: that counts as a failed start.
    pub(super) fn after_reload_attempt(
        &mut self,
        now: Instant,
        why: String,
        code: i32,
        out: &mut Vec<Action>,
    ) {
        if self.stopping {
            return;
        }
        let idle = matches!(self.state, ProgramState::Exited | ProgramState::Fatal);
        if self.current.is_none() && self.backoff.is_none() && self.spawning.is_none() && !idle {
            self.start_failed(now, why, code, out);
        }
    }

    /// Schedules an automatic restart after the backoff delay, unless the crash-loop limit
    /// (`max_restarts` within `restart_window`) is reached, which makes the program FATAL.
    pub(super) fn schedule_restart(&mut self, now: Instant, why: String, out: &mut Vec<Action>) {
        if self.stopping || self.backoff.is_some() {
            return;
        }
        if let Some(max) = self.settings.max_restarts {
            let window = self.settings.restart_window;
            while self
                .restarts
                .restart_times
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
            {
                self.restarts.restart_times.pop_front();
            }
            if self.restarts.restart_times.len() >= max as usize {
                let reason = format!(
                    "crash loop: {why}, after {} restarts within --restart-window {:?} (--max-restarts {max})",
                    self.restarts.restart_times.len(),
                    window
                );
                self.fatal(now, reason, out);
                return;
            }
            self.restarts.restart_times.push_back(now);
        }
        let delay = self.next_delay();
        self.restarts.backoff_step = self.restarts.backoff_step.saturating_add(1);
        let attempt = self.restarts.backoff_step;
        let generation = self.new_generation();
        let delay_ms = delay.as_millis() as u64;
        info!(generation, delay_ms, attempt, reason = %why, "restarting");
        self.set_state(
            ProgramState::Backoff,
            format!(
                "{why}; generation {generation} follows in {delay_ms} ms (restart attempt {attempt})"
            ),
        );
        self.backoff = Some((now + delay, generation));
        self.report(Report::RestartScheduled {
            generation,
            at: now + delay,
        });
    }

    /// The next restart delay: the exponential bound for `backoff_step`, or with jitter a
    /// uniform draw between `backoff_min` and that bound.
    pub(super) fn next_delay(&mut self) -> Duration {
        let bound = backoff_delay(&self.settings, self.restarts.backoff_step);
        let min = self.settings.backoff_min;
        if !self.settings.jitter || bound <= min {
            return bound;
        }
        let span = (bound - min).as_nanos().min(u64::MAX as u128 - 1) as u64;
        min + Duration::from_nanos(self.random() % (span + 1))
    }

    /// xorshift64*: plenty for spreading restarts, and deterministic for a given seed.
    pub(super) fn random(&mut self) -> u64 {
        let mut x = self.restarts.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.restarts.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Restarting gave up. Logs it loudly, then exits (stopping whatever is left) or waits
    /// for a reload, by `on_fatal`.
    pub(super) fn fatal(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        let code = self.restarts.failure_code;
        self.backoff = None;
        self.set_state(ProgramState::Fatal, reason);
        match self.settings.on_fatal {
            OnFatal::Exit => {
                error!(
                    code,
                    reason = %self.reason,
                    "FATAL: giving up on the server; relaunch exits with code {code} (--on-fatal exit). Fix the server (its output above says why it failed), then start relaunch again; --on-fatal wait keeps the sockets and waits for SIGHUP instead"
                );
                self.shutdown(now, out);
            }
            OnFatal::Wait => error!(
                reason = %self.reason,
                "FATAL: giving up on the server; relaunch keeps the sockets open and waits (--on-fatal wait). Fix the server (its output above says why it failed), then send SIGHUP to try again with a fresh retry count, or SIGTERM to exit"
            ),
        }
    }
}
