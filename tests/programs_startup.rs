//! Starting several programs (`--config FILE`), end to end: each program gets its share of
//! the sockets relaunch inherited (by name or by address), and `--daemon` returns once every
//! autostart program is up, or names the one that did not come up.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::Value;

fn write_file(dir: &TempDir, master: &str, programs: &str) -> PathBuf {
    let path = dir.join("site.toml");
    let text = format!(
        "[relaunch]\nname = \"site\"\ncontrol = \"{}\"\n{master}{programs}",
        dir.join("ctl.sock").display()
    );
    std::fs::write(&path, text).expect("cannot write the config file");
    path
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Kills the daemon named by the pid file (and its children) when dropped.
struct Daemon(PathBuf);

impl Daemon {
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let is_relaunch = std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|p| p.file_name().is_some_and(|n| n == "relaunch"));
        if is_relaunch && proc_alive(pid) {
            kill_tree(pid);
            poll_until(TIMEOUT, || !proc_alive(pid));
        }
    }
}

/// Runs `relaunch --config FILE` (with `daemon = true` in the file) to its end, within the
/// deadline: (exit code, stderr).
fn run_daemon(file: &Path) -> (i32, String) {
    let mut child = Command::new(relaunch_bin())
        .args(["--config", s(file)])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start relaunch");
    let deadline = Instant::now() + TIMEOUT * 2;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relaunch --daemon did not return in time");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.code().unwrap_or(-1), err)
}

#[test]
fn daemon_returns_once_every_autostart_program_is_up() {
    let dir = TempDir::new("startup-daemon");
    let pid_file = dir.join("relaunch.pid");
    let _daemon = Daemon(pid_file.clone());
    let master = format!("daemon = true\npid-file = \"{}\"\n", pid_file.display());
    let hello = hello_bin();
    let programs = format!(
        "\n[program.web]\ncommand = [\"{h}\"]\nlisten = [\"127.0.0.1:0\"]\npriority = 1\n\n[program.slow]\ncommand = [\"{h}\", \"--startup-delay-ms\", \"500\"]\nlisten = [\"127.0.0.1:0\"]\nstart-secs = 2\npriority = 2\n\n[program.later]\ncommand = [\"sleep\", \"1000\"]\nautostart = false\n",
        h = hello.display()
    );
    let file = write_file(&dir, &master, &programs);
    let (code, err) = run_daemon(&file);
    assert_eq!(code, 0, "{err}");
    // Right when it returned, both autostart programs are up (the later one is not asked for).
    let status = site_status(&dir);
    assert!(site_running_pid(&status, "web").is_some(), "{status}");
    assert!(site_running_pid(&status, "slow").is_some(), "{status}");
    assert_eq!(site_program(&status, "later")["state"], "STOPPED");
}

#[test]
fn daemon_names_the_program_that_did_not_come_up_and_exits_non_zero() {
    let dir = TempDir::new("startup-daemon-fails");
    let pid_file = dir.join("relaunch.pid");
    let _daemon = Daemon(pid_file.clone());
    let master = format!("daemon = true\npid-file = \"{}\"\n", pid_file.display());
    let programs = format!(
        "\n[program.web]\ncommand = [\"{}\"]\nlisten = [\"127.0.0.1:0\"]\npriority = 1\n\n[program.broken]\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\nstart-secs = 60\nstart-retries = 0\npriority = 2\n",
        hello_bin().display()
    );
    let file = write_file(&dir, &master, &programs);
    let (code, err) = run_daemon(&file);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("program broken did not come up"), "{err}");
    poll_until(TIMEOUT, || !pid_file.exists());
    assert!(!pid_file.exists(), "the pid file was left behind");
}

/// `systemd-socket-activate -l a -l b -l c --fdname=one:two:three relaunch --config FILE`.
#[test]
fn each_program_gets_its_share_of_the_activation_sockets_by_name_or_address() {
    let Some(activate) = which("systemd-socket-activate") else {
        panic!("systemd-socket-activate is needed (Debian package systemd)");
    };
    let dir = TempDir::new("edit-activation");
    let (a, b, c) = (dir.join("a.sock"), dir.join("b.sock"), dir.join("c.sock"));
    let sleeper = "command = [\"sleep\", \"1000\"]\n";
    let programs = format!(
        "\n[program.first]\n{sleeper}listen = [\"systemd:one\"]\npriority = 1\n\n[program.second]\n{sleeper}listen = [\"unix:{}\"]\npriority = 2\n",
        b.display()
    );
    let file = write_file(&dir, "", &programs);
    let bin = relaunch_bin();
    let args = [
        "-l",
        s(&a),
        "-l",
        s(&b),
        "-l",
        s(&c),
        "--fdname=one:two:three",
        s(&bin),
        "--config",
        s(&file),
    ];
    let relaunch = Relaunch::spawn(Relaunch::command_for(&activate, &args));
    relaunch.wait_until(TIMEOUT, "systemd-socket-activate listening", || {
        common::net::unix_path_is_listening(&a)
    });
    // The first connection makes systemd-socket-activate exec relaunch.
    let _first = std::os::unix::net::UnixStream::connect(&a).expect("connect to a.sock");
    relaunch.wait_until(TIMEOUT, "both programs RUNNING", || {
        let (_, out, _) = site_client(&dir, &["status", "--json"]);
        serde_json::from_str::<Value>(&out).is_ok_and(|status| {
            site_running_pid(&status, "first").is_some()
                && site_running_pid(&status, "second").is_some()
        })
    });
    let status = site_status(&dir);
    for (name, path) in [("first", &a), ("second", &b)] {
        let pid = site_running_pid(&status, name).unwrap();
        assert_eq!(
            common::net::unix_socket_path_of_fd(pid as i32, 3).as_deref(),
            Some(s(path)),
            "{name}'s fd 3"
        );
        assert!(
            !Path::new(&format!("/proc/{pid}/fd/4")).exists(),
            "{name} got more than its share"
        );
    }
    // "second" took the activated socket on its address rather than binding its own.
    assert_eq!(site_program(&status, "second")["sockets"][0]["name"], "two");
    relaunch.wait_for_line("socket three not passed on", TIMEOUT, |l| {
        l.contains("not passing this socket-activation socket on") && l.contains("three")
    });
}
