//! Readiness (`--ready notify`/`fd:N`), the service manager, reload outcomes.

use super::*;

#[test]
fn notify_mode_waits_for_ready_then_stops_the_old_one_at_once() {
    let mut s = Sim::with(notify_settings());
    let g1 = s.start();
    assert!(
        s.at(30_000).is_empty(),
        "no timer promotes a child in notify mode"
    );
    assert!(matches!(
        s.sup.current().unwrap().phase,
        Phase::Starting { ready: false, .. }
    ));
    assert!(s.ev(ready(g1)).is_empty());
    assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    assert!(
        s.at(59_000).is_empty(),
        "the old one serves until the new one is ready"
    );
    assert_eq!(
        s.ev(ready(g2)),
        vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)],
        "READY=1 stops the old generation in the same step"
    );
    assert_eq!(s.sup.current().unwrap().pid, g2);
    assert_eq!(s.done, vec![(2, true)]);
}

#[test]
fn notify_mode_start_secs_is_the_minimum_time_alive_after_ready() {
    let mut s = Sim::with(Settings {
        start_secs: Duration::from_millis(500),
        ..notify_settings()
    });
    let g1 = s.start();
    s.ev(ready(g1));
    s.at(500);
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.ms = 1000;
    assert!(s.ev(ready(g2)).is_empty());
    assert!(s.at(1499).is_empty());
    assert_eq!(
        s.at(1500),
        vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
    );
}

#[test]
fn a_new_child_never_ready_is_stopped_at_the_timeout_and_the_old_one_stays() {
    let mut s = Sim::with(notify_settings());
    let g1 = s.start();
    s.ev(ready(g1));
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.ev(status(g2, "loading model"));
    assert!(s.at(59_999).is_empty());
    assert_eq!(
        s.at(60_000),
        vec![sig(g2.as_raw(), TERM), sig(g2.as_raw(), CONT)]
    );
    assert_eq!(
        s.sup.current().unwrap().pid,
        g1,
        "the old one keeps serving"
    );
    assert!(s.sup.pending().is_none());
    assert_eq!(s.done, vec![(2, false)]);
    // It still gets SIGKILL if it ignores the stop signal, and is reaped as retiring.
    assert_eq!(s.at(70_000), vec![sig(g2.as_raw(), KILL)]);
    assert!(s.exit(g2, ExitStatus::Signal(9)).is_empty());
    assert_eq!(s.alive(), 1);
    assert!(!s.sup.in_backoff());
}

#[test]
fn not_ready_reason_carries_the_last_status() {
    let mut s = Sim::with(notify_settings());
    let g1 = s.start();
    s.ev(ready(g1));
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.ev(status(g2, "waiting for the database"));
    s.ms = 60_000;
    let step = s.sup.handle(Event::Tick, s.now());
    let reason = step
        .reports
        .iter()
        .find_map(|r| match r {
            Report::ReloadEnded {
                reason,
                failure: Some(_),
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .expect("a failed reload is reported");
    assert_eq!(
        reason,
        "not ready within --ready-timeout 60s (last status: waiting for the database)"
    );
}

#[test]
fn extend_timeout_usec_moves_the_deadline() {
    let mut s = Sim::with(notify_settings());
    let g1 = s.start();
    s.ms = 50_000;
    s.ev(Event::Notify {
        pid: g1,
        note: Note {
            extend_timeout: Some(Duration::from_secs(30)),
            ..Note::default()
        },
    });
    assert!(s.at(79_999).is_empty(), "deadline moved to 80 s");
    assert!(matches!(
        s.sup.current().unwrap().phase,
        Phase::Starting { ready: false, .. }
    ));
    // Not ready by then: stopped, and a restart is scheduled.
    assert_eq!(
        s.at(80_000),
        vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
    );
    assert!(s.sup.current().is_none());
    assert!(s.sup.in_backoff());
}

#[test]
fn ready_is_ignored_in_timer_mode_and_from_strangers() {
    let mut s = Sim::new();
    let g1 = s.start();
    assert!(s.ev(ready(g1)).is_empty());
    assert!(matches!(
        s.sup.current().unwrap().phase,
        Phase::Starting { .. }
    ));
    assert!(s.ev(ready(pid(4242))).is_empty());
    assert!(s.at(1000).is_empty());
    assert_eq!(s.sup.current().unwrap().phase, Phase::Running);
}

#[test]
fn the_service_manager_hears_ready_reloading_ready_stopping() {
    let mut s = Sim::new();
    let g1 = s.start();
    assert!(
        s.manager.is_empty(),
        "not ready before the first generation is up"
    );
    s.at(1000);
    assert_eq!(
        s.manager,
        vec![ManagerMessage::Ready {
            status: format!("generation 1 (pid {g1}) serving")
        }]
    );
    s.hup();
    let g2 = s.sup.pending().unwrap().pid;
    s.hup(); // coalesced: one RELOADING, one READY at the very end
    assert_eq!(s.manager.len(), 2);
    assert!(matches!(&s.manager[1], ManagerMessage::Reloading { .. }));
    s.at(2000);
    assert_eq!(
        s.manager.len(),
        2,
        "no READY while a follow-up reload is queued"
    );
    s.exit(g1, ExitStatus::Code(0));
    s.at(3000);
    s.exit(g2, ExitStatus::Code(0));
    assert_eq!(s.done, vec![(2, true), (3, true)]);
    assert_eq!(s.manager.len(), 3);
    match &s.manager[2] {
        ManagerMessage::Ready { status } => {
            assert!(
                status.contains("generation 3") && status.contains("succeeded"),
                "{status}"
            )
        }
        other => panic!("expected READY, got {other:?}"),
    }
    // A failed reload also ends with READY, saying it failed.
    s.hup();
    let g4 = s.sup.pending().unwrap().pid;
    s.exit(g4, ExitStatus::Code(1));
    match s.manager.last().unwrap() {
        ManagerMessage::Ready { status } => {
            assert!(
                status.contains("last reload failed: exited with exit code 1"),
                "{status}"
            )
        }
        other => panic!("expected READY, got {other:?}"),
    }
    s.ev(Event::Stop(TERM));
    assert_eq!(s.manager.last(), Some(&ManagerMessage::Stopping));
}

#[test]
fn the_service_manager_hears_why_nothing_serves() {
    let mut s = Sim::new();
    let p = s.start();
    s.at(1000);
    assert!(s.statuses.is_empty(), "nothing to say while it serves");
    s.exit(p, ExitStatus::Code(7));
    assert_eq!(s.statuses.len(), 1, "{:?}", s.statuses);
    assert!(
        s.statuses[0].starts_with("BACKOFF: ") && s.statuses[0].contains("exit code 7"),
        "{:?}",
        s.statuses
    );
}

#[test]
fn every_reload_attempt_reports_its_outcome() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    // Success.
    s.hup();
    s.at(2000);
    s.exit(g1, ExitStatus::Code(0));
    // Early exit.
    s.hup();
    let g3 = s.sup.pending().unwrap().pid;
    s.exit(g3, ExitStatus::Code(1));
    // Exec failure.
    let a = s.ev(Event::Reload(HUP));
    assert_eq!(
        a,
        vec![Action::Spawn {
            generation: 4,
            worker: 0
        }]
    );
    s.ev(Event::Spawned {
        worker: 0,
        generation: 4,
        result: Err(SpawnFailure {
            message: "program not found".into(),
            exit_code: 127,
        }),
    });
    // Interrupted by a stop.
    s.hup();
    s.ev(Event::Stop(TERM));
    assert_eq!(s.done, vec![(2, true), (3, false), (4, false), (5, false)]);
}

#[test]
fn a_stop_between_a_spawn_request_and_its_result_stops_the_new_child_too() {
    let mut s = Sim::new();
    let g1 = s.start();
    s.at(1000);
    // The reload's spawn is requested, then a stop is handled before the spawn ran.
    let spawn = s.ev(Event::Reload(Trigger::Control));
    assert_eq!(
        spawn,
        vec![Action::Spawn {
            generation: 2,
            worker: 0
        }]
    );
    assert_eq!(
        s.ev(Event::Stop(TERM)),
        vec![sig(g1.as_raw(), TERM), sig(g1.as_raw(), CONT)]
    );
    assert_eq!(s.done, vec![(2, false)], "the attempt ends with the stop");
    let a = s.ev(Event::Spawned {
        worker: 0,
        generation: 2,
        result: Ok(pid(777)),
    });
    assert_eq!(a, vec![sig(777, TERM), sig(777, CONT)]);
    assert!(s.exit(g1, ExitStatus::Code(0)).is_empty());
    assert_eq!(
        s.exit(pid(777), ExitStatus::Code(0)),
        vec![Action::Exit { code: 0 }]
    );
}
