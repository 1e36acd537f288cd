//! A hand-written SVG plot: one panel per run, latency over time on a log scale (p50 and max
//! per time bucket), reload windows shaded, failed requests as red ticks.

use std::fmt::Write as _;

use crate::load::Outcome;
use crate::report::{quantile, Run};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 170.0;
const TOP_PAD: f64 = 26.0;
const BOTTOM_PAD: f64 = 24.0;
/// The y axis covers 10 µs ..= 10 s.
const Y_MIN_LOG: f64 = 1.0; // log10(10 µs)
const Y_MAX_LOG: f64 = 7.0; // log10(10 s)

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document for `runs`.
pub fn plot(runs: &[Run], title: &str) -> String {
    let height = 40.0 + PANEL * runs.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="38" fill="#555">latency per 1% of the run (log scale): <tspan fill="#1f5fbf">p50</tspan>, <tspan fill="#8fb3e8">max</tspan>; <tspan fill="#e8a33d">reload windows</tspan>; <tspan fill="#d62728">failed requests</tspan></text>"##
    );
    for (i, run) in runs.iter().enumerate() {
        panel(&mut out, run, 44.0 + PANEL * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, run: &Run, top: f64) {
    let plot_top = top + TOP_PAD;
    let plot_h = PANEL - TOP_PAD - BOTTOM_PAD;
    let plot_w = WIDTH - LEFT - RIGHT;
    let (from, to) = (run.from_us as f64, run.to_us.max(run.from_us + 1) as f64);
    let x = |t_us: f64| LEFT + (t_us - from) / (to - from) * plot_w;
    let y = |lat_us: f64| {
        let l = lat_us.max(1.0).log10().clamp(Y_MIN_LOG, Y_MAX_LOG);
        plot_top + plot_h - (l - Y_MIN_LOG) / (Y_MAX_LOG - Y_MIN_LOG) * plot_h
    };
    let s = run.summary();
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{} — {} — {} reloads, {} requests, {} failed</text>"#,
        top + 16.0,
        esc(run.kind.name()),
        esc(run.mode.describe()),
        s.reloads_ok + s.reloads_failed,
        s.requests,
        s.failures
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{plot_top:.1}" width="{plot_w:.1}" height="{plot_h:.1}" fill="#fafafa" stroke="#ccc"/>"##
    );
    for &(a, b) in &run.windows {
        let (xa, xb) = (x(a as f64), x(b as f64));
        let _ = writeln!(
            out,
            r##"<rect x="{xa:.1}" y="{plot_top:.1}" width="{:.1}" height="{plot_h:.1}" fill="#e8a33d" fill-opacity="0.25"/>"##,
            (xb - xa).max(0.6)
        );
    }
    // Y grid: 100 µs, 1 ms, 10 ms, 100 ms, 1 s.
    for (v, label) in [
        (1e2, "100 µs"),
        (1e3, "1 ms"),
        (1e4, "10 ms"),
        (1e5, "100 ms"),
        (1e6, "1 s"),
    ] {
        let yy = y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            yy + 4.0
        );
    }
    // X ticks every 10 s.
    let secs = (to - from) / 1e6;
    let step = if secs > 200.0 { 30.0 } else { 10.0 };
    let mut t = 0.0;
    while t <= secs {
        let xx = x(from + t * 1e6);
        let _ = writeln!(
            out,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{t:.0} s</text>"##,
            plot_top + plot_h + 14.0
        );
        t += step;
    }
    // Buckets.
    const BUCKETS: usize = 100;
    let width = (to - from) / BUCKETS as f64;
    let mut lat: Vec<Vec<u32>> = vec![Vec::new(); BUCKETS];
    let mut fails = vec![0u32; BUCKETS];
    for smp in run.measured() {
        let b = (((f64::from(smp.start_us) - from) / width) as usize).min(BUCKETS - 1);
        if smp.outcome == Outcome::Ok {
            lat[b].push(smp.latency_us);
        } else {
            fails[b] += 1;
        }
    }
    let mut p50 = String::new();
    let mut max = String::new();
    for (b, v) in lat.iter_mut().enumerate() {
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        let xx = x(from + (b as f64 + 0.5) * width);
        let _ = write!(
            p50,
            "{xx:.1},{:.1} ",
            y(f64::from(quantile(v, 0.5).unwrap_or(0)))
        );
        let _ = write!(max, "{xx:.1},{:.1} ", y(f64::from(*v.last().unwrap_or(&0))));
    }
    let _ = writeln!(
        out,
        r##"<polyline points="{max}" fill="none" stroke="#8fb3e8" stroke-width="1.2"/>"##
    );
    let _ = writeln!(
        out,
        r##"<polyline points="{p50}" fill="none" stroke="#1f5fbf" stroke-width="1.6"/>"##
    );
    for (b, &n) in fails.iter().enumerate() {
        if n > 0 {
            let xx = x(from + (b as f64 + 0.5) * width);
            let _ = writeln!(
                out,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{plot_top:.1}" y2="{:.1}" stroke="#d62728" stroke-width="2"><title>{n} failed</title></line>"##,
                plot_top + 10.0
            );
        }
    }
}
