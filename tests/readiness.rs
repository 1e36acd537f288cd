//! Readiness, both ways: children saying READY=1 (sd_notify) or writing to a readiness fd, and
//! relaunch telling its own service manager READY/RELOADING/STOPPING/WATCHDOG.
//!
//! The probe example announces readiness when the test sends it SIGUSR2 (`--ready-on-usr2`), so
//! the test decides the moment a generation is ready and can check what happens before and
//! after it.

mod common;

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = TIMEOUT;

/// How long a test watches for something that must *not* happen (an early promotion). Long
/// enough for a buggy timer-based promotion to show (notify mode has no timer at all).
const OBSERVE: Duration = Duration::from_millis(1500);

fn probe_args<'a>(report: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--",
        s_static(probe_bin()),
        "--report",
        report,
        "--ready-on-usr2",
    ];
    args.extend_from_slice(extra);
    args
}

/// Leaks a path into a `&'static str` for argument lists (tests are short-lived processes).
fn s_static(p: std::path::PathBuf) -> &'static str {
    Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
}

fn start(flags: &[&str], report: &Path, probe_extra: &[&str]) -> Relaunch {
    let report = s_static(report.to_owned());
    let mut args = vec!["--listen", "web=127.0.0.1:0"];
    args.extend_from_slice(flags);
    args.extend(probe_args(report, probe_extra));
    Relaunch::start(&args)
}

/// Makes generation `g` ready by sending its probe SIGUSR2, once its report exists.
fn make_ready(r: &Relaunch, report: &Path, generation: u32) -> i32 {
    let pid = r.generation_pid(generation);
    wait_for_report(r, report, pid);
    assert!(
        kill(pid, libc::SIGUSR2),
        "cannot signal generation {generation} ({pid})"
    );
    pid
}

/// `mono_ns=` of the probe's `kind pid=P` line (`ready` or `term`).
fn probe_mark(report: &Path, kind: &str, pid: i32) -> Option<u128> {
    std::fs::read_to_string(report)
        .ok()?
        .lines()
        .filter(|l| l.starts_with(&format!("{kind} ")))
        .find(|l| field_i32(l, "pid") == Some(pid))
        .and_then(|l| field(l, "mono_ns")?.parse().ok())
}

#[test]
fn the_old_generation_serves_until_the_new_one_sends_ready() {
    let dir = TempDir::new("ready-notify");
    let report = dir.join("report");
    let r = start(&["--ready", "notify"], &report, &[]);
    let g1 = make_ready(&r, &report, 1);
    r.wait_running(1);
    let rep1 = wait_for_report(&r, &report, g1);
    let socket = rep1
        .notify_socket
        .clone()
        .expect("NOTIFY_SOCKET in notify mode");
    let dir = Path::new(&socket).parent().unwrap().to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "the notify socket lives in a private directory: {socket}"
    );

    r.signal(libc::SIGHUP);
    let g2 = r.generation_pid(2);
    wait_for_report(&r, &report, g2);
    // Not ready yet: whatever time passes, the old one keeps running and no switch happens.
    let until = Instant::now() + OBSERVE;
    while Instant::now() < until {
        assert!(
            proc_alive(g1),
            "the old generation was stopped before the new one was ready"
        );
        assert!(
            r.events("reload complete").is_empty(),
            "reload completed without READY=1:\n{}",
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    assert!(kill(g2, libc::SIGUSR2));
    assert_eq!(record_pid(&r.wait_reload_ok(2)), g2);
    // The old pid is named in the log line only.
    r.wait_for_event(
        "reload complete",
        &[("generation", "2"), ("old_pid", &g1.to_string())],
        T,
    );
    r.wait_until(T, "the old generation to exit", || !proc_exists(g1));
    // The old one got its stop signal only after the new one said READY=1.
    let ready = probe_mark(&report, "ready", g2).expect("generation 2 recorded its READY");
    let term = probe_mark(&report, "term", g1).expect("generation 1 recorded its SIGTERM");
    assert!(
        term >= ready,
        "old stopped at {term} ns, before READY at {ready} ns"
    );
    assert_eq!(r.live_children(), vec![g2]);
    let mut r = r;
    r.signal(libc::SIGTERM);
    r.wait_exit(T);
    assert!(
        !dir.exists(),
        "the notify socket's directory is removed on exit: {}",
        dir.display()
    );
}

#[test]
fn a_generation_that_never_gets_ready_is_stopped_and_the_old_one_stays() {
    let dir = TempDir::new("ready-timeout");
    let report = dir.join("report");
    let r = start(
        &[
            "--ready",
            "notify",
            "--ready-timeout",
            "1s",
            "--stop-wait-secs",
            "1",
        ],
        &report,
        &["--notify-status", "warming caches"],
    );
    let g1 = make_ready(&r, &report, 1);
    r.wait_running(1);
    r.signal(libc::SIGHUP);
    let g2 = r.generation_pid(2);
    let failed = r.wait_reload_failed(2);
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not ready within --ready-timeout 1s")
            && reason.contains("last status: warming caches"),
        "{failed:#}"
    );
    r.wait_until(T, "the unready generation to be gone", || !proc_exists(g2));
    assert!(proc_alive(g1), "the old generation must keep serving");
    assert_eq!(r.live_children(), vec![g1]);
    // The next reload works.
    r.signal(libc::SIGHUP);
    make_ready(&r, &report, 3);
    r.wait_reload_ok(3);
}

#[test]
fn ready_from_a_grandchild_via_systemd_notify_counts() {
    let Some(systemd_notify) = which("systemd-notify") else {
        panic!("systemd-notify is needed (Debian package systemd; .ci/run installs it)");
    };
    let dir = TempDir::new("ready-grandchild");
    let report = dir.join("report");
    let script = format!(
        "{} --ready; exec {} --report {}",
        systemd_notify,
        probe_bin().display(),
        report.display()
    );
    let r = Relaunch::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--ready-timeout",
        "20s",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    // In notify mode generation 1 is up only once a READY=1 counted; here it came from
    // systemd-notify, a child of the shell that relaunch started.
    let v = r.wait_running(1);
    assert!(
        generation(&v, 1).is_some_and(|g| g["ready_at"].is_string()),
        "{v:#}"
    );
}

#[test]
fn notifications_from_other_processes_and_garbage_are_ignored() {
    let dir = TempDir::new("ready-strangers");
    let report = dir.join("report");
    let r = start(&["--ready", "notify"], &report, &[]);
    let g1 = make_ready(&r, &report, 1);
    r.wait_running(1);
    r.signal(libc::SIGHUP);
    let g2 = r.generation_pid(2);
    let rep = wait_for_report(&r, &report, g2);
    let name = rep.notify_socket.expect("NOTIFY_SOCKET in notify mode");
    let addr = SocketAddr::from_pathname(&name).unwrap();
    let stranger = UnixDatagram::unbound().unwrap();
    // This test process is not a descendant of relaunch: its READY=1 must not count.
    stranger.send_to_addr(b"READY=1", &addr).unwrap();
    stranger
        .send_to_addr(&[0xff, 0xfe, 0, 1, 2], &addr)
        .unwrap();
    stranger.send_to_addr(b"READY=1\nSTATUS=", &addr).unwrap();
    stranger.send_to_addr(&vec![b'R'; 60_000], &addr).unwrap();
    stranger.send_to_addr(b"", &addr).unwrap();
    let until = Instant::now() + OBSERVE;
    while Instant::now() < until {
        assert!(
            r.events("reload complete").is_empty(),
            "a stranger's READY=1 promoted generation 2:\n{}",
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(proc_alive(g1) && proc_alive(g2));
    assert!(kill(g2, libc::SIGUSR2));
    r.wait_reload_ok(2);
}

#[test]
fn readiness_fd_protocol() {
    let dir = TempDir::new("ready-fd");
    let report = dir.join("report");
    let r = start(&["--ready", "fd:4"], &report, &["--ready-fd", "4"]);
    let g1 = make_ready(&r, &report, 1);
    r.wait_running(1);
    let rep = wait_for_report(&r, &report, g1);
    assert_eq!(rep.fds, vec![0, 1, 2, 3, 4], "{}", rep.line);
    assert!(rep.cloexec.is_empty(), "{}", rep.line);
    assert_eq!(
        rep.listen_fds.as_deref(),
        Some("1"),
        "the readiness fd is not a socket"
    );
    assert_eq!(rep.notify_socket, None);
    r.signal(libc::SIGHUP);
    make_ready(&r, &report, 2);
    r.wait_reload_ok(2);
    // The old pid is named in the log line only.
    r.wait_for_event(
        "reload complete",
        &[("generation", "2"), ("old_pid", &g1.to_string())],
        T,
    );
}

#[test]
fn readiness_fd_must_not_collide_with_the_sockets() {
    let mut r = Relaunch::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "fd:3",
        "--",
        "/bin/true",
    ]);
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(2), "{}", r.stderr());
    assert!(
        r.stderr().contains("--ready fd:3 collides"),
        "{}",
        r.stderr()
    );
    let mut r = Relaunch::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "fd:x",
        "--",
        "/bin/true",
    ]);
    assert_eq!(r.wait_exit(T).code(), Some(2));
    assert!(
        r.stderr().contains("\"fd:x\" is not a readiness mode"),
        "{}",
        r.stderr()
    );
}

/// A fake service manager: a datagram socket the test reads sd_notify messages from.
struct FakeManager {
    socket: UnixDatagram,
    seen: Vec<String>,
    _dir: TempDir,
    path: String,
}

impl FakeManager {
    fn new() -> FakeManager {
        let dir = TempDir::new("manager");
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        FakeManager {
            socket,
            seen: Vec::new(),
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// Waits for a message containing `key`; returns it. Keeps every message seen.
    #[track_caller]
    fn wait_for(&mut self, r: &Relaunch, key: &str) -> String {
        let deadline = Instant::now() + T;
        let start = self.seen.len();
        loop {
            if let Some(m) = self.seen[start..].iter().find(|m| m.contains(key)) {
                return m.clone();
            }
            if Instant::now() > deadline {
                r.fail(&format!(
                    "no {key:?} from relaunch; messages so far: {:?}",
                    self.seen
                ));
            }
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

fn kv<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn relaunch_tells_its_service_manager_ready_reloading_ready_stopping() {
    let mut manager = FakeManager::new();
    let dir = TempDir::new("upward");
    let report = dir.join("report");
    let mut cmd = Relaunch::command(&[
        "--listen",
        "127.0.0.1:0",
        "--start-secs",
        "0.2",
        "--",
        s_static(probe_bin()),
        "--report",
        s_static(report.clone()),
    ]);
    cmd.env("NOTIFY_SOCKET", &manager.path);
    let mut r = Relaunch::spawn(cmd);

    let ready = manager.wait_for(&r, "READY=1");
    assert_eq!(
        kv(&ready, "MAINPID"),
        Some(r.pid().to_string().as_str()),
        "{ready}"
    );
    assert!(
        kv(&ready, "STATUS").is_some_and(|s| s.contains("generation 1")),
        "{ready}"
    );
    // relaunch's own NOTIFY_SOCKET never reaches the child.
    let g1 = r.generation_pid(1);
    assert_eq!(wait_for_report(&r, &report, g1).notify_socket, None);

    let before = monotonic_usec();
    r.signal(libc::SIGHUP);
    let reloading = manager.wait_for(&r, "RELOADING=1");
    let stamp: u64 = kv(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| r.fail(&format!("no MONOTONIC_USEC in {reloading:?}")));
    assert!(
        stamp >= before && stamp <= monotonic_usec(),
        "{stamp} not in [{before}, now]"
    );
    let ready2 = manager.wait_for(&r, "READY=1");
    assert!(
        kv(&ready2, "STATUS")
            .is_some_and(|s| s.contains("generation 2") && s.contains("succeeded")),
        "{ready2}"
    );
    r.wait_reload_ok(2);

    r.signal(libc::SIGTERM);
    manager.wait_for(&r, "STOPPING=1");
    assert_eq!(r.wait_exit(T).code(), Some(0));
    // In order: READY, RELOADING, READY, STOPPING.
    let order: Vec<&str> = manager
        .seen
        .iter()
        .filter_map(|m| {
            ["RELOADING=1", "READY=1", "STOPPING=1"]
                .into_iter()
                .find(|k| m.lines().any(|l| l == *k))
        })
        .collect();
    assert_eq!(order, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]);
}

/// The `READY=1`, `RELOADING=1` and `STOPPING=1` of the messages seen, in order.
fn manager_order(manager: &FakeManager) -> Vec<&'static str> {
    manager
        .seen
        .iter()
        .filter_map(|m| {
            ["RELOADING=1", "READY=1", "STOPPING=1"]
                .into_iter()
                .find(|k| m.lines().any(|l| l == *k))
        })
        .collect()
}

#[test]
fn a_reload_during_the_first_start_is_announced_after_ready() {
    let mut manager = FakeManager::new();
    let dir = TempDir::new("upward-first");
    let report = dir.join("report");
    let mut cmd = Relaunch::command(&[
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--start-secs",
        "0",
        "--",
        s_static(probe_bin()),
        "--report",
        s_static(report.clone()),
        "--ready-on-usr2",
    ]);
    cmd.env("NOTIFY_SOCKET", &manager.path);
    let mut r = Relaunch::spawn(cmd);
    // Generation 1 is starting (it is ready only when the test says so): a SIGHUP now.
    let g1 = r.generation_pid(1);
    wait_for_report(&r, &report, g1);
    r.signal(libc::SIGHUP);
    r.wait_status("a reload queued behind the first start", |v| {
        v["reload_queued"] == true
    });
    make_ready(&r, &report, 1);
    let ready = manager.wait_for(&r, "READY=1");
    assert!(
        kv(&ready, "STATUS").is_some_and(|s| s.contains("generation 1")),
        "{ready}"
    );
    // The queued reload starts now, and is announced now.
    let reloading = manager.wait_for(&r, "RELOADING=1");
    assert!(kv(&reloading, "MONOTONIC_USEC").is_some(), "{reloading}");
    make_ready(&r, &report, 2);
    let ready2 = manager.wait_for(&r, "READY=1");
    assert!(
        kv(&ready2, "STATUS")
            .is_some_and(|s| s.contains("generation 2") && s.contains("succeeded")),
        "{ready2}"
    );
    r.signal(libc::SIGTERM);
    manager.wait_for(&r, "STOPPING=1");
    r.wait_exit(T);
    assert_eq!(
        manager_order(&manager),
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"],
        "messages: {:?}",
        manager.seen
    );
}

#[test]
fn relaunch_pings_the_watchdog_while_a_child_runs() {
    let mut manager = FakeManager::new();
    let mut cmd = Relaunch::command(&[
        "--listen",
        "127.0.0.1:0",
        "--start-secs",
        "0.1",
        "--",
        s_static(probe_bin()),
    ]);
    cmd.env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", "200000");
    let r = Relaunch::spawn(cmd);
    manager.wait_for(&r, "READY=1");
    manager.wait_for(&r, "WATCHDOG=1");
    manager.wait_for(&r, "WATCHDOG=1");
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn which(program: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then_some(path)
}

#[test]
fn hello_announces_readiness_and_reloads_in_notify_mode() {
    let hello = s_static(hello_bin());
    let r = Relaunch::start(&[
        "--listen",
        "web=127.0.0.1:0",
        "--ready",
        "notify",
        "--",
        hello,
        "--startup-delay-ms",
        "300",
    ]);
    let g1 = r.generation_pid(1);
    // In notify mode generation 1 is up only once its READY=1 counted.
    r.wait_running(1);
    let addr = r.addr("web");
    assert_eq!(wait_for_http(&r, addr, T), g1);
    r.signal(libc::SIGHUP);
    let g2 = r.generation_pid(2);
    r.wait_reload_ok(2);
    r.wait_until(T, "the new pid to answer", || {
        http_get(addr, Duration::from_secs(5))
            .ok()
            .and_then(|(_, body)| body_pid(&body))
            == Some(g2)
    });
}
