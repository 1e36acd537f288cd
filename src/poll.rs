//! The poll registry: one wait over every fd the master waits on, handing out a [`Token`] per
//! registered fd instead of positions in a shared slice.
//!
//! Each round, every owner (signals, each program's readiness channel and output pipes, the
//! watcher, the control socket and its clients, the metrics endpoint) registers the fds it
//! wants to read and keeps the tokens; [`Poller::wait`] sleeps until one is ready or the
//! deadline passes, and returns [`Ready`], which answers per token. Owners never need to know
//! how many fds others registered.
//!
//! ## Why epoll, and how a round stays cheap
//!
//! `poll(2)` hands the kernel every fd each round, and the kernel visits every one of them on
//! each wake-up: with 1,000 programs (about 3,000 fds) that was 2.8 ms of CPU per wake-up, 83 %
//! of it inside `poll` (BENCHMARKS.md, "Many programs"). The [`Poller`] keeps one `epoll`
//! interest list between rounds instead: a round compares what the owners registered with what
//! the list already holds and tells the kernel only the differences (an fd added, its interest
//! changed, an fd no longer registered), so a wake-up costs the kernel only the fds that are
//! ready. Owners keep the simple per-round API above.
//!
//! ## Why every fd carries an id
//!
//! An fd number is reused as soon as it is closed: a control client that disconnects and the
//! next one to connect often get the same number between two rounds. If the list were keyed by
//! number alone, the new connection would look registered already, and the kernel would never
//! report it (closing the old one took it off the list). So each registered fd comes with a
//! [`SourceId`] that is never reused: [`Polled`] pairs an fd-owning value with one for as long
//! as it lives, and a changed id at the same number means a new file to add. The event data
//! carries number and id, so an event for a file that is gone is ignored.

use std::io::{self, Read, Write};
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollFlags;

use crate::sys::epoll::Epoll;

/// Names one registered fd in the [`Ready`] of the same round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(usize);

/// The identity of one fd-owning value, never reused (unlike fd numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(u64);

impl SourceId {
    /// A new id, distinct from every other in this process.
    pub fn new() -> SourceId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SourceId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for SourceId {
    fn default() -> SourceId {
        SourceId::new()
    }
}

/// Something the master waits on: an fd, and an id that stays the same exactly as long as the
/// file behind the fd does. Implementors own their fd and never replace it.
pub trait Source {
    /// The id of the file behind [`Source::poll_fd`].
    fn poll_id(&self) -> SourceId;
    /// The fd to wait on.
    fn poll_fd(&self) -> BorrowedFd<'_>;
}

/// A value that owns an fd (a socket, a pipe end), with its [`SourceId`]. It gives shared
/// access to the value and reads and writes through it, but no `&mut` to the value itself, so
/// the fd cannot be swapped for another under the same id.
#[derive(Debug)]
pub struct Polled<T> {
    inner: T,
    id: SourceId,
}

impl<T> Polled<T> {
    /// Wraps `inner` with a new id.
    pub fn new(inner: T) -> Polled<T> {
        Polled {
            inner,
            id: SourceId::new(),
        }
    }
}

impl<T> Deref for Polled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsFd> AsFd for Polled<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<T: AsFd> Source for Polled<T> {
    fn poll_id(&self) -> SourceId {
        self.id
    }
    fn poll_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<T: Read> Read for Polled<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<T: Write> Write for Polled<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The fds of one round, borrowed from their owners until [`Poller::wait`].
#[derive(Default)]
pub struct PollSet<'a> {
    fds: Vec<(BorrowedFd<'a>, SourceId, PollFlags)>,
}

impl<'a> PollSet<'a> {
    /// An empty set.
    pub fn new() -> PollSet<'a> {
        PollSet { fds: Vec::new() }
    }

    /// Registers `source` to be woken when it is readable (or hung up, or in error).
    pub fn add<S: Source + ?Sized>(&mut self, source: &'a S) -> Token {
        self.add_with(source, PollFlags::POLLIN)
    }

    /// Registers `source` for the events in `interest` (hang-ups and errors always count; an
    /// empty interest waits for those alone).
    pub fn add_with<S: Source + ?Sized>(&mut self, source: &'a S, interest: PollFlags) -> Token {
        self.fds
            .push((source.poll_fd(), source.poll_id(), interest));
        Token(self.fds.len() - 1)
    }
}

/// What the interest list holds for one fd number.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The id of the file registered under this number (0: none).
    id: u64,
    interest: PollFlags,
    /// The last round that registered it.
    round: u64,
    /// Its token in that round.
    token: usize,
    /// epoll refused it (`EPERM`: a regular file or a directory); `poll(2)` reports such a
    /// file always ready, and so does the poller.
    always: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        id: 0,
        interest: PollFlags::empty(),
        round: 0,
        token: 0,
        always: false,
    };
}

/// The master's wait: an epoll interest list kept in step with what the owners register each
/// round (see the module documentation).
#[derive(Debug)]
pub struct Poller {
    epoll: Epoll,
    /// Indexed by fd number.
    slots: Vec<Slot>,
    round: u64,
    /// The fd numbers registered last round, and this round.
    last: Vec<RawFd>,
    current: Vec<RawFd>,
}

impl Poller {
    /// A poller with an empty interest list (one fd, close-on-exec).
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            epoll: Epoll::new()?,
            slots: Vec::new(),
            round: 0,
            last: Vec::new(),
            current: Vec::new(),
        })
    }

    /// Waits until an fd of `set` is ready or `deadline` passes (`None`: no timeout). A signal
    /// interrupting the wait is not an error (the signal fd is in the set).
    pub fn wait(&mut self, set: PollSet<'_>, deadline: Option<Instant>) -> io::Result<Ready> {
        self.round += 1;
        let round = self.round;
        let mut revents = vec![PollFlags::empty(); set.fds.len()];
        // Tokens that name an fd registered earlier in the same round: they get its events.
        let mut aliases: Vec<(usize, usize)> = Vec::new();
        let mut always_ready = false;
        self.current.clear();
        for (token, &(fd, id, interest)) in set.fds.iter().enumerate() {
            let raw = fd.as_raw_fd();
            let index = usize::try_from(raw).map_err(|_| io::Error::from(Errno::EBADF))?;
            if index >= self.slots.len() {
                self.slots.resize(index + 1, Slot::EMPTY);
            }
            let slot = &mut self.slots[index];
            if slot.round == round {
                // The same fd twice in one round: one entry in the list, with both interests.
                aliases.push((token, slot.token));
                let both = slot.interest | interest;
                if both != slot.interest && !slot.always {
                    self.epoll
                        .modify(fd, epoll_events(both), event_data(raw, slot.id))?;
                }
                slot.interest = both;
                continue;
            }
            if slot.id != id.0 {
                // A new file under this number: add it.
                slot.always = false;
                match self
                    .epoll
                    .add(fd, epoll_events(interest), event_data(raw, id.0))
                {
                    Ok(()) => {}
                    // The same file registered under another id (its owner wrapped it anew).
                    Err(Errno::EEXIST) => {
                        self.epoll
                            .modify(fd, epoll_events(interest), event_data(raw, id.0))?
                    }
                    Err(Errno::EPERM) => slot.always = true,
                    Err(e) => return Err(e.into()),
                }
                slot.id = id.0;
            } else if slot.interest != interest && !slot.always {
                self.epoll
                    .modify(fd, epoll_events(interest), event_data(raw, id.0))?;
            }
            slot.interest = interest;
            slot.round = round;
            slot.token = token;
            always_ready |= slot.always && !interest.is_empty();
            self.current.push(raw);
        }
        // Whatever was registered last round and not this one leaves the list: an owner that
        // stopped registering an fd it still holds must not be woken by it.
        for &raw in &self.last {
            let slot = &mut self.slots[raw as usize];
            if slot.round != round {
                if !slot.always {
                    self.epoll.forget(raw);
                }
                *slot = Slot::EMPTY;
            }
        }
        std::mem::swap(&mut self.last, &mut self.current);

        let timeout_ms = if always_ready {
            0
        } else {
            match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Round up to whole milliseconds: waking early would spin until the deadline.
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    ms.min(i32::MAX as u128) as i32
                }
            }
        };
        let capacity = self.last.len().max(1);
        for (events, data) in self.epoll.wait(capacity, timeout_ms)? {
            let (raw, id) = ((data & 0xffff_ffff) as usize, data >> 32);
            match self.slots.get(raw) {
                // An event of a file that is gone (its last fd closed after the list was last
                // brought in step, or still open in a child between fork and exec): not ours.
                Some(slot) if slot.round == round && (slot.id & 0xffff_ffff) == id => {
                    revents[slot.token] |= poll_flags(events);
                }
                _ => {}
            }
        }
        for &raw in &self.last {
            let slot = &self.slots[raw as usize];
            if slot.always {
                revents[slot.token] |= slot.interest;
            }
        }
        for (token, first) in aliases {
            revents[token] = revents[first];
        }
        Ok(Ready { revents })
    }
}

/// The epoll event mask for a `poll` interest (the bits are the same on Linux).
fn epoll_events(interest: PollFlags) -> u32 {
    let mut events = 0;
    for (poll, epoll) in [
        (PollFlags::POLLIN, libc::EPOLLIN),
        (PollFlags::POLLPRI, libc::EPOLLPRI),
        (PollFlags::POLLOUT, libc::EPOLLOUT),
    ] {
        if interest.contains(poll) {
            events |= epoll as u32;
        }
    }
    events
}

/// The `revents` of `poll` for an epoll event mask.
fn poll_flags(events: u32) -> PollFlags {
    let mut flags = PollFlags::empty();
    for (epoll, poll) in [
        (libc::EPOLLIN, PollFlags::POLLIN),
        (libc::EPOLLPRI, PollFlags::POLLPRI),
        (libc::EPOLLOUT, PollFlags::POLLOUT),
        (libc::EPOLLERR, PollFlags::POLLERR),
        (libc::EPOLLHUP, PollFlags::POLLHUP),
    ] {
        if events & epoll as u32 != 0 {
            flags |= poll;
        }
    }
    flags
}

/// What an event carries: the fd number, and the low half of the file's id.
fn event_data(raw: RawFd, id: u64) -> u64 {
    ((id & 0xffff_ffff) << 32) | (raw as u32 as u64)
}

/// What one round of waiting found, per [`Token`].
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(2))
    }

    fn now() -> Option<Instant> {
        Some(Instant::now())
    }

    #[test]
    fn reports_per_token_and_only_what_is_ready() {
        let mut poller = Poller::new().unwrap();
        let (mut a1, b1) = UnixStream::pair().unwrap();
        let (_a2, b2) = UnixStream::pair().unwrap();
        let (b1, b2) = (Polled::new(b1), Polled::new(b2));
        a1.write_all(b"x").unwrap();
        let mut set = PollSet::new();
        let (t1, t2) = (set.add(&b1), set.add(&b2));
        let ready = poller.wait(set, soon()).unwrap();
        assert_eq!(ready.revents(t1), PollFlags::POLLIN);
        assert!(!ready.any(t2));
        // Write interest on a connected socket: ready at once.
        let mut set = PollSet::new();
        let (t1, t2) = (
            set.add_with(&b1, PollFlags::empty()),
            set.add_with(&b2, PollFlags::POLLOUT),
        );
        let ready = poller.wait(set, soon()).unwrap();
        assert!(!ready.any(t1), "no interest: readable data is not reported");
        assert_eq!(ready.revents(t2), PollFlags::POLLOUT);
    }

    #[test]
    fn a_reused_fd_number_is_a_new_file_to_wait_on() {
        let mut poller = Poller::new().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let b = Polled::new(b);
        let n = b.as_raw_fd();
        let mut set = PollSet::new();
        set.add(&b);
        let ready = poller.wait(set, now()).unwrap();
        assert!(ready.revents.iter().all(|r| r.is_empty()));
        // Put another file under the same number, as a close and the next open would (dup2
        // closes the old file: the kernel takes it off the list).
        let (mut c, d) = UnixStream::pair().unwrap();
        let inner = b.inner;
        nix::unistd::dup2(d.as_raw_fd(), n).unwrap();
        let reused = Polled::new(inner);
        assert_eq!(reused.as_raw_fd(), n);
        c.write_all(b"x").unwrap();
        let mut set = PollSet::new();
        let t = set.add(&reused);
        let ready = poller.wait(set, soon()).unwrap();
        assert_eq!(
            ready.revents(t),
            PollFlags::POLLIN,
            "the new file was never added"
        );
    }

    #[test]
    fn an_fd_no_longer_registered_no_longer_wakes() {
        let mut poller = Poller::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        let (b, d) = (Polled::new(b), Polled::new(d));
        a.write_all(b"x").unwrap();
        let mut set = PollSet::new();
        let t = set.add(&b);
        set.add(&d);
        assert!(poller.wait(set, soon()).unwrap().any(t));
        // `b` is still readable, but its owner stopped registering it: the wait must time out
        // with nothing (not return at once, woken by `b`).
        let mut set = PollSet::new();
        let t = set.add(&d);
        let started = Instant::now();
        let ready = poller
            .wait(set, Some(Instant::now() + Duration::from_millis(50)))
            .unwrap();
        assert!(!ready.any(t));
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "woken by a forgotten fd"
        );
        assert_eq!(poller.last, vec![d.as_raw_fd()]);
    }

    #[test]
    fn the_same_fd_twice_in_a_round_gets_both_interests() {
        let mut poller = Poller::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let b = Polled::new(b);
        a.write_all(b"x").unwrap();
        let mut set = PollSet::new();
        let t1 = set.add_with(&b, PollFlags::POLLOUT);
        let t2 = set.add(&b);
        let ready = poller.wait(set, soon()).unwrap();
        assert_eq!(ready.revents(t1), PollFlags::POLLIN | PollFlags::POLLOUT);
        assert_eq!(ready.revents(t2), ready.revents(t1));
    }

    #[test]
    fn a_hang_up_counts_without_interest() {
        let mut poller = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let b = Polled::new(b);
        drop(a);
        let mut set = PollSet::new();
        let t = set.add_with(&b, PollFlags::empty());
        let ready = poller.wait(set, soon()).unwrap();
        assert!(ready.revents(t).contains(PollFlags::POLLHUP));
    }

    #[test]
    fn a_regular_file_is_always_ready() {
        let file = Polled::new(std::fs::File::open(std::env::current_exe().unwrap()).unwrap());
        let mut poller = Poller::new().unwrap();
        let mut set = PollSet::new();
        let t = set.add(&file);
        let ready = poller.wait(set, None).unwrap();
        assert_eq!(ready.revents(t), PollFlags::POLLIN);
    }
}
