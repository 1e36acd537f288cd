//! The pid file (`--pid-file PATH`).
//!
//! - **Checked before binding.** If the file names a live relaunch, starting is refused (exit
//!   1, naming the pid). "Live relaunch" means `kill(pid, 0)` finds the process *and*
//!   `/proc/PID/exe` (or, if that cannot be read, `argv[0]` in `/proc/PID/cmdline`) has the
//!   name of this executable or `relaunch`: a pid recycled by an unrelated process after a
//!   crash is stale, not a reason to refuse. A stale file (dead pid, another program, our own
//!   pid, garbage) is replaced, with a log line. If the process exists but cannot be
//!   inspected at all, starting is refused too, with a message saying so.
//! - **Written atomically once the sockets are bound**: `PID\n` goes into a temporary file in
//!   the same directory, which is synced and renamed over the path, so a reader sees the old
//!   content or the new, never an empty or partial file. The temporary file has an
//!   unpredictable name and is created with `O_EXCL|O_NOFOLLOW`, and the rename replaces a
//!   symlink at the path rather than writing through it: a directory others can write (say
//!   `/tmp`) cannot make relaunch, running as root, write into another file. The file is read
//!   with `O_NOFOLLOW` too; a symlink at the path counts as stale.
//! - **Removed on exit**, but only if it still holds our pid (another instance may have taken
//!   it over meanwhile).
//!
//! relaunch keeps its pid for its whole life (reloads happen in children), so the file stays
//! valid across reloads; with `--daemon` the pid is the detached master's.

use std::fs;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tracing::{debug, info, warn};

/// What an existing pid file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// No file.
    Missing,
    /// A file that does not name a running relaunch; why.
    Stale(String),
    /// A running relaunch has this pid.
    Live(i32),
    /// A process with this pid exists but could not be identified.
    Unknown(i32),
}

/// Reads the pid file at `path` and decides whether it names a running relaunch.
pub fn inspect(path: &Path) -> io::Result<Existing> {
    let text = match read_nofollow(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Missing),
        // A symlink (ELOOP with O_NOFOLLOW) or a non-regular file: not ours, replaced.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Existing::Stale("it is a symbolic link".into()))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Ok(Existing::Stale(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(Existing::Stale(format!(
            "it does not hold a pid ({:?})",
            text.chars().take(40).collect::<String>()
        )));
    };
    if pid <= 0 {
        return Ok(Existing::Stale(format!("{pid} is not a pid")));
    }
    if pid as u32 == std::process::id() {
        return Ok(Existing::Stale(format!("{pid} is this process")));
    }
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => return Ok(Existing::Stale(format!("no process {pid} is running"))),
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(match is_relaunch(pid) {
        Some(true) => Existing::Live(pid),
        Some(false) => Existing::Stale(format!(
            "process {pid} is not relaunch (a pid reused by another program)"
        )),
        None => Existing::Unknown(pid),
    })
}

/// Whether process `pid` runs relaunch: by the name of its executable, or of its `argv[0]`
/// when the executable link cannot be read (another user's process). `None` if neither can.
fn is_relaunch(pid: i32) -> Option<bool> {
    let own = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let matches = |name: &str| {
        let name = name.trim_end_matches(" (deleted)");
        let base = name.rsplit('/').next().unwrap_or(name);
        base == "relaunch" || own.as_deref() == Some(base)
    };
    match fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => return Some(matches(&exe.to_string_lossy())),
        // Kernel threads and zombies have no executable; their cmdline is empty.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {}
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) if cmdline.is_empty() => Some(false),
        Ok(cmdline) => {
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            Some(matches(&String::from_utf8_lossy(argv0)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// Refuses to go on if the pid file names a running relaunch; logs a stale one.
pub fn check(path: &Path) -> anyhow::Result<()> {
    match inspect(path)
        .map_err(|e| anyhow::anyhow!("reading the pid file {}: {e}", path.display()))?
    {
        Existing::Missing => Ok(()),
        Existing::Stale(why) => {
            info!(path = %path.display(), reason = %why, "replacing a stale pid file");
            Ok(())
        }
        Existing::Live(pid) => Err(anyhow::anyhow!(
            "relaunch is already running as pid {pid} (pid file {}); stop it first, or use another --pid-file",
            path.display()
        )),
        Existing::Unknown(pid) => Err(anyhow::anyhow!(
            "the pid file {} names pid {pid}, which is running but cannot be inspected; remove the file if that process is not relaunch",
            path.display()
        )),
    }
}

/// A pid file written by this process; removed when dropped, if it still holds our pid.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    content: String,
}

impl PidFile {
    /// Writes our pid to `path` atomically (temporary file in the same directory + rename).
    pub fn write(path: &Path) -> anyhow::Result<PidFile> {
        let content = format!("{}\n", std::process::id());
        write_atomically(path, content.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing the pid file {}: {e}", path.display()))?;
        debug!(path = %path.display(), "wrote the pid file");
        Ok(PidFile {
            path: path.to_owned(),
            content,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        match read_nofollow(&self.path) {
            Ok(text) if text == self.content => {
                if let Err(e) = fs::remove_file(&self.path) {
                    warn!(path = %self.path.display(), error = %e, "cannot remove the pid file");
                }
            }
            Ok(_) => {
                info!(path = %self.path.display(), "the pid file names another process now; left in place")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read the pid file to remove it")
            }
        }
    }
}

/// Writes `content` to `path` atomically and without following links planted by others in a
/// directory they can write: the temporary file gets an unpredictable name and is created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` (so an existing file or symlink of that name is an error, never
/// opened), and `rename` replaces whatever is at `path` — a symlink included — instead of
/// writing through it.
fn write_atomically(path: &Path, content: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let random = std::collections::hash_map::RandomState::new();
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}.{:016x}.tmp",
            std::process::id(),
            random.hash_one(attempt)
        ));
        let tmp = path.with_file_name(tmp_name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a pid file without following a symlink at its path: a link there was planted, not
/// written by relaunch, and reading through it would leak another file into the log.
fn read_nofollow(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is not a regular file",
        ));
    }
    let mut text = String::new();
    Read::by_ref(&mut file)
        .take(4096)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("relaunch-pidfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stale_and_missing() {
        let d = dir("stale");
        let p = d.join("x.pid");
        assert_eq!(inspect(&p).unwrap(), Existing::Missing);
        fs::write(&p, "").unwrap();
        assert!(matches!(inspect(&p).unwrap(), Existing::Stale(_)));
        fs::write(&p, "garbage\n").unwrap();
        assert!(
            matches!(inspect(&p).unwrap(), Existing::Stale(w) if w.contains("does not hold a pid"))
        );
        fs::write(&p, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(inspect(&p).unwrap(), Existing::Stale(w) if w.contains("this process")));
        // The parent of the test runner is alive and is not relaunch.
        let parent = nix::unistd::getppid().as_raw();
        fs::write(&p, format!("{parent}\n")).unwrap();
        assert!(
            matches!(inspect(&p).unwrap(), Existing::Stale(ref w) if w.contains("not relaunch")),
            "{:?}",
            inspect(&p)
        );
        // A process that is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        fs::write(&p, format!("{gone}\n")).unwrap();
        assert!(matches!(inspect(&p).unwrap(), Existing::Stale(w) if w.contains("no process")));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn written_atomically_and_removed_only_if_ours() {
        let d = dir("write");
        let p = d.join("x.pid");
        fs::write(&p, "old\n").unwrap();
        let file = PidFile::write(&p).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        let leftovers: Vec<_> = fs::read_dir(&d).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        drop(file);
        assert!(!p.exists());
        let file = PidFile::write(&p).unwrap();
        fs::write(&p, "12345\n").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&p).unwrap(), "12345\n");
        let e = PidFile::write(&d.join("no-such-dir/x.pid")).unwrap_err();
        assert!(e.to_string().contains("no-such-dir/x.pid"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let d = dir("symlink");
        let victim = d.join("victim");
        fs::write(&victim, "secret\n").unwrap();
        // Links for every name the old code would have used (`.<name>.<pid>.tmp`, for this pid
        // and the next ones), and at the final path.
        let p = d.join("x.pid");
        for pid in std::process::id()..std::process::id() + 8 {
            std::os::unix::fs::symlink(&victim, d.join(format!(".x.pid.{pid}.tmp"))).unwrap();
        }
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert!(
            matches!(inspect(&p).unwrap(), Existing::Stale(ref w) if w.contains("symbolic link")),
            "{:?}",
            inspect(&p)
        );
        let file = PidFile::write(&p).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "secret\n");
        let meta = fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file(), "{meta:?}");
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(fs::symlink_metadata(&p).is_err(), "removed on drop");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "secret\n");
        fs::remove_dir_all(&d).unwrap();
    }
}
