//! Waiting on conditions with deadlines, never sleeping to synchronise.

use super::*;

/// Polls `f` every 10 ms until it returns true; false if `timeout` passed first.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `f` until it returns true; panics naming `what` after `timeout`.
/// Prefer [`Relaunch::wait_until`], which also prints relaunch's stderr.
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    if !poll_until(timeout, f) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Time left until `deadline` (zero if it passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
