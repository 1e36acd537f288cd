//! The control socket's mode is set without a lookup by name: a racer that swaps the fresh
//! socket file for a symlink must never get another file's mode changed. (A chmod by name
//! after `bind` lost this race within a second.)

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use relaunch::control::ControlServer;

#[test]
fn the_socket_mode_is_set_without_a_lookup_by_name() {
    // A racer swaps the fresh socket for a symlink to a victim file, again and again: a
    // chmod by name after the bind would follow the link and change the victim's mode.
    let base = std::env::temp_dir().join(format!("relaunch-socket-mode-{}", std::process::id()));
    let path = base.join("sub").join("c.sock");
    let dir = path.parent().unwrap().to_owned();
    fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    fs::write(&victim, "x").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swaps = std::sync::Arc::new(AtomicU64::new(0));
    let racer = {
        let (path, victim) = (path.clone(), victim.clone());
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let tmp = path.with_extension("tmp");
            while !stop.load(Ordering::Relaxed) {
                if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = fs::remove_file(&tmp);
                    if std::os::unix::fs::symlink(&victim, &tmp).is_ok()
                        && fs::rename(&tmp, &path).is_ok()
                    {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // On until the racer has won 200 times (at least 2,000 binds), within a deadline; a
    // changed victim ends it at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let changed = || fs::metadata(&victim).unwrap().mode() & 0o777 != 0o644;
    let mut binds = 0;
    while (binds < 2000 || swaps.load(Ordering::Relaxed) < 200)
        && Instant::now() < deadline
        && !changed()
    {
        let _ = fs::remove_file(&path);
        if let Ok(server) = ControlServer::bind(&path, false) {
            drop(server);
        }
        binds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let swaps = swaps.load(Ordering::Relaxed);
    let mode = fs::metadata(&victim).unwrap().mode() & 0o777;
    let _ = fs::remove_dir_all(&base);
    assert!(swaps > 0, "the racer never swapped ({binds} binds)");
    assert_eq!(mode, 0o644, "the victim's mode changed ({swaps} swaps)");
}
