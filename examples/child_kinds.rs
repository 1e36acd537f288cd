//! `child_kinds`: takes the inherited sockets it is asked for, by name and kind, through
//! [`relaunch::child`], prints one line per socket, says it is ready, and waits to be stopped.
//! The integration tests of the child side (`tests/child.rs`) run it under relaunch.
//!
//! ```text
//! relaunch --listen web=127.0.0.1:8080 --listen dns=udp:127.0.0.1:5353 --ready notify \
//!     -- target/debug/examples/child_kinds tcp:web udp:dns
//! ```
//!
//! Arguments: `tcp:NAME`, `udp:NAME`, `unix:NAME` (a unix stream listener), `unixgram:NAME`,
//! and `--ready-fd N` (say ready on fd N, for `relaunch --ready fd:N`, instead of
//! `NOTIFY_SOCKET`). Prints `socket NAME KIND ADDR` per socket, then
//! `env LISTEN_PID=... removed=true|false`, then `ready`. A socket that is missing or of
//! another kind ends it with exit code 2 and the error on stderr.

use std::process::exit;

use relaunch::child::{self, Sockets};

fn main() {
    // First thing, while the process has one thread: the LISTEN_* variables go too.
    let mut sockets = Sockets::take().unwrap_or_else(|e| fail(&e.to_string()));
    let mut ready_fd = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--ready-fd" {
            let n = args.next().and_then(|v| v.parse().ok());
            ready_fd = Some(n.unwrap_or_else(|| fail("--ready-fd needs a number")));
            continue;
        }
        let Some((kind, name)) = arg.split_once(':') else {
            fail(&format!("{arg:?} is not KIND:NAME"));
        };
        let addr = match kind {
            "tcp" => sockets
                .tcp_listener(name)
                .map(|s| format!("{:?}", s.local_addr())),
            "udp" => sockets
                .udp_socket(name)
                .map(|s| format!("{:?}", s.local_addr())),
            "unix" => sockets
                .unix_listener(name)
                .map(|s| format!("{:?}", s.local_addr())),
            "unixgram" => sockets
                .unix_datagram(name)
                .map(|s| format!("{:?}", s.local_addr())),
            _ => fail(&format!("unknown kind {kind:?} (tcp, udp, unix, unixgram)")),
        }
        .unwrap_or_else(|e| fail(&e.to_string()));
        println!("socket {name} {kind} {addr}");
    }
    println!(
        "env LISTEN_PID={} removed={}",
        std::env::var("LISTEN_PID").unwrap_or_default(),
        sockets.env_removed()
    );
    let said = match ready_fd {
        Some(fd) => child::ready_fd(fd).map(|()| true),
        None => child::ready(),
    };
    match said {
        Ok(sent) => println!("ready sent={sent}"),
        Err(e) => fail(&e.to_string()),
    }
    // Until relaunch stops it: SIGTERM's default action ends the process.
    loop {
        std::thread::park();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("child_kinds: {message}");
    exit(2);
}
