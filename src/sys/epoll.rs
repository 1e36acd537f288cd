//! `epoll(7)` for the master's loop: one kernel interest list, kept between rounds, so that a
//! wake-up costs the kernel the fds that are ready, not every fd the master holds.
//!
//! The poll registry (`src/poll.rs`) decides what to add, change and remove; this module only
//! makes the calls. Level-triggered throughout (the semantics of `poll(2)`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// One epoll instance (close-on-exec: no child ever sees it).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
    /// What the kernel writes events into, kept between calls.
    buf: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new, empty interest list.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; it returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: Vec::new(),
        })
    }

    /// Adds `fd` with the event mask `events`; `data` comes back with each of its events.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, events: u32, data: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), events, data)
    }

    /// Changes the event mask and data of `fd`, which must be in the list.
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, events: u32, data: u64) -> Result<(), Errno> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), events, data)
    }

    /// Removes the fd numbered `fd` from the list, if the file now open under that number is
    /// in it. The number may be closed already (`EBADF`: closing the last fd of a file removes
    /// it from every epoll list) or reused by a file never added (`ENOENT`): both are fine, so
    /// errors are ignored. It takes a number, not a borrowed fd, because the caller no longer
    /// holds the fd: its owner stopped registering it.
    pub(crate) fn forget(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits at most `timeout_ms` (-1: no limit) for events, and returns them as
    /// `(events, data)`, at most `capacity` of them (the rest stay for the next call: the list
    /// is level-triggered). An interrupting signal returns no events.
    pub(crate) fn wait(
        &mut self,
        capacity: usize,
        timeout_ms: i32,
    ) -> io::Result<impl Iterator<Item = (u32, u64)> + '_> {
        let capacity = capacity.clamp(1, i32::MAX as usize);
        if self.buf.len() < capacity {
            self.buf
                .resize(capacity, libc::epoll_event { events: 0, u64: 0 });
        }
        let events = &mut self.buf[..capacity];
        // SAFETY: `events` is a valid, writable array of `capacity` epoll_event structs, and
        // the kernel writes at most `capacity` of them.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                capacity as i32,
                timeout_ms,
            )
        };
        let n = match n {
            n if n >= 0 => n as usize,
            _ => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::EINTR) => 0,
                e => return Err(e),
            },
        };
        // Copied out field by field: the struct is packed.
        Ok(events[..n].iter().map(|e| (e.events, e.u64)))
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, data: u64) -> Result<(), Errno> {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: `event` is a valid epoll_event for the duration of the call (the kernel
        // ignores it for EPOLL_CTL_DEL); `fd` is only a number to the kernel, which checks it.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        Errno::result(r).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn reports_a_readable_fd_with_its_data_and_forgets_it() {
        let mut ep = Epoll::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        ep.add(b.as_fd(), libc::EPOLLIN as u32, 42).unwrap();
        let wait = |ep: &mut Epoll, timeout_ms| ep.wait(4, timeout_ms).unwrap().collect::<Vec<_>>();
        let out = wait(&mut ep, 0);
        assert!(out.is_empty(), "nothing written yet: {out:?}");
        a.write_all(b"x").unwrap();
        assert_eq!(wait(&mut ep, 1000), vec![(libc::EPOLLIN as u32, 42)]);
        // Level-triggered: still readable, still reported.
        assert_eq!(wait(&mut ep, 0).len(), 1);
        ep.forget(b.as_raw_fd());
        let out = wait(&mut ep, 0);
        assert!(out.is_empty(), "forgotten fd still reported: {out:?}");
        // Forgetting a number twice, or one never added, is harmless.
        ep.forget(b.as_raw_fd());
        ep.forget(-1);
        assert_eq!(
            ep.modify(b.as_fd(), libc::EPOLLIN as u32, 1),
            Err(Errno::ENOENT)
        );
    }
}
