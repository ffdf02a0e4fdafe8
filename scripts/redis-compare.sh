#!/usr/bin/env bash
# Side-by-side Redis client comparison on one throwaway redis-server (docs/perf.md,
# "resp-client"): our resp-client (glommio/io_uring and tokio/epoll backends) vs redis-rs
# (multiplexed connection) vs fred vs redis-benchmark -P, same command mixes, depths 1/16/128.
#
#   scripts/redis-compare.sh [rusage|callgrind] [ops]
#
# rusage (default): ops/s and client CPU ns/op (getrusage user+system over the timed part),
#   redis-server pinned to CPU 1 and the client to CPU 0.
# callgrind: user-space instructions per op under valgrind, from two runs of different length
#   ((Ir_long - Ir_short) / (ops_long - ops_short): start-up and connection cost cancel out).
#   Slow but independent of machine load.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-rusage}
OPS=${2:-}
CLIENTS=${CLIENTS:-"ours ours-epoll redis-rs fred redis-benchmark"}
DEPTHS=${DEPTHS:-"1 16 128"}
MIXES=${MIXES:-"setget registry"}
# tasks: N tasks awaiting one request at a time; pipeline: one task queues N, then awaits them
# (redis-benchmark -P N). redis-benchmark runs once per depth.
STYLES=${STYLES:-"tasks pipeline"}

# Runs every client in every style: run_all <fn> <mix> <depth>.
run_all() {
    for client in $CLIENTS; do
        if [ "$client" = redis-benchmark ]; then
            "$1" "$client" "$2" "$3" tasks
        else
            for style in $STYLES; do
                "$1" "$client" "$2" "$3" "$style"
            done
        fi
    done
}

(cd resp-client/compare && cargo build --release -q)
BIN=resp-client/compare/target/release/resp-compare

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DIR=$(mktemp -d)
taskset -c 1 redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$DIR" --logfile "$DIR/redis.log" &
REDIS=$!
trap 'kill $REDIS 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
done
echo "# redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$PORT, mode $MODE"
echo "# client mix depth ops seconds ops_per_sec cpu_ns_per_op|instr_per_op"

case "$MODE" in
rusage)
    OPS=${OPS:-200000}
    one() {
        local n=$OPS
        [ "$3" = 1 ] && n=$((OPS / 4))
        taskset -c 0 "$BIN" --addr "127.0.0.1:$PORT" --client "$1" --mix "$2" \
            --depth "$3" --ops "$n" --warmup $((n / 10)) --style "$4"
    }
    for mix in $MIXES; do
        for depth in $DEPTHS; do
            run_all one "$mix" "$depth"
        done
    done
    ;;
callgrind)
    SHORT=${OPS:-2000}
    LONG=$((SHORT * 3))
    ir() { # client mix depth ops style -> instructions of the whole run
        local out
        out=$(mktemp)
        if [ "$1" = redis-benchmark ]; then
            # The child is what counts: trace it, not the harness.
            valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p" \
                "$BIN" --addr "127.0.0.1:$PORT" --client "$1" --mix "$2" --depth "$3" \
                --ops "$4" >/dev/null 2>&1
            # One profile per process: count redis-benchmark's, not the harness that ran it.
            for f in "$out".*; do
                if grep -Eq '^cmd: +[^ ]*redis-benchmark ' "$f"; then
                    awk '/^summary:/ {print $2}' "$f"
                fi
            done | awk '{s += $1} END {print s}'
            rm -f "$out".*
        else
            valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --addr "127.0.0.1:$PORT" \
                --client "$1" --mix "$2" --depth "$3" --ops "$4" --warmup 200 --style "$5" \
                >/dev/null 2>&1
            awk '/^summary:/ {print $2}' "$out"
            rm -f "$out"
        fi
    }
    one() {
        local a b name=$1
        a=$(ir "$1" "$2" "$3" "$SHORT" "$4")
        b=$(ir "$1" "$2" "$3" "$LONG" "$4")
        [ "$4" != tasks ] && name="$1/$4"
        echo "$name $2 $3 $((LONG - SHORT)) - - $(((b - a) / (LONG - SHORT)))"
    }
    for mix in $MIXES; do
        for depth in $DEPTHS; do
            run_all one "$mix" "$depth"
        done
    done
    ;;
*)
    echo "usage: $0 [rusage|callgrind] [ops]" >&2
    exit 2
    ;;
esac
