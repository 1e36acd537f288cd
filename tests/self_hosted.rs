//! Self-hosting (`relaunch::host`): `examples/self_hosted` is its own master. A new build
//! renamed over its binary is picked up on SIGHUP with zero failed requests and the master's
//! pid unchanged; the CLI master's behaviour (crash restarts, the control socket) applies; and
//! background mode returns only once the first generation serves.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const SIGHUP: i32 = 1;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// A copy of the example in a temp dir of its own, the way a deployment holds its binary.
fn install(dir: &TempDir) -> PathBuf {
    let app = dir.join("app");
    fs::copy(example_bin("self_hosted"), &app).expect("copy the example");
    app
}

/// Puts a different build at `app`, by rename: a copy with some bytes appended (an ELF file
/// runs the same with trailing bytes), so it is a new file with other contents.
fn replace_by_rename(app: &Path) -> u64 {
    let new = app.with_extension("new");
    fs::copy(app, &new).expect("copy the build");
    let mut file = fs::OpenOptions::new().append(true).open(&new).unwrap();
    file.write_all(b"\0another build\0").unwrap();
    drop(file);
    let inode = fs::metadata(&new).unwrap().ino();
    fs::rename(&new, app).expect("rename the new build over the old");
    inode
}

/// The inode of the file process `pid` runs.
fn exe_inode(pid: i32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| m.ino())
}

/// The parent pid of `pid`.
fn ppid(pid: i32) -> Option<i32> {
    proc_stat(pid).map(|st| st.ppid)
}

fn start(dir: &TempDir, app: &Path) -> Relaunch {
    let mut cmd = Relaunch::command_for(app, &["--listen", "127.0.0.1:0"]);
    cmd.current_dir(dir.path())
        .env("RELAUNCH_CONTROL_DIR", dir.path());
    Relaunch::spawn(cmd)
}

#[test]
fn sighup_runs_the_new_build_renamed_over_the_binary_under_load_with_no_failed_request() {
    let dir = TempDir::new("self-hosted-reload");
    let app = install(&dir);
    let old_inode = fs::metadata(&app).unwrap().ino();
    let master = start(&dir, &app);
    let addr = master.addr("http");
    let first = wait_for_http(&master, addr, TIMEOUT);
    assert_ne!(first, master.pid(), "a child serves, not the master");
    assert_eq!(ppid(first), Some(master.pid()));
    assert_eq!(exe_inode(first), Some(old_inode));

    let load = Load::start(addr, 8);
    master.wait_until(TIMEOUT, "the load reaches the first generation", || {
        load.seen(first)
    });
    let new_inode = replace_by_rename(&app);
    assert_ne!(new_inode, old_inode);
    master.signal(SIGHUP);
    master.wait_for_event("reload complete", &[("generation", "2")], TIMEOUT);
    let second = master.generation_pid(2);
    assert_ne!(second, first);
    master.wait_until(TIMEOUT, "the new generation answers the load", || {
        load.seen(second)
    });
    master.wait_until(TIMEOUT, "the old generation exits", || !proc_alive(first));
    let stats = load.finish();
    assert!(
        stats.failures.is_empty(),
        "failed requests: {:?} {:?}",
        stats.failures,
        stats.samples
    );
    assert!(stats.ok > 0);
    // The new build runs (not the master's own old inode), under the same master pid.
    assert_eq!(exe_inode(second), Some(new_inode));
    assert_eq!(ppid(second), Some(master.pid()));
    assert!(proc_alive(master.pid()));
    assert_eq!(exe_inode(master.pid()), Some(old_inode));
    let (code, body) = http_get(addr, TIMEOUT).expect("GET after the reload");
    assert_eq!((code, body_pid(&body)), (200, Some(second)));
}

#[test]
fn the_cli_master_applies_a_crash_is_restarted_and_the_control_socket_reloads_and_stops() {
    let dir = TempDir::new("self-hosted-master");
    let app = install(&dir);
    let mut master = start(&dir, &app);
    let addr = master.addr("http");
    let first = wait_for_http(&master, addr, TIMEOUT);
    // A crash: the master restarts the server, the socket stays open.
    assert!(kill(first, SIGKILL));
    master.wait_for_event("spawned", &[("generation", "2")], TIMEOUT);
    let second = master.generation_pid(2);
    master.wait_until(
        TIMEOUT,
        "the restarted server answers",
        || matches!(http_get(addr, TIMEOUT), Ok((200, body)) if body_pid(&body) == Some(second)),
    );
    // `relaunch reload --wait` through the master's control socket, by name.
    let reload = Command::new(relaunch_bin())
        .args(["reload", "--wait", "self_hosted"])
        .env("RELAUNCH_CONTROL_DIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run relaunch reload");
    assert_eq!(
        reload.status.code(),
        Some(0),
        "relaunch reload: {}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let third = master.generation_pid(3);
    let (code, body) = http_get(addr, TIMEOUT).expect("GET after reload");
    assert_eq!((code, body_pid(&body)), (200, Some(third)));
    // SIGTERM stops the server gracefully; the master exits with its status, 0.
    master.signal(SIGTERM);
    let status = master.wait_exit(TIMEOUT);
    assert_exit_code(&master, status, 0);
    assert!(!proc_alive(third));
}

/// Kills a backgrounded master and its children when the test ends.
struct Daemon(i32);

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_tree(self.0);
        // This test process is a subreaper: the detached master is its child now. Reap it.
        poll_until(TIMEOUT, || {
            // SAFETY: waitpid on one pid, with no status pointer, only reaps it.
            let rc = unsafe { libc::waitpid(self.0, std::ptr::null_mut(), libc::WNOHANG) };
            rc != 0
        });
    }
}

#[test]
fn background_mode_returns_once_the_first_generation_serves_and_keeps_the_pid_file() {
    let dir = TempDir::new("self-hosted-background");
    let app = install(&dir);
    let (pid_file, log) = (dir.join("app.pid"), dir.join("app.log"));
    let mut cmd = Relaunch::command_for(
        &app,
        &[
            "--listen",
            "127.0.0.1:0",
            "--background",
            s(&pid_file),
            "--log",
            s(&log),
        ],
    );
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path())
        .current_dir(dir.path());
    let mut shell = Relaunch::spawn(cmd);
    let status = shell.wait_exit(TIMEOUT);
    assert_exit_code(&shell, status, 0);
    // Returned only now: the pid file names the master, which runs, and the log says where it
    // listens and that generation 1 is up.
    let daemon: i32 = fs::read_to_string(&pid_file)
        .expect("the pid file exists when the command returns")
        .trim()
        .parse()
        .expect("a pid");
    let _guard = Daemon(daemon);
    assert_ne!(daemon, shell.pid(), "the master is a detached process");
    assert!(proc_alive(daemon));
    let text = fs::read_to_string(&log).expect("the log file");
    assert!(
        text.lines().any(|l| is_event(l, "running")),
        "the first generation was up before the command returned:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| is_event(l, "listening"))
        .unwrap_or_else(|| panic!("no listening line in\n{text}"));
    let addr = field(line, "addr").unwrap().parse().unwrap();
    let (code, body) = http_get(addr, TIMEOUT).expect("GET the background server");
    let child = body_pid(&body).expect("pid=");
    assert_eq!(code, 200);
    assert_eq!(ppid(child), Some(daemon));
    // SIGTERM stops it; it removes its pid file.
    assert!(kill(daemon, SIGTERM));
    wait_until(TIMEOUT, "the background master exits", || {
        !proc_alive(daemon)
    });
    assert!(!pid_file.exists(), "the pid file is removed");
}

#[test]
fn background_mode_reports_a_bad_address_without_detaching() {
    let dir = TempDir::new("self-hosted-background-bad");
    let app = install(&dir);
    let pid_file = dir.join("app.pid");
    let mut cmd = Relaunch::command_for(
        &app,
        &["--listen", "nowhere:port", "--background", s(&pid_file)],
    );
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    let mut shell = Relaunch::spawn(cmd);
    let status = shell.wait_exit(TIMEOUT);
    assert_exit_code(&shell, status, 2);
    assert!(
        shell.stderr().contains("nowhere:port"),
        "{}",
        shell.stderr()
    );
    assert!(!pid_file.exists());
}
