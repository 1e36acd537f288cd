//! Processes: /proc, signals, the process-tree teardown, exit statuses.

use super::*;

/// One line of `/proc/<pid>/stat`, the fields the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
    /// Start time in clock ticks since boot: tells a process from a later one with a reused pid.
    pub start_time: u64,
    /// CPU time used so far (user + system), in clock ticks.
    pub cpu_ticks: u64,
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) state ppid ..." where comm may contain spaces and parentheses.
    let open = text.find(" (")?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        // Fields 14 (utime), 15 (stime) and 22 of stat; `rest` starts at field 3.
        cpu_ticks: rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat`, or None if there is no such process (any more).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process currently visible in /proc.
pub fn proc_table() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        proc_stat(pid)
    })
    .collect()
}

/// The process exists in /proc (possibly as a zombie).
pub fn proc_exists(pid: i32) -> bool {
    proc_stat(pid).is_some()
}

/// The process exists and is not a zombie.
pub fn proc_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|st| st.state != 'Z')
}

/// All descendants of `root` (children, grandchildren, ...), from one scan of /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let table = proc_table();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for st in table.iter().filter(|st| st.ppid == parent) {
            if !found.contains(&st.pid) {
                found.push(st.pid);
                frontier.push(st.pid);
            }
        }
    }
    found
}

/// Sends `sig` to `pid`; false if the process does not exist.
pub fn kill(pid: i32, sig: i32) -> bool {
    assert!(pid > 0, "refusing to signal pid {pid}");
    // SAFETY: kill(2) with a positive pid only signals that one process.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// The local (address family is IPv6, port) of the TCP socket at `/proc/<pid>/fd/<fd>`,
/// looked up by inode in /proc/net/tcp and /proc/net/tcp6.
pub fn tcp_socket_of_fd(pid: i32, fd: i32) -> Option<(bool, u16)> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .to_owned();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(table) = fs::read_to_string(file) else {
            continue;
        };
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.get(9) == Some(&inode.as_str()) {
                let port = cols.get(1)?.rsplit(':').next()?;
                return Some((v6, u16::from_str_radix(port, 16).ok()?));
            }
        }
    }
    None
}

/// Whether the host can bind `[::1]`; the reason if not.
pub fn ipv6_loopback() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0")
        .map(drop)
        .map_err(|err| format!("cannot bind [::1]:0 on this host: {err}"))
}

/// The one process-tree teardown: stops `root`, then stops its descendants until a scan finds
/// no new one (a stopped process cannot fork, and a stopped relaunch cannot restart what is
/// killed), then SIGKILLs them all and `root` last. Returns the descendants, now orphans for
/// the caller (a subreaper) to reap.
pub fn kill_tree(root: i32) -> BTreeSet<i32> {
    kill(root, libc::SIGSTOP);
    let mut victims = BTreeSet::new();
    for _ in 0..100 {
        let new: Vec<i32> = descendants(root)
            .into_iter()
            .filter(|pid| !victims.contains(pid))
            .collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            kill(pid, libc::SIGSTOP);
            victims.insert(pid);
        }
    }
    for &pid in &victims {
        kill(pid, libc::SIGKILL);
    }
    kill(root, libc::SIGKILL);
    victims
}

/// How a process ended, in words: `exit code 3`, `killed by signal 9`.
pub fn exit_description(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status:?}"),
    }
}

/// The CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat`; None if
/// there is no such process (any more).
pub fn proc_cpu_time(pid: i32) -> Option<Duration> {
    let ticks = proc_stat(pid)?.cpu_ticks;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&n| n > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}
