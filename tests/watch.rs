//! Reloading when files change (`--watch`, `--watch-path`, `--check-cmd`), with the real
//! binary, real files in temp dirs and the example server.
//!
//! Each test copies the hello example into its own temp dir and runs relaunch on that copy, so
//! it can replace the program the way deploys do. Waits are on the status record (over the
//! control socket) and HTTP answers with deadlines; on log lines only for what status does not
//! show: the watcher's own decisions and its check command. The only sleeps are scenario pauses (a file written in chunks), and the only wait
//! for something *not* to happen is the bounded window after a broken build (no retry loop).
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;

const T: Duration = TIMEOUT;

/// Copies the hello example to `dest` (a regular executable file of our own).
fn install_hello(dest: &Path) {
    fs::copy(hello_bin(), dest).unwrap_or_else(|e| panic!("copy hello to {}: {e}", dest.display()));
}

/// Deploys a new build of hello onto `dest` the way deploy tools do: a full copy under a
/// temporary name in the same directory, then `rename` onto the real name (a new inode).
fn deploy_hello(dest: &Path) {
    let tmp = dest.with_extension("deploying");
    install_hello(&tmp);
    fs::rename(&tmp, dest).unwrap_or_else(|e| panic!("rename onto {}: {e}", dest.display()));
}

/// Deploys `bytes` with `mode` onto `dest` by rename.
fn deploy_bytes(dest: &Path, bytes: &[u8], mode: u32) {
    let tmp = dest.with_extension("deploying");
    fs::write(&tmp, bytes).expect("write the new file");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).expect("chmod");
    fs::rename(&tmp, dest).expect("rename onto the program");
}

/// Atomically points the symlink `link` at `target` (`ln -sfn` done right: a new link renamed
/// over the old one).
fn repoint(link: &Path, target: &str) {
    let tmp = link.with_extension("new-link");
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).expect("create symlink");
    fs::rename(&tmp, link).expect("replace symlink");
}

/// relaunch on `program` with `extra` arguments, a 0.3 s start window and one HTTP socket.
fn start(program: &Path, extra: &[&str]) -> Relaunch {
    let mut args = vec!["--start-secs", "0.3", "--listen", "http=127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend(["--", s(program)]);
    Relaunch::start(&args)
}

/// The pid answering HTTP right now (one request; panics if it fails).
fn serving_pid(r: &Relaunch, addr: SocketAddr) -> i32 {
    match http_get(addr, Duration::from_secs(10)) {
        Ok((200, body)) => body_pid(&body).unwrap_or_else(|| r.fail(&format!("body {body:?}"))),
        Ok((status, body)) => r.fail(&format!("status {status}, body {body:?}")),
        Err(e) => r.fail(&format!("request failed: {e}")),
    }
}

/// `/proc/<pid>/exe`: the file a process is running.
fn exe_of(pid: i32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/exe")).expect("read /proc/<pid>/exe")
}

/// The `reload requested` lines so far.
fn reload_requests(r: &Relaunch) -> Vec<String> {
    r.events("reload requested")
}

#[track_caller]
fn assert_requests(r: &Relaunch, n: usize, path: &Path) {
    let requests = reload_requests(r);
    if requests.len() != n {
        r.fail(&format!(
            "expected {n} `reload requested`, got {}: {requests:#?}",
            requests.len()
        ));
    }
    for line in &requests {
        if field(line, "trigger") != Some("watch") || field(line, "path") != Some(s(path)) {
            r.fail(&format!(
                "expected trigger=watch path={}: {line}",
                path.display()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load

// ---------------------------------------------------------------------------------------------
// The program replaced

#[test]
fn a_new_build_renamed_onto_the_program_reloads_once_without_failed_requests() {
    let dir = TempDir::new("watch-rename");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(&server, &["--watch", "--watch-settle", "300ms"]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);
    // The watcher's set-up is not in status.
    r.wait_for_event("watching", &[("kind", "program"), ("path", s(&server))], T);

    let load = Load::start(addr, 4);
    r.wait_until(T, &format!("clients served by pid {pid1}"), || {
        load.seen(pid1) || load.failed()
    });
    deploy_hello(&server);
    let pid2 = record_pid(&r.wait_reload_ok(2));
    r.wait_until(T, &format!("clients served by pid {pid2}"), || {
        load.seen(pid2) || load.failed()
    });
    r.wait_status("generation 1 stopped and reaped", |v| {
        history(v, "exit").any(|e| e["generation"] == 1 && e["expected"] == true)
    });
    let stats = load.finish();

    let failed: u64 = stats.failures.values().sum();
    if failed != 0 {
        r.fail(&format!(
            "{failed} of {} requests failed across the watch reload; by kind {:?}; samples {:#?}",
            stats.ok + failed,
            stats.failures,
            stats.samples
        ));
    }
    assert!(stats.pids.contains(&pid1) && stats.pids.contains(&pid2));
    assert_eq!(exe_of(pid2), server, "the new child runs the renamed build");
    assert_requests(&r, 1, &server);
    assert_eq!(r.live_children(), vec![pid2]);
}

#[test]
fn a_binary_written_in_chunks_reloads_once_after_the_last_write() {
    const SETTLE: Duration = Duration::from_millis(1000);
    let dir = TempDir::new("watch-chunks");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(&server, &["--watch", "--watch-settle", "1s"]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);

    // The way a linker or `cp` to a fresh name writes: delete, create, then many writes.
    // Writing in place over the running binary itself would fail with ETXTBSY.
    let bytes = fs::read(hello_bin()).expect("read hello");
    fs::remove_file(&server).expect("unlink the running binary");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&server)
        .expect("create the new binary");
    let chunks = 8;
    let chunk = bytes.len().div_ceil(chunks);
    for (i, part) in bytes.chunks(chunk).enumerate() {
        if i > 0 {
            // Scenario pause, well under the settle time.
            thread::sleep(Duration::from_millis(100));
        }
        file.write_all(part).expect("write a chunk");
    }
    drop(file);
    let last_write = Instant::now();
    let v = r.status_record();
    if v["reloading"] != false || !v["last_reload"].is_null() {
        r.fail(&format!(
            "a reload started while the binary was still being written: {v:#}"
        ));
    }

    // Seen no earlier than it happened: the bound below holds however late the poll is.
    r.wait_status("a reload to start", |v| {
        v["reloading"] == true || !v["last_reload"].is_null()
    });
    let waited = last_write.elapsed();
    assert!(
        waited >= SETTLE - Duration::from_millis(200),
        "the reload came {waited:?} after the last write, before the 1 s settle time"
    );
    let pid2 = record_pid(&r.wait_reload_ok(2));
    r.wait_until(T, "the new generation to answer", || {
        serving_pid(&r, addr) == pid2
    });
    assert_ne!(pid1, pid2);
    assert_requests(&r, 1, &server);
}

#[test]
fn a_broken_build_fails_once_keeps_the_old_child_and_is_not_retried() {
    const SETTLE_MS: u64 = 300;
    let dir = TempDir::new("watch-broken");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(&server, &["--watch", "--watch-settle", "300ms"]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);
    // Bounded observation windows for "nothing more happens" (the one place we wait for an
    // absence): three settle times.
    let quiet = || thread::sleep(Duration::from_millis(3 * SETTLE_MS));

    // 1. A script that exits 1: one reload attempt, one failure.
    deploy_bytes(
        &server,
        b"#!/bin/sh\necho broken build >&2\nexit 1\n",
        0o755,
    );
    r.wait_reload_failed(2);
    assert_eq!(serving_pid(&r, addr), pid1, "the old child keeps serving");
    // A stray event on the same broken file (chmod to the same mode) changes nothing.
    fs::set_permissions(&server, fs::Permissions::from_mode(0o755)).expect("chmod");
    // A change the watcher declines is not in status: only its log line says so.
    r.wait_for_log("not reloading: these files failed before", T);
    quiet();
    assert_eq!(
        reload_requests(&r).len(),
        1,
        "no retry of the broken script"
    );
    assert_eq!(r.status_record()["counters"]["reloads_failed"], 1);

    // 2. A file that is not executable: not even tried.
    let hello = fs::read(hello_bin()).expect("read hello");
    deploy_bytes(&server, &hello, 0o644);
    // A change the watcher declines is not in status: only its log line says so.
    r.wait_for_log("not reloading: the program is not an executable file", T);
    quiet();
    assert_eq!(
        reload_requests(&r).len(),
        1,
        "a non-executable file is not tried"
    );
    assert_eq!(serving_pid(&r, addr), pid1);

    // 3. A truncated binary (a half-finished copy): one attempt, one failure.
    deploy_bytes(&server, &hello[..hello.len().min(64 * 1024)], 0o755);
    r.wait_reload_failed(3);
    quiet();
    assert_eq!(
        reload_requests(&r).len(),
        2,
        "no retry of the truncated file"
    );
    assert_eq!(r.status_record()["counters"]["reloads_failed"], 2);
    assert_eq!(serving_pid(&r, addr), pid1);
    assert_eq!(
        r.live_children(),
        vec![pid1],
        "failed generations are reaped"
    );

    // The next change (a working build) is tried, and works.
    deploy_hello(&server);
    let pid4 = record_pid(&r.wait_reload_ok(4));
    r.wait_until(T, "the working build to answer", || {
        serving_pid(&r, addr) == pid4
    });
    assert_requests(&r, 3, &server);
}

#[test]
fn a_build_that_is_not_ready_in_time_fails_once_and_is_not_retried() {
    let dir = TempDir::new("watch-not-ready");
    let server = dir.join("server");
    let report = dir.join("report");
    fs::copy(probe_bin(), &server).expect("copy probe");
    let r = Relaunch::start(&[
        "--ready",
        "notify",
        "--ready-timeout",
        "1",
        "--watch",
        "--watch-settle",
        "300ms",
        "--listen",
        "127.0.0.1:0",
        "--",
        s(&server),
        "--report",
        s(&report),
        "--ready-after-ms",
        "0",
    ]);
    r.wait_running(1);

    // A build that starts but never says READY=1.
    deploy_bytes(&server, b"#!/bin/sh\nexec sleep 300\n", 0o755);
    let failed = r.wait_reload_failed(2);
    assert_eq!(failed["failure"], "not_ready", "{failed:#}");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|why| why.contains("not ready within --ready-timeout")),
        "{failed:#}"
    );
    thread::sleep(Duration::from_millis(900)); // bounded window: three settle times
    assert_eq!(
        reload_requests(&r).len(),
        1,
        "no retry of the build that was not ready"
    );

    // The next build is tried, and says it is ready.
    let probe = fs::read(probe_bin()).expect("read probe");
    deploy_bytes(&server, &probe, 0o755);
    r.wait_reload_ok(3);
    assert_requests(&r, 2, &server);
}

#[test]
fn a_swapped_release_symlink_reloads_and_the_new_target_is_watched() {
    let dir = TempDir::new("watch-symlink");
    for release in ["1", "2"] {
        fs::create_dir_all(dir.join(&format!("releases/{release}"))).expect("mkdir");
        install_hello(&dir.join(&format!("releases/{release}/server")));
    }
    let current = dir.join("current");
    symlink("releases/1", &current).expect("symlink current");
    let program = current.join("server");
    let r = start(&program, &["--watch", "--watch-settle", "300ms"]);
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);
    assert_eq!(exe_of(pid1), dir.join("releases/1/server"));

    // Capistrano-style deploy: current -> releases/2.
    repoint(&current, "releases/2");
    let pid2 = record_pid(&r.wait_reload_ok(2));
    assert_eq!(exe_of(pid2), dir.join("releases/2/server"));
    r.wait_until(T, "release 2 to answer", || serving_pid(&r, addr) == pid2);

    // The watches followed the link: a new build inside releases/2 is seen too.
    deploy_hello(&dir.join("releases/2/server"));
    let pid3 = record_pid(&r.wait_reload_ok(3));
    r.wait_until(T, "the rebuilt release 2 to answer", || {
        serving_pid(&r, addr) == pid3
    });
    assert_requests(&r, 2, &program);
}

#[test]
fn a_burst_of_50_touches_is_one_reload() {
    const SETTLE: Duration = Duration::from_millis(1000);
    let dir = TempDir::new("watch-touch");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(&server, &["--watch", "--watch-settle", "1s"]);
    let addr = r.addr("http");
    wait_for_http(&r, addr, T);
    r.wait_running(1);

    // `touch` 50 times (a read-only handle suffices to set the times; opening the running
    // binary for writing would fail with ETXTBSY).
    let file = File::open(&server).expect("open the program");
    let base = SystemTime::now();
    for i in 0..50 {
        file.set_modified(base + Duration::from_millis(i))
            .expect("set the mtime");
    }
    drop(file);
    let last_touch = Instant::now();
    r.wait_reload_ok(2);
    assert!(
        last_touch.elapsed() >= SETTLE - Duration::from_millis(200),
        "reloaded before the burst had settled"
    );
    assert_requests(&r, 1, &server);
}

// ---------------------------------------------------------------------------------------------
// The pre-flight check

#[test]
fn a_failing_check_cmd_prevents_the_reload() {
    let dir = TempDir::new("watch-check-false");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(
        &server,
        &[
            "-v",
            "--watch",
            "--watch-settle",
            "300ms",
            "--check-cmd",
            "false",
        ],
    );
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);

    deploy_hello(&server);
    // The check command is the watcher's: its outcome is only in the log.
    let failed = r.wait_for_event("check failed", &[], T);
    assert!(
        failed.contains("exit code 1"),
        "the failure names the status: {failed}"
    );
    assert!(reload_requests(&r).is_empty(), "{:#?}", reload_requests(&r));
    assert_eq!(serving_pid(&r, addr), pid1);
    assert_eq!(r.live_children(), vec![pid1], "the check was reaped");
    assert!(
        r.events("reaped a process that is not one of our generations")
            .is_empty(),
        "the check's exit went to the watcher, not the supervisor"
    );
}

#[test]
fn a_passing_check_cmd_sees_the_program_and_writes_to_stderr() {
    let dir = TempDir::new("watch-check-ok");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(
        &server,
        &[
            "--watch",
            "--watch-settle",
            "300ms",
            "--check-cmd",
            "echo \"check-marker $RELAUNCH_PROGRAM\"; test -x \"$RELAUNCH_PROGRAM\"",
        ],
    );
    let addr = r.addr("http");
    wait_for_http(&r, addr, T);
    r.wait_running(1);

    deploy_hello(&server);
    // The check command is the watcher's: its outcome is only in the log.
    r.wait_for_event("check passed", &[], T);
    let pid2 = record_pid(&r.wait_reload_ok(2));
    r.wait_until(T, "the new build to answer", || {
        serving_pid(&r, addr) == pid2
    });
    let marker = format!("check-marker {}", server.display());
    assert!(r.stderr().contains(&marker), "check output on stderr");
    assert!(!r.stdout().contains("check-marker"), "nothing on stdout");
    assert_requests(&r, 1, &server);
}

#[test]
fn a_check_cmd_that_hangs_is_killed_with_its_children_after_the_timeout() {
    let dir = TempDir::new("watch-check-hang");
    let server = dir.join("server");
    install_hello(&server);
    let r = start(
        &server,
        &[
            "--watch",
            "--watch-settle",
            "300ms",
            "--check-cmd",
            "sleep 300 & sleep 300",
            "--check-timeout",
            "0.5",
        ],
    );
    let addr = r.addr("http");
    let pid1 = wait_for_http(&r, addr, T);
    r.wait_running(1);

    deploy_hello(&server);
    // The check command is the watcher's: its pid and outcome are only in the log.
    let running = r.wait_for_event("running --check-cmd", &[], T);
    let check_pid = field_i32(&running, "pid").expect("pid=");
    let failed = r.wait_for_event("check failed", &[("pid", &check_pid.to_string())], T);
    assert!(failed.contains("timed out"), "{failed}");
    // The whole process group is gone: nothing below relaunch but the server.
    r.wait_until(T, "the check's processes to be gone", || {
        descendants(r.pid()) == vec![pid1]
    });
    assert!(reload_requests(&r).is_empty());
    assert_eq!(serving_pid(&r, addr), pid1);
}

// ---------------------------------------------------------------------------------------------
// --watch-path

#[test]
fn a_watch_path_whose_directory_is_deleted_and_recreated_keeps_working() {
    let dir = TempDir::new("watch-path-dir");
    let server = dir.join("server");
    install_hello(&server);
    let conf_dir = dir.join("conf");
    let conf = conf_dir.join("app.conf");
    fs::create_dir(&conf_dir).expect("mkdir conf");
    fs::write(&conf, "v1\n").expect("write conf");
    let r = start(
        &server,
        &["--watch-path", s(&conf), "--watch-settle", "300ms"],
    );
    let addr = r.addr("http");
    wait_for_http(&r, addr, T);
    r.wait_running(1);

    fs::remove_dir_all(&conf_dir).expect("rm -r conf");
    // A change the watcher declines is not in status: only its log line says so.
    r.wait_for_log("not reloading: the changed path was removed", T);
    assert!(reload_requests(&r).is_empty());

    fs::create_dir(&conf_dir).expect("mkdir conf again");
    fs::write(&conf, "v2\n").expect("write conf again");
    let pid2 = record_pid(&r.wait_reload_ok(2));
    r.wait_until(T, "generation 2 to answer", || {
        serving_pid(&r, addr) == pid2
    });

    // The new directory is watched: an in-place edit reloads again.
    let mut f = OpenOptions::new()
        .append(true)
        .open(&conf)
        .expect("open conf");
    f.write_all(b"v3\n").expect("append");
    drop(f);
    r.wait_reload_ok(3);
    assert_requests(&r, 2, &conf);
}

#[test]
fn a_watch_path_may_appear_later_and_a_directory_watches_its_entries() {
    let dir = TempDir::new("watch-path-later");
    let server = dir.join("server");
    install_hello(&server);
    let later = dir.join("later.conf");
    let release = dir.join("release");
    fs::create_dir(&release).expect("mkdir release");
    let r = start(
        &server,
        &[
            "--watch-path",
            s(&later),
            "--watch-path",
            s(&release),
            "--watch-settle",
            "300ms",
        ],
    );
    let addr = r.addr("http");
    wait_for_http(&r, addr, T);
    r.wait_running(1);

    fs::write(&later, "hello\n").expect("create later.conf");
    r.wait_reload_ok(2);
    fs::write(release.join("asset.txt"), "x").expect("write into release/");
    r.wait_reload_ok(3);
    let requests = reload_requests(&r);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(field(&requests[0], "path"), Some(s(&later)));
    assert_eq!(field(&requests[1], "path"), Some(s(&release)));
}

#[test]
fn a_sighup_that_already_ran_the_new_build_is_not_followed_by_a_watch_reload() {
    let dir = TempDir::new("watch-hup");
    let server = dir.join("server");
    install_hello(&server);
    // A long settle time, so the SIGHUP reload (0.2 s start window) has ended long before.
    let r = Relaunch::start(&[
        "-v",
        "--start-secs",
        "0.2",
        "--watch",
        "--watch-settle",
        "3s",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&server),
    ]);
    let addr = r.addr("http");
    wait_for_http(&r, addr, T);
    r.wait_running(1);

    deploy_hello(&server);
    r.signal(libc::SIGHUP);
    r.wait_reload_ok(2);
    // A change the watcher declines is not in status: only its log line says so.
    r.wait_for_log(
        "the watched paths are as the serving generation found them; no reload",
        T,
    );
    let requests = reload_requests(&r);
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(field(&requests[0], "trigger"), Some("SIGHUP"));
}

// ---------------------------------------------------------------------------------------------
// Usage

#[test]
fn watch_usage_errors_exit_2_and_name_the_bad_value() {
    let hello = hello_bin();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--watch-path", "/nonexistent/dir/app.conf"],
            &[
                "/nonexistent/dir/app.conf",
                "/nonexistent/dir",
                "does not exist",
            ],
        ),
        (
            &["--watch", "--watch-settle", "soon"],
            &["\"soon\"", "500ms"],
        ),
        (&["--check-cmd", "true"], &["--check-cmd", "--watch"]),
        (&["--watch-settle", "1s"], &["--watch-settle", "--watch"]),
        (
            &["--watch", "--check-timeout", "5"],
            &["--check-timeout", "--check-cmd"],
        ),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        args.extend(["--", s(&hello)]);
        let mut r = Relaunch::start(&args);
        let status = r.wait_exit(T);
        let err = r.stderr();
        assert_eq!(status.code(), Some(2), "{flags:?}: {err}");
        for needle in *needles {
            assert!(err.contains(needle), "{flags:?}: {needle:?} not in {err:?}");
        }
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    }
}
