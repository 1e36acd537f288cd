//! Process options: what each child gets besides its sockets — working directory, environment,
//! user and groups, umask, niceness, resource limits and its parent-death signal.
//!
//! Everything here runs in the master, before `fork`: values are parsed and validated when the
//! arguments are read, users and groups are looked up once at startup (before any socket is
//! bound, so an unknown user is a usage error that leaves nothing behind), and `--env-file` is
//! read again at every spawn. `sys::spawn` then applies the result in the child with
//! async-signal-safe calls only.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Group, Uid, User};

use crate::sys::spawn::{Credentials, ResourceLimit};

/// The process options of `relaunch`'s command line, validated but not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOptions {
    /// `--chdir`: the child's working directory (default: relaunch's own).
    pub chdir: Option<PathBuf>,
    /// `--env K=V`, in order; they override `--env-file` and relaunch's environment.
    pub env: Vec<EnvVar>,
    /// `--env-file`: read again at every spawn.
    pub env_file: Option<PathBuf>,
    /// `--clear-env`: pass only `PATH` of relaunch's own environment.
    pub clear_env: bool,
    /// `--user`, as given (a name or a numeric uid).
    pub user: Option<String>,
    /// `--group`, as given (a name or a numeric gid).
    pub group: Option<String>,
    /// `--umask`.
    pub umask: Option<Umask>,
    /// `--nice`: the child's niceness, -20 (first) to 19 (last).
    pub nice: Option<i32>,
    /// `--rlimit`, in order.
    pub rlimits: Vec<ResourceLimit>,
    /// `--pdeathsig`: the signal a child gets when relaunch dies; `None` for `--pdeathsig none`.
    pub pdeathsig: Option<Signal>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            chdir: None,
            env: Vec::new(),
            env_file: None,
            clear_env: false,
            user: None,
            group: None,
            umask: None,
            nice: None,
            rlimits: Vec::new(),
            pdeathsig: Some(Signal::SIGTERM),
        }
    }
}

/// One `KEY=VALUE` for the child's environment (`--env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The name.
    pub key: OsString,
    /// The value, verbatim.
    pub value: OsString,
}

/// Checks a variable name: letters, digits and `_`, not starting with a digit, and not one of
/// the variables relaunch sets itself.
fn check_env_key(key: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(key);
    let portable = !key.is_empty()
        && !key[0].is_ascii_digit()
        && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
    if !portable {
        return Err(format!(
            "{shown:?} is not a variable name (expected letters, digits and _, not starting with a digit)"
        ));
    }
    if key.starts_with(b"LISTEN_") || key == b"NOTIFY_SOCKET" {
        return Err(format!(
            "{shown} is set by relaunch itself for each child and cannot be overridden"
        ));
    }
    Ok(())
}

/// Splits `KEY=VALUE` bytes, checking the key.
fn split_env(bytes: &[u8]) -> Result<(OsString, OsString), String> {
    let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
        return Err(format!(
            "{:?} is not KEY=VALUE (no '=')",
            String::from_utf8_lossy(bytes)
        ));
    };
    let (key, value) = (&bytes[..eq], &bytes[eq + 1..]);
    check_env_key(key)?;
    if value.contains(&0) {
        return Err(format!(
            "the value of {} contains a NUL byte",
            String::from_utf8_lossy(key)
        ));
    }
    Ok((
        OsString::from_vec(key.to_vec()),
        OsString::from_vec(value.to_vec()),
    ))
}

impl FromStr for EnvVar {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = split_env(s.as_bytes())?;
        Ok(EnvVar { key, value })
    }
}

/// Reads an `--env-file`: `KEY=VALUE` lines (the value is everything after the first `=`,
/// verbatim: no quotes are removed and nothing is expanded), blank lines, and comment lines
/// whose first non-blank character is `#`. A trailing `\r` is dropped. The error names
/// `file:line`.
pub fn read_env_file(path: &Path) -> Result<Vec<(OsString, OsString)>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("reading --env-file {}: {e}", path.display()))?;
    parse_env_file(path, &bytes)
}

/// Parses the contents of an env file (see [`read_env_file`]); `path` is only for messages.
pub fn parse_env_file(path: &Path, bytes: &[u8]) -> Result<Vec<(OsString, OsString)>, String> {
    let mut vars: Vec<(OsString, OsString)> = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let start = line
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(line.len());
        let rest = &line[start..];
        if rest.is_empty() || rest[0] == b'#' {
            continue;
        }
        let (key, value) =
            split_env(rest).map_err(|e| format!("--env-file {}:{}: {e}", path.display(), i + 1))?;
        match vars.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => vars.push((key, value)),
        }
    }
    Ok(vars)
}

/// A umask, given in octal (`022`, `0027`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl FromStr for Umask {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        match u32::from_str_radix(digits, 8) {
            Ok(v) if v <= 0o777 && !digits.is_empty() && !digits.starts_with('+') => Ok(Umask(v)),
            _ => Err(format!(
                "{s:?} is not a umask (expected octal digits from 000 to 777, like 022 or 0027)"
            )),
        }
    }
}

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Parses a niceness: an integer from -20 to 19.
pub fn parse_nice(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a niceness (expected an integer from -20, first in line, to 19, last)"
        )),
    }
}

/// Parses `--pdeathsig`: a signal by name or number, or `none`.
pub fn parse_pdeathsig(s: &str) -> Result<Option<Signal>, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    crate::parse::parse_signal(s)
        .map(Some)
        .map_err(|_| format!("{s:?} is not a usable signal (expected none, a name like TERM or KILL, or a number like 15)"))
}

/// The resource names `--rlimit` understands, with their `RLIMIT_*` numbers.
pub const RLIMIT_NAMES: [(&str, i32); 16] = [
    ("nofile", libc::RLIMIT_NOFILE as i32),
    ("nproc", libc::RLIMIT_NPROC as i32),
    ("core", libc::RLIMIT_CORE as i32),
    ("memlock", libc::RLIMIT_MEMLOCK as i32),
    ("as", libc::RLIMIT_AS as i32),
    ("fsize", libc::RLIMIT_FSIZE as i32),
    ("stack", libc::RLIMIT_STACK as i32),
    ("cpu", libc::RLIMIT_CPU as i32),
    ("data", libc::RLIMIT_DATA as i32),
    ("rss", libc::RLIMIT_RSS as i32),
    ("locks", libc::RLIMIT_LOCKS as i32),
    ("sigpending", libc::RLIMIT_SIGPENDING as i32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as i32),
    ("nice", libc::RLIMIT_NICE as i32),
    ("rtprio", libc::RLIMIT_RTPRIO as i32),
    ("rttime", libc::RLIMIT_RTTIME as i32),
];

impl FromStr for ResourceLimit {
    type Err = String;

    /// `NAME=N` (soft and hard), `NAME=SOFT:HARD`, where each number may be `unlimited`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names = RLIMIT_NAMES.map(|(n, _)| n).join(", ");
        let bad = || {
            format!(
                "{s:?} is not a resource limit (expected NAME=N, NAME=SOFT:HARD or NAME=unlimited, NAME one of {names})"
            )
        };
        let (name, value) = s.trim().split_once('=').ok_or_else(bad)?;
        let name = name.trim().to_ascii_lowercase();
        let name = name.strip_prefix("rlimit_").unwrap_or(&name);
        let Some(&(name, resource)) = RLIMIT_NAMES.iter().find(|(n, _)| *n == name) else {
            return Err(format!(
                "{s:?}: unknown resource {name:?} (expected one of {names})"
            ));
        };
        let number = |v: &str| -> Result<u64, String> {
            let v = v.trim();
            if v.eq_ignore_ascii_case("unlimited") || v.eq_ignore_ascii_case("infinity") {
                Ok(libc::RLIM_INFINITY)
            } else {
                v.parse::<u64>()
                    .ok()
                    .filter(|&n| n != libc::RLIM_INFINITY)
                    .ok_or_else(bad)
            }
        };
        let (soft, hard) = match value.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => {
                let n = number(value)?;
                (n, n)
            }
        };
        // RLIM_INFINITY is the largest value, so a plain comparison orders "unlimited" last.
        if soft > hard {
            return Err(format!(
                "{s:?}: the soft limit must not exceed the hard limit"
            ));
        }
        Ok(ResourceLimit {
            name,
            resource,
            soft,
            hard,
        })
    }
}

impl fmt::Display for ResourceLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: u64| {
            if v == libc::RLIM_INFINITY {
                "unlimited".to_owned()
            } else {
                v.to_string()
            }
        };
        write!(f, "{}={}:{}", self.name, show(self.soft), show(self.hard))
    }
}

/// Resolves `--user` and `--group` into the credentials a child takes before exec. Looks up
/// the password and group databases; call it once at startup, before binding anything.
///
/// - `--user NAME|UID`: that user's uid, its primary group (unless `--group` is given), and its
///   supplementary groups from the group database (`getgrouplist`). A numeric uid without a
///   password entry needs `--group`, and gets no supplementary groups.
/// - `--group NAME|GID`: the primary group (a numeric gid needs no entry). Alone, without
///   `--user`, the child keeps its uid and has this group as its only group.
///
/// `Ok(None)` when neither is given, or when they describe exactly the credentials relaunch
/// already runs with (nothing to change, and no privilege needed).
pub fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Credentials>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let gid = group.map(lookup_group).transpose()?;
    let creds = match user {
        Some(spec) => {
            let entry = lookup_user(spec)?;
            let (uid, name, primary) = match &entry {
                Some(u) => (u.uid.as_raw(), Some(u.name.clone()), Some(u.gid.as_raw())),
                None => (
                    parse_id(spec).expect("numeric, checked by lookup_user"),
                    None,
                    None,
                ),
            };
            let Some(gid) = gid.or(primary) else {
                return Err(format!(
                    "--user {spec}: uid {uid} has no entry in the password database, so it has no primary group; give --group too"
                ));
            };
            let groups = match &name {
                Some(name) => {
                    let c = CString::new(name.as_bytes())
                        .map_err(|_| format!("--user {spec}: the name contains a NUL byte"))?;
                    let mut list: Vec<u32> = nix::unistd::getgrouplist(&c, Gid::from_raw(gid))
                        .map_err(|e| {
                            format!(
                                "--user {spec}: listing the supplementary groups of {name}: {e}"
                            )
                        })?
                        .into_iter()
                        .map(Gid::as_raw)
                        .collect();
                    list.sort_unstable();
                    list.dedup();
                    list
                }
                None => vec![gid],
            };
            Credentials {
                uid: Some(uid),
                gid,
                groups,
            }
        }
        None => {
            let gid = gid.expect("--group is given when --user is not");
            Credentials {
                uid: None,
                gid,
                groups: vec![gid],
            }
        }
    };
    if already_have(&creds) {
        return Ok(None);
    }
    Ok(Some(creds))
}

/// Whether relaunch already runs with exactly these credentials.
fn already_have(creds: &Credentials) -> bool {
    let uid_same = creds
        .uid
        .is_none_or(|u| Uid::current().as_raw() == u && Uid::effective().as_raw() == u);
    let gid_same = Gid::current().as_raw() == creds.gid && Gid::effective().as_raw() == creds.gid;
    let groups_same = nix::unistd::getgroups().is_ok_and(|g| {
        let mut now: Vec<u32> = g.into_iter().map(Gid::as_raw).collect();
        now.sort_unstable();
        now.dedup();
        let mut want = creds.groups.clone();
        want.sort_unstable();
        want.dedup();
        // The kernel may or may not list the primary group among the supplementary ones.
        now.retain(|&x| x != creds.gid);
        want.retain(|&x| x != creds.gid);
        now == want
    });
    uid_same && gid_same && groups_same
}

fn parse_id(s: &str) -> Option<u32> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

/// A user by name, else by number. `Ok(None)`: a numeric uid without a password entry.
fn lookup_user(spec: &str) -> Result<Option<User>, String> {
    if spec.is_empty() {
        return Err("--user \"\": expected a user name or a numeric uid".into());
    }
    match User::from_name(spec) {
        Ok(Some(u)) => return Ok(Some(u)),
        Ok(None) => {}
        Err(e) => return Err(format!("--user {spec:?}: looking it up: {e}")),
    }
    match parse_id(spec) {
        Some(uid) => User::from_uid(Uid::from_raw(uid))
            .map_err(|e| format!("--user {spec:?}: looking it up: {e}")),
        None => Err(format!(
            "unknown user {spec:?} (no such name in the password database; give an existing user name or a numeric uid)"
        )),
    }
}

/// A group by name, else by number (a numeric gid needs no entry).
fn lookup_group(spec: &str) -> Result<u32, String> {
    if spec.is_empty() {
        return Err("--group \"\": expected a group name or a numeric gid".into());
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => return Ok(g.gid.as_raw()),
        Ok(None) => {}
        Err(e) => return Err(format!("--group {spec:?}: looking it up: {e}")),
    }
    parse_id(spec).ok_or_else(|| {
        format!(
            "unknown group {spec:?} (no such name in the group database; give an existing group name or a numeric gid)"
        )
    })
}

/// Checks `--chdir` at startup: it must be a directory. (Whether the child's user may enter
/// it is checked by the child itself, after dropping privileges.)
pub fn check_chdir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("--chdir {}: not a directory", dir.display())),
        Err(e) => Err(format!("--chdir {}: {e}", dir.display())),
    }
}

/// The environment variables of `--env`, as pairs.
pub fn env_pairs(vars: &[EnvVar]) -> Vec<(OsString, OsString)> {
    vars.iter()
        .map(|v| (v.key.clone(), v.value.clone()))
        .collect()
}

/// `KEY=VALUE` for logs.
pub fn show_pair(key: &OsStr, value: &OsStr) -> String {
    format!(
        "{}={}",
        String::from_utf8_lossy(key.as_bytes()),
        String::from_utf8_lossy(value.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars() {
        let v: EnvVar = "FOO=bar=baz".parse().unwrap();
        assert_eq!(v.key, "FOO");
        assert_eq!(v.value, "bar=baz");
        let v: EnvVar = "_X1=".parse().unwrap();
        assert_eq!(v.value, "");
        assert_eq!(
            "FOO".parse::<EnvVar>().unwrap_err(),
            "\"FOO\" is not KEY=VALUE (no '=')"
        );
        assert_eq!(
            "1X=2".parse::<EnvVar>().unwrap_err(),
            "\"1X\" is not a variable name (expected letters, digits and _, not starting with a digit)"
        );
        assert!("A B=1".parse::<EnvVar>().is_err());
        assert!("=1".parse::<EnvVar>().is_err());
        assert_eq!(
            "LISTEN_FDS=3".parse::<EnvVar>().unwrap_err(),
            "LISTEN_FDS is set by relaunch itself for each child and cannot be overridden"
        );
        assert!("NOTIFY_SOCKET=/x".parse::<EnvVar>().is_err());
    }

    #[test]
    fn env_files() {
        let p = Path::new("/etc/app.env");
        let text =
            b"# comment\n\n  # indented comment\nA=1\nB = 2\r\nC=\"quoted\" # kept\nA=3\nD=\n";
        let vars = parse_env_file(p, text).unwrap_err();
        assert_eq!(
            vars,
            "--env-file /etc/app.env:5: \"B \" is not a variable name (expected letters, digits and _, not starting with a digit)"
        );
        let text =
            b"# comment\n\n  # indented comment\nA=1\n  B=2\r\nC=\"quoted\" # kept\nA=3\nD=\n";
        let vars = parse_env_file(p, text).unwrap();
        let shown: Vec<String> = vars.iter().map(|(k, v)| show_pair(k, v)).collect();
        assert_eq!(shown, ["A=3", "B=2", "C=\"quoted\" # kept", "D="]);
        assert_eq!(
            parse_env_file(p, b"A=1\nnonsense\n").unwrap_err(),
            "--env-file /etc/app.env:2: \"nonsense\" is not KEY=VALUE (no '=')"
        );
        assert_eq!(
            parse_env_file(p, b"LISTEN_PID=1\n").unwrap_err(),
            "--env-file /etc/app.env:1: LISTEN_PID is set by relaunch itself for each child and cannot be overridden"
        );
        let e = read_env_file(Path::new("/nonexistent/relaunch.env")).unwrap_err();
        assert!(
            e.starts_with("reading --env-file /nonexistent/relaunch.env: "),
            "{e}"
        );
    }

    #[test]
    fn umasks() {
        assert_eq!("022".parse::<Umask>().unwrap(), Umask(0o22));
        assert_eq!("0027".parse::<Umask>().unwrap(), Umask(0o27));
        assert_eq!("0".parse::<Umask>().unwrap(), Umask(0));
        assert_eq!("777".parse::<Umask>().unwrap(), Umask(0o777));
        assert_eq!(Umask(0o27).to_string(), "0027");
        for bad in ["", "8", "1000", "-22", "+22", "abc", "0x12"] {
            assert_eq!(
                bad.parse::<Umask>().unwrap_err(),
                format!(
                    "{bad:?} is not a umask (expected octal digits from 000 to 777, like 022 or 0027)"
                )
            );
        }
    }

    #[test]
    fn nice_values() {
        assert_eq!(parse_nice("-20"), Ok(-20));
        assert_eq!(parse_nice("19"), Ok(19));
        assert_eq!(parse_nice("5"), Ok(5));
        for bad in ["20", "-21", "x", ""] {
            assert!(parse_nice(bad).unwrap_err().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn pdeathsig_values() {
        assert_eq!(parse_pdeathsig("none"), Ok(None));
        assert_eq!(parse_pdeathsig("NONE"), Ok(None));
        assert_eq!(parse_pdeathsig("KILL"), Ok(Some(Signal::SIGKILL)));
        assert_eq!(parse_pdeathsig("15"), Ok(Some(Signal::SIGTERM)));
        assert_eq!(
            parse_pdeathsig("soon").unwrap_err(),
            "\"soon\" is not a usable signal (expected none, a name like TERM or KILL, or a number like 15)"
        );
    }

    #[test]
    fn rlimits() {
        let r: ResourceLimit = "nofile=65536".parse().unwrap();
        assert_eq!(r.resource, libc::RLIMIT_NOFILE as i32);
        assert_eq!((r.soft, r.hard), (65536, 65536));
        assert_eq!(r.to_string(), "nofile=65536:65536");
        let r: ResourceLimit = "core=0:unlimited".parse().unwrap();
        assert_eq!((r.soft, r.hard), (0, libc::RLIM_INFINITY));
        assert_eq!(r.to_string(), "core=0:unlimited");
        let r: ResourceLimit = "AS=unlimited".parse().unwrap();
        assert_eq!(r.name, "as");
        let r: ResourceLimit = "RLIMIT_MEMLOCK=1024:2048".parse().unwrap();
        assert_eq!(r.resource, libc::RLIMIT_MEMLOCK as i32);
        assert_eq!(
            "nofile=2:1".parse::<ResourceLimit>().unwrap_err(),
            "\"nofile=2:1\": the soft limit must not exceed the hard limit"
        );
        assert!("nofile=unlimited:5"
            .parse::<ResourceLimit>()
            .unwrap_err()
            .contains("soft limit"));
        let e = "files=10".parse::<ResourceLimit>().unwrap_err();
        assert!(
            e.starts_with("\"files=10\": unknown resource \"files\" (expected one of nofile, nproc, core, memlock, as,"),
            "{e}"
        );
        for bad in ["nofile", "nofile=", "nofile=-1", "nofile=1:2:3", "nofile=x"] {
            let e = bad.parse::<ResourceLimit>().unwrap_err();
            assert!(
                e.starts_with(&format!("{bad:?} is not a resource limit (expected NAME=N")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn credentials_of_root_and_unknown_users() {
        assert_eq!(resolve_credentials(None, None), Ok(None));
        let e = resolve_credentials(Some("no-such-user-relaunch"), None).unwrap_err();
        assert!(e.contains("unknown user \"no-such-user-relaunch\""), "{e}");
        let e = resolve_credentials(None, Some("no-such-group-relaunch")).unwrap_err();
        assert!(
            e.contains("unknown group \"no-such-group-relaunch\""),
            "{e}"
        );
        // Resolving the credentials relaunch already has needs no change.
        let me = Uid::effective();
        if let Ok(Some(u)) = User::from_uid(me) {
            if u.gid == Gid::effective() {
                let same = resolve_credentials(Some(&u.name), None).unwrap();
                // Supplementary groups of the test process may differ from the database's.
                if let Some(c) = same {
                    assert_eq!(c.uid, Some(me.as_raw()));
                    assert_eq!(c.gid, u.gid.as_raw());
                    assert!(c.groups.contains(&u.gid.as_raw()));
                }
            }
        }
        // A numeric uid with no password entry needs a group.
        let e = resolve_credentials(Some("4000000000"), None).unwrap_err();
        assert!(e.contains("give --group too"), "{e}");
        let c = resolve_credentials(Some("4000000000"), Some("4000000001"))
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Credentials {
                uid: Some(4_000_000_000),
                gid: 4_000_000_001,
                groups: vec![4_000_000_001],
            }
        );
    }
}
