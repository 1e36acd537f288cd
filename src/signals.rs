//! Signals to the master, delivered through a self-pipe.
//!
//! Each handled signal has a flag; its handler sets it and writes a byte to one non-blocking
//! socket shared by every signal (`sys::signal`), flag first. The event loop polls the pipe's read end; when it wakes
//! it drains the pipe *first* and only then reads and clears the flags, so a signal that lands
//! while the loop is working sets its flag and writes a new byte, which wakes the next poll:
//! nothing is lost. Several deliveries of one signal between two wake-ups count once, which is
//! what the supervisor wants (reloads coalesce anyway).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::Signal;

use crate::poll::{Source, SourceId};
use crate::sys::signal::register_flag_and_wake;

/// The signals the master handles, in the order `drain` reports them: child exits first, then
/// stop requests, then reloads, then signals to forward.
pub const HANDLED: [Signal; 8] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The master's signal handlers and their self-pipe.
pub struct Signals {
    read: UnixStream,
    /// The read end's id in the master's wait (it never changes).
    id: SourceId,
    /// The handlers' end; open until every handler is unregistered (`Drop` runs before the
    /// fields are dropped).
    write: UnixStream,
    flags: Vec<(Signal, Arc<AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    /// Installs handlers for every signal in [`HANDLED`].
    pub fn install() -> io::Result<Signals> {
        // UnixStream pairs are close-on-exec, so children never see the pipe.
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut signals = Signals {
            read,
            id: SourceId::new(),
            write,
            flags: Vec::new(),
            ids: Vec::new(),
        };
        for sig in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            // On an error, dropping `signals` unregisters what was installed.
            let id =
                register_flag_and_wake(sig as i32, Arc::clone(&flag), signals.write.as_raw_fd())?;
            signals.ids.push(id);
            signals.flags.push((sig, flag));
        }
        Ok(signals)
    }

    /// Drains the pipe, then returns the signals that arrived since the last call, in the
    /// order of [`HANDLED`].
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        loop {
            match self.read.read(&mut buf) {
                Ok(n) if n == buf.len() => continue,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: empty
            }
        }
        self.flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(sig, _)| *sig)
            .collect()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Source for Signals {
    fn poll_id(&self) -> SourceId {
        self.id
    }
    fn poll_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
