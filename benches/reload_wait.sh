#!/bin/bash
# How long `relaunch reload --wait` takes, end to end (BENCHMARKS.md, "Memory": checks that a
# smaller build does not slow the spawn path).
#
#   benches/reload_wait.sh [RELAUNCH_BIN] [HELLO_BIN] [RELOADS]
#
# Starts RELAUNCH_BIN with one listener and one HELLO_BIN child, then runs RELOADS (default 20)
# `reload --wait` one after the other and prints the median, min and max wall time in ms. The
# time includes the client's own start, the spawn, hello's start and the switch.
set -u
bin=$(realpath "${1:-target/release/relaunch}")
hello=$(realpath "${2:-target/release/examples/hello}")
n=${3:-20}
d=$(mktemp -d)
RELAUNCH_CONTROL_DIR=$d "$bin" --control "$d/c.sock" --listen 127.0.0.1:0 -- "$hello" \
    >"$d/log" 2>&1 &
p=$!
for _ in $(seq 300); do grep -q "to=RUNNING" "$d/log" && break; sleep 0.1; done
for _ in $(seq "$n"); do
    t0=$(date +%s%N)
    "$bin" reload --control "$d/c.sock" --wait >/dev/null || echo "reload failed" >&2
    echo $((($(date +%s%N) - t0) / 1000))
done | sort -n | awk -v bin="$bin" '{ a[NR] = $1 } END {
    printf "%s: %d reloads, median %.1f ms, min %.1f, max %.1f; load average ", bin, NR,
        a[int((NR + 1) / 2)] / 1000, a[1] / 1000, a[NR] / 1000 }'
cut -d' ' -f1-3 /proc/loadavg
kill "$p"
wait "$p" 2>/dev/null
rm -rf "$d"
