//! Everything relaunch asks of the kernel that needs `unsafe`: the only module allowed it (the
//! crate root denies `unsafe_code` everywhere else). Every `unsafe` block says why it is sound
//! in a `// SAFETY:` comment.
//!
//! - [`spawn`]: starting a child: its exec image is built before `fork`, with a reserved
//!   `LISTEN_PID` slot that the child fills with its own pid; between `fork` and `exec` only
//!   async-signal-safe calls.
//! - [`fds`]: the master's fds at startup: stdio made sane, inherited fds made close-on-exec,
//!   the fds inherited from the parent recorded first thing in `main`, and adoption of
//!   inherited sockets (an `unsafe fn`, behind `adopt_inherited`, which enforces its contract).
//! - [`pidfd`]: process fds, so a signal never reaches a process that reused a child's pid.
//! - [`fork`]: forking the whole master for `--daemon`, only while it has one thread.
//! - [`env`]: removing environment variables, only while the process has one thread.
//! - [`memory`]: what an idle master gives back to the kernel: clean file pages' page-table
//!   entries, its stack's dead part, its free heap.
//! - [`epoll`]: the master's interest list, kept between wake-ups.
//! - [`signal`]: the master's signal handlers, each setting a flag and writing to one shared
//!   wake-up fd.

pub(crate) mod env;
pub(crate) mod epoll;
pub(crate) mod fds;
pub(crate) mod fork;
pub(crate) mod memory;
pub(crate) mod pidfd;
pub(crate) mod signal;
pub(crate) mod spawn;
