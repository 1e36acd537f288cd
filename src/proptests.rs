//! Property tests of every parser of untrusted or operator input: the `--listen` grammar and
//! its socket options ([`crate::spec`]), durations, sizes and signals, `--env-file` lines,
//! sd_notify datagrams ([`crate::notify`]) and control-protocol lines ([`crate::control`]), and
//! the smaller option parsers beside them.
//!
//! For each parser:
//! - arbitrary text or bytes (bounded in size) never panic and never take long;
//! - grammar-shaped inputs built from a generated value parse to exactly that value;
//! - near-valid inputs, a valid one with one known part broken, are rejected with a message
//!   that names the broken part.
//!
//! `cargo test` runs 256 cases per property with a fixed seed, so a run is reproducible.
//! Long mode: proptest's own variables, `PROPTEST_CASES=1000000` for the count and
//! `PROPTEST_RNG_SEED=N` for other inputs, e.g.
//! `PROPTEST_CASES=1000000 cargo test --release --lib proptests -- --nocapture --test-threads=1`,
//! which prints each property's count and time (RELIABILITY.md has a recorded run).
//!
//! A hang cannot be interrupted inside the process, so each property runs in a thread that the
//! test waits for with a deadline scaled to the case count: a parser that loops forever fails
//! its test instead of hanging the suite. Every single call must also use less than
//! [`CALL_LIMIT`] of CPU time (CPU time, not wall time, so a loaded machine does not fail it).

use std::ffi::OsString;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::control::{parse_name, parse_request, Request};
use crate::metrics::MetricsAddr;
use crate::notify::{Note, MAX_MESSAGE};
use crate::parse::parse_factor;
use crate::parse::{parse_duration, parse_signal, parse_size};
use crate::process::{parse_env_file, parse_nice, parse_pdeathsig, EnvVar, Umask};
use crate::spec::{
    Family, Host, Id, ListenAddr, ListenSpec, Proto, SocketOptions, UnixKind, UnixPath,
    ALL_OPTIONS, UNIX_PATH_MAX,
};
use crate::sys::spawn::ResourceLimit;

/// The most CPU time any single parser call may use (inputs are at most 64 KiB; a call takes
/// microseconds).
const CALL_LIMIT: Duration = Duration::from_secs(1);

/// The seed of `cargo test` runs, unless `PROPTEST_RNG_SEED` gives another.
const SEED: u64 = 0x7265_6c61_756e_6368;

type Outcome = Result<(), TestCaseError>;

/// Runs `test` on the configured number of values from the strategy `make` builds, in a thread
/// watched by a deadline; panics with proptest's minimal failing input if a case fails.
fn check<S, F>(name: &'static str, make: impl FnOnce() -> S + Send + 'static, test: F)
where
    S: Strategy,
    S::Value: Debug,
    F: Fn(S::Value) -> Outcome + Send + 'static,
{
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    let cases = config.cases;
    // Generous: 256 cases take well under a second even in a debug build.
    let deadline = Duration::from_secs(60) + Duration::from_millis(2) * cases;
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    let worker = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let strategy = make();
            let result = TestRunner::new(config).run(&strategy, test);
            let _ = done.send(result.map_err(|e| e.to_string()));
        })
        .expect("spawning the property's thread");
    match finished.recv_timeout(deadline) {
        Ok(Ok(())) => {
            let _ = worker.join();
            eprintln!(
                "proptests: {name}: {cases} cases in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(Err(failure)) => panic!("{name}: {failure}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: {cases} cases did not finish in {deadline:?}: a parser hangs")
        }
        // The thread panicked outside a test case (in the strategy): report its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{name}: the property's thread ended without a result"),
        },
    }
}

/// The CPU time this thread has used: unlike the wall clock, it does not grow while a loaded
/// machine runs other processes.
fn thread_cpu_time() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("reading the thread's CPU clock");
    Duration::from(t)
}

/// Calls `f`, failing the case if it uses more than [`CALL_LIMIT`] of CPU time.
fn timed<T>(what: impl Debug, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let start = thread_cpu_time();
    let out = f();
    let took = thread_cpu_time().saturating_sub(start);
    prop_assert!(
        took < CALL_LIMIT,
        "parsing {what:?} took {took:?} of CPU time"
    );
    Ok(out)
}

/// `"value"` as the messages quote it (`{:?}`).
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// Fails unless `message` names `token`, verbatim or quoted.
fn names(message: &str, token: &str) -> Outcome {
    prop_assert!(
        message.contains(token) || message.contains(&quoted(token)),
        "the error does not name {token:?}: {message}"
    );
    Ok(())
}

/// Arbitrary text: any characters, weighted towards the ASCII punctuation grammars use.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[0-9a-zA-Z:/?&=@\\[\\]._+ -]{{0,{max}}}"))
            .unwrap(),
        proptest::string::string_regex(&format!(".{{0,{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("(?s:.){{0,{max}}}")).unwrap(),
    ]
}

/// Arbitrary bytes, up to `max`.
fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The --listen grammar and socket options (spec.rs)

/// A `--listen` argument written from a generated value, and that value.
#[derive(Debug, Clone)]
struct Listen {
    text: String,
    spec: ListenSpec,
}

/// Names of sockets, valid in `NAME=` (printable ASCII, no `:`; no `=`, `?` or `/`, which
/// would end the name or make the argument start like a path).
fn socket_name() -> impl Strategy<Value = String> {
    "[!-.0-9;<>@-~]{1,40}"
}

/// Host names that are neither IP addresses nor words that start another scheme (`fd:80`).
fn host_name() -> impl Strategy<Value = String> {
    // Mapped, not filtered: a million cases would exceed proptest's rejection limit.
    "[a-z][a-z0-9-]{0,12}(\\.[a-z0-9-]{1,12}){0,3}".prop_map(|h| {
        if ["fd", "systemd", "unix", "unixgram", "unixpacket"].contains(&h.as_str()) {
            format!("{h}.example")
        } else {
            h
        }
    })
}

fn inet() -> impl Strategy<Value = (String, ListenAddr)> {
    let host = prop_oneof![
        Just(Host::Any),
        any::<[u8; 4]>().prop_map(|o| Host::Ip(IpAddr::V4(Ipv4Addr::from(o)))),
        any::<[u16; 8]>().prop_map(|s| Host::Ip(IpAddr::V6(Ipv6Addr::from(s)))),
        host_name().prop_map(Host::Name),
    ];
    let proto = prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)];
    let family = prop_oneof![Just(Family::Any), Just(Family::V4), Just(Family::V6)];
    (
        proto,
        family,
        host,
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(proto, family, host, port, schemeless, bare)| {
            let host = match (&host, family) {
                (Host::Ip(IpAddr::V6(_)), Family::V4) | (Host::Ip(IpAddr::V4(_)), Family::V6) => {
                    Host::Any
                }
                _ => host,
            };
            let scheme = if schemeless && proto == Proto::Tcp && family == Family::Any {
                String::new()
            } else {
                let p = if proto == Proto::Tcp { "tcp" } else { "udp" };
                let f = match family {
                    Family::Any => "",
                    Family::V4 => "4",
                    Family::V6 => "6",
                };
                format!("{p}{f}://")
            };
            let body = match &host {
                Host::Any if bare => format!("{port}"),
                Host::Any => format!(":{port}"),
                Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
                Host::Ip(ip) => format!("{ip}:{port}"),
                Host::Name(n) => format!("{n}:{port}"),
            };
            let addr = ListenAddr::Inet {
                proto,
                family,
                host,
                port,
            };
            (format!("{scheme}{body}"), addr)
        })
}

fn unix_kind() -> impl Strategy<Value = (UnixKind, &'static str)> {
    prop_oneof![
        Just((UnixKind::Stream, "unix")),
        Just((UnixKind::Datagram, "unixgram")),
        Just((UnixKind::SeqPacket, "unixpacket")),
    ]
}

fn unix() -> impl Strategy<Value = (String, ListenAddr)> {
    // Any characters but NUL and `?` (which starts the options).
    let file = "[^\\x00?@][^\\x00?]{0,40}".prop_map(|p| cut(p, UNIX_PATH_MAX));
    let files = (unix_kind(), file, 0..3u8).prop_map(|((kind, scheme), path, form)| {
        let text = match form {
            // Bare paths are stream sockets that start like a path.
            0 if kind == UnixKind::Stream && path.starts_with('/') => path.clone(),
            1 if !path.starts_with("//") => format!("{scheme}:{path}"),
            _ => format!("{scheme}://{path}"),
        };
        let addr = ListenAddr::Unix {
            kind,
            path: UnixPath::File(PathBuf::from(path)),
        };
        (text, addr)
    });
    let abstracts = (unix_kind(), "[^\\x00?]{1,40}", any::<bool>()).prop_map(
        |((kind, scheme), name, slashes)| {
            let name = cut(name, UNIX_PATH_MAX);
            let sep = if slashes { "://" } else { ":" };
            let text = format!("{scheme}{sep}@{name}");
            let addr = ListenAddr::Unix {
                kind,
                path: UnixPath::Abstract(name),
            };
            (text, addr)
        },
    );
    prop_oneof![files, abstracts]
}

fn inherited() -> impl Strategy<Value = (String, ListenAddr)> {
    prop_oneof![
        (3..=i32::MAX, 0..3usize)
            .prop_map(|(fd, zeros)| (format!("fd:{}{fd}", "0".repeat(zeros)), ListenAddr::Fd(fd))),
        // Any name systemd accepts that `?` does not cut.
        "[!-9;->@-~]{1,60}".prop_map(|n| (format!("systemd:{n}"), ListenAddr::Systemd(n))),
    ]
}

/// One `KEY=VALUE` of a query, as written, and its effect.
fn option_value(key: &'static str) -> BoxedStrategy<(String, SocketOptions)> {
    let number = (1..=i32::MAX as u32, 0..2usize)
        .prop_map(move |(n, zeros)| (format!("{key}={}{n}", "0".repeat(zeros)), Some(n)));
    let boolean = (
        any::<bool>(),
        select(vec![None, Some(0usize), Some(1), Some(2), Some(3)]),
    )
        .prop_map(move |(b, spelling)| {
            let words = if b {
                ["true", "1", "yes", "on"]
            } else {
                ["false", "0", "no", "off"]
            };
            match spelling {
                // Alone, a boolean option means true.
                None => (key.to_owned(), true),
                Some(i) => (format!("{key}={}", words[i]), b),
            }
        });
    let id = prop_oneof![
        any::<u32>().prop_map(|n| (n.to_string(), Id::Num(n))),
        // No whitespace, no control characters, no `&`; not all digits.
        "[a-z_.é][!-%'-~é]{0,15}".prop_map(|n| (n.clone(), Id::Name(n))),
    ];
    match key {
        "backlog" | "rcvbuf" | "sndbuf" => number
            .prop_map(move |(text, n)| {
                let mut opts = SocketOptions::default();
                match key {
                    "backlog" => opts.backlog = n,
                    "rcvbuf" => opts.rcvbuf = n,
                    _ => opts.sndbuf = n,
                }
                (text, opts)
            })
            .boxed(),
        "mode" => (0..=0o777u32, any::<bool>())
            .prop_map(move |(m, zero)| {
                let opts = SocketOptions {
                    mode: Some(m),
                    ..SocketOptions::default()
                };
                let digits = format!("{m:o}");
                let zero = if zero && digits.len() < 4 { "0" } else { "" };
                (format!("mode={zero}{digits}"), opts)
            })
            .boxed(),
        "owner" | "group" => id
            .prop_map(move |(text, id)| {
                let mut opts = SocketOptions::default();
                if key == "owner" {
                    opts.owner = Some(id);
                } else {
                    opts.group = Some(id);
                }
                (format!("{key}={text}"), opts)
            })
            .boxed(),
        _ => boolean
            .prop_map(move |(text, b)| {
                let mut opts = SocketOptions::default();
                let b = Some(b);
                match key {
                    "reuseport" => opts.reuseport = b,
                    "v6only" => opts.v6only = b,
                    "nodelay" => opts.nodelay = b,
                    "keepalive" => opts.keepalive = b,
                    _ => opts.freebind = b,
                }
                (text, opts)
            })
            .boxed(),
    }
}

/// Merges the options each of which sets one field.
fn merge(parts: Vec<SocketOptions>) -> SocketOptions {
    let mut o = SocketOptions::default();
    for p in parts {
        o.backlog = o.backlog.or(p.backlog);
        o.reuseport = o.reuseport.or(p.reuseport);
        o.v6only = o.v6only.or(p.v6only);
        o.nodelay = o.nodelay.or(p.nodelay);
        o.keepalive = o.keepalive.or(p.keepalive);
        o.rcvbuf = o.rcvbuf.or(p.rcvbuf);
        o.sndbuf = o.sndbuf.or(p.sndbuf);
        o.freebind = o.freebind.or(p.freebind);
        o.mode = o.mode.or(p.mode);
        o.owner = o.owner.or(p.owner);
        o.group = o.group.or(p.group);
    }
    o
}

/// A query of options valid for `addr`, in any order, and what it sets.
fn options_for(addr: &ListenAddr) -> BoxedStrategy<(String, SocketOptions)> {
    let Some(kind) = addr.kind() else {
        return Just((String::new(), SocketOptions::default())).boxed();
    };
    let ipv4 = matches!(
        addr,
        ListenAddr::Inet {
            family: Family::V4,
            ..
        } | ListenAddr::Inet {
            host: Host::Ip(IpAddr::V4(_)),
            ..
        }
    );
    let keys: Vec<&'static str> = kind
        .valid_options()
        .iter()
        .copied()
        .filter(|k| !(ipv4 && *k == "v6only"))
        .collect();
    let n = keys.len();
    subsequence(keys, 0..=n)
        .prop_flat_map(|keys| {
            let values: Vec<_> = keys.into_iter().map(option_value).collect();
            values.prop_shuffle()
        })
        .prop_map(|items| {
            if items.is_empty() {
                return (String::new(), SocketOptions::default());
            }
            let (texts, parts): (Vec<String>, Vec<SocketOptions>) = items.into_iter().unzip();
            (format!("?{}", texts.join("&")), merge(parts))
        })
        .boxed()
}

/// A valid `--listen` argument and what it means.
fn listen() -> impl Strategy<Value = Listen> {
    let addr = prop_oneof![4 => inet(), 3 => unix(), 1 => inherited()];
    (proptest::option::of(socket_name()), addr)
        .prop_flat_map(|(name, (text, addr))| {
            let options = options_for(&addr);
            (Just(name), Just(text), Just(addr), options)
        })
        .prop_map(|(name, text, addr, (query, options))| {
            let prefix = name.as_ref().map_or(String::new(), |n| format!("{n}="));
            Listen {
                text: format!("{prefix}{text}{query}"),
                spec: ListenSpec {
                    name,
                    addr,
                    options,
                },
            }
        })
}

/// Whether `message` names something the user wrote in `s`: all of it, the part after
/// `NAME=`, the name, or the name after `systemd:`.
fn names_listen_arg(message: &str, s: &str) -> bool {
    let mut candidates = vec![s];
    if let Some((name, rest)) = s.split_once('=') {
        candidates.extend([name, rest]);
    }
    if let Some(i) = s.find("systemd:") {
        let name = &s[i + "systemd:".len()..];
        candidates.push(name.split('?').next().unwrap_or(name));
    }
    candidates
        .iter()
        .any(|c| !c.is_empty() && message.contains(&quoted(c)))
}

fn check_listen_arg(s: &str) -> Outcome {
    let parsed = timed(s, || s.parse::<ListenSpec>())?;
    match parsed {
        Ok(spec) => {
            // What parses is well-formed.
            if let Some(name) = &spec.name {
                prop_assert!(crate::spec::validate_name(name).is_ok());
            }
            prop_assert!(spec.addr.kind().is_some() || spec.options.is_empty());
        }
        Err(e) => {
            let m = e.to_string();
            prop_assert!(
                s.is_empty() || names_listen_arg(&m, s),
                "error for {s:?} names none of it: {m}"
            );
        }
    }
    Ok(())
}

#[test]
fn listen_valid_arguments_parse_to_what_was_written() {
    check("listen: valid", listen, |l| {
        let parsed = timed(&l.text, || l.text.parse::<ListenSpec>())?;
        prop_assert_eq!(parsed, Ok(l.spec), "parsing {:?}", l.text);
        Ok(())
    });
}

#[test]
fn listen_arbitrary_text_never_panics_and_errors_quote_it() {
    check(
        "listen: arbitrary",
        || any_text(300),
        |s| check_listen_arg(&s),
    );
}

/// A valid argument with one character inserted, removed or replaced (by one the grammar
/// gives a meaning), at any place.
#[test]
fn listen_one_edit_from_valid_never_panics_and_errors_quote_it() {
    let edited = || {
        let chars = "0123456789:/?&=@[].-_ axé\u{0}";
        (
            listen(),
            any::<prop::sample::Index>(),
            0..3u8,
            select(chars.chars().collect::<Vec<_>>()),
        )
            .prop_map(|(l, at, op, c)| {
                let mut chars: Vec<char> = l.text.chars().collect();
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ if i < chars.len() => chars[i] = c,
                    _ => chars.push(c),
                }
                chars.into_iter().collect::<String>()
            })
    };
    check("listen: one edit", edited, |s| check_listen_arg(&s));
}

/// How a near-valid argument is broken, and the token its error must name.
#[derive(Debug, Clone)]
struct Broken {
    text: String,
    token: String,
}

fn broken_listen() -> impl Strategy<Value = Broken> {
    let bad_port = (
        prop_oneof![
            "[0-9]{0,3}[a-zA-Z+ .-][0-9a-z]{0,3}",
            "6553[6-9]|[7-9][0-9]{4}|[1-9][0-9]{5,12}",
        ],
        prop_oneof![
            Just(""),
            Just("127.0.0.1"),
            Just("[::1]"),
            Just("localhost")
        ],
        prop_oneof![Just(""), Just("tcp://"), Just("udp6://")],
    )
        .prop_map(|(port, host, scheme)| {
            let host = if scheme == "udp6://" && host == "127.0.0.1" {
                ""
            } else {
                host
            };
            Broken {
                text: format!("{scheme}{host}:{port}"),
                token: port,
            }
        });
    // Built so that nothing is rejected: a million cases would exceed proptest's rejection limit.
    let kind_of = |addr: &str| addr.parse::<ListenSpec>().unwrap().addr.kind().unwrap();
    let addrs = vec![
        "tcp://:80",
        "udp://:53",
        "unix:/run/a.sock",
        "unixgram:@x",
        "unixpacket:/p",
    ];
    let bad_value = select(addrs.clone())
        .prop_flat_map(move |addr| (Just(addr), select(kind_of(addr).valid_options().to_vec())))
        .prop_flat_map(|(addr, key)| {
            let value = match key {
                "backlog" | "rcvbuf" | "sndbuf" => {
                    "0|-[0-9]{1,5}|[0-9]{0,3}[a-z ][0-9]{0,2}|2147483648|[1-9][0-9]{10,14}|"
                }
                "mode" => "[89]|1000|0o7|-1|[0-7]{5,6}|[0-7]{0,2}[a-z+]|",
                "owner" | "group" => "[a-z]{0,3}[ \t\u{85}\u{7f}][a-z]{0,3}|",
                _ => "maybe|2|[a-z]{5,8}|-1|",
            };
            (Just(addr), Just(key), value)
        })
        .prop_map(|(addr, key, value)| {
            let item = format!("{key}={value}");
            Broken {
                text: format!("{addr}?{item}"),
                token: item,
            }
        });
    let bad_key = select(addrs)
        .prop_flat_map(move |addr| {
            let valid = kind_of(addr).valid_options();
            let others: Vec<&str> = ALL_OPTIONS
                .into_iter()
                .filter(|k| !valid.contains(k))
                .collect();
            let key = prop_oneof![
                // No option has a digit in its name.
                "[a-z]{0,8}[0-9][a-z]{0,2}",
                select(others).prop_map(str::to_owned),
            ];
            (Just(addr), key)
        })
        .prop_map(|(addr, key)| Broken {
            text: format!("{addr}?{key}=1"),
            token: key,
        });
    // A `-` makes it no known scheme; `fd:` and `systemd:` take no `//` anyway.
    let bad_scheme = "[a-z][a-z0-9+.]{0,6}-[a-z0-9]{0,2}".prop_map(|scheme| Broken {
        text: format!("{scheme}://127.0.0.1:80"),
        token: scheme,
    });
    let bad_name = prop_oneof![
        "[a-z]{0,5}[ \t\u{7f}é][a-z:]{0,5}",
        ":[a-z]{0,5}",
        "[a-z]{256,300}",
    ]
    .prop_map(|name| Broken {
        text: format!("{name}=:80"),
        token: name,
    });
    let bad_fd =
        "-[0-9]{1,3}|0*[0-2]|[1-9][0-9]{10,15}|[0-9]{0,2}[a-z +][0-9]{0,2}|".prop_map(|n| Broken {
            text: format!("fd:{n}"),
            token: format!("fd:{n}"),
        });
    let bad_host = prop_oneof![
        "(25[6-9]|[3-9][0-9]{2})\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "[a-z]{1,5}[_!~*][a-z]{0,5}",
        "[a-z]{1,5}\\.\\.[a-z]{1,5}",
        "[a-z]{64,70}",
    ]
    .prop_map(|host| Broken {
        text: format!("{host}:80"),
        token: host,
    });
    let bad_ipv6 = "[0-9a-f:]{0,8}[g-z.][0-9a-f:]{0,8}".prop_map(|ip| Broken {
        text: format!("[{ip}]:80"),
        token: ip,
    });
    let long_path = (unix_kind(), "[a-z][a-z/]{107,200}").prop_map(|((_, scheme), p)| Broken {
        text: format!("{scheme}:/{p}"),
        token: format!("/{p}"),
    });
    let family = prop_oneof![
        any::<[u16; 8]>().prop_map(|s| format!("tcp4://[{}]:80", Ipv6Addr::from(s))),
        any::<[u8; 4]>().prop_map(|o| format!("udp6://{}:80", Ipv4Addr::from(o))),
    ]
    .prop_map(|text| {
        let token = text.split("://").nth(1).unwrap().to_owned();
        Broken { text, token }
    });
    prop_oneof![
        bad_port, bad_value, bad_key, bad_scheme, bad_name, bad_fd, bad_host, bad_ipv6, long_path,
        family,
    ]
}

#[test]
fn listen_near_valid_arguments_are_errors_naming_the_broken_part() {
    check("listen: near-valid", broken_listen, |b| {
        let parsed = timed(&b.text, || b.text.parse::<ListenSpec>())?;
        match parsed {
            Ok(spec) => prop_assert!(false, "{:?} parsed as {spec:?}", b.text),
            Err(e) => names(&e.to_string(), &b.token)?,
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Durations, sizes, signals (cli.rs, output.rs) and the other option values

/// Checks an option parser on `s`: no panic, bounded time, and an error quotes `s`.
fn check_quotes<T: Debug>(s: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Outcome {
    if let Err(m) = timed(s, || parse(s))? {
        prop_assert!(
            m.contains(&quoted(s)),
            "the error for {s:?} does not quote it: {m}"
        );
    }
    Ok(())
}

/// Text shaped like an option value: digits, dots, signs and unit letters, with spaces.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any_text(40),
        "[ ]?[-+]?[0-9]{0,25}(\\.[0-9]{0,12})?(e[-+]?[0-9]{1,3})?[a-zA-Z]{0,4}[ ]?",
        "[0-9.]{0,30}",
    ]
}

#[test]
fn durations_parse_to_what_was_written() {
    let units = [
        ("", 1_000_000_000u128),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let make = move || {
        (
            0..=10_000_000u64,
            proptest::option::of(0..1000u32),
            select(units.to_vec()),
            "[ \t]{0,2}",
        )
            .prop_map(|(n, frac, (unit, scale), pad)| {
                let (text, nanos) = match frac {
                    Some(f) => (
                        format!("{pad}{n}.{f:03}{unit}{pad}"),
                        (n as u128 * 1000 + f as u128) * scale / 1000,
                    ),
                    None => (format!("{pad}{n}{unit}{pad}"), n as u128 * scale),
                };
                (text, nanos)
            })
    };
    check("duration: valid", make, |(text, nanos)| {
        let max = 100 * 365 * 24 * 3600 * 1_000_000_000u128;
        match timed(&text, || parse_duration(&text))? {
            Ok(d) => {
                // Parsed through f64: exact to well under a microsecond at these sizes.
                let diff = d.as_nanos().abs_diff(nanos);
                prop_assert!(nanos <= max && diff <= 1000, "{text:?} parsed as {d:?}");
            }
            Err(m) => {
                prop_assert!(nanos > max, "{text:?} rejected: {m}");
                prop_assert!(m.contains(&quoted(&text)), "{m}");
            }
        }
        Ok(())
    });
}

#[test]
fn durations_arbitrary_text_never_panics_and_errors_quote_it() {
    check("duration: arbitrary", value_text, |s| {
        check_quotes(&s, parse_duration)
    });
}

#[test]
fn sizes_parse_to_what_was_written() {
    let units = [
        ("", 1u64),
        ("b", 1),
        ("k", 1 << 10),
        ("kb", 1 << 10),
        ("kib", 1 << 10),
        ("m", 1 << 20),
        ("mb", 1 << 20),
        ("mib", 1 << 20),
        ("g", 1 << 30),
        ("gb", 1 << 30),
        ("gib", 1 << 30),
    ];
    let make = move || {
        (
            prop_oneof![0..=u64::MAX >> 30, any::<u64>()],
            select(units.to_vec()),
            any::<u8>(),
            "[ \t]{0,2}",
        )
            .prop_map(|(n, (unit, scale), case, pad)| {
                // Any mix of upper and lower case.
                let unit: String = unit
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if case >> i & 1 == 1 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                (format!("{pad}{n}{unit}{pad}"), n.checked_mul(scale))
            })
    };
    check("size: valid", make, |(text, bytes)| {
        match (timed(&text, || parse_size(&text))?, bytes) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, want),
            (Err(m), None) => prop_assert!(m.contains(&quoted(&text)), "{}", m),
            (got, want) => prop_assert!(false, "{text:?}: got {got:?}, expected {want:?}"),
        }
        Ok(())
    });
}

#[test]
fn sizes_arbitrary_text_never_panics_and_errors_quote_it() {
    check("size: arbitrary", value_text, |s| {
        check_quotes(&s, parse_size)
    });
}

#[test]
fn signals_parse_to_what_was_written() {
    let make = || {
        let usable: Vec<Signal> = Signal::iterator()
            .filter(|s| *s != Signal::SIGSTOP)
            .collect();
        (select(usable), 0..3u8, any::<u32>(), "[ \t]{0,2}").prop_map(|(sig, form, case, pad)| {
            let name = sig.as_str();
            let text = match form {
                0 => (sig as i32).to_string(),
                1 => name.to_owned(),
                _ => name.trim_start_matches("SIG").to_owned(),
            };
            let text: String = text
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> (i % 32) & 1 == 1 {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect();
            (format!("{pad}{text}{pad}"), sig)
        })
    };
    check("signal: valid", make, |(text, sig)| {
        prop_assert_eq!(timed(&text, || parse_signal(&text))?, Ok(sig));
        Ok(())
    });
}

#[test]
fn signals_arbitrary_text_never_panics_and_errors_quote_it() {
    let make = || {
        prop_oneof![
            value_text(),
            "(?i:(sig)?[a-z]{0,8}[0-9+-]{0,3})",
            "-?[0-9]{1,12}",
            Just("STOP".to_owned()),
            Just("SIGSTOP".to_owned()),
            Just("19".to_owned()),
        ]
    };
    check("signal: arbitrary", make, |s| {
        check_quotes(&s, parse_signal)?;
        if let Ok(sig) = parse_signal(&s) {
            prop_assert_ne!(sig, Signal::SIGSTOP);
        }
        check_quotes(&s, parse_pdeathsig)
    });
}

/// The other values given on the command line or in `RELAUNCH_*` variables.
#[test]
fn other_option_values_never_panic_and_errors_quote_them() {
    check("other options: arbitrary", value_text, |s| {
        check_quotes(&s, parse_nice)?;
        check_quotes(&s, parse_factor)?;
        check_quotes(&s, |s| s.parse::<Umask>())?;
        check_quotes(&s, parse_name)?;
        check_quotes(&s, |s| s.parse::<MetricsAddr>())?;
        let rlimit = format!("nofile={s}");
        check_quotes(&rlimit, |s| s.parse::<ResourceLimit>())?;
        check_quotes(&s, |s| s.parse::<ResourceLimit>())?;
        if let Err(m) = timed(&s, || s.parse::<EnvVar>())? {
            let key = s.split('=').next().unwrap_or("");
            prop_assert!(
                m.contains(&quoted(&s)) || m.contains(key) || m.contains(&quoted(key)),
                "the error for --env {s:?} names neither it nor its key: {m}"
            );
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// --env-file (process.rs)

/// One line of an env file.
#[derive(Debug, Clone)]
enum EnvLine {
    /// `KEY=VALUE`, indented, ended by `\n` or `\r\n`.
    Var {
        indent: String,
        key: String,
        value: Vec<u8>,
        crlf: bool,
    },
    /// A comment or a blank line.
    Ignored(Vec<u8>),
}

impl EnvLine {
    fn bytes(&self) -> Vec<u8> {
        match self {
            EnvLine::Var {
                indent,
                key,
                value,
                crlf,
            } => {
                let mut b = format!("{indent}{key}=").into_bytes();
                b.extend_from_slice(value);
                if *crlf {
                    b.push(b'\r');
                }
                b
            }
            EnvLine::Ignored(b) => b.clone(),
        }
    }
}

fn env_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,12}".prop_map(|k| {
        if k.starts_with("LISTEN_") || k == "NOTIFY_SOCKET" {
            format!("X{k}")
        } else {
            k
        }
    })
}

fn env_line() -> impl Strategy<Value = EnvLine> {
    // Mapped, not filtered: a million cases would exceed proptest's rejection limit.
    let not_newline_or_nul = any::<u8>().prop_map(|b| if b == b'\n' || b == 0 { b'~' } else { b });
    prop_oneof![
        4 => ("[ \t\x0c]{0,2}", env_key(), proptest::collection::vec(not_newline_or_nul, 0..30), any::<bool>())
            .prop_map(|(indent, key, value, crlf)| EnvLine::Var { indent, key, value, crlf }),
        1 => "[ \t\x0c]{0,3}(#[^\n]{0,20})?\r?".prop_map(|s| EnvLine::Ignored(s.into_bytes())),
    ]
}

/// What the file means: first occurrence's order, last occurrence's value.
fn env_meaning(lines: &[EnvLine]) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = Vec::new();
    for line in lines {
        if let EnvLine::Var {
            key, value, crlf, ..
        } = line
        {
            // A `\r` ending a value is taken for a line ending when the line has no other.
            let mut value = value.clone();
            if !crlf && value.last() == Some(&b'\r') {
                value.pop();
            }
            let (key, value) = (OsString::from(key), OsString::from_vec(value));
            match vars.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => vars.push((key, value)),
            }
        }
    }
    vars
}

fn join_lines(lines: &[Vec<u8>], trailing: bool) -> Vec<u8> {
    let mut out = lines.join(&b'\n');
    if trailing {
        out.push(b'\n');
    }
    out
}

#[test]
fn env_files_parse_to_what_was_written() {
    let make = || (proptest::collection::vec(env_line(), 0..20), any::<bool>());
    check("env-file: valid", make, |(lines, trailing)| {
        let bytes = join_lines(
            &lines.iter().map(EnvLine::bytes).collect::<Vec<_>>(),
            trailing,
        );
        let parsed = timed(&bytes, || parse_env_file(Path::new("app.env"), &bytes))?;
        prop_assert_eq!(parsed, Ok(env_meaning(&lines)));
        Ok(())
    });
}

#[test]
fn env_files_with_a_bad_line_are_errors_naming_the_line_and_the_value() {
    // A bad line, and the token its error must name.
    let bad = prop_oneof![
        "[A-Za-z0-9_][A-Za-z0-9_ .:-]{0,20}".prop_map(|t| (t.clone(), t)),
        (
            "[0-9][A-Za-z0-9_]{0,5}|[A-Za-z_]{0,3}[-.é][A-Za-z]{0,3}|[A-Za-z_]{1,3} [A-Za-z]{0,3}|",
            "[a-z]{0,5}"
        )
            .prop_map(|(k, v)| (format!("{k}={v}"), k)),
        ("LISTEN_[A-Z]{0,6}|NOTIFY_SOCKET", "[a-z]{0,5}")
            .prop_map(|(k, v)| (format!("{k}={v}"), k)),
        (env_key(), "[a-z]{0,3}\u{0}[a-z]{0,3}").prop_map(|(k, v)| (format!("{k}={v}"), k)),
    ];
    let make = move || {
        (
            proptest::collection::vec(env_line(), 0..10),
            bad,
            proptest::collection::vec(env_line(), 0..10),
        )
    };
    check(
        "env-file: bad line",
        make,
        |(before, (line, token), after)| {
            let mut lines: Vec<Vec<u8>> = before.iter().map(EnvLine::bytes).collect();
            let number = lines.len() + 1;
            lines.push(line.into_bytes());
            lines.extend(after.iter().map(EnvLine::bytes));
            let bytes = join_lines(&lines, true);
            let parsed = timed(&bytes, || parse_env_file(Path::new("app.env"), &bytes))?;
            let Err(m) = parsed else {
                return Err(TestCaseError::fail(format!("accepted: {parsed:?}")));
            };
            prop_assert!(
                m.starts_with(&format!("--env-file app.env:{number}: ")),
                "{}",
                m
            );
            names(&m, &token)
        },
    );
}

#[test]
fn env_files_arbitrary_bytes_never_panic_and_errors_name_a_line() {
    let make = || {
        prop_oneof![
            any_bytes(400),
            proptest::collection::vec(select(b"AZ_az09=#\n\r \t\x00\xff".to_vec()), 0..200),
        ]
    };
    check("env-file: arbitrary", make, |bytes| {
        let parsed = timed(&bytes, || parse_env_file(Path::new("app.env"), &bytes))?;
        if let Err(m) = parsed {
            let lines = bytes.split(|&b| b == b'\n').count();
            let number: Option<usize> = m
                .strip_prefix("--env-file app.env:")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok());
            prop_assert!(
                number.is_some_and(|n| (1..=lines).contains(&n)),
                "no line number in: {}",
                m
            );
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// sd_notify datagrams (notify.rs)

/// One line of a notification, as sent.
fn note_line() -> impl Strategy<Value = String> {
    let flag = "1|0|true||[0-9a-z]{1,3}";
    let number =
        "[0-9]{1,20}|-[0-9]{1,6}|[0-9]{0,3}[a-z ][0-9]{0,3}||18446744073709551615|4294967296";
    prop_oneof![
        flag.prop_map(|v| format!("READY={v}")),
        flag.prop_map(|v| format!("STOPPING={v}")),
        flag.prop_map(|v| format!("RELOADING={v}")),
        "[^\n]{0,600}".prop_map(|v| format!("STATUS={v}")),
        number.prop_map(|v| format!("EXTEND_TIMEOUT_USEC={v}")),
        number.prop_map(|v| format!("ERRNO={v}")),
        number.prop_map(|v| format!("MAINPID={v}")),
        "X_[A-Z_]{0,10}=[^\n]{0,10}",
        "[^\n=]{0,20}",
    ]
}

/// What the lines mean: later lines override earlier ones; `None` if none is understood.
fn note_meaning(lines: &[String]) -> Option<Note> {
    let mut note = Note::default();
    let mut known = false;
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "READY" => (note.ready, known) = (value == "1", true),
            "STOPPING" => (note.stopping, known) = (value == "1", true),
            "RELOADING" => (note.reloading, known) = (value == "1", true),
            "STATUS" => (note.status, known) = (Some(value.chars().take(512).collect()), true),
            "EXTEND_TIMEOUT_USEC" => {
                note.extend_timeout = value.parse::<u64>().ok().map(Duration::from_micros);
                known |= note.extend_timeout.is_some();
            }
            "ERRNO" => {
                note.errno = value.parse::<i32>().ok();
                known |= note.errno.is_some();
            }
            "MAINPID" => {
                note.mainpid = value.parse::<i32>().ok().filter(|p| *p > 0);
                known |= note.mainpid.is_some();
            }
            _ => {}
        }
    }
    known.then_some(note)
}

#[test]
fn notifications_parse_to_what_was_sent() {
    let make = || (proptest::collection::vec(note_line(), 0..12), any::<bool>());
    check("notify: valid", make, |(lines, trailing)| {
        let mut datagram = lines.join("\n");
        if trailing {
            datagram.push('\n');
        }
        let parsed = timed(&datagram, || Note::parse(datagram.as_bytes()))?;
        prop_assert_eq!(parsed, note_meaning(&lines));
        Ok(())
    });
}

#[test]
fn notifications_arbitrary_bytes_never_panic() {
    let make = || {
        prop_oneof![
            any_bytes(MAX_MESSAGE),
            proptest::collection::vec(note_line(), 0..12).prop_map(|l| l.join("\n").into_bytes()),
            // Valid lines with bytes broken in them.
            (
                proptest::collection::vec(note_line(), 1..6),
                proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
            )
                .prop_map(|(lines, edits)| {
                    let mut b = lines.join("\n").into_bytes();
                    for (at, byte) in edits {
                        if !b.is_empty() {
                            let i = at.index(b.len());
                            b[i] = byte;
                        }
                    }
                    b
                }),
        ]
    };
    check("notify: arbitrary", make, |bytes| {
        if let Some(note) = timed(&bytes, || Note::parse(&bytes))? {
            prop_assert!(note
                .status
                .as_ref()
                .is_none_or(|s| s.chars().count() <= 512));
            prop_assert!(note.mainpid.is_none_or(|p| p > 0));
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Control-protocol lines (control.rs)

/// A request line, written field by field in any order, with what it must parse to (`Ok`) or
/// the token its error must name (`Err`).
fn request_line() -> impl Strategy<Value = (String, Result<Request, String>)> {
    let version = prop_oneof![
        4 => Just(Some(1u32)),
        1 => Just(None),
        1 => any::<u32>().prop_map(Some),
    ];
    let cmd = prop_oneof![
        select(vec![
            "status", "reload", "restart", "start", "stop", "signal"
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z]{0,8}|.{0,8}",
    ];
    let signal = proptest::option::of(prop_oneof![
        select(vec!["USR1", "SIGHUP", "term", "9", "15"]).prop_map(str::to_owned),
        "[A-Z]{1,6}|-?[0-9]{1,4}|STOP|19",
    ]);
    (
        version,
        cmd,
        any::<bool>(),
        signal,
        any::<bool>(),
        "[ \t]{0,2}",
    )
        .prop_flat_map(|(v, cmd, wait, signal, extra, pad)| {
            let mut fields: Vec<String> = Vec::new();
            let json = |s: &str| serde_json::to_string(s).unwrap();
            if let Some(v) = v {
                fields.push(format!("\"v\":{pad}{v}"));
            }
            fields.push(format!("\"cmd\":{}", json(&cmd)));
            if wait {
                fields.push(format!("{pad}\"wait\":true"));
            }
            if let Some(s) = &signal {
                fields.push(format!("\"signal\":{}", json(s)));
            }
            if extra {
                // Fields a newer client may send are ignored.
                fields.push("\"later\":{\"x\":[1,2]}".to_owned());
            }
            let request = Request {
                v,
                cmd: cmd.clone(),
                wait,
                signal: signal.clone(),
                program: None,
                worker: None,
            };
            let expected = match (v, cmd.as_str(), &signal) {
                (None, _, _) => Err("\"v\"".to_owned()),
                (Some(v), _, _) if v != 1 => Err(v.to_string()),
                (_, "status" | "reload" | "restart" | "start" | "stop", _) => Ok(request),
                (_, "signal", None) => Err("\"signal\"".to_owned()),
                (_, "signal", Some(s)) => match parse_signal(s) {
                    Ok(_) => Ok(request),
                    Err(_) => Err(quoted(s)),
                },
                (_, other, _) => Err(quoted(other)),
            };
            (Just(fields).prop_shuffle(), Just(pad), Just(expected))
        })
        .prop_map(|(fields, pad, expected)| {
            (format!("{pad}{{{}}}{pad}", fields.join(",")), expected)
        })
}

#[test]
fn control_requests_parse_to_what_was_sent_or_name_the_bad_field() {
    check("control: requests", request_line, |(line, expected)| {
        let parsed = timed(&line, || parse_request(line.as_bytes()))?;
        match (parsed, expected) {
            (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
            (Err(m), Err(token)) => names(&m, &token)?,
            (got, want) => prop_assert!(false, "{line}: got {got:?}, expected {want:?}"),
        }
        Ok(())
    });
}

#[test]
fn control_arbitrary_lines_never_panic_and_errors_quote_them() {
    let make = || {
        prop_oneof![
            any_bytes(300),
            any_text(300).prop_map(String::into_bytes),
            // Valid requests cut short or with a byte changed.
            (
                request_line(),
                any::<prop::sample::Index>(),
                any::<u8>(),
                any::<bool>()
            )
                .prop_map(|((line, _), at, byte, truncate)| {
                    let mut b = line.into_bytes();
                    let i = at.index(b.len());
                    if truncate {
                        b.truncate(i);
                    } else {
                        b[i] = byte;
                    }
                    b
                }),
            // Up to the longest line the server reads.
            (any::<u8>(), 1..=crate::control::MAX_REQUEST).prop_map(|(b, n)| vec![b; n]),
        ]
    };
    check("control: arbitrary", make, |line| {
        if let Err(m) = timed(&line, || parse_request(&line))? {
            // A long line is quoted only in part: the answer stays short.
            prop_assert!(m.len() < 1024, "an error of {} bytes", m.len());
            // Errors about a well-formed request's fields are checked above; a line that is
            // not a request at all is quoted (whole, when it is short).
            if line.len() <= 100 && m.starts_with("malformed request") {
                let shown = String::from_utf8_lossy(&line);
                prop_assert!(
                    m.contains(&quoted(&shown)),
                    "the error for {shown:?} does not quote it: {m}"
                );
            }
        }
        Ok(())
    });
}
