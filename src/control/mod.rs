//! The control socket: `relaunch status | reload --wait | stop | signal` talk to a running
//! master through it.
//!
//! # Where it lives
//! `--control PATH`, or by default `<dir>/<name>.sock` ([`default_path`]) where `<dir>` is
//! `$RELAUNCH_CONTROL_DIR` if set, else `$XDG_RUNTIME_DIR/relaunch`, else `/run/relaunch` for
//! root, else the path of `--pid-file` with its extension replaced by `.sock`, else
//! `$TMPDIR/relaunch-<uid>`. A missing directory is created with mode 0700; an existing one is
//! left as it is (relaunch never chmods a shared directory), except that the temp-dir fallback
//! must be owned by the user and closed to others. The socket is created with mode 0600 by
//! `bind` itself (the mode is set on the socket's fd first; no chmod by name, which would
//! follow a symlink swapped in, and no umask change), and checked with
//! `fstatat(AT_SYMLINK_NOFOLLOW)`. A socket file left behind by a
//! relaunch that died is replaced; one that answers (or whose backlog is full: the check's
//! `connect` never blocks) belongs to a running relaunch. Starting a second one with the same
//! explicit `--name` or `--control` then fails with exit code 1; without either, the default
//! name (the program's file name) gets the first free suffix `-2`, `-3`, … and the choice is
//! logged. The file is removed when relaunch exits.
//!
//! # Who may use it
//! Every connection's peer is checked with `SO_PEERCRED`: only relaunch's own uid and root
//! are served; anyone else gets one error line and is disconnected.
//!
//! # Protocol (version 1)
//! One JSON object per line each way ([`Request`], [`Response`]). Requests:
//! `{"v":1,"cmd":"status"}`, `{"v":1,"cmd":"reload","wait":true}`,
//! `{"v":1,"cmd":"stop","wait":true}`, `{"v":1,"cmd":"signal","signal":"USR1"}`. A
//! connection may send several requests; each gets one answer line, in order. `reload` with
//! `wait` answers when the reload attempt that will carry the request ends: the one it started,
//! or, when a reload was already in progress, the coalesced follow-up (not the attempt in
//! progress, which was started before the request and may not include what it asked for).
//!
//! # Never blocking the master
//! Everything runs in the master's one thread (`Control` is driven by the runtime's poll
//! loop): sockets are non-blocking; a request line is at most [`MAX_REQUEST`] bytes; each
//! wake-up reads at most that much per connection; one answer is always sent whole, and
//! answers queued behind ones a client has not read are buffered up to [`MAX_OUTPUT`] bytes; a connection that sends no complete request within
//! [`IDLE_TIMEOUT`] (or does not read its answer in that time) is closed; at most
//! [`MAX_CLIENTS`] connections are served at once, and when all are taken a new one evicts
//! the idle connection with the least claim to its slot (so that clients which keep their
//! connections open cannot lock others out); when `accept` runs out of fds, the listener is
//! left out of `poll` for a moment (`accept`) rather than spin. The deadlines are
//! folded into the loop's `poll` timeout, so an idle master still makes no wake-ups.
//!
//! # Files, and who drives the supervisor
//! `locate.rs` (where control sockets live, names, the non-blocking probe the client uses
//! too), `protocol.rs` (the lines), `server.rs` (the socket and its connections), `waiters.rs` (which `reload --wait` an ending attempt answers), and here
//! `Control`, the control plane as the runtime drives it. The control plane never holds the
//! supervisor: it turns requests into `Ask`s, the runtime feeds the matching events through
//! its one path into the state machine, and hands back what they reported.

mod events;
pub(crate) mod local;
mod locate;
mod protocol;
mod server;
mod waiters;

pub use events::Event;
pub use locate::{
    default_path, parse_name, probe, program_name, socket_next_to, suffixed, PathEnv, Probe,
    CONTROL_DIR_VAR, MAX_NAME, MAX_SUFFIX,
};
pub use protocol::{
    parse_request, write_request, Accepted, EditOutcome, EditReply, Request, Response, SignalReply,
    StopReply, MAX_REQUEST, PROTOCOL,
};
pub(crate) use server::ControlServer;
pub use server::{IDLE_TIMEOUT, MAX_CLIENTS, MAX_OUTPUT};
pub(crate) use waiters::{Joined, ReloadWaiters};

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::info;

use crate::metrics::{MetricsAddr, MetricsServer};
use crate::parse::parse_signal;
use crate::poll::{PollSet, Ready, Token};
use crate::status::{ReloadRecord, SocketRecord, StatusRecord};
use crate::supervisor::Report;
use server::Waiting;

/// The master's control-plane settings (`--name`, `--control`, `--no-control`, `--metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The control socket's path; `None` with `--no-control`.
    pub socket: Option<PathBuf>,
    /// Whether `socket` is the default path rather than `--control` (the default's directory
    /// gets extra checks).
    pub default_path: bool,
    /// Whether the name is the default one too (no `--name`): when a running relaunch already
    /// has it, this one takes the first free `<name>-2`, `<name>-3`, … instead of failing.
    pub default_name: bool,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<MetricsAddr>,
}

/// What a client asked of the master, for the runtime to carry out. With
/// [`Asked::program`], about that program alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `status`: answer with [`Control::status`].
    Status,
    /// `reload`: feed a control reload, then [`Control::reload_asked`].
    Reload {
        /// Answer when the attempt ends.
        wait: bool,
    },
    /// `stop`: feed a stop, then [`Control::stop_asked`].
    Stop {
        /// Answer when relaunch exits.
        wait: bool,
    },
    /// `signal`: forward it to the current generation (or one worker of it), then
    /// [`Control::signal_asked`].
    Signal {
        /// The signal.
        signal: Signal,
        /// Only this worker.
        worker: Option<usize>,
    },
    /// `start`: start a program that does not run (stopped by name, or `autostart = false`).
    Start,
    /// `restart`: start a program that does not run, reload one that does.
    Restart {
        /// Answer when the reload ends.
        wait: bool,
    },
    /// `update`: apply the configuration file's changes only (added, removed and changed
    /// programs).
    Update {
        /// Answer when every change has ended.
        wait: bool,
    },
}

/// One request: what was asked, and of which program (by name; `None`: the whole master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The client connection, to answer.
    pub(crate) id: u64,
    /// The program named, if any.
    pub(crate) program: Option<String>,
    /// What it asked.
    pub(crate) ask: Ask,
}

/// The tokens of one poll round.
#[derive(Debug, Default)]
pub(crate) struct ControlTokens {
    server: Vec<Token>,
    metrics: Vec<Token>,
    local: Option<Token>,
}

/// The control socket, the metrics endpoint, and the clients waiting on reloads and stops.
#[derive(Debug)]
pub(crate) struct Control {
    server: Option<ControlServer>,
    metrics: Option<MetricsServer>,
    /// The `reload --wait` callers, per program (generations are numbered per program).
    waiters: Vec<ReloadWaiters<u64>>,
    /// The status fields that never change.
    base: StatusRecord,
    /// In-process callers (the library's handles), if any.
    local: Option<local::Inbox>,
}

impl Control {
    /// Binds the control socket and the metrics endpoint as configured.
    pub(crate) fn new(
        name: &str,
        config: &ControlConfig,
        sockets: Vec<SocketRecord>,
        programs: usize,
    ) -> Result<Control, crate::Failure> {
        let mut name = name.to_owned();
        let server = match &config.socket {
            Some(path) => {
                let server = server::bind_default_name(&mut name, path, config)
                    .map_err(|e| crate::Failure::from(anyhow!(e)))?;
                info!(path = %server.path().display(), "control socket");
                Some(server)
            }
            None => None,
        };
        let metrics = match &config.metrics {
            Some(addr) => {
                let m = MetricsServer::bind(addr)?;
                info!(addr = %m.local_addr(), "metrics");
                Some(m)
            }
            None => None,
        };
        let base = StatusRecord {
            name,
            pid: std::process::id() as i32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            control: server.as_ref().map(|s| s.path().display().to_string()),
            sockets,
            ..StatusRecord::default()
        };
        Ok(Control {
            server,
            metrics,
            waiters: vec![ReloadWaiters::default(); programs],
            base,
            local: None,
        })
    }

    /// Takes requests from in-process callers too (the library's handles).
    pub(crate) fn attach(&mut self, mut inbox: local::Inbox) {
        inbox.early();
        self.local = Some(inbox);
    }

    /// Hands a report of `program` to in-process subscribers; `worker` finds the worker of a
    /// child just spawned.
    pub(crate) fn publish(
        &mut self,
        program: &str,
        report: &Report,
        worker: impl Fn(i32) -> Option<usize>,
    ) {
        if let Some(local) = &mut self.local {
            local.publish(program, report, worker);
        }
    }

    /// The status fields the master knows (name, pid, version, control path, sockets).
    pub(crate) fn base(&self) -> &StatusRecord {
        &self.base
    }

    /// Registers the fds to poll this round.
    pub(crate) fn register<'a>(&'a self, set: &mut PollSet<'a>) -> ControlTokens {
        ControlTokens {
            server: self
                .server
                .as_ref()
                .map_or_else(Vec::new, |s| s.register(set)),
            metrics: self
                .metrics
                .as_ref()
                .map_or_else(Vec::new, |m| m.register(set)),
            local: self.local.as_ref().map(|l| l.register(set)),
        }
    }

    /// The earliest connection deadline.
    pub(crate) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let a = self.server.as_ref().and_then(|s| s.next_deadline(now));
        let b = self.metrics.as_ref().and_then(|m| m.next_deadline());
        a.into_iter().chain(b).min()
    }

    /// Does the I/O `poll` found possible, answers what needs no supervisor (bad requests),
    /// and returns what the clients asked, in order. `metrics` renders the exposition text
    /// (called at most once).
    pub(crate) fn io(
        &mut self,
        ready: &Ready,
        tokens: &ControlTokens,
        now: Instant,
        metrics: impl FnOnce() -> String,
    ) -> Vec<Asked> {
        if let Some(m) = &mut self.metrics {
            let revents: Vec<_> = tokens.metrics.iter().map(|t| ready.revents(*t)).collect();
            m.io(&revents, now, metrics);
        }
        let mut requests = Vec::new();
        if let Some(server) = &mut self.server {
            let revents: Vec<_> = tokens.server.iter().map(|t| ready.revents(*t)).collect();
            let (gone, from_sockets) = server.io(&revents, now);
            for id in gone {
                for waiters in &mut self.waiters {
                    waiters.forget(&id);
                }
            }
            requests = from_sockets;
        }
        // In-process callers' requests go the same way as the socket's.
        if let Some(local) = &mut self.local {
            requests.extend(local.take(ready, tokens.local));
        }
        let mut asks = Vec::new();
        for (id, request) in requests {
            let ask = match request.cmd.as_str() {
                "status" => Ok(Ask::Status),
                "reload" => Ok(Ask::Reload { wait: request.wait }),
                "stop" => Ok(Ask::Stop { wait: request.wait }),
                "start" => Ok(Ask::Start),
                "restart" => Ok(Ask::Restart { wait: request.wait }),
                "update" => Ok(Ask::Update { wait: request.wait }),
                "signal" => match request.signal.as_deref().map(parse_signal) {
                    Some(Ok(signal)) => Ok(Ask::Signal {
                        signal,
                        worker: request.worker,
                    }),
                    Some(Err(e)) => Err(e),
                    None => Err("no signal given".to_owned()),
                },
                other => Err(format!("unknown command {other:?}")),
            };
            match ask {
                Ok(ask) => asks.push(Asked {
                    id,
                    program: request.program,
                    ask,
                }),
                Err(e) => self.reply(id, &Response::error(e), now),
            }
        }
        asks
    }

    fn reply(&mut self, id: u64, response: &Response, now: Instant) {
        if id & local::LOCAL != 0 {
            if let Some(local) = &mut self.local {
                local.reply(id, response);
            }
        } else if let Some(server) = &mut self.server {
            server.reply(id, response, now);
        }
    }

    /// Answers a request with an error; `usage`: it named a program that is not configured.
    pub(crate) fn refuse(&mut self, id: u64, message: String, usage: bool, now: Instant) {
        let mut r = Response::error(message);
        r.usage = usage;
        self.reply(id, &r, now);
    }

    /// Answers a request that needed nothing but was done (`start` of a program).
    pub(crate) fn done(&mut self, id: u64, now: Instant) {
        self.reply(id, &Response::ok(), now);
    }

    /// Answers a `status` request with `record`.
    pub(crate) fn status(&mut self, id: u64, record: StatusRecord, now: Instant) {
        let mut r = Response::ok();
        r.status = Some(record);
        self.reply(id, &r, now);
    }

    /// Answers a `reload` request: `reports` are those of the step that handled the reload
    /// event, or `None` when relaunch is stopping and it was not fed.
    pub(crate) fn reload_asked(
        &mut self,
        program: usize,
        id: u64,
        wait: bool,
        reports: Option<&[Report]>,
        now: Instant,
    ) {
        let Some(reports) = reports else {
            self.reply(
                id,
                &Response::error("relaunch is stopping; not reloading"),
                now,
            );
            return;
        };
        match ReloadWaiters::<u64>::classify(reports) {
            Joined::Refused => self.reply(id, &Response::error("the reload was not started"), now),
            joined if wait => {
                self.waiters[program].join(id, joined);
                if let Some(server) = &mut self.server {
                    server.wait(id, Waiting::Reload);
                }
            }
            joined => {
                let mut r = Response::ok();
                r.accepted = Some(Accepted {
                    generation: match joined {
                        Joined::Attempt(g) => Some(g),
                        _ => None,
                    },
                    queued: joined == Joined::FollowUp,
                });
                self.reply(id, &r, now);
            }
        }
    }

    /// Answers a `stop` request (the stop event was fed): at once, or when relaunch exits.
    pub(crate) fn stop_asked(&mut self, id: u64, wait: bool, now: Instant) {
        if wait {
            if let Some(server) = &mut self.server {
                server.wait(id, Waiting::Stop);
            }
        } else {
            let mut r = Response::ok();
            r.stop = Some(StopReply { exit_code: None });
            self.reply(id, &r, now);
        }
    }

    /// Answers a `signal` request. `target`: the current generation the runtime forwarded
    /// the signal to, or `None` when there is none (or relaunch is stopping).
    pub(crate) fn signal_asked(
        &mut self,
        id: u64,
        signal: Signal,
        target: Result<(u64, Pid, usize), String>,
        worker: Option<usize>,
        now: Instant,
    ) {
        let response = match target {
            Ok((generation, pid, sent_to)) => {
                let mut r = Response::ok();
                r.signal = Some(SignalReply {
                    signal: signal.as_str().to_owned(),
                    generation,
                    pid: pid.as_raw(),
                    worker,
                    sent_to,
                });
                r
            }
            Err(e) => Response::error(e),
        };
        self.reply(id, &response, now);
    }

    /// Call with every report, in order; `record` is the status tracker's record of a
    /// [`Report::ReloadEnded`], and `program` the index of the program that reported it.
    /// Binds and answers `reload --wait` callers.
    pub(crate) fn on(
        &mut self,
        program: usize,
        report: &Report,
        record: Option<&ReloadRecord>,
        now: Instant,
    ) {
        let Some(waiters) = self.waiters.get_mut(program) else {
            return;
        };
        match report {
            Report::ReloadStarted { generation, .. } => waiters.started(*generation),
            Report::FollowUpDropped => {
                for id in waiters.dropped() {
                    self.reply(
                        id,
                        &Response::error("the reload was not started: relaunch is stopping"),
                        now,
                    );
                }
            }
            Report::ReloadEnded {
                generation,
                failure,
                reason,
                ..
            } => {
                let waiting = waiters.done(*generation);
                let mut response = Response::ok();
                response.ok = failure.is_none();
                response.error = failure.is_some().then(|| reason.clone());
                response.reload = record.cloned();
                for id in waiting {
                    self.reply(id, &response, now);
                }
            }
            _ => {}
        }
    }

    /// A program was added (an edited configuration file): it gets the next index.
    pub(crate) fn add_program(&mut self) {
        self.waiters.push(ReloadWaiters::default());
    }

    /// Programs `a` and `b` swap indices (a changed program's successor takes its place).
    pub(crate) fn swap_programs(&mut self, a: usize, b: usize) {
        self.waiters.swap(a, b);
    }

    /// Program `i` is gone (removed by an edit, its last child exited): its `reload --wait`
    /// callers are failed, and the programs after it move down one index.
    pub(crate) fn forget_program(&mut self, i: usize, now: Instant) {
        if i >= self.waiters.len() {
            return;
        }
        let waiting = self.waiters.remove(i).drain();
        for id in waiting {
            self.reply(
                id,
                &Response::error("the program was removed from the configuration file"),
                now,
            );
        }
    }

    /// Answers an edit (`update`, `reload` without names) now with `response`, or keeps the
    /// client waiting for [`Control::edit_done`] (`wait`).
    pub(crate) fn edit_asked(&mut self, id: u64, response: Option<Response>, now: Instant) {
        match response {
            Some(r) => self.reply(id, &r, now),
            None => {
                if let Some(server) = &mut self.server {
                    server.wait(id, Waiting::Reload);
                }
            }
        }
    }

    /// Answers an edit's waiting client.
    pub(crate) fn edit_done(&mut self, id: u64, response: &Response, now: Instant) {
        self.reply(id, response, now);
    }

    /// The master is about to exit with `code`: answers `stop --wait` callers and fails the
    /// rest, sending what the sockets take without blocking.
    pub(crate) fn exit(&mut self, code: i32) {
        let now = Instant::now();
        let reloads: Vec<u64> = self.waiters.iter_mut().flat_map(|w| w.drain()).collect();
        let mut stopped = Response::ok();
        stopped.stop = Some(StopReply {
            exit_code: Some(code),
        });
        if let Some(local) = &mut self.local {
            // Every local request still open is a reload or a stop with `wait`.
            let open: Vec<u64> = local.waiting().collect();
            for id in open {
                match reloads.contains(&id) {
                    true => local.reply(id, &Response::error("relaunch exited")),
                    false => local.reply(id, &stopped),
                }
            }
        }
        let Some(server) = &mut self.server else {
            return;
        };
        for id in reloads {
            server.reply(id, &Response::error("relaunch exited"), now);
        }
        for id in server.waiting_for(Waiting::Stop) {
            server.reply(id, &stopped, now);
        }
    }
}
