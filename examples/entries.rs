//! `entries`: one binary, two supervised programs, frigate-style named entry points
//! ([`relaunch::entry`]).
//!
//! ```text
//! cargo build --example entries
//! target/debug/examples/entries --listen 127.0.0.1:8080 --jobs-file /tmp/jobs.log
//! curl http://127.0.0.1:8080/          # pid=4243 entry=web
//! ```
//!
//! The first run is the master (it keeps its pid and holds the socket); it runs this same
//! binary twice, as two programs of its own:
//!
//! - `web`: an HTTP server on `--listen ADDR` (default `127.0.0.1:8080`) answering every
//!   request with `pid=<pid> entry=web`;
//! - `jobs`: a job runner without sockets, which appends `pid=<pid> tick=N` to
//!   `--jobs-file FILE` (if given) twice a second.
//!
//! Each says `READY=1` once it works; each is restarted on its own when it crashes, and SIGHUP
//! reloads both (the job runner with no sockets is simply replaced once its successor is up).
//! `relaunch status entries` lists them.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use relaunch::child::Sockets;
use relaunch::config::ReadyMode;
use relaunch::host::{self, HostedProgram, SelfHost};
use signal_hook::consts::{SIGINT, SIGTERM};

const USAGE: &str = "usage: entries [--listen ADDR] [--jobs-file FILE]";

/// The command line: the same for the master and both entry points.
struct Options {
    listen: String,
    jobs_file: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        listen: "127.0.0.1:8080".into(),
        jobs_file: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => options.listen = value()?,
            "--jobs-file" => options.jobs_file = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

fn main() {
    let options = parse_args().unwrap_or_else(|msg| {
        eprintln!("entries: {msg}\n{USAGE}");
        process::exit(2);
    });
    // In a child started for an entry point, these run it and exit; otherwise they return.
    relaunch::entry("web", web);
    relaunch::entry("jobs", |sockets| {
        jobs(sockets, options.jobs_file.as_deref())
    });
    let host = SelfHost::new("entries")
        .entry(
            HostedProgram::entry("web")
                .listen(&format!("http={}", options.listen))
                .ready(ReadyMode::Notify)
                .priority(10),
        )
        .entry(
            HostedProgram::entry("jobs")
                .ready(ReadyMode::Notify)
                .priority(20),
        );
    match host::self_host(host) {
        Ok(done) => process::exit(done.exit_code()),
        Err(e) => e.exit(),
    }
}

/// Set by SIGTERM or SIGINT (the job runner looks at it between jobs).
fn stop_flag() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// The `web` entry point: answers `pid=N entry=web` until SIGTERM, then finishes the
/// requests in flight.
fn web(mut sockets: Sockets) -> io::Result<()> {
    let listener = sockets.tcp_listener("http").map_err(io::Error::other)?;
    let (stop, wake) = UnixStream::pair()?;
    for signal in [SIGTERM, SIGINT] {
        signal_hook::low_level::pipe::register(signal, wake.try_clone()?)?;
    }
    relaunch::child::ready().map_err(io::Error::other)?;
    listener.set_nonblocking(true)?;
    let mut running = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[1].any().unwrap_or(false) {
            break;
        }
        // Another generation may have taken the connection first: WouldBlock is normal.
        match listener.accept() {
            Ok((stream, _)) => running.push(thread::spawn(move || answer(stream))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        running.retain(|t: &thread::JoinHandle<()>| !t.is_finished());
    }
    drop(listener);
    for t in running {
        let _ = t.join();
    }
    Ok(())
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let body = format!("pid={} entry=web", process::id());
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The `jobs` entry point: a tick twice a second until SIGTERM.
fn jobs(_sockets: Sockets, file: Option<&str>) -> io::Result<()> {
    let stop = stop_flag()?;
    relaunch::child::ready().map_err(io::Error::other)?;
    let mut tick = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick += 1;
        if let Some(path) = file {
            let mut out = OpenOptions::new().create(true).append(true).open(path)?;
            writeln!(out, "pid={} tick={tick}", process::id())?;
        }
        thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}
