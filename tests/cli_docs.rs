//! `relaunch man`, `relaunch completions SHELL` and `relaunch --version`, run as a user would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn relaunch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relaunch"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run relaunch")
}

/// Runs `program args` with `input` on stdin; None if the program is not installed.
fn filter(program: &str, args: &[&str], input: &[u8]) -> Option<Output> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    // The filters read all of their input before they write much, so writing it all first
    // cannot dead-lock on a full pipe.
    stdin.write_all(input).expect("write to the filter");
    drop(stdin);
    Some(child.wait_with_output().expect("wait for the filter"))
}

fn ok_stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{what} wrote to stderr");
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn man_page_is_roff_that_groff_renders_without_warnings() {
    let out = relaunch(&["man"]);
    let roff = ok_stdout(&out, "relaunch man");
    assert!(roff.contains(".TH relaunch 1"), "no .TH line:\n{roff}");
    // Every option and subcommand is in it, generated from the same definition as --help.
    for needle in [
        "\\-\\-listen",
        "\\-\\-stop\\-wait\\-secs",
        "\\-\\-watch",
        "status",
        "reload",
        "update",
        "completions",
    ] {
        assert!(roff.contains(needle), "the man page lacks {needle}");
    }
    let Some(rendered) = filter("groff", &["-man", "-ww", "-Tutf8"], roff.as_bytes()) else {
        eprintln!("skipped the groff check: groff is not installed (.ci/run installs it)");
        return;
    };
    assert!(rendered.status.success(), "groff: {:?}", rendered.status);
    assert_eq!(
        String::from_utf8_lossy(&rendered.stderr),
        "",
        "groff -ww warned"
    );
    // Bold is printed by overstriking: "N\bNA\bA..."; keep the last of each pair.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&rendered.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    assert!(
        text.contains("SYNOPSIS") && text.contains("SUBCOMMANDS\n"),
        "{text}"
    );
}

#[test]
fn bash_completion_is_valid_bash_and_completes_subcommands_and_flags() {
    let out = relaunch(&["completions", "bash"]);
    let script = ok_stdout(&out, "relaunch completions bash");
    for needle in [
        "--listen",
        "--stop-wait-secs",
        "reload",
        "update",
        "status",
        "man",
    ] {
        assert!(script.contains(needle), "the completion lacks {needle}");
    }
    let checked = filter("bash", &["-n"], script.as_bytes()).expect("bash is installed");
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // Loading it defines the completion for relaunch.
    let loaded = filter(
        "bash",
        &["-c", "source /dev/stdin && complete -p relaunch"],
        script.as_bytes(),
    )
    .expect("bash is installed");
    let complete = ok_stdout(&loaded, "bash: complete -p relaunch");
    assert!(complete.contains("relaunch"), "{complete}");
}

#[test]
fn every_shell_gets_a_script_and_zsh_and_fish_parse_theirs_when_installed() {
    for (shell, marker) in [
        ("zsh", "#compdef relaunch"),
        ("fish", "complete -c relaunch"),
        ("elvish", "edit:completion:arg-completer[relaunch]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = relaunch(&["completions", shell]);
        let script = ok_stdout(&out, shell);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        let check = match shell {
            "zsh" => filter("zsh", &["-n"], script.as_bytes()),
            "fish" => filter("fish", &["--no-execute"], script.as_bytes()),
            _ => None,
        };
        if let Some(check) = check {
            assert!(
                check.status.success(),
                "{shell} rejects its script: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_it_and_the_valid_ones() {
    let out = relaunch(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'tcsh'") && err.contains("bash, zsh, fish, elvish, powershell"),
        "{err}"
    );
    let out = relaunch(&["completions"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_stdout_that_cannot_be_written_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_relaunch"))
        .arg("man")
        .stdout(
            std::fs::File::options()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        ) // ENOSPC
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("relaunch: error: cannot write to stdout"),
        "{err}"
    );
}

#[test]
fn version_names_the_git_commit_when_built_from_a_checkout() {
    let out = relaunch(&["--version"]);
    let version = ok_stdout(&out, "relaunch --version");
    let expected = format!("relaunch {}", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--short=9", "HEAD"])
        .stderr(Stdio::null())
        .output();
    match head {
        Ok(head) if head.status.success() && dir.join(".git").exists() => {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
            assert_eq!(version.trim(), format!("{expected} ({head})"));
        }
        _ => assert_eq!(version.trim(), expected, "no checkout, no commit"),
    }
}
