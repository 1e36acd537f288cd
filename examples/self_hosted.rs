//! `self_hosted`: an HTTP server that is its own master ([`relaunch::host`]).
//!
//! ```text
//! cargo build --example self_hosted
//! cp target/debug/examples/self_hosted /tmp/app && /tmp/app --listen 127.0.0.1:8080 &
//! curl http://127.0.0.1:8080/              # pid=4243 (a child; the master is 4242)
//! cp target/debug/examples/self_hosted /tmp/app.new && mv /tmp/app.new /tmp/app
//! kill -HUP 4242                           # the new build answers; no request fails
//! ```
//!
//! The first run is the master: it binds `--listen ADDR` (default `127.0.0.1:8080`), keeps
//! its pid, and runs this same program as a child with the socket; SIGHUP starts the binary
//! now at the program's path as a new generation, which says `READY=1` once it serves, and
//! only then stops the old one. SIGTERM stops everything. Every request (any method, any
//! path) is answered `200 OK` with the body `pid=<pid of the child that answered>`, on a
//! connection closed after the answer.
//!
//! Options:
//!
//! * `--listen ADDR`: the address, as relaunch's `--listen` takes it.
//! * `--background PIDFILE`: run the master in the background with its pid in PIDFILE; the
//!   command returns once the first generation serves (exit 0), or fails with the reason.
//! * `--log FILE`: in the background, the children's output and the master's log go to FILE.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use relaunch::config::ReadyMode;
use relaunch::host::{self, SelfHost};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR2};

const USAGE: &str = "usage: self_hosted [--listen ADDR] [--background PIDFILE [--log FILE]]";
/// How long a connection may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

struct Options {
    listen: String,
    background: Option<PathBuf>,
    log: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        listen: "127.0.0.1:8080".into(),
        background: None,
        log: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => options.listen = value()?,
            "--background" => options.background = Some(value()?.into()),
            "--log" => options.log = Some(value()?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

fn main() {
    let options = parse_args().unwrap_or_else(|msg| {
        eprintln!("self_hosted: {msg}\n{USAGE}");
        process::exit(2);
    });
    let mut host = SelfHost::new("self_hosted")
        .listen(&format!("http={}", options.listen))
        .ready(ReadyMode::Notify);
    if let Some(pid_file) = options.background {
        host = host.background(pid_file);
        if let Some(log) = options.log {
            host = host.main(|p| {
                p.output(|o| {
                    o.stdout_log = Some(log);
                    o.redirect_stderr = true;
                })
            });
        }
    }
    // The master runs in here until it stops (then the process exits with its code); a
    // generation gets its sockets and goes on.
    let mut sockets = match host::self_host(host) {
        Ok(hosted) => hosted.serve_or_exit(),
        Err(e) => e.exit(),
    };
    let listener = sockets.tcp_listener("http").unwrap_or_else(|e| {
        eprintln!("self_hosted: {e}");
        process::exit(2);
    });
    let stop = stop_pipe().unwrap_or_else(|e| {
        eprintln!("self_hosted: cannot set up signal handling: {e}");
        process::exit(1);
    });
    if let Err(e) = relaunch::child::ready() {
        eprintln!("self_hosted: cannot say READY=1: {e}");
        process::exit(1);
    }
    if let Err(e) = serve(listener, &stop) {
        eprintln!("self_hosted: {e}");
        process::exit(1);
    }
}

/// A pipe that becomes readable on SIGTERM, SIGINT or SIGUSR2.
fn stop_pipe() -> io::Result<UnixStream> {
    let (read, write) = UnixStream::pair()?;
    for signal in [SIGTERM, SIGINT, SIGUSR2] {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok(read)
}

/// Answers connections until asked to stop, then finishes the ones accepted and returns. The
/// listener is only dropped, never shut down: the master and the other generation share it,
/// and the connections not yet accepted wait in it for the next generation.
fn serve(listener: TcpListener, stop: &UnixStream) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if fds[1].any().unwrap_or(false) {
            break;
        }
        // Another generation may have taken the connection first: WouldBlock is normal.
        loop {
            match listener.accept() {
                Ok((stream, _)) => running.push(thread::spawn(move || answer(stream))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of fds, say: report it and let the others serve a moment.
                    eprintln!("self_hosted: accept: {e}");
                    thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
        running.retain(|t| !t.is_finished());
    }
    drop(listener);
    for t in running {
        let _ = t.join();
    }
    Ok(())
}

/// Reads one request head and answers `pid=N`.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > MAX_HEAD {
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let body = format!("pid={}", process::id());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
