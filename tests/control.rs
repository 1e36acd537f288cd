//! The control socket, the client subcommands and the metrics endpoint, end to end: a real
//! relaunch, real children, and the real `relaunch status|reload|stop|signal` client.
//!
//! Every master gets `--control` in a temp dir (or its own `XDG_RUNTIME_DIR` from the
//! harness, or `RELAUNCH_CONTROL_DIR`), so tests running in parallel never share a socket; a
//! client that searches for masters gets `RELAUNCH_CONTROL_DIR` too, so that relaunches
//! running elsewhere on the machine (in `/run/relaunch`, say) are never seen.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: Duration = TIMEOUT;

// ---------------------------------------------------------------------------------------------
// Helpers

/// What a client run printed, and its exit code.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("client printed no JSON ({e}): {self:?}"))
    }
}

fn client_command(args: &[&str]) -> Command {
    client_command_for(&relaunch_bin(), args)
}

fn client_command_for(bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RELAUNCH_LOG");
    cmd
}

/// Waits for a client with a deadline (killing it and failing the test after `timeout`).
#[track_caller]
fn finish(mut child: Child, what: &str, timeout: Duration) -> Out {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client `{what}` did not finish within {timeout:?}");
        }
        thread::sleep(POLL_INTERVAL);
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("[client {what}] exit {:?}\n{stdout}{stderr}", status.code());
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Runs `relaunch ARGS` (a client subcommand) to completion.
#[track_caller]
fn client(args: &[&str]) -> Out {
    let child = client_command(args).spawn().expect("start the client");
    finish(child, &args.join(" "), T)
}

fn start_client(args: &[&str]) -> Child {
    client_command(args).spawn().expect("start the client")
}

/// `status --json` of the master at `ctl`.
#[track_caller]
fn status(ctl: &Path) -> (i32, Value) {
    let out = client(&["status", "--json", "--control", s(ctl)]);
    assert!(
        out.code == 0 || out.code == 1,
        "status should answer 0 or 1 while relaunch runs: {out:?}"
    );
    (out.code, out.json())
}

/// Polls `status --json` until `pred` holds; returns that record.
#[track_caller]
fn wait_status(
    r: &Relaunch,
    ctl: &Path,
    what: &str,
    mut pred: impl FnMut(i32, &Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let mut found = None;
    r.wait_until(T, &format!("status: {what}"), || {
        let (code, v) = status(ctl);
        let ok = pred(code, &v);
        last = v.clone();
        if ok {
            found = Some(v);
        }
        ok
    });
    found.unwrap_or(last)
}

/// A program path whose target the test swaps: `ok` runs the probe, `fail` runs a probe that
/// exits 3 at once, and `remove` deletes the link (exec fails).
struct Program {
    dir: TempDir,
    link: PathBuf,
    report: PathBuf,
}

impl Program {
    fn new(tag: &str) -> Program {
        let dir = TempDir::new(tag);
        let probe = probe_bin();
        let write = |name: &str, body: String| {
            let path = dir.join(name);
            fs::write(&path, body).expect("write script");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        write("ok.sh", format!("#!/bin/sh\nexec {} \"$@\"\n", s(&probe)));
        write(
            "fail.sh",
            format!(
                "#!/bin/sh\nexec {} \"$@\" --exit-after-ms 0 --exit-code 3\n",
                s(&probe)
            ),
        );
        let link = dir.join("server");
        let report = dir.join("report");
        let p = Program { dir, link, report };
        p.point("ok.sh");
        p
    }

    fn point(&self, target: &str) {
        let tmp = self.dir.join("server.tmp");
        let _ = fs::remove_file(&tmp);
        symlink(self.dir.join(target), &tmp).expect("symlink");
        fs::rename(&tmp, &self.link).expect("rename symlink");
    }

    fn ok(&self) {
        self.point("ok.sh")
    }

    fn fail(&self) {
        self.point("fail.sh")
    }

    fn remove(&self) {
        fs::remove_file(&self.link).expect("remove the program");
    }

    fn ctl(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    /// relaunch over this program with a control socket in the temp dir.
    fn start(&self, flags: &[&str]) -> Relaunch {
        let ctl = self.ctl();
        let mut args = vec!["--control", s(&ctl), "--listen", "http=127.0.0.1:0"];
        args.extend_from_slice(flags);
        args.extend(["--", s(&self.link), "--report", s(&self.report)]);
        Relaunch::start(&args)
    }
}

fn rfc3339_like(v: &Value) -> bool {
    v.as_str().is_some_and(|t| {
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.starts_with("20")
    })
}

fn history(v: &Value) -> Vec<Value> {
    v["history"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Status across a life

#[test]
fn status_json_across_start_reload_failed_reload_crash_and_backoff() {
    let p = Program::new("status-life");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.5", "--name", "web"]);
    let addr = r.addr("http");
    let g1 = r.generation_pid(1);

    // Starting (exit 1: nothing running yet) or already running; then running (exit 0).
    let v = wait_status(&r, &ctl, "RUNNING with exit code 0", |code, v| {
        assert!(
            (code == 1 && v["state"] == "STARTING") || (code == 0 && v["state"] == "RUNNING"),
            "unexpected state/code {code}: {v}"
        );
        code == 0
    });
    assert_eq!(v["name"], "web");
    assert_eq!(v["pid"], r.pid());
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(rfc3339_like(&v["started_at"]), "{v}");
    assert!(v["uptime_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["control"], s(&ctl));
    assert_eq!(
        v["sockets"],
        serde_json::json!([{"fd": 3, "name": "http", "kind": "tcp", "address": addr.to_string()}])
    );
    let gens = v["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 1, "{v}");
    assert_eq!(gens[0]["generation"], 1);
    assert_eq!(gens[0]["pid"], g1);
    assert_eq!(gens[0]["role"], "current");
    assert_eq!(gens[0]["state"], "RUNNING");
    assert!(rfc3339_like(&gens[0]["started_at"]), "{v}");
    assert!(rfc3339_like(&gens[0]["ready_at"]), "{v}");
    assert!(gens[0]["started_at"].as_str() < gens[0]["ready_at"].as_str());
    assert_eq!(
        v["counters"],
        serde_json::json!({"reloads_ok": 0, "reloads_failed": 0, "restarts": 0, "spawn_failures": 0})
    );
    assert_eq!(v["reloading"], false);
    assert_eq!(v["last_reload"], Value::Null);
    assert!(history(&v).is_empty(), "{v}");

    // The human table says the same.
    let table = client(&["status", "--control", s(&ctl)]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table
            .stdout
            .starts_with(&format!("web: RUNNING, generation 1 (pid {g1})")),
        "{table:?}"
    );

    // A reload that works.
    let ok = client(&["reload", "--wait", "--control", s(&ctl)]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let g2 = r.generation_pid(2);
    assert!(
        ok.stdout.contains(&format!("generation 2 (pid {g2})")),
        "{ok:?}"
    );
    let v = wait_status(&r, &ctl, "generation 1 reaped", |_, v| {
        history(v)
            .iter()
            .any(|e| e["event"] == "exit" && e["generation"] == 1)
    });
    assert_eq!(v["generations"][0]["generation"], 2);
    assert_eq!(v["generations"][0]["pid"], g2);
    let last = &v["last_reload"];
    assert_eq!(last["generation"], 2);
    assert_eq!(last["result"], "ok");
    assert_eq!(last["trigger"], "control");
    assert_eq!(last["pid"], g2);
    assert!(
        last["duration_secs"].as_f64().unwrap() >= 0.5,
        "start-secs 0.5: {last}"
    );
    assert_eq!(v["counters"]["reloads_ok"], 1);
    let h = history(&v);
    let exit1 = h.iter().find(|e| e["event"] == "exit").unwrap();
    assert_eq!(exit1["pid"], g1);
    assert_eq!(exit1["code"], 0);
    assert_eq!(
        exit1["expected"], true,
        "the old generation was asked to stop"
    );
    assert!(h
        .iter()
        .any(|e| e["event"] == "reload" && e["result"] == "ok"));

    // A reload by SIGHUP whose new generation exits with 3.
    p.fail();
    r.signal(libc::SIGHUP);
    let v = wait_status(&r, &ctl, "a failed reload", |_, v| {
        v["counters"]["reloads_failed"] == 1
    });
    let last = &v["last_reload"];
    assert_eq!(last["generation"], 3);
    assert_eq!(last["result"], "failed");
    assert_eq!(last["failure"], "exited");
    assert_eq!(last["trigger"], "SIGHUP");
    assert!(
        last["reason"].as_str().unwrap().contains("exit code 3"),
        "{last}"
    );
    assert_eq!(v["state"], "RUNNING", "the old generation keeps serving");
    assert_eq!(v["generations"][0]["pid"], g2);

    // A crash of the current generation while the program is broken: backoff (exit code 1).
    // (FATAL after --start-retries arrives with the restart-policy work; not tested here.)
    assert!(kill(g2, libc::SIGKILL));
    let v = wait_status(&r, &ctl, "BACKOFF with exit code 1", |code, v| {
        v["state"] == "BACKOFF" && code == 1
    });
    assert!(v["backoff"]["generation"].as_u64().unwrap() >= 4, "{v}");
    assert!(rfc3339_like(&v["backoff"]["restart_at"]), "{v}");
    let crash = history(&v)
        .into_iter()
        .find(|e| e["event"] == "exit" && e["pid"] == g2)
        .expect("the crash is in the history");
    assert_eq!(crash["signal"], 9);
    assert_eq!(crash["expected"], false);

    // Fixed: the next restart runs, and is counted.
    p.ok();
    let v = wait_status(&r, &ctl, "RUNNING again after restarts", |code, v| {
        code == 0 && v["state"] == "RUNNING"
    });
    assert!(v["counters"]["restarts"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        history(&v).iter().any(|e| e["event"] == "restart"),
        "restarts are in the history: {v}"
    );
    assert!(history(&v).len() <= 20);
}

// ---------------------------------------------------------------------------------------------
// reload --wait

#[test]
fn reload_wait_exits_0_with_the_new_pid_and_1_with_the_reason_for_each_failure() {
    let p = Program::new("reload-wait");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.3"]);
    r.wait_running(1);

    // Success: exit 0, the new pid.
    let ok = client(&["reload", "--wait", "--control", s(&ctl)]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let g2 = r.generation_pid(2);
    assert!(ok.stdout.contains(&format!("pid {g2}")), "{ok:?}");

    // The new generation exits early with code 3.
    p.fail();
    let failed = client(&["reload", "--wait", "--json", "--control", s(&ctl)]);
    assert_eq!(failed.code, 1, "{failed:?}");
    let v = failed.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["reload"]["generation"], 3);
    assert_eq!(v["reload"]["failure"], "exited");
    assert!(v["error"].as_str().unwrap().contains("exit code 3"), "{v}");
    // Without --json the reason goes to stderr.
    let failed = client(&["restart", "--wait", "--control", s(&ctl)]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("reload failed") && failed.stderr.contains("exit code 3"),
        "{failed:?}"
    );

    // The program is gone: exec fails.
    p.remove();
    let gone = client(&["reload", "--wait", "--json", "--control", s(&ctl)]);
    assert_eq!(gone.code, 1, "{gone:?}");
    let v = gone.json();
    assert_eq!(v["reload"]["failure"], "spawn");
    let reason = v["reload"]["reason"].as_str().unwrap().to_lowercase();
    assert!(
        reason.contains("not found") || reason.contains("no such file"),
        "{v}"
    );

    // Still serving generation 2 after all that.
    let (code, v) = status(&ctl);
    assert_eq!(code, 0);
    assert_eq!(v["generations"][0]["pid"], g2, "{v}");
    assert_eq!(v["counters"]["reloads_failed"], 3);
    assert_eq!(v["counters"]["spawn_failures"], 1);
}

#[test]
fn reload_wait_reports_not_ready_in_time_and_timeout_exits_124() {
    let p = Program::new("not-ready");
    let ctl = p.ctl();
    let r = {
        let mut args = vec![
            "--control",
            s(&ctl),
            "--listen",
            "http=127.0.0.1:0",
            "--ready",
            "notify",
            "--ready-timeout",
            "1s",
            "--",
        ];
        args.extend([s(&p.link), "--report", s(&p.report), "--ready-on-usr2"]);
        Relaunch::start(&args)
    };
    let g1 = r.generation_pid(1);
    wait_for_report(&r, &p.report, g1);
    assert!(kill(g1, libc::SIGUSR2), "make generation 1 ready");
    r.wait_running(1);

    // Generation 2 never says READY=1: a client with a short --timeout gives up with 124.
    let started = Instant::now();
    let timed_out = client(&[
        "reload",
        "--wait",
        "--timeout",
        "200ms",
        "--control",
        s(&ctl),
    ]);
    assert_eq!(timed_out.code, 124, "{timed_out:?}");
    assert!(timed_out.stderr.contains("timed out"), "{timed_out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A waiting client gets "not ready in time" (the follow-up, generation 3, if generation 2
    // was still in progress when it asked; generation 2 otherwise).
    let not_ready = client(&["reload", "--wait", "--json", "--control", s(&ctl)]);
    assert_eq!(not_ready.code, 1, "{not_ready:?}");
    let v = not_ready.json();
    assert_eq!(v["reload"]["failure"], "not_ready", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not ready within --ready-timeout"),
        "{v}"
    );
    let (_, v) = status(&ctl);
    assert_eq!(
        v["generations"][0]["pid"], g1,
        "generation 1 keeps serving: {v}"
    );
}

#[test]
fn concurrent_reload_wait_callers_get_the_coalesced_follow_up_result() {
    let p = Program::new("coalesce");
    let ctl = p.ctl();
    // 2 s of --start-secs: room for the two later requests to arrive during the first reload.
    let r = p.start(&["--start-secs", "2"]);
    r.wait_running(1);

    let first = start_client(&["reload", "--wait", "--json", "--control", s(&ctl)]);
    // Generation 2 runs the working program: its script is read by path after exec, so the
    // link may change only once the probe behind it has reported.
    let g2 = r.generation_pid(2);
    wait_for_report(&r, &p.report, g2);
    p.fail(); // the follow-up will run the broken one
    let second = start_client(&["reload", "--wait", "--json", "--control", s(&ctl)]);
    let third = start_client(&["reload", "--wait", "--json", "--control", s(&ctl)]);
    r.wait_until(T, "three reload requests", || {
        r.events("reload requested").len() == 3
    });

    let first = finish(first, "first", T);
    let second = finish(second, "second", T);
    let third = finish(third, "third", T);
    // The two later requests were handled while generation 2 was in progress.
    let complete = r
        .event_index("reload complete", &[("generation", "2")])
        .unwrap_or_else(|| r.fail("no reload complete for generation 2"));
    let lines = r.lines();
    let requested: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_event(l, "reload requested"))
        .map(|(i, _)| i)
        .collect();
    assert!(
        requested.iter().all(|&i| i < complete),
        "all requests must come before generation 2 completed (machine too slow?)"
    );

    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.json()["reload"]["generation"], 2);
    for (who, out) in [("second", &second), ("third", &third)] {
        assert_eq!(out.code, 1, "{who}: {out:?}");
        let v = out.json();
        assert_eq!(
            v["reload"]["generation"], 3,
            "{who} must get the follow-up's result, not generation 2's: {v}"
        );
        assert_eq!(v["reload"]["failure"], "exited", "{v}");
    }
    assert_eq!(
        r.events("spawned").len(),
        3,
        "one follow-up for both requests"
    );
}

// ---------------------------------------------------------------------------------------------
// Access control and robustness

fn root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn another_uid_is_refused() {
    if !root() {
        eprintln!("NOTE: not root; cannot run a client under another uid, skipping");
        return;
    }
    let p = Program::new("uid");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.2"]);
    r.wait_running(1);
    let meta = fs::metadata(&ctl).expect("control socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "the socket is mode 0600");

    // A copy of the client that uid 65534 may execute.
    let bin = p.dir.join("relaunch");
    fs::copy(relaunch_bin(), &bin).expect("copy relaunch");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let as_nobody = |args: &[&str]| {
        let mut cmd = client_command_for(&bin, args);
        cmd.uid(65534).gid(65534);
        finish(cmd.spawn().expect("start client as nobody"), "as nobody", T)
    };

    // The file mode stops it first.
    let out = as_nobody(&["status", "--control", s(&ctl)]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");

    // With the file opened up, SO_PEERCRED still refuses it, and nothing happens.
    fs::set_permissions(&ctl, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    for args in [
        &["status", "--control", s(&ctl)][..],
        &["reload", "--wait", "--control", s(&ctl)][..],
        &["stop", "--control", s(&ctl)][..],
    ] {
        let out = as_nobody(args);
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("uid 65534") && out.stderr.contains("permission denied"),
            "{out:?}"
        );
    }
    let (code, v) = status(&ctl);
    assert_eq!(code, 0, "root is still served");
    assert!(
        v["reloading"] == false && v["last_reload"].is_null(),
        "nobody else was allowed to reload: {v:#}"
    );
}

/// Writes `len` bytes from `chunk` repeated, ignoring the errors a closed connection gives.
fn flood(
    mut stream: UnixStream,
    chunk: &'static [u8],
    len: usize,
) -> thread::JoinHandle<UnixStream> {
    thread::spawn(move || {
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut sent = 0;
        while sent < len {
            match stream.write(chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break, // closed by relaunch, as it should
            }
        }
        stream
    })
}

#[test]
fn silent_and_flooding_clients_affect_neither_reloads_nor_other_clients() {
    let p = Program::new("abuse");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.3"]);
    r.wait_running(1);

    let silent = UnixStream::connect(&ctl).expect("connect");
    // 10 MB without a newline, and 10 MB of short garbage lines nobody reads the answers to.
    let long_line = flood(UnixStream::connect(&ctl).unwrap(), &[b'x'; 4096], 10 << 20);
    let mut lines = Vec::new();
    for _ in 0..512 {
        lines.extend_from_slice(b"{not json\n");
    }
    let lines: &'static [u8] = Box::leak(lines.into_boxed_slice());
    let bad_lines = flood(UnixStream::connect(&ctl).unwrap(), lines, 10 << 20);

    // Meanwhile reloads and status work, promptly.
    for _ in 0..2 {
        let started = Instant::now();
        let out = client(&["status", "--json", "--control", s(&ctl)]);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let out = client(&["reload", "--wait", "--control", s(&ctl)]);
        assert_eq!(out.code, 0, "{out:?}");
    }

    // The long line got an error and was closed.
    let mut long_line = long_line.join().unwrap();
    long_line
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = long_line.read_to_string(&mut answer);
    assert!(
        answer.contains("request line longer than 65536 bytes"),
        "answer: {answer:?}"
    );
    drop(bad_lines.join().unwrap());

    // The silent client is closed after the idle timeout (10 s).
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    // A read with a timeout is not restarted after a signal handler (signal(7)), and this test
    // process gets SIGCHLDs: EINTR is only a reason to read again.
    let got = loop {
        match silent.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match got {
        Ok(0) => {}
        other => r.fail(&format!("the silent client should see EOF, got {other:?}")),
    }
    let out = client(&["reload", "--wait", "--control", s(&ctl)]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn the_raw_protocol_answers_line_by_line_and_explains_bad_requests() {
    let p = Program::new("raw");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.2"]);
    r.wait_running(1);
    let mut stream = UnixStream::connect(&ctl).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(
            b"{\"v\":1,\"cmd\":\"status\"}\nnonsense\n{\"cmd\":\"status\"}\n{\"v\":9,\"cmd\":\"status\"}\n{\"v\":1,\"cmd\":\"signal\",\"signal\":\"USR1\"}\n",
        )
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    let started = Instant::now();
    stream.read_to_string(&mut text).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a half-closed client is closed once answered, not after the idle timeout"
    );
    let answers: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 5, "{text}");
    assert_eq!(answers[0]["ok"], true);
    assert_eq!(answers[0]["status"]["pid"], r.pid());
    assert!(answers[1]["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed request"));
    assert!(answers[2]["error"]
        .as_str()
        .unwrap()
        .contains(r#"{"v":1,"cmd":"status"}"#));
    assert!(answers[3]["error"]
        .as_str()
        .unwrap()
        .contains("unsupported protocol version 9"));
    let g1 = r.generation_pid(1);
    assert_eq!(answers[4]["signal"]["pid"], g1);
    r.wait_until(T, "the probe to report SIGUSR1", || {
        read_signal_reports(&p.report).contains(&("USR1".to_owned(), g1))
    });
    // And through the client.
    let out = client(&["signal", "usr2", "--control", s(&ctl)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out
        .stdout
        .contains(&format!("SIGUSR2 to generation 1 (pid {g1})")));

    // Fire and forget: a request whose client closes at once still counts.
    let mut fire = UnixStream::connect(&ctl).unwrap();
    fire.write_all(b"{\"v\":1,\"cmd\":\"reload\"}\n").unwrap();
    drop(fire);
    r.wait_reload_ok(2);
}

// ---------------------------------------------------------------------------------------------
// Finding the master; one per name; no master

#[test]
fn default_socket_one_master_per_name_stale_file_replaced_and_removed_on_exit() {
    let rt = TempDir::new("xdg");
    let env = [("XDG_RUNTIME_DIR", s(rt.path()))];
    let p = Program::new("default-path");
    let args = [
        "--name",
        "web",
        "--listen",
        "127.0.0.1:0",
        "--start-secs",
        "0.2",
        "--",
        s(&p.link),
    ];
    let mut a = Relaunch::start_with_env(&args, &env);
    let sock = rt.join("relaunch").join("web.sock");
    a.wait_running(1);
    assert_eq!(
        fs::metadata(rt.join("relaunch")).unwrap().mode() & 0o777,
        0o700,
        "the directory relaunch created is 0700"
    );
    assert_eq!(fs::metadata(&sock).unwrap().mode() & 0o777, 0o600);

    // The client finds it without being told where (it is the only one), or by name.
    let find = |args: &[&str]| {
        let mut cmd = client_command(args);
        // Only this test's directory: root would also look in /run/relaunch, where other
        // relaunches on the machine may run.
        cmd.env("XDG_RUNTIME_DIR", rt.path())
            .env("RELAUNCH_CONTROL_DIR", rt.join("relaunch"));
        finish(cmd.spawn().unwrap(), &args.join(" "), T)
    };
    let out = find(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("web: RUNNING"), "{out:?}");
    assert_eq!(find(&["status", "--name", "web"]).code, 0);
    let out = find(&["status", "--name", "other"]);
    assert_eq!(out.code, 3, "{out:?}");

    // A second relaunch with the same name refuses to start.
    let mut b = Relaunch::start_with_env(&args, &env);
    let status = b.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", b.stderr());
    let err = b.stderr();
    assert!(
        err.contains("another relaunch") && err.contains(s(&sock)),
        "{err}"
    );
    assert!(b.events("spawned").is_empty());

    // A relaunch killed outright leaves its socket behind; the next one replaces it.
    a.signal(libc::SIGKILL);
    a.wait_exit(T);
    assert!(
        sock.exists(),
        "a SIGKILLed relaunch cannot remove its socket"
    );
    assert_eq!(
        find(&["status", "--name", "web"]).code,
        3,
        "stale: not running"
    );
    let c = Relaunch::start_with_env(&args, &env);
    c.wait_running(1);
    assert!(c.stderr().contains("removing a stale control socket"));
    assert_eq!(find(&["status", "--name", "web"]).code, 0);
    // A stale socket of another name beside it does not make `status` ambiguous.
    drop(UnixListener::bind(rt.join("relaunch").join("old.sock")).unwrap());
    let out = find(&["status"]);
    assert_eq!(out.code, 0, "{out:?}");

    // stop --wait: relaunch exits and removes its socket.
    let out = find(&["stop", "--wait", "--name", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("exited with code 0"), "{out:?}");
    let mut c = c;
    let status = c.wait_exit(T);
    assert_eq!(status.code(), Some(0));
    assert!(!sock.exists(), "the socket is removed on exit");
    drop(a);
}

#[test]
fn no_master_exits_3() {
    let dir = TempDir::new("no-master");
    let missing = dir.join("missing.sock");
    let out = client(&["status", "--control", s(&missing)]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains(s(&missing)), "{out:?}");
    assert_eq!(
        client(&["reload", "--wait", "--control", s(&missing)]).code,
        3
    );

    // A stale socket file (nobody listens).
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert_eq!(client(&["status", "--control", s(&stale)]).code, 3);

    // No socket anywhere in an empty runtime dir.
    let mut cmd = client_command(&["status"]);
    cmd.env("XDG_RUNTIME_DIR", dir.path())
        .env("TMPDIR", dir.path())
        .env("RELAUNCH_CONTROL_DIR", dir.path());
    let out = finish(cmd.spawn().unwrap(), "status", T);
    assert_eq!(out.code, 3, "{out:?}");

    // A pid file naming a process that is gone.
    let pid_file = dir.join("x.pid");
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    fs::write(&pid_file, format!("{gone_pid}\n")).unwrap();
    let out = client(&["status", "--pid-file", s(&pid_file)]);
    assert_eq!(out.code, 3, "{out:?}");
    let out = client(&["status", "--pid-file", s(&dir.join("none.pid"))]);
    assert_eq!(out.code, 3, "{out:?}");
    fs::write(&pid_file, "garbage").unwrap();
    let out = client(&["status", "--pid-file", s(&pid_file)]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("\"garbage\""), "{out:?}");
}

#[test]
fn pid_file_fallback_uses_signals_and_refuses_to_wait() {
    let p = Program::new("pidfile");
    let r = Relaunch::start(&[
        "--no-control",
        "--listen",
        "127.0.0.1:0",
        "--start-secs",
        "0.2",
        "--",
        s(&p.link),
    ]);
    // --no-control: no status to ask; the log is all there is.
    r.wait_for_event("running", &[("generation", "1")], T);
    assert!(!r.stderr().contains("control socket"), "--no-control");
    let pid_file = p.dir.join("relaunch.pid");
    fs::write(&pid_file, format!("{}\n", r.pid())).unwrap();
    let pf = s(&pid_file);

    let out = client(&["status", "--pid-file", pf]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("no control socket"), "{out:?}");

    let out = client(&["reload", "--wait", "--pid-file", pf]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cannot wait"), "{out:?}");
    assert!(r.events("reload requested").is_empty(), "nothing was sent");

    let out = client(&["reload", "--pid-file", pf]);
    assert_eq!(out.code, 0, "{out:?}");
    // --no-control: no status to ask; the log is all there is.
    r.wait_for_event("reload complete", &[("generation", "2")], T);

    let out = client(&["stop", "--wait", "--pid-file", pf]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut r = r;
    assert_eq!(r.wait_exit(T).code(), Some(0));
}

#[test]
fn subcommand_usage_errors_exit_2_with_one_line() {
    for (args, needle) in [
        (&["status", "--listen", ":1"][..], "--listen"),
        (&["signal"][..], "<SIGNAL>"),
        (&["signal", "BOGUS"][..], "BOGUS"),
        (&["reload", "--timeout", "1"][..], "--wait"),
        (&["status", "--name", "a/b"][..], "a/b"),
        (&["--listen", ":1", "status"][..], "status"),
    ] {
        let out = client(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:?}");
    }
    let help = client(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help
        .stdout
        .contains("relaunch [OPTIONS] --listen <[NAME=]ADDR> -- <COMMAND>..."));
    assert!(help
        .stdout
        .contains("relaunch <status|reload|restart|update|start|stop|signal>"));
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// One `GET path` with a plain TcpStream; returns the whole response.
fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, T).expect("connect to metrics");
    stream.set_read_timeout(Some(T)).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read metrics");
    text
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_endpoint_serves_prometheus_text_and_no_fd_leaks_to_children() {
    let p = Program::new("metrics");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.2", "--metrics", "127.0.0.1:0"]);
    let line = r.wait_for_event("metrics", &[], T);
    let addr: SocketAddr = field(&line, "addr")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| r.fail(&format!("no addr= in {line}")));
    r.wait_running(1);

    let text = scrape(addr, "/metrics");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert_eq!(
        sample(body, "relaunch_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(sample(body, "relaunch_child_up"), Some(1.0));
    assert_eq!(sample(body, "relaunch_generation"), Some(1.0));
    assert!(body.contains("# TYPE relaunch_reload_duration_seconds histogram"));

    assert_eq!(client(&["reload", "--wait", "--control", s(&ctl)]).code, 0);
    p.fail();
    assert_eq!(client(&["reload", "--wait", "--control", s(&ctl)]).code, 1);
    let body = scrape(addr, "/metrics");
    assert_eq!(
        sample(&body, "relaunch_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "relaunch_reloads_total{result=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&body, "relaunch_generation"), Some(2.0));
    assert_eq!(
        sample(&body, "relaunch_reload_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &body,
            "relaunch_reload_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(2.0)
    );
    assert!(scrape(addr, "/other").starts_with("HTTP/1.0 404"));

    // Neither the control socket, its connections nor the metrics socket reach a child.
    let g2 = r.generation_pid(2);
    let report = wait_for_report(&r, &p.report, g2);
    assert_eq!(report.fds, vec![0, 1, 2, 3], "{}", report.line);
}

#[test]
fn status_reports_fatal_and_exited_with_their_reasons_and_exit_code_1() {
    // FATAL: every start fails (exit 3 at once); with --on-fatal wait relaunch stays up.
    let p = Program::new("status-fatal");
    p.fail();
    let ctl = p.ctl();
    let r = p.start(&[
        "--start-secs",
        "0.5",
        "--start-retries",
        "1",
        "--backoff-min",
        "10ms",
        "--on-fatal",
        "wait",
    ]);
    r.wait_for_log("control socket", T);
    let v = wait_status(&r, &ctl, "FATAL", |_, v| v["state"] == "FATAL");
    let (code, _) = status(&ctl);
    assert_eq!(code, 1, "status exits 1 when the program is FATAL: {v}");
    let reason = v["state_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("start failures") && reason.contains("exit code 3"),
        "state_reason should say why: {v}"
    );
    assert!(v["generations"].as_array().unwrap().is_empty(), "{v}");
    // A reload leaves FATAL once the program works again.
    p.ok();
    let out = client(&["reload", "--wait", "--control", s(&ctl)]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = wait_status(&r, &ctl, "RUNNING after the reload", |code, v| {
        code == 0 && v["state"] == "RUNNING"
    });
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("generation 3"),
        "{v}"
    );
    drop(r);

    // EXITED: --restart never and a clean exit after it counted as started.
    let q = Program::new("status-exited");
    let ctl = q.ctl();
    let dir = TempDir::new("status-exited-flag");
    let flag = dir.join("exit-now");
    let script = q.dir.join("exit-on-flag.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.05; done\nexit 0\n",
            s(&flag)
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    q.point("exit-on-flag.sh");
    let r = q.start(&["--start-secs", "0.2", "--restart", "never"]);
    r.wait_for_log("control socket", T);
    wait_status(&r, &ctl, "RUNNING", |code, v| {
        code == 0 && v["state"] == "RUNNING"
    });
    fs::write(&flag, "").unwrap();
    let v = wait_status(&r, &ctl, "EXITED", |_, v| v["state"] == "EXITED");
    assert_eq!(status(&ctl).0, 1, "nothing serves: {v}");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code 0"),
        "{v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Default names, slots, stale checks and the fd limit (hardening)

/// A client that looks for masters only in `ctl_dir` (never in the machine's own directories).
fn client_in(ctl_dir: &Path, args: &[&str]) -> Out {
    let mut cmd = client_command(args);
    cmd.env("RELAUNCH_CONTROL_DIR", ctl_dir);
    finish(cmd.spawn().expect("start the client"), &args.join(" "), T)
}

#[test]
fn a_taken_default_name_gets_a_suffix_and_clients_still_find_each_master() {
    let dir = TempDir::new("default-names");
    let ctl_dir = dir.join("ctl");
    let p = Program::new("default-names");
    let env = [("RELAUNCH_CONTROL_DIR", s(&ctl_dir))];
    let pid_file = dir.join("b.pid");
    let flags = ["--listen", "127.0.0.1:0", "--start-secs", "0.2"];
    let start = |extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(flags);
        args.extend(["--", s(&p.link)]);
        Relaunch::start_with_env(&args, &env)
    };
    // Two services of the same program, neither with --name or --control: both start.
    let a = start(&[]);
    a.wait_running(1);
    let b = start(&["--pid-file", s(&pid_file)]);
    b.wait_running(1);
    assert!(
        b.stderr().contains("this one is named \"server-2\""),
        "the fallback name is logged: {}",
        b.stderr()
    );
    let a_sock = ctl_dir.join("server.sock");
    let b_sock = ctl_dir.join("server-2.sock");

    // Without a target, the client lists them (name, pid, socket) and exits 2.
    let out = client_in(&ctl_dir, &["status"]);
    assert_eq!(out.code, 2, "{out:?}");
    for (name, pid, sock) in [
        ("server ", a.pid(), &a_sock),
        ("server-2 ", b.pid(), &b_sock),
    ] {
        assert!(
            out.stderr.lines().any(|l| l.starts_with(name)
                && l.contains(&format!(" {pid} "))
                && l.ends_with(s(sock))),
            "{name}{pid} {}: {out:?}",
            sock.display()
        );
    }
    // By --name, by --pid-file (its socket, wherever the name put it) and by --control.
    for args in [
        &["status", "--json", "--name", "server-2"][..],
        &["status", "--json", "--pid-file", s(&pid_file)][..],
        &["status", "--json", "--control", s(&b_sock)][..],
    ] {
        let out = client_in(&ctl_dir, args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        let v = out.json();
        assert_eq!(v["name"], "server-2", "{args:?}: {v}");
        assert_eq!(v["pid"], b.pid(), "{args:?}: {v}");
    }
    let out = client_in(&ctl_dir, &["status", "--json", "--name", "server"]);
    assert_eq!(out.json()["pid"], a.pid(), "{out:?}");

    // An explicit --name or --control that is taken stays an error.
    for extra in [&["--name", "server-2"][..], &["--control", s(&a_sock)][..]] {
        let mut c = start(extra);
        let status = c.wait_exit(T);
        assert_eq!(status.code(), Some(1), "{extra:?}: {}", c.stderr());
        assert!(c.stderr().contains("another relaunch"), "{}", c.stderr());
        assert!(c.events("spawned").is_empty());
    }

    // Once one is gone, the other is the only one: found without a target.
    drop(a);
    let out = client_in(&ctl_dir, &["status", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["name"], "server-2");
}

/// Raises this process's soft fd limit to its hard limit (filling a backlog takes thousands).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

#[test]
fn a_stopped_master_with_a_full_backlog_hangs_neither_a_second_start_nor_a_client() {
    raise_fd_limit();
    let p = Program::new("stopped");
    let ctl = p.ctl();
    let a = p.start(&["--start-secs", "0.2"]);
    a.wait_running(1);
    a.signal(libc::SIGSTOP);
    // Fill its backlog: a non-blocking connect says EAGAIN once it is full.
    let addr = socket2::SockAddr::unix(&ctl).unwrap();
    let mut held = Vec::new();
    loop {
        let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_nonblocking(true).unwrap();
        match sock.connect(&addr) {
            Ok(()) => held.push(sock),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("connect #{}: {e}", held.len()),
        }
        assert!(held.len() < 100_000, "the backlog never filled");
    }

    // A second relaunch on the same path sees a live master, promptly.
    let mut b = Relaunch::start(&[
        "--control",
        s(&ctl),
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&p.link),
    ]);
    let status = b
        .wait_exit_within(T)
        .unwrap_or_else(|| b.fail("hung on the stopped master's control socket"));
    assert_eq!(status.code(), Some(1), "{}", b.stderr());
    assert!(b.stderr().contains("another relaunch"), "{}", b.stderr());
    assert!(ctl.exists(), "the live master's socket is left alone");
    // The client says what is wrong instead of hanging (`finish` fails it after T).
    let out = client(&["status", "--control", s(&ctl)]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("does not accept connections"),
        "{out:?}"
    );

    a.signal(libc::SIGCONT);
    drop(held);
    // Resumed, the master first accepts the held connections from its backlog and frees their
    // slots as it reads their ends: a client that arrives meanwhile may find every slot taken
    // once. It must get an answer within the deadline.
    let mut out = client(&["status", "--control", s(&ctl)]);
    let deadline = Instant::now() + T;
    while out.code != 0 && out.stderr.contains("too many control connections") {
        assert!(Instant::now() < deadline, "slots never freed: {out:?}");
        thread::sleep(POLL_INTERVAL);
        out = client(&["status", "--control", s(&ctl)]);
    }
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn clients_that_keep_asking_cannot_lock_others_out() {
    let p = Program::new("slots");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.2"]);
    // A status request here could still hold one of the 64 slots the hogs below fill (the
    // master closes it when it sees its end), so this one wait stays on the log.
    r.wait_for_event("running", &[("generation", "1")], T);
    let ask = |c: &mut std::io::BufReader<UnixStream>| -> String {
        c.get_mut()
            .write_all(b"{\"v\":1,\"cmd\":\"status\"}\n")
            .expect("send status");
        let mut line = String::new();
        std::io::BufRead::read_line(c, &mut line).expect("read the answer");
        line
    };
    // 64 clients (every slot) that keep asking: each answer resets their deadline.
    let mut hogs: Vec<std::io::BufReader<UnixStream>> = Vec::new();
    for _ in 0..64 {
        let c = UnixStream::connect(&ctl).expect("connect");
        c.set_read_timeout(Some(T)).unwrap();
        hogs.push(std::io::BufReader::new(c));
    }
    for _ in 0..2 {
        for (i, c) in hogs.iter_mut().enumerate() {
            let line = ask(c);
            assert!(line.contains("\"ok\":true"), "hog {i}: {line:?}");
        }
    }
    // A newcomer is served all the same.
    let out = client(&["status", "--control", s(&ctl)]);
    assert_eq!(out.code, 0, "{out:?}");
    // The oldest of them made room, told why.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut hogs[0], &mut line).expect("read");
    assert!(line.contains("to make room for a new one"), "{line:?}");
    line.clear();
    let n = std::io::BufRead::read_line(&mut hogs[0], &mut line).expect("read");
    assert_eq!(n, 0, "then closed: {line:?}");
    // The others are still served.
    assert!(ask(&mut hogs[1]).contains("\"ok\":true"));
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks as f64 / hz as f64
}

/// Sets the soft fd limit of the running process `pid`, keeping its hard limit.
fn set_fd_limit(pid: i32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a null new limit only reads into `old`, a valid rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit; the old value is not asked for.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn accept_at_the_fd_limit_backs_off_instead_of_spinning() {
    let p = Program::new("emfile");
    let ctl = p.ctl();
    let r = p.start(&["--start-secs", "0.2", "--metrics", "127.0.0.1:0"]);
    let line = r.wait_for_event("metrics", &[], T);
    let metrics: SocketAddr = field(&line, "addr")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| r.fail(&format!("no addr= in {line}")));
    // The fd count below must not include a status request's connection the master has not
    // closed yet, so this one wait stays on the log.
    r.wait_for_event("running", &[("generation", "1")], T);
    let pid = r.pid();

    // Room for a few more fds only; then more clients than that, on both listeners.
    let open = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    set_fd_limit(pid, open + 4);
    let mut held_unix: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&ctl).expect("connect (queued in the backlog)"))
        .collect();
    r.wait_for_log("control socket: accept failed", T);
    let mut held_tcp: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(metrics).expect("connect to metrics"))
        .collect();

    // Over a window with both listeners starved, the master stays nearly idle.
    let window = Duration::from_secs(2);
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    poll_until(window * 2, || t0.elapsed() >= window);
    let (cpu, wall) = (cpu_seconds(pid) - cpu0, t0.elapsed().as_secs_f64());
    assert!(
        cpu < 0.1 * wall,
        "the master used {cpu:.2} s of CPU in {wall:.2} s at the fd limit"
    );
    // One warning per listener per episode (an episode ends when an accept succeeds again,
    // e.g. after a held connection timed out), not one per failed accept.
    let lines = r.lines();
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    let (failed, resumed) = (count("accept failed"), count("accepting connections again"));
    assert!(
        failed <= 2 + resumed,
        "{failed} accept warnings for {resumed} ended episodes:\n{}",
        r.stderr()
    );
    assert!(r
        .stderr()
        .contains("control socket: accept failed for lack of file descriptors; pausing"));
    r.wait_for_log(
        "metrics: accept failed for lack of file descriptors; pausing",
        T,
    );

    // Fds freed: both serve again, and the end of the episode is logged with its counts.
    held_unix.clear();
    held_tcp.clear();
    let out = client(&["status", "--control", s(&ctl)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(scrape(metrics, "/metrics").starts_with("HTTP/1.0 200 OK"));
    let line = r.wait_for_log("control socket: accepting connections again after", T);
    assert!(line.contains("failed accepts over"), "{line}");
    r.wait_for_log("metrics: accepting connections again after", T);
}
