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

/// The fds (3 and up) open when [`record_inherited_fds`] ran, not yet adopted.
static INHERITED: std::sync::Mutex<Option<Vec<RawFd>>> = std::sync::Mutex::new(None);

/// Records which fds from 3 up this process inherited from its parent: the only ones
/// [`adopt_inherited`] will take. The first call records; later calls do nothing. `main` calls
/// it first thing, before `--daemon` creates its startup pipe or anything else opens an fd, so
/// an fd number relaunch itself created can never be mistaken for an inherited one.
pub(crate) fn record_inherited_fds() {
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    if inherited.is_some() {
        return;
    }
    let listed: Vec<RawFd> = fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The listing's own fd is closed again by now: F_GETFD drops it.
    let open = listed
        .into_iter()
        .filter(|&fd| fd > 2 && fcntl(fd, FcntlArg::F_GETFD).is_ok())
        .collect();
    *inherited = Some(open);
}

/// Forgets every recorded inherited fd but `keep`: they were closed (the daemon closes what
/// it inherited), and their numbers may be reused by fds of relaunch's own.
pub(crate) fn forget_inherited_except(keep: &[RawFd]) {
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(list) = inherited.as_mut() {
        list.retain(|fd| keep.contains(fd));
    }
}

/// Takes ownership of `fd`, a file descriptor relaunch inherited from its parent (a socket
/// passed by socket activation, or named with `--listen fd:N`), and marks it close-on-exec: it
/// reaches a child only when `spawn` places it at 3.. on purpose.
///
/// The contract of [`adopt_fd`] is enforced here: `fd` must have been open when
/// [`record_inherited_fds`] ran (the first call to this function records, if nothing did
/// before), must still be open, and is handed out once. So it was inherited, and nothing else
/// in the process owns it. Fails with `EBADF` if `fd` is not open or was not inherited, and
/// with `EINVAL` for fds 0, 1 and 2 (stdio stays where it is).
pub(crate) fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    record_inherited_fds();
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    let Some(pos) = inherited.iter().flatten().position(|&n| n == fd) else {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    };
    fcntl(fd, FcntlArg::F_GETFD)?;
    if let Some(list) = inherited.as_mut() {
        list.swap_remove(pos);
    }
    // SAFETY: F_GETFD just showed `fd` is open; it was open before this process opened
    // anything (record_inherited_fds), so its parent passed it; and it was still in the list
    // of unadopted fds, which it has just left under the lock: nothing else in the process has
    // wrapped it, and nothing ever will again.
    unsafe { adopt_fd(fd) }
}

/// Takes ownership of `fd` and marks it close-on-exec: the raw step of
/// [`adopt_inherited`], which checks the contract below.
///
/// Fails with `EBADF` if `fd` is not open, and with `EINVAL` for fds 0, 1 and 2.
///
/// # Safety
/// `fd` must not be owned by anything else in the process: it was inherited from the parent,
/// and is adopted once. A second owner would close it under the first.
unsafe fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let flags = fcntl(fd, FcntlArg::F_GETFD)?;
    // SAFETY: F_GETFD just showed `fd` is open; the caller guarantees (see # Safety) that
    // nothing else in the process owns it: this becomes its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
    fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(flags))?;
    Ok(owned)
}
