//! The README's invariants under random events.

use super::*;

/// Drives the machine through a long pseudo-random mix of every event, over random
/// policies, and checks the invariants after each step.
#[test]
fn invariants_hold_under_random_events() {
    // Which states the runs reached, and how many ended in a FATAL exit: the random walk
    // must cover every state, or it proves little.
    let mut seen = std::collections::HashSet::new();
    let mut fatal_exits = 0;
    for seed in 1..=300u64 {
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let restart = [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ][(next() % 3) as usize];
        let on_fatal = if next() % 2 == 0 {
            OnFatal::Exit
        } else {
            OnFatal::Wait
        };
        let settings = Settings {
            stop_wait: Duration::from_millis(300),
            ready_signal: seed % 2 == 0,
            ready_timeout: Duration::from_millis(2000),
            restart,
            exit_codes: ExitCodes::of(&[0, 2]),
            start_retries: (next() % 4) as u32,
            on_fatal,
            max_restarts: (next() % 2 == 0).then_some((next() % 4) as u32),
            restart_window: Duration::from_millis(3000),
            stop_as_group: next() % 3 == 0,
            kill_as_group: next() % 2 == 0,
            jitter: true,
            ..Settings::default()
        };
        let mut s = Sim {
            sup: Supervisor::with_seed(settings, seed),
            ..Sim::with(settings)
        };
        s.start();
        let mut signalled_stop = std::collections::HashSet::new();
        let mut restarts: Vec<Instant> = Vec::new();
        let mut exited = false;
        for _ in 0..300 {
            let live: Vec<Pid> = s.sup.children().map(|c| c.pid).collect();
            let restart_before = s.sup.restart_at();
            let reload_before = s.sup.reload.as_ref().map(|r| r.generation);
            let actions = match next() % 9 {
                6 if !live.is_empty() => {
                    let p = live[(next() % live.len() as u64) as usize];
                    s.ev(ready(p))
                }
                0 | 1 => s.hup(),
                2 => {
                    let ms = s.ms + next() % 1500;
                    s.at(ms)
                }
                3..=5 if !live.is_empty() => {
                    let p = live[(next() % live.len() as u64) as usize];
                    let status = match next() % 4 {
                        0 => ExitStatus::Code(0),
                        1 => ExitStatus::Code(2),
                        2 => ExitStatus::Code(1),
                        _ => ExitStatus::Signal(9),
                    };
                    s.exit(p, status)
                }
                7 if s.sup.in_backoff() => {
                    // The next spawn fails (exec error).
                    let at = s.sup.restart_at().unwrap();
                    s.ms = s.ms.max((at - s.t0).as_millis() as u64 + 1);
                    let a = s.ev(Event::Tick);
                    let mut rest = Vec::new();
                    for a in a {
                        match a {
                            Action::Spawn { generation, .. } => {
                                let more = s.ev(Event::Spawned {
                                    worker: 0,
                                    generation,
                                    result: Err(SpawnFailure {
                                        message: "exec failed".into(),
                                        exit_code: 126,
                                    }),
                                });
                                rest.extend(s.run(more));
                            }
                            other => rest.push(other),
                        }
                    }
                    rest
                }
                _ => {
                    let a = s.ev(Event::Forward(Signal::SIGUSR2));
                    s.run(a)
                }
            };
            let state = s.sup.state();
            seen.insert(state);
            for a in &actions {
                match a {
                    Action::Signal { pid, signal, group } => {
                        assert!(
                            live.contains(pid),
                            "seed {seed}: signal to a dead pid {pid}"
                        );
                        if *signal == TERM {
                            signalled_stop.insert(*pid);
                        }
                        let want_group = match *signal {
                            KILL => settings.kill_as_group || settings.stop_as_group,
                            Signal::SIGUSR2 => false,
                            _ => settings.stop_as_group,
                        };
                        assert_eq!(*group, want_group, "seed {seed}: {a:?}");
                    }
                    Action::Exit { code } => {
                        assert!(
                            state == ProgramState::Fatal && on_fatal == OnFatal::Exit,
                            "seed {seed}: exit without stop in {state}"
                        );
                        assert_ne!(*code, 0, "seed {seed}: FATAL exits non-zero");
                        exited = true;
                        fatal_exits += 1;
                    }
                    _ => {}
                }
            }
            if exited {
                assert!(
                    s.sup.children().count() == 0,
                    "seed {seed}: exit with children"
                );
                assert!(s.hup().is_empty() && s.at(s.ms + 100_000).is_empty());
                break;
            }
            assert!(s.alive() <= 2, "seed {seed}: {} alive", s.alive());
            let starting = s
                .sup
                .children()
                .filter(|c| matches!(c.phase, Phase::Starting { .. }))
                .count();
            assert!(starting <= 1, "seed {seed}: two generations starting");
            if let Some(c) = s.sup.current() {
                assert!(
                    !signalled_stop.contains(&c.pid),
                    "seed {seed}: current was stopped"
                );
            }
            // --start-retries bounds the first start only; once the program has served,
            // failed restarts go on, and only --max-restarts makes it FATAL.
            assert!(
                s.sup.has_served() || s.sup.start_failures() <= settings.start_retries + 1,
                "seed {seed}: {} failures",
                s.sup.start_failures()
            );
            if state == ProgramState::Fatal && s.sup.has_served() {
                assert!(
                    settings.max_restarts.is_some(),
                    "seed {seed}: FATAL after serving without --max-restarts: {}",
                    s.sup.state_reason()
                );
            }
            match state {
                ProgramState::Exited | ProgramState::Fatal => {
                    assert!(
                        s.sup.current().is_none()
                            && !s.sup.in_backoff()
                            && s.sup.spawning.is_none(),
                        "seed {seed}: {state} with something scheduled or serving"
                    );
                    if state == ProgramState::Fatal && on_fatal == OnFatal::Exit {
                        // Exiting, once the children still stopping are reaped.
                        assert!(
                            s.sup.is_stopping() && s.sup.pending().is_none(),
                            "seed {seed}: FATAL with --on-fatal exit must be stopping"
                        );
                    }
                }
                ProgramState::Backoff => assert!(s.sup.in_backoff(), "seed {seed}"),
                ProgramState::Running => assert_eq!(
                    s.sup.current().map(|c| c.phase),
                    Some(Phase::Running),
                    "seed {seed}"
                ),
                ProgramState::Starting => assert!(
                    s.sup.current().is_some()
                        || s.sup.pending().is_some()
                        || s.sup.spawning.is_some(),
                    "seed {seed}: STARTING with nothing starting"
                ),
                ProgramState::Stopping => panic!("seed {seed}: stopping without a stop"),
            }
            if s.sup.current().is_none() && s.sup.pending().is_none() {
                assert!(
                    s.sup.in_backoff()
                        || s.sup.spawning.is_some()
                        || matches!(state, ProgramState::Exited | ProgramState::Fatal),
                    "seed {seed}: nothing serves, no restart is scheduled, and the state is {state}"
                );
            }
            // A reload that started begins a fresh crash-loop window.
            if s.sup.reload.is_some()
                && s.sup.reload.as_ref().map(|r| r.generation) != reload_before
            {
                restarts.clear();
            }
            // A newly scheduled restart: its delay is within bounds, and the crash-loop
            // limit holds.
            if let Some(at) = s.sup.restart_at().filter(|at| Some(*at) != restart_before) {
                let now = s.now();
                let delay = at - now;
                assert!(
                    delay >= settings.backoff_min && delay <= settings.backoff_max,
                    "seed {seed}: delay {delay:?}"
                );
                restarts.push(now);
                if let Some(max) = settings.max_restarts {
                    let recent = restarts
                        .iter()
                        .filter(|t| now.duration_since(**t) < settings.restart_window)
                        .count();
                    assert!(
                        recent <= max as usize,
                        "seed {seed}: {recent} restarts in the window, max {max}"
                    );
                }
            }
        }
        if exited {
            continue;
        }
        // Stop always ends in Exit once every child is reaped.
        let a = s.ev(Event::Stop(TERM));
        seen.insert(s.sup.state());
        let immediate = a.iter().any(|a| matches!(a, Action::Exit { .. }));
        s.run(a);
        let mut exit = None;
        for _ in 0..4 {
            let live: Vec<Pid> = s.sup.children().map(|c| c.pid).collect();
            for p in live {
                for a in s.exit(p, ExitStatus::Code(0)) {
                    exit = Some(a);
                }
            }
        }
        if s.sup.children().count() == 0 && exit.is_none() {
            // Already exited when Stop was handled (no child at the time).
            assert!(s.sup.done && immediate, "seed {seed}");
        } else {
            assert!(
                matches!(exit, Some(Action::Exit { .. })),
                "seed {seed}: {exit:?}"
            );
        }
    }
    assert_eq!(seen.len(), 6, "states reached: {seen:?}");
    assert!(fatal_exits > 0);
}
