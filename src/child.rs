//! The child side: what a Rust server run by relaunch (or by systemd socket activation) needs,
//! without the `listenfd` or an sd-notify crate.
//!
//! - [`Sockets::take`] takes the inherited sockets (`LISTEN_FDS` of them from fd 3, only when
//!   `LISTEN_PID` is this process's pid, named by `LISTEN_FDNAMES`), and hands them out by name
//!   as [`TcpListener`], [`UnixListener`], [`UdpSocket`] or [`UnixDatagram`]. A missing name,
//!   or a socket of another kind than asked for, is a [`ChildError`] that names it.
//! - [`ready`] says `READY=1` to `$NOTIFY_SOCKET` (`relaunch --ready notify`, systemd
//!   `Type=notify`), a path or an abstract `@name`; [`ready_fd`] writes the newline of
//!   `relaunch --ready fd:N` (s6's notification fd) and closes the fd.
//!
//! ```no_run
//! use relaunch::child::{self, Sockets};
//!
//! # fn main() -> Result<(), relaunch::child::ChildError> {
//! // First thing in main, before any thread: the variables are then also removed.
//! let mut sockets = Sockets::take()?;
//! let web = sockets.tcp_listener("web")?;   // relaunch --listen web=127.0.0.1:8080
//! let dns = sockets.udp_socket("dns")?;     // relaunch --listen dns=udp:127.0.0.1:5353
//! // ... set up, then:
//! child::ready()?;
//! # drop((web, dns)); Ok(()) }
//! ```
//!
//! # The `LISTEN_*` variables
//!
//! Left in the environment, `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` would reach the
//! server's own subprocesses (harmless under `LISTEN_PID`'s check, but untidy). Removing a
//! variable is sound only while no other thread can read the environment:
//! `std::env::remove_var` races with `getenv(3)` in other threads, and the 2024 edition of Rust
//! makes it `unsafe`. So [`Sockets::take`] removes them **only when the process has a single
//! thread** (counted in `/proc/self/task`), which is the case when it is called first thing in
//! `main`; otherwise it leaves them and reports it in [`Sockets::env_removed`]. Either way the
//! sockets are taken at most once per process: a second [`Sockets::take`] returns no sockets,
//! and the taken ones are close-on-exec, so no subprocess inherits them.

use std::fmt;
use std::io::{self, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockRef, Type};

use crate::sockets::activation::{parse_env, LISTEN_FDS_START};
use crate::sys;

/// The variables of socket activation, removed by [`Sockets::take`] when that is sound.
pub const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Set once the activation sockets of this process were taken.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// What went wrong taking a socket or saying the server is ready.
#[derive(Debug)]
pub enum ChildError {
    /// The socket-activation variables are meant for this process but malformed.
    Environment(String),
    /// No remaining socket has this name.
    Missing {
        /// The name asked for.
        name: String,
        /// The names of the sockets still there, in order.
        available: Vec<String>,
    },
    /// The socket named `name` is not of the kind asked for.
    WrongKind {
        /// Its name.
        name: String,
        /// The fd it arrived at.
        fd: RawFd,
        /// What was asked for, e.g. "a TCP listener".
        expected: &'static str,
        /// What it is, e.g. "a UDP socket".
        found: String,
    },
    /// An inherited fd could not be taken, or readiness could not be sent.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Environment(msg) => f.write_str(msg),
            ChildError::Missing { name, available } if available.is_empty() => write!(
                f,
                "no inherited socket named {name:?}: this process has none (LISTEN_FDS is unset, LISTEN_PID is not this process, or they were taken already)"
            ),
            ChildError::Missing { name, available } => write!(
                f,
                "no inherited socket named {name:?} (inherited: {})",
                available
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ChildError::WrongKind {
                name,
                fd,
                expected,
                found,
            } => write!(
                f,
                "inherited socket {name:?} (fd {fd}) is {found}, not {expected}"
            ),
            ChildError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for ChildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChildError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One inherited socket, until it is handed out.
#[derive(Debug)]
struct Slot {
    name: String,
    number: RawFd,
    fd: Option<OwnedFd>,
}

/// The sockets this process inherited by socket activation, handed out by name.
#[derive(Debug, Default)]
pub struct Sockets {
    slots: Vec<Slot>,
    env_removed: bool,
}

/// The kinds of socket [`Sockets`] hands out as std types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TcpListener,
    UnixListener,
    Udp,
    UnixDatagram,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::TcpListener => "a TCP listener",
            Kind::UnixListener => "a unix stream listener",
            Kind::Udp => "a UDP socket",
            Kind::UnixDatagram => "a unix datagram socket",
        }
    }
}

impl Sockets {
    /// Takes the sockets this process inherited: `LISTEN_FDS` of them from fd 3, when
    /// `LISTEN_PID` is this process's pid, named by `LISTEN_FDNAMES` (each `unknown` without
    /// it). Without the variables, or when they are meant for another process, there are no
    /// sockets (not an error: [`Sockets::is_empty`]).
    ///
    /// Call it first thing in `main`, before any thread exists: then the `LISTEN_*` variables
    /// are removed from the environment too (see the [module docs](self)). Later it still works,
    /// but leaves them ([`Sockets::env_removed`] says which happened). The sockets are taken
    /// once per process; a second call finds none. Each is made close-on-exec.
    ///
    /// Fails if the variables are meant for this process but malformed, or if a socket they
    /// announce is not open.
    pub fn take() -> Result<Sockets, ChildError> {
        let var = |k: &str| std::env::var(k).ok();
        let names = parse_env(
            std::process::id(),
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(u64::MAX, |(_, hard)| hard),
        )
        .map_err(|msg| ChildError::Environment(msg.replace("relaunch's pid", "this process")))?;
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Sockets::default());
        }
        let mut slots = Vec::with_capacity(names.len());
        for (i, name) in names.into_iter().enumerate() {
            let number = LISTEN_FDS_START + i as RawFd;
            let fd = sys::fds::adopt_inherited(number).map_err(|source| ChildError::Io {
                what: format!("taking inherited socket {name:?} at fd {number}"),
                source,
            })?;
            slots.push(Slot {
                name,
                number,
                fd: Some(fd),
            });
        }
        let env_removed = sys::env::remove_vars_if_single_threaded(&LISTEN_VARS);
        Ok(Sockets { slots, env_removed })
    }

    /// Whether [`Sockets::take`] removed the `LISTEN_*` variables from the environment (it
    /// does when the process had a single thread).
    pub fn env_removed(&self) -> bool {
        self.env_removed
    }

    /// The names of the sockets not handed out yet, in the order they were passed.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.fd.is_some())
            .map(|s| s.name.clone())
            .collect()
    }

    /// The names of every inherited socket, handed out or not, as `LISTEN_FDNAMES` listed them.
    pub fn all_names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// How many sockets are not handed out yet.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.fd.is_some()).count()
    }

    /// Whether every socket was handed out (or none was inherited).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first remaining socket named `name`, as a raw owned fd of any kind.
    pub fn fd(&mut self, name: &str) -> Result<OwnedFd, ChildError> {
        match self
            .slots
            .iter_mut()
            .find(|s| s.name == name && s.fd.is_some())
        {
            Some(slot) => Ok(slot.fd.take().expect("checked above")),
            None => Err(self.missing(name)),
        }
    }

    /// The first remaining socket named `name`, which must be a listening TCP socket.
    pub fn tcp_listener(&mut self, name: &str) -> Result<TcpListener, ChildError> {
        self.of_kind(name, Kind::TcpListener).map(TcpListener::from)
    }

    /// The first remaining socket named `name`, which must be a listening unix stream socket.
    pub fn unix_listener(&mut self, name: &str) -> Result<UnixListener, ChildError> {
        self.of_kind(name, Kind::UnixListener)
            .map(UnixListener::from)
    }

    /// The first remaining socket named `name`, which must be a UDP socket.
    pub fn udp_socket(&mut self, name: &str) -> Result<UdpSocket, ChildError> {
        self.of_kind(name, Kind::Udp).map(UdpSocket::from)
    }

    /// The first remaining socket named `name`, which must be a unix datagram socket.
    pub fn unix_datagram(&mut self, name: &str) -> Result<UnixDatagram, ChildError> {
        self.of_kind(name, Kind::UnixDatagram)
            .map(UnixDatagram::from)
    }

    /// Every remaining TCP listener, with its name, in order; other sockets stay.
    pub fn tcp_listeners(&mut self) -> Vec<(String, TcpListener)> {
        let mut out = Vec::new();
        for slot in &mut self.slots {
            if let Some(fd) = &slot.fd {
                if kind_of(fd).ok() == Some(Kind::TcpListener) {
                    let fd = slot.fd.take().expect("checked above");
                    out.push((slot.name.clone(), TcpListener::from(fd)));
                }
            }
        }
        out
    }

    fn of_kind(&mut self, name: &str, want: Kind) -> Result<OwnedFd, ChildError> {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.name == name && s.fd.is_some())
        else {
            return Err(self.missing(name));
        };
        let fd = slot.fd.as_ref().expect("checked above");
        match kind_of(fd) {
            Ok(kind) if kind == want => Ok(slot.fd.take().expect("checked above")),
            Ok(kind) => Err(ChildError::WrongKind {
                name: name.to_owned(),
                fd: slot.number,
                expected: want.describe(),
                found: kind.describe().to_owned(),
            }),
            Err(found) => Err(ChildError::WrongKind {
                name: name.to_owned(),
                fd: slot.number,
                expected: want.describe(),
                found,
            }),
        }
    }

    fn missing(&self, name: &str) -> ChildError {
        ChildError::Missing {
            name: name.to_owned(),
            available: self.names(),
        }
    }

    /// Sockets from fds the caller owns, as if inherited under these names (for tests).
    #[cfg(test)]
    fn from_fds(fds: Vec<(&str, OwnedFd)>) -> Sockets {
        use std::os::fd::AsRawFd;
        Sockets {
            slots: fds
                .into_iter()
                .map(|(name, fd)| Slot {
                    name: name.to_owned(),
                    number: fd.as_raw_fd(),
                    fd: Some(fd),
                })
                .collect(),
            env_removed: false,
        }
    }
}

/// What kind of socket `fd` is (`SO_DOMAIN`, `SO_TYPE`, `SO_ACCEPTCONN`), or a description
/// of what it is instead.
fn kind_of(fd: &OwnedFd) -> Result<Kind, String> {
    let sock = SockRef::from(fd);
    let ty = sock.r#type().map_err(|e| format!("not a socket ({e})"))?;
    let domain = sock
        .domain()
        .map_err(|e| format!("a socket of unknown family ({e})"))?;
    let inet = domain == Domain::IPV4 || domain == Domain::IPV6;
    let unix = domain == Domain::UNIX;
    let listening = sock.is_listener().unwrap_or(false);
    let family = if inet {
        "an IP"
    } else if unix {
        "a unix"
    } else {
        "a"
    };
    match (ty, listening) {
        (Type::STREAM, true) if inet => Ok(Kind::TcpListener),
        (Type::STREAM, true) if unix => Ok(Kind::UnixListener),
        (Type::DGRAM, _) if inet => Ok(Kind::Udp),
        (Type::DGRAM, _) if unix => Ok(Kind::UnixDatagram),
        (Type::STREAM, false) => Err(format!("{family} stream socket that is not listening")),
        (Type::SEQPACKET, true) => Err(format!("{family} seqpacket listener")),
        _ => Err(format!("{family} socket of type {ty:?}")),
    }
}

/// Says `READY=1` to the service manager in `$NOTIFY_SOCKET` (`relaunch --ready notify`,
/// systemd `Type=notify`). Returns whether there was one to tell: without `NOTIFY_SOCKET` it
/// does nothing and returns `Ok(false)`.
pub fn ready() -> Result<bool, ChildError> {
    notify("READY=1")
}

/// Sends `state` (newline-separated `KEY=VALUE` lines, e.g. `STATUS=warming up`) to
/// `$NOTIFY_SOCKET`, a path or an abstract socket (`@name`). Returns whether it was sent:
/// `Ok(false)` when `NOTIFY_SOCKET` is unset or empty.
pub fn notify(state: &str) -> Result<bool, ChildError> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
        Some(addr) => send_notify(addr.as_bytes(), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notify socket at `addr` (a path, or `@` and an abstract name).
fn send_notify(addr: &[u8], state: &str) -> Result<(), ChildError> {
    let shown = String::from_utf8_lossy(addr).into_owned();
    let io = |source: io::Error| ChildError::Io {
        what: format!("sending {state:?} to NOTIFY_SOCKET={shown:?}"),
        source,
    };
    let to = match addr.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(addr)),
    }
    .map_err(io)?;
    let socket = UnixDatagram::unbound().map_err(io)?;
    socket
        .send_to_addr(state.as_bytes(), &to)
        .map(|_| ())
        .map_err(io)
}

/// Says the server is ready on fd `fd` (`relaunch --ready fd:N`, s6's notification fd): writes
/// a newline to it and closes it. The fd must have been inherited from the parent; it is
/// taken once, and a second call fails with `EBADF`.
pub fn ready_fd(fd: RawFd) -> Result<(), ChildError> {
    let io = |source: io::Error| ChildError::Io {
        what: format!("writing readiness to fd {fd}"),
        source,
    };
    let owned = sys::fds::adopt_inherited(fd).map_err(io)?;
    let mut pipe = std::fs::File::from(owned);
    pipe.write_all(b"\n").map_err(io)
}

/// Takes ownership of fd `fd`, a socket inherited from the parent outside socket activation
/// (`--fd N` as circus passes it), made close-on-exec. Fails with `EBADF` if `fd` is not open,
/// was not inherited, or was taken already.
pub fn inherited_fd(fd: RawFd) -> Result<OwnedFd, ChildError> {
    sys::fds::adopt_inherited(fd).map_err(|source| ChildError::Io {
        what: format!("taking inherited fd {fd}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn fd<T: Into<OwnedFd>>(t: T) -> OwnedFd {
        t.into()
    }

    fn every_kind(dir: &std::path::Path) -> Sockets {
        Sockets::from_fds(vec![
            ("web", fd(TcpListener::bind("127.0.0.1:0").unwrap())),
            ("dns", fd(UdpSocket::bind("127.0.0.1:0").unwrap())),
            ("admin", fd(UnixListener::bind(dir.join("a.sock")).unwrap())),
            ("logs", fd(UnixDatagram::bind(dir.join("d.sock")).unwrap())),
            ("pair", fd(UnixStream::pair().unwrap().0)),
        ])
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "relaunch-child-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn each_kind_by_name() {
        let dir = tempdir("kinds");
        let mut s = every_kind(&dir);
        assert_eq!(s.len(), 5);
        assert!(s.tcp_listener("web").unwrap().local_addr().is_ok());
        assert!(s.udp_socket("dns").unwrap().local_addr().is_ok());
        assert!(s.unix_listener("admin").is_ok());
        assert!(s.unix_datagram("logs").is_ok());
        assert_eq!(s.names(), vec!["pair"]);
        assert!(s.fd("pair").is_ok());
        assert!(s.is_empty());
        assert_eq!(s.all_names().len(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_kind_names_the_socket() {
        let dir = tempdir("wrong");
        let mut s = every_kind(&dir);
        let e = s.tcp_listener("dns").unwrap_err().to_string();
        assert!(
            e.starts_with("inherited socket \"dns\" (fd ")
                && e.ends_with(") is a UDP socket, not a TCP listener"),
            "{e}"
        );
        let e = s.udp_socket("web").unwrap_err().to_string();
        assert!(e.ends_with("is a TCP listener, not a UDP socket"), "{e}");
        let e = s.unix_listener("logs").unwrap_err().to_string();
        assert!(
            e.ends_with("is a unix datagram socket, not a unix stream listener"),
            "{e}"
        );
        let e = s.tcp_listener("pair").unwrap_err().to_string();
        assert!(
            e.ends_with("is a unix stream socket that is not listening, not a TCP listener"),
            "{e}"
        );
        // A refused socket stays: it can still be taken as what it is.
        assert!(s.udp_socket("dns").is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_names_the_socket_and_what_there_is() {
        let dir = tempdir("missing");
        let mut s = every_kind(&dir);
        s.tcp_listener("web").unwrap();
        let e = s.tcp_listener("web").unwrap_err().to_string();
        assert_eq!(
            e,
            "no inherited socket named \"web\" (inherited: \"dns\", \"admin\", \"logs\", \"pair\")"
        );
        let e = Sockets::default()
            .udp_socket("dns")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no inherited socket named \"dns\": this process has none"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tcp_listeners_takes_only_tcp_listeners() {
        let dir = tempdir("all-tcp");
        let mut s = every_kind(&dir);
        let tcp = s.tcp_listeners();
        assert_eq!(tcp.len(), 1);
        assert_eq!(tcp[0].0, "web");
        assert_eq!(s.names(), vec!["dns", "admin", "logs", "pair"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn notify_reaches_path_and_abstract_sockets() {
        let dir = tempdir("notify");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str().as_bytes(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("relaunch-child-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send_notify(format!("@{name}").as_bytes(), "READY=1\nSTATUS=up").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");

        let e = send_notify(dir.join("nobody").as_os_str().as_bytes(), "READY=1")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sending \"READY=1\" to NOTIFY_SOCKET="),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
