//! The `--listen [NAME=]ADDR[?OPTIONS]` grammar.
//!
//! Parsing is pure: it checks the shape of the text and never touches the network, the file
//! system or the user database. Host names are resolved, users and groups looked up and
//! inherited fds examined when the sockets are opened (see [`crate::sockets`] and
//! [`crate::activation`]), so that an error there can name what was found.
//!
//! | written                                  | socket                                             |
//! |------------------------------------------|----------------------------------------------------|
//! | `8080`, `:8080`                          | TCP on all interfaces (`[::]` dual-stack, else `0.0.0.0`) |
//! | `127.0.0.1:8080`, `[::1]:80`             | TCP on that address                                |
//! | `localhost:8080`                         | TCP on the one address the name resolves to        |
//! | `tcp://HOST:PORT`                        | the same, explicitly                               |
//! | `tcp4://HOST:PORT`, `tcp6://HOST:PORT`   | TCP, IPv4 or IPv6 only (`tcp6://:80` is `[::]` with `v6only=true`) |
//! | `udp://HOST:PORT` (`udp4://`, `udp6://`) | UDP                                                |
//! | `unix:/run/app.sock`, `/abs`, `./rel`    | unix stream socket file                            |
//! | `unixgram:PATH`, `unixpacket:PATH`       | unix datagram / seqpacket socket file              |
//! | `unix:@name` (also unixgram, unixpacket) | Linux abstract socket (no file)                    |
//! | `fd:N`                                   | fd N, a socket relaunch inherited from its parent  |
//! | `systemd:NAME`                           | the socket(s) named NAME that systemd passed to relaunch |
//! | `NAME=ADDR`                              | any of the above, passed to the child under `NAME` |
//!
//! `unix://PATH` is accepted for `unix:PATH` (so `unix:///run/app.sock` works). Port `0` asks the
//! kernel for a free port; the startup log names the one it chose.
//!
//! Options follow a `?`, separated by `&`: `tcp://0.0.0.0:8080?backlog=16384&nodelay=true`,
//! `unix:/run/app.sock?mode=660&owner=www-data&group=www-data`. Which apply depends on the kind
//! of socket (see [`SocketKind::valid_options`]); any other is an error that lists the valid
//! ones. A boolean option written alone (`?reuseport`) means `true`.
//!
//! `NAME=` is recognised only before the first `=` of an argument that does not start like an
//! address (`/`, `./`, `../` or a scheme such as `unix:`), and before any `?`. A socket path that
//! contains `=` therefore needs an explicit name: `web=unix:/tmp/a=b.sock`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

/// The longest file descriptor name systemd accepts (`FDNAME_MAX`).
pub const FDNAME_MAX: usize = 255;

/// The longest unix socket path: `sun_path` holds 108 bytes including the terminating NUL.
pub const UNIX_PATH_MAX: usize = 107;

/// One parsed `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The name given with `NAME=`, if any (already validated).
    pub name: Option<String>,
    /// What to bind or adopt.
    pub addr: ListenAddr,
    /// Per-socket options from the `?` query, checked against the kind of socket.
    pub options: SocketOptions,
}

/// The address part of a `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP or UDP socket.
    Inet {
        /// TCP or UDP.
        proto: Proto,
        /// Which address family the scheme allows (`tcp4://`, `tcp6://`).
        family: Family,
        /// Where to bind.
        host: Host,
        /// The port; 0 lets the kernel choose.
        port: u16,
    },
    /// A unix socket: a file, or a name in Linux's abstract namespace.
    Unix {
        /// Stream, datagram or seqpacket.
        kind: UnixKind,
        /// Where to bind.
        path: UnixPath,
    },
    /// `fd:N`: a socket relaunch inherited at fd N.
    Fd(RawFd),
    /// `systemd:NAME`: the sockets named NAME in relaunch's own `LISTEN_FDNAMES`.
    Systemd(String),
}

/// The transport of an internet socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A TCP stream socket.
    Tcp,
    /// A UDP datagram socket.
    Udp,
}

/// The address family an internet address is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Either (`tcp://`, `udp://`, no scheme).
    Any,
    /// IPv4 only (`tcp4://`, `udp4://`).
    V4,
    /// IPv6 only (`tcp6://`, `udp6://`).
    V6,
}

/// The host part of an internet address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// No host given: every interface, IPv6 dual-stack when the machine has IPv6 (for
    /// [`Family::Any`]).
    Any,
    /// A literal IP address.
    Ip(IpAddr),
    /// A host name, resolved at bind time; it must resolve to exactly one address.
    Name(String),
}

/// The type of a unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixKind {
    /// `SOCK_STREAM` (`unix:`).
    Stream,
    /// `SOCK_DGRAM` (`unixgram:`).
    Datagram,
    /// `SOCK_SEQPACKET` (`unixpacket:`).
    SeqPacket,
}

/// Where a unix socket lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixPath {
    /// A socket file, absolute or relative to relaunch's working directory.
    File(PathBuf),
    /// A name in Linux's abstract namespace (written `@name`), without the leading NUL.
    Abstract(String),
}

/// The kinds of sockets relaunch creates, as named in logs and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Unix stream socket file.
    Unix,
    /// Unix datagram socket file.
    UnixGram,
    /// Unix seqpacket socket file.
    UnixPacket,
    /// Abstract unix socket of any type (no file: no `mode`, `owner`, `group`).
    Abstract(UnixKind),
}

impl SocketKind {
    /// The name used in logs: `tcp`, `udp`, `unix`, `unixgram`, `unixpacket`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Tcp => "tcp",
            SocketKind::Udp => "udp",
            SocketKind::Unix | SocketKind::Abstract(UnixKind::Stream) => "unix",
            SocketKind::UnixGram | SocketKind::Abstract(UnixKind::Datagram) => "unixgram",
            SocketKind::UnixPacket | SocketKind::Abstract(UnixKind::SeqPacket) => "unixpacket",
        }
    }

    /// How messages describe this kind: `tcp`, `abstract unixgram`, ...
    fn describe(self) -> String {
        match self {
            SocketKind::Abstract(_) => format!("abstract {}", self.as_str()),
            _ => self.as_str().to_owned(),
        }
    }

    /// The `?` options that apply to this kind of socket, in their canonical order.
    pub fn valid_options(self) -> &'static [&'static str] {
        match self {
            SocketKind::Tcp => &[
                "backlog",
                "reuseport",
                "v6only",
                "nodelay",
                "keepalive",
                "rcvbuf",
                "sndbuf",
                "freebind",
            ],
            SocketKind::Udp => &["reuseport", "v6only", "rcvbuf", "sndbuf", "freebind"],
            SocketKind::Unix | SocketKind::UnixPacket => {
                &["backlog", "rcvbuf", "sndbuf", "mode", "owner", "group"]
            }
            SocketKind::UnixGram => &["rcvbuf", "sndbuf", "mode", "owner", "group"],
            SocketKind::Abstract(UnixKind::Datagram) => &["rcvbuf", "sndbuf"],
            SocketKind::Abstract(_) => &["backlog", "rcvbuf", "sndbuf"],
        }
    }
}

/// Every option name, in canonical order.
pub const ALL_OPTIONS: [&str; 11] = [
    "backlog",
    "reuseport",
    "v6only",
    "nodelay",
    "keepalive",
    "rcvbuf",
    "sndbuf",
    "freebind",
    "mode",
    "owner",
    "group",
];

/// A user or group, by name or numeric id. Names are looked up when the socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    /// A name from the user or group database.
    Name(String),
    /// A numeric uid or gid, used as is.
    Num(u32),
}

/// Per-socket options (`?backlog=...&...`). `None` means "not given": the default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Listen backlog (stream and seqpacket sockets); overrides `--backlog`.
    pub backlog: Option<u32>,
    /// `SO_REUSEPORT` (off by default).
    pub reuseport: Option<bool>,
    /// `IPV6_V6ONLY`.
    pub v6only: Option<bool>,
    /// `TCP_NODELAY` (inherited by accepted sockets on Linux).
    pub nodelay: Option<bool>,
    /// `SO_KEEPALIVE` (inherited by accepted sockets on Linux).
    pub keepalive: Option<bool>,
    /// `SO_RCVBUF`, bytes.
    pub rcvbuf: Option<u32>,
    /// `SO_SNDBUF`, bytes.
    pub sndbuf: Option<u32>,
    /// `IP_FREEBIND` / `IPV6_FREEBIND`: bind an address not (yet) on any interface.
    pub freebind: Option<bool>,
    /// Permission bits of the socket file.
    pub mode: Option<u32>,
    /// Owner of the socket file.
    pub owner: Option<Id>,
    /// Group of the socket file.
    pub group: Option<Id>,
}

impl SocketOptions {
    /// True when no option was given.
    pub fn is_empty(&self) -> bool {
        *self == SocketOptions::default()
    }
}

/// Why a `--listen` argument was rejected, or why the sockets it names cannot be used as asked
/// (an unknown user, an `fd:N` that is not a socket, a `systemd:NAME` nobody passed). The
/// `Display` text is the whole user-facing message; relaunch exits with 2 on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(String);

impl SpecError {
    /// A usage error with this message.
    pub fn new(msg: impl Into<String>) -> SpecError {
        SpecError(msg.into())
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn err(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Prefixes that start an address (so text before an `=` in them is never a `NAME=`).
const ADDRESS_PREFIXES: [&str; 14] = [
    "/",
    "./",
    "../",
    "tcp://",
    "tcp4://",
    "tcp6://",
    "udp://",
    "udp4://",
    "udp6://",
    "unix:",
    "unixgram:",
    "unixpacket:",
    "fd:",
    "systemd:",
];

const SCHEMES: &str =
    "tcp://, tcp4://, tcp6://, udp://, udp4://, udp6://, unix:, unixgram:, unixpacket:, fd:, systemd:";

impl FromStr for ListenSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(err(
                "empty listen address (expected [NAME=]ADDR, e.g. 127.0.0.1:8080)",
            ));
        }
        let (name, rest) = split_name(s)?;
        if rest.is_empty() {
            return Err(err(format!(
                "listen address {s:?} has nothing after '=' (expected NAME=ADDR, e.g. http=:8080)"
            )));
        }
        let (text, query) = match rest.split_once('?') {
            Some((text, query)) => (text, Some(query)),
            None => (rest, None),
        };
        let addr = parse_addr(text, rest)?;
        let options = match query {
            Some(query) => parse_options(query, &addr, rest)?,
            None => SocketOptions::default(),
        };
        Ok(ListenSpec {
            name,
            addr,
            options,
        })
    }
}

/// Splits `NAME=` off the front, if there is one (see the module docs for when there is).
fn split_name(s: &str) -> Result<(Option<String>, &str), SpecError> {
    if ADDRESS_PREFIXES.iter().any(|p| s.starts_with(p)) {
        return Ok((None, s));
    }
    let head = s.split('?').next().unwrap_or(s);
    match head.find('=') {
        Some(0) => Err(err(format!(
            "empty socket name before '=' in listen address {s:?} (expected NAME=ADDR, e.g. http=:8080)"
        ))),
        Some(i) => {
            let name = &s[..i];
            validate_name(name)?;
            Ok((Some(name.to_owned()), &s[i + 1..]))
        }
        None => Ok((None, s)),
    }
}

/// Checks a socket name the way systemd's `fdname_is_valid` does: 1 to 255 printable ASCII
/// characters, no `:` (the separator in `LISTEN_FDNAMES`).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(err(
            "empty socket name before '=' (expected NAME=ADDR, e.g. http=:8080)",
        ));
    }
    if name.len() > FDNAME_MAX {
        return Err(err(format!(
            "socket name {name:?} is {} bytes long; at most {FDNAME_MAX} are allowed",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || *c == ':') {
        return Err(err(format!(
            "socket name {name:?} contains {c:?}; names are printable ASCII without ':' or spaces"
        )));
    }
    Ok(())
}

/// Parses the address `text` (without options); `whole` is what messages quote.
fn parse_addr(text: &str, whole: &str) -> Result<ListenAddr, SpecError> {
    for (scheme, kind) in [
        ("unix", UnixKind::Stream),
        ("unixgram", UnixKind::Datagram),
        ("unixpacket", UnixKind::SeqPacket),
    ] {
        let Some(rest) = text.strip_prefix(scheme) else {
            continue;
        };
        if let Some(path) = rest.strip_prefix("://").or_else(|| rest.strip_prefix(':')) {
            return parse_unix(kind, path, whole);
        }
    }
    if let Some(n) = text.strip_prefix("fd:") {
        return parse_fd(n, whole);
    }
    if let Some(name) = text.strip_prefix("systemd:") {
        if name.is_empty() {
            return Err(err(format!(
                "listen address {whole:?} has no name (expected systemd:NAME, a name from LISTEN_FDNAMES)"
            )));
        }
        validate_name(name)?;
        return Ok(ListenAddr::Systemd(name.to_owned()));
    }
    if text.starts_with('/') || text.starts_with("./") || text.starts_with("../") {
        return parse_unix(UnixKind::Stream, text, whole);
    }
    let (proto, family, body) = match text.split_once("://") {
        Some(("tcp", body)) => (Proto::Tcp, Family::Any, body),
        Some(("tcp4", body)) => (Proto::Tcp, Family::V4, body),
        Some(("tcp6", body)) => (Proto::Tcp, Family::V6, body),
        Some(("udp", body)) => (Proto::Udp, Family::Any, body),
        Some(("udp4", body)) => (Proto::Udp, Family::V4, body),
        Some(("udp6", body)) => (Proto::Udp, Family::V6, body),
        Some((scheme, _)) => {
            return Err(err(format!(
                "unknown scheme {scheme:?} in listen address {whole:?} (supported: {SCHEMES})"
            )))
        }
        None => (Proto::Tcp, Family::Any, text),
    };
    let (host, port) = parse_host_port(body, whole)?;
    if let Host::Ip(ip) = &host {
        let (wanted, ok) = match family {
            Family::Any => ("", true),
            Family::V4 => ("IPv4", ip.is_ipv4()),
            Family::V6 => ("IPv6", ip.is_ipv6()),
        };
        if !ok {
            let scheme = text.split_once("://").map_or("", |(s, _)| s);
            return Err(err(format!(
                "{scheme}:// takes an {wanted} address, but listen address {whole:?} has {}",
                Host::Ip(*ip)
            )));
        }
    }
    Ok(ListenAddr::Inet {
        proto,
        family,
        host,
        port,
    })
}

fn parse_host_port(body: &str, s: &str) -> Result<(Host, u16), SpecError> {
    if body.is_empty() {
        return Err(err(format!(
            "listen address {s:?} has no port (e.g. :8080)"
        )));
    }
    // A bare port: `8080`.
    if body.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((Host::Any, parse_port(body, s)?));
    }
    let (host, port) = if let Some(rest) = body.strip_prefix('[') {
        // `[v6]:port`
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| err(format!("listen address {s:?} has '[' without ']'")))?;
        let port = after.strip_prefix(':').ok_or_else(|| {
            err(format!(
                "listen address {s:?} needs a port after ']' (e.g. [::1]:8080)"
            ))
        })?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| {
            err(format!(
                "{ip:?} in listen address {s:?} is not an IPv6 address"
            ))
        })?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = body.rsplit_once(':').ok_or_else(|| {
            err(format!(
                "listen address {s:?} has no port (expected PORT, :PORT, HOST:PORT or [IPv6]:PORT)"
            ))
        })?;
        if host.contains(':') {
            return Err(err(format!(
                "IPv6 address in {s:?} must be in brackets, e.g. [::1]:8080"
            )));
        }
        let host = if host.is_empty() {
            Host::Any
        } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else {
            validate_hostname(host, s)?;
            Host::Name(host.to_owned())
        };
        (host, port)
    };
    Ok((host, parse_port(port, s)?))
}

fn parse_port(port: &str, whole: &str) -> Result<u16, SpecError> {
    if port.is_empty() {
        return Err(err(format!(
            "listen address {whole:?} has an empty port (expected 0-65535)"
        )));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!(
            "port {port:?} in listen address {whole:?} is not a number (expected 0-65535)"
        )));
    }
    port.parse::<u16>().map_err(|_| {
        err(format!(
            "port {port} in listen address {whole:?} is out of range (expected 0-65535)"
        ))
    })
}

fn validate_hostname(host: &str, whole: &str) -> Result<(), SpecError> {
    let ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    // All-numeric dotted text that failed to parse as IPv4 (e.g. 300.1.1.1) is a bad address,
    // not a host name.
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !ok || numeric {
        return Err(err(format!(
            "{host:?} in listen address {whole:?} is neither an IP address nor a host name"
        )));
    }
    Ok(())
}

fn parse_unix(kind: UnixKind, path: &str, whole: &str) -> Result<ListenAddr, SpecError> {
    if path.is_empty() {
        return Err(err(format!(
            "listen address {whole:?} has no path (expected e.g. unix:/run/app.sock or unix:@name)"
        )));
    }
    if path.contains('\0') {
        return Err(err(format!(
            "unix socket path in listen address {whole:?} contains a NUL byte"
        )));
    }
    if let Some(name) = path.strip_prefix('@') {
        if name.is_empty() {
            return Err(err(format!(
                "abstract socket name in listen address {whole:?} is empty (expected e.g. unix:@app)"
            )));
        }
        if name.len() > UNIX_PATH_MAX {
            return Err(err(format!(
                "abstract socket name in listen address {whole:?} is {} bytes long; at most {UNIX_PATH_MAX} fit",
                name.len()
            )));
        }
        return Ok(ListenAddr::Unix {
            kind,
            path: UnixPath::Abstract(name.to_owned()),
        });
    }
    if path.len() > UNIX_PATH_MAX {
        return Err(err(format!(
            "unix socket path in listen address {whole:?} is {} bytes long; at most {UNIX_PATH_MAX} fit (use a shorter or relative path)",
            path.len()
        )));
    }
    Ok(ListenAddr::Unix {
        kind,
        path: UnixPath::File(PathBuf::from(path)),
    })
}

fn parse_fd(n: &str, whole: &str) -> Result<ListenAddr, SpecError> {
    let fd: RawFd = match n.parse() {
        Ok(fd) if n.bytes().all(|b| b.is_ascii_digit()) => fd,
        _ => {
            return Err(err(format!(
                "{n:?} in listen address {whole:?} is not a file descriptor number (expected fd:3 or above)"
            )))
        }
    };
    if fd < 3 {
        return Err(err(format!(
            "fd {fd} in listen address {whole:?} is stdin, stdout or stderr (expected fd:3 or above)"
        )));
    }
    Ok(ListenAddr::Fd(fd))
}

/// Parses the text after `?` and checks every option applies to `addr`.
fn parse_options(query: &str, addr: &ListenAddr, whole: &str) -> Result<SocketOptions, SpecError> {
    let kind = match addr.kind() {
        Some(kind) => kind,
        None => {
            return Err(err(format!(
                "listen address {whole:?} takes no options: an inherited socket is already set up"
            )))
        }
    };
    if query.is_empty() {
        return Err(err(format!(
            "listen address {whole:?} has '?' but no options (expected e.g. ?backlog=1024)"
        )));
    }
    let valid = kind.valid_options();
    let listing = || {
        format!(
            "valid for {} sockets: {}",
            kind.describe(),
            valid.join(", ")
        )
    };
    let mut opts = SocketOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for item in query.split('&') {
        if item.is_empty() {
            return Err(err(format!(
                "listen address {whole:?} has an empty option (options are KEY=VALUE separated by '&')"
            )));
        }
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        if !ALL_OPTIONS.contains(&key) {
            return Err(err(format!(
                "unknown option {key:?} in listen address {whole:?} ({})",
                listing()
            )));
        }
        if !valid.contains(&key) {
            return Err(err(format!(
                "option {key:?} does not apply to {} sockets, in listen address {whole:?} ({})",
                kind.describe(),
                listing()
            )));
        }
        if seen.contains(&key) {
            return Err(err(format!(
                "option {key:?} is given twice in listen address {whole:?}"
            )));
        }
        seen.push(key);
        let value = OptionValue { key, value, whole };
        match key {
            "backlog" => opts.backlog = Some(value.number()?),
            "reuseport" => opts.reuseport = Some(value.boolean()?),
            "v6only" => opts.v6only = Some(value.boolean()?),
            "nodelay" => opts.nodelay = Some(value.boolean()?),
            "keepalive" => opts.keepalive = Some(value.boolean()?),
            "rcvbuf" => opts.rcvbuf = Some(value.number()?),
            "sndbuf" => opts.sndbuf = Some(value.number()?),
            "freebind" => opts.freebind = Some(value.boolean()?),
            "mode" => opts.mode = Some(value.mode()?),
            "owner" => opts.owner = Some(value.id("a user name or a numeric uid")?),
            _ => opts.group = Some(value.id("a group name or a numeric gid")?),
        }
    }
    if opts.v6only.is_some() {
        if let ListenAddr::Inet { family, host, .. } = addr {
            if *family == Family::V4 || matches!(host, Host::Ip(IpAddr::V4(_))) {
                return Err(err(format!(
                    "option \"v6only\" in listen address {whole:?} applies only to IPv6 addresses"
                )));
            }
        }
    }
    Ok(opts)
}

/// One `KEY[=VALUE]` of the query, for parsing its value.
struct OptionValue<'a> {
    key: &'a str,
    value: Option<&'a str>,
    whole: &'a str,
}

impl OptionValue<'_> {
    fn required(&self, example: &str) -> Result<&str, SpecError> {
        self.value.ok_or_else(|| {
            err(format!(
                "option {:?} in listen address {:?} needs a value (e.g. {}={example})",
                self.key, self.whole, self.key
            ))
        })
    }

    fn boolean(&self) -> Result<bool, SpecError> {
        match self.value {
            None | Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(err(format!(
                "option {}={v} in listen address {:?} is not a boolean (expected true or false)",
                self.key, self.whole
            ))),
        }
    }

    fn number(&self) -> Result<u32, SpecError> {
        let v = self.required("4096")?;
        let max = i32::MAX as u32;
        match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(err(format!(
                "option {}={v} in listen address {:?} is not a number from 1 to {max}",
                self.key, self.whole
            ))),
        }
    }

    fn mode(&self) -> Result<u32, SpecError> {
        let v = self.required("660")?;
        let ok = (1..=4).contains(&v.len()) && v.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(v, 8) {
            Ok(mode) if ok && mode <= 0o777 => Ok(mode),
            _ => Err(err(format!(
                "option mode={v} in listen address {:?} is not a file mode (expected octal permissions up to 777, e.g. 660 or 0660)",
                self.whole
            ))),
        }
    }

    fn id(&self, what: &str) -> Result<Id, SpecError> {
        let v = self.required("www-data")?;
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(format!(
                "option {}={v} in listen address {:?} is not valid (expected {what})",
                self.key, self.whole
            )));
        }
        Ok(match v.parse::<u32>() {
            Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Id::Num(n),
            _ => Id::Name(v.to_owned()),
        })
    }
}

impl ListenAddr {
    /// The kind of socket relaunch creates for this address; `None` for inherited sockets
    /// (`fd:N`, `systemd:NAME`), whose kind is known only once they are examined.
    pub fn kind(&self) -> Option<SocketKind> {
        match self {
            ListenAddr::Inet {
                proto: Proto::Tcp, ..
            } => Some(SocketKind::Tcp),
            ListenAddr::Inet {
                proto: Proto::Udp, ..
            } => Some(SocketKind::Udp),
            ListenAddr::Unix {
                kind,
                path: UnixPath::Abstract(_),
            } => Some(SocketKind::Abstract(*kind)),
            ListenAddr::Unix { kind, .. } => Some(match kind {
                UnixKind::Stream => SocketKind::Unix,
                UnixKind::Datagram => SocketKind::UnixGram,
                UnixKind::SeqPacket => SocketKind::UnixPacket,
            }),
            ListenAddr::Fd(_) | ListenAddr::Systemd(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Any => f.write_str("*"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for UnixPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixPath::File(path) => write!(f, "{}", path.display()),
            UnixPath::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Inet {
                proto,
                family,
                host,
                port,
            } => {
                let proto = match proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                let family = match family {
                    Family::Any => "",
                    Family::V4 => "4",
                    Family::V6 => "6",
                };
                write!(f, "{proto}{family}://{host}:{port}")
            }
            ListenAddr::Unix { kind, path } => {
                let scheme = match kind {
                    UnixKind::Stream => "unix",
                    UnixKind::Datagram => "unixgram",
                    UnixKind::SeqPacket => "unixpacket",
                };
                write!(f, "{scheme}:{path}")
            }
            ListenAddr::Fd(fd) => write!(f, "fd:{fd}"),
            ListenAddr::Systemd(name) => write!(f, "systemd:{name}"),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Name(name) => f.write_str(name),
            Id::Num(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for SocketOptions {
    /// The options as a query (`?backlog=16&nodelay=true`), or nothing when none were given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        let mut push = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                items.push(format!("{key}={v}"));
            }
        };
        push("backlog", self.backlog.map(|v| v.to_string()));
        push("reuseport", self.reuseport.map(|v| v.to_string()));
        push("v6only", self.v6only.map(|v| v.to_string()));
        push("nodelay", self.nodelay.map(|v| v.to_string()));
        push("keepalive", self.keepalive.map(|v| v.to_string()));
        push("rcvbuf", self.rcvbuf.map(|v| v.to_string()));
        push("sndbuf", self.sndbuf.map(|v| v.to_string()));
        push("freebind", self.freebind.map(|v| v.to_string()));
        push("mode", self.mode.map(|v| format!("{v:o}")));
        push("owner", self.owner.as_ref().map(Id::to_string));
        push("group", self.group.as_ref().map(Id::to_string));
        if !items.is_empty() {
            write!(f, "?{}", items.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name}=")?;
        }
        write!(f, "{}{}", self.addr, self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: Host, port: u16) -> ListenAddr {
        ListenAddr::Inet {
            proto: Proto::Tcp,
            family: Family::Any,
            host,
            port,
        }
    }

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    fn unix(kind: UnixKind, path: &str) -> ListenAddr {
        ListenAddr::Unix {
            kind,
            path: UnixPath::File(path.into()),
        }
    }

    fn abstract_(kind: UnixKind, name: &str) -> ListenAddr {
        ListenAddr::Unix {
            kind,
            path: UnixPath::Abstract(name.into()),
        }
    }

    fn parse(s: &str) -> ListenSpec {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn error(s: &str) -> String {
        match s.parse::<ListenSpec>() {
            Ok(spec) => panic!("{s:?} should be rejected, parsed as {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bare_port_means_all_interfaces() {
        assert_eq!(parse("8080").addr, tcp(Host::Any, 8080));
        assert_eq!(parse(":8080").addr, tcp(Host::Any, 8080));
        assert_eq!(parse("0").addr, tcp(Host::Any, 0));
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(
            parse("127.0.0.1:8080").addr,
            tcp(Host::Ip("127.0.0.1".parse().unwrap()), 8080)
        );
        assert_eq!(
            parse("[::1]:8080").addr,
            tcp(Host::Ip("::1".parse().unwrap()), 8080)
        );
        assert_eq!(
            parse("[::]:0").addr,
            tcp(Host::Ip("::".parse().unwrap()), 0)
        );
    }

    #[test]
    fn host_names_and_scheme() {
        assert_eq!(
            parse("localhost:8080").addr,
            tcp(Host::Name("localhost".into()), 8080)
        );
        assert_eq!(
            parse("tcp://example-1.internal:443").addr,
            tcp(Host::Name("example-1.internal".into()), 443)
        );
        assert_eq!(
            parse("tcp://127.0.0.1:1").addr,
            tcp(Host::Ip("127.0.0.1".parse().unwrap()), 1)
        );
        assert_eq!(parse("tcp://:9").addr, tcp(Host::Any, 9));
    }

    #[test]
    fn names() {
        let spec = parse("http=127.0.0.1:80");
        assert_eq!(spec.name.as_deref(), Some("http"));
        assert_eq!(
            parse("admin.v2=tcp://[::1]:9").name.as_deref(),
            Some("admin.v2")
        );
        assert_eq!(parse(":80").name, None);
        let long = "n".repeat(FDNAME_MAX);
        assert_eq!(parse(&format!("{long}=1")).name, Some(long));
    }

    #[test]
    fn display_round_trips_the_meaning() {
        for s in [
            "web=127.0.0.1:80",
            "[::1]:0",
            ":8080",
            "localhost:1",
            "tcp4://:80",
            "udp6://[::1]:53?reuseport=true",
            "x=unix:/run/a.sock?mode=0660&owner=www-data&group=33",
            "unixgram:@log",
            "unixpacket:./p.sock?backlog=7",
            "fd:7",
            "systemd:web",
            "tcp://0.0.0.0:1?backlog=1&reuseport=false&nodelay=true&keepalive=true&rcvbuf=4096&sndbuf=8192&freebind=true",
        ] {
            let spec = parse(s);
            assert_eq!(parse(&spec.to_string().replace('*', "")), spec);
        }
    }

    #[test]
    fn error_empty() {
        assert_eq!(
            error(""),
            "empty listen address (expected [NAME=]ADDR, e.g. 127.0.0.1:8080)"
        );
    }

    #[test]
    fn error_empty_name() {
        assert_eq!(
            error("=:80"),
            "empty socket name before '=' in listen address \"=:80\" (expected NAME=ADDR, e.g. http=:8080)"
        );
    }

    #[test]
    fn error_name_without_address() {
        assert_eq!(
            error("web="),
            "listen address \"web=\" has nothing after '=' (expected NAME=ADDR, e.g. http=:8080)"
        );
    }

    #[test]
    fn error_name_too_long() {
        let long = "n".repeat(FDNAME_MAX + 1);
        assert_eq!(
            error(&format!("{long}=:80")),
            format!("socket name {long:?} is 256 bytes long; at most 255 are allowed")
        );
    }

    #[test]
    fn error_name_with_colon_or_space() {
        assert_eq!(
            error("a b=:80"),
            "socket name \"a b\" contains ' '; names are printable ASCII without ':' or spaces"
        );
        // A ':' before '=' can only be part of a name, and names may not hold one.
        assert_eq!(
            error("a:b=:80"),
            "socket name \"a:b\" contains ':'; names are printable ASCII without ':' or spaces"
        );
    }

    #[test]
    fn error_unknown_scheme() {
        assert_eq!(
            error("http://x:80"),
            "unknown scheme \"http\" in listen address \"http://x:80\" (supported: tcp://, tcp4://, tcp6://, udp://, udp4://, udp6://, unix:, unixgram:, unixpacket:, fd:, systemd:)"
        );
    }

    #[test]
    fn error_no_port() {
        assert_eq!(
            error("tcp://"),
            "listen address \"tcp://\" has no port (e.g. :8080)"
        );
        assert_eq!(
            error("localhost"),
            "listen address \"localhost\" has no port (expected PORT, :PORT, HOST:PORT or [IPv6]:PORT)"
        );
    }

    #[test]
    fn error_empty_port() {
        assert_eq!(
            error("127.0.0.1:"),
            "listen address \"127.0.0.1:\" has an empty port (expected 0-65535)"
        );
    }

    #[test]
    fn error_port_not_a_number() {
        assert_eq!(
            error("nonsense:abc"),
            "port \"abc\" in listen address \"nonsense:abc\" is not a number (expected 0-65535)"
        );
    }

    #[test]
    fn error_port_out_of_range() {
        assert_eq!(
            error("127.0.0.1:99999"),
            "port 99999 in listen address \"127.0.0.1:99999\" is out of range (expected 0-65535)"
        );
        assert_eq!(
            error("65536"),
            "port 65536 in listen address \"65536\" is out of range (expected 0-65535)"
        );
    }

    #[test]
    fn error_unclosed_bracket() {
        assert_eq!(
            error("[::1:80"),
            "listen address \"[::1:80\" has '[' without ']'"
        );
    }

    #[test]
    fn error_bracket_without_port() {
        assert_eq!(
            error("[::1]"),
            "listen address \"[::1]\" needs a port after ']' (e.g. [::1]:8080)"
        );
    }

    #[test]
    fn error_bad_ipv6() {
        assert_eq!(
            error("[fe80::zz]:80"),
            "\"fe80::zz\" in listen address \"[fe80::zz]:80\" is not an IPv6 address"
        );
    }

    #[test]
    fn error_unbracketed_ipv6() {
        assert_eq!(
            error("::1:80"),
            "IPv6 address in \"::1:80\" must be in brackets, e.g. [::1]:8080"
        );
    }

    #[test]
    fn error_bad_host() {
        assert_eq!(
            error("300.1.1.1:80"),
            "\"300.1.1.1\" in listen address \"300.1.1.1:80\" is neither an IP address nor a host name"
        );
        assert_eq!(
            error("exa_mple:80"),
            "\"exa_mple\" in listen address \"exa_mple:80\" is neither an IP address nor a host name"
        );
    }

    #[test]
    fn family_schemes_and_udp() {
        let spec = parse("tcp4://:80");
        assert_eq!(
            spec.addr,
            ListenAddr::Inet {
                proto: Proto::Tcp,
                family: Family::V4,
                host: Host::Any,
                port: 80
            }
        );
        assert_eq!(
            parse("tcp6://[::]:80").addr,
            ListenAddr::Inet {
                proto: Proto::Tcp,
                family: Family::V6,
                host: ip("::"),
                port: 80
            }
        );
        assert_eq!(
            parse("udp://127.0.0.1:53").addr,
            ListenAddr::Inet {
                proto: Proto::Udp,
                family: Family::Any,
                host: ip("127.0.0.1"),
                port: 53
            }
        );
        assert_eq!(
            parse("dns=udp4://localhost:0").addr,
            ListenAddr::Inet {
                proto: Proto::Udp,
                family: Family::V4,
                host: Host::Name("localhost".into()),
                port: 0
            }
        );
        assert_eq!(parse("udp6://5353").addr.kind(), Some(SocketKind::Udp));
    }

    #[test]
    fn unix_socket_forms() {
        let stream = UnixKind::Stream;
        assert_eq!(
            parse("unix:/run/app.sock").addr,
            unix(stream, "/run/app.sock")
        );
        assert_eq!(
            parse("unix:///run/app.sock").addr,
            unix(stream, "/run/app.sock")
        );
        assert_eq!(parse("unix:rel.sock").addr, unix(stream, "rel.sock"));
        assert_eq!(parse("/run/app.sock").addr, unix(stream, "/run/app.sock"));
        assert_eq!(parse("./app.sock").addr, unix(stream, "./app.sock"));
        assert_eq!(parse("../app.sock").addr, unix(stream, "../app.sock"));
        assert_eq!(
            parse("unixgram:/dev/log").addr,
            unix(UnixKind::Datagram, "/dev/log")
        );
        assert_eq!(
            parse("unixpacket:/run/p").addr,
            unix(UnixKind::SeqPacket, "/run/p")
        );
        assert_eq!(parse("unix:@app").addr, abstract_(stream, "app"));
        assert_eq!(
            parse("unixgram:@g").addr,
            abstract_(UnixKind::Datagram, "g")
        );
        assert_eq!(
            parse("unixpacket://@p").addr,
            abstract_(UnixKind::SeqPacket, "p")
        );
        let longest = format!("/{}", "p".repeat(UNIX_PATH_MAX - 1));
        assert_eq!(parse(&longest).addr, unix(stream, &longest));
        let kinds: Vec<&str> = ["unix:/a", "unixgram:/a", "unixpacket:/a", "unix:@a"]
            .iter()
            .map(|s| parse(s).addr.kind().unwrap().as_str())
            .collect();
        assert_eq!(kinds, ["unix", "unixgram", "unixpacket", "unix"]);
    }

    #[test]
    fn inherited_forms() {
        assert_eq!(parse("fd:3").addr, ListenAddr::Fd(3));
        assert_eq!(parse("web=fd:17").name.as_deref(), Some("web"));
        assert_eq!(parse("systemd:web").addr, ListenAddr::Systemd("web".into()));
        assert_eq!(parse("systemd:web").addr.kind(), None);
        assert_eq!(parse("alias=systemd:web").name.as_deref(), Some("alias"));
    }

    #[test]
    fn names_stop_at_addresses_and_queries() {
        // `=` inside the options or in a path that starts like an address is not a name.
        assert_eq!(parse("unix:/run/app.sock?mode=660").name, None);
        assert_eq!(parse("tcp://0.0.0.0:80?backlog=5").name, None);
        assert_eq!(
            parse("/tmp/a=b.sock").addr,
            unix(UnixKind::Stream, "/tmp/a=b.sock")
        );
        let spec = parse("web=unix:/tmp/a=b.sock");
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(spec.addr, unix(UnixKind::Stream, "/tmp/a=b.sock"));
        assert_eq!(parse(":80?backlog=5").name, None);
    }

    #[test]
    fn options() {
        let o = parse("tcp://0.0.0.0:8080?backlog=16384&reuseport=true&nodelay=1&keepalive=off&rcvbuf=65536&sndbuf=1&freebind").options;
        assert_eq!(
            o,
            SocketOptions {
                backlog: Some(16384),
                reuseport: Some(true),
                nodelay: Some(true),
                keepalive: Some(false),
                rcvbuf: Some(65536),
                sndbuf: Some(1),
                freebind: Some(true),
                ..SocketOptions::default()
            }
        );
        let o = parse("unix:/run/app.sock?mode=660&owner=www-data&group=33").options;
        assert_eq!(o.mode, Some(0o660));
        assert_eq!(o.owner, Some(Id::Name("www-data".into())));
        assert_eq!(o.group, Some(Id::Num(33)));
        assert_eq!(parse("unix:/a?mode=0600").options.mode, Some(0o600));
        assert_eq!(parse("[::]:80?v6only=false").options.v6only, Some(false));
        assert_eq!(parse("80?v6only=yes").options.v6only, Some(true));
        assert_eq!(parse("tcp6://:80?v6only=no").options.v6only, Some(false));
        assert!(parse("udp://:53").options.is_empty());
    }

    #[test]
    fn error_family_mismatch() {
        assert_eq!(
            error("tcp4://[::1]:80"),
            "tcp4:// takes an IPv4 address, but listen address \"tcp4://[::1]:80\" has [::1]"
        );
        assert_eq!(
            error("udp6://127.0.0.1:53"),
            "udp6:// takes an IPv6 address, but listen address \"udp6://127.0.0.1:53\" has 127.0.0.1"
        );
    }

    #[test]
    fn error_unix_without_path() {
        assert_eq!(
            error("unix:"),
            "listen address \"unix:\" has no path (expected e.g. unix:/run/app.sock or unix:@name)"
        );
        assert_eq!(
            error("unixgram://?mode=600"),
            "listen address \"unixgram://?mode=600\" has no path (expected e.g. unix:/run/app.sock or unix:@name)"
        );
    }

    #[test]
    fn error_unix_path_with_nul() {
        assert_eq!(
            error("unix:/a\0b"),
            "unix socket path in listen address \"unix:/a\\0b\" contains a NUL byte"
        );
    }

    #[test]
    fn error_unix_path_too_long() {
        let long = format!("/{}", "p".repeat(UNIX_PATH_MAX));
        assert_eq!(
            error(&long),
            format!("unix socket path in listen address {long:?} is 108 bytes long; at most 107 fit (use a shorter or relative path)")
        );
    }

    #[test]
    fn error_abstract_name_empty() {
        assert_eq!(
            error("unix:@"),
            "abstract socket name in listen address \"unix:@\" is empty (expected e.g. unix:@app)"
        );
    }

    #[test]
    fn error_abstract_name_too_long() {
        let long = format!("unixgram:@{}", "n".repeat(UNIX_PATH_MAX + 1));
        assert_eq!(
            error(&long),
            format!("abstract socket name in listen address {long:?} is 108 bytes long; at most 107 fit")
        );
    }

    #[test]
    fn error_fd_not_a_number() {
        for (s, n) in [("fd:x", "x"), ("fd:-1", "-1"), ("fd:+3", "+3"), ("fd:", "")] {
            assert_eq!(
                error(s),
                format!("{n:?} in listen address {s:?} is not a file descriptor number (expected fd:3 or above)")
            );
        }
    }

    #[test]
    fn error_fd_is_stdio() {
        assert_eq!(
            error("fd:2"),
            "fd 2 in listen address \"fd:2\" is stdin, stdout or stderr (expected fd:3 or above)"
        );
    }

    #[test]
    fn error_systemd_without_name() {
        assert_eq!(
            error("systemd:"),
            "listen address \"systemd:\" has no name (expected systemd:NAME, a name from LISTEN_FDNAMES)"
        );
    }

    #[test]
    fn error_systemd_bad_name() {
        assert_eq!(
            error("systemd:a b"),
            "socket name \"a b\" contains ' '; names are printable ASCII without ':' or spaces"
        );
    }

    #[test]
    fn error_options_on_inherited_sockets() {
        assert_eq!(
            error("fd:7?nodelay=true"),
            "listen address \"fd:7?nodelay=true\" takes no options: an inherited socket is already set up"
        );
        assert_eq!(
            error("systemd:web?backlog=5"),
            "listen address \"systemd:web?backlog=5\" takes no options: an inherited socket is already set up"
        );
    }

    #[test]
    fn error_empty_query() {
        assert_eq!(
            error(":80?"),
            "listen address \":80?\" has '?' but no options (expected e.g. ?backlog=1024)"
        );
    }

    #[test]
    fn error_empty_option() {
        assert_eq!(
            error(":80?backlog=5&&nodelay"),
            "listen address \":80?backlog=5&&nodelay\" has an empty option (options are KEY=VALUE separated by '&')"
        );
    }

    #[test]
    fn error_unknown_option() {
        assert_eq!(
            error("tcp://:80?fastopen=1"),
            "unknown option \"fastopen\" in listen address \"tcp://:80?fastopen=1\" (valid for tcp sockets: backlog, reuseport, v6only, nodelay, keepalive, rcvbuf, sndbuf, freebind)"
        );
        assert_eq!(
            error("unix:/a?Mode=600"),
            "unknown option \"Mode\" in listen address \"unix:/a?Mode=600\" (valid for unix sockets: backlog, rcvbuf, sndbuf, mode, owner, group)"
        );
    }

    #[test]
    fn error_option_for_another_kind() {
        assert_eq!(
            error("tcp://:80?mode=600"),
            "option \"mode\" does not apply to tcp sockets, in listen address \"tcp://:80?mode=600\" (valid for tcp sockets: backlog, reuseport, v6only, nodelay, keepalive, rcvbuf, sndbuf, freebind)"
        );
        assert_eq!(
            error("udp://:53?nodelay=true"),
            "option \"nodelay\" does not apply to udp sockets, in listen address \"udp://:53?nodelay=true\" (valid for udp sockets: reuseport, v6only, rcvbuf, sndbuf, freebind)"
        );
        assert_eq!(
            error("unixgram:/a?backlog=5"),
            "option \"backlog\" does not apply to unixgram sockets, in listen address \"unixgram:/a?backlog=5\" (valid for unixgram sockets: rcvbuf, sndbuf, mode, owner, group)"
        );
        assert_eq!(
            error("unix:@a?mode=600"),
            "option \"mode\" does not apply to abstract unix sockets, in listen address \"unix:@a?mode=600\" (valid for abstract unix sockets: backlog, rcvbuf, sndbuf)"
        );
        assert_eq!(
            error("unixgram:@a?owner=root"),
            "option \"owner\" does not apply to abstract unixgram sockets, in listen address \"unixgram:@a?owner=root\" (valid for abstract unixgram sockets: rcvbuf, sndbuf)"
        );
        assert_eq!(
            error("unixpacket:/a?reuseport=true"),
            "option \"reuseport\" does not apply to unixpacket sockets, in listen address \"unixpacket:/a?reuseport=true\" (valid for unixpacket sockets: backlog, rcvbuf, sndbuf, mode, owner, group)"
        );
    }

    #[test]
    fn error_option_twice() {
        assert_eq!(
            error(":80?backlog=5&backlog=6"),
            "option \"backlog\" is given twice in listen address \":80?backlog=5&backlog=6\""
        );
    }

    #[test]
    fn error_option_without_value() {
        assert_eq!(
            error(":80?backlog"),
            "option \"backlog\" in listen address \":80?backlog\" needs a value (e.g. backlog=4096)"
        );
        assert_eq!(
            error("unix:/a?mode"),
            "option \"mode\" in listen address \"unix:/a?mode\" needs a value (e.g. mode=660)"
        );
        assert_eq!(
            error("unix:/a?owner"),
            "option \"owner\" in listen address \"unix:/a?owner\" needs a value (e.g. owner=www-data)"
        );
    }

    #[test]
    fn error_option_not_a_boolean() {
        assert_eq!(
            error(":80?reuseport=maybe"),
            "option reuseport=maybe in listen address \":80?reuseport=maybe\" is not a boolean (expected true or false)"
        );
        assert_eq!(
            error(":80?nodelay="),
            "option nodelay= in listen address \":80?nodelay=\" is not a boolean (expected true or false)"
        );
    }

    #[test]
    fn error_option_not_a_number() {
        for (s, v) in [
            (":80?backlog=abc", "backlog=abc"),
            (":80?backlog=0", "backlog=0"),
            (":80?backlog=2147483648", "backlog=2147483648"),
            (":80?rcvbuf=-1", "rcvbuf=-1"),
            (":80?sndbuf=+5", "sndbuf=+5"),
        ] {
            assert_eq!(
                error(s),
                format!("option {v} in listen address {s:?} is not a number from 1 to 2147483647")
            );
        }
    }

    #[test]
    fn error_option_bad_mode() {
        for (s, v) in [
            ("unix:/a?mode=999", "999"),
            ("unix:/a?mode=1777", "1777"),
            ("unix:/a?mode=rw", "rw"),
            ("unix:/a?mode=", ""),
            ("unix:/a?mode=00660", "00660"),
        ] {
            assert_eq!(
                error(s),
                format!("option mode={v} in listen address {s:?} is not a file mode (expected octal permissions up to 777, e.g. 660 or 0660)")
            );
        }
    }

    #[test]
    fn error_option_bad_owner_or_group() {
        assert_eq!(
            error("unix:/a?owner="),
            "option owner= in listen address \"unix:/a?owner=\" is not valid (expected a user name or a numeric uid)"
        );
        assert_eq!(
            error("unix:/a?group=a b"),
            "option group=a b in listen address \"unix:/a?group=a b\" is not valid (expected a group name or a numeric gid)"
        );
    }

    #[test]
    fn error_v6only_on_ipv4() {
        assert_eq!(
            error("127.0.0.1:80?v6only=true"),
            "option \"v6only\" in listen address \"127.0.0.1:80?v6only=true\" applies only to IPv6 addresses"
        );
        assert_eq!(
            error("udp4://:53?v6only=false"),
            "option \"v6only\" in listen address \"udp4://:53?v6only=false\" applies only to IPv6 addresses"
        );
    }
}
