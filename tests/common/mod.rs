//! Shared helpers for relaunch's integration tests: start the real binary, wait on conditions
//! with deadlines, talk HTTP to the example server, read the probe's reports, and tear every
//! process down in `Drop`. One file per concern: `bins` (finding the binaries), `wait`
//! (deadlines), `logs` (log lines), `procs` (/proc, signals, the one process-tree teardown),
//! `relaunch` (the master under test, with the one `assert_exit_code`), `http`, `temp`
//! (temporary directories), `probe` (the probe's reports), `status` (waiting on the status
//! record over the control socket, rather than on log text), `site` (a configuration file's
//! master: its client and status), `net` and `load`.
//!
//! Rules these helpers follow (and tests built on them should too):
//! * never sleep to synchronise: poll a condition every 10 ms up to a deadline, and on timeout
//!   panic with what was awaited and relaunch's stderr;
//! * every blocking socket operation has a timeout;
//! * every process a test starts is killed in `Drop`, including relaunch's descendants (they
//!   live in their own process groups), and relaunch itself is reaped.
#![allow(dead_code)]

mod bins;
mod http;
mod load;
mod logs;
pub mod net;
mod probe;
mod procs;
mod relaunch;
mod site;
mod status;
mod temp;
mod wait;

// Not every test file uses every module.
#[allow(unused_imports)]
pub use {
    bins::*, http::*, logs::*, probe::*, procs::*, relaunch::*, site::*, status::*, temp::*,
    wait::*,
};

#[allow(unused_imports)] // not every test file runs load
pub use load::{Load, LoadStats};

use std::collections::BTreeSet;
use std::env;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous deadline for anything that should happen "soon" on a loaded, shared machine.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
