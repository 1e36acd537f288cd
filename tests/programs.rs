//! Several programs in one master (`--config FILE`), end to end with real processes: start
//! order, control by name, isolation of a failing program, reloads by name under load, and a
//! broken file on SIGHUP.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::Value;

/// A site of three programs in `dir`: two `hello` servers (web, api; TCP port 0) and a
/// Python child without sockets (jobs; up once its SIGTERM handler is in place, so a stop
/// right after the start exits 0 on any machine), plus `extra` appended to the file.
fn write_site(dir: &TempDir, extra: &str) -> std::path::PathBuf {
    let path = dir.join("site.toml");
    let hello = hello_bin();
    let text = format!(
        r#"[relaunch]
name = "site"
control = "{ctl}"

[program.web]
command = ["{hello}"]
listen = ["http=127.0.0.1:0"]
priority = 10

[program.api]
command = ["{hello}"]
listen = ["http=127.0.0.1:0"]
priority = 20

[program.jobs]
command = ["python3", "-c", "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nos.write(3, b'\\n')\nwhile True: time.sleep(1)"]
ready = "fd:3"
priority = 30
{extra}"#,
        ctl = dir.join("ctl.sock").display(),
        hello = hello.display(),
    );
    std::fs::write(&path, text).expect("cannot write the config file");
    path
}

fn address(status: &Value, name: &str) -> SocketAddr {
    site_program(status, name)["sockets"][0]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address for {name} in {status}"))
}

/// Starts the site and waits until every program runs.
fn start_site(dir: &TempDir, extra: &str) -> Relaunch {
    let file = write_site(dir, extra);
    let relaunch = Relaunch::start(&["--config", s(&file)]);
    relaunch.wait_until(TIMEOUT, "every program RUNNING", || {
        site_client(dir, &["status"]).0 == 0
    });
    relaunch
}

#[test]
fn programs_start_in_priority_order_each_with_its_own_sockets_and_named_log_lines() {
    let dir = TempDir::new("programs-order");
    let relaunch = start_site(&dir, "");
    let status = site_status(&dir);
    // web (10) was up before api (20) was spawned, and api before jobs (30).
    let lines = relaunch.lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| relaunch.fail(&format!("no line with {needle:?}")))
    };
    assert!(at("program{program=web}: running") < at("program{program=api}: spawned"));
    assert!(at("program{program=api}: running") < at("program{program=jobs}: spawned"));
    // Each server has its own socket at fd 3, and answers on it.
    let (web, api) = (address(&status, "web"), address(&status, "api"));
    assert_ne!(web, api);
    for (name, addr) in [("web", web), ("api", api)] {
        let pid = site_running_pid(&status, name).expect("running");
        let (code, body) = http_get(addr, TIMEOUT).expect("GET");
        assert_eq!((code, body_pid(&body)), (200, Some(pid as i32)), "{name}");
    }
    assert!(site_program(&status, "jobs")["sockets"]
        .as_array()
        .unwrap()
        .is_empty());
    // The table, in the manner of supervisorctl.
    let (code, table, _) = site_client(&dir, &["status"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("LAST-RELOAD"), "{table}");
    for name in ["web", "api", "jobs"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name) && l.contains("RUNNING")),
            "{table}"
        );
    }
}

#[test]
fn unknown_program_names_exit_2_with_the_valid_names() {
    let dir = TempDir::new("programs-unknown");
    let _relaunch = start_site(&dir, "");
    for args in [
        &["status", "nope"][..],
        &["reload", "nope"],
        &["stop", "nope"],
        &["start", "nope"],
        &["signal", "USR1", "nope"],
    ] {
        let (code, _, err) = site_client(&dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(r#"no program named "nope" (the programs are: web, api, jobs)"#),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn reload_by_name_under_load_fails_no_request_and_leaves_the_others_alone() {
    let dir = TempDir::new("programs-reload");
    let _relaunch = start_site(&dir, "");
    let before = site_status(&dir);
    let (web, api) = (address(&before, "web"), address(&before, "api"));
    let (web_pid, api_pid, jobs_pid) = (
        site_running_pid(&before, "web").unwrap(),
        site_running_pid(&before, "api").unwrap(),
        site_running_pid(&before, "jobs").unwrap(),
    );
    let web_load = Load::start(web, 4);
    let api_load = Load::start(api, 4);
    for _ in 0..3 {
        let (code, out, err) = site_client(&dir, &["reload", "--wait", "web"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.starts_with("web: reload complete"), "{out}");
    }
    let web_stats = web_load.finish();
    let api_stats = api_load.finish();
    assert!(
        web_stats.failures.is_empty() && api_stats.failures.is_empty(),
        "failed requests: web {:?} {:?}, api {:?} {:?}",
        web_stats.failures,
        web_stats.samples,
        api_stats.failures,
        api_stats.samples
    );
    assert!(web_stats.ok > 0 && api_stats.ok > 0);
    let after = site_status(&dir);
    assert_ne!(site_running_pid(&after, "web"), Some(web_pid));
    assert_eq!(site_program(&after, "web")["last_reload"]["generation"], 4);
    assert_eq!(site_running_pid(&after, "api"), Some(api_pid));
    assert_eq!(site_running_pid(&after, "jobs"), Some(jobs_pid));
    assert!(api_stats.pids.len() == 1 && api_stats.pids.contains(&(api_pid as i32)));
}

#[test]
fn a_fatal_program_leaves_the_others_serving_and_the_master_running() {
    let dir = TempDir::new("programs-fatal");
    // A fourth program that never stays up: FATAL after its start retries. Its start-secs is
    // far above how long even a loaded machine takes to start it and see it exit.
    let extra = r#"
[program.broken]
command = ["sh", "-c", "exit 3"]
start-secs = 60
priority = 5
start-retries = 1
backoff-min = "10ms"
backoff-max = "10ms"
"#;
    let file = write_site(&dir, extra);
    let relaunch = Relaunch::start(&["--config", s(&file)]);
    relaunch.wait_until(TIMEOUT, "broken FATAL and the others RUNNING", || {
        let (code, out, _) = site_client(&dir, &["status", "--json"]);
        let Ok(status) = serde_json::from_str::<Value>(&out) else {
            return false;
        };
        code == 1
            && site_program(&status, "broken")["state"] == "FATAL"
            && ["web", "api", "jobs"]
                .iter()
                .all(|n| site_running_pid(&status, n).is_some())
    });
    let status = site_status(&dir);
    let web = address(&status, "web");
    let (code, body) = http_get(web, TIMEOUT).expect("GET web");
    assert_eq!(
        (code, body_pid(&body)),
        (200, site_running_pid(&status, "web").map(|p| p as i32))
    );
    // Asked by name, the healthy ones are fine (exit 0) and the FATAL one is not (exit 1).
    assert_eq!(site_client(&dir, &["status", "web", "api"]).0, 0);
    assert_eq!(site_client(&dir, &["status", "broken"]).0, 1);
    assert!(proc_alive(relaunch.pid()));
}

#[test]
fn stop_by_name_keeps_the_socket_and_start_brings_the_program_back() {
    let dir = TempDir::new("programs-stop");
    let relaunch = start_site(&dir, "");
    let before = site_status(&dir);
    let api = address(&before, "api");
    let api_pid = site_running_pid(&before, "api").unwrap() as i32;
    let (code, _, err) = site_client(&dir, &["stop", "api"]);
    assert_eq!(code, 0, "{err}");
    relaunch.wait_until(TIMEOUT, "api STOPPED and its child gone", || {
        site_program(&site_status(&dir), "api")["state"] == "STOPPED" && !proc_alive(api_pid)
    });
    // The master keeps the socket: a connection is accepted by the kernel (queued), not refused.
    let queued = std::net::TcpStream::connect_timeout(&api, TIMEOUT);
    assert!(
        queued.is_ok(),
        "api's port refused a connection: {queued:?}"
    );
    assert_eq!(site_client(&dir, &["status", "api"]).0, 1);
    assert_eq!(site_client(&dir, &["status", "web", "jobs"]).0, 0);
    let (code, _, err) = site_client(&dir, &["start", "api"]);
    assert_eq!(code, 0, "{err}");
    relaunch.wait_until(TIMEOUT, "api RUNNING again", || {
        site_running_pid(&site_status(&dir), "api").is_some()
    });
    let after = site_status(&dir);
    // Its generations go on, and the connection queued while it was stopped is served.
    assert_eq!(
        site_program(&after, "api")["generations"][0]["generation"],
        2
    );
    let mut queued = queued.unwrap();
    let (code, body) = http_get_on(&mut queued, TIMEOUT).expect("the queued connection");
    assert_eq!(code, 200);
    assert_eq!(
        body_pid(&body),
        site_running_pid(&after, "api").map(|p| p as i32)
    );
    assert_eq!(address(&after, "api"), api);
}

#[test]
fn sighup_with_a_broken_file_changes_nothing_and_status_shows_the_error() {
    let dir = TempDir::new("programs-broken-file");
    let relaunch = start_site(&dir, "");
    let before = site_status(&dir);
    let pids: Vec<_> = ["web", "api", "jobs"]
        .iter()
        .map(|n| site_running_pid(&before, n))
        .collect();
    let file = dir.join("site.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}\n[program.web2]\ncomand = [\"x\"]\n")).unwrap();
    kill(relaunch.pid(), nix::sys::signal::Signal::SIGHUP as i32);
    relaunch.wait_until(TIMEOUT, "config_error in status", || {
        site_status(&dir)["config_error"].is_string()
    });
    let status = site_status(&dir);
    let error = status["config_error"].as_str().unwrap();
    assert!(
        error.contains("site.toml:") && error.contains("comand"),
        "{error}"
    );
    let (_, table, _) = site_client(&dir, &["status"]);
    assert!(table.contains("config_error: "), "{table}");
    let after: Vec<_> = ["web", "api", "jobs"]
        .iter()
        .map(|n| site_running_pid(&status, n))
        .collect();
    assert_eq!(pids, after, "a broken file must change nothing");
    assert!(relaunch.events("reload requested").is_empty());
    // A valid file again: the error is gone, and HUP reloads every program.
    std::fs::write(&file, good).unwrap();
    kill(relaunch.pid(), nix::sys::signal::Signal::SIGHUP as i32);
    relaunch.wait_until(TIMEOUT, "every program reloaded, no config_error", || {
        let status = site_status(&dir);
        status["config_error"].is_null()
            && ["web", "api", "jobs"]
                .iter()
                .all(|n| site_program(&status, n)["last_reload"]["result"] == "ok")
    });
}

#[test]
fn the_master_stops_programs_in_reverse_order_and_exits_0() {
    let dir = TempDir::new("programs-stop-all");
    let mut relaunch = start_site(&dir, "");
    let (code, out, err) = site_client(&dir, &["stop", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let status = relaunch.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", relaunch.stderr());
    let lines = relaunch.lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}"))
    };
    assert!(at("program{program=jobs}: exiting") < at("program{program=api}: shutting down"));
    assert!(at("program{program=api}: exiting") < at("program{program=web}: shutting down"));
}

/// The current children of `name` as (worker, generation, pid), by worker.
fn workers_of(status: &Value, name: &str) -> Vec<(u64, u64, i64)> {
    let mut v: Vec<(u64, u64, i64)> = site_program(status, name)["generations"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .filter(|g| g["role"] == "current")
                .filter_map(|g| {
                    Some((
                        g["worker"].as_u64()?,
                        g["generation"].as_u64()?,
                        g["pid"].as_i64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_program_with_workers_is_signalled_stopped_and_started_by_name() {
    let dir = TempDir::new("programs-workers");
    let hello = hello_bin();
    let pool = format!(
        "\n[program.pool]\ncommand = [\"{}\"]\nlisten = [\"http=127.0.0.1:0\"]\nworkers = 3\npriority = 40\n",
        hello.display()
    );
    let relaunch = start_site(&dir, &pool);
    let up = |s: &Value| site_program(s, "pool")["workers_up"] == 3;
    relaunch.wait_until(TIMEOUT, "pool's three workers up", || {
        up(&site_status(&dir))
    });
    let before = workers_of(&site_status(&dir), "pool");
    assert_eq!(
        before.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(),
        vec![(0, 1), (1, 1), (2, 1)],
        "{before:?}"
    );
    // One worker of one program, by name (a crash: it is restarted alone); the others are left
    // alone.
    let (code, out, err) = site_client(&dir, &["signal", "KILL", "pool", "--worker", "1"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("worker 1"), "{out}");
    relaunch.wait_until(TIMEOUT, "worker 1 replaced", || {
        let now = workers_of(&site_status(&dir), "pool");
        now.len() == 3 && now[1].2 != before[1].2
    });
    let after = workers_of(&site_status(&dir), "pool");
    assert_eq!((after[0].2, after[2].2), (before[0].2, before[2].2));
    // A worker index out of range names the valid ones and exits 1; nothing changes.
    let (code, _, err) = site_client(&dir, &["signal", "TERM", "pool", "--worker", "3"]);
    assert_ne!(code, 0);
    assert!(err.contains("workers are 0 to 2"), "{err}");
    // Stopped by name, then started again: three new workers of the next generation.
    assert_eq!(site_client(&dir, &["stop", "pool"]).0, 0);
    relaunch.wait_until(TIMEOUT, "pool STOPPED, its workers gone", || {
        site_program(&site_status(&dir), "pool")["state"] == "STOPPED"
            && after.iter().all(|w| !proc_alive(w.2 as i32))
    });
    let (code, _, err) = site_client(&dir, &["start", "pool"]);
    assert_eq!(code, 0, "{err}");
    relaunch.wait_until(TIMEOUT, "pool's workers up again", || {
        let s = site_status(&dir);
        site_program(&s, "pool")["state"] == "RUNNING" && up(&s)
    });
    let again = workers_of(&site_status(&dir), "pool");
    assert_eq!(again.len(), 3, "{again:?}");
    let generation = again[0].1;
    assert!(generation > 1, "{again:?}");
    assert!(again.iter().all(|w| w.1 == generation), "{again:?}");
    let addr = address(&site_status(&dir), "pool");
    let (code, body) = http_get(addr, TIMEOUT).expect("GET pool");
    assert_eq!(code, 200);
    let pid = body_pid(&body).expect("a pid in the body") as i64;
    assert!(again.iter().any(|w| w.2 == pid), "{pid} not in {again:?}");
}
