#!/bin/bash
# The idle master's memory (BENCHMARKS.md, "Memory").
#
#   benches/memory.sh [RELAUNCH_BIN] [HELLO_BIN] [RUNS]
#
# Starts RELAUNCH_BIN (default target/release/relaunch) with one listener and one HELLO_BIN child
# (default target/release/examples/hello), waits for the child to be RUNNING, settles 1 s, syncs,
# and prints the master's /proc/PID/smaps_rollup figures, its fds and the resident KiB of each
# mapping group (its own binary, libc, ld.so, heap, stack, anonymous). RUNS (default 3) runs, one
# line each. Build first: `cargo build --release --bin relaunch --example hello`.
set -u
bin=$(realpath "${1:-target/release/relaunch}")
hello=$(realpath "${2:-target/release/examples/hello}")
runs=${3:-3}
printf '# %s, %s bytes; %s; load average %s\n' "$bin" "$(stat -c %s "$bin")" \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$runs"); do
    d=$(mktemp -d)
    RELAUNCH_CONTROL_DIR=$d "$bin" --listen 127.0.0.1:0 -- "$hello" >"$d/log" 2>&1 &
    p=$!
    for _ in $(seq 300); do grep -q "to=RUNNING" "$d/log" && break; sleep 0.1; done
    sleep 1
    sync
    r=$(awk '/^(Rss|Pss|Private_Dirty|Private_Clean|Anonymous):/{printf "%s %s ", $1, $2}' \
        "/proc/$p/smaps_rollup")
    fds=$(ls "/proc/$p/fd" | wc -l)
    # Resident KiB per mapping group, from the per-mapping smaps.
    g=$(awk -v bin="$bin" '
        /^[0-9a-f]+-[0-9a-f]+ / {
            n = $6; k = "other"
            if (n == bin) k = "binary"; else if (n ~ /libc\.so/) k = "libc"
            else if (n ~ /ld-linux/) k = "ld.so"; else if (n == "[heap]") k = "heap"
            else if (n == "[stack]") k = "stack"; else if (n == "") k = "anon"
        }
        /^Rss:/ { s[k] += $2 }
        END { for (k in s) printf "%s=%s ", k, s[k] }' "/proc/$p/smaps")
    echo "$r fds $fds | $g"
    kill "$p"
    wait "$p" 2>/dev/null
    rm -rf "$d"
done
