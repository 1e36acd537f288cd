//! End-to-end tests of every socket kind relaunch can pass on: TCP (v4, v6), UDP, unix stream,
//! datagram and seqpacket sockets (files and abstract), inherited `fd:N` sockets, and sockets
//! from systemd socket activation (with Debian's `systemd-socket-activate` as relaunch's real
//! parent). Real processes, real sockets: the child is `probe --echo`, which reports each fd's
//! socket type and answers on every socket it got.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use socket2::Type;

const T: Duration = TIMEOUT;

/// `relaunch --start-secs 0.2 FLAGS --listen L... -- probe --echo --report DIR/report`.
fn echo_command(dir: &TempDir, flags: &[&str], listen: &[String]) -> Command {
    let probe = probe_bin();
    let report = dir.join("report");
    let mut args: Vec<&str> = vec!["--start-secs", "0.2"];
    args.extend_from_slice(flags);
    for spec in listen {
        args.extend(["--listen", spec.as_str()]);
    }
    args.extend(["--", s(&probe), "--echo", "--report", s(&report)]);
    Relaunch::command(&args)
}

/// Sends SIGHUP and waits until generation `g` has replaced generation `g - 1` and the old
/// child has exited. Returns (old pid, new pid).
#[track_caller]
fn reload(r: &Relaunch, g: u32) -> (i32, i32) {
    let g = u64::from(g);
    if g == 2 {
        r.wait_running(1);
    }
    r.signal(libc::SIGHUP);
    let new = record_pid(&r.wait_reload_ok(g));
    let v = r.wait_status(&format!("generation {} reaped", g - 1), |v| {
        history(v, "exit").any(|e| e["generation"] == g - 1)
    });
    let old = history(&v, "exit")
        .find(|e| e["generation"] == g - 1)
        .map(record_pid)
        .expect("found");
    (old, new)
}

/// Asserts one echo exchange through `target` is answered by `pid`.
#[track_caller]
fn assert_echo(r: &Relaunch, target: &Target, client: Option<&DatagramClient>, pid: i32) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let msg = format!("hello-{}", N.fetch_add(1, Ordering::SeqCst));
    match echo(target, client, &msg, T) {
        Ok(got) if got == pid => {}
        Ok(got) => r.fail(&format!(
            "{} was answered by pid {got}, expected pid {pid}",
            target.desc
        )),
        Err(e) => r.fail(&format!("talking to {}: {e}", target.desc)),
    }
}

/// Asserts the child's view: exactly fds 0..=2 plus one socket per entry at 3.., with the
/// expected `sockN=` descriptions, its own LISTEN_PID and the expected LISTEN_FDNAMES.
#[track_caller]
fn assert_sockets(r: &Relaunch, report: &ProbeReport, expected: &[(&str, &str)]) {
    let mut problems = Vec::new();
    let n = expected.len() as i32;
    let fds: Vec<i32> = (0..3 + n).collect();
    if report.fds != fds {
        problems.push(format!("fds are {:?}, expected {fds:?}", report.fds));
    }
    if report.cloexec.iter().any(|&fd| fd >= 3) {
        problems.push(format!("close-on-exec fds: {:?}", report.cloexec));
    }
    if report.listen_pid.as_deref() != Some(report.pid.to_string().as_str()) {
        problems.push(format!("LISTEN_PID is {:?}", report.listen_pid));
    }
    if report.listen_fds.as_deref() != Some(n.to_string().as_str()) {
        problems.push(format!(
            "LISTEN_FDS is {:?}, expected {n}",
            report.listen_fds
        ));
    }
    let names: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
    if report.listen_fdnames.as_deref() != Some(names.join(":").as_str()) {
        problems.push(format!(
            "LISTEN_FDNAMES is {:?}, expected {:?}",
            report.listen_fdnames,
            names.join(":")
        ));
    }
    for (i, (name, sock)) in expected.iter().enumerate() {
        let fd = 3 + i as i32;
        if report.sock(fd) != Some(*sock) {
            problems.push(format!(
                "fd {fd} ({name}) is {:?}, expected {sock}",
                report.sock(fd)
            ));
        }
    }
    if !problems.is_empty() {
        r.fail(&format!(
            "child pid {} sees the wrong sockets:\n  {}\nreport: {}",
            report.pid,
            problems.join("\n  "),
            report.line
        ));
    }
}

/// The `listening` log line of the socket named `name`.
#[track_caller]
fn listening(r: &Relaunch, name: &str) -> String {
    r.wait_for_event("listening", &[("name", name)], T)
}

/// A unique abstract socket name for this test process.
fn abstract_name(tag: &str) -> String {
    format!("relaunch-test-{tag}-{}", std::process::id())
}

fn status_text(status: ExitStatus) -> String {
    format!("{status:?}")
}

/// Runs relaunch expecting it to fail at startup with `code`, its stderr mentioning every
/// needle, and no child spawned. Returns its stderr.
#[track_caller]
fn expect_failure(cmd: Command, code: i32, needles: &[&str]) -> String {
    let mut r = Relaunch::spawn(cmd);
    let status = r.wait_exit(T);
    if status.code() != Some(code) {
        r.fail(&format!(
            "relaunch ended with {}, expected exit code {code}",
            status_text(status)
        ));
    }
    let stderr = r.stderr();
    for needle in needles {
        if !stderr.contains(needle) {
            r.fail(&format!("stderr does not mention {needle:?}"));
        }
    }
    if !r.events("spawned").is_empty() {
        r.fail("a child was spawned");
    }
    stderr
}

// =============================================================================================
// 1. Every kind reaches the child with the right type, and talks through relaunch, across a
//    reload.

#[test]
fn every_socket_kind_reaches_the_child_and_answers_across_a_reload() {
    let dir = TempDir::new("kinds");
    let abs = abstract_name("kinds");
    let v6 = ipv6_loopback();
    let mut listen = vec![
        "tcp=127.0.0.1:0?nodelay=true&keepalive=true".to_owned(),
        "udp=udp://127.0.0.1:0".to_owned(),
        format!("stream=unix:{}", s(&dir.join("s.sock"))),
        format!("packet=unixpacket:{}", s(&dir.join("p.sock"))),
        format!("gram=unixgram:{}", s(&dir.join("g.sock"))),
        format!("abstract=unix:@{abs}"),
        format!("agram=unixgram:@{abs}-g"),
    ];
    let mut expected = vec![
        ("tcp", "inet:stream:listening"),
        ("udp", "inet:dgram:-"),
        ("stream", "unix:stream:listening"),
        ("packet", "unix:seqpacket:listening"),
        ("gram", "unix:dgram:-"),
        ("abstract", "unix:stream:listening"),
        ("agram", "unix:dgram:-"),
    ];
    match &v6 {
        Ok(()) => {
            listen.push("tcp6=tcp6://[::1]:0".to_owned());
            listen.push("udp6=udp6://[::1]:0".to_owned());
            expected.push(("tcp6", "inet6:stream:listening"));
            expected.push(("udp6", "inet6:dgram:-"));
        }
        Err(why) => eprintln!("NOTE: not testing IPv6 sockets: {why}"),
    }
    let r = Relaunch::spawn(echo_command(&dir, &[], &listen));

    // The startup log names each socket's kind and real address.
    let kinds = [
        ("tcp", "tcp"),
        ("udp", "udp"),
        ("stream", "unix"),
        ("packet", "unixpacket"),
        ("gram", "unixgram"),
        ("abstract", "unix"),
        ("agram", "unixgram"),
    ];
    for (i, (name, kind)) in kinds.iter().enumerate() {
        let line = listening(&r, name);
        assert_eq!(field(&line, "kind"), Some(*kind), "{line}");
        assert_eq!(field_i32(&line, "fd"), Some(3 + i as i32), "{line}");
    }
    assert_eq!(
        field(&listening(&r, "stream"), "addr"),
        Some(s(&dir.join("s.sock")))
    );
    assert_eq!(
        field(&listening(&r, "abstract"), "addr"),
        Some(format!("@{abs}").as_str())
    );
    assert_eq!(field(&listening(&r, "udp"), "backlog"), Some("-"));
    assert_eq!(field(&listening(&r, "gram"), "backlog"), Some("-"));

    let mut targets = vec![
        Target::tcp(r.addr("tcp")),
        Target::udp(r.addr("udp")),
        Target::unix(Type::STREAM, &dir.join("s.sock")),
        Target::unix(Type::SEQPACKET, &dir.join("p.sock")),
        Target::unix(Type::DGRAM, &dir.join("g.sock")),
        Target::abstract_unix(Type::STREAM, &abs),
        Target::abstract_unix(Type::DGRAM, &format!("{abs}-g")),
    ];
    if v6.is_ok() {
        targets.push(Target::tcp(r.addr("tcp6")));
        targets.push(Target::udp(r.addr("udp6")));
    }
    let udp_client = DatagramClient::udp(&r.addr("udp"));
    let udp6_client = v6.is_ok().then(|| DatagramClient::udp(&r.addr("udp6")));
    let unix_client = DatagramClient::unix(&dir.join("client.sock"));
    let client_for = |t: &Target| -> Option<&DatagramClient> {
        match (t.ty == Type::DGRAM, t.desc.as_str()) {
            (false, _) => None,
            (true, d) if d.starts_with("unix") => Some(&unix_client),
            (true, d) if d.contains('[') => udp6_client.as_ref(),
            (true, _) => Some(&udp_client),
        }
    };

    let report_path = dir.join("report");
    let pid1 = r.generation_pid(1);
    let gen1 = wait_for_report(&r, &report_path, pid1);
    assert_sockets(&r, &gen1, &expected);
    for t in &targets {
        assert_echo(&r, t, client_for(t), pid1);
    }

    let (old, pid2) = reload(&r, 2);
    assert_eq!(old, pid1);
    let gen2 = wait_for_report(&r, &report_path, pid2);
    assert_sockets(&r, &gen2, &expected);
    // Generation 1 is gone: every kind is now answered by generation 2, through the very same
    // sockets.
    for t in &targets {
        assert_echo(&r, t, client_for(t), pid2);
    }
}

// =============================================================================================
// 2. UDP through a reload: no datagram is lost while a child is alive.

#[test]
fn udp_echo_through_a_reload_loses_no_datagram() {
    let dir = TempDir::new("udp-reload");
    let r = Relaunch::spawn(echo_command(
        &dir,
        &[],
        &["dns=udp://127.0.0.1:0".to_owned()],
    ));
    let target = Target::udp(r.addr("dns"));
    let client = DatagramClient::udp(&r.addr("dns"));
    let pid1 = r.generation_pid(1);
    r.wait_running(1);

    // One datagram in flight at a time. A datagram counts as lost when its first send gets no
    // answer within REPLY_TIMEOUT; it is then sent again (at most RETRIES times) only so the
    // run can go on and report everything at once.
    const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
    const RETRIES: usize = 2;
    const MIN_DATAGRAMS: usize = 300;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lost = Vec::new();
    let mut answered_by: Vec<(usize, i32)> = Vec::new();
    let mut hup_sent = false;
    let mut old_gone_at: Option<usize> = None;
    let mut seq = 0;
    // Until enough were sent, the old generation is gone, and 50 more went to the new one.
    while seq < MIN_DATAGRAMS || old_gone_at.is_none_or(|at| seq < at + 50) {
        if Instant::now() > deadline {
            r.fail(&format!(
                "sent {seq} datagrams in 120 s without seeing the reload finish; lost: {lost:?}"
            ));
        }
        let msg = format!("seq={seq}");
        let mut pid = None;
        for attempt in 0..=RETRIES {
            match client.request(&target, &msg, REPLY_TIMEOUT) {
                Ok(Some(p)) => {
                    pid = Some(p);
                    break;
                }
                Ok(None) => {
                    if attempt == 0 {
                        lost.push(seq);
                    }
                }
                Err(e) => r.fail(&format!("datagram {seq}: {e}")),
            }
        }
        let Some(pid) = pid else {
            r.fail(&format!(
                "datagram {seq} got no answer in {} tries; lost so far: {lost:?}",
                RETRIES + 1
            ));
        };
        answered_by.push((seq, pid));
        // Reload once the exchange is going; remember when the old generation had exited.
        if seq == 20 {
            r.signal(libc::SIGHUP);
            hup_sent = true;
        }
        // A log look-up, not a status request: it must not slow the datagram loop down.
        if hup_sent && old_gone_at.is_none() && !r.events("exited").is_empty() {
            old_gone_at = Some(seq);
        }
        seq += 1;
    }
    let pid2 = record_pid(&r.wait_reload_ok(2));
    let gone = old_gone_at.expect("the old generation exited");
    let by_gen1 = answered_by.iter().filter(|(_, p)| *p == pid1).count();
    let by_gen2 = answered_by.iter().filter(|(_, p)| *p == pid2).count();
    let strangers: Vec<&(usize, i32)> = answered_by
        .iter()
        .filter(|(_, p)| *p != pid1 && *p != pid2)
        .collect();
    let late_gen1: Vec<usize> = answered_by
        .iter()
        .filter(|(s, p)| *s > gone && *p == pid1)
        .map(|(s, _)| *s)
        .collect();
    eprintln!(
        "{seq} datagrams: {by_gen1} answered by generation 1 (pid {pid1}), {by_gen2} by generation 2 (pid {pid2}); the old one was gone after #{gone}"
    );
    if !lost.is_empty()
        || !strangers.is_empty()
        || !late_gen1.is_empty()
        || by_gen1 == 0
        || by_gen2 == 0
    {
        r.fail(&format!(
            "lost (no answer within {REPLY_TIMEOUT:?}): {lost:?}; answered by unknown pids: {strangers:?}; answered by generation 1 after it exited: {late_gen1:?}; by gen1: {by_gen1}, by gen2: {by_gen2}"
        ));
    }
}

// =============================================================================================
// 3. Unix socket files: stale, live and foreign files at the path; permissions; lifetime.

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.join("app.sock");
    drop(UnixListener::bind(&path).expect("bind, then abandon, a unix socket"));
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let r = Relaunch::spawn(echo_command(&dir, &[], &[format!("unix:{}", s(&path))]));
    let line = r.wait_for_event("removed stale socket file", &[], T);
    assert_eq!(field(&line, "path"), Some(s(&path)), "{line}");
    let pid1 = r.generation_pid(1);
    assert_echo(&r, &Target::unix(Type::STREAM, &path), None, pid1);
    assert_eq!(
        field(&listening(&r, "unix-app.sock"), "addr"),
        Some(s(&path)),
        "default name from the file name"
    );
}

#[test]
fn live_socket_foreign_file_missing_directory_and_taken_abstract_name_are_refused() {
    let dir = TempDir::new("refused");
    let probe = probe_bin();
    let p = s(&probe);

    // Someone is listening on the path: refused, and their socket keeps working.
    let live = dir.join("live.sock");
    let theirs = UnixListener::bind(&live).expect("bind a live unix socket");
    let inode = fs::metadata(&live).unwrap().ino();
    let spec = format!("unix:{}", s(&live));
    let stderr = expect_failure(
        Relaunch::command(&["--listen", &spec, "--", p]),
        1,
        &[&format!("another process is listening on {}", s(&live))],
    );
    assert!(!stderr.contains("removed stale"), "{stderr}");
    assert_eq!(
        fs::metadata(&live).unwrap().ino(),
        inode,
        "the live socket file was replaced"
    );
    UnixStream::connect(&live).expect("the live socket still accepts connections");
    drop(theirs);

    // A regular file at the path is never removed.
    let data = dir.join("data");
    fs::write(&data, "precious").unwrap();
    let spec = format!("unix:{}", s(&data));
    expect_failure(
        Relaunch::command(&["--listen", &spec, "--", p]),
        1,
        &[&format!(
            "{} exists and is not a socket (a regular file)",
            s(&data)
        )],
    );
    assert_eq!(fs::read_to_string(&data).unwrap(), "precious");

    // The directory must exist.
    let missing = dir.join("no-such-dir/app.sock");
    let spec = format!("unix:{}", s(&missing));
    expect_failure(
        Relaunch::command(&["--listen", &spec, "--", p]),
        1,
        &[&format!(
            "cannot create unix socket {}: directory {} does not exist",
            s(&missing),
            s(&dir.join("no-such-dir"))
        )],
    );

    // An abstract name in use.
    let abs = abstract_name("taken");
    let taken = Target::abstract_unix(Type::STREAM, &abs);
    let holder = socket2::Socket::new(socket2::Domain::UNIX, Type::STREAM, None).unwrap();
    holder.bind(&taken.addr).unwrap();
    holder.listen(1).unwrap();
    let spec = format!("unix:@{abs}");
    expect_failure(
        Relaunch::command(&["--listen", &spec, "--", p]),
        1,
        &[&format!("another process is listening on @{abs}")],
    );
}

/// A user and a group other than root's to hand socket files to, by name, when the test runs
/// as root; else the current ones (which any user may set).
fn owner_and_group() -> (String, u32, String, u32) {
    use nix::unistd::{Gid, Group, Uid, User};
    let (uid, gid) = if Uid::current().is_root() {
        (Uid::from_raw(65534), Gid::from_raw(65534))
    } else {
        (Uid::current(), Gid::current())
    };
    let user = User::from_uid(uid)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user with uid {uid} to test owner= with"));
    let group = Group::from_gid(gid)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no group with gid {gid} to test group= with"));
    (user.name, uid.as_raw(), group.name, gid.as_raw())
}

#[test]
fn socket_file_mode_owner_and_group_are_applied_before_the_child_starts() {
    let dir = TempDir::new("perms");
    let (user, uid, group, gid) = owner_and_group();
    let named = dir.join("named.sock");
    let numeric = dir.join("numeric.sock");
    let listen = [
        format!(
            "named=unix:{}?mode=640&owner={user}&group={group}",
            s(&named)
        ),
        format!(
            "numeric=unixgram:{}?mode=0600&owner={uid}&group={gid}",
            s(&numeric)
        ),
    ];
    let r = Relaunch::spawn(echo_command(&dir, &[], &listen));
    // Checked as soon as the first child exists: it must not see anything else.
    let pid1 = r.generation_pid(1);
    for (path, mode) in [(&named, 0o640), (&numeric, 0o600)] {
        let meta = fs::symlink_metadata(path).expect("the socket file exists");
        assert!(meta.file_type().is_socket());
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, uid, gid),
            "{}: (mode, uid, gid), expected owner {user} group {group}",
            path.display()
        );
    }
    let listening_at = r
        .event_index("listening", &[("name", "numeric")])
        .expect("listening line");
    let spawned_at = r
        .event_index("spawned", &[("generation", "1")])
        .expect("spawned line");
    assert!(
        listening_at < spawned_at,
        "the sockets are ready before the child starts"
    );
    // Root's probe can still talk through it.
    wait_for_report(&r, &dir.join("report"), pid1);
    assert_echo(&r, &Target::unix(Type::STREAM, &named), None, pid1);
}

#[test]
fn socket_files_stay_across_reloads_and_are_removed_on_exit_unless_replaced() {
    let dir = TempDir::new("lifetime");
    let kept = dir.join("kept.sock");
    let replaced = dir.join("replaced.sock");
    let listen = [
        format!("kept=unix:{}", s(&kept)),
        format!("replaced=unixpacket:{}", s(&replaced)),
    ];
    let mut r = Relaunch::spawn(echo_command(&dir, &[], &listen));
    let pid1 = r.generation_pid(1);
    assert_echo(&r, &Target::unix(Type::STREAM, &kept), None, pid1);
    let inode = fs::metadata(&kept).unwrap().ino();

    for g in 2..=3 {
        let (_, pid) = reload(&r, g);
        assert_eq!(
            fs::metadata(&kept).map(|m| m.ino()).ok(),
            Some(inode),
            "the socket file is the same after reload {g}"
        );
        assert_echo(&r, &Target::unix(Type::STREAM, &kept), None, pid);
        assert_echo(&r, &Target::unix(Type::SEQPACKET, &replaced), None, pid);
    }

    // Someone moves the second socket file away and puts another file at its path.
    let moved = dir.join("moved.sock");
    fs::rename(&replaced, &moved).unwrap();
    fs::write(&replaced, "someone else's").unwrap();

    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(0), "relaunch's exit: {status:?}");
    assert!(
        fs::symlink_metadata(&kept).is_err(),
        "relaunch removes its socket file on exit"
    );
    assert_eq!(
        fs::read_to_string(&replaced).unwrap(),
        "someone else's",
        "a file that replaced relaunch's socket file is left alone"
    );
    assert!(
        fs::symlink_metadata(&moved)
            .unwrap()
            .file_type()
            .is_socket(),
        "relaunch only removes the path it created"
    );
}

// =============================================================================================
// 4. Inherited sockets: fd:N, and systemd socket activation as input.

#[test]
fn fd_n_adopts_inherited_sockets() {
    let dir = TempDir::new("fd-n");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let gram_path = dir.join("g.sock");
    let gram = UnixDatagram::bind(&gram_path).unwrap();
    let mut cmd = echo_command(&dir, &[], &["fd:7".to_owned(), "dg=fd:9".to_owned()]);
    pass_fds(&mut cmd, &[(tcp.as_raw_fd(), 7), (gram.as_raw_fd(), 9)]);
    let r = Relaunch::spawn(cmd);

    let line = listening(&r, "fd-7");
    assert_eq!(field(&line, "kind"), Some("tcp"), "{line}");
    assert_eq!(
        field(&line, "addr"),
        Some(tcp_addr.to_string().as_str()),
        "{line}"
    );
    let line = listening(&r, "dg");
    assert_eq!(field(&line, "kind"), Some("unixgram"), "{line}");
    assert_eq!(field(&line, "addr"), Some(s(&gram_path)), "{line}");
    // Taken over close-on-exec in relaunch itself.
    for fd in [7, 9] {
        assert_eq!(
            fd_is_cloexec(r.pid(), fd),
            Some(true),
            "fd {fd} in relaunch"
        );
    }

    let pid1 = r.generation_pid(1);
    let report = wait_for_report(&r, &dir.join("report"), pid1);
    assert_sockets(
        &r,
        &report,
        &[("fd-7", "inet:stream:listening"), ("dg", "unix:dgram:-")],
    );
    assert_eq!(tcp_socket_of_fd(pid1, 3), Some((false, tcp_addr.port())));
    let client = DatagramClient::unix(&dir.join("client.sock"));
    let gram_target = Target::unix(Type::DGRAM, &gram_path);
    // The test's own copies are closed: only relaunch's children answer.
    drop(tcp);
    drop(gram);
    assert_echo(&r, &Target::tcp(tcp_addr), None, pid1);
    assert_echo(&r, &gram_target, Some(&client), pid1);
    let (_, pid2) = reload(&r, 2);
    assert_echo(&r, &Target::tcp(tcp_addr), None, pid2);
    assert_echo(&r, &gram_target, Some(&client), pid2);
}

#[test]
fn fd_n_that_is_not_an_open_socket_is_a_usage_error() {
    let dir = TempDir::new("fd-bad");
    let probe = probe_bin();
    let p = s(&probe);
    expect_failure(
        Relaunch::command(&["--listen", "fd:8", "--", p]),
        2,
        &["--listen fd:8: fd 8 is not open (relaunch did not inherit it from its parent)"],
    );
    let file = fs::File::create(dir.join("file")).unwrap();
    let mut cmd = Relaunch::command(&["--listen", "fd:5", "--", p]);
    pass_fds(&mut cmd, &[(file.as_raw_fd(), 5)]);
    expect_failure(
        cmd,
        2,
        &["--listen fd:5: fd 5 is not a socket (it is a regular file); relaunch passes sockets only"],
    );
    let (conn, _peer) = UnixStream::pair().unwrap();
    let mut cmd = Relaunch::command(&["--listen", "fd:6", "--", p]);
    pass_fds(&mut cmd, &[(conn.as_raw_fd(), 6)]);
    expect_failure(
        cmd,
        2,
        &["--listen fd:6: fd 6 is a unix socket that is not listening"],
    );
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = Relaunch::command(&["--listen", "fd:7", "--listen", "again=fd:7", "--", p]);
    pass_fds(&mut cmd, &[(tcp.as_raw_fd(), 7)]);
    expect_failure(cmd, 2, &["--listen fd:7 is given twice"]);
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn socket_activate_bin() -> PathBuf {
    which("systemd-socket-activate").unwrap_or_else(|| {
        panic!("systemd-socket-activate is needed (Debian package systemd; .ci/run installs it)")
    })
}

/// `systemd-socket-activate -l SOCKET... --fdname=NAMES relaunch ARGS`: relaunch started by
/// socket activation. systemd-socket-activate waits for the first connection on any of the
/// sockets and then execs relaunch in its own process, with LISTEN_PID = that pid.
fn activated(sockets: &[&Path], names: &[&str], relaunch_args: &[&str]) -> Command {
    let relaunch = relaunch_bin();
    let mut args: Vec<&str> = Vec::new();
    for socket in sockets {
        args.extend(["-l", s(socket)]);
    }
    let fdname = format!("--fdname={}", names.join(":"));
    if !names.is_empty() {
        args.push(&fdname);
    }
    args.push(s(&relaunch));
    args.extend_from_slice(relaunch_args);
    Relaunch::command_for(&socket_activate_bin(), &args)
}

/// Waits until systemd-socket-activate listens on `path`. (The socket file appears at bind(),
/// before listen(): a connect in between would be refused.)
#[track_caller]
fn wait_for_listening(r: &Relaunch, path: &Path) {
    r.wait_until(
        T,
        &format!("systemd-socket-activate to listen on {}", path.display()),
        || unix_path_is_listening(path),
    );
}

#[test]
fn activation_sockets_are_passed_on_ahead_of_listen_sockets_across_reloads() {
    let dir = TempDir::new("activate");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let probe = probe_bin();
    let report = dir.join("report");
    let cmd = activated(
        &[&a, &b],
        &["web", "admin"],
        &[
            "--start-secs",
            "0.2",
            "--listen",
            "extra=127.0.0.1:0",
            "--",
            s(&probe),
            "--echo",
            "--report",
            s(&report),
        ],
    );
    let r = Relaunch::spawn(cmd);
    wait_for_listening(&r, &a);
    // The first connection makes systemd-socket-activate exec relaunch; it waits in the
    // queue and is answered by relaunch's first child.
    let web = Target::unix(Type::STREAM, &a);
    let first = echo(&web, None, "first", T).unwrap_or_else(|e| r.fail(&e));
    let pid1 = r.generation_pid(1);
    assert_eq!(first, pid1);

    for (i, (name, path)) in [("web", &a), ("admin", &b)].iter().enumerate() {
        let line = listening(&r, name);
        assert_eq!(field_i32(&line, "fd"), Some(3 + i as i32), "{line}");
        assert_eq!(field(&line, "kind"), Some("unix"), "{line}");
        assert_eq!(field(&line, "addr"), Some(s(path)), "{line}");
    }
    assert_eq!(field_i32(&listening(&r, "extra"), "fd"), Some(5));
    let expected = [
        ("web", "unix:stream:listening"),
        ("admin", "unix:stream:listening"),
        ("extra", "inet:stream:listening"),
    ];
    let gen1 = wait_for_report(&r, &report, pid1);
    assert_sockets(&r, &gen1, &expected);
    // fd 3 is systemd's first socket, fd 4 its second.
    assert_eq!(unix_socket_path_of_fd(pid1, 3).as_deref(), Some(s(&a)));
    assert_eq!(unix_socket_path_of_fd(pid1, 4).as_deref(), Some(s(&b)));
    // Taken over close-on-exec in relaunch (systemd passes them inheritable).
    assert_eq!(fd_is_cloexec(r.pid(), 3), Some(true));
    assert_echo(&r, &Target::unix(Type::STREAM, &b), None, pid1);
    assert_echo(&r, &Target::tcp(r.addr("extra")), None, pid1);

    for g in 2..=3 {
        let (_, pid) = reload(&r, g);
        let report = wait_for_report(&r, &report, pid);
        assert_sockets(&r, &report, &expected);
        assert_echo(&r, &web, None, pid);
        assert_echo(&r, &Target::unix(Type::STREAM, &b), None, pid);
    }
}

#[test]
fn listen_systemd_name_picks_activation_sockets_by_name() {
    let dir = TempDir::new("activate-pick");
    let (a, b, c) = (dir.join("a.sock"), dir.join("b.sock"), dir.join("c.sock"));
    let probe = probe_bin();
    let report = dir.join("report");
    let cmd = activated(
        &[&a, &b, &c],
        &["a", "b", "c"],
        &[
            "--start-secs",
            "0.2",
            "--listen",
            "systemd:c",
            "--listen",
            "x=127.0.0.1:0",
            "--listen",
            "renamed=systemd:a",
            "--",
            s(&probe),
            "--echo",
            "--report",
            s(&report),
        ],
    );
    let r = Relaunch::spawn(cmd);
    wait_for_listening(&r, &c);
    let first =
        echo(&Target::unix(Type::STREAM, &c), None, "first", T).unwrap_or_else(|e| r.fail(&e));
    let pid1 = r.generation_pid(1);
    assert_eq!(first, pid1);
    let gen1 = wait_for_report(&r, &report, pid1);
    assert_sockets(
        &r,
        &gen1,
        &[
            ("c", "unix:stream:listening"),
            ("x", "inet:stream:listening"),
            ("renamed", "unix:stream:listening"),
        ],
    );
    assert_eq!(unix_socket_path_of_fd(pid1, 3).as_deref(), Some(s(&c)));
    assert_eq!(unix_socket_path_of_fd(pid1, 5).as_deref(), Some(s(&a)));
    let line = r.wait_for_event("not passing this socket-activation socket on", &[], T);
    assert_eq!(field(&line, "name"), Some("b"), "{line}");
    assert_echo(&r, &Target::unix(Type::STREAM, &a), None, pid1);
}

#[test]
fn listen_systemd_name_not_passed_is_a_usage_error_listing_the_names() {
    let dir = TempDir::new("activate-missing");
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let probe = probe_bin();
    let cmd = activated(
        &[&a, &b],
        &["web", "admin"],
        &["--listen", "systemd:nope", "--", s(&probe)],
    );
    let mut r = Relaunch::spawn(cmd);
    wait_for_listening(&r, &a);
    // Trigger the exec; relaunch then refuses to start.
    let _trigger = UnixStream::connect(&a).expect("connect to trigger the activation");
    let status = r.wait_exit(T);
    if status.code() != Some(2) {
        r.fail(&format!(
            "relaunch ended with {status:?}, expected exit code 2"
        ));
    }
    let stderr = r.stderr();
    assert!(
        stderr.contains(
            "--listen systemd:nope: socket activation passed no socket named \"nope\" (it passed: web, admin)"
        ),
        "{stderr}"
    );
    assert!(r.events("spawned").is_empty(), "{stderr}");
}

#[test]
fn fd_n_naming_an_activation_socket_is_a_usage_error() {
    let dir = TempDir::new("activate-fd");
    let a = dir.join("a.sock");
    let probe = probe_bin();
    let cmd = activated(&[&a], &["web"], &["--listen", "fd:3", "--", s(&probe)]);
    let mut r = Relaunch::spawn(cmd);
    wait_for_listening(&r, &a);
    let _trigger = UnixStream::connect(&a).expect("connect to trigger the activation");
    let status = r.wait_exit(T);
    if status.code() != Some(2) {
        r.fail(&format!(
            "relaunch ended with {status:?}, expected exit code 2"
        ));
    }
    let stderr = r.stderr();
    assert!(
        stderr.contains(
            "--listen fd:3: fd 3 came with socket activation as \"web\"; use --listen systemd:web instead"
        ),
        "{stderr}"
    );
}

#[test]
fn activation_variables_for_another_pid_are_ignored() {
    let dir = TempDir::new("activate-foreign");
    // A real listening socket at fd 3, announced by variables that name another process.
    let foreign = TcpListener::bind("127.0.0.1:0").unwrap();
    let probe = probe_bin();
    let p = s(&probe);
    let foreign_env = [
        ("LISTEN_PID", "1"),
        ("LISTEN_FDS", "1"),
        ("LISTEN_FDNAMES", "foreign"),
    ];

    // With no --listen there is nothing to pass: refused.
    let mut cmd = Relaunch::command(&["--", p]);
    cmd.envs(foreign_env);
    pass_fds(&mut cmd, &[(foreign.as_raw_fd(), 3)]);
    expect_failure(
        cmd,
        2,
        &["no sockets to pass: give at least one --listen [NAME=]ADDR, or start relaunch through systemd socket activation"],
    );

    // With --listen, the child gets only that socket, and the foreign fd 3 stays out.
    let mut cmd = echo_command(&dir, &[], &["mine=127.0.0.1:0".to_owned()]);
    cmd.envs(foreign_env);
    pass_fds(&mut cmd, &[(foreign.as_raw_fd(), 3)]);
    let r = Relaunch::spawn(cmd);
    let mine = r.addr("mine");
    let pid1 = r.generation_pid(1);
    let report = wait_for_report(&r, &dir.join("report"), pid1);
    assert_sockets(&r, &report, &[("mine", "inet:stream:listening")]);
    assert_eq!(tcp_socket_of_fd(pid1, 3), Some((false, mine.port())));
    assert_eq!(r.events("listening").len(), 1);
}

// =============================================================================================
// 5. Scale: 1,000 sockets.

#[test]
fn a_thousand_sockets_with_a_low_soft_fd_limit() {
    const N: usize = 1000;
    let dir = TempDir::new("thousand");
    let listen: Vec<String> = (0..N)
        .map(|i| format!("unix:{}", s(&dir.join(&format!("s{i}.sock")))))
        .collect();
    let mut cmd = echo_command(&dir, &[], &listen);
    // A soft limit far below what 1,000 sockets need, under a high enough hard limit: relaunch
    // raises it.
    limit_open_files(&mut cmd, 256, 8192);
    let mut r = Relaunch::spawn(cmd);
    let line = r.wait_for_event("raised the open-file limit", &[], T);
    assert_eq!(field(&line, "from"), Some("256"), "{line}");
    assert_eq!(field(&line, "to"), Some("8192"), "{line}");
    let last = listening(&r, &format!("unix-s{}.sock", N - 1));
    assert_eq!(field_i32(&last, "fd"), Some(3 + N as i32 - 1), "{last}");
    assert_eq!(r.events("listening").len(), N);

    let check = |r: &Relaunch, pid: i32| {
        let report = wait_for_report(r, &dir.join("report"), pid);
        let names: Vec<String> = (0..N).map(|i| format!("unix-s{i}.sock")).collect();
        let expected: Vec<(&str, &str)> = names
            .iter()
            .map(|n| (n.as_str(), "unix:stream:listening"))
            .collect();
        assert_sockets(r, &report, &expected);
        for i in [0, N / 2, N - 1] {
            let path = dir.join(&format!("s{i}.sock"));
            assert_eq!(
                unix_socket_path_of_fd(pid, 3 + i as i32).as_deref(),
                Some(s(&path))
            );
            assert_echo(r, &Target::unix(Type::STREAM, &path), None, pid);
        }
    };
    check(&r, r.generation_pid(1));
    let (_, pid2) = reload(&r, 2);
    check(&r, pid2);

    r.signal(libc::SIGTERM);
    let status = r.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert!(
        left.is_empty(),
        "socket files left after exit: {} of them",
        left.len()
    );
}

#[test]
fn too_low_a_hard_fd_limit_is_reported_with_the_numbers() {
    let dir = TempDir::new("fd-limit");
    let listen: Vec<String> = (0..200)
        .map(|i| format!("unix:{}", s(&dir.join(&format!("s{i}.sock")))))
        .collect();
    let mut cmd = echo_command(&dir, &[], &listen);
    limit_open_files(&mut cmd, 256, 256);
    expect_failure(
        cmd,
        1,
        &["200 sockets need up to 464 open files, but the open-file limit (RLIMIT_NOFILE) is 256 and its hard limit 256"],
    );
    let files = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 0, "nothing bound before the check");
}

// =============================================================================================
// 6. Bad options on the command line: exit 2 with the exact message.

#[test]
fn bad_socket_options_and_missing_sockets_exit_2_naming_them() {
    let dir = TempDir::new("bad-options");
    let probe = probe_bin();
    let p = s(&probe);
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--listen".into(), "tcp://127.0.0.1:0?mode=600".into()],
            "option \"mode\" does not apply to tcp sockets, in listen address \"tcp://127.0.0.1:0?mode=600\" (valid for tcp sockets: backlog, reuseport, v6only, nodelay, keepalive, rcvbuf, sndbuf, freebind)".into(),
        ),
        (
            vec!["--listen".into(), "udp://127.0.0.1:0?nodelay=true".into()],
            "option \"nodelay\" does not apply to udp sockets".into(),
        ),
        (
            vec!["--listen".into(), "127.0.0.1:0?backlog=lots".into()],
            "option backlog=lots in listen address \"127.0.0.1:0?backlog=lots\" is not a number from 1 to 2147483647".into(),
        ),
        (
            vec![
                "--listen".into(),
                format!("unix:{}?owner=no-such-user-relaunch", s(&dir.join("u.sock"))),
            ],
            "unknown user \"no-such-user-relaunch\"".into(),
        ),
        (
            vec![],
            "no sockets to pass: give at least one --listen [NAME=]ADDR, or start relaunch through systemd socket activation".into(),
        ),
        (
            vec!["--listen".into(), "systemd:web".into()],
            "--listen systemd:web: relaunch was not started by socket activation".into(),
        ),
    ];
    for (args, needle) in &cases {
        let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
        argv.extend(["--", p]);
        expect_failure(Relaunch::command(&argv), 2, &[needle]);
    }
    assert!(
        !dir.join("u.sock").exists(),
        "no socket file is created for a spec with an unknown user"
    );
}
