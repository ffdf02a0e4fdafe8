#!/usr/bin/env bash
# Steady-state registry cost per connected user, measured on a real stack: redis-server, one
# router and G gateway processes (release binaries, one shard each, so no process needs more than
# ~17k of this machine's 20k open files), holding N clients opened by `perf load` at a trickle
# of 1 message/s. Over a window after every client connected it reads the gateways'
# connect_gateway_registry_commands_total{op} and Redis' INFO commandstats, and prints the
# Redis commands per connected user per minute.
#
#   scripts/registry-upkeep.sh [CLIENTS=100000] [GATEWAYS=6] [WINDOW_SECS=120]
#   SESSION_TTL=1800 (the gateway default) can be overridden from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-100000}
G=${2:-6}
WINDOW=${3:-120}
TTL=${SESSION_TTL:-1800}
SECRET=upkeep-secret-0123456789
LINK=upkeep-link-0123456789abc
BIN=target/release
[ -x "$BIN/perf" ] && [ -x "$BIN/gateway" ] && [ -x "$BIN/router" ] || cargo build --release --bins

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

RP=$(port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$DIR" >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
until redis-cli -p "$RP" ping >/dev/null 2>&1; do sleep 0.1; done
REG="redis://127.0.0.1:$RP"

ROUTER=$(port)
"$BIN/router" --listen "127.0.0.1:$ROUTER" --registry "$REG" --shards 1 --admin-listen off \
    --link-secret "$LINK" >"$DIR/router.log" 2>&1 &
PIDS+=($!)

URLS=()
ADMINS=()
for i in $(seq 0 $((G - 1))); do
    P=$(port)
    ADM=$(port)
    "$BIN/gateway" --listen "127.0.0.1:$P" --internal-listen 127.0.0.1:0 \
        --router "127.0.0.1:$ROUTER" --registry "$REG" --jwt-secret "$SECRET" \
        --link-secret "$LINK" --shards 1 --instance-id "upkeep-gw$i" --session-ttl "$TTL" \
        --admin-listen "127.0.0.1:$ADM" --max-handshakes-per-shard 100000 \
        >"$DIR/gw$i.log" 2>&1 &
    PIDS+=($!)
    URLS+=(--url "ws://127.0.0.1:$P/ws")
    ADMINS+=("$ADM")
done
sleep 1

# Sum of a metric over every gateway (label filter optional).
metric() {
    local name=$1 filter=${2:-} total=0 v
    for a in "${ADMINS[@]}"; do
        v=$(curl -s "http://127.0.0.1:$a/metrics" | grep "^$name" | grep -F -- "$filter" |
            awk '{s+=$NF} END {print s+0}')
        total=$((total + ${v%.*}))
    done
    echo "$total"
}
stat() { redis-cli -p "$RP" info commandstats | tr -d '\r' | grep "^cmdstat_$1:" |
    sed -E 's/^[^:]*:calls=([0-9]+).*/\1/' || echo 0; }

echo "== $N clients on $G gateways (session TTL ${TTL}s), window ${WINDOW}s"
"$BIN/perf" load "${URLS[@]}" --secret "$SECRET" --clients "$N" --rate 1 \
    --duration $((WINDOW + 600)) --warmup 0 >"$DIR/perf.log" 2>&1 &
PERF=$!
PIDS+=($PERF)
START=$(date +%s)
while [ "$(metric connect_gateway_connections)" -lt "$N" ]; do
    sleep 1
    if [ $(($(date +%s) - START)) -gt 300 ] || ! kill -0 "$PERF" 2>/dev/null; then
        echo "clients did not all connect: $(metric connect_gateway_connections) of $N" >&2
        tail -20 "$DIR/perf.log" >&2
        exit 1
    fi
done
echo "all $N connected after $(($(date +%s) - START)) s"
sleep 5

declare -A B A
OPS=(register refresh unregister heartbeat rebuild)
CMDS=(zadd pexpire zrem zremrangebyscore zrange)
for op in "${OPS[@]}"; do B[$op]=$(metric connect_gateway_registry_commands_total "op=\"$op\""); done
for c in "${CMDS[@]}"; do B[$c]=$(stat "$c"); done
sleep "$WINDOW"
for op in "${OPS[@]}"; do A[$op]=$(metric connect_gateway_registry_commands_total "op=\"$op\""); done
for c in "${CMDS[@]}"; do A[$c]=$(stat "$c"); done
USERS=$(metric connect_gateway_connections)

echo "connected users at the end: $USERS"
echo "gateway registry commands in ${WINDOW}s, by operation:"
for op in "${OPS[@]}"; do printf '  %-11s %10d\n' "$op" $((A[$op] - B[$op])); done
echo "Redis commandstats in ${WINDOW}s:"
WRITES=0
for c in "${CMDS[@]}"; do
    d=$((A[$c] - B[$c]))
    printf '  %-17s %10d\n' "$c" "$d"
    [ "$c" != zrange ] && WRITES=$((WRITES + d))
done
python3 - "$USERS" "$WINDOW" "$WRITES" "$((A[refresh] - B[refresh]))" "$((A[heartbeat] - B[heartbeat]))" <<'EOF'
import sys
users, window, writes, refresh, beat = (int(x) for x in sys.argv[1:])
per = lambda n: n / users / (window / 60)
print(f"Redis writes per connected user per minute: {per(writes):.3f} "
      f"(TTL refresh {per(refresh):.3f}, liveness heartbeats {per(beat):.4f})")
EOF
