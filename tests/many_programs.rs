//! Many programs in one master (`--config FILE`): what a thousand programs exposed, at a scale a
//! test can afford. `benches/programs.rs` measures the full thousand (BENCHMARKS.md).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A config file of `n` programs in `dir`, each a `hello` with one TCP socket on port 0,
/// `--ready notify`, and its output captured (the default).
fn write_programs(dir: &TempDir, n: usize) -> PathBuf {
    let path = dir.join("many.toml");
    let mut text = format!(
        "[relaunch]\nname = \"many\"\ncontrol = \"{}\"\n",
        dir.join("ctl.sock").display()
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[program.p{i:03}]\ncommand = [\"{}\"]\nlisten = [\"http=127.0.0.1:0\"]\nready = \"notify\"\n",
            hello_bin().display()
        ));
    }
    std::fs::write(&path, text).expect("cannot write the config file");
    path
}

fn status_json(dir: &TempDir) -> (i32, Value) {
    let out = Command::new(relaunch_bin())
        .args(["status", "--json", "--control", s(&dir.join("ctl.sock"))])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the client");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// Starts relaunch on `n` programs, under a soft open-file limit of `soft` if given (through
/// `sh -c 'ulimit -Sn N; exec relaunch ...'`: the same pid), and waits until every program
/// is RUNNING.
fn start_programs(dir: &TempDir, n: usize, soft: Option<u64>) -> (Relaunch, Value) {
    let file = write_programs(dir, n);
    let relaunch = match soft {
        None => Relaunch::start(&["--config", s(&file)]),
        Some(soft) => {
            let script = format!("ulimit -Sn {soft} && exec \"$0\" \"$@\"");
            let relaunch = relaunch_bin();
            let args = ["-c", &script, s(&relaunch), "--config", s(&file)];
            Relaunch::spawn(Relaunch::command_for(
                std::path::Path::new("/bin/sh"),
                &args,
            ))
        }
    };
    let mut status = Value::Null;
    relaunch.wait_until(TIMEOUT, &format!("all {n} programs RUNNING"), || {
        let (code, json) = status_json(dir);
        status = json;
        code == 0
    });
    (relaunch, status)
}

/// Every program's socket address, from a status record.
fn addresses(status: &Value) -> Vec<std::net::SocketAddr> {
    status["programs"]
        .as_array()
        .expect("programs in the status record")
        .iter()
        .map(|p| {
            p["sockets"][0]["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {p}"))
        })
        .collect()
}

/// `RssAnon` of `pid`, KiB.
fn rss_anon_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("RssAnon")
}

#[test]
fn forty_programs_start_when_together_they_need_more_fds_than_the_soft_limit() {
    use nix::sys::resource::{getrlimit, Resource};
    // 40 × (socket + notify socket + pidfd + 2 output pipes) = 200 fds, over a soft limit of
    // 128 that each program's one socket alone never reaches. relaunch raises it to the hard
    // limit, as it does for many sockets.
    let (n, soft) = (40, 128);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < 1024 {
        eprintln!("NOTE: the hard open-file limit is {hard}; this test needs 1024");
        return;
    }
    let dir = TempDir::new("many-fds");
    let (relaunch, status) = start_programs(&dir, n, Some(soft));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relaunch.pid())).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        !files.split_whitespace().any(|w| w == soft.to_string()),
        "the soft limit was not raised: {files}"
    );
    let addrs = addresses(&status);
    assert_eq!(addrs.len(), n);
    for addr in [addrs[0], addrs[n / 2], addrs[n - 1]] {
        let (code, body) = http_get(addr, TIMEOUT).unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert_eq!(code, 200, "{body}");
    }
    assert!(relaunch.stderr().contains("raised the open-file limit"));
}

#[test]
fn each_program_costs_the_master_little_memory() {
    // Each program's output capture used to keep a 64 KiB read buffer of its own once its
    // child had written a line: 64 MiB for 1,000 programs. The buffer is now shared.
    let one = TempDir::new("many-mem-1");
    let (single, _) = start_programs(&one, 1, None);
    let base = rss_anon_kib(single.pid());
    drop(single);
    let dir = TempDir::new("many-mem-40");
    let n = 40;
    let (relaunch, _) = start_programs(&dir, n, None);
    // Every child has written its "serving" line through its output pipe by now.
    relaunch.wait_until(TIMEOUT, "every child's line forwarded", || {
        relaunch
            .lines()
            .iter()
            .filter(|l| l.contains("serving on"))
            .count()
            >= n
    });
    let anon = rss_anon_kib(relaunch.pid());
    let per_program = anon.saturating_sub(base) / (n as u64 - 1);
    assert!(
        per_program < 32,
        "{per_program} KiB of anonymous memory per program (1 program: {base} KiB, {n}: {anon} KiB)"
    );
}
