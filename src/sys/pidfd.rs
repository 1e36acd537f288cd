//! Process file descriptors (pidfds): signals that can never reach a process that reused a
//! child's pid.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Opens a pidfd for `pid` (Linux 5.3+; close-on-exec, as `pidfd_open` always makes it).
///
/// A pidfd names one process, not a number: signals sent through it (see
/// [`pidfd_send_signal`]) can never reach a later process that reuses the pid. The caller must
/// open it while `pid` is its own unreaped child, so the number cannot have been reused yet.
/// Fails with `ENOSYS` (or `EPERM` under some seccomp filters) where the kernel lacks it;
/// callers then fall back to `kill`.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; it touches
    // no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us, so we own it and nothing else closes it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process a pidfd refers to. `ESRCH` once that process has exited
/// (even if its pid was reused since).
pub fn pidfd_send_signal(pidfd: std::os::fd::BorrowedFd<'_>, signal: Signal) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal reads only its arguments; a null siginfo is allowed and means
    // "as kill(2) would send it".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}
