//! The reload benchmark: zero downtime under load, reload timing, and the master's footprint,
//! side by side with the tools users would pick instead. Results and how to read them:
//! `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release --examples
//! cargo bench --bench reload -- --reloads 100 --concurrency 64 --peers naive,systemfd,circus,gunicorn
//! cargo bench --bench reload -- --soak 1000
//! ```
//!
//! It is a `harness = false` bench target, not a workspace member: it needs no dependency
//! beyond relaunch's own and its dev-dependencies, so it adds nothing to what users build, and
//! `cargo clippy --all-targets` checks it with the rest.
//!
//! The same executable is also the *restarter* that runs under systemfd
//! (`reload --restarter -- CMD...`): on SIGHUP it stops CMD (SIGTERM, then waits for it to
//! exit) and starts it again, which is what cargo-watch / `watchexec --restart` do on a change.

// Shared with tests/zero_downtime.rs, which uses parts of it the benchmark does not.
mod generator;
#[allow(dead_code)]
mod load;
mod procs;
mod report;
mod svg;
mod targets;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;

use load::{Load, LoadConfig, Mode};
use procs::Usage;
use report::{Idle, Run};
use targets::{Kind, Settings, Target};

/// Zero-downtime reload benchmark for relaunch and its peers.
#[derive(Parser, Debug, Clone)]
#[command(name = "reload", about)]
struct Opts {
    /// Reloads per run.
    #[arg(long, default_value_t = 100)]
    reloads: usize,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connection modes to run: close (a new connection per request), keepalive.
    #[arg(long, value_delimiter = ',', default_value = "close,keepalive")]
    modes: Vec<String>,
    /// The server's own startup delay (`hello --startup-delay-ms`), in every setup.
    #[arg(long, default_value_t = 200)]
    startup_delay_ms: u64,
    /// relaunch `--start-secs` (must exceed the startup delay, or the old server is stopped
    /// before the new one serves).
    #[arg(long, default_value = "0.5")]
    start_secs: String,
    /// Pass `--ready MODE` to relaunch (e.g. `notify`; needs relaunch and hello support).
    #[arg(long)]
    ready: Option<String>,
    /// Extra argument for relaunch (repeatable).
    #[arg(long = "relaunch-arg", allow_hyphen_values = true)]
    relaunch_args: Vec<String>,
    /// Extra argument for hello, in every setup that runs it (repeatable), e.g.
    /// `--hello-arg=--drain-spread-ms --hello-arg=0`.
    #[arg(long = "hello-arg", allow_hyphen_values = true)]
    hello_args: Vec<String>,
    /// Steady time between the end of a reload and the next SIGHUP, ms.
    #[arg(long, default_value_t = 500)]
    gap_ms: u64,
    /// Load before the first reload that is not measured, ms.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Deadline of each request, ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Deadline of each reload, s.
    #[arg(long, default_value_t = 60)]
    reload_timeout_secs: u64,
    /// Peers to run too, comma-separated: naive,systemfd,systemfd-backlog,circus,gunicorn,
    /// socketmaster,einhorn.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// socketmaster's Go source tree (a checkout of zimbatm/socketmaster): the `socketmaster`
    /// peer is built from it with the local `go` (module proxy off). Without it, that peer is
    /// skipped.
    #[arg(long, env = "RELOAD_SOCKETMASTER_SRC")]
    socketmaster_src: Option<PathBuf>,
    /// einhorn's Ruby source tree (a checkout of contribsys/einhorn): the `einhorn` peer runs
    /// `RUBYLIB=DIR/lib ruby DIR/bin/einhorn`. Without it, that peer is skipped.
    #[arg(long, env = "RELOAD_EINHORN_SRC")]
    einhorn_src: Option<PathBuf>,
    /// Run only the peers, not relaunch.
    #[arg(long)]
    skip_relaunch: bool,
    /// Idle window measured on each master after its first run, s (0: skip).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Rounds of the relaunch-vs-baseline throughput comparison per mode (0: skip).
    #[arg(long, default_value_t = 6)]
    ratio_rounds: usize,
    /// Length of each throughput round, s.
    #[arg(long, default_value_t = 3)]
    ratio_secs: u64,
    /// Pin the throughput rounds: the load generator's threads on CPU 0, both servers' on
    /// CPU 1 (the relaunch master stays unpinned).
    #[arg(long)]
    ratio_pin: bool,
    /// Rounds per mode and placement of the load generator alone against hello, without
    /// relaunch: its rate and the CPU time of each side (0: skip).
    #[arg(long, default_value_t = 2)]
    generator_rounds: usize,
    /// Length of each of those rounds, s.
    #[arg(long, default_value_t = 3)]
    generator_secs: u64,
    /// Reloads of relaunch without any load, to measure spawn latency at rest (0: skip).
    #[arg(long, default_value_t = 30)]
    rest_reloads: usize,
    /// Soak mode: this many reloads back to back instead of the benchmark.
    #[arg(long)]
    soak: Option<usize>,
    /// relaunch `--start-secs` in soak mode.
    #[arg(long, default_value = "0.05")]
    soak_start_secs: String,
    /// Clients in soak mode.
    #[arg(long, default_value_t = 4)]
    soak_concurrency: usize,
    /// Reloads per reported window in soak mode.
    #[arg(long, default_value_t = 1000)]
    soak_window: usize,
    /// Where to write the report, the plot and the logs.
    #[arg(long, default_value = "target/bench-reload")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--restarter") {
        std::process::exit(restarter(&args[2..]));
    }
    if args.len() == 1 {
        // `cargo test --benches` runs bench targets without arguments: do nothing there.
        eprintln!(
            "reload benchmark: run it with `cargo bench --bench reload -- [OPTIONS]` (see --help)"
        );
        return;
    }
    let opts = Opts::parse();
    if let Err(e) = run(&opts) {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(opts: &Opts) -> Result<()> {
    procs::init()?;
    let settings = settings(opts)?;
    fs::create_dir_all(&settings.work)?;
    let started = SystemTime::now();
    let header = header(opts, started);
    eprintln!("{header}");

    if let Some(n) = opts.soak {
        let text = soak(opts, &settings, n)?;
        let report = format!("{header}\n{text}");
        write_out(opts, "soak.md", &report)?;
        println!("{report}");
        return Ok(());
    }

    let modes: Vec<Mode> = opts
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "close" => Ok(Mode::Close),
            "keepalive" | "keep-alive" => Ok(Mode::KeepAlive),
            other => bail!("unknown mode {other:?} (close, keepalive)"),
        })
        .collect::<Result<_>>()?;
    let mut kinds = Vec::new();
    if !opts.skip_relaunch {
        kinds.push(Kind::Relaunch);
    }
    let mut skipped = Vec::new();
    for p in &opts.peers {
        let kind = Kind::parse_peer(p)?;
        match kind.missing(&settings) {
            Some(why) => {
                eprintln!("bench: skipping peer {p}: {why}");
                skipped.push(format!("- {p}: skipped, {why}"));
            }
            None => kinds.push(kind),
        }
    }

    let mut runs = Vec::new();
    let mut failed_runs = Vec::new();
    for &mode in modes.iter().filter(|_| opts.reloads > 0) {
        for &kind in &kinds {
            let measure_idle = mode == modes[0] && opts.idle_secs > 0;
            eprintln!("bench: {} / {} ...", kind.name(), mode.describe());
            let run = match bench_run(opts, &settings, kind, mode, measure_idle) {
                Ok(run) => run,
                Err(e) => {
                    procs::check_interrupted()?;
                    let why = format!("{} / {}: {e:#}", kind.name(), mode.describe());
                    eprintln!("bench: run failed: {why}");
                    failed_runs.push(format!("- {why}"));
                    continue;
                }
            };
            let s = run.summary();
            eprintln!(
                "bench: {} / {}: {} requests, {} failed, p99 steady {} reload {}",
                kind.name(),
                mode.describe(),
                s.requests,
                s.failures,
                report::us(s.steady.p99),
                report::us(s.window.p99)
            );
            runs.push(run);
        }
    }

    let mut text = String::new();
    if !skipped.is_empty() {
        let _ = writeln!(text, "Peers not run:\n{}\n", skipped.join("\n"));
    }
    if !failed_runs.is_empty() {
        let _ = writeln!(text, "Runs that failed:\n{}\n", failed_runs.join("\n"));
    }
    if !runs.is_empty() {
        text.push_str(&report::tables(&runs));
        text.push('\n');
    }
    if opts.rest_reloads > 0 && !opts.skip_relaunch {
        eprintln!("bench: spawn latency at rest ...");
        text.push_str(&at_rest(opts, &settings, opts.rest_reloads)?);
    }
    if opts.ratio_rounds > 0 && !opts.skip_relaunch {
        for &mode in &modes {
            eprintln!(
                "bench: throughput relaunch vs baseline / {} ...",
                mode.describe()
            );
            text.push_str(&ratio(opts, &settings, mode)?);
        }
    }
    if opts.generator_rounds > 0 {
        text.push_str(&generator::check(
            &settings,
            &modes,
            opts.concurrency,
            opts.generator_secs,
            opts.generator_rounds,
            Duration::from_millis(opts.timeout_ms),
        )?);
    }
    if !runs.is_empty() {
        text.push_str(&report::details(&runs));
        let svg = svg::plot(&runs, "Latency through reloads");
        write_out(opts, "latency.svg", &svg)?;
        text.push_str(&format!(
            "Plot: `{}`\n",
            opts.out.join("latency.svg").display()
        ));
    }
    let report = format!("{header}\n{text}");
    write_out(opts, "report.md", &report)?;
    println!("{report}");
    Ok(())
}

fn write_out(opts: &Opts, name: &str, text: &str) -> Result<()> {
    fs::create_dir_all(&opts.out)?;
    let path = opts.out.join(name);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// Binaries and paths; fails with what to build if the example is missing or stale.
fn settings(opts: &Opts) -> Result<Settings> {
    let relaunch = PathBuf::from(env!("CARGO_BIN_EXE_relaunch"));
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    // target/<profile>/deps/reload-HASH -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected benchmark location")?;
    let hello = profile_dir.join("examples").join("hello");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello.rs");
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (mtime(&hello), mtime(&source)) {
        (None, _) => bail!(
            "{} not found: build the example first with `cargo build --release --examples`",
            hello.display()
        ),
        (Some(bin), Some(src)) if src > bin => bail!(
            "{} is older than examples/hello.rs: rebuild it with `cargo build --release --examples`",
            hello.display()
        ),
        _ => {}
    }
    if !relaunch.is_file() {
        bail!("{} not found (cargo bench builds it)", relaunch.display());
    }
    let out = if opts.out.is_absolute() {
        opts.out.clone()
    } else {
        std::env::current_dir()?.join(&opts.out)
    };
    let wants = |peer: &str| opts.peers.iter().any(|p| p == peer);
    let socketmaster = if wants("socketmaster") {
        build_socketmaster(opts.socketmaster_src.as_deref(), &out.join("peers"))
    } else {
        Err("not asked for".into())
    };
    let einhorn = if wants("einhorn") {
        find_einhorn(opts.einhorn_src.as_deref())
    } else {
        Err("not asked for".into())
    };
    Ok(Settings {
        relaunch,
        hello,
        bench_exe: exe,
        start_secs: opts.start_secs.clone(),
        ready: opts.ready.clone(),
        relaunch_args: opts.relaunch_args.clone(),
        hello_args: opts.hello_args.clone(),
        work: out.join("logs"),
        socketmaster,
        einhorn,
    })
}

/// Builds socketmaster from its source with the local Go toolchain into `dir`, offline: the
/// module proxy is off, so it builds only if it needs nothing beyond the standard library (or
/// what it vendors). Returns the executable, or why there is none.
fn build_socketmaster(src: Option<&Path>, dir: &Path) -> Result<PathBuf, String> {
    let Some(src) = src else {
        return Err("no source tree: pass --socketmaster-src DIR or set \
                    RELOAD_SOCKETMASTER_SRC (a checkout of zimbatm/socketmaster)"
            .into());
    };
    if !src.join("socketmaster.go").is_file() {
        return Err(format!(
            "{} has no socketmaster.go (expected a checkout of zimbatm/socketmaster)",
            src.display()
        ));
    }
    let Some(go) = procs::which("go") else {
        return Err("`go` is not in PATH (Debian: apt-get install golang-go)".into());
    };
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let exe = dir.join("socketmaster");
    let mut cmd = Command::new(go);
    cmd.current_dir(src)
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .env("GOPROXY", "off")
        .env("GOCACHE", dir.join("gocache"));
    if src.join("go.mod").is_file() {
        if src.join("vendor").is_dir() {
            cmd.env("GOFLAGS", "-mod=vendor");
        }
    } else {
        // No module file (socketmaster has none): build the package as it is, standard library
        // only.
        cmd.env("GO111MODULE", "off").env("GOFLAGS", "");
    }
    eprintln!("bench: building socketmaster from {} ...", src.display());
    let out = cmd.output().map_err(|e| format!("running go build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go build in {} failed ({}): {}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(exe)
}

/// Finds `ruby` and checks that einhorn runs from its source tree; returns both, or why not.
fn find_einhorn(src: Option<&Path>) -> Result<(PathBuf, PathBuf), String> {
    let Some(src) = src else {
        return Err(
            "no source tree: pass --einhorn-src DIR or set RELOAD_EINHORN_SRC \
                    (a checkout of contribsys/einhorn)"
                .into(),
        );
    };
    if !src.join("bin/einhorn").is_file() {
        return Err(format!(
            "{} has no bin/einhorn (expected a checkout of contribsys/einhorn)",
            src.display()
        ));
    }
    let Some(ruby) = procs::which("ruby") else {
        return Err("`ruby` is not in PATH (Debian: apt-get install ruby)".into());
    };
    let out = Command::new(&ruby)
        .env("RUBYLIB", src.join("lib"))
        .arg(src.join("bin/einhorn"))
        .arg("--version")
        .output()
        .map_err(|e| format!("running ruby: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "einhorn from {} does not run ({}): {}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let src = if src.is_absolute() {
        src.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(src)
    };
    Ok((ruby, src))
}

fn header(opts: &Opts, started: SystemTime) -> String {
    let secs = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut h = String::new();
    let _ = writeln!(h, "## reload benchmark\n");
    let _ = writeln!(
        h,
        "- command: `cargo bench --bench reload -- {}`",
        args.join(" ")
    );
    let _ = writeln!(h, "- started: {} (unix {secs})", utc(started));
    let _ = writeln!(
        h,
        "- machine: {cores} cores, {cpu}, Linux {}",
        kernel.trim()
    );
    let _ = writeln!(h, "- load average at start: {}", load.trim());
    if opts.soak.is_some() {
        return h;
    }
    if !opts.hello_args.is_empty() {
        let _ = writeln!(h, "- hello arguments: `{}`", opts.hello_args.join(" "));
    }
    let _ = writeln!(
        h,
        "- server startup delay {} ms; relaunch --start-secs {}{}; gap between reloads {} ms; \
         request timeout {} ms; {} clients",
        opts.startup_delay_ms,
        opts.start_secs,
        opts.ready
            .as_deref()
            .map_or(String::new(), |m| format!(" --ready {m}")),
        opts.gap_ms,
        opts.timeout_ms,
        opts.concurrency,
    );
    h
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn us_since(origin: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(origin).as_micros() as u64
}

/// One target, one mode: load, N reloads, measurements.
fn bench_run(
    opts: &Opts,
    settings: &Settings,
    kind: Kind,
    mode: Mode,
    measure_idle: bool,
) -> Result<Run> {
    let tag = format!("{}-{}", kind.name(), mode.name());
    let mut target = Target::start(kind, settings, opts.startup_delay_ms, &tag)?;
    let master = target.master();
    let origin = Instant::now();
    let load = Load::start(
        LoadConfig {
            addr: target.addr,
            mode,
            clients: opts.concurrency,
            timeout: Duration::from_millis(opts.timeout_ms),
        },
        origin,
    )?;
    procs::sleep(Duration::from_millis(opts.warmup_ms))?;
    let from_us = us_since(origin, Instant::now());
    let before = master.and_then(Usage::of);
    let mut reloads = Vec::new();
    let mut windows = Vec::new();
    let mut floor = Vec::new();
    let mut aborted = None;
    for i in 0..opts.reloads {
        procs::sleep(Duration::from_millis(opts.gap_ms))?;
        // Side by side with the reloads, under the same load: what exec alone costs.
        floor.extend(settings.exec_floor(&tag)?);
        let deadline = Instant::now() + Duration::from_secs(opts.reload_timeout_secs);
        let asked = procs::Stamp::now();
        let (r, stuck) = match target.reload(Some(&load), deadline) {
            Ok(r) => (r, false),
            // The reload did not finish in time (or the target died): record it as failed and
            // end this run; the target's state is unknown.
            Err(e) => (
                targets::Reload {
                    hup: asked,
                    complete: None,
                    window: asked.at.elapsed(),
                    spawn_latency: None,
                    failed: Some(format!("{e:#}")),
                    note: None,
                },
                true,
            ),
        };
        if let Some(why) = &r.failed {
            eprintln!("bench: reload {} failed: {why}", i + 1);
        }
        let start = us_since(origin, r.hup.at);
        windows.push((start, start + r.window.as_micros() as u64));
        reloads.push(r);
        if stuck {
            procs::check_interrupted()?;
            aborted = Some(format!(
                "stopped after reload {} of {}, which did not complete",
                i + 1,
                opts.reloads
            ));
            break;
        }
        if (i + 1) % 10 == 0 {
            eprintln!(
                "bench:   {} reloads, {} ok, {} failed requests",
                i + 1,
                load.ok(),
                load.failed()
            );
        }
    }
    procs::sleep(Duration::from_millis(opts.gap_ms))?;
    let to_us = us_since(origin, Instant::now());
    let result = load.finish();
    // Let the servers close their idle connections, then look at the master at rest.
    procs::sleep(Duration::from_millis(500))?;
    let after = master.and_then(Usage::of);
    let rss_breakdown = master.map(procs::rss_breakdown).unwrap_or_default();
    let idle = match master {
        Some(pid) if measure_idle => idle(pid, Duration::from_secs(opts.idle_secs))?,
        _ => None,
    };
    let log = target.log().display().to_string();
    let (expected_wait, wait_note) = match (kind, &opts.ready) {
        (Kind::Relaunch, None) => (
            parse_secs(&opts.start_secs).map(Duration::from_secs_f64),
            "--start-secs",
        ),
        (Kind::Relaunch, Some(_)) => (
            Some(Duration::from_millis(opts.startup_delay_ms)),
            "readiness (startup delay)",
        ),
        _ => (None, "(not observable)"),
    };
    target.shutdown()?;
    Ok(Run {
        kind,
        mode,
        load: result,
        from_us,
        to_us,
        reloads,
        windows,
        before,
        after,
        idle,
        rss_breakdown,
        log,
        floor,
        aborted,
        expected_wait,
        wait_note,
    })
}

pub(crate) fn parse_secs(s: &str) -> Option<f64> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    s.strip_suffix('s').unwrap_or(s).parse().ok()
}

/// CPU time and context switches of `pid` over `window`.
fn idle(pid: i32, window: Duration) -> Result<Option<Idle>> {
    let Some(a) = Usage::of(pid) else {
        return Ok(None);
    };
    let t = Instant::now();
    procs::sleep(window)?;
    let secs = t.elapsed().as_secs_f64();
    let Some(b) = Usage::of(pid) else {
        return Ok(None);
    };
    Ok(Some(Idle {
        secs,
        cpu_ms: (b.cpu_ticks - a.cpu_ticks) as f64 * 1000.0 / procs::ticks_per_sec() as f64,
        voluntary: b.voluntary_switches - a.voluntary_switches,
        involuntary: b.involuntary_switches - a.involuntary_switches,
    }))
}

/// Throughput of hello under relaunch vs hello on its own, alternating, no reloads. Also
/// counts the relaunch master's CPU time and context switches during its rounds (it is not in
/// the data path, so they should be 0), and gives the median of each order separately, to
/// show whether the one measured second in a round is favoured or not.
fn ratio(opts: &Opts, settings: &Settings, mode: Mode) -> Result<String> {
    let tag = format!("ratio-{}", mode.name());
    let relaunch = Target::start(Kind::Relaunch, settings, 0, &format!("{tag}-relaunch"))?;
    let baseline = Target::start(Kind::Baseline, settings, 0, &format!("{tag}-baseline"))?;
    let master = relaunch.master().context("relaunch has a pid")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = opts.ratio_pin && cores >= 2;
    if pin {
        // Each hello's connection threads are started by its main thread and inherit this.
        for pid in relaunch
            .server_pids()
            .into_iter()
            .chain(baseline.server_pids())
        {
            procs::pin(pid as i32, &[1])?;
        }
        procs::pin(0, &[0])?;
    }
    let measure = |addr| -> Result<f64> {
        let origin = Instant::now();
        let load = Load::start(
            LoadConfig {
                addr,
                mode,
                clients: opts.concurrency,
                timeout: Duration::from_millis(opts.timeout_ms),
            },
            origin,
        )?;
        let warm = Duration::from_millis(500);
        procs::sleep(warm + Duration::from_secs(opts.ratio_secs))?;
        let result = load.finish();
        let (from, to) = (
            warm.as_micros() as u64,
            (warm + Duration::from_secs(opts.ratio_secs)).as_micros() as u64,
        );
        let done = result
            .samples
            .iter()
            .filter(|s| s.outcome == load::Outcome::Ok && s.end_us() >= from && s.end_us() < to)
            .count();
        if result.failures() > 0 {
            bail!(
                "{} failed requests in a throughput round",
                result.failures()
            );
        }
        Ok(done as f64 / opts.ratio_secs as f64)
    };
    // The master's usage over one relaunch round: (CPU ms, voluntary, involuntary switches).
    let measure_relaunch = || -> Result<(f64, (f64, u64, u64))> {
        let a = Usage::of(master).context("relaunch is gone")?;
        let r = measure(relaunch.addr)?;
        let b = Usage::of(master).context("relaunch is gone")?;
        let cpu_ms = (b.cpu_ticks - a.cpu_ticks) as f64 * 1000.0 / procs::ticks_per_sec() as f64;
        Ok((
            r,
            (
                cpu_ms,
                b.voluntary_switches - a.voluntary_switches,
                b.involuntary_switches - a.involuntary_switches,
            ),
        ))
    };
    let mut rows = String::new();
    let (mut ratios, mut first, mut second) = (Vec::new(), Vec::new(), Vec::new());
    let mut master_switches = 0;
    let result = (|| -> Result<()> {
        for round in 0..opts.ratio_rounds {
            // Alternate the order so that drift favours neither.
            let relaunch_first = round % 2 == 0;
            let (r, b, m) = if relaunch_first {
                let (r, m) = measure_relaunch()?;
                (r, measure(baseline.addr)?, m)
            } else {
                let b = measure(baseline.addr)?;
                let (r, m) = measure_relaunch()?;
                (r, b, m)
            };
            let q = r / b;
            master_switches += m.1 + m.2;
            eprintln!(
                "bench:   round {}: relaunch {r:.0} req/s, baseline {b:.0} req/s, ratio {q:.3}, \
                 master {:.0} ms CPU, {} + {} context switches",
                round + 1,
                m.0,
                m.1,
                m.2
            );
            let order = if relaunch_first {
                "relaunch, baseline"
            } else {
                "baseline, relaunch"
            };
            let _ = writeln!(
                rows,
                "| {} | {order} | {r:.0} | {b:.0} | {q:.3} | {:.0} ms | {} / {} |",
                round + 1,
                m.0,
                m.1,
                m.2
            );
            ratios.push(q);
            if relaunch_first {
                first.push(q);
            } else {
                second.push(q);
            }
        }
        Ok(())
    })();
    if pin {
        procs::pin(0, &(0..cores).collect::<Vec<_>>())?;
    }
    relaunch.shutdown()?;
    baseline.shutdown()?;
    result?;
    let median = |v: &mut Vec<f64>| -> String {
        if v.is_empty() {
            return "–".into();
        }
        v.sort_by(f64::total_cmp);
        let m = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        format!("{m:.3}")
    };
    Ok(format!(
        "\n### Throughput: hello under relaunch vs hello binding the port itself ({}, {} clients, \
         {} s rounds, alternating{})\n\n\
         | round | order | relaunch req/s | baseline req/s | ratio | master CPU | master context \
         switches (voluntary / involuntary) |\n|---:|---|---:|---:|---:|---:|---:|\n{rows}\n\
         **Median ratio: {}** (rounds with relaunch measured first: {}; second: {}); the master's \
         context switches over all relaunch rounds: {master_switches}\n\n",
        mode.describe(),
        opts.concurrency,
        opts.ratio_secs,
        if pin {
            "; generator pinned to CPU 0, both servers to CPU 1"
        } else {
            ""
        },
        median(&mut ratios),
        median(&mut first),
        median(&mut second),
    ))
}

/// relaunch reloads with no load at all (no startup delay, the soak's --start-secs): spawn
/// latency and reload overhead when nothing competes for the CPU, next to the exec floor.
fn at_rest(opts: &Opts, settings: &Settings, n: usize) -> Result<String> {
    let mut settings = settings.clone();
    settings.start_secs = opts.soak_start_secs.clone();
    let mut target = Target::start(Kind::Relaunch, &settings, 0, "rest")?;
    let wait = parse_secs(&opts.soak_start_secs).map_or(Duration::ZERO, Duration::from_secs_f64);
    let (mut spawn, mut floor, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        procs::sleep(Duration::from_millis(50))?;
        floor.extend(settings.exec_floor("rest")?);
        procs::sleep(Duration::from_millis(50))?;
        let deadline = Instant::now() + Duration::from_secs(opts.reload_timeout_secs);
        let r = target.reload(None, deadline)?;
        if let Some(why) = r.failed {
            bail!("reload failed at rest: {why}");
        }
        spawn.extend(r.spawn_latency);
        overhead.extend(r.complete.map(|c| c.saturating_sub(wait)));
    }
    target.shutdown()?;
    for v in [&mut spawn, &mut floor, &mut overhead] {
        v.sort_unstable();
    }
    let stats = |v: &[Duration]| {
        format!(
            "{} | {} | {} | {}",
            report::quantile(v, 0.5).map_or("–".into(), report::dur),
            report::quantile(v, 0.9).map_or("–".into(), report::dur),
            v.first().map_or("–".into(), |d| report::dur(*d)),
            v.last().map_or("–".into(), |d| report::dur(*d)),
        )
    };
    Ok(format!(
        "\n### relaunch at rest: {n} reloads, no load, no startup delay, --start-secs {}\n\n\
         | measure | median | p90 | min | max |\n|---|---:|---:|---:|---:|\n\
         | spawn: HUP → hello `main()` | {} |\n\
         | exec floor: std `Command` → hello `main()` | {} |\n\
         | HUP → `reload complete` minus --start-secs | {} |\n\n",
        opts.soak_start_secs,
        stats(&spawn),
        stats(&floor),
        stats(&overhead),
    ))
}

/// Reloads back to back under light load; checks that the master's fds, RSS and zombies stay
/// flat, and reports each window of `--soak-window` reloads (failed requests, reload time, the
/// master's RSS, fds and zombies) so the first and last windows can be compared.
fn soak(opts: &Opts, settings: &Settings, n: usize) -> Result<String> {
    let mut settings = settings.clone();
    settings.start_secs = opts.soak_start_secs.clone();
    let mut target = Target::start(Kind::Relaunch, &settings, 0, "soak")?;
    let master = target.master().context("relaunch has a pid")?;
    let origin = Instant::now();
    let load = Load::start(
        LoadConfig {
            addr: target.addr,
            mode: Mode::Close,
            clients: opts.soak_concurrency,
            timeout: Duration::from_millis(opts.timeout_ms),
        },
        origin,
    )?;
    let window = opts.soak_window.clamp(1, n.max(1));
    // The master is sampled every `probe` reloads: often enough to catch a zombie that lingers,
    // rarely enough that reading /proc does not compete with the reloads.
    let probe = (window / 20).max(1);
    let first = Usage::of(master).context("relaunch is gone")?;
    let t0 = Instant::now();
    // Per reload: HUP time (µs since origin), HUP → `reload complete`, HUP → old server gone.
    let mut reloads: Vec<(u64, Option<Duration>, Duration, bool)> = Vec::with_capacity(n);
    // Per window: (max zombies seen, usage at the window's end).
    let mut usage: Vec<(usize, Usage)> = Vec::new();
    let mut max_zombies = first.zombies;
    for i in 1..=n {
        let deadline = Instant::now() + Duration::from_secs(opts.reload_timeout_secs);
        let r = target.reload(Some(&load), deadline)?;
        if let Some(why) = &r.failed {
            eprintln!("bench: soak reload {i} failed: {why}");
        }
        reloads.push((
            us_since(origin, r.hup.at),
            r.complete,
            r.window,
            r.failed.is_some(),
        ));
        if i % probe == 0 || i == n {
            let u = Usage::of(master).context("relaunch is gone")?;
            max_zombies = max_zombies.max(u.zombies);
            if i % window == 0 || i == n {
                eprintln!(
                    "bench: soak {i}: VmRSS {} KiB, RssAnon {} KiB, fds {}, zombies {} (max {max_zombies}), \
                     {} ok / {} failed requests",
                    u.rss_kib,
                    u.anon_kib,
                    u.fds,
                    u.zombies,
                    load.ok(),
                    load.failed()
                );
                usage.push((max_zombies, u));
                max_zombies = 0;
            }
        }
    }
    let elapsed = t0.elapsed();
    let end_us = us_since(origin, Instant::now());
    let result = load.finish();
    target.shutdown()?;

    let mut rows = String::new();
    let _ = writeln!(
        rows,
        "| before | – | – | – | – | – | {} | {} | {} | {} |",
        first.rss_kib, first.anon_kib, first.fds, first.zombies
    );
    let mut fds_flat = true;
    for (w, (zombies, u)) in usage.iter().enumerate() {
        let lo = w * window;
        let hi = ((w + 1) * window).min(n);
        let from = reloads[lo].0;
        let to = reloads.get(hi).map_or(end_us, |r| r.0);
        let (mut requests, mut failed) = (0u64, 0u64);
        for s in &result.samples {
            let t = u64::from(s.start_us);
            if t >= from && t < to {
                requests += 1;
                failed += u64::from(s.outcome != load::Outcome::Ok);
            }
        }
        let mut complete: Vec<Duration> = reloads[lo..hi].iter().filter_map(|r| r.1).collect();
        let mut gone: Vec<Duration> = reloads[lo..hi].iter().map(|r| r.2).collect();
        complete.sort_unstable();
        gone.sort_unstable();
        let med = |v: &[Duration]| report::quantile(v, 0.5).map_or("–".into(), report::dur);
        let failed_reloads = reloads[lo..hi].iter().filter(|r| r.3).count();
        fds_flat &= u.fds == usage[0].1.fds;
        let _ = writeln!(
            rows,
            "| {}–{} | {failed_reloads} | {requests} | {failed} | {} | {} | {} | {} | {} | {zombies} |",
            lo + 1,
            hi,
            med(&complete),
            med(&gone),
            u.rss_kib,
            u.anon_kib,
            u.fds,
        );
    }
    let base = usage[0].1;
    let last = usage.last().expect("at least one window").1;
    let max_zombies = usage.iter().map(|(z, _)| *z).max().unwrap_or(0);
    let failed_reloads = reloads.iter().filter(|r| r.3).count();
    let rss_growth = last.rss_kib as i64 - base.rss_kib as i64;
    let verdict = if fds_flat
        && max_zombies == 0
        && rss_growth <= 16
        && result.failures() == 0
        && failed_reloads == 0
    {
        "PASS"
    } else {
        "FAIL"
    };
    Ok(format!(
        "### Soak: {n} reloads back to back (relaunch --start-secs {}, no startup delay, {} \
         clients, new connection per request)\n\n\
         {n} reloads in {:.1} s ({:.1} ms each), {failed_reloads} failed; {} requests, {} failed.\n\n\
         Per window of {window} reloads: requests started in the window; reload = HUP → relaunch's \
         `reload complete` (the old server is signalled), gone = HUP → the old server has exited \
         and the new one answered; the master's VmRSS, RssAnon and fds at the window's end, and \
         the most zombies seen in {probe}-reload samples during it.\n\n\
         | reloads | failed reloads | requests | failed requests | reload median | gone median | \
         VmRSS KiB | RssAnon KiB | fds | zombies (max) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n\
         **{verdict}**: fds {} ({}), zombies at most {max_zombies}, VmRSS {:+} KiB from the end of \
         the first window to the end of the last (flat means ≤ 16 KiB: a page or four of lazily \
         touched code or heap).\n",
        opts.soak_start_secs,
        opts.soak_concurrency,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / n as f64,
        result.samples.len(),
        result.failures(),
        if fds_flat { "flat" } else { "CHANGED" },
        base.fds,
        rss_growth,
    ))
}

/// `--restarter -- CMD...`: runs CMD; on SIGHUP stops it (SIGTERM, up to 10 s, then SIGKILL),
/// waits for it to exit and starts it again; on SIGTERM/SIGINT stops it and exits.
fn restarter(args: &[String]) -> i32 {
    let args = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    let Some((program, rest)) = args.split_first() else {
        eprintln!("restarter: usage: --restarter -- CMD [ARGS...]");
        return 2;
    };
    let mut signals =
        match signal_hook::iterator::Signals::new([libc::SIGHUP, libc::SIGTERM, libc::SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("restarter: signals: {e}");
                return 1;
            }
        };
    let start = || Command::new(program).args(rest).spawn();
    let mut child = match start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("restarter: cannot start {program}: {e}");
            return 127;
        }
    };
    let stop = |child: &mut std::process::Child| {
        procs::kill(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_micros(500)),
            }
        }
    };
    for sig in signals.forever() {
        stop(&mut child);
        if sig != libc::SIGHUP {
            return 0;
        }
        child = match start() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("restarter: cannot start {program}: {e}");
                return 127;
            }
        };
    }
    0
}
