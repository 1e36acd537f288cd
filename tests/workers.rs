//! Workers (`--workers N`): N children per generation sharing the sockets, reloaded all at
//! once or rolling, under load; a failing new version; a killed worker replaced alone;
//! `RELAUNCH_WORKER` indices; `signal --worker`. Real processes and sockets; every master has
//! its own `--control` socket in a temp dir.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const T: Duration = TIMEOUT;
const N: usize = 4;

/// Runs a client subcommand against `ctl`: (exit code, stdout, stderr).
fn client(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(relaunch_bin())
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RELAUNCH_LOG")
        .output()
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(ctl: &str) -> Value {
    try_status(ctl).unwrap_or_else(|e| panic!("status failed: {e}"))
}

/// The status record, or why there is none (the master may not listen yet). `status` exits
/// non-zero while the program is not RUNNING, but still prints the record.
fn try_status(ctl: &str) -> Result<Value, String> {
    let (code, out, err) = client(&["status", "--json", "--control", ctl]);
    serde_json::from_str(&out).map_err(|e| format!("exit {code} ({e}): {out} {err}"))
}

/// (worker, generation, pid) of every current worker.
fn current(ctl: &str) -> Vec<(u64, u64, i64)> {
    let s = status(ctl);
    let mut v: Vec<(u64, u64, i64)> = s["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["role"] == "current")
        .map(|g| {
            (
                g["worker"].as_u64().unwrap(),
                g["generation"].as_u64().unwrap(),
                g["pid"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn wait_all_up(r: &Relaunch, ctl: &str) {
    r.wait_until(T, "every worker to be up", || {
        try_status(ctl).is_ok_and(|s| {
            s["state"] == "RUNNING" && s["workers_up"] == N as u64 && s["reloading"] == false
        })
    });
}

/// A wrapper that runs `hello`, or exits 3 at once while `flag` exists (a broken version).
fn breakable_hello(dir: &TempDir) -> (String, std::path::PathBuf) {
    let flag = dir.join("broken");
    let script = dir.join("server.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo broken >&2; exit 3; fi\nexec '{}'\n",
            flag.display(),
            hello_bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), flag)
}

fn start(dir: &TempDir, strategy: &str, program: &str, extra: &[&str]) -> (Relaunch, String) {
    let ctl = dir.join("ctl.sock").display().to_string();
    let n = N.to_string();
    let mut args = vec![
        "--control",
        &ctl,
        "--workers",
        &n,
        "--reload-strategy",
        strategy,
        "--start-secs",
        "0.2",
        "--listen",
        "http=127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.push(program);
    let r = Relaunch::start(&args);
    (r, ctl)
}

/// Samples the master's live children every few ms until stopped; returns the most seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(master: i32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let live = proc_table()
                    .into_iter()
                    .filter(|st| st.ppid == master && st.state != 'Z')
                    .count();
                p.fetch_max(live, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(2));
            }
        });
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn assert_no_failures(r: &Relaunch, stats: &LoadStats, what: &str) {
    let failed: u64 = stats.failures.values().sum();
    eprintln!(
        "{what}: {} ok, {failed} failed {:?}",
        stats.ok, stats.failures
    );
    if failed != 0 {
        r.fail(&format!(
            "{what}: {failed} requests failed: {:?}; samples {:#?}",
            stats.failures, stats.samples
        ));
    }
    assert!(stats.ok > 0, "{what}: no request was answered");
}

#[test]
fn four_workers_reload_under_load_with_each_strategy_and_fail_no_request() {
    for strategy in ["all", "rolling"] {
        let dir = TempDir::new("workers-load");
        let hello = hello_bin();
        let (r, ctl) = start(&dir, strategy, s(&hello), &["--max-surge", "1"]);
        let addr = r.addr("http");
        wait_for_http(&r, addr, T);
        wait_all_up(&r, &ctl);
        let load = Load::start(addr, 8);
        let first = current(&ctl);
        r.wait_until(T, "clients served", || {
            first.iter().any(|w| load.seen(w.2 as i32)) || load.failed()
        });
        let sampler = Sampler::start(r.pid());
        for generation in 2..=4u64 {
            let (code, out, err) = client(&["reload", "--wait", "--control", &ctl]);
            assert_eq!(
                code, 0,
                "{strategy}: reload {generation} failed: {out} {err}"
            );
            let now = current(&ctl);
            assert_eq!(now.len(), N, "{strategy}: {now:?}");
            assert!(now.iter().all(|w| w.1 == generation), "{strategy}: {now:?}");
            let pids: Vec<i32> = now.iter().map(|w| w.2 as i32).collect();
            r.wait_until(T, "the new workers to serve", || {
                pids.iter().any(|p| load.seen(*p)) || load.failed()
            });
        }
        let peak = sampler.finish();
        let stats = load.finish();
        assert_no_failures(&r, &stats, strategy);
        if strategy == "rolling" {
            assert!(
                peak <= N + 1,
                "rolling: {peak} workers alive at once, more than N+K = {}",
                N + 1
            );
            assert!(peak >= N, "rolling: the sampler saw only {peak} workers");
        } else {
            assert!(
                peak > N,
                "all: the new workers start beside the old ones (peak {peak})"
            );
            assert!(peak <= 2 * N, "all: at most 2N alive (peak {peak})");
        }
    }
}

#[test]
fn a_failing_new_version_keeps_the_old_workers_serving_with_each_strategy() {
    for strategy in ["all", "rolling"] {
        let dir = TempDir::new("workers-fail");
        let (program, flag) = breakable_hello(&dir);
        let (r, ctl) = start(&dir, strategy, &program, &[]);
        let addr = r.addr("http");
        wait_for_http(&r, addr, T);
        wait_all_up(&r, &ctl);
        let before = current(&ctl);
        let load = Load::start(addr, 8);
        r.wait_until(T, "clients served", || {
            load.seen(before[0].2 as i32) || load.failed()
        });
        fs::write(&flag, "").unwrap();
        let (code, out, err) = client(&["reload", "--wait", "--control", &ctl]);
        assert_eq!(code, 1, "{strategy}: a failed reload exits 1: {out} {err}");
        assert!(
            err.contains("worker ") && err.contains("exit code 3"),
            "{strategy}: the reason names the worker and how it failed: {err}"
        );
        let after = current(&ctl);
        assert_eq!(after, before, "{strategy}: the old workers are untouched");
        for w in &before {
            assert!(
                proc_alive(w.2 as i32),
                "{strategy}: old worker {w:?} is alive"
            );
        }
        let s = status(&ctl);
        assert_eq!(s["state"], "RUNNING", "{strategy}: {s}");
        assert_eq!(s["last_reload"]["result"], "failed");
        fs::remove_file(&flag).unwrap();
        let (code, out, err) = client(&["reload", "--wait", "--control", &ctl]);
        assert_eq!(
            code, 0,
            "{strategy}: the next reload starts over: {out} {err}"
        );
        assert!(
            current(&ctl).iter().all(|w| w.1 == 3),
            "{:?}",
            current(&ctl)
        );
        let stats = load.finish();
        assert_no_failures(&r, &stats, strategy);
    }
}

#[test]
fn a_killed_worker_is_replaced_alone_and_indices_are_unique() {
    let dir = TempDir::new("workers-kill");
    let report = dir.join("report");
    let probe = probe_bin();
    let ctl = dir.join("ctl.sock").display().to_string();
    let n = N.to_string();
    let r = Relaunch::start(&[
        "--control",
        &ctl,
        "--workers",
        &n,
        "--start-secs",
        "0.2",
        "--listen",
        "http=127.0.0.1:0",
        "--",
        s(&probe),
        "--report",
        s(&report),
    ]);
    wait_all_up(&r, &ctl);
    let reports = read_reports(&report);
    assert_eq!(reports.len(), N, "{reports:?}");
    let indices: BTreeSet<String> = reports.iter().filter_map(|p| p.worker.clone()).collect();
    assert_eq!(
        indices,
        (0..N).map(|i| i.to_string()).collect(),
        "{reports:?}"
    );
    for p in &reports {
        assert_eq!(p.generation.as_deref(), Some("1"));
        assert_eq!(
            p.listen_pid.as_deref(),
            Some(p.pid.to_string().as_str()),
            "own LISTEN_PID"
        );
    }
    let before = current(&ctl);
    let victim = before[2];
    assert!(kill(victim.2 as i32, libc::SIGKILL));
    r.wait_until(T, "worker 2 to be replaced", || {
        let now = current(&ctl);
        now.len() == N && now[2].2 != victim.2 && status(&ctl)["workers_up"] == N as u64
    });
    let after = current(&ctl);
    for w in [0, 1, 3] {
        assert_eq!(after[w], before[w], "worker {w} untouched");
    }
    assert_eq!(after[2].1, 1, "the replacement stays in generation 1");
    let replacement = wait_for_report(&r, &report, after[2].2 as i32);
    assert_eq!(replacement.worker.as_deref(), Some("2"));

    // A reload: generation 2 gets every index once.
    let (code, _, err) = client(&["reload", "--wait", "--control", &ctl]);
    assert_eq!(code, 0, "{err}");
    let gen2: Vec<String> = read_reports(&report)
        .into_iter()
        .filter(|p| p.generation.as_deref() == Some("2"))
        .filter_map(|p| p.worker)
        .collect();
    let unique: BTreeSet<&String> = gen2.iter().collect();
    assert_eq!(gen2.len(), N, "{gen2:?}");
    assert_eq!(unique.len(), N, "{gen2:?}");

    // signal --worker reaches one worker; signal without it, every one.
    let now = current(&ctl);
    let (code, out, err) = client(&["signal", "USR1", "--worker", "2", "--control", &ctl]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("worker 2"), "{out}");
    r.wait_until(T, "worker 2 to get USR1", || {
        read_signal_reports(&report).contains(&("USR1".to_owned(), now[2].2 as i32))
    });
    let (code, out, err) = client(&["signal", "USR2", "--control", &ctl]);
    assert_eq!(code, 0, "{out} {err}");
    r.wait_until(T, "every worker to get USR2", || {
        let got = read_signal_reports(&report);
        now.iter()
            .all(|w| got.contains(&("USR2".to_owned(), w.2 as i32)))
    });
    let usr1: Vec<i32> = read_signal_reports(&report)
        .into_iter()
        .filter(|(s, _)| s == "USR1")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(usr1, vec![now[2].2 as i32], "only worker 2 got USR1");
    let (code, _, err) = client(&["signal", "USR1", "--worker", "9", "--control", &ctl]);
    assert_ne!(code, 0);
    assert!(err.contains("no worker 9"), "{err}");
}
