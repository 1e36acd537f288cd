//! A small HTTP client for the example server.

use super::*;

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// Connection refused: nothing was listening.
    Refused,
    /// Reset, aborted or broken pipe.
    Reset,
    /// No complete answer within the timeout.
    Timeout,
    /// Connected, but the answer was not a complete HTTP response.
    BadResponse(String),
    Other(io::Error),
}

impl Failure {
    /// A short name for counting failures by kind.
    pub fn kind(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Reset => "reset".into(),
            Failure::Timeout => "timeout".into(),
            Failure::BadResponse(_) => "bad response".into(),
            Failure::Other(err) => format!("other ({:?})", err.kind()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadResponse(what) => write!(f, "bad response: {what}"),
            Failure::Other(err) => write!(f, "error: {err}"),
            other => f.write_str(&other.kind()),
        }
    }
}

fn classify(err: io::Error) -> Failure {
    match err.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Failure::Reset
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::Timeout,
        _ => Failure::Other(err),
    }
}

/// One `GET /` on a new connection with `Connection: close`, read to EOF, all within `timeout`.
/// Returns the status code and the body.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> Result<(u16, String), Failure> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(classify)?;
    http_get_on(&mut stream, remaining(deadline))
}

/// Like [`http_get`], on a connection the caller opened.
pub fn http_get_on(stream: &mut TcpStream, timeout: Duration) -> Result<(u16, String), Failure> {
    let deadline = Instant::now() + timeout;
    let _ = stream.set_nodelay(true);
    let left = remaining(deadline).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left)).map_err(classify)?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(classify)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(classify)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(classify(err)),
        }
    }
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> Result<(u16, String), Failure> {
    if response.is_empty() {
        return Err(Failure::BadResponse(
            "connection closed without a response".into(),
        ));
    }
    let text = String::from_utf8_lossy(response);
    let bad = |why: &str| Failure::BadResponse(format!("{why}: {:?}", truncate(&text, 200)));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                let len: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("bad Content-Length"))?;
                if body.len() != len {
                    return Err(bad(&format!(
                        "body has {} bytes, Content-Length says {len}",
                        body.len()
                    )));
                }
            }
        }
    }
    Ok((status, body.to_owned()))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

/// The `pid=N` of a hello response body.
pub fn body_pid(body: &str) -> Option<i32> {
    field(body, "pid")?.parse().ok()
}

/// GETs until a 200 answer arrives (the server may still be starting); returns the serving pid.
#[track_caller]
pub fn wait_for_http(relaunch: &Relaunch, addr: SocketAddr, timeout: Duration) -> i32 {
    let mut last = String::new();
    let mut pid = None;
    let ok = poll_until(timeout, || match http_get(addr, Duration::from_secs(5)) {
        Ok((200, body)) => {
            pid = body_pid(&body);
            last = format!("200 with body {body:?}");
            pid.is_some()
        }
        Ok((status, body)) => {
            last = format!("status {status}, body {body:?}");
            false
        }
        Err(failure) => {
            last = failure.to_string();
            false
        }
    });
    if !ok {
        relaunch.fail(&format!(
            "no HTTP 200 from {addr} within {timeout:?}; last attempt: {last}"
        ));
    }
    pid.expect("pid")
}
