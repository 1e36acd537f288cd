//! A program's readiness channel: sd_notify messages on its notify socket (`--ready notify`),
//! attributed to the child they come from, and the children's readiness pipes (`--ready fd:N`).

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::unistd::Pid;
use tracing::debug;

use super::Program;
use crate::notify::{self, Note};
use crate::supervisor::Event;

impl Program {
    /// Messages on the notify socket, attributed to the child they come from.
    pub(crate) fn notifications(&mut self) -> Vec<Event> {
        let Some(sock) = &self.notify_socket else {
            return Vec::new();
        };
        let children: Vec<Pid> = self.supervisor.children().map(|c| c.pid).collect();
        sock.receive()
            .into_iter()
            .filter_map(|r| match notify::owning_child(r.pid, &children) {
                Some(pid) => Some(Event::Notify { pid, note: r.note }),
                None => {
                    debug!(sender = %r.pid, "dropped a notification from a process that is not one of relaunch's children or their descendants");
                    None
                }
            })
            .collect()
    }

    /// A newline on a child's readiness pipe means ready; end-of-file means it closed the
    /// pipe without saying so (its deadline still applies).
    pub(crate) fn ready_pipe_events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.ready_pipes.retain(|(pid, fd)| {
            let mut buf = [0u8; 256];
            loop {
                match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                    Ok(0) => {
                        debug!(pid = %pid, "readiness pipe closed without a newline");
                        return false;
                    }
                    Ok(n) if buf[..n].contains(&b'\n') => {
                        events.push(Event::Notify {
                            pid: *pid,
                            note: Note {
                                ready: true,
                                ..Note::default()
                            },
                        });
                        return false;
                    }
                    Ok(_) => continue,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return true, // EAGAIN: nothing more yet
                }
            }
        });
        events
    }
}
