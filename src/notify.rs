//! The sd_notify protocol, both ways.
//!
//! **Children → relaunch** (`--ready notify`): relaunch owns a unix datagram socket with
//! `SO_PASSCRED` in a private directory and gives each child `NOTIFY_SOCKET=<path>`. The
//! directory is under `$XDG_RUNTIME_DIR`, else the temp dir, else `/tmp`: the first one the
//! children's user can pass through (with `--user`, a root-private `/run/user/0` is skipped). It
//! stays relaunch's: 0700, or with `--user`/`--group` 0710 with the children's group, and the
//! socket in it is 0600 and the children's user's, chowned (without following links) while the
//! directory is still 0700. Directories that masters killed with SIGKILL left behind are removed
//! at the next start. A path rather than an abstract name, because
//! some client libraries (e.g. the `sd-notify` crate) cannot reach abstract sockets. Messages are
//! newline-separated `KEY=VALUE` lines (`READY=1`, `STATUS=...`, `EXTEND_TIMEOUT_USEC=...`,
//! ...). The sender is identified by the kernel-verified `SCM_CREDENTIALS` pid, and a message
//! counts only if that pid is a child of relaunch or one of its descendants (e.g.
//! `systemd-notify --ready` run by a shell wrapper). Everything else — other senders, garbage,
//! truncated or oversize datagrams — is dropped with a debug log. File descriptors that arrive
//! with a message are closed once it was attributed (or dropped); `BARRIER=1` is honoured by
//! exactly that (closing the fd is the barrier's answer), so `systemd-notify --ready` stays alive,
//! and its ancestry readable, until its `READY=1` was checked. A sender that uses no barrier
//! and exits (and is reaped) before relaunch reads its ancestry cannot be attributed: its
//! message is dropped. Accepting messages from pids that are gone would accept them from anyone
//! of the same uid, so relaunch does not; send from the child itself, or use a barrier.
//!
//! **relaunch → its own manager**: when relaunch's environment has `NOTIFY_SOCKET` (systemd
//! `Type=notify` or `Type=notify-reload`), [`Manager`] sends `READY=1` once the first generation
//! is up, `RELOADING=1` + `MONOTONIC_USEC=` when a reload starts, `READY=1` when it ends,
//! `STATUS=` lines, `STOPPING=1` on shutdown, and `WATCHDOG=1` pings when `WATCHDOG_USEC` is set.

use std::ffi::OsString;
use std::hash::BuildHasher;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use nix::unistd::Pid;
use tracing::debug;

/// The largest datagram read; longer ones are truncated by the kernel and dropped.
pub const MAX_MESSAGE: usize = 4096;

/// What a child said, parsed from one datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    /// `READY=1`.
    pub ready: bool,
    /// `STATUS=...`.
    pub status: Option<String>,
    /// `STOPPING=1`.
    pub stopping: bool,
    /// `RELOADING=1`.
    pub reloading: bool,
    /// `EXTEND_TIMEOUT_USEC=...`.
    pub extend_timeout: Option<Duration>,
    /// `ERRNO=...`.
    pub errno: Option<i32>,
    /// `MAINPID=...`.
    pub mainpid: Option<i32>,
}

impl Note {
    /// Parses a datagram: UTF-8 `KEY=VALUE` lines. Unknown keys are ignored (systemd has many);
    /// `None` if the text is not UTF-8 or holds nothing relaunch understands.
    pub fn parse(bytes: &[u8]) -> Option<Note> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut note = Note::default();
        let mut known = false;
        for line in text.split('\n') {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            known |= match key {
                "READY" => {
                    note.ready = value == "1";
                    true
                }
                "STATUS" => {
                    note.status = Some(value.chars().take(512).collect());
                    true
                }
                "STOPPING" => {
                    note.stopping = value == "1";
                    true
                }
                "RELOADING" => {
                    note.reloading = value == "1";
                    true
                }
                "EXTEND_TIMEOUT_USEC" => {
                    note.extend_timeout = value.parse().ok().map(Duration::from_micros);
                    note.extend_timeout.is_some()
                }
                "ERRNO" => {
                    note.errno = value.parse().ok();
                    note.errno.is_some()
                }
                "MAINPID" => {
                    note.mainpid = value.parse().ok().filter(|p| *p > 0);
                    note.mainpid.is_some()
                }
                _ => false,
            };
        }
        known.then_some(note)
    }
}

/// A message received on the notify socket, with its sender's pid.
#[derive(Debug)]
pub struct Received {
    /// The sender, as the kernel reports it.
    pub pid: Pid,
    /// What it said.
    pub note: Note,
    /// The fds that came with it, or with a later message of the same sender in the same
    /// batch (`BARRIER=1`): held until this is dropped, so a sender waiting on its barrier
    /// (`systemd-notify --ready`) stays alive, and its ancestry readable, until the message was
    /// attributed to a child.
    barrier: Barrier,
}

/// File descriptors passed with notifications; closed when dropped, which is the answer to a
/// `BARRIER=1`.
#[derive(Debug, Default)]
struct Barrier(Vec<std::os::fd::RawFd>);

impl Drop for Barrier {
    fn drop(&mut self) {
        for fd in self.0.drain(..) {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// The socket children send their notifications to. Its directory and file are removed when
/// it is dropped.
pub struct NotifySocket {
    socket: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds a fresh socket `notify` in a new private directory `relaunch.<pid>.<nonce>` under
    /// `$XDG_RUNTIME_DIR`, else the temp dir, else `/tmp`: the first of them the children can
    /// reach. `children` is the user and group they run as (`--user`, `--group`), if not
    /// relaunch's own.
    ///
    /// The directory stays relaunch's: 0700, or with `children`, group `gid` and 0710, so the
    /// children can pass through it but not change it. The socket is 0600 and, with
    /// `children`, owned by their uid: nobody else can send to it. Senders are checked by their
    /// credentials too. Directories of masters that are gone (killed with SIGKILL) are removed
    /// from the base directory first.
    pub fn bind(children: Option<(Option<u32>, u32)>) -> io::Result<NotifySocket> {
        let mut bases: Vec<PathBuf> = Vec::new();
        for base in std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain([std::env::temp_dir(), PathBuf::from("/tmp")])
        {
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
        let mut last = io::Error::other("no directory for the notify socket");
        for base in bases {
            if let Some((uid, gid)) = children {
                let uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
                if let Err(e) = reachable(&base, uid, gid) {
                    debug!(base = %base.display(), reason = %e, "not a base for the notify socket");
                    last = e;
                    continue;
                }
            }
            remove_leftovers(&base);
            match Self::bind_in(&base, children) {
                Ok(sock) => return Ok(sock),
                Err(e) => last = io::Error::new(e.kind(), format!("{}: {e}", base.display())),
            }
        }
        Err(last)
    }

    fn bind_in(base: &Path, children: Option<(Option<u32>, u32)>) -> io::Result<NotifySocket> {
        let random = std::collections::hash_map::RandomState::new();
        let mut attempt = 0u32;
        let dir = loop {
            let dir = base.join(format!(
                "{DIR_PREFIX}{}.{:016x}",
                std::process::id(),
                random.hash_one(attempt)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let path = dir.join("notify");
        let bound = (|| {
            let handle = open_dir_nofollow(&dir)?;
            let meta = handle.metadata()?;
            if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o777 != 0o700 {
                return Err(io::Error::other(format!(
                    "{} is not the private directory relaunch created",
                    dir.display()
                )));
            }
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)?;
            // The socket file takes this mode (less the umask) when bound.
            nix::sys::stat::fchmod(
                socket.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )?;
            socket.bind(&socket2::SockAddr::unix(&path)?)?;
            let socket = UnixDatagram::from(std::os::fd::OwnedFd::from(socket));
            socket.set_nonblocking(true)?;
            setsockopt(&socket, sockopt::PassCred, &true)?;
            if let Some((uid, gid)) = children {
                // The socket first, then the directory: while the directory is still 0700
                // and relaunch's, nobody else can put anything at `notify`; and the directory
                // itself is never given away, only opened to the group.
                nix::unistd::fchownat(
                    Some(handle.as_raw_fd()),
                    "notify",
                    uid.map(nix::unistd::Uid::from_raw),
                    Some(nix::unistd::Gid::from_raw(gid)),
                    nix::unistd::FchownatFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                std::os::unix::fs::fchown(&handle, None, Some(gid))?;
                handle.set_permissions(std::fs::Permissions::from_mode(0o710))?;
            }
            Ok(socket)
        })();
        match bound {
            Ok(socket) => Ok(NotifySocket { socket, dir, path }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The value of `NOTIFY_SOCKET` for children: the socket's path.
    pub fn env_value(&self) -> OsString {
        self.path.clone().into_os_string()
    }

    /// Reads every queued datagram. Malformed ones, and ones without credentials, are
    /// dropped; fds passed along are closed.
    pub fn receive(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let mut cmsg = nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; 16]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break, // EAGAIN: drained
            };
            let mut pid = None;
            // BARRIER=1 and FDSTORE=1 send fds: closing them answers the barrier. Dropping
            // this closes them, unless they are handed on below.
            let mut barrier = Barrier::default();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmCredentials(creds) => {
                            pid = Some(Pid::from_raw(creds.pid()))
                        }
                        ControlMessageOwned::ScmRights(fds) => barrier.0.extend(fds),
                        _ => {}
                    }
                }
            }
            let len = msg.bytes;
            let truncated = msg
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            if truncated || len > MAX_MESSAGE {
                debug!(len, "dropped an oversize notification");
                continue;
            }
            let Some(pid) = pid else {
                debug!("dropped a notification without credentials");
                continue;
            };
            match Note::parse(&buf[..len]) {
                Some(note) => out.push(Received { pid, note, barrier }),
                // A bare BARRIER=1 after a READY=1: keep its fd with that message.
                None if !barrier.0.is_empty() => {
                    match out.iter_mut().rev().find(|r| r.pid == pid) {
                        Some(earlier) => earlier.barrier.0.append(&mut barrier.0),
                        None => debug!(pid = %pid, "answered a barrier"),
                    }
                }
                None => {
                    debug!(pid = %pid, len, "ignored a notification with nothing relaunch understands")
                }
            }
        }
        out
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The name of notify directories: `relaunch.<pid>.<nonce>`.
const DIR_PREFIX: &str = "relaunch.";

fn open_dir_nofollow(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether user `uid` (primary group `gid`) can pass through `base` and every directory above
/// it, by their mode bits (supplementary groups are not counted: a conservative answer).
fn reachable(base: &Path, uid: u32, gid: u32) -> io::Result<()> {
    if uid == 0 {
        return Ok(());
    }
    let base = std::fs::canonicalize(base)?;
    for dir in base.ancestors() {
        let meta = std::fs::metadata(dir)?;
        let mode = meta.mode();
        let ok = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} (mode {:o}, owner {}) cannot be searched by uid {uid}",
                    dir.display(),
                    mode & 0o7777,
                    meta.uid()
                ),
            ));
        }
    }
    Ok(())
}

/// Removes the notify directories in `base` that masters killed without cleaning up left
/// behind: named `relaunch.<pid>.<nonce>`, a directory (not a link) owned by this user, and no
/// process `pid` running. Removal goes through directory fds (`unlinkat`), never through a
/// path someone could redirect. Failures are only logged: this is housekeeping.
fn remove_leftovers(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let Ok(base_dir) = std::fs::File::open(base) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = leftover_pid(&name) else {
            continue;
        };
        if pid as u32 == std::process::id()
            || nix::sys::signal::kill(Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
        {
            continue;
        }
        let shown = base.join(&name);
        match remove_leftover(&base_dir, &name, me) {
            Ok(true) => {
                debug!(dir = %shown.display(), pid, "removed the notify directory of a master that is gone")
            }
            Ok(false) => {}
            Err(e) => {
                debug!(dir = %shown.display(), error = %e, "cannot remove a leftover notify directory")
            }
        }
    }
}

/// The pid in a notify directory's name `relaunch.<pid>.<hex nonce>`.
fn leftover_pid(name: &std::ffi::OsStr) -> Option<i32> {
    let (pid, nonce) = name.to_str()?.strip_prefix(DIR_PREFIX)?.split_once('.')?;
    if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse::<i32>().ok().filter(|&pid| pid > 0)
}

/// Removes `name` in `base_dir` if it is a directory owned by `uid`, with its `notify` socket.
fn remove_leftover(base_dir: &std::fs::File, name: &std::ffi::OsStr, uid: u32) -> io::Result<bool> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let stat = nix::sys::stat::fstatat(
        Some(base_dir.as_raw_fd()),
        name,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFDIR || stat.st_uid != uid {
        return Ok(false);
    }
    let dir = nix::dir::Dir::openat(
        Some(base_dir.as_raw_fd()),
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    match unlinkat(Some(dir.as_raw_fd()), "notify", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    drop(dir);
    // Fails (ENOTEMPTY) if anything else is in it: then it is not only ours to remove.
    unlinkat(Some(base_dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
pub fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ppid: i32 = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(ppid))
}

/// Which of `children` `pid` is, or descends from (at most 64 generations up).
pub fn owning_child(pid: Pid, children: &[Pid]) -> Option<Pid> {
    let mut p = pid;
    for _ in 0..64 {
        if children.contains(&p) {
            return Some(p);
        }
        p = parent_of(p)?;
        if p.as_raw() <= 1 {
            return None;
        }
    }
    None
}

/// relaunch's own service manager, if its environment named one in `NOTIFY_SOCKET`.
pub struct Manager {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WATCHDOG_USEC`, if the manager asked for watchdog pings.
    pub watchdog_every: Option<Duration>,
    warned: bool,
}

impl Manager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    /// `None` when there is no manager to talk to.
    pub fn from_env() -> io::Result<Option<Manager>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(&path))?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let for_us = match std::env::var("WATCHDOG_PID") {
            Ok(p) => p.trim().parse::<u32>().ok() == Some(std::process::id()),
            Err(_) => true,
        };
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(|us| Duration::from_micros(us / 2));
        Ok(Some(Manager {
            socket,
            addr,
            watchdog_every,
            warned: false,
        }))
    }

    /// Sends one message; failures are logged once and otherwise ignored (the manager may
    /// be gone, and relaunch must keep serving regardless).
    pub fn send(&mut self, message: &str) {
        debug!(message = %message.replace('\n', " "), "notifying the service manager");
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            if !self.warned {
                self.warned = true;
                tracing::warn!(error = %e, "cannot notify the service manager through NOTIFY_SOCKET");
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC=` wants it.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_keys_relaunch_uses() {
        let n = Note::parse(b"READY=1\nSTATUS=warming up\nEXTEND_TIMEOUT_USEC=5000000\nMAINPID=42\nERRNO=2\nX_OTHER=1").unwrap();
        assert!(n.ready);
        assert_eq!(n.status.as_deref(), Some("warming up"));
        assert_eq!(n.extend_timeout, Some(Duration::from_secs(5)));
        assert_eq!(n.mainpid, Some(42));
        assert_eq!(n.errno, Some(2));
        assert!(!n.stopping && !n.reloading);
        let n = Note::parse(b"STOPPING=1\nRELOADING=1\n").unwrap();
        assert!(n.stopping && n.reloading && !n.ready);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Note::parse(b""), None);
        assert_eq!(Note::parse(b"\xff\xfe\x00READY=1"), None);
        assert_eq!(Note::parse(b"hello world"), None);
        assert_eq!(Note::parse(b"FOO=1\nBAR=2"), None);
        assert_eq!(Note::parse(b"EXTEND_TIMEOUT_USEC=soon"), None);
        assert_eq!(Note::parse(b"MAINPID=-3"), None);
        // READY=0 is understood, and is not ready.
        assert!(!Note::parse(b"READY=0").unwrap().ready);
    }

    #[test]
    fn status_is_bounded() {
        let long = format!("STATUS={}", "x".repeat(5000));
        assert_eq!(
            Note::parse(long.as_bytes()).unwrap().status.unwrap().len(),
            512
        );
    }

    #[test]
    fn receives_with_credentials_and_drops_oversize() {
        let sock = NotifySocket::bind(None).unwrap();
        let path = PathBuf::from(sock.env_value());
        let dir = path.parent().unwrap().to_owned();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let client = UnixDatagram::unbound().unwrap();
        let addr = SocketAddr::from_pathname(&path).unwrap();
        client.send_to_addr(b"READY=1\nSTATUS=ok", &addr).unwrap();
        client
            .send_to_addr(&vec![b'A'; MAX_MESSAGE + 10], &addr)
            .unwrap();
        client.send_to_addr(b"\x00\x01garbage", &addr).unwrap();
        client.send_to_addr(b"STATUS=second", &addr).unwrap();
        let got = sock.receive();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].pid.as_raw() as u32, std::process::id());
        assert!(got[0].note.ready);
        assert_eq!(got[1].note.status.as_deref(), Some("second"));
        assert!(sock.receive().is_empty());
        drop(sock);
        assert!(
            !dir.exists(),
            "the private directory is removed with the socket"
        );
    }

    #[test]
    fn barrier_fds_stay_open_until_the_message_is_dropped() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        let sock = NotifySocket::bind(None).unwrap();
        let addr = nix::sys::socket::UnixAddr::new(&PathBuf::from(sock.env_value())).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let hup = |fd: &std::os::fd::OwnedFd| {
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap();
            fds[0]
                .revents()
                .unwrap()
                .contains(nix::poll::PollFlags::POLLHUP)
        };
        // READY=1 with an fd, then a bare BARRIER=1 with another, as systemd-notify sends.
        let mut readers = Vec::new();
        for message in [&b"READY=1"[..], b"BARRIER=1"] {
            let (rd, wr) = nix::unistd::pipe().unwrap();
            let fds = [wr.as_raw_fd()];
            sendmsg(
                client.as_raw_fd(),
                &[io::IoSlice::new(message)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                Some(&addr),
            )
            .unwrap();
            drop(wr);
            readers.push(rd);
        }
        let got = sock.receive();
        assert_eq!(got.len(), 1);
        assert!(got[0].note.ready);
        assert!(
            !hup(&readers[0]) && !hup(&readers[1]),
            "the sender's barrier is not answered before the message is handled"
        );
        drop(got);
        assert!(
            hup(&readers[0]) && hup(&readers[1]),
            "answered once dropped"
        );
    }

    #[test]
    fn ancestry() {
        let me = Pid::this();
        assert_eq!(owning_child(me, &[me]), Some(me));
        let parent = parent_of(me).unwrap();
        assert_eq!(owning_child(me, &[parent]), Some(parent));
        assert_eq!(owning_child(me, &[Pid::from_raw(i32::MAX)]), None);
    }
}
