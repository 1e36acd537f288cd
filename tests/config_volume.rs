//! The configuration path of `examples/kubernetes/hello.yaml`: relaunch reads `--env-file` from
//! a ConfigMap volume and watches the volume's directory with `--watch-path`. The kubelet
//! updates such a volume the way this test does (its "atomic writer"): the files live in a
//! timestamped directory, `..data` points at it, and each file name is a symlink through
//! `..data`; an update writes a new timestamped directory, renames a new `..data` symlink over
//! the old one and removes the old directory.
mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

/// Publishes `files` into the volume `dir` as version `version`, as the kubelet does.
fn publish(dir: &Path, version: u32, files: &[(&str, &str)]) {
    let data = format!("..2026_12_03_00_00_0{version}.000000000");
    fs::create_dir(dir.join(&data)).expect("mkdir the timestamped directory");
    for (name, text) in files {
        fs::write(dir.join(&data).join(name), text).expect("write a file");
    }
    let old = fs::read_link(dir.join("..data")).ok();
    symlink(&data, dir.join("..data_tmp")).expect("symlink ..data_tmp");
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename over ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).expect("symlink the file name");
        }
    }
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old)).expect("remove the old version");
    }
}

/// The GREETING each generation started with, from the lines its shell wrote to `report`.
fn greetings(report: &Path) -> Vec<String> {
    fs::read_to_string(report)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("GREETING=").map(str::to_owned))
        .collect()
}

#[test]
fn a_config_map_update_reloads_in_place_with_the_new_environment() {
    let dir = TempDir::new("configmap");
    let volume = dir.join("volume");
    fs::create_dir(&volume).expect("mkdir the volume");
    publish(&volume, 1, &[("hello.env", "# v1\nGREETING=one\n")]);
    let report = dir.join("report");
    let script = format!(
        "echo \"GREETING=$GREETING\" >> {}; exec {} --on-term exit:0",
        s(&report),
        s(&probe_bin())
    );
    let r = Relaunch::start(&[
        "--start-secs",
        "0.3",
        "--listen",
        "http=127.0.0.1:0",
        "--env-file",
        s(&volume.join("hello.env")),
        "--watch-path",
        s(&volume),
        "--watch-settle",
        "300ms",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    r.wait_running(1);
    assert_eq!(greetings(&report), ["one"]);

    publish(&volume, 2, &[("hello.env", "# v2\nGREETING=two\n")]);
    let pid2 = record_pid(&r.wait_reload_ok(2));
    assert_eq!(greetings(&report), ["one", "two"]);
    // The old generation is stopped once the new one is up.
    r.wait_status("generation 1 reaped", |v| {
        history(v, "exit").any(|e| e["generation"] == 1)
    });
    assert_eq!(r.live_children(), [pid2]);
}
