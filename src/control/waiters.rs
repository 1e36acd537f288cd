//! Which `reload --wait` callers an ending reload attempt answers.

use crate::supervisor::Report;

/// Which reload attempt a request will get the outcome of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The attempt it started, with this generation.
    Attempt(u64),
    /// The follow-up queued behind the reload in progress.
    FollowUp,
    /// None: the supervisor did not take the request (relaunch is stopping).
    Refused,
}

/// Maps `reload --wait` callers to the attempt whose [`Report::ReloadEnded`] answers them.
///
/// A request handled while no reload is in progress starts an attempt, and waits for that
/// one. A request handled while one is in progress is coalesced into the queued follow-up,
/// whose generation is not known yet: it waits in `follow_up` until the supervisor starts the
/// follow-up ([`Report::ReloadStarted`]), and then for that attempt. If the follow-up is
/// dropped instead ([`Report::FollowUpDropped`]: relaunch began to stop), its waiters are
/// failed. Pure: tested against the real supervisor's reports.
#[derive(Debug, Clone)]
pub struct ReloadWaiters<T> {
    bound: Vec<(u64, T)>,
    follow_up: Vec<T>,
}

impl<T> Default for ReloadWaiters<T> {
    fn default() -> Self {
        ReloadWaiters {
            bound: Vec::new(),
            follow_up: Vec::new(),
        }
    }
}

impl<T: PartialEq> ReloadWaiters<T> {
    /// Where a reload request went, read from the reports of the step that handled it: the
    /// attempt it started (or the queued follow-up that started in the same step), the
    /// follow-up it was coalesced into, or nothing (relaunch is stopping).
    pub fn classify(reports: &[Report]) -> Joined {
        let mut joined = Joined::Refused;
        let asked = reports
            .iter()
            .position(|r| matches!(r, Report::ReloadRequested { .. }));
        for r in &reports[asked.unwrap_or(reports.len())..] {
            match r {
                Report::ReloadQueued => joined = Joined::FollowUp,
                Report::ReloadStarted { generation, .. } => joined = Joined::Attempt(*generation),
                _ => {}
            }
        }
        joined
    }

    /// Registers `token` as waiting for the attempt `joined` names.
    pub fn join(&mut self, token: T, joined: Joined) {
        match joined {
            Joined::Attempt(generation) => self.bound.push((generation, token)),
            Joined::FollowUp => self.follow_up.push(token),
            Joined::Refused => {}
        }
    }

    /// A reload attempt started ([`Report::ReloadStarted`]): the follow-up's waiters now wait
    /// for it.
    pub fn started(&mut self, generation: u64) {
        let waiting = std::mem::take(&mut self.follow_up);
        self.bound
            .extend(waiting.into_iter().map(|t| (generation, t)));
    }

    /// The follow-up was dropped ([`Report::FollowUpDropped`]): its waiters, to be failed.
    pub fn dropped(&mut self) -> Vec<T> {
        std::mem::take(&mut self.follow_up)
    }

    /// The waiters of the attempt `generation`, which just ended.
    pub fn done(&mut self, generation: u64) -> Vec<T> {
        let (done, rest) = std::mem::take(&mut self.bound)
            .into_iter()
            .partition(|(g, _)| *g == generation);
        self.bound = rest;
        done.into_iter().map(|(_, t)| t).collect()
    }

    /// Forgets a waiter (its client went away).
    pub fn forget(&mut self, token: &T) {
        self.bound.retain(|(_, t)| t != token);
        self.follow_up.retain(|t| t != token);
    }

    /// Every waiter, removed.
    pub fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = std::mem::take(&mut self.bound)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        all.append(&mut self.follow_up);
        all
    }

    /// How many wait.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bound.len() + self.follow_up.len()
    }

    /// Whether none waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use nix::unistd::Pid;

    use super::*;
    use crate::supervisor::{
        Action, Event, ExitStatus, Settings, SpawnFailure, Step, Supervisor, Trigger,
    };

    /// The supervisor and the waiters, driven the way the runtime drives them.
    struct Rig {
        sup: Supervisor,
        waiters: ReloadWaiters<&'static str>,
        t0: Instant,
        ms: u64,
        next_pid: i32,
        /// (waiter, generation, ok) in the order they were answered.
        answered: Vec<(&'static str, u64, bool)>,
        failed: Vec<&'static str>,
    }

    impl Rig {
        fn new() -> Rig {
            let mut rig = Rig {
                sup: Supervisor::new(Settings::default()),
                waiters: ReloadWaiters::default(),
                t0: Instant::now(),
                ms: 0,
                next_pid: 100,
                answered: Vec::new(),
                failed: Vec::new(),
            };
            let a = rig.sup.start();
            rig.run(a.actions, None);
            rig.tick(1000);
            rig
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        /// Runs actions; spawns succeed unless `fail` names the generation to fail.
        fn run(&mut self, actions: Vec<Action>, fail: Option<u64>) {
            for a in actions {
                if let Action::Spawn { generation, .. } = a {
                    self.next_pid += 1;
                    let result = if fail == Some(generation) {
                        Err(SpawnFailure {
                            message: "gone".into(),
                            exit_code: 127,
                        })
                    } else {
                        Ok(Pid::from_raw(self.next_pid))
                    };
                    let more = self.handle(Event::Spawned {
                        generation,
                        worker: 0,
                        result,
                    });
                    self.run(more, fail);
                }
            }
        }

        /// Feeds an event and routes its reports to the waiters, as the runtime does.
        fn step(&mut self, e: Event) -> Step {
            let step = self.sup.handle(e, self.now());
            for r in &step.reports {
                match r {
                    Report::ReloadStarted { generation, .. } => self.waiters.started(*generation),
                    Report::FollowUpDropped => {
                        let dropped = self.waiters.dropped();
                        self.failed.extend(dropped);
                    }
                    Report::ReloadEnded {
                        generation,
                        failure,
                        ..
                    } => {
                        for w in self.waiters.done(*generation) {
                            self.answered.push((w, *generation, failure.is_none()));
                        }
                    }
                    _ => {}
                }
            }
            step
        }

        fn handle(&mut self, e: Event) -> Vec<Action> {
            self.step(e).actions
        }

        fn request(&mut self, who: &'static str) -> Joined {
            let step = self.step(Event::Reload(Trigger::Control));
            let joined = ReloadWaiters::<&str>::classify(&step.reports);
            self.waiters.join(who, joined);
            self.run(step.actions, None);
            joined
        }

        fn tick(&mut self, ms: u64) {
            self.ms = ms;
            let a = self.handle(Event::Tick);
            self.run(a, None);
        }

        fn exit(&mut self, pid: Pid, code: i32) {
            let a = self.handle(Event::Exited {
                pid,
                status: ExitStatus::Code(code),
            });
            self.run(a, None);
        }
    }

    #[test]
    fn a_request_while_idle_waits_for_the_attempt_it_started() {
        let mut r = Rig::new();
        assert_eq!(r.request("a"), Joined::Attempt(2));
        r.tick(2000);
        assert_eq!(r.answered, vec![("a", 2, true)]);
        assert!(r.waiters.is_empty());
    }

    #[test]
    fn requests_during_a_reload_get_the_follow_up_result_not_the_one_in_progress() {
        let mut r = Rig::new();
        let g1 = r.sup.current().unwrap().pid;
        assert_eq!(r.request("first"), Joined::Attempt(2));
        assert_eq!(r.request("second"), Joined::FollowUp);
        assert_eq!(r.request("third"), Joined::FollowUp);
        r.tick(2000); // generation 2 takes over; the follow-up waits for generation 1 to exit
        assert_eq!(r.answered, vec![("first", 2, true)]);
        r.exit(g1, 0); // the follow-up (generation 3) starts
        assert_eq!(r.sup.reloading().map(|(g, _)| g), Some(3));
        let g3 = r.sup.pending().unwrap().pid;
        r.exit(g3, 1); // and fails
        assert_eq!(
            r.answered,
            vec![
                ("first", 2, true),
                ("second", 3, false),
                ("third", 3, false)
            ]
        );
        assert!(r.waiters.is_empty());
    }

    #[test]
    fn a_follow_up_whose_predecessor_fails_at_spawn_is_still_the_one_waited_for() {
        let mut r = Rig::new();
        let step = r.step(Event::Reload(Trigger::Control));
        let a = step.actions;
        let joined = ReloadWaiters::<&str>::classify(&step.reports);
        r.waiters.join("first", joined);
        // A second request arrives before the first attempt's spawn ran.
        let b = r.step(Event::Reload(Trigger::Control));
        assert!(b.actions.is_empty());
        let joined = ReloadWaiters::<&str>::classify(&b.reports);
        assert_eq!(joined, Joined::FollowUp);
        r.waiters.join("second", joined);
        // Generation 2 fails to exec; the follow-up (3) starts in the same step.
        r.run(a, Some(2));
        assert_eq!(r.answered, vec![("first", 2, false)]);
        assert_eq!(r.sup.reloading().map(|(g, _)| g), Some(3));
        r.tick(3000);
        assert_eq!(r.answered, vec![("first", 2, false), ("second", 3, true)]);
    }

    #[test]
    fn a_dropped_follow_up_fails_its_waiters() {
        let mut r = Rig::new();
        r.request("first");
        r.request("second");
        let a = r.handle(Event::Stop(nix::sys::signal::Signal::SIGTERM));
        r.run(a, None);
        assert_eq!(r.answered, vec![("first", 2, false)]);
        assert_eq!(r.failed, vec!["second"]);
        assert_eq!(r.request("late"), Joined::Refused);
    }

    #[test]
    fn forgotten_waiters_are_not_answered() {
        let mut r = Rig::new();
        r.request("gone");
        r.request("queued-gone");
        r.waiters.forget(&"gone");
        r.waiters.forget(&"queued-gone");
        assert!(r.waiters.is_empty());
    }
}
