//! The control socket: `relaunch status | reload --wait | stop | signal` talk to a running
//! master through it.
//!
//! # Where it lives
//! `--control PATH`, or by default `<dir>/<name>.sock` ([`default_path`]) where `<dir>` is
//! `$RELAUNCH_CONTROL_DIR` if set, else `$XDG_RUNTIME_DIR/relaunch`, else `/run/relaunch` for
//! root, else the path of `--pid-file` with its extension replaced by `.sock`, else
//! `$TMPDIR/relaunch-<uid>`. A missing directory is created with mode 0700; an existing one is
//! left as it is (relaunch never chmods a shared directory), except that the temp-dir fallback
//! must be owned by the user and closed to others. The socket is created with mode 0600 by
//! `bind` itself (the mode is set on the socket's fd first; no chmod by name, which would
//! follow a symlink swapped in, and no umask change), and checked with
//! `fstatat(AT_SYMLINK_NOFOLLOW)`. A socket file left behind by a
//! relaunch that died is replaced; one that answers (or whose backlog is full: the check's
//! `connect` never blocks) belongs to a running relaunch. Starting a second one with the same
//! explicit `--name` or `--control` then fails with exit code 1; without either, the default
//! name (the program's file name) gets the first free suffix `-2`, `-3`, … and the choice is
//! logged. The file is removed when relaunch exits.
//!
//! # Who may use it
//! Every connection's peer is checked with `SO_PEERCRED`: only relaunch's own uid and root
//! are served; anyone else gets one error line and is disconnected.
//!
//! # Protocol (version 1)
//! One JSON object per line each way ([`Request`], [`Response`]). Requests:
//! `{"v":1,"cmd":"status"}`, `{"v":1,"cmd":"reload","wait":true}`,
//! `{"v":1,"cmd":"stop","wait":true}`, `{"v":1,"cmd":"signal","signal":"USR1"}`. A
//! connection may send several requests; each gets one answer line, in order. `reload` with
//! `wait` answers when the reload attempt that will carry the request ends: the one it started,
//! or, when a reload was already in progress, the coalesced follow-up (not the attempt in
//! progress, which was started before the request and may not include what it asked for).
//!
//! # Never blocking the master
//! Everything runs in the master's one thread ([`Control`] is driven by the runtime's poll
//! loop): sockets are non-blocking; a request line is at most [`MAX_REQUEST`] bytes; each
//! wake-up reads at most that much per connection; answers a client does not read are
//! buffered up to [`MAX_OUTPUT`] bytes; a connection that sends no complete request within
//! [`IDLE_TIMEOUT`] (or does not read its answer in that time) is closed; at most
//! [`MAX_CLIENTS`] connections are served at once, and when all are taken a new one evicts
//! the idle connection with the least claim to its slot (so that clients which keep their
//! connections open cannot lock others out); when `accept` runs out of fds, the listener is
//! left out of `poll` for a moment ([`crate::accept`]) rather than spin. The deadlines are
//! folded into the loop's `poll` timeout, so an idle master still makes no wake-ups.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::fcntl::AtFlags;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::accept::AcceptPause;
use crate::cli::parse_signal;
use crate::conn::{Conn, ReadState};
pub use crate::locate::{
    default_path, parse_name, probe, program_name, socket_next_to, suffixed, PathEnv, Probe,
    CONTROL_DIR_VAR, MAX_NAME, MAX_SUFFIX,
};
use crate::metrics::{MetricsAddr, MetricsServer};
use crate::sockets::Listener;
use crate::status::{Clock, ReloadRecord, SocketRecord, StatusRecord, Tracker};
use crate::supervisor::{Action, Event, SpawnFailure, Supervisor, Trigger};

/// The protocol version this relaunch speaks.
pub const PROTOCOL: u32 = 1;
/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The most answer bytes buffered for a client that does not read them.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// How long a connection may stay without sending a complete request (or without reading its
/// answer) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once.
pub const MAX_CLIENTS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Configuration and paths

/// The master's control-plane settings (`--name`, `--control`, `--no-control`, `--metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The control socket's path; `None` with `--no-control`.
    pub socket: Option<PathBuf>,
    /// Whether `socket` is the default path rather than `--control` (the default's directory
    /// gets extra checks).
    pub default_path: bool,
    /// Whether the name is the default one too (no `--name`): when a running relaunch already
    /// has it, this one takes the first free `<name>-2`, `<name>-3`, … instead of failing.
    pub default_name: bool,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<MetricsAddr>,
}

// ---------------------------------------------------------------------------------------------
// Protocol

/// A request line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// `status`, `reload`, `stop` or `signal`.
    #[serde(default)]
    pub cmd: String,
    /// `reload`, `stop`: answer only when done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// `signal`: the signal, by name or number (`USR1`, `SIGUSR1`, `10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

impl Request {
    /// A version-1 request for `cmd`.
    pub fn new(cmd: &str) -> Request {
        Request {
            v: Some(PROTOCOL),
            cmd: cmd.into(),
            ..Request::default()
        }
    }
}

/// An answer line. `ok` says whether the request did what it asked (for `reload` with `wait`:
/// whether the reload succeeded); `error` says why not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    /// The protocol version: 1.
    pub v: u32,
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `status`: the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRecord>,
    /// `reload` without `wait`: what happened to the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
    /// `reload` with `wait`: the outcome of the attempt that carried the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadRecord>,
    /// `stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopReply>,
    /// `signal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalReply>,
}

impl Response {
    /// A failed answer.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            v: PROTOCOL,
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }

    fn ok() -> Response {
        Response {
            v: PROTOCOL,
            ok: true,
            ..Response::default()
        }
    }

    /// The answer as one line, with its newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            format!(r#"{{"v":1,"ok":false,"error":"cannot encode the answer: {e}"}}"#).into_bytes()
        });
        line.push(b'\n');
        line
    }
}

/// What happened to a `reload` request without `wait`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Accepted {
    /// It started a new attempt: its generation.
    pub generation: Option<u64>,
    /// It was coalesced into the follow-up of the reload in progress.
    pub queued: bool,
}

/// The answer to `stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopReply {
    /// With `wait`: the code relaunch exits with (the last child's status). Without: `null`
    /// (the stop has begun).
    pub exit_code: Option<i32>,
}

/// The answer to `signal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignalReply {
    /// The signal sent, e.g. `SIGUSR1`.
    pub signal: String,
    /// The generation it was sent to (the current one).
    pub generation: u64,
    /// Its pid.
    pub pid: i32,
}

// ---------------------------------------------------------------------------------------------
// Reload waiters

/// Which reload attempt a request will get the outcome of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The attempt it started, with this generation.
    Attempt(u64),
    /// The follow-up queued behind the reload in progress.
    FollowUp,
    /// None: the supervisor did not take the request (relaunch is stopping).
    Refused,
}

/// Maps `reload --wait` callers to the attempt whose [`Action::ReloadDone`] answers them.
///
/// A request handled while no reload is in progress starts an attempt, and waits for that
/// one. A request handled while one is in progress is coalesced into the queued follow-up,
/// whose generation is not known yet: it waits in `follow_up` until the supervisor starts the
/// follow-up (seen after any step as `reload_queued()` turning false with `reloading()` set),
/// and then for that attempt. If the follow-up is dropped instead (relaunch began to stop),
/// its waiters are failed. Pure: tested against the real supervisor.
#[derive(Debug, Clone)]
pub struct ReloadWaiters<T> {
    bound: Vec<(u64, T)>,
    follow_up: Vec<T>,
}

impl<T> Default for ReloadWaiters<T> {
    fn default() -> Self {
        ReloadWaiters {
            bound: Vec::new(),
            follow_up: Vec::new(),
        }
    }
}

impl<T: PartialEq> ReloadWaiters<T> {
    /// Where a reload request went, read from the supervisor right after it handled the
    /// request.
    pub fn classify(sup: &Supervisor) -> Joined {
        if sup.reload_queued() {
            Joined::FollowUp
        } else if let Some((generation, _)) = sup.reloading() {
            Joined::Attempt(generation)
        } else {
            Joined::Refused
        }
    }

    /// Registers `token` as waiting for the attempt `joined` names.
    pub fn join(&mut self, token: T, joined: Joined) {
        match joined {
            Joined::Attempt(generation) => self.bound.push((generation, token)),
            Joined::FollowUp => self.follow_up.push(token),
            Joined::Refused => {}
        }
    }

    /// Call after every step of the supervisor. Binds the follow-up's waiters once it has
    /// started; returns the waiters of a follow-up that was dropped.
    pub fn after(&mut self, sup: &Supervisor) -> Vec<T> {
        if self.follow_up.is_empty() || sup.reload_queued() {
            return Vec::new();
        }
        match sup.reloading() {
            Some((generation, _)) => {
                let waiting = std::mem::take(&mut self.follow_up);
                self.bound
                    .extend(waiting.into_iter().map(|t| (generation, t)));
                Vec::new()
            }
            None => std::mem::take(&mut self.follow_up),
        }
    }

    /// The waiters of the attempt `generation`, which just ended.
    pub fn done(&mut self, generation: u64) -> Vec<T> {
        let (done, rest) = std::mem::take(&mut self.bound)
            .into_iter()
            .partition(|(g, _)| *g == generation);
        self.bound = rest;
        done.into_iter().map(|(_, t)| t).collect()
    }

    /// Forgets a waiter (its client went away).
    pub fn forget(&mut self, token: &T) {
        self.bound.retain(|(_, t)| t != token);
        self.follow_up.retain(|t| t != token);
    }

    /// Every waiter, removed.
    pub fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = std::mem::take(&mut self.bound)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        all.append(&mut self.follow_up);
        all
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.bound.len() + self.follow_up.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// The socket

/// Why the control socket could not be set up.
#[derive(Debug)]
pub enum BindError {
    /// Another relaunch answers on that path.
    InUse(PathBuf),
    /// Anything else, with its context.
    Other(anyhow::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse(path) => write!(
                f,
                "another relaunch is already running with the control socket {} (same --name?); \
                 stop it, or give this one another --name or --control",
                path.display()
            ),
            BindError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BindError {}

/// What a connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Reload,
    Stop,
}

/// One control connection.
#[derive(Debug)]
struct Client {
    id: u64,
    conn: Conn<UnixStream>,
    waiting: Option<Waiting>,
    /// The peer closed both directions: what it sent is still served, nothing is answered.
    hung_up: bool,
    /// How many answers it was sent.
    answered: u64,
}

/// The listening control socket and its connections.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created: only that file is removed on drop.
    identity: Option<(u64, u64)>,
    clients: Vec<Client>,
    next_id: u64,
    euid: u32,
    /// Set while `accept` fails for lack of fds: the listener is then not polled.
    pause: AcceptPause,
    /// Connections closed to make room for new ones, not yet reported as gone.
    evicted: Vec<u64>,
}

impl ControlServer {
    /// Binds the control socket at `path` (see the module docs). `default_dir`: the path is
    /// the default one, whose directory must be safe to use.
    pub fn bind(path: &Path, default_dir: bool) -> Result<ControlServer, BindError> {
        // Absolute, for the status record and the removal on exit.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let env = PathEnv::current();
        let other = |e: anyhow::Error| BindError::Other(e);
        if path.as_os_str().len() > 107 {
            return Err(other(anyhow!(
                "control socket path {} is {} bytes long; unix socket paths are limited to 107 bytes (use a shorter --control)",
                path.display(),
                path.as_os_str().len()
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            prepare_dir(dir, default_dir && dir == env.temp_fallback(), env.euid).map_err(other)?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(other(anyhow!(
                    "{} exists and is not a socket; refusing to replace it (remove it, or use another --control)",
                    path.display()
                )))
            }
            Ok(_) => match probe(path) {
                Ok(Probe::Answers(_) | Probe::Busy) => return Err(BindError::InUse(path.to_owned())),
                Ok(Probe::Stale) => {
                    info!(path = %path.display(), "removing a stale control socket");
                    fs::remove_file(path)
                        .with_context(|| format!("removing the stale socket {}", path.display()))
                        .map_err(other)?;
                }
                Ok(Probe::Missing) => {}
                Err(e) => {
                    return Err(other(anyhow!(
                        "checking the existing control socket {}: {e}",
                        path.display()
                    )))
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(other(anyhow!(
                    "checking the control socket path {}: {e}",
                    path.display()
                )))
            }
        }
        let listener = bind_private(path)
            .with_context(|| format!("binding the control socket {}", path.display()))
            .map_err(other)?;
        let identity = match verify_socket_file(path, env.euid)
            .and_then(|id| listener.set_nonblocking(true).map(|()| id))
        {
            Ok(identity) => Some(identity),
            Err(e) => {
                // Only unlink what is still a socket (unlink never follows a link anyway).
                if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = fs::remove_file(path);
                }
                return Err(other(anyhow!(
                    "setting up the control socket {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            identity,
            clients: Vec::new(),
            next_id: 1,
            euid: env.euid,
            pause: AcceptPause::new("control socket"),
            evicted: Vec::new(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        fds.push(PollFd::new(self.listener.as_fd(), self.pause.interest()));
        for c in &self.clients {
            // Read on while the input may still be one request line (so that a longer one is
            // seen, answered and closed); a client pipelining requests behind one that waits
            // is not read from until that one is answered.
            let want_input = c.waiting.is_none() && c.conn.input().len() <= MAX_REQUEST;
            fds.push(PollFd::new(
                c.conn.stream.as_fd(),
                c.conn.interest(want_input),
            ));
        }
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let has_work = self
            .clients
            .iter()
            .any(|c| c.waiting.is_none() && !c.conn.closing && c.conn.input().contains(&b'\n'));
        if has_work {
            return Some(now);
        }
        let clients = self.clients.iter().filter_map(|c| c.conn.deadline).min();
        clients.into_iter().chain(self.pause.deadline()).min()
    }

    /// Accepts, reads and writes as `poll` found possible (`revents` in the order of
    /// `poll_fds`), closes what is finished, broken or expired, and returns the forgotten
    /// connections (so their waits can be dropped) and the requests to serve: at most one per
    /// connection per call, in order.
    fn io(&mut self, revents: &[PollFlags], now: Instant) -> (Vec<u64>, Vec<(u64, Request)>) {
        let bad = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        for (i, c) in self.clients.iter_mut().enumerate() {
            let Some(&ev) = revents.get(i + 1) else {
                continue;
            };
            if ev.intersects(bad) {
                // The peer is gone entirely: it can read no answer, but a request it sent
                // before closing (`echo '{"v":1,"cmd":"reload"}' | nc -U ...`) still counts.
                let _ = c.conn.read(MAX_REQUEST, MAX_REQUEST);
                c.hung_up = true;
                continue;
            }
            if ev.contains(PollFlags::POLLOUT) && c.conn.flush().is_err() {
                c.conn.deadline = Some(now);
                c.conn.closing = true;
            }
            if ev.contains(PollFlags::POLLIN) {
                match c.conn.read(MAX_REQUEST, MAX_REQUEST) {
                    ReadState::Open | ReadState::Eof => {}
                    ReadState::Overflow => {
                        c.conn.clear_input();
                        let line = Response::error(format!(
                            "request line longer than {MAX_REQUEST} bytes; closing"
                        ))
                        .to_line();
                        let _ = c.conn.send(&line);
                        c.conn.closing = true;
                        c.conn.deadline = Some(now + IDLE_TIMEOUT);
                    }
                    ReadState::Failed => {
                        c.conn.closing = true;
                        c.conn.deadline = Some(now);
                    }
                }
            }
        }
        let readable = revents
            .first()
            .is_some_and(|ev| ev.contains(PollFlags::POLLIN));
        if self.pause.should_accept(readable, now) {
            self.accept(now);
        }
        // Requests: at most one valid request per connection per call (the next ones wait
        // for its answer), and at most LINES lines.
        const LINES: usize = 256;
        let mut requests = Vec::new();
        for c in &mut self.clients {
            if c.hung_up {
                if c.waiting.is_none() && !c.conn.closing {
                    // Serve what it sent, as requests that wait for nothing.
                    for line in std::iter::from_fn(|| c.conn.take_line()).take(LINES) {
                        if let Ok(mut request) = parse_request(&line) {
                            request.wait = false;
                            requests.push((c.id, request));
                        }
                    }
                }
                c.waiting = None;
                c.conn.closing = true;
                c.conn.deadline = Some(now);
                continue;
            }
            if c.waiting.is_some() || c.conn.closing {
                continue;
            }
            for _ in 0..LINES {
                let Some(line) = c.conn.take_line() else {
                    if c.conn.eof {
                        // Half-closed, and everything it sent is answered.
                        c.conn.closing = true;
                        c.conn.deadline = Some(now + IDLE_TIMEOUT);
                    }
                    break;
                };
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match parse_request(&line) {
                    Ok(request) => {
                        c.conn.deadline = None;
                        requests.push((c.id, request));
                        break;
                    }
                    Err(message) => {
                        if c.conn.send(&Response::error(message).to_line()).is_err()
                            || c.conn.unsent() > MAX_OUTPUT
                        {
                            c.conn.closing = true;
                            c.conn.deadline = Some(now);
                            break;
                        }
                        c.conn.deadline = Some(now + IDLE_TIMEOUT);
                    }
                }
            }
        }
        let gone = self.sweep(now);
        (gone, requests)
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => {
                    self.pause.accepted(now);
                    stream
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if AcceptPause::is_fd_shortage(&e) => {
                    // The connection stays queued and the listener readable: stop polling it
                    // for a while rather than spin.
                    self.pause.failed(&e, now);
                    return;
                }
                Err(e) => {
                    // A connection that failed on its own (ECONNABORTED and the like): it is
                    // off the queue; the next wake-up goes on.
                    warn!(error = %e, "control socket: accept failed");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let mut conn = Conn::new(stream, Some(now + IDLE_TIMEOUT));
            let creds = getsockopt(&conn.stream, sockopt::PeerCredentials);
            let refusal = match creds {
                Ok(c) if c.uid() == self.euid || c.uid() == 0 => None,
                Ok(c) => Some(format!(
                    "permission denied: uid {} may not use this control socket (only uid {} and root may)",
                    c.uid(),
                    self.euid
                )),
                Err(e) => Some(format!("cannot check the peer's credentials: {e}")),
            };
            if let Some(why) = refusal {
                let pid = creds.map(|c| c.pid()).unwrap_or(0);
                warn!(peer_pid = pid, "control socket: refused a client: {why}");
                let _ = conn.send(&Response::error(why).to_line());
                // Best effort: the line fits in an empty socket buffer.
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS && !self.evict_one() {
                let _ = conn.send(
                    &Response::error(format!(
                        "too many control connections (at most {MAX_CLIENTS}, all waiting on a reload or stop); try again"
                    ))
                    .to_line(),
                );
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            debug!(client = id, "control connection");
            self.clients.push(Client {
                id,
                conn,
                waiting: None,
                hung_up: false,
                answered: 0,
            });
        }
    }

    /// Every slot is taken and a new client knocks: closes the connection that has the least
    /// claim to its slot, so that clients that keep a connection open (even one that keeps
    /// asking for `status`, which resets its deadline each time) cannot lock others out.
    /// Connections waiting on a reload or stop, and those with a request to be served, are
    /// kept. Among the rest, one already closing goes first, then one that has been answered
    /// at least once (it got what it came for), oldest first; a new connection that has not
    /// sent its request yet goes last. Returns whether a slot was freed.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.waiting.is_none() && !c.hung_up && !c.conn.input().contains(&b'\n'))
            .min_by_key(|(_, c)| (!c.conn.closing, c.answered == 0, c.id))
            .map(|(i, _)| i);
        let Some(i) = victim else {
            return false;
        };
        let mut c = self.clients.remove(i);
        debug!(client = c.id, "control connection evicted to make room");
        if !c.conn.closing {
            // Best effort: an idle connection's socket buffer has room for one line.
            let _ = c.conn.send(
                &Response::error(format!(
                    "connection closed to make room for a new one (all {MAX_CLIENTS} control connections were in use); reconnect"
                ))
                .to_line(),
            );
        }
        self.evicted.push(c.id);
        true
    }

    /// Drops finished, broken and expired connections; returns their ids.
    fn sweep(&mut self, now: Instant) -> Vec<u64> {
        let mut gone = std::mem::take(&mut self.evicted);
        self.clients.retain(|c| {
            let keep = !(c.conn.done()
                || c.conn.expired(now)
                || (c.conn.closing && c.conn.unsent() > MAX_OUTPUT));
            if !keep {
                debug!(client = c.id, "control connection closed");
                gone.push(c.id);
            }
            keep
        });
        if !gone.is_empty() {
            // An fd was freed: a paused accept may succeed now.
            self.pause.fd_freed();
        }
        gone
    }

    fn client(&mut self, id: u64) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.id == id)
    }

    /// Sends `response` to connection `id` (if it is still there) and ends its wait.
    fn reply(&mut self, id: u64, response: &Response, now: Instant) {
        let Some(c) = self.client(id) else {
            return;
        };
        c.waiting = None;
        c.answered += 1;
        if c.conn.send(&response.to_line()).is_err() || c.conn.unsent() > MAX_OUTPUT {
            c.conn.closing = true;
            c.conn.deadline = Some(now);
        } else if c.conn.eof && !c.conn.input().contains(&b'\n') {
            // Half-closed and answered: close as soon as the answer is out (the deadline
            // wakes the loop at once if it already is).
            c.conn.closing = true;
            c.conn.deadline = Some(if c.conn.unsent() == 0 {
                now
            } else {
                now + IDLE_TIMEOUT
            });
        } else {
            c.conn.deadline = Some(now + IDLE_TIMEOUT);
        }
    }

    fn wait(&mut self, id: u64, what: Waiting) {
        if let Some(c) = self.client(id) {
            c.waiting = Some(what);
            c.conn.deadline = None;
        }
    }

    fn waiting_for(&self, what: Waiting) -> Vec<u64> {
        self.clients
            .iter()
            .filter(|c| c.waiting == Some(what))
            .map(|c| c.id)
            .collect()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Remove the socket file only if it is still ours (not one a newer relaunch bound
        // after replacing ours as stale).
        let ours = fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.identity {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates the socket's directory (mode 0700) if it is missing. An existing directory is left
/// as it is, except that a shared temp-dir fallback (`check_owner`) must belong to `euid` and
/// be closed to others.
fn prepare_dir(dir: &Path, check_owner: bool, euid: u32) -> anyhow::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(anyhow!(
            "{} is not a directory; cannot put the control socket there",
            dir.display()
        )),
        Ok(meta) => {
            if check_owner && (meta.uid() != euid || meta.mode() & 0o077 != 0) {
                return Err(anyhow!(
                    "{} belongs to uid {} with mode {:o}; relaunch only uses it when it belongs to uid {euid} with mode 0700 (fix it, or use --control)",
                    dir.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| {
                    format!("creating the control socket's directory {}", dir.display())
                })?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod 0700 {}", dir.display()))?;
            Ok(())
        }
        Err(e) => Err(anyhow!("checking {}: {e}", dir.display())),
    }
}

/// Binds the control socket at `path`. When neither `--name` nor `--control` was given and a
/// running relaunch already has the default name (two Python services, say), takes the first
/// free `<name>-N` in the same directory instead, logs it, and sets `name` to it: a default
/// that is taken never stops a service from starting. An explicit name or path that is taken
/// stays an error ([`BindError::InUse`]), and so does a default socket next to a `--pid-file`
/// (which the pid file already ties to one master).
fn bind_default_name(
    name: &mut String,
    path: &Path,
    config: &ControlConfig,
) -> Result<ControlServer, BindError> {
    let first = ControlServer::bind(path, config.default_path);
    let taken = matches!(first, Err(BindError::InUse(_)));
    let dir = path.parent().unwrap_or(Path::new(""));
    let in_default_dir = PathEnv::current().search_dirs().iter().any(|d| d == dir)
        && path.file_name() == Some(OsStr::new(&format!("{name}.sock")));
    if !(taken && config.default_path && config.default_name && in_default_dir) {
        return first;
    }
    for n in 2..=MAX_SUFFIX {
        let candidate = suffixed(name, n);
        match ControlServer::bind(&dir.join(format!("{candidate}.sock")), true) {
            Err(BindError::InUse(_)) => continue,
            Ok(server) => {
                info!(
                    taken = %name,
                    name = %candidate,
                    "another relaunch runs with the default name {name:?}; this one is named {candidate:?} (choose a name with --name)"
                );
                *name = candidate;
                return Ok(server);
            }
            Err(e) => return Err(e),
        }
    }
    first
}

/// Binds and listens on a unix stream socket at `path` whose file is created with mode 0600
/// (less, if the umask takes more): the mode is set on the socket's fd before `bind`, which
/// creates the file with that mode minus the umask. No `chmod` by name afterwards, which
/// would follow a symlink swapped in after the bind, and no change of the process's umask,
/// which other threads would see.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    fchmod(socket.as_raw_fd(), Mode::from_bits_truncate(0o600))?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    if let Err(e) = socket.listen(128) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

/// Checks, without following a link, that `path` is a socket owned by `euid` that nobody
/// else may use (mode 0600, or less); returns its (device, inode).
fn verify_socket_file(path: &Path, euid: u32) -> io::Result<(u64, u64)> {
    let st = fstatat(None, path, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let mode = st.st_mode & 0o7777;
    if kind != SFlag::S_IFSOCK || mode & !0o600 != 0 || st.st_uid != euid {
        return Err(io::Error::other(format!(
            "it is not the socket just bound (type {:o}, mode {mode:o}, owner uid {}; expected a socket of uid {euid} with mode 600)",
            kind.bits(),
            st.st_uid
        )));
    }
    Ok((st.st_dev, st.st_ino))
}

/// Parses a request line; the error is the message for the client.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let request: Request = serde_json::from_slice(line).map_err(|e| {
        // Quote what was sent, cut short: the answer to a long line stays short.
        const SHOWN: usize = 100;
        let shown = String::from_utf8_lossy(&line[..line.len().min(SHOWN)]);
        let more = if line.len() > SHOWN { "..." } else { "" };
        format!(r#"malformed request {shown:?}{more} ({e}); expected one JSON object per line like {{"v":1,"cmd":"status"}}"#)
    })?;
    match request.v {
        Some(PROTOCOL) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v} (this relaunch speaks version {PROTOCOL})"
            ))
        }
        None => {
            return Err(format!(
                r#"request without "v" (the protocol version); send {{"v":{PROTOCOL},"cmd":"{}"}}"#,
                request.cmd
            ))
        }
    }
    match request.cmd.as_str() {
        "status" | "reload" | "stop" => Ok(request),
        "signal" => match &request.signal {
            Some(s) => parse_signal(s).map(|_| request.clone()),
            None => {
                Err(r#"signal needs "signal", e.g. {"v":1,"cmd":"signal","signal":"USR1"}"#.into())
            }
        },
        other => Err(format!(
            "unknown command {other:?} (expected status, reload, stop or signal)"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The control plane, as the runtime drives it

/// Everything beside the supervisor that the runtime's loop drives: the status tracker, the
/// control socket, the metrics endpoint, and the clients waiting on reloads and stops.
#[derive(Debug)]
pub struct Control {
    tracker: Tracker,
    server: Option<ControlServer>,
    metrics: Option<MetricsServer>,
    waiters: ReloadWaiters<u64>,
    /// The status fields that never change.
    base: StatusRecord,
}

impl Control {
    /// Binds the control socket and the metrics endpoint as configured.
    pub fn new(
        name: &str,
        config: &ControlConfig,
        listeners: &[Listener],
        started: Instant,
    ) -> Result<Control, crate::Failure> {
        let mut name = name.to_owned();
        let server = match &config.socket {
            Some(path) => {
                let server = bind_default_name(&mut name, path, config)
                    .map_err(|e| crate::Failure::from(anyhow!(e)))?;
                info!(path = %server.path().display(), "control socket");
                Some(server)
            }
            None => None,
        };
        let metrics = match &config.metrics {
            Some(addr) => {
                let m = MetricsServer::bind(addr)?;
                info!(addr = %m.local_addr(), "metrics");
                Some(m)
            }
            None => None,
        };
        let base = StatusRecord {
            name,
            pid: std::process::id() as i32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            control: server.as_ref().map(|s| s.path().display().to_string()),
            sockets: listeners
                .iter()
                .enumerate()
                .map(|(i, l)| SocketRecord {
                    fd: 3 + i as i32,
                    name: l.name.clone(),
                    kind: l.kind.to_string(),
                    address: l.local_addr.clone(),
                })
                .collect(),
            ..StatusRecord::default()
        };
        Ok(Control {
            tracker: Tracker::new(started),
            server,
            metrics,
            waiters: ReloadWaiters::default(),
            base,
        })
    }

    /// The master's name: `--name`, or the default one as made unique at bind time.
    pub fn name(&self) -> &str {
        &self.base.name
    }

    /// Adds the fds to poll to `fds`; [`Control::run`] takes their `revents` in this order.
    pub fn poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(s) = &self.server {
            s.poll_fds(fds);
        }
        if let Some(m) = &self.metrics {
            m.poll_fds(fds);
        }
    }

    /// The earliest connection deadline.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let a = self.server.as_ref().and_then(|s| s.next_deadline(now));
        let b = self.metrics.as_ref().and_then(|m| m.next_deadline());
        a.into_iter().chain(b).min()
    }

    /// Call with every event before the supervisor handles it.
    pub fn before(&mut self, event: &Event, sup: &Supervisor, now: Instant) {
        self.tracker.before(event, sup, now);
    }

    /// Call after every step of the supervisor.
    pub fn after(&mut self, sup: &Supervisor, now: Instant) {
        self.tracker.after(sup, now);
        for id in self.waiters.after(sup) {
            if let Some(server) = &mut self.server {
                server.reply(
                    id,
                    &Response::error("the reload was not started: relaunch is stopping"),
                    now,
                );
            }
        }
    }

    /// Call with every spawn result, before the supervisor handles it.
    pub fn spawned(
        &mut self,
        generation: u64,
        result: &Result<nix::unistd::Pid, SpawnFailure>,
        now: Instant,
    ) {
        self.tracker.spawned(generation, result, now);
    }

    /// Call with every [`Action::ReloadDone`]: records it and answers its waiters.
    pub fn reload_done(
        &mut self,
        generation: u64,
        ok: bool,
        reason: &str,
        sup: &Supervisor,
        now: Instant,
    ) {
        let clock = Clock::now();
        let record =
            self.tracker
                .reload_done(generation, ok, reason, sup.is_stopping(), &clock, now);
        let waiting = self.waiters.done(generation);
        let Some(server) = &mut self.server else {
            return;
        };
        let mut response = Response::ok();
        response.ok = ok;
        response.error = (!ok).then(|| reason.to_owned());
        response.reload = Some(record);
        for id in waiting {
            server.reply(id, &response, now);
        }
    }

    /// The master is about to exit with `code`: answers `stop --wait` callers and fails the
    /// rest, sending what the sockets take without blocking.
    pub fn exit(&mut self, code: i32) {
        let now = Instant::now();
        let reloads = self.waiters.drain();
        let Some(server) = &mut self.server else {
            return;
        };
        for id in reloads {
            server.reply(id, &Response::error("relaunch exited"), now);
        }
        let mut stopped = Response::ok();
        stopped.stop = Some(StopReply {
            exit_code: Some(code),
        });
        for id in server.waiting_for(Waiting::Stop) {
            server.reply(id, &stopped, now);
        }
    }

    /// Does the I/O `poll` found possible (`revents`: the entries for the fds `poll_fds`
    /// added, in order), serves the requests, and returns the supervisor's actions.
    pub fn run(
        &mut self,
        revents: &[PollFlags],
        sup: &mut Supervisor,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let split = self.server.as_ref().map_or(0, |s| 1 + s.clients.len());
        let (server_ev, metrics_ev) = revents.split_at(split.min(revents.len()));
        if let Some(m) = &mut self.metrics {
            let tracker = &self.tracker;
            m.io(metrics_ev, now, || crate::metrics::render(tracker, sup));
        }
        let Some(server) = &mut self.server else {
            return actions;
        };
        let (gone, requests) = server.io(server_ev, now);
        for id in gone {
            self.waiters.forget(&id);
        }
        for (id, request) in requests {
            self.serve(id, request, sup, now, &mut actions);
        }
        actions
    }

    fn handle(&mut self, event: Event, sup: &mut Supervisor, now: Instant, out: &mut Vec<Action>) {
        self.before(&event, sup, now);
        out.extend(sup.handle(event, now));
        self.after(sup, now);
    }

    fn serve(
        &mut self,
        id: u64,
        request: Request,
        sup: &mut Supervisor,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let response = match request.cmd.as_str() {
            "status" => {
                let mut r = Response::ok();
                r.status = Some(self.tracker.record(sup, &self.base, &Clock::now(), now));
                Some(r)
            }
            "reload" if sup.is_stopping() => {
                Some(Response::error("relaunch is stopping; not reloading"))
            }
            "reload" => {
                self.handle(Event::Reload(Trigger::Control), sup, now, out);
                match ReloadWaiters::<u64>::classify(sup) {
                    Joined::Refused => Some(Response::error("the reload was not started")),
                    joined if request.wait => {
                        self.waiters.join(id, joined);
                        if let Some(server) = &mut self.server {
                            server.wait(id, Waiting::Reload);
                        }
                        None
                    }
                    joined => {
                        let mut r = Response::ok();
                        r.accepted = Some(Accepted {
                            generation: match joined {
                                Joined::Attempt(g) => Some(g),
                                _ => None,
                            },
                            queued: joined == Joined::FollowUp,
                        });
                        Some(r)
                    }
                }
            }
            "stop" => {
                self.handle(
                    Event::Stop(nix::sys::signal::Signal::SIGTERM),
                    sup,
                    now,
                    out,
                );
                if request.wait {
                    if let Some(server) = &mut self.server {
                        server.wait(id, Waiting::Stop);
                    }
                    None
                } else {
                    let mut r = Response::ok();
                    r.stop = Some(StopReply { exit_code: None });
                    Some(r)
                }
            }
            "signal" => {
                let signal = request.signal.as_deref().map(parse_signal);
                match (signal, sup.current()) {
                    (Some(Ok(signal)), Some(current)) if !sup.is_stopping() => {
                        let mut r = Response::ok();
                        r.signal = Some(SignalReply {
                            signal: signal.as_str().to_owned(),
                            generation: current.generation,
                            pid: current.pid.as_raw(),
                        });
                        self.handle(Event::Forward(signal), sup, now, out);
                        Some(r)
                    }
                    (Some(Ok(_)), _) => Some(Response::error(
                        "no current generation to signal (starting, restarting or stopping)",
                    )),
                    (Some(Err(e)), _) => Some(Response::error(e)),
                    (None, _) => Some(Response::error("no signal given")),
                }
            }
            other => Some(Response::error(format!("unknown command {other:?}"))),
        };
        if let (Some(response), Some(server)) = (response, &mut self.server) {
            server.reply(id, &response, now);
        }
    }
}

/// Writes one request line to a connected stream (client side).
pub fn write_request(stream: &mut UnixStream, request: &Request) -> io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{ExitStatus, Settings};
    use nix::unistd::Pid;

    #[test]
    fn requests_are_checked_and_errors_say_what_to_send() {
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"reload","wait":true}"#).unwrap(),
            Request {
                wait: true,
                ..Request::new("reload")
            }
        );
        let e = parse_request(br#"{"cmd":"status"}"#).unwrap_err();
        assert!(e.contains(r#"{"v":1,"cmd":"status"}"#), "{e}");
        let e = parse_request(br#"{"v":2,"cmd":"status"}"#).unwrap_err();
        assert!(e.contains("unsupported protocol version 2"), "{e}");
        let e = parse_request(b"garbage").unwrap_err();
        assert!(e.starts_with("malformed request \"garbage\" ("), "{e}");
        let e = parse_request(&[b'x'; 200]).unwrap_err();
        let shown = format!("malformed request \"{}\"... (", "x".repeat(100));
        assert!(e.starts_with(&shown), "{e}");
        let e = parse_request(br#"{"v":1,"cmd":"explode"}"#).unwrap_err();
        assert!(e.contains("unknown command \"explode\""), "{e}");
        let e = parse_request(br#"{"v":1,"cmd":"signal","signal":"BOGUS"}"#).unwrap_err();
        assert!(e.contains("BOGUS"), "{e}");
        assert!(parse_request(br#"{"v":1,"cmd":"signal","signal":"usr1"}"#).is_ok());
    }

    #[test]
    fn responses_round_trip_as_one_line() {
        let mut r = Response::ok();
        r.accepted = Some(Accepted {
            generation: Some(3),
            queued: false,
        });
        let line = r.to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "{\"v\":1,\"ok\":true,\"accepted\":{\"generation\":3,\"queued\":false}}\n"
        );
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
    }

    /// The supervisor and the waiters, driven the way the runtime drives them.
    struct Rig {
        sup: Supervisor,
        waiters: ReloadWaiters<&'static str>,
        t0: Instant,
        ms: u64,
        next_pid: i32,
        /// (waiter, generation, ok) in the order they were answered.
        answered: Vec<(&'static str, u64, bool)>,
        failed: Vec<&'static str>,
    }

    impl Rig {
        fn new() -> Rig {
            let mut rig = Rig {
                sup: Supervisor::new(Settings::default()),
                waiters: ReloadWaiters::default(),
                t0: Instant::now(),
                ms: 0,
                next_pid: 100,
                answered: Vec::new(),
                failed: Vec::new(),
            };
            let a = rig.sup.start();
            rig.run(a, None);
            rig.tick(1000);
            rig
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        /// Runs actions; spawns succeed unless `fail` names the generation to fail.
        fn run(&mut self, actions: Vec<Action>, fail: Option<u64>) {
            for a in actions {
                match a {
                    Action::Spawn { generation } => {
                        self.next_pid += 1;
                        let result = if fail == Some(generation) {
                            Err(SpawnFailure {
                                message: "gone".into(),
                                exit_code: 127,
                            })
                        } else {
                            Ok(Pid::from_raw(self.next_pid))
                        };
                        let more = self.handle(Event::Spawned { generation, result });
                        self.run(more, fail);
                    }
                    Action::ReloadDone { generation, ok, .. } => {
                        for w in self.waiters.done(generation) {
                            self.answered.push((w, generation, ok));
                        }
                    }
                    _ => {}
                }
            }
        }

        fn handle(&mut self, e: Event) -> Vec<Action> {
            let a = self.sup.handle(e, self.now());
            let dropped = self.waiters.after(&self.sup);
            self.failed.extend(dropped);
            a
        }

        fn request(&mut self, who: &'static str) -> Joined {
            let a = self.handle(Event::Reload(Trigger::Control));
            let joined = ReloadWaiters::<&str>::classify(&self.sup);
            self.waiters.join(who, joined);
            self.run(a, None);
            joined
        }

        fn tick(&mut self, ms: u64) {
            self.ms = ms;
            let a = self.handle(Event::Tick);
            self.run(a, None);
        }

        fn exit(&mut self, pid: Pid, code: i32) {
            let a = self.handle(Event::Exited {
                pid,
                status: ExitStatus::Code(code),
            });
            self.run(a, None);
        }
    }

    #[test]
    fn a_request_while_idle_waits_for_the_attempt_it_started() {
        let mut r = Rig::new();
        assert_eq!(r.request("a"), Joined::Attempt(2));
        r.tick(2000);
        assert_eq!(r.answered, vec![("a", 2, true)]);
        assert!(r.waiters.is_empty());
    }

    #[test]
    fn requests_during_a_reload_get_the_follow_up_result_not_the_one_in_progress() {
        let mut r = Rig::new();
        let g1 = r.sup.current().unwrap().pid;
        assert_eq!(r.request("first"), Joined::Attempt(2));
        assert_eq!(r.request("second"), Joined::FollowUp);
        assert_eq!(r.request("third"), Joined::FollowUp);
        r.tick(2000); // generation 2 takes over; the follow-up waits for generation 1 to exit
        assert_eq!(r.answered, vec![("first", 2, true)]);
        r.exit(g1, 0); // the follow-up (generation 3) starts
        assert_eq!(r.sup.reloading().map(|(g, _)| g), Some(3));
        let g3 = r.sup.pending().unwrap().pid;
        r.exit(g3, 1); // and fails
        assert_eq!(
            r.answered,
            vec![
                ("first", 2, true),
                ("second", 3, false),
                ("third", 3, false)
            ]
        );
        assert!(r.waiters.is_empty());
    }

    #[test]
    fn a_follow_up_whose_predecessor_fails_at_spawn_is_still_the_one_waited_for() {
        let mut r = Rig::new();
        let a = r.handle(Event::Reload(Trigger::Control));
        let joined = ReloadWaiters::<&str>::classify(&r.sup);
        r.waiters.join("first", joined);
        // A second request arrives before the first attempt's spawn ran.
        let b = r.handle(Event::Reload(Trigger::Control));
        assert!(b.is_empty());
        let joined = ReloadWaiters::<&str>::classify(&r.sup);
        assert_eq!(joined, Joined::FollowUp);
        r.waiters.join("second", joined);
        // Generation 2 fails to exec; the follow-up (3) starts in the same step.
        r.run(a, Some(2));
        assert_eq!(r.answered, vec![("first", 2, false)]);
        assert_eq!(r.sup.reloading().map(|(g, _)| g), Some(3));
        r.tick(3000);
        assert_eq!(r.answered, vec![("first", 2, false), ("second", 3, true)]);
    }

    #[test]
    fn a_dropped_follow_up_fails_its_waiters() {
        let mut r = Rig::new();
        r.request("first");
        r.request("second");
        let a = r.handle(Event::Stop(nix::sys::signal::Signal::SIGTERM));
        r.run(a, None);
        assert_eq!(r.answered, vec![("first", 2, false)]);
        assert_eq!(r.failed, vec!["second"]);
        assert_eq!(r.request("late"), Joined::Refused);
    }

    /// Polls the server's fds for real, then runs its I/O.
    fn poll_io(server: &mut ControlServer, now: Instant) -> (Vec<u64>, Vec<(u64, Request)>) {
        let mut fds = Vec::new();
        server.poll_fds(&mut fds);
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)).unwrap();
        let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap()).collect();
        drop(fds);
        server.io(&revents, now)
    }

    fn temp_socket(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "relaunch-unit-{tag}-{}-{nanos}",
            std::process::id()
        ));
        dir.join("sub").join("c.sock")
    }

    #[test]
    fn server_serves_a_hung_up_clients_request_and_expires_silent_ones() {
        let path = temp_socket("io");
        let mut server = ControlServer::bind(&path, false).unwrap();
        let dir = path.parent().unwrap();
        assert_eq!(fs::metadata(dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let t0 = Instant::now();

        let silent = UnixStream::connect(&path).unwrap();
        let mut hangs_up = UnixStream::connect(&path).unwrap();
        let (gone, requests) = poll_io(&mut server, t0);
        assert!(gone.is_empty() && requests.is_empty());
        assert_eq!(server.clients.len(), 2, "both accepted");

        // Sent and fully closed before relaunch looked: the request still counts, without a
        // wait (nobody is left to answer).
        hangs_up
            .write_all(b"{\"v\":1,\"cmd\":\"reload\",\"wait\":true}\n")
            .unwrap();
        drop(hangs_up);
        let (gone, requests) = poll_io(&mut server, t0);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].1.cmd, "reload");
        assert!(!requests[0].1.wait);
        assert_eq!(gone, vec![requests[0].0]);

        // The silent one goes at its deadline.
        assert_eq!(server.next_deadline(t0), Some(t0 + IDLE_TIMEOUT));
        let (gone, _) = server.io(&[PollFlags::empty(); 2], t0 + IDLE_TIMEOUT);
        assert_eq!(gone.len(), 1);
        assert!(server.clients.is_empty());
        drop(silent);

        // A second server on a live socket is refused; once dropped, the file is gone.
        assert!(matches!(
            ControlServer::bind(&path, false),
            Err(BindError::InUse(_))
        ));
        drop(server);
        assert!(!path.exists());
        // A stale file (nobody listens) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let server = ControlServer::bind(&path, false).unwrap();
        drop(server);
        // Something that is not a socket is left alone.
        fs::write(&path, "x").unwrap();
        let e = ControlServer::bind(&path, false).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn the_socket_mode_is_set_without_a_lookup_by_name() {
        // A racer swaps the fresh socket for a symlink to a victim file, again and again: a
        // chmod by name after the bind would follow the link and change the victim's mode.
        let path = temp_socket("race");
        let dir = path.parent().unwrap().to_owned();
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "x").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swaps = std::sync::Arc::new(AtomicU64::new(0));
        let racer = {
            let (path, victim) = (path.clone(), victim.clone());
            let (stop, swaps) = (stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                let tmp = path.with_extension("tmp");
                while !stop.load(Ordering::Relaxed) {
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                        let _ = fs::remove_file(&tmp);
                        if std::os::unix::fs::symlink(&victim, &tmp).is_ok()
                            && fs::rename(&tmp, &path).is_ok()
                        {
                            swaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        // At least 300 binds, and on until the racer has won 20 times (within a deadline).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut binds = 0;
        while binds < 300 || (swaps.load(Ordering::Relaxed) < 20 && Instant::now() < deadline) {
            let _ = fs::remove_file(&path);
            if let Ok(server) = ControlServer::bind(&path, false) {
                drop(server);
            }
            binds += 1;
        }
        stop.store(true, Ordering::Relaxed);
        racer.join().unwrap();
        let swaps = swaps.load(Ordering::Relaxed);
        let mode = fs::metadata(&victim).unwrap().mode() & 0o777;
        let _ = fs::remove_dir_all(dir.parent().unwrap());
        assert!(swaps > 0, "the racer never swapped ({binds} binds)");
        assert_eq!(mode, 0o644, "the victim's mode changed ({swaps} swaps)");
    }

    #[test]
    fn a_full_server_evicts_an_answered_idle_client_never_a_waiting_one() {
        let path = temp_socket("evict");
        let mut server = ControlServer::bind(&path, false).unwrap();
        let t0 = Instant::now();
        let mut peers = Vec::new();
        while server.clients.len() < MAX_CLIENTS {
            peers.push(UnixStream::connect(&path).unwrap());
            poll_io(&mut server, t0);
        }
        let ids: Vec<u64> = server.clients.iter().map(|c| c.id).collect();
        // The oldest waits on a reload; the second oldest is new; the third was answered.
        server.wait(ids[0], Waiting::Reload);
        server.reply(ids[2], &Response::ok(), t0);
        peers.push(UnixStream::connect(&path).unwrap());
        let (gone, _) = poll_io(&mut server, t0);
        assert_eq!(gone, vec![ids[2]], "the answered one made room");
        assert_eq!(server.clients.len(), MAX_CLIENTS);
        assert_eq!(
            server.clients.last().map(|c| c.id),
            Some(ids[MAX_CLIENTS - 1] + 1)
        );
        // Then the oldest that has not asked yet, still never the waiting one.
        peers.push(UnixStream::connect(&path).unwrap());
        let (gone, _) = poll_io(&mut server, t0);
        assert_eq!(gone, vec![ids[1]]);
        assert!(server.client(ids[0]).is_some());
        drop(server);
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn forgotten_waiters_are_not_answered() {
        let mut r = Rig::new();
        r.request("gone");
        r.request("queued-gone");
        r.waiters.forget(&"gone");
        r.waiters.forget(&"queued-gone");
        assert!(r.waiters.is_empty());
    }
}
