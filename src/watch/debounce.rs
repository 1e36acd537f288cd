//! The sans-IO core of the watcher: fingerprints of watched paths, and [`Debounce`], which
//! turns change events and samples into reload decisions (settling, the check command's
//! verdict, failed versions remembered).

use std::collections::VecDeque;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// How many failed versions are remembered (the oldest is forgotten first).
const REMEMBERED_FAILURES: usize = 16;
/// How many spawned generations' versions are kept until their outcome arrives.
const REMEMBERED_SPAWNS: usize = 16;
// ---------------------------------------------------------------------------------------------
// Fingerprints

/// The fingerprint of a file or directory, from `stat` (following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stat {
    /// Device.
    pub dev: u64,
    /// Inode: a rename onto the path makes a new one.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// File type and permission bits (`st_mode`): `chmod +x` is a change.
    pub mode: u32,
}

impl Stat {
    /// Stats `path`, following symlinks; `None` if there is nothing (usable) there.
    pub fn of(path: &Path) -> Option<Stat> {
        let m = fs::metadata(path).ok()?;
        Some(Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            mode: m.mode(),
        })
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A regular file with an execute bit.
    pub fn is_executable(&self) -> bool {
        self.is_file() && self.mode & 0o111 != 0
    }
}

/// One watched path's state at one moment: its fingerprint and, for a directory, how many
/// changes inside it the watcher has seen (its own mtime misses files written in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathVersion {
    /// The fingerprint; `None` when the path does not exist.
    pub stat: Option<Stat>,
    /// Changes seen inside it (always 0 for files).
    pub changes: u64,
}

/// The state of every watched path, in the order they were given (the program first).
pub type Version = Vec<PathVersion>;

// ---------------------------------------------------------------------------------------------
// The sans-IO core

/// What the driver must do after feeding [`Debounce`] something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Nothing,
    /// Run the pre-flight check, then report it with [`Debounce::check_finished`].
    RunCheck,
    /// Kill the running check: a watched path changed, so its result no longer counts.
    CancelCheck,
    /// Ask the supervisor for a reload, naming this changed path.
    Reload(PathBuf),
}

struct Target {
    path: PathBuf,
    program: bool,
    changes: u64,
    /// The sample taken at the last event, while a change is settling.
    dirty: Option<Option<Stat>>,
}

/// The debounce and fingerprint logic, without IO: events and samples in, [`Decision`]s out.
/// See the module docs for the rules.
pub struct Debounce {
    settle: Duration,
    has_check: bool,
    targets: Vec<Target>,
    /// When the settling change is considered, if one is settling.
    deadline: Option<Instant>,
    /// The version the serving generation was started from.
    running: Version,
    /// Versions that failed, and why (for the log), oldest first.
    failed: VecDeque<(Version, String)>,
    /// The version each recent generation was started from, until its outcome arrives.
    spawned: VecDeque<(u64, Version)>,
    /// The version a running check is about, and the path to name in the reload.
    checking: Option<(Version, PathBuf)>,
}

impl Debounce {
    /// A debouncer for `targets` (`(path, is_the_program)`), `sample` giving their current
    /// fingerprints: the version found now is taken as the one the first generation runs.
    pub fn new(
        settle: Duration,
        targets: Vec<(PathBuf, bool)>,
        has_check: bool,
        mut sample: impl FnMut(&Path) -> Option<Stat>,
    ) -> Debounce {
        let targets: Vec<Target> = targets
            .into_iter()
            .map(|(path, program)| Target {
                path,
                program,
                changes: 0,
                dirty: None,
            })
            .collect();
        let running = targets
            .iter()
            .map(|t| PathVersion {
                stat: sample(&t.path),
                changes: 0,
            })
            .collect();
        Debounce {
            settle,
            has_check,
            targets,
            deadline: None,
            running,
            failed: VecDeque::new(),
            spawned: VecDeque::new(),
            checking: None,
        }
    }

    /// The watched paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.targets.iter().map(|t| t.path.as_path())
    }

    /// When [`Debounce::tick`] has something to do: the end of the settle window, if a change
    /// is settling. `None` when idle.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether a check is running (asked for and not yet finished or cancelled).
    #[cfg(test)]
    pub fn is_checking(&self) -> bool {
        self.checking.is_some()
    }

    /// Target `target` changed at `now`; `stat` is its fingerprint right after the event.
    pub fn changed(&mut self, target: usize, stat: Option<Stat>, now: Instant) -> Decision {
        let t = &mut self.targets[target];
        if stat.is_some_and(|s| s.is_dir()) {
            t.changes += 1;
        }
        t.dirty = Some(stat);
        self.deadline = Some(now + self.settle);
        if self.checking.take().is_some() {
            info!(
                path = %t.path.display(),
                "a watched path changed during --check-cmd; the check starts over once it settles"
            );
            Decision::CancelCheck
        } else {
            Decision::Nothing
        }
    }

    /// Time passed. Once the settle window has passed, `sample` is called for every target and
    /// the change is decided.
    pub fn tick(
        &mut self,
        now: Instant,
        mut sample: impl FnMut(&Path) -> Option<Stat>,
    ) -> Decision {
        match self.deadline {
            Some(deadline) if deadline <= now => {}
            _ => return Decision::Nothing,
        }
        let mut unstable = None;
        let mut version = Vec::with_capacity(self.targets.len());
        for t in &mut self.targets {
            let stat = sample(&t.path);
            if let Some(at_event) = t.dirty {
                if at_event != stat {
                    // Changed without an event since the last one: wait another window.
                    t.dirty = Some(stat);
                    unstable.get_or_insert_with(|| t.path.clone());
                }
            }
            version.push(PathVersion {
                stat,
                changes: t.changes,
            });
        }
        if let Some(path) = unstable {
            debug!(path = %path.display(), "still changing; waiting for it to settle");
            self.deadline = Some(now + self.settle);
            return Decision::Nothing;
        }
        self.deadline = None;
        for t in &mut self.targets {
            t.dirty = None;
        }
        self.decide(version)
    }

    fn decide(&mut self, version: Version) -> Decision {
        let changed: Vec<usize> = (0..self.targets.len())
            .filter(|&i| version[i] != self.running[i])
            .collect();
        let Some(&first) = changed.first() else {
            debug!("the watched paths are as the serving generation found them; no reload");
            return Decision::Nothing;
        };
        let name = |i: usize| self.targets[i].path.display();
        if let Some((_, why)) = self.failed.iter().find(|(v, _)| *v == version) {
            info!(
                path = %name(first),
                reason = %why,
                "not reloading: these files failed before; waiting for the next change"
            );
            return Decision::Nothing;
        }
        let program = changed.iter().copied().find(|&i| self.targets[i].program);
        if let Some(p) = program {
            let problem = match version[p].stat {
                None => Some("it does not exist"),
                Some(s) if !s.is_file() => Some("it is not a regular file"),
                Some(s) if !s.is_executable() => Some("it is not executable"),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                warn!(
                    path = %name(p),
                    reason = %format!("{problem}; the old generation keeps serving"),
                    "not reloading: the program is not an executable file"
                );
                self.remember_failure(version, format!("the program was not usable ({problem})"));
                return Decision::Nothing;
            }
        }
        let Some(path) =
            program.or_else(|| changed.iter().copied().find(|&i| version[i].stat.is_some()))
        else {
            info!(
                path = %name(first),
                "not reloading: the changed path was removed; waiting for it to reappear"
            );
            return Decision::Nothing;
        };
        let path = self.targets[path].path.clone();
        if self.has_check {
            self.checking = Some((version, path));
            Decision::RunCheck
        } else {
            Decision::Reload(path)
        }
    }

    /// The check asked for with [`Decision::RunCheck`] ended: `Ok` if it passed, else why not.
    pub fn check_finished(&mut self, result: Result<(), String>) -> Decision {
        let Some((version, path)) = self.checking.take() else {
            return Decision::Nothing; // cancelled: a newer change is settling
        };
        match result {
            Ok(()) => Decision::Reload(path),
            Err(why) => {
                self.remember_failure(version, format!("--check-cmd failed ({why})"));
                Decision::Nothing
            }
        }
    }

    /// Generation `generation` is being spawned now; `sample` gives the fingerprints it starts
    /// from.
    pub fn spawning(&mut self, generation: u64, mut sample: impl FnMut(&Path) -> Option<Stat>) {
        let version = self
            .targets
            .iter()
            .map(|t| PathVersion {
                stat: sample(&t.path),
                changes: t.changes,
            })
            .collect();
        if self.spawned.len() == REMEMBERED_SPAWNS {
            self.spawned.pop_front();
        }
        self.spawned.push_back((generation, version));
    }

    /// The reload that started `generation` succeeded (`ok`) or failed.
    pub fn reload_outcome(&mut self, generation: u64, ok: bool) {
        let Some(i) = self.spawned.iter().position(|(g, _)| *g == generation) else {
            return;
        };
        let (_, version) = self.spawned.remove(i).expect("index found above");
        // Generations before it can have no outcome any more.
        self.spawned.retain(|(g, _)| *g > generation);
        if ok {
            self.running = version;
        } else {
            self.remember_failure(
                version,
                format!("the reload to generation {generation} failed"),
            );
        }
    }

    fn remember_failure(&mut self, version: Version, why: String) {
        if self.failed.iter().any(|(v, _)| *v == version) {
            return;
        }
        if self.failed.len() == REMEMBERED_FAILURES {
            self.failed.pop_front();
        }
        self.failed.push_back((version, why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap as Map;

    const SETTLE: Duration = Duration::from_millis(500);

    fn stat(ino: u64, size: u64, mtime: i64, mode: u32) -> Option<Stat> {
        Some(Stat {
            dev: 1,
            ino,
            size,
            mtime: (mtime, 0),
            mode,
        })
    }
    const EXE: u32 = libc::S_IFREG | 0o755;
    const DATA: u32 = libc::S_IFREG | 0o644;
    const DIR: u32 = libc::S_IFDIR | 0o755;

    /// A fake file system and clock around a `Debounce`.
    struct Sim {
        core: Debounce,
        files: RefCell<Map<PathBuf, Option<Stat>>>,
        t0: Instant,
        ms: u64,
    }

    impl Sim {
        /// The program `/app/server` (watched) and `/app/conf` (a data file).
        fn new(check: bool) -> Sim {
            let files = RefCell::new(Map::from([
                (PathBuf::from("/app/server"), stat(1, 100, 10, EXE)),
                (PathBuf::from("/app/conf"), stat(2, 10, 10, DATA)),
            ]));
            let core = Debounce::new(
                SETTLE,
                vec![("/app/server".into(), true), ("/app/conf".into(), false)],
                check,
                |p| files.borrow()[p],
            );
            Sim {
                core,
                files,
                t0: Instant::now(),
                ms: 0,
            }
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        /// At `ms`, `path` becomes `stat` and an event for it arrives.
        fn write(&mut self, ms: u64, target: usize, st: Option<Stat>) -> Decision {
            self.ms = ms;
            let path = self.core.targets[target].path.clone();
            self.files.borrow_mut().insert(path, st);
            self.core.changed(target, st, self.now())
        }

        /// Changes a file without any event.
        fn silently(&mut self, target: usize, st: Option<Stat>) {
            let path = self.core.targets[target].path.clone();
            self.files.borrow_mut().insert(path, st);
        }

        fn tick(&mut self, ms: u64) -> Decision {
            self.ms = ms;
            let now = self.now();
            let files = &self.files;
            self.core.tick(now, |p| files.borrow()[p])
        }

        /// Spawns `generation` from the files as they are, and reports its outcome.
        fn reload_ends(&mut self, generation: u64, ok: bool) {
            let files = &self.files;
            self.core.spawning(generation, |p| files.borrow()[p]);
            self.core.reload_outcome(generation, ok);
        }

        fn deadline_ms(&self) -> Option<u64> {
            self.core
                .next_deadline()
                .map(|d| (d - self.t0).as_millis() as u64)
        }
    }

    fn reload_of(path: &str) -> Decision {
        Decision::Reload(PathBuf::from(path))
    }

    #[test]
    fn idle_means_no_deadline() {
        let mut s = Sim::new(false);
        assert_eq!(s.deadline_ms(), None);
        assert_eq!(s.tick(10_000), Decision::Nothing);
    }

    #[test]
    fn a_burst_of_events_is_one_reload_a_settle_after_the_last() {
        let mut s = Sim::new(false);
        for i in 0..50 {
            assert_eq!(
                s.write(i * 10, 0, stat(1, 100, 100 + i as i64, EXE)),
                Decision::Nothing
            );
            assert_eq!(s.deadline_ms(), Some(i * 10 + 500));
        }
        // Last event at 490 ms: nothing before 990 ms.
        assert_eq!(s.tick(989), Decision::Nothing);
        assert_eq!(s.tick(990), reload_of("/app/server"));
        assert_eq!(s.deadline_ms(), None);
        assert_eq!(s.tick(5000), Decision::Nothing, "exactly one");
    }

    #[test]
    fn a_file_that_changes_without_an_event_settles_again() {
        let mut s = Sim::new(false);
        s.write(0, 0, stat(1, 50, 11, EXE));
        s.silently(0, stat(1, 100, 12, EXE)); // e.g. written through a mapping
        assert_eq!(s.tick(500), Decision::Nothing);
        assert_eq!(s.deadline_ms(), Some(1000), "another window");
        assert_eq!(s.tick(1000), reload_of("/app/server"));
    }

    #[test]
    fn a_rename_in_one_step_reloads_one_settle_later() {
        let mut s = Sim::new(false);
        s.write(100, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(599), Decision::Nothing);
        assert_eq!(s.tick(600), reload_of("/app/server"));
    }

    #[test]
    fn the_program_must_be_an_executable_regular_file() {
        for (st, why) in [
            (None, "missing"),
            (stat(7, 100, 20, DATA), "not executable"),
            (stat(7, 100, 20, DIR), "a directory"),
        ] {
            let mut s = Sim::new(false);
            s.write(0, 0, st);
            assert_eq!(s.tick(500), Decision::Nothing, "{why}");
            // The same state again (a stray event) is not reconsidered as new.
            s.write(600, 0, st);
            assert_eq!(s.tick(1100), Decision::Nothing, "{why}");
            // chmod +x (or the file appearing) is a new version.
            s.write(1200, 0, stat(7, 100, 20, EXE));
            assert_eq!(s.tick(1700), reload_of("/app/server"), "{why}");
        }
    }

    #[test]
    fn a_version_that_failed_is_not_retried_until_the_next_change() {
        let mut s = Sim::new(false);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), reload_of("/app/server"));
        s.reload_ends(2, false);
        // Stray events on the same files, and a config change back and forth: no retry.
        s.write(1000, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(1500), Decision::Nothing);
        // Touching the broken build makes a new version: tried once more.
        s.write(2000, 0, stat(7, 100, 21, EXE));
        assert_eq!(s.tick(2500), reload_of("/app/server"));
        s.reload_ends(3, false);
        assert_eq!(s.tick(9000), Decision::Nothing);
        // A config fix with the same binary is a new version too (the config may have been
        // what failed).
        s.write(10_000, 1, stat(2, 11, 30, DATA));
        assert_eq!(s.tick(10_500), reload_of("/app/server"));
    }

    #[test]
    fn a_state_equal_to_what_runs_is_no_change() {
        let mut s = Sim::new(false);
        // A symlink swapped away and back within the window: same inode as running.
        s.write(0, 0, stat(9, 1, 1, EXE));
        s.write(100, 0, stat(1, 100, 10, EXE));
        assert_eq!(s.tick(600), Decision::Nothing);
        // A SIGHUP reload already picked up the new build; the settle then finds no change.
        s.write(1000, 0, stat(8, 100, 30, EXE));
        s.reload_ends(2, true);
        assert_eq!(s.tick(1500), Decision::Nothing);
        // And a later change is compared with that new build.
        s.write(2000, 0, stat(8, 100, 31, EXE));
        assert_eq!(s.tick(2500), reload_of("/app/server"));
    }

    #[test]
    fn a_successful_reload_becomes_the_reference() {
        let mut s = Sim::new(false);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), reload_of("/app/server"));
        s.reload_ends(2, true);
        s.write(1000, 0, stat(7, 100, 20, EXE)); // nothing really changed
        assert_eq!(s.tick(1500), Decision::Nothing);
    }

    #[test]
    fn a_removed_data_file_waits_for_it_to_reappear() {
        let mut s = Sim::new(false);
        s.write(0, 1, None);
        assert_eq!(s.tick(500), Decision::Nothing);
        s.write(1000, 1, stat(3, 12, 40, DATA));
        assert_eq!(s.tick(1500), reload_of("/app/conf"));
    }

    #[test]
    fn the_program_is_named_when_it_is_among_the_changes() {
        let mut s = Sim::new(false);
        s.write(0, 1, stat(2, 11, 30, DATA));
        s.write(10, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(510), reload_of("/app/server"));
    }

    #[test]
    fn the_check_gates_the_reload_and_its_failure_is_remembered() {
        let mut s = Sim::new(true);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), Decision::RunCheck);
        assert!(s.core.is_checking());
        assert_eq!(
            s.core.check_finished(Err("exit code 1".into())),
            Decision::Nothing
        );
        s.write(1000, 0, stat(7, 100, 20, EXE));
        assert_eq!(
            s.tick(1500),
            Decision::Nothing,
            "no retry of a rejected version"
        );
        s.write(2000, 0, stat(8, 100, 21, EXE));
        assert_eq!(s.tick(2500), Decision::RunCheck);
        assert_eq!(s.core.check_finished(Ok(())), reload_of("/app/server"));
    }

    #[test]
    fn a_change_during_the_check_cancels_it_and_starts_over() {
        let mut s = Sim::new(true);
        s.write(0, 0, stat(7, 100, 20, EXE));
        assert_eq!(s.tick(500), Decision::RunCheck);
        assert_eq!(
            s.write(700, 0, stat(8, 100, 21, EXE)),
            Decision::CancelCheck
        );
        assert!(!s.core.is_checking());
        // The old check's result no longer counts.
        assert_eq!(s.core.check_finished(Ok(())), Decision::Nothing);
        assert_eq!(s.tick(1200), Decision::RunCheck);
        assert_eq!(s.core.check_finished(Ok(())), reload_of("/app/server"));
    }

    #[test]
    fn changes_inside_a_watched_directory_are_changes() {
        let files = RefCell::new(Map::from([(PathBuf::from("/rel"), stat(5, 4096, 1, DIR))]));
        let mut core = Debounce::new(SETTLE, vec![("/rel".into(), false)], false, |p| {
            files.borrow()[p]
        });
        let t0 = Instant::now();
        // A file inside is written in place: the directory's own stat does not change.
        core.changed(0, stat(5, 4096, 1, DIR), t0);
        let d = core.tick(t0 + SETTLE, |p| files.borrow()[p]);
        assert_eq!(d, Decision::Reload("/rel".into()));
    }

    #[test]
    fn outcomes_of_unknown_or_old_generations_are_ignored() {
        let mut s = Sim::new(false);
        s.reload_ends(2, true);
        s.core.reload_outcome(2, false); // already taken
        s.core.reload_outcome(99, false); // never spawned
        assert!(s.core.failed.is_empty());
    }
}
