//! The master's signal handler: one per handled signal, all writing to one wake-up fd.
//!
//! signal-hook's safe helpers take one fd per registration and close it when it is
//! unregistered, so sharing one fd among several signals needs the low-level registration,
//! which is `unsafe` because the action runs inside a signal handler.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::SigId;

/// Installs a handler for `signal` that sets `flag`, then writes one byte to `wake` without
/// blocking (a full buffer already means "wake up", so the byte may be dropped).
///
/// The caller keeps `wake` open until it has unregistered the returned id
/// (`signal_hook::low_level::unregister`); a write to a closed fd number that was reused would
/// land in another file.
pub(crate) fn register_flag_and_wake(
    signal: i32,
    flag: Arc<AtomicBool>,
    wake: RawFd,
) -> io::Result<SigId> {
    let action = move || {
        flag.store(true, Ordering::SeqCst);
        let byte = 1u8;
        // SAFETY: send(2) is async-signal-safe; it reads one byte from a live local; errors
        // (EAGAIN when the buffer is full) are ignored on purpose. signal-hook saves and
        // restores errno around the action.
        unsafe {
            libc::send(
                wake,
                std::ptr::from_ref(&byte).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    };
    // SAFETY: the action only does an atomic store and send(2), both async-signal-safe; it
    // neither allocates nor locks nor panics. The flag lives in an Arc the action owns, and
    // `wake` stays open while the action is registered (the caller's contract above).
    unsafe { signal_hook::low_level::register(signal, action) }
}
