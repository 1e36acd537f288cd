//! The open-file limit for every program's fds together (`--config` with many programs).

use anyhow::{Context, Result};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{info, warn};

/// Makes sure the master can hold `files` fds besides its own few (the programs' sockets,
/// notify sockets, pidfds and pipes, see the runtime): raises the soft `RLIMIT_NOFILE` to the
/// hard limit if that is needed. If even the hard limit is lower, it raises it as far as it
/// goes and warns: the programs may still fit, as they seldom all reload at once.
pub fn ensure_open_files(files: u64) -> Result<()> {
    let needed = files + 64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .context("reading the open-file limit (RLIMIT_NOFILE)")?;
    if soft >= needed {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).with_context(|| {
        format!("raising the open-file limit (RLIMIT_NOFILE) from {soft} to {hard}")
    })?;
    if hard < needed {
        warn!(
            needed,
            limit = hard,
            "the programs may need more open files than the hard limit RLIMIT_NOFILE allows; raise it (ulimit -Hn as root, or LimitNOFILE= in a systemd unit)"
        );
    } else {
        info!(
            from = soft,
            to = hard,
            needed,
            "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
        );
    }
    Ok(())
}
