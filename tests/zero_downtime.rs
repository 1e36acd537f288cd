//! Zero downtime, the short form of the reload benchmark (`benches/reload`, BENCHMARKS.md):
//! a few reloads under closed-loop load, in both connection modes, and not one failed request.
//!
//! The load generator is the benchmark's own (`benches/reload/load.rs`), so this checks exactly
//! what the benchmark measures: refused, reset, timed-out and malformed answers all count as
//! failures; a keep-alive client may only resend a GET when the server closed its reused
//! connection cleanly (end of stream before any byte of the answer). Timings are never asserted.

mod common;

#[allow(dead_code)]
#[path = "../benches/reload/load.rs"]
mod load;

use std::time::{Duration, Instant};

use common::*;
use load::{Load, LoadConfig, Mode};

// Ten reloads at 16 clients take about 3 s and catch a server that answers a request racing
// its idle-connection close with a RST most of the time; five at 8 clients seldom did.
const RELOADS: u32 = 10;
const CLIENTS: usize = 16;

fn reloads_under_load_fail_no_request(mode: Mode) {
    let hello = hello_bin();
    // The new generation boots for 50 ms and counts as started after 200 ms, so the old one is
    // stopped while the new one already serves (even if not, clients would only wait in the
    // accept queue: the socket never closes).
    let r = Relaunch::start(&[
        "--start-secs",
        "0.2",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&hello),
        "--startup-delay-ms",
        "50",
    ]);
    let addr = r.addr("http");
    let first = wait_for_http(&r, addr, TIMEOUT) as u32;

    let load = Load::start(
        LoadConfig {
            addr,
            mode,
            clients: CLIENTS,
            timeout: Duration::from_secs(10),
        },
        Instant::now(),
    )
    .expect("starting the clients");
    let start = load.mark();
    r.wait_until(TIMEOUT, &format!("clients served by pid {first}"), || {
        load.served_by_since(first, &start) || load.failed() > 0
    });

    for generation in 2..=RELOADS + 1 {
        if load.failed() > 0 {
            break; // reported below, with the failures
        }
        let mark = load.mark();
        r.signal(libc::SIGHUP);
        let generation = u64::from(generation);
        let done = r.wait_reload_ended(generation);
        if done["result"] != "ok" {
            r.fail(&format!("a reload failed: {done:#}"));
        }
        let pid = record_pid(&done);
        r.wait_status(&format!("generation {} reaped", generation - 1), |v| {
            history(v, "exit").any(|e| e["generation"] == generation - 1)
        });
        let new = pid as u32;
        r.wait_until(TIMEOUT, &format!("clients served by pid {new}"), || {
            load.served_by_since(new, &mark) || load.failed() > 0
        });
    }

    let result = load.finish();
    let failures = result.failures();
    eprintln!(
        "{}: {} requests, {failures} failed {:?}, {} keep-alive retries, {} distinct pids",
        mode.describe(),
        result.samples.len(),
        result.failures_by_kind(),
        result.retries,
        result.distinct_pids()
    );
    if failures > 0 {
        r.fail(&format!(
            "{failures} of {} requests failed through {RELOADS} reloads ({}); by kind: {:?}; \
             examples (µs since start, message): {:#?}",
            result.samples.len(),
            mode.describe(),
            result.failures_by_kind(),
            result.examples
        ));
    }
    assert!(
        result.distinct_pids() > RELOADS as usize,
        "expected answers from at least {} pids, saw {}",
        RELOADS + 1,
        result.distinct_pids()
    );
}

#[test]
fn reloads_with_a_new_connection_per_request_fail_no_request() {
    reloads_under_load_fail_no_request(Mode::Close);
}

#[test]
fn reloads_with_keep_alive_connections_fail_no_request() {
    reloads_under_load_fail_no_request(Mode::KeepAlive);
}
