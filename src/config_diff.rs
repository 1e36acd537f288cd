//! What an edited configuration file changes: which programs are added, removed, changed or
//! unchanged, which master keys changed (they cannot change while relaunch runs), and which of
//! a program's sockets are kept from the running ones rather than bound anew. Pure: the
//! runtime applies the difference (`runtime/apply.rs`).
//!
//! Programs are matched by name. A program is *changed* when any of its keys differs
//! ([`ProgramConfig`]'s equality: command, arguments, environment, `listen`, `workers`,
//! timeouts, ...); a rename is a removal and an addition.
//!
//! A socket is kept, the same open socket, when its address is written the same: first among
//! the program's own sockets (also with port 0), then among the other programs' (an address
//! moving from one program to another; port 0 never matches there, each such spec is its own
//! socket). Its name and its place among the program's fds may change. Every other address is
//! bound anew.

use crate::config::{Config, ProgramConfig};
use crate::spec::{ListenAddr, ListenSpec};

/// How the programs of the running configuration and of the edited file compare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Programs only in the new file: their indices there.
    pub(crate) added: Vec<usize>,
    /// Programs only in the running configuration: their indices there.
    pub(crate) removed: Vec<usize>,
    /// Programs in both whose settings differ: (running index, new index).
    pub(crate) changed: Vec<(usize, usize)>,
    /// Programs in both with the same settings: (running index, new index).
    pub(crate) unchanged: Vec<(usize, usize)>,
}

impl Diff {
    /// Whether the file changes no program.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares the running programs with those of the edited file, by name.
pub(crate) fn programs(old: &[&ProgramConfig], new: &[ProgramConfig]) -> Diff {
    let mut diff = Diff::default();
    for (j, n) in new.iter().enumerate() {
        match old.iter().position(|o| o.name == n.name) {
            None => diff.added.push(j),
            Some(i) if *old[i] == *n => diff.unchanged.push((i, j)),
            Some(i) => diff.changed.push((i, j)),
        }
    }
    for (i, o) in old.iter().enumerate() {
        if !new.iter().any(|n| n.name == o.name) {
            diff.removed.push(i);
        }
    }
    diff
}

/// The `[relaunch]` keys whose value differs: they are read at startup only (the control
/// socket, the metrics endpoint and the pid file are open; the name is in the socket's path).
pub(crate) fn master_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.name != new.name {
        keys.push("name");
    }
    if old.control.socket != new.control.socket {
        keys.push(match new.control.socket {
            None => "no-control",
            Some(_) => "control",
        });
    }
    if old.control.metrics != new.control.metrics {
        keys.push("metrics");
    }
    if old.pid_file != new.pid_file {
        keys.push("pid-file");
    }
    if old.daemon != new.daemon {
        keys.push("daemon");
    }
    keys
}

/// Where one socket of an edited program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The running socket of `program` (an index into the running programs) opened for its
    /// spec number `spec`: kept.
    Keep {
        /// The running program.
        program: usize,
        /// Its `listen` entry.
        spec: usize,
    },
    /// A new address: bound before the program's new generation starts.
    Bind,
}

/// Where each of `specs` (the `listen` of program `name` in the edited file) comes from,
/// given the running programs' names and `listen` lists. `taken` holds the running sockets
/// already given to another program of the edit, and is updated.
pub(crate) fn sockets(
    name: &str,
    specs: &[ListenSpec],
    running: &[(&str, &[ListenSpec])],
    taken: &mut Vec<(usize, usize)>,
) -> Vec<Source> {
    let mut sources = Vec::with_capacity(specs.len());
    for spec in specs {
        let own = running.iter().position(|(n, _)| *n == name);
        let mut found = None;
        // Its own socket first (also port 0), then another program's (a fixed address).
        let candidates = own.into_iter().map(|p| (p, true)).chain(
            (0..running.len())
                .filter(|p| Some(*p) != own)
                .map(|p| (p, false)),
        );
        for (p, mine) in candidates {
            let hit = running[p].1.iter().enumerate().position(|(s, old)| {
                !taken.contains(&(p, s))
                    && old.addr == spec.addr
                    && (mine || !is_port_zero(&spec.addr))
            });
            if let Some(s) = hit {
                found = Some((p, s));
                break;
            }
        }
        match found {
            Some((program, spec)) => {
                taken.push((program, spec));
                sources.push(Source::Keep { program, spec });
            }
            None => sources.push(Source::Bind),
        }
    }
    sources
}

/// Whether the address asks the kernel for a port (each such spec is a socket of its own).
fn is_port_zero(addr: &ListenAddr) -> bool {
    matches!(addr, ListenAddr::Inet { port: 0, .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use clap::Parser;

    fn program(name: &str, listen: &[&str], args: &[&str]) -> ProgramConfig {
        let mut argv = vec!["relaunch".to_owned(), "--name".into(), name.into()];
        for l in listen {
            argv.push(format!("--listen={l}"));
        }
        argv.push("--".into());
        argv.push("/bin/server".into());
        argv.extend(args.iter().map(|a| a.to_string()));
        let args = Args::try_parse_from(argv).unwrap().validate().unwrap();
        args.into_config().programs.remove(0)
    }

    fn spec(s: &str) -> ListenSpec {
        s.parse().unwrap()
    }

    #[test]
    fn programs_are_matched_by_name_and_compared_by_every_key() {
        let web = program("web", &["127.0.0.1:8080"], &[]);
        let jobs = program("jobs", &[], &["--queue", "a"]);
        let old_api = program("api", &["127.0.0.1:9000"], &[]);
        let old = [&web, &jobs, &old_api];
        let mut jobs2 = jobs.clone();
        jobs2.command.args.push("--fast".into());
        let mut web2 = web.clone();
        web2.settings.workers = 4;
        let admin = program("admin", &["127.0.0.1:9001"], &[]);
        let new = [web2, jobs.clone(), admin];
        let diff = programs(&old, &new);
        assert_eq!(
            diff,
            Diff {
                added: vec![2],
                removed: vec![2],
                changed: vec![(0, 0)],
                unchanged: vec![(1, 1)],
            }
        );
        assert!(!diff.is_empty());
        let same = programs(&old, &[web.clone(), jobs2.clone(), old_api.clone()]);
        assert_eq!(same.changed, vec![(1, 1)], "arguments are a change");
        let same = programs(&old, &[web.clone(), jobs.clone(), old_api.clone()]);
        assert!(same.is_empty());
        assert_eq!(same.unchanged.len(), 3);
    }

    #[test]
    fn a_changed_environment_or_address_is_a_change() {
        let web = program("web", &["127.0.0.1:8080"], &[]);
        let mut env = web.clone();
        env.process.env.push(crate::process::EnvVar {
            key: "MODE".into(),
            value: "fast".into(),
        });
        assert_eq!(programs(&[&web], &[env]).changed, vec![(0, 0)]);
        let moved = program("web", &["127.0.0.1:8081"], &[]);
        assert_eq!(programs(&[&web], &[moved]).changed, vec![(0, 0)]);
    }

    #[test]
    fn unchanged_addresses_keep_their_socket_wherever_they_go() {
        let web = [spec("http=127.0.0.1:8080"), spec("127.0.0.1:0")];
        let api = [spec("127.0.0.1:9000"), spec("127.0.0.1:0")];
        let running: [(&str, &[ListenSpec]); 2] = [("web", &web), ("api", &api)];
        let mut taken = Vec::new();
        // web: its port-0 socket is kept, the fixed one renamed and moved to fd 4; a new one.
        let new_web = [
            spec("127.0.0.1:0"),
            spec("public=127.0.0.1:8080"),
            spec("127.0.0.1:8082"),
        ];
        assert_eq!(
            sockets("web", &new_web, &running, &mut taken),
            [
                Source::Keep {
                    program: 0,
                    spec: 1
                },
                Source::Keep {
                    program: 0,
                    spec: 0
                },
                Source::Bind
            ]
        );
        // admin takes api's fixed address (api was removed); port 0 never moves between
        // programs.
        let admin = [spec("127.0.0.1:9000"), spec("127.0.0.1:0")];
        assert_eq!(
            sockets("admin", &admin, &running, &mut taken),
            [
                Source::Keep {
                    program: 1,
                    spec: 0
                },
                Source::Bind
            ]
        );
        // A socket is given once.
        let again = [spec("127.0.0.1:9000")];
        assert_eq!(
            sockets("other", &again, &running, &mut taken),
            [Source::Bind]
        );
    }

    #[test]
    fn master_keys_that_changed_are_named() {
        let a = Config {
            pid_file: None,
            daemon: false,
            name: "site".into(),
            control: crate::control::ControlConfig {
                socket: Some("/run/a.sock".into()),
                default_path: false,
                default_name: false,
                metrics: None,
            },
            programs: Vec::new(),
            source: None,
        };
        assert!(master_keys(&a, &a.clone()).is_empty());
        let mut b = a.clone();
        b.name = "other".into();
        b.pid_file = Some("/run/x.pid".into());
        b.control.socket = None;
        assert_eq!(master_keys(&a, &b), ["name", "no-control", "pid-file"]);
    }
}
