//! The value parsers shared by the command line, the control protocol and the process
//! options and the library's program builder: signals, durations, byte sizes, worker counts,
//! backoff factors and paths. A leaf module: it depends on nothing else in
//! the crate, so any layer may use it. Every error names the bad value and says what is valid.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

/// Parses a signal by name or number, in any case: `TERM`, `sigterm`, `15`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    let sig = if let Ok(n) = t.parse::<i32>() {
        Signal::try_from(n).ok()
    } else {
        let upper = t.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&name).ok()
    };
    match sig {
        Some(Signal::SIGSTOP) | None => Err(format!(
            "{s:?} is not a usable signal (expected a name like TERM, SIGINT, QUIT or a number like 15)"
        )),
        Some(sig) => Ok(sig),
    }
}

/// Parses a duration: seconds with an optional fraction (`1.5`), or a number with a unit
/// (`250ms`, `2s`, `1.5m`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration (expected seconds like 1.5, or a number with ms, s, m or h, like 500ms)"
            ))
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("{s:?} is not a duration (expected seconds like 1.5, or a number with ms, s, m or h, like 500ms)")
    })?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| *d <= Duration::from_secs(100 * 365 * 24 * 3600))
        .ok_or_else(|| format!("duration {s:?} is out of range (0 to 100 years)"))
}
/// Parses a byte size: a number of bytes (`1048576`), or a number with a unit `K`, `M` or `G`
/// (optionally followed by `B` or `iB`, any case). Units are powers of 1024, as in supervisord
/// (`50MB` = 52428800 bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("{s:?} is not a size (expected bytes like 1048576, or a number with KB, MB or GB, like 50MB or 10KiB)")
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("size {s:?} is too large"))
}
/// Parses a worker count (`--workers`, `--max-surge`): a whole number from 1 to 1024.
pub fn parse_workers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) => check_workers(n).map_err(|_| bad_workers(s)),
        _ => Err(bad_workers(s)),
    }
}

/// Checks a worker count given as a number (the library's builder): 1 to 1024, with
/// [`parse_workers`]'s message.
pub fn check_workers(n: usize) -> Result<usize, String> {
    match (1..=1024).contains(&n) {
        true => Ok(n),
        false => Err(bad_workers(&n.to_string())),
    }
}

fn bad_workers(s: &str) -> String {
    format!("{s:?} is not a worker count (expected a whole number from 1 to 1024)")
}

/// Parses a backoff factor: a number from 1 to 1000.
pub fn parse_factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) => check_factor(f).map_err(|_| bad_factor(s)),
        _ => Err(bad_factor(s)),
    }
}

/// Checks a backoff factor given as a number (the library's builder): 1 to 1000, with
/// [`parse_factor`]'s message.
pub fn check_factor(f: f64) -> Result<f64, String> {
    match f.is_finite() && (1.0..=1000.0).contains(&f) {
        true => Ok(f),
        false => Err(bad_factor(&f.to_string())),
    }
}

fn bad_factor(s: &str) -> String {
    format!("{s:?} is not a backoff factor (expected a number from 1 to 1000, like 2 or 1.5)")
}

/// Parses a file path and makes it absolute against the current directory (without touching
/// the file system), so it stays valid after `--daemon` changes to `/`.
pub fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("\"\" is not a path (empty)".to_owned());
    }
    std::path::absolute(s).map_err(|e| format!("{s:?} cannot be made absolute: {e}"))
}

/// Parses a `--watch-path`: the path may not exist yet, but the directory that would hold it
/// must (a typo in a directory name would otherwise watch nothing forever).
pub fn parse_watch_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the path to watch is empty".to_owned());
    }
    // Absolute now: `--daemon` changes to `/` before the watcher starts.
    let path = std::path::absolute(s).map_err(|e| format!("{s:?} cannot be made absolute: {e}"))?;
    if path.symlink_metadata().is_ok() {
        return Ok(path);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(format!(
            "cannot watch {s:?}: {} is not a directory",
            parent.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "cannot watch {s:?}: its directory {} does not exist",
            parent.display()
        )),
        Err(e) => Err(format!("cannot watch {s:?}: {}: {e}", parent.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0.2").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn bad_durations_name_the_value() {
        for bad in ["", "-1", "abc", "1x", "1..2", "ms", "1 s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("500ms"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            parse_duration("1e400").unwrap_err(),
            "\"1e400\" is not a duration (expected seconds like 1.5, or a number with ms, s, m or h, like 500ms)"
        );
        assert_eq!(
            parse_duration("99999999999h").unwrap_err(),
            "duration \"99999999999h\" is out of range (0 to 100 years)"
        );
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("quit").unwrap(), Signal::SIGQUIT);
        assert_eq!(parse_signal("Int").unwrap(), Signal::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
    }

    #[test]
    fn bad_signals_name_the_value() {
        for bad in ["BOGUS", "0", "99", "", "STOP", "SIGSTOP", "-15"] {
            let e = parse_signal(bad).unwrap_err();
            assert_eq!(
                e,
                format!("{bad:?} is not a usable signal (expected a name like TERM, SIGINT, QUIT or a number like 15)")
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1048576);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10KiB").unwrap(), 10 * 1024);
        assert_eq!(parse_size("10k").unwrap(), 10 * 1024);
        assert_eq!(parse_size("50MB").unwrap(), 50 * 1024 * 1024);
        assert_eq!(parse_size("50mb").unwrap(), 50 * 1024 * 1024);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("7B").unwrap(), 7);
        for bad in ["", "MB", "1.5MB", "-1", "10 XB", "10TB", "1e6"] {
            assert_eq!(
                parse_size(bad).unwrap_err(),
                format!("{bad:?} is not a size (expected bytes like 1048576, or a number with KB, MB or GB, like 50MB or 10KiB)")
            );
        }
        assert_eq!(
            parse_size("99999999999999GB").unwrap_err(),
            "size \"99999999999999GB\" is too large"
        );
    }
}
