//! The probe example's reports.

use super::*;

/// One start-up line of `probe --report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub pid: i32,
    pub ppid: i32,
    /// None when the variable was unset (`-` in the report).
    pub listen_pid: Option<String>,
    pub listen_fds: Option<String>,
    pub listen_fdnames: Option<String>,
    pub notify_socket: Option<String>,
    /// `RELAUNCH_WORKER` and `RELAUNCH_GENERATION` (`--workers`).
    pub worker: Option<String>,
    pub generation: Option<String>,
    /// Open fds, sorted.
    pub fds: Vec<i32>,
    /// Open fds with FD_CLOEXEC set.
    pub cloexec: Vec<i32>,
    /// Real uid and gid, supplementary groups (sorted), umask (`0022`), niceness, working
    /// directory and RLIMIT_NOFILE (`soft:hard`). None if the report lacks them.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Option<Vec<u32>>,
    pub umask: Option<String>,
    pub nice: Option<i32>,
    pub cwd: Option<String>,
    pub nofile: Option<String>,
    pub line: String,
}

impl ProbeReport {
    pub fn parse(line: &str) -> Option<ProbeReport> {
        let var = |key: &str| field(line, key).filter(|v| *v != "-").map(str::to_owned);
        let list = |key: &str| -> Option<Vec<i32>> {
            match field(line, key)? {
                "-" => Some(Vec::new()),
                v => v.split(',').map(|fd| fd.parse().ok()).collect(),
            }
        };
        Some(ProbeReport {
            pid: field_i32(line, "pid")?,
            ppid: field_i32(line, "ppid")?,
            listen_pid: var("LISTEN_PID"),
            listen_fds: var("LISTEN_FDS"),
            listen_fdnames: var("LISTEN_FDNAMES"),
            notify_socket: var("NOTIFY_SOCKET"),
            worker: var("RELAUNCH_WORKER"),
            generation: var("RELAUNCH_GENERATION"),
            fds: list("fds")?,
            cloexec: list("cloexec")?,
            uid: field(line, "uid").and_then(|v| v.parse().ok()),
            gid: field(line, "gid").and_then(|v| v.parse().ok()),
            groups: list("groups").map(|g| g.into_iter().map(|g| g as u32).collect()),
            umask: var("umask"),
            nice: field_i32(line, "nice"),
            cwd: var("cwd"),
            nofile: var("nofile"),
            line: line.to_owned(),
        })
    }
}

impl ProbeReport {
    /// The probe's `sockN=DOMAIN:TYPE:ACCEPTCONN` description of fd `fd` (e.g.
    /// `inet:stream:listening`; `-` for an fd that is not a socket), if it reported one.
    pub fn sock(&self, fd: i32) -> Option<&str> {
        field(&self.line, &format!("sock{fd}"))
    }
}

/// The start-up reports in a `probe --report` file (empty if it does not exist yet).
pub fn read_reports(path: &Path) -> Vec<ProbeReport> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("pid="))
        .filter_map(ProbeReport::parse)
        .collect()
}

/// The `signal=NAME pid=N` lines in a `probe --report` file, as (NAME, pid).
pub fn read_signal_reports(path: &Path) -> Vec<(String, i32)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Some((field(l, "signal")?.to_owned(), field_i32(l, "pid")?)))
        .collect()
}

/// Waits for the report of the probe with pid `pid`. A probe writes it after setting up its
/// signal handling, so once it exists the probe reacts to signals as asked.
#[track_caller]
pub fn wait_for_report(relaunch: &Relaunch, path: &Path, pid: i32) -> ProbeReport {
    let mut found = None;
    relaunch.wait_until(TIMEOUT, &format!("the report of probe pid {pid}"), || {
        found = read_reports(path).into_iter().find(|r| r.pid == pid);
        found.is_some()
    });
    found.expect("found")
}
