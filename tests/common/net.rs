//! Talking to the sockets relaunch passes on, of every kind, as a client of `probe --echo`;
//! and looking at sockets and fds of other processes through /proc.
//!
//! Every operation has a timeout: connects, sends and receives all fail after it instead of
//! hanging a test.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::remaining;

/// An address to talk to, with the socket type to use.
#[derive(Debug, Clone)]
pub struct Target {
    /// `SOCK_STREAM`, `SOCK_SEQPACKET` or `SOCK_DGRAM`.
    pub ty: Type,
    /// Where.
    pub addr: SockAddr,
    /// For messages.
    pub desc: String,
}

impl Target {
    pub fn tcp(addr: SocketAddr) -> Target {
        Target {
            ty: Type::STREAM,
            addr: addr.into(),
            desc: format!("tcp {addr}"),
        }
    }

    pub fn udp(addr: SocketAddr) -> Target {
        Target {
            ty: Type::DGRAM,
            addr: addr.into(),
            desc: format!("udp {addr}"),
        }
    }

    /// A unix socket file of type `ty`.
    pub fn unix(ty: Type, path: &Path) -> Target {
        Target {
            ty,
            addr: SockAddr::unix(path).expect("unix socket path fits sun_path"),
            desc: format!("unix {ty:?} {}", path.display()),
        }
    }

    /// An abstract unix socket `@name` of type `ty`.
    pub fn abstract_unix(ty: Type, name: &str) -> Target {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(name.as_bytes());
        let path = std::ffi::OsStr::from_bytes(&bytes);
        Target {
            ty,
            addr: SockAddr::unix(path).expect("abstract name fits sun_path"),
            desc: format!("unix {ty:?} @{name}"),
        }
    }

    fn domain(&self) -> Domain {
        self.addr.domain()
    }
}

/// The `pid=P` an echo reply starts with, and the rest.
pub fn parse_reply(reply: &str) -> Option<(i32, &str)> {
    let rest = reply.strip_prefix("pid=")?;
    let (pid, msg) = rest.split_once(' ')?;
    Some((pid.parse().ok()?, msg.trim_end_matches('\n')))
}

/// Connects to a stream or seqpacket `target` within `timeout`.
fn connect(target: &Target, timeout: Duration) -> Result<Socket, String> {
    let socket = Socket::new(target.domain(), target.ty, None)
        .map_err(|e| format!("socket for {}: {e}", target.desc))?;
    socket
        .connect_timeout(&target.addr, timeout)
        .map_err(|e| format!("connecting to {}: {e}", target.desc))?;
    Ok(socket)
}

/// One exchange with `probe --echo` on a new connection to a stream or seqpacket `target`:
/// sends `msg` (a line, or one packet), reads the reply, all within `timeout`. Returns the
/// replying pid.
pub fn echo_stream(target: &Target, msg: &str, timeout: Duration) -> Result<i32, String> {
    let deadline = Instant::now() + timeout;
    let socket = connect(target, timeout)?;
    let mut conn = UnixStream::from(OwnedFd::from(socket));
    let left = remaining(deadline).max(Duration::from_millis(1));
    conn.set_write_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    let packet = target.ty == Type::SEQPACKET;
    let sent = if packet {
        conn.write_all(msg.as_bytes())
    } else {
        conn.write_all(format!("{msg}\n").as_bytes())
            .and_then(|()| conn.shutdown(Shutdown::Write))
    };
    sent.map_err(|e| format!("sending to {}: {e}", target.desc))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(format!(
                "no complete reply from {} within {timeout:?} (got {:?})",
                target.desc,
                String::from_utf8_lossy(&reply)
            ));
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if packet || reply.ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from {}: {e}", target.desc)),
        }
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    match parse_reply(&reply) {
        Some((pid, echoed)) if echoed == msg => Ok(pid),
        _ => Err(format!(
            "unexpected reply {reply:?} from {} to {msg:?}",
            target.desc
        )),
    }
}

/// A datagram client with an address of its own, so replies can reach it.
pub struct DatagramClient {
    socket: Socket,
}

impl DatagramClient {
    /// A UDP client on the loopback address of `target`'s family.
    pub fn udp(target: &SocketAddr) -> DatagramClient {
        let local: SocketAddr = if target.is_ipv6() {
            "[::1]:0".parse().unwrap()
        } else {
            "127.0.0.1:0".parse().unwrap()
        };
        let socket = UdpSocket::bind(local).expect("bind a UDP client socket");
        DatagramClient {
            socket: Socket::from(OwnedFd::from(socket)),
        }
    }

    /// A unix datagram client bound at `path`.
    pub fn unix(path: &Path) -> DatagramClient {
        let socket = UnixDatagram::bind(path)
            .unwrap_or_else(|e| panic!("bind a unix datagram client at {}: {e}", path.display()));
        DatagramClient {
            socket: Socket::from(OwnedFd::from(socket)),
        }
    }

    /// Sends `msg` to `target`.
    pub fn send(&self, target: &Target, msg: &str) -> Result<(), String> {
        self.socket
            .set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        self.socket
            .send_to(msg.as_bytes(), &target.addr)
            .map(drop)
            .map_err(|e| format!("sending to {}: {e}", target.desc))
    }

    /// Receives one datagram within `timeout`; None on timeout.
    pub fn recv(&self, timeout: Duration) -> Result<Option<String>, String> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 65536];
        match (&self.socket).read(&mut buf) {
            Ok(n) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(format!("receiving: {e}")),
        }
    }

    /// Sends `msg` and waits up to `timeout` for the echo of exactly `msg` (earlier, late
    /// replies are skipped). Returns the replying pid; None on timeout.
    pub fn request(
        &self,
        target: &Target,
        msg: &str,
        timeout: Duration,
    ) -> Result<Option<i32>, String> {
        let deadline = Instant::now() + timeout;
        self.send(target, msg)?;
        loop {
            let left = remaining(deadline);
            if left.is_zero() {
                return Ok(None);
            }
            let Some(reply) = self.recv(left)? else {
                return Ok(None);
            };
            if let Some((pid, echoed)) = parse_reply(&reply) {
                if echoed == msg {
                    return Ok(Some(pid));
                }
            }
        }
    }
}

/// One exchange with `probe --echo` through `target` of any type; datagram targets use
/// `client`. Returns the replying pid.
pub fn echo(
    target: &Target,
    client: Option<&DatagramClient>,
    msg: &str,
    timeout: Duration,
) -> Result<i32, String> {
    if target.ty == Type::DGRAM {
        let client = client.ok_or("a datagram target needs a client")?;
        client.request(target, msg, timeout)?.ok_or_else(|| {
            format!(
                "no reply from {} to {msg:?} within {timeout:?}",
                target.desc
            )
        })
    } else {
        echo_stream(target, msg, timeout)
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// The path of the unix socket at `/proc/<pid>/fd/<fd>`, from /proc/net/unix (`@name` for an
/// abstract one); None if it is not a named unix socket.
pub fn unix_socket_path_of_fd(pid: i32, fd: RawFd) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let inode = link
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .to_owned();
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        (cols.get(6) == Some(&inode.as_str()))
            .then(|| cols.get(7).map(|p| p.to_string()))
            .flatten()
    })
}

/// Whether some process listens on the unix socket file `path`, from /proc/net/unix (flag
/// `__SO_ACCEPTCON`, 0x10000), without connecting to it.
pub fn unix_path_is_listening(path: &Path) -> bool {
    let Some(path) = path.to_str() else {
        return false;
    };
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    table.lines().skip(1).any(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        cols.get(7) == Some(&path)
            && cols
                .get(3)
                .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & 0x10000 != 0)
    })
}

/// Whether `/proc/<pid>/fdinfo/<fd>` says the fd is close-on-exec; None if there is no such fd.
pub fn fd_is_cloexec(pid: i32, fd: RawFd) -> Option<bool> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))?
        .trim()
        .to_owned();
    let flags = u32::from_str_radix(&flags, 8).ok()?;
    Some(flags & libc::O_CLOEXEC as u32 != 0)
}

/// Makes the process `cmd` starts inherit `fds`: each `(source, target)` puts the test's fd
/// `source` at `target`, without close-on-exec. Sources are first copied above every target
/// (close-on-exec), so a source sitting on another target's number is not clobbered.
pub fn pass_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) {
    const MAX: usize = 16;
    assert!(fds.len() <= MAX, "pass_fds takes at most {MAX} fds");
    let fds: Vec<(RawFd, RawFd)> = fds.to_vec();
    let above = fds.iter().map(|&(s, t)| s.max(t)).max().unwrap_or(0) + 1;
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl/dup2,
    // which are async-signal-safe; it reads the vector prepared before fork and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut copies = [0 as RawFd; MAX];
            for (i, &(source, _)) in fds.iter().enumerate() {
                let copy = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above);
                if copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                copies[i] = copy;
            }
            for (i, &(_, target)) in fds.iter().enumerate() {
                if libc::dup2(copies[i], target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Limits the open-file limit (`RLIMIT_NOFILE`) of the process `cmd` starts.
pub fn limit_open_files(cmd: &mut Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is a plain system call, async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
