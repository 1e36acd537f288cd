//! Opening the listening sockets: binding TCP, UDP and unix sockets, and taking over inherited
//! ones.
//!
//! The master opens every socket once, at startup, and keeps it open for its whole life:
//! clients of a restarting server wait in the kernel's accept queue (or, for datagram sockets,
//! in the socket's receive queue) instead of being refused. Sockets are close-on-exec in the
//! master; the spawn module places them at fds 3.. in each child.
//!
//! - **TCP** sockets get `SO_REUSEADDR` (so a restarted master can bind while old connections
//!   sit in TIME_WAIT). **UDP** sockets do not: on UDP it would let a second process bind the
//!   same port.
//! - **`SO_REUSEPORT`** is off unless asked for (`?reuseport=true`, with a warning): one shared
//!   socket is the design, and a reuseport group drops the queued connections of a member that
//!   closes.
//! - **Backlog**: `--backlog` (default 4096) or `?backlog=N`, capped by `net.core.somaxconn`.
//! - **Unix socket files**: the parent directory must exist. A stale socket file (a connect is
//!   refused: nobody listens) is removed before binding; a live one is an error, and a file that
//!   is not a socket is never removed. `mode`, `owner` and `group` are applied between `bind`
//!   and `listen`, so no client can connect before they are in place, and long before any
//!   child starts. None of it looks the file up by name again (a symlink swapped in by someone
//!   who can write the directory must not redirect it): the mode is given to the socket before
//!   `bind` (Linux creates the file with it, less the umask), then the file `bind` created is
//!   opened with `O_PATH|O_NOFOLLOW`, the mode and ids are set on that node through
//!   `/proc/self/fd`, and checked on it. The stale check, `bind` and `listen` run under an
//!   exclusive `flock` of the directory, so two relaunches starting on the same path at once
//!   cannot each take the other's bound-but-not-yet-listening file for stale (a program other
//!   than relaunch that removes socket files does not take that lock). The file is removed when the [`Listener`] is dropped, i.e. when relaunch
//!   exits after its children, and never during reloads; and only if the path still holds the
//!   same file (device and inode) that relaunch created.
//! - **Inherited sockets** (`fd:N`, socket activation) must be sockets; stream and seqpacket
//!   ones must be listening. They are passed on as they are, without options.
//!
//! Each socket costs the master one fd and a starting child briefly two, so
//! [`ensure_fd_limit`] raises the soft `RLIMIT_NOFILE` to the hard limit when the sockets need
//! more than the soft limit allows. It does not raise it otherwise: children inherit the limit,
//! and a server using `select()` breaks with fds above 1024 (the reason systemd keeps the soft
//! limit of services at 1024).

pub mod activation;
mod limits;

pub use limits::ensure_open_files;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{Gid, Group, Uid, User};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tracing::{debug, info, warn};

use crate::spec::{
    Family, Host, Id, ListenAddr, ListenSpec, Proto, SocketOptions, SpecError, UnixKind, UnixPath,
    FDNAME_MAX,
};
use activation::{adopt, Inherited};

/// A listening (or, for datagrams, bound) socket owned by the master.
#[derive(Debug)]
pub struct Listener {
    /// The name passed to children in `LISTEN_FDNAMES`.
    pub name: String,
    /// The socket kind, for logs: `tcp`, `udp`, `unix`, `unixgram`, `unixpacket` (other kinds
    /// can only come from inherited sockets: `sctp`, `vsock`, `netlink`, `socket`).
    pub kind: &'static str,
    /// The address it is bound to, with port 0 resolved; unix socket files as absolute paths,
    /// abstract sockets as `@name`.
    pub local_addr: String,
    /// The effective listen backlog; `None` for datagram sockets and inherited sockets.
    pub backlog: Option<u32>,
    fd: OwnedFd,
    /// The socket file relaunch created, removed when the last copy of this listener (see
    /// [`Listener::try_clone`]) is dropped.
    #[cfg_attr(not(test), allow(dead_code))]
    file: Option<std::sync::Arc<SocketFile>>,
    /// The `--listen` address it was opened for (`None`: a socket-activation socket passed on
    /// without a `systemd:NAME` picking it). An edited configuration file keeps the socket of
    /// an address that did not change.
    pub origin: Option<ListenAddr>,
}

impl Listener {
    /// The socket's file descriptor in the master (close-on-exec).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket file relaunch created for this socket, if any (removed when it is dropped).
    #[cfg(test)]
    pub fn socket_file(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// Another handle on the same open socket (`dup`: the same socket, the same inode), named
    /// `name`. Its socket file is removed once every copy is dropped.
    pub fn try_clone(&self, name: String) -> io::Result<Listener> {
        Ok(Listener {
            name,
            kind: self.kind,
            local_addr: self.local_addr.clone(),
            backlog: self.backlog,
            fd: self.fd.try_clone()?,
            file: self.file.clone(),
            origin: self.origin.clone(),
        })
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The kernel's cap on listen backlogs (`net.core.somaxconn`), if readable.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Binds every spec, in order, when nothing was inherited (see [`open_all`]).
pub fn bind_all(specs: &[ListenSpec], backlog: u32) -> Result<Vec<Listener>> {
    open_all(specs, backlog, Inherited::default())
}

/// Opens the sockets to pass to children, in the order they get fds 3, 4, ...: the sockets of
/// socket activation first (all of them, unless `specs` picks some with `systemd:NAME`), then
/// one per spec. `backlog` applies to stream sockets without `?backlog=`.
///
/// Users and groups are looked up, `systemd:NAME` checked and the fd limit raised before
/// anything is bound. On error nothing stays bound (the sockets opened so far are dropped, and
/// their socket files removed), and the message names the address and what to do. A
/// [`SpecError`] in the chain means the command line asked for something impossible (exit 2).
pub fn open_all(specs: &[ListenSpec], backlog: u32, inherited: Inherited) -> Result<Vec<Listener>> {
    let Inherited {
        mut activation,
        mut fds,
    } = inherited;
    if specs.is_empty() && activation.is_empty() {
        return Err(SpecError::new(
            "no sockets to pass: give at least one --listen [NAME=]ADDR, or start relaunch through systemd socket activation",
        )
        .into());
    }
    let ids = specs.iter().map(resolve_ids).collect::<Result<Vec<_>>>()?;
    let available = || {
        let names: Vec<&str> = activation.iter().map(|a| a.name.as_str()).collect();
        names.join(", ")
    };
    let picking = specs
        .iter()
        .any(|s| matches!(s.addr, ListenAddr::Systemd(_)));
    let mut count = specs.len();
    for spec in specs {
        let ListenAddr::Systemd(name) = &spec.addr else {
            continue;
        };
        let matches = activation.iter().filter(|a| a.name == *name).count();
        if activation.is_empty() {
            return Err(SpecError::new(format!(
                "--listen {spec}: relaunch was not started by socket activation (no LISTEN_FDS for its pid), so no socket is named {name:?}"
            ))
            .into());
        }
        if matches == 0 {
            return Err(SpecError::new(format!(
                "--listen {spec}: socket activation passed no socket named {name:?} (it passed: {})",
                available()
            ))
            .into());
        }
        count += matches - 1;
    }
    if !picking {
        count += activation.len();
    }
    ensure_fd_limit(count)?;
    // A socket of socket activation bound to an address a spec lists takes that spec's place
    // (instead of a second bind of the same address, which would fail).
    let mut by_address: Vec<Option<activation::ActivationSocket>> = specs
        .iter()
        .map(|spec| match &spec.addr {
            ListenAddr::Inet { .. } | ListenAddr::Unix { .. } => activation
                .iter()
                .position(|a| activation::bound_to(a.fd.as_fd(), &spec.addr))
                .map(|k| activation.remove(k)),
            _ => None,
        })
        .collect();

    let cap = somaxconn();
    let capped = |b: u32| cap.map_or(b, |c| b.min(c.max(1)));
    let mut listeners = Vec::with_capacity(count);
    if !picking {
        for a in activation.drain(..) {
            let origin = format!("socket activation fd {} ({:?})", a.number, a.name);
            listeners.push(adopt(a.fd, &origin, a.name, false)?);
        }
    }
    let mut picked = Vec::new();
    for (k, (spec, ids)) in specs.iter().zip(ids).enumerate() {
        let backlog = capped(spec.options.backlog.unwrap_or(backlog));
        let before = listeners.len();
        match &spec.addr {
            ListenAddr::Inet { .. } | ListenAddr::Unix { .. } if by_address[k].is_some() => {
                if let Some(a) = by_address[k].take() {
                    let origin = format!("--listen {spec} (socket activation fd {})", a.number);
                    let name = spec.name.clone().unwrap_or_else(|| a.name.clone());
                    listeners.push(adopt(a.fd, &origin, name, false)?);
                }
            }
            ListenAddr::Systemd(name) => {
                for a in activation.iter().filter(|a| a.name == *name) {
                    let fd = a.fd.try_clone().with_context(|| {
                        format!("duplicating socket-activation fd {}", a.number)
                    })?;
                    let origin = format!("--listen {spec} (socket activation fd {})", a.number);
                    let name = spec.name.clone().unwrap_or_else(|| a.name.clone());
                    listeners.push(adopt(fd, &origin, name, false)?);
                    picked.push(a.number);
                }
            }
            ListenAddr::Fd(n) => {
                let fd = fds.remove(n).ok_or_else(|| {
                    SpecError::new(format!(
                        "--listen {spec}: fd {n} was not taken over at startup (see activation::take_inherited)"
                    ))
                })?;
                let name = spec.name.clone().unwrap_or_else(|| format!("fd-{n}"));
                listeners.push(adopt(fd, &format!("--listen {spec}"), name, true)?);
            }
            ListenAddr::Inet {
                proto,
                family,
                host,
                port,
            } => listeners.push(bind_inet(spec, *proto, *family, host, *port, backlog)?),
            ListenAddr::Unix { kind, path } => {
                listeners.push(bind_unix(spec, *kind, path, backlog, ids)?)
            }
        }
        for l in &mut listeners[before..] {
            l.origin = Some(spec.addr.clone());
        }
    }
    if picking {
        for a in activation.iter().filter(|a| !picked.contains(&a.number)) {
            info!(
                fd = a.number,
                name = %a.name,
                "not passing this socket-activation socket on: no --listen systemd:NAME picks it"
            );
        }
    }
    Ok(listeners)
}

/// Logs one `listening` line per socket, with the fd it has in children.
pub fn log_listening(listeners: &[Listener]) {
    for (i, l) in listeners.iter().enumerate() {
        let backlog = l.backlog.map_or_else(|| "-".to_owned(), |b| b.to_string());
        info!(
            fd = 3 + i,
            name = %l.name,
            kind = %l.kind,
            backlog = %backlog,
            addr = %l.local_addr,
            "listening"
        );
    }
}

/// Makes sure `sockets` sockets fit under `RLIMIT_NOFILE`: the master holds one fd per socket,
/// and a child being started briefly up to two (its copy and the one placed at 3..), plus a few
/// of relaunch's own. Raises the soft limit to the hard limit if that is needed; fails, naming
/// the numbers, if even the hard limit is too low.
pub fn ensure_fd_limit(sockets: usize) -> Result<()> {
    let needed = 2 * sockets as u64 + 64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .context("reading the open-file limit (RLIMIT_NOFILE)")?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(anyhow!(
            "{sockets} sockets need up to {needed} open files, but the open-file limit (RLIMIT_NOFILE) is {soft} and its hard limit {hard}; raise the hard limit (ulimit -Hn as root, or LimitNOFILE= in a systemd unit)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).with_context(|| {
        format!("raising the open-file limit (RLIMIT_NOFILE) from {soft} to {hard}")
    })?;
    info!(
        from = soft,
        to = hard,
        sockets,
        "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TCP and UDP

fn bind_inet(
    spec: &ListenSpec,
    proto: Proto,
    family: Family,
    host: &Host,
    port: u16,
    backlog: u32,
) -> Result<Listener> {
    let opts = &spec.options;
    let backlog = (proto == Proto::Tcp).then_some(backlog);
    let socket = match host {
        Host::Ip(ip) => bind_inet_addr(
            proto,
            SocketAddr::new(*ip, port),
            opts,
            backlog,
            opts.v6only,
        )?,
        Host::Name(name) => {
            let addr = resolve_one(name, port, family)?;
            if addr.is_ipv4() && opts.v6only.is_some() {
                return Err(SpecError::new(format!(
                    "option \"v6only\" in --listen {spec} applies only to IPv6 addresses, but {name:?} resolves to {}",
                    addr.ip()
                ))
                .into());
            }
            bind_inet_addr(proto, addr, opts, backlog, opts.v6only)?
        }
        Host::Any => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match family {
                Family::V4 => bind_inet_addr(proto, v4, opts, backlog, None)?,
                Family::V6 => {
                    bind_inet_addr(proto, v6, opts, backlog, Some(opts.v6only.unwrap_or(true)))?
                }
                Family::Any => {
                    let only = opts.v6only.unwrap_or(false);
                    match try_bind_inet(proto, v6, opts, backlog, Some(only)) {
                        Ok(s) => s,
                        Err(f)
                            if !only
                                && matches!(
                                    f.error.raw_os_error(),
                                    Some(
                                        libc::EAFNOSUPPORT
                                            | libc::EADDRNOTAVAIL
                                            | libc::EPROTONOSUPPORT
                                    )
                                ) =>
                        {
                            debug!(error = %f.error, "no IPv6 on this host; binding 0.0.0.0 instead of [::]");
                            bind_inet_addr(proto, v4, opts, backlog, None)?
                        }
                        Err(f) => return Err(f.into_error(proto, v6)),
                    }
                }
            }
        }
    };
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| anyhow!("reading the address of the socket for {spec}"))?;
    if opts.reuseport == Some(true) {
        warn!(
            addr = %local,
            "reuseport=true: if another process joins this port's reuseport group and later closes its socket, the connections queued on that socket are dropped; relaunch itself shares one socket and does not need SO_REUSEPORT"
        );
    }
    let name = match &spec.name {
        Some(name) => name.clone(),
        None => default_inet_name(proto, family, host, &local),
    };
    Ok(Listener {
        name,
        kind: match proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        },
        local_addr: local.to_string(),
        backlog,
        fd: socket.into(),
        file: None,
        origin: None,
    })
}

fn resolve_one(name: &str, port: u16, family: Family) -> Result<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving host name {name:?}"))?
        .filter(|a| match family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    addrs.dedup();
    let which = match family {
        Family::Any => "",
        Family::V4 => " IPv4",
        Family::V6 => " IPv6",
    };
    match addrs.as_slice() {
        [one] => Ok(*one),
        [] => Err(anyhow!("host name {name:?} resolves to no{which} address")),
        many => {
            let list: Vec<String> = many.iter().map(|a| a.ip().to_string()).collect();
            Err(anyhow!(
                "host name {name:?} resolves to several{which} addresses ({}); listen on one of them explicitly, e.g. --listen {}",
                list.join(", "),
                many[0]
            ))
        }
    }
}

/// A failed step of creating a socket.
struct Step {
    /// What was being done: `bind`, `listen`, or the option being set.
    what: &'static str,
    error: io::Error,
}

impl Step {
    fn into_error(self, proto: Proto, addr: SocketAddr) -> anyhow::Error {
        match self.what {
            "bind" | "socket" => bind_error(proto, addr, self.error),
            what => anyhow!("{what} on {addr}: {}", self.error),
        }
    }
}

trait StepExt<T> {
    fn step(self, what: &'static str) -> Result<T, Step>;
}

impl<T> StepExt<T> for io::Result<T> {
    fn step(self, what: &'static str) -> Result<T, Step> {
        self.map_err(|error| Step { what, error })
    }
}

fn bind_inet_addr(
    proto: Proto,
    addr: SocketAddr,
    opts: &SocketOptions,
    backlog: Option<u32>,
    v6only: Option<bool>,
) -> Result<Socket> {
    try_bind_inet(proto, addr, opts, backlog, v6only).map_err(|f| f.into_error(proto, addr))
}

fn try_bind_inet(
    proto: Proto,
    addr: SocketAddr,
    opts: &SocketOptions,
    backlog: Option<u32>,
    v6only: Option<bool>,
) -> Result<Socket, Step> {
    let (ty, protocol) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
    };
    // socket2 creates sockets with SOCK_CLOEXEC on Linux: nothing leaks into children unless
    // the spawn module places it at 3.. on purpose.
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol)).step("socket")?;
    if proto == Proto::Tcp {
        socket
            .set_reuse_address(true)
            .step("setting SO_REUSEADDR")?;
    }
    if let Some(only) = v6only.filter(|_| addr.is_ipv6()) {
        socket.set_only_v6(only).step("setting v6only")?;
    }
    if let Some(on) = opts.reuseport {
        socket.set_reuse_port(on).step("setting reuseport")?;
    }
    if let Some(on) = opts.nodelay {
        socket.set_nodelay(on).step("setting nodelay")?;
    }
    if let Some(on) = opts.keepalive {
        socket.set_keepalive(on).step("setting keepalive")?;
    }
    if let Some(on) = opts.freebind {
        if addr.is_ipv6() {
            socket.set_freebind_ipv6(on).step("setting freebind")?;
        } else {
            socket.set_freebind(on).step("setting freebind")?;
        }
    }
    set_buffers(&socket, opts)?;
    socket.bind(&addr.into()).step("bind")?;
    if let Some(backlog) = backlog {
        socket
            .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
            .step("listen")?;
    }
    Ok(socket)
}

fn set_buffers(socket: &Socket, opts: &SocketOptions) -> Result<(), Step> {
    if let Some(n) = opts.rcvbuf {
        socket
            .set_recv_buffer_size(n as usize)
            .step("setting rcvbuf")?;
    }
    if let Some(n) = opts.sndbuf {
        socket
            .set_send_buffer_size(n as usize)
            .step("setting sndbuf")?;
    }
    Ok(())
}

fn bind_error(proto: Proto, addr: SocketAddr, e: io::Error) -> anyhow::Error {
    let (what, ss) = match proto {
        Proto::Tcp => ("", "ss -ltnp"),
        Proto::Udp => ("udp ", "ss -lunp"),
    };
    let hint = match e.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            format!("; another process is listening there (find it with `{ss}`)")
        }
        Some(libc::EACCES) => {
            "; ports below net.ipv4.ip_unprivileged_port_start need root or CAP_NET_BIND_SERVICE"
                .to_owned()
        }
        Some(libc::EADDRNOTAVAIL) => {
            "; no interface of this host has that address (freebind=true binds it anyway)"
                .to_owned()
        }
        _ => String::new(),
    };
    anyhow!("binding {what}{addr}: {e}{hint}")
}

/// A systemd-valid fd name for an internet socket without `NAME=`: `tcp-PORT` / `udp-PORT` for
/// all interfaces, `tcp-IP-PORT` otherwise (`:` in IPv6 addresses becomes `_`).
fn default_inet_name(proto: Proto, family: Family, host: &Host, local: &SocketAddr) -> String {
    let proto = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    match (host, family) {
        (Host::Any, Family::Any) => format!("{proto}-{}", local.port()),
        _ => format!(
            "{proto}-{}-{}",
            local.ip().to_string().replace(':', "_"),
            local.port()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Unix sockets

/// Owner and group of a socket file, looked up.
type Ids = (Option<Uid>, Option<Gid>);

/// Looks up `owner` and `group` of a spec. An unknown name is a usage error naming it.
fn resolve_ids(spec: &ListenSpec) -> Result<Ids> {
    let uid = match &spec.options.owner {
        None => None,
        Some(Id::Num(n)) => Some(Uid::from_raw(*n)),
        Some(Id::Name(name)) => match User::from_name(name) {
            Ok(Some(user)) => Some(user.uid),
            Ok(None) => {
                return Err(SpecError::new(format!(
                    "unknown user {name:?} in owner={name} of --listen {spec} (expected a user name from the user database or a numeric uid)"
                ))
                .into())
            }
            Err(e) => return Err(anyhow!("looking up user {name:?} for --listen {spec}: {e}")),
        },
    };
    let gid = match &spec.options.group {
        None => None,
        Some(Id::Num(n)) => Some(Gid::from_raw(*n)),
        Some(Id::Name(name)) => match Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid),
            Ok(None) => {
                return Err(SpecError::new(format!(
                    "unknown group {name:?} in group={name} of --listen {spec} (expected a group name from the group database or a numeric gid)"
                ))
                .into())
            }
            Err(e) => return Err(anyhow!("looking up group {name:?} for --listen {spec}: {e}")),
        },
    };
    Ok((uid, gid))
}

fn unix_type(kind: UnixKind) -> Type {
    match kind {
        UnixKind::Stream => Type::STREAM,
        UnixKind::Datagram => Type::DGRAM,
        UnixKind::SeqPacket => Type::SEQPACKET,
    }
}

fn kind_name(kind: UnixKind) -> &'static str {
    match kind {
        UnixKind::Stream => "unix",
        UnixKind::Datagram => "unixgram",
        UnixKind::SeqPacket => "unixpacket",
    }
}

fn bind_unix(
    spec: &ListenSpec,
    kind: UnixKind,
    path: &UnixPath,
    backlog: u32,
    ids: Ids,
) -> Result<Listener> {
    let backlog = (kind != UnixKind::Datagram).then_some(backlog);
    let opts = &spec.options;
    let mut dir_lock = None;
    let socket = Socket::new(Domain::UNIX, unix_type(kind), None)
        .with_context(|| format!("creating a {} socket", kind_name(kind)))?;
    set_buffers(&socket, opts).map_err(|f| anyhow!("{} on {path}: {}", f.what, f.error))?;
    let (local_addr, file, default_name) = match path {
        UnixPath::Abstract(name) => {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name.as_bytes());
            let addr = SockAddr::unix(OsStr::from_bytes(&bytes))
                .with_context(|| format!("abstract socket name @{name}"))?;
            socket.bind(&addr).map_err(|e| unix_bind_error(path, e))?;
            (
                format!("@{name}"),
                None,
                format!("{}-@{name}", kind_name(kind)),
            )
        }
        UnixPath::File(p) => {
            check_parent_dir(p)?;
            // Held until `listen`: another relaunch starting on the same path at the same
            // moment must not take this bound-but-not-yet-listening file for stale.
            dir_lock = Some(lock_parent_dir(p)?);
            remove_stale(p, kind)?;
            let addr =
                SockAddr::unix(p).with_context(|| format!("unix socket path {}", p.display()))?;
            if let Some(mode) = opts.mode {
                // On Linux the file bind creates takes the socket's own mode (less the umask):
                // it never has more permissions than asked for, not even for a moment.
                nix::sys::stat::fchmod(
                    socket.as_raw_fd(),
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                )
                .with_context(|| format!("setting mode {mode:o} on the socket for {path}"))?;
            }
            socket.bind(&addr).map_err(|e| unix_bind_error(path, e))?;
            // From here on, dropping `file` removes the socket file again.
            let (file, node) = SocketFile::created(p)?;
            set_file_options(p, &node, opts, ids)?;
            let file_name = p
                .file_name()
                .map_or_else(|| p.as_os_str().to_string_lossy(), |n| n.to_string_lossy());
            let name = format!("{}-{file_name}", kind_name(kind));
            (file.path.display().to_string(), Some(file), name)
        }
    };
    if let Some(backlog) = backlog {
        socket
            .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
            .map_err(|e| anyhow!("listen on {path}: {e}"))?;
    }
    drop(dir_lock);
    Ok(Listener {
        name: spec
            .name
            .clone()
            .unwrap_or_else(|| sanitize_name(&default_name)),
        kind: kind_name(kind),
        local_addr,
        backlog,
        fd: socket.into(),
        file: file.map(std::sync::Arc::new),
        origin: None,
    })
}

fn unix_bind_error(path: &UnixPath, e: io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => anyhow!("another process is listening on {path}"),
        Some(libc::EACCES) => anyhow!(
            "binding unix socket {path}: {e}; relaunch needs write and search permission on the directory"
        ),
        _ => anyhow!("binding unix socket {path}: {e}"),
    }
}

/// The directory a socket file goes into must exist: relaunch does not create directories.
fn check_parent_dir(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(anyhow!(
            "cannot create unix socket {}: {} is not a directory",
            path.display(),
            parent.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(anyhow!(
            "cannot create unix socket {}: directory {} does not exist (create it first, e.g. with RuntimeDirectory= in a systemd unit)",
            path.display(),
            parent.display()
        )),
        Err(e) => Err(anyhow!(
            "cannot create unix socket {}: checking directory {}: {e}",
            path.display(),
            parent.display()
        )),
    }
}

/// Removes a stale socket file at `path` (one nobody listens on: a connect is refused).
/// A live socket is an error; so is any file that is not a socket, which is never removed.
fn remove_stale(path: &Path, kind: UnixKind) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow!("checking {}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(anyhow!(
            "{} exists and is not a socket ({}); relaunch only replaces stale socket files, so remove it yourself if it is not needed",
            path.display(),
            describe_file_type(meta.mode())
        ));
    }
    let probe = Socket::new(Domain::UNIX, unix_type(kind), None)
        .with_context(|| format!("checking whether {} is in use", path.display()))?;
    probe
        .set_nonblocking(true)
        .with_context(|| format!("checking whether {} is in use", path.display()))?;
    let addr = SockAddr::unix(path)?;
    match probe.connect(&addr) {
        // Connected, or a full backlog (EAGAIN), or a socket of another type (EPROTOTYPE):
        // some process has it open.
        Ok(()) => Err(anyhow!(
            "another process is listening on {}",
            path.display()
        )),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN | libc::EINPROGRESS | libc::EPROTOTYPE)
            ) =>
        {
            Err(anyhow!(
                "another process is listening on {}",
                path.display()
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow!(
                        "removing stale socket file {}: {e}",
                        path.display()
                    ))
                }
            }
            info!(path = %path.display(), "removed stale socket file (nobody was listening on it)");
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(anyhow!(
            "checking whether {} is in use: {e}",
            path.display()
        )),
    }
}

fn describe_file_type(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a named pipe",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        _ => "an unknown kind of file",
    }
}

/// A socket file relaunch created; removed on drop if the path still holds that same file.
#[derive(Debug)]
struct SocketFile {
    /// Absolute, so a later change of directory cannot redirect the removal.
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Records the socket file `bind` just created at `path`, and returns it opened with
    /// `O_PATH|O_NOFOLLOW`: the node itself, for changes that must not look the name up again.
    fn created(path: &Path) -> Result<(SocketFile, fs::File)> {
        let absolute =
            std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
        let node = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("opening the new socket file {}", path.display()))?;
        let meta = node
            .metadata()
            .with_context(|| format!("checking the new socket file {}", path.display()))?;
        if !meta.file_type().is_socket() {
            return Err(anyhow!(
                "{} was replaced by {} right after relaunch bound it; is another process using the directory?",
                path.display(),
                describe_file_type(meta.mode())
            ));
        }
        let file = SocketFile {
            path: absolute,
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok((file, node))
    }
}

/// Applies `mode`, `owner` and `group` to the socket file opened as `node` (`O_PATH`), through
/// `/proc/self/fd`: on the inode itself, never by a name someone could swap for a symlink
/// meanwhile. Then checks the result on the same node (the `fstatat(AT_SYMLINK_NOFOLLOW)` of
/// the file relaunch created).
fn set_file_options(path: &Path, node: &fs::File, opts: &SocketOptions, ids: Ids) -> Result<()> {
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", node.as_raw_fd()));
    if let Some(mode) = opts.mode {
        // The umask may have cleared bits of the mode given to the socket before bind.
        fs::set_permissions(&by_fd, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
    }
    if ids.0.is_some() || ids.1.is_some() {
        std::os::unix::fs::chown(&by_fd, ids.0.map(Uid::as_raw), ids.1.map(Gid::as_raw))
            .with_context(|| {
                let mut to = String::new();
                if let Some(o) = &opts.owner {
                    let _ = write!(to, " owner {o}");
                }
                if let Some(g) = &opts.group {
                    let _ = write!(to, " group {g}");
                }
                format!("setting{to} on {}", path.display())
            })?;
    }
    let meta = node
        .metadata()
        .with_context(|| format!("checking {}", path.display()))?;
    let wrong = !meta.file_type().is_socket()
        || opts.mode.is_some_and(|m| meta.mode() & 0o7777 != m)
        || ids.0.is_some_and(|u| meta.uid() != u.as_raw())
        || ids.1.is_some_and(|g| meta.gid() != g.as_raw());
    if wrong {
        return Err(anyhow!(
            "{}: the socket file has mode {:o}, owner {} and group {} after relaunch set them",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    Ok(())
}

/// Locks the directory `path` is in (`flock`, exclusive) so relaunches binding there do the
/// stale check, `bind` and `listen` one at a time. Waits up to 5 s for the lock.
fn lock_parent_dir(path: &Path) -> Result<nix::fcntl::Flock<fs::File>> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut dir = fs::File::open(parent)
        .with_context(|| format!("opening directory {} to lock it", parent.display()))?;
    loop {
        match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((again, nix::errno::Errno::EWOULDBLOCK))
                if std::time::Instant::now() < deadline =>
            {
                dir = again;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err((_, e)) => {
                return Err(anyhow!(
                    "cannot create unix socket {}: locking directory {}: {}",
                    path.display(),
                    parent.display(),
                    io::Error::from(e)
                ))
            }
        }
    }
}

/// How long [`lock_parent_dir`] waits: another relaunch holds the lock only from its stale
/// check to its `listen`.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                match fs::remove_file(&self.path) {
                    Ok(()) => debug!(path = %self.path.display(), "removed socket file"),
                    Err(e) => {
                        warn!(path = %self.path.display(), error = %e, "could not remove socket file")
                    }
                }
            }
            Ok(_) => debug!(
                path = %self.path.display(),
                "not removing socket file: another file has replaced the one relaunch created"
            ),
            Err(_) => {}
        }
    }
}

/// Makes `name` a valid fd name: printable ASCII other than `:` kept, everything else `_`,
/// at most [`FDNAME_MAX`] bytes.
fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != ':' {
                c
            } else {
                '_'
            }
        })
        .take(FDNAME_MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::activation::ActivationSocket;
    use crate::spec::validate_name;
    use socket2::SockRef;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "relaunch-sockets-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn spec(&self, scheme: &str, name: &str, query: &str) -> ListenSpec {
            spec(&format!("{scheme}:{}{query}", self.join(name).display()))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn message(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    fn is_usage(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<SpecError>())
    }

    fn spec(s: &str) -> ListenSpec {
        s.parse().unwrap()
    }

    #[test]
    fn binds_port_zero_and_reports_the_real_port() {
        let l = bind_all(&[spec("127.0.0.1:0")], 128).unwrap();
        let addr: SocketAddr = l[0].local_addr.parse().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(l[0].name, format!("tcp-127.0.0.1-{}", addr.port()));
        validate_name(&l[0].name).unwrap();
        // It really listens: a client can connect without anyone accepting.
        std::net::TcpStream::connect(addr).unwrap();
    }

    #[test]
    fn sockets_are_close_on_exec_in_the_master() {
        let l = bind_all(&[spec("web=127.0.0.1:0")], 16).unwrap();
        assert_eq!(l[0].name, "web");
        let flags = nix::fcntl::fcntl(l[0].raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn default_names_are_valid_fd_names() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let name = default_inet_name(Proto::Tcp, Family::Any, &Host::Ip(v6.ip()), &v6);
        assert_eq!(name, "tcp-__1-80");
        validate_name(&name).unwrap();
        assert_eq!(
            default_inet_name(Proto::Tcp, Family::Any, &Host::Any, &v6),
            "tcp-80"
        );
        assert_eq!(
            default_inet_name(Proto::Udp, Family::V6, &Host::Any, &v6),
            "udp-__1-80"
        );
        assert_eq!(sanitize_name("unix-a b:c\u{e9}.sock"), "unix-a_b_c_.sock");
        assert_eq!(sanitize_name(&"x".repeat(300)).len(), FDNAME_MAX);
    }

    #[test]
    fn address_in_use_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        // SO_REUSEADDR does not allow two listeners on one port.
        let e = bind_all(&[spec(&addr.to_string())], 16).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with(&format!("binding {addr}: ")), "{msg}");
        assert!(msg.contains("in use"), "{msg}");
    }

    #[test]
    fn unknown_host_is_an_error() {
        let e = bind_all(&[spec("no-such-host.invalid:80")], 16).unwrap_err();
        assert!(format!("{e:#}").contains("no-such-host.invalid"), "{e:#}");
    }

    #[test]
    fn backlog_is_capped_by_somaxconn() {
        let cap = somaxconn().expect("somaxconn readable on Linux");
        let l = bind_all(&[spec("127.0.0.1:0")], u32::MAX / 2).unwrap();
        assert_eq!(l[0].backlog, Some(cap));
        let l = bind_all(&[spec("127.0.0.1:0?backlog=7")], 4096).unwrap();
        assert_eq!(l[0].backlog, Some(7.min(cap)));
    }

    #[test]
    fn udp_binds_port_zero_and_receives() {
        let l = bind_all(&[spec("udp://127.0.0.1:0")], 128).unwrap();
        assert_eq!(l[0].kind, "udp");
        assert_eq!(l[0].backlog, None);
        let addr: SocketAddr = l[0].local_addr.parse().unwrap();
        assert_eq!(l[0].name, format!("udp-127.0.0.1-{}", addr.port()));
        let sock = SockRef::from(&l[0]);
        assert_eq!(sock.r#type().unwrap(), Type::DGRAM);
        // No SO_REUSEADDR on UDP: it would let another process bind the same port.
        assert!(!sock.reuse_address().unwrap());
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"ping", addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [std::mem::MaybeUninit::new(0u8); 16];
        assert_eq!(sock.recv(&mut buf).unwrap(), 4);
    }

    #[test]
    fn tcp_options_are_applied() {
        let l = bind_all(
            &[spec(
                "tcp://127.0.0.1:0?reuseport=true&nodelay=true&keepalive=true&rcvbuf=65536&sndbuf=65536&freebind=true",
            )],
            16,
        )
        .unwrap();
        let sock = SockRef::from(&l[0]);
        assert!(sock.reuse_address().unwrap());
        assert!(sock.reuse_port().unwrap());
        assert!(sock.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert!(sock.freebind().unwrap());
        // Linux doubles the requested size for bookkeeping.
        assert!(sock.recv_buffer_size().unwrap() >= 65536);
        assert!(sock.send_buffer_size().unwrap() >= 65536);
        // Defaults: none of them.
        let l = bind_all(&[spec("127.0.0.1:0")], 16).unwrap();
        let sock = SockRef::from(&l[0]);
        assert!(!sock.reuse_port().unwrap());
        assert!(!sock.nodelay().unwrap());
        assert!(!sock.keepalive().unwrap());
    }

    #[test]
    fn families_and_v6only() {
        let l = bind_all(&[spec("tcp4://:0")], 16).unwrap();
        assert!(
            l[0].local_addr.starts_with("0.0.0.0:"),
            "{}",
            l[0].local_addr
        );
        assert!(l[0].name.starts_with("tcp-0.0.0.0-"), "{}", l[0].name);
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("NOTE: no IPv6 on this host; skipping the IPv6 half");
            return;
        }
        let l = bind_all(
            &[
                spec("tcp6://:0"),
                spec("[::]:0?v6only=false"),
                spec("udp6://[::1]:0?v6only=true"),
                spec("0?v6only=true"),
            ],
            16,
        )
        .unwrap();
        assert!(l[0].local_addr.starts_with("[::]:"), "{}", l[0].local_addr);
        assert!(
            SockRef::from(&l[0]).only_v6().unwrap(),
            "tcp6:// is IPv6 only"
        );
        assert!(!SockRef::from(&l[1]).only_v6().unwrap());
        assert!(SockRef::from(&l[2]).only_v6().unwrap());
        assert!(SockRef::from(&l[3]).only_v6().unwrap());
        assert_eq!(l[2].kind, "udp");
    }

    #[test]
    fn unix_kinds_names_and_addresses() {
        let dir = Dir::new();
        let l = bind_all(
            &[
                dir.spec("unix", "s.sock", ""),
                dir.spec("unixgram", "g.sock", ""),
                dir.spec("unixpacket", "p.sock", "?backlog=3"),
            ],
            64,
        )
        .unwrap();
        let kinds: Vec<&str> = l.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, ["unix", "unixgram", "unixpacket"]);
        let names: Vec<&str> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["unix-s.sock", "unixgram-g.sock", "unixpacket-p.sock"]
        );
        assert_eq!(l[0].local_addr, dir.join("s.sock").display().to_string());
        assert_eq!(l[1].backlog, None);
        assert_eq!(l[2].backlog, Some(3));
        let types: Vec<Type> = l
            .iter()
            .map(|l| SockRef::from(l).r#type().unwrap())
            .collect();
        assert_eq!(types, [Type::STREAM, Type::DGRAM, Type::SEQPACKET]);
        assert!(SockRef::from(&l[0]).is_listener().unwrap());
        UnixStream::connect(dir.join("s.sock")).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"x", dir.join("g.sock")).unwrap();
    }

    #[test]
    fn abstract_unix_socket() {
        let name = format!("relaunch-unit-{}", std::process::id());
        let l = bind_all(&[spec(&format!("unix:@{name}"))], 16).unwrap();
        assert_eq!(l[0].local_addr, format!("@{name}"));
        assert_eq!(l[0].name, format!("unix-@{name}"));
        assert_eq!(l[0].socket_file(), None);
        // A second one on the same name is refused, naming it.
        let e = bind_all(&[spec(&format!("unix:@{name}"))], 16).unwrap_err();
        assert_eq!(
            message(e),
            format!("another process is listening on @{name}")
        );
    }

    #[test]
    fn socket_file_mode_owner_group_and_removal() {
        let dir = Dir::new();
        let path = dir.join("app.sock");
        let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
        let l = bind_all(
            &[dir.spec(
                "unix",
                "app.sock",
                &format!("?mode=640&owner={uid}&group={gid}"),
            )],
            16,
        )
        .unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        assert_eq!(l[0].socket_file(), Some(path.as_path()));
        drop(l);
        assert!(!path.exists(), "the socket file is removed on drop");
    }

    #[test]
    fn mode_is_never_applied_through_a_swapped_in_symlink() {
        // A racer keeps replacing the socket file with a symlink to a private file; whatever
        // it manages, relaunch must never chmod or chown the file the link points to.
        let dir = Dir::new();
        let path = dir.join("app.sock");
        let victim = dir.join("victim");
        fs::write(&victim, "secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let racer = {
            let (stop, path, victim) = (stop.clone(), path.clone(), victim.clone());
            std::thread::spawn(move || {
                let tmp = path.with_extension("link");
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::os::unix::fs::symlink(&victim, &tmp);
                    // Atomically over the socket file, if one is there.
                    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                        let _ = fs::rename(&tmp, &path);
                    }
                }
            })
        };
        let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
        let spec = dir.spec(
            "unix",
            "app.sock",
            &format!("?mode=666&owner={uid}&group={gid}"),
        );
        let mut bound = 0;
        for _ in 0..300 {
            if let Ok(l) = bind_all(std::slice::from_ref(&spec), 16) {
                bound += 1;
                drop(l);
            }
            // A leftover link would make every later bind fail.
            let _ = fs::remove_file(&path);
        }
        stop.store(true, Ordering::Relaxed);
        racer.join().unwrap();
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the racer's target was chmodded ({bound} binds)"
        );
    }

    #[test]
    fn socket_file_replaced_by_another_is_not_removed() {
        let dir = Dir::new();
        let path = dir.join("app.sock");
        let l = bind_all(&[dir.spec("unix", "app.sock", "")], 16).unwrap();
        fs::rename(&path, dir.join("moved.sock")).unwrap();
        fs::write(&path, "not ours").unwrap();
        drop(l);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not ours");
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let dir = Dir::new();
        let path = dir.join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = bind_all(&[dir.spec("unix", "stale.sock", "")], 16).unwrap();
        UnixStream::connect(&path).unwrap();
        drop(l);
        // A stale datagram socket file too.
        drop(UnixDatagram::bind(&path).unwrap());
        let _l = bind_all(&[dir.spec("unixgram", "stale.sock", "")], 16).unwrap();
    }

    #[test]
    fn live_socket_file_is_an_error() {
        let dir = Dir::new();
        let path = dir.join("live.sock");
        let live = UnixListener::bind(&path).unwrap();
        let e = bind_all(&[dir.spec("unix", "live.sock", "")], 16).unwrap_err();
        assert_eq!(
            message(e),
            format!("another process is listening on {}", path.display())
        );
        // A live socket of another type counts as well.
        let e = bind_all(&[dir.spec("unixgram", "live.sock", "")], 16).unwrap_err();
        assert_eq!(
            message(e),
            format!("another process is listening on {}", path.display())
        );
        // Still there, still working.
        UnixStream::connect(&path).unwrap();
        drop(live);
    }

    #[test]
    fn non_socket_file_is_never_removed() {
        let dir = Dir::new();
        let path = dir.join("data");
        fs::write(&path, "precious").unwrap();
        let e = bind_all(&[dir.spec("unix", "data", "")], 16).unwrap_err();
        assert_eq!(
            message(e),
            format!("{} exists and is not a socket (a regular file); relaunch only replaces stale socket files, so remove it yourself if it is not needed", path.display())
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
    }

    #[test]
    fn missing_parent_directory_is_an_error() {
        let dir = Dir::new();
        let path = dir.join("missing/app.sock");
        let e = bind_all(&[spec(&format!("unix:{}", path.display()))], 16).unwrap_err();
        assert_eq!(
            message(e),
            format!(
                "cannot create unix socket {}: directory {} does not exist (create it first, e.g. with RuntimeDirectory= in a systemd unit)",
                path.display(),
                dir.join("missing").display()
            )
        );
    }

    #[test]
    fn unknown_user_or_group_is_a_usage_error_and_binds_nothing() {
        let dir = Dir::new();
        let s = dir.spec("unix", "u.sock", "?owner=no-such-user-relaunch");
        let e = bind_all(std::slice::from_ref(&s), 16).unwrap_err();
        assert!(is_usage(&e));
        assert_eq!(
            message(e),
            format!("unknown user \"no-such-user-relaunch\" in owner=no-such-user-relaunch of --listen {s} (expected a user name from the user database or a numeric uid)")
        );
        let s = dir.spec("unix", "g.sock", "?group=no-such-group-relaunch");
        let e = bind_all(std::slice::from_ref(&s), 16).unwrap_err();
        assert!(is_usage(&e));
        assert_eq!(
            message(e),
            format!("unknown group \"no-such-group-relaunch\" in group=no-such-group-relaunch of --listen {s} (expected a group name from the group database or a numeric gid)")
        );
        assert!(!dir.join("u.sock").exists() && !dir.join("g.sock").exists());
    }

    #[test]
    fn sockets_bound_before_an_error_are_released() {
        let dir = Dir::new();
        let fine = dir.join("fine.sock");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = bind_all(
            &[
                dir.spec("unix", "fine.sock", ""),
                spec(&taken.local_addr().unwrap().to_string()),
            ],
            16,
        )
        .unwrap_err();
        assert!(message(e).contains("in use"));
        assert!(!fine.exists(), "the first socket's file is removed again");
    }

    fn adopt_one(fd: OwnedFd) -> Result<Listener> {
        let n = fd.as_raw_fd();
        adopt(fd, &format!("--listen fd:{n}"), format!("fd-{n}"), true)
    }

    #[test]
    fn adopting_inherited_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let l = adopt_one(OwnedFd::from(tcp)).unwrap();
        assert_eq!(
            (l.kind, l.local_addr.as_str()),
            ("tcp", addr.to_string().as_str())
        );
        assert_eq!(l.backlog, None);
        let flags = nix::fcntl::fcntl(l.raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(adopt_one(OwnedFd::from(udp)).unwrap().kind, "udp");
        let (a, _b) = UnixDatagram::pair().unwrap();
        let l = adopt_one(OwnedFd::from(a)).unwrap();
        assert_eq!((l.kind, l.local_addr.as_str()), ("unixgram", "-"));
    }

    #[test]
    fn adopting_a_file_is_an_error() {
        let dir = Dir::new();
        let file = fs::File::create(dir.join("f")).unwrap();
        let fd = OwnedFd::from(file);
        let n = fd.as_raw_fd();
        let e = adopt_one(fd).unwrap_err();
        assert!(is_usage(&e));
        assert_eq!(
            message(e),
            format!("--listen fd:{n}: fd {n} is not a socket (it is a regular file); relaunch passes sockets only")
        );
    }

    #[test]
    fn adopting_a_connection_is_an_error() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = OwnedFd::from(a);
        let n = fd.as_raw_fd();
        let e = adopt_one(fd).unwrap_err();
        assert_eq!(
            message(e),
            format!("--listen fd:{n}: fd {n} is a unix socket that is not listening; pass a listening socket (after listen()), not a connection")
        );
    }

    fn activation(dir: &Dir, names: &[&str]) -> Inherited {
        let activation = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let path = dir.join(&format!("act{i}.sock"));
                let _ = fs::remove_file(&path); // from an earlier call in the same test
                let l = UnixListener::bind(path).unwrap();
                let fd = OwnedFd::from(l);
                ActivationSocket {
                    number: 3 + i as RawFd,
                    name: name.to_string(),
                    fd,
                }
            })
            .collect();
        Inherited {
            activation,
            ..Inherited::default()
        }
    }

    #[test]
    fn activation_sockets_come_first_with_their_names() {
        let dir = Dir::new();
        let l = open_all(&[spec("x=127.0.0.1:0")], 16, activation(&dir, &["a", "b"])).unwrap();
        let names: Vec<&str> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "x"]);
        assert_eq!(l[1].local_addr, dir.join("act1.sock").display().to_string());
        assert_eq!(l[0].kind, "unix");
        // Without --listen at all: just the activation sockets.
        let l = open_all(&[], 16, activation(&dir, &["a", "b"])).unwrap();
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn systemd_name_picks_sockets() {
        let dir = Dir::new();
        let l = open_all(
            &[
                spec("x=127.0.0.1:0"),
                spec("systemd:b"),
                spec("renamed=systemd:a"),
            ],
            16,
            activation(&dir, &["a", "b", "c"]),
        )
        .unwrap();
        let names: Vec<&str> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["x", "b", "renamed"]);
        assert_eq!(l[1].local_addr, dir.join("act1.sock").display().to_string());
        // Several sockets with one name are all picked, in order.
        let l = open_all(&[spec("systemd:w")], 16, activation(&dir, &["w", "v", "w"])).unwrap();
        let addrs: Vec<&str> = l.iter().map(|l| l.local_addr.as_str()).collect();
        assert_eq!(
            addrs,
            [
                dir.join("act0.sock").display().to_string(),
                dir.join("act2.sock").display().to_string()
            ]
        );
    }

    #[test]
    fn error_systemd_name_not_passed() {
        let dir = Dir::new();
        let e = open_all(&[spec("systemd:nope")], 16, activation(&dir, &["a", "b"])).unwrap_err();
        assert!(is_usage(&e));
        assert_eq!(
            message(e),
            "--listen systemd:nope: socket activation passed no socket named \"nope\" (it passed: a, b)"
        );
    }

    #[test]
    fn error_systemd_name_without_activation() {
        let e = bind_all(&[spec("systemd:web")], 16).unwrap_err();
        assert!(is_usage(&e));
        assert_eq!(
            message(e),
            "--listen systemd:web: relaunch was not started by socket activation (no LISTEN_FDS for its pid), so no socket is named \"web\""
        );
    }

    #[test]
    fn error_no_sockets_at_all() {
        let e = bind_all(&[], 16).unwrap_err();
        assert!(is_usage(&e));
        assert_eq!(
            message(e),
            "no sockets to pass: give at least one --listen [NAME=]ADDR, or start relaunch through systemd socket activation"
        );
    }

    #[test]
    fn error_fd_limit_too_low() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let sockets = (hard / 2) as usize;
        if hard == libc::RLIM_INFINITY {
            eprintln!("NOTE: RLIMIT_NOFILE hard limit is infinite; nothing to check");
            return;
        }
        let e = ensure_fd_limit(sockets).unwrap_err();
        let now = getrlimit(Resource::RLIMIT_NOFILE).unwrap().0;
        assert_eq!(
            message(e),
            format!("{sockets} sockets need up to {} open files, but the open-file limit (RLIMIT_NOFILE) is {now} and its hard limit {hard}; raise the hard limit (ulimit -Hn as root, or LimitNOFILE= in a systemd unit)", 2 * sockets as u64 + 64)
        );
        assert!(now >= soft);
        ensure_fd_limit(1).unwrap();
    }
}
