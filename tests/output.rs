//! End-to-end tests of output capture (`--stdout-log`, `--stderr-log`, `--redirect-stderr`,
//! rotation, `--log-prefix`, SIGUSR1 reopen), the pid file and `--daemon`: the real binary,
//! real files, real signals, deadlines instead of sleeps.
//!
//! Children are small shell or awk programs (they write output in ways a test can predict),
//! `probe` (reports its fds) and `hello` (answers HTTP, says READY=1).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = TIMEOUT;

/// The log file and its backups, oldest first: `FILE.N`, …, `FILE.1`, `FILE`.
fn log_set(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for n in (1..10_000).rev() {
        let backup = PathBuf::from(format!("{}.{n}", path.display()));
        if backup.exists() {
            files.push(backup);
        }
    }
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the file at `path` has a line satisfying `pred`; returns that line.
#[track_caller]
fn wait_for_file_line(
    r: &Relaunch,
    path: &Path,
    what: &str,
    mut pred: impl FnMut(&str) -> bool,
) -> String {
    let mut found = None;
    r.wait_until(T, &format!("{what} in {}", path.display()), || {
        found = read(path).lines().find(|l| pred(l)).map(str::to_owned);
        found.is_some()
    });
    found.expect("found")
}

/// A `sh -c SCRIPT` command line for relaunch.
fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn args<'a>(flags: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    let mut v: Vec<&str> = flags.to_vec();
    v.push("--");
    v.extend(command.iter().map(String::as_str));
    v
}

// =============================================================================================
// Rotation

/// The lines the awk writer below produces: numbered, of varying length, with one line much
/// longer than the rotation limit in the middle, then `done`.
fn expected_lines(n: usize, long_at: usize, long_len: usize) -> Vec<String> {
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            if i == long_at {
                format!("line {i} {}", "L".repeat(long_len))
            } else {
                format!("line {i} {}", "x".repeat(i % 97))
            }
        })
        .collect();
    lines.push("done".into());
    lines
}

/// An awk program printing `expected_lines`. awk's stdout is block-buffered on a pipe, so its
/// writes cut lines anywhere: relaunch has to put them back together.
fn awk_writer(n: usize, long_at: usize, long_len: usize) -> Vec<String> {
    sh(&format!(
        "awk 'BEGIN {{ pad = \"\"; for (j = 0; j < 97; j++) pad = pad \"x\"; \
long = \"\"; for (j = 0; j < {long_len}; j++) long = long \"L\"; \
for (i = 0; i < {n}; i++) {{ if (i == {long_at}) print \"line \" i \" \" long; \
else print \"line \" i \" \" substr(pad, 1, i % 97) }} print \"done\" }}'; exec sleep 3600"
    ))
}

#[test]
fn rotation_keeps_every_line_once_in_order_and_files_under_the_limit() {
    let dir = TempDir::new("rotate");
    let log = dir.join("out.log");
    let max = 4096;
    let (n, long_at, long_len) = (5000, 2500, 10_000);
    let command = awk_writer(n, long_at, long_len);
    let r = Relaunch::start(&args(
        &[
            "-l",
            "127.0.0.1:0",
            "--stdout-log",
            s(&log),
            "--log-max-bytes",
            "4KiB",
            "--log-backups",
            "1000",
        ],
        &command,
    ));
    wait_for_file_line(&r, &log, "the last line", |l| l == "done");

    let files = log_set(&log);
    let expected = expected_lines(n, long_at, long_len);
    let mut got = Vec::new();
    for file in &files {
        let data = read(file);
        let size = data.len();
        assert!(
            data.ends_with('\n'),
            "{} does not end with a whole line",
            file.display()
        );
        let lines: Vec<&str> = data.lines().collect();
        if size > max {
            assert_eq!(
                lines.len(),
                1,
                "{} has {size} bytes (> {max}) but more than one line",
                file.display()
            );
        }
        got.extend(lines.into_iter().map(str::to_owned));
    }
    assert!(files.len() > 50, "expected many rotations, got {files:?}");
    if got != expected {
        let first_diff = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        r.fail(&format!(
            "the files do not hold every line once in order: {} lines instead of {}; first \
             difference at line {first_diff}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(first_diff).map(|l| &l[..l.len().min(80)]),
            expected.get(first_diff).map(|l| &l[..l.len().min(80)]),
        ));
    }
    // The long line sits alone in its file.
    let long_file = files
        .iter()
        .find(|f| read(f).starts_with(&format!("line {long_at} L")))
        .expect("a file starting with the long line");
    assert_eq!(read(long_file).lines().count(), 1);
}

#[test]
fn rotation_keeps_only_the_newest_backups() {
    let dir = TempDir::new("backups");
    let log = dir.join("out.log");
    let (n, long_at, long_len) = (3000, usize::MAX, 0);
    let command = awk_writer(n, long_at, long_len);
    let r = Relaunch::start(&args(
        &[
            "-l",
            "127.0.0.1:0",
            "--stdout-log",
            s(&log),
            "--log-max-bytes",
            "2048",
            "--log-backups",
            "3",
        ],
        &command,
    ));
    wait_for_file_line(&r, &log, "the last line", |l| l == "done");
    let names: BTreeSet<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let wanted: BTreeSet<String> = ["out.log", "out.log.1", "out.log.2", "out.log.3"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, wanted, "exactly the file and 3 backups");
    let files = log_set(&log);
    let mut got = Vec::new();
    for file in &files {
        let data = read(file);
        assert!(
            data.len() <= 2048,
            "{} has {} bytes",
            file.display(),
            data.len()
        );
        assert!(data.ends_with('\n'));
        got.extend(data.lines().map(str::to_owned));
    }
    // The newest lines, contiguous and in order, ending with the last one.
    let expected = expected_lines(n, long_at, long_len);
    let tail = &expected[expected.len() - got.len()..];
    assert!(
        got == tail,
        "the backups do not hold the newest lines in order"
    );
    assert!(got.len() > 20);
}

// =============================================================================================
// Prefix, line atomicity, pipes

#[test]
fn prefix_names_generation_and_pid_and_lines_never_mix_while_generations_overlap() {
    let dir = TempDir::new("prefix");
    let log = dir.join("out.log");
    // Every line is written in two parts with a pause between: without per-pipe buffering the
    // two generations' halves would mix.
    let command = sh("while :; do printf 'part-%s ' $$; sleep 0.01; echo \"end-$$\"; done");
    let r = Relaunch::start(&args(
        &[
            "-l",
            "127.0.0.1:0",
            "--stdout-log",
            s(&log),
            "--log-prefix",
            "--start-secs",
            "1",
        ],
        &command,
    ));
    r.wait_running(1);
    let gen1 = r.generation_pid(1);
    r.signal(libc::SIGHUP);
    let gen2 = record_pid(&r.wait_reload_ok(2));
    r.wait_status("generation 1 reaped", |v| {
        history(v, "exit").any(|e| e["pid"] == gen1)
    });
    // A few lines of generation 2 alone, then the picture is complete for generation 1.
    let marker = format!("end-{gen2}");
    let count = read(&log).matches(&marker).count();
    r.wait_until(T, "generation 2 writing after generation 1 exited", || {
        read(&log).matches(&marker).count() >= count + 3
    });

    let text = read(&log);
    let mut partial = Vec::new();
    let mut order = Vec::new();
    for line in text.lines() {
        let (generation, pid) = if line.starts_with(&format!("[1 {gen1}] ")) {
            (1, gen1)
        } else if line.starts_with(&format!("[2 {gen2}] ")) {
            (2, gen2)
        } else {
            r.fail(&format!("line without a known [gen pid] prefix: {line:?}"));
        };
        let whole = format!("[{generation} {pid}] part-{pid} end-{pid}");
        let cut = format!("[{generation} {pid}] part-{pid} ");
        if line == whole {
            order.push(generation);
        } else if line == cut {
            // The child was stopped between the two halves: its half line is written when its
            // pipe closes, and must be its last.
            partial.push(generation);
            order.push(generation);
        } else {
            r.fail(&format!("mixed or malformed line: {line:?}"));
        }
    }
    assert!(
        partial.iter().all(|&g| g == 1) && partial.len() <= 1,
        "only generation 1 may end with a half line: {partial:?}"
    );
    if partial == [1] {
        let last_of_1 = text
            .lines()
            .rfind(|l| l.starts_with(&format!("[1 {gen1}] ")));
        assert_eq!(
            last_of_1,
            Some(format!("[1 {gen1}] part-{gen1} ").as_str()),
            "the half line must be generation 1's last"
        );
    }
    // The generations overlapped: some line of 2 comes before the last line of 1.
    let first_of_2 = order.iter().position(|&g| g == 2).expect("lines of gen 2");
    let last_of_1 = order.iter().rposition(|&g| g == 1).expect("lines of gen 1");
    assert!(
        first_of_2 < last_of_1,
        "expected interleaved lines of both generations during the reload"
    );
}

#[test]
fn each_child_gets_its_own_pipes_and_nothing_leaks() {
    let dir = TempDir::new("pipes");
    let (out, err, report) = (dir.join("out.log"), dir.join("err.log"), dir.join("report"));
    let probe = probe_bin();
    let r = Relaunch::start(&[
        "-l",
        "127.0.0.1:0",
        "--stdout-log",
        s(&out),
        "--stderr-log",
        s(&err),
        "--start-secs",
        "0.2",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    let gen1 = r.generation_pid(1);
    let rep1 = wait_for_report(&r, &report, gen1);
    r.wait_running(1);
    r.signal(libc::SIGHUP);
    let gen2 = record_pid(&r.wait_reload_ok(2));
    let rep2 = wait_for_report(&r, &report, gen2);
    for rep in [&rep1, &rep2] {
        assert_eq!(rep.fds, vec![0, 1, 2, 3], "{}", rep.line);
        assert!(rep.cloexec.is_empty(), "{}", rep.line);
    }
    // gen 2 is alive: its fds 1 and 2 are two different pipes, and neither is gen 1's.
    let link = |pid: i32, fd: i32| {
        fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let (out2, err2) = (link(gen2, 1), link(gen2, 2));
    assert!(out2.starts_with("pipe:") && err2.starts_with("pipe:"));
    assert_ne!(out2, err2);
    // probe prints its report line to stderr: it lands in the stderr log, not the stdout log.
    wait_for_file_line(&r, &err, "gen 2's report", |l| {
        l.contains(&format!("pid={gen2} "))
    });
    assert!(!read(&out).contains(&format!("pid={gen2} ")));
    // relaunch's own log still goes to its own stderr (not daemonized).
    assert!(!read(&err).contains("spawned"));
}

#[test]
fn redirect_stderr_joins_the_stdout_log_and_a_partial_line_is_written_at_close() {
    let dir = TempDir::new("redirect");
    let out = dir.join("out.log");
    // Closing both stdout and stderr ends the pipe while the child lives on.
    let command =
        sh("echo out-$$; echo err-$$ >&2; printf tail-$$; exec >&- 2>&-; exec sleep 3600");
    let r = Relaunch::start(&args(
        &[
            "-l",
            "127.0.0.1:0",
            "--stdout-log",
            s(&out),
            "--redirect-stderr",
        ],
        &command,
    ));
    let pid = r.generation_pid(1);
    wait_for_file_line(&r, &out, "the partial line", |l| l == format!("tail-{pid}"));
    assert_eq!(
        read(&out),
        format!("out-{pid}\nerr-{pid}\ntail-{pid}\n"),
        "stdout and stderr in the order written, the partial line completed"
    );
    assert!(proc_alive(pid), "the child is still running");
}

#[test]
fn redirect_stderr_without_a_log_goes_to_relaunchs_stdout() {
    let command = sh("echo err-$$ >&2; exec sleep 3600");
    let r = Relaunch::start(&args(&["-l", "127.0.0.1:0", "--redirect-stderr"], &command));
    let pid = r.generation_pid(1);
    r.wait_until(T, "the child's stderr on relaunch's stdout", || {
        r.stdout().contains(&format!("err-{pid}"))
    });
    assert!(!r.stderr().contains(&format!("err-{pid}")));
}

// =============================================================================================
// SIGUSR1

#[test]
fn usr1_reopens_the_log_after_an_external_move_and_is_not_forwarded() {
    let dir = TempDir::new("reopen");
    let log = dir.join("out.log");
    let moved = dir.join("out.log.moved");
    let command = sh("trap 'echo got-usr1-$$' USR1; while :; do echo tick-$$; sleep 0.05; done");
    let r = Relaunch::start(&args(
        &["-l", "127.0.0.1:0", "--stdout-log", s(&log)],
        &command,
    ));
    let pid = r.generation_pid(1);
    let tick = format!("tick-{pid}");
    wait_for_file_line(&r, &log, "a tick", |l| l == tick);
    fs::rename(&log, &moved).unwrap();
    r.signal(libc::SIGUSR1);
    // Reopening the log files changes no state: only the log says it happened.
    r.wait_for_event("reopened the log file", &[], T);
    // Ticks go to the new file, and no longer to the moved one.
    wait_for_file_line(&r, &log, "a tick in the new file", |l| l == tick);
    let before = read(&moved);
    r.wait_until(T, "three more ticks in the new file", || {
        read(&log).lines().filter(|l| *l == tick).count() >= 4
    });
    assert_eq!(read(&moved), before, "the moved file still grows");
    assert!(before.lines().any(|l| l == tick));
    assert!(proc_alive(pid));
    assert!(
        !read(&log).contains("got-usr1") && !read(&moved).contains("got-usr1"),
        "USR1 must not reach the child while relaunch captures its output"
    );
    assert!(r.events("forwarding signal").is_empty());
}

#[test]
fn usr1_is_still_forwarded_when_not_capturing() {
    let dir = TempDir::new("usr1");
    let report = dir.join("report");
    let probe = probe_bin();
    // --redirect-stderr alone captures nothing: USR1 keeps its old meaning.
    let r = Relaunch::start(&[
        "-l",
        "127.0.0.1:0",
        "--redirect-stderr",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    let pid = r.generation_pid(1);
    wait_for_report(&r, &report, pid);
    r.signal(libc::SIGUSR1);
    r.wait_until(T, "the probe to report USR1", || {
        read_signal_reports(&report).contains(&("USR1".to_owned(), pid))
    });
}

// =============================================================================================
// Flood

#[test]
fn a_flooding_child_does_not_stall_reloads_or_stop() {
    let dir = TempDir::new("flood");
    let log = dir.join("out.log");
    let command = sh("exec yes \"flood-$$\"");
    let mut r = Relaunch::start(&args(
        &[
            "-l",
            "127.0.0.1:0",
            "--stdout-log",
            s(&log),
            "--log-max-bytes",
            "1MB",
            "--log-backups",
            "1",
            "--start-secs",
            "0.2",
            "--log-prefix",
        ],
        &command,
    ));
    r.wait_running(1);
    let gen1 = r.generation_pid(1);
    // Both generations flood during the reload.
    let started = Instant::now();
    r.signal(libc::SIGHUP);
    r.wait_reload_ok(2);
    let reload = started.elapsed();
    eprintln!("reload under a flood took {reload:?}");
    let gen2 = r.generation_pid(2);
    // --start-secs is 0.2 s; allow a lot for a loaded machine, but not the 30 s of a stall.
    assert!(
        reload < Duration::from_secs(10),
        "reload took {reload:?} under a flood"
    );
    let started = Instant::now();
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    let stop = started.elapsed();
    assert!(stop < Duration::from_secs(10), "stop took {stop:?}");
    assert_eq!(status.code(), Some(143), "yes dies by SIGTERM: {status:?}");
    // Every line is whole and from one of the two generations, except that a child killed in
    // the middle of a write leaves a partial line, written when its pipe closes: at most one per
    // generation, and its last.
    let tags = [
        (format!("[1 {gen1}] "), gen1),
        (format!("[2 {gen2}] "), gen2),
    ];
    let mut counts = [0usize; 2];
    let mut cut: [Option<String>; 2] = [None, None];
    for file in log_set(&log) {
        let data = fs::read(&file).unwrap();
        assert!(
            data.len() <= 1 << 20,
            "{} has {} bytes",
            file.display(),
            data.len()
        );
        assert!(data.ends_with(b"\n"), "{} ends mid-line", file.display());
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = String::from_utf8_lossy(line).into_owned();
            let g = tags
                .iter()
                .position(|(tag, _)| line.starts_with(tag.as_str()))
                .unwrap_or_else(|| panic!("line without a [gen pid] prefix: {line:?}"));
            if let Some(partial) = &cut[g] {
                panic!(
                    "the partial line {partial:?} was not its generation's last ({line:?} follows)"
                );
            }
            let (tag, pid) = &tags[g];
            let text = &line[tag.len()..];
            let whole = format!("flood-{pid}");
            if text != whole {
                assert!(
                    !text.is_empty() && whole.starts_with(text),
                    "broken line {line:?}"
                );
                cut[g] = Some(line.clone());
            }
            counts[g] += 1;
        }
    }
    assert!(counts[1] > 0, "generation 2's lines are in the log");
}

// =============================================================================================
// Pid file

#[test]
fn pid_file_replaces_a_stale_one_atomically_and_is_removed_on_exit() {
    let dir = TempDir::new("pidfile");
    let pid_file = dir.join("relaunch.pid");
    // The test process is alive but is not relaunch: a pid reused by another program.
    let stale = format!("{}\n", std::process::id());
    fs::write(&pid_file, &stale).unwrap();
    // Held open: a file replaced by rename keeps its old content for readers that have it open;
    // one rewritten in place (truncate + write, with a window where it is empty) does not.
    let mut old_file = fs::File::open(&pid_file).unwrap();
    // Watch the file the whole time relaunch starts: it must never be seen empty or partial.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watcher = {
        let (stop, seen, path) = (Arc::clone(&stop), Arc::clone(&seen), pid_file.clone());
        thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let content = match fs::read_to_string(&path) {
                    Ok(c) => c,
                    Err(e) => format!("<{}>", e.kind()),
                };
                seen.lock().unwrap().insert(content);
                reads += 1;
            }
            reads
        })
    };
    let mut r = Relaunch::start(&[
        "-l",
        "127.0.0.1:0",
        "--pid-file",
        s(&pid_file),
        "--",
        "sleep",
        "3600",
    ]);
    let ours = format!("{}\n", r.pid());
    r.wait_until(T, "the pid file to hold relaunch's pid", || {
        read(&pid_file) == ours
    });
    stop.store(true, Ordering::SeqCst);
    let reads = watcher.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    let allowed: BTreeSet<String> = [stale.clone(), ours.clone()].into_iter().collect();
    assert!(
        seen.is_subset(&allowed),
        "the pid file was seen as {seen:?} ({reads} reads); only {allowed:?} are allowed"
    );
    // The message's wording is what is checked.
    let line = r.wait_for_event("replacing a stale pid file", &[], T);
    assert!(line.contains("not relaunch"), "{line}");
    let mut old_content = String::new();
    old_file.read_to_string(&mut old_content).unwrap();
    assert_eq!(
        old_content, stale,
        "the pid file was rewritten in place instead of replaced atomically"
    );
    // No temporary file left next to it.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    r.signal(libc::SIGTERM);
    r.wait_exit(T);
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[test]
fn pid_file_of_a_running_relaunch_is_refused() {
    let dir = TempDir::new("pidlive");
    let pid_file = dir.join("relaunch.pid");
    let first = Relaunch::start(&[
        "-l",
        "127.0.0.1:0",
        "--pid-file",
        s(&pid_file),
        "--",
        "sleep",
        "3600",
    ]);
    let ours = format!("{}\n", first.pid());
    first.wait_until(T, "the first pid file", || read(&pid_file) == ours);
    let mut second = Relaunch::start(&[
        "-l",
        "127.0.0.1:0",
        "--pid-file",
        s(&pid_file),
        "--",
        "sleep",
        "3600",
    ]);
    let status = second.wait_exit(T);
    if status.code() != Some(1) {
        second.fail(&format!("expected exit code 1, got {status:?}"));
    }
    let expected = format!("relaunch is already running as pid {}", first.pid());
    if !second.stderr().contains(&expected) {
        second.fail(&format!("expected {expected:?} on stderr"));
    }
    assert!(second.events("spawned").is_empty(), "nothing was started");
    assert_eq!(
        read(&pid_file),
        ours,
        "the running relaunch's file is untouched"
    );
    assert!(proc_alive(first.pid()));
}

#[test]
fn options_can_come_from_the_environment() {
    let dir = TempDir::new("env");
    let (log, pid_file) = (dir.join("out.log"), dir.join("r.pid"));
    let command = sh("echo hello-$$; exec sleep 3600");
    let r = Relaunch::start_with_env(
        &args(&["-l", "127.0.0.1:0"], &command),
        &[
            ("RELAUNCH_STDOUT_LOG", s(&log)),
            ("RELAUNCH_LOG_PREFIX", "1"),
            ("RELAUNCH_PID_FILE", s(&pid_file)),
        ],
    );
    let pid = r.generation_pid(1);
    wait_for_file_line(&r, &log, "the prefixed line", |l| {
        l == format!("[1 {pid}] hello-{pid}")
    });
    assert_eq!(read(&pid_file), format!("{}\n", r.pid()));
}

// =============================================================================================
// --daemon

/// Kills a detached relaunch (found through its pid file) and everything below it, and reaps
/// what this process may have adopted as a subreaper.
struct DaemonGuard {
    pid_file: PathBuf,
    pid: Option<i32>,
}

impl DaemonGuard {
    fn new(pid_file: &Path) -> DaemonGuard {
        DaemonGuard {
            pid_file: pid_file.to_owned(),
            pid: None,
        }
    }

    fn pid(&mut self) -> Option<i32> {
        if self.pid.is_none() {
            self.pid = read(&self.pid_file).trim().parse().ok();
        }
        self.pid
    }
}

fn reap(pid: i32) {
    // SAFETY: waitpid on one specific pid with a valid status pointer; it only reaps a child
    // of this process (ECHILD otherwise).
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let is_relaunch = fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == "relaunch"));
        if !is_relaunch || !proc_alive(pid) {
            reap(pid);
            return;
        }
        let victims = kill_tree(pid);
        poll_until(Duration::from_secs(5), || {
            reap(pid);
            victims.iter().for_each(|&p| reap(p));
            !proc_exists(pid)
        });
    }
}

/// Runs a command to completion (within `T`), with stdout and stderr read to their end: a
/// daemon that kept them open would make this time out.
fn run_to_end(mut cmd: Command) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "RELAUNCH_LOG",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("cannot start relaunch");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relaunch --daemon did not return within {T:?}");
        }
        thread::sleep(POLL_INTERVAL);
    };
    let text = |rx: std::sync::mpsc::Receiver<String>, which: &str| {
        rx.recv_timeout(remaining(deadline)).unwrap_or_else(|_| {
            panic!("relaunch's {which} was not closed after it returned: the daemon kept it open")
        })
    };
    (status, text(out, "stdout"), text(err, "stderr"))
}

/// Field 6 of /proc/PID/stat: the session id.
fn session_of(pid: i32) -> i32 {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    after.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn daemon_returns_once_the_server_is_up() {
    let dir = TempDir::new("daemon");
    let hello = hello_bin();
    let mut guard = DaemonGuard::new(&dir.join("relaunch.pid"));
    // Relative paths, resolved against the current directory before detaching.
    let mut cmd = Command::new(relaunch_bin());
    // Its own directory for the default control socket: hermetic beside other relaunches.
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    cmd.current_dir(dir.path()).args([
        "--daemon",
        "--pid-file",
        "relaunch.pid",
        "--stdout-log",
        "out.log",
        "--stderr-log",
        "err.log",
        "-l",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--",
        s(&hello),
    ]);
    // An extra inherited fd: the daemon must close it (the read end then sees end-of-file).
    let (inherited_rd, inherited_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let wr_raw = std::os::fd::AsRawFd::as_raw_fd(&inherited_wr);
    // SAFETY: dup2 is async-signal-safe; the copy at 9 is not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wr_raw, 9) != 9 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (status, stdout, stderr) = run_to_end(cmd);
    drop(inherited_wr);
    let daemon = guard.pid();
    assert!(
        status.success(),
        "relaunch --daemon failed: {status:?}\nstderr: {stderr}\nlog: {}",
        read(&dir.join("err.log"))
    );
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("", ""),
        "silent on success"
    );
    let daemon = daemon.expect("the pid file exists when relaunch --daemon returns");

    // The server answers right away: one request, no retries.
    let log = read(&dir.join("err.log"));
    let listening = log
        .lines()
        .find(|l| is_event(l, "listening"))
        .unwrap_or_else(|| panic!("no listening line in the daemon's log:\n{log}"));
    let addr = field(listening, "addr").unwrap().parse().unwrap();
    let (code, body) = http_get(addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET right after relaunch --daemon returned: {e}\nlog:\n{log}"));
    assert_eq!(code, 200);
    let server = body_pid(&body).unwrap();
    assert_eq!(
        proc_stat(server).unwrap().ppid,
        daemon,
        "served by the daemon's child"
    );
    assert!(
        log.contains("running generation=1"),
        "relaunch's own log lines:\n{log}"
    );

    // Detached: not a session leader, not in our session, in /, stdio on the logs, and
    // nothing inherited kept open.
    assert_ne!(session_of(daemon), daemon);
    assert_ne!(session_of(daemon), session_of(std::process::id() as i32));
    assert_eq!(
        fs::read_link(format!("/proc/{daemon}/cwd")).unwrap(),
        Path::new("/")
    );
    let fd = |n: i32| fs::read_link(format!("/proc/{daemon}/fd/{n}")).unwrap();
    assert_eq!(fd(0), Path::new("/dev/null"));
    assert_eq!(fd(1), dir.join("out.log"));
    assert_eq!(fd(2), dir.join("err.log"));
    let mut buf = [0u8; 1];
    let mut rd = fs::File::from(inherited_rd);
    assert_eq!(
        rd.read(&mut buf).unwrap(),
        0,
        "the daemon closed the inherited fd"
    );

    // Stopping it through the pid file: the file goes away.
    assert!(kill(daemon, libc::SIGTERM));
    wait_until(T, "the daemon to exit", || {
        reap(daemon);
        !proc_alive(daemon)
    });
    wait_until(T, "the pid file to be removed", || {
        !dir.join("relaunch.pid").exists()
    });
}

#[test]
fn daemon_reports_why_the_server_did_not_start() {
    let dir = TempDir::new("daemonfail");
    let pid_file = dir.join("relaunch.pid");
    let err_log = dir.join("err.log");
    let _guard = DaemonGuard::new(&pid_file);
    let mut cmd = Command::new(relaunch_bin());
    // Its own directory for the default control socket: hermetic beside other relaunches.
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    cmd.args([
        "--daemon",
        "--pid-file",
        s(&pid_file),
        "--stderr-log",
        s(&err_log),
        "-l",
        "127.0.0.1:0",
        "--",
        "sh",
        "-c",
        "echo boom >&2; exit 3",
    ]);
    let (status, _, stderr) = run_to_end(cmd);
    assert_eq!(
        status.code(),
        Some(3),
        "the server's status; stderr: {stderr}"
    );
    assert!(
        stderr.contains("exited with exit code 3 before it was up")
            && stderr.contains(&format!("relaunch's log: {}", err_log.display())),
        "{stderr}"
    );
    // Cleaned up before answering: no pid file, and the daemon already exited.
    assert!(!pid_file.exists());
    let log = read(&err_log);
    assert!(log.contains("boom") && log.contains("exiting"), "{log}");

    let mut cmd = Command::new(relaunch_bin());
    // Its own directory for the default control socket: hermetic beside other relaunches.
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    cmd.args([
        "--daemon",
        "--pid-file",
        s(&pid_file),
        "-l",
        "127.0.0.1:0",
        "--",
        "/no/such/program",
    ]);
    let (status, _, stderr) = run_to_end(cmd);
    assert_eq!(status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("program not found"), "{stderr}");

    // Never ready: stopped after --ready-timeout, reported, cleaned up.
    let mut cmd = Command::new(relaunch_bin());
    // Its own directory for the default control socket: hermetic beside other relaunches.
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    cmd.args([
        "--daemon",
        "--pid-file",
        s(&pid_file),
        "-l",
        "127.0.0.1:0",
        "--ready",
        "notify",
        "--ready-timeout",
        "0.5",
        "--",
        "sleep",
        "3600",
    ]);
    let (status, _, stderr) = run_to_end(cmd);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not ready within --ready-timeout 500ms"),
        "{stderr}"
    );
    assert!(!pid_file.exists());

    let mut cmd = Command::new(relaunch_bin());
    // Its own directory for the default control socket: hermetic beside other relaunches.
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    cmd.args(["--daemon", "-l", "127.0.0.1:0", "--", "true"]);
    let (status, _, stderr) = run_to_end(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--pid-file"), "{stderr}");
}

#[test]
fn daemon_keeps_sockets_handed_over_with_listen_fd() {
    let dir = TempDir::new("daemon-fd");
    let hello = hello_bin();
    let mut guard = DaemonGuard::new(&dir.join("relaunch.pid"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let mut cmd = Command::new(relaunch_bin());
    // Its own directory for the default control socket: hermetic beside other relaunches.
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    cmd.current_dir(dir.path()).args([
        "--daemon",
        "--pid-file",
        "relaunch.pid",
        "--stderr-log",
        "err.log",
        "--listen",
        "web=fd:9",
        "--",
        s(&hello),
    ]);
    // SAFETY: dup2 is async-signal-safe; the copy at 9 is not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 9) != 9 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (status, _stdout, stderr) = run_to_end(cmd);
    assert!(
        status.success(),
        "relaunch --daemon --listen fd:9 failed: {status:?}\nstderr: {stderr}\nlog: {}",
        read(&dir.join("err.log"))
    );
    let daemon = guard.pid().expect("the pid file names the daemon");
    // This test's own copy of the socket must not be what answers: close it.
    drop(listener);
    let (code, body) = http_get(addr, T).unwrap_or_else(|e| {
        panic!(
            "GET through the handed-over socket failed: {e}\nlog: {}",
            read(&dir.join("err.log"))
        )
    });
    assert_eq!(code, 200);
    let child = body_pid(&body).expect("pid in the body");
    assert!(descendants(daemon).contains(&child), "{body}");
    assert!(body.contains("fdnames=web"), "{body}");
}
