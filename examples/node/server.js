#!/usr/bin/env node
// An HTTP server that runs under relaunch (or systemd socket activation). Node's standard
// library only.
//
// It answers every request with "pid=<pid> lang=node". Usage: node server.js [--ready-fd N]
// See README.md beside this file.
'use strict';

const fs = require('fs');
const http = require('http');

// First socket passed by socket activation (SD_LISTEN_FDS_START).
const LISTEN_FDS_START = 3;
// A stop gives the requests in flight this long, then exits anyway.
const STOP_GRACE_MS = 8000;

function fail(msg) {
  process.stderr.write(`node-example: ${msg}\n`);
  process.exit(1);
}

// --ready-fd N: write a newline to fd N once serving (relaunch --ready fd:N). Node's standard
// library cannot send to a unix datagram socket, so NOTIFY_SOCKET is not used here.
let readyFd = null;
const args = process.argv.slice(2);
if (args.length === 2 && args[0] === '--ready-fd' && /^[0-9]+$/.test(args[1])) {
  readyFd = Number(args[1]);
} else if (args.length !== 0) {
  fail(`unknown arguments ${JSON.stringify(args)}; usage: server.js [--ready-fd N]`);
}

// The socket is ours only if LISTEN_PID is our pid.
if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  fail('no socket inherited (LISTEN_FDS/LISTEN_PID unset or not for this process): run me under relaunch');
}

const body = `pid=${process.pid} lang=node\n`;
let stopping = false;
const server = http.createServer((req, res) => {
  const headers = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  };
  // Once stopping, no connection is kept alive after its request.
  if (stopping) headers.Connection = 'close';
  res.writeHead(200, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
});

function stop() {
  if (stopping) return;
  stopping = true;
  // Stop accepting: close our copy of the listener (never shutdown() it: relaunch and the next
  // generation share it, and connections still queued are theirs); exit once every connection
  // has closed. Requests in flight are answered, with Connection: close.
  server.close(() => process.exit(0));
  // Close idle keep-alive connections (Node >= 19 does it in close() already). A connection
  // that has not sent its first request yet does not count as idle: the request may be on its
  // way, and it is answered when it comes (within the stop grace).
  if (server.closeIdleConnections) server.closeIdleConnections();
  setTimeout(() => {
    process.stderr.write('node-example: requests still open after the stop grace, exiting anyway\n');
    process.exit(1);
  }, STOP_GRACE_MS).unref();
}
// Handlers first, so a stop during start-up ends us cleanly too.
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.on('error', (err) => fail(`listening on fd ${LISTEN_FDS_START}: ${err.message}`));
// Node makes the socket non-blocking itself, so a blocking socket from the launcher is fine.
server.listen({ fd: LISTEN_FDS_START }, () => {
  if (readyFd !== null) {
    try {
      fs.writeSync(readyFd, '\n');
      fs.closeSync(readyFd);
    } catch (err) {
      fail(`writing the ready newline to fd ${readyFd}: ${err.message}`);
    }
  }
  process.stderr.write(`node-example: pid ${process.pid} serving\n`);
});
