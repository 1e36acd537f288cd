//! Accepting connections at the fd limit without spinning.
//!
//! When `accept` fails with `EMFILE` or `ENFILE`, the connection stays in the listener's
//! backlog, so the listener stays readable and a `poll` loop that keeps asking for `POLLIN`
//! wakes up at once, forever, at 100% CPU. [`AcceptPause`] takes the listener out of the poll
//! set instead (its interest becomes empty) until a connection of its own is closed (an fd
//! was freed) or [`PAUSE`] has passed, whichever comes first. Each episode (from the first
//! failure to the next successful accept) logs one warning when it begins and one line with
//! the counts when it ends, so a long shortage does not flood the log.

use std::io;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use tracing::{info, warn};

/// How long a listener is left out of the poll set after an accept failed for lack of fds.
pub const PAUSE: Duration = Duration::from_millis(250);

/// An episode of accept failures.
#[derive(Debug, Clone, Copy)]
struct Episode {
    began: Instant,
    failures: u64,
}

/// Whether a listener is paused after running out of fds, and the counts of the episode.
#[derive(Debug)]
pub struct AcceptPause {
    /// Which listener, for the log (`control socket`, `metrics`).
    what: &'static str,
    until: Option<Instant>,
    episode: Option<Episode>,
}

impl AcceptPause {
    /// A listener that is not paused.
    pub fn new(what: &'static str) -> AcceptPause {
        AcceptPause {
            what,
            until: None,
            episode: None,
        }
    }

    /// Whether `e` is a shortage of fds (or of kernel memory): the kernel keeps the connection
    /// queued, so the listener stays readable.
    pub fn is_fd_shortage(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error().map(Errno::from_raw),
            Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
        )
    }

    /// The listener's poll interest: `POLLIN`, or nothing while paused.
    pub fn interest(&self) -> PollFlags {
        if self.until.is_some() {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        }
    }

    /// When the pause ends, for the loop's `poll` timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Whether to try `accept` now: the listener was readable, or its pause just ended.
    pub fn should_accept(&mut self, readable: bool, now: Instant) -> bool {
        match self.until {
            Some(until) if now >= until => {
                self.until = None;
                true
            }
            Some(_) => false,
            None => readable,
        }
    }

    /// An fd of the listener's own was closed: try again at once.
    pub fn fd_freed(&mut self) {
        self.until = None;
    }

    /// `accept` failed for lack of fds at `now` (`e`): pause. Warns once per episode.
    pub fn failed(&mut self, e: &io::Error, now: Instant) {
        self.until = Some(now + PAUSE);
        match &mut self.episode {
            Some(episode) => episode.failures += 1,
            None => {
                warn!(
                    error = %e,
                    "{}: accept failed for lack of file descriptors; pausing new connections \
                     (retrying every {} ms or when a connection closes)",
                    self.what,
                    PAUSE.as_millis()
                );
                self.episode = Some(Episode {
                    began: now,
                    failures: 1,
                });
            }
        }
    }

    /// `accept` succeeded at `now`: ends the episode, if any, with one line of counts.
    pub fn accepted(&mut self, now: Instant) {
        if let Some(episode) = self.episode.take() {
            info!(
                failures = episode.failures,
                "{}: accepting connections again after {} failed accepts over {} ms",
                self.what,
                episode.failures,
                now.saturating_duration_since(episode.began).as_millis()
            );
        }
    }

    /// The failures of the episode in progress (0: none).
    pub fn failures(&self) -> u64 {
        self.episode.map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortage_pauses_until_the_delay_or_a_freed_fd() {
        let t0 = Instant::now();
        let mut p = AcceptPause::new("test");
        assert_eq!(p.interest(), PollFlags::POLLIN);
        assert!(p.should_accept(true, t0));
        assert!(!p.should_accept(false, t0));
        let emfile = io::Error::from_raw_os_error(libc_emfile());
        assert!(AcceptPause::is_fd_shortage(&emfile));
        assert!(!AcceptPause::is_fd_shortage(&io::Error::from(
            io::ErrorKind::WouldBlock
        )));
        p.failed(&emfile, t0);
        assert_eq!(p.interest(), PollFlags::empty());
        assert_eq!(p.deadline(), Some(t0 + PAUSE));
        assert!(!p.should_accept(true, t0 + PAUSE / 2));
        assert!(p.should_accept(false, t0 + PAUSE));
        assert_eq!(p.interest(), PollFlags::POLLIN);
        p.failed(&emfile, t0 + PAUSE);
        assert_eq!(p.failures(), 2);
        p.fd_freed();
        assert_eq!(p.interest(), PollFlags::POLLIN);
        assert_eq!(p.deadline(), None);
        p.accepted(t0 + PAUSE * 2);
        assert_eq!(p.failures(), 0);
    }

    fn libc_emfile() -> i32 {
        Errno::EMFILE as i32
    }
}
