//! Failure reports that say why (`--output capture`: the failed generation's last lines in
//! `reload --wait`, `status`, `status --json` and the log) and what relaunch does when the
//! program exits and is not restarted (`--on-exit exit|wait`), end to end: the real binary,
//! real children, real signals, deadlines instead of sleeps.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: Duration = TIMEOUT;

/// What a client run printed, and its exit code.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `relaunch ARGS` (a client subcommand) to completion, within `T`.
#[track_caller]
fn client(args: &[&str]) -> Out {
    let mut child = Command::new(relaunch_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RELAUNCH_LOG")
        .spawn()
        .expect("start the client");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client {args:?} did not finish within {T:?}");
        }
        thread::sleep(POLL_INTERVAL);
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
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
    eprintln!(
        "[client {args:?}] exit {:?}\n{stdout}{stderr}",
        status.code()
    );
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// A server script that the test rewrites between generations, and the control socket.
struct Server {
    dir: TempDir,
    script: PathBuf,
    ctl: PathBuf,
}

impl Server {
    fn new(tag: &str, body: &str) -> Server {
        let dir = TempDir::new(tag);
        let script = dir.path().join("server.sh");
        let ctl = dir.path().join("ctl.sock");
        let server = Server { dir, script, ctl };
        server.set(body);
        server
    }

    /// What the next generation runs.
    fn set(&self, body: &str) {
        let tmp = self.dir.path().join("server.sh.new");
        fs::write(&tmp, body).unwrap();
        fs::rename(&tmp, &self.script).unwrap();
    }

    fn start(&self, flags: &[&str]) -> Relaunch {
        let mut args = vec!["--control", s(&self.ctl), "--listen", "http=127.0.0.1:0"];
        args.extend_from_slice(flags);
        args.extend(["--", "sh", s(&self.script)]);
        Relaunch::start(&args)
    }
}

/// The failing version: 30 lines of noise on stderr, one on stdout, one line of 4,000 bytes,
/// five more, then the reason, on stderr without a newline, and exit code 3.
const FAILING: &str = r#"
i=1
while [ $i -le 30 ]; do echo "noise $i" >&2; i=$((i+1)); done
echo "stdout says hi"
printf '%04000d\n' 0 >&2
for i in 1 2 3 4 5; do echo "after $i" >&2; done
printf 'database is down' >&2
exit 3
"#;

/// The tail as (stream, line) pairs.
fn tail_of(v: &Value) -> Vec<(String, String)> {
    v["last_reload"]["output_tail"]
        .as_array()
        .unwrap_or_else(|| panic!("no last_reload.output_tail: {v}"))
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_owned(),
                l["line"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_failed_reload_reports_the_last_lines_the_new_generation_wrote() {
    let server = Server::new("report", "exec sleep 600\n");
    let r = server.start(&["--start-secs", "0.3"]);
    r.wait_running(1);

    server.set(FAILING);
    let failed = client(&["reload", "--wait", "--control", s(&server.ctl)]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("exit code 3"),
        "the reason stays: {failed:?}"
    );
    assert!(
        failed.stderr.contains("stderr| database is down\n"),
        "reload --wait shows the last line, even one without a newline: {failed:?}"
    );
    assert!(
        !failed.stderr.contains("noise 1\n"),
        "but not the first lines: {failed:?}"
    );

    // status, as text and as JSON.
    let text = client(&["status", "--control", s(&server.ctl)]);
    assert!(text.stdout.contains("database is down"), "{text:?}");
    let json = client(&["status", "--json", "--control", s(&server.ctl)]);
    let v: Value = serde_json::from_str(&json.stdout).expect("status --json");
    let tail = tail_of(&v);
    // Lines keep their order within a stream (stdout and stderr are two pipes).
    let stderr: Vec<&str> = tail
        .iter()
        .filter(|(stream, _)| stream == "stderr")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stderr.last(), Some(&"database is down"), "{v}");
    assert_eq!(
        stderr[stderr.len() - 6..stderr.len() - 1],
        ["after 1", "after 2", "after 3", "after 4", "after 5"],
        "{v}"
    );
    // Bounded: at most 20 lines and 4 KiB; the oldest lines went first.
    assert!(tail.len() <= 20, "{} lines: {tail:?}", tail.len());
    let bytes: usize = tail.iter().map(|(_, l)| l.len()).sum();
    assert!(bytes <= 4096, "{bytes} bytes");
    assert!(
        tail.iter().any(|(_, l)| l == "after 5"),
        "the newest lines stay: {tail:?}"
    );
    assert!(
        !tail.iter().any(|(_, l)| l == "noise 1" || l == "noise 20"),
        "the oldest lines went: {tail:?}"
    );

    // The log: one line with the reason and the output (its wording is what is checked).
    let line = r.wait_for_event("last output of the failed generation", &[], T);
    assert!(
        line.contains("database is down") && line.contains("exit code 3"),
        "{line}"
    );

    // The output still reaches relaunch's own stderr and stdout, whole lines, in order.
    r.wait_until(
        T,
        "the child's lines on relaunch's stdout and stderr",
        || {
            r.stdout().lines().any(|l| l == "stdout says hi")
                && r.stderr().lines().any(|l| l == "database is down")
        },
    );
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("noise ")).collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("noise {i}")).collect();
    assert_eq!(lines, expected, "every line, whole and in order");

    // A version that says why on stdout.
    server.set("echo 'listen: port taken'\nexit 4\n");
    let failed = client(&["reload", "--wait", "--control", s(&server.ctl)]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("stdout| listen: port taken\n"),
        "{failed:?}"
    );

    // Generation 1 still serves.
    let v: Value =
        serde_json::from_str(&client(&["status", "--json", "--control", s(&server.ctl)]).stdout)
            .unwrap();
    assert_eq!(v["state"], "RUNNING", "{v}");
    assert_eq!(v["generations"][0]["generation"], 1, "{v}");
}

#[test]
fn output_inherit_leaves_the_streams_to_the_child_and_reports_no_output() {
    let server = Server::new("inherit", "exec sleep 600\n");
    let r = server.start(&["--start-secs", "0.3", "--output", "inherit"]);
    r.wait_running(1);
    let child = r.generation_pid(1);
    let link = |pid: i32, fd: i32| fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    for fd in [1, 2] {
        assert_eq!(
            link(child, fd),
            link(r.pid(), fd),
            "fd {fd} is relaunch's own"
        );
    }
    server.set(FAILING);
    let failed = client(&["reload", "--wait", "--control", s(&server.ctl)]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("exit code 3"), "{failed:?}");
    assert!(!failed.stderr.contains("stderr|"), "{failed:?}");
    // The child wrote to relaunch's stderr itself.
    r.wait_until(T, "the child's line on relaunch's stderr", || {
        r.stderr().contains("database is down")
    });
}

#[test]
fn output_capture_gives_the_child_pipes_of_its_own() {
    let server = Server::new("capture", "exec sleep 600\n");
    let r = server.start(&["--start-secs", "0.3"]);
    r.wait_running(1);
    let child = r.generation_pid(1);
    for fd in [1, 2] {
        let target = fs::read_link(format!("/proc/{child}/fd/{fd}")).unwrap();
        let own = fs::read_link(format!("/proc/{}/fd/{fd}", r.pid())).unwrap();
        assert!(
            target.to_string_lossy().starts_with("pipe:") && target != own,
            "fd {fd}: {} (relaunch's: {})",
            target.display(),
            own.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// --on-exit

/// A program that exits with code 3 when relaunch forwards it SIGUSR2.
const EXIT_3_ON_USR2: &str = "trap 'exit 3' USR2\nwhile :; do sleep 0.05; done\n";

fn running_pid(r: &Relaunch, generation: u64) -> i32 {
    current_pid(&r.wait_running(generation)).expect("a current pid")
}

#[test]
fn on_exit_exit_ends_relaunch_with_the_programs_exit_code() {
    let server = Server::new("on-exit-3", EXIT_3_ON_USR2);
    let mut r = server.start(&[
        "--start-secs",
        "0.2",
        "--restart",
        "never",
        "--on-exit",
        "exit",
    ]);
    running_pid(&r, 1);
    r.signal(libc::SIGUSR2);
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 3);
    assert!(
        !Path::new(&server.ctl).exists(),
        "the control socket is gone"
    );
}

#[test]
fn on_exit_exit_gives_128_plus_the_signal_that_killed_the_program() {
    let server = Server::new("on-exit-143", "exec sleep 600\n");
    let mut r = server.start(&[
        "--start-secs",
        "0.2",
        "--restart",
        "never",
        "--on-exit",
        "exit",
    ]);
    let child = running_pid(&r, 1);
    assert!(kill(child, libc::SIGTERM));
    let status = r.wait_exit(T);
    assert_exit_code(&r, status, 143);
}

#[test]
fn on_exit_wait_keeps_the_sockets_and_a_hup_starts_a_new_generation() {
    let server = Server::new("on-exit-wait", EXIT_3_ON_USR2);
    let r = server.start(&[
        "--start-secs",
        "0.2",
        "--restart",
        "never",
        "--on-exit",
        "wait",
    ]);
    let addr = r.addr("http");
    running_pid(&r, 1);
    r.signal(libc::SIGUSR2);
    r.wait_state("EXITED");
    // The socket still accepts (the kernel queues the connection for the next generation).
    TcpStream::connect_timeout(&addr, T).expect("the socket accepts while EXITED");
    r.signal(libc::SIGHUP);
    let g2 = running_pid(&r, 2);
    assert!(proc_alive(g2));
    assert!(proc_alive(r.pid()), "relaunch still runs");
}
