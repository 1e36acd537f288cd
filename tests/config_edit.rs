//! Applying an edited configuration file, end to end with real processes: SIGHUP and `reload`
//! without names apply the difference and reload the rest, `update` applies the difference
//! only, sockets whose address is unchanged are the same open socket, a removed program's
//! socket closes only after its last child exited, a `workers` change scales the program, and
//! an address that cannot be bound refuses the whole edit.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A Python child with a TCP socket at fd 3 that, on SIGTERM, closes its copy of the socket
/// and exits only once the file `gate` exists: while it lingers, only the master holds the
/// socket. It creates the file `armed` once its handler is in place.
fn lingering_job(gate: &Path, armed: &Path) -> String {
    let code = format!(
        "import os, signal, sys, time\\ndef term(*a):\\n    os.close(3)\\n    while not os.path.exists('{}'): time.sleep(0.01)\\n    sys.exit(0)\\nsignal.signal(signal.SIGTERM, term)\\nopen('{}', 'w').close()\\nwhile True: time.sleep(1)",
        gate.display(),
        armed.display()
    );
    format!("[\"python3\", \"-c\", \"{code}\"]")
}

/// The site's file: `[relaunch]` with the control socket in `dir`, then `programs`.
fn write_file(dir: &TempDir, programs: &str) -> PathBuf {
    let path = dir.join("site.toml");
    let text = format!(
        "[relaunch]\nname = \"site\"\ncontrol = \"{}\"\n{programs}",
        dir.join("ctl.sock").display()
    );
    std::fs::write(&path, text).expect("cannot write the config file");
    path
}

/// A `hello` program table.
fn hello(name: &str, listen: &str, args: &str, priority: u32) -> String {
    format!(
        "\n[program.{name}]\ncommand = [\"{}\"{args}]\nlisten = [{listen}]\npriority = {priority}\n",
        hello_bin().display()
    )
}

/// A Python program without sockets.
fn python(name: &str, priority: u32) -> String {
    format!(
        "\n[program.{name}]\ncommand = [\"python3\", \"-c\", \"import signal, sys, time\\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\\nwhile True: time.sleep(1)\"]\npriority = {priority}\n"
    )
}

/// The current pids of `name` (every worker), if it is RUNNING with every worker up.
fn running_pids(status: &Value, name: &str) -> Option<Vec<i64>> {
    let p = find_program(status, name)?;
    if p["state"] != "RUNNING" {
        return None;
    }
    let mut pids: Vec<i64> = p["generations"]
        .as_array()?
        .iter()
        .filter(|g| g["role"] == "current")
        .filter_map(|g| g["pid"].as_i64())
        .collect();
    pids.sort();
    (!pids.is_empty()).then_some(pids)
}

fn running_pid(status: &Value, name: &str) -> Option<i64> {
    running_pids(status, name).map(|p| p[0])
}

fn address(status: &Value, name: &str) -> SocketAddr {
    site_program(status, name)["sockets"][0]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address for {name} in {status}"))
}

/// The open socket behind fd `fd` of `pid`: `socket:[INODE]`.
fn socket_inode(pid: i64, fd: i32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd/{fd}: {e}"));
    let link = link.display().to_string();
    assert!(link.starts_with("socket:["), "{link}");
    link
}

fn cmdline(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn start(dir: &TempDir, file: &Path, names: &[&str]) -> Relaunch {
    let relaunch = Relaunch::start(&["--config", s(file)]);
    relaunch.wait_until(TIMEOUT, "every program RUNNING", || {
        let (_, out, _) = site_client(dir, &["status", "--json"]);
        serde_json::from_str::<Value>(&out)
            .is_ok_and(|status| names.iter().all(|n| running_pid(&status, n).is_some()))
    });
    relaunch
}

fn hup(relaunch: &Relaunch) {
    kill(relaunch.pid(), nix::sys::signal::Signal::SIGHUP as i32);
}

#[test]
fn applying_an_edit_adds_removes_and_changes_programs_and_keeps_unchanged_sockets() {
    let dir = TempDir::new("edit-apply");
    let gate = dir.join("let-jobs-exit");
    let armed = dir.join("jobs-armed");
    let web = hello("web", "\"http=127.0.0.1:0\"", "", 10);
    let api = hello("api", "\"http=127.0.0.1:0\"", "", 20);
    let jobs = format!(
        "\n[program.jobs]\ncommand = {}\nlisten = [\"127.0.0.1:0\"]\nstop-wait-secs = 120\npriority = 30\n",
        lingering_job(&gate, &armed)
    );
    let file = write_file(&dir, &format!("{web}{api}{jobs}"));
    let relaunch = start(&dir, &file, &["web", "api", "jobs"]);
    relaunch.wait_until(TIMEOUT, "jobs' SIGTERM handler in place", || armed.exists());
    let before = site_status(&dir);
    let web_addr = address(&before, "web");
    let (web_pid, api_pid, jobs_pid) = (
        running_pid(&before, "web").unwrap(),
        running_pid(&before, "api").unwrap(),
        running_pid(&before, "jobs").unwrap(),
    );
    let jobs_addr = address(&before, "jobs");
    let api_addr = address(&before, "api");
    let web_socket = socket_inode(web_pid, 3);

    // The edit: jobs removed, api on a new address with new arguments, admin added, web as
    // it was; a HUP under load on web.
    let load = Load::start(web_addr, 4);
    let api2 = hello(
        "api",
        "\"http=127.0.0.2:0\"",
        ", \"--drain-spread-ms\", \"5\"",
        20,
    );
    let admin = hello("admin", "\"http=127.0.0.1:0\"", "", 40);
    write_file(&dir, &format!("{web}{api2}{admin}"));
    hup(&relaunch);
    relaunch.wait_until(TIMEOUT, "the edit applied", || {
        let s = site_status(&dir);
        find_program(&s, "jobs").is_none()
            && running_pid(&s, "admin").is_some()
            && running_pid(&s, "api").is_some_and(|p| p != api_pid)
            && running_pid(&s, "web").is_some_and(|p| p != web_pid)
            && site_program(&s, "web")["last_reload"]["result"] == "ok"
    });
    let after = site_status(&dir);
    assert!(after["config_error"].is_null(), "{after}");
    // api: its new address and arguments.
    let api_new = address(&after, "api");
    assert_eq!(api_new.ip().to_string(), "127.0.0.2", "{after}");
    let (code, body) = http_get(api_new, TIMEOUT).expect("GET api at its new address");
    let api_now = running_pid(&after, "api").unwrap();
    assert_eq!((code, body_pid(&body)), (200, Some(api_now as i32)));
    assert!(
        cmdline(api_now).contains("--drain-spread-ms 5"),
        "{}",
        cmdline(api_now)
    );
    // api's generations continue.
    assert!(site_program(&after, "api")["generations"][0]["generation"].as_u64() > Some(1));
    // admin serves.
    let admin_now = running_pid(&after, "admin").unwrap();
    let (code, body) = http_get(address(&after, "admin"), TIMEOUT).expect("GET admin");
    assert_eq!((code, body_pid(&body)), (200, Some(admin_now as i32)));
    // web: reloaded (HUP means reload) on the same open socket, without a failed request.
    let web_now = running_pid(&after, "web").unwrap();
    assert_eq!(address(&after, "web"), web_addr);
    assert_eq!(
        socket_inode(web_now, 3),
        web_socket,
        "web's socket was replaced"
    );
    assert!(
        poll_until(TIMEOUT, || load.seen(web_now as i32)),
        "the new web never answered"
    );
    let stats = load.finish();
    assert!(
        stats.failures.is_empty(),
        "failed requests on web: {:?} {:?}",
        stats.failures,
        stats.samples
    );
    // api's old address is closed once its old child is gone.
    relaunch.wait_until(TIMEOUT, "api's old child gone", || {
        !proc_alive(api_pid as i32)
    });
    relaunch.wait_until(TIMEOUT, "api's old address refused", || {
        TcpStream::connect_timeout(&api_addr, TIMEOUT).is_err()
    });

    // jobs: stopped, but its child lingers (it closed its own copy): the master's copy of
    // the socket still takes connections, until the child has exited.
    assert!(
        proc_alive(jobs_pid as i32),
        "jobs exited before the gate was opened"
    );
    let queued = TcpStream::connect_timeout(&jobs_addr, TIMEOUT);
    assert!(
        queued.is_ok(),
        "jobs' port refused while its child lives: {queued:?}"
    );
    assert!(proc_alive(jobs_pid as i32));
    std::fs::write(&gate, "").unwrap();
    relaunch.wait_until(TIMEOUT, "jobs' port refused", || {
        let alive = proc_alive(jobs_pid as i32);
        let refused = TcpStream::connect_timeout(&jobs_addr, TIMEOUT).is_err();
        assert!(
            !(refused && alive),
            "jobs' port was closed while its child still lived"
        );
        refused
    });
}

#[test]
fn update_applies_the_difference_only_and_leaves_unchanged_pids_alone() {
    let dir = TempDir::new("edit-update");
    let web = hello("web", "\"http=127.0.0.1:0\"", "", 10);
    let api = hello("api", "\"http=127.0.0.1:0\"", "", 20);
    let jobs = python("jobs", 30);
    let file = write_file(&dir, &format!("{web}{api}{jobs}"));
    let _relaunch = start(&dir, &file, &["web", "api", "jobs"]);
    let before = site_status(&dir);
    let api_addr = address(&before, "api");
    let pids: Vec<_> = ["web", "api", "jobs"]
        .iter()
        .map(|n| running_pid(&before, n).unwrap())
        .collect();
    let api_socket = socket_inode(pids[1], 3);
    // Nothing changed: nothing happens.
    let (code, out, err) = site_client(&dir, &["update"]);
    assert_eq!((code, out.as_str()), (0, "no program changed\n"), "{err}");
    // api gets new arguments and its socket another name; admin is added; jobs removed.
    let api2 = hello(
        "api",
        "\"public=127.0.0.1:0\"",
        ", \"--drain-spread-ms\", \"5\"",
        20,
    );
    let admin = hello("admin", "\"http=127.0.0.1:0\"", "", 40);
    write_file(&dir, &format!("{web}{api2}{admin}"));
    let (code, out, err) = site_client(&dir, &["update", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added: admin\n"), "{out}");
    assert!(out.contains("removed: jobs\n"), "{out}");
    assert!(out.contains("changed: api\n"), "{out}");
    assert!(!out.contains("reloaded"), "{out}");
    assert!(out.contains("api: changed done"), "{out}");
    assert!(out.contains("admin: added done"), "{out}");
    assert!(out.contains("jobs: removed done"), "{out}");
    let after = site_status(&dir);
    assert_eq!(running_pid(&after, "web"), Some(pids[0]), "web was touched");
    assert!(find_program(&after, "jobs").is_none());
    assert!(!proc_alive(pids[2] as i32), "jobs' child still runs");
    let api_now = running_pid(&after, "api").unwrap();
    assert_ne!(api_now, pids[1]);
    // The same open socket, under its new name.
    assert_eq!(address(&after, "api"), api_addr);
    assert_eq!(socket_inode(api_now, 3), api_socket);
    assert_eq!(site_program(&after, "api")["sockets"][0]["name"], "public");
    let (code, body) = http_get(api_addr, TIMEOUT).expect("GET api");
    assert_eq!(code, 200);
    assert!(body.contains("fdnames=public"), "{body}");
    assert!(running_pid(&after, "admin").is_some());
}

#[test]
fn a_workers_change_in_the_file_scales_the_program() {
    let dir = TempDir::new("edit-workers");
    let pool = |n: usize| {
        format!(
            "{}workers = {n}\n",
            hello("pool", "\"http=127.0.0.1:0\"", "", 10)
        )
    };
    let jobs = python("jobs", 20);
    let file = write_file(&dir, &format!("{}{jobs}", pool(2)));
    let relaunch = start(&dir, &file, &["pool", "jobs"]);
    let before = site_status(&dir);
    assert_eq!(running_pids(&before, "pool").unwrap().len(), 2);
    let jobs_pid = running_pid(&before, "jobs");
    let addr = address(&before, "pool");
    write_file(&dir, &format!("{}{jobs}", pool(3)));
    let (code, out, err) = site_client(&dir, &["update", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("changed: pool"), "{out}");
    let after = site_status(&dir);
    let pids = running_pids(&after, "pool").expect("pool running");
    assert_eq!(pids.len(), 3, "{after}");
    assert_eq!(site_program(&after, "pool")["workers_up"], 3);
    assert_eq!(running_pid(&after, "jobs"), jobs_pid);
    assert_eq!(address(&after, "pool"), addr);
    // Every old worker is gone.
    for pid in running_pids(&before, "pool").unwrap() {
        relaunch.wait_until(TIMEOUT, "an old worker gone", || !proc_alive(pid as i32));
    }
    // Back to one.
    write_file(&dir, &format!("{}{jobs}", pool(1)));
    let (code, out, err) = site_client(&dir, &["update", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(running_pids(&site_status(&dir), "pool").unwrap().len(), 1);
}

#[test]
fn an_address_that_cannot_be_bound_refuses_the_whole_edit() {
    let dir = TempDir::new("edit-bind-fails");
    let web = hello("web", "\"http=127.0.0.1:0\"", "", 10);
    let api = hello("api", "\"http=127.0.0.1:0\"", "", 20);
    let jobs = python("jobs", 30);
    let file = write_file(&dir, &format!("{web}{api}{jobs}"));
    let relaunch = start(&dir, &file, &["web", "api", "jobs"]);
    let before = site_status(&dir);
    let pids: Vec<_> = ["web", "api", "jobs"]
        .iter()
        .map(|n| running_pid(&before, n))
        .collect();
    // Someone else holds the port admin wants; api changes too, jobs goes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let admin = hello("admin", &format!("\"127.0.0.1:{port}\""), "", 40);
    let api2 = hello(
        "api",
        "\"http=127.0.0.1:0\"",
        ", \"--drain-spread-ms\", \"5\"",
        20,
    );
    write_file(&dir, &format!("{web}{api2}{admin}"));
    let (code, out, err) = site_client(&dir, &["update"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    hup(&relaunch);
    relaunch.wait_for_log("the edited configuration file cannot be applied", TIMEOUT);
    let status = site_status(&dir);
    let error = status["config_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("[program.admin]") && error.contains(&format!("{port}")),
        "{status}"
    );
    let now: Vec<_> = ["web", "api", "jobs"]
        .iter()
        .map(|n| running_pid(&status, n))
        .collect();
    assert_eq!(now, pids, "a refused edit must change nothing");
    assert!(find_program(&status, "admin").is_none());
    // Once the port is free, the same file applies.
    drop(taken);
    let (code, out, err) = site_client(&dir, &["update", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(site_status(&dir)["config_error"].is_null());
}

#[test]
fn reload_wait_without_names_reads_the_file_and_waits_for_every_program() {
    let dir = TempDir::new("edit-reload-wait");
    let web = hello("web", "\"http=127.0.0.1:0\"", "", 10);
    let jobs = python("jobs", 30);
    let file = write_file(&dir, &format!("{web}{jobs}"));
    let _relaunch = start(&dir, &file, &["web", "jobs"]);
    let before = site_status(&dir);
    let admin = hello("admin", "\"http=127.0.0.1:0\"", "", 40);
    write_file(&dir, &format!("{web}{jobs}{admin}"));
    let (code, out, err) = site_client(&dir, &["reload", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added: admin\n"), "{out}");
    assert!(out.contains("reloaded: web, jobs\n"), "{out}");
    for line in [
        "web: reloaded done",
        "jobs: reloaded done",
        "admin: added done",
    ] {
        assert!(out.contains(line), "{out}");
    }
    // It answered once every part had ended: all three run, web and jobs anew.
    let after = site_status(&dir);
    for name in ["web", "jobs"] {
        assert_ne!(
            running_pid(&after, name),
            running_pid(&before, name),
            "{name}"
        );
        assert_eq!(site_program(&after, name)["last_reload"]["result"], "ok");
    }
    assert!(running_pid(&after, "admin").is_some(), "{after}");
}

#[test]
fn a_changed_program_whose_new_settings_fail_keeps_serving_with_the_old_ones() {
    let dir = TempDir::new("edit-change-fails");
    let web = hello("web", "\"http=127.0.0.1:0\"", "", 10);
    let jobs = python("jobs", 30);
    let file = write_file(&dir, &format!("{web}{jobs}"));
    let relaunch = start(&dir, &file, &["web", "jobs"]);
    let before = site_status(&dir);
    let web_pid = running_pid(&before, "web").unwrap();
    let addr = address(&before, "web");
    // It exits at once (well within its start-secs).
    let broken = "\n[program.web]\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\nlisten = [\"http=127.0.0.1:0\"]\npriority = 10\nstart-retries = 0\nstart-secs = 60\n";
    write_file(&dir, &format!("{broken}{jobs}"));
    let (code, out, err) = site_client(&dir, &["update", "--wait"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("web: changed FAILED"), "{out}");
    assert!(err.contains("web (changed)"), "{err}");
    let status = site_status(&dir);
    assert_eq!(running_pid(&status, "web"), Some(web_pid));
    let error = status["config_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("program web") && error.contains("previous settings"),
        "{status}"
    );
    let (code, body) = http_get(addr, TIMEOUT).expect("GET web");
    assert_eq!((code, body_pid(&body)), (200, Some(web_pid as i32)));
    assert!(proc_alive(relaunch.pid()));
}
