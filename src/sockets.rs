//! Binding the listening sockets.
//!
//! The master binds every socket once, at startup, and keeps it open for its whole life: clients
//! of a restarting server wait in the kernel's accept queue instead of being refused. Sockets are
//! close-on-exec in the master; the spawn module places them at fds 3.. in each child.
//!
//! TCP sockets get `SO_REUSEADDR` (so a restarted master can bind while old connections sit in
//! TIME_WAIT) and never `SO_REUSEPORT`: one shared socket is the design, and a reuseport group
//! drops the queued connections of a member that closes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::spec::{Host, ListenAddr, ListenSpec};

/// A bound, listening socket owned by the master.
#[derive(Debug)]
pub struct Listener {
    /// The name passed to children in `LISTEN_FDNAMES`.
    pub name: String,
    /// The socket kind, for logs: `tcp`.
    pub kind: &'static str,
    /// The address it is bound to, with port 0 resolved.
    pub local_addr: String,
    /// The effective listen backlog.
    pub backlog: u32,
    fd: OwnedFd,
}

impl Listener {
    /// The socket's file descriptor in the master (close-on-exec).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
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

/// Binds every spec, in order. On error nothing stays bound (the sockets bound so far are
/// dropped), and the message names the address and what to do.
pub fn bind_all(specs: &[ListenSpec], backlog: u32) -> Result<Vec<Listener>> {
    let backlog = somaxconn().map_or(backlog, |cap| backlog.min(cap.max(1)));
    specs.iter().map(|spec| bind(spec, backlog)).collect()
}

fn bind(spec: &ListenSpec, backlog: u32) -> Result<Listener> {
    let ListenAddr::Tcp { host, port } = &spec.addr;
    let (socket, addr) = match host {
        Host::Ip(ip) => (bind_tcp(SocketAddr::new(*ip, *port), backlog, None)?, None),
        Host::Name(name) => {
            let addr = resolve_one(name, *port)?;
            (bind_tcp(addr, backlog, None)?, None)
        }
        Host::Any => bind_any(*port, backlog)?,
    };
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .or(addr)
        .ok_or_else(|| anyhow!("reading the address of the socket for {spec}"))?;
    let name = match &spec.name {
        Some(name) => name.clone(),
        None => default_name(host, &local),
    };
    Ok(Listener {
        name,
        kind: "tcp",
        local_addr: local.to_string(),
        backlog,
        fd: socket.into(),
    })
}

/// `PORT` alone: dual-stack `[::]` where the host has IPv6, else `0.0.0.0`.
fn bind_any(port: u16, backlog: u32) -> Result<(Socket, Option<SocketAddr>)> {
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match try_bind_tcp(v6, backlog, Some(false)) {
        Ok(s) => Ok((s, Some(v6))),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
            ) =>
        {
            tracing::debug!(error = %e, "no IPv6 on this host; binding 0.0.0.0 instead of [::]");
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            Ok((bind_tcp(v4, backlog, None)?, Some(v4)))
        }
        Err(e) => Err(bind_error(v6, e)),
    }
}

fn resolve_one(name: &str, port: u16) -> Result<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving host name {name:?}"))?
        .collect();
    addrs.dedup();
    match addrs.as_slice() {
        [one] => Ok(*one),
        [] => Err(anyhow!("host name {name:?} resolves to no address")),
        many => {
            let list: Vec<String> = many.iter().map(|a| a.ip().to_string()).collect();
            Err(anyhow!(
                "host name {name:?} resolves to several addresses ({}); listen on one of them explicitly, e.g. --listen {}",
                list.join(", "),
                many[0]
            ))
        }
    }
}

fn bind_tcp(addr: SocketAddr, backlog: u32, v6only: Option<bool>) -> Result<Socket> {
    try_bind_tcp(addr, backlog, v6only).map_err(|e| bind_error(addr, e))
}

fn try_bind_tcp(addr: SocketAddr, backlog: u32, v6only: Option<bool>) -> io::Result<Socket> {
    // socket2 creates sockets with SOCK_CLOEXEC on Linux: nothing leaks into children unless
    // the spawn module places it at 3.. on purpose.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let Some(only) = v6only {
        socket.set_only_v6(only)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

fn bind_error(addr: SocketAddr, e: io::Error) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EADDRINUSE) => "; another process is listening there (find it with `ss -ltnp`)",
        Some(libc::EACCES) => {
            "; ports below net.ipv4.ip_unprivileged_port_start need root or CAP_NET_BIND_SERVICE"
        }
        Some(libc::EADDRNOTAVAIL) => "; no interface of this host has that address",
        _ => "",
    };
    anyhow!("binding {addr}: {e}{hint}")
}

/// A systemd-valid fd name for a socket without `NAME=`: `tcp-PORT` for all interfaces,
/// `tcp-IP-PORT` otherwise (`:` in IPv6 addresses becomes `_`).
fn default_name(host: &Host, local: &SocketAddr) -> String {
    match host {
        Host::Any => format!("tcp-{}", local.port()),
        _ => format!(
            "tcp-{}-{}",
            local.ip().to_string().replace(':', "_"),
            local.port()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::validate_name;

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
        let name = default_name(&Host::Ip(v6.ip()), &v6);
        assert_eq!(name, "tcp-__1-80");
        validate_name(&name).unwrap();
        assert_eq!(default_name(&Host::Any, &v6), "tcp-80");
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
        assert_eq!(l[0].backlog, cap);
    }
}
