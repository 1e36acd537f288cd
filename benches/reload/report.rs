//! Turning recorded samples and reloads into numbers and Markdown tables.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::{LoadResult, Mode, Outcome, Sample};
use crate::procs::Usage;
use crate::targets::{Kind, Reload};

/// Resource use of a master over an idle window.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub secs: f64,
    /// CPU time used, ms.
    pub cpu_ms: f64,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// One target under load through N reloads, in one connection mode.
pub struct Run {
    pub kind: Kind,
    pub mode: Mode,
    pub load: LoadResult,
    /// Samples starting before this (µs since origin) are warm-up and ignored.
    pub from_us: u64,
    /// End of the measurement (µs since origin).
    pub to_us: u64,
    pub reloads: Vec<Reload>,
    /// Reload windows (µs since origin): HUP → old gone and new serving.
    pub windows: Vec<(u64, u64)>,
    pub before: Option<Usage>,
    pub after: Option<Usage>,
    pub idle: Option<Idle>,
    pub rss_breakdown: Vec<(String, u64)>,
    pub log: String,
    /// Spawn-latency floor samples (std `Command` → hello's `main`), taken under the same
    /// load between reloads.
    pub floor: Vec<Duration>,
    /// Why the run ended before all its reloads, if it did.
    pub aborted: Option<String>,
    /// relaunch --start-secs (s), or the wait a reload needs besides its overhead.
    pub expected_wait: Option<Duration>,
    /// Note on what `expected_wait` is.
    pub wait_note: &'static str,
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pct {
    pub n: usize,
    pub p50: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
}

/// Quantile `q` (0..=1) of sorted `v` (nearest rank).
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn pct(mut v: Vec<u32>) -> Option<Pct> {
    v.sort_unstable();
    Some(Pct {
        n: v.len(),
        p50: quantile(&v, 0.5)?,
        p99: quantile(&v, 0.99)?,
        p999: quantile(&v, 0.999)?,
        max: *v.last()?,
    })
}

/// Whether [start, end] overlaps one of the sorted, disjoint `windows`.
pub fn in_window(windows: &[(u64, u64)], start: u64, end: u64) -> bool {
    let idx = windows.partition_point(|w| w.0 <= end);
    idx > 0 && windows[idx - 1].1 >= start
}

/// Derived numbers of a [`Run`].
pub struct Summary {
    pub requests: u64,
    pub rps: f64,
    pub failures: u64,
    pub by_kind: Vec<(Outcome, u64)>,
    pub all: Pct,
    pub window: Pct,
    pub steady: Pct,
    pub reloads_ok: usize,
    pub reloads_failed: usize,
    pub complete: Vec<Duration>,
    pub windows: Vec<Duration>,
    pub spawn: Vec<Duration>,
    pub distinct_pids: usize,
}

impl Run {
    pub fn measured(&self) -> impl Iterator<Item = &Sample> {
        let from = self.from_us;
        self.load
            .samples
            .iter()
            .filter(move |s| u64::from(s.start_us) >= from)
    }

    pub fn summary(&self) -> Summary {
        let mut all = Vec::new();
        let mut window = Vec::new();
        let mut steady = Vec::new();
        let mut requests = 0;
        let mut by_kind = Vec::new();
        for s in self.measured() {
            requests += 1;
            if s.outcome != Outcome::Ok {
                match by_kind.iter_mut().find(|(k, _)| *k == s.outcome) {
                    Some(entry) => entry.1 += 1,
                    None => by_kind.push((s.outcome, 1u64)),
                }
                continue;
            }
            all.push(s.latency_us);
            if in_window(&self.windows, u64::from(s.start_us), s.end_us()) {
                window.push(s.latency_us);
            } else {
                steady.push(s.latency_us);
            }
        }
        by_kind.sort();
        let secs = (self.to_us.saturating_sub(self.from_us)) as f64 / 1e6;
        let mut complete: Vec<Duration> = self.reloads.iter().filter_map(|r| r.complete).collect();
        complete.sort_unstable();
        let mut windows: Vec<Duration> = self
            .reloads
            .iter()
            .filter(|r| r.failed.is_none())
            .map(|r| r.window)
            .collect();
        windows.sort_unstable();
        let mut spawn: Vec<Duration> = self
            .reloads
            .iter()
            .filter_map(|r| r.spawn_latency)
            .collect();
        spawn.sort_unstable();
        let failures = by_kind.iter().map(|(_, n)| n).sum();
        Summary {
            requests,
            rps: all.len() as f64 / secs.max(1e-9),
            failures,
            by_kind,
            all: pct(all).unwrap_or_default(),
            window: pct(window).unwrap_or_default(),
            steady: pct(steady).unwrap_or_default(),
            reloads_ok: self.reloads.iter().filter(|r| r.failed.is_none()).count(),
            reloads_failed: self.reloads.iter().filter(|r| r.failed.is_some()).count(),
            complete,
            windows,
            spawn,
            distinct_pids: self.load.distinct_pids(),
        }
    }
}

/// µs as a short human string.
pub fn us(v: u32) -> String {
    let v = f64::from(v);
    if v < 1000.0 {
        format!("{v:.0} µs")
    } else if v < 1e6 {
        format!("{:.2} ms", v / 1e3)
    } else {
        format!("{:.2} s", v / 1e6)
    }
}

pub fn dur(d: Duration) -> String {
    us(d.as_micros().min(u128::from(u32::MAX)) as u32)
}

fn dur_stats(v: &[Duration]) -> String {
    match (quantile(v, 0.5), quantile(v, 0.9), v.last()) {
        (Some(m), Some(p90), Some(max)) => format!("{} / {} / {}", dur(m), dur(p90), dur(*max)),
        _ => "–".into(),
    }
}

fn failures_cell(s: &Summary) -> String {
    if s.failures == 0 {
        return "**0**".into();
    }
    let kinds: Vec<String> = s
        .by_kind
        .iter()
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect();
    format!("**{}** ({})", s.failures, kinds.join(", "))
}

/// The side-by-side tables for all runs.
pub fn tables(runs: &[Run]) -> String {
    let mut out = String::new();
    let sums: Vec<Summary> = runs.iter().map(Run::summary).collect();

    out.push_str(
        "### Load through reloads\n\n\
         Latency of successful requests; *reload* = requests overlapping a reload window (HUP → \
         old server exited and a new one answered), *steady* = all others.\n\n\
         | target | mode | requests | req/s | failed | keep-alive retries | p50 | p99 steady | \
         p99 reload | p99 ratio | p99.9 reload | max | reloads ok/failed | pids seen |\n\
         |---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (run, s) in runs.iter().zip(&sums) {
        let ratio = if s.steady.p99 > 0 && s.window.n > 0 {
            format!("{:.2}", f64::from(s.window.p99) / f64::from(s.steady.p99))
        } else {
            "–".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}{} | {} |",
            run.kind.name(),
            run.mode.describe(),
            s.requests,
            s.rps,
            failures_cell(s),
            run.load.retries,
            us(s.all.p50),
            us(s.steady.p99),
            us(s.window.p99),
            ratio,
            us(s.window.p999),
            us(s.all.max),
            s.reloads_ok,
            s.reloads_failed,
            if run.aborted.is_some() {
                " (ended early)"
            } else {
                ""
            },
            s.distinct_pids,
        );
    }

    out.push_str(&after_hup(runs, &sums));

    out.push_str(
        "\n### Reload timing\n\n\
         Median / p90 / max. *HUP → old signalled*: relaunch's `reload complete` log line (its \
         own timestamp); *overhead* is that minus the wait it was told to do (see *waits for*). \
         *Window*: HUP → old server gone and a new one answering. *Spawn*: HUP → `main()` of the \
         new server process (its `CLOCK_MONOTONIC` stamp; for gunicorn: the worker starting to \
         import the app; for naive: includes stopping the old server first). *Exec floor*: the \
         same measurement for hello started by the benchmark itself with std's `Command` \
         (`posix_spawn`), under the same load, between reloads: what exec and the dynamic \
         loader cost on this machine, which no master can avoid.\n\n\
         | target | mode | waits for | HUP → old signalled | overhead | window | spawn | exec floor |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (run, s) in runs.iter().zip(&sums) {
        let overhead: Vec<Duration> = match run.expected_wait {
            Some(wait) => s.complete.iter().map(|c| c.saturating_sub(wait)).collect(),
            None => Vec::new(),
        };
        let mut floor = run.floor.clone();
        floor.sort_unstable();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            run.kind.name(),
            run.mode.describe(),
            run.wait_note,
            dur_stats(&s.complete),
            dur_stats(&overhead),
            dur_stats(&s.windows),
            dur_stats(&s.spawn),
            dur_stats(&floor),
        );
    }

    out.push_str(
        "\n### The master process\n\n\
         Before the first reload and after the last one (settled). *Idle*: CPU time and \
         context switches over an idle window after the load stopped (no requests, no \
         reloads).\n\n\
         | target | mode | VmRSS before → after | VmHWM | anon / file RSS | fds before → after | \
         zombies before → after | idle CPU | idle wake-ups/s |\n\
         |---|---|---|---:|---|---|---|---:|---:|\n",
    );
    for run in runs {
        let (Some(b), Some(a)) = (run.before, run.after) else {
            let _ = writeln!(
                out,
                "| {} | {} | no master | | | | | | |",
                run.kind.name(),
                run.mode.describe()
            );
            continue;
        };
        let idle = run.idle.map_or(("–".into(), "–".into()), |i| {
            (
                format!("{:.0} ms / {:.0} s", i.cpu_ms, i.secs),
                format!("{:.2}", (i.voluntary + i.involuntary) as f64 / i.secs),
            )
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} → {} KiB | {} KiB | {} / {} KiB | {} → {} | {} → {} | {} | {} |",
            run.kind.name(),
            run.mode.describe(),
            b.rss_kib,
            a.rss_kib,
            a.hwm_kib,
            a.anon_kib,
            a.file_kib,
            b.fds,
            a.fds,
            b.zombies,
            a.zombies,
            idle.0,
            idle.1,
        );
    }
    out
}

/// Details per run: failure examples, RSS by mapping, failed reloads, log file.
pub fn details(runs: &[Run]) -> String {
    let mut out = String::from("### Details\n\n");
    for run in runs {
        let _ = writeln!(
            out,
            "**{} / {}** (log: `{}`)\n",
            run.kind.name(),
            run.mode.describe(),
            run.log
        );
        if let Some(why) = &run.aborted {
            let _ = writeln!(out, "- **run ended early**: {why}");
        }
        if !run.load.examples.is_empty() {
            out.push_str("- failure examples (t = s since start):\n");
            for (t, e) in run.load.examples.iter().take(8) {
                let _ = writeln!(out, "  - t={:.3}: {e}", f64::from(*t) / 1e6);
            }
        }
        let mut slow: Vec<&Sample> = run
            .measured()
            .filter(|s| s.outcome == Outcome::Ok)
            .collect();
        slow.sort_unstable_by_key(|s| std::cmp::Reverse(s.latency_us));
        if !slow.is_empty() {
            let parts: Vec<String> = slow
                .iter()
                .take(5)
                .map(|s| {
                    let start = u64::from(s.start_us);
                    // The last HUP before the request started, and whether it overlapped a window.
                    let last = run.windows.iter().rev().find(|w| w.0 <= s.end_us());
                    let rel = last.map_or("before the first reload".into(), |w| {
                        format!(
                            "{:+.0} ms from a HUP{}",
                            (start as f64 - w.0 as f64) / 1e3,
                            if in_window(&run.windows, start, s.end_us()) {
                                ", in its window"
                            } else {
                                ""
                            }
                        )
                    });
                    format!("{} ({rel}, answered by pid {})", us(s.latency_us), s.pid)
                })
                .collect();
            let _ = writeln!(out, "- slowest requests: {}", parts.join("; "));
        }
        for (i, r) in run.reloads.iter().enumerate() {
            if let Some(note) = &r.note {
                let _ = writeln!(
                    out,
                    "- reload {} took {}; after {} s: {note}",
                    i + 1,
                    dur(r.window),
                    crate::targets::SLOW_STOP.as_secs()
                );
            }
        }
        for r in run.reloads.iter().filter(|r| r.failed.is_some()) {
            let _ = writeln!(
                out,
                "- failed reload: {}",
                r.failed.as_deref().unwrap_or("")
            );
        }
        if !run.rss_breakdown.is_empty() {
            let parts: Vec<String> = run
                .rss_breakdown
                .iter()
                .take(8)
                .map(|(n, k)| format!("{n} {k} KiB"))
                .collect();
            let _ = writeln!(out, "- master RSS by mapping: {}", parts.join(", "));
        }
        out.push('\n');
    }
    out
}

/// Width of the buckets of [`after_hup`].
const BUCKET_US: u64 = 50_000;
/// Buckets after each HUP looked at by [`after_hup`] (1 s).
const BUCKETS: usize = 20;

/// p99 of the requests that started in each 50 ms bucket after a HUP (pooled over all reloads),
/// against the steady p99: where in the reload the tail is (e.g. the reconnect burst when the
/// old server closes its keep-alive connections).
pub fn after_hup(runs: &[Run], sums: &[Summary]) -> String {
    let mut out = String::from(
        "\n### Latency after each HUP\n\n\
         Requests grouped by when they started after the last HUP, in 50 ms buckets over the \
         first second, pooled over all reloads. *Worst bucket*: the bucket with the highest \
         p99, against the p99 outside reload windows; *p99 per 100 ms*: the p99 of each \
         100 ms after HUP (ms).\n\n\
         | target | mode | steady p99 | worst 50 ms bucket | its requests | its p99 | ratio | \
         p99 per 100 ms, 0–1 s (ms) |\n|---|---|---:|---|---:|---:|---:|---|\n",
    );
    let mut per_50 = String::from(
        "\np99 of each 50 ms after HUP, 0–1 s (ms; the same requests, finer):\n\n\
         | target | mode | p99 per 50 ms, 0–1 s (ms) |\n|---|---|---|\n",
    );
    for (run, s) in runs.iter().zip(sums) {
        let hups: Vec<u64> = run.windows.iter().map(|w| w.0).collect();
        let mut fine: Vec<Vec<u32>> = vec![Vec::new(); BUCKETS];
        let mut coarse: Vec<Vec<u32>> = vec![Vec::new(); BUCKETS / 2];
        for sample in run.measured().filter(|x| x.outcome == Outcome::Ok) {
            let start = u64::from(sample.start_us);
            let idx = hups.partition_point(|&h| h <= start);
            if idx == 0 {
                continue;
            }
            let b = ((start - hups[idx - 1]) / BUCKET_US) as usize;
            if b < BUCKETS {
                fine[b].push(sample.latency_us);
                coarse[b / 2].push(sample.latency_us);
            }
        }
        let fine: Vec<Option<Pct>> = fine.into_iter().map(pct).collect();
        let fine_cells: Vec<String> = fine
            .iter()
            .map(|p| p.map_or("–".into(), |p| format!("{:.1}", f64::from(p.p99) / 1e3)))
            .collect();
        let _ = writeln!(
            per_50,
            "| {} | {} | {} |",
            run.kind.name(),
            run.mode.describe(),
            fine_cells.join(" ")
        );
        let worst = fine
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p)))
            .max_by_key(|(_, p)| p.p99);
        let coarse: Vec<String> = coarse
            .into_iter()
            .map(|v| pct(v).map_or("–".into(), |p| format!("{:.1}", f64::from(p.p99) / 1e3)))
            .collect();
        let (bucket, n, p99, ratio) = match worst {
            Some((i, p)) => (
                format!(
                    "{}–{} ms",
                    i as u64 * BUCKET_US / 1000,
                    (i as u64 + 1) * BUCKET_US / 1000
                ),
                p.n.to_string(),
                us(p.p99),
                if s.steady.p99 > 0 {
                    format!("{:.2}", f64::from(p.p99) / f64::from(s.steady.p99))
                } else {
                    "–".into()
                },
            ),
            None => ("–".into(), "0".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {bucket} | {n} | {p99} | {ratio} | {} |",
            run.kind.name(),
            run.mode.describe(),
            us(s.steady.p99),
            coarse.join(" "),
        );
    }
    out.push_str(&per_50);
    out
}
