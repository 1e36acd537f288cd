//! Puts the git commit into `relaunch --version` when relaunch is built from a git checkout:
//! sets RELAUNCH_VERSION to `0.1.0 (abc1234)`, or to the bare package version when there is no
//! git, no checkout (a crates.io download), or the checkout is some other project's.
//!
//! `cargo package` verifies the packaged copy in the checkout's target directory, where its run
//! of this script (no checkout there) replaces the checkout's; run it with `--target-dir` of its
//! own (as `.ci/run` does), or `touch build.rs` afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let version = env("CARGO_PKG_VERSION");
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    let full = match commit(&manifest_dir) {
        Some(commit) => format!("{version} ({commit})"),
        None => version,
    };
    println!("cargo:rustc-env=RELAUNCH_VERSION={full}");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// The short hash of HEAD, if `dir` is the top of a git checkout; also tells cargo to build
/// again when HEAD moves (a checkout, or a commit on the current branch).
fn commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    // A crate unpacked inside another project's checkout must not take that project's commit.
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    // In a worktree HEAD lives in the worktree's git dir, the branches in the common one.
    let git_dir = absolute(git(dir, &["rev-parse", "--git-dir"])?);
    let common_dir = absolute(git(dir, &["rev-parse", "--git-common-dir"])?);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    println!(
        "cargo:rerun-if-changed={}",
        common_dir.join("packed-refs").display()
    );
    if let Some(head_ref) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        println!(
            "cargo:rerun-if-changed={}",
            common_dir.join(head_ref).display()
        );
    }
    git(dir, &["rev-parse", "--short=9", "HEAD"])
}

/// Runs git in `dir`; its trimmed stdout on success, None on any failure (no git, not a
/// checkout).
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
