//! Workers (`Fleet`): all-at-once and rolling reloads, per-worker restarts, and the fleet's
//! invariants under random events.

use std::collections::HashMap;

use super::*;

/// A fleet with a fake clock; every spawn succeeds with the next pid unless `fail_spawns`.
struct FSim {
    f: Fleet,
    t0: Instant,
    ms: u64,
    next_pid: i32,
    exit: Option<i32>,
    fail_spawns: bool,
    /// Reload outcomes, in order: (generation, failure, reason).
    ended: Vec<(u64, Option<ReloadFailure>, String)>,
    started: Vec<u64>,
    /// The most processes alive at once during a rolling reload.
    peak: usize,
}

fn settings(workers: usize, strategy: ReloadStrategy) -> Settings {
    Settings {
        workers,
        reload_strategy: strategy,
        max_surge: 1,
        jitter: false,
        ..Settings::default()
    }
}

impl FSim {
    fn new(s: Settings) -> FSim {
        let mut sim = FSim {
            f: Fleet::new(s),
            t0: Instant::now(),
            ms: 0,
            next_pid: 100,
            exit: None,
            fail_spawns: false,
            ended: Vec::new(),
            started: Vec::new(),
            peak: 0,
        };
        let step = sim.f.start(sim.t0);
        sim.absorb(step);
        sim
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    fn absorb(&mut self, step: Step) {
        for r in &step.reports {
            match r {
                Report::ReloadStarted { generation, .. } => self.started.push(*generation),
                Report::ReloadEnded {
                    generation,
                    failure,
                    reason,
                    ..
                } => self.ended.push((*generation, *failure, reason.clone())),
                _ => {}
            }
        }
        self.peak = self.peak.max(self.f.children().count());
        for a in step.actions {
            match a {
                Action::Spawn { generation, worker } => {
                    self.next_pid += 1;
                    let result = if self.fail_spawns {
                        Err(SpawnFailure {
                            message: "cannot execute".into(),
                            exit_code: 126,
                        })
                    } else {
                        Ok(pid(self.next_pid))
                    };
                    let step = self.f.handle(
                        Event::Spawned {
                            generation,
                            worker,
                            result,
                        },
                        self.now(),
                    );
                    self.absorb(step);
                }
                Action::Exit { code } => self.exit = Some(code),
                Action::Signal { .. } => {}
            }
        }
    }

    fn ev(&mut self, e: Event) {
        let step = self.f.handle(e, self.now());
        self.absorb(step);
    }

    fn at(&mut self, ms: u64) {
        self.ms = ms;
        self.ev(Event::Tick);
    }

    fn exit(&mut self, p: Pid, status: ExitStatus) {
        self.ev(Event::Exited { pid: p, status });
    }

    /// (worker, role, generation, pid) of every live child.
    fn members(&self) -> Vec<(usize, &'static str, u64, Pid)> {
        self.f
            .members()
            .map(|(w, role, c)| (w, role, c.generation, c.pid))
            .collect()
    }

    fn current(&self) -> HashMap<usize, (u64, Pid)> {
        self.members()
            .into_iter()
            .filter(|m| m.1 == "current")
            .map(|(w, _, g, p)| (w, (g, p)))
            .collect()
    }

    /// Reaps every child asked to stop.
    fn reap_retiring(&mut self) {
        let gone: Vec<Pid> = self
            .members()
            .into_iter()
            .filter(|m| m.1 == "retiring")
            .map(|m| m.3)
            .collect();
        for p in gone {
            self.exit(p, ExitStatus::Code(0));
        }
    }
}

#[test]
fn a_generation_is_up_when_all_its_workers_are() {
    let mut s = FSim::new(settings(4, ReloadStrategy::All));
    assert_eq!(s.f.children().count(), 4);
    assert_eq!(s.f.state(), ProgramState::Starting);
    let gens: Vec<u64> = s.members().iter().map(|m| m.2).collect();
    assert_eq!(gens, vec![1, 1, 1, 1]);
    s.at(1000);
    assert_eq!(s.f.state(), ProgramState::Running);
    assert_eq!(s.f.workers_up(), 4);
}

#[test]
fn all_switches_once_every_new_worker_is_up() {
    let mut s = FSim::new(Settings {
        ready_signal: true,
        ..settings(3, ReloadStrategy::All)
    });
    let first: Vec<Pid> = s.f.children().map(|c| c.pid).collect();
    for p in first {
        s.ev(ready(p));
    }
    s.at(1000);
    assert_eq!(s.f.state(), ProgramState::Running);
    let old = s.current();
    s.ev(Event::Reload(HUP));
    assert_eq!(s.f.children().count(), 6, "three new beside three old");
    let new: Vec<Pid> = s
        .members()
        .iter()
        .filter(|m| m.1 == "pending")
        .map(|m| m.3)
        .collect();
    // Worker 0's new child is up at 2100; it is held, and nothing old is stopped.
    s.ms = 1100;
    s.ev(ready(new[0]));
    s.ms = 1800;
    s.ev(ready(new[1]));
    s.ev(ready(new[2]));
    s.at(2500);
    assert_eq!(s.members().iter().filter(|m| m.1 == "pending").count(), 3);
    assert!(s.members().iter().all(|m| m.1 != "retiring"));
    assert_eq!(s.current(), old);
    assert!(
        s.f.next_deadline().is_some_and(|d| d > s.now()),
        "a held child arms no deadline in the past; the others' is ahead"
    );
    s.at(2700);
    assert_eq!(s.current(), old, "worker 1 and 2 are not up before 2800");
    s.at(2800);
    assert!(s.members().iter().all(|m| m.1 != "pending"));
    let now = s.current();
    assert!(now.values().all(|(g, _)| *g == 2));
    assert_eq!(s.members().iter().filter(|m| m.1 == "retiring").count(), 3);
    assert!(old
        .values()
        .all(|(_, p)| s.members().iter().any(|m| m.3 == *p && m.1 == "retiring")));
    assert_eq!(s.ended, vec![(2, None, String::new())]);
    assert_eq!(s.started, vec![2]);
}

#[test]
fn all_keeps_every_old_worker_when_one_new_one_fails() {
    let mut s = FSim::new(settings(3, ReloadStrategy::All));
    s.at(1000);
    let old = s.current();
    s.ev(Event::Reload(HUP));
    let pending: Vec<(usize, Pid)> = s
        .members()
        .into_iter()
        .filter(|m| m.1 == "pending")
        .map(|m| (m.0, m.3))
        .collect();
    assert_eq!(pending.len(), 3);
    s.ms = 1200;
    s.exit(pending[1].1, ExitStatus::Code(3));
    assert_eq!(s.current(), old, "the old workers are untouched");
    assert!(s.members().iter().all(|m| m.1 != "pending"));
    let retiring: Vec<Pid> = s
        .members()
        .iter()
        .filter(|m| m.1 == "retiring")
        .map(|m| m.3)
        .collect();
    assert_eq!(
        retiring,
        vec![pending[0].1, pending[2].1],
        "the other new ones are stopped"
    );
    assert_eq!(s.ended.len(), 1);
    let (g, failure, reason) = &s.ended[0];
    assert_eq!((*g, *failure), (2, Some(ReloadFailure::Exited)));
    assert!(
        reason.starts_with("worker 1: exited with exit code 3"),
        "{reason}"
    );
    s.reap_retiring();
    s.at(3000);
    assert_eq!(s.f.state(), ProgramState::Running);
    // The next reload starts over.
    s.ev(Event::Reload(HUP));
    s.at(4000);
    assert!(s.current().values().all(|(g, _)| *g == 3));
}

#[test]
fn rolling_never_has_more_than_n_plus_k_alive() {
    let mut s = FSim::new(settings(4, ReloadStrategy::Rolling));
    s.at(1000);
    s.peak = 0;
    s.ev(Event::Reload(HUP));
    for step in 1..=40 {
        s.at(1000 + step * 500);
        s.reap_retiring();
        assert!(s.f.children().count() <= 5, "{:?}", s.members());
    }
    assert_eq!(s.peak, 5);
    assert!(
        s.current().values().all(|(g, _)| *g == 2),
        "{:?}",
        s.members()
    );
    assert_eq!(s.ended, vec![(2, None, String::new())]);
}

#[test]
fn a_failed_rolling_reload_pauses_with_old_and_new_serving() {
    let mut s = FSim::new(settings(3, ReloadStrategy::Rolling));
    s.at(1000);
    s.ev(Event::Reload(HUP));
    s.at(2000); // worker 0 replaced
    s.reap_retiring();
    let new1 = s
        .members()
        .into_iter()
        .find(|m| m.1 == "pending")
        .expect("worker 1 next");
    assert_eq!(new1.0, 1);
    s.exit(new1.3, ExitStatus::Code(1));
    let (g, failure, reason) = s.ended.last().unwrap().clone();
    assert_eq!((g, failure), (2, Some(ReloadFailure::Exited)));
    assert!(reason.starts_with("worker 1:"), "{reason}");
    s.at(5000);
    let gens: Vec<u64> = (0..3).map(|w| s.current()[&w].0).collect();
    assert_eq!(
        gens,
        vec![2, 1, 1],
        "the roll paused: worker 0 new, 1 and 2 old"
    );
    assert_eq!(s.f.state(), ProgramState::Running);
    s.ev(Event::Reload(HUP));
    for step in 1..=20 {
        s.at(5000 + step * 500);
        s.reap_retiring();
    }
    assert!(s.current().values().all(|(g, _)| *g == 3));
}

#[test]
fn a_crashed_worker_is_restarted_alone_in_its_generation() {
    let mut s = FSim::new(settings(4, ReloadStrategy::All));
    s.at(1000);
    let before = s.current();
    let (_, victim) = before[&2];
    s.exit(victim, ExitStatus::Signal(9));
    assert_eq!(s.f.state(), ProgramState::Backoff);
    s.at(1200);
    s.at(2500);
    let after = s.current();
    for w in [0, 1, 3] {
        assert_eq!(after[&w], before[&w], "worker {w} untouched");
    }
    assert_eq!(after[&2].0, 1, "the restart stays in generation 1");
    assert_ne!(after[&2].1, victim);
    assert_eq!(s.f.state(), ProgramState::Running);
}

#[test]
fn stop_exits_once_every_worker_is_gone() {
    let mut f = FSim::new(settings(3, ReloadStrategy::All));
    f.at(1000);
    let all: Vec<Pid> = f.f.children().map(|c| c.pid).collect();
    f.ev(Event::Stop(TERM));
    assert_eq!(f.f.state(), ProgramState::Stopping);
    f.exit(all[0], ExitStatus::Code(0));
    f.exit(all[1], ExitStatus::Code(0));
    assert_eq!(f.exit, None, "one worker is still stopping");
    f.exit(all[2], ExitStatus::Code(0));
    assert_eq!(f.exit, Some(0));
}

#[test]
fn invariants_hold_under_random_events() {
    let mut ran_all = 0;
    let mut ran_rolling = 0;
    for seed in 1..=200u64 {
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let n = 2 + (next() % 4) as usize;
        let k = 1 + (next() % 2) as usize;
        let strategy = if seed % 2 == 0 {
            ReloadStrategy::All
        } else {
            ReloadStrategy::Rolling
        };
        let st = Settings {
            workers: n,
            reload_strategy: strategy,
            max_surge: k,
            stop_wait: Duration::from_millis(300),
            ready_signal: seed % 3 == 0,
            ready_timeout: Duration::from_millis(2000),
            on_fatal: if seed % 5 == 0 {
                OnFatal::Exit
            } else {
                OnFatal::Wait
            },
            start_retries: 2,
            jitter: true,
            ..Settings::default()
        };
        let mut s = FSim::new(st);
        for _ in 0..300 {
            if s.exit.is_some() {
                assert_eq!(
                    s.f.children().count(),
                    0,
                    "seed {seed}: exited with children left"
                );
                break;
            }
            let live: Vec<Pid> = s.f.children().map(|c| c.pid).collect();
            match next() % 8 {
                0 => s.ev(Event::Reload(HUP)),
                1 | 2 => {
                    let ms = s.ms + next() % 1500;
                    s.at(ms)
                }
                3 | 4 if !live.is_empty() => {
                    let p = live[(next() % live.len() as u64) as usize];
                    let status = match next() % 3 {
                        0 => ExitStatus::Code(0),
                        1 => ExitStatus::Code(1),
                        _ => ExitStatus::Signal(9),
                    };
                    s.exit(p, status)
                }
                5 if !live.is_empty() => {
                    let p = live[(next() % live.len() as u64) as usize];
                    s.ev(ready(p))
                }
                _ => s.reap_retiring(),
            }
            // At most two generations' worth of workers; each worker at most two live
            // children, at most one of them not yet started.
            assert!(
                s.f.children().count() <= 2 * n,
                "seed {seed}: {:?}",
                s.members()
            );
            for w in 0..n {
                let sup = s.f.worker(w).unwrap();
                assert!(sup.children().count() <= 2, "seed {seed} worker {w}");
                assert_eq!(sup.state(), sup.derived_state(), "seed {seed} worker {w}");
            }
            let members = s.members();
            // Rolling: the children that serve or start never exceed N + K.
            if strategy == ReloadStrategy::Rolling {
                let active = members.iter().filter(|m| m.1 != "retiring").count();
                assert!(active <= n + k, "seed {seed}: {members:?}");
            }
            // Every pending child belongs to the reload in progress.
            if let Some((g, _)) = s.f.reloading() {
                assert!(
                    members
                        .iter()
                        .filter(|m| m.1 == "pending")
                        .all(|m| m.2 == g),
                    "seed {seed}: {members:?}"
                );
            }
            // The fleet's state is RUNNING exactly when every worker is up.
            assert_eq!(
                s.f.state() == ProgramState::Running,
                !s.f.is_stopping()
                    && s.f.workers_up() == n
                    && (0..n).all(|w| s.f.worker(w).unwrap().state() == ProgramState::Running),
                "seed {seed}"
            );
        }
        // Each reload attempt ends exactly once, in order.
        let ended: Vec<u64> = s.ended.iter().map(|e| e.0).collect();
        assert!(s.started.len() - ended.len() <= 1, "seed {seed}");
        assert_eq!(&s.started[..ended.len()], &ended[..], "seed {seed}");
        match strategy {
            ReloadStrategy::All => ran_all += s.ended.len(),
            ReloadStrategy::Rolling => ran_rolling += s.ended.len(),
        }
    }
    assert!(ran_all > 50 && ran_rolling > 50, "{ran_all} {ran_rolling}");
}
