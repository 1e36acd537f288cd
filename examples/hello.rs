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
//! * `--threads N`: serve with N event loops, one thread each (default: the number of CPUs).
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
//!    listener reported ready before honouring a stop reported in the same wake-up: the other
//!    generations were not woken for those connections. And still expect `accept()` to fail
//!    with `EAGAIN` right after a wake-up: another generation may have taken the connection
//!    first. hello runs one event loop per CPU, each with its own epoll set holding every
//!    listener (exclusive) and the connections it accepted, so a connection costs an `accept()`
//!    and an `epoll_ctl()`, never a new thread.
//! 3. To stop, close (drop) its copy of the listener. Never call `shutdown()` on it: the socket
//!    is shared, and shutting it down would stop it for the parent and every other generation.
//!    Connections not yet accepted stay queued in the kernel for the next generation.
//! 4. On SIGTERM (or SIGINT, or SIGUSR2, einhorn's graceful stop), finish the requests in
//!    flight, answer with `Connection: close`, close idle keep-alive connections, and exit 0.
//! 5. Spread that closing over a short time. Every client whose connection is closed reconnects
//!    at once, to the new generation; closing all of them in the same millisecond makes the new
//!    server accept every client in one burst, and the tail latency of that moment jumps (the
//!    reload benchmark's "Latency after each HUP" table shows it). hello gives each connection
//!    its own moment within `--drain-spread-ms`: until then it keeps serving it as usual, then
//!    answers its next request with `Connection: close`, or closes it if it is idle.

use std::env;
use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
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
                     [--socket NAME] [--drain-spread-ms N] [--threads N] \
                     [--stamp-file PATH]";
/// Default of `--drain-spread-ms`.
const DRAIN_SPREAD: Duration = Duration::from_millis(250);

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
/// Largest `--threads`.
const MAX_THREADS: usize = 256;
/// fd table slots reserved at startup (see `presize_fd_table`).
const FD_TABLE: libc::c_int = 1024;

struct Options {
    startup_delay: Duration,
    bind: Option<String>,
    fd: Option<RawFd>,
    socket: Option<String>,
    stamp_file: Option<String>,
    drain_spread: Duration,
    threads: usize,
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

    // The event loops' epoll sets, set up before the startup delay (see `EventLoop::new`).
    let stop = stop_event().unwrap_or_else(|err| {
        say!("cannot create an eventfd: {err}");
        process::exit(1);
    });
    let loops: Vec<EventLoop> = (0..opts.threads)
        .map(|_| EventLoop::new(&listeners, &stop))
        .collect::<io::Result<_>>()
        .unwrap_or_else(|err| {
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
    let shared = Shared {
        listeners,
        drain: Drain {
            stopping: AtomicBool::new(false),
            since: OnceLock::new(),
            spread: opts.drain_spread,
        },
        accepted: AtomicU64::new(0),
        open: AtomicUsize::new(0),
        loops: opts.threads,
        body,
    };
    serve(shared, loops, &signals, &stop);
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
        threads: thread::available_parallelism().map_or(1, |n| n.get()),
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
            "--threads" => {
                let v = args.next().ok_or("--threads needs a value")?;
                opts.threads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_THREADS).contains(n))
                    .ok_or_else(|| {
                        format!("invalid --threads value {v:?} (a number from 1 to {MAX_THREADS})")
                    })?;
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
/// Growing it later, once the event loop threads share it, makes the `accept()` that needs the
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

/// The `epoll` token of the stop event; a listener's token is its index, a connection's is
/// [`CONN_TOKEN`] plus its index in its loop's table.
const STOP_TOKEN: u64 = u64::MAX;
/// The first connection token.
const CONN_TOKEN: u64 = 1 << 32;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// How often a loop looks at its connections' timers (keep-alive, write and linger timeouts).
const SWEEP: Duration = Duration::from_secs(1);
/// How often, once stopping, a loop looks for connections whose moment to close has come.
const DRAIN_SWEEP: Duration = Duration::from_millis(5);
/// How long accepting pauses after `accept()` failed for lack of resources (e.g. `EMFILE`).
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);
/// How many connections over its share a loop may hold and still accept more.
const BALANCE_SLACK: usize = 4;
/// A response the client does not read for this long is dropped with its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a response with `Connection: close`, how long to wait for the client to close too.
const LINGER: Duration = Duration::from_secs(1);

/// An epoll set and the buffer its events are read into.
struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` was just returned by epoll_create1: open, and owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: libc::c_int, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the call, which copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Adds a listening socket with `EPOLLEXCLUSIVE`: of all the epoll sets (threads, and
    /// generations) waiting on it, the kernel wakes one per connection. The flag can only be
    /// given when a socket is added (`EPOLL_CTL_MOD` rejects it).
    fn add_listener(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let exclusive = libc::EPOLLIN | libc::EPOLLEXCLUSIVE;
        match self.ctl(libc::EPOLL_CTL_ADD, fd, exclusive, token) {
            // A kernel older than 4.5 has no EPOLLEXCLUSIVE: every waiter wakes.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN, token)
            }
            other => other,
        }
    }

    fn remove(&self, fd: RawFd) {
        // Already gone (e.g. accepting was paused) is fine.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits up to `timeout` (forever if `None`); the tokens of what is ready, into `ready`.
    /// An interruption by a signal counts as "nothing ready".
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<u64>) -> io::Result<()> {
        // Round up, so a wait for a deadline 0.5 ms away does not spin until it.
        let ms = timeout.map_or(-1, |t| {
            (t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as libc::c_int
        });
        // SAFETY: `events` is an exclusively borrowed buffer of EVENTS epoll_event entries for
        // the whole call; the kernel writes at most that many.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                ms,
            )
        };
        ready.clear();
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }
        // A by-value read: epoll_event is packed on some architectures.
        ready.extend(self.events[..n as usize].iter().map(|event| event.u64));
        Ok(())
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
    fn until_close(&self, slot: f64, now: Instant) -> Option<Duration> {
        if !self.stopping() {
            return None;
        }
        let since = *self.since.get()?;
        let at = since + self.spread.mul_f64(slot);
        Some(at.saturating_duration_since(now))
    }

    /// Whether the connection with `slot` is to close now.
    fn closing(&self, slot: f64, now: Instant) -> bool {
        self.until_close(slot, now) == Some(Duration::ZERO)
    }
}

/// The moment of the `n`th connection within the drain, in 0..1: the fractional parts of
/// multiples of the golden ratio, which spread any run of consecutive connections evenly.
fn slot(n: u64) -> f64 {
    (n as f64 * 0.618_033_988_749_894_9).fract()
}

/// What the event loops share.
struct Shared {
    listeners: Vec<TcpListener>,
    drain: Drain,
    /// Connections accepted so far, by all loops: the next one's [`slot`].
    accepted: AtomicU64,
    /// Connections open now, in all loops.
    open: AtomicUsize,
    /// How many event loops there are.
    loops: usize,
    body: String,
}

/// Serves until SIGTERM, SIGINT or SIGUSR2, then drains and returns.
///
/// Each of the `loops` runs on its own thread and serves every connection it accepts, from
/// `accept()` to close, without starting anything: when the old generation stops and its
/// clients reconnect, the new one takes them on at the cost of an `accept()` each, in loops that
/// are already running.
fn serve(shared: Shared, loops: Vec<EventLoop>, signals: &SignalPipe, stop: &OwnedFd) {
    thread::scope(|scope| {
        for (index, event_loop) in loops.into_iter().enumerate() {
            let shared = &shared;
            let spawned = thread::Builder::new()
                .name(format!("loop {index}"))
                .spawn_scoped(scope, move || event_loop.run(shared));
            if let Err(err) = spawned {
                say!("cannot start event loop thread {index}: {err}");
                process::exit(1);
            }
        }
        while !signals.wait(None) {}
        let _ = shared.drain.since.set(Instant::now());
        shared.drain.stopping.store(true, Ordering::SeqCst);
        // Every loop has the eventfd in its set, level-triggered and never read: each one sees
        // it until it removes it.
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd we own.
        let written = unsafe { libc::write(stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if written != one.len() as isize {
            say!(
                "cannot signal the event loops: {}",
                io::Error::last_os_error()
            );
            process::exit(1);
        }
    });
    // Only now close our copies of the listeners (the loops left them when they stopped).
    // Connections still queued in the kernel are served by the next generation, which holds the
    // same sockets.
    drop(shared);
}

/// A non-blocking eventfd, for telling the event loops to stop.
fn stop_event() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd: open, and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One thread's share of the server: its own epoll set, with every listening socket (exclusive)
/// and the stop event, and the connections it accepted.
struct EventLoop {
    epoll: Epoll,
    /// The stop event's fd, to remove it once seen.
    stop: RawFd,
}

impl EventLoop {
    /// Set up before the startup delay, so a failure exits before we say we are ready. An
    /// exclusive entry nobody waits on takes no wake-up: the kernel passes it on to a set that
    /// is waited on, e.g. the previous generation's.
    fn new(listeners: &[TcpListener], stop: &OwnedFd) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        for (index, listener) in listeners.iter().enumerate() {
            epoll.add_listener(listener.as_raw_fd(), index as u64)?;
        }
        epoll.ctl(
            libc::EPOLL_CTL_ADD,
            stop.as_raw_fd(),
            libc::EPOLLIN,
            STOP_TOKEN,
        )?;
        Ok(EventLoop {
            epoll,
            stop: stop.as_raw_fd(),
        })
    }

    fn run(mut self, shared: &Shared) {
        let mut conns = Table::default();
        let mut ready = Vec::with_capacity(EVENTS);
        let mut stopped = false;
        // Whether the listeners are in this loop's set.
        let mut listening = true;
        // Accepting paused until then, after accept() failed for lack of resources.
        let mut paused: Option<Instant> = None;
        // This loop's connections as last added to `shared.open`.
        let mut counted = 0;
        let mut next_sweep = Instant::now() + SWEEP;
        while !(stopped && conns.is_empty()) {
            let now = Instant::now();
            let mut wake = next_sweep;
            if let Some(until) = paused {
                wake = wake.min(until);
            }
            // Nothing to time: wait for an event only.
            let timeout = (!conns.is_empty() || paused.is_some())
                .then(|| wake.saturating_duration_since(now));
            if let Err(err) = self.epoll.wait(timeout, &mut ready) {
                say!("epoll_wait: {err}");
                process::exit(1);
            }
            let now = Instant::now();
            // Accept on every listener reported ready before honouring a stop reported in the
            // same wake-up: with EPOLLEXCLUSIVE only we were woken for those connections, so
            // the other generation would not hear of them until another one arrives.
            let mut stop = false;
            for &token in &ready {
                if token == STOP_TOKEN {
                    stop = true;
                } else if token >= CONN_TOKEN {
                    let index = (token - CONN_TOKEN) as usize;
                    if let Some(conn) = conns.get_mut(index) {
                        if !conn.progress(shared, now) {
                            conns.remove(index);
                        }
                    }
                } else if let Some(listener) = shared.listeners.get(token as usize) {
                    if !self.accept(listener, shared, &mut conns, now) {
                        // Out of fds (or memory): stop accepting for a moment, rather than be
                        // woken again at once for the same connection, and again.
                        paused = Some(now + ACCEPT_PAUSE);
                    }
                }
            }
            if stop && !stopped {
                stopped = true;
                self.epoll.remove(self.stop);
                next_sweep = now;
            }
            if paused.is_some_and(|until| now >= until) {
                paused = None;
            }
            if now >= next_sweep {
                conns.retain(|conn| !conn.due(&shared.drain, now) || conn.progress(shared, now));
                next_sweep = now + if stopped { DRAIN_SWEEP } else { SWEEP };
            }

            // Whether to be woken for new connections. Not once stopped: the listeners stay
            // open in the other generations, and connections not yet accepted stay queued for
            // them. Not while accepting is paused. And not while this loop has more than its
            // share of the connections: the kernel wakes the first of the waiting sets in the
            // order they were added, so without this the first loop would take nearly all of
            // them whenever it is idle, e.g. while a new generation takes over.
            let open = conns.len();
            if open > counted {
                shared.open.fetch_add(open - counted, Ordering::Relaxed);
            } else {
                shared.open.fetch_sub(counted - open, Ordering::Relaxed);
            }
            counted = open;
            let share = shared.open.load(Ordering::Relaxed).div_ceil(shared.loops);
            let limit = if listening {
                share + BALANCE_SLACK
            } else {
                share
            };
            let listen = !stopped && paused.is_none() && open <= limit;
            if listen != listening {
                listening = listen;
                for (index, listener) in shared.listeners.iter().enumerate() {
                    let fd = listener.as_raw_fd();
                    if !listen {
                        self.epoll.remove(fd);
                    } else if let Err(err) = self.epoll.add_listener(fd, index as u64) {
                        say!("cannot watch the listener again: {err}");
                        process::exit(1);
                    }
                }
            }
        }
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections from `listener` and serves what they sent;
    /// false if `accept()` failed for lack of resources.
    fn accept(
        &self,
        listener: &TcpListener,
        shared: &Shared,
        conns: &mut Table,
        now: Instant,
    ) -> bool {
        for _ in 0..ACCEPT_BATCH {
            let stream = match listener.accept() {
                Ok((stream, _peer)) => stream,
                // Nothing (left) to accept: another loop or generation was faster.
                Err(err) if err.kind() == ErrorKind::WouldBlock => return true,
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
                    // E.g. out of file descriptors.
                    say!("accept: {err}");
                    return false;
                }
            };
            // Linux does not pass O_NONBLOCK from the listener to accepted sockets.
            if let Err(err) = stream.set_nonblocking(true) {
                say!("connection: {err}");
                continue;
            }
            let slot = slot(shared.accepted.fetch_add(1, Ordering::Relaxed) + 1);
            let index = conns.insert(Conn::new(stream, slot, now));
            let conn = conns.get_mut(index).expect("just inserted");
            // Edge-triggered: `progress` always reads (or writes) until the kernel says
            // EAGAIN before it returns to wait.
            let interest = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
            let added = self.epoll.ctl(
                libc::EPOLL_CTL_ADD,
                conn.stream.as_raw_fd(),
                interest,
                CONN_TOKEN + index as u64,
            );
            if let Err(err) = added {
                say!("cannot watch a connection: {err}");
                conns.remove(index);
                continue;
            }
            // The request may well be there already.
            if !conn.progress(shared, now) {
                conns.remove(index);
            }
        }
        true
    }
}

/// A loop's connections, by index; an index is reused once its connection is closed (closing
/// the socket also removes it from the epoll set, so no event names a closed connection).
#[derive(Default)]
struct Table {
    entries: Vec<Option<Conn>>,
    free: Vec<usize>,
    len: usize,
}

impl Table {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    fn insert(&mut self, conn: Conn) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                self.entries[index] = Some(conn);
                index
            }
            None => {
                self.entries.push(Some(conn));
                self.entries.len() - 1
            }
        }
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Conn> {
        self.entries.get_mut(index)?.as_mut()
    }

    /// Closes the connection at `index`.
    fn remove(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index) {
            if entry.take().is_some() {
                self.len -= 1;
                self.free.push(index);
            }
        }
    }

    /// Keeps the connections for which `keep` is true, closes the others.
    fn retain(&mut self, mut keep: impl FnMut(&mut Conn) -> bool) {
        for index in 0..self.entries.len() {
            if let Some(conn) = &mut self.entries[index] {
                if !keep(conn) {
                    self.remove(index);
                }
            }
        }
    }
}

/// Where a connection is in its request-response cycle.
enum Phase {
    /// Waiting for (the rest of) a request head, since the previous response (or the accept).
    Head { since: Instant },
    /// Discarding `left` more bytes of the request's body before answering it.
    Body {
        left: usize,
        since: Instant,
        request: Request,
    },
    /// Writing `out[at..]`; then closing, if `close`, else waiting for the next request.
    Write {
        out: Vec<u8>,
        at: usize,
        close: bool,
        since: Instant,
    },
    /// We sent FIN after our last response, and read (and drop) whatever still comes until the
    /// client closes too, or `until`. Closing with unread input would send a RST instead, and
    /// the client could lose the response.
    Linger { until: Instant },
}

/// One connection: its socket, the bytes read but not yet used, and where it is.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Its moment to close within the drain, in 0..1 (see [`Drain`]).
    slot: f64,
    /// Requests answered so far.
    served: u64,
    /// When its moment to close came, while a request was still arriving.
    stop_seen: Option<Instant>,
    phase: Phase,
}

/// What a connection should do next, after one step of [`Conn::step`].
enum Step {
    /// Take another step: there is more to do now.
    Again,
    /// Wait for the socket (the kernel said EAGAIN) or a timer.
    Wait,
    /// Close the connection.
    Close,
}

impl Conn {
    fn new(stream: TcpStream, slot: f64, now: Instant) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
            slot,
            served: 0,
            stop_seen: None,
            phase: Phase::Head { since: now },
        }
    }

    /// Moves the connection on as far as the socket allows; false once it is to be closed.
    fn progress(&mut self, shared: &Shared, now: Instant) -> bool {
        loop {
            let step = match self.step(shared, now) {
                Ok(step) => step,
                Err(err) => {
                    if !is_disconnect(&err) {
                        say!("connection: {err}");
                    }
                    Step::Close
                }
            };
            match step {
                Step::Again => {}
                Step::Wait => return true,
                Step::Close => return false,
            }
        }
    }

    /// Whether a timer of the connection has run out, so that [`Conn::progress`] has something
    /// to do without an event from the socket.
    fn due(&self, drain: &Drain, now: Instant) -> bool {
        match &self.phase {
            Phase::Head { since } => match drain.until_close(self.slot, now) {
                Some(left) => {
                    left.is_zero()
                        && self
                            .stop_seen
                            .is_none_or(|seen| now.duration_since(seen) >= IDLE_GRACE)
                }
                None => self.buf.is_empty() && now.duration_since(*since) > KEEP_ALIVE_TIMEOUT,
            },
            Phase::Body { since, .. } => {
                drain.stopping() && now.duration_since(*since) > STOP_GRACE
            }
            Phase::Write { since, .. } => now.duration_since(*since) > WRITE_TIMEOUT,
            Phase::Linger { until } => now >= *until,
        }
    }

    fn step(&mut self, shared: &Shared, now: Instant) -> io::Result<Step> {
        let drain = &shared.drain;
        match &mut self.phase {
            Phase::Head { since } => {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head_len = end + 4;
                    let request = match parse_head(&self.buf[..head_len]) {
                        Ok(request) => request,
                        Err(status) => {
                            self.respond(status, "", false, true, now);
                            return Ok(Step::Again);
                        }
                    };
                    self.buf.drain(..head_len);
                    let have = self.buf.len().min(request.content_length);
                    self.buf.drain(..have);
                    self.phase = Phase::Body {
                        left: request.content_length - have,
                        since: now,
                        request,
                    };
                    return Ok(Step::Again);
                }
                if self.buf.len() > MAX_HEAD {
                    let status = "431 Request Header Fields Too Large";
                    self.respond(status, "", false, true, now);
                    return Ok(Step::Again);
                }
                match drain.until_close(self.slot, now) {
                    // Our moment to close has come. A request on its way (or the first one of
                    // the connection, in flight since we accepted it): give it time to arrive,
                    // and answer it with `Connection: close`. Idle: wait IDLE_GRACE for a next
                    // request all the same, then close. A busy client almost always sends one
                    // within it, and gets a clean `Connection: close`; closing at once would
                    // race with the request it may be sending right then, which it would then
                    // have to send again on a new connection.
                    Some(left) if left.is_zero() => {
                        let waited = now.duration_since(*self.stop_seen.get_or_insert(now));
                        let idle = self.buf.is_empty() && self.served > 0;
                        if (idle && waited >= IDLE_GRACE) || waited > STOP_GRACE {
                            return self.linger(now);
                        }
                    }
                    Some(_) => {}
                    None => {
                        let idle_for = now.duration_since(*since);
                        if self.buf.is_empty() && idle_for > KEEP_ALIVE_TIMEOUT {
                            return self.linger(now);
                        }
                    }
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk) {
                    // Client closed. Close like after a response: FIN first (see Linger).
                    Ok(0) => self.linger(now),
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        Ok(Step::Again)
                    }
                    Err(err) => would_block(err),
                }
            }
            Phase::Body {
                left,
                since,
                request,
            } => {
                if *left == 0 {
                    let close = !request.keep_alive || drain.closing(self.slot, now);
                    let head_only = request.head_only;
                    self.respond("200 OK", &shared.body, head_only, close, now);
                    return Ok(Step::Again);
                }
                if drain.stopping() && now.duration_since(*since) > STOP_GRACE {
                    return Ok(Step::Close);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk) {
                    Ok(0) => Ok(Step::Close),
                    Ok(n) => {
                        let body = n.min(*left);
                        *left -= body;
                        // Whatever follows the body is the next request's.
                        self.buf.extend_from_slice(&chunk[body..n]);
                        Ok(Step::Again)
                    }
                    Err(err) => would_block(err),
                }
            }
            Phase::Write {
                out,
                at,
                close,
                since,
            } => {
                if *at == out.len() {
                    if *close {
                        return self.linger(now);
                    }
                    self.served += 1;
                    self.stop_seen = None;
                    self.phase = Phase::Head { since: now };
                    return Ok(Step::Again);
                }
                match self.stream.write(&out[*at..]) {
                    Ok(n) => {
                        *at += n;
                        Ok(Step::Again)
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        if now.duration_since(*since) > WRITE_TIMEOUT {
                            return Ok(Step::Close);
                        }
                        Ok(Step::Wait)
                    }
                    Err(err) => would_block(err),
                }
            }
            Phase::Linger { until } => {
                let mut sink = [0u8; 1024];
                match self.stream.read(&mut sink) {
                    Ok(0) => Ok(Step::Close),
                    Ok(_) => Ok(Step::Again),
                    Err(err) if err.kind() == ErrorKind::WouldBlock && now >= *until => {
                        Ok(Step::Close)
                    }
                    Err(err) => would_block(err),
                }
            }
        }
    }

    /// Starts writing a response.
    fn respond(&mut self, status: &str, body: &str, head_only: bool, close: bool, now: Instant) {
        self.phase = Phase::Write {
            out: response(status, body, head_only, close),
            at: 0,
            close,
            since: now,
        };
    }

    /// Sends FIN and starts lingering (see [`Phase::Linger`]).
    fn linger(&mut self, now: Instant) -> io::Result<Step> {
        self.stream.shutdown(Shutdown::Write)?;
        self.phase = Phase::Linger {
            until: now + LINGER,
        };
        Ok(Step::Again)
    }
}

/// `EAGAIN` means wait for the socket; `EINTR` means try again; anything else is an error.
fn would_block(err: io::Error) -> io::Result<Step> {
    match err.kind() {
        ErrorKind::WouldBlock => Ok(Step::Wait),
        ErrorKind::Interrupted => Ok(Step::Again),
        _ => Err(err),
    }
}
/// A parsed request head: only what the server needs to answer it.
struct Request {
    head_only: bool,
    keep_alive: bool,
    content_length: usize,
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

/// A whole response, ready to write.
fn response(status: &str, body: &str, head_only: bool, close: bool) -> Vec<u8> {
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
    response.into_bytes()
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
