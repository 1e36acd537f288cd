//! The bundled reference server, `examples/hello`, on its own (without relaunch): its HTTP/1.1
//! handling, its graceful stop and its behaviour out of file descriptors. The other test files
//! run hello under relaunch and load; these check what it promises directly:
//!
//! * keep-alive, HTTP/1.0, pipelining and request bodies split across writes;
//! * bad input: each error status, then `Connection: close`, and the server serves on;
//! * the stop: with `--drain-spread-ms`, a busy keep-alive connection gets a response with
//!   `Connection: close` (never an EOF instead of a response), idle ones are closed, a request
//!   right after SIGTERM is answered, a request half received at the stop is completed; exit 0;
//! * `EMFILE`: accepting pauses instead of spinning, and resumes once fds are free;
//! * bad option values exit 2 with an error naming the value, and the usage.
//!
//! hello runs with `--bind 127.0.0.1:0`; the address comes from its `serving on` line.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::net::limit_open_files;
use common::*;

/// Generous bound for a single exchange on a loaded machine.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// hello, the process

/// A running hello: its pid, its address, its stderr so far. Killed (by pid) and reaped on drop.
struct Hello {
    child: Child,
    pid: i32,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Hello {
    /// `hello --bind 127.0.0.1:0 ARGS`, once it says it serves.
    fn start(args: &[&str]) -> Hello {
        Hello::start_with(hello_command(args))
    }

    /// Starts `cmd` (from [`hello_command`]) and waits for its `serving on` line.
    fn start_with(mut cmd: Command) -> Hello {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hello");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        // Ends at EOF, when hello exits (nothing else holds the pipe).
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let pid = child.id() as i32;
        let mut hello = Hello {
            child,
            pid,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr,
        };
        let mut addr = None;
        let up = poll_until(TIMEOUT, || {
            addr = hello.stderr().lines().find_map(serving_addr);
            addr.is_some() || hello.child.try_wait().ok().flatten().is_some()
        });
        match addr {
            Some(addr) if up => hello.addr = addr,
            _ => hello.fail("no `serving on ADDR` line"),
        }
        hello
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        panic!(
            "hello (pid {}): {what}\nits stderr:\n{}",
            self.pid,
            self.stderr()
        )
    }

    fn send_signal(&self, sig: i32) {
        assert!(
            kill(self.pid, sig),
            "cannot signal hello (pid {})",
            self.pid
        );
    }

    /// Its exit status, once it exited within `timeout`.
    #[track_caller]
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        poll_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status.unwrap_or_else(|| self.fail(&format!("still running after {timeout:?}")))
    }

    /// A new connection.
    fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // Child::kill sends SIGKILL to this child's pid; then reap it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `hello --bind 127.0.0.1:0 ARGS`.
fn hello_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(hello_bin());
    cmd.args(["--bind", "127.0.0.1:0"]).args(args);
    cmd
}

/// The address of a `hello: pid N serving on ADDR` line.
fn serving_addr(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("hello: pid ")?
        .split_once(" serving on ")?
        .1
        .trim()
        .parse()
        .ok()
}

/// Runs `hello ARGS` expecting it to exit on its own within [`TIMEOUT`]; its status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = Command::new(hello_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn hello");
    let pid = child.id() as i32;
    let mut pipe = child.stderr.take().expect("piped stderr");
    let mut status = None;
    let exited = poll_until(TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !exited {
        kill(pid, libc::SIGKILL);
        let _ = child.wait();
        panic!("hello {args:?} still running after {TIMEOUT:?}");
    }
    // It exited: the pipe is at EOF once its last bytes are read.
    let mut stderr = String::new();
    let _ = pipe.read_to_string(&mut stderr);
    (status.expect("exited"), stderr)
}

// ---------------------------------------------------------------------------------------------
// HTTP, one connection at a time

/// One response, as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether it says `Connection: close`.
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A client connection; every read and write is bounded by a timeout.
struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet part of a response.
    buf: Vec<u8>,
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|err| panic!("connecting to {addr}: {err}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|err| panic!("sending {:?}: {err}", String::from_utf8_lossy(bytes)));
    }

    /// Reads more bytes into `buf` before `deadline`; 0 at EOF.
    fn fill(&mut self, deadline: Instant) -> Result<usize, String> {
        loop {
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(format!(
                    "timed out, with {:?} read",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(format!(
                        "read failed ({err}), with {:?} read",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
            }
        }
    }

    /// The next whole response (head, and as many body bytes as its `Content-Length` says).
    fn response(&mut self, timeout: Duration) -> Result<Response, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let status = status_line
                    .strip_prefix("HTTP/1.1 ")
                    .and_then(|rest| rest.get(..3))
                    .and_then(|code| code.parse().ok())
                    .ok_or_else(|| format!("bad status line {status_line:?}"))?;
                let headers: Vec<(String, String)> = lines
                    .map(|line| {
                        let (name, value) = line.split_once(':').unwrap_or((line, ""));
                        (name.to_owned(), value.trim().to_owned())
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .ok_or_else(|| format!("no valid Content-Length in {head:?}"))?;
                let start = end + 4;
                if self.buf.len() >= start + length {
                    let body = String::from_utf8_lossy(&self.buf[start..start + length]);
                    let response = Response {
                        status,
                        headers,
                        body: body.into_owned(),
                    };
                    self.buf.drain(..start + length);
                    return Ok(response);
                }
            }
            if self.fill(deadline)? == 0 {
                return Err(format!(
                    "EOF before a whole response, with {:?} read",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
    }

    /// The next response, which must come within [`IO_TIMEOUT`].
    #[track_caller]
    fn expect_response(&mut self, hello: &Hello) -> Response {
        self.response(IO_TIMEOUT)
            .unwrap_or_else(|err| hello.fail(&format!("no response: {err}")))
    }

    /// A keep-alive `GET /` and its response.
    #[track_caller]
    fn get(&mut self, hello: &Hello) -> Response {
        self.send(GET);
        self.expect_response(hello)
    }

    /// Ok once the server closed the connection (a clean EOF, nothing more to read) within
    /// `timeout`.
    fn eof(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buf.is_empty() {
                return Err(format!(
                    "unexpected bytes {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
            if self.fill(deadline)? == 0 {
                return Ok(());
            }
        }
    }

    #[track_caller]
    fn expect_eof(&mut self, hello: &Hello, timeout: Duration) {
        if let Err(err) = self.eof(timeout) {
            hello.fail(&format!(
                "expected the server to close the connection: {err}"
            ));
        }
    }
}

/// Asserts a `200 OK` from `hello` with its usual body (which `Content-Length` delimited).
#[track_caller]
fn assert_ok(hello: &Hello, response: &Response) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.body,
        format!("pid={} fdnames=\n", hello.pid),
        "{response:?}"
    );
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str()),
        "{response:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. HTTP/1.1 keep-alive, HTTP/1.0, pipelining, bodies

#[test]
fn keep_alive_http10_pipelining_and_bodies() {
    let hello = Hello::start(&[]);

    // Several requests on one connection, all answered by hello, none closing it.
    let mut conn = hello.connect();
    for _ in 0..5 {
        let response = conn.get(&hello);
        assert_ok(&hello, &response);
        assert!(!response.closes(), "keep-alive answered with {response:?}");
    }
    // HEAD: the head of the same response, without the body.
    conn.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send(GET);
    // The HEAD response's Content-Length announces a body that is not sent: read its head by
    // hand, then the GET's whole response follows.
    let deadline = Instant::now() + IO_TIMEOUT;
    while !conn.buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(conn.fill(deadline).expect("HEAD response") > 0, "EOF");
    }
    let end = conn.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head: Vec<u8> = conn.buf.drain(..end).collect();
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
    let get = conn.expect_response(&hello);
    assert_ok(&hello, &get);

    // HTTP/1.0 without keep-alive: Connection: close, then EOF.
    let mut old = hello.connect();
    old.send(b"GET / HTTP/1.0\r\n\r\n");
    let response = old.expect_response(&hello);
    assert_ok(&hello, &response);
    assert!(response.closes(), "HTTP/1.0 answered with {response:?}");
    old.expect_eof(&hello, IO_TIMEOUT);

    // HTTP/1.0 asking for keep-alive keeps the connection.
    let mut kept = hello.connect();
    for _ in 0..2 {
        kept.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = kept.expect_response(&hello);
        assert_ok(&hello, &response);
        assert!(!response.closes(), "{response:?}");
    }

    // Two whole requests in one write: two responses.
    let mut piped = hello.connect();
    piped.send(&[GET, GET].concat());
    for _ in 0..2 {
        let response = piped.expect_response(&hello);
        assert_ok(&hello, &response);
        assert!(!response.closes(), "{response:?}");
    }
    let response = piped.get(&hello);
    assert_ok(&hello, &response);

    // A POST whose body comes in two writes, then a GET on the same connection: both
    // answered, in order, and the body not taken for the start of a request.
    let mut post = hello.connect();
    post.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe");
    post.send(b"llo");
    let response = post.expect_response(&hello);
    assert_ok(&hello, &response);
    assert!(!response.closes(), "{response:?}");
    let response = post.get(&hello);
    assert_ok(&hello, &response);
    // Nothing else is pending: the body's bytes got no response of their own.
    assert!(
        post.buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&post.buf)
    );

    // A body and the next request in the same write.
    let mut both = hello.connect();
    both.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    );
    for _ in 0..2 {
        let response = both.expect_response(&hello);
        assert_ok(&hello, &response);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Bad input

/// Sends `request` on a new connection; expects `status` with `Connection: close`, then EOF.
#[track_caller]
fn assert_rejected(hello: &Hello, request: &[u8], status: u16) {
    let mut conn = hello.connect();
    conn.send(request);
    let response = conn.expect_response(hello);
    assert_eq!(response.status, status, "{response:?}");
    assert!(response.closes(), "{response:?}");
    conn.expect_eof(hello, IO_TIMEOUT);
}

#[test]
fn bad_requests_get_their_status_and_a_close_and_the_server_serves_on() {
    let hello = Hello::start(&[]);
    // A keep-alive connection opened before the bad ones must keep working.
    let mut before = hello.connect();
    assert_ok(&hello, &before.get(&hello));

    assert_rejected(&hello, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    assert_rejected(&hello, b"GARBAGE\r\n\r\n", 400);
    assert_rejected(&hello, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400);
    assert_rejected(
        &hello,
        b"POST / HTTP/1.1\r\nContent-Length: five\r\n\r\n",
        400,
    );
    assert_rejected(
        &hello,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        501,
    );
    // A header over 16 KiB, never ended by the blank line.
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.resize(huge.len() + 17 * 1024, b'a');
    assert_rejected(&hello, &huge, 431);
    // A bad request after a good one on a keep-alive connection: the good one answered, then
    // the error and the close.
    let mut mixed = hello.connect();
    mixed.send(&[GET, b"GET / HTTP/2.0\r\n\r\n"].concat());
    assert_ok(&hello, &mixed.expect_response(&hello));
    let response = mixed.expect_response(&hello);
    assert_eq!(response.status, 505, "{response:?}");
    assert!(response.closes(), "{response:?}");
    mixed.expect_eof(&hello, IO_TIMEOUT);

    // Still serving: the old connection, and new ones.
    assert_ok(&hello, &before.get(&hello));
    let mut after = hello.connect();
    assert_ok(&hello, &after.get(&hello));
    assert!(
        !hello.stderr().contains("panicked"),
        "hello panicked:\n{}",
        hello.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Graceful stop, spread over --drain-spread-ms

/// What the busy client saw.
#[derive(Debug)]
enum Busy {
    /// A response with `Connection: close`, after this many answered requests.
    Closed(u64),
    /// Anything else: the request or the response failed.
    Failed(String),
}

#[test]
fn sigterm_spreads_the_drain_answers_busy_clients_with_close_and_exits_0() {
    let mut hello = Hello::start(&["--drain-spread-ms", "300"]);
    // Connections opened one after the other, each answered once (so they are accepted in
    // this order: their moments within the spread are 0.618, 0.236, 0.854, ... of it).
    let mut conns: Vec<Conn> = (0..8)
        .map(|_| {
            let mut conn = hello.connect();
            assert_ok(&hello, &conn.get(&hello));
            conn
        })
        .collect();

    // The busy client: a request every ~5 ms until a response says Connection: close.
    let mut busy = conns.remove(0);
    let answered = Arc::new(AtomicU64::new(0));
    let quit = Arc::new(AtomicBool::new(false));
    let (pid, count, stop) = (hello.pid, Arc::clone(&answered), Arc::clone(&quit));
    let client = thread::spawn(move || loop {
        if stop.load(Ordering::SeqCst) {
            return Busy::Failed("gave up: the test failed elsewhere".into());
        }
        if let Err(err) = busy.try_send(GET) {
            return Busy::Failed(format!("sending: {err}"));
        }
        match busy.response(IO_TIMEOUT) {
            Ok(r) if r.status == 200 && r.body == format!("pid={pid} fdnames=\n") => {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                if r.closes() {
                    return match busy.eof(IO_TIMEOUT) {
                        Ok(()) => Busy::Closed(n),
                        Err(err) => Busy::Failed(format!("after Connection: close: {err}")),
                    };
                }
            }
            Ok(r) => return Busy::Failed(format!("unexpected response {r:?}")),
            Err(err) => {
                return Busy::Failed(format!(
                    "after {} answers: {err}",
                    count.load(Ordering::SeqCst)
                ))
            }
        }
        thread::sleep(Duration::from_millis(5));
    });
    // Let it get going (and fail fast if it cannot).
    let going = poll_until(TIMEOUT, || {
        answered.load(Ordering::SeqCst) >= 3 || client.is_finished()
    });
    assert!(
        going && !client.is_finished(),
        "the busy client did not get going"
    );

    let signalled = Instant::now();
    hello.send_signal(libc::SIGTERM);
    // At once, a request on the idle connection whose moment comes last (0.944 of the spread):
    // hello still answers it.
    let mut late = conns.pop().expect("8 connections");
    late.send(GET);
    let response = late.expect_response(&hello);
    assert_ok(&hello, &response);

    // Every idle connection is closed by the server: a clean EOF, no response. Each is dropped
    // then, so the server need not linger for it.
    for mut conn in conns {
        conn.expect_eof(&hello, IO_TIMEOUT);
    }
    // The drain is spread: the idle connection whose moment is 0.854 of 300 ms cannot have been
    // closed sooner after SIGTERM (without a spread, all close 50 ms after the signal).
    let all_closed = signalled.elapsed();
    assert!(
        all_closed >= Duration::from_millis(200),
        "every idle connection was closed {all_closed:?} after SIGTERM: no 300 ms spread"
    );
    // The one that just made a request too (after a Connection: close, or being idle then).
    late.expect_eof(&hello, IO_TIMEOUT);
    drop(late);

    // The busy client got a response with Connection: close, not an EOF in place of one.
    if !poll_until(TIMEOUT, || client.is_finished()) {
        quit.store(true, Ordering::SeqCst);
    }
    match client.join().expect("busy client thread") {
        Busy::Closed(n) => assert!(n >= 3, "{n}"),
        Busy::Failed(why) => hello.fail(&format!("the busy client failed: {why}")),
    }

    let status = hello.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", exit_description(status));
    wait_until(TIMEOUT, "hello's `stopped` line", || {
        hello
            .stderr()
            .contains(&format!("pid {} stopped", hello.pid))
    });

    // Gone, listener and all: a new connection is refused.
    match http_get(hello.addr, IO_TIMEOUT) {
        Err(Failure::Refused) => {}
        other => hello.fail(&format!("after the exit, a request got {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A request arriving across the stop

#[test]
fn a_request_half_received_at_sigterm_is_answered_with_close() {
    // No spread, so every connection's moment is the signal's; the idle connection's close below
    // shows the server has seen the stop before the rest of the requests is sent.
    let mut hello = Hello::start(&["--drain-spread-ms", "0"]);
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n";
    // The first request of a connection, half sent...
    let mut first = hello.connect();
    first.send(head);
    // ... and the second request of another (accepted after `first`: the accept queue is
    // FIFO, and this one was answered, so `first` was accepted before the stop).
    let mut second = hello.connect();
    assert_ok(&hello, &second.get(&hello));
    second.send(head);
    let mut idle = hello.connect();
    assert_ok(&hello, &idle.get(&hello));

    hello.send_signal(libc::SIGTERM);
    // The idle connection is closed (50 ms after the signal): the server is draining now.
    idle.expect_eof(&hello, IO_TIMEOUT);
    drop(idle);
    // The rest of both requests, well within the 5 s a request may take to arrive once stopped.
    for conn in [&mut first, &mut second] {
        conn.send(b"X-Rest: yes\r\n\r\n");
    }
    for conn in [&mut first, &mut second] {
        let response = conn.expect_response(&hello);
        assert_ok(&hello, &response);
        assert!(
            response.closes(),
            "answered during the stop with {response:?}"
        );
        conn.expect_eof(&hello, IO_TIMEOUT);
    }
    drop((first, second));
    let status = hello.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", exit_description(status));
}

// ---------------------------------------------------------------------------------------------
// 5. Out of file descriptors

#[test]
fn out_of_fds_accept_pauses_instead_of_spinning_and_recovers() {
    // 32 fds: a dozen for hello itself, the rest for connections; 60 clients exhaust them.
    const FDS: u64 = 32;
    const CLIENTS: usize = 60;
    let mut cmd = hello_command(&[]);
    limit_open_files(&mut cmd, FDS, FDS);
    let hello = Hello::start_with(cmd);
    // It serves with the low limit (its fd table presizing just fails).
    assert_ok(&hello, &hello.connect().get(&hello));

    let flood_start = Instant::now();
    let held: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            TcpStream::connect_timeout(&hello.addr, IO_TIMEOUT)
                .unwrap_or_else(|err| hello.fail(&format!("connect: {err}")))
        })
        .collect();
    let accept_errors = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("hello: accept:"))
            .count()
    };
    wait_until(TIMEOUT, "an `accept:` error line (EMFILE)", || {
        accept_errors(&hello.stderr()) > 0
    });
    assert!(
        hello.stderr().contains("Too many open files"),
        "{}",
        hello.stderr()
    );

    // Hold the connections for a second of wall time: an accept loop woken again and again for
    // the connection it cannot accept would burn a core; pausing 10 ms per failure costs little.
    let cpu_before = proc_cpu_time(hello.pid).expect("hello's /proc stat");
    let window_start = Instant::now();
    thread::sleep(Duration::from_secs(1)); // a measuring window, not a synchronisation
    let cpu = proc_cpu_time(hello.pid).expect("hello's /proc stat") - cpu_before;
    let window = window_start.elapsed();
    assert!(
        cpu < Duration::from_millis(250),
        "hello used {cpu:?} of CPU in {window:?} while out of fds: spinning on accept"
    );
    // At most one failed accept per 10 ms pause (and a few more for slack).
    let elapsed_ms = flood_start.elapsed().as_millis() as usize;
    let errors = accept_errors(&hello.stderr());
    assert!(
        errors <= elapsed_ms / 10 + 20,
        "{errors} accept errors in {elapsed_ms} ms: no 10 ms pause between them"
    );
    assert!(
        proc_alive(hello.pid),
        "hello died out of fds: {}",
        hello.stderr()
    );

    // Free the fds: the listener is watched again and a new client is answered.
    drop(held);
    let mut fresh = None;
    let answered = poll_until(TIMEOUT, || {
        fresh = http_get(hello.addr, IO_TIMEOUT).ok();
        fresh.is_some()
    });
    if !answered {
        hello.fail("no answer once the fds were free again");
    }
    let (status, body) = fresh.expect("answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body_pid(&body), Some(hello.pid), "{body}");
}

// ---------------------------------------------------------------------------------------------
// 6. Bad options

#[test]
fn bad_option_values_exit_2_naming_the_value() {
    for (args, expected) in [
        (
            &["--drain-spread-ms", "soon"][..],
            "invalid --drain-spread-ms value \"soon\" (milliseconds)",
        ),
        (
            &["--startup-delay-ms", "-1"][..],
            "invalid --startup-delay-ms value \"-1\"",
        ),
        (
            &["--fd", "2"][..],
            "invalid --fd value \"2\" (a number >= 3)",
        ),
        (&["--frobnicate"][..], "unknown argument \"--frobnicate\""),
    ] {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (status, stderr) = run_to_exit(&all);
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?}: {}; stderr:\n{stderr}",
            exit_description(status)
        );
        assert!(
            stderr.contains(expected) && stderr.contains("usage: hello"),
            "{args:?}: expected {expected:?} and the usage in:\n{stderr}"
        );
    }
}
