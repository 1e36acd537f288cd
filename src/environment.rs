//! The environment a child starts with, built in this one place.
//!
//! In order, a later entry replacing an earlier one of the same name (so the child's `getenv`
//! finds what relaunch meant, once):
//! 1. relaunch's own environment, less what was meant for relaunch itself (`LISTEN_*`,
//!    `NOTIFY_SOCKET`, `RELAUNCH_*`); only its `PATH` with `--clear-env`;
//! 2. `--env-file`, read again at every spawn (so a reload picks up its new contents);
//! 3. `--env`, in order;
//! 4. what relaunch tells the child: `RELAUNCH_WORKER` and `RELAUNCH_GENERATION`, then
//!    `NOTIFY_SOCKET` (with `--ready notify`), then `LISTEN_FDS` and `LISTEN_FDNAMES` (when it
//!    has sockets).
//!
//! Only `LISTEN_PID` is missing: it is the child's own pid, which nobody knows before `fork`,
//! so `sys::spawn` reserves a slot for it that the child fills in (see there).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::process::{env_pairs, read_env_file, ProcessOptions};
use crate::sys::spawn;

/// A child's environment, without `LISTEN_PID`. See the module docs for the order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Environment {
    vars: Vec<(OsString, OsString)>,
}

impl Environment {
    /// Steps 1 to 3: what every child of a program with these options starts from (the
    /// env file is read now). The error names the file and what is wrong in it.
    pub(crate) fn of_program(process: &ProcessOptions) -> Result<Environment, String> {
        let mut env = Environment::inherited(process.clear_env);
        if let Some(path) = &process.env_file {
            env.extend(read_env_file(path)?);
        }
        env.extend(env_pairs(&process.env));
        Ok(env)
    }

    /// Step 1: relaunch's own environment less the variables meant for relaunch itself (socket
    /// activation, notification, its own configuration); only `PATH` of it with `clear_env`.
    pub(crate) fn inherited(clear_env: bool) -> Environment {
        let vars = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.as_bytes();
                match clear_env {
                    true => k == b"PATH",
                    false => {
                        !k.starts_with(b"LISTEN_")
                            && k != b"NOTIFY_SOCKET"
                            && !k.starts_with(b"RELAUNCH_")
                    }
                }
            })
            .collect();
        Environment { vars }
    }

    /// Sets `key`, replacing an earlier value (in its place) or adding it at the end.
    pub(crate) fn set(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        let (key, value) = (key.into(), value.into());
        match self.vars.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((key, value)),
        }
    }

    /// Sets each pair in order.
    pub(crate) fn extend(&mut self, pairs: impl IntoIterator<Item = (OsString, OsString)>) {
        for (k, v) in pairs {
            self.set(k, v);
        }
    }

    /// Step 4 for one spawn: which worker of which generation, where to send readiness, and
    /// the names of the sockets at fds 3.. (`LISTEN_FDS` and `LISTEN_FDNAMES` only when there
    /// are sockets, as systemd does).
    pub(crate) fn for_spawn(
        &mut self,
        generation: u64,
        worker: usize,
        notify_socket: Option<OsString>,
        socket_names: &[&str],
    ) {
        self.set("RELAUNCH_WORKER", worker.to_string());
        self.set("RELAUNCH_GENERATION", generation.to_string());
        if let Some(path) = notify_socket {
            self.set("NOTIFY_SOCKET", path);
        }
        if !socket_names.is_empty() {
            self.set("LISTEN_FDS", socket_names.len().to_string());
            self.set("LISTEN_FDNAMES", socket_names.join(":"));
        }
    }

    /// The `PATH` the child's program is searched in, as `execvpe` searches the environment
    /// it is given: the child's `PATH`, else [`spawn::DEFAULT_PATH`].
    pub(crate) fn search_path(&self) -> OsString {
        spawn::search_path(&self.vars)
    }

    /// The variables, one per name, in order.
    pub(crate) fn into_vars(self) -> Vec<(OsString, OsString)> {
        self.vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::EnvVar;

    fn names(env: &Environment) -> Vec<String> {
        env.vars
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn later_sources_replace_earlier_ones_in_place_and_each_name_appears_once() {
        let dir = std::env::temp_dir().join(format!("relaunch-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("env");
        std::fs::write(&file, "A=file\nB=file\n").unwrap();
        let process = ProcessOptions {
            env_file: Some(file),
            env: vec![
                "B=flag".parse::<EnvVar>().unwrap(),
                "C=flag".parse().unwrap(),
            ],
            clear_env: true,
            ..ProcessOptions::default()
        };
        let mut env = Environment::of_program(&process).unwrap();
        env.set("A", "again");
        env.for_spawn(4, 2, Some("/run/n.sock".into()), &["http", "admin"]);
        let vars = env.clone().into_vars();
        let mut expected = Vec::new();
        if let Some(path) = std::env::var_os("PATH") {
            expected.push(("PATH".into(), path));
        }
        for (k, v) in [
            ("A", "again"),
            ("B", "flag"),
            ("C", "flag"),
            ("RELAUNCH_WORKER", "2"),
            ("RELAUNCH_GENERATION", "4"),
            ("NOTIFY_SOCKET", "/run/n.sock"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "http:admin"),
        ] {
            expected.push((OsString::from(k), OsString::from(v)));
        }
        assert_eq!(vars, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_master_s_own_activation_and_configuration_variables_are_not_inherited() {
        let env = Environment::inherited(false);
        for name in names(&env) {
            assert!(
                !name.starts_with("LISTEN_")
                    && name != "NOTIFY_SOCKET"
                    && !name.starts_with("RELAUNCH_"),
                "{name} was inherited"
            );
        }
        let cleared = Environment::inherited(true);
        assert!(names(&cleared).iter().all(|n| n == "PATH"));
    }

    #[test]
    fn no_sockets_means_no_listen_variables_and_a_bad_env_file_is_named() {
        let mut env = Environment::default();
        env.for_spawn(1, 0, None, &[]);
        assert_eq!(names(&env), ["RELAUNCH_WORKER", "RELAUNCH_GENERATION"]);
        assert_eq!(env.search_path(), spawn::DEFAULT_PATH);
        env.set("PATH", "/only");
        assert_eq!(env.search_path(), "/only");
        let process = ProcessOptions {
            env_file: Some("/nonexistent/relaunch.env".into()),
            ..ProcessOptions::default()
        };
        let e = Environment::of_program(&process).unwrap_err();
        assert!(e.contains("/nonexistent/relaunch.env"), "{e}");
    }
}
