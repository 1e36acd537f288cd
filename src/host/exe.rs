//! The path of the running program, for a self-hosted master to run again at each generation.
//!
//! `/proc/self/exe` names the file the process was started from. It is read **once**, at
//! startup, and turned into a path: each generation then execs that *path*, so a new build
//! renamed over it is what the next generation runs. (Exec'ing `/proc/self/exe` itself would
//! run the master's own, old, inode forever.)
//!
//! When the file was replaced or removed after this process started, the kernel shows the link
//! as `PATH (deleted)`. That suffix is dropped when `PATH` itself exists again (the usual
//! deploy: rename a new build over the old one), so the path, not the old inode, is run.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// What the kernel appends to `/proc/PID/exe` when the file is no longer at that path.
const DELETED: &[u8] = b" (deleted)";

/// The path this process's program was started from, read from `/proc/self/exe`.
pub(crate) fn current_exe_path() -> io::Result<PathBuf> {
    let link = std::fs::read_link("/proc/self/exe")?;
    Ok(resolve(link, |p| p.exists()))
}

/// `link` as read from `/proc/self/exe`, with a ` (deleted)` suffix dropped when the path
/// without it exists (a new file took the old one's place). `exists` is the file system check.
fn resolve(link: PathBuf, exists: impl Fn(&Path) -> bool) -> PathBuf {
    if exists(&link) {
        return link; // a file literally named "... (deleted)", or no suffix at all
    }
    let bytes = link.as_os_str().as_bytes();
    match bytes.strip_suffix(DELETED) {
        Some(stem) => PathBuf::from(OsString::from_vec(stem.to_vec())),
        None => link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_path_is_kept() {
        let p = resolve(PathBuf::from("/srv/app"), |_| true);
        assert_eq!(p, PathBuf::from("/srv/app"));
    }

    #[test]
    fn the_deleted_suffix_is_dropped_for_the_path_a_new_build_took() {
        let p = resolve(PathBuf::from("/srv/app (deleted)"), |p| {
            p == Path::new("/srv/app")
        });
        assert_eq!(p, PathBuf::from("/srv/app"));
    }

    #[test]
    fn the_deleted_suffix_is_dropped_even_when_nothing_is_there_yet() {
        // The spawn then fails naming the path (127), and a later reload finds the new build.
        let p = resolve(PathBuf::from("/srv/app (deleted)"), |_| false);
        assert_eq!(p, PathBuf::from("/srv/app"));
    }

    #[test]
    fn a_file_really_named_with_the_suffix_is_kept() {
        let p = resolve(PathBuf::from("/srv/app (deleted)"), |p| {
            p == Path::new("/srv/app (deleted)")
        });
        assert_eq!(p, PathBuf::from("/srv/app (deleted)"));
    }

    #[test]
    fn this_test_binary_resolves_to_a_file() {
        let p = current_exe_path().unwrap();
        assert!(p.is_absolute() && p.is_file(), "{}", p.display());
    }
}
