//! The child examples in `examples/` (Rust with tokio/axum, Python, Node, Go, and `hello`),
//! run for real, as users would copy them.
//!
//! For each language:
//! * **under relaunch**: a few `relaunch reload --wait` under closed-loop load (a new connection
//!   per request), and not one failed request; each reload's new pid answers, every old
//!   generation exits 0 on its SIGTERM (none needs a SIGKILL), and a stop exits 0;
//! * **with a blocking inherited socket**, started without relaunch: a launcher such as
//!   socketmaster passes a blocking socket, and a server blocked in `accept()` never sees its
//!   SIGTERM. The test binds the socket itself (so it is certainly blocking when the example
//!   starts: under relaunch, one generation's `O_NONBLOCK` is seen by all), passes it as fd 3
//!   with `LISTEN_FDS`/`LISTEN_PID`, waits for the example's readiness message (to an abstract
//!   `NOTIFY_SOCKET`, or a newline on a ready fd), has one request answered, and checks that the
//!   example made the (shared) socket non-blocking. Then it opens a
//!   connection and waits until the example has accepted it, sends SIGTERM, sends a request on
//!   that connection only then, and expects it answered (a client that connected just before
//!   the stop), and the example to exit 0 well within relaunch's default 10 s stop wait. Last,
//!   the socket must still take connections: the example closed its copy and did not
//!   `shutdown()` it.
//!
//! The runtimes: `python3`, `node` and `go` from `PATH`, and `cargo` for the axum project
//! (built into its own target directory). The Go and axum examples are built here, once per
//! test run, in bounded time. A runtime or a dependency download that is missing skips its
//! tests with the reason on stderr, except under CI (`CI` set): `.ci/run` installs them all, so
//! there a missing one fails, unless `.ci/run` could not install it and named it in
//! `RELAUNCH_TEST_UNAVAILABLE` (space-separated: `python3`, `node`, `go`, `axum`).

mod common;

use std::env;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::net::pass_fds;
use common::*;

/// Reloads under load per example.
const RELOADS: u32 = 3;
/// Load clients, each with a new connection per request.
const CLIENTS: usize = 8;
/// SIGTERM to exit, with a blocking inherited socket: well below relaunch's default 10 s stop
/// wait (each example's own stop grace is 8 s or less, for requests still in flight: there are
/// none here).
const STOP_DEADLINE: Duration = Duration::from_secs(8);
/// Building the Go or axum example, downloads included.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// The examples

/// How an example says it is up.
#[derive(Clone, Copy, Debug)]
enum Ready {
    /// `READY=1` to `$NOTIFY_SOCKET`, by hand (the examples handle `@abstract` names too).
    Notify,
    /// A newline to fd N (`relaunch --ready fd:N`), passed as `--ready-fd N`.
    Fd(i32),
}

/// An example, ready to run.
#[derive(Debug)]
struct Example {
    name: &'static str,
    argv: Vec<String>,
    ready: Ready,
}

impl Example {
    fn new(name: &'static str, argv: &[&str], ready: Ready) -> Example {
        Example {
            name,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ready,
        }
    }
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example_file(rel: &str) -> String {
    let path = manifest_dir().join("examples").join(rel);
    assert!(path.is_file(), "{} is missing", path.display());
    s(&path).to_owned()
}

/// Where the built Go and axum examples go: `target/relaunch-examples/` (next to the profile
/// directory holding this test binary), away from cargo's own `target/<profile>/examples`.
fn build_dir() -> PathBuf {
    let exe = env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary> -> target
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    target.join("relaunch-examples")
}

/// The runtime or dependency `what` is missing: skip (None) with the reason on stderr, or,
/// under CI, fail, unless `.ci/run` said it could not install it.
fn unavailable(what: &str, reason: &str) -> Option<Example> {
    let ci = env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let excused = env::var("RELAUNCH_TEST_UNAVAILABLE")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == what);
    if ci && !excused {
        panic!(
            "{reason}; under CI, .ci/run installs {what} (or names it in \
             RELAUNCH_TEST_UNAVAILABLE when it cannot)"
        );
    }
    // Straight to stderr, not through the test harness's capture: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
    None
}

/// `program`'s path, from `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `cmd` to completion within `timeout` (killing it after), its output going to `log`.
/// Err describes a failure, with the output.
fn run_bounded(mut cmd: Command, log: &Path, timeout: Duration) -> Result<(), String> {
    let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let mut child = ChildGuard(child);
    let mut status = None;
    poll_until(timeout, || {
        status = child.0.try_wait().ok().flatten();
        status.is_some()
    });
    let text = || fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("{cmd:?} failed ({status}):\n{}", text())),
        None => Err(format!(
            "{cmd:?} did not finish within {timeout:?}:\n{}",
            text()
        )),
    }
}

fn hello() -> Option<Example> {
    Some(Example::new("hello", &[s(&hello_bin())], Ready::Notify))
}

/// hello taking its socket with `--fd 3` (how circus passes one) rather than from LISTEN_FDS.
fn hello_fd() -> Option<Example> {
    Some(Example::new(
        "hello --fd",
        &[s(&hello_bin()), "--fd", "3"],
        Ready::Notify,
    ))
}

fn python() -> Option<Example> {
    let Some(python) = find_program("python3") else {
        return unavailable("python3", "python3 is not on PATH");
    };
    Some(Example::new(
        "python",
        &[s(&python), &example_file("python/server.py")],
        Ready::Notify,
    ))
}

fn node() -> Option<Example> {
    // Debian's nodejs package installs `node`; some older ones only `nodejs`.
    let Some(node) = find_program("node").or_else(|| find_program("nodejs")) else {
        return unavailable("node", "node (Debian package nodejs) is not on PATH");
    };
    Some(Example::new(
        "node",
        &[s(&node), &example_file("node/server.js"), "--ready-fd", "4"],
        Ready::Fd(4),
    ))
}

fn go() -> Option<Example> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let Some(go) = find_program("go") else {
        return unavailable("go", "go (Debian package golang-go) is not on PATH");
    };
    let built = BUILT.get_or_init(|| {
        let dir = build_dir().join("go");
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let bin = dir.join("server");
        let mut cmd = Command::new(&go);
        cmd.args(["build", "-o", s(&bin), "."])
            .current_dir(manifest_dir().join("examples/go"))
            // Standard library only: nothing to download, no toolchain switch, no cgo, and
            // nothing written outside the build directory.
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("CGO_ENABLED", "0");
        run_bounded(cmd, &dir.join("build.log"), BUILD_TIMEOUT)?;
        Ok(bin)
    });
    match built {
        Ok(bin) => Some(Example::new("go", &[s(bin)], Ready::Notify)),
        Err(err) => panic!("building the Go example: {err}"),
    }
}

fn axum() -> Option<Example> {
    static BUILT: OnceLock<Result<PathBuf, (bool, String)>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let dir = build_dir().join("axum");
        fs::create_dir_all(&dir)
            .map_err(|e| (false, format!("creating {}: {e}", dir.display())))?;
        let manifest = manifest_dir().join("examples/axum/Cargo.toml");
        let cargo_cmd = |sub: &str| {
            let mut cmd = Command::new(&cargo);
            // Its own target directory: the one of this `cargo test` is locked while it runs.
            cmd.args([sub, "--locked", "--manifest-path", s(&manifest)])
                .env("CARGO_TARGET_DIR", &dir)
                .env_remove("CARGO_BUILD_TARGET");
            cmd
        };
        // Downloading the dependencies is the one step that may be impossible here (offline);
        // a build that fails after it is a broken example.
        run_bounded(cargo_cmd("fetch"), &dir.join("fetch.log"), BUILD_TIMEOUT)
            .map_err(|e| (true, e))?;
        run_bounded(cargo_cmd("build"), &dir.join("build.log"), BUILD_TIMEOUT)
            .map_err(|e| (false, e))?;
        Ok(dir.join("debug").join("relaunch-example-axum"))
    });
    match built {
        Ok(bin) => Some(Example::new("axum", &[s(bin)], Ready::Notify)),
        Err((true, err)) => unavailable(
            "axum",
            &format!("cannot download the axum example's dependencies: {err}"),
        ),
        Err((false, err)) => panic!("building the axum example: {err}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Kills (SIGKILL) and reaps the child on drop, unless it was reaped already.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits up to `timeout` for the child to exit.
fn wait_exit(child: &mut ChildGuard, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(timeout, || {
        status = child.0.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Runs `relaunch ARGS` (a client subcommand) to completion within `timeout`; Ok with its
/// output if it exited 0.
fn client(args: &[&str], timeout: Duration) -> Result<String, String> {
    let dir = TempDir::new("client");
    let log = dir.join("output");
    run_bounded(Relaunch::command(args), &log, timeout)?;
    Ok(fs::read_to_string(&log).unwrap_or_default())
}

/// Whether process `pid` holds the server end of the TCP connection from 127.0.0.1:`client`
/// to 127.0.0.1:`server`, i.e. has accepted it. The kernel gives that end an inode (shown in
/// /proc/net/tcp) only when it is accepted.
fn has_accepted(pid: i32, server: u16, client: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let (local, remote) = (
        format!("0100007F:{server:04X}"),
        format!("0100007F:{client:04X}"),
    );
    let inode = table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(2) == Some(&remote.as_str()))
            .then(|| cols.get(9).map(|inode| inode.to_string()))
            .flatten()
    });
    let Some(inode) = inode.filter(|inode| inode != "0") else {
        return false;
    };
    let link = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(link.as_str())))
    })
}

fn is_nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL only reads the flags of an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl(F_GETFL) failed");
    flags & libc::O_NONBLOCK != 0
}

/// A name no other test (of this run or another) uses at the same time.
fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("relaunch-test-{tag}-{}-{n}-{nanos}", std::process::id())
}

// ---------------------------------------------------------------------------------------------
// Under relaunch: reloads under load

fn reloads_under_load_fail_no_request(example: Option<Example>) {
    let Some(example) = example else { return };
    let dir = TempDir::new("example-reload");
    let control = dir.join("control.sock");
    let ready = match example.ready {
        Ready::Notify => "notify".to_owned(),
        Ready::Fd(fd) => format!("fd:{fd}"),
    };
    let mut args = vec![
        "--control",
        s(&control),
        "--ready",
        &ready,
        "--listen",
        "http=127.0.0.1:0",
        "--",
    ];
    args.extend(example.argv.iter().map(String::as_str));
    let mut r = Relaunch::start(&args);
    let addr = r.addr("http");
    let mut old = wait_for_http(&r, addr, TIMEOUT);
    assert_eq!(old, r.generation_pid(1), "generation 1 should answer");

    let load = Load::start(addr, CLIENTS);
    let mut generation_pids = vec![old];
    r.wait_until(TIMEOUT, &format!("answers from pid {old}"), || {
        load.seen(old) || load.failed()
    });
    for generation in 2..=RELOADS + 1 {
        if load.failed() {
            break; // reported below, with the failures
        }
        let reload = client(
            &["reload", "--wait", "--control", s(&control)],
            Duration::from_secs(120),
        );
        if let Err(err) = reload {
            r.fail(&format!("reload to generation {generation} failed: {err}"));
        }
        let new = r.generation_pid(generation);
        assert_ne!(new, old, "a reload must start a new process");
        r.wait_until(TIMEOUT, &format!("answers from the new pid {new}"), || {
            load.seen(new) || load.failed()
        });
        // The old generation stops on its SIGTERM, by itself and cleanly.
        let v = r.wait_status(&format!("the old generation (pid {old}) reaped"), |v| {
            history(v, "exit").any(|e| e["pid"] == old)
        });
        let exited = history(&v, "exit").find(|e| e["pid"] == old);
        if !exited.is_some_and(|e| e["code"] == 0 && e["expected"] == true) {
            r.fail(&format!(
                "{}: the old generation (pid {old}) should exit 0 on SIGTERM: {v:#}",
                example.name
            ));
        }
        generation_pids.push(new);
        old = new;
    }
    let stats = load.finish();
    eprintln!(
        "{}: {} requests answered, failures {:?}, {} distinct pids",
        example.name,
        stats.ok,
        stats.failures,
        stats.pids.len()
    );
    if !stats.failures.is_empty() {
        r.fail(&format!(
            "{}: requests failed during {RELOADS} reloads: {:?}; samples: {:#?}",
            example.name, stats.failures, stats.samples
        ));
    }
    // Every generation answered (by its pid: with a thread per connection, a late generation can
    // get the pid of an early one once the ids wrap at pid_max, so distinct pids are not counted).
    let silent: Vec<i32> = generation_pids
        .iter()
        .copied()
        .filter(|pid| !stats.pids.contains(pid))
        .collect();
    assert!(
        generation_pids.len() == RELOADS as usize + 1 && silent.is_empty(),
        "{}: expected answers from all {} generations {generation_pids:?}; none from {silent:?}",
        example.name,
        RELOADS + 1,
    );
    if !r.events("stop timeout").is_empty() {
        r.fail(&format!("{}: a generation had to be killed", example.name));
    }

    // A stop: relaunch exits with the example's status, 0 after a graceful stop.
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(TIMEOUT);
    if status.code() != Some(0) {
        r.fail(&format!(
            "{}: relaunch should exit 0 after the example stopped gracefully, got {status}",
            example.name
        ));
    }
}

#[test]
fn python_reloads_under_load_fail_no_request() {
    reloads_under_load_fail_no_request(python());
}

#[test]
fn node_reloads_under_load_fail_no_request() {
    reloads_under_load_fail_no_request(node());
}

#[test]
fn go_reloads_under_load_fail_no_request() {
    reloads_under_load_fail_no_request(go());
}

#[test]
fn axum_reloads_under_load_fail_no_request() {
    reloads_under_load_fail_no_request(axum());
}

// ---------------------------------------------------------------------------------------------
// Without relaunch, with a blocking socket: a prompt graceful stop

/// Where an example's readiness message arrives.
enum ReadyChannel {
    Notify(UnixDatagram),
    Fd(UnixStream),
}

impl ReadyChannel {
    /// Waits until `until`; true once the example said it is ready.
    fn received(&self, until: Instant) -> bool {
        let left = remaining(until).max(Duration::from_millis(1));
        let mut buf = [0u8; 4096];
        match self {
            ReadyChannel::Notify(socket) => {
                socket.set_read_timeout(Some(left)).expect("set timeout");
                match socket.recv(&mut buf) {
                    Ok(n) => String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1"),
                    Err(_) => false,
                }
            }
            ReadyChannel::Fd(stream) => {
                stream.set_read_timeout(Some(left)).expect("set timeout");
                matches!((&*stream).read(&mut buf), Ok(n) if n > 0 && buf[..n].contains(&b'\n'))
            }
        }
    }
}

fn stops_promptly_with_a_blocking_socket(example: Option<Example>) {
    let Some(example) = example else { return };
    let name = example.name;
    let dir = TempDir::new("example-stop");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr: SocketAddr = listener.local_addr().expect("local_addr");
    assert!(
        !is_nonblocking(listener.as_raw_fd()),
        "the socket must be blocking when the example starts"
    );

    // sh gives the example its own pid in LISTEN_PID, then becomes it.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"", "sh"])
        .args(&example.argv)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http")
        .env_remove("LISTEN_FDS_FIRST_FD")
        .env_remove("NOTIFY_SOCKET");
    let log = dir.join("output");
    let out = File::create(&log).expect("create the output file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let output = || fs::read_to_string(&log).unwrap_or_default();

    let (channel, write_end) = match example.ready {
        Ready::Notify => {
            // An abstract name, which relaunch itself never uses: the examples that send
            // READY=1 by hand must handle it (hello, through the sd-notify crate, cannot).
            let (socket, value) = if name.starts_with("hello") {
                let path = dir.join("notify");
                let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
                (socket, s(&path).to_owned())
            } else {
                let name = unique("notify");
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .expect("abstract name");
                let socket = UnixDatagram::bind_addr(&addr).expect("bind the notify socket");
                (socket, format!("@{name}"))
            };
            cmd.env("NOTIFY_SOCKET", value);
            pass_fds(&mut cmd, &[(listener.as_raw_fd(), 3)]);
            (ReadyChannel::Notify(socket), None)
        }
        Ready::Fd(fd) => {
            let (read, write) = UnixStream::pair().expect("socketpair");
            pass_fds(
                &mut cmd,
                &[(listener.as_raw_fd(), 3), (write.as_raw_fd(), fd)],
            );
            (ReadyChannel::Fd(read), Some(write))
        }
    };
    let mut child = ChildGuard(cmd.spawn().expect("start the example"));
    let pid = child.0.id() as i32;
    drop(write_end); // the example's copy is the only one left

    let deadline = Instant::now() + TIMEOUT;
    let mut ready = false;
    while !ready && Instant::now() < deadline {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!(
                "{name} exited ({status}) before it was ready:\n{}",
                output()
            );
        }
        ready = channel.received(Instant::now() + Duration::from_millis(200));
    }
    assert!(ready, "{name} not ready within {TIMEOUT:?}:\n{}", output());

    // One request answered: the example has been through accept() at least once.
    match http_get(addr, Duration::from_secs(10)) {
        Ok((200, body)) => assert_eq!(
            body_pid(&body),
            Some(pid),
            "{name} should answer with its pid: {body:?}"
        ),
        other => panic!("{name}: no 200 answer: {other:?}\n{}", output()),
    }

    // The socket is shared with every other generation: a server that polls and then accepts
    // must not block in accept() when another generation took the connection first. The
    // flag is on the shared socket, so the test's copy shows it.
    assert!(
        is_nonblocking(listener.as_raw_fd()),
        "{name} should make the inherited socket non-blocking"
    );

    // A connection the example accepted before the stop, whose request follows only after
    // the stop: under a reload, that is a client that connected just before the old
    // generation's SIGTERM. Closing such a connection as if it were idle fails the request.
    let mut early = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{name}: connecting: {e}"));
    let client_port = early.local_addr().expect("local_addr").port();
    wait_until(TIMEOUT, &format!("{name} to accept the connection"), || {
        has_accepted(pid, addr.port(), client_port)
    });

    assert!(kill(pid, libc::SIGTERM), "{name} is gone before SIGTERM");
    let started = Instant::now();
    // Not a synchronisation: a client's think time. A server that waits for the request (as it
    // must) answers whatever the delay up to its grace of seconds; one that closes the
    // connection on the stop has almost surely done so by then.
    std::thread::sleep(Duration::from_millis(300));
    match http_get_on(&mut early, Duration::from_secs(10)) {
        Ok((200, body)) if body_pid(&body) == Some(pid) => {}
        other => panic!(
            "{name}: a request on a connection accepted before the stop should be answered: \
             {other:?}\n{}",
            output()
        ),
    }
    drop(early);
    let Some(status) = wait_exit(&mut child, STOP_DEADLINE) else {
        panic!(
            "{name} did not exit within {STOP_DEADLINE:?} of SIGTERM, with a blocking inherited \
             socket (stuck in accept()?):\n{}",
            output()
        );
    };
    assert!(
        status.success(),
        "{name} should exit 0 on SIGTERM, got {status}:\n{}",
        output()
    );
    eprintln!("{name}: exited 0 {:?} after SIGTERM", started.elapsed());

    // The example closed its copy of the socket and did not shut it down: it still takes
    // connections, for the next holder (here, the test).
    let _client = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_or_else(|e| {
        panic!("{name}: the shared socket no longer takes connections after its stop: {e}")
    });
    listener.set_nonblocking(true).expect("set_nonblocking");
    wait_until(
        TIMEOUT,
        "the queued connection on the test's copy",
        || match listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("{name}: accept on the shared socket after its stop: {e}"),
        },
    );
}

#[test]
fn hello_stops_promptly_with_a_blocking_socket() {
    stops_promptly_with_a_blocking_socket(hello());
}

/// Regression: `--fd N` skipped `set_nonblocking`, so hello sat in accept() until SIGKILL.
#[test]
fn hello_with_fd_option_stops_promptly_with_a_blocking_socket() {
    stops_promptly_with_a_blocking_socket(hello_fd());
}

#[test]
fn python_stops_promptly_with_a_blocking_socket() {
    stops_promptly_with_a_blocking_socket(python());
}

#[test]
fn node_stops_promptly_with_a_blocking_socket() {
    stops_promptly_with_a_blocking_socket(node());
}

#[test]
fn go_stops_promptly_with_a_blocking_socket() {
    stops_promptly_with_a_blocking_socket(go());
}

#[test]
fn axum_stops_promptly_with_a_blocking_socket() {
    stops_promptly_with_a_blocking_socket(axum());
}
