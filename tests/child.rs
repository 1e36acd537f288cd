//! The child side, `relaunch::child`: real servers (`examples/child_kinds.rs`,
//! `examples/hello.rs`) run under the relaunch binary take their sockets by name and kind, lose
//! their `LISTEN_*` variables, and say they are ready through `NOTIFY_SOCKET` or an fd.

mod common;

use common::*;

const T: std::time::Duration = TIMEOUT;

fn child_kinds() -> std::path::PathBuf {
    example_bin("child_kinds")
}

#[test]
fn every_kind_is_taken_by_name_the_variables_go_and_ready_reaches_relaunch() {
    let dir = TempDir::new("child-kinds");
    let admin = format!("admin=unix:{}", s(&dir.join("admin.sock")));
    let logs = format!("logs=unixgram:{}", s(&dir.join("logs.sock")));
    let bin = child_kinds();
    let r = Relaunch::start(&[
        "--control",
        s(&dir.join("control.sock")),
        "--ready",
        "notify",
        "--listen",
        "web=127.0.0.1:0",
        "--listen",
        "dns=udp://127.0.0.1:0",
        "--listen",
        &admin,
        "--listen",
        &logs,
        "--",
        s(&bin),
        // Not in the order they were passed: by name.
        "unixgram:logs",
        "udp:dns",
        "unix:admin",
        "tcp:web",
    ]);
    // With --ready notify, generation 1 is up only after READY=1 from the child.
    r.wait_running(1);
    r.wait_until(T, "the child's report on stdout", || {
        r.stdout().contains("ready sent=true")
    });
    let out = r.stdout();
    let web = r.addr("web");
    assert!(out.contains(&format!("socket web tcp Ok({web})")), "{out}");
    assert!(out.contains("socket dns udp Ok(127.0.0.1:"), "{out}");
    assert!(out.contains("admin.sock"), "{out}");
    assert!(out.contains("logs.sock"), "{out}");
    // Taken while single-threaded: the variables are gone from its environment.
    assert!(out.contains("env LISTEN_PID= removed=true"), "{out}");
}

#[test]
fn ready_on_an_fd_counts() {
    let dir = TempDir::new("child-ready-fd");
    let bin = child_kinds();
    let r = Relaunch::start(&[
        "--control",
        s(&dir.join("control.sock")),
        "--ready",
        "fd:5",
        "--listen",
        "web=127.0.0.1:0",
        "--",
        s(&bin),
        "tcp:web",
        "--ready-fd",
        "5",
    ]);
    r.wait_running(1);
    r.wait_until(T, "the child's report on stdout", || {
        r.stdout().contains("ready sent=true")
    });
}

#[test]
fn a_socket_of_the_wrong_kind_is_an_error_naming_it() {
    let dir = TempDir::new("child-wrong-kind");
    let hello = hello_bin();
    let r = Relaunch::start(&[
        "--control",
        s(&dir.join("control.sock")),
        "--listen",
        "web=127.0.0.1:0",
        "--listen",
        "dns=udp://127.0.0.1:0",
        "--",
        s(&hello),
        "--socket",
        "dns",
    ]);
    // The child's own message is what is checked.
    r.wait_for_log(
        "hello: inherited socket \"dns\" (fd 4) is a UDP socket, not a TCP listener",
        T,
    );
}

#[test]
fn a_missing_socket_is_an_error_naming_it_and_what_there_is() {
    let dir = TempDir::new("child-missing");
    let bin = child_kinds();
    let r = Relaunch::start(&[
        "--control",
        s(&dir.join("control.sock")),
        "--listen",
        "web=127.0.0.1:0",
        "--",
        s(&bin),
        "udp:dns",
    ]);
    // The child's own message is what is checked.
    r.wait_for_log(
        "child_kinds: no inherited socket named \"dns\" (inherited: \"web\")",
        T,
    );
}

#[test]
fn hello_serves_the_named_socket_only() {
    let dir = TempDir::new("child-hello-socket");
    let hello = hello_bin();
    let r = Relaunch::start(&[
        "--control",
        s(&dir.join("control.sock")),
        "--ready",
        "notify",
        "--listen",
        "web=127.0.0.1:0",
        "--listen",
        "admin=127.0.0.1:0",
        "--",
        s(&hello),
        "--socket",
        "admin",
    ]);
    let admin = r.addr("admin");
    wait_for_http(&r, admin, T);
    let (code, body) = http_get(admin, T).expect("GET on admin");
    assert_eq!(code, 200);
    assert!(body.contains("fdnames=web:admin"), "{body}");
    r.wait_running(1);
}
