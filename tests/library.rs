//! relaunch as a library (`relaunch::api`), used from code only: the masters here run in the
//! test process, never through the `relaunch` binary (one test reads the binary's `status
//! --json` to check it deserializes into the API's typed status).
//!
//! Only one master may run in a process, and a test binary runs its tests on threads of one
//! process: each test re-executes this test binary for itself alone (`in_own_process`), with
//! an environment variable that makes the test body run there. The outer test waits for that
//! process with a deadline and kills its whole tree if it overruns, so nothing is left behind
//! even if the inner test hangs.

mod common;

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use relaunch::api::{
    Error, Event, ExitStatus, Handle, Master, Program, ProgramState, ReloadOutcome, RuntimeError,
    Signal, Status,
};

const T: Duration = Duration::from_secs(30);
const INNER: &str = "RELAUNCH_LIBRARY_TEST";

/// Runs `body` in a fresh process of this test binary that runs only test `name`.
fn in_own_process(name: &str, body: impl FnOnce()) {
    if std::env::var(INNER).as_deref() == Ok(name) {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let dir = TempDir::new("library");
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, name)
        // Hermetic: the masters' default control sockets (none are opened unless asked).
        .env("RELAUNCH_CONTROL_DIR", dir.path())
        .spawn()
        .expect("re-run the test binary");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the test process") {
            break status;
        }
        if Instant::now() > deadline {
            kill_tree(child.id() as i32);
            let _ = child.wait();
            panic!("{name} did not finish within 240s; killed it and its children");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    assert!(
        status.success(),
        "{name} failed in its own process: {status}"
    );
}

/// Shuts the master down when the test ends, also when it panics.
struct Shutdown(Handle);

impl Drop for Shutdown {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// The TCP address of program `name`'s first socket.
fn addr_of(status: &Status, name: &str) -> SocketAddr {
    let program = program(status, name);
    let address = &program.sockets[0].address;
    address
        .trim_start_matches("tcp://")
        .parse()
        .unwrap_or_else(|e| panic!("{name}'s socket address {address:?}: {e}"))
}

fn program<'a>(status: &'a Status, name: &str) -> &'a Status {
    status
        .programs
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no program {name} in {status:?}"))
}

/// Waits until program `name` is RUNNING with every worker up; returns its status.
fn wait_running(handle: &Handle, name: &str) -> Status {
    let mut last = None;
    let ok = poll_until(T, || {
        let status = handle.status().expect("status");
        let p = program(&status, name).clone();
        last = Some(p.clone());
        p.state == "RUNNING" && p.workers_up == p.workers
    });
    assert!(ok, "{name} not RUNNING within {T:?}: {last:?}");
    last.expect("a status")
}

/// The pid of the serving child of program `name`.
fn current_pid(handle: &Handle, name: &str) -> i32 {
    let status = handle.status().expect("status");
    let p = program(&status, name);
    p.generations
        .iter()
        .find(|g| g.role == "current")
        .map(|g| g.pid)
        .unwrap_or_else(|| panic!("{name} has no current generation: {p:?}"))
}

fn hello(name: &str) -> Program {
    Program::new(name, hello_bin())
        .listen("http=127.0.0.1:0")
        .expect("listen")
        .start_secs(Duration::from_millis(300))
        .stop_wait(Duration::from_secs(5))
}

/// Every event that arrives within `timeout` after `until` matched one.
fn events_until(rx: &Receiver<Event>, what: &str, until: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(remaining(deadline)) {
            Ok(e) => {
                let done = until(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("no event {what} within {T:?}; saw {seen:#?}"),
        }
    }
}

#[test]
fn two_programs_typed_status_reloads_under_load_events_in_order_and_shutdown_leaves_no_child() {
    in_own_process(
        "two_programs_typed_status_reloads_under_load_events_in_order_and_shutdown_leaves_no_child",
        || {
            let dir = TempDir::new("library-two");
            let control = dir.join("site.sock");
            let master = Master::new("site")
                .unwrap()
                .program(hello("web").workers(2).unwrap())
                .unwrap()
                .program(hello("api"))
                .unwrap()
                .control_socket(&control);
            // Subscribed before it runs: every event from the first spawn.
            let events = master.handle().subscribe().unwrap().into_receiver();
            let handle = master.start().unwrap();
            let _guard = Shutdown(handle.clone());

            // Typed status: both programs, by name, with their sockets.
            let web = wait_running(&handle, "web");
            wait_running(&handle, "api");
            let status = handle.status().unwrap();
            assert_eq!(status.name, "site");
            assert_eq!(status.pid, std::process::id() as i32);
            let names: Vec<&str> = status.programs.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["web", "api"]);
            assert_eq!(web.workers, 2);
            assert_eq!(web.sockets[0].name, "http");
            let web_addr = addr_of(&status, "web");
            let api_addr = addr_of(&status, "api");
            assert_ne!(web_addr, api_addr);

            // The first generation of each: Spawned (per worker), then Ready, in that order.
            let ready = std::cell::Cell::new(0);
            let first = events_until(&events, "web and api ready", |e| {
                if matches!(e, Event::Ready { .. }) {
                    ready.set(ready.get() + 1);
                }
                ready.get() == 2
            });
            for name in ["web", "api"] {
                let spawned = first
                    .iter()
                    .position(|e| matches!(e, Event::Spawned { program, generation: 1, .. } if program == name))
                    .unwrap_or_else(|| panic!("no Spawned of {name}: {first:#?}"));
                let ready = first
                    .iter()
                    .position(|e| matches!(e, Event::Ready { program, generation: 1, .. } if program == name))
                    .unwrap_or_else(|| panic!("no Ready of {name}: {first:#?}"));
                assert!(spawned < ready, "{name}: Ready before Spawned: {first:#?}");
            }
            let web_workers: Vec<usize> = first
                .iter()
                .filter_map(|e| match e {
                    Event::Spawned {
                        program, worker, ..
                    } if program == "web" => Some(*worker),
                    _ => None,
                })
                .collect();
            assert_eq!(web_workers.len(), 2, "{first:#?}");
            assert!(
                web_workers.contains(&0) && web_workers.contains(&1),
                "{first:#?}"
            );

            // `relaunch status --json` of the same master deserializes into the typed status.
            // Read its output, never wait for it: the master reaps every child of the process
            // (`api` docs), so `output()`'s own `waitpid` can find it gone (ECHILD), and a wait
            // by pid could even reap a reused pid of one of the master's children.
            #[allow(clippy::zombie_processes)] // the master reaps it (see above)
            let mut cli = Command::new(relaunch_bin())
                .args(["status", "--json", "--control", s(&control)])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdout = Vec::new();
            cli.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
            let from_cli: Status = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
                panic!("status --json: {e}: {}", String::from_utf8_lossy(&stdout))
            });
            assert_eq!(from_cli.name, "site");
            assert_eq!(from_cli.pid, status.pid);
            let cli_names: Vec<&str> = from_cli.programs.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(cli_names, names);
            assert_eq!(addr_of(&from_cli, "web"), web_addr);

            // Reloads by name under load: every one succeeds, no request fails.
            let load = Load::start(web_addr, 4);
            let mut pids = vec![current_pid(&handle, "web")];
            wait_until(T, "the load reaching web", || {
                load.seen(pids[0]) || load.failed()
            });
            let mut last = 1;
            for _ in 0..3 {
                match handle.reload("web").unwrap() {
                    ReloadOutcome::Reloaded {
                        generation, pid, ..
                    } => {
                        assert!(generation > last, "generation {generation} after {last}");
                        last = generation;
                        let pid = pid.expect("the new pid");
                        pids.push(pid);
                        wait_until(T, "the new generation answering", || {
                            load.seen(pid) || load.failed()
                        });
                    }
                    other => panic!("reload failed: {other:?}"),
                }
            }
            let stats = load.finish();
            assert!(
                stats.failures.is_empty(),
                "failed requests during reloads: {:?} {:?}",
                stats.failures,
                stats.samples
            );
            assert!(stats.ok > 0);

            // The reload's events: the new generation is Spawned and Ready before its
            // ReloadEnded, and the old one Exited (asked to) after.
            let reload = events_until(
                &events,
                "the last reload's end",
                |e| matches!(e, Event::ReloadEnded { generation, .. } if *generation == last),
            );
            let at = |f: &dyn Fn(&Event) -> bool| reload.iter().position(f);
            let spawned = at(
                &|e| matches!(e, Event::Spawned { program, generation, .. } if program == "web" && *generation == last),
            );
            let ready = at(
                &|e| matches!(e, Event::Ready { program, generation, .. } if program == "web" && *generation == last),
            );
            let ended = at(
                &|e| matches!(e, Event::ReloadEnded { program, generation, failure: None, .. } if program == "web" && *generation == last),
            );
            assert!(
                spawned.is_some() && spawned < ready && ready < ended,
                "{reload:#?}"
            );
            events_until(
                &events,
                "the old generation's exit",
                |e| matches!(e, Event::Exited { program, generation, expected: true, .. } if program == "web" && *generation == last - 1),
            );

            // Shutdown: exit code 0, and every child gone (reaped: not even a zombie).
            let children = || -> Vec<i32> {
                handle
                    .status()
                    .unwrap()
                    .programs
                    .iter()
                    .flat_map(|p| p.generations.iter().map(|g| g.pid))
                    .collect()
            };
            wait_until(T, "two web workers and one api, the old ones gone", || {
                children().len() == 3
            });
            let children = children();
            assert_eq!(handle.shutdown().unwrap(), 0);
            for pid in children.iter().chain(&pids) {
                assert!(!proc_exists(*pid), "child {pid} left after shutdown");
            }
            assert!(descendants(std::process::id() as i32).is_empty());
            assert!(matches!(
                handle.status(),
                Err(Error::Runtime(RuntimeError::MasterGone))
            ));
        },
    );
}

#[test]
fn a_failing_reload_gives_its_typed_outcome_and_the_old_generation_keeps_serving() {
    in_own_process(
        "a_failing_reload_gives_its_typed_outcome_and_the_old_generation_keeps_serving",
        || {
            let dir = TempDir::new("library-fail");
            let link = dir.join("server");
            let repoint = |target: &Path| {
                let tmp = dir.join("server.tmp");
                let _ = fs::remove_file(&tmp);
                symlink(target, &tmp).unwrap();
                fs::rename(&tmp, &link).unwrap();
            };
            repoint(&hello_bin());
            let script = dir.join("fail.sh");
            fs::write(
                &script,
                "#!/bin/sh\necho 'cannot open the database' >&2\nexit 3\n",
            )
            .unwrap();
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

            let handle = Master::new("fail")
                .unwrap()
                .program(
                    Program::new("web", &link)
                        .listen("127.0.0.1:0")
                        .unwrap()
                        .start_secs(Duration::from_millis(500)),
                )
                .unwrap()
                .start()
                .unwrap();
            let _guard = Shutdown(handle.clone());
            wait_running(&handle, "web");
            let addr = addr_of(&handle.status().unwrap(), "web");
            let old = current_pid(&handle, "web");

            repoint(&script);
            match handle.reload("web").unwrap() {
                ReloadOutcome::Failed {
                    generation,
                    failure,
                    reason,
                    exit,
                    output_tail,
                    ..
                } => {
                    assert_eq!(generation, 2);
                    assert_eq!(failure, "exited");
                    assert_eq!(exit, Some(ExitStatus::Code(3)), "{reason}");
                    assert!(reason.contains("exit code 3"), "{reason}");
                    assert!(
                        output_tail
                            .iter()
                            .any(|l| l.stream == "stderr" && l.line == "cannot open the database"),
                        "{output_tail:?}"
                    );
                }
                other => panic!("expected a failed reload, got {other:?}"),
            }
            // The old generation serves on, and is the only child.
            for _ in 0..5 {
                let (code, body) = http_get(addr, T).unwrap();
                assert_eq!((code, body_pid(&body)), (200, Some(old)));
            }
            assert_eq!(current_pid(&handle, "web"), old);
            let last = handle.status().unwrap().programs[0].last_reload.clone();
            assert_eq!(last.map(|r| r.result), Some("failed".to_owned()));

            // Back to a good binary: the next reload succeeds.
            repoint(&hello_bin());
            let outcome = handle.reload("web").unwrap();
            assert!(outcome.is_ok(), "{outcome:?}");
            assert!(matches!(
                outcome,
                ReloadOutcome::Reloaded { generation: 3, .. }
            ));
        },
    );
}

#[test]
fn stop_start_add_remove_signal_and_errors() {
    in_own_process("stop_start_add_remove_signal_and_errors", || {
        let handle = Master::new("edits")
            .unwrap()
            .program(hello("web"))
            .unwrap()
            .program(hello("api"))
            .unwrap()
            .start()
            .unwrap();
        let _guard = Shutdown(handle.clone());
        wait_running(&handle, "web");
        let status = wait_running(&handle, "api");
        let api_pid = current_pid(&handle, "api");
        let api_addr = addr_of(&handle.status().unwrap(), "api");
        let _ = status;

        // Only one master per process: an error, not a panic.
        let second = Master::new("second").unwrap().program(hello("x")).unwrap();
        assert_eq!(
            second.start().unwrap_err(),
            Error::Runtime(RuntimeError::AlreadyRunning)
        );

        // Unknown programs are named, with the programs there are.
        match handle.reload("nope").unwrap_err() {
            Error::Runtime(RuntimeError::UnknownProgram { name, known }) => {
                assert_eq!(name, "nope");
                assert_eq!(known, ["web", "api"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            handle.stop("nope"),
            Err(Error::Runtime(RuntimeError::UnknownProgram { .. }))
        ));
        assert!(matches!(
            handle.remove("nope"),
            Err(Error::Runtime(RuntimeError::UnknownProgram { .. }))
        ));

        // signal: goes to the current generation's pid.
        assert_eq!(handle.signal("api", Signal::SIGWINCH).unwrap(), api_pid);

        // stop: the program's children go, its socket stays open (connections queue).
        handle.stop("api").unwrap();
        wait_until(T, "api's child to be gone", || !proc_exists(api_pid));
        let status = handle.status().unwrap();
        assert_eq!(program(&status, "api").state, "STOPPED");
        assert!(program(&status, "api").generations.is_empty());
        let err = handle.reload("api").unwrap_err();
        assert!(err.to_string().contains("is stopped"), "{err}");
        assert!(std::net::TcpStream::connect(api_addr).is_ok());

        // start: a new generation on the same socket.
        handle.start("api").unwrap();
        wait_running(&handle, "api");
        let (code, body) = http_get(api_addr, T).unwrap();
        assert_eq!(code, 200);
        assert_ne!(body_pid(&body), Some(api_pid));

        // add: a third program with a socket of its own.
        let bad = handle.add(hello("web")).unwrap_err();
        assert!(bad.to_string().contains("runs already"), "{bad}");
        // A program whose socket cannot be bound is refused; nothing else changes.
        let taken = api_addr.to_string();
        let clash = Program::new("clash", hello_bin()).listen(&taken).unwrap();
        let e = handle.add(clash).unwrap_err();
        assert!(
            matches!(&e, Error::Runtime(RuntimeError::Failed(m)) if m.contains(&taken)),
            "{e:?}"
        );
        handle.add(hello("extra")).unwrap();
        let status = wait_running(&handle, "extra");
        let extra_addr = addr_of(&handle.status().unwrap(), "extra");
        let extra_pid = current_pid(&handle, "extra");
        assert_eq!(http_get(extra_addr, T).unwrap().0, 200);
        let _ = status;

        // remove: stopped, gone from the status, its socket closed.
        handle.remove("extra").unwrap();
        assert!(
            !proc_exists(extra_pid),
            "extra's child outlived its removal"
        );
        let names: Vec<String> = handle
            .status()
            .unwrap()
            .programs
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["web", "api"]);
        assert!(std::net::TcpStream::connect(extra_addr).is_err());
        // The others are untouched.
        assert_eq!(http_get(api_addr, T).unwrap().0, 200);
        let web_state = program(&handle.status().unwrap(), "web").state.clone();
        assert_eq!(web_state, ProgramState::Running.as_str());

        assert_eq!(handle.shutdown().unwrap(), 0);
        assert!(descendants(std::process::id() as i32).is_empty());
    });
}

#[test]
fn a_master_runs_on_the_calling_thread_until_a_handle_shuts_it_down() {
    in_own_process(
        "a_master_runs_on_the_calling_thread_until_a_handle_shuts_it_down",
        || {
            let master = Master::new("here").unwrap().program(hello("web")).unwrap();
            let handle = master.handle();
            let stopper = std::thread::spawn(move || {
                wait_running(&handle, "web");
                handle.shutdown()
            });
            assert_eq!(master.run().unwrap(), 0);
            assert_eq!(stopper.join().unwrap().unwrap(), 0);
            assert!(descendants(std::process::id() as i32).is_empty());
            // Bad settings are usage errors; a master without programs too.
            let e = Master::new("x").unwrap().run().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            let e = Master::new("no spaces").unwrap_err();
            assert!(e.to_string().starts_with("--name: "), "{e}");
            // A program that cannot be found: a spawn error with the shell's 127, and the
            // process may run a master again afterwards.
            let e = Master::new("missing")
                .unwrap()
                .program(Program::new("web", "/nonexistent/server"))
                .unwrap()
                .start()
                .unwrap_err();
            assert!(
                matches!(&e, Error::Spawn { code: 127, message } if message.contains("/nonexistent/server")),
                "{e:?}"
            );
        },
    );
}

/// `examples/embed.rs`, as a user runs it: a reload per line of stdin with the typed outcome
/// printed, and a clean stop at the end of stdin.
#[test]
fn the_embed_example_reloads_on_each_line_and_stops_at_the_end_of_stdin() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            kill_tree(self.0.id() as i32);
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(example_bin("embed"))
            .args(["--hello", s(&hello_bin())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start examples/embed"),
    );
    let pid = child.0.id() as i32;
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut next_matching = |what: &str, f: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + T;
        loop {
            match rx.recv_timeout(remaining(deadline)) {
                Ok(line) => {
                    seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("embed printed no {what} within {T:?}: {seen:#?}"),
            }
        }
    };
    let web = next_matching("web address", &|l| l.starts_with("web http://"));
    let web: SocketAddr = web.trim_start_matches("web http://").parse().unwrap();
    next_matching("api address", &|l| l.starts_with("api http://"));
    let (code, body) = http_get(web, T).unwrap();
    assert_eq!(code, 200);
    let first = body_pid(&body).unwrap();

    let mut stdin = child.0.stdin.take().expect("stdin");
    stdin.write_all(b"\n").unwrap();
    let line = next_matching("reload outcome", &|l| l.starts_with("reload web: "));
    assert!(
        line.starts_with("reload web: ok generation=2 pid="),
        "{line}"
    );
    let new: i32 = line
        .trim_start_matches("reload web: ok generation=2 pid=")
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    assert_ne!(new, first);
    // The old generation may take a last connection while it stops; then the new one serves.
    wait_until(T, "the new generation answering", || {
        http_get(web, T).ok().and_then(|(_, b)| body_pid(&b)) == Some(new)
    });
    let mut children = Vec::new();
    wait_until(T, "two servers, the old one gone", || {
        children = descendants(pid);
        children.len() == 2
    });

    drop(stdin); // end of stdin: stop cleanly
    let line = next_matching("stop", &|l| l.starts_with("stopped"));
    assert_eq!(line, "stopped (exit code 0)");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "embed did not exit");
        std::thread::sleep(POLL_INTERVAL);
    };
    assert!(status.success(), "{status}");
    for child in children {
        assert!(!proc_exists(child), "server {child} outlived embed");
    }
}

/// A handle can be cloned and used from any thread; the errors are `std::error::Error`s.
#[test]
fn handles_are_clone_send_and_sync_and_errors_are_std_errors() {
    fn handle<T: Clone + Send + Sync + 'static>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    handle::<Handle>();
    error::<Error>();
    error::<RuntimeError>();
    let e: Box<dyn std::error::Error> = Box::new(Error::from(RuntimeError::MasterGone));
    assert_eq!(e.to_string(), "the relaunch master is not running");
}
