//! One master, many programs (BENCHMARKS.md "Many programs"):
//!
//! ```sh
//! cargo build --release --bins --examples
//! cargo bench --bench programs -- --runs 3
//! ```
//!
//! Each run starts `relaunch --config FILE` on 1, 10, 100 and 1,000 programs, each a `hello`
//! with one TCP socket on 127.0.0.1 port 0, `ready = "notify"` and its output captured (the
//! defaults), and measures, per program count:
//!
//! * **start**: from spawning the master until it logged every program `running` (each
//!   child sent READY=1), and **stop**: from SIGTERM to the master until it exited and every
//!   child it had is gone;
//! * **memory**: the master's VmRSS, RssAnon and PSS (`/proc/PID/smaps_rollup`) once every
//!   program runs (a file with no program is refused, so 1 program is the base);
//! * **cost of one wake-up**: the master's CPU time (`/proc/PID/schedstat`, ns) over a number
//!   of SIGCHLDs sent 2 ms apart, each a wake-up that finds nothing to do (no child exited),
//!   divided by the wake-ups counted (voluntary context switches);
//! * **status**: the time `relaunch status --json` takes (the client process, end to end) and
//!   one raw status request on the control socket, medians;
//!
//! and with the most programs also:
//!
//! * **idle wake-ups**: the master's voluntary + involuntary context switches over an idle
//!   window;
//! * **one program reloading among idle ones**: closed-loop load (new connection per request)
//!   on the first program while it is reloaded with `relaunch reload --wait NAME`, again and
//!   again, with a steady gap between; p50/p99 of requests started inside a reload window
//!   (reload asked → the old server exited) against those outside; 0 failed requests.
//!
//! Every process it starts is killed by pid at the end, also on error or Ctrl-C: the master's
//! tree by `Proc`'s drop, and anything left under the benchmark (a subreaper) by a last sweep.
//! relaunch raises its own open-file limit for the programs; the benchmark checks that the hard
//! limit allows it. Results: `target/bench-programs/report.md`, with medians over the runs.

#[allow(dead_code)]
#[path = "reload/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "reload/procs.rs"]
mod procs;

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use load::{Load, LoadConfig, Mode, Outcome};
use procs::{Proc, Usage};

/// One master running many programs: memory, wake-ups, status, start, stop, one reload.
#[derive(Parser, Debug, Clone)]
#[command(name = "programs", about)]
struct Opts {
    /// Program counts to measure, ascending; the last one also gets the idle and reload
    /// measurements.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    counts: Vec<usize>,
    /// Runs of the whole set; the report gives the median of each figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Idle window on the largest master, s.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Wake-ups (SIGCHLD) sent to measure the cost of one.
    #[arg(long, default_value_t = 300)]
    wakeups: usize,
    /// `status --json` calls timed per master.
    #[arg(long, default_value_t = 9)]
    status_calls: usize,
    /// Reloads of the first program under load.
    #[arg(long, default_value_t = 20)]
    reloads: usize,
    /// Steady load between two reloads, ms.
    #[arg(long, default_value_t = 1000)]
    gap_ms: u64,
    /// Closed-loop clients on the reloaded program.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Deadline for the masters to start or stop, s.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Where the report, the config files and the logs go.
    #[arg(long, default_value = "target/bench-programs")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    if std::env::args().len() == 1 {
        // `cargo test --benches` runs bench targets without arguments: do nothing there.
        eprintln!("programs benchmark: run it with `cargo bench --bench programs -- --runs 3`");
        return;
    }
    let opts = Opts::parse();
    let result = run(&opts);
    sweep_leftovers();
    if let Err(e) = result {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// Binaries and places.
struct Setup {
    relaunch: PathBuf,
    hello: PathBuf,
    out: PathBuf,
}

fn setup(opts: &Opts) -> Result<Setup> {
    let relaunch = PathBuf::from(env!("CARGO_BIN_EXE_relaunch"));
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    // target/<profile>/deps/programs-HASH -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected benchmark location")?;
    let hello = profile_dir.join("examples").join("hello");
    if !hello.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release --examples`",
            hello.display()
        );
    }
    let out = std::env::current_dir()?.join(&opts.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(Setup {
        relaunch,
        hello,
        out,
    })
}

/// What one master measured.
#[derive(Debug, Clone, Default)]
struct Point {
    start_ms: f64,
    stop_ms: f64,
    rss_kib: u64,
    anon_kib: u64,
    pss_kib: u64,
    fds: usize,
    wakeup_us: f64,
    wakeups_counted: u64,
    status_cli_ms: f64,
    status_raw_ms: f64,
    status_bytes: usize,
    /// The largest master only.
    idle: Option<Idle>,
    reload: Option<ReloadFigures>,
    rss_after_kib: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Idle {
    secs: f64,
    voluntary: u64,
    involuntary: u64,
}

#[derive(Debug, Clone, Default)]
struct ReloadFigures {
    reloads: usize,
    reload_ms: f64,
    requests: usize,
    failed: u64,
    p50_steady_us: u64,
    p99_steady_us: u64,
    p50_reload_us: u64,
    p99_reload_us: u64,
    in_reload: usize,
}

fn run(opts: &Opts) -> Result<()> {
    procs::init()?;
    let setup = setup(opts)?;
    let largest = *opts.counts.iter().max().context("--counts is empty")?;
    check_fd_limit(largest)?;
    let header = header();
    eprintln!("{header}");
    let mut runs: Vec<Vec<Point>> = Vec::new();
    for run in 1..=opts.runs {
        let mut points = Vec::new();
        for &n in &opts.counts {
            eprintln!("bench: run {run}/{}: {n} programs", opts.runs);
            let point = measure(opts, &setup, n, n == largest)
                .with_context(|| format!("run {run}, {n} programs"))?;
            eprintln!("bench:   {point:?}");
            points.push(point);
        }
        runs.push(points);
    }
    let report = format!("{header}\n{}", report(opts, &runs));
    fs::write(setup.out.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("bench: report in {}", setup.out.join("report.md").display());
    Ok(())
}

/// relaunch raises its soft open-file limit to the hard one when the programs need it (about
/// 8 fds per program at the peak of a reload); the hard limit must allow it.
fn check_fd_limit(programs: usize) -> Result<()> {
    use nix::sys::resource::{getrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    let needed = 8 * programs as u64 + 64;
    if hard < needed {
        bail!(
            "{programs} programs need up to {needed} open files in the master, but the hard limit RLIMIT_NOFILE is {hard}; raise it (ulimit -Hn) or pass smaller --counts"
        );
    }
    Ok(())
}

fn header() -> String {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "## programs benchmark\n\n- command: `cargo bench --bench programs -- {}`\n- started: {}\n- machine: {cores} cores, Linux {}\n- uptime: {}\n",
        args.join(" "),
        sh("date -u '+%Y-%m-%d %H:%M:%S UTC'"),
        sh("uname -r"),
        sh("uptime"),
    )
}

/// The config file of `n` programs.
fn write_config(setup: &Setup, n: usize) -> Result<(PathBuf, PathBuf)> {
    let control = setup.out.join(format!("ctl-{n}.sock"));
    let mut text = format!(
        "[relaunch]\nname = \"bench-programs-{n}\"\ncontrol = \"{}\"\n",
        control.display()
    );
    for i in 0..n {
        let _ = write!(
            text,
            "\n[program.p{i:04}]\ncommand = [\"{}\"]\nlisten = [\"http=127.0.0.1:0\"]\nready = \"notify\"\n",
            setup.hello.display()
        );
    }
    let path = setup.out.join(format!("programs-{n}.toml"));
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, control))
}

fn measure(opts: &Opts, setup: &Setup, n: usize, largest: bool) -> Result<Point> {
    let (config, control) = write_config(setup, n)?;
    let log = setup.out.join(format!("relaunch-{n}.log"));
    let _ = fs::remove_file(&log);
    let mut cmd = Command::new(&setup.relaunch);
    cmd.arg("--config").arg(&config);
    let deadline = Instant::now() + Duration::from_secs(opts.timeout_secs);
    let t0 = Instant::now();
    let mut master = Proc::spawn(&format!("relaunch-{n}"), cmd, &log)?;
    let pid = master.pid();
    // Started: one `running` line per program.
    let mut seen = 0;
    let mut from = 0;
    while seen < n {
        procs::check_interrupted()?;
        if let Some((i, _)) = master.find_line(from, |l| l.contains(": running generation=")) {
            seen += 1;
            from = i + 1;
            continue;
        }
        if master.try_wait()?.is_some() {
            bail!("relaunch exited while starting:\n{}", master.tail(15));
        }
        if Instant::now() > deadline {
            bail!("{seen} of {n} programs running after {:?}", t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let start_ms = ms(t0.elapsed());
    let status = raw_status(&control)?;
    let programs = status["programs"]
        .as_array()
        .context("no programs in status")?;
    if programs.len() != n || programs.iter().any(|p| p["state"] != "RUNNING") {
        bail!("not every program is RUNNING although each logged running");
    }
    let addr: std::net::SocketAddr = programs[0]["sockets"][0]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .context("no address for the first program")?;
    // Let the children's startup output drain and the master settle.
    procs::sleep(Duration::from_millis(500))?;
    let usage = Usage::of(pid).context("master gone")?;
    let pss_kib = pss_kib(pid);

    let (wakeup_us, wakeups_counted) = wakeup_cost(pid, opts.wakeups)?;

    let mut raw = Vec::new();
    let mut cli = Vec::new();
    let mut status_bytes = 0;
    for _ in 0..opts.status_calls {
        let t = Instant::now();
        let line = raw_status_line(&control)?;
        raw.push(ms(t.elapsed()));
        status_bytes = line.len();
        let t = Instant::now();
        let out = Command::new(&setup.relaunch)
            .args(["status", "--json", "--control"])
            .arg(&control)
            .stdin(Stdio::null())
            .output()?;
        cli.push(ms(t.elapsed()));
        if !out.status.success() || out.stdout.len() < status_bytes / 2 {
            bail!(
                "relaunch status --json failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let mut point = Point {
        start_ms,
        rss_kib: usage.rss_kib,
        anon_kib: usage.anon_kib,
        pss_kib,
        fds: usage.fds,
        wakeup_us,
        wakeups_counted,
        status_cli_ms: median(&mut cli),
        status_raw_ms: median(&mut raw),
        status_bytes,
        ..Point::default()
    };
    if largest {
        // The last status client has exited, but the master may not have seen its
        // connection close yet on a loaded machine: that wake-up is not an idle one.
        procs::sleep(Duration::from_secs(1))?;
        point.idle = Some(idle(pid, Duration::from_secs(opts.idle_secs))?);
        point.reload = Some(reload_under_load(opts, setup, &control, addr)?);
        point.rss_after_kib = Usage::of(pid).map_or(0, |u| u.rss_kib);
    }

    // Stop: SIGTERM until the master exited and every child it had is gone: the children
    // alive now; a pid counts as gone once it is no child of the master's or ours any more
    // (pids are reused: another process on the machine may take one).
    let children = current_pids(&control)?;
    let mine = [pid, std::process::id() as i32];
    let gone = |c: i32| procs::stat(c).is_none_or(|st| st.state == 'Z' || !mine.contains(&st.ppid));
    let t = Instant::now();
    master.signal(libc::SIGTERM)?;
    procs::wait_for(
        deadline_from_now(opts),
        Duration::from_millis(1),
        "relaunch to exit",
        || Ok(master.try_wait()?.map(|_| ())),
    )?;
    procs::wait_for(
        deadline_from_now(opts),
        Duration::from_millis(1),
        "the children to go",
        || Ok(children.iter().all(|&c| gone(c)).then_some(())),
    )?;
    point.stop_ms = ms(t.elapsed());
    Ok(point)
}

fn deadline_from_now(opts: &Opts) -> Instant {
    Instant::now() + Duration::from_secs(opts.timeout_secs)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One `{"v":1,"cmd":"status"}` on the control socket: the answer line.
fn raw_status_line(control: &Path) -> Result<String> {
    let mut stream = UnixStream::connect(control)
        .with_context(|| format!("connecting to {}", control.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if !line.ends_with('\n') {
        bail!("the status answer was cut at {} bytes", line.len());
    }
    Ok(line)
}

fn raw_status(control: &Path) -> Result<serde_json::Value> {
    let line = raw_status_line(control)?;
    let answer: serde_json::Value = serde_json::from_str(&line)?;
    Ok(answer["status"].clone())
}

/// The pids of every live generation now.
fn current_pids(control: &Path) -> Result<Vec<i32>> {
    let status = raw_status(control)?;
    Ok(status["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["generations"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g["pid"].as_i64())
        .map(|p| p as i32)
        .collect())
}

/// `Pss` of `pid` from `/proc/PID/smaps_rollup`, KiB.
fn pss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Time on CPU of `pid`, ns (`/proc/PID/schedstat`).
fn cpu_ns(pid: i32) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("reading schedstat")
}

/// The master's CPU time per wake-up that finds nothing to do: SIGCHLD (no child exited),
/// `count` times, 2 ms apart. Returns (µs per wake-up, wake-ups counted).
fn wakeup_cost(pid: i32, count: usize) -> Result<(f64, u64)> {
    let before = Usage::of(pid).context("master gone")?;
    let cpu0 = cpu_ns(pid)?;
    for _ in 0..count {
        procs::kill(pid, libc::SIGCHLD);
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    let cpu1 = cpu_ns(pid)?;
    let after = Usage::of(pid).context("master gone")?;
    let woke = (after.voluntary_switches - before.voluntary_switches).max(1);
    Ok(((cpu1 - cpu0) as f64 / 1000.0 / woke as f64, woke))
}

fn idle(pid: i32, window: Duration) -> Result<Idle> {
    let a = Usage::of(pid).context("master gone")?;
    let t = Instant::now();
    procs::sleep(window)?;
    let b = Usage::of(pid).context("master gone")?;
    Ok(Idle {
        secs: t.elapsed().as_secs_f64(),
        voluntary: b.voluntary_switches - a.voluntary_switches,
        involuntary: b.involuntary_switches - a.involuntary_switches,
    })
}

/// Load on the first program; it is reloaded `opts.reloads` times, `opts.gap_ms` apart.
fn reload_under_load(
    opts: &Opts,
    setup: &Setup,
    control: &Path,
    addr: std::net::SocketAddr,
) -> Result<ReloadFigures> {
    let name = "p0000";
    let origin = Instant::now();
    let config = LoadConfig {
        addr,
        mode: Mode::Close,
        clients: opts.clients,
        timeout: Duration::from_secs(10),
    };
    let load = Load::start(config, origin)?;
    let us = |t: Instant| t.saturating_duration_since(origin).as_micros() as u64;
    let mut windows = Vec::new();
    let mut took = Vec::new();
    procs::sleep(Duration::from_millis(opts.gap_ms))?;
    for _ in 0..opts.reloads {
        let before = first_pid(control)?;
        let t = Instant::now();
        let out = Command::new(&setup.relaunch)
            .args(["reload", "--wait", "--timeout", "60", "--control"])
            .arg(control)
            .arg(name)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "reload --wait {name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        took.push(ms(t.elapsed()));
        procs::wait_for(
            deadline_from_now(opts),
            Duration::from_millis(1),
            "the old generation to exit",
            || Ok((!procs::alive(before)).then_some(())),
        )?;
        windows.push((us(t), us(Instant::now())));
        procs::sleep(Duration::from_millis(opts.gap_ms))?;
    }
    let result = load.finish();
    let inside = |s: &load::Sample| {
        let start = u64::from(s.start_us);
        windows.iter().any(|&(a, b)| start >= a && start <= b)
    };
    let mut steady: Vec<u64> = Vec::new();
    let mut reload: Vec<u64> = Vec::new();
    for s in result.samples.iter().filter(|s| s.outcome == Outcome::Ok) {
        match inside(s) {
            true => reload.push(u64::from(s.latency_us)),
            false => steady.push(u64::from(s.latency_us)),
        }
    }
    Ok(ReloadFigures {
        reloads: windows.len(),
        reload_ms: median(&mut took),
        requests: result.samples.len(),
        failed: result.failures(),
        p50_steady_us: percentile(&mut steady, 0.50),
        p99_steady_us: percentile(&mut steady, 0.99),
        p50_reload_us: percentile(&mut reload, 0.50),
        p99_reload_us: percentile(&mut reload, 0.99),
        in_reload: reload.len(),
    })
}

/// The first program's current pid.
fn first_pid(control: &Path) -> Result<i32> {
    let status = raw_status(control)?;
    status["programs"][0]["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["role"] == "current")
        .and_then(|g| g["pid"].as_i64())
        .map(|p| p as i32)
        .context("the first program has no current generation")
}

fn percentile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median over runs of `f` at program count index `i`.
fn med(runs: &[Vec<Point>], i: usize, f: impl Fn(&Point) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(i)).map(f).collect();
    median(&mut v)
}

fn report(opts: &Opts, runs: &[Vec<Point>]) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "Medians over {} run(s); each master runs N programs, each a `hello` with one TCP socket, `ready = \"notify\"`, output captured.\n",
        runs.len()
    );
    let _ = writeln!(
        r,
        "| programs | start (ms) | stop (ms) | VmRSS (KiB) | RssAnon (KiB) | PSS (KiB) | fds | CPU per wake-up (µs) (wake-ups) | `status --json` CLI (ms) | raw status (ms) | status bytes |"
    );
    let _ = writeln!(
        r,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (i, &n) in opts.counts.iter().enumerate() {
        let _ = writeln!(
            r,
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} ({:.0}) | {:.1} | {:.1} | {:.0} |",
            med(runs, i, |p| p.start_ms),
            med(runs, i, |p| p.stop_ms),
            med(runs, i, |p| p.rss_kib as f64),
            med(runs, i, |p| p.anon_kib as f64),
            med(runs, i, |p| p.pss_kib as f64),
            med(runs, i, |p| p.fds as f64),
            med(runs, i, |p| p.wakeup_us),
            med(runs, i, |p| p.wakeups_counted as f64),
            med(runs, i, |p| p.status_cli_ms),
            med(runs, i, |p| p.status_raw_ms),
            med(runs, i, |p| p.status_bytes as f64),
        );
    }
    if let (Some(first), Some(last)) = (opts.counts.first(), opts.counts.last()) {
        if last > first {
            let i = opts.counts.len() - 1;
            let span = (last - first) as f64;
            let per = |f: &dyn Fn(&Point) -> f64| (med(runs, i, f) - med(runs, 0, f)) / span;
            let _ = writeln!(
                r,
                "\nPer program ({first} → {last}): VmRSS {:.1} KiB, RssAnon {:.1} KiB, PSS {:.1} KiB, start {:.2} ms, stop {:.2} ms, CPU per wake-up {:.2} µs.",
                per(&|p| p.rss_kib as f64),
                per(&|p| p.anon_kib as f64),
                per(&|p| p.pss_kib as f64),
                per(&|p| p.start_ms),
                per(&|p| p.stop_ms),
                per(&|p| p.wakeup_us),
            );
        }
    }
    let i = opts.counts.len() - 1;
    let _ = writeln!(r, "\nWith {} programs, per run:\n", opts.counts[i]);
    let _ = writeln!(
        r,
        "| run | idle wake-ups (vol + invol) | reloads | reload --wait (ms, median) | requests | failed | p50 steady | p99 steady | p50 reload | p99 reload | p99 ratio | VmRSS after (KiB) |"
    );
    let _ = writeln!(
        r,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut ratios = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        let Some(p) = run.get(i) else { continue };
        let idle = p.idle.map_or("-".to_owned(), |d| {
            format!("{} + {} in {:.1} s", d.voluntary, d.involuntary, d.secs)
        });
        let Some(rl) = &p.reload else { continue };
        let ratio = rl.p99_reload_us as f64 / rl.p99_steady_us.max(1) as f64;
        ratios.push(ratio);
        let _ = writeln!(
            r,
            "| {} | {idle} | {} | {:.0} | {} | {} | {} µs | {} µs | {} µs | {} µs | {ratio:.2} | {} |",
            k + 1,
            rl.reloads,
            rl.reload_ms,
            rl.requests,
            rl.failed,
            rl.p50_steady_us,
            rl.p99_steady_us,
            rl.p50_reload_us,
            rl.p99_reload_us,
            p.rss_after_kib,
        );
    }
    let _ = writeln!(
        r,
        "\nMedian p99 ratio (inside reload windows / outside): {:.2}; requests inside reload windows per run: {}.",
        median(&mut ratios),
        runs.iter()
            .filter_map(|run| run.get(i)?.reload.as_ref().map(|rl| rl.in_reload.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    r
}

/// Kills every process still under the benchmark (a subreaper: orphans of the masters it ran
/// end up here), by pid, and reaps them.
fn sweep_leftovers() {
    let me = std::process::id() as i32;
    let left = procs::descendants(me);
    for &pid in &left {
        procs::kill(pid, libc::SIGKILL);
    }
    for pid in left {
        procs::reap_orphan(pid);
    }
}
