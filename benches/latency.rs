//! Latency of relaunch's two hot paths, measured end to end with real processes:
//!
//! * **spawn latency**: from the moment SIGHUP is sent to relaunch until the new child's `main`
//!   runs (the probe example records CLOCK_MONOTONIC first thing);
//! * **READY → stop**: from the moment the new child sends `READY=1` (`--ready notify`) until
//!   the old child receives its stop signal (both recorded by the probes).
//!
//! CLOCK_MONOTONIC is one clock for every process on the machine, so the differences are real
//! durations. Run (release build; the examples must be built first):
//!
//! ```text
//! cargo build --release --examples && cargo bench --bench latency -- [--reloads N]
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let mut reloads = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reloads" => {
                reloads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--reloads needs a number")
            }
            "--bench" => {}
            other => panic!("unknown argument {other:?} (expected --reloads N)"),
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
    println!("reloads per measurement: {reloads}\n");

    // Interleave the two so machine noise hits both alike.
    let mut spawn = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..5 {
        spawn.extend(measure(&relaunch, &probe, reloads / 5, Mode::Timer));
        baseline.extend(baseline_spawn(&probe, reloads / 5));
    }
    report("spawn latency (SIGHUP sent -> child's main runs)", &spawn);
    report(
        "baseline: std::process::Command::spawn -> child's main runs",
        &baseline,
    );
    let ready = measure(&relaunch, &probe, reloads, Mode::Notify);
    report("READY=1 sent -> old child receives SIGTERM", &ready);
}

/// The same probe started directly with std's `Command` from this process: what fork + exec
/// + the probe's own start-up cost on this machine, with no relaunch involved.
fn baseline_spawn(probe: &Path, n: usize) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!("relaunch-bench-base-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report");
    let mut samples = Vec::new();
    for _ in 0..n {
        let _ = std::fs::remove_file(&report);
        let before = monotonic_ns();
        let mut child = Command::new(probe)
            .arg("--report")
            .arg(&report)
            .args(["--exit-after-ms", "0"])
            .stderr(Stdio::null())
            .spawn()
            .expect("start probe");
        child.wait().unwrap();
        let text = std::fs::read_to_string(&report).unwrap();
        let start: u128 = field(text.lines().next().unwrap(), "start_ns")
            .unwrap()
            .parse()
            .unwrap();
        samples.push((start - before) as f64 / 1e6);
    }
    let _ = std::fs::remove_dir_all(&dir);
    samples
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Timer,
    Notify,
}

fn report(what: &str, samples: &[f64]) {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: n={} median={:.3} ms p90={:.3} ms min={:.3} ms max={:.3} ms",
        v.len(),
        pick(0.5),
        pick(0.9),
        v[0],
        v[v.len() - 1]
    );
}

struct Guard {
    child: Child,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Runs `reloads` reloads and returns one latency sample (ms) per reload.
fn measure(relaunch: &Path, probe: &Path, reloads: usize, mode: Mode) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!(
        "relaunch-bench-{}-{}",
        std::process::id(),
        mode as u8
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report");
    let mut cmd = Command::new(relaunch);
    cmd.args(["--listen", "127.0.0.1:0", "--stop-wait-secs", "5"]);
    match mode {
        Mode::Timer => cmd.args(["--start-secs", "0.05"]),
        Mode::Notify => cmd.args(["--ready", "notify"]),
    };
    cmd.arg("--").arg(probe).arg("--report").arg(&report);
    if mode == Mode::Notify {
        cmd.args(["--ready-after-ms", "0"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RELAUNCH_LOG", "info");
    let mut child = cmd.spawn().expect("start relaunch");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let guard = Guard { child, dir };
    let pid = guard.child.id() as i32;
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if lines.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let reports = |kind: &str| -> Vec<(i32, u128)> {
        std::fs::read_to_string(&report)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                kind.is_empty() && l.starts_with("pid=") || !kind.is_empty() && l.starts_with(kind)
            })
            .filter_map(|l| {
                let key = if kind.is_empty() {
                    "start_ns"
                } else {
                    "mono_ns"
                };
                Some((field(l, "pid")?.parse().ok()?, field(l, key)?.parse().ok()?))
            })
            .collect()
    };
    wait_for("running generation=1");
    let mut samples = Vec::new();
    for g in 2..reloads + 2 {
        let sent = monotonic_ns();
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        wait_for(&format!("reload complete generation={g} "));
        let line = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(&format!("reload complete generation={g} ")))
            .cloned()
            .unwrap();
        let new: i32 = field(&line, "pid").unwrap().parse().unwrap();
        let old: i32 = field(&line, "old_pid").unwrap().parse().unwrap();
        wait_for(&format!("exited generation={} ", g - 1));
        let sample = match mode {
            Mode::Timer => {
                let start = reports("").into_iter().find(|(p, _)| *p == new).unwrap().1;
                start - sent
            }
            Mode::Notify => {
                let ready = reports("ready ")
                    .into_iter()
                    .find(|(p, _)| *p == new)
                    .unwrap()
                    .1;
                let term = reports("term ")
                    .into_iter()
                    .find(|(p, _)| *p == old)
                    .unwrap()
                    .1;
                term - ready
            }
        };
        samples.push(sample as f64 / 1e6);
    }
    drop(guard);
    samples
}
