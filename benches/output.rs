//! What passing the children's output through relaunch costs (`--output capture`) against
//! leaving it to them (`--output inherit`) and against no relaunch at all.
//!
//! A writer (this binary, re-run with `RELAUNCH_BENCH_WRITER=N`) writes N lines of 100 bytes
//! to stdout as fast as it can, through a 64 KiB buffer. The bench reads the stream at the far
//! end of a pipe, as a container runtime or journald would, and times the lines from the first
//! to the N-th. Three ways:
//!
//! - **direct**: the writer's stdout is the bench's pipe;
//! - **inherit**: relaunch runs the writer with `--output inherit`; the writer's stdout is
//!   relaunch's, the bench's pipe;
//! - **capture**: relaunch runs the writer with `--output capture`; relaunch reads the
//!   writer's pipe and forwards whole lines to its own stdout, the bench's pipe.
//!
//! For each, lines/s, and the CPU time relaunch's master used (utime + stime from
//! `/proc/PID/stat`) per million lines and as a share of one core over the run. The modes are
//! interleaved, run after run, so that machine noise hits all alike. Run (release build):
//!
//! ```text
//! cargo bench --bench output -- [--lines N] [--runs R]
//! ```

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{sysconf, Pid, SysconfVar};

const LINE_LEN: usize = 100;

fn main() {
    if let Ok(n) = std::env::var("RELAUNCH_BENCH_WRITER") {
        writer(n.parse().expect("RELAUNCH_BENCH_WRITER=N"));
        return;
    }
    let mut lines = 1_000_000usize;
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--lines" => lines = number("--lines"),
            "--runs" => runs = number("--runs"),
            "--bench" => {}
            other => panic!("unknown argument {other:?} (expected --lines N, --runs R)"),
        }
    }
    let relaunch = Path::new(env!("CARGO_BIN_EXE_relaunch"));
    let me = std::env::current_exe().expect("the bench's own path");
    println!("relaunch: {}", relaunch.display());
    println!("{lines} lines of {LINE_LEN} bytes per run, {runs} runs per mode\n");
    let modes = [Mode::Direct, Mode::Inherit, Mode::Capture];
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
    for _ in 0..runs {
        for (i, mode) in modes.iter().enumerate() {
            results[i].push(run(*mode, relaunch, &me, lines));
        }
    }
    println!(
        "{:<8} {:>14} {:>14} {:>22} {:>18}",
        "mode", "lines/s (med)", "lines/s (min)", "master CPU s/M lines", "master CPU % core"
    );
    for (mode, runs) in modes.iter().zip(&results) {
        let mut rates: Vec<f64> = runs.iter().map(|r| lines as f64 / r.secs).collect();
        rates.sort_by(f64::total_cmp);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let cpu_per_m = median(
            runs.iter()
                .map(|r| r.master_cpu * 1e6 / lines as f64)
                .collect(),
        );
        let cpu_share = median(runs.iter().map(|r| 100.0 * r.master_cpu / r.secs).collect());
        let (cpu_per_m, cpu_share) = match mode {
            Mode::Direct => ("-".to_owned(), "-".to_owned()),
            _ => (format!("{cpu_per_m:.3}"), format!("{cpu_share:.1}")),
        };
        println!(
            "{:<8} {:>14.0} {:>14.0} {:>22} {:>18}",
            mode.name(),
            rates[rates.len() / 2],
            rates[0],
            cpu_per_m,
            cpu_share
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Direct,
    Inherit,
    Capture,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Inherit => "inherit",
            Mode::Capture => "capture",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    /// From the first line read to the last.
    secs: f64,
    /// relaunch's utime + stime over the run, in seconds (0 for direct).
    master_cpu: f64,
}

/// Writes `n` numbered lines of [`LINE_LEN`] bytes, then waits to be stopped (so that relaunch
/// sees a program that keeps running, not one that exits before it counts as started).
fn writer(n: usize) {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = [b'x'; LINE_LEN];
    line[LINE_LEN - 1] = b'\n';
    for i in 0..n {
        let number = format!("{i:012}");
        line[..12].copy_from_slice(number.as_bytes());
        out.write_all(&line).expect("write");
    }
    out.flush().expect("flush");
    drop(out);
    // Until relaunch (or the bench) stops us; stdin is /dev/null, so wait on a signal.
    std::thread::sleep(Duration::from_secs(3600));
}

fn run(mode: Mode, relaunch: &Path, me: &Path, lines: usize) -> Run {
    let mut cmd = match mode {
        Mode::Direct => Command::new(me),
        Mode::Inherit | Mode::Capture => {
            let mut cmd = Command::new(relaunch);
            cmd.args([
                "--listen",
                "127.0.0.1:0",
                "--no-control",
                "--output",
                mode.name(),
                "--",
            ])
            .arg(me)
            .env("RELAUNCH_LOG", "warn");
            cmd
        }
    };
    cmd.env("RELAUNCH_BENCH_WRITER", lines.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start");
    let pid = child.id() as i32;
    let mut reader = BufReader::with_capacity(256 * 1024, child.stdout.take().unwrap());
    let cpu_before = cpu_secs(pid);
    let mut line = Vec::with_capacity(LINE_LEN);
    let mut seen = 0usize;
    let mut first = None;
    while seen < lines {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).expect("read");
        assert!(
            n > 0,
            "{}: the stream ended after {seen} lines",
            mode.name()
        );
        assert_eq!(
            line.len(),
            LINE_LEN,
            "{}: a line was cut or mixed",
            mode.name()
        );
        first.get_or_insert_with(Instant::now);
        seen += 1;
    }
    let secs = first.expect("lines").elapsed().as_secs_f64();
    let master_cpu = match mode {
        Mode::Direct => 0.0,
        _ => cpu_secs(pid) - cpu_before,
    };
    stop(&mut child, pid, mode);
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    Run { secs, master_cpu }
}

fn stop(child: &mut Child, pid: i32, mode: Mode) {
    let signal = match mode {
        Mode::Direct => Signal::SIGKILL,
        _ => Signal::SIGTERM,
    };
    // Our own child, not reaped yet: the pid is still its.
    let _ = kill(Pid::from_raw(pid), signal);
    let _ = child.wait();
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    let hz = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64);
    (ticks(11) + ticks(12)) / hz
}
