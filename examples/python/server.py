#!/usr/bin/env python3
"""An HTTP server that runs under relaunch (or systemd socket activation). Standard library only.

It answers every request with "pid=<pid> lang=python". See README.md beside this file.
"""

import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# First socket passed by socket activation (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def inherited_socket():
    """The first inherited socket: fd 3, ours only if LISTEN_PID is our pid."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("python-example: no socket inherited (LISTEN_PID is not this process): "
                 "run me under relaunch")
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        sys.exit("python-example: no socket inherited (LISTEN_FDS is unset or 0)")
    # Takes the family and type from the socket itself. With several sockets, find the one you
    # want by its name in LISTEN_FDNAMES (colon-separated, in fd order from 3).
    sock = socket.socket(fileno=LISTEN_FDS_START)
    # A launcher may pass a blocking socket. socketserver accepts after select() says a
    # connection is waiting, but another generation sharing the socket may take it first; on a
    # blocking socket accept() would then wait for the next connection, deaf to the stop.
    # Non-blocking, accept() fails with EAGAIN instead, which socketserver ignores.
    sock.setblocking(False)
    return sock


def notify_ready():
    """Sends READY=1 to $NOTIFY_SOCKET (relaunch --ready notify, systemd Type=notify)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.sendto(b"READY=1", addr)


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stop never waits for an idle keep-alive one.
    protocol_version = "HTTP/1.0"
    # A client that sends nothing is dropped after this many seconds (and cannot delay a stop
    # for longer).
    timeout = 10
    body = f"pid={os.getpid()} lang=python\n".encode()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass  # no line per request


def main():
    # Block SIGTERM and SIGINT before any thread starts (threads inherit the mask); the main
    # thread picks them up with sigwait() below, so a stop during start-up is not lost either.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    server = ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
    server.socket.close()  # the unbound socket the constructor made
    server.socket = inherited_socket()
    server.daemon_threads = False  # server_close() waits for the requests in flight
    server.block_on_close = True

    serving = threading.Thread(target=server.serve_forever, name="serve")
    serving.start()
    try:
        notify_ready()
    except OSError as err:
        server.shutdown()
        server.server_close()
        sys.exit(f"python-example: sending READY=1 to NOTIFY_SOCKET: {err}")
    print(f"python-example: pid {os.getpid()} serving", file=sys.stderr, flush=True)

    signal.sigwait(stop_signals)
    # Stop accepting, then close our copy of the listener. Never shutdown() it: the socket is
    # shared with relaunch and the next generation. Connections still queued in the kernel are
    # served by the next generation.
    server.shutdown()
    serving.join()
    server.server_close()  # closes the listener, then waits for the requests in flight
    print(f"python-example: pid {os.getpid()} stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
