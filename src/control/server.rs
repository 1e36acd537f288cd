//! The listening control socket and its connections: binding it safely (its mode set on the
//! fd before `bind`, a unique default name), accepting (paused at the fd limit, evicting the
//! idle connection with the least claim to its slot when full), the peer check, reading
//! request lines and writing answers without ever blocking the master.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::fcntl::AtFlags;
use nix::poll::PollFlags;
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use tracing::{debug, info, warn};

use super::locate::{probe, suffixed, PathEnv, Probe, MAX_SUFFIX};
use super::protocol::{parse_request, Request, Response, MAX_REQUEST};
use super::ControlConfig;
use crate::accept::AcceptPause;
use crate::conn::{Conn, ReadState};
use crate::poll::{PollSet, Polled, Token};

/// The most answer bytes buffered for a client that does not read them: a new answer is
/// queued only while what is still unsent is within this (so one answer is always sent whole).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// How long a connection may stay without sending a complete request (or without reading its
/// answer) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once.
pub const MAX_CLIENTS: usize = 64;

/// Why the control socket could not be set up.
#[derive(Debug)]
pub(crate) enum BindError {
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
pub(super) enum Waiting {
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
pub(crate) struct ControlServer {
    listener: Polled<UnixListener>,
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
            listener: Polled::new(listener),
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

    /// Registers the listener (unless its accepting is paused) and every connection in `set`;
    /// [`ControlServer::io`] takes the `revents` of the returned tokens, in their order.
    pub(super) fn register<'a>(&'a self, set: &mut PollSet<'a>) -> Vec<Token> {
        let mut tokens = vec![set.add_with(&self.listener, self.pause.interest())];
        for c in &self.clients {
            // Read on while the input may still be one request line (so that a longer one is
            // seen, answered and closed); a client pipelining requests behind one that waits
            // is not read from until that one is answered.
            let want_input = c.waiting.is_none() && c.conn.input().len() <= MAX_REQUEST;
            tokens.push(set.add_with(&c.conn.stream, c.conn.interest(want_input)));
        }
        tokens
    }

    pub(super) fn next_deadline(&self, now: Instant) -> Option<Instant> {
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
    /// `register`), closes what is finished, broken or expired, and returns the forgotten
    /// connections (so their waits can be dropped) and the requests to serve: at most one per
    /// connection per call, in order.
    pub(super) fn io(
        &mut self,
        revents: &[PollFlags],
        now: Instant,
    ) -> (Vec<u64>, Vec<(u64, Request)>) {
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
            // A closing connection with a long answer still queued has until its deadline.
            let keep = !(c.conn.done() || c.conn.expired(now));
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
    pub(super) fn reply(&mut self, id: u64, response: &Response, now: Instant) {
        let Some(c) = self.client(id) else {
            return;
        };
        c.waiting = None;
        c.answered += 1;
        // One answer is queued whole, however long (the status of 1,000 programs is megabytes);
        // what is bounded is the answers piling up behind ones the client has not read.
        let unread = c.conn.unsent();
        if c.conn.send(&response.to_line()).is_err() || unread > MAX_OUTPUT {
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

    pub(super) fn wait(&mut self, id: u64, what: Waiting) {
        if let Some(c) = self.client(id) {
            c.waiting = Some(what);
            c.conn.deadline = None;
        }
    }

    pub(super) fn waiting_for(&self, what: Waiting) -> Vec<u64> {
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
pub(super) fn bind_default_name(
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Polls the server's fds for real, then runs its I/O.
    fn poll_io(server: &mut ControlServer, now: Instant) -> (Vec<u64>, Vec<(u64, Request)>) {
        let mut poller = crate::poll::Poller::new().unwrap();
        let mut set = PollSet::new();
        let tokens = server.register(&mut set);
        let ready = poller
            .wait(set, Some(Instant::now() + Duration::from_millis(1000)))
            .unwrap();
        let revents: Vec<PollFlags> = tokens.iter().map(|t| ready.revents(*t)).collect();
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

    /// Reads from `peer` until a whole line came (or the peer was closed), driving the
    /// server's I/O in between; returns the bytes read.
    fn read_answer(server: &mut ControlServer, peer: &mut UnixStream, now: Instant) -> Vec<u8> {
        use std::io::Read;
        peer.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        while !got.ends_with(b"\n") && Instant::now() < deadline {
            match peer.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    poll_io(server, now);
                }
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
        got
    }

    #[test]
    fn an_answer_longer_than_max_output_is_sent_whole_but_unread_answers_are_bounded() {
        let path = temp_socket("long");
        let mut server = ControlServer::bind(&path, false).unwrap();
        let t0 = Instant::now();
        let mut reader = UnixStream::connect(&path).unwrap();
        let mut half_closed = UnixStream::connect(&path).unwrap();
        let silent = UnixStream::connect(&path).unwrap();
        while server.clients.len() < 3 {
            poll_io(&mut server, t0);
        }
        let ids: Vec<u64> = server.clients.iter().map(|c| c.id).collect();
        // `printf '{"v":1,"cmd":"status"}\n' | socat - UNIX-CONNECT:...` sends and half-closes.
        half_closed
            .write_all(b"{\"v\":1,\"cmd\":\"status\"}\n")
            .unwrap();
        half_closed.shutdown(std::net::Shutdown::Write).unwrap();
        let (_, requests) = poll_io(&mut server, t0);
        assert_eq!(requests.len(), 1);
        // The status of 1,000 programs is several MiB: each client gets it whole. (The
        // half-closed one first: the runtime answers a request in the wake-up that read it.)
        let long = Response::error("x".repeat(3 * MAX_OUTPUT));
        let line_len = long.to_line().len();
        for (id, peer) in [(ids[1], &mut half_closed), (ids[0], &mut reader)] {
            server.reply(id, &long, t0);
            let got = read_answer(&mut server, peer, t0);
            assert_eq!(got.len(), line_len, "client {id} got {} bytes", got.len());
        }
        // A client that reads nothing gets one long answer queued, and is dropped when a
        // second would pile up behind it.
        server.reply(ids[2], &long, t0);
        assert!(server.client(ids[2]).is_some());
        server.reply(ids[2], &Response::ok(), t0);
        let (gone, _) = server.io(&[PollFlags::empty(); 4], t0);
        assert!(gone.contains(&ids[2]), "{gone:?}");
        assert!(server.client(ids[0]).is_some(), "the reader stays");
        drop((server, silent));
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
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

    /// The control socket's mode is set without a lookup by name: a racer that swaps the fresh
    /// socket file for a symlink must never get another file's mode changed. (A chmod by name
    /// after `bind` lost this race within a second.)
    #[test]
    fn the_socket_mode_is_set_without_a_lookup_by_name() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        // A racer swaps the fresh socket for a symlink to a victim file, again and again: a
        // chmod by name after the bind would follow the link and change the victim's mode.
        let base =
            std::env::temp_dir().join(format!("relaunch-socket-mode-{}", std::process::id()));
        let path = base.join("sub").join("c.sock");
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
        // On until the racer has won 200 times (at least 2,000 binds), within a deadline; a
        // changed victim ends it at once.
        let deadline = Instant::now() + Duration::from_secs(20);
        let changed = || fs::metadata(&victim).unwrap().mode() & 0o777 != 0o644;
        let mut binds = 0;
        while (binds < 2000 || swaps.load(Ordering::Relaxed) < 200)
            && Instant::now() < deadline
            && !changed()
        {
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
        let _ = fs::remove_dir_all(&base);
        assert!(swaps > 0, "the racer never swapped ({binds} binds)");
        assert_eq!(mode, 0o644, "the victim's mode changed ({swaps} swaps)");
    }
}
