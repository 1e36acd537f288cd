//! Giving the master's free heap back to the kernel when it goes idle.
//!
//! Startup (parsing the command line and the configuration, building the first exec images) and
//! each reload allocate memory that is freed again once the children are up; glibc's allocator
//! keeps those free pages resident. An idle master has no use for them, so it returns them.

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim(0)`: it unmaps or
/// `MADV_DONTNEED`s every free page of every arena). Memory still in use is untouched, so this
/// changes what the master costs, never what it does. Elsewhere than glibc: nothing.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and touches only free chunks; it is
    // called from the master's event loop, never from a signal handler or between fork and exec.
    unsafe {
        libc::malloc_trim(0);
    }
}
