//! The `--listen [NAME=]ADDR` grammar.
//!
//! Parsing is pure: it checks the shape of the text and never touches the network. Host names are
//! resolved when the socket is bound (see [`crate::sockets`]), so that an error there can name
//! the addresses a name resolved to.
//!
//! | written                      | meaning                                                    |
//! |------------------------------|------------------------------------------------------------|
//! | `8080`, `:8080`              | TCP on all interfaces (`[::]` dual-stack, else `0.0.0.0`)  |
//! | `127.0.0.1:8080`, `[::1]:80` | TCP on that address                                        |
//! | `localhost:8080`             | TCP on the one address the name resolves to                |
//! | `tcp://HOST:PORT`            | the same, explicitly                                       |
//! | `NAME=ADDR`                  | any of the above, passed to the child under `NAME`         |
//!
//! Port `0` asks the kernel for a free port; the startup log names the one it chose.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The longest file descriptor name systemd accepts (`FDNAME_MAX`).
pub const FDNAME_MAX: usize = 255;

/// One parsed `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The name given with `NAME=`, if any (already validated).
    pub name: Option<String>,
    /// What to bind.
    pub addr: ListenAddr,
}

/// The address part of a `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP stream socket.
    Tcp {
        /// Where to bind.
        host: Host,
        /// The port; 0 lets the kernel choose.
        port: u16,
    },
}

/// The host part of a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// No host given: every interface, IPv6 dual-stack when the machine has IPv6.
    Any,
    /// A literal IP address.
    Ip(IpAddr),
    /// A host name, resolved at bind time; it must resolve to exactly one address.
    Name(String),
}

/// Why a `--listen` argument was rejected. The `Display` text is the whole user-facing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn err(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

impl FromStr for ListenSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(err(
                "empty listen address (expected [NAME=]ADDR, e.g. 127.0.0.1:8080)",
            ));
        }
        // `NAME=` only counts when the text before `=` could not be part of an address; every
        // address form starts with a digit, ':', '[', a scheme or a host name, none with '='.
        let (name, rest) = match s.split_once('=') {
            Some((name, rest)) => {
                validate_name(name)?;
                (Some(name.to_owned()), rest)
            }
            None => (None, s),
        };
        let addr = parse_addr(rest)?;
        Ok(ListenSpec { name, addr })
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
            "socket name is {} bytes long; at most {FDNAME_MAX} are allowed",
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

fn parse_addr(s: &str) -> Result<ListenAddr, SpecError> {
    let body = match s.split_once("://") {
        Some(("tcp", body)) => body,
        Some((scheme, _)) => {
            return Err(err(format!(
                "unknown scheme {scheme:?} in listen address {s:?} (supported: tcp://)"
            )))
        }
        None => s,
    };
    if body.is_empty() {
        return Err(err(format!(
            "listen address {s:?} has no port (e.g. :8080)"
        )));
    }
    // A bare port: `8080`.
    if body.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ListenAddr::Tcp {
            host: Host::Any,
            port: parse_port(body, s)?,
        });
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
    Ok(ListenAddr::Tcp {
        host,
        port: parse_port(port, s)?,
    })
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

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name}=")?;
        }
        write!(f, "{}", self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: Host, port: u16) -> ListenAddr {
        ListenAddr::Tcp { host, port }
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
        for s in ["web=127.0.0.1:80", "[::1]:0", ":8080", "localhost:1"] {
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
            "empty socket name before '=' (expected NAME=ADDR, e.g. http=:8080)"
        );
    }

    #[test]
    fn error_name_too_long() {
        let long = "n".repeat(FDNAME_MAX + 1);
        assert_eq!(
            error(&format!("{long}=:80")),
            "socket name is 256 bytes long; at most 255 are allowed"
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
            "unknown scheme \"http\" in listen address \"http://x:80\" (supported: tcp://)"
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
}
