//! A site: a master run from a configuration file whose control socket is `ctl.sock` in the
//! test's directory. Its client, its `status --json` record and the programs in it.

use super::*;

/// Runs a client subcommand against the site's control socket (`DIR/ctl.sock`): (exit code,
/// stdout, stderr).
pub fn site_client(dir: &TempDir, args: &[&str]) -> (i32, String, String) {
    let (sub, rest) = args.split_first().expect("a subcommand");
    let out = Command::new(relaunch_bin())
        .arg(sub)
        .arg("--control")
        .arg(dir.join("ctl.sock"))
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The site's `status --json` record (whatever the exit code: it is printed either way).
pub fn site_status(dir: &TempDir) -> serde_json::Value {
    let (_, out, err) = site_client(dir, &["status", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out} {err}"))
}

/// The program `name` in a status record, if it is there.
pub fn find_program<'a>(
    status: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    status["programs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
}

/// The program `name` in a status record.
pub fn site_program<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    find_program(status, name).unwrap_or_else(|| panic!("no program {name} in {status}"))
}

/// The current generation's pid of `name`, if it is RUNNING (the first current one listed).
pub fn site_running_pid(status: &serde_json::Value, name: &str) -> Option<i64> {
    let p = site_program(status, name);
    if p["state"] != "RUNNING" {
        return None;
    }
    p["generations"]
        .as_array()?
        .iter()
        .find(|g| g["role"] == "current")
        .and_then(|g| g["pid"].as_i64())
}
