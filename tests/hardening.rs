//! Files and fds relaunch creates or takes over, under hostile or unusual conditions: the
//! notify socket for another user behind a private runtime dir, leftovers of killed masters,
//! `--daemon --listen fd:N` naming an fd relaunch did not inherit, the children's `PATH`, and
//! two masters binding the same unix socket path at once.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const T: Duration = TIMEOUT;

/// A child that sends `READY=1` from its own pid and then serves nothing for a long while.
/// /usr/bin/python3, not a copy under the test's directories: it must run as `nobody` too.
const READY_SCRIPT: &str = "import os, socket, time\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
time.sleep(600)\n";

fn python() -> Option<&'static str> {
    let p = "/usr/bin/python3";
    fs::metadata(p).is_ok().then_some(p)
}

fn private_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// `NOTIFY_SOCKET` in the environment of process `pid`.
fn notify_socket_of(pid: i32) -> PathBuf {
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"NOTIFY_SOCKET="))
        .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()))
        .expect("the child has NOTIFY_SOCKET")
}

#[test]
fn notify_reaches_a_user_child_when_the_runtime_dir_is_private_to_root() {
    let Some(python) = python() else {
        eprintln!("NOTE: no /usr/bin/python3");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("NOTE: needs root to run children as another user");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("NOTE: no user nobody");
        return;
    };
    // Like /run/user/0: 0700 and root's. TMPDIR too.
    let xdg = private_dir("xdg-private");
    let tmp = private_dir("tmp-private");
    let r = Relaunch::start_with_env(
        &[
            "--user",
            "nobody",
            "--ready",
            "notify",
            "--start-retries",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--",
            python,
            "-c",
            READY_SCRIPT,
        ],
        &[
            ("XDG_RUNTIME_DIR", s(xdg.path())),
            ("TMPDIR", s(tmp.path())),
        ],
    );
    r.wait_running(1);
    let socket = notify_socket_of(r.generation_pid(1));
    let dir = socket.parent().unwrap();
    assert!(
        !dir.starts_with(xdg.path()) && !dir.starts_with(tmp.path()),
        "{}",
        socket.display()
    );
    // Reachable by the children's user and nobody else: the directory stays root's, open to
    // the group only for passing through; the socket is the user's, 0600.
    let d = fs::symlink_metadata(dir).unwrap();
    assert_eq!(
        (d.uid(), d.gid(), d.mode() & 0o7777),
        (0, nobody.gid.as_raw(), 0o710)
    );
    let f = fs::symlink_metadata(&socket).unwrap();
    assert_eq!(
        (f.uid(), f.gid(), f.mode() & 0o7777),
        (nobody.uid.as_raw(), nobody.gid.as_raw(), 0o600)
    );
}

#[test]
fn notify_dirs_of_dead_masters_are_removed_and_nothing_else() {
    let Some(python) = python() else {
        eprintln!("NOTE: no /usr/bin/python3");
        return;
    };
    let xdg = private_dir("xdg-leftovers");
    let dead = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let alive = std::process::id();
    let gone = xdg.join(&format!("relaunch.{dead}.0123abcd"));
    fs::create_dir(&gone).unwrap();
    fs::write(gone.join("notify"), "").unwrap();
    // A live master's, a link, one with something else in it, one owned by someone else, and
    // names that do not fit the pattern: all left alone.
    let live = xdg.join(&format!("relaunch.{alive}.0123abcd"));
    fs::create_dir(&live).unwrap();
    let target = TempDir::new("leftover-target");
    fs::write(target.join("notify"), "keep").unwrap();
    let link = xdg.join(&format!("relaunch.{dead}.feed"));
    std::os::unix::fs::symlink(target.path(), &link).unwrap();
    let full = xdg.join(&format!("relaunch.{dead}.beef"));
    fs::create_dir(&full).unwrap();
    fs::write(full.join("data"), "keep").unwrap();
    let foreign = xdg.join(&format!("relaunch.{dead}.f00d"));
    fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let odd = xdg.join(&format!("relaunch.{dead}.xyz"));
    fs::create_dir(&odd).unwrap();

    let r = Relaunch::start_with_env(
        &[
            "--ready",
            "notify",
            "--listen",
            "127.0.0.1:0",
            "--",
            python,
            "-c",
            READY_SCRIPT,
        ],
        &[("XDG_RUNTIME_DIR", s(xdg.path()))],
    );
    r.wait_running(1);
    assert!(!gone.exists(), "the dead master's directory is removed");
    for kept in [&live, &full, &foreign, &odd] {
        assert!(kept.is_dir(), "{} is left alone", kept.display());
    }
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(target.join("notify")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(full.join("data")).unwrap(), "keep");
    // Its own is there, under the same base.
    let own = notify_socket_of(r.generation_pid(1));
    assert!(own.starts_with(xdg.path()), "{}", own.display());
}

#[test]
fn daemon_listen_fd_that_was_not_inherited_is_a_usage_error() {
    // fd 3 and 4 are what --daemon's startup pipe would get: not inherited, so not sockets to
    // adopt. Nothing is open at 3 or 4 in relaunch (the test's fds are close-on-exec).
    for n in ["3", "4"] {
        let dir = TempDir::new("daemon-fd");
        let pid_file = dir.join("relaunch.pid");
        let mut cmd = Relaunch::command(&[
            "--daemon",
            "--pid-file",
            s(&pid_file),
            "--stderr-log",
            s(&dir.join("err.log")),
            "--listen",
            &format!("fd:{n}"),
            "--",
            "sleep",
            "600",
        ]);
        cmd.env("XDG_RUNTIME_DIR", dir.path());
        let mut r = Relaunch::spawn(cmd);
        let status = r.wait_exit(T);
        let stderr = r.stderr();
        // Had a daemon started after all, it must not outlive the test.
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            kill(pid, libc::SIGKILL);
        }
        assert_eq!(status.code(), Some(2), "fd:{n}: {stderr}");
        assert!(
            stderr.contains(&format!("fd {n} is not open (relaunch did not inherit it")),
            "fd:{n}: {stderr}"
        );
    }
}

#[test]
fn the_program_is_looked_up_in_the_childs_path() {
    let dir = TempDir::new("child-path");
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let prog = bin.join("relaunch-test-only-in-child-path");
    fs::write(&prog, "#!/bin/sh\nexec sleep 600\n").unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    // --env PATH=…
    let r = Relaunch::start(&[
        "--env",
        &format!("PATH={path}"),
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        "relaunch-test-only-in-child-path",
    ]);
    r.wait_running(1);
    drop(r);
    // --env-file, with --clear-env.
    let env_file = dir.join("app.env");
    fs::write(&env_file, format!("PATH={path}\n")).unwrap();
    let r = Relaunch::start(&[
        "--env-file",
        s(&env_file),
        "--clear-env",
        "--start-secs",
        "0.1",
        "--listen",
        "127.0.0.1:0",
        "--",
        "relaunch-test-only-in-child-path",
    ]);
    r.wait_running(1);
    drop(r);
    // Not found: exit 127, naming the PATH searched.
    let mut r = Relaunch::start(&[
        "--env",
        "PATH=/nonexistent-relaunch-a:/nonexistent-relaunch-b",
        "--listen",
        "127.0.0.1:0",
        "--",
        "sh",
    ]);
    let status = r.wait_exit(T);
    let stderr = r.stderr();
    assert_eq!(status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains("PATH=/nonexistent-relaunch-a:/nonexistent-relaunch-b"),
        "{stderr}"
    );
}

#[test]
fn a_socket_bound_but_not_yet_listening_under_the_directory_lock_is_not_taken_for_stale() {
    // Stands for another relaunch between its bind and its listen: it holds the directory's
    // lock, and a connect to its file is refused. relaunch must wait for the lock and then find
    // the socket live, instead of removing it and binding its own.
    let dir = TempDir::new("dir-lock");
    let path = dir.join("app.sock");
    let lock = nix::fcntl::Flock::lock(
        fs::File::open(dir.path()).unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .unwrap();
    let other = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    let inode = fs::symlink_metadata(&path).unwrap().ino();
    let mut r = Relaunch::start(&[
        "--listen",
        &format!("unix:{}", path.display()),
        "--",
        "sleep",
        "600",
    ]);
    // The old code took the file for stale at once; give it the time to.
    let early = r.wait_exit_within(Duration::from_millis(500));
    assert!(
        early.is_none(),
        "relaunch waits for the lock: {}",
        r.stderr()
    );
    assert_eq!(fs::symlink_metadata(&path).unwrap().ino(), inode);
    other.listen(16).unwrap();
    drop(lock);
    let status = r.wait_exit(T);
    let stderr = r.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another process is listening on {}",
            path.display()
        )),
        "{stderr}"
    );
    assert_eq!(fs::symlink_metadata(&path).unwrap().ino(), inode);
}

#[test]
fn a_huge_listen_fds_is_refused_before_anything_is_allocated_for_it() {
    // Socket activation aimed at relaunch itself (LISTEN_PID = its own pid, which `exec` keeps)
    // with a count no process can hold. Before the fix relaunch built one name per announced
    // socket (about 32 GB here) and aborted; now the count is checked against the open-file
    // limit first and named in the error.
    let mut cmd = Relaunch::command(&[]);
    let bin = relaunch_bin();
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=2000000000 exec \"$0\" -- true")
        .arg(&bin);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd = sh;
    let mut r = Relaunch::spawn(cmd);
    let status = r.wait_exit(T);
    let stderr = r.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("LISTEN_FDS=2000000000 is more sockets than this process can hold"),
        "{stderr}"
    );
}
