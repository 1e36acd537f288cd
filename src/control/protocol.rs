//! The control protocol, version 1: one JSON object per line each way ([`Request`],
//! [`Response`]). Shared by the master (which parses requests) and the client.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::parse::parse_signal;
use crate::status::{ReloadRecord, StatusRecord};

/// The protocol version this relaunch speaks.
pub const PROTOCOL: u32 = 1;
/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// `status`, `reload`, `restart`, `start`, `stop`, `update` or `signal`.
    #[serde(default)]
    pub cmd: String,
    /// `reload`, `stop`: answer only when done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// `signal`: the signal, by name or number (`USR1`, `SIGUSR1`, `10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The program the request is about, by name (a master with several programs); `None`:
    /// the master as a whole (`status`: every program; `reload`: all of them; `stop`: the
    /// master). `start` and `signal` need one when there are several programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// `signal`: only this worker (its index); every worker of the current generation when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
}

impl Request {
    /// A version-1 request for `cmd`.
    pub fn new(cmd: &str) -> Request {
        Request {
            v: Some(PROTOCOL),
            cmd: cmd.into(),
            ..Request::default()
        }
    }
}

/// An answer line. `ok` says whether the request did what it asked (for `reload` with `wait`:
/// whether the reload succeeded); `error` says why not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    /// The protocol version: 1.
    pub v: u32,
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request named a program that is not configured (the error lists the valid
    /// names): the client exits 2, a usage error.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub usage: bool,
    /// `status`: the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRecord>,
    /// `reload` without `wait`: what happened to the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
    /// `reload` with `wait`: the outcome of the attempt that carried the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadRecord>,
    /// `stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopReply>,
    /// `signal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalReply>,
    /// `update`, and `reload` without a program name when relaunch runs a configuration file:
    /// what the edited file changed and, with `wait`, how each program's part ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditReply>,
}

/// What applying an edited configuration file did (`update`, `reload` without names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EditReply {
    /// Programs new in the file: started (in priority order).
    pub added: Vec<String>,
    /// Programs gone from the file: stopped, their sockets closed after their last child.
    pub removed: Vec<String>,
    /// Programs whose settings changed: a new generation under the new settings.
    pub changed: Vec<String>,
    /// Programs whose settings did not change, reloaded (`reload`; `update` leaves them).
    pub reloaded: Vec<String>,
    /// With `wait`: how each program's part ended, in the order above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<EditOutcome>,
}

/// How one program's part of an edit ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EditOutcome {
    /// The program.
    pub program: String,
    /// `added`, `removed`, `changed` or `reloaded`.
    pub what: String,
    /// Whether it did what the edit asked.
    pub ok: bool,
    /// The generation serving now (or that failed), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Response {
    /// A failed answer.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            v: PROTOCOL,
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }

    pub(crate) fn ok() -> Response {
        Response {
            v: PROTOCOL,
            ok: true,
            ..Response::default()
        }
    }

    /// The answer as one line, with its newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            format!(r#"{{"v":1,"ok":false,"error":"cannot encode the answer: {e}"}}"#).into_bytes()
        });
        line.push(b'\n');
        line
    }
}

/// What happened to a `reload` request without `wait`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Accepted {
    /// It started a new attempt: its generation.
    pub generation: Option<u64>,
    /// It was coalesced into the follow-up of the reload in progress.
    pub queued: bool,
}

/// The answer to `stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopReply {
    /// With `wait`: the code relaunch exits with (the last child's status). Without: `null`
    /// (the stop has begun).
    pub exit_code: Option<i32>,
}

/// The answer to `signal`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignalReply {
    /// The signal sent, e.g. `SIGUSR1`.
    pub signal: String,
    /// The generation it was sent to (the current one).
    pub generation: u64,
    /// Its pid (the first worker's, when it went to every worker).
    pub pid: i32,
    /// The worker it was sent to, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// How many processes it was sent to (the workers of the current generation).
    #[serde(default)]
    pub sent_to: usize,
}

/// Parses a request line; the error is the message for the client.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let request: Request = serde_json::from_slice(line).map_err(|e| {
        // Quote what was sent, cut short: the answer to a long line stays short.
        const SHOWN: usize = 100;
        let shown = String::from_utf8_lossy(&line[..line.len().min(SHOWN)]);
        let more = if line.len() > SHOWN { "..." } else { "" };
        format!(r#"malformed request {shown:?}{more} ({e}); expected one JSON object per line like {{"v":1,"cmd":"status"}}"#)
    })?;
    match request.v {
        Some(PROTOCOL) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v} (this relaunch speaks version {PROTOCOL})"
            ))
        }
        None => {
            return Err(format!(
                r#"request without "v" (the protocol version); send {{"v":{PROTOCOL},"cmd":"{}"}}"#,
                request.cmd
            ))
        }
    }
    match request.cmd.as_str() {
        "status" | "reload" | "restart" | "start" | "stop" | "update" => Ok(request),
        "signal" => match &request.signal {
            Some(s) => parse_signal(s).map(|_| request.clone()),
            None => {
                Err(r#"signal needs "signal", e.g. {"v":1,"cmd":"signal","signal":"USR1"}"#.into())
            }
        },
        other => Err(format!(
            "unknown command {other:?} (expected status, reload, restart, start, stop, update or signal)"
        )),
    }
}

/// Writes one request line to a connected stream (client side).
pub fn write_request(stream: &mut UnixStream, request: &Request) -> io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_errors_say_what_to_send() {
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"reload","wait":true}"#).unwrap(),
            Request {
                wait: true,
                ..Request::new("reload")
            }
        );
        let e = parse_request(br#"{"cmd":"status"}"#).unwrap_err();
        assert!(e.contains(r#"{"v":1,"cmd":"status"}"#), "{e}");
        let e = parse_request(br#"{"v":2,"cmd":"status"}"#).unwrap_err();
        assert!(e.contains("unsupported protocol version 2"), "{e}");
        let e = parse_request(b"garbage").unwrap_err();
        assert!(e.starts_with("malformed request \"garbage\" ("), "{e}");
        let e = parse_request(&[b'x'; 200]).unwrap_err();
        let shown = format!("malformed request \"{}\"... (", "x".repeat(100));
        assert!(e.starts_with(&shown), "{e}");
        let e = parse_request(br#"{"v":1,"cmd":"explode"}"#).unwrap_err();
        assert!(e.contains("unknown command \"explode\""), "{e}");
        let e = parse_request(br#"{"v":1,"cmd":"signal","signal":"BOGUS"}"#).unwrap_err();
        assert!(e.contains("BOGUS"), "{e}");
        assert!(parse_request(br#"{"v":1,"cmd":"signal","signal":"usr1"}"#).is_ok());
    }

    #[test]
    fn responses_round_trip_as_one_line() {
        let mut r = Response::ok();
        r.accepted = Some(Accepted {
            generation: Some(3),
            queued: false,
        });
        let line = r.to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "{\"v\":1,\"ok\":true,\"accepted\":{\"generation\":3,\"queued\":false}}\n"
        );
        let back: Response = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
    }
}
