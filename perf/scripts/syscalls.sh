#!/usr/bin/env bash
# System calls per message on the gateways and the router under a steady load.
#
#   perf/scripts/syscalls.sh RATE [CLIENTS] [BIN_DIR]
#
# Starts `perf run --scenario steady` (redis, router, 2 gateways, CLIENTS clients in pairs across
# the gateways, RATE msg/s for 14 s after a 2 s warm-up), and 6 s in counts every system call of
# each server for 5 s with `perf stat -e 'syscalls:sys_enter_*'` (kernel tracepoints: no ptrace
# slow-down, unlike `strace -c`). Messages in the window = RATE x 5. Each message costs, at the
# floor, one read and one write per hop end; batched k to a call, 2/k calls per message.
set -euo pipefail
rate=${1:?rate}
clients=${2:-2000}
bin_dir=${3:-$(dirname "$0")/../../target/release}
perf_bin=$(dirname "$0")/../../target/release/perf
window=5
out=$(mktemp -d)
"$perf_bin" run --scenario steady --clients "$clients" --rate "$rate" --duration 14 --warmup 2 \
    --bin-dir "$bin_dir" --json "$out/run.json" >"$out/run.txt" 2>"$out/run.err" &
runner=$!
# Connect phase (clients / 2000 per s) + warm-up + 2 s into the measured window.
sleep "$(( clients / 2000 + 6 ))"
declare -A pids
while read -r pid args; do
    case "$args" in
        *router*--listen*) pids[router]=$pid ;;
        *gateway*perf-gw0*) pids[gateway0]=$pid ;;
        *gateway*perf-gw1*) pids[gateway1]=$pid ;;
    esac
done < <(ps --ppid "$runner" -o pid=,args=)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in "${!pids[@]}"; do
    perf stat -x, -e 'syscalls:sys_enter_*' -p "${pids[$name]}" -- sleep "$window" 2>"$out/$name.csv" &
done
wait $(jobs -p | grep -v "^$runner$") 2>/dev/null || true
wait "$runner" || true
msgs=$(( rate * window ))
echo "rate $rate msg/s, $clients clients, $window s window = $msgs messages"
for name in router gateway0 gateway1; do
    f="$out/$name.csv"
    [ -f "$f" ] || continue
    top=$(awk -F, -v msgs="$msgs" '$1 ~ /^[0-9]+$/ && $1 > 0 {
            sub("syscalls:sys_enter_", "", $3); printf "%.3f %s\n", $1 / msgs, $3 }' "$f" |
        sort -rn | head -6 | awk '{ printf " %s %s", $2, $1 }')
    awk -F, -v name="$name" -v msgs="$msgs" '$1 ~ /^[0-9]+$/ { total += $1 }
        END { printf "%-9s %9d syscalls = %.3f per message;", name, total, total / msgs }' "$f"
    echo "$top"
done
grep -E "^(rate|result|  delivery|  ack)" "$out/run.txt" || true
echo "(raw: $out)"
