//! The binary watcher (`--watch`), measured end to end with real processes and files:
//!
//! * **rename → exec latency**: a new build is renamed onto the watched program; the time from
//!   right after `rename()` returns until the new child's `main` runs (the probe example records
//!   CLOCK_MONOTONIC first thing, `start_ns`). The target is the settle time plus under 10 ms.
//! * **idle wake-ups**: the master's voluntary and non-voluntary context switches (from
//!   `/proc/PID/status`) over an idle window, with and without `--watch`. An idle master sleeps
//!   in `poll` without a timeout, so both should be 0.
//!
//! CLOCK_MONOTONIC is one clock for every process on the machine, so the differences are real
//! durations. Run (release build; the examples must be built first):
//!
//! ```text
//! cargo build --release --examples && cargo bench --bench watch -- [--runs N] [--settle MS] [--idle-secs S]
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;

fn main() {
    let mut runs = 12usize;
    let mut settles = vec![500u64, 100];
    let mut idle_secs = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--runs" => runs = number("--runs") as usize,
            "--settle" => settles = vec![number("--settle")],
            "--idle-secs" => idle_secs = number("--idle-secs"),
            "--bench" => {}
            other => {
                panic!("unknown argument {other:?} (expected --runs N, --settle MS, --idle-secs S)")
            }
        }
    }
    let relaunch = PathBuf::from(env!("CARGO_BIN_EXE_relaunch"));
    let probe = relaunch.parent().unwrap().join("examples/probe");
    assert!(
        probe.is_file(),
        "{} is missing: run `cargo build --release --examples` first",
        probe.display()
    );
    println!("relaunch: {}", relaunch.display());
    let dir = std::env::temp_dir().join(format!("relaunch-bench-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());

    for settle in settles {
        let samples = latency(&relaunch, &probe, &dir, runs, settle);
        report(
            &format!(
                "rename() onto the program -> new child's main runs (--watch-settle {settle}ms)"
            ),
            &samples,
            settle as f64,
        );
    }
    for watch in [true, false] {
        let (voluntary, involuntary) = idle(&relaunch, &probe, &dir, watch, idle_secs, 0);
        println!(
            "idle master {} for {idle_secs} s: {voluntary} voluntary, {involuntary} non-voluntary context switches",
            if watch { "with --watch" } else { "without --watch" },
        );
    }
    let writes = 500;
    let (voluntary, involuntary) = idle(&relaunch, &probe, &dir, true, 0, writes);
    println!(
        "master with --watch while {writes} lines are written to another file next to the program \
         (one every 10 ms): {voluntary} voluntary, {involuntary} non-voluntary context switches"
    );
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn monotonic_ns() -> u128 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// A relaunch under measurement, its stderr collected; stopped (TERM, then KILL) on drop.
struct Master {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Master {
    fn start(relaunch: &Path, args: &[&str], program: &Path, report: &Path) -> Master {
        let mut child = Command::new(relaunch)
            .args(args)
            .arg("--")
            .arg(program)
            .arg("--report")
            .arg(report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env(
                "RELAUNCH_LOG",
                if std::env::var_os("WATCH_BENCH_DEBUG").is_some() {
                    "debug"
                } else {
                    "info"
                },
            )
            .spawn()
            .expect("start relaunch");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Master { child, lines }
    }

    /// The first log line containing `needle`, waiting up to 30 s.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; log:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The probe's `start_ns` for pid `pid`, waiting for its report line.
fn start_ns(report: &Path, pid: i32) -> u128 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_to_string(report)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("pid="))
            .find(|l| field(l, "pid").and_then(|p| p.parse().ok()) == Some(pid))
            .and_then(|l| field(l, "start_ns")?.parse().ok());
        if let Some(ns) = found {
            return ns;
        }
        assert!(Instant::now() < deadline, "no report from pid {pid}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `runs` deploys by rename; one latency sample (ms) each.
fn latency(relaunch: &Path, probe: &Path, dir: &Path, runs: usize, settle_ms: u64) -> Vec<f64> {
    let server = dir.join(format!("server-{settle_ms}"));
    let staged = dir.join(format!("server-{settle_ms}.new"));
    let report = dir.join(format!("report-{settle_ms}"));
    std::fs::copy(probe, &server).unwrap();
    let settle = format!("{settle_ms}ms");
    let m = Master::start(
        relaunch,
        &[
            "--listen",
            "127.0.0.1:0",
            "--start-secs",
            "0.05",
            "--watch",
            "--watch-settle",
            &settle,
        ],
        &server,
        &report,
    );
    m.wait_for("running generation=1 ");
    let mut samples = Vec::new();
    for g in 2..runs + 2 {
        // A new build: a fresh copy (new inode) renamed onto the program, as deploys do.
        std::fs::copy(probe, &staged).unwrap();
        std::fs::rename(&staged, &server).unwrap();
        let renamed = monotonic_ns();
        let spawned = m.wait_for(&format!("spawned generation={g} "));
        let pid: i32 = field(&spawned, "pid").unwrap().parse().unwrap();
        let started = start_ns(&report, pid);
        let ms = started.saturating_sub(renamed) as f64 / 1e6;
        if std::env::var_os("WATCH_BENCH_DEBUG").is_some() && ms > settle_ms as f64 + 20.0 {
            let lines = m.lines.lock().unwrap();
            let from = lines
                .iter()
                .rposition(|l| l.contains(&format!("exited generation={} ", g - 2)))
                .unwrap_or(0);
            eprintln!("slow run ({ms:.1} ms):\n{}", lines[from..].join("\n"));
        }
        samples.push(ms);
        m.wait_for(&format!("reload complete generation={g} "));
        m.wait_for(&format!("exited generation={} ", g - 1));
    }
    samples
}

/// (voluntary, non-voluntary) context switches of relaunch over `secs` idle seconds, then
/// while `writes` lines are appended (one every 10 ms) to a log file next to the program.
fn idle(
    relaunch: &Path,
    probe: &Path,
    dir: &Path,
    watch: bool,
    secs: u64,
    writes: usize,
) -> (u64, u64) {
    let server = dir.join("idle-server");
    let report = dir.join("idle-report");
    std::fs::copy(probe, &server).unwrap();
    let mut args = vec!["--listen", "127.0.0.1:0", "--start-secs", "0.05"];
    if watch {
        args.push("--watch");
    }
    let m = Master::start(relaunch, &args, &server, &report);
    m.wait_for("running generation=1 ");
    let pid = m.child.id();
    let switches = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let get = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap()
        };
        (
            get("voluntary_ctxt_switches:"),
            get("nonvoluntary_ctxt_switches:"),
        )
    };
    let before = switches();
    std::thread::sleep(Duration::from_secs(secs));
    if writes > 0 {
        use std::io::Write;
        let mut log = std::fs::File::create(dir.join("app.log")).unwrap();
        for i in 0..writes {
            writeln!(log, "line {i}").unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let after = switches();
    (after.0 - before.0, after.1 - before.1)
}

fn report(what: &str, samples: &[f64], settle_ms: f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    println!("{what}, {} runs:", s.len());
    let each: Vec<String> = samples.iter().map(|v| format!("{v:.1}")).collect();
    println!("  each (ms): {}", each.join(" "));
    println!(
        "  min {:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        q(0.0),
        q(0.5),
        q(0.9),
        q(1.0)
    );
    println!(
        "  beyond the settle time: min {:+.2} ms, median {:+.2} ms, p90 {:+.2} ms, max {:+.2} ms",
        q(0.0) - settle_ms,
        q(0.5) - settle_ms,
        q(0.9) - settle_ms,
        q(1.0) - settle_ms
    );
}
