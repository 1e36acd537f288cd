//! `--metrics ADDR`: Prometheus metrics over a minimal HTTP/1.0 responder.
//!
//! No web framework: the master's loop accepts a connection, reads the request head (at most
//! [`MAX_HEAD`] bytes, within [`TIMEOUT`]), answers `GET /metrics` (or `GET /`) with the text
//! exposition format, and closes. Everything is non-blocking and bounded like the control
//! socket (`conn`). The listening socket is close-on-exec and is never passed to
//! children (only the `--listen` sockets are).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `relaunch_reloads_total{result="ok"\|"failed"}` | counter | reload attempts by outcome |
//! | `relaunch_restarts_total` | counter | restarts after the server exited on its own |
//! | `relaunch_spawn_failures_total` | counter | spawns that failed before the program ran |
//! | `relaunch_child_up` | gauge | 1 while a generation is running (up and serving), else 0 |
//! | `relaunch_generation` | gauge | the current generation's number (0 when none) |
//! | `relaunch_state{state="..."}` | gauge | 1 for the program's state (`RUNNING`, `BACKOFF`, ...), 0 for the others |
//! | `relaunch_restart_attempt` | gauge | automatic restarts in a row since a generation last counted as started (0 when none) |
//! | `relaunch_start_failures` | gauge | failed starts in a row (reset when a generation counts as started) |
//! | `relaunch_reload_duration_seconds` | histogram | time from a reload's start to its end |
//! | `relaunch_start_time_seconds` | gauge | when relaunch started, unix time |

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::str::FromStr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use nix::poll::PollFlags;

use crate::accept::AcceptPause;
use crate::conn::{Conn, ReadState};
use crate::poll::{PollSet, Polled, Token};
use crate::sockets;
use crate::spec::ListenSpec;
use crate::status::{Clock, Tracker, DURATION_BUCKETS};
use crate::supervisor::{Fleet, Phase, ProgramState};

/// The longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a connection may take from accept to the end of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections served at once.
pub const MAX_CONNS: usize = 16;

/// A `--metrics` address: the TCP forms of `--listen` (`:9100`, `127.0.0.1:9100`,
/// `[::1]:9100`, `localhost:9100`), without `NAME=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsAddr {
    spec: ListenSpec,
    text: String,
}

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec: ListenSpec = s.parse().map_err(|e| format!("--metrics {s:?}: {e}"))?;
        if spec.name.is_some() {
            return Err(format!(
                "--metrics {s:?}: a metrics address takes no NAME= (expected e.g. 127.0.0.1:9100)"
            ));
        }
        Ok(MetricsAddr {
            spec,
            text: s.to_owned(),
        })
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The metrics endpoint: its listening socket and open connections.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    listener: Polled<TcpListener>,
    local: SocketAddr,
    conns: Vec<Conn<TcpStream>>,
    /// Set while `accept` fails for lack of fds: the listener is then not polled.
    pause: AcceptPause,
}

impl MetricsServer {
    /// Binds `addr` (close-on-exec, non-blocking).
    pub fn bind(addr: &MetricsAddr) -> anyhow::Result<MetricsServer> {
        let bound = sockets::bind_all(std::slice::from_ref(&addr.spec), 128)
            .with_context(|| format!("--metrics {addr}"))?;
        let listener = bound
            .first()
            .ok_or_else(|| anyhow!("--metrics {addr}: nothing was bound"))?;
        if listener.kind != "tcp" {
            return Err(anyhow!(
                "--metrics {addr}: metrics are served over TCP; give a TCP address like 127.0.0.1:9100"
            ));
        }
        // A close-on-exec duplicate (F_DUPFD_CLOEXEC) becomes the std listener.
        let fd = listener
            .as_fd()
            .try_clone_to_owned()
            .with_context(|| format!("--metrics {addr}"))?;
        let listener = TcpListener::from(fd);
        listener
            .set_nonblocking(true)
            .with_context(|| format!("--metrics {addr}"))?;
        let local = listener
            .local_addr()
            .with_context(|| format!("--metrics {addr}"))?;
        Ok(MetricsServer {
            listener: Polled::new(listener),
            local,
            conns: Vec::new(),
            pause: AcceptPause::new("metrics"),
        })
    }

    /// The bound address (with port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Registers the listener (unless its accepting is paused) and every connection in `set`;
    /// [`MetricsServer::io`] takes the `revents` of the returned tokens, in their order.
    pub fn register<'a>(&'a self, set: &mut PollSet<'a>) -> Vec<Token> {
        let mut tokens = vec![set.add_with(&self.listener, self.pause.interest())];
        for c in &self.conns {
            tokens.push(set.add_with(&c.stream, c.interest(true)));
        }
        tokens
    }

    /// The earliest connection deadline (or the end of an accept pause).
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.iter().filter_map(|c| c.deadline).min();
        conns.into_iter().chain(self.pause.deadline()).min()
    }

    /// Accepts, reads and answers as `poll` found possible (`revents` in `register` order).
    /// `render` makes the exposition text; it is called at most once.
    pub fn io(&mut self, revents: &[PollFlags], now: Instant, render: impl FnOnce() -> String) {
        let mut render = Some(render);
        let mut body: Option<String> = None;
        let bad = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        for (i, c) in self.conns.iter_mut().enumerate() {
            let Some(&ev) = revents.get(i + 1) else {
                continue;
            };
            if ev.intersects(bad) {
                c.deadline = Some(now);
                continue;
            }
            if ev.contains(PollFlags::POLLOUT) && c.flush().is_err() {
                c.deadline = Some(now);
            }
            if !ev.contains(PollFlags::POLLIN) || c.closing {
                continue;
            }
            let state = c.read(MAX_HEAD, usize::MAX);
            let head = c.input();
            let complete = find(head, b"\r\n\r\n").is_some() || find(head, b"\n\n").is_some();
            let response = if complete || state == ReadState::Eof {
                let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
                let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let path = path.split('?').next().unwrap_or("");
                match (method, path) {
                    ("GET" | "HEAD", "/metrics" | "/") => {
                        let text = body
                            .get_or_insert_with(|| render.take().map_or_else(String::new, |f| f()));
                        Some(http(
                            "200 OK",
                            "text/plain; version=0.0.4; charset=utf-8",
                            text,
                            method == "HEAD",
                        ))
                    }
                    ("GET" | "HEAD", _) => Some(http(
                        "404 Not Found",
                        "text/plain; charset=utf-8",
                        "not found; metrics are at /metrics\n",
                        method == "HEAD",
                    )),
                    _ => Some(http(
                        "405 Method Not Allowed",
                        "text/plain; charset=utf-8",
                        "only GET /metrics\n",
                        false,
                    )),
                }
            } else if state == ReadState::Failed {
                c.deadline = Some(now);
                None
            } else if head.len() > MAX_HEAD {
                Some(http(
                    "431 Request Header Fields Too Large",
                    "text/plain; charset=utf-8",
                    "request head too large\n",
                    false,
                ))
            } else {
                None
            };
            if let Some(response) = response {
                c.clear_input();
                c.closing = true;
                if c.send(response.as_bytes()).is_err() {
                    c.deadline = Some(now);
                }
            }
        }
        let readable = revents
            .first()
            .is_some_and(|ev| ev.contains(PollFlags::POLLIN));
        if self.pause.should_accept(readable, now) {
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        self.pause.accepted(now);
                        if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                            continue; // dropped: closed at once
                        }
                        self.conns.push(Conn::new(stream, Some(now + TIMEOUT)));
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if AcceptPause::is_fd_shortage(&e) => {
                        // Still queued, so still readable: stop polling the listener a while.
                        self.pause.failed(&e, now);
                        break;
                    }
                    Err(_) => break, // WouldBlock, or a connection that failed on its own
                }
            }
        }
        let before = self.conns.len();
        self.conns.retain(|c| {
            if c.done() {
                let _ = c.stream.shutdown(Shutdown::Write);
                return false;
            }
            !c.expired(now)
        });
        if self.conns.len() < before {
            // An fd was freed: a paused accept may succeed now.
            self.pause.fd_freed();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn http(status: &str, content_type: &str, body: &str, head_only: bool) -> String {
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    out
}

/// The exposition text of several programs: every sample carries a `program` label
/// (`relaunch_child_up{program="web"} 1`), each metric's `# HELP` and `# TYPE` once.
pub(crate) fn render_named(programs: &[(&str, &Tracker, &Fleet)]) -> String {
    // Each metric's block, in the order the first program renders them.
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for (name, tracker, sup) in programs {
        let label = format!(
            "program=\"{}\"",
            name.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let mut current = None;
        for line in render(tracker, sup).lines() {
            if line.starts_with("# HELP ") {
                let position = blocks.iter().position(|(head, _)| head.starts_with(line));
                current = Some(position.unwrap_or_else(|| {
                    blocks.push((format!("{line}\n"), Vec::new()));
                    blocks.len() - 1
                }));
            } else if line.starts_with("# TYPE ") {
                if let Some(b) = current.and_then(|c| blocks.get_mut(c)) {
                    if !b.0.contains("# TYPE ") {
                        b.0.push_str(line);
                        b.0.push('\n');
                    }
                }
            } else if let Some(b) = current.and_then(|c| blocks.get_mut(c)) {
                let (metric, rest) = line.split_once(' ').unwrap_or((line, ""));
                let labelled = match metric.split_once('{') {
                    Some((m, labels)) => format!("{m}{{{label},{labels} {rest}"),
                    None => format!("{metric}{{{label}}} {rest}"),
                };
                b.1.push(labelled);
            }
        }
    }
    let mut out = String::new();
    for (head, samples) in blocks {
        out.push_str(&head);
        for sample in samples {
            out.push_str(&sample);
            out.push('\n');
        }
    }
    out
}

/// The exposition text (Prometheus text format 0.0.4).
pub(crate) fn render(tracker: &Tracker, sup: &Fleet) -> String {
    let counters = tracker.counters();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "relaunch_reloads_total",
        "counter",
        "Reload attempts, by result.",
        &[
            ("{result=\"ok\"}", counters.reloads_ok.to_string()),
            ("{result=\"failed\"}", counters.reloads_failed.to_string()),
        ],
    );
    metric(
        "relaunch_restarts_total",
        "counter",
        "Restarts of the server after it exited on its own.",
        &[("", counters.restarts.to_string())],
    );
    metric(
        "relaunch_spawn_failures_total",
        "counter",
        "Spawns that failed before the program ran (exec failed, program missing).",
        &[("", counters.spawn_failures.to_string())],
    );
    let up = sup
        .current()
        .is_some_and(|c| c.phase == Phase::Running && !sup.is_stopping());
    metric(
        "relaunch_child_up",
        "gauge",
        "Whether a generation of the server is running (up and serving).",
        &[("", u8::from(up).to_string())],
    );
    metric(
        "relaunch_workers",
        "gauge",
        "Worker processes per generation (--workers).",
        &[("", sup.count().to_string())],
    );
    let workers_up = if sup.is_stopping() {
        0
    } else {
        sup.workers_up()
    };
    metric(
        "relaunch_workers_up",
        "gauge",
        "How many workers are up (their serving child is running).",
        &[("", workers_up.to_string())],
    );
    metric(
        "relaunch_generation",
        "gauge",
        "The current generation's number (0 when there is none).",
        &[("", sup.current().map_or(0, |c| c.generation).to_string())],
    );
    let state = sup.state();
    let states: Vec<(String, String)> = [
        ProgramState::Starting,
        ProgramState::Running,
        ProgramState::Backoff,
        ProgramState::Stopping,
        ProgramState::Exited,
        ProgramState::Fatal,
    ]
    .into_iter()
    .map(|s| {
        (
            format!("{{state=\"{}\"}}", s.as_str()),
            u8::from(s == state).to_string(),
        )
    })
    .collect();
    let samples: Vec<(&str, String)> = states
        .iter()
        .map(|(l, v)| (l.as_str(), v.clone()))
        .collect();
    metric(
        "relaunch_state",
        "gauge",
        "The program's state (1 for the current one): STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL.",
        &samples,
    );
    metric(
        "relaunch_restart_attempt",
        "gauge",
        "Automatic restarts in a row since a generation last counted as started (0 when none).",
        &[("", sup.restart_attempt().to_string())],
    );
    metric(
        "relaunch_start_failures",
        "gauge",
        "Failed starts in a row (reset when a generation counts as started).",
        &[("", sup.start_failures().to_string())],
    );
    let h = tracker.durations();
    let mut samples = Vec::new();
    let mut cumulative = 0;
    let les: Vec<String> = DURATION_BUCKETS
        .iter()
        .map(|le| format!("{{le=\"{le}\"}}"))
        .chain(std::iter::once("{le=\"+Inf\"}".to_owned()))
        .collect();
    for (i, le) in les.iter().enumerate() {
        cumulative += h.counts[i];
        samples.push((le.as_str(), cumulative.to_string()));
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP relaunch_reload_duration_seconds Time from a reload's start to its end (success or failure)."
    );
    let _ = writeln!(text, "# TYPE relaunch_reload_duration_seconds histogram");
    for (labels, value) in &samples {
        let _ = writeln!(
            text,
            "relaunch_reload_duration_seconds_bucket{labels} {value}"
        );
    }
    let _ = writeln!(text, "relaunch_reload_duration_seconds_sum {}", h.sum);
    let _ = writeln!(text, "relaunch_reload_duration_seconds_count {}", h.count);
    out.push_str(&text);
    let start = Clock::now()
        .wall(tracker.started())
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
    let _ = writeln!(
        out,
        "# HELP relaunch_start_time_seconds When relaunch started, in seconds since the Unix epoch.\n# TYPE relaunch_start_time_seconds gauge\nrelaunch_start_time_seconds {start}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Settings;

    #[test]
    fn addresses() {
        assert!("127.0.0.1:9100".parse::<MetricsAddr>().is_ok());
        assert!(":9100".parse::<MetricsAddr>().is_ok());
        let e = "m=127.0.0.1:9100".parse::<MetricsAddr>().unwrap_err();
        assert!(e.contains("no NAME="), "{e}");
        let e = "127.0.0.1:99999".parse::<MetricsAddr>().unwrap_err();
        assert!(e.starts_with("--metrics \"127.0.0.1:99999\": "), "{e}");
    }

    #[test]
    fn several_programs_carry_a_program_label_under_one_help_each() {
        let t0 = Instant::now();
        let (a, b) = (Tracker::new(t0), Tracker::new(t0));
        let sup = Fleet::new(Settings::default());
        let text = render_named(&[("web", &a, &sup), ("api", &b, &sup)]);
        assert_eq!(
            text.matches("# HELP relaunch_child_up ").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE relaunch_child_up ").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("relaunch_child_up{program=\"web\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("relaunch_child_up{program=\"api\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("relaunch_reloads_total{program=\"api\",result=\"ok\"} 0\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains("{program=\""), "{line}");
        }
    }

    #[test]
    fn exposition_format() {
        let t0 = Instant::now();
        let tracker = Tracker::new(t0);
        let sup = Fleet::new(Settings::default());
        let text = render(&tracker, &sup);
        for line in [
            "# TYPE relaunch_reloads_total counter",
            "relaunch_reloads_total{result=\"ok\"} 0",
            "relaunch_reloads_total{result=\"failed\"} 0",
            "relaunch_restarts_total 0",
            "relaunch_child_up 0",
            "relaunch_generation 0",
            "# TYPE relaunch_state gauge",
            "relaunch_state{state=\"STARTING\"} 1",
            "relaunch_state{state=\"BACKOFF\"} 0",
            "relaunch_restart_attempt 0",
            "relaunch_start_failures 0",
            "# TYPE relaunch_reload_duration_seconds histogram",
            "relaunch_reload_duration_seconds_bucket{le=\"0.05\"} 0",
            "relaunch_reload_duration_seconds_bucket{le=\"+Inf\"} 0",
            "relaunch_reload_duration_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` with a numeric value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn the_listener_is_close_on_exec() {
        let m = MetricsServer::bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let flags = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&*m.listener),
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        assert_ne!(m.local_addr().port(), 0);
    }
}
