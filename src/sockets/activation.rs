//! Sockets relaunch inherits: systemd socket activation as input, and `--listen fd:N`.
//!
//! When relaunch itself is started by systemd (a `.socket` unit) or by
//! `systemd-socket-activate`, its environment holds `LISTEN_PID` (relaunch's own pid),
//! `LISTEN_FDS=N` and usually `LISTEN_FDNAMES`, and the sockets sit at fds 3..3+N-1. relaunch
//! then takes those sockets over and passes them to every child at 3.., ahead of its own
//! `--listen` sockets and under the same names, so a server behind relaunch sees what it would
//! see under systemd directly, plus zero-downtime reloads. With `--listen systemd:NAME` the
//! command line picks which of them to pass and where; the others are closed.
//!
//! As in libsystemd's `sd_listen_fds`, variables whose `LISTEN_PID` is not relaunch's pid are
//! meant for another process and are ignored, and without `LISTEN_FDNAMES` every socket is named
//! `unknown`. The spawn module strips every inherited `LISTEN_*` variable from the children's
//! environment and sets their own.
//!
//! [`take_inherited`] must run first thing at startup, before relaunch opens any file of its
//! own: only then does an open fd 3, or the fd named by `--listen fd:7`, really come from
//! relaunch's parent. `sys::fds::adopt_inherited` enforces it: it takes only fds that were open
//! when `sys::fds::record_inherited_fds` ran (first thing in `main`, before `--daemon` opens
//! its startup pipe), each once. Everything taken over is close-on-exec in the master.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use socket2::{Domain, SockAddr, Socket, Type};
use tracing::{debug, info};

use super::{describe_file_type, Listener};
use crate::spec::{Family, Host, ListenAddr, ListenSpec, Proto, SpecError, UnixKind, UnixPath};
use crate::sys::fds::adopt_inherited;

/// The first fd of socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The name libsystemd reports for a socket when `LISTEN_FDNAMES` is not set.
pub const UNKNOWN_NAME: &str = "unknown";

/// One socket passed to relaunch by socket activation.
#[derive(Debug)]
pub struct ActivationSocket {
    /// The fd number it arrived at (3, 4, ...), for messages.
    pub number: RawFd,
    /// Its name from `LISTEN_FDNAMES`.
    pub name: String,
    /// The socket, now owned by relaunch (close-on-exec).
    pub fd: OwnedFd,
}

/// Everything relaunch took over from its parent at startup.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Sockets from socket activation, in the order systemd passed them.
    pub activation: Vec<ActivationSocket>,
    /// Fds named with `--listen fd:N`, by number.
    pub fds: BTreeMap<RawFd, OwnedFd>,
}

/// Reads the socket-activation variables meant for the process `my_pid` and returns one name
/// per socket (empty when there are none for this process). Pure, for testing; errors describe
/// variables that are meant for this process but malformed.
pub fn parse_env(
    my_pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    fd_limit: u64,
) -> Result<Vec<String>, String> {
    let Some(pid) = listen_pid else {
        return Ok(Vec::new());
    };
    // A pid that is not ours (or not a pid at all) means the variables are for someone else,
    // e.g. they leaked from a service manager into a shell: ignore them, as libsystemd does.
    if pid.trim().parse::<u32>() != Ok(my_pid) {
        return Ok(Vec::new());
    }
    let Some(fds) = listen_fds else {
        return Ok(Vec::new());
    };
    let max = (RawFd::MAX - LISTEN_FDS_START) as usize;
    let n = match fds.trim().parse::<usize>() {
        Ok(n) if n <= max => n,
        _ => {
            return Err(format!(
                "LISTEN_FDS={fds:?} is not a number of sockets (LISTEN_PID={pid} is relaunch's pid, so the socket-activation variables are meant for it)"
            ))
        }
    };
    // Sockets sit at fds 3..3+N-1, so a count the open-file limit cannot hold is a lie; reject
    // it before building one name per socket (LISTEN_FDS=2000000000 would allocate gigabytes).
    if n as u64 > fd_limit.saturating_sub(LISTEN_FDS_START as u64) {
        return Err(format!(
            "LISTEN_FDS={n} is more sockets than this process can hold (its hard open-file limit RLIMIT_NOFILE is {fd_limit}, and the sockets start at fd {LISTEN_FDS_START})"
        ));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    match listen_fdnames {
        None => Ok(vec![UNKNOWN_NAME.to_owned(); n]),
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_owned).collect();
            if names.len() != n {
                return Err(format!(
                    "LISTEN_FDNAMES={:?} has {} names but LISTEN_FDS={n}; they must match",
                    names.join(":"),
                    names.len()
                ));
            }
            Ok(names)
        }
    }
}

/// Takes over the sockets relaunch inherited: those of socket activation meant for this
/// process, and those named by `--listen fd:N` in `specs`. Call it before relaunch opens any
/// file of its own (see the module docs).
pub fn take_inherited(specs: &[ListenSpec]) -> Result<Inherited> {
    let var = |k: &str| std::env::var(k).ok();
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    let names = parse_env(
        std::process::id(),
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(u64::MAX, |(_, hard)| hard),
    )
    .map_err(|msg| anyhow!(msg))?;
    if names.is_empty() {
        if let Some(pid) = &pid {
            debug!(LISTEN_PID = %pid, "ignoring socket-activation variables meant for another process");
        }
    }
    let count = names.len();
    let mut inherited = Inherited::default();
    for (i, name) in names.into_iter().enumerate() {
        let number = LISTEN_FDS_START + i as RawFd;
        let fd = adopt_inherited(number).with_context(|| {
            format!("taking over fd {number} ({name:?}) passed by socket activation (LISTEN_FDS={count})")
        })?;
        inherited
            .activation
            .push(ActivationSocket { number, name, fd });
    }
    for spec in specs {
        let ListenAddr::Fd(n) = spec.addr else {
            continue;
        };
        if let Some(a) = inherited.activation.iter().find(|a| a.number == n) {
            return Err(SpecError::new(format!(
                "--listen {spec}: fd {n} came with socket activation as {:?}; use --listen systemd:{} instead",
                a.name, a.name
            ))
            .into());
        }
        if inherited.fds.contains_key(&n) {
            return Err(SpecError::new(format!("--listen fd:{n} is given twice")).into());
        }
        match adopt_inherited(n) {
            Ok(fd) => {
                inherited.fds.insert(n, fd);
            }
            Err(e) if e.raw_os_error() == Some(Errno::EBADF as i32) => {
                return Err(SpecError::new(format!(
                    "--listen {spec}: fd {n} is not open (relaunch did not inherit it from its parent)"
                ))
                .into())
            }
            Err(e) => return Err(anyhow!(e).context(format!("taking over fd {n} for --listen {spec}"))),
        }
    }
    Ok(inherited)
}

/// Whether the inherited socket `fd` is bound to the address `addr` asks for: the same
/// transport, port and host (no host: a wildcard address; a host name never matches), or the
/// same kind of unix socket at the same path or abstract name. Port 0 never matches.
pub fn bound_to(fd: BorrowedFd<'_>, addr: &ListenAddr) -> bool {
    let sock = socket2::SockRef::from(&fd);
    let (Ok(local), Ok(ty)) = (sock.local_addr(), sock.r#type()) else {
        return false;
    };
    match addr {
        ListenAddr::Inet {
            proto,
            family,
            host,
            port,
        } if *port != 0 => {
            let Some(sa) = local.as_socket() else {
                return false;
            };
            let want = match proto {
                Proto::Tcp => Type::STREAM,
                Proto::Udp => Type::DGRAM,
            };
            let family_ok = match family {
                Family::Any => true,
                Family::V4 => sa.is_ipv4(),
                Family::V6 => sa.is_ipv6(),
            };
            ty == want
                && sa.port() == *port
                && family_ok
                && match host {
                    Host::Any => sa.ip().is_unspecified(),
                    Host::Ip(ip) => sa.ip() == *ip,
                    Host::Name(_) => false,
                }
        }
        ListenAddr::Unix { kind, path } => {
            let want = match kind {
                UnixKind::Stream => Type::STREAM,
                UnixKind::Datagram => Type::DGRAM,
                UnixKind::SeqPacket => Type::SEQPACKET,
            };
            ty == want
                && match path {
                    UnixPath::File(p) => std::path::absolute(p)
                        .is_ok_and(|p| local.as_pathname() == Some(p.as_path())),
                    UnixPath::Abstract(name) => {
                        local.as_abstract_namespace() == Some(name.as_bytes())
                    }
                }
        }
        _ => false,
    }
}

/// Gives each of several programs (their `--listen` lists, in order) its share of what
/// relaunch inherited:
///
/// - an `fd:N` goes to the program that names it;
/// - a socket of socket activation goes to every program that picks it by name
///   (`systemd:NAME`) or lists the address it is bound to (`listen = [":8080"]` takes the
///   activated socket on port 8080 instead of binding its own);
/// - a socket that no program picks goes to the only program when there is one (it passes
///   every socket on, as the command line always did), and is closed otherwise.
pub fn share(inherited: Inherited, programs: &[&[ListenSpec]]) -> Result<Vec<Inherited>> {
    let mut shares: Vec<Inherited> = programs.iter().map(|_| Inherited::default()).collect();
    let Inherited {
        activation,
        mut fds,
    } = inherited;
    for (i, specs) in programs.iter().enumerate() {
        for spec in specs.iter() {
            if let ListenAddr::Fd(n) = spec.addr {
                if let Some(fd) = fds.remove(&n) {
                    shares[i].fds.insert(n, fd);
                }
            }
        }
    }
    for a in activation {
        let takers: Vec<usize> = programs
            .iter()
            .enumerate()
            .filter(|(_, specs)| {
                specs.iter().any(|s| match &s.addr {
                    ListenAddr::Systemd(name) => *name == a.name,
                    addr => bound_to(a.fd.as_fd(), addr),
                })
            })
            .map(|(i, _)| i)
            .collect();
        let takers = match (takers.is_empty(), programs.len()) {
            (false, _) => takers,
            (true, 1) => vec![0],
            (true, _) => {
                info!(
                    fd = a.number,
                    name = %a.name,
                    "not passing this socket-activation socket on: no program picks it by name (systemd:NAME) or lists its address"
                );
                continue;
            }
        };
        for &i in &takers {
            let fd =
                a.fd.try_clone()
                    .with_context(|| format!("duplicating socket-activation fd {}", a.number))?;
            shares[i].activation.push(ActivationSocket {
                number: a.number,
                name: a.name.clone(),
                fd,
            });
        }
    }
    Ok(shares)
}

// ---------------------------------------------------------------------------------------------
// Inherited sockets

/// Checks an inherited fd and wraps it as a [`Listener`]: it must be a socket, and a stream or
/// seqpacket socket must be listening. `origin` names where it came from in messages; `usage`
/// says whether a bad fd is the command line's fault (`fd:N`, exit 2) or the environment's.
pub(super) fn adopt(fd: OwnedFd, origin: &str, name: String, usage: bool) -> Result<Listener> {
    let fail = |msg: String| -> anyhow::Error {
        if usage {
            SpecError::new(msg).into()
        } else {
            anyhow!(msg)
        }
    };
    let number = fd.as_raw_fd();
    let stat = nix::sys::stat::fstat(number).with_context(|| format!("{origin}: fstat"))?;
    let mode = stat.st_mode;
    if mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(fail(format!(
            "{origin}: fd {number} is not a socket (it is {}); relaunch passes sockets only",
            describe_file_type(mode)
        )));
    }
    let socket = Socket::from(fd);
    let ty = socket
        .r#type()
        .with_context(|| format!("{origin}: reading SO_TYPE"))?;
    let domain = socket
        .domain()
        .with_context(|| format!("{origin}: reading SO_DOMAIN"))?;
    let kind = socket_kind(domain, ty);
    if (ty == Type::STREAM || ty == Type::SEQPACKET) && !socket.is_listener().unwrap_or(false) {
        return Err(fail(format!(
            "{origin}: fd {number} is a {kind} socket that is not listening; pass a listening socket (after listen()), not a connection"
        )));
    }
    socket
        .set_cloexec(true)
        .with_context(|| format!("{origin}: setting close-on-exec"))?;
    let local_addr = socket
        .local_addr()
        .map_or_else(|_| "-".to_owned(), |a| describe_sockaddr(&a));
    Ok(Listener {
        name,
        kind,
        local_addr,
        backlog: None,
        fd: socket.into(),
        file: None,
        origin: None,
    })
}

/// The log name of a socket of this domain and type.
fn socket_kind(domain: Domain, ty: Type) -> &'static str {
    let types = if domain == Domain::IPV4 || domain == Domain::IPV6 {
        ["tcp", "udp", "sctp"]
    } else if domain == Domain::UNIX {
        ["unix", "unixgram", "unixpacket"]
    } else if domain == Domain::VSOCK {
        return "vsock";
    } else if domain == Domain::from(libc::AF_NETLINK) {
        return "netlink";
    } else {
        return "socket";
    };
    if ty == Type::STREAM {
        types[0]
    } else if ty == Type::DGRAM {
        types[1]
    } else if ty == Type::SEQPACKET {
        types[2]
    } else {
        "socket"
    }
}

/// A socket address for logs: `IP:PORT`, a path, `@name` for an abstract socket, `-` if none.
fn describe_sockaddr(addr: &SockAddr) -> String {
    if let Some(a) = addr.as_socket() {
        return a.to_string();
    }
    if let Some(p) = addr.as_pathname() {
        return p.display().to_string();
    }
    if let Some(name) = addr.as_abstract_namespace() {
        return format!("@{}", String::from_utf8_lossy(name));
    }
    "-".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn variables_for_this_process() {
        assert_eq!(
            parse_env(42, Some("42"), Some("2"), Some("web:admin"), 1024),
            Ok(names(&["web", "admin"]))
        );
        // Without LISTEN_FDNAMES, libsystemd calls every socket "unknown".
        assert_eq!(
            parse_env(42, Some("42"), Some("2"), None, 1024),
            Ok(names(&["unknown", "unknown"]))
        );
        assert_eq!(parse_env(42, Some("42"), Some("0"), None, 1024), Ok(vec![]));
        assert_eq!(parse_env(42, Some("42"), None, Some("x"), 1024), Ok(vec![]));
    }

    #[test]
    fn variables_for_another_process_are_ignored() {
        assert_eq!(
            parse_env(42, None, Some("2"), Some("a:b"), 1024),
            Ok(vec![])
        );
        assert_eq!(
            parse_env(42, Some("1"), Some("2"), Some("a:b"), 1024),
            Ok(vec![])
        );
        assert_eq!(
            parse_env(42, Some("x"), Some("oops"), None, 1024),
            Ok(vec![])
        );
    }

    #[test]
    fn error_bad_listen_fds() {
        assert_eq!(
            parse_env(42, Some("42"), Some("two"), None, 1024),
            Err("LISTEN_FDS=\"two\" is not a number of sockets (LISTEN_PID=42 is relaunch's pid, so the socket-activation variables are meant for it)".into())
        );
    }

    #[test]
    fn error_listen_fds_beyond_the_open_file_limit() {
        assert_eq!(
            parse_env(42, Some("42"), Some("2000000000"), None, 1024),
            Err("LISTEN_FDS=2000000000 is more sockets than this process can hold (its hard open-file limit RLIMIT_NOFILE is 1024, and the sockets start at fd 3)".into())
        );
        assert_eq!(
            parse_env(42, Some("42"), Some("1021"), None, 1024).map(|v| v.len()),
            Ok(1021)
        );
    }

    #[test]
    fn error_names_do_not_match_count() {
        assert_eq!(
            parse_env(42, Some("42"), Some("3"), Some("a:b"), 1024),
            Err("LISTEN_FDNAMES=\"a:b\" has 2 names but LISTEN_FDS=3; they must match".into())
        );
    }
}
