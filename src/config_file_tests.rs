//! Unit tests of the configuration file's parser: values reach the same `Config` the command
//! line builds, and the helpers behind the messages.

use std::path::Path;
use std::time::Duration;

use super::*;

fn load_text(text: &str) -> Result<Loaded, ConfigFileError> {
    parse(Path::new("/etc/site.toml"), text)
}

#[test]
fn values_take_the_flags_syntax_and_defaults() {
    let loaded = load_text(
        "[relaunch]\nlog-level = \"debug\"\n\n\
         [program.web]\ncommand = [\"/srv/web\", \"-x\"]\nlisten = [\"http=127.0.0.1:0\"]\n\
         stop-wait-secs = 30\nstart-secs = \"500ms\"\nbackoff-factor = 1.5\n\
         env = { B = \"2\", A = 1 }\nno-jitter = false\nstop-as-group = true\n",
    )
    .unwrap();
    assert_eq!(loaded.log_level, Some(tracing::Level::DEBUG));
    let c = loaded.config;
    assert_eq!(c.name, "site", "the default master name is the file's stem");
    assert!(c.control.default_name);
    assert_eq!(c.programs.len(), 1);
    let p = &c.programs[0];
    assert_eq!(p.name, "web");
    assert_eq!(p.command.program, "/srv/web");
    assert_eq!(p.command.args, ["-x"]);
    assert_eq!(p.listen.len(), 1);
    assert_eq!(p.settings.stop_wait, Duration::from_secs(30));
    assert_eq!(p.settings.start_secs, Duration::from_millis(500));
    assert_eq!(p.settings.backoff_factor, 1.5);
    assert!(p.settings.jitter, "false leaves a switch off");
    assert!(
        p.settings.kill_as_group,
        "the command line's implications hold"
    );
    let env: Vec<String> = p
        .process
        .env
        .iter()
        .map(|v| crate::process::show_pair(&v.key, &v.value))
        .collect();
    assert_eq!(env, ["B=2", "A=1"], "a table's entries in file order");
    assert_eq!((p.priority, p.autostart), (DEFAULT_PRIORITY, true));
}

#[test]
fn programs_are_in_priority_order_then_file_order() {
    let c = load_text(
        "[relaunch]\nname = \"x\"\n\
         [program.c]\ncommand = [\"c\"]\n\
         [program.b]\ncommand = [\"b\"]\npriority = 5\nautostart = false\n\
         [program.a]\ncommand = [\"a\"]\n",
    )
    .unwrap()
    .config;
    let names: Vec<&str> = c.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "c", "a"]);
    assert!(!c.programs[0].autostart);
    assert_eq!(c.name, "x");
    assert!(!c.control.default_name, "a name given is not replaced");
}

#[test]
fn many_valued_keys_take_one_string_or_an_array() {
    let c = load_text("[program.web]\ncommand = [\"a\"]\nlisten = \":0\"\nexit-codes = \"0,2\"\n")
        .unwrap()
        .config;
    assert_eq!(c.programs[0].listen.len(), 1);
}

#[test]
fn errors_carry_file_line_and_key() {
    let e = load_text("[program.web]\ncommand = [\"a\"]\nready = 7\n").unwrap_err();
    assert_eq!(e.file, Path::new("/etc/site.toml"));
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("[program.web] ready"));
    assert!(e.message.contains("\"7\" is not a readiness mode"), "{e}");
}

#[test]
fn the_same_address_is_found_but_port_0_is_not_shared() {
    let two = |a: &str, b: &str| {
        load_text(&format!(
            "[program.a]\ncommand = [\"a\"]\nlisten = [{a:?}]\n[program.b]\ncommand = [\"b\"]\nlisten = [{b:?}]\n"
        ))
    };
    assert!(two(":0", ":0").is_ok());
    assert!(two("127.0.0.1:80", "127.0.0.2:80").is_ok());
    assert!(
        two("udp://:80", ":80").is_ok(),
        "TCP and UDP do not collide"
    );
    assert!(two(":80", "[::1]:80").is_err());
    assert!(two("unix:/run/a.sock", "/run/a.sock").is_err());
}

#[test]
fn suggestions_use_edit_distance() {
    assert_eq!(edit_distance("raedy", "ready"), 2);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(
        did_you_mean(
            "stop-wait-sec",
            ["stop-wait-secs", "start-secs"].into_iter()
        ),
        " (did you mean \"stop-wait-secs\"?)"
    );
    assert_eq!(did_you_mean("colour", ["ready", "listen"].into_iter()), "");
}

#[test]
fn clap_messages_name_keys_not_flags() {
    assert_eq!(
        flags_to_keys("the argument '--stderr-log <FILE>' cannot be used with '--redirect-stderr'"),
        "the argument 'stderr-log' cannot be used with 'redirect-stderr'"
    );
}

#[test]
fn every_program_flag_is_a_key() {
    let keys = Keys::new();
    for k in [
        "listen",
        "ready",
        "stop-wait-secs",
        "env",
        "watch",
        "rlimit",
        "command",
    ] {
        assert!(Keys::shape(&keys.program, k).is_some(), "{k}");
    }
    for k in [
        "name",
        "pid-file",
        "daemon",
        "metrics",
        "control",
        "no-control",
        "log-level",
    ] {
        assert!(Keys::shape(&keys.master, k).is_some(), "{k}");
    }
    assert_eq!(Keys::shape(&keys.program, "listen"), Some(Shape::Many));
    assert_eq!(Keys::shape(&keys.program, "watch"), Some(Shape::Bool));
    assert!(Keys::shape(&keys.program, "verbose").is_none());
}

#[test]
fn worker_keys_are_program_keys() {
    let c = load_text(
        "[program.web]\ncommand = [\"/srv/web\"]\nworkers = 8\n\
         reload-strategy = \"rolling\"\nmax-surge = 2\n",
    )
    .unwrap()
    .config;
    let st = &c.programs[0].settings;
    assert_eq!((st.workers, st.max_surge), (8, 2));
    assert_eq!(
        st.reload_strategy,
        crate::supervisor::ReloadStrategy::Rolling
    );
    let e = load_text("[program.web]\ncommand = [\"/srv/web\"]\nworkers = 0\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("1 to 1024"), "{}", e.message);
}
