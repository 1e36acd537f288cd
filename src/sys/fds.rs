//! The master's own file descriptors at startup: stdio made sane, everything inherited made
//! close-on-exec, and inherited sockets adopted as owned fds.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Prepares the master's own fds at startup: fds 0, 1 and 2 are opened on `/dev/null` if
/// closed (so no socket lands there and children get sane stdio), and every other inherited
/// fd is made close-on-exec, so nothing of the master's parent leaks into the server.
pub fn sanitize_inherited_fds(keep: &[RawFd]) -> io::Result<()> {
    for fd in 0..3 {
        if fcntl(fd, FcntlArg::F_GETFD) == Err(Errno::EBADF) {
            let null = fs::OpenOptions::new()
                .read(fd == 0)
                .write(fd != 0)
                .open("/dev/null")?;
            let raw = null.as_raw_fd();
            if raw == fd {
                // open(2) picked the free number itself: keep it open, without close-on-exec.
                std::mem::forget(null);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            } else {
                nix::unistd::dup2(raw, fd)?;
            }
        }
    }
    let mut fds = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            fds.push(fd);
        }
    }
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // The directory's own fd is gone by now: EBADF is expected for it.
            match fcntl(fd, FcntlArg::F_GETFD) {
                Ok(flags) => {
                    let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
                    fcntl(fd, FcntlArg::F_SETFD(flags))?;
                }
                Err(Errno::EBADF) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Takes ownership of `fd`, a file descriptor relaunch inherited from its parent (a socket
/// passed by socket activation, or named with `--listen fd:N`), and marks it close-on-exec: it
/// reaches a child only when the spawn module places it at 3.. on purpose.
///
/// Fails with `EBADF` if `fd` is not open, and with `EINVAL` for fds 0, 1 and 2 (stdio stays
/// where it is).
///
/// # Safety
/// `fd` must not be owned by anything else in the process: call this at most once per fd, at
/// startup, before relaunch opens any file of its own. Only then is an open fd with that
/// number the inherited one, and the returned `OwnedFd` its only owner (a second owner would
/// close it under the first). `sockets::activation::take_inherited` is the one caller, and
/// does exactly that.
pub(crate) unsafe fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let flags = fcntl(fd, FcntlArg::F_GETFD)?;
    // SAFETY: F_GETFD just showed `fd` is open; the caller guarantees (see # Safety) that it
    // was inherited and nothing else in the process has wrapped it: this becomes its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
    fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(flags))?;
    Ok(owned)
}

/// The right to adopt inherited fds: there is one per process ([`Adopter::claim`] succeeds
/// once), and it adopts each fd number at most once, so no two owners of one fd can come out
/// of it. Claim it first thing at startup, before relaunch opens any file of its own (the
/// runtime does, through `sockets::activation::take_inherited`): an open fd is then one
/// relaunch inherited.
#[derive(Debug)]
pub(crate) struct Adopter {
    taken: Vec<RawFd>,
}

/// Whether the process's [`Adopter`] was claimed.
static CLAIMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Adopter {
    /// The process's one adopter; `None` if it was claimed before.
    pub(crate) fn claim() -> Option<Adopter> {
        use std::sync::atomic::Ordering;
        match CLAIMED.swap(true, Ordering::SeqCst) {
            false => Some(Adopter { taken: Vec::new() }),
            true => None,
        }
    }

    /// Takes ownership of the inherited `fd` and makes it close-on-exec (see [`adopt_fd`]).
    /// `EBADF` if it is not open; `EINVAL` for 0, 1, 2; `EEXIST` if this adopter took it
    /// already.
    pub(crate) fn adopt(&mut self, fd: RawFd) -> io::Result<OwnedFd> {
        if self.taken.contains(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        // SAFETY: the adopter is claimed once per process, at startup before relaunch opens a
        // file of its own, and adopts each number once (checked just above): nothing else in
        // the process owns `fd`.
        let owned = unsafe { adopt_fd(fd) }?;
        self.taken.push(fd);
        Ok(owned)
    }
}
