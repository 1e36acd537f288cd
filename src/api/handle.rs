//! [`Handle`]: talks to a running [`super::Master`] from any thread, and the typed answers:
//! [`ReloadOutcome`], [`Status`], [`Events`].

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::{Error, RuntimeError};
use super::program::Program;
use crate::control::local::{Call, Caller, Reply};
use crate::control::{Event, Request, Response};
use crate::runtime::{Edit, EditKind};
use crate::status::{OutputLine, StatusRecord};
use crate::supervisor::ExitStatus;

/// What `relaunch status --json` prints, as typed serde structs: the master's fields, and one
/// record per program in [`StatusRecord::programs`] (a master run from code always lists its
/// programs by name).
pub type Status = StatusRecord;

/// How a reload ended: what `relaunch reload --wait` reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The new generation is up and serving; the old one is being stopped.
    Reloaded {
        /// The new generation.
        generation: u64,
        /// Its pid (the first worker's).
        pid: Option<i32>,
        /// How long the reload took.
        duration: Duration,
    },
    /// The new generation did not come up; the old one keeps serving.
    Failed {
        /// The generation the attempt started.
        generation: u64,
        /// How it failed: `exited`, `not_ready`, `spawn` or `stopping`.
        failure: String,
        /// Why, in words (e.g. `generation 3 (pid 12) exited with exit code 1 before it was up`).
        reason: String,
        /// The new generation's pid, if it was started.
        pid: Option<i32>,
        /// How it ended, when it exited.
        exit: Option<ExitStatus>,
        /// Its last lines of output (at most 20 lines, 4 KiB), oldest first, when the output is
        /// captured.
        output_tail: Vec<OutputLine>,
    },
}

impl ReloadOutcome {
    /// Whether the new generation took over.
    pub fn is_ok(&self) -> bool {
        matches!(self, ReloadOutcome::Reloaded { .. })
    }
}

/// The events of a master, from the moment of [`Handle::subscribe`]: an iterator that ends
/// when the master stops. Also a plain [`Receiver`] ([`Events::into_receiver`]) for
/// `recv_timeout` and the like.
#[derive(Debug)]
pub struct Events {
    rx: Receiver<Event>,
}

impl Events {
    /// The next event, waiting at most `timeout`; `None` on timeout or when the master is
    /// gone.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The channel underneath.
    pub fn into_receiver(self) -> Receiver<Event> {
        self.rx
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.rx.recv().ok()
    }
}

/// The master's end, shared by every clone of a handle: its thread, and how it ended.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    thread: Mutex<Option<JoinHandle<()>>>,
    result: Mutex<Option<Result<i32, Error>>>,
    done: Condvar,
}

impl Shared {
    /// Records how the master ended and wakes whoever waits for it.
    pub(crate) fn finished(&self, result: Result<i32, Error>) {
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(result);
        }
        self.done.notify_all();
    }

    pub(crate) fn set_thread(&self, thread: JoinHandle<()>) {
        if let Ok(mut slot) = self.thread.lock() {
            *slot = Some(thread);
        }
    }

    fn wait(&self) -> Result<i32, Error> {
        let mut slot = self
            .result
            .lock()
            .map_err(|_| Error::from(RuntimeError::MasterGone))?;
        loop {
            if let Some(result) = slot.as_ref() {
                break result.clone();
            }
            slot = self
                .done
                .wait(slot)
                .map_err(|_| Error::from(RuntimeError::MasterGone))?;
        }
    }
}

/// Talks to a running master: cheap to clone, usable from any thread (`Clone + Send + Sync`).
/// Every call waits for the master's answer; each goes through the same path into the
/// programs' state machines as the control socket's requests.
///
/// ```no_run
/// use relaunch::api::{Event, Master, Program, Signal};
///
/// let handle = Master::new("site")?
///     .program(Program::new("web", "/usr/local/bin/web").listen(":8080")?)?
///     .start()?;
/// let events = handle.subscribe()?;
/// let status = handle.status()?;
/// println!("web is {}", status.programs[0].state);
/// handle.signal("web", Signal::SIGUSR2)?;
/// handle.add(Program::new("jobs", "/usr/local/bin/jobs"))?;
/// handle.stop("jobs")?;
/// handle.remove("jobs")?;
/// std::thread::spawn(move || {
///     for event in events {
///         if let Event::Exited { program, pid, status, .. } = event {
///             eprintln!("{program}: {pid} {}", status.ended());
///         }
///     }
/// });
/// handle.shutdown()?;
/// # Ok::<(), relaunch::api::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Handle {
    caller: Caller,
    edits: mpsc::Sender<Edit>,
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(caller: Caller, edits: mpsc::Sender<Edit>, shared: Arc<Shared>) -> Handle {
        Handle {
            caller,
            edits,
            shared,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sends a protocol request and waits for the answer.
    fn ask(&self, request: Request) -> Result<Reply, Error> {
        let (tx, rx) = mpsc::channel();
        self.caller
            .send(Call::Request(request, tx))
            .map_err(|_| RuntimeError::MasterGone)?;
        rx.recv().map_err(|_| Error::from(RuntimeError::MasterGone))
    }

    fn request(cmd: &str, program: Option<&str>) -> Request {
        Request {
            program: program.map(str::to_owned),
            ..Request::new(cmd)
        }
    }

    /// The answer as `Ok`, or the error it carries, typed.
    fn checked(&self, reply: Reply) -> Result<Response, Error> {
        let r = reply.response;
        if r.ok {
            return Ok(r);
        }
        let message = r.error.clone().unwrap_or_default();
        if r.usage {
            if let Some(name) = message
                .strip_prefix("no program named ")
                .and_then(|rest| rest.split(" (").next())
            {
                return Err(RuntimeError::UnknownProgram {
                    name: name.trim_matches('"').to_owned(),
                    known: message
                        .rsplit_once("(the programs are: ")
                        .map(|(_, list)| {
                            list.trim_end_matches(')')
                                .split(", ")
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                }
                .into());
            }
            return Err(Error::usage("", message));
        }
        Err(Error::failed(message))
    }

    /// The master's status: the same record as `relaunch status --json`.
    pub fn status(&self) -> Result<Status, Error> {
        let response = self.checked(self.ask(Self::request("status", None))?)?;
        response
            .status
            .ok_or_else(|| Error::failed("the master sent no status"))
    }

    /// Reloads program `name` and waits until the attempt ends: a new generation is started,
    /// and once it is up the old one is stopped; if it fails, the old one keeps serving. A
    /// request made while a reload runs is coalesced into one follow-up reload, whose outcome
    /// it gets. `Err` when the reload was not started at all (the program is stopped, the
    /// master is stopping, or there is no such program).
    pub fn reload(&self, name: &str) -> Result<ReloadOutcome, Error> {
        let reply = self.ask(Request {
            wait: true,
            ..Self::request("reload", Some(name))
        })?;
        let exit = reply.exit;
        let failed = !reply.response.ok;
        let record = reply.response.reload.clone();
        match record {
            Some(record) if !failed => Ok(ReloadOutcome::Reloaded {
                generation: record.generation,
                pid: record.pid,
                duration: Duration::from_secs_f64(record.duration_secs.max(0.0)),
            }),
            Some(record) => Ok(ReloadOutcome::Failed {
                generation: record.generation,
                failure: record.failure.unwrap_or_default(),
                reason: record.reason.or(reply.response.error).unwrap_or_default(),
                pid: record.pid,
                exit,
                output_tail: record.output_tail,
            }),
            None => Err(self
                .checked(reply)
                .err()
                .unwrap_or_else(|| Error::failed("the master sent no reload outcome"))),
        }
    }

    /// Starts program `name` if it does not run (stopped by [`Handle::stop`], or not
    /// [`Program::autostart`]); returns once its first generation is starting.
    pub fn start(&self, name: &str) -> Result<(), Error> {
        self.checked(self.ask(Self::request("start", Some(name)))?)
            .map(drop)
    }

    /// Stops program `name` (its sockets stay open for [`Handle::start`]); returns once the
    /// stop has begun.
    pub fn stop(&self, name: &str) -> Result<(), Error> {
        self.checked(self.ask(Self::request("stop", Some(name)))?)
            .map(drop)
    }

    /// Sends `signal` to program `name`'s current generation (every worker). Returns the pid
    /// it went to (the first worker's).
    pub fn signal(&self, name: &str, signal: Signal) -> Result<i32, Error> {
        let response = self.checked(self.ask(Request {
            signal: Some(signal.as_str().to_owned()),
            ..Self::request("signal", Some(name))
        })?)?;
        Ok(response.signal.map(|s| s.pid).unwrap_or_default())
    }

    /// Adds a program to the running master: binds its sockets and, unless it does not
    /// [`Program::autostart`], starts it.
    pub fn add(&self, program: Program) -> Result<(), Error> {
        let config = program.into_config()?;
        self.edit(EditKind::Add(Box::new(config)))
    }

    /// Removes program `name`: stops it, and once its last child is gone, closes its sockets.
    /// Returns then. The last program cannot be removed (shut the master down instead).
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        self.edit(EditKind::Remove(name.to_owned()))
    }

    fn edit(&self, kind: EditKind) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel();
        self.edits
            .send(Edit { kind, reply: tx })
            .map_err(|_| RuntimeError::MasterGone)?;
        self.caller.wake();
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) if message.starts_with("no program named ") => self
                .checked(Reply {
                    response: Response {
                        usage: true,
                        ..Response::error(message)
                    },
                    exit: None,
                })
                .map(drop),
            Ok(Err(message)) => Err(Error::failed(message)),
            Err(_) => Err(RuntimeError::MasterGone.into()),
        }
    }

    /// Every event from the moment the master takes the subscription, in order, until the
    /// master stops. The master takes it before anything this handle asks for afterwards;
    /// subscribed before the master runs (through [`super::Master::handle`]), it sees every
    /// event from the first spawn.
    pub fn subscribe(&self) -> Result<Events, Error> {
        let (tx, rx) = mpsc::channel();
        self.caller
            .send(Call::Subscribe(tx))
            .map_err(|_| RuntimeError::MasterGone)?;
        Ok(Events { rx })
    }

    /// Stops every program (in reverse priority order), waits until the master has
    /// stopped, and returns its exit code (see [`super::Master::run`]).
    pub fn shutdown(&self) -> Result<i32, Error> {
        match self.ask(Request {
            wait: true,
            ..Self::request("stop", None)
        }) {
            // The answer comes as the master exits; the thread ends right after.
            Ok(_) | Err(Error::Runtime(RuntimeError::MasterGone)) => self.join(),
            Err(e) => Err(e),
        }
    }

    /// Waits until the master has stopped (without asking it to), and returns its exit code.
    pub fn join(&self) -> Result<i32, Error> {
        let result = self.shared.wait();
        let thread = self.shared.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        result
    }
}
