//! `hello`: a small HTTP/1.1 server that takes its listening sockets from its parent.
//!
//! This is the reference for how a server works under relaunch (or systemd socket activation):
//!
//! ```text
//! cargo build --examples
//! relaunch --listen http=127.0.0.1:8080 -- target/debug/examples/hello
//! curl http://127.0.0.1:8080/          # pid=4242 fdnames=http
//! kill -HUP <pid of relaunch>          # a new pid answers; no request fails
//! ```
//!
//! Every request (any method, any path) is answered with `200 OK` and the body
//! `pid=<pid> fdnames=<LISTEN_FDNAMES>`. Options:
//!
//! * `--startup-delay-ms N`: wait N ms before serving, like a server with a slow boot.
//! * `--bind ADDR`: bind ADDR itself when no socket is inherited (a baseline without relaunch).
//! * `--fd N`: take the listening socket at fd N instead (how circus passes a socket:
//!   `--fd $(circus.sockets.NAME)`).
//! * `--socket NAME`: serve only the inherited socket named NAME, which must be a TCP listener
//!   (else it exits 2 with an error naming the socket).
//! * `--drain-spread-ms N`: when stopping, close the keep-alive connections over N ms (default
//!   250) instead of all at once; 0 closes them all at once. See point 5 below.
//! * `--stamp-file PATH`: append `pid=P monotonic_ns=T` to PATH, where T is `CLOCK_MONOTONIC`
//!   read first thing in `main`. The reload benchmark (`benches/reload`) compares it with the
//!   time it sent SIGHUP to measure spawn latency.
//!
//! When `NOTIFY_SOCKET` is set (`relaunch --ready notify`, systemd `Type=notify`), it sends
//! `READY=1` once it serves. Taking the sockets and saying it is ready go through
//! [`relaunch::child`], the crate's child side (no `listenfd` or sd-notify crate needed).
//!
//! What a server must do to share its listening sockets with other generations of itself:
//!
//! 1. Take the sockets from the environment: `LISTEN_FDS` sockets start at fd 3 and belong to
//!    this process only if `LISTEN_PID` is its pid (`relaunch::child::Sockets::take` checks
//!    both, and hands them out by their `LISTEN_FDNAMES` name).
//! 2. Wait for connections so that only one generation wakes for each: on Linux, epoll with
//!    `EPOLLEXCLUSIVE` on the listening sockets (given when adding them; it cannot be added
//!    later). With `poll()`, `select()` or plain epoll, every process holding the socket wakes
//!    for every connection, and all but one find nothing to accept: while two generations
//!    overlap, that doubles the wake-ups per connection. Accept (a bounded batch) on every
//!    listener reported ready before honouring a stop signal reported in the same wake-up:
//!    the other generations were not woken for those connections. And still expect `accept()`
//!    to fail with `EAGAIN` right after a wake-up: another generation may have taken the
//!    connection first.
//! 3. To stop, close (drop) its copy of the listener. Never call `shutdown()` on it: the socket
//!    is shared, and shutting it down would stop it for the parent and every other generation.
//!    Connections not yet accepted stay queued in the kernel for the next generation.
//! 4. On SIGTERM (or SIGINT, or SIGUSR2, einhorn's graceful stop), finish the requests in
//!    flight, answer with `Connection: close`, close idle keep-alive connections, and exit 0.
//! 5. Spread that closing over a short time. Every client whose connection is closed reconnects
//!    at once, to the new generation; closing all of them in the same millisecond makes the new
//!    server accept (here: start a thread for) every client in one burst, and the tail latency
//!    of that moment jumps (the reload benchmark's "Latency after each HUP" table shows it).
//!    hello gives each connection its own moment within `--drain-spread-ms`: until then it
//!    keeps serving it as usual, then answers its next request with `Connection: close`, or
//!    closes it if none comes within 50 ms (closing an idle connection at once races with the
//!    request its client may be sending right then).
//!
//! hello runs a thread per connection. An event-loop version (one epoll loop per CPU) was
//! measured against it in the reload benchmark and kept the tail beyond the p99 shorter, but its
//! p99 was 2.5 times higher with the 256 clients on the same 2 CPUs: a loop thread that the
//! scheduler preempts holds up every connection it serves (BENCHMARKS.md, "hello: a thread per
//! connection or an event loop").

use std::env;
use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use relaunch::child::{self, Sockets};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR2};

/// Prints one line to stderr in a single `write()`, so it never interleaves with the output of
/// the other processes sharing stderr (relaunch, other generations).
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("hello: {}\n", format_args!($($arg)*));
        let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
    }};
}

const USAGE: &str = "usage: hello [--startup-delay-ms N] [--bind ADDR] [--fd N] \
                     [--socket NAME] [--drain-spread-ms N] [--stamp-file PATH]";
/// Default of `--drain-spread-ms`.
const DRAIN_SPREAD: Duration = Duration::from_millis(250);

/// How often a connection waiting for a request checks whether the server is stopping.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Once a keep-alive connection's moment to close has come, how long it may stay idle before
/// it is closed: a request in that time is answered, with `Connection: close`.
const IDLE_GRACE: Duration = Duration::from_millis(50);
/// After a stop, how long a half-received request may take to arrive completely.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Largest accepted request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Connections accepted per wake-up, so a flood cannot delay the reaction to SIGTERM.
const ACCEPT_BATCH: usize = 64;
/// fd table slots reserved at startup (see `presize_fd_table`).
const FD_TABLE: libc::c_int = 1024;

struct Options {
    startup_delay: Duration,
    bind: Option<String>,
    fd: Option<RawFd>,
    socket: Option<String>,
    stamp_file: Option<String>,
    drain_spread: Duration,
}

fn main() {
    // First thing, for `--stamp-file`: how soon after exec this process got to run.
    let started_ns = monotonic_ns();
    let opts = parse_args().unwrap_or_else(|msg| {
        say!("{msg}\n{USAGE}");
        process::exit(2);
    });
    // While this process has one thread: take the inherited sockets (which also removes the
    // LISTEN_* variables, sound only now), unless `--fd N` names the one to serve. Errors are
    // reported below, after the signal handlers.
    let inherited = match opts.fd {
        None => Sockets::take(),
        Some(_) => Ok(Sockets::default()),
    };
    presize_fd_table();
    if let Some(path) = &opts.stamp_file {
        let line = format!("pid={} monotonic_ns={started_ns}\n", process::id());
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(err) = written {
            say!("cannot write the stamp file {path}: {err}");
        }
    }

    // Catch SIGTERM/SIGINT first: a stop that arrives during a slow boot still ends us cleanly.
    let signals = SignalPipe::new().unwrap_or_else(|err| {
        say!("cannot set up signal handling: {err}");
        process::exit(1);
    });

    let (listeners, names) = take_listeners(inherited, &opts).unwrap_or_else(|msg| {
        say!("{msg}");
        process::exit(2);
    });

    // Set up before the startup delay, so a failure exits before we say we are ready. An
    // exclusive entry nobody waits on takes no wake-up: the kernel passes it on to a process
    // that waits, e.g. the previous generation.
    let poller = Poller::new(&listeners, &signals).unwrap_or_else(|err| {
        say!("cannot set up epoll: {err}");
        process::exit(1);
    });

    if !opts.startup_delay.is_zero() && signals.wait(Some(opts.startup_delay)) {
        // Stopped before we served anything.
        return;
    }

    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_or_else(|e| format!("?({e})"), |a| a.to_string())
        })
        .collect();
    say!("pid {} serving on {}", process::id(), addrs.join(", "));
    // Under `relaunch --ready notify` (or systemd Type=notify), say we are up: only now does
    // relaunch stop the previous generation. Without NOTIFY_SOCKET this does nothing.
    if let Err(err) = child::ready() {
        say!("cannot say READY=1: {err}");
    }

    let body = format!("pid={} fdnames={}\n", process::id(), names.join(":"));
    serve(listeners, poller, Arc::from(body), opts.drain_spread);
    say!("pid {} stopped", process::id());
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        startup_delay: Duration::ZERO,
        bind: None,
        fd: None,
        socket: None,
        stamp_file: None,
        drain_spread: DRAIN_SPREAD,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--startup-delay-ms" => {
                let v = args.next().ok_or("--startup-delay-ms needs a value")?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("invalid --startup-delay-ms value {v:?}"))?;
                opts.startup_delay = Duration::from_millis(ms);
            }
            "--bind" => opts.bind = Some(args.next().ok_or("--bind needs a value")?),
            "--fd" => {
                let v = args.next().ok_or("--fd needs a value")?;
                let fd = v
                    .parse()
                    .ok()
                    .filter(|fd| *fd >= 3)
                    .ok_or_else(|| format!("invalid --fd value {v:?} (a number >= 3)"))?;
                opts.fd = Some(fd);
            }
            "--socket" => opts.socket = Some(args.next().ok_or("--socket needs a value")?),
            "--drain-spread-ms" => {
                let v = args.next().ok_or("--drain-spread-ms needs a value")?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("invalid --drain-spread-ms value {v:?} (milliseconds)"))?;
                opts.drain_spread = Duration::from_millis(ms);
            }
            "--stamp-file" => {
                opts.stamp_file = Some(args.next().ok_or("--stamp-file needs a value")?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// The listener at `--fd` if given, else the inherited socket `--socket NAME`, else every
/// inherited TCP listener, else the one bound to `--bind`; with the inherited sockets' names
/// (`LISTEN_FDNAMES`), for the answer.
fn take_listeners(
    inherited: Result<Sockets, child::ChildError>,
    opts: &Options,
) -> Result<(Vec<TcpListener>, Vec<String>), String> {
    let mut inherited = inherited.map_err(|err| err.to_string())?;
    let names = inherited.all_names();
    let mut listeners = Vec::new();
    if let Some(fd) = opts.fd {
        let fd = child::inherited_fd(fd).map_err(|err| format!("--fd {fd}: {err}"))?;
        let listener = TcpListener::from(fd);
        listener
            .local_addr()
            .map_err(|err| format!("--fd is not a TCP socket: {err}"))?;
        listeners.push(listener);
    } else if let Some(name) = &opts.socket {
        listeners.push(
            inherited
                .tcp_listener(name)
                .map_err(|err| err.to_string())?,
        );
    } else {
        listeners.extend(inherited.tcp_listeners().into_iter().map(|(_, l)| l));
    }
    if listeners.is_empty() {
        let Some(addr) = opts.bind.as_deref() else {
            return Err(
                "no listening socket inherited (LISTEN_FDS is unset, or LISTEN_PID is \
                        not this process) and no --bind ADDR given"
                    .into(),
            );
        };
        listeners.push(TcpListener::bind(addr).map_err(|err| format!("binding {addr}: {err}"))?);
    }
    // Every listener, however it came: `--fd`, socket activation or `--bind`.
    for listener in &listeners {
        // Several processes wait on the same socket; a connection another one took first must
        // not block us in accept(). A launcher may well pass a blocking socket (socketmaster
        // does), and a server blocked in accept() never sees its SIGTERM. (O_NONBLOCK is shared
        // by all holders of the socket, which is fine: every generation of this server waits in
        // epoll before accepting.)
        listener
            .set_nonblocking(true)
            .map_err(|err| format!("setting O_NONBLOCK: {err}"))?;
    }
    Ok((listeners, names))
}

/// Grows the fd table to [`FD_TABLE`] slots while the process still has one thread.
///
/// Growing it later, once connection threads share it, makes the `accept()` that needs the
/// next slot wait for an RCU grace period in the kernel (`expand_files` → `synchronize_rcu`).
/// On a loaded machine that wait reached seconds in the reload benchmark: the new generation
/// stalled while taking over a burst of connections, and an old one could not get back to its
/// loop to stop until relaunch's stop timeout killed it.
fn presize_fd_table() {
    // SAFETY: F_DUPFD_CLOEXEC takes the lowest free fd >= FD_TABLE - 1 (never an open one), and
    // we close exactly that fd again; the table keeps its size.
    unsafe {
        let fd = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, FD_TABLE - 1);
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock every process on the host shares.
fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// The read end of a self-pipe that SIGTERM, SIGINT and SIGUSR2 write to.
struct SignalPipe {
    read: UnixStream,
}

impl SignalPipe {
    fn new() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(SIGINT, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(SIGUSR2, write.try_clone()?)?;
        signal_hook::low_level::pipe::register(SIGTERM, write)?;
        Ok(SignalPipe { read })
    }

    /// Waits up to `timeout` (forever if `None`) for a stop signal; true if one arrived.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return false;
            }
            let mut fds = [pollfd(self.read.as_raw_fd())];
            if poll(&mut fds, left).is_ok() && fds[0].revents != 0 {
                return true;
            }
        }
    }
}

/// The `epoll` token of the signal pipe; a listener's token is its index.
const SIGNAL_TOKEN: u64 = u64::MAX;

/// One epoll set: the listening sockets, with `EPOLLEXCLUSIVE`, and the signal pipe.
///
/// While two generations hold a listener, `poll()` (or plain epoll) wakes both for every
/// connection; one accepts and the other finds `EAGAIN`, a wasted wake-up per connection.
/// With `EPOLLEXCLUSIVE`, the kernel wakes only one of the processes waiting on the socket.
/// The flag can only be given when a socket is added (`EPOLL_CTL_MOD` rejects it), so each
/// listener is added once, with it, and never modified. The signal pipe is this process's own,
/// so it is an ordinary entry of the same set: one `epoll_wait` sees both.
struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    fn new(listeners: &[TcpListener], signals: &SignalPipe) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1: open, and owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let poller = Poller {
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; listeners.len() + 1],
        };
        for (index, listener) in listeners.iter().enumerate() {
            let exclusive = libc::EPOLLIN | libc::EPOLLEXCLUSIVE;
            match poller.add(listener.as_raw_fd(), exclusive, index as u64) {
                // A kernel older than 4.5 has no EPOLLEXCLUSIVE: every generation wakes.
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                    poller.add(listener.as_raw_fd(), libc::EPOLLIN, index as u64)?
                }
                other => other?,
            }
        }
        poller.add(signals.read.as_raw_fd(), libc::EPOLLIN, SIGNAL_TOKEN)?;
        Ok(poller)
    }

    fn add(&self, fd: RawFd, events: libc::c_int, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the call, which copies it.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for a connection or a stop signal; the tokens of what is ready. An interruption
    /// by a signal counts as "nothing ready".
    fn wait(&mut self) -> io::Result<impl Iterator<Item = u64> + '_> {
        let capacity = self.events.len() as libc::c_int;
        // SAFETY: `events` is an exclusively borrowed buffer of `capacity` epoll_event entries
        // for the whole call; the kernel writes at most that many.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                capacity,
                -1,
            )
        };
        let ready = match n {
            n if n >= 0 => n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != ErrorKind::Interrupted {
                    return Err(err);
                }
                0
            }
        };
        // A by-value read: epoll_event is packed on some architectures.
        Ok(self.events[..ready].iter().map(|event| event.u64))
    }
}

/// When the server stopped, and over how long it closes its connections.
struct Drain {
    stopping: AtomicBool,
    since: OnceLock<Instant>,
    spread: Duration,
}

impl Drain {
    /// Whether the server is stopping at all.
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// How long until the connection with `slot` (in 0..1) is to close; `None` while the
    /// server is not stopping, zero once its moment has come.
    fn until_close(&self, slot: f64) -> Option<Duration> {
        if !self.stopping() {
            return None;
        }
        let since = *self.since.get()?;
        let at = since + self.spread.mul_f64(slot);
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// Whether the connection with `slot` is to close now.
    fn closing(&self, slot: f64) -> bool {
        self.until_close(slot) == Some(Duration::ZERO)
    }
}

/// The moment of the `n`th connection within the drain, in 0..1: the fractional parts of
/// multiples of the golden ratio, which spread any run of consecutive connections evenly.
fn slot(n: u64) -> f64 {
    (n as f64 * 0.618_033_988_749_894_9).fract()
}

/// Accepts connections until SIGTERM, SIGINT or SIGUSR2, then drains and returns.
fn serve(listeners: Vec<TcpListener>, mut poller: Poller, body: Arc<str>, spread: Duration) {
    let stopping = Arc::new(Drain {
        stopping: AtomicBool::new(false),
        since: OnceLock::new(),
        spread,
    });
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut accepted: u64 = 0;

    loop {
        let mut stop = false;
        match poller.wait() {
            Ok(ready) => {
                // Accept on every listener epoll reported before honouring a stop that came
                // in the same wake-up: with EPOLLEXCLUSIVE only we were woken for those
                // connections, so the next generation would not hear of them until another
                // one arrives.
                for token in ready {
                    match listeners.get(token as usize) {
                        Some(listener) => {
                            accept_ready(listener, &stopping, &body, &mut workers, &mut accepted)
                        }
                        None => stop = true, // SIGTERM, SIGINT or SIGUSR2
                    }
                }
            }
            Err(err) => {
                say!("epoll_wait: {err}");
                stop = true;
            }
        }
        // Finished threads are detached by dropping their handle.
        workers.retain(|worker| !worker.is_finished());
        if stop {
            break;
        }
    }

    // Stop accepting: leave the epoll set (it holds the listening sockets, which stay open in
    // the other generations), then close our copies of the listeners. Connections still queued
    // in the kernel are served by the next generation, which holds the same sockets.
    drop(poller);
    drop(listeners);
    let _ = stopping.since.set(Instant::now());
    stopping.stopping.store(true, Ordering::SeqCst);
    for worker in workers {
        let _ = worker.join();
    }
}

fn accept_ready(
    listener: &TcpListener,
    stopping: &Arc<Drain>,
    body: &Arc<str>,
    workers: &mut Vec<JoinHandle<()>>,
    accepted: &mut u64,
) {
    for _ in 0..ACCEPT_BATCH {
        let stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            // Nothing (left) to accept: another process holding the socket was faster.
            Err(err) if err.kind() == ErrorKind::WouldBlock => return,
            // The client gave up before we accepted; try the next one.
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(err) => {
                // E.g. out of file descriptors: back off a little instead of spinning.
                say!("accept: {err}");
                thread::sleep(Duration::from_millis(10));
                return;
            }
        };
        let (stopping, body) = (Arc::clone(stopping), Arc::clone(body));
        *accepted += 1;
        let slot = slot(*accepted);
        let spawned = thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                if let Err(err) = handle_connection(stream, &stopping, slot, &body) {
                    if !is_disconnect(&err) {
                        say!("connection: {err}");
                    }
                }
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(err) => say!("cannot start a connection thread: {err}"),
        }
    }
}

/// A parsed request head: only what the server needs to answer it.
struct Request {
    head_only: bool,
    keep_alive: bool,
    content_length: usize,
}

/// Serves requests on one connection until the client closes, asks to close, or we stop.
///
/// `slot` (in 0..1) is this connection's moment to close within the drain (see [`Drain`]).
fn handle_connection(
    mut stream: TcpStream,
    stopping: &Drain,
    slot: f64,
    body: &str,
) -> io::Result<()> {
    // Linux does not pass O_NONBLOCK from the listener to accepted sockets; be explicit anyway.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STOP_CHECK))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    for served in 0.. {
        let head_len = match read_head(&mut stream, &mut buf, served == 0, stopping, slot)? {
            Some(len) => len,
            // Client closed, idle too long, or we are stopping. Close like after a response:
            // a request may be arriving right now (the client cannot know we are about to
            // close), and closing with unread input would answer it with a RST, a failure the
            // client cannot retry safely. With FIN first, the client reads a clean end of
            // stream instead and may send the request again on a new connection.
            None => return linger_close(stream),
        };
        let request = match parse_head(&buf[..head_len]) {
            Ok(request) => request,
            Err(status) => {
                respond(&mut stream, status, "", false, true)?;
                return linger_close(stream);
            }
        };
        buf.drain(..head_len);
        if !discard_body(&mut stream, &mut buf, request.content_length, stopping)? {
            return Ok(());
        }
        let close = !request.keep_alive || stopping.closing(slot);
        respond(&mut stream, "200 OK", body, request.head_only, close)?;
        if close {
            return linger_close(stream);
        }
    }
    Ok(())
}

/// Reads until `buf` holds a complete request head; returns its length including the blank
/// line. `None` if the connection should be closed without an answer.
///
/// The first request of a connection is in flight as soon as we accepted it, even if its bytes
/// have not arrived yet, so only a keep-alive connection waiting for its next request counts as
/// idle when we stop.
fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    first: bool,
    stopping: &Drain,
    slot: f64,
) -> io::Result<Option<usize>> {
    let waiting_since = Instant::now();
    let mut stop_seen: Option<Instant> = None;
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(pos + 4));
        }
        if buf.len() > MAX_HEAD {
            respond(
                stream,
                "431 Request Header Fields Too Large",
                "",
                false,
                true,
            )?;
            return Ok(None);
        }
        let until_close = stopping.until_close(slot);
        if until_close == Some(Duration::ZERO) {
            // Our moment to close has come. A request on its way (or the first one of the
            // connection, in flight since we accepted it): give it time to arrive, and answer
            // it with `Connection: close`. Idle: wait IDLE_GRACE for a next request all the
            // same, then close. A busy client almost always sends one within it, and gets a
            // clean `Connection: close`; closing at once would race with the request it may be
            // sending right then, which it would then have to send again on a new connection.
            let waited = stop_seen.get_or_insert_with(Instant::now).elapsed();
            let idle = buf.is_empty() && !first;
            if (idle && waited >= IDLE_GRACE) || waited > STOP_GRACE {
                return Ok(None);
            }
            if idle {
                let left = IDLE_GRACE - waited;
                stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            } else {
                stream.set_read_timeout(Some(STOP_CHECK))?;
            }
        } else if let Some(left) = until_close {
            // Stopping, but this connection's moment to close is still ahead: wake up for it.
            stream.set_read_timeout(Some(left.clamp(Duration::from_millis(1), STOP_CHECK)))?;
        } else if buf.is_empty() && waiting_since.elapsed() > KEEP_ALIVE_TIMEOUT {
            return Ok(None);
        }
        if !read_more(stream, buf)? {
            return Ok(None);
        }
    }
}

/// Consumes a request body of `len` bytes; false if the client went away first.
fn discard_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    len: usize,
    stopping: &Drain,
) -> io::Result<bool> {
    let started = Instant::now();
    while buf.len() < len {
        if stopping.stopping() && started.elapsed() > STOP_GRACE {
            return Ok(false);
        }
        if !read_more(stream, buf)? {
            return Ok(false);
        }
    }
    buf.drain(..len);
    Ok(true)
}

/// One read into `buf`. Ok(false) at end of stream; a read timeout is not an error (the caller
/// re-checks whether we are stopping).
fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) =>
        {
            Ok(true)
        }
        Err(err) => Err(err),
    }
}

/// Parses a request head; on error, the status line to answer with.
fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "400 Bad Request")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("400 Bad Request");
    };
    // HTTP/1.1 keeps the connection open unless asked not to; HTTP/1.0 closes unless asked.
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("505 HTTP Version Not Supported"),
    };
    let mut content_length = 0;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("400 Bad Request")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| "400 Bad Request")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("501 Not Implemented");
        }
    }
    Ok(Request {
        head_only: method == "HEAD",
        keep_alive,
        content_length,
    })
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        response.push_str("Connection: close\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())
}

/// Closes a connection without losing the response we just wrote: send FIN, then read until
/// the client closes too (briefly). Closing with unread input would send a RST instead, and
/// the client could lose the response.
fn linger_close(mut stream: TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
    )
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// poll(2) with an optional timeout; an interruption by a signal counts as "nothing ready".
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc >= 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.kind() == ErrorKind::Interrupted {
        for fd in fds.iter_mut() {
            fd.revents = 0;
        }
        return Ok(());
    }
    Err(err)
}
