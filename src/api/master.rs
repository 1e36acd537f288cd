//! [`Master`]: the programs and the master's own settings, run on the calling thread
//! ([`Master::run`]) or on a thread of its own ([`Master::start`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::error::{Error, RuntimeError};
use super::handle::{Handle, Shared};
use super::program::Program;
use crate::config::{Config, ProgramConfig};
use crate::control::local::{self, Inbox};
use crate::control::{default_path, ControlConfig, PathEnv};
use crate::runtime::{Claim, Edit};
use std::sync::mpsc::{self, Receiver};

/// A master holding one or several programs. Build it, then [`Master::run`] it on this
/// thread or [`Master::start`] it on its own; [`Master::handle`] gives a [`Handle`] before
/// either, e.g. to stop a master that runs on this thread from another one.
///
/// Only one master runs in a process at a time (it reaps every child of the process and owns
/// its signal handlers, see [the module docs](super)): a second is refused with
/// [`RuntimeError::AlreadyRunning`].
///
/// ```no_run
/// use relaunch::api::{Master, Program, ReloadOutcome};
///
/// let handle = Master::new("site")?
///     .program(Program::new("web", "/usr/local/bin/web").listen("http=127.0.0.1:8080")?)?
///     .program(Program::new("jobs", "/usr/local/bin/jobs"))?
///     .start()?;
/// match handle.reload("web")? {
///     ReloadOutcome::Reloaded { generation, .. } => println!("generation {generation} serves"),
///     ReloadOutcome::Failed { reason, .. } => println!("kept the old one: {reason}"),
///     _ => {}
/// }
/// let code = handle.shutdown()?;
/// # let _ = code;
/// # Ok::<(), relaunch::api::Error>(())
/// ```
#[derive(Debug)]
pub struct Master {
    name: String,
    programs: Vec<ProgramConfig>,
    control: ControlConfig,
    pid_file: Option<PathBuf>,
    /// Detached into the background (`--daemon`, a self-hosted server's background mode).
    daemon: bool,
    /// The configuration file it was read from, read again on SIGHUP (`--config`).
    source: Option<PathBuf>,
    /// The several-programs status shape even with one program (a master built in code; a
    /// command line of one program keeps the single-program record).
    shape_named: bool,
    handle: Handle,
    /// Taken when the master runs; still here when it is dropped unrun.
    inbox: Option<(Inbox, Receiver<Edit>)>,
}

impl Drop for Master {
    /// A master dropped without running: handles waiting in [`Handle::join`] hear it.
    fn drop(&mut self) {
        if self.inbox.is_some() {
            self.handle
                .shared()
                .finished(Err(RuntimeError::MasterGone.into()));
        }
    }
}

impl Master {
    /// A master named `name` (1 to 64 characters out of `A-Z a-z 0-9 . _ - @ +`; its status
    /// and, with [`Master::control_socket`], its control socket carry it), with no program
    /// yet and no control socket.
    pub fn new(name: &str) -> Result<Master, Error> {
        let name = crate::control::parse_name(name).map_err(|m| Error::usage("--name", m))?;
        Master::named(name, true)
    }

    /// A master whose name was checked already; `named`: the several-programs status shape
    /// even with one program.
    fn named(name: String, named: bool) -> Result<Master, Error> {
        let (caller, inbox) = local::channel()
            .map_err(|e| Error::failed(format!("creating the wake socket: {e}")))?;
        let (edits, edits_rx) = mpsc::channel();
        Ok(Master {
            name,
            programs: Vec::new(),
            control: ControlConfig {
                socket: None,
                default_path: false,
                default_name: false,
                metrics: None,
            },
            pid_file: None,
            daemon: false,
            source: None,
            shape_named: named,
            handle: Handle::new(caller, edits, Arc::new(Shared::default())),
            inbox: Some((inbox, edits_rx)),
        })
    }

    /// A master for a configuration built inside the crate, already checked: the command
    /// line's ([`crate::run`]) or a self-hosted server's, so that it has a [`Handle`] too.
    pub(crate) fn from_config(config: Config) -> Result<Master, Error> {
        let named = config.named();
        let mut master = Master::named(config.name, named)?;
        master.programs = config.programs;
        master.control = config.control;
        master.pid_file = config.pid_file;
        master.daemon = config.daemon;
        master.source = config.source;
        Ok(master)
    }

    /// Adds a program; its settings are checked now. Names must be unique.
    pub fn program(mut self, program: Program) -> Result<Master, Error> {
        let config = program.into_config()?;
        if self.programs.iter().any(|p| p.name == config.name) {
            return Err(Error::usage(
                "name",
                format!("{:?} is the name of another program already", config.name),
            ));
        }
        self.programs.push(config);
        Ok(self)
    }

    /// Opens a control socket at `path` (`--control`), so that `relaunch status`, `reload`,
    /// ... work on this master too.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Master {
        self.control.socket = Some(path.into());
        self.control.default_path = false;
        self
    }

    /// Opens the control socket at the command line's default path for the master's name
    /// (`$RELAUNCH_CONTROL_DIR`, `$XDG_RUNTIME_DIR/relaunch`, ...).
    pub fn default_control_socket(mut self) -> Master {
        let path = default_path(&self.name, self.pid_file.as_deref(), &PathEnv::current());
        self.control.socket = Some(path);
        self.control.default_path = true;
        self
    }

    /// Serves Prometheus metrics at `addr`, e.g. `127.0.0.1:9100` (`--metrics`).
    pub fn metrics(mut self, addr: &str) -> Result<Master, Error> {
        self.control.metrics = Some(addr.parse().map_err(|e| Error::usage("--metrics", e))?);
        Ok(self)
    }

    /// Writes the process's pid to `path` while the master runs (`--pid-file`).
    pub fn pid_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Master, Error> {
        let path = path.as_ref();
        let s = path.to_str().unwrap_or_default();
        self.pid_file =
            Some(crate::parse::parse_path(s).map_err(|m| Error::usage("--pid-file", m))?);
        Ok(self)
    }

    /// A handle to the master, working once it runs: requests sent before wait for it.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    #[allow(clippy::type_complexity)]
    fn into_parts(mut self) -> Result<(Config, (Inbox, Receiver<Edit>), Handle), Error> {
        if self.programs.is_empty() {
            return Err(Error::usage(
                "program",
                "a master needs at least one program (add one with Master::program)",
            ));
        }
        let config = Config {
            pid_file: self.pid_file.take(),
            daemon: self.daemon,
            name: std::mem::take(&mut self.name),
            control: self.control.clone(),
            programs: std::mem::take(&mut self.programs),
            source: self.source.take(),
        };
        let inbox = self.inbox.take().ok_or(RuntimeError::MasterGone)?;
        Ok((config, inbox, self.handle.clone()))
    }

    /// Runs the master on this thread until it stops (a [`Handle::shutdown`], SIGTERM,
    /// SIGINT or SIGQUIT to the process, or every program ended on its own). Returns the
    /// exit code the `relaunch` command would exit with: the first non-zero exit code of the
    /// programs, else 0.
    pub fn run(self) -> Result<i32, Error> {
        let claim = Claim::take().map_err(|_| RuntimeError::AlreadyRunning)?;
        let (config, (inbox, edits), handle) = self.into_parts()?;
        let result = crate::runtime::run_embedded(config, inbox, edits, claim);
        let result = result.map_err(|f| Error::from_failure(&f));
        handle.shared().finished(result.clone());
        result
    }

    /// Runs the master on this thread as the `relaunch` binary does, reporting to a waiting
    /// `--daemon` (or background-mode) caller through `startup`: the command line's master and a
    /// self-hosted server's. A handle taken before (`SelfHost::with_handle`) works meanwhile;
    /// with none, the handle's channel is closed first, so the master holds no fd for it.
    pub(crate) fn run_reporting(
        self,
        startup: Option<crate::daemon::Startup>,
    ) -> Result<i32, crate::Failure> {
        // Only the master's own handle: nobody can ask through one.
        let alone = Arc::strong_count(self.handle.shared()) == 1;
        let named = self.shape_named;
        let (config, inbox, handle) = self.into_parts().map_err(|e| crate::Failure {
            code: e.exit_code(),
            error: anyhow::anyhow!(e.to_string()),
        })?;
        let shared = handle.shared().clone();
        drop(handle);
        let local = (!alone).then_some(inbox);
        let read = crate::read_config_file;
        let result = crate::runtime::run_reporting(config, startup, read, local, named);
        shared.finished(result.as_ref().copied().map_err(Error::from_failure));
        result
    }

    /// Starts the master on a thread of its own, and returns once its sockets are bound and
    /// its programs are starting (or with why it could not start).
    pub fn start(self) -> Result<Handle, Error> {
        let claim = Claim::take().map_err(|_| RuntimeError::AlreadyRunning)?;
        let (config, (inbox, edits), handle) = self.into_parts()?;
        let shared = handle.shared().clone();
        let thread = std::thread::Builder::new()
            .name("relaunch-master".into())
            .spawn(move || {
                let result = crate::runtime::run_embedded(config, inbox, edits, claim)
                    .map_err(|f| Error::from_failure(&f));
                shared.finished(result);
            })
            .map_err(|e| Error::failed(format!("starting the master's thread: {e}")))?;
        handle.shared().set_thread(thread);
        // The first answer says it runs; if it ended instead, say why.
        match handle.status() {
            Ok(_) => Ok(handle),
            Err(Error::Runtime(RuntimeError::MasterGone)) => match handle.join() {
                Ok(code) => Err(Error::failed(format!(
                    "the master stopped at once (exit code {code})"
                ))),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}
