//! Changing the process environment, which is sound only while no other thread can read it.
//!
//! `std::env::remove_var` (and `set_var`) write the C library's `environ`, which any thread
//! may be reading through `getenv(3)` at the same time (in C code, or in libraries that call
//! it without Rust's environment lock): a data race, undefined behaviour. The 2024 edition of
//! Rust marks both functions `unsafe` for that reason. This module removes variables only when
//! it can show that the calling thread is the process's only thread, so that nothing can race
//! with it: no other thread exists, and only this one could start one.

use std::fs;

/// How many threads this process has, from `/proc/self/task`; `None` if it cannot be read.
pub(crate) fn thread_count() -> Option<usize> {
    Some(fs::read_dir("/proc/self/task").ok()?.count())
}

/// Removes the variables `keys` from the environment if this process has a single thread, and
/// says whether it did. With more than one thread (or when the count cannot be read) nothing
/// is changed and `false` is returned: the variables stay, and the caller documents that.
pub(crate) fn remove_vars_if_single_threaded(keys: &[&str]) -> bool {
    if thread_count() != Some(1) {
        return false;
    }
    for key in keys {
        // SAFETY: the process has exactly one thread (counted just above, in /proc/self/task),
        // and it is this one, busy here: no other thread exists that could read or write the
        // environment concurrently, and none can appear before this loop ends, since only this
        // thread could start one. `remove_var` is `unsafe` from the 2024 edition on (a safe fn
        // before, hence the allow); this is the condition that makes it sound.
        #[allow(unused_unsafe)]
        unsafe {
            std::env::remove_var(key)
        };
    }
    true
}
