//! The restart policy: --restart, retries, FATAL, crash loops, backoff, states.

use super::*;

// ----------------------------------------------------------------------------------------
// Restart policy

fn policy(restart: RestartPolicy, codes: &[i32]) -> Settings {
    Settings {
        restart,
        exit_codes: ExitCodes::of(codes),
        ..exact()
    }
}

/// Starts generation 1 and lets it count as started (at 1000 ms).
fn running(s: &mut Sim) -> Pid {
    let p = s.start();
    s.at(1000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    p
}

#[test]
fn on_failure_does_not_restart_an_expected_exit_code_and_waits_for_a_reload() {
    let mut s = Sim::with(policy(RestartPolicy::OnFailure, &[0, 2]));
    let p = running(&mut s);
    assert!(s.exit(p, ExitStatus::Code(2)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Exited);
    assert!(!s.sup.in_backoff());
    assert_eq!(s.sup.next_deadline(), None, "nothing is scheduled");
    assert!(s.at(600_000).is_empty(), "and nothing happens, ever");
    assert!(
        s.sup.state_reason().contains("exit code 2") && s.sup.state_reason().contains("0,2"),
        "{}",
        s.sup.state_reason()
    );
    // A reload starts a new generation as current.
    let a = s.ev(Event::Reload(HUP));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    s.run(a);
    assert_eq!(s.sup.state(), ProgramState::Starting);
    assert_eq!(s.sup.current().unwrap().generation, 2);
    s.at(601_000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert_eq!(s.done, vec![(2, true)]);
}

#[test]
fn on_failure_restarts_unexpected_codes_and_any_signal() {
    // Even a signal whose number is among the expected codes is a failure.
    let mut s = Sim::with(policy(RestartPolicy::OnFailure, &[0, 9]));
    let p = running(&mut s);
    s.exit(p, ExitStatus::Signal(9));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    s.at(1100);
    let p = s.sup.current().unwrap().pid;
    s.at(2100);
    s.exit(p, ExitStatus::Code(1));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    s.at(2200);
    let p = s.sup.current().unwrap().pid;
    s.at(3200);
    s.exit(p, ExitStatus::Code(0));
    assert_eq!(s.sup.state(), ProgramState::Exited);
}

#[test]
fn always_restarts_even_a_clean_exit() {
    let mut s = Sim::with(policy(RestartPolicy::Always, &[0]));
    let p = running(&mut s);
    s.exit(p, ExitStatus::Code(0));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    assert_eq!(s.at(1100), Vec::<Action>::new());
    assert_eq!(s.sup.current().unwrap().generation, 2);
}

#[test]
fn never_restarts_not_even_a_crash_and_stop_then_exits_with_its_status() {
    let mut s = Sim::with(policy(RestartPolicy::Never, &[0]));
    let p = running(&mut s);
    s.exit(p, ExitStatus::Signal(11));
    assert_eq!(s.sup.state(), ProgramState::Exited);
    assert!(s.at(100_000).is_empty());
    assert_eq!(
        s.ev(Event::Stop(TERM)),
        vec![Action::Exit { code: 139 }],
        "relaunch exits like a shell with the last child's status"
    );
}

#[test]
fn on_exit_exit_ends_relaunch_with_the_status_a_shell_gives() {
    for (restart, status, code) in [
        (RestartPolicy::Never, ExitStatus::Code(3), 3),
        (RestartPolicy::Never, ExitStatus::Signal(15), 143),
        (RestartPolicy::Never, ExitStatus::Code(0), 0),
        // An expected exit under on-failure ends relaunch too.
        (RestartPolicy::OnFailure, ExitStatus::Code(0), 0),
    ] {
        let mut s = Sim::with(Settings {
            on_exit: OnExit::Exit,
            ..policy(restart, &[0])
        });
        let p = running(&mut s);
        assert_eq!(
            s.exit(p, status),
            vec![Action::Exit { code }],
            "{restart} {status:?}"
        );
        assert_eq!(s.alive(), 0);
        assert!(
            s.sup.state_reason().contains("not restarted"),
            "{}",
            s.sup.state_reason()
        );
    }
}

#[test]
fn on_exit_exit_leaves_restarts_and_failed_starts_to_their_own_rules() {
    // A failure under on-failure is still restarted.
    let mut s = Sim::with(Settings {
        on_exit: OnExit::Exit,
        ..policy(RestartPolicy::OnFailure, &[0])
    });
    let p = running(&mut s);
    assert!(s.exit(p, ExitStatus::Code(3)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    // A generation that never counted as started is a failed start (retried), not an exit.
    let mut s = Sim::with(Settings {
        on_exit: OnExit::Exit,
        ..policy(RestartPolicy::Never, &[0])
    });
    let p = s.start();
    assert!(s.exit(p, ExitStatus::Code(3)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    // The old generation of a reload exiting as asked is no exit of the program either.
    let mut s = Sim::with(Settings {
        on_exit: OnExit::Exit,
        ..policy(RestartPolicy::Never, &[0])
    });
    let old = running(&mut s);
    s.hup();
    s.at(2000);
    assert_eq!(s.sup.current().unwrap().generation, 2);
    assert!(s.exit(old, ExitStatus::Signal(15)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Running);
}

#[test]
fn on_exit_wait_keeps_the_sockets_and_a_reload_starts_a_new_generation() {
    let mut s = Sim::with(Settings {
        on_exit: OnExit::Wait,
        ..policy(RestartPolicy::Never, &[0])
    });
    let p = running(&mut s);
    assert!(s.exit(p, ExitStatus::Code(3)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Exited);
    assert!(s.at(100_000).is_empty(), "nothing happens until asked");
    let a = s.ev(Event::Reload(HUP));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
}

#[test]
fn accessors_show_the_attempt_in_progress_and_the_coalesced_follow_up() {
    let mut s = Sim::new();
    let g1 = s.start();
    assert_eq!(s.sup.reloading(), None);
    s.at(1000);
    s.hup();
    assert_eq!(s.sup.reloading(), Some((2, &HUP)));
    assert!(!s.sup.reload_queued());
    s.ev(Event::Reload(Trigger::Control));
    assert!(s.sup.reload_queued(), "a request during a reload is queued");
    assert_eq!(
        s.sup.reloading(),
        Some((2, &HUP)),
        "the attempt is unchanged"
    );
    s.at(2000);
    assert_eq!(s.sup.reloading(), None, "generation 2 took over");
    assert!(
        s.sup.reload_queued(),
        "the follow-up waits for generation 1 to exit"
    );
    s.exit(g1, ExitStatus::Code(0));
    assert_eq!(s.sup.reloading(), Some((3, &Trigger::Control)));
    assert!(!s.sup.reload_queued());
    let g2 = s.sup.current().unwrap().pid;
    s.at(3000);
    s.exit(g2, ExitStatus::Code(0));
    let g3 = s.sup.current().unwrap().pid;
    assert_eq!(s.sup.backoff(), None);
    s.exit(g3, ExitStatus::Code(1));
    assert_eq!(
        s.sup.backoff(),
        Some((s.now() + Duration::from_millis(100), 4))
    );
}

#[test]
fn a_failed_start_is_retried_whatever_the_restart_policy() {
    // supervisord too retries a process that exits during startsecs, even with
    // autorestart=false and an expected code: a server that exits at once did not start.
    let mut s = Sim::with(policy(RestartPolicy::Never, &[0]));
    let p = s.start();
    s.at(500);
    s.exit(p, ExitStatus::Code(0));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    assert_eq!(s.sup.start_failures(), 1);
}

fn retries(n: u32, on_fatal: OnFatal) -> Settings {
    Settings {
        start_retries: n,
        on_fatal,
        ..exact()
    }
}

/// Lets the current child exit at once with `status`, then waits out the backoff;
/// returns what the exit produced.
fn fail_start(s: &mut Sim, status: ExitStatus) -> Vec<Action> {
    let p = s.sup.current().expect("a generation is starting").pid;
    s.ms += 10;
    let a = s.exit(p, status);
    if let Some(at) = s.sup.restart_at() {
        let ms = (at - s.t0).as_millis() as u64;
        s.at(ms);
    }
    a
}

#[test]
fn start_retries_then_fatal_exits_with_the_last_status() {
    let mut s = Sim::with(retries(2, OnFatal::Exit));
    s.start();
    assert!(fail_start(&mut s, ExitStatus::Code(3)).is_empty());
    assert_eq!(s.sup.start_failures(), 1);
    assert!(fail_start(&mut s, ExitStatus::Code(4)).is_empty());
    assert_eq!(s.sup.start_failures(), 2);
    assert_eq!(s.sup.state(), ProgramState::Starting, "third attempt");
    let a = fail_start(&mut s, ExitStatus::Code(5));
    assert_eq!(a, vec![Action::Exit { code: 5 }]);
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    assert_eq!(s.manager.last(), Some(&ManagerMessage::Stopping));
    assert!(
        s.sup
            .state_reason()
            .starts_with("3 consecutive start failures (--start-retries 2)"),
        "{}",
        s.sup.state_reason()
    );
    assert!(s.ev(Event::Reload(HUP)).is_empty(), "nothing after exit");
}

#[test]
fn fatal_exit_code_is_never_zero_and_follows_the_shell() {
    for (status, code) in [
        (ExitStatus::Code(0), 1),
        (ExitStatus::Code(7), 7),
        (ExitStatus::Signal(9), 137),
    ] {
        let mut s = Sim::with(retries(0, OnFatal::Exit));
        s.start();
        assert_eq!(
            fail_start(&mut s, status),
            vec![Action::Exit { code }],
            "{status}"
        );
    }
    // An exec failure of a later attempt: its 126/127 (after serving, only --max-restarts
    // makes the program FATAL).
    let mut s = Sim::with(Settings {
        max_restarts: Some(2),
        ..retries(1, OnFatal::Exit)
    });
    let p = running(&mut s);
    s.exit(p, ExitStatus::Code(1));
    assert_eq!(s.ev(Event::Tick), vec![]);
    s.ms = 1100;
    assert_eq!(
        s.ev(Event::Tick),
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    let gone = |generation| Event::Spawned {
        worker: 0,
        generation,
        result: Err(SpawnFailure {
            message: "program not found".into(),
            exit_code: 127,
        }),
    };
    assert!(s.ev(gone(2)).is_empty());
    s.ms = 1300;
    assert_eq!(
        s.ev(Event::Tick),
        vec![Action::Spawn {
            generation: 3,
            worker: 0
        }]
    );
    assert_eq!(s.ev(gone(3)), vec![Action::Exit { code: 127 }]);
}

#[test]
fn fatal_exit_waits_for_a_child_still_stopping() {
    // Not ready in time: the child is stopped, and relaunch exits only once it is reaped.
    let mut s = Sim::with(Settings {
        start_retries: 0,
        ..notify_settings()
    });
    let p = s.start();
    assert_eq!(
        s.at(60_000),
        vec![sig(p.as_raw(), TERM), sig(p.as_raw(), CONT)]
    );
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    assert_eq!(s.at(70_000), vec![sig(p.as_raw(), KILL)]);
    assert_eq!(
        s.exit(p, ExitStatus::Signal(9)),
        vec![Action::Exit { code: 1 }],
        "not ready in time is a failure of its own, not the kill's 137"
    );
}

#[test]
fn on_fatal_wait_keeps_waiting_and_a_reload_starts_from_a_fresh_count() {
    let mut s = Sim::with(retries(1, OnFatal::Wait));
    s.start();
    fail_start(&mut s, ExitStatus::Code(1));
    assert!(fail_start(&mut s, ExitStatus::Code(1)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    assert_eq!(s.sup.next_deadline(), None);
    assert!(s.at(1_000_000).is_empty(), "FATAL waits without restarting");
    // A reload: a new attempt with a fresh retry count (two attempts again).
    let a = s.ev(Event::Reload(HUP));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 3,
            worker: 0
        }]
    );
    s.run(a);
    assert_eq!(s.sup.start_failures(), 0);
    assert_eq!(s.sup.state(), ProgramState::Starting);
    fail_start(&mut s, ExitStatus::Code(1));
    assert_eq!(s.sup.state(), ProgramState::Starting);
    fail_start(&mut s, ExitStatus::Code(1));
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    // A stop in FATAL exits with the failure's code.
    assert_eq!(s.ev(Event::Stop(TERM)), vec![Action::Exit { code: 1 }]);
}

#[test]
fn a_start_that_counts_resets_the_retry_count() {
    let mut s = Sim::with(retries(2, OnFatal::Exit));
    s.start();
    fail_start(&mut s, ExitStatus::Code(1));
    fail_start(&mut s, ExitStatus::Code(1));
    assert_eq!(s.sup.start_failures(), 2);
    s.at(s.ms + 1000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert_eq!(s.sup.start_failures(), 0);
    let p = s.sup.current().unwrap().pid;
    s.exit(p, ExitStatus::Code(1));
    assert_eq!(
        s.sup.start_failures(),
        0,
        "a crash after running is no start failure"
    );
    assert_eq!(s.sup.state(), ProgramState::Backoff);
}

#[test]
fn a_failed_reload_does_not_count_as_a_start_failure() {
    let mut s = Sim::with(retries(0, OnFatal::Exit));
    running(&mut s);
    for _ in 0..3 {
        s.hup();
        let p = s.sup.pending().unwrap().pid;
        assert!(s.exit(p, ExitStatus::Code(1)).is_empty());
    }
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert_eq!(s.sup.start_failures(), 0);
}

#[test]
fn a_crash_loop_within_the_window_is_fatal() {
    let mut s = Sim::with(Settings {
        max_restarts: Some(2),
        restart_window: Duration::from_secs(10),
        ..exact()
    });
    let mut p = running(&mut s);
    // Two restarts are allowed within 10 s; each child runs (1 s) before it crashes.
    for _ in 0..2 {
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        s.at(s.ms + 100);
        p = s.sup.current().unwrap().pid;
        s.at(s.ms + 1000);
        assert_eq!(s.sup.state(), ProgramState::Running);
    }
    let a = s.exit(p, ExitStatus::Code(1));
    assert_eq!(a, vec![Action::Exit { code: 1 }]);
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    assert!(
        s.sup
            .state_reason()
            .starts_with("crash loop: generation 3 exited with exit code 1"),
        "{}",
        s.sup.state_reason()
    );
}

/// A served program crashes and its next `n` restarts fail at once; checks the state,
/// reason, attempt count and delay after each. Ends in BACKOFF.
fn crash_then_failed_restarts(s: &mut Sim, n: u32) {
    let p = s.sup.current().unwrap().pid;
    s.ms += 10;
    assert!(s.exit(p, ExitStatus::Signal(9)).is_empty());
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    assert_eq!(s.sup.restart_attempt(), 1);
    for attempt in 1..=n {
        let at = s.sup.restart_at().expect("a restart is scheduled");
        let delay = at.saturating_duration_since(s.now());
        assert!(
            delay <= s.sup.settings().backoff_max,
            "attempt {attempt}: {delay:?} is over --backoff-max"
        );
        s.at((at - s.t0).as_millis() as u64);
        assert_eq!(s.sup.state(), ProgramState::Starting, "attempt {attempt}");
        s.ms += 10;
        let a = s.exit(s.sup.current().unwrap().pid, ExitStatus::Code(1));
        assert!(a.is_empty(), "attempt {attempt}: {a:?}");
        assert_eq!(s.sup.state(), ProgramState::Backoff, "attempt {attempt}");
        assert_eq!(s.sup.restart_attempt(), attempt + 1);
        assert_eq!(s.sup.start_failures(), attempt);
        let reason = s.sup.state_reason();
        assert!(
            reason.contains(&format!("(failed restarts in a row: {attempt})"))
                && reason.contains(&format!("restart attempt {}", attempt + 1)),
            "{reason}"
        );
    }
}

#[test]
fn after_serving_failed_restarts_back_off_for_as_long_as_it_takes() {
    // --start-retries 2 would make the third failed *first* start FATAL; after serving it
    // does not apply: 40 failed restarts in a row, delays capped at --backoff-max.
    let mut s = Sim::with(Settings {
        backoff_max: Duration::from_secs(2),
        ..retries(2, OnFatal::Exit)
    });
    running(&mut s);
    assert!(s.sup.has_served());
    // fail_start waits out each backoff itself; the helper checks each step.
    let p = s.sup.current().unwrap().pid;
    s.ms += 10;
    s.exit(p, ExitStatus::Signal(9));
    for attempt in 1..=40u32 {
        let at = s.sup.restart_at().expect("a restart is scheduled");
        assert!(at.saturating_duration_since(s.now()) <= Duration::from_secs(2));
        s.at((at - s.t0).as_millis() as u64);
        let a = s.exit(s.sup.current().unwrap().pid, ExitStatus::Code(1));
        assert!(a.is_empty(), "attempt {attempt}: {a:?}");
        assert_eq!(s.sup.state(), ProgramState::Backoff, "attempt {attempt}");
        assert_eq!(s.sup.restart_attempt(), attempt + 1);
    }
    assert!(
        s.statuses.iter().all(|t| t.starts_with("BACKOFF: ")),
        "{:?}",
        s.statuses
    );
    // Exec failures count the same way.
    let at = s.sup.restart_at().unwrap();
    s.ms = (at - s.t0).as_millis() as u64;
    let a = s.ev(Event::Tick);
    let Some(Action::Spawn { generation, .. }) = a.first().cloned() else {
        panic!("expected a spawn, got {a:?}")
    };
    let failed = s.ev(Event::Spawned {
        worker: 0,
        generation,
        result: Err(SpawnFailure {
            message: "program not found".into(),
            exit_code: 127,
        }),
    });
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    // The outage ends: a restart that stays up counts, and the counts start over.
    let at = s.sup.restart_at().unwrap();
    s.at((at - s.t0).as_millis() as u64);
    s.at(s.ms + 1000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert_eq!((s.sup.restart_attempt(), s.sup.start_failures()), (0, 0));
}

#[test]
fn the_first_start_still_fails_fast_but_not_once_served() {
    // Never served: the --start-retries + 1-th failure is FATAL (a bad deploy).
    let mut s = Sim::with(retries(1, OnFatal::Wait));
    s.start();
    fail_start(&mut s, ExitStatus::Code(1));
    fail_start(&mut s, ExitStatus::Code(1));
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    assert!(!s.sup.has_served());
    // The same settings after serving: five failed restarts and still BACKOFF.
    let mut s = Sim::with(retries(1, OnFatal::Wait));
    running(&mut s);
    crash_then_failed_restarts(&mut s, 5);
}

#[test]
fn after_serving_only_max_restarts_makes_failed_restarts_fatal() {
    let mut s = Sim::with(Settings {
        max_restarts: Some(4),
        restart_window: Duration::from_secs(60),
        ..retries(0, OnFatal::Exit)
    });
    running(&mut s);
    // The crash is restart 1; three failed restarts are restarts 2 to 4.
    crash_then_failed_restarts(&mut s, 3);
    s.at((s.sup.restart_at().unwrap() - s.t0).as_millis() as u64);
    let a = fail_start(&mut s, ExitStatus::Code(7));
    assert_eq!(a, vec![Action::Exit { code: 7 }], "--on-fatal exit applies");
    assert_eq!(s.sup.state(), ProgramState::Fatal);
    assert!(
        s.sup.state_reason().starts_with("crash loop: ")
            && s.sup.state_reason().contains("--max-restarts 4"),
        "{}",
        s.sup.state_reason()
    );
}

#[test]
fn the_outage_error_is_throttled_to_one_per_backoff_max() {
    // The error line's throttle: the first failure of an outage logs it, then at most one
    // per --backoff-max; a start that counts ends the outage.
    let mut s = Sim::with(Settings {
        backoff_max: Duration::from_secs(1),
        ..exact()
    });
    running(&mut s);
    let p = s.sup.current().unwrap().pid;
    s.exit(p, ExitStatus::Code(1));
    let mut logged = Vec::new();
    for _ in 0..30 {
        let at = s.sup.restart_at().unwrap();
        s.at((at - s.t0).as_millis() as u64);
        let before = s.sup.restarts.outage_logged_at;
        s.ms += 10;
        s.exit(s.sup.current().unwrap().pid, ExitStatus::Code(1));
        if s.sup.restarts.outage_logged_at != before {
            logged.push(s.ms);
        }
    }
    assert!(!logged.is_empty());
    for pair in logged.windows(2) {
        assert!(pair[1] - pair[0] >= 1000, "{logged:?}");
    }
    // 30 failures, each over 100 ms after the last and capped at 1 s: far fewer errors.
    assert!(logged.len() < 30, "{logged:?}");
    s.at(s
        .sup
        .restart_at()
        .map_or(s.ms, |at| (at - s.t0).as_millis() as u64));
    s.at(s.ms + 1000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert_eq!(
        s.sup.restarts.outage_logged_at, None,
        "the next outage logs at once"
    );
}

#[test]
fn a_reload_asked_for_during_the_first_start_is_announced_after_ready() {
    // Old behaviour: RELOADING=1 went out at once, before any READY=1, and the reload that
    // followed was never announced.
    let mut s = Sim::new();
    let g1 = s.start();
    s.hup();
    assert!(s.manager.is_empty(), "{:?}", s.manager);
    s.at(1000);
    assert_eq!(
        s.manager[0],
        ManagerMessage::Ready {
            status: format!("generation 1 (pid {g1}) serving")
        }
    );
    assert!(
        matches!(&s.manager[1..], [ManagerMessage::Reloading { .. }]),
        "the queued reload starts now and is announced: {:?}",
        s.manager
    );
    assert_eq!(s.sup.pending().unwrap().generation, 2);
    s.at(2000);
    assert!(
        matches!(&s.manager[2..], [ManagerMessage::Ready { status }] if status.contains("generation 2")),
        "{:?}",
        s.manager
    );
    // The next reload: exactly one RELOADING, then one READY.
    s.exit(g1, ExitStatus::Code(0));
    s.hup();
    s.at(3000);
    assert!(
        matches!(
            &s.manager[3..],
            [
                ManagerMessage::Reloading { .. },
                ManagerMessage::Ready { .. }
            ]
        ),
        "{:?}",
        s.manager
    );
}

#[test]
fn a_reload_during_a_first_start_in_backoff_sends_no_reloading() {
    let mut s = Sim::with(exact());
    s.start();
    fail_start(&mut s, ExitStatus::Code(1));
    let p = s.sup.current().unwrap().pid;
    s.exit(p, ExitStatus::Code(1));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    s.hup();
    s.at(s.ms + 1000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert!(
        matches!(&s.manager[..], [ManagerMessage::Ready { .. }]),
        "{:?}",
        s.manager
    );
}

#[test]
fn the_reason_stays_true_when_the_old_generation_dies_mid_reload() {
    let mut s = Sim::new();
    let g1 = running(&mut s);
    assert_eq!(
        s.sup.state_reason(),
        format!("generation 1 (pid {g1}) is up")
    );
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.ms = 1500;
    s.exit(g1, ExitStatus::Signal(9));
    assert_eq!(s.sup.state(), ProgramState::Starting);
    assert_eq!(
        s.sup.state_reason(),
        format!(
            "generation 1 was killed by signal 9 (SIGKILL) during the reload; generation 2 (pid {g2}) takes over once it is up"
        )
    );
    s.at(2000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    assert_eq!(
        s.sup.state_reason(),
        format!("reload complete: generation 2 (pid {g2}) serves")
    );
    // And if the new one fails too: BACKOFF, saying so (a failed restart of a served
    // program).
    s.hup();
    let g3 = s.sup.pending().unwrap().pid;
    s.exit(g2, ExitStatus::Code(1));
    s.exit(g3, ExitStatus::Code(1));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    assert!(
        s.sup
            .state_reason()
            .starts_with("generation 3 exited with exit code 1"),
        "{}",
        s.sup.state_reason()
    );
}

#[test]
fn restarts_spread_wider_than_the_window_are_no_crash_loop() {
    let mut s = Sim::with(Settings {
        max_restarts: Some(1),
        restart_window: Duration::from_secs(10),
        ..exact()
    });
    let mut p = running(&mut s);
    for _ in 0..5 {
        s.exit(p, ExitStatus::Code(1));
        assert_eq!(s.sup.state(), ProgramState::Backoff);
        s.at(s.ms + 100);
        p = s.sup.current().unwrap().pid;
        s.at(s.ms + 10_000);
    }
    assert_eq!(s.sup.state(), ProgramState::Running);
}

#[test]
fn backoff_bounds_follow_min_factor_and_max() {
    let set = |min_ms, factor, max_ms| Settings {
        backoff_min: Duration::from_millis(min_ms),
        backoff_factor: factor,
        backoff_max: Duration::from_millis(max_ms),
        ..Settings::default()
    };
    let ms = |s: &Settings, step| backoff_delay(s, step).as_millis() as u64;
    let s = set(100, 1.5, 1000);
    let got: Vec<u64> = (0..8).map(|step| ms(&s, step)).collect();
    assert_eq!(got, [100, 150, 225, 337, 506, 759, 1000, 1000]);
    let s = set(250, 1.0, 1000);
    assert_eq!(ms(&s, 50), 250, "factor 1: constant delay");
    let s = set(100, 2.0, 30_000);
    assert_eq!(ms(&s, u32::MAX), 30_000, "no overflow");
    let s = set(0, 2.0, 1000);
    assert_eq!(ms(&s, 10), 0);
    // A factor below 1 would shrink the delay: treated as 1.
    let s = set(100, 0.5, 1000);
    assert_eq!(ms(&s, 3), 100);
}

#[test]
fn jitter_draws_between_min_and_the_bound_and_is_seeded() {
    let delays = |seed| {
        let mut s = Supervisor::with_seed(Settings::default(), seed);
        (0..12)
            .map(|step| {
                s.restarts.backoff_step = step;
                s.next_delay()
            })
            .collect::<Vec<_>>()
    };
    let a = delays(1);
    assert_eq!(a, delays(1), "the same seed gives the same delays");
    assert_ne!(a, delays(2), "another seed gives others");
    let settings = Settings::default();
    for (step, d) in a.iter().enumerate() {
        assert!(
            *d >= settings.backoff_min && *d <= backoff_delay(&settings, step as u32),
            "step {step}: {d:?}"
        );
    }
    assert_eq!(a[0], settings.backoff_min, "the first delay is the minimum");
    let spread = a.iter().filter(|d| **d != settings.backoff_min).count();
    assert!(spread >= 8, "jitter spreads the delays: {a:?}");
}

#[test]
fn states_follow_the_program_through_its_life() {
    let mut s = Sim::with(exact());
    assert_eq!(s.sup.state(), ProgramState::Starting);
    let p = s.start();
    assert_eq!(s.sup.state(), ProgramState::Starting);
    s.at(1000);
    assert_eq!(s.sup.state(), ProgramState::Running);
    s.hup();
    assert!(s.sup.pending().is_some());
    assert_eq!(
        s.sup.state(),
        ProgramState::Running,
        "a reload's pending generation does not change the state"
    );
    s.at(2000);
    s.exit(p, ExitStatus::Code(0));
    let p = s.sup.current().unwrap().pid;
    s.exit(p, ExitStatus::Signal(9));
    assert_eq!(s.sup.state(), ProgramState::Backoff);
    assert!(s.sup.restart_at().is_some());
    s.at(2100);
    assert_eq!(s.sup.state(), ProgramState::Starting);
    s.ev(Event::Stop(TERM));
    assert_eq!(s.sup.state(), ProgramState::Stopping);
    assert_eq!(s.sup.last_exit(), Some(ExitStatus::Signal(9)));
    for name in [
        "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL",
    ] {
        assert!(
            [
                ProgramState::Starting,
                ProgramState::Running,
                ProgramState::Backoff,
                ProgramState::Stopping,
                ProgramState::Exited,
                ProgramState::Fatal
            ]
            .iter()
            .any(|st| st.to_string() == name),
            "{name}"
        );
    }
}

#[test]
fn stop_as_group_signals_the_group_and_kill_as_group_only_the_kill() {
    let mut s = Sim::with(Settings {
        stop_as_group: true,
        ..Settings::default()
    });
    let p = s.start().as_raw();
    assert_eq!(
        s.ev(Event::Forward(Signal::SIGUSR1)),
        vec![sig(p, Signal::SIGUSR1)],
        "forwarded signals go to the child alone"
    );
    assert_eq!(s.ev(Event::Stop(TERM)), vec![gsig(p, TERM), gsig(p, CONT)]);
    assert_eq!(s.at(10_000), vec![gsig(p, KILL)]);

    let mut s = Sim::with(Settings {
        kill_as_group: true,
        ..Settings::default()
    });
    let p = s.start().as_raw();
    assert_eq!(s.ev(Event::Stop(TERM)), vec![sig(p, TERM), sig(p, CONT)]);
    assert_eq!(
        s.ev(Event::Stop(Signal::SIGQUIT)),
        vec![gsig(p, KILL)],
        "SIGQUIT's kill too"
    );

    // A stop signal of KILL is a kill: to the group with kill_as_group.
    let mut s = Sim::with(Settings {
        kill_as_group: true,
        stop_signal: KILL,
        ..Settings::default()
    });
    let p = s.start().as_raw();
    assert_eq!(s.ev(Event::Stop(TERM)), vec![gsig(p, KILL)]);
}

#[test]
fn policy_values_parse_and_name_bad_input() {
    assert_eq!("always".parse(), Ok(RestartPolicy::Always));
    assert_eq!("On-Failure".parse(), Ok(RestartPolicy::OnFailure));
    assert_eq!("never".parse(), Ok(RestartPolicy::Never));
    assert_eq!(
        "sometimes".parse::<RestartPolicy>().unwrap_err(),
        "\"sometimes\" is not a restart policy (expected always, on-failure or never)"
    );
    assert_eq!("wait".parse(), Ok(OnFatal::Wait));
    assert_eq!("exit".parse(), Ok(OnFatal::Exit));
    assert_eq!(
        "retry".parse::<OnFatal>().unwrap_err(),
        "\"retry\" is not an --on-fatal action (expected exit or wait)"
    );
    let codes: ExitCodes = "0, 2,255".parse().unwrap();
    assert_eq!(codes.codes().collect::<Vec<_>>(), [0, 2, 255]);
    assert_eq!(codes.to_string(), "0,2,255");
    assert!(codes.contains(255) && !codes.contains(1) && !codes.contains(-1));
    assert_eq!("".parse::<ExitCodes>(), Ok(ExitCodes::NONE));
    assert_eq!(ExitCodes::default().to_string(), "0");
    for bad in ["256", "-1", "a", "1;2", "+1"] {
        assert_eq!(
            bad.parse::<ExitCodes>().unwrap_err(),
            format!("{bad:?} is not a list of exit codes (expected numbers from 0 to 255 separated by commas, like 0,2)")
        );
    }
}

#[test]
fn watch_triggers_reload_coalesce_and_report_like_sighup() {
    let watch = |p: &str| Trigger::Watch { path: p.into() };
    assert_eq!(watch("/srv/app").to_string(), "watch");
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    let a = s.ev(Event::Reload(watch("/srv/app")));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    s.run(a);
    // More changes during the reload coalesce into one follow-up.
    assert!(s.ev(Event::Reload(watch("/srv/app"))).is_empty());
    assert!(s.hup().is_empty());
    s.at(2000);
    s.exit(g1, ExitStatus::Code(0));
    assert_eq!(s.sup.pending().unwrap().generation, 3);
    let g3 = s.sup.pending().unwrap().pid;
    s.exit(g3, ExitStatus::Code(1));
    assert_eq!(s.done, vec![(2, true), (3, false)]);
    assert!(s.sup.pending().is_none(), "exactly one follow-up");
}
