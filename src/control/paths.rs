//! Where the control socket lives: `--name` rules, the default directories, and the path
//! next to a pid file.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::metrics::MetricsAddr;

/// The longest `--name`.
pub const MAX_NAME: usize = 64;

/// The master's control-plane settings (`--name`, `--control`, `--no-control`, `--metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The control socket's path; `None` with `--no-control`.
    pub socket: Option<PathBuf>,
    /// Whether `socket` is the default path rather than `--control` (the default's directory
    /// gets extra checks).
    pub default_path: bool,
    /// Where to serve Prometheus metrics (`--metrics`).
    pub metrics: Option<MetricsAddr>,
}

/// Checks a `--name`: 1 to 64 characters out of `A-Z a-z 0-9 . _ - @ +`, not starting with
/// `.`. It becomes a file name, so no `/`.
pub fn parse_name(s: &str) -> Result<String, String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
    if s.is_empty() || s.len() > MAX_NAME || s.starts_with('.') || !s.chars().all(ok_char) {
        return Err(format!(
            "{s:?} is not a usable name (expected 1 to {MAX_NAME} characters out of A-Z a-z 0-9 . _ - @ +, not starting with '.')"
        ));
    }
    Ok(s.to_owned())
}

/// The default `--name`: the program's file name, with characters a name cannot hold replaced
/// by `_`.
pub fn program_name(program: &OsStr) -> String {
    let base = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    if name.is_empty() {
        name = "relaunch".into();
    }
    name
}

/// What the default control path depends on.
#[derive(Debug, Clone)]
pub struct PathEnv {
    /// `$XDG_RUNTIME_DIR`, if set to an absolute path.
    pub runtime_dir: Option<PathBuf>,
    /// The effective uid.
    pub euid: u32,
    /// The temp dir (`$TMPDIR` or `/tmp`).
    pub temp_dir: PathBuf,
}

impl PathEnv {
    /// The current process's environment.
    pub fn current() -> PathEnv {
        PathEnv {
            runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute()),
            euid: nix::unistd::geteuid().as_raw(),
            temp_dir: std::env::temp_dir(),
        }
    }

    /// The temp-dir fallback directory: `$TMPDIR/relaunch-<uid>`.
    pub fn temp_fallback(&self) -> PathBuf {
        self.temp_dir.join(format!("relaunch-{}", self.euid))
    }

    /// Every directory a default control socket may be in, most specific first (the client
    /// looks in all of them: a root shell may have `XDG_RUNTIME_DIR` set while a root service
    /// has not).
    pub fn search_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(rt) = &self.runtime_dir {
            dirs.push(rt.join("relaunch"));
        }
        if self.euid == 0 {
            dirs.push(PathBuf::from("/run/relaunch"));
        }
        dirs.push(self.temp_fallback());
        dirs
    }
}

/// The default control socket of a master named `name`: `$XDG_RUNTIME_DIR/relaunch/<name>.sock`;
/// else, for root, `/run/relaunch/<name>.sock`; else next to `pid_file` (its extension
/// replaced by `.sock`); else `$TMPDIR/relaunch-<uid>/<name>.sock`.
pub fn default_path(name: &str, pid_file: Option<&Path>, env: &PathEnv) -> PathBuf {
    if let Some(rt) = &env.runtime_dir {
        return rt.join("relaunch").join(format!("{name}.sock"));
    }
    if env.euid == 0 {
        return Path::new("/run/relaunch").join(format!("{name}.sock"));
    }
    if let Some(pid_file) = pid_file {
        return socket_next_to(pid_file);
    }
    env.temp_fallback().join(format!("{name}.sock"))
}

/// The control socket that goes with a pid file: `app.pid` → `app.sock`.
pub fn socket_next_to(pid_file: &Path) -> PathBuf {
    if pid_file.extension() == Some(OsStr::new("sock")) {
        let mut p = pid_file.as_os_str().to_owned();
        p.push(".sock");
        PathBuf::from(p)
    } else {
        pid_file.with_extension("sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("web-1.prod@eu").unwrap(), "web-1.prod@eu");
        for bad in ["", ".hidden", "a/b", "sp ace", &"x".repeat(65)] {
            let e = parse_name(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("{bad:?} is not a usable name")),
                "{e}"
            );
        }
        assert_eq!(program_name(OsStr::new("/usr/bin/my server")), "my_server");
        assert_eq!(program_name(OsStr::new("./.hidden")), "_hidden");
        assert_eq!(program_name(OsStr::new("/")), "relaunch");
        assert_eq!(program_name(OsStr::new("hello")), "hello");
    }

    #[test]
    fn default_paths() {
        let env = |rt: Option<&str>, euid| PathEnv {
            runtime_dir: rt.map(PathBuf::from),
            euid,
            temp_dir: PathBuf::from("/tmp"),
        };
        let pid = Some(Path::new("/srv/app/app.pid"));
        assert_eq!(
            default_path("web", pid, &env(Some("/run/user/1000"), 1000)),
            Path::new("/run/user/1000/relaunch/web.sock")
        );
        assert_eq!(
            default_path("web", pid, &env(None, 0)),
            Path::new("/run/relaunch/web.sock")
        );
        assert_eq!(
            default_path("web", pid, &env(None, 1000)),
            Path::new("/srv/app/app.sock")
        );
        assert_eq!(
            default_path("web", None, &env(None, 1000)),
            Path::new("/tmp/relaunch-1000/web.sock")
        );
        assert_eq!(
            socket_next_to(Path::new("/x/run")),
            Path::new("/x/run.sock")
        );
        assert_eq!(
            socket_next_to(Path::new("/x/a.sock")),
            Path::new("/x/a.sock.sock")
        );
        assert_eq!(
            env(Some("/r"), 0).search_dirs(),
            vec![
                PathBuf::from("/r/relaunch"),
                PathBuf::from("/run/relaunch"),
                PathBuf::from("/tmp/relaunch-0")
            ]
        );
    }
}
