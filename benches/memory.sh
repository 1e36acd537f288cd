#!/bin/bash
# The idle master's memory (BENCHMARKS.md, "Memory").
#
#   benches/memory.sh [RELAUNCH_BIN] [HELLO_BIN] [RUNS]
#
# Starts RELAUNCH_BIN (default target/release/relaunch) with one listener and one HELLO_BIN child
# (default target/release/examples/hello), waits for the child to be RUNNING, settles 1 s, syncs,
# and prints the master's /proc/PID/smaps_rollup figures, its fds and the resident KiB of each
# mapping group (its own binary, libc, ld.so, heap, stack, anonymous). Then it wakes the master
# up twice and measures again after each, once it is idle: `start` is after startup, `status`
# after one `relaunch status` answered (+1 s), `reload` after a SIGHUP once the old child has
# exited (+1 s). RUNS (default 3) runs, three lines each. Build first:
# `cargo build --release --bin relaunch --example hello`.
set -u
bin=$(realpath "${1:-target/release/relaunch}")
hello=$(realpath "${2:-target/release/examples/hello}")
runs=${3:-3}
printf '# %s, %s bytes; %s; load average %s\n' "$bin" "$(stat -c %s "$bin")" \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(cut -d' ' -f1-3 /proc/loadavg)"

# One line of figures for the master PID, labelled $2.
measure() {
    sleep 1
    sync
    r=$(awk '/^(Rss|Pss|Private_Dirty|Private_Clean|Anonymous):/{printf "%s %s ", $1, $2}' \
        "/proc/$1/smaps_rollup")
    fds=$(ls "/proc/$1/fd" | wc -l)
    # Resident KiB per mapping group, from the per-mapping smaps.
    g=$(awk -v bin="$bin" '
        /^[0-9a-f]+-[0-9a-f]+ / {
            n = $6; k = "other"
            if (n == bin) k = "binary"; else if (n ~ /libc\.so/) k = "libc"
            else if (n ~ /ld-linux/) k = "ld.so"; else if (n == "[heap]") k = "heap"
            else if (n == "[stack]") k = "stack"; else if (n == "") k = "anon"
        }
        /^Rss:/ { s[k] += $2 }
        END { for (k in s) printf "%s=%s ", k, s[k] }' "/proc/$1/smaps")
    printf '%-6s %s fds %s | %s\n' "$2" "$r" "$fds" "$g"
}

# Waits (up to 30 s) until the log $1 has a line matching $2.
logged() {
    for _ in $(seq 300); do
        grep -q "$2" "$1" && return 0
        sleep 0.1
    done
    echo "# no '$2' in $1" >&2
    return 1
}

for _ in $(seq "$runs"); do
    d=$(mktemp -d)
    RELAUNCH_CONTROL_DIR=$d "$bin" --listen 127.0.0.1:0 -- "$hello" >"$d/log" 2>&1 &
    p=$!
    if logged "$d/log" "to=RUNNING"; then
        measure "$p" start
        RELAUNCH_CONTROL_DIR=$d "$bin" status >/dev/null && measure "$p" status
        kill -HUP "$p"
        logged "$d/log" "exited generation=1" && measure "$p" reload
    fi
    kill "$p"
    wait "$p" 2>/dev/null
    rm -rf "$d"
done
