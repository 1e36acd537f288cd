//! Generations, reloads, stopping, signals.

use super::*;

#[test]
fn first_child_becomes_running_after_start_secs() {
    let mut s = Sim::new();
    let p = s.start();
    assert!(matches!(
        s.sup.current().unwrap().phase,
        Phase::Starting { .. }
    ));
    assert_eq!(s.sup.next_deadline(), Some(s.t0 + Duration::from_secs(1)));
    assert!(s.at(999).is_empty());
    assert!(matches!(
        s.sup.current().unwrap().phase,
        Phase::Starting { .. }
    ));
    assert!(s.at(1000).is_empty());
    assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
    assert_eq!(s.sup.current().unwrap().pid, p);
    assert_eq!(s.sup.next_deadline(), None);
}

#[test]
fn reload_stops_the_old_child_only_after_the_new_one_started() {
    let mut s = Sim::new();
    let old = s.start();
    s.at(1000);
    assert!(
        s.hup().is_empty(),
        "nothing is signalled when the new one is spawned"
    );
    let new = s.sup.pending().unwrap().pid;
    assert_ne!(new, old);
    assert_eq!(s.alive(), 2);
    assert!(s.at(1999).is_empty(), "old one untouched before start_secs");
    assert_eq!(
        s.at(2000),
        vec![sig(old.as_raw(), TERM), sig(old.as_raw(), CONT)]
    );
    assert_eq!(s.sup.current().unwrap().pid, new);
    assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
    assert!(s.sup.pending().is_none());
    assert!(s.exit(old, ExitStatus::Code(0)).is_empty());
    assert_eq!(s.alive(), 1);
    assert_eq!(s.sup.next_deadline(), None);
}

#[test]
fn a_new_child_that_exits_early_leaves_the_old_one_untouched() {
    let mut s = Sim::new();
    let old = s.start();
    s.at(1000);
    s.hup();
    let new = s.sup.pending().unwrap().pid;
    assert!(s.exit(new, ExitStatus::Code(1)).is_empty());
    assert_eq!(s.sup.current().unwrap().pid, old);
    assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
    assert!(s.sup.pending().is_none());
    assert!(!s.sup.in_backoff(), "a failed reload is not a crash");
    assert!(s.at(10_000).is_empty(), "nothing happens later either");
}

#[test]
fn a_new_child_that_cannot_exec_leaves_the_old_one_untouched() {
    let mut s = Sim::new();
    let old = s.start();
    s.at(1000);
    let a = s.ev(Event::Reload(HUP));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    let a = s.ev(Event::Spawned {
        worker: 0,
        generation: 2,
        result: Err(SpawnFailure {
            message: "program not found".into(),
            exit_code: 127,
        }),
    });
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.sup.current().unwrap().pid, old);
    assert_eq!(s.alive(), 1);
    // The next reload works normally.
    s.hup();
    assert_eq!(s.sup.pending().unwrap().generation, 3);
}

#[test]
fn reloads_during_a_reload_coalesce_into_one_follow_up() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    for _ in 0..5 {
        assert!(s.hup().is_empty());
    }
    assert_eq!(s.alive(), 2);
    // g2 is promoted; g1 stops. The follow-up waits until g1 is gone (two alive at most).
    assert_eq!(
        s.at(2000),
        vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
    );
    assert!(s.sup.pending().is_none());
    assert_eq!(s.alive(), 2);
    assert!(s.exit(g1, ExitStatus::Code(0)).is_empty());
    let g3 = s.sup.pending().expect("the one queued reload starts").pid;
    assert_eq!(s.sup.pending().unwrap().generation, 3);
    assert_eq!(
        s.at(3000),
        vec![sig(g2.as_raw(), TERM), sig(g2.as_raw(), CONT)]
    );
    s.exit(g2, ExitStatus::Code(0));
    assert_eq!(s.sup.current().unwrap().pid, g3);
    assert!(s.sup.pending().is_none(), "exactly one follow-up");
    assert_eq!(s.alive(), 1);
}

#[test]
fn a_reload_while_the_old_generation_drains_waits_for_it() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    s.at(2000); // g1 stopping
    assert!(s.hup().is_empty());
    assert!(s.sup.pending().is_none());
    // g1 ignores TERM: SIGKILL at stop_wait, then the queued reload starts.
    assert_eq!(s.at(12_000), vec![sig(g1.as_raw(), KILL)]);
    assert!(s.exit(g1, ExitStatus::Signal(9)).is_empty());
    assert_eq!(s.sup.pending().unwrap().generation, 3);
}

#[test]
fn a_failed_reload_still_runs_the_queued_one() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.hup();
    s.exit(g2, ExitStatus::Code(3));
    let g3 = s
        .sup
        .pending()
        .expect("queued reload starts after the failure");
    assert_eq!(g3.generation, 3);
    assert_eq!(s.sup.current().unwrap().pid, g1);
}

#[test]
fn an_old_child_ignoring_the_stop_signal_is_killed_after_stop_wait() {
    let mut s = Sim::with(Settings {
        stop_wait: Duration::from_millis(500),
        ..Settings::default()
    });
    let g1 = s.start();
    s.at(1000);
    s.hup();
    s.at(2000);
    assert!(s.at(2499).is_empty());
    assert_eq!(s.at(2500), vec![sig(g1.as_raw(), KILL)]);
    assert!(s.at(5000).is_empty(), "SIGKILL is sent once");
    s.exit(g1, ExitStatus::Signal(9));
    assert_eq!(s.alive(), 1);
}

#[test]
fn stop_signals_the_child_and_exits_with_its_status() {
    let mut s = Sim::new();
    let p = s.start();
    s.at(1000);
    assert_eq!(
        s.ev(Event::Stop(TERM)),
        vec![sig(p.as_raw(), TERM), sig(p.as_raw(), CONT)]
    );
    assert!(s.sup.is_stopping());
    assert_eq!(
        s.exit(p, ExitStatus::Code(7)),
        vec![Action::Exit { code: 7 }]
    );
}

#[test]
fn stop_exit_code_is_128_plus_signal() {
    let mut s = Sim::new();
    let p = s.start();
    s.ev(Event::Stop(Signal::SIGINT));
    assert_eq!(
        s.exit(p, ExitStatus::Signal(15)),
        vec![Action::Exit { code: 143 }]
    );
}

#[test]
fn stop_kills_after_stop_wait_and_a_second_term_does_not_skip_the_grace() {
    let mut s = Sim::new();
    let p = s.start();
    s.ev(Event::Stop(TERM));
    s.ms = 5000;
    assert!(s.ev(Event::Stop(TERM)).is_empty());
    assert!(s.ev(Event::Stop(Signal::SIGINT)).is_empty());
    assert_eq!(s.at(10_000), vec![sig(p.as_raw(), KILL)]);
    assert_eq!(
        s.exit(p, ExitStatus::Signal(9)),
        vec![Action::Exit { code: 137 }]
    );
}

#[test]
fn sigquit_during_a_stop_kills_at_once() {
    let mut s = Sim::new();
    let p = s.start();
    s.ev(Event::Stop(TERM));
    assert_eq!(
        s.ev(Event::Stop(Signal::SIGQUIT)),
        vec![sig(p.as_raw(), KILL)]
    );
    assert!(s.at(10_000).is_empty(), "not killed twice");
}

#[test]
fn stop_during_a_reload_stops_both_and_uses_the_current_status() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    let a = s.ev(Event::Stop(TERM));
    assert_eq!(
        a,
        vec![
            sig(g1.as_raw(), TERM),
            sig(g1.as_raw(), CONT),
            sig(g2.as_raw(), TERM),
            sig(g2.as_raw(), CONT)
        ]
    );
    assert!(s.hup().is_empty(), "no reload while stopping");
    assert!(s.exit(g2, ExitStatus::Code(9)).is_empty());
    assert_eq!(
        s.exit(g1, ExitStatus::Code(4)),
        vec![Action::Exit { code: 4 }]
    );
}

#[test]
fn stop_with_no_child_exits_at_once_with_the_last_status() {
    let mut s = Sim::new();
    let p = s.start();
    s.at(1000);
    s.exit(p, ExitStatus::Code(5));
    assert!(s.sup.in_backoff());
    assert_eq!(s.ev(Event::Stop(TERM)), vec![Action::Exit { code: 5 }]);
    assert!(s.at(60_000).is_empty(), "the backoff restart was cancelled");
}

#[test]
fn crash_restarts_with_doubling_backoff_that_resets_once_started() {
    let mut s = Sim::with(exact());
    let mut p = s.start();
    s.at(1000);
    let mut t;
    // Crash after running: first delay is backoff_min.
    s.exit(p, ExitStatus::Signal(9));
    assert_eq!(
        s.sup.next_deadline(),
        Some(s.now() + Duration::from_millis(100))
    );
    let mut expected = vec![];
    let mut delays = vec![];
    for _ in 0..10 {
        let deadline = s.sup.next_deadline().unwrap();
        delays.push((deadline - s.now()).as_millis() as u64);
        t = (deadline - s.t0).as_millis() as u64;
        s.at(t);
        p = s.sup.current().unwrap().pid;
        // Dies before counting as started.
        s.exit(p, ExitStatus::Code(1));
    }
    for d in [100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000] {
        expected.push(d);
    }
    assert_eq!(delays, expected);
    // One that stays up start_secs resets the backoff.
    let deadline = s.sup.next_deadline().unwrap();
    t = (deadline - s.t0).as_millis() as u64;
    s.at(t);
    p = s.sup.current().unwrap().pid;
    s.at(t + 1000);
    assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
    s.exit(p, ExitStatus::Code(1));
    assert_eq!(
        s.sup.next_deadline(),
        Some(s.now() + Duration::from_millis(100))
    );
}

#[test]
fn a_reload_during_backoff_starts_at_once() {
    let mut s = Sim::new();
    let p = s.start();
    s.at(1000);
    s.exit(p, ExitStatus::Code(1));
    assert!(s.sup.in_backoff());
    let a = s.ev(Event::Reload(HUP));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    s.run(a);
    assert!(!s.sup.in_backoff());
    assert_eq!(s.sup.current().unwrap().generation, 2);
    assert!(s.sup.pending().is_none());
}

#[test]
fn first_spawn_failure_exits_with_its_code() {
    let mut s = Sim::new();
    s.sup.start();
    let a = s.ev(Event::Spawned {
        worker: 0,
        generation: 1,
        result: Err(SpawnFailure {
            message: "program not executable".into(),
            exit_code: 126,
        }),
    });
    assert_eq!(a, vec![Action::Exit { code: 126 }]);
    assert!(s.ev(Event::Reload(HUP)).is_empty(), "nothing after exit");
}

#[test]
fn a_later_spawn_failure_backs_off_instead_of_exiting() {
    let mut s = Sim::with(exact());
    let p = s.start();
    s.at(1000);
    s.exit(p, ExitStatus::Code(1));
    s.ms = 1100;
    let a = s.ev(Event::Tick);
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    let a = s.ev(Event::Spawned {
        worker: 0,
        generation: 2,
        result: Err(SpawnFailure {
            message: "gone".into(),
            exit_code: 127,
        }),
    });
    assert!(a.is_empty());
    assert!(s.sup.in_backoff());
    assert_eq!(
        s.sup.next_deadline(),
        Some(s.now() + Duration::from_millis(200))
    );
}

#[test]
fn the_old_child_dying_during_a_reload_lets_the_new_one_take_over() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.exit(g1, ExitStatus::Signal(11));
    assert!(!s.sup.in_backoff());
    assert!(s.at(2000).is_empty());
    assert_eq!(s.sup.current().unwrap().pid, g2);
}

#[test]
fn both_dying_during_a_reload_restarts_with_backoff() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.exit(g1, ExitStatus::Signal(11));
    s.exit(g2, ExitStatus::Code(1));
    assert!(s.sup.in_backoff());
    s.at(5000);
    assert!(s.sup.current().is_some());
}

#[test]
fn signals_are_forwarded_to_the_current_child_only() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    s.hup();
    assert_eq!(
        s.ev(Event::Forward(Signal::SIGUSR1)),
        vec![sig(g1.as_raw(), Signal::SIGUSR1)]
    );
}

#[test]
fn status_display() {
    assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
    assert_eq!(
        ExitStatus::Signal(9).to_string(),
        "killed by signal 9 (SIGKILL)"
    );
    assert_eq!(ExitStatus::Signal(15).shell_code(), 143);
    assert_eq!(ExitStatus::Code(3).ended(), "exited with exit code 3");
    assert_eq!(
        ExitStatus::Signal(9).ended(),
        "was killed by signal 9 (SIGKILL)"
    );
}
