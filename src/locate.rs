//! Where control sockets live, and telling a live one from a stale one without blocking.
//!
//! The master and the client subcommands agree on these: the name rules (`--name`), the
//! default path of a master's control socket, the directories a client searches, and
//! [`probe`], the non-blocking connect both use (a blocking one would hang on a stopped master
//! whose backlog is full). [`crate::control`] re-exports them.

use std::ffi::OsStr;
use std::io::{self, ErrorKind};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The longest `--name`.
pub const MAX_NAME: usize = 64;

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

/// The environment variable that names the one directory of default control sockets,
/// overriding the search below (for tests and for hosts that keep them elsewhere).
pub const CONTROL_DIR_VAR: &str = "RELAUNCH_CONTROL_DIR";

/// What the default control path depends on.
#[derive(Debug, Clone, Default)]
pub struct PathEnv {
    /// `$RELAUNCH_CONTROL_DIR`, if set to an absolute path: then the only directory.
    pub control_dir: Option<PathBuf>,
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
            control_dir: std::env::var_os(CONTROL_DIR_VAR)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute()),
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
        if let Some(dir) = &self.control_dir {
            return vec![dir.clone()];
        }
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

/// The default control socket of a master named `name`: `$RELAUNCH_CONTROL_DIR/<name>.sock`;
/// else `$XDG_RUNTIME_DIR/relaunch/<name>.sock`;
/// else, for root, `/run/relaunch/<name>.sock`; else next to `pid_file` (its extension
/// replaced by `.sock`); else `$TMPDIR/relaunch-<uid>/<name>.sock`.
pub fn default_path(name: &str, pid_file: Option<&Path>, env: &PathEnv) -> PathBuf {
    if let Some(dir) = &env.control_dir {
        return dir.join(format!("{name}.sock"));
    }
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

/// The most suffixes tried for a default name that is taken.
pub const MAX_SUFFIX: u32 = 999;

/// `name` with the suffix `-n`, shortened to fit in [`MAX_NAME`].
pub fn suffixed(name: &str, n: u32) -> String {
    let suffix = format!("-{n}");
    let keep = name.len().min(MAX_NAME - suffix.len());
    format!("{}{suffix}", &name[..keep])
}

/// What a connection attempt to a control socket found.
#[derive(Debug)]
pub enum Probe {
    /// A master accepted the connection.
    Answers(UnixStream),
    /// A socket listens there but its backlog is full (the master is stopped or overloaded):
    /// it is alive.
    Busy,
    /// A socket file nobody listens on (left behind by a relaunch that died).
    Stale,
    /// No such file.
    Missing,
}

/// Connects to the control socket at `path` without blocking: a master that is stopped
/// (SIGSTOP, a debugger) with a full backlog would make a blocking `connect` wait forever.
/// A unix stream `connect` never is in progress: it succeeds, or fails with `EAGAIN` when
/// the backlog is full. The connection returned is non-blocking.
pub fn probe(path: &Path) -> io::Result<Probe> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let addr = socket2::SockAddr::unix(path)?;
    match socket.connect(&addr) {
        Ok(()) => Ok(Probe::Answers(UnixStream::from(
            std::os::fd::OwnedFd::from(socket),
        ))),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Probe::Busy),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Probe::Stale),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Probe::Missing),
        Err(e) => Err(e),
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
            control_dir: None,
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

    #[test]
    fn the_control_dir_overrides_every_default_and_is_the_only_one_searched() {
        let env = PathEnv {
            control_dir: Some(PathBuf::from("/t/ctl")),
            runtime_dir: Some(PathBuf::from("/r")),
            euid: 0,
            temp_dir: PathBuf::from("/tmp"),
        };
        let pid = Some(Path::new("/srv/app/app.pid"));
        assert_eq!(default_path("web", pid, &env), Path::new("/t/ctl/web.sock"));
        assert_eq!(env.search_dirs(), vec![PathBuf::from("/t/ctl")]);
    }

    #[test]
    fn suffixed_names_stay_usable() {
        assert_eq!(suffixed("python3", 2), "python3-2");
        let long = "x".repeat(MAX_NAME);
        for n in [2, 10, MAX_SUFFIX] {
            let name = suffixed(&long, n);
            assert_eq!(name.len(), MAX_NAME, "{name}");
            assert!(name.ends_with(&format!("-{n}")), "{name}");
            assert_eq!(parse_name(&name).unwrap(), name);
        }
    }
}
