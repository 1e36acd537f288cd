//! Waiting on relaunch's state through its control socket rather than its log text: a
//! `status` request (the record `relaunch status --json` prints, the machine-readable
//! contract) polled until a predicate holds, and accessors for the fields tests wait on.
//!
//! The log is for people and may be reworded; the status record is an interface. Log waits
//! remain for what status cannot show (a message's wording, a transient event) and say why.

use super::*;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};

/// How many of relaunch's last stderr lines a failed status wait prints.
const LOG_TAIL: usize = 80;

/// Asks the master listening on `ctl` for its status record: one `status` request, one answer
/// line, every step bounded by `timeout`. The error says what went wrong (not listening yet,
/// refused, a malformed answer).
pub fn query_status(ctl: &Path, timeout: Duration) -> Result<Value, String> {
    query_status_of(ctl, None, timeout)
}

/// Like [`query_status`], for one program of a master with several (`"program"` in the
/// request): that program's record.
pub fn query_status_of(
    ctl: &Path,
    program: Option<&str>,
    timeout: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let addr = SockAddr::unix(ctl).map_err(|e| format!("bad control path {ctl:?}: {e}"))?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| format!("cannot make a unix socket: {e}"))?;
    // A non-blocking connect: a master whose backlog is full (or that is stopped) must not
    // hang the test.
    socket
        .connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {}: {e}", ctl.display()))?;
    socket
        .set_nonblocking(false)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let mut stream = UnixStream::from(OwnedFd::from(socket));
    let mut request = serde_json::json!({"v": 1, "cmd": "status"});
    if let Some(name) = program {
        request["program"] = name.into();
    }
    stream
        .set_write_timeout(Some(remaining(deadline).max(Duration::from_millis(1))))
        .map_err(|e| format!("set_write_timeout: {e}"))?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("cannot send the status request: {e}"))?;
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream);
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(format!("no answer to status within {timeout:?}"));
        }
        reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with(b"\n") => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the status answer: {e}")),
        }
    }
    let answer: Value = serde_json::from_slice(&line).map_err(|e| {
        format!(
            "the status answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&line)
        )
    })?;
    if answer["ok"] != true {
        return Err(format!("status refused: {answer}"));
    }
    match answer.get("status") {
        Some(record) if record.is_object() => Ok(record.clone()),
        _ => Err(format!("a status answer without a record: {answer}")),
    }
}

impl Relaunch {
    /// The status record now (see [`query_status`]); fails the test if relaunch does not
    /// answer.
    #[track_caller]
    pub fn status_record(&self) -> Value {
        let ctl = self.control_path();
        query_status(&ctl, TIMEOUT)
            .unwrap_or_else(|e| self.fail(&format!("status over {}: {e}", ctl.display())))
    }

    /// Polls the status record until `pred` holds and returns that record. After [`TIMEOUT`]
    /// it fails naming `what`, with the last record seen (or why none came) and the tail of
    /// relaunch's log.
    #[track_caller]
    pub fn wait_status(&self, what: &str, pred: impl FnMut(&Value) -> bool) -> Value {
        self.wait_status_of(None, TIMEOUT, what, pred)
    }

    /// [`Self::wait_status`] with another deadline than [`TIMEOUT`].
    #[track_caller]
    pub fn wait_status_within(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        self.wait_status_of(None, timeout, what, pred)
    }

    /// [`Self::wait_status`] on one program's record (`program`), for a master with several.
    #[track_caller]
    pub fn wait_program_status(
        &self,
        program: &str,
        what: &str,
        pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        self.wait_status_of(Some(program), TIMEOUT, what, pred)
    }

    #[track_caller]
    fn wait_status_of(
        &self,
        program: Option<&str>,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let ctl = self.control_path();
        let deadline = Instant::now() + timeout;
        let mut last: Result<Value, String> = Err("no status request answered yet".into());
        loop {
            let left = remaining(deadline);
            last = match query_status_of(&ctl, program, left.max(Duration::from_millis(100))) {
                Ok(v) if pred(&v) => return v,
                Ok(v) => Ok(v),
                // Keep the last record seen: a later failure (relaunch gone) is in the log.
                Err(e) => match last {
                    Ok(v) => Ok(v),
                    Err(_) => Err(e),
                },
            };
            // relaunch and everything sharing its stderr are gone: nothing will change.
            let gone = self.stderr_closed();
            if gone || Instant::now() >= deadline {
                let seen = match &last {
                    Ok(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
                    Err(e) => format!("(no record: {e})"),
                };
                let program = program.map_or(String::new(), |p| format!(" of program {p}"));
                panic!(
                    "{} waiting for status{program}: {what}\n----- last status record -----\n\
                     {seen}\n----- relaunch (pid {}) stderr, last {LOG_TAIL} lines -----\n{}-----",
                    if gone {
                        "relaunch ended".to_owned()
                    } else {
                        format!("timed out after {timeout:?}")
                    },
                    self.pid(),
                    self.log_tail(LOG_TAIL)
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until the program's state is `state` (`RUNNING`, `BACKOFF`, `EXITED`, `FATAL`,
    /// ...); returns that record.
    #[track_caller]
    pub fn wait_state(&self, state: &str) -> Value {
        self.wait_status(&format!("state {state}"), |v| v["state"] == state)
    }

    /// Waits until generation `generation` is the current one and up, and the program is
    /// RUNNING; returns that record.
    #[track_caller]
    pub fn wait_running(&self, generation: u64) -> Value {
        self.wait_status(
            &format!("state RUNNING with generation {generation} current and up"),
            |v| is_running(v, generation),
        )
    }

    /// Waits until the reload attempt that started generation `generation` has ended; returns
    /// its record (`result`, `failure`, `reason`, ...).
    #[track_caller]
    pub fn wait_reload_ended(&self, generation: u64) -> Value {
        let v = self.wait_status(
            &format!("the reload attempt of generation {generation} to end"),
            |v| reload_record(v, generation).is_some(),
        );
        reload_record(&v, generation).expect("found")
    }

    /// Waits until the reload attempt of generation `generation` succeeded (failing at once
    /// if it failed); returns its record (`pid`, `trigger`, ...).
    #[track_caller]
    pub fn wait_reload_ok(&self, generation: u64) -> Value {
        let record = self.wait_reload_ended(generation);
        if record["result"] != "ok" {
            self.fail(&format!(
                "the reload of generation {generation} failed: {record:#}"
            ));
        }
        record
    }

    /// Waits until the reload attempt of generation `generation` failed (failing at once if
    /// it succeeded); returns its record.
    #[track_caller]
    pub fn wait_reload_failed(&self, generation: u64) -> Value {
        let record = self.wait_reload_ended(generation);
        if record["result"] != "failed" {
            self.fail(&format!(
                "the reload of generation {generation} should have failed: {record:#}"
            ));
        }
        record
    }
}

/// True if the program is RUNNING with generation `generation` current and up.
pub fn is_running(v: &Value, generation: u64) -> bool {
    v["state"] == "RUNNING"
        && current(v).is_some_and(|g| g["generation"] == generation && g["state"] == "RUNNING")
}

/// The record of the current generation, if there is one.
pub fn current(v: &Value) -> Option<&Value> {
    generations(v).find(|g| g["role"] == "current")
}

/// The current generation's number.
pub fn current_generation(v: &Value) -> Option<u64> {
    current(v)?["generation"].as_u64()
}

/// The current generation's pid.
pub fn current_pid(v: &Value) -> Option<i32> {
    current(v)?["pid"].as_i64().map(|p| p as i32)
}

/// Every live generation's record.
pub fn generations(v: &Value) -> impl Iterator<Item = &Value> {
    v["generations"].as_array().into_iter().flatten()
}

/// The record of live generation `generation`.
pub fn generation(v: &Value, generation: u64) -> Option<&Value> {
    generations(v).find(|g| g["generation"] == generation)
}

/// The history entries of kind `event` (`exit`, `restart`, `reload`, `spawn_failed`).
pub fn history<'a>(v: &'a Value, event: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |e| e["event"] == event)
}

/// The outcome of the reload attempt that started generation `generation`, once it ended:
/// `last_reload` if it is that one, else its `reload` history entry.
pub fn reload_record(v: &Value, generation: u64) -> Option<Value> {
    if v["last_reload"]["generation"] == generation {
        return Some(v["last_reload"].clone());
    }
    history(v, "reload")
        .find(|e| e["generation"] == generation)
        .cloned()
}

/// The `pid` of a record (a generation, a reload, a history entry); panics if it has none.
#[track_caller]
pub fn record_pid(v: &Value) -> i32 {
    v["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {v:#}")) as i32
}

/// The record of program `name` in a master's record with several programs.
pub fn program<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["programs"].as_array()?.iter().find(|p| p["name"] == name)
}
