#!/usr/bin/env bash
# Soak (issue 7): MINUTES (default 10) of steady load at half the maximum sustained rate, with
# connection churn, against a stack this script starts itself: redis-server, one router, two
# gateways (release builds, one shard each, loopback, admin ports on). Every SOAK_SAMPLE_S
# seconds it records each server's RSS and open files (/proc) and the queue gauges of their
# /metrics (connections, sends awaiting an outcome, client and link send queues, Redis requests
# in flight), plus Redis' memory and key count, into samples.csv. scripts/soak-analyze.py then
# judges the measured part (after a warm-up): every figure must be flat, the harness must
# report no silent drop, missing ack or duplicate, and once the clients are gone every queue,
# connection and session key must be back to its idle value. Exit status 1 if anything grew or
# was lost.
#
#   scripts/soak.sh [MINUTES]
#
# The maximum sustained rate is measured first on the same stack: `perf load` at SOAK_SWEEP_START,
# then in steps of SOAK_SWEEP_STEP msg/s (SOAK_CLIENTS clients, 2 s warm-up + 10 s measured
# each), up to the last rate that was clean (nothing lost, failed or unanswered), reached 95% of
# its target send and receive rate, and kept delivery P99 under SOAK_SWEEP_P99_MS (a rate gets
# a second try before it ends the sweep). SOAK_MAX_RATE skips the sweep. The soak then runs SOAK_CLIENTS clients for the whole duration at half that
# rate minus the churn's share, while a loop of short `perf load` runs (SOAK_CHURN_CLIENTS other
# users, SOAK_CHURN_SECONDS of sending at SOAK_CHURN_RATE) connects, sends, disconnects and
# starts again until the end. The churn runs keep perf's exact ledger (--ledger: every send and
# receipt checked by id); the steady run is judged by perf's counters (a ledger of its millions
# of sends would take hundreds of MB next to the servers).
#
# Environment (defaults): SOAK_MAX_RATE (measured), SOAK_CLIENTS (2000), SOAK_CHURN_CLIENTS (400),
# SOAK_CHURN_RATE (200), SOAK_CHURN_SECONDS (3), SOAK_SAMPLE_S (5; 1 under 2 minutes),
# SOAK_WARMUP_S (min(120, a third of the run)), SOAK_SWEEP_START (2500), SOAK_SWEEP_STEP (2500),
# SOAK_SWEEP_LIMIT (40000), SOAK_SWEEP_P99_MS (100), SOAK_OUT (target/soak/<UTC time>),
# SOAK_PROFILE (release; debug for a quick smoke on the test build), SOAK_NO_BUILD=1 (use the
# binaries already in target/SOAK_PROFILE).
#
# Writes into SOAK_OUT: samples.csv, summary.txt (also printed), summary.json, soak.svg (RSS and
# open files over time), sweep.txt, the perf reports (sweep-RATE-TRY.json, soak.json,
# churn/N.json) and every process's log.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${1:-10}
DURATION_S=$(awk -v m="$MINUTES" 'BEGIN { d = int(m * 60 + 0.5); if (d < 10) exit 1; print d }') || {
    echo "soak: MINUTES must be at least 10 s worth (got $MINUTES)" >&2
    exit 2
}
CLIENTS=${SOAK_CLIENTS:-2000}
CHURN_CLIENTS=${SOAK_CHURN_CLIENTS:-400}
CHURN_RATE=${SOAK_CHURN_RATE:-200}
CHURN_SECONDS=${SOAK_CHURN_SECONDS:-3}
if ((DURATION_S < 120)); then SAMPLE_S=${SOAK_SAMPLE_S:-1}; else SAMPLE_S=${SOAK_SAMPLE_S:-5}; fi
WARMUP_S=${SOAK_WARMUP_S:-$((DURATION_S / 3 < 120 ? DURATION_S / 3 : 120))}
SWEEP_START=${SOAK_SWEEP_START:-2500}
SWEEP_STEP=${SOAK_SWEEP_STEP:-2500}
SWEEP_LIMIT=${SOAK_SWEEP_LIMIT:-40000}
SWEEP_P99_MS=${SOAK_SWEEP_P99_MS:-100}
OUT=${SOAK_OUT:-target/soak/$(date -u +%Y%m%dT%H%M%SZ)}
PROFILE=${SOAK_PROFILE:-release}
BIN=target/$PROFILE
SECRET=soak-secret-0123456789
export CONNECT_LINK_SECRET=soak-link-secret-0123456789
# Far above the churn's first user (u500000 with 1,000,000 as first client), so they never meet.
CHURN_FIRST=1000000

mkdir -p "$OUT/churn"
OUT=$(cd "$OUT" && pwd)
log() { echo "soak: $(date -u +%H:%M:%S) $*" >&2; }

if [[ ${SOAK_NO_BUILD:-0} != 1 ]]; then
    log "building $PROFILE binaries"
    if [[ $PROFILE == release ]]; then
        cargo build --release -p gateway -p router -p perf
    else
        cargo build -p gateway -p router -p perf
    fi
fi
for b in gateway router perf; do
    [[ -x $BIN/$b ]] || { echo "soak: $BIN/$b missing" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "soak: redis-server not found" >&2; exit 2; }

# Every process this script starts, so the trap stops them all (and only them).
SERVERS=()
HELPERS=()
stop_pid() {
    local pid=$1 sig=${2:-TERM} i
    kill -s "$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -s KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    touch "$OUT/stop-churn" "$OUT/stop-sampler" 2>/dev/null || true
    for pid in "${HELPERS[@]}"; do stop_pid "$pid"; done
    for pid in "${SERVERS[@]}"; do stop_pid "$pid"; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/stack-lib.sh
source scripts/stack-lib.sh

start_redis "$OUT/redis.log"
SERVERS+=("$REDIS_PID")
REGISTRY=redis://127.0.0.1:$REDIS_PORT

"$BIN/router" --listen 127.0.0.1:0 --registry "$REGISTRY" --shards 1 \
    --admin-listen 127.0.0.1:0 --drain-timeout 5 \
    >"$OUT/router.out" 2>"$OUT/router.log" &
ROUTER_PID=$!
SERVERS=("$ROUTER_PID" "${SERVERS[@]}")
ROUTER_ADDR=$(listen_addr "$OUT/router.out" router "$ROUTER_PID" 30)
ROUTER_ADMIN=$(listen_addr "$OUT/router.out" admin "$ROUTER_PID" 30)
wait_http_ok "http://$ROUTER_ADMIN/readyz" 30

GW_PIDS=()
GW_ADMIN=()
URLS=()
for g in 0 1; do
    "$BIN/gateway" --listen 127.0.0.1:0 --internal-listen 127.0.0.1:0 \
        --router "$ROUTER_ADDR" --registry "$REGISTRY" --jwt-secret "$SECRET" \
        --shards 1 --instance-id "soak-gw$g" --msg-rate 1000000 --msg-burst 1000000 \
        --admin-listen 127.0.0.1:0 --drain-timeout 5 \
        >"$OUT/gw$g.out" 2>"$OUT/gw$g.log" &
    pid=$!
    GW_PIDS+=("$pid")
    SERVERS=("$pid" "${SERVERS[@]}")
    GW_ADMIN+=("$(listen_addr "$OUT/gw$g.out" admin "$pid" 30)")
    URLS+=(--url "ws://$(listen_addr "$OUT/gw$g.out" gateway "$pid" 30)/ws")
done
for a in "${GW_ADMIN[@]}"; do wait_http_ok "http://$a/readyz" 30; done
log "stack up: redis $REDIS_PORT, router $ROUTER_ADDR, gateways ${URLS[*]}; output in $OUT"

# ---- sampling ------------------------------------------------------------------------------

# Sum of a metric's samples (any labels) in a Prometheus text body.
msum() {
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) printf "%d", s }' <<<"$1"
}
proc_fields() {
    local pid=$1 rss fds
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
    [[ -n $rss ]] || fds=
    printf '%s,%s' "$rss" "$fds"
}
header() {
    local h="t_s,phase,load1" g
    for g in 0 1; do
        h+=",gw${g}_rss_kb,gw${g}_fds,gw${g}_connections,gw${g}_pending_sends,gw${g}_client_queues"
        h+=",gw${g}_client_queue_bytes,gw${g}_link_queue_bytes,gw${g}_redis_in_flight"
    done
    h+=",router_rss_kb,router_fds,router_gateway_links,router_forwards_pending,router_link_queues"
    h+=",router_link_queue_bytes,router_redis_in_flight"
    h+=",redis_rss_kb,redis_fds,redis_used_memory,redis_keys,redis_clients"
    echo "$h"
}
sample() {
    local t=$1 row m g info
    row="$t,$(cat "$OUT/phase"),$(cut -d' ' -f1 /proc/loadavg)"
    for g in 0 1; do
        m=$(curl -s --max-time 2 "http://${GW_ADMIN[$g]}/metrics" || true)
        row+=",$(proc_fields "${GW_PIDS[$g]}")"
        row+=",$(msum "$m" connect_gateway_connections),$(msum "$m" connect_gateway_pending_sends)"
        row+=",$(msum "$m" connect_gateway_client_queues),$(msum "$m" connect_gateway_client_queue_bytes)"
        row+=",$(msum "$m" connect_gateway_link_queue_bytes),$(msum "$m" connect_gateway_redis_in_flight)"
    done
    m=$(curl -s --max-time 2 "http://$ROUTER_ADMIN/metrics" || true)
    row+=",$(proc_fields "$ROUTER_PID")"
    row+=",$(msum "$m" connect_router_gateway_links),$(msum "$m" connect_router_forwards_pending)"
    row+=",$(msum "$m" connect_router_link_queues),$(msum "$m" connect_router_link_queue_bytes)"
    row+=",$(msum "$m" connect_router_redis_in_flight)"
    info=$(redis-cli -p "$REDIS_PORT" info 2>/dev/null | tr -d '\r' || true)
    row+=",$(proc_fields "$REDIS_PID")"
    row+=",$(awk -F: '$1 == "used_memory" { print $2 }' <<<"$info")"
    row+=",$(redis-cli -p "$REDIS_PORT" dbsize 2>/dev/null || true)"
    row+=",$(awk -F: '$1 == "connected_clients" { print $2 }' <<<"$info")"
    echo "$row"
}
sampler() {
    local start next now
    start=$(cat "$OUT/t0")
    next=0
    while [[ ! -e $OUT/stop-sampler ]]; do
        now=$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
        sample "$now" >>"$OUT/samples.csv" || true
        next=$((next + SAMPLE_S))
        sleep "$(awk -v s="$start" -v n="$(date +%s.%N)" -v t="$next" \
            'BEGIN { d = s + t - n; printf "%.2f", (d > 0 ? d : 0) }')"
    done
}

header >"$OUT/samples.csv"
echo idle >"$OUT/phase"
date +%s.%N >"$OUT/t0"
sampler &
SAMPLER_PID=$!
HELPERS+=("$SAMPLER_PID")
sleep 2

# ---- maximum sustained rate ----------------------------------------------------------------

# "rate" when the perf report at $1 passes the sweep's bar at target rate $2, else a reason.
judge_sweep() {
    python3 - "$1" "$2" "$SWEEP_P99_MS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
rate, p99_bound = float(sys.argv[2]), float(sys.argv[3])
m, c, e = r["messages"], r["connections"], r["errors"]
bad = {k: m[k] for k in ("unsent", "failed", "missing_acks", "unexpected_acks", "duplicates",
                         "order_violations", "lost", "silent_receivers") if m[k]}
bad.update({k: c[k] for k in ("failed", "dropped") if c[k]})
bad.update({k: e[k] for k in ("error_frames", "bad_frames") if e[k]})
p99 = r["latency_us"]["delivery"]["p99"] / 1000
if bad:
    print("not clean: %s" % bad)
elif m["send_rate"] < 0.95 * rate or m["receive_rate"] < 0.95 * rate:
    print("behind: sent %.0f/s, received %.0f/s" % (m["send_rate"], m["receive_rate"]))
elif p99 > p99_bound:
    print("delivery p99 %.1f ms over %.0f ms" % (p99, p99_bound))
else:
    print("ok: delivery p99 %.1f ms, sent %.0f/s" % (p99, m["send_rate"]))
EOF
}

if [[ -n ${SOAK_MAX_RATE:-} ]]; then
    MAX_RATE=$SOAK_MAX_RATE
    echo "given: SOAK_MAX_RATE=$MAX_RATE" >"$OUT/sweep.txt"
    log "maximum sustained rate given: $MAX_RATE msg/s"
else
    echo sweep >"$OUT/phase"
    MAX_RATE=0
    : >"$OUT/sweep.txt"
    # On this shared machine one step can miss the bar for a neighbour's burst of CPU, so a
    # rate ends the sweep only when it fails twice.
    for ((rate = SWEEP_START; rate <= SWEEP_LIMIT; rate += SWEEP_STEP)); do
        verdict=
        for try in 1 2; do
            name=sweep-$rate-$try
            "$BIN/perf" load "${URLS[@]}" --secret "$SECRET" --clients "$CLIENTS" --rate "$rate" \
                --duration 10 --warmup 2 --json "$OUT/$name.json" \
                >"$OUT/$name.txt" 2>"$OUT/$name.log" || true
            if [[ -s $OUT/$name.json ]]; then
                verdict=$(judge_sweep "$OUT/$name.json" "$rate")
            else
                verdict="perf failed (see $name.log)"
            fi
            echo "$rate msg/s, try $try: $verdict (load $(cut -d' ' -f1-3 /proc/loadavg))" |
                tee -a "$OUT/sweep.txt" >&2
            sleep 2
            [[ $verdict == ok:* ]] && break
        done
        [[ $verdict == ok:* ]] || break
        MAX_RATE=$rate
    done
    if ((MAX_RATE == 0)); then
        echo "soak: not even $SWEEP_START msg/s was sustained; see $OUT/sweep.txt" >&2
        exit 1
    fi
    log "maximum sustained rate: $MAX_RATE msg/s"
fi
HALF=$(awk -v m="$MAX_RATE" 'BEGIN { printf "%d", m / 2 }')
STEADY_RATE=$((HALF - CHURN_RATE))
((STEADY_RATE > 0)) || { echo "soak: half of $MAX_RATE leaves nothing after the churn's $CHURN_RATE msg/s" >&2; exit 2; }

# ---- the soak ------------------------------------------------------------------------------

echo soak >"$OUT/phase"
SOAK_T0=$(awk -v s="$(cat "$OUT/t0")" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
log "soak: $DURATION_S s at $HALF msg/s (steady $CLIENTS clients at $STEADY_RATE + churn $CHURN_CLIENTS clients at $CHURN_RATE), warm-up $WARMUP_S s, sample every $SAMPLE_S s; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/perf" load "${URLS[@]}" --secret "$SECRET" --clients "$CLIENTS" --rate "$STEADY_RATE" \
    --duration "$DURATION_S" --grace 15 --json "$OUT/soak.json" \
    >"$OUT/soak.txt" 2>"$OUT/soak.log" &
STEADY_PID=$!
HELPERS=("$STEADY_PID" "${HELPERS[@]}")

churn() {
    local i=0
    while [[ ! -e $OUT/stop-churn ]] && kill -0 "$STEADY_PID" 2>/dev/null; do
        "$BIN/perf" load "${URLS[@]}" --secret "$SECRET" --first-client "$CHURN_FIRST" \
            --clients "$CHURN_CLIENTS" --rate "$CHURN_RATE" --duration "$CHURN_SECONDS" \
            --connect-rate $((CHURN_CLIENTS * 2)) --grace 11 --threads 1 --ledger \
            --json "$OUT/churn/$i.json" >"$OUT/churn/$i.txt" 2>"$OUT/churn/$i.log" ||
            echo "churn run $i: perf exited $?" >>"$OUT/churn/errors.txt"
        i=$((i + 1))
    done
}
churn &
CHURN_PID=$!
HELPERS=("$CHURN_PID" "${HELPERS[@]}")

STEADY_RC=0
wait "$STEADY_PID" || STEADY_RC=$?
touch "$OUT/stop-churn"
wait "$CHURN_PID" || true
log "load finished (steady perf exit $STEADY_RC); load $(cut -d' ' -f1-3 /proc/loadavg)"

# Every client is gone: queues, connections and session keys must go back to idle.
echo after >"$OUT/phase"
sleep 10
touch "$OUT/stop-sampler"
wait "$SAMPLER_PID" 2>/dev/null || true

# A graceful stop: every server must drain and exit 0.
stop_in_order "${GW_PIDS[@]}" "$ROUTER_PID"
echo "gw0 gw1 router exit statuses after SIGTERM: $STOP_RCS" >"$OUT/stop.txt"
grep -l "panicked" "$OUT"/*.log >>"$OUT/stop.txt" 2>/dev/null || true

python3 scripts/soak-analyze.py "$OUT" --soak-start "$SOAK_T0" --warmup "$WARMUP_S" \
    --duration "$DURATION_S" \
    --max-rate "$MAX_RATE" --rate "$HALF" --steady-rate "$STEADY_RATE" --steady-exit "$STEADY_RC" \
    --churn-clients "$CHURN_CLIENTS"
