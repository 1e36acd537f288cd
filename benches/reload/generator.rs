//! Is the load generator the bottleneck? The generator alone against `hello` (no relaunch),
//! with the CPU time of both sides from `/proc/PID/stat`.
//!
//! The generator is closed-loop and runs on the same machine as the server, so on a 2-core
//! machine the two compete for the same CPUs. Two placements answer the question:
//!
//! * **shared**: no pinning, as in every other measurement of the benchmark; the CPU time of
//!   each side per request says who costs what.
//! * **split**: the generator's threads on CPU 0, hello's on CPU 1. If hello's CPU is busy
//!   close to 100 % while the generator's is not, the server is what limits the rate, not the
//!   generator.

use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::load::{self, Load, LoadConfig, Mode};
use crate::procs;
use crate::targets::{Kind, Settings, Target};

/// Busy and total jiffies of one CPU (or of all, `cpu`), from `/proc/stat`.
fn cpu_jiffies(name: &str) -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// One measurement: the rate, and each side's CPU over the same window.
struct Sample {
    rps: f64,
    /// CPU used, in % of one CPU.
    generator_pct: f64,
    hello_pct: f64,
    /// Busy % of each CPU (all processes of the machine, not just these two).
    busy: Vec<f64>,
}

fn measure(
    target: &Target,
    hello: i32,
    mode: Mode,
    clients: usize,
    secs: u64,
    timeout: Duration,
) -> Result<Sample> {
    let origin = Instant::now();
    let me = std::process::id() as i32;
    let load = Load::start(
        LoadConfig {
            addr: target.addr,
            mode,
            clients,
            timeout,
        },
        origin,
    )?;
    let warm = Duration::from_millis(500);
    procs::sleep(warm)?;
    let cpus = ["cpu0", "cpu1"];
    let (g0, h0) = (procs::stat(me), procs::stat(hello));
    let j0: Vec<_> = cpus.iter().map(|c| cpu_jiffies(c)).collect();
    let t0 = Instant::now();
    procs::sleep(Duration::from_secs(secs))?;
    let (g1, h1) = (procs::stat(me), procs::stat(hello));
    let j1: Vec<_> = cpus.iter().map(|c| cpu_jiffies(c)).collect();
    let elapsed = t0.elapsed().as_secs_f64();
    let result = load.finish();
    if result.failures() > 0 {
        bail!("{} failed requests in a generator round", result.failures());
    }
    let (from, to) = (
        warm.as_micros() as u64,
        (warm + Duration::from_secs(secs)).as_micros() as u64,
    );
    let done = result
        .samples
        .iter()
        .filter(|s| s.outcome == load::Outcome::Ok && s.end_us() >= from && s.end_us() < to)
        .count();
    let ticks = procs::ticks_per_sec() as f64;
    let pct = |a: Option<procs::Stat>, b: Option<procs::Stat>| -> Result<f64> {
        let (a, b) = (a.context("no /proc stat")?, b.context("no /proc stat")?);
        Ok((b.cpu_ticks - a.cpu_ticks) as f64 / ticks / elapsed * 100.0)
    };
    let busy = j0
        .iter()
        .zip(&j1)
        .filter_map(|(a, b)| {
            let ((ba, ta), (bb, tb)) = ((*a)?, (*b)?);
            Some((bb - ba) as f64 * 100.0 / (tb - ta).max(1) as f64)
        })
        .collect();
    Ok(Sample {
        rps: done as f64 / secs as f64,
        generator_pct: pct(g0, g1)?,
        hello_pct: pct(h0, h1)?,
        busy,
    })
}

/// The generator alone against hello, in each mode and placement; a Markdown section.
pub fn check(
    settings: &Settings,
    modes: &[Mode],
    clients: usize,
    secs: u64,
    rounds: usize,
    timeout: Duration,
) -> Result<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = String::new();
    for &mode in modes {
        for split in [false, true] {
            if split && cores < 2 {
                continue;
            }
            let placement = if split {
                "split: generator CPU 0, hello CPU 1"
            } else {
                "shared: both on every CPU"
            };
            for round in 1..=rounds {
                eprintln!(
                    "bench: generator alone / {} / {placement} / round {round} ...",
                    mode.describe()
                );
                let tag = format!("generator-{}", mode.name());
                let target = Target::start(Kind::Baseline, settings, 0, &tag)?;
                let hello = *target.server_pids().first().context("hello has no pid")? as i32;
                // hello's connection threads are started by its main thread and inherit its
                // affinity; so do the generator's client threads, started by this thread.
                let all: Vec<usize> = (0..cores).collect();
                if split {
                    procs::pin(0, &[0])?;
                    procs::pin(hello, &[1])?;
                }
                let s = measure(&target, hello, mode, clients, secs, timeout);
                if split {
                    procs::pin(0, &all)?;
                }
                target.shutdown()?;
                let s = s?;
                let per = |pct: f64| pct / 100.0 / s.rps.max(1e-9) * 1e6;
                let busy: Vec<String> = s.busy.iter().map(|b| format!("{b:.0} %")).collect();
                let _ = writeln!(
                    rows,
                    "| {} | {placement} | {round} | {:.0} | {:.0} % | {:.0} % | {:.1} µs | {:.1} µs | {} |",
                    mode.describe(),
                    s.rps,
                    s.generator_pct,
                    s.hello_pct,
                    per(s.generator_pct),
                    per(s.hello_pct),
                    busy.join(" / "),
                );
            }
        }
    }
    Ok(format!(
        "\n### The load generator alone against hello (no relaunch), {clients} clients, {secs} s \
         per round\n\n\
         CPU from `/proc/PID/stat` (utime + stime of every thread) over the round, in % of one \
         CPU; the generator's figure is the whole benchmark process (its other threads sleep). \
         CPU busy: each CPU's busy share from `/proc/stat`, every process of the machine \
         included. In the split placement, a server CPU near 100 % with the generator's below \
         means the server, not the generator, sets the rate.\n\n\
         | mode | placement | round | req/s | generator CPU | hello CPU | generator CPU per \
         request | hello CPU per request | CPU 0 / CPU 1 busy |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|\n{rows}\n"
    ))
}
