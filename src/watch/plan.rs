//! Where to watch: which directories get an inotify watch for a path (following symlink
//! chains, the nearest existing directory of a missing one) and with which masks.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::sys::inotify::AddWatchFlags;

// ---------------------------------------------------------------------------------------------
// Where to watch

/// One inotify watch for one path, and what to look for with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// What to watch (resolved: no symlinks in it): a directory, for its entry `name`; or, with
    /// `name` `None`, the watched file itself or every entry of the watched directory.
    pub path: PathBuf,
    /// The directory entry that matters, or `None` (see `path`).
    pub name: Option<OsString>,
    /// Whether writes and metadata changes matter too, not only names appearing, disappearing
    /// or being replaced.
    pub content: bool,
}

/// Resolves `path` (absolute) as the kernel would, and returns what to watch so that any change
/// of what `path` names is seen: the final name's directory (for that name being created,
/// deleted or replaced), the file or directory it names (for writes, metadata, and a
/// directory's entries), each directory holding a symlink met on the way, and the nearest
/// existing directory when one is missing.
///
/// Directories are watched for names only, and files for their content: a server writing its
/// log next to its binary does not wake the master up at every write.
pub fn plan(path: &Path) -> Vec<Spot> {
    let mut spots = Vec::new();
    let mut dir = PathBuf::from("/");
    let mut rest = names(path);
    let mut links = 0;
    while let Some(name) = rest.pop_front() {
        if name == ".." {
            // `dir` holds no symlink, so its parent is the real one.
            dir.pop();
            continue;
        }
        let here = dir.join(&name);
        let last = rest.is_empty();
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                spots.push(Spot {
                    path: dir.clone(),
                    name: Some(name),
                    content: false,
                });
                links += 1;
                let target = match fs::read_link(&here) {
                    Ok(t) if links <= 40 => t,
                    _ => break, // a loop, or it changed under us: the next event re-plans
                };
                if target.is_absolute() {
                    dir = PathBuf::from("/");
                }
                for n in names(&target).into_iter().rev() {
                    rest.push_front(n);
                }
            }
            Ok(m) if m.is_dir() && !last => dir = here,
            Ok(_) => {
                // The final name (or a file where a directory was expected), and what it is.
                spots.push(Spot {
                    path: dir.clone(),
                    name: Some(name),
                    content: false,
                });
                spots.push(Spot {
                    path: here,
                    name: None,
                    content: true,
                });
                break;
            }
            Err(_) => {
                // Missing: watch the nearest existing directory for it to appear.
                spots.push(Spot {
                    path: dir.clone(),
                    name: Some(name),
                    content: false,
                });
                break;
            }
        }
    }
    spots
}

fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

pub(super) fn structure_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

pub(super) fn content_mask() -> AddWatchFlags {
    structure_mask()
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
}

pub(super) fn self_gone_mask() -> AddWatchFlags {
    AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_IGNORED
        | AddWatchFlags::IN_UNMOUNT
}

pub(super) fn names_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- plan(): which directories get watched --------------------------------------------

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let p = std::env::temp_dir()
                .join(format!("relaunch-watch-unit-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Tmp(fs::canonicalize(&p).unwrap())
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn spot(path: &Path, name: Option<&str>, content: bool) -> Spot {
        Spot {
            path: path.to_owned(),
            name: name.map(OsString::from),
            content,
        }
    }

    #[test]
    fn plan_watches_a_plain_file_and_its_name_in_its_directory() {
        let t = Tmp::new("plain");
        fs::write(t.0.join("server"), b"x").unwrap();
        assert_eq!(
            plan(&t.0.join("server")),
            vec![
                spot(&t.0, Some("server"), false),
                spot(&t.0.join("server"), None, true)
            ]
        );
        // Missing files are fine: watched for appearing.
        assert_eq!(
            plan(&t.0.join("later")),
            vec![spot(&t.0, Some("later"), false)]
        );
    }

    #[test]
    fn plan_follows_a_capistrano_symlink_chain() {
        let t = Tmp::new("chain");
        let rel = t.0.join("releases/2/bin");
        fs::create_dir_all(&rel).unwrap();
        fs::write(rel.join("server"), b"x").unwrap();
        std::os::unix::fs::symlink("releases/2", t.0.join("current")).unwrap();
        // The program itself is a symlink too, in another directory.
        fs::create_dir(t.0.join("bin")).unwrap();
        std::os::unix::fs::symlink("../current/bin/server", t.0.join("bin/app")).unwrap();
        assert_eq!(
            plan(&t.0.join("bin/app")),
            vec![
                spot(&t.0.join("bin"), Some("app"), false),
                spot(&t.0, Some("current"), false),
                spot(&rel, Some("server"), false),
                spot(&rel.join("server"), None, true),
            ]
        );
    }

    #[test]
    fn plan_watches_the_nearest_existing_directory_of_a_missing_one() {
        let t = Tmp::new("missing");
        assert_eq!(
            plan(&t.0.join("conf/app.toml")),
            vec![spot(&t.0, Some("conf"), false)]
        );
        fs::create_dir(t.0.join("conf")).unwrap();
        assert_eq!(
            plan(&t.0.join("conf/app.toml")),
            vec![spot(&t.0.join("conf"), Some("app.toml"), false)]
        );
    }

    #[test]
    fn plan_watches_a_directory_and_its_entries() {
        let t = Tmp::new("dir");
        fs::create_dir(t.0.join("release")).unwrap();
        assert_eq!(
            plan(&t.0.join("release")),
            vec![
                spot(&t.0, Some("release"), false),
                spot(&t.0.join("release"), None, true)
            ]
        );
    }

    #[test]
    fn plan_stops_at_a_symlink_loop() {
        let t = Tmp::new("loop");
        std::os::unix::fs::symlink("b", t.0.join("a")).unwrap();
        std::os::unix::fs::symlink("a", t.0.join("b")).unwrap();
        let spots = plan(&t.0.join("a"));
        assert!(spots.len() <= 41, "{}", spots.len());
        assert!(spots.iter().all(|s| s.path == t.0));
    }
}
