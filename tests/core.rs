//! End-to-end tests of relaunch's core behaviour: real processes, real sockets, real signals.
//!
//! Children are the examples `hello` (an HTTP server taking its sockets from the environment)
//! and `probe` (reports its fds and environment, reacts to signals as told).

mod common;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = TIMEOUT;

// =============================================================================================
// 1. What a child sees: exactly its sockets at 3.., its own LISTEN_PID, nothing leaked.

/// Checks a probe's view of the world: fds 0..=2 plus one socket per entry of `sockets` at
/// 3.., in order (verified through /proc/net/tcp*), none close-on-exec, LISTEN_* about itself,
/// no NOTIFY_SOCKET, and relaunch as its parent.
#[track_caller]
fn assert_child_view(r: &Relaunch, report: &ProbeReport, sockets: &[(&str, SocketAddr)]) {
    let n = sockets.len() as i32;
    let mut problems = Vec::new();
    let expected_fds: Vec<i32> = (0..3 + n).collect();
    if report.fds != expected_fds {
        problems.push(format!(
            "open fds are {:?}, expected exactly {expected_fds:?}",
            report.fds
        ));
    }
    let inherited_cloexec: Vec<i32> = report
        .cloexec
        .iter()
        .copied()
        .filter(|&fd| fd >= 3)
        .collect();
    if !inherited_cloexec.is_empty() {
        problems.push(format!(
            "fds {inherited_cloexec:?} are close-on-exec in the child"
        ));
    }
    if report.listen_pid.as_deref() != Some(report.pid.to_string().as_str()) {
        problems.push(format!(
            "LISTEN_PID is {:?}, expected the child's own pid {}",
            report.listen_pid, report.pid
        ));
    }
    if report.listen_fds.as_deref() != Some(n.to_string().as_str()) {
        problems.push(format!(
            "LISTEN_FDS is {:?}, expected {n}",
            report.listen_fds
        ));
    }
    let names: Vec<&str> = sockets.iter().map(|(name, _)| *name).collect();
    let names = names.join(":");
    if report.listen_fdnames.as_deref() != Some(names.as_str()) {
        problems.push(format!(
            "LISTEN_FDNAMES is {:?}, expected {names:?}",
            report.listen_fdnames
        ));
    }
    if report.notify_socket.is_some() {
        problems.push(format!(
            "NOTIFY_SOCKET is {:?}, expected it unset",
            report.notify_socket
        ));
    }
    if report.ppid != r.pid() {
        problems.push(format!(
            "the child's parent is {}, expected relaunch ({})",
            report.ppid,
            r.pid()
        ));
    }
    for (i, (name, addr)) in sockets.iter().enumerate() {
        let fd = 3 + i as i32;
        let expected = (addr.is_ipv6(), addr.port());
        match tcp_socket_of_fd(report.pid, fd) {
            Some(found) if found == expected => {}
            found => problems.push(format!(
                "fd {fd} should be socket {name:?} ({addr}), found (ipv6, port) = {found:?}"
            )),
        }
    }
    if !problems.is_empty() {
        r.fail(&format!(
            "child pid {} sees the wrong world:\n  {}\nreport: {}",
            report.pid,
            problems.join("\n  "),
            report.line
        ));
    }
}

/// Starts relaunch over `probe --report` with the given sockets, checks generation 1, reloads,
/// and checks generation 2 the same way.
fn check_child_view_across_reload(cmd: Command, dir: &TempDir, names: &[&str]) {
    let report_path = dir.join("report");
    let r = Relaunch::spawn(cmd);
    let sockets: Vec<(&str, SocketAddr)> = names.iter().map(|&name| (name, r.addr(name))).collect();

    let pid1 = r.generation_pid(1);
    let gen1 = wait_for_report(&r, &report_path, pid1);
    assert_child_view(&r, &gen1, &sockets);

    r.wait_running(1);
    r.signal(libc::SIGHUP);
    let pid2 = record_pid(&r.wait_reload_ok(2));
    assert_ne!(pid1, pid2, "the reload must start a new process");
    // The old pid is named in the log line only.
    let done = r.wait_for_event("reload complete", &[("generation", "2")], T);
    assert_eq!(
        field_i32(&done, "old_pid"),
        Some(pid1),
        "reload complete should name the old pid: {done}"
    );
    let gen2 = wait_for_report(&r, &report_path, pid2);
    assert_child_view(&r, &gen2, &sockets);
}

fn probe_command(dir: &TempDir, listen: &[&str]) -> Command {
    let probe = probe_bin();
    let report = dir.join("report");
    let mut args = vec!["--start-secs", "0.2"];
    for spec in listen {
        args.extend(["--listen", spec]);
    }
    args.extend(["--", s(&probe), "--report", s(&report)]);
    Relaunch::command(&args)
}

#[test]
fn child_gets_one_socket_at_fd_3_with_its_own_listen_pid_across_reload() {
    let dir = TempDir::new("view1");
    let cmd = probe_command(&dir, &["http=127.0.0.1:0"]);
    check_child_view_across_reload(cmd, &dir, &["http"]);
}

#[test]
fn child_gets_three_named_sockets_at_fds_3_to_5_in_order_across_reload() {
    let dir = TempDir::new("view3");
    let c = match ipv6_loopback() {
        Ok(()) => "c=[::1]:0",
        Err(why) => {
            eprintln!("NOTE: testing socket c on 127.0.0.1 instead of [::1]: {why}");
            "c=127.0.0.1:0"
        }
    };
    let cmd = probe_command(&dir, &["a=127.0.0.1:0", "b=127.0.0.1:0", c]);
    check_child_view_across_reload(cmd, &dir, &["a", "b", "c"]);
}

/// Makes `fd` appear as fd 9, not close-on-exec, in the process `cmd` starts.
fn leak_as_fd_9(cmd: &mut Command, fd: i32) {
    // SAFETY: the closure runs in the forked child before exec and only calls dup2/fcntl,
    // which are async-signal-safe, and reads errno; it touches no shared state.
    unsafe {
        cmd.pre_exec(move || {
            // dup2(9, 9) would keep close-on-exec set, so clear the flag in that case.
            let rc = if fd == 9 {
                libc::fcntl(9, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 9)
            };
            if rc == -1 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
}

#[test]
fn foreign_activation_env_and_inherited_fds_do_not_reach_the_child() {
    let dir = TempDir::new("foreign");
    let leaked = File::create(dir.join("leaked-file")).expect("create the file to leak");

    // Check the mechanism first: a child started directly does get fd 9.
    let sanity_report = dir.join("sanity-report");
    let mut direct = Command::new(probe_bin());
    direct
        .args(["--report", s(&sanity_report), "--exit-after-ms", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    leak_as_fd_9(&mut direct, leaked.as_raw_fd());
    let status = direct.status().expect("run probe directly");
    assert!(status.success(), "direct probe failed: {status:?}");
    let sanity = read_reports(&sanity_report);
    assert!(
        sanity.len() == 1 && sanity[0].fds.contains(&9) && !sanity[0].cloexec.contains(&9),
        "test setup broken: a direct child should inherit fd 9 without close-on-exec: {sanity:?}"
    );

    // Now relaunch gets the stray fd and a foreign socket-activation environment.
    let mut cmd = probe_command(&dir, &["http=127.0.0.1:0"]);
    cmd.env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "5")
        .env("LISTEN_FDNAMES", "x")
        .env("NOTIFY_SOCKET", "/nonexistent");
    leak_as_fd_9(&mut cmd, leaked.as_raw_fd());
    check_child_view_across_reload(cmd, &dir, &["http"]);
}

// =============================================================================================
// 2. Reload under load: no request fails.

#[test]
fn twenty_reloads_under_load_fail_no_request() {
    const RELOADS: u32 = 20;
    let hello = hello_bin();
    let r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&hello),
    ]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    let deadline = Instant::now() + Duration::from_secs(300);

    let load = Load::start(addr, 16);
    r.wait_until(T, &format!("clients to be served by pid {pid1}"), || {
        load.seen(pid1) || load.failed()
    });
    let mut last_pid = pid1;
    let mut generation_pids = vec![pid1];
    for generation in 2..=RELOADS + 1 {
        if load.failed() {
            break; // reported below
        }
        r.signal(libc::SIGHUP);
        let v = r.wait_status_within(
            remaining(deadline).min(T),
            &format!("the reload of generation {generation} to succeed"),
            |v| reload_record(v, generation.into()).is_some_and(|rec| rec["result"] == "ok"),
        );
        let pid = record_pid(&reload_record(&v, generation.into()).expect("found"));
        r.wait_until(
            remaining(deadline).min(T),
            &format!("clients to be served by generation {generation} (pid {pid})"),
            || load.seen(pid) || load.failed(),
        );
        generation_pids.push(pid);
        last_pid = pid;
    }
    let stats = load.finish();

    let failed: u64 = stats.failures.values().sum();
    eprintln!(
        "load: {} ok, {failed} failed {:?}, {} distinct pids",
        stats.ok,
        stats.failures,
        stats.pids.len()
    );
    if failed != 0 {
        r.fail(&format!(
            "{failed} of {} requests failed during {RELOADS} reloads; by kind: {:?}; samples: {:#?}",
            stats.ok + failed,
            stats.failures,
            stats.samples
        ));
    }
    // Every generation answered. (Not "21 distinct pids": hello starts a thread per connection,
    // so 21 generations go through more than pid_max ids, and a late generation can get the pid
    // of an early one.)
    let silent: Vec<i32> = generation_pids
        .iter()
        .copied()
        .filter(|pid| !stats.pids.contains(pid))
        .collect();
    assert!(
        generation_pids.len() == RELOADS as usize + 1 && silent.is_empty(),
        "expected answers from all {} generations {generation_pids:?}; none from {silent:?}",
        RELOADS + 1,
    );

    r.wait_until(
        T,
        &format!("exactly one live child (pid {last_pid}) and no zombie"),
        || {
            let children = r.children();
            children.len() == 1 && children[0].0 == last_pid && children[0].1 != 'Z'
        },
    );
}

// =============================================================================================
// 3. A failed reload keeps the old server.

#[test]
fn failed_reloads_keep_the_old_server_serving() {
    let dir = TempDir::new("failed-reload");
    let link = dir.join("server");
    let repoint = |target: &Path| {
        let tmp = dir.join("server.tmp");
        let _ = fs::remove_file(&tmp);
        symlink(target, &tmp).expect("create symlink");
        fs::rename(&tmp, &link).expect("replace symlink");
    };
    let hello = hello_bin();
    repoint(&hello);

    let r = Relaunch::start(&[
        "--start-secs",
        "0.5",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&link),
    ]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);

    let assert_old_serves = |when: &str| {
        for _ in 0..5 {
            match http_get(addr, Duration::from_secs(10)) {
                Ok((200, body)) if body_pid(&body) == Some(pid1) => {}
                other => r.fail(&format!(
                    "{when}: expected pid {pid1} to answer, got {other:?}"
                )),
            }
        }
        r.wait_until(T, &format!("{when}: pid {pid1} as the only child"), || {
            r.children().iter().map(|c| c.0).collect::<Vec<_>>() == vec![pid1]
        });
    };

    // (a) the new program exits with code 3 during --start-secs.
    let script = dir.join("exit3.sh");
    fs::write(&script, "#!/bin/sh\nexit 3\n").expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod script");
    repoint(&script);
    r.signal(libc::SIGHUP);
    let failed = r.wait_reload_failed(2);
    let reason = failed["reason"].as_str().unwrap_or_default();
    let mentions_3 = reason
        .split(|c: char| !c.is_ascii_digit())
        .any(|number| number == "3");
    if !(reason.contains("exit") && mentions_3) {
        r.fail(&format!(
            "reload failed should give exit code 3 as the reason: {failed}"
        ));
    }
    assert_old_serves("after a reload to a program exiting 3");

    // (b) the program is gone.
    fs::remove_file(&link).expect("remove symlink");
    r.signal(libc::SIGHUP);
    let failed = r.wait_reload_failed(3);
    let reason = failed["reason"].as_str().unwrap_or_default().to_lowercase();
    if !(reason.contains("no such file") || reason.contains("not found")) {
        r.fail(&format!(
            "reload failed should say the program was not found: {failed}"
        ));
    }
    assert_old_serves("after a reload to a missing program");

    // (c) the program is back: the reload works.
    repoint(&hello);
    r.signal(libc::SIGHUP);
    let new_pid = record_pid(&r.wait_reload_ok(4));
    assert_ne!(new_pid, pid1, "a completed reload must bring a new pid");
    // The old pid is named in the log line only.
    let done = r.wait_for_event("reload complete", &[("generation", "4")], T);
    assert_eq!(field_i32(&done, "old_pid"), Some(pid1), "{done}");
    r.wait_until(T, &format!("pid {new_pid} to answer"), || {
        matches!(http_get(addr, Duration::from_secs(10)), Ok((200, body)) if body_pid(&body) == Some(new_pid))
    });
    r.wait_until(T, &format!("pid {new_pid} as the only child"), || {
        r.live_children() == vec![new_pid] && r.children().len() == 1
    });
}

// =============================================================================================
// 4. Reload requests during a reload are coalesced into one follow-up.

#[test]
fn hups_during_a_reload_coalesce_into_one_follow_up_reload() {
    let probe = probe_bin();
    // 2 s (not 1 s) of --start-secs leaves room for a slow machine between seeing generation 2
    // spawned and our extra HUPs arriving, which must happen during that reload.
    let r = Relaunch::start(&[
        "--start-secs",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
    ]);
    let max_live = std::cell::Cell::new(0usize);
    let sample = || {
        let live = r.live_children().len();
        max_live.set(max_live.get().max(live));
    };
    let wait_event = |msg: &str, gen: &str| {
        let mut line = None;
        r.wait_until(T, &format!("{msg:?} generation={gen}"), || {
            sample();
            line = r
                .lines()
                .into_iter()
                .find(|l| event_matches(l, msg, &[("generation", gen)]));
            line.is_some()
        });
        line.expect("line")
    };

    wait_event("running", "1");
    r.signal(libc::SIGHUP);
    wait_event("spawned", "2");
    for _ in 0..3 {
        r.signal(libc::SIGHUP);
    }
    if r.event_index("reload complete", &[("generation", "2")])
        .is_some()
    {
        r.fail("premise failed: generation 2 completed before the extra HUPs were sent (machine too slow?)");
    }

    wait_event("reload complete", "2");
    wait_event("spawned", "3");
    let complete2 = r.event_index("reload complete", &[("generation", "2")]);
    let spawned3 = r.event_index("spawned", &[("generation", "3")]);
    assert!(
        complete2 < spawned3,
        "the follow-up reload must start after the first completes (lines {complete2:?}, {spawned3:?})"
    );
    let done3 = wait_event("reload complete", "3");
    let pid3 = field_i32(&done3, "pid").unwrap_or_else(|| r.fail("no pid="));

    // Settle: the old generation is gone and only generation 3 runs.
    r.wait_until(T, "generation 3 as the only child", || {
        sample();
        r.live_children() == vec![pid3]
    });
    if r.event_index("spawned", &[("generation", "4")]).is_some() {
        r.fail("a second follow-up reload (generation 4) ran: 4 HUPs must give exactly 2 reloads");
    }

    // One more HUP gives generation 4, triggered by that request.
    let complete3 = r
        .event_index("reload complete", &[("generation", "3")])
        .expect("seen");
    r.signal(libc::SIGHUP);
    wait_event("spawned", "4");
    let lines = r.lines();
    let spawned4 = r
        .event_index("spawned", &[("generation", "4")])
        .expect("seen");
    let requested_between = lines[complete3..spawned4]
        .iter()
        .any(|l| is_event(l, "reload requested"));
    if !requested_between {
        r.fail("generation 4 was not started by the HUP sent after generation 3 completed");
    }
    wait_event("reload complete", "4");
    let spawned: Vec<String> = r.events("spawned");
    assert_eq!(
        spawned.len(),
        4,
        "exactly generations 1-4 should have been spawned: {spawned:#?}"
    );
    assert!(
        max_live.get() <= 2,
        "saw {} live children at once; at most 2 are allowed during a reload",
        max_live.get()
    );
}

// =============================================================================================
// 5. A child ignoring the stop signal is killed after --stop-wait-secs.

#[test]
fn child_ignoring_sigterm_is_killed_after_stop_wait_on_reload_and_on_stop() {
    let dir = TempDir::new("ignore-term");
    let report = dir.join("report");
    let probe = probe_bin();
    let mut r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--stop-wait-secs",
        "0.5",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--on-term",
        "ignore",
        "--report",
        s(&report),
    ]);
    let pid1 = r.generation_pid(1);
    wait_for_report(&r, &report, pid1);
    r.wait_running(1);

    // On reload: the old child is killed, the new one keeps running.
    r.signal(libc::SIGHUP);
    let pid2 = record_pid(&r.wait_reload_ok(2));
    // The stop timeout is only in the log.
    r.wait_for_event("stop timeout", &[("pid", &pid1.to_string())], T);
    r.wait_until(T, &format!("old pid {pid1} to disappear"), || {
        !proc_exists(pid1)
    });
    let v = r.wait_status("generation 1 reaped", |v| {
        history(v, "exit").any(|e| e["pid"] == pid1)
    });
    if !history(&v, "exit").any(|e| e["pid"] == pid1 && e["signal"] == 9) {
        r.fail(&format!(
            "generation 1 should be reported killed by signal 9: {v:#}"
        ));
    }
    wait_for_report(&r, &report, pid2);
    if r.live_children() != vec![pid2] {
        r.fail(&format!(
            "after the reload only pid {pid2} should run, children: {:?}",
            r.children()
        ));
    }

    // On stop: relaunch kills it too and exits like a shell would: 128 + 9.
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 137);
    // relaunch has exited: only its log is left.
    r.wait_for_event("stop timeout", &[("pid", &pid2.to_string())], T);
    r.wait_until(T, &format!("pid {pid2} to disappear"), || {
        !proc_exists(pid2)
    });
}

// =============================================================================================
// 6. Stopping relaunch: it exits with its child's status.

enum Ready {
    /// Wait for the probe's report (it has set up its signal handling).
    Probe(TempDir),
    /// Wait for an HTTP answer.
    Http,
}

/// Starts relaunch over `child`, waits until the child is ready, sends `sig` to relaunch and
/// checks that relaunch exits with `expected` and leaves no child behind.
fn stop_and_expect(child: &[&str], ready: Ready, sig: i32, expected: i32) {
    let report = match &ready {
        Ready::Probe(dir) => Some(dir.join("report")),
        Ready::Http => None,
    };
    let mut args = vec!["--start-secs", "0.2", "--listen", "http=127.0.0.1:0", "--"];
    args.extend_from_slice(child);
    if let Some(report) = &report {
        args.extend(["--report", s(report)]);
    }
    let mut r = Relaunch::start(&args);
    let pid = r.generation_pid(1);
    match &report {
        Some(report) => {
            wait_for_report(&r, report, pid);
        }
        None => {
            let served_by = wait_for_http(&r, r.addr("http"), T);
            assert_eq!(served_by, pid, "generation 1 should serve");
        }
    }
    r.wait_running(1);
    r.signal(sig);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, expected);
    // relaunch has exited: only its log is left.
    r.wait_for_event("exiting", &[("code", &expected.to_string())], T);
    r.wait_until(T, &format!("child {pid} to disappear"), || {
        !proc_exists(pid)
    });
}

#[test]
fn sigterm_exits_with_the_childs_exit_code() {
    let probe = probe_bin();
    let dir = TempDir::new("term-exit7");
    stop_and_expect(
        &[s(&probe), "--on-term", "exit:7"],
        Ready::Probe(dir),
        libc::SIGTERM,
        7,
    );
}

#[test]
fn sigterm_exits_143_when_the_child_dies_by_sigterm() {
    let probe = probe_bin();
    let dir = TempDir::new("term-raise");
    stop_and_expect(
        &[s(&probe), "--on-term", "raise"],
        Ready::Probe(dir),
        libc::SIGTERM,
        143,
    );
}

#[test]
fn sigterm_exits_0_after_hello_shuts_down_gracefully() {
    let hello = hello_bin();
    stop_and_expect(&[s(&hello)], Ready::Http, libc::SIGTERM, 0);
}

#[test]
fn sigint_stops_like_sigterm() {
    let probe = probe_bin();
    let dir = TempDir::new("int-exit7");
    stop_and_expect(
        &[s(&probe), "--on-term", "exit:7"],
        Ready::Probe(dir),
        libc::SIGINT,
        7,
    );
    let dir = TempDir::new("int-raise");
    stop_and_expect(
        &[s(&probe), "--on-term", "raise"],
        Ready::Probe(dir),
        libc::SIGINT,
        143,
    );
}

// =============================================================================================
// 7. A crash outside a reload: the socket stays open, the server is restarted.

#[test]
fn crashed_child_is_restarted_and_no_connection_is_refused() {
    let hello = hello_bin();
    let r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&hello),
    ]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);

    assert!(kill(pid1, libc::SIGKILL), "cannot kill child {pid1}");
    r.wait_until(T, &format!("crashed pid {pid1} to be reaped"), || {
        !proc_exists(pid1)
    });

    // Immediately, while the replacement may not even be spawned yet: all wait in the queue.
    let clients: Vec<_> = (0..20)
        .map(|_| thread::spawn(move || http_get(addr, Duration::from_secs(10))))
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread panicked"))
        .collect();
    let mut pids = HashSet::new();
    let mut failures = Vec::new();
    for result in &results {
        match result {
            Ok((200, body)) => match body_pid(body) {
                Some(pid) => {
                    pids.insert(pid);
                }
                None => failures.push(format!("body without pid: {body:?}")),
            },
            other => failures.push(format!("{other:?}")),
        }
    }
    if !failures.is_empty() {
        r.fail(&format!(
            "{} of 20 requests after the crash failed: {failures:#?}",
            failures.len()
        ));
    }
    assert!(
        !pids.contains(&pid1) && pids.len() == 1,
        "all requests should be served by one new pid, got {pids:?} (crashed pid {pid1})"
    );
    let v = r.wait_status("the crash reaped and generation 2 restarted", |v| {
        history(v, "exit").any(|e| e["pid"] == pid1)
            && history(v, "restart").any(|e| e["generation"] == 2)
    });
    if !history(&v, "exit").any(|e| e["pid"] == pid1 && e["signal"] == 9) {
        r.fail(&format!("the crash should be reported as signal 9: {v:#}"));
    }
}

// =============================================================================================
// 8. USR1, USR2 and WINCH are forwarded to the child.

#[test]
fn usr1_usr2_winch_are_forwarded_to_the_child_without_stopping_it() {
    let dir = TempDir::new("forward");
    let report = dir.join("report");
    let probe = probe_bin();
    let mut r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    let pid = r.generation_pid(1);
    wait_for_report(&r, &report, pid);
    r.wait_running(1);

    for (sig, name) in [
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
    ] {
        r.signal(sig);
        r.wait_until(T, &format!("probe {pid} to receive SIG{name}"), || {
            read_signal_reports(&report).contains(&(name.to_owned(), pid))
        });
    }
    assert_eq!(
        read_signal_reports(&report),
        vec![
            ("USR1".to_owned(), pid),
            ("USR2".to_owned(), pid),
            ("WINCH".to_owned(), pid)
        ],
        "each forwarded signal should arrive exactly once"
    );
    assert!(r.try_status().is_none(), "relaunch must keep running");
    assert_eq!(r.live_children(), vec![pid], "the child must keep running");
    assert!(
        r.events("spawned").len() == 1 && r.events("reload requested").is_empty(),
        "forwarded signals must not reload or restart anything"
    );
}

// =============================================================================================
// 9. Bad input: clear errors and the right exit codes.

struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    /// Must appear in stderr (case-insensitive).
    needles: Vec<String>,
}

fn case(name: &'static str, args: &[&str], code: i32, needles: &[&str]) -> Case {
    Case {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        code,
        needles: needles.iter().map(|n| n.to_string()).collect(),
    }
}

/// Runs every case (all of them, even after a failure) and reports all failures at once.
fn run_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let mut r = Relaunch::start(&args);
        let Some(status) = r.wait_exit_within(T) else {
            failures.push(format!(
                "[{}] relaunch {:?} did not exit within {T:?}; stderr:\n{}",
                case.name,
                case.args,
                r.stderr()
            ));
            continue;
        };
        let stderr = r.stderr();
        let lower = stderr.to_lowercase();
        let mut problems = Vec::new();
        if status.code() != Some(case.code) {
            problems.push(format!(
                "ended with {}, expected exit code {}",
                exit_description(status),
                case.code
            ));
        }
        for needle in &case.needles {
            if !lower.contains(&needle.to_lowercase()) {
                problems.push(format!("stderr does not mention {needle:?}"));
            }
        }
        if !r.events("spawned").is_empty() {
            problems.push("a child was spawned".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "[{}] relaunch {:?}: {}; stderr:\n{stderr}",
                case.name,
                case.args,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn usage_errors_exit_2_and_name_the_bad_value() {
    let probe = probe_bin();
    let p = s(&probe);
    run_cases(&[
        case(
            "port out of range",
            &["--listen", "127.0.0.1:99999", "--", p],
            2,
            &["127.0.0.1:99999"],
        ),
        case(
            "unparsable address",
            &["--listen", "nonsense:abc", "--", p],
            2,
            &["nonsense:abc"],
        ),
        case("no command", &["--listen", "127.0.0.1:0"], 2, &[]),
        case(
            "empty command after --",
            &["--listen", "127.0.0.1:0", "--"],
            2,
            &[],
        ),
        case(
            "unknown stop signal",
            &["--stop-signal", "BOGUS", "--listen", "127.0.0.1:0", "--", p],
            2,
            &["BOGUS"],
        ),
        case(
            "negative start-secs",
            &["--start-secs=-1", "--listen", "127.0.0.1:0", "--", p],
            2,
            &["-1"],
        ),
        case(
            "negative start-secs as separate argument",
            &["--start-secs", "-1", "--listen", "127.0.0.1:0", "--", p],
            2,
            &[],
        ),
        case(
            "non-numeric start-secs",
            &["--start-secs", "abc", "--listen", "127.0.0.1:0", "--", p],
            2,
            &["abc"],
        ),
    ]);
}

#[test]
fn startup_failures_exit_1_126_127_and_name_the_culprit() {
    let probe = probe_bin();
    let p = s(&probe);
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind a port to make it busy");
    let busy_addr = busy.local_addr().expect("local_addr").to_string();
    let dir = TempDir::new("startup-failures");
    let not_exec = dir.join("not-executable");
    fs::write(&not_exec, "#!/bin/sh\nexit 0\n").expect("write file");
    fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).expect("chmod 644");

    run_cases(&[
        case(
            "address in use",
            &["--listen", &busy_addr, "--", p],
            1,
            &[busy_addr.as_str(), "in use"],
        ),
        case(
            "absolute program path missing",
            &["--listen", "127.0.0.1:0", "--", "/nonexistent/prog"],
            127,
            &["/nonexistent/prog", "not found"],
        ),
        case(
            "program not in PATH",
            &["--listen", "127.0.0.1:0", "--", "no-such-prog-xyz"],
            127,
            &["no-such-prog-xyz", "not found"],
        ),
        case(
            "program not executable",
            &["--listen", "127.0.0.1:0", "--", s(&not_exec)],
            126,
            &[s(&not_exec), "not executable"],
        ),
    ]);
    drop(busy);
}

#[test]
fn binding_a_privileged_port_without_privilege_is_permission_denied() {
    let unprivileged_start: u32 =
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1024);
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = TempDir::new("privileged-port");
    let probe = dir.join("probe");
    let args = |probe: &Path| -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:80",
            "--start-secs",
            "0.2",
            "--",
            s(probe),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let cmd = if root {
        // Run as nobody, from copies any user may execute.
        let bin = dir.join("relaunch");
        for (from, to) in [(relaunch_bin(), &bin), (probe_bin(), &probe)] {
            fs::copy(&from, to).expect("copy binary");
            fs::set_permissions(to, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        }
        let args = args(&probe);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = Relaunch::command_for(&bin, &args);
        cmd.uid(65534).gid(65534);
        cmd
    } else {
        let args = args(&probe_bin());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Relaunch::command(&args)
    };
    let mut r = Relaunch::spawn(cmd);

    if unprivileged_start > 80 {
        let status = r.wait_exit(T);
        assert_exit_code(&r, status, 1);
        let stderr = r.stderr();
        if !(stderr.contains("127.0.0.1:80") && stderr.to_lowercase().contains("permission denied"))
        {
            r.fail("stderr should name 127.0.0.1:80 and say permission denied");
        }
    } else {
        eprintln!(
            "NOTE: ip_unprivileged_port_start is {unprivileged_start} <= 80, so any user may bind \
             port 80; checking instead that an unprivileged relaunch is not refused"
        );
        let outcome = poll_until(T, || {
            r.try_status().is_some()
                || r.event_index("listening", &[("addr", "127.0.0.1:80")])
                    .is_some()
        });
        assert!(outcome, "relaunch neither bound 127.0.0.1:80 nor exited");
        let stderr = r.stderr().to_lowercase();
        assert!(
            !stderr.contains("permission denied"),
            "binding port 80 must not be refused when unprivileged ports start at {unprivileged_start}"
        );
        if let Some(status) = r.try_status() {
            assert!(
                status.code() == Some(1) && stderr.contains("in use"),
                "relaunch may only fail because port 80 is busy on this host: {stderr}"
            );
        }
    }
}

// =============================================================================================
// 10. No zombies, no leftovers.

#[test]
fn no_zombies_after_reloads_and_a_crash_and_no_leftovers_after_stop() {
    let dir = TempDir::new("zombies");
    let report = dir.join("report");
    let probe = probe_bin();
    let mut r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    r.wait_running(1);
    for generation in 2..=4 {
        r.signal(libc::SIGHUP);
        r.wait_reload_ok(generation);
    }
    let pid4 = r.generation_pid(4);
    wait_for_report(&r, &report, pid4);
    assert!(kill(pid4, libc::SIGKILL), "cannot kill child {pid4}");
    let v = r.wait_running(5);
    assert!(
        history(&v, "restart").any(|e| e["generation"] == 5),
        "generation 5 is a restart: {v:#}"
    );
    let pid5 = current_pid(&v).unwrap_or_else(|| r.fail("no pid"));

    r.wait_until(T, "exactly one child, generation 5, and no zombie", || {
        r.children().iter().all(|&(_, state)| state != 'Z') && r.live_children() == vec![pid5]
    });
    let spawned = r.spawned_pids();
    assert_eq!(
        spawned.len(),
        5,
        "expected 5 generations, got pids {spawned:?}"
    );
    let starts: Vec<(i32, Option<u64>)> = spawned
        .iter()
        .map(|&pid| (pid, proc_stat(pid).map(|st| st.start_time)))
        .collect();

    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 0);
    // relaunch is gone, so its children would have been re-parented: look them up by pid (and
    // start time, in case a pid was reused).
    r.wait_until(T, "no child of relaunch to remain", || {
        starts
            .iter()
            .all(|&(pid, start)| match (proc_stat(pid), start) {
                (None, _) => true,
                (Some(st), Some(start)) => st.start_time != start,
                (Some(_), None) => true, // was already gone when we looked; a new process now
            })
    });
}

// =============================================================================================
// 11. Strict readers of the protocol, and PID 1 duties.

/// A child that asks libsystemd itself (through Python's ctypes) what it inherited: the
/// strictest reader there is, since `sd_listen_fds` ignores everything unless `LISTEN_PID` is
/// the caller's own pid.
const SD_READER: &str = r#"
import ctypes, os, signal, sys
lib = ctypes.CDLL("libsystemd.so.0")
names = ctypes.POINTER(ctypes.c_char_p)()
n = lib.sd_listen_fds_with_names(0, ctypes.byref(names))
got = [names[i].decode() for i in range(max(n, 0))]
# AF_UNSPEC, SOCK_STREAM, listening, any port
inet = [lib.sd_is_socket_inet(3 + i, 0, 1, 1, 0) for i in range(max(n, 0))]
with open(sys.argv[1], "a") as f:
    f.write("pid=%d n=%d names=%s inet=%s\n" % (os.getpid(), n, ":".join(got), ",".join(map(str, inet))))
signal.pause()
"#;

#[test]
fn libsystemd_sd_listen_fds_finds_the_sockets_and_their_names() {
    if Command::new("python3").arg("-V").output().is_err() {
        panic!("python3 is needed for this test (CI machines have it)");
    }
    let dir = TempDir::new("sd-listen-fds");
    let report = dir.join("report");
    let script = dir.join("reader.py");
    fs::write(&script, SD_READER).unwrap();
    let r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--listen",
        "web=127.0.0.1:0",
        "--listen",
        "admin=127.0.0.1:0",
        "--",
        "python3",
        s(&script),
        s(&report),
    ]);
    let read = |generation: u32| {
        let pid = r.generation_pid(generation);
        let mut line = String::new();
        r.wait_until(
            T,
            &format!("the libsystemd report of generation {generation}"),
            || {
                line = fs::read_to_string(&report)
                    .unwrap_or_default()
                    .lines()
                    .find(|l| field_i32(l, "pid") == Some(pid))
                    .unwrap_or_default()
                    .to_owned();
                !line.is_empty()
            },
        );
        line
    };
    for generation in [1, 2] {
        let line = read(generation);
        assert_eq!(
            field(&line, "n"),
            Some("2"),
            "sd_listen_fds_with_names: {line}"
        );
        assert_eq!(field(&line, "names"), Some("web:admin"), "{line}");
        assert_eq!(
            field(&line, "inet"),
            Some("1,1"),
            "sd_is_socket_inet: {line}"
        );
        if generation == 1 {
            r.wait_running(1);
            r.signal(libc::SIGHUP);
        }
    }
}

/// relaunch as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`), as in a
/// container, running `script` with `/bin/sh -c`; returns it once generation 1 runs, with the
/// host pid of the relaunch process (the pid `Relaunch` knows is unshare's).
fn start_as_pid_1(script: &str) -> (Relaunch, i32) {
    if !Path::new("/usr/bin/unshare").exists() {
        panic!("/usr/bin/unshare (util-linux) is needed for this test");
    }
    let mut cmd = Relaunch::command_for(
        Path::new("/usr/bin/unshare"),
        &[
            "--fork",
            "--pid",
            "--mount-proc",
            s(&relaunch_bin()),
            "--no-control",
            "--start-secs",
            "0.2",
            "--listen",
            "127.0.0.1:0",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    );
    cmd.env("RELAUNCH_LOG", "debug");
    let r = Relaunch::spawn(cmd);
    // --no-control: no status to ask.
    r.wait_for_event("running", &[("generation", "1")], T);
    let master = descendants(r.pid())
        .into_iter()
        .find(|&p| {
            fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e.file_name().is_some_and(|n| n == "relaunch"))
        })
        .unwrap_or_else(|| r.fail("no relaunch process below unshare"));
    let nspid = fs::read_to_string(format!("/proc/{master}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:").map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "relaunch is not PID 1 of its namespace (NSpid: {nspid})"
    );
    (r, master)
}

#[test]
fn orphans_are_reaped_when_relaunch_is_pid_1() {
    let dir = TempDir::new("pid1");
    let report = dir.join("report");
    let probe = probe_bin();
    // The child leaves an orphan behind: the inner shell exits at once, and its `sleep` is
    // reparented to PID 1 of the namespace, which is relaunch.
    let script = format!(
        "sh -c 'sleep 0.5 &'; exec {} --report {}",
        s(&probe),
        s(&report)
    );
    let (r, master) = start_as_pid_1(&script);
    // Orphans are not in status: the log names each one reaped.
    r.wait_for_log("reaped a process that is not one of our generations", T);
    let children: Vec<ProcStat> = proc_table()
        .into_iter()
        .filter(|st| st.ppid == master)
        .collect();
    assert!(
        children.iter().all(|st| st.state != 'Z'),
        "zombies under relaunch as PID 1: {children:?}"
    );
    assert_eq!(children.len(), 1, "only the server is left: {children:?}");
}

/// As PID 1, relaunch gets only the signals it has handlers for (the kernel drops the others
/// sent from outside the namespace), forwards them to the server, and exits as a shell would
/// report the server's end: its exit code, or 128 + the signal that killed it.
#[test]
fn as_pid_1_signals_are_forwarded_and_the_exit_status_is_the_shells() {
    for (on_term, expected) in [("exit:3", 3), ("raise", 128 + libc::SIGTERM)] {
        let dir = TempDir::new("pid1-exit");
        let report = dir.join("report");
        let script = format!(
            "exec {} --report {} --on-term {on_term}",
            s(&probe_bin()),
            s(&report)
        );
        let (mut r, master) = start_as_pid_1(&script);
        // The server's pid as seen from here (relaunch logs the one in its namespace).
        let server = proc_table()
            .into_iter()
            .find(|st| st.ppid == master)
            .unwrap_or_else(|| r.fail("relaunch has no child"))
            .pid;
        // The probe appends `signal=USR1 pid=P` once the forwarded signal arrives.
        assert!(kill(master, libc::SIGUSR1), "cannot signal relaunch");
        r.wait_until(T, "the server to get the forwarded SIGUSR1", || {
            fs::read_to_string(&report)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("signal=USR1 "))
        });
        assert!(kill(master, libc::SIGTERM), "cannot signal relaunch");
        let status = r.wait_exit(T);
        assert_eq!(
            status.code(),
            Some(expected),
            "--on-term {on_term}: unshare passes on relaunch's exit code"
        );
        let term = fs::read_to_string(&report).unwrap_or_default();
        assert!(
            term.lines().any(|l| l.starts_with("term pid=")),
            "the server never got the SIGTERM: {term}"
        );
        assert!(
            !proc_exists(server),
            "the server (host pid {server}) outlived PID 1"
        );
    }
}
