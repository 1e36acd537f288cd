//! A non-blocking stream connection with bounded buffers and a deadline, for the control
//! socket and the metrics endpoint.
//!
//! The master serves both from its one thread, so no client may ever block it: every socket is
//! non-blocking, reads and writes go through bounded buffers, and each connection carries a
//! deadline that the event loop folds into its `poll` timeout. A connection that does not send
//! a complete request, or does not read its answer, before its deadline is closed.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::PollFlags;

use crate::poll::Polled;

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Nothing more right now (or data was read).
    Open,
    /// The peer closed its end.
    Eof,
    /// More than `max` bytes are waiting without a complete request in them.
    Overflow,
    /// The connection broke.
    Failed,
}

/// A non-blocking connection: an input buffer filled by [`Conn::read`], an output buffer
/// drained by [`Conn::flush`].
#[derive(Debug)]
pub struct Conn<S> {
    /// The stream (non-blocking).
    pub stream: Polled<S>,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    /// When the connection is closed unless something moves it on.
    pub deadline: Option<Instant>,
    /// Close once the output is sent.
    pub closing: bool,
    /// The peer closed its end (no more input).
    pub eof: bool,
}

impl<S: Read + Write + AsFd> Conn<S> {
    /// Wraps a stream that is already non-blocking.
    pub fn new(stream: S, deadline: Option<Instant>) -> Conn<S> {
        Conn {
            stream: Polled::new(stream),
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            deadline,
            closing: false,
            eof: false,
        }
    }

    /// Reads what is available, at most `budget` bytes this time (so that one busy client
    /// cannot keep the loop to itself; `poll` reports the rest next time). `Overflow` once the
    /// input holds more than `max` bytes with no newline in them.
    pub fn read(&mut self, budget: usize, max: usize) -> ReadState {
        let mut chunk = [0u8; 16 * 1024];
        let mut taken = 0;
        while taken < budget && !self.eof {
            let want = chunk.len().min(budget - taken);
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    self.eof = true;
                    return ReadState::Eof;
                }
                Ok(n) => {
                    taken += n;
                    let had_line = self.input.contains(&b'\n');
                    self.input.extend_from_slice(&chunk[..n]);
                    if !had_line && !chunk[..n].contains(&b'\n') && self.input.len() > max {
                        return ReadState::Overflow;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return ReadState::Failed,
            }
        }
        ReadState::Open
    }

    /// The bytes received and not yet taken.
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// Removes and returns the first complete line (without its `\n`, and a `\r` before it).
    pub fn take_line(&mut self) -> Option<Vec<u8>> {
        let end = self.input.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.input.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }

    /// Drops the input received so far.
    pub fn clear_input(&mut self) {
        self.input.clear();
    }

    /// Queues `bytes` for sending and sends what the socket takes now.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.output.extend_from_slice(bytes);
        self.flush()
    }

    /// Bytes queued and not yet sent.
    pub fn unsent(&self) -> usize {
        self.output.len() - self.sent
    }

    /// Sends what the socket takes without blocking.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.output.len() {
            match self.stream.write(&self.output[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
        Ok(())
    }

    /// Whether everything queued was sent and the connection should now be closed.
    pub fn done(&self) -> bool {
        self.closing && self.unsent() == 0
    }

    /// The poll events this connection waits for: input while it accepts more (`want_input`),
    /// output while some is queued.
    pub fn interest(&self, want_input: bool) -> PollFlags {
        let mut flags = PollFlags::empty();
        if want_input && !self.eof && !self.closing {
            flags |= PollFlags::POLLIN;
        }
        if self.unsent() > 0 {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }

    /// Whether the deadline has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Conn<UnixStream>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(a, None), b)
    }

    #[test]
    fn lines_are_split_and_crlf_trimmed() {
        let (mut c, mut peer) = pair();
        peer.write_all(b"one\r\ntwo\nthr").unwrap();
        assert_eq!(c.read(1 << 20, 100), ReadState::Open);
        assert_eq!(c.take_line().unwrap(), b"one");
        assert_eq!(c.take_line().unwrap(), b"two");
        assert_eq!(c.take_line(), None);
        assert_eq!(c.input(), b"thr");
        drop(peer);
        assert_eq!(c.read(1 << 20, 100), ReadState::Eof);
    }

    #[test]
    fn a_line_longer_than_max_overflows() {
        let (mut c, mut peer) = pair();
        peer.write_all(&[b'x'; 300]).unwrap();
        assert_eq!(c.read(1 << 20, 100), ReadState::Overflow);
    }

    #[test]
    fn reads_stop_at_the_budget() {
        let (mut c, mut peer) = pair();
        peer.write_all(&[b'\n'; 5000]).unwrap();
        assert_eq!(c.read(1000, 100), ReadState::Open);
        assert_eq!(c.input().len(), 1000);
    }

    #[test]
    fn output_is_queued_when_the_peer_does_not_read() {
        let (mut c, peer) = pair();
        let big = vec![b'y'; 4 << 20];
        c.send(&big).unwrap();
        assert!(c.unsent() > 0, "a socket buffer does not hold 4 MiB");
        assert!(c.interest(true).contains(PollFlags::POLLOUT));
        c.closing = true;
        assert!(!c.done());
        assert!(!c.interest(true).contains(PollFlags::POLLIN));
        drop(peer);
        assert!(c.flush().is_err(), "the peer is gone");
    }
}
