//! What `relaunch status` and the metrics endpoint report, and how the master keeps it.
//!
//! The supervisor stays pure and keeps no clock of its own: a `Tracker` keeps the rest. The
//! runtime hands it every [`Report`] of the supervisor (spawned, ready, exited, reload started
//! and ended with its failure kind, ...); the tracker stamps them with the loop's monotonic
//! `now` and keeps what a status record needs: when each generation was started and became
//! ready, when each reload attempt started and what triggered it, the last 20 events,
//! counters, and a histogram of reload durations. It guesses nothing: restarts and failure
//! kinds are what the supervisor reported.
//!
//! Times are monotonic ([`Instant`]) inside and converted to wall-clock RFC 3339 strings (UTC,
//! milliseconds) only when a record is built ([`Clock`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::supervisor::{ExitStatus, Fleet, Phase, ReloadFailure, Report, SpawnCause};

/// How many events the history keeps.
pub const HISTORY_LEN: usize = 20;

/// Upper bounds (seconds) of the reload duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 11] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

// ---------------------------------------------------------------------------------------------
// The record (JSON): shared by the master (serialises) and the client (deserialises). Every
// struct takes defaults for missing fields, so a client reads records of older and newer
// masters alike; unknown fields are ignored.

/// The answer to `status`: everything about one running relaunch. See the README for each
/// field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusRecord {
    /// The master's name (`--name`).
    pub name: String,
    /// The master's pid (never changes).
    pub pid: i32,
    /// relaunch's version.
    pub version: String,
    /// When the master started (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since the master started.
    pub uptime_secs: f64,
    /// The program's state: `STARTING`, `RUNNING`, `BACKOFF`, `STOPPING`, `EXITED` or `FATAL`
    /// (supervisord's names; see [`crate::supervisor::ProgramState`]).
    pub state: String,
    /// Why the program is in that state, as logged with `state changed` (which generation is
    /// up, the last exit for EXITED, the retries used up for FATAL).
    #[serde(default)]
    pub state_reason: String,
    /// Whether a reload attempt is in progress.
    pub reloading: bool,
    /// Whether a follow-up reload is queued behind it (requests coalesce into it).
    pub reload_queued: bool,
    /// The control socket's path, if there is one.
    pub control: Option<String>,
    /// The listening sockets, in fd order.
    pub sockets: Vec<SocketRecord>,
    /// Worker processes per generation (`--workers`).
    pub workers: usize,
    /// How many workers are up (their serving child is RUNNING).
    pub workers_up: usize,
    /// Every live child: current, pending (a reload's new one), retiring (stopping); with
    /// several workers, one entry per worker's child, in worker order.
    pub generations: Vec<GenerationRecord>,
    /// The restart scheduled after a crash, if any.
    pub backoff: Option<BackoffRecord>,
    /// The outcome of the last reload attempt that ended.
    pub last_reload: Option<ReloadRecord>,
    /// Counters since the master started.
    pub counters: Counters,
    /// The last [`HISTORY_LEN`] events, oldest first.
    pub history: Vec<HistoryEntry>,
    /// With several programs (or a config file): one record per program, in start order,
    /// each named after its program (`name`) and holding the per-program fields (state,
    /// reason, sockets, generations, backoff, last reload, counters, history). Absent for the
    /// command line's single program.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<StatusRecord>,
    /// Why the config file last read could not be applied (file, line and what is wrong);
    /// `null` once a valid file is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
}

/// One listening socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketRecord {
    /// Its fd number in the children (3, 4, ...).
    pub fd: i32,
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    /// Its kind (`tcp`).
    pub kind: String,
    /// The bound address.
    pub address: String,
}

/// One live generation of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationRecord {
    /// Its generation number.
    pub generation: u64,
    /// Its pid.
    pub pid: i32,
    /// Its worker index (`RELAUNCH_WORKER`; 0 with one worker).
    pub worker: usize,
    /// `current` (serving), `pending` (a reload's new generation) or `retiring` (stopping).
    pub role: String,
    /// `STARTING`, `RUNNING` or `STOPPING`.
    pub state: String,
    /// When it was spawned (RFC 3339).
    pub started_at: Option<String>,
    /// When it counted as up (RFC 3339): alive `--start-secs` (timer), or after `READY=1`
    /// and `--start-secs` (notify, fd:N). `null` while it is not.
    pub ready_at: Option<String>,
    /// The last `STATUS=` text it sent (sd_notify), if any.
    pub status: Option<String>,
}

/// A restart scheduled after a crash.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffRecord {
    /// The generation the restart will start.
    pub generation: u64,
    /// When (RFC 3339).
    pub restart_at: String,
    /// Seconds from now.
    pub restart_in_secs: f64,
    /// Which automatic restart in a row this is, since a generation last counted as started
    /// (or since the last reload): 1 after a crash, then 2, 3, ... while restarts fail.
    pub attempt: u32,
    /// Failed starts in a row so far (generations that exited, could not be executed or were
    /// not ready in time before they counted as started).
    pub start_failures: u32,
}

/// The outcome of one reload attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadRecord {
    /// The generation the attempt started.
    pub generation: u64,
    /// What triggered it: `SIGHUP`, `control`, ...
    pub trigger: String,
    /// `ok` or `failed`.
    pub result: String,
    /// When it failed, how: `exited` (the new generation exited before it was up),
    /// `not_ready` (not up in time), `spawn` (it could not be started: exec failed), or
    /// `stopping` (relaunch began to stop).
    pub failure: Option<String>,
    /// Why it failed, in words.
    pub reason: Option<String>,
    /// The new generation's pid, if it was started.
    pub pid: Option<i32>,
    /// When the attempt started (RFC 3339).
    pub started_at: Option<String>,
    /// How long it took, start to end, in seconds.
    pub duration_secs: f64,
    /// When it failed: the last lines the new generation wrote (at most 20 lines, 4 KiB),
    /// oldest first; empty when it wrote nothing or its output is not captured
    /// (`--output inherit` without log files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<OutputLine>,
}

/// One line a child wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
}

impl ReloadRecord {
    /// Whether the reload succeeded.
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// Counters since the master started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Reload attempts that succeeded.
    pub reloads_ok: u64,
    /// Reload attempts that failed (the old generation kept serving).
    pub reloads_failed: u64,
    /// Restarts after the server exited on its own (crash or unexpected exit).
    pub restarts: u64,
    /// Spawns that failed before the program ran (exec failed, program missing).
    pub spawn_failures: u64,
}

/// One event in the history. `event` says which; the other fields are present when they
/// apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `reload` (an attempt ended), `exit` (a generation exited), `restart` (a generation
    /// was started after a crash) or `spawn_failed`.
    pub event: String,
    /// The generation concerned.
    pub generation: u64,
    /// Its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// `reload`: what triggered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `reload`: `ok` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// `reload` that failed, `spawn_failed`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `reload`: how long it took, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// `exit`: its exit code, if it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// `exit`: the signal that killed it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `exit`: whether relaunch had asked it to stop (an old generation after a reload, or at
    /// shutdown) rather than it exiting on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Clock

/// Converts monotonic instants to wall-clock time, anchored at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    mono: Instant,
    wall: SystemTime,
}

impl Clock {
    /// A clock anchored now.
    pub fn now() -> Clock {
        Clock {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// A clock that maps `mono` to `wall`.
    pub fn anchored(mono: Instant, wall: SystemTime) -> Clock {
        Clock { mono, wall }
    }

    /// The wall-clock time of `t`.
    pub fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.mono {
            self.wall + (t - self.mono)
        } else {
            self.wall - (self.mono - t)
        }
    }

    /// `t` as RFC 3339 (UTC, milliseconds).
    pub fn rfc3339(&self, t: Instant) -> String {
        rfc3339(self.wall(t))
    }
}

/// Formats a wall-clock time as RFC 3339 in UTC with milliseconds:
/// `2023-11-14T22:13:20.000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(e) => {
            let d = e.duration();
            let ms = d.as_millis() as i64;
            (-((ms + 999) / 1000), ((1000 - ms % 1000) % 1000) as u32)
        }
    };
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds with millisecond precision, for JSON.
fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Tracker

/// What the tracker knows about one generation.
#[derive(Debug, Clone, Default)]
struct GenInfo {
    pid: Option<Pid>,
    spawned_at: Option<Instant>,
    ready_at: Option<Instant>,
}

/// A reload attempt in progress.
#[derive(Debug, Clone)]
struct Attempt {
    trigger: String,
    started: Instant,
}

/// A histogram of reload durations, in [`DURATION_BUCKETS`] (not cumulative here).
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram {
    /// Count per bucket, plus one for `+Inf`.
    pub counts: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of all observations, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// Keeps what status needs, by watching the supervisor from the edge. See the module docs.
#[derive(Debug)]
pub(crate) struct Tracker {
    started: Instant,
    generations: BTreeMap<u64, GenInfo>,
    attempts: BTreeMap<u64, Attempt>,
    history: VecDeque<(Instant, HistoryEntry)>,
    counters: Counters,
    durations: Histogram,
    last_reload: Option<(Instant, ReloadRecord)>,
}

impl Tracker {
    /// A tracker for a master that started at `started`.
    pub fn new(started: Instant) -> Tracker {
        Tracker {
            started,
            generations: BTreeMap::new(),
            attempts: BTreeMap::new(),
            history: VecDeque::new(),
            counters: Counters::default(),
            durations: Histogram::default(),
            last_reload: None,
        }
    }

    /// When the master started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Counters since the start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The reload duration histogram.
    pub fn durations(&self) -> &Histogram {
        &self.durations
    }

    fn push(&mut self, at: Instant, entry: HistoryEntry) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back((at, entry));
    }

    /// Call with every report of the supervisor, in order, stamped with the step's `now`.
    /// Returns the record of a reload attempt that ended ([`Report::ReloadEnded`]).
    pub fn on(&mut self, report: &Report, clock: &Clock, now: Instant) -> Option<ReloadRecord> {
        match report {
            Report::Exited {
                generation,
                pid,
                status,
                expected,
            } => {
                let (code, signal) = match status {
                    ExitStatus::Code(c) => (Some(*c), None),
                    ExitStatus::Signal(s) => (None, Some(*s)),
                };
                self.push(
                    now,
                    HistoryEntry {
                        event: "exit".into(),
                        generation: *generation,
                        pid: Some(pid.as_raw()),
                        code,
                        signal,
                        expected: Some(*expected),
                        ..HistoryEntry::default()
                    },
                );
            }
            Report::ReloadStarted {
                generation,
                trigger,
            } => {
                self.attempts.entry(*generation).or_insert_with(|| Attempt {
                    trigger: trigger.to_string(),
                    started: now,
                });
            }
            Report::Ready { generation, .. } => {
                let info = self.generations.entry(*generation).or_default();
                if info.ready_at.is_none() {
                    info.ready_at = Some(now);
                }
            }
            Report::Spawned {
                generation,
                pid,
                cause,
            } => {
                let info = self.generations.entry(*generation).or_default();
                info.spawned_at = Some(now);
                info.pid = Some(*pid);
                if *cause == SpawnCause::Restart {
                    self.counters.restarts += 1;
                    self.push(
                        now,
                        HistoryEntry {
                            event: "restart".into(),
                            generation: *generation,
                            pid: Some(pid.as_raw()),
                            ..HistoryEntry::default()
                        },
                    );
                }
                self.trim();
            }
            Report::SpawnFailed {
                generation,
                message,
            } => {
                self.generations.entry(*generation).or_default().spawned_at = Some(now);
                self.counters.spawn_failures += 1;
                self.push(
                    now,
                    HistoryEntry {
                        event: "spawn_failed".into(),
                        generation: *generation,
                        reason: Some(message.clone()),
                        ..HistoryEntry::default()
                    },
                );
                self.trim();
            }
            Report::ReloadEnded {
                generation,
                failure,
                reason,
                ..
            } => return Some(self.reload_done(*generation, *failure, reason, clock, now)),
            _ => {}
        }
        None
    }

    /// Keeps a bounded number of generations (the newest ones).
    fn trim(&mut self) {
        while self.generations.len() > 32 {
            self.generations.pop_first();
        }
    }

    /// Records the end of the reload attempt `generation` and returns its outcome.
    fn reload_done(
        &mut self,
        generation: u64,
        failure: Option<ReloadFailure>,
        reason: &str,
        clock: &Clock,
        now: Instant,
    ) -> ReloadRecord {
        let ok = failure.is_none();
        let attempt = self.attempts.remove(&generation);
        let started = attempt.as_ref().map_or(now, |a| a.started);
        let trigger = attempt.map_or_else(|| "unknown".to_owned(), |a| a.trigger);
        let duration = now.saturating_duration_since(started);
        let info = self
            .generations
            .get(&generation)
            .cloned()
            .unwrap_or_default();
        if ok {
            self.counters.reloads_ok += 1;
        } else {
            self.counters.reloads_failed += 1;
        }
        self.durations.observe(duration.as_secs_f64());
        let record = ReloadRecord {
            generation,
            trigger: trigger.clone(),
            result: if ok { "ok" } else { "failed" }.into(),
            failure: failure.map(|f| f.as_str().to_owned()),
            reason: (!ok).then(|| reason.to_owned()),
            pid: info.pid.map(Pid::as_raw),
            started_at: Some(clock.rfc3339(started)),
            duration_secs: secs(duration),
            output_tail: Vec::new(),
        };
        self.push(
            now,
            HistoryEntry {
                event: "reload".into(),
                generation,
                pid: record.pid,
                trigger: Some(trigger),
                result: Some(record.result.clone()),
                reason: record.reason.clone(),
                duration_secs: Some(record.duration_secs),
                ..HistoryEntry::default()
            },
        );
        self.last_reload = Some((now, record.clone()));
        record
    }

    /// Adds the failed generation's last output to the record of its reload attempt.
    pub fn set_output_tail(&mut self, generation: u64, tail: &[OutputLine]) {
        if let Some((_, record)) = &mut self.last_reload {
            if record.generation == generation {
                record.output_tail = tail.to_vec();
            }
        }
    }

    /// The program's state as one word.
    pub fn state(sup: &Fleet) -> &'static str {
        sup.state().as_str()
    }

    /// Builds the status record. `master` holds the fields the tracker does not know (name,
    /// pid, version, control path, sockets); the rest is filled in here.
    pub fn record(
        &self,
        sup: &Fleet,
        master: &StatusRecord,
        clock: &Clock,
        now: Instant,
    ) -> StatusRecord {
        let at = |t: Instant| clock.rfc3339(t);
        let generations = sup
            .members()
            .map(|(worker, role, c)| {
                let info = self.generations.get(&c.generation);
                GenerationRecord {
                    generation: c.generation,
                    pid: c.pid.as_raw(),
                    worker,
                    role: role.into(),
                    state: match c.phase {
                        Phase::Starting { .. } => "STARTING",
                        Phase::Running => "RUNNING",
                        Phase::Stopping { .. } => "STOPPING",
                    }
                    .into(),
                    started_at: info.and_then(|i| i.spawned_at).map(at),
                    ready_at: info.and_then(|i| i.ready_at).map(at),
                    status: c.status.clone(),
                }
            })
            .collect();
        StatusRecord {
            started_at: at(self.started),
            uptime_secs: secs(now.saturating_duration_since(self.started)),
            state: Self::state(sup).into(),
            state_reason: sup.state_reason().to_owned(),
            reloading: sup.reloading().is_some(),
            reload_queued: sup.reload_queued(),
            workers: sup.count(),
            workers_up: sup.workers_up(),
            generations,
            backoff: sup.backoff().map(|(when, generation)| BackoffRecord {
                generation,
                restart_at: at(when),
                restart_in_secs: secs(when.saturating_duration_since(now)),
                attempt: sup.restart_attempt(),
                start_failures: sup.start_failures(),
            }),
            last_reload: self.last_reload.as_ref().map(|(_, r)| r.clone()),
            counters: self.counters,
            history: self
                .history
                .iter()
                .map(|(t, e)| HistoryEntry {
                    at: at(*t),
                    ..e.clone()
                })
                .collect(),
            ..master.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{Action, Event, Settings, SpawnFailure, Step, Trigger};
    use nix::sys::signal::Signal;

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        let t = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(t(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(t(1_700_000_000, 5)), "2023-11-14T22:13:20.005Z");
        assert_eq!(rfc3339(t(951_782_400, 999)), "2000-02-29T00:00:00.999Z");
        assert_eq!(rfc3339(t(4_107_542_399, 0)), "2100-02-28T23:59:59.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn clock_maps_instants_both_ways() {
        let mono = Instant::now();
        let clock = Clock::anchored(mono, UNIX_EPOCH + Duration::from_secs(100));
        assert_eq!(
            clock.rfc3339(mono + Duration::from_millis(1500)),
            "1970-01-01T00:01:41.500Z"
        );
        if let Some(earlier) = mono.checked_sub(Duration::from_secs(10)) {
            assert_eq!(clock.rfc3339(earlier), "1970-01-01T00:01:30.000Z");
        }
    }

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::default();
        for s in [0.01, 0.05, 0.3, 200.0] {
            h.observe(s);
        }
        assert_eq!(h.counts[0], 2, "le=0.05 is inclusive");
        assert_eq!(h.counts[3], 1);
        assert_eq!(h.counts[DURATION_BUCKETS.len()], 1, "+Inf");
        assert_eq!(h.count, 4);
    }

    /// Drives a real supervisor and tracker together the way the runtime does.
    struct Rig {
        sup: Fleet,
        tracker: Tracker,
        t0: Instant,
        clock: Clock,
        next_pid: i32,
        done: Vec<ReloadRecord>,
    }

    impl Rig {
        fn new() -> Rig {
            let t0 = Instant::now();
            Rig {
                sup: Fleet::new(Settings::default()),
                tracker: Tracker::new(t0),
                t0,
                clock: Clock::anchored(t0, UNIX_EPOCH),
                next_pid: 100,
                done: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn run(&mut self, actions: Vec<Action>, ms: u64, fail_spawns: bool) {
            for a in actions {
                if let Action::Spawn { generation, .. } = a {
                    self.next_pid += 1;
                    let result = if fail_spawns {
                        Err(SpawnFailure {
                            message: "program not found".into(),
                            exit_code: 127,
                        })
                    } else {
                        Ok(Pid::from_raw(self.next_pid))
                    };
                    let more = self.ev(
                        Event::Spawned {
                            generation,
                            worker: 0,
                            result,
                        },
                        ms,
                    );
                    self.run(more, ms, fail_spawns);
                }
            }
        }

        /// Feeds an event; the tracker gets its reports, as the runtime does.
        fn ev(&mut self, e: Event, ms: u64) -> Vec<Action> {
            let step = self.sup.handle(e, self.at(ms));
            self.absorb(step, ms)
        }

        fn absorb(&mut self, step: Step, ms: u64) -> Vec<Action> {
            for r in &step.reports {
                if let Some(record) = self.tracker.on(r, &self.clock, self.at(ms)) {
                    self.done.push(record);
                }
            }
            step.actions
        }

        fn step(&mut self, e: Event, ms: u64) {
            let a = self.ev(e, ms);
            self.run(a, ms, false);
        }

        fn record(&self, ms: u64) -> StatusRecord {
            let base = StatusRecord {
                name: "t".into(),
                ..StatusRecord::default()
            };
            self.tracker
                .record(&self.sup, &base, &self.clock, self.at(ms))
        }
    }

    #[test]
    fn records_start_reloads_exits_restarts_and_failures() {
        let mut r = Rig::new();
        let step = r.sup.start(r.at(0));
        let a = r.absorb(step, 0);
        r.run(a, 0, false);
        let s = r.record(500);
        assert_eq!(s.state, "STARTING");
        assert_eq!(s.generations.len(), 1);
        assert_eq!(s.generations[0].role, "current");
        assert_eq!(s.generations[0].ready_at, None);
        assert_eq!(
            s.generations[0].started_at.as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        r.step(Event::Tick, 1000);
        let s = r.record(1000);
        assert_eq!(s.state, "RUNNING");
        assert_eq!(
            s.generations[0].ready_at.as_deref(),
            Some("1970-01-01T00:00:01.000Z")
        );
        let g1 = r.sup.current().unwrap().pid;

        // A reload by SIGHUP that succeeds after 1 s.
        r.step(Event::Reload(Trigger::Signal(Signal::SIGHUP)), 2000);
        let s = r.record(2000);
        assert!(s.reloading);
        assert_eq!(s.generations.len(), 2);
        assert_eq!(s.generations[1].role, "pending");
        r.step(Event::Tick, 3000);
        assert_eq!(r.done.len(), 1);
        let ok = &r.done[0];
        assert_eq!(
            (ok.generation, ok.ok(), ok.trigger.as_str()),
            (2, true, "SIGHUP")
        );
        assert_eq!(ok.duration_secs, 1.0);
        assert_eq!(ok.pid, Some(r.sup.current().unwrap().pid.as_raw()));
        assert_eq!(r.record(3000).generations[1].role, "retiring");
        r.step(
            Event::Exited {
                pid: g1,
                status: ExitStatus::Code(0),
            },
            3100,
        );

        // A control reload whose new generation exits with 3.
        r.step(Event::Reload(Trigger::Control), 4000);
        let g3 = r.sup.pending().unwrap().pid;
        r.step(
            Event::Exited {
                pid: g3,
                status: ExitStatus::Code(3),
            },
            4200,
        );
        let failed = &r.done[1];
        assert_eq!(failed.failure.as_deref(), Some("exited"));
        assert_eq!(failed.trigger, "control");
        assert!(failed.reason.as_deref().unwrap().contains("exit code 3"));

        // A reload whose program is gone.
        let a = r.ev(Event::Reload(Trigger::Control), 5000);
        r.run(a, 5000, true);
        assert_eq!(r.done[2].failure.as_deref(), Some("spawn"));
        assert_eq!(r.done[2].pid, None);

        // The current one crashes: backoff, then a restart.
        let g2 = r.sup.current().unwrap().pid;
        r.step(
            Event::Exited {
                pid: g2,
                status: ExitStatus::Signal(9),
            },
            6000,
        );
        let s = r.record(6000);
        assert_eq!(s.state, "BACKOFF");
        let backoff = s.backoff.as_ref().expect("backoff record");
        assert_eq!(backoff.restart_in_secs, 0.1);
        assert_eq!((backoff.attempt, backoff.start_failures), (1, 0));
        assert!(
            s.state_reason.contains("restart attempt 1"),
            "{}",
            s.state_reason
        );
        r.step(Event::Tick, 6100);

        let s = r.record(6100);
        assert_eq!(
            s.counters,
            Counters {
                reloads_ok: 1,
                reloads_failed: 2,
                restarts: 1,
                spawn_failures: 1
            }
        );
        let events: Vec<(&str, u64)> = s
            .history
            .iter()
            .map(|e| (e.event.as_str(), e.generation))
            .collect();
        assert_eq!(
            events,
            vec![
                ("reload", 2),
                ("exit", 1),
                ("exit", 3),
                ("reload", 3),
                ("spawn_failed", 4),
                ("reload", 4),
                ("exit", 2),
                ("restart", 5),
            ]
        );
        assert_eq!(
            s.history[1].expected,
            Some(true),
            "old generation asked to stop"
        );
        assert_eq!(s.history[6].expected, Some(false), "a crash");
        assert_eq!(s.history[6].signal, Some(9));
        assert_eq!(s.last_reload.as_ref().unwrap().generation, 4);
        assert_eq!(r.tracker.durations().count, 3);

        // The record survives a JSON round trip.
        let json = serde_json::to_string(&s).unwrap();
        let back: StatusRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn history_keeps_the_last_twenty() {
        let mut r = Rig::new();
        let step = r.sup.start(r.at(0));
        let a = r.absorb(step, 0);
        r.run(a, 0, false);
        r.step(Event::Tick, 1000);
        let mut ms = 1000;
        for _ in 0..15 {
            ms += 1000;
            r.step(Event::Reload(Trigger::Control), ms);
            let new = r.sup.pending().unwrap().pid;
            r.step(
                Event::Exited {
                    pid: new,
                    status: ExitStatus::Code(1),
                },
                ms,
            );
        }
        let s = r.record(ms);
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.counters.reloads_failed, 15);
        assert_eq!(s.history.last().unwrap().event, "reload");
        assert_eq!(s.history.last().unwrap().generation, 16);
    }

    #[test]
    fn old_clients_read_records_with_missing_and_unknown_fields() {
        let r: StatusRecord =
            serde_json::from_str(r#"{"name":"x","state":"FATAL","future_field":[1,2]}"#).unwrap();
        assert_eq!(r.name, "x");
        assert_eq!(r.state, "FATAL");
        assert!(r.generations.is_empty());
    }
}
