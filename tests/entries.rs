//! Named entry points (`relaunch::entry`): `examples/entries` runs its `web` and `jobs`
//! functions as two programs of one self-hosted master, each restarted alone when it crashes.

mod common;

use std::fs;

use common::*;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// The pid of generation `generation` of program `program`, from its `spawned` line.
fn spawned(master: &Relaunch, program: &str, generation: u32) -> i32 {
    let tag = format!("program{{program={program}}}:");
    let generation = generation.to_string();
    let mut pid = None;
    master.wait_until(
        TIMEOUT,
        &format!("{program} generation {generation} is spawned"),
        || {
            pid = master
                .lines()
                .iter()
                .find(|l| {
                    l.contains(&tag)
                        && event_matches(l, "spawned", &[("generation", generation.as_str())])
                })
                .and_then(|l| field_i32(l, "pid"));
            pid.is_some()
        },
    );
    pid.unwrap()
}

/// How many children of `program` were spawned so far.
fn spawn_count(master: &Relaunch, program: &str) -> usize {
    let tag = format!("program{{program={program}}}:");
    master
        .lines()
        .iter()
        .filter(|l| l.contains(&tag) && is_event(l, "spawned"))
        .count()
}

/// The pids that wrote ticks to the jobs file.
fn tick_pids(file: &std::path::Path) -> Vec<i32> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| field_i32(l, "pid"))
        .collect()
}

fn parent(pid: i32) -> Option<i32> {
    proc_stat(pid).map(|st| st.ppid)
}

#[test]
fn two_entry_points_run_as_two_programs_of_one_master_each_restarted_alone() {
    let dir = TempDir::new("entries");
    let jobs_file = dir.join("jobs.log");
    let mut cmd = Relaunch::command_for(
        &example_bin("entries"),
        &["--listen", "127.0.0.1:0", "--jobs-file", s(&jobs_file)],
    );
    cmd.env("RELAUNCH_CONTROL_DIR", dir.path());
    let mut master = Relaunch::spawn(cmd);
    let addr = master.addr("http");
    let web = spawned(&master, "web", 1);
    let jobs = spawned(&master, "jobs", 1);
    assert_ne!(web, jobs);
    for pid in [web, jobs] {
        assert_eq!(parent(pid), Some(master.pid()), "a child of the master");
    }
    let (code, body) = http_get(addr, TIMEOUT).expect("GET web");
    assert_eq!(code, 200);
    assert_eq!(body, format!("pid={web} entry=web"));
    master.wait_until(TIMEOUT, "the job runner ticks", || {
        tick_pids(&jobs_file).contains(&jobs)
    });

    // The job runner crashes: only it is restarted.
    assert!(kill(jobs, SIGKILL));
    let jobs2 = spawned(&master, "jobs", 2);
    master.wait_until(TIMEOUT, "the new job runner ticks", || {
        tick_pids(&jobs_file).contains(&jobs2)
    });
    assert_eq!(spawn_count(&master, "web"), 1, "web was not restarted");
    assert!(proc_alive(web));
    let (_, body) = http_get(addr, TIMEOUT).expect("GET web");
    assert_eq!(body, format!("pid={web} entry=web"));

    // The web server crashes: only it is restarted, on the same socket.
    assert!(kill(web, SIGKILL));
    let web2 = spawned(&master, "web", 2);
    master.wait_until(
        TIMEOUT,
        "the new web server answers",
        || matches!(http_get(addr, TIMEOUT), Ok((200, b)) if b == format!("pid={web2} entry=web")),
    );
    assert_eq!(
        spawn_count(&master, "jobs"),
        2,
        "jobs was not restarted again"
    );
    assert!(proc_alive(jobs2));

    // SIGTERM stops both; the master exits 0.
    master.signal(SIGTERM);
    let status = master.wait_exit(TIMEOUT);
    assert_exit_code(&master, status, 0);
    assert!(!proc_alive(web2) && !proc_alive(jobs2));
}
