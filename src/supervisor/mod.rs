//! The supervisor: a pure state machine over generations of the server.
//!
//! It takes `Event`s stamped with a monotonic `now` and returns a `Step`: the `Action`s
//! the runtime must carry out, and [`Report`]s of what happened (spawned, ready, exited, restart
//! scheduled, reload started and ended with its failure kind, state changed with its reason).
//! Status, metrics, the service manager (`ServiceManager`) and the control plane's waiters
//! consume the reports; nobody compares snapshots. It never forks, signals, sleeps or reads a
//! clock itself, so every rule below is unit-tested in milliseconds (`tests/`, with the `Sim`
//! harness), and the runtime that drives it stays thin.
//!
//! # Files
//! - `machine.rs`: `Supervisor`, generations, reloads, stop escalation;
//! - `policy.rs`: the restart policy (backoff, retries, crash loop, FATAL);
//! - `backoff.rs`: the delay bound ([`backoff_delay`]);
//! - `events.rs`: `Event`, `Action`, [`Report`], `Step` and the values they carry;
//! - `fleet.rs`: [`Fleet`], the workers (`--workers N`): one supervisor per worker index, and
//!   the all-at-once and rolling reloads across them;
//! - `settings.rs`: [`Settings`] and the policy values (`--restart`, `--exit-codes`, ...);
//! - `manager.rs`: `ServiceManager`, the sd_notify messages upward, from the reports.
//!
//! # Generations and their states
//! Each child is one *generation* (numbered from 1). With `--workers N`, a [`Fleet`] runs one
//! such machine per worker index, and a generation is N children (see `fleet.rs`). A child is `Starting` until it has stayed
//! alive `start_secs` (after saying it is ready, with `--ready notify`/`fd:N`), then `Running`;
//! a child asked to stop is `Stopping` until it exits, and gets SIGKILL once `stop_wait` has
//! passed.
//!
//! The program as a whole is in one [`ProgramState`], stored (not derived), named as
//! supervisord's: STARTING,
//! RUNNING, BACKOFF (a restart is scheduled), STOPPING (relaunch shuts down), EXITED (the last
//! generation exited and `--restart` says not to restart it) and FATAL (restarting gave up).
//! A reload's pending generation does not change it. Every change is logged once, with its
//! reason (`state changed from=RUNNING to=BACKOFF reason=...`).
//!
//! # Rules (the invariants of the README)
//! - A reload starts a *pending* generation while the *current* one keeps serving. Only when the
//!   pending one has been alive `start_secs` is the old one sent the stop signal (plus SIGCONT).
//! - If the pending generation exits or fails to exec first, it is dropped and the current one
//!   is left untouched. A failed reload is not a failed start: the old generation serves.
//! - At most two generations are alive at any time, and at most one of them is not yet started:
//!   a reload requested while one is in progress, or while an old generation is still stopping,
//!   is *queued*; any number of requests in that time coalesce into one follow-up reload.
//! - On stop, every child gets the stop signal, SIGKILL after `stop_wait`; once all are gone the
//!   supervisor exits with the status of the child that was current, as a shell would.
//!
//! # Restart policy
//! | what happened, with nothing else serving | what follows |
//! |---|---|
//! | a started child exits; `--restart always` | restart after the backoff delay |
//! | … `on-failure`, killed by a signal or a code not in `--exit-codes` | restart after the delay |
//! | … `on-failure` with an expected code, or `--restart never`; `--on-exit wait` | EXITED: keep the sockets, wait for a reload |
//! | … the same with `--on-exit exit` | stop what is left, exit with the child's status as a shell gives it (code, or 128 + signal) |
//! | a child fails to start (exits before it counts as started, cannot be executed, is not ready in time), whatever `--restart` says, and no generation ever served | retry after the delay; the `start_retries + 1`-th failure in a row is FATAL (a deploy that never came up fails fast) |
//! | … once a generation has served (was RUNNING at least once) | BACKOFF: retry after the delay, capped at `backoff_max`, for as long as it takes, with the sockets open; `start_retries` does not apply |
//! | more than `max_restarts` restarts within `restart_window` | FATAL (crash loop); the only way a program that has served becomes FATAL |
//! | FATAL with `--on-fatal exit` | stop what is left, exit with the last failure's status (never 0) |
//! | FATAL with `--on-fatal wait` | keep the sockets, wait for a reload |
//! | a reload, in any state | a new generation now; fresh retry count, backoff and window |
//!
//! In BACKOFF the reason says what failed, how many restarts in a row failed, and which restart
//! attempt follows (`Supervisor::restart_attempt`). Each failure is logged as a warning;
//! while a program that has served keeps failing to come back, one error line is logged at the
//! first failure and then at most one per `backoff_max`, so a long outage does not flood the
//! log. The reason is kept true in every transition: a generation that is gone is never
//! said to be up.
//!
//! relaunch's own service manager hears `READY=1` once the first generation is up, and
//! `RELOADING=1` only after that, once per reload (a reload asked for during the first start is
//! queued, and announced when it starts), each followed by one `READY=1`.
//!
//! The delay after `n` restarts in a row without a start that counted is bounded by
//! `backoff_min × backoff_factor^n`, capped at `backoff_max`, and starts over once a child
//! counts as started. With jitter (the default) each delay is drawn uniformly between
//! `backoff_min` and that bound ("full jitter" with a floor: the first restart still comes after
//! `backoff_min`, and no delay is ever shorter). The randomness comes from a xorshift generator
//! seeded through `Supervisor::with_seed`, so the machine stays pure and its tests
//! deterministic. All times are the caller's monotonic `now`.

mod backoff;
mod events;
mod fleet;
mod machine;
mod manager;
mod policy;
mod settings;
#[cfg(test)]
mod tests;

pub use backoff::backoff_delay;
pub(crate) use events::{Action, Event, SpawnFailure, Step};
pub use events::{
    Child, ExitStatus, Phase, ProgramState, ReloadFailure, Report, SpawnCause, Trigger,
};
pub use fleet::Fleet;
#[cfg(test)]
pub(crate) use machine::Supervisor;
pub(crate) use manager::{ManagerMessage, ServiceManager};
pub use settings::{ExitCodes, OnExit, OnFatal, ReloadStrategy, RestartPolicy, Settings};
