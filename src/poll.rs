//! The poll registry: one `poll(2)` over every fd the master waits on, handing out a
//! [`Token`] per registered fd instead of positions in a shared slice.
//!
//! Each round, every owner (signals, each program's readiness channel and output pipes, the
//! watcher, the control socket and its clients, the metrics endpoint) registers the fds it
//! wants to read and keeps the tokens; [`PollSet::wait`] sleeps until one is readable or the
//! deadline passes, and returns [`Ready`], which answers per token. Owners never need to know
//! how many fds others registered.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Names one registered fd in the [`Ready`] of the same round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(usize);

/// The fds of one round, borrowed from their owners until [`PollSet::wait`].
#[derive(Default)]
pub struct PollSet<'a> {
    fds: Vec<PollFd<'a>>,
}

impl<'a> PollSet<'a> {
    /// An empty set.
    pub fn new() -> PollSet<'a> {
        PollSet { fds: Vec::new() }
    }

    /// Registers `fd` to be woken when it is readable (or hung up, or in error).
    pub fn add(&mut self, fd: BorrowedFd<'a>) -> Token {
        self.add_with(fd, PollFlags::POLLIN)
    }

    /// Registers `fd` for the events in `interest` (hang-ups and errors always count).
    pub fn add_with(&mut self, fd: BorrowedFd<'a>, interest: PollFlags) -> Token {
        self.fds.push(PollFd::new(fd, interest));
        Token(self.fds.len() - 1)
    }

    /// Waits until a registered fd is ready or `deadline` passes (`None`: no timeout).
    /// A signal interrupting the wait is not an error (the signal pipe is in the set).
    pub fn wait(mut self, deadline: Option<Instant>) -> nix::Result<Ready> {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up to whole milliseconds: waking early would spin until the deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut self.fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        Ok(Ready {
            revents: self
                .fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect(),
        })
    }
}

/// What one round of `poll` found, per [`Token`].
#[derive(Debug, Clone, Default)]
pub struct Ready {
    revents: Vec<PollFlags>,
}

impl Ready {
    /// The `revents` of `token` (empty for a token of another round).
    pub fn revents(&self, token: Token) -> PollFlags {
        self.revents
            .get(token.0)
            .copied()
            .unwrap_or(PollFlags::empty())
    }

    /// Whether anything happened on `token`'s fd.
    pub fn any(&self, token: Token) -> bool {
        !self.revents(token).is_empty()
    }
}
