//! The master's own log lines: `tracing` events written to stderr, one line each, coloured
//! only on a terminal. The `relaunch` binary and a self-hosted master ([`crate::host`]) set it
//! up the same way, so their logs read the same.

use std::io::IsTerminal;

use tracing::Level;

/// The environment variable that sets the level when no flag does.
pub const LOG_VAR: &str = "RELAUNCH_LOG";

/// Installs the stderr logger, unless the process has a global `tracing` subscriber already
/// (then that one keeps receiving relaunch's events). The level: `flag` (-v/-q), else
/// `$RELAUNCH_LOG`, else `fallback` (a configuration file's `log-level`), else info. A
/// `$RELAUNCH_LOG` that is not a level is warned about, and the fallback used.
pub fn init(flag: Option<Level>, fallback: Option<Level>) {
    let mut bad_env = None;
    let fallback = fallback.unwrap_or(Level::INFO);
    let level = flag.unwrap_or_else(|| match std::env::var(LOG_VAR) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<Level>().unwrap_or_else(|_| {
            bad_env = Some(v);
            fallback
        }),
        _ => fallback,
    });
    let installed = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(level)
        .try_init()
        .is_ok();
    if let (true, Some(v)) = (installed, bad_env) {
        tracing::warn!(
            "RELAUNCH_LOG={v:?} is not a level (expected error, warn, info, debug or trace); using info"
        );
    }
}
