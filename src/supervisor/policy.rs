//! The restart policy: what follows when a generation exits or fails to start, with nothing
//! else serving. `--restart` and `--exit-codes` for a generation that ran; `--start-retries`
//! for one that never started; the backoff delay with its jitter; crash-loop detection
//! (`--max-restarts` within `--restart-window`); and FATAL with `--on-fatal`. The other half of
//! [`Supervisor`]'s methods; see the module docs of [`super`] for the table.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::backoff::{backoff_delay, failure_code};
use super::events::{Action, ExitStatus, ProgramState, Report};
use super::machine::Supervisor;
use super::settings::{OnFatal, RestartPolicy};

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
            self.failure_code = failure_code(status);
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
        warn!(
            generation,
            status = %status,
            "no restart ({rule}); relaunch keeps the sockets open and waits: send SIGHUP to start a new generation, or SIGTERM to exit"
        );
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
        self.failures = self.failures.saturating_add(1);
        self.failure_code = code;
        if self.served {
            // The program has served: this is an outage, not a bad deploy. Keep the sockets
            // and retry with a capped backoff for as long as it takes; only --max-restarts
            // gives up (in schedule_restart).
            let failures = self.failures;
            self.schedule_restart(
                now,
                format!("{why} (failed restarts in a row: {failures})"),
                out,
            );
            self.log_outage(now, &why);
            return;
        }
        let allowed = self.settings.start_retries.saturating_add(1);
        if self.failures >= allowed {
            let reason = format!(
                "{} consecutive start failures (--start-retries {}); last: {why}",
                self.failures, self.settings.start_retries
            );
            self.fatal(now, reason, out);
        } else {
            let why = format!("{why} (start failure {} of {allowed})", self.failures);
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
            .outage_logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < period)
        {
            return;
        }
        self.outage_logged_at = Some(now);
        let limit = match self.settings.max_restarts {
            Some(max) => format!(
                "until more than {max} restarts within {:?} make it FATAL (--max-restarts)",
                self.settings.restart_window
            ),
            None => "without giving up (--max-restarts N would)".to_owned(),
        };
        error!(
            failures = self.failures,
            attempt = self.backoff_step,
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
                .restart_times
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
            {
                self.restart_times.pop_front();
            }
            if self.restart_times.len() >= max as usize {
                let reason = format!(
                    "crash loop: {why}, after {} restarts within --restart-window {:?} (--max-restarts {max})",
                    self.restart_times.len(),
                    window
                );
                self.fatal(now, reason, out);
                return;
            }
            self.restart_times.push_back(now);
        }
        let delay = self.next_delay();
        self.backoff_step = self.backoff_step.saturating_add(1);
        let attempt = self.backoff_step;
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
        let bound = backoff_delay(&self.settings, self.backoff_step);
        let min = self.settings.backoff_min;
        if !self.settings.jitter || bound <= min {
            return bound;
        }
        let span = (bound - min).as_nanos().min(u64::MAX as u128 - 1) as u64;
        min + Duration::from_nanos(self.random() % (span + 1))
    }

    /// xorshift64*: plenty for spreading restarts, and deterministic for a given seed.
    pub(super) fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Restarting gave up. Logs it loudly, then exits (stopping whatever is left) or waits
    /// for a reload, by `on_fatal`.
    pub(super) fn fatal(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        let code = self.failure_code;
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
