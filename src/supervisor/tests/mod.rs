//! The supervisor's unit tests: the `Sim` harness (a fake clock, every spawn succeeding with
//! the next pid, reports logged the way the runtime consumes them), and the rules by topic.

mod invariants;
mod notify;
mod policy;
mod reload;
mod workers;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::*;
use crate::notify::Note;

const TERM: Signal = Signal::SIGTERM;
const KILL: Signal = Signal::SIGKILL;
const CONT: Signal = Signal::SIGCONT;
const HUP: Trigger = Trigger::Signal(Signal::SIGHUP);

/// A supervisor with a fake clock; `ms` is the time since the test began.
struct Sim {
    sup: Supervisor,
    t0: Instant,
    ms: u64,
    next_pid: i32,
    /// Messages for the service manager, in order.
    manager: Vec<ManagerMessage>,
    /// Reload outcomes, in order: (generation, ok).
    done: Vec<(u64, bool)>,
    /// `STATUS=` lines for the service manager about states where nothing serves.
    statuses: Vec<String>,
    /// The service-manager bookkeeping, fed every report.
    book: ServiceManager,
    /// Every report, in order.
    reports: Vec<Report>,
}

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

fn sig(p: i32, signal: Signal) -> Action {
    Action::Signal {
        pid: pid(p),
        signal,
        group: false,
    }
}

/// A signal to the process group of `p`.
fn gsig(p: i32, signal: Signal) -> Action {
    Action::Signal {
        pid: pid(p),
        signal,
        group: true,
    }
}

/// Settings with exact delays (no jitter) and unlimited start retries.
fn exact() -> Settings {
    Settings {
        jitter: false,
        start_retries: u32::MAX,
        ..Settings::default()
    }
}

impl Sim {
    fn new() -> Sim {
        Sim::with(Settings::default())
    }

    fn with(settings: Settings) -> Sim {
        Sim {
            sup: Supervisor::new(settings),
            t0: Instant::now(),
            ms: 0,
            next_pid: 100,
            manager: Vec::new(),
            done: Vec::new(),
            statuses: Vec::new(),
            book: ServiceManager::default(),
            reports: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    /// Handles an event; manager messages and reload outcomes go to their logs, every report
    /// to `reports`, and the stored state is checked against the old derivation. The actions
    /// are returned.
    fn ev(&mut self, e: Event) -> Vec<Action> {
        let now = self.now();
        let step = self.sup.handle(e, now);
        if !step
            .actions
            .iter()
            .any(|a| matches!(a, Action::Spawn { .. }))
        {
            assert_reason_is_true(&self.sup);
        }
        self.absorb(step)
    }

    /// Logs a step's reports (through the service-manager bookkeeping, as the runtime does)
    /// and returns its actions.
    fn absorb(&mut self, step: Step) -> Vec<Action> {
        assert_eq!(
            self.sup.state(),
            self.sup.derived_state(),
            "the stored state agrees with the derivation from the children"
        );
        for r in &step.reports {
            match self.book.on(r) {
                Some(ManagerMessage::Status { status }) => self.statuses.push(status),
                Some(m) => self.manager.push(m),
                None => {}
            }
            if let Report::ReloadEnded {
                generation,
                failure,
                ..
            } = r
            {
                self.done.push((*generation, failure.is_none()));
            }
        }
        self.reports.extend(step.reports);
        step.actions
    }

    /// Runs actions the way the runtime does: every Spawn succeeds with the next pid.
    fn run(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut rest = Vec::new();
        for a in actions {
            if let Action::Spawn { generation, .. } = a {
                self.next_pid += 100;
                let p = pid(self.next_pid);
                let more = self.ev(Event::Spawned {
                    worker: 0,
                    generation,
                    result: Ok(p),
                });
                rest.extend(self.run(more));
            } else {
                rest.push(a);
            }
        }
        rest
    }

    fn start(&mut self) -> Pid {
        let step = self.sup.start();
        let a = self.absorb(step);
        assert_eq!(
            a,
            vec![Action::Spawn {
                generation: 1,
                worker: 0
            }]
        );
        assert!(self.run(a).is_empty());
        self.sup.current().unwrap().pid
    }

    /// Moves the clock to `ms` and ticks.
    fn at(&mut self, ms: u64) -> Vec<Action> {
        assert!(ms >= self.ms);
        self.ms = ms;
        let a = self.ev(Event::Tick);
        self.run(a)
    }

    fn exit(&mut self, p: Pid, status: ExitStatus) -> Vec<Action> {
        let a = self.ev(Event::Exited { pid: p, status });
        self.run(a)
    }

    fn hup(&mut self) -> Vec<Action> {
        let a = self.ev(Event::Reload(HUP));
        self.run(a)
    }

    fn alive(&self) -> usize {
        self.sup.children().count()
    }
}

fn notify_settings() -> Settings {
    Settings {
        ready_signal: true,
        start_secs: Duration::ZERO,
        ready_timeout: Duration::from_secs(60),
        ..Settings::default()
    }
}

fn ready(p: Pid) -> Event {
    Event::Notify {
        pid: p,
        note: Note {
            ready: true,
            ..Note::default()
        },
    }
}

fn status(p: Pid, text: &str) -> Event {
    Event::Notify {
        pid: p,
        note: Note {
            status: Some(text.into()),
            ..Note::default()
        },
    }
}

/// Checks that the state's reason (logged with `state changed`, shown by `status`) is
/// about the generations as they are: the one that serves, starts, or follows a backoff.
/// Run after every event the harness handles (but while a spawn is outstanding, whose
/// generation is not known from outside), so every transition of every test is checked.
#[track_caller]
fn assert_reason_is_true(sup: &Supervisor) {
    let reason = sup.state_reason();
    let state = sup.state();
    let ok = match state {
        ProgramState::Running => {
            let c = sup.current().expect("RUNNING has a current generation");
            reason.contains(&format!("generation {} (pid {})", c.generation, c.pid))
        }
        ProgramState::Starting => match sup.current().or(sup.pending()) {
            Some(c) => reason.contains(&format!("generation {}", c.generation)),
            None => !reason.is_empty(),
        },
        ProgramState::Backoff => {
            let (_, g) = sup.backoff().expect("BACKOFF has a restart scheduled");
            reason.contains(&format!("generation {g} follows in"))
                && reason.contains(&format!("restart attempt {}", sup.restart_attempt()))
        }
        ProgramState::Exited => reason.contains("not restarted"),
        ProgramState::Stopping => reason.contains("stop"),
        ProgramState::Fatal => !reason.is_empty(),
    };
    // A generation that is gone is never said to be up or serving.
    let alive = |g: u64| sup.children().any(|c| c.generation == g);
    let stale = (1..=sup.next_generation).find(|&g| {
        !alive(g)
            && (reason.contains(&format!("generation {g} (pid"))
                && (reason.ends_with(" is up") || reason.ends_with(" serves")))
    });
    assert!(
        ok && stale.is_none() || state == ProgramState::Stopping,
        "state {state} with a reason that is not true: {reason:?} (children: {:?})",
        sup.children().collect::<Vec<_>>()
    );
}
