//! Closed-loop HTTP/1.1 load: `C` client threads, each sending `GET /` and waiting for the
//! answer before sending the next one, in one of two connection modes.
//!
//! Shared by the reload benchmark and by `tests/zero_downtime.rs` (through `#[path]`), so the
//! test checks exactly what the benchmark measures. Only std: no runtime, no extra crates.
//!
//! Every request is bounded by one deadline (connect, write and read together). A failure is
//! counted by kind:
//!
//! * `refused`: `connect()` got ECONNREFUSED: nothing was listening;
//! * `reset`: ECONNRESET, EPIPE or ECONNABORTED at any point;
//! * `timeout`: the deadline passed;
//! * `bad response`: not a complete `200` answer with a `pid=N` body, or the connection closed
//!   without an answer where a retry is not allowed;
//! * `other`: any other error (e.g. EADDRNOTAVAIL when the client runs out of local ports).
//!
//! After a failure a client pauses [`PAUSE_AFTER_FAILURE`] before its next request, as real
//! clients back off: a refused `connect()` returns in microseconds, and without a pause the
//! failure count would measure how fast a client can spin rather than how long it was denied.
//!
//! In keep-alive mode, a server that stops closes idle connections. A client that finds its
//! reused connection closed *cleanly* (end of stream before any byte of the response) reconnects
//! and sends the GET again (GET is idempotent), at most [`MAX_RETRIES`] times; this is counted
//! in [`LoadResult::retries`], not as a failure. Anything else (a reset, a fresh connection
//! closed without an answer, a partial answer) is a failure: a real client could not know
//! whether the request was processed.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a client waits after a failed request before the next one.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(10);
/// Retries of one request after clean closes of reused keep-alive connections.
pub const MAX_RETRIES: u32 = 3;
/// Failure messages kept as examples for the report.
const MAX_EXAMPLES: usize = 20;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// How clients use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// A new connection per request (`Connection: close`).
    Close,
    /// One persistent connection per client, replaced when the server closes it.
    KeepAlive,
}

impl Mode {
    /// Short name, as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Close => "close",
            Mode::KeepAlive => "keepalive",
        }
    }

    /// Human description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Close => "new connection per request",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Outcome {
    /// A complete `200` answer.
    Ok,
    /// Connection refused.
    Refused,
    /// Reset, aborted or broken pipe.
    Reset,
    /// The deadline passed.
    Timeout,
    /// Not a complete, well-formed `200` answer.
    BadResponse,
    /// Any other error.
    Other,
}

impl Outcome {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::BadResponse => "bad response",
            Outcome::Other => "other",
        }
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it started, in µs since the load's time origin.
    pub start_us: u32,
    /// How long it took (including keep-alive retries), in µs.
    pub latency_us: u32,
    /// Pid that answered (0 if it failed).
    pub pid: u32,
    /// How it ended.
    pub outcome: Outcome,
}

impl Sample {
    /// When it ended, in µs since the time origin.
    pub fn end_us(&self) -> u64 {
        u64::from(self.start_us) + u64::from(self.latency_us)
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// Server address (the benchmark only ever uses 127.0.0.1).
    pub addr: SocketAddr,
    /// Connection mode.
    pub mode: Mode,
    /// Concurrent clients.
    pub clients: usize,
    /// Deadline for each request.
    pub timeout: Duration,
}

/// Everything a finished load recorded.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Every request, in no particular order.
    pub samples: Vec<Sample>,
    /// Requests sent again after a clean close of a reused keep-alive connection.
    pub retries: u64,
    /// Some failure messages, with the time they happened (µs since the origin).
    pub examples: Vec<(u32, String)>,
}

impl LoadResult {
    /// Number of requests that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.samples.iter().filter(|s| s.outcome == outcome).count() as u64
    }

    /// Number of failed requests.
    pub fn failures(&self) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.outcome != Outcome::Ok)
            .count() as u64
    }

    /// Failures by kind (only kinds that occurred).
    pub fn failures_by_kind(&self) -> BTreeMap<Outcome, u64> {
        let mut map = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.outcome != Outcome::Ok) {
            *map.entry(s.outcome).or_insert(0) += 1;
        }
        map
    }

    /// Distinct pids that answered.
    pub fn distinct_pids(&self) -> usize {
        let mut pids: Vec<u32> = self
            .samples
            .iter()
            .filter(|s| s.pid != 0)
            .map(|s| s.pid)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    }
}

struct Shared {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    /// Per client: the pid of its last answer (0 before the first one).
    last_pid: Vec<AtomicU32>,
    /// Per client: answers so far (incremented after `last_pid` is stored).
    answers: Vec<AtomicU64>,
    examples: Mutex<Vec<(u32, String)>>,
}

/// Per-client answer counts at some moment.
#[derive(Debug, Clone)]
pub struct Mark(Vec<u64>);

/// A running load. Dropping it stops the clients and joins them (each finishes its current
/// request, which is bounded by the request timeout).
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    /// Starts `config.clients` client threads; sample times are relative to `origin`.
    pub fn start(config: LoadConfig, origin: Instant) -> io::Result<Load> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            last_pid: (0..config.clients).map(|_| AtomicU32::new(0)).collect(),
            answers: (0..config.clients).map(|_| AtomicU64::new(0)).collect(),
            examples: Mutex::new(Vec::new()),
        });
        let mut load = Load {
            shared,
            threads: Vec::new(),
        };
        for id in 0..config.clients {
            let shared = Arc::clone(&load.shared);
            let thread = thread::Builder::new()
                .name(format!("client-{id}"))
                .stack_size(256 * 1024)
                .spawn(move || client(id, config, origin, &shared))?;
            load.threads.push(thread);
        }
        Ok(load)
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// A point in time to compare answers with (see [`Load::served_by_since`]).
    pub fn mark(&self) -> Mark {
        Mark(
            self.shared
                .answers
                .iter()
                .map(|a| a.load(Ordering::Acquire))
                .collect(),
        )
    }

    /// Whether some client got an answer from `pid` after `mark` was taken. Pids are reused
    /// (tids share the pid space, and a thread-per-connection server goes through it in
    /// seconds), so a client's last pid alone could come from a long-gone process.
    pub fn served_by_since(&self, pid: u32, mark: &Mark) -> bool {
        self.shared
            .answers
            .iter()
            .zip(&self.shared.last_pid)
            .zip(&mark.0)
            .any(|((answers, last), &then)| {
                answers.load(Ordering::Acquire) > then && last.load(Ordering::Relaxed) == pid
            })
    }

    /// Stops the clients and returns what they recorded.
    pub fn finish(mut self) -> LoadResult {
        let samples = self.stop_and_join();
        let examples = std::mem::take(&mut *lock(&self.shared.examples));
        LoadResult {
            samples,
            retries: self.shared.retries.load(Ordering::Relaxed),
            examples,
        }
    }

    fn stop_and_join(&mut self) -> Vec<Sample> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut samples = Vec::new();
        for thread in self.threads.drain(..) {
            if let Ok(mut s) = thread.join() {
                samples.append(&mut s);
            }
        }
        samples
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// One client's loop.
fn client(id: usize, config: LoadConfig, origin: Instant, shared: &Shared) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(16 * 1024);
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(1024);
    while !shared.stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let result = match config.mode {
            Mode::Close => request_close(config.addr, start + config.timeout, &mut buf),
            Mode::KeepAlive => {
                request_keep_alive(&mut conn, config.addr, start + config.timeout, &mut buf).map(
                    |(pid, retries)| {
                        if retries > 0 {
                            shared
                                .retries
                                .fetch_add(u64::from(retries), Ordering::Relaxed);
                        }
                        pid
                    },
                )
            }
        };
        let end = Instant::now();
        let start_us = micros(start.saturating_duration_since(origin));
        let latency_us = micros(end - start);
        match result {
            Ok(pid) => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                shared.last_pid[id].store(pid, Ordering::Relaxed);
                shared.answers[id].fetch_add(1, Ordering::Release);
                samples.push(Sample {
                    start_us,
                    latency_us,
                    pid,
                    outcome: Outcome::Ok,
                });
            }
            Err(Failure { outcome, message }) => {
                conn = None;
                shared.failed.fetch_add(1, Ordering::Relaxed);
                {
                    let mut examples = lock(&shared.examples);
                    if examples.len() < MAX_EXAMPLES {
                        examples.push((start_us, format!("{}: {message}", outcome.name())));
                    }
                }
                samples.push(Sample {
                    start_us,
                    latency_us,
                    pid: 0,
                    outcome,
                });
                if !shared.stop.load(Ordering::Relaxed) {
                    thread::sleep(PAUSE_AFTER_FAILURE);
                }
            }
        }
    }
    samples
}

/// A failed request.
#[derive(Debug)]
struct Failure {
    outcome: Outcome,
    message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure {
            outcome: Outcome::BadResponse,
            message: message.into(),
        }
    }

    fn timeout(what: &str) -> Failure {
        Failure {
            outcome: Outcome::Timeout,
            message: format!("deadline passed while {what}"),
        }
    }
}

fn classify(err: &io::Error, what: &str) -> Failure {
    let outcome = match err.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Outcome::Reset
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        _ => Outcome::Other,
    };
    Failure {
        outcome,
        message: format!("{what}: {err}"),
    }
}

fn left(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    // A zero timeout means "block forever" to set_read_timeout: never pass it.
    (left >= Duration::from_micros(100)).then_some(left)
}

fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, Failure> {
    let timeout = left(deadline).ok_or_else(|| Failure::timeout("connecting"))?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| classify(&e, "connect"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| classify(&e, "setting TCP_NODELAY"))?;
    Ok(stream)
}

fn send(stream: &mut TcpStream, request: &[u8], deadline: Instant) -> Result<(), Failure> {
    let timeout = left(deadline).ok_or_else(|| Failure::timeout("sending"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| classify(&e, "set_write_timeout"))?;
    stream
        .write_all(request)
        .map_err(|e| classify(&e, "sending the request"))
}

/// One read with the time left; Ok(0) at end of stream.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, Failure> {
    let mut chunk = [0u8; 4096];
    loop {
        let timeout = left(deadline).ok_or_else(|| Failure::timeout("waiting for the response"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| classify(&e, "set_read_timeout"))?;
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Failure::timeout("waiting for the response"))
            }
            Err(e) => return Err(classify(&e, "reading the response")),
        }
    }
}

/// A response head's facts.
struct Head {
    len: usize,
    content_length: usize,
    close: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(Failure::bad("response head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Failure::bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3));
    if code != Some("200") {
        return Err(Failure::bad(format!("status line {status:?}")));
    }
    let mut content_length = None;
    let mut close = status.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Failure::bad(format!("header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| Failure::bad(format!("Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"));
        }
    }
    let content_length =
        content_length.ok_or_else(|| Failure::bad("response without Content-Length"))?;
    Ok(Some(Head {
        len: end + 4,
        content_length,
        close,
    }))
}

/// The `N` of a `pid=N` body.
fn body_pid(body: &[u8]) -> Result<u32, Failure> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| {
            b.split_whitespace()
                .find_map(|t| t.strip_prefix("pid="))
                .and_then(|p| p.parse().ok())
        })
        .ok_or_else(|| {
            Failure::bad(format!(
                "body without pid=N: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(100)])
            ))
        })
}

/// How reading a response ended.
enum ReadError {
    /// End of stream before any byte of the response.
    CleanClose,
    Failed(Failure),
}

impl From<Failure> for ReadError {
    fn from(f: Failure) -> ReadError {
        ReadError::Failed(f)
    }
}

/// Reads one complete response into `buf` (which starts empty); returns (pid, close).
fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(u32, bool), ReadError> {
    buf.clear();
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if read_some(stream, buf, deadline)? == 0 {
            return Err(if buf.is_empty() {
                ReadError::CleanClose
            } else {
                ReadError::Failed(Failure::bad(format!(
                    "connection closed after {} bytes of the response head",
                    buf.len()
                )))
            });
        }
    };
    let total = head.len + head.content_length;
    while buf.len() < total {
        if read_some(stream, buf, deadline)? == 0 {
            return Err(ReadError::Failed(Failure::bad(format!(
                "connection closed after {} of {} body bytes",
                buf.len() - head.len,
                head.content_length
            ))));
        }
    }
    if buf.len() > total {
        return Err(ReadError::Failed(Failure::bad(
            "more bytes than the response announced",
        )));
    }
    Ok((body_pid(&buf[head.len..total])?, head.close))
}

const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
const GET_KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

/// GET on a new connection; read to the server's close.
fn request_close(addr: SocketAddr, deadline: Instant, buf: &mut Vec<u8>) -> Result<u32, Failure> {
    let mut stream = connect(addr, deadline)?;
    send(&mut stream, GET_CLOSE, deadline)?;
    let (pid, _close) = match read_response(&mut stream, buf, deadline) {
        Ok(answer) => answer,
        Err(ReadError::CleanClose) => {
            return Err(Failure::bad("connection closed without a response"))
        }
        Err(ReadError::Failed(f)) => return Err(f),
    };
    // Wait for the server's close, so the server side keeps the TIME_WAIT state, as it would
    // with any client that reads to the end of the stream.
    let mut rest = Vec::new();
    while read_some(&mut stream, &mut rest, deadline)? != 0 {
        if rest.len() > MAX_HEAD {
            return Err(Failure::bad("bytes after the response"));
        }
    }
    if !rest.is_empty() {
        return Err(Failure::bad("bytes after the response"));
    }
    Ok(pid)
}

/// A keep-alive connection.
struct Conn {
    stream: TcpStream,
    /// It has carried at least one complete exchange (only then may a clean close be retried).
    reused: bool,
}

/// GET on the client's keep-alive connection (opened if needed); returns (pid, retries).
fn request_keep_alive(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    deadline: Instant,
    buf: &mut Vec<u8>,
) -> Result<(u32, u32), Failure> {
    let mut retries = 0;
    loop {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Conn {
                stream: connect(addr, deadline)?,
                reused: false,
            }),
        };
        let outcome = send(&mut c.stream, GET_KEEP_ALIVE, deadline)
            .map_err(ReadError::Failed)
            .and_then(|()| read_response(&mut c.stream, buf, deadline));
        match outcome {
            Ok((pid, close)) => {
                if close {
                    *conn = None;
                } else {
                    c.reused = true;
                }
                return Ok((pid, retries));
            }
            Err(ReadError::CleanClose) if c.reused && retries < MAX_RETRIES => {
                // The server closed an idle connection (e.g. it is draining): send it again on
                // a new connection.
                *conn = None;
                retries += 1;
            }
            Err(ReadError::CleanClose) => {
                *conn = None;
                return Err(Failure::bad(if retries > 0 {
                    "connection closed without a response after retries"
                } else {
                    "new connection closed without a response"
                }));
            }
            Err(ReadError::Failed(f)) => {
                *conn = None;
                return Err(f);
            }
        }
    }
}

/// One `GET /` on a new connection, outside any load (to check that a server answers).
/// Returns the pid that answered.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<u32, String> {
    let mut buf = Vec::new();
    request_close(addr, Instant::now() + timeout, &mut buf)
        .map_err(|f| format!("{}: {}", f.outcome.name(), f.message))
}
