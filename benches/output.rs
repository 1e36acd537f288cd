//! What passing the children's output through relaunch costs, side by side in one run.
//!
//! Run (release build, the project's profile):
//!
//! ```text
//! cargo bench --bench output -- [--lines N] [--line-bytes B] [--runs R] [--modes LIST]
//!     [--baseline PATH]
//! ```
//!
//! (defaults: 2,000,000 lines of 80 bytes, 5 rounds, every mode). A writer (this binary, run
//! again as `output --writer N B BENCH_PID`) writes N numbered lines of B bytes to its stdout as
//! fast as it can, through a 64 KiB buffer, then waits to be stopped. The modes:
//!
//! - **direct**: no relaunch; the writer's stdout is a pipe the bench reads;
//! - **inherit**: `relaunch --output inherit`; the writer inherits relaunch's stdout, the
//!   bench's pipe;
//! - **capture** (the default mode): relaunch reads the writer's pipe, keeps the tail for
//!   failure reports and forwards whole lines to its own stdout, the bench's pipe;
//! - **log**: `--stdout-log FILE --log-max-bytes 32MB --log-backups K` (K enough for the whole
//!   run): relaunch writes the lines into FILE with rotation (in cargo's per-target temp dir); the bench polls the files'
//!   sizes, then checks every line in them;
//! - **baseline** (only with `--baseline PATH`): capture with another relaunch binary, to
//!   measure a change before and after in the same run.
//!
//! The bench reads the pipe as a container runtime or journald would, checking that every line
//! arrives whole, and times from the first byte to the last. Each round runs every mode once,
//! in a rotated order, so machine noise hits all alike; the table gives medians over the rounds,
//! the ratio of each mode's median rate to direct's, and the CPU time relaunch's master used
//! (utime + stime from `/proc/PID/stat`) from the first byte to the last.
//!
//! The writer argument is passed on the command line, not in the environment: relaunch gives
//! its children its environment less `RELAUNCH_*`, and a writer that did not know it was one
//! would start the bench again under relaunch, and so on. For the same reason the bench refuses
//! to run with `LISTEN_FDS` set (that is, under relaunch). Every process is stopped by pid at the
//! end of each run, also on errors; a writer whose parent or bench is gone exits by itself.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getppid, sysconf, Pid, SysconfVar};

/// The width of the line number each line starts with.
const NUMBER_WIDTH: usize = 12;
/// The log mode's rotation: small enough that a run rotates a few times. It keeps enough
/// backups for every line of the run ([`log_backups`]), so that the bench can check them all.
const LOG_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// How long one run may take before the bench gives up on it.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--writer") {
        return writer(&args[1..]);
    }
    if std::env::var_os("LISTEN_FDS").is_some() {
        eprintln!("output bench: LISTEN_FDS is set (running under relaunch?); refusing to start another bench");
        return ExitCode::from(2);
    }
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("output bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Inherit,
    Capture,
    Log,
    Baseline,
}

const MODES: [Mode; 4] = [Mode::Direct, Mode::Inherit, Mode::Capture, Mode::Log];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Inherit => "inherit",
            Mode::Capture => "capture",
            Mode::Log => "log",
            Mode::Baseline => "baseline",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    lines: usize,
    line_bytes: usize,
    runs: usize,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    /// From the first byte seen to the last.
    secs: f64,
    /// relaunch's utime + stime over the same span, in seconds (0 for direct).
    master_cpu: f64,
}

fn usage() -> &'static str {
    "usage: cargo bench --bench output -- [--lines N] [--line-bytes B] [--runs R] \
     [--modes direct,inherit,capture,log] [--baseline RELAUNCH]"
}

fn bench(args: &[String]) -> Result<()> {
    let mut config = Config {
        lines: 2_000_000,
        line_bytes: 80,
        runs: 5,
    };
    let mut modes = MODES.to_vec();
    let mut baseline: Option<PathBuf> = None;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        let mut value = |what: &str| -> Result<&String> {
            args.next()
                .with_context(|| format!("{what} needs a value; {}", usage()))
        };
        let number = |what: &str, v: &String| -> Result<usize> {
            v.parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .with_context(|| format!("{what} {v:?}: expected a positive whole number"))
        };
        match a.as_str() {
            "--lines" => config.lines = number("--lines", value("--lines")?)?,
            "--line-bytes" => config.line_bytes = number("--line-bytes", value("--line-bytes")?)?,
            "--runs" => config.runs = number("--runs", value("--runs")?)?,
            "--modes" => {
                let list = value("--modes")?;
                modes = list
                    .split(',')
                    .map(|m| {
                        MODES.into_iter().find(|x| x.name() == m).with_context(|| {
                            format!("--modes: {m:?} is not a mode (direct, inherit, capture, log)")
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            "--baseline" => baseline = Some(PathBuf::from(value("--baseline")?)),
            "--bench" => {}
            "--help" | "-h" => {
                println!("{}", usage());
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; {}", usage()),
        }
    }
    ensure!(
        config.line_bytes > NUMBER_WIDTH,
        "--line-bytes {}: must be more than {NUMBER_WIDTH} (the line number and a newline)",
        config.line_bytes
    );
    let relaunch = Path::new(env!("CARGO_BIN_EXE_relaunch"));
    if let Some(path) = &baseline {
        ensure!(
            path.is_file(),
            "--baseline {}: no such file (expected a relaunch binary)",
            path.display()
        );
        println!("baseline: {}", path.display());
        modes.push(Mode::Baseline);
    }
    let me = std::env::current_exe().context("the bench's own path")?;
    let scratch =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("output-bench-{}", std::process::id()));
    let mb = (config.lines * config.line_bytes) as f64 / 1e6;
    println!("relaunch: {}", relaunch.display());
    println!(
        "{} lines of {} bytes ({mb:.0} MB) per run, {} rounds, modes {}",
        config.lines,
        config.line_bytes,
        config.runs,
        modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(",")
    );
    println!("load average at start: {}", loadavg());
    let results = rounds(&modes, relaunch, baseline.as_deref(), &me, &scratch, config);
    // Also after an error: the log mode's files are in it.
    let _ = fs::remove_dir_all(&scratch);
    let results = results?;
    println!("load average at end: {}\n", loadavg());
    print_table(&modes, &results, config);
    Ok(())
}

/// Every mode once per round, in a rotated order.
fn rounds(
    modes: &[Mode],
    relaunch: &Path,
    baseline: Option<&Path>,
    me: &Path,
    scratch: &Path,
    config: Config,
) -> Result<Vec<Vec<Run>>> {
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
    for round in 0..config.runs {
        for k in 0..modes.len() {
            let i = (round + k) % modes.len();
            let binary = match modes[i] {
                Mode::Baseline => baseline.unwrap_or(relaunch),
                _ => relaunch,
            };
            let run = run(modes[i], binary, me, scratch, config)
                .with_context(|| format!("round {}, mode {}", round + 1, modes[i].name()))?;
            results[i].push(run);
        }
        eprintln!("round {} of {} done", round + 1, config.runs);
    }
    Ok(results)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(modes: &[Mode], results: &[Vec<Run>], config: Config) {
    let lines = config.lines as f64;
    let bytes = lines * config.line_bytes as f64;
    let rate = |runs: &[Run]| median(runs.iter().map(|r| lines / r.secs).collect());
    let direct = modes
        .iter()
        .position(|&m| m == Mode::Direct)
        .map(|i| rate(&results[i]));
    println!(
        "{:<8} {:>13} {:>13} {:>13} {:>9} {:>9} {:>12} {:>11}",
        "mode",
        "lines/s med",
        "lines/s min",
        "lines/s max",
        "MB/s med",
        "vs direct",
        "CPU s/M ln",
        "CPU % core"
    );
    for (mode, runs) in modes.iter().zip(results) {
        let rates: Vec<f64> = runs.iter().map(|r| lines / r.secs).collect();
        let med = rate(runs);
        let mbps = median(runs.iter().map(|r| bytes / r.secs / 1e6).collect());
        let ratio = direct.map_or("-".to_owned(), |d| format!("{:.2}x", med / d));
        let (cpu_per_m, cpu_share) = if *mode == Mode::Direct {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!(
                    "{:.3}",
                    median(runs.iter().map(|r| r.master_cpu * 1e6 / lines).collect())
                ),
                format!(
                    "{:.0}",
                    median(runs.iter().map(|r| 100.0 * r.master_cpu / r.secs).collect())
                ),
            )
        };
        println!(
            "{:<8} {:>13.0} {:>13.0} {:>13.0} {:>9.0} {:>9} {:>12} {:>11}",
            mode.name(),
            med,
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
            mbps,
            ratio,
            cpu_per_m,
            cpu_share
        );
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A process the bench started: stopped and reaped by pid when dropped, whatever happened.
struct Guard {
    child: Child,
    pid: Pid,
    /// The signal that stops it cleanly (relaunch then stops its child).
    stop: Signal,
}

impl Guard {
    fn spawn(cmd: &mut Command, stop: Signal) -> Result<Guard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let pid = Pid::from_raw(child.id() as i32);
        Ok(Guard { child, pid, stop })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Our own child, not reaped yet: the pid is still its.
        let _ = kill(self.pid, self.stop);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn run(mode: Mode, relaunch: &Path, me: &Path, scratch: &Path, config: Config) -> Result<Run> {
    let log_dir = scratch.join("log");
    let log = log_dir.join("out.log");
    let mut cmd = match mode {
        Mode::Direct => Command::new(me),
        Mode::Inherit | Mode::Capture | Mode::Log | Mode::Baseline => {
            let mut cmd = Command::new(relaunch);
            cmd.args(["--listen", "127.0.0.1:0", "--no-control"])
                .args(["--restart", "never", "--on-exit", "exit"])
                .args(["--stop-wait-secs", "2"]);
            match mode {
                Mode::Inherit => {
                    cmd.args(["--output", "inherit"]);
                }
                Mode::Capture | Mode::Baseline => {
                    cmd.args(["--output", "capture"]);
                }
                _ => {
                    let _ = fs::remove_dir_all(&log_dir);
                    fs::create_dir_all(&log_dir)
                        .with_context(|| format!("creating {}", log_dir.display()))?;
                    cmd.arg("--stdout-log")
                        .arg(&log)
                        .arg("--log-max-bytes")
                        .arg(LOG_MAX_BYTES.to_string())
                        .arg("--log-backups")
                        .arg(log_backups(config).to_string());
                }
            }
            cmd.arg("--").arg(me).env("RELAUNCH_LOG", "warn");
            cmd
        }
    };
    cmd.arg("--writer")
        .arg(config.lines.to_string())
        .arg(config.line_bytes.to_string())
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let stop = if mode == Mode::Direct {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let result = if mode == Mode::Log {
        cmd.stdout(Stdio::null());
        let guard = Guard::spawn(&mut cmd, stop)?;
        let run = watch_log(&guard, &log_dir, &log, config);
        drop(guard);
        run.and_then(|run| check_log(&log, config).map(|()| run))
    } else {
        cmd.stdout(Stdio::piped());
        let mut guard = Guard::spawn(&mut cmd, stop)?;
        let stdout = guard.child.stdout.take().context("the child's stdout")?;
        let run = read_pipe(mode, &guard, stdout, config);
        drop(guard);
        run
    };
    if mode == Mode::Log {
        let _ = fs::remove_dir_all(&log_dir);
    }
    result
}

/// Reads the stream until every line arrived, checking that each is whole: with lines of one
/// length, the newlines must fall exactly every `line_bytes` bytes.
fn read_pipe(
    mode: Mode,
    guard: &Guard,
    mut stdout: std::process::ChildStdout,
    config: Config,
) -> Result<Run> {
    let total = config.lines * config.line_bytes;
    let mut buf = vec![0u8; 256 * 1024];
    let mut seen = 0usize;
    let mut first: Option<(Instant, f64)> = None;
    let deadline = Instant::now() + RUN_DEADLINE;
    while seen < total {
        ensure!(
            Instant::now() < deadline,
            "no end after {RUN_DEADLINE:?} ({seen} of {total} bytes)"
        );
        let n = stdout.read(&mut buf).context("reading the pipe")?;
        ensure!(
            n > 0,
            "the stream ended after {seen} of {total} bytes (did the writer die?)"
        );
        if first.is_none() {
            first = Some((Instant::now(), master_cpu(mode, guard.pid)));
        }
        let chunk = &buf[..n];
        // The offset in `chunk` of the next newline, if the lines are whole.
        let mut at = config.line_bytes - 1 - seen % config.line_bytes;
        while at < n {
            ensure!(
                chunk[at] == b'\n',
                "line {} was cut or mixed",
                (seen + at) / config.line_bytes
            );
            at += config.line_bytes;
        }
        ensure!(
            seen + n <= total,
            "more bytes than written: {} of {total}",
            seen + n
        );
        seen += n;
    }
    let (start, cpu_before) = first.context("no bytes")?;
    let secs = start.elapsed().as_secs_f64();
    let master_cpu = master_cpu(mode, guard.pid) - cpu_before;
    Ok(Run { secs, master_cpu })
}

/// Polls the log files' total size from the first byte to the last (two polls in a row at the
/// full size: a rotation renames files while they are being counted).
fn watch_log(guard: &Guard, dir: &Path, log: &Path, config: Config) -> Result<Run> {
    let total = (config.lines * config.line_bytes) as u64;
    let mut first: Option<(Instant, f64)> = None;
    let mut full_polls = 0;
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        let size = log_files(dir, log, config)
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .sum::<u64>();
        if size > 0 && first.is_none() {
            first = Some((Instant::now(), master_cpu(Mode::Log, guard.pid)));
        }
        if size >= total {
            full_polls += 1;
            if full_polls == 2 {
                break;
            }
        } else {
            full_polls = 0;
        }
        ensure!(
            Instant::now() < deadline,
            "no end after {RUN_DEADLINE:?} ({size} of {total} bytes in the log files)"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (start, cpu_before) = first.context("no bytes")?;
    // The second full poll came 1 ms after the first.
    let secs = (start.elapsed().as_secs_f64() - 0.001).max(1e-6);
    let master_cpu = master_cpu(Mode::Log, guard.pid) - cpu_before;
    Ok(Run { secs, master_cpu })
}

/// Backups enough to keep every line of a run.
fn log_backups(config: Config) -> u64 {
    (config.lines * config.line_bytes) as u64 / LOG_MAX_BYTES + 2
}

/// `FILE.N` … `FILE.1`, `FILE`: oldest first.
fn log_files(dir: &Path, log: &Path, config: Config) -> Vec<PathBuf> {
    let name = log.file_name().unwrap_or_default().to_string_lossy();
    let mut files: Vec<PathBuf> = (1..=log_backups(config))
        .rev()
        .map(|i| dir.join(format!("{name}.{i}")))
        .collect();
    files.push(log.to_path_buf());
    files
}

/// Every line is in the files, whole, numbered in order, and no file is over the limit.
fn check_log(log: &Path, config: Config) -> Result<()> {
    let dir = log.parent().context("the log's directory")?;
    let mut next = 0usize;
    for path in log_files(dir, log, config) {
        let Ok(data) = fs::read(&path) else { continue };
        ensure!(
            data.len() as u64 <= LOG_MAX_BYTES,
            "{} has {} bytes, over --log-max-bytes {LOG_MAX_BYTES}",
            path.display(),
            data.len()
        );
        ensure!(
            data.len() % config.line_bytes == 0,
            "{} does not hold whole lines",
            path.display()
        );
        for line in data.chunks(config.line_bytes) {
            ensure!(
                line.ends_with(b"\n") && line[..NUMBER_WIDTH] == number(next),
                "{}: line {next} is not where it should be",
                path.display()
            );
            next += 1;
        }
    }
    ensure!(
        next == config.lines,
        "{next} of {} lines in the log files",
        config.lines
    );
    Ok(())
}

/// `n` as [`NUMBER_WIDTH`] decimal digits.
fn number(mut n: usize) -> [u8; NUMBER_WIDTH] {
    let mut digits = [b'0'; NUMBER_WIDTH];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits
}

/// utime + stime of relaunch's master, in seconds (0 for direct).
fn master_cpu(mode: Mode, pid: Pid) -> f64 {
    if mode == Mode::Direct {
        return 0.0;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// `--writer N B BENCH_PID`: writes N numbered lines of B bytes, then waits to be stopped
/// (so that relaunch sees a program that keeps running). Exits by itself once its parent (the
/// bench, or relaunch) or the bench is gone, so nothing outlives a bench that died.
fn writer(args: &[String]) -> ExitCode {
    let parsed = (|| -> Option<(usize, usize, i32)> {
        Some((
            args.first()?.parse().ok()?,
            args.get(1)?.parse().ok()?,
            args.get(2)?.parse().ok()?,
        ))
    })();
    let Some((lines, line_bytes, bench)) = parsed.filter(|p| p.1 > NUMBER_WIDTH) else {
        eprintln!("output bench: usage: output --writer LINES LINE_BYTES BENCH_PID");
        return ExitCode::from(2);
    };
    let parent = getppid();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = vec![b'x'; line_bytes];
    line[line_bytes - 1] = b'\n';
    for i in 0..lines {
        line[..NUMBER_WIDTH].copy_from_slice(&number(i));
        if out.write_all(&line).is_err() {
            // The reader is gone (the bench stopped): nothing to report to.
            return ExitCode::from(1);
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(1);
    }
    drop(out);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if getppid() != parent || kill(Pid::from_raw(bench), None).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}
