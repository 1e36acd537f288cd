"""The reload benchmark's server for gunicorn, which cannot run the Rust example.

Answers every request like examples/hello.rs: `200 OK`, body `pid=<worker pid> fdnames=`.
Importing it takes BENCH_STARTUP_DELAY_MS (like `hello --startup-delay-ms`), and it appends
`pid=P monotonic_ns=T` to BENCH_STAMP_FILE as soon as a worker starts importing it.
"""

import os
import time

_started_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
_stamp = os.environ.get("BENCH_STAMP_FILE")
if _stamp:
    with open(_stamp, "a") as f:
        f.write(f"pid={os.getpid()} monotonic_ns={_started_ns}\n")

time.sleep(int(os.environ.get("BENCH_STARTUP_DELAY_MS", "0")) / 1000)

_body = f"pid={os.getpid()} fdnames=\n".encode()


def app(environ, start_response):
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_body))),
        ],
    )
    return [_body]
