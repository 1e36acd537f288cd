//! The listening control socket and its connections: binding it safely, accepting, the peer
//! check, reading request lines and writing answers without ever blocking the master.

use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::poll::PollFlags;
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{umask, Mode};
use tracing::{debug, info, warn};

use super::paths::PathEnv;
use super::protocol::{parse_request, Request, Response, MAX_REQUEST};
use crate::conn::{Conn, ReadState};
use crate::poll::{PollSet, Token};

/// The most answer bytes buffered for a client that does not read them.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// How long a connection may stay without sending a complete request (or without reading its
/// answer) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once.
pub const MAX_CLIENTS: usize = 64;

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
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_owned())),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "removing a stale control socket");
                    fs::remove_file(path)
                        .with_context(|| format!("removing the stale socket {}", path.display()))
                        .map_err(other)?;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
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
        // Created 0600 from the start (the master is single-threaded here, so the umask change
        // affects nothing else), then chmod for certainty.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(old);
        let listener = bound
            .with_context(|| format!("binding the control socket {}", path.display()))
            .map_err(other)?;
        let setup = || -> io::Result<Option<(u64, u64)>> {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            Ok(fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino())))
        };
        let identity = match setup() {
            Ok(identity) => identity,
            Err(e) => {
                let _ = fs::remove_file(path);
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
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers the listener and every connection in `set`; [`ControlServer::io`] takes the
    /// `revents` of the returned tokens, in their order.
    pub(super) fn register<'a>(&'a self, set: &mut PollSet<'a>) -> Vec<Token> {
        let mut tokens = vec![set.add(self.listener.as_fd())];
        for c in &self.clients {
            // Read on while the input may still be one request line (so that a longer one is
            // seen, answered and closed); a client pipelining requests behind one that waits
            // is not read from until that one is answered.
            let want_input = c.waiting.is_none() && c.conn.input().len() <= MAX_REQUEST;
            tokens.push(set.add_with(c.conn.stream.as_fd(), c.conn.interest(want_input)));
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
        self.clients.iter().filter_map(|c| c.conn.deadline).min()
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
        if revents
            .first()
            .is_some_and(|ev| ev.contains(PollFlags::POLLIN))
        {
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
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and the like: try again on the next wake-up.
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
            if self.clients.len() >= MAX_CLIENTS {
                let _ = conn.send(
                    &Response::error(format!(
                        "too many control connections (at most {MAX_CLIENTS}); try again"
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
            });
        }
    }

    /// Drops finished, broken and expired connections; returns their ids.
    fn sweep(&mut self, now: Instant) -> Vec<u64> {
        let mut gone = Vec::new();
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Polls the server's fds for real, then runs its I/O.
    fn poll_io(server: &mut ControlServer, now: Instant) -> (Vec<u64>, Vec<(u64, Request)>) {
        let mut set = PollSet::new();
        let tokens = server.register(&mut set);
        let ready = set
            .wait(Some(Instant::now() + Duration::from_millis(1000)))
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
}
