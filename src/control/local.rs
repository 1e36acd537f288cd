//! The in-process side door of the control plane: requests from a library [`crate::api`]
//! handle, on another thread of the same process.
//!
//! A caller ([`Caller`]) sends a [`Call`] through a channel and writes one byte to a wake
//! socket; the master polls the socket's other end like any other fd ([`Inbox::register`]),
//! drains it, and takes the calls. A protocol request becomes the same [`super::Ask`] a
//! control-socket client's line becomes, numbered with an id that has [`LOCAL`] set, so the
//! runtime serves both through one path and answers through [`super::Control`]'s replies,
//! which hand a local id's answer to its reply channel instead of a socket. Adding and
//! removing programs are not protocol requests: they go to the runtime through a channel of
//! its own, with the same wake socket ([`Caller::wake`]). Subscribers get an [`Event`] per
//! report.
//!
//! Nothing here blocks the master: the channel is unbounded, the wake socket non-blocking
//! (a full socket already wakes the master), and a caller that went away only makes a send
//! fail.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};

use crate::poll::{PollSet, Polled, Ready, Token};
use crate::supervisor::{ExitStatus, Report};

use super::events::Event;
use super::protocol::{Request, Response};

/// The bit that marks a request id as a local caller's (socket clients count up from 0).
pub(crate) const LOCAL: u64 = 1 << 63;

/// What a local caller sends.
#[derive(Debug)]
pub(crate) enum Call {
    /// A control-protocol request, answered with its [`Response`].
    Request(Request, Sender<Reply>),
    /// Send every event from now on to this channel.
    Subscribe(Sender<Event>),
}

/// An answer to a local request: the protocol response, and for a failed reload whose new
/// generation exited, how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// What a socket client would have read.
    pub(crate) response: Response,
    /// The exit status of the new generation of a failed reload, when it exited.
    pub(crate) exit: Option<ExitStatus>,
}

/// The caller's end: cheap to clone, `Send` and `Sync`.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    calls: Sender<Call>,
    wake: Arc<Mutex<UnixStream>>,
}

impl Caller {
    /// Sends `call` and wakes the master; `Err` when the master is gone.
    pub(crate) fn send(&self, call: Call) -> Result<(), ()> {
        self.calls.send(call).map_err(|_| ())?;
        self.wake();
        Ok(())
    }

    /// Wakes the master (after sending on another channel that it polls each round).
    pub(crate) fn wake(&self) {
        if let Ok(mut wake) = self.wake.lock() {
            // WouldBlock: the socket is full of wake-ups already.
            let _ = wake.write(&[1]);
        }
    }
}

/// The master's end.
#[derive(Debug)]
pub(crate) struct Inbox {
    calls: Receiver<Call>,
    wake: Polled<UnixStream>,
    next: u64,
    /// The local requests not answered yet, with the program each is about.
    pending: HashMap<u64, (Sender<Reply>, Option<String>)>,
    subscribers: Vec<Sender<Event>>,
    /// Each program's worker of each live child (reports carry pids, not workers).
    workers: HashMap<i32, usize>,
    /// Each program's last unexpected exit: its generation and status.
    exits: HashMap<String, (u64, ExitStatus)>,
    /// Requests taken before the master's first round (see [`Inbox::early`]).
    stash: Vec<(u64, Request)>,
}

/// A connected caller and master pair.
pub(crate) fn channel() -> io::Result<(Caller, Inbox)> {
    // UnixStream pairs are close-on-exec: no child sees them.
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel();
    Ok((
        Caller {
            calls: tx,
            wake: Arc::new(Mutex::new(write)),
        },
        Inbox {
            calls: rx,
            wake: Polled::new(read),
            next: 0,
            pending: HashMap::new(),
            subscribers: Vec::new(),
            workers: HashMap::new(),
            exits: HashMap::new(),
            stash: Vec::new(),
        },
    ))
}

impl Inbox {
    /// Registers the wake socket for this round.
    pub(crate) fn register<'a>(&'a self, set: &mut PollSet<'a>) -> Token {
        set.add(&self.wake)
    }

    /// Whether anything is waiting: the wake socket was readable, or a call arrived before
    /// its wake-up was seen.
    pub(crate) fn take(&mut self, ready: &Ready, token: Option<Token>) -> Vec<(u64, Request)> {
        let mut requests = std::mem::take(&mut self.stash);
        requests.extend(self.take_calls(ready, token));
        requests
    }

    /// Takes what callers sent before the master runs (before its programs start): their
    /// subscriptions then see every event from the first spawn; their requests are served in
    /// the first round.
    pub(crate) fn early(&mut self) {
        let taken = self.take_calls(&Ready::default(), None);
        self.stash.extend(taken);
    }

    fn take_calls(&mut self, ready: &Ready, token: Option<Token>) -> Vec<(u64, Request)> {
        if token.is_some_and(|t| ready.any(t)) {
            let mut buf = [0u8; 64];
            while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
        }
        let mut requests = Vec::new();
        loop {
            match self.calls.try_recv() {
                Ok(Call::Request(request, reply)) => {
                    let id = LOCAL | self.next;
                    self.next += 1;
                    self.pending.insert(id, (reply, request.program.clone()));
                    requests.push((id, request));
                }
                Ok(Call::Subscribe(tx)) => self.subscribers.push(tx),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        requests
    }

    /// Answers local request `id` (a caller that went away is forgotten).
    pub(crate) fn reply(&mut self, id: u64, response: &Response) {
        let Some((tx, program)) = self.pending.remove(&id) else {
            return;
        };
        let exit = match (&response.reload, &program) {
            (Some(record), Some(name)) if record.failure.as_deref() == Some("exited") => self
                .exits
                .get(name)
                .filter(|(g, _)| *g == record.generation)
                .map(|(_, status)| *status),
            _ => None,
        };
        let _ = tx.send(Reply {
            response: response.clone(),
            exit,
        });
    }

    /// Whether any request waits for an answer (a reload or stop with `wait`).
    pub(crate) fn waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.keys().copied()
    }

    /// Hands `report` of `program` to the subscribers; `worker` finds the worker of a child
    /// just spawned.
    pub(crate) fn publish(
        &mut self,
        program: &str,
        report: &Report,
        worker: impl Fn(i32) -> Option<usize>,
    ) {
        match report {
            Report::Spawned { pid, .. } => {
                let pid = pid.as_raw();
                self.workers.insert(pid, worker(pid).unwrap_or(0));
            }
            Report::Exited {
                generation,
                status,
                expected: false,
                ..
            } => {
                self.exits
                    .insert(program.to_owned(), (*generation, *status));
            }
            _ => {}
        }
        if !self.subscribers.is_empty() {
            if let Some(event) = Event::from_report(program, report, &self.workers) {
                self.subscribers.retain(|s| s.send(event.clone()).is_ok());
            }
        }
        if let Report::Exited { pid, .. } = report {
            self.workers.remove(&pid.as_raw());
        }
    }
}
