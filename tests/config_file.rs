//! The configuration file: `relaunch check-config FILE` with one test per error message (the
//! messages are pinned: file, line, key, what is valid), `examples/site.toml`, the
//! command-line rules of `--config`, and one program run from a file.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

/// Runs `relaunch ARGS` to completion (check-config starts nothing), with no RELAUNCH_*
/// variables but `vars`.
fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Relaunch::command(args);
    cmd.envs(vars.iter().copied());
    cmd.output().expect("run relaunch")
}

/// `check-config` on a file holding `text`: its exit code, stdout and stderr.
fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = TempDir::new("config-file");
    let file = dir.join("site.toml");
    fs::write(&file, text).unwrap();
    let out = run(&["check-config", s(&file)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).replace(s(&file), "site.toml");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Asserts that `check-config` rejects `text` with exit 2 and exactly `message`.
#[track_caller]
fn rejects(text: &str, message: &str) {
    let (code, stdout, stderr) = check(text);
    assert_eq!(code, Some(2), "stdout: {stdout} stderr: {stderr}");
    assert_eq!(stderr.trim_end(), format!("relaunch: error: {message}"));
    assert_eq!(stdout, "", "nothing is printed on stdout for a bad file");
}

#[test]
fn check_config_accepts_the_example_site_and_prints_its_programs() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site.toml");
    let out = run(&["check-config", s(&site)], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(": ok: master \"site\", 2 programs"),
        "{stdout}"
    );
    // In start order: web (priority 10) before jobs (999).
    let web = stdout.find("[program.web]").expect("web");
    let jobs = stdout.find("[program.jobs]").expect("jobs");
    assert!(web < jobs, "{stdout}");
    assert!(
        stdout.contains("listen    = [\"http=tcp://*:8080\", \"admin=unix:/run/web.sock\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("restart   = \"always\""), "{stdout}");
}

#[test]
fn error_unknown_key_suggests_the_closest() {
    rejects(
        "[program.web]\ncommand = [\"srv\"]\nraedy = \"notify\"\n",
        "site.toml:3: [program.web]: unknown key \"raedy\" (did you mean \"ready\"?)",
    );
}

#[test]
fn error_unknown_key_without_a_close_one_lists_the_keys() {
    let (code, _, stderr) = check("[program.web]\ncommand = [\"srv\"]\ncolour = \"blue\"\n");
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with(
            "relaunch: error: site.toml:3: [program.web]: unknown key \"colour\" (expected one of: listen, start-secs, ready,"
        ),
        "{stderr}"
    );
    assert!(
        stderr.trim_end().ends_with("command, priority, autostart)"),
        "{stderr}"
    );
}

#[test]
fn error_unknown_section() {
    rejects(
        "[programs.web]\ncommand = [\"srv\"]\n",
        "site.toml:1: unknown section [programs] (did you mean \"program\"?) (expected [relaunch] and [program.NAME])",
    );
}

#[test]
fn error_master_key_in_a_program() {
    rejects(
        "[program.web]\ncommand = [\"srv\"]\npid-file = \"/run/web.pid\"\n",
        "site.toml:3: [program.web]: \"pid-file\" does not belong in [program.web]: it goes under [relaunch]",
    );
}

#[test]
fn error_program_key_in_the_master() {
    rejects(
        "[relaunch]\nready = \"notify\"\n[program.web]\ncommand = [\"srv\"]\n",
        "site.toml:2: [relaunch]: \"ready\" does not belong in [relaunch]: it goes under [program.NAME]",
    );
}

#[test]
fn error_wrong_type() {
    rejects(
        "[program.web]\ncommand = [\"srv\"]\nstop-wait-secs = [30]\n",
        "site.toml:3: [program.web] stop-wait-secs: expected a string or a number, found array",
    );
}

#[test]
fn error_wrong_type_for_a_switch() {
    rejects(
        "[program.web]\ncommand = [\"srv\"]\nwatch = \"yes\"\n",
        "site.toml:3: [program.web] watch: expected true or false, found string",
    );
}

#[test]
fn error_bad_value_has_the_command_line_message() {
    rejects(
        "[program.web]\ncommand = [\"srv\"]\n\nready = \"sometimes\"\n",
        "site.toml:4: [program.web] ready: \"sometimes\" is not a readiness mode (expected timer, notify, or fd:N with N >= 3)",
    );
}

#[test]
fn error_bad_listen_address() {
    rejects(
        "[program.web]\ncommand = [\"srv\"]\nlisten = [\":80\", \"nope:::\"]\n",
        "site.toml:3: [program.web] listen: IPv6 address in \"nope:::\" must be in brackets, e.g. [::1]:8080",
    );
}

#[test]
fn error_command_is_an_array() {
    rejects(
        "[program.web]\ncommand = \"srv --port 80\"\n",
        "site.toml:2: [program.web] command: expected an array of strings, the program and its arguments, like [\"/srv/bin/server\", \"--port\", \"8080\"] (no shell splitting), found string",
    );
}

#[test]
fn error_program_without_command() {
    rejects(
        "[program.web]\nlisten = [\":80\"]\n",
        "site.toml:1: [program.web]: no command (add command = [\"/path/to/server\", \"arg\"])",
    );
}

#[test]
fn error_no_programs() {
    rejects(
        "[relaunch]\nname = \"site\"\n",
        "site.toml: no programs (add a [program.NAME] table with command = [\"/path/to/server\", \"arg\"])",
    );
}

#[test]
fn error_two_programs_bind_the_same_address() {
    rejects(
        "[program.web]\ncommand = [\"a\"]\nlisten = [\":8080\"]\n\n[program.api]\ncommand = [\"b\"]\nlisten = [\"127.0.0.1:8080\"]\n",
        "site.toml:7: [program.api] listen: \"tcp://127.0.0.1:8080\" is also bound by program \"web\" (\"tcp://*:8080\", line 1): two programs cannot bind the same address",
    );
}

#[test]
fn error_a_name_used_twice() {
    rejects(
        "[program.web]\ncommand = [\"a\"]\n\n[program.web]\ncommand = [\"b\"]\n",
        "site.toml:4: invalid TOML: duplicate key \"web\": a table or key is defined twice (each program name may be used once)",
    );
}

#[test]
fn error_bad_program_name() {
    rejects(
        "[program.\"my web\"]\ncommand = [\"a\"]\n",
        "site.toml:1: [program.my web]: the program name \"my web\" is not a usable name (expected 1 to 64 characters out of A-Z a-z 0-9 . _ - @ +, not starting with '.')",
    );
}

#[test]
fn error_bad_priority() {
    rejects(
        "[program.web]\ncommand = [\"a\"]\npriority = -1\n",
        "site.toml:3: [program.web] priority: -1 is not a priority (expected a whole number from 0 to 2147483647; lower starts first)",
    );
}

#[test]
fn error_a_key_that_needs_another() {
    rejects(
        "[relaunch]\ndaemon = true\n[program.web]\ncommand = [\"a\"]\n",
        "site.toml:1: [relaunch]: also needs pid-file (set it in the same table)",
    );
}

#[test]
fn error_keys_that_exclude_each_other() {
    rejects(
        "[program.web]\ncommand = [\"a\"]\nstderr-log = \"err.log\"\nredirect-stderr = true\n",
        "site.toml:3: [program.web] stderr-log: the argument 'stderr-log' cannot be used with 'redirect-stderr'",
    );
}

#[test]
fn error_bad_log_level() {
    rejects(
        "[relaunch]\nlog-level = \"loud\"\n[program.web]\ncommand = [\"a\"]\n",
        "site.toml:2: [relaunch] log-level: \"loud\" is not a log level (expected error, warn, info, debug or trace)",
    );
}

#[test]
fn error_invalid_toml() {
    rejects(
        "[program.web\ncommand = [\"a\"]\n",
        "site.toml:1: invalid TOML: unclosed table, expected `]`",
    );
}

#[test]
fn error_unreadable_file() {
    let dir = TempDir::new("config-file");
    let file = dir.join("missing.toml");
    let out = run(&["check-config", s(&file)], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "relaunch: error: {}: cannot read the configuration file: No such file or directory (os error 2)",
            file.display()
        )
    );
}

#[test]
fn config_excludes_a_command_and_other_flags_and_reads_relaunch_config() {
    let dir = TempDir::new("config-file");
    let file = dir.join("bad.toml");
    fs::write(&file, "[program.web]\nraedy = 1\n").unwrap();
    let out = run(&["--config", s(&file), "--", "srv"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'--config <FILE>' cannot be used with '[COMMAND]...'"),
        "{err}"
    );

    let out = run(&["-c", s(&file), "--listen", ":1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen cannot be used with --config: set it in the configuration file"),
        "{err}"
    );

    // RELAUNCH_CONFIG names the file: its first error is reported, nothing starts.
    let out = run(&[], &[("RELAUNCH_CONFIG", s(&file))]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2: [program.web]: unknown key \"raedy\" (did you mean \"ready\"?)"),
        "{err}"
    );
}

#[test]
fn several_programs_are_refused_until_the_runtime_hosts_them() {
    let dir = TempDir::new("config-file");
    let file = dir.join("two.toml");
    fs::write(
        &file,
        "[program.a]\ncommand = [\"true\"]\n[program.b]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let out = run(&["--config", s(&file)], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 programs: this relaunch runs one program per master so far"),
        "{err}"
    );
}

#[test]
fn one_program_runs_from_a_file() {
    let dir = TempDir::new("config-file");
    let file = dir.join("one.toml");
    let control = dir.join("c.sock");
    fs::write(
        &file,
        format!(
            "[relaunch]\ncontrol = {:?}\n\n[program.hello]\ncommand = [{:?}]\nlisten = [\"http=127.0.0.1:0\"]\nstart-secs = 0.2\n",
            s(&control),
            s(&hello_bin())
        ),
    )
    .unwrap();
    let mut r = Relaunch::start(&["--config", s(&file)]);
    let addr = r.addr("http");
    let pid = wait_for_http(&r, addr, TIMEOUT);
    assert!(pid > 0);
    assert!(
        control.exists(),
        "the control socket from [relaunch] is used"
    );
    r.signal(libc::SIGTERM);
    let status = r.wait_exit(TIMEOUT);
    assert_exit_code(&r, status, 0);
}

#[test]
fn error_a_number_that_is_not_one() {
    rejects(
        "[program.web]\ncommand = [\"a\"]\nbacklog = 1.5\n",
        "site.toml:3: [program.web] backlog: invalid value \"1.5\": invalid digit found in string",
    );
}

#[test]
fn error_a_key_outside_any_table() {
    rejects(
        "name = \"site\"\n[program.web]\ncommand = [\"a\"]\n",
        "site.toml:1: unknown key \"name\" outside any table (it goes under [relaunch])",
    );
}
