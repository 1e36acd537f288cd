//! Restart delays: the capped exponential bound, and the exit code a failure maps to.

use std::time::Duration;

use super::{ExitStatus, Settings};

/// The exponential bound of the restart delay after `step` restarts in a row without a
/// start that counted: `backoff_min × backoff_factor^step`, at most `backoff_max`. With jitter,
/// the actual delay is drawn between `backoff_min` and this bound.
pub fn backoff_delay(settings: &Settings, step: u32) -> Duration {
    let factor = if settings.backoff_factor.is_finite() {
        settings.backoff_factor.max(1.0)
    } else {
        1.0
    };
    let nanos = settings.backoff_min.as_nanos() as f64 * factor.powi(step.min(4096) as i32);
    let max = settings.backoff_max;
    if !nanos.is_finite() || nanos >= max.as_nanos() as f64 {
        return max;
    }
    Duration::from_nanos(nanos.round() as u64).min(max)
}

/// The exit code relaunch would end with after a failure that ended with `status`: its shell
/// code, or 1 if that is 0 (a failure must not look like success).
pub(super) fn failure_code(status: ExitStatus) -> i32 {
    match status.shell_code() {
        0 => 1,
        code => code,
    }
}
