//! End-to-end tests of the restart policy and the process options: real relaunch, real
//! children, real signals.
//!
//! Most children here are small shell scripts that a test steers through files: generation N
//! writes its pid to `pid.N` and waits until the test writes its fate to `exit.N` (an exit code,
//! or `sigN` to kill itself with signal N). So a child exits exactly when the test has seen what
//! it needed, and no test depends on how fast the machine is.

mod common;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::net::{echo_stream, Target};
use common::*;

const T: Duration = TIMEOUT;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Writes an executable script.
fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, body).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

/// A child steered by files in `dir` (see the module docs). Generations count from 1 in the
/// file `count`; only one generation starts at a time in these tests.
fn steered_child(dir: &TempDir) -> PathBuf {
    script(
        dir,
        "steered.sh",
        &format!(
            r#"#!/bin/sh
d={dir}
n=$(cat "$d/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$d/count"
echo "$$" > "$d/pid.$n"
while [ ! -e "$d/exit.$n" ]; do sleep 0.02; done
fate=$(cat "$d/exit.$n")
case "$fate" in
  sig*) kill -"${{fate#sig}}" $$ ;;
  *) exit "$fate" ;;
esac
"#,
            dir = dir.path().display()
        ),
    )
}

/// Tells steered generation `n` how to end: an exit code (`"3"`) or a signal (`"sig9"`).
fn end_generation(dir: &TempDir, n: u32, fate: &str) {
    let tmp = dir.join(&format!("exit.{n}.tmp"));
    fs::write(&tmp, fate).expect("write fate");
    fs::rename(&tmp, dir.join(&format!("exit.{n}"))).expect("publish fate");
}

/// The `n`-th (1-based) `state changed ... to=STATE` line of a relaunch that has exited.
/// Status waits use the control socket; this is for what only the log keeps: the states a
/// master passed through on its way out (its control socket is gone) and the wording.
#[track_caller]
fn state_change_line(r: &Relaunch, to: &str, n: usize) -> String {
    r.events("state changed")
        .into_iter()
        .filter(|l| field(l, "to") == Some(to))
        .nth(n - 1)
        .unwrap_or_else(|| r.fail(&format!("no state change #{n} to {to} in the log")))
}

/// The `exit` history entry of generation `generation` in a status record.
#[track_caller]
fn exit_entry(r: &Relaunch, v: &serde_json::Value, generation: u64) -> serde_json::Value {
    history(v, "exit")
        .find(|e| e["generation"] == generation)
        .cloned()
        .unwrap_or_else(|| r.fail(&format!("no exit of generation {generation} in {v:#}")))
}

/// Whether the status history says generation `generation` was started as a restart.
fn restarted(v: &serde_json::Value, generation: u64) -> bool {
    history(v, "restart").any(|e| e["generation"] == generation)
}

/// The `restarting` lines (the message itself, not a reason that mentions the word).
fn restarts(r: &Relaunch) -> Vec<String> {
    r.lines()
        .into_iter()
        .filter(|l| log_message(l).is_some_and(|m| m.first() == Some(&"restarting")))
        .collect()
}

fn state_changes(r: &Relaunch, to: &str) -> usize {
    r.events("state changed")
        .iter()
        .filter(|l| field(l, "to") == Some(to))
        .count()
}

/// The socket still accepts connections into its queue.
#[track_caller]
fn assert_socket_open(r: &Relaunch, addr: SocketAddr) {
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        r.fail(&format!(
            "{addr} should still be listening (relaunch keeps its sockets): {e}"
        ));
    }
}

/// A copy of the probe that any user may execute, in `dir`.
fn public_probe(dir: &TempDir) -> PathBuf {
    let copy = dir.join("probe");
    fs::copy(probe_bin(), &copy).expect("copy probe");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod probe");
    copy
}

/// Makes `dir` writable by anyone (children running as another user write reports there).
fn open_to_all(dir: &TempDir) {
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod 777");
}

/// Reaps `pid` if it became a child of this process (an orphan re-parented to the test, which
/// is a subreaper); gives up after a few seconds.
fn reap(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut status = 0;
        // SAFETY: waitpid on one pid with a valid out-pointer; it only reaps that process.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid || rc < 0 {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Kills and reaps a stray process when the test ends, however it ends.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if proc_alive(self.0) {
            kill(self.0, libc::SIGKILL);
        }
        reap(self.0);
    }
}

// =============================================================================================
// 1. Which exits are restarted.

#[test]
fn on_failure_restarts_unexpected_exits_and_signals_but_not_expected_codes() {
    let dir = TempDir::new("on-failure");
    let child = steered_child(&dir);
    let mut r = Relaunch::start(&[
        "--start-secs",
        "0.1",
        "--backoff-min",
        "10ms",
        "--exit-codes",
        "0,2",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let addr = r.addr("http");

    // Unexpected code: restarted.
    r.wait_running(1);
    end_generation(&dir, 1, "3");
    let v = r.wait_running(2);
    let exit = exit_entry(&r, &v, 1);
    assert_eq!(
        (&exit["code"], &exit["expected"]),
        (&3.into(), &false.into()),
        "{v:#}"
    );
    assert!(restarted(&v, 2), "{v:#}");
    // Killed by a signal: restarted, whatever the expected codes.
    end_generation(&dir, 2, "sig9");
    let v = r.wait_running(3);
    assert_eq!(exit_entry(&r, &v, 2)["signal"], 9, "{v:#}");
    assert!(restarted(&v, 3), "{v:#}");
    // An expected code: EXITED, and relaunch keeps the socket and waits.
    end_generation(&dir, 3, "2");
    let exited = r.wait_state("EXITED");
    assert!(
        exited["state_reason"]
            .as_str()
            .is_some_and(|why| why.contains("exit code 2")),
        "{exited:#}"
    );
    // The advice to the operator is log text.
    r.wait_for_line("no restart (...)", T, |l| {
        is_event(l, "no restart") && l.contains("SIGHUP")
    });
    assert!(r.try_status().is_none(), "relaunch must stay up in EXITED");
    assert_socket_open(&r, addr);

    // A reload starts a new generation; it exits 0, expected too.
    r.signal(libc::SIGHUP);
    r.wait_running(4);
    end_generation(&dir, 4, "0");
    let v = r.wait_status("EXITED after generation 4 exited", |v| {
        v["state"] == "EXITED" && history(v, "exit").any(|e| e["generation"] == 4)
    });
    assert_eq!(
        v["counters"]["restarts"], 2,
        "only the two unexpected exits were restarted: {v:#}"
    );
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 0);
}

#[test]
fn restart_never_leaves_a_crash_exited_and_stop_exits_with_its_status() {
    let dir = TempDir::new("never");
    let child = steered_child(&dir);
    let mut r = Relaunch::start(&[
        "--restart",
        "never",
        "--start-secs",
        "0.1",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let addr = r.addr("http");
    r.wait_running(1);
    end_generation(&dir, 1, "sig9");
    let exited = r.wait_state("EXITED");
    assert!(
        exited["state_reason"]
            .as_str()
            .is_some_and(|why| why.contains("--restart never")),
        "{exited:#}"
    );
    assert_eq!(exited["counters"]["restarts"], 0, "{exited:#}");
    assert_socket_open(&r, addr);
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 137);
}

#[test]
fn restart_always_restarts_a_clean_exit() {
    let dir = TempDir::new("always");
    let child = steered_child(&dir);
    let mut r = Relaunch::start_with_env(
        &[
            "--start-secs",
            "0.1",
            "--backoff-min",
            "10ms",
            "--listen",
            "127.0.0.1:0",
            "--",
            s(&child),
        ],
        // From the environment, as a unit file would set it.
        &[("RELAUNCH_RESTART", "always")],
    );
    r.wait_running(1);
    end_generation(&dir, 1, "0");
    let v = r.wait_running(2);
    assert!(restarted(&v, 2), "{v:#}");
    assert_eq!(exit_entry(&r, &v, 1)["code"], 0, "{v:#}");
    // Status shows the state now; only the log has every state passed through.
    assert_eq!(state_changes(&r, "EXITED"), 0);
    r.signal(libc::SIGTERM);
    r.wait_exit(T);
}

// =============================================================================================
// 2. Giving up: start retries, FATAL, crash loops.

#[test]
fn start_retries_then_fatal_exits_with_the_last_status_and_frees_the_port() {
    let dir = TempDir::new("fatal-exit");
    let child = script(&dir, "exit3.sh", "#!/bin/sh\nexit 3\n");
    let mut r = Relaunch::start(&[
        "--start-retries",
        "2",
        "--backoff-min",
        "20ms",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let addr = r.addr("http");
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 3);
    assert_eq!(
        r.spawned_pids().len(),
        3,
        "one start and two retries: {:?}",
        r.spawned_pids()
    );
    // relaunch has exited (--on-fatal exit): its control socket is gone, only its log is left.
    let fatal = r.wait_for_line("an ERROR line saying FATAL", T, |l| {
        log_message(l).is_some_and(|_| l.contains("ERROR") && l.contains("FATAL:"))
    });
    for needle in ["--start-retries 2", "exit code 3", "--on-fatal"] {
        assert!(fatal.contains(needle), "{needle:?} missing in {fatal}");
    }
    state_change_line(&r, "FATAL", 1);
    // With jitter (the default), each delay lies between --backoff-min and its bound.
    let delays: Vec<u64> = restarts(&r)
        .iter()
        .filter_map(|l| field(l, "delay_ms")?.parse().ok())
        .collect();
    assert_eq!(delays.len(), 2, "{delays:?}");
    assert_eq!(delays[0], 20, "the first delay is --backoff-min");
    assert!((20..=40).contains(&delays[1]), "{delays:?}");
    // relaunch is gone, and so is the socket.
    TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} should be free: {e}"));
}

#[test]
fn on_fatal_wait_keeps_the_socket_and_a_reload_starts_over() {
    let dir = TempDir::new("fatal-wait");
    let ok = dir.join("ok");
    let child = script(
        &dir,
        "maybe.sh",
        &format!(
            "#!/bin/sh\n[ -e {} ] || exit 4\nwhile :; do sleep 1; done\n",
            ok.display()
        ),
    );
    let r = Relaunch::start(&[
        "--start-retries",
        "1",
        "--on-fatal",
        "wait",
        "--backoff-min",
        "10ms",
        "--start-secs",
        "0.1",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let addr = r.addr("http");
    let fatal = r.wait_state("FATAL");
    // The advice to the operator is log text.
    r.wait_for_line("the FATAL advice", T, |l| {
        l.contains("FATAL:") && l.contains("send SIGHUP")
    });
    // One start and one retry.
    assert_eq!(history(&fatal, "exit").count(), 2, "{fatal:#}");
    assert_eq!(fatal["counters"]["restarts"], 1, "{fatal:#}");
    assert_socket_open(&r, addr);
    // Fixed: a reload brings it up.
    fs::write(&ok, "").expect("create ok");
    r.signal(libc::SIGHUP);
    r.wait_running(3);
    // Status shows the state now; the way there (FATAL, STARTING, RUNNING) is in the log.
    let running = state_change_line(&r, "RUNNING", 1);
    assert_eq!(field(&running, "from"), Some("STARTING"), "{running}");
    let from_fatal = r.wait_for_event("state changed", &[("from", "FATAL")], T);
    assert_eq!(field(&from_fatal, "to"), Some("STARTING"), "{from_fatal}");
}

#[test]
fn a_crash_loop_within_the_window_is_fatal() {
    let dir = TempDir::new("crash-loop");
    let child = steered_child(&dir);
    let mut r = Relaunch::start(&[
        "--max-restarts",
        "2",
        "--restart-window",
        "1m",
        "--start-secs",
        "0.1",
        "--backoff-min",
        "10ms",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&child),
    ]);
    // Every generation counts as started, then crashes: only the window can stop this.
    for n in 1..=3 {
        r.wait_running(u64::from(n));
        end_generation(&dir, n, "1");
    }
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 1);
    // relaunch has exited: only its log is left.
    let fatal = state_change_line(&r, "FATAL", 1);
    assert!(
        fatal.contains("crash loop") && fatal.contains("--max-restarts 2"),
        "{fatal}"
    );
    assert_eq!(r.spawned_pids().len(), 3);
}

/// `relaunch status [--json]` of the master at `ctl`, within a deadline: (exit code, stdout).
fn status_of(ctl: &Path, json: bool) -> (i32, String) {
    let mut args = vec!["status", "--control", s(ctl)];
    if json {
        args.push("--json");
    }
    let mut child = std::process::Command::new(relaunch_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("RELAUNCH_LOG")
        .spawn()
        .expect("start relaunch status");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relaunch status did not answer within {T:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("read status");
    (status.code().unwrap_or(-1), out)
}

#[test]
fn a_crash_loop_after_serving_keeps_the_sockets_and_recovers() {
    let dir = TempDir::new("outage");
    let down = dir.join("down");
    let ctl = dir.join("ctl.sock");
    // Serves (probe --echo) unless the flag file exists; then it exits 1 at once, as a server
    // does whose database is down.
    let child = script(
        &dir,
        "server.sh",
        &format!(
            "#!/bin/sh\n[ -e {down} ] && exit 1\nexec {probe} --echo\n",
            down = down.display(),
            probe = probe_bin().display()
        ),
    );
    let mut r = Relaunch::start(&[
        "--start-retries",
        "2",
        "--backoff-min",
        "20ms",
        "--backoff-max",
        "200ms",
        "--start-secs",
        "0.2",
        "--control",
        s(&ctl),
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let addr = r.addr("http");
    let target = Target::tcp(addr);
    let g1 = current_pid(&r.wait_running(1)).expect("a current pid");
    assert_eq!(echo_stream(&target, "hello", T), Ok(g1));

    // The outage: every restart fails at once, well past --start-retries 2.
    fs::write(&down, "").expect("create the flag file");
    kill(g1, libc::SIGKILL);
    r.wait_status(
        "10 restarts (relaunch must not give up on a server that had served)",
        |v| v["counters"]["restarts"].as_u64() >= Some(10),
    );
    assert!(
        r.try_status().is_none(),
        "relaunch gave up on a server that had served"
    );
    // Status shows the state now; only the log says it never went FATAL on the way.
    assert_eq!(
        state_changes(&r, "FATAL"),
        0,
        "no FATAL without --max-restarts"
    );
    // The socket still takes connections into its queue: clients wait, none is refused.
    assert_socket_open(&r, addr);
    // status says BACKOFF, with the reason and the attempt.
    let mut record = serde_json::Value::Null;
    r.wait_until(
        T,
        "status in BACKOFF with an attempt past --start-retries",
        || {
            let (code, out) = status_of(&ctl, true);
            record = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
            code == 1
                && record["state"] == "BACKOFF"
                && record["backoff"]["attempt"].as_u64().is_some_and(|a| a > 4)
        },
    );
    let reason = record["state_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exited with exit code 1 before it was up")
            && reason.contains("failed restarts in a row")
            && reason.contains("restart attempt"),
        "{record}"
    );
    assert!(
        record["backoff"]["start_failures"].as_u64() > Some(3),
        "{record}"
    );
    let mut table = String::new();
    r.wait_until(T, "the status table in BACKOFF", || {
        table = status_of(&ctl, false).1;
        table.contains("BACKOFF")
    });
    assert!(
        table.contains("  reason    generation ")
            && table.contains("(restart attempt ")
            && table.contains("; failed starts in a row: "),
        "{table}"
    );
    // Each failure is a warning; an error line at most once per --backoff-max (200 ms), and
    // there has been one.
    let errors: Vec<String> = r
        .lines()
        .into_iter()
        .filter(|l| l.contains("keeps failing to come back"))
        .collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|l| l.contains("ERROR")),
        "{errors:?}"
    );
    assert!(
        errors.len() < restarts(&r).len(),
        "{} errors for {} restarts",
        errors.len(),
        restarts(&r).len()
    );

    // The outage ends: the next restart serves, on the same socket.
    fs::remove_file(&down).expect("remove the flag file");
    let v = r.wait_status("RUNNING again, on a later generation", |v| {
        v["state"] == "RUNNING" && current_generation(v) > Some(1)
    });
    let now_serving = current_pid(&v).expect("a generation serves");
    assert_eq!(echo_stream(&target, "again", T), Ok(now_serving));
    let (code, out) = status_of(&ctl, true);
    let record: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(
        (code, &record["state"]),
        (0, &serde_json::json!("RUNNING")),
        "{record}"
    );
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 0);
}

#[test]
fn after_serving_only_max_restarts_gives_up() {
    let dir = TempDir::new("outage-max");
    let down = dir.join("down");
    let child = script(
        &dir,
        "server.sh",
        &format!(
            "#!/bin/sh\n[ -e {down} ] && exit 5\nexec {probe}\n",
            down = down.display(),
            probe = probe_bin().display()
        ),
    );
    let mut r = Relaunch::start(&[
        "--start-retries",
        "0",
        "--max-restarts",
        "6",
        "--backoff-min",
        "10ms",
        "--backoff-max",
        "50ms",
        "--start-secs",
        "0.2",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let g1 = current_pid(&r.wait_running(1)).expect("a current pid");
    fs::write(&down, "").expect("create the flag file");
    kill(g1, libc::SIGKILL);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 5);
    // relaunch has exited: only its log is left.
    let fatal = state_change_line(&r, "FATAL", 1);
    assert!(
        fatal.contains("crash loop") && fatal.contains("--max-restarts 6"),
        "{fatal}"
    );
    // The first start and six restarts; --start-retries 0 did not stop them.
    assert_eq!(r.spawned_pids().len(), 7, "{:?}", r.spawned_pids());
}

// =============================================================================================
// 3. Backoff: grows by the factor, is capped, starts over after a good start.

#[test]
fn backoff_grows_is_capped_and_resets_after_a_start() {
    let dir = TempDir::new("backoff");
    let count = dir.join("count");
    // Generations 1-4 and 6 fail at once; 5 and 7 run until the test ends them.
    let child = script(
        &dir,
        "flaky.sh",
        &format!(
            r#"#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > {count}
case "$n" in 5|7) ;; *) exit 1 ;; esac
while [ ! -e {dir}/exit.$n ]; do sleep 0.02; done
exit 1
"#,
            count = count.display(),
            dir = dir.path().display()
        ),
    );
    let mut r = Relaunch::start(&[
        "--no-jitter",
        "--backoff-min",
        "50ms",
        "--backoff-factor",
        "2",
        "--backoff-max",
        "300ms",
        "--start-retries",
        "10",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&child),
    ]);
    // Generation 5 counts as started, then crashes.
    r.wait_running(5);
    end_generation(&dir, 5, "1");
    // Generation 7 stays up, so the history holds generations 1 to 7 only.
    let v = r.wait_running(7);
    r.signal(libc::SIGTERM);
    r.wait_exit(T);

    // The delay computed for each restart is in its `restarting` line (status shows it only
    // while that restart is pending, too briefly to catch on a loaded machine).
    let scheduled: Vec<(u64, u64, u64)> = restarts(&r)
        .iter()
        .map(|l| {
            let num = |key| {
                field(l, key)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or_else(|| r.fail(&format!("no {key}= in {l}")))
            };
            (num("generation"), num("delay_ms"), num("attempt"))
        })
        .collect();
    assert_eq!(
        scheduled,
        [
            (2, 50, 1),
            (3, 100, 2),
            (4, 200, 3),
            (5, 300, 4),
            (6, 50, 1),
            (7, 100, 2)
        ],
        "(generation, delay, attempt): doubling from 50 ms, capped at 300 ms, back to 50 ms \
         and attempt 1 after generation 5 ran"
    );
    // And the spawns really wait that long. The status history stamps an exit and the
    // restart it scheduled with the master's own clock (the `now` the delay was added to,
    // then the `now` the timer fired at), so the gap is at least the delay to the
    // millisecond, however loaded the machine; above, it is bounded loosely.
    let at = |e: &serde_json::Value| {
        ms_of_day(e["at"].as_str().unwrap_or_default())
            .unwrap_or_else(|| r.fail(&format!("bad history time in {e}")))
    };
    for &(generation, delay, _) in &scheduled {
        let exit = exit_entry(&r, &v, generation - 1);
        let restart = history(&v, "restart")
            .find(|e| e["generation"] == generation)
            .unwrap_or_else(|| r.fail(&format!("no restart of generation {generation}: {v:#}")));
        let gap = (at(restart) - at(&exit)).rem_euclid(86_400_000);
        assert!(
            gap >= delay as i64 && gap < delay as i64 + 5000,
            "generation {generation}: spawned {gap} ms after generation {} exited, delay \
             {delay} ms: {v:#}",
            generation - 1
        );
    }
}

/// Milliseconds since midnight of a status time (RFC 3339, UTC, milliseconds:
/// `2023-11-14T22:13:20.005Z`).
fn ms_of_day(stamp: &str) -> Option<i64> {
    let time = stamp.split('T').nth(1)?.strip_suffix('Z')?;
    let (hms, ms) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?)
}

// =============================================================================================
// 4. Privileges: relaunch binds as root, the child runs as the user.

/// A user to run children as: one with supplementary groups if the system has one, else
/// `nobody`. Returns (name, uid, primary gid).
fn test_user() -> Option<(String, u32, u32)> {
    use nix::unistd::User;
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    let with_groups = groups.lines().find_map(|l| {
        let members = l.split(':').nth(3)?;
        members
            .split(',')
            .filter(|m| !m.is_empty() && *m != "root")
            .find_map(|m| User::from_name(m).ok().flatten())
    });
    let user = with_groups.or_else(|| User::from_name("nobody").ok().flatten())?;
    Some((user.name, user.uid.as_raw(), user.gid.as_raw()))
}

/// The sorted, deduplicated groups of `name` with primary group `gid`.
fn group_list(name: &str, gid: u32) -> Vec<u32> {
    let c = std::ffi::CString::new(name).unwrap();
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&c, nix::unistd::Gid::from_raw(gid))
        .expect("getgrouplist")
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

#[test]
fn children_run_as_user_with_its_groups_umask_and_directory() {
    if !is_root() {
        eprintln!("NOTE: not root: cannot test dropping privileges (the spawn unit tests check that it fails closed)");
        return;
    }
    let Some((user, uid, gid)) = test_user() else {
        eprintln!("NOTE: no user to switch to on this system");
        return;
    };
    let dir = TempDir::new("user");
    open_to_all(&dir);
    let probe = public_probe(&dir);
    let report = dir.join("report");
    let r = Relaunch::start(&[
        "--user",
        &user,
        "--umask",
        "027",
        "--chdir",
        s(dir.path()),
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    let pid = r.generation_pid(1);
    let got = wait_for_report(&r, &report, pid);
    assert_eq!((got.uid, got.gid), (Some(uid), Some(gid)), "{}", got.line);
    assert_eq!(got.groups, Some(group_list(&user, gid)), "{}", got.line);
    assert_eq!(got.umask.as_deref(), Some("0027"), "{}", got.line);
    let cwd = fs::canonicalize(dir.path()).unwrap();
    assert_eq!(got.cwd.as_deref(), Some(s(&cwd)), "{}", got.line);
    // It still got its socket, bound by relaunch as root.
    assert_eq!(got.listen_fds.as_deref(), Some("1"), "{}", got.line);
    assert!(got.fds.contains(&3), "{}", got.line);
    let master = fs::read_to_string(format!("/proc/{}/status", r.pid())).unwrap();
    assert!(
        master.lines().any(|l| l.starts_with("Uid:\t0\t")),
        "relaunch itself stays root"
    );

    // --group replaces the primary group.
    let dir2 = TempDir::new("user-group");
    open_to_all(&dir2);
    let probe2 = public_probe(&dir2);
    let report2 = dir2.join("report");
    let r2 = Relaunch::start(&[
        "--user",
        &uid.to_string(),
        "--group",
        "65534",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe2),
        "--report",
        s(&report2),
    ]);
    let pid2 = r2.generation_pid(1);
    let got2 = wait_for_report(&r2, &report2, pid2);
    assert_eq!(
        (got2.uid, got2.gid),
        (Some(uid), Some(65534)),
        "{}",
        got2.line
    );
    assert_eq!(got2.groups, Some(group_list(&user, 65534)), "{}", got2.line);
}

#[test]
fn readiness_notifications_reach_relaunch_from_a_child_running_as_another_user() {
    if !is_root() {
        eprintln!("NOTE: not root: skipping the --user notify test");
        return;
    }
    let dir = TempDir::new("user-notify");
    open_to_all(&dir);
    let probe = public_probe(&dir);
    let report = dir.join("report");
    let r = Relaunch::start(&[
        "--user",
        "nobody",
        "--ready",
        "notify",
        "--ready-timeout",
        "20",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
        "--ready-after-ms",
        "0",
    ]);
    r.wait_status("generation 1 ready (READY=1 arrived) and RUNNING", |v| {
        is_running(v, 1) && generation(v, 1).is_some_and(|g| g["ready_at"].is_string())
    });
}

#[test]
fn a_child_running_as_another_user_still_gets_its_parent_death_signal() {
    // The kernel clears PR_SET_PDEATHSIG when credentials change: relaunch sets it after.
    if !is_root() {
        eprintln!("NOTE: not root: skipping the --user pdeathsig test");
        return;
    }
    let dir = TempDir::new("user-pdeathsig");
    open_to_all(&dir);
    let probe = public_probe(&dir);
    let report = dir.join("report");
    let mut r = Relaunch::start(&[
        "--user",
        "nobody",
        "--pdeathsig",
        "USR1",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    let pid = r.generation_pid(1);
    wait_for_report(&r, &report, pid);
    let _guard = KillOnDrop(pid);
    kill(r.pid(), libc::SIGKILL);
    r.wait_exit(T);
    r.wait_until(T, "the orphan to report SIGUSR1", || {
        read_signal_reports(&report).contains(&("USR1".to_owned(), pid))
    });
}

/// Flags, environment variables, and what stderr must mention.
type BadCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);

#[test]
fn unknown_users_and_other_bad_options_exit_2_before_binding() {
    let dir = TempDir::new("bad-options");
    let probe = probe_bin();
    let p = s(&probe);
    let bad_env = dir.join("bad.env");
    fs::write(&bad_env, "A=1\n# fine\nnot a variable\n").unwrap();
    let missing = dir.join("missing.env");
    let bad_env_path = format!("{}:3", bad_env.display());
    let cases: Vec<BadCase> = vec![
        (
            vec!["--user", "no-such-user-relaunch"],
            vec![],
            vec!["no-such-user-relaunch"],
        ),
        (
            vec!["--group", "no-such-group-relaunch"],
            vec![],
            vec!["no-such-group-relaunch"],
        ),
        (
            vec![],
            vec![("RELAUNCH_USER", "no-such-user-env")],
            vec!["no-such-user-env"],
        ),
        (
            vec!["--restart", "sometimes"],
            vec![],
            vec!["sometimes", "on-failure"],
        ),
        (
            vec![],
            vec![("RELAUNCH_RESTART", "bogus")],
            vec!["bogus", "always"],
        ),
        (
            vec!["--exit-codes", "0,256"],
            vec![],
            vec!["0,256", "0 to 255"],
        ),
        (vec!["--start-retries", "-1"], vec![], vec![]),
        (
            vec!["--on-fatal", "retry"],
            vec![],
            vec!["retry", "exit or wait"],
        ),
        (
            vec!["--backoff-factor", "0.5"],
            vec![],
            vec!["0.5", "1 to 1000"],
        ),
        (
            vec!["--backoff-min", "5s", "--backoff-max", "1s"],
            vec![],
            vec!["--backoff-min", "--backoff-max"],
        ),
        (
            vec!["--restart-window", "10"],
            vec![],
            vec!["--max-restarts"],
        ),
        (
            vec!["--rlimit", "files=10"],
            vec![],
            vec!["files", "nofile"],
        ),
        (
            vec!["--rlimit", "nofile=2:1"],
            vec![],
            vec!["nofile=2:1", "soft"],
        ),
        (vec!["--umask", "999"], vec![], vec!["999", "octal"]),
        (vec!["--nice", "20"], vec![], vec!["20", "-20"]),
        (vec!["--pdeathsig", "SOON"], vec![], vec!["SOON", "none"]),
        (
            vec!["--env", "NOEQUALS"],
            vec![],
            vec!["NOEQUALS", "KEY=VALUE"],
        ),
        (
            vec!["--env", "LISTEN_FDS=9"],
            vec![],
            vec!["LISTEN_FDS", "relaunch"],
        ),
        (vec!["--env-file", s(&missing)], vec![], vec![s(&missing)]),
        (vec!["--env-file", s(&bad_env)], vec![], vec![&bad_env_path]),
        (
            vec!["--chdir", "/nonexistent/relaunch-dir"],
            vec![],
            vec!["/nonexistent/relaunch-dir"],
        ),
        (vec![], vec![("RELAUNCH_NO_JITTER", "maybe")], vec!["maybe"]),
    ];
    let mut failures = Vec::new();
    for (flags, vars, needles) in &cases {
        let mut args: Vec<&str> = flags.clone();
        args.extend(["--listen", "127.0.0.1:0", "--", p]);
        let mut r = Relaunch::start_with_env(&args, vars);
        let Some(status) = r.wait_exit_within(T) else {
            failures.push(format!("{flags:?} {vars:?}: did not exit"));
            continue;
        };
        let stderr = r.stderr();
        let mut problems = Vec::new();
        if status.code() != Some(2) {
            problems.push(format!(
                "ended with {}, expected 2",
                exit_description(status)
            ));
        }
        for needle in needles {
            if !stderr.contains(needle) {
                problems.push(format!("stderr does not mention {needle:?}"));
            }
        }
        if r.event_index("listening", &[]).is_some() || !r.spawned_pids().is_empty() {
            problems.push("a socket was bound or a child spawned".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{flags:?} {vars:?}: {}; stderr:\n{stderr}",
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
fn the_command_line_wins_over_the_environment() {
    let dir = TempDir::new("env-vs-flag");
    let child = script(&dir, "exit5.sh", "#!/bin/sh\nexit 5\n");
    let mut r = Relaunch::start_with_env(
        &[
            "--start-retries",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--",
            s(&child),
        ],
        &[
            ("RELAUNCH_START_RETRIES", "7"),
            ("RELAUNCH_BACKOFF_MIN", "1ms"),
        ],
    );
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 5);
    assert_eq!(
        r.spawned_pids().len(),
        1,
        "--start-retries 0 beats the variable's 7"
    );
}

// =============================================================================================
// 5. Limits, niceness.

/// (soft, hard) of a row of /proc/<pid>/limits, e.g. "Max open files".
fn proc_limit(pid: i32, name: &str) -> Option<(String, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let row = text.lines().find(|l| l.starts_with(name))?;
    let mut cols = row[name.len()..].split_whitespace();
    Some((cols.next()?.to_owned(), cols.next()?.to_owned()))
}

/// This process's hard limit for `resource`, as /proc shows it.
fn own_hard(name: &str) -> String {
    proc_limit(std::process::id() as i32, name)
        .expect("own limits")
        .1
}

#[test]
fn resource_limits_and_niceness_apply_to_the_child() {
    let dir = TempDir::new("rlimit");
    let report = dir.join("report");
    let probe = probe_bin();
    // Only soft limits at or below the hard ones, which stay: allowed without privileges too.
    let at_most = |hard: &str, want: u64| match hard.parse::<u64>() {
        Ok(h) if h < want => h.to_string(),
        _ => want.to_string(),
    };
    let nofile_hard = own_hard("Max open files");
    let nofile_soft = at_most(&nofile_hard, 100);
    let nofile = format!("nofile={nofile_soft}:{nofile_hard}");
    let core = format!("core=0:{}", own_hard("Max core file size"));
    let memlock_soft = at_most(&own_hard("Max locked memory"), 4096);
    let memlock = format!("memlock={memlock_soft}:{}", own_hard("Max locked memory"));
    let as_hard = own_hard("Max address space");
    let as_soft = at_most(&as_hard, 64 << 30);
    let as_ = format!("as={as_soft}:{as_hard}");
    let r = Relaunch::start(&[
        "--rlimit",
        &nofile,
        "--rlimit",
        &format!("{core},{memlock}"),
        "--rlimit",
        &as_,
        "--nice",
        "5",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    let pid = r.generation_pid(1);
    let got = wait_for_report(&r, &report, pid);
    assert_eq!(
        got.nofile,
        Some(format!("{nofile_soft}:{nofile_hard}")),
        "{}",
        got.line
    );
    assert_eq!(got.nice, Some(5), "{}", got.line);
    let limit = |name| proc_limit(pid, name).expect("child limits");
    assert_eq!(limit("Max open files"), (nofile_soft, nofile_hard.clone()));
    assert_eq!(limit("Max core file size").0, "0");
    assert_eq!(limit("Max locked memory").0, memlock_soft);
    assert_eq!(limit("Max address space"), (as_soft, as_hard));
}

// =============================================================================================
// 6. Environment: --env, --env-file re-read at every spawn, --clear-env.

/// A child that dumps its environment to `env.<pid>`, then waits to be stopped.
fn env_dumper(dir: &TempDir) -> PathBuf {
    script(
        dir,
        "dump-env.sh",
        &format!(
            "#!/bin/sh\nenv > {}/env.$$.tmp && mv {}/env.$$.tmp {}/env.$$\nwhile :; do sleep 1; done\n",
            dir.path().display(),
            dir.path().display(),
            dir.path().display()
        ),
    )
}

/// The environment generation `generation` dumped, as sorted `KEY=VALUE` lines.
#[track_caller]
fn dumped_env(r: &Relaunch, dir: &TempDir, generation: u32) -> Vec<String> {
    let pid = r.generation_pid(generation);
    let path = dir.join(&format!("env.{pid}"));
    r.wait_until(T, &format!("{}", path.display()), || path.exists());
    let mut lines: Vec<String> = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn var<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn env_and_env_file_reach_the_child_and_the_file_is_read_again_on_reload() {
    let dir = TempDir::new("env");
    let child = env_dumper(&dir);
    let env_file = dir.join("app.env");
    fs::write(
        &env_file,
        "# settings\nA=from-file\nB=file-b\n\nD=\"quoted\"\n",
    )
    .unwrap();
    let r = Relaunch::start_with_env(
        &[
            "--env",
            "B=flag",
            "--env",
            "C=x=y",
            "--env-file",
            s(&env_file),
            "--start-secs",
            "0.1",
            "--listen",
            "127.0.0.1:0",
            "--",
            s(&child),
        ],
        &[("INHERITED_VAR", "1"), ("RELAUNCH_MAX_RESTARTS", "9")],
    );
    let env1 = dumped_env(&r, &dir, 1);
    assert_eq!(var(&env1, "A"), Some("from-file"), "{env1:?}");
    assert_eq!(
        var(&env1, "B"),
        Some("flag"),
        "--env wins over the file: {env1:?}"
    );
    assert_eq!(var(&env1, "C"), Some("x=y"), "{env1:?}");
    assert_eq!(
        var(&env1, "D"),
        Some("\"quoted\""),
        "values are verbatim: {env1:?}"
    );
    assert_eq!(var(&env1, "INHERITED_VAR"), Some("1"), "{env1:?}");
    assert_eq!(
        var(&env1, "RELAUNCH_MAX_RESTARTS"),
        None,
        "relaunch's own configuration is not passed on: {env1:?}"
    );
    assert_eq!(env1.iter().filter(|l| l.starts_with("B=")).count(), 1);

    // The file changes; a reload picks it up.
    fs::write(&env_file, "A=changed\n").unwrap();
    r.wait_running(1);
    r.signal(libc::SIGHUP);
    r.wait_reload_ok(2);
    let env2 = dumped_env(&r, &dir, 2);
    assert_eq!(var(&env2, "A"), Some("changed"), "{env2:?}");
    assert_eq!(var(&env2, "B"), Some("flag"), "{env2:?}");

    // A broken file fails the reload, naming file:line; generation 2 keeps serving.
    fs::write(&env_file, "A=1\nthis is not an assignment\n").unwrap();
    r.signal(libc::SIGHUP);
    let failed = r.wait_reload_failed(3);
    let where_ = format!("{}:2", env_file.display());
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|why| why.contains(&where_)),
        "{where_} not in {failed:#}"
    );
    let v = r.wait_running(2);
    let pid2 = current_pid(&v).expect("generation 2's pid");
    r.wait_until(T, "generation 2 as the only child", || {
        r.live_children() == vec![pid2]
    });
}

#[test]
fn clear_env_passes_only_path_the_activation_variables_and_env() {
    let dir = TempDir::new("clear-env");
    let child = env_dumper(&dir);
    let r = Relaunch::start_with_env(
        &[
            "--clear-env",
            "--env",
            "KEEP=1",
            "--start-secs",
            "0.1",
            "--listen",
            "127.0.0.1:0",
            "--",
            s(&child),
        ],
        &[("INHERITED_VAR", "1")],
    );
    let env = dumped_env(&r, &dir, 1);
    let names: Vec<&str> = env
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        // What the shell adds by itself.
        .filter(|k| !["PWD", "OLDPWD", "SHLVL", "_"].contains(k))
        .collect();
    assert_eq!(
        names,
        [
            "KEEP",
            "LISTEN_FDNAMES",
            "LISTEN_FDS",
            "LISTEN_PID",
            "PATH",
            "RELAUNCH_GENERATION",
            "RELAUNCH_WORKER"
        ],
        "{env:?}"
    );
}

// =============================================================================================
// 7. Process groups: stopping reaches what the child started.

/// A shell child that starts a grandchild (`sleep`), writes its pid to `gc`, and waits.
fn parent_of_grandchild(dir: &TempDir, ignore_term: bool) -> PathBuf {
    let trap = if ignore_term { "trap '' TERM\n" } else { "" };
    script(
        dir,
        "grandparent.sh",
        &format!(
            "#!/bin/sh\n{trap}sleep 1000 &\necho $! > {gc}.tmp && mv {gc}.tmp {gc}\nwait\n",
            gc = dir.join("gc").display()
        ),
    )
}

#[track_caller]
fn grandchild(r: &Relaunch, dir: &TempDir) -> i32 {
    let gc = dir.join("gc");
    r.wait_until(T, "the grandchild's pid", || gc.exists());
    fs::read_to_string(&gc).unwrap().trim().parse().unwrap()
}

#[test]
fn stop_as_group_stops_the_grandchild_too() {
    let dir = TempDir::new("stop-as-group");
    let child = parent_of_grandchild(&dir, false);
    let mut r = Relaunch::start(&[
        "--stop-as-group",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let gc = grandchild(&r, &dir);
    let _guard = KillOnDrop(gc);
    r.wait_running(1);
    r.signal(libc::SIGTERM);
    r.wait_exit(T);
    r.wait_until(T, &format!("grandchild {gc} to be gone"), || {
        !proc_alive(gc)
    });
}

#[test]
fn kill_as_group_kills_the_grandchild_when_the_stop_signal_is_ignored() {
    let dir = TempDir::new("kill-as-group");
    let child = parent_of_grandchild(&dir, true);
    let mut r = Relaunch::start(&[
        "--kill-as-group",
        "--stop-wait-secs",
        "0.3",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let gc = grandchild(&r, &dir);
    let _guard = KillOnDrop(gc);
    r.wait_running(1);
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 137);
    // relaunch has exited: only its log says the stop timed out.
    r.wait_for_event("stop timeout", &[], T);
    r.wait_until(T, &format!("grandchild {gc} to be gone"), || {
        !proc_alive(gc)
    });
}

#[test]
fn without_group_signals_the_grandchild_outlives_its_parent() {
    // The control for the two tests above: the group options are what reaches it.
    let dir = TempDir::new("no-group");
    let child = parent_of_grandchild(&dir, false);
    let mut r = Relaunch::start(&[
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&child),
    ]);
    let gc = grandchild(&r, &dir);
    let _guard = KillOnDrop(gc);
    r.wait_running(1);
    r.signal(libc::SIGTERM);
    r.wait_exit(T);
    assert!(proc_alive(gc), "only the child got the stop signal");
}

// =============================================================================================
// 8. Orphans: a SIGKILLed relaunch leaves no server behind.

fn start_probe(dir: &TempDir, flags: &[&str], probe_flags: &[&str]) -> (Relaunch, i32, PathBuf) {
    let report = dir.join("report");
    let probe = probe_bin();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend([
        "--start-secs",
        "0.1",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    args.extend(probe_flags);
    let r = Relaunch::start(&args);
    let pid = r.generation_pid(1);
    wait_for_report(&r, &report, pid);
    (r, pid, report)
}

#[test]
fn a_sigkilled_relaunch_takes_its_child_along_and_frees_the_port() {
    let dir = TempDir::new("pdeathsig");
    let (mut r, pid, _) = start_probe(&dir, &[], &[]);
    let addr = r.addr("http");
    let _guard = KillOnDrop(pid);
    kill(r.pid(), libc::SIGKILL);
    r.wait_exit(T);
    r.wait_until(T, &format!("child {pid} to be gone"), || !proc_alive(pid));
    r.wait_until(T, &format!("{addr} to be free"), || {
        TcpListener::bind(addr).is_ok()
    });
}

#[test]
fn pdeathsig_kill_ends_a_child_that_ignores_term() {
    let dir = TempDir::new("pdeathsig-kill");
    let (mut r, pid, _) = start_probe(&dir, &["--pdeathsig", "KILL"], &["--on-term", "ignore"]);
    let _guard = KillOnDrop(pid);
    kill(r.pid(), libc::SIGKILL);
    r.wait_exit(T);
    r.wait_until(T, &format!("child {pid} to be gone"), || !proc_alive(pid));
}

#[test]
fn pdeathsig_none_leaves_the_child_running() {
    let dir = TempDir::new("pdeathsig-none");
    let (mut r, pid, report) = start_probe(&dir, &["--pdeathsig", "none"], &[]);
    let _guard = KillOnDrop(pid);
    let master = r.pid();
    kill(master, libc::SIGKILL);
    r.wait_exit(T);
    r.wait_until(T, "the orphan to be re-parented", || {
        proc_stat(pid).is_some_and(|st| st.ppid != master)
    });
    // A parent-death signal would have been queued before this WINCH and, being a lower
    // number (TERM), taken first by the probe's sigwait, which would then exit. Seeing WINCH
    // answered proves none came.
    assert!(kill(pid, libc::SIGWINCH), "the orphan is gone");
    r.wait_until(T, "the probe to answer SIGWINCH", || {
        read_signal_reports(&report).contains(&("WINCH".to_owned(), pid))
    });
    let text = fs::read_to_string(&report).unwrap();
    assert!(!text.contains(&format!("term pid={pid}")), "{text}");
    assert!(proc_alive(pid));
}
