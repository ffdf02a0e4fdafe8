#!/usr/bin/env bash
# Leak check (issue 7) on a short run: a router and two gateways under a leak checker, loaded
# with `perf load` plus connection churn for SECONDS (default 20), then stopped gracefully
# (SIGTERM: the gateways drain, every server returns from main), so that what the checker
# reports as lost at exit is memory no one can free any more, not live state of a killed
# process.
#
#   scripts/leak.sh [SECONDS]
#
# Checkers (LEAK_TOOLS, default "valgrind lsan"):
# - valgrind: memcheck with --leak-check=full. valgrind does not implement io_uring, so the
#   servers run on epoll (--io epoll).
# - lsan: LeakSanitizer, built with RUSTC_BOOTSTRAP=1 RUSTFLAGS=-Zsanitizer=leak for
#   x86_64-unknown-linux-gnu (the stable toolchain ships its runtime); it runs at native speed
#   and on io_uring (--io auto), so it also covers the glommio path valgrind cannot.
# Both need the system allocator (feature system-alloc; mimalloc takes its memory from mmap,
# out of their sight). The builds go to target/leak (removed at the end unless
# LEAK_KEEP_BUILD=1); perf is the normal release build.
#
# Fails (exit 1) if any checker reports a definitely or indirectly lost block, or valgrind any
# memory error, or a server does not exit 0 after SIGTERM. Output (LEAK_OUT, default
# target/leak-out/<UTC time>): each checker's log per process, the perf reports, summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_LOAD=${1:-20}
TOOLS=${LEAK_TOOLS:-valgrind lsan}
OUT=${LEAK_OUT:-target/leak-out/$(date -u +%Y%m%dT%H%M%SZ)}
BUILD_DIR=$PWD/target/leak
TRIPLE=x86_64-unknown-linux-gnu
SECRET=leak-secret-0123456789
export CONNECT_LINK_SECRET=leak-link-secret-0123456789
FEATURES=gateway/system-alloc,router/system-alloc
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "leak: $(date -u +%H:%M:%S) $*" >&2; }

PIDS=()
stop_pid() {
    local pid=$1 wait_s=${2:-10} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 5; done
    wait 2>/dev/null || true
    [[ ${LEAK_KEEP_BUILD:-0} == 1 ]] || rm -rf "$BUILD_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/stack-lib.sh
source scripts/stack-lib.sh

log "building perf"
cargo build --release -p perf
PERF=target/release/perf

# One run: servers under "$@" (the checker's command prefix), load, graceful stop.
# $1: tool name, $2: binary dir, $3: --io mode, rest: wrapper command (may be empty).
run_under() {
    local tool=$1 bin=$2 io=$3
    shift 3
    local dir=$OUT/$tool
    mkdir -p "$dir/churn"
    start_redis "$dir/redis.log"
    local redis_pid=$REDIS_PID
    PIDS+=("$redis_pid")
    local registry=redis://127.0.0.1:$REDIS_PORT
    TOOL_LOG=$dir/$tool-router "$@" "$bin/router" --listen 127.0.0.1:0 \
        --registry "$registry" --shards 1 --io "$io" --admin-listen 127.0.0.1:0 \
        --drain-timeout 20 >"$dir/router.out" 2>"$dir/router.log" &
    local router_pid=$!
    PIDS+=("$router_pid")
    local router_addr router_admin
    router_addr=$(listen_addr "$dir/router.out" router "$router_pid" 120)
    router_admin=$(listen_addr "$dir/router.out" admin "$router_pid" 120)
    wait_http_ok "http://$router_admin/readyz" 120
    local gw_pids=() urls=() g pid admin
    for g in 0 1; do
        TOOL_LOG=$dir/$tool-gw$g "$@" "$bin/gateway" --listen 127.0.0.1:0 \
            --internal-listen 127.0.0.1:0 --router "$router_addr" \
            --registry "$registry" --jwt-secret "$SECRET" --shards 1 --io "$io" \
            --instance-id "leak-gw$g" --admin-listen 127.0.0.1:0 --drain-timeout 20 \
            --msg-rate 1000000 --msg-burst 1000000 >"$dir/gw$g.out" 2>"$dir/gw$g.log" &
        pid=$!
        gw_pids+=("$pid")
        PIDS+=("$pid")
        admin=$(listen_addr "$dir/gw$g.out" admin "$pid" 120)
        urls+=(--url "ws://$(listen_addr "$dir/gw$g.out" gateway "$pid" 120)/ws")
        wait_http_ok "http://$admin/readyz" 120
    done
    log "$tool: stack up (io $io); $SECONDS_LOAD s of load with churn"

    "$PERF" load "${urls[@]}" --secret "$SECRET" --clients 200 --rate 100 \
        --duration "$SECONDS_LOAD" --connect-rate 200 --connect-timeout 30 --grace 15 \
        --threads 1 --json "$dir/steady.json" >"$dir/steady.txt" 2>"$dir/steady.log" &
    local steady=$!
    PIDS+=("$steady")
    local n=0
    while kill -0 "$steady" 2>/dev/null; do
        "$PERF" load "${urls[@]}" --secret "$SECRET" --first-client 1000000 --clients 40 \
            --rate 20 --duration 2 --connect-rate 100 --connect-timeout 30 --grace 15 \
            --threads 1 --json "$dir/churn/$n.json" >"$dir/churn/$n.txt" 2>&1 || true
        n=$((n + 1))
    done
    wait "$steady" || true

    # Gateways first (they drain their clients and links), then the router.
    stop_in_order "${gw_pids[@]}" "$router_pid"
    stop_pid "$redis_pid"
    echo "$STOP_RCS" >"$dir/exit-statuses"
    log "$tool: stopped; exit statuses gw0 gw1 router: $STOP_RCS"
}

# exec: the server then is the process the caller holds the PID of and signals.
valgrind_wrap() {
    exec valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --num-callers=40 --fair-sched=yes \
        --log-file="$TOOL_LOG.log" "$@"
}
lsan_wrap() {
    # exitcode=0: the report is judged from the log, the exit status from the drain. The slow
    # unwinder: the prebuilt std has no frame pointers, so the fast one stops at its first frame.
    LSAN_OPTIONS="log_path=$TOOL_LOG:exitcode=0:fast_unwind_on_malloc=0:malloc_context_size=40:suppressions=$PWD/scripts/lsan.supp:print_suppressions=1" exec "$@"
}

SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
FAIL=0
for tool in $TOOLS; do
    case $tool in
    valgrind)
        if ! command -v valgrind >/dev/null; then
            echo "valgrind: skipped, not installed" | tee -a "$SUMMARY"
            continue
        fi
        log "valgrind: building gateway and router (release, system allocator) in $BUILD_DIR"
        CARGO_TARGET_DIR=$BUILD_DIR cargo build --release -p gateway -p router --features "$FEATURES"
        run_under valgrind "$BUILD_DIR/release" epoll valgrind_wrap
        ;;
    lsan)
        log "lsan: building gateway and router with -Zsanitizer=leak in $BUILD_DIR"
        if ! RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=leak" CARGO_TARGET_DIR=$BUILD_DIR \
            cargo build --target "$TRIPLE" -p gateway -p router --features "$FEATURES" \
            >"$OUT/lsan-build.log" 2>&1; then
            echo "lsan: build failed: $(grep -m1 '^error' "$OUT/lsan-build.log")" | tee -a "$SUMMARY"
            FAIL=1
            continue
        fi
        run_under lsan "$BUILD_DIR/$TRIPLE/debug" auto lsan_wrap
        ;;
    *)
        echo "leak: unknown tool $tool" >&2
        exit 2
        ;;
    esac
done

python3 - "$OUT" "$TOOLS" <<'EOF' | tee -a "$SUMMARY"
import glob, json, os, re, sys
out, tools = sys.argv[1], sys.argv[2].split()
fail = False
OURS = ("gateway::", "router::", "runtime::", "registry::", "resp_client::", "wire::", "ops::",
        "auth::")
for tool in tools:
    d = os.path.join(out, tool)
    if not os.path.isdir(d):
        continue
    rcs = open(os.path.join(d, "exit-statuses")).read().split()
    if any(rc != "0" for rc in rcs):
        print(f"{tool}: a server did not exit 0 after SIGTERM (gw0 gw1 router: {' '.join(rcs)})")
        fail = True
    for name in ("gw0", "gw1", "router"):
        if tool == "valgrind":
            text = open(os.path.join(d, f"valgrind-{name}.log")).read()
            get = lambda k: re.search(k + r": +([\d,]+) bytes in ([\d,]+) blocks", text)
            dl, il = get("definitely lost"), get("indirectly lost")
            n = lambda m: int(m.group(1).replace(",", "")) if m else 0
            err = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
            errors = int(err.group(1).replace(",", "")) if err else -1
            reach = re.search(r"still reachable: +([\d,]+) bytes in ([\d,]+) blocks", text)
            poss = re.search(r"possibly lost: +([\d,]+) bytes in ([\d,]+) blocks", text)
            # The loss records (stacks) that name one of our crates.
            records = re.split(r"\n==\d+== \n", text)
            ours = sum(1 for rec in records if "definitely lost" in rec and
                       any(o in rec for o in OURS))
            print(f"valgrind {name}: definitely lost {n(dl)} B, indirectly lost {n(il)} B, "
                  f"possibly lost {n(poss)} B, still reachable {n(reach)} B, "
                  f"errors {errors}; definite-loss records naming our crates: {ours}")
            if errors != 0 or n(dl) or n(il):
                fail = True
        else:
            logs = glob.glob(os.path.join(d, f"lsan-{name}.*"))
            text = "".join(open(p).read() for p in logs)
            m = re.search(r"SUMMARY: LeakSanitizer: (\d+) byte\(s\) leaked in (\d+) allocation",
                          text)
            leaked = int(m.group(1)) if m else 0
            supp = re.findall(r"^\s+(\d+)\s+(\d+) (\S+)$", text, re.M)
            hidden = "; suppressed (scripts/lsan.supp): " + ", ".join(
                f"{b} B in {c} allocation(s) at {t}" for c, b, t in supp) if supp else ""
            print(f"lsan {name}: "
                  f"{'%d B leaked in %s allocations' % (leaked, m.group(2)) if m else 'no leak'}"
                  + hidden)
            if leaked or "ERROR: LeakSanitizer" in text:
                fail = True
    reports = [json.load(open(p)) for p in [os.path.join(d, "steady.json")] +
               sorted(glob.glob(os.path.join(d, "churn", "*.json"))) if os.path.exists(p)]
    tot = lambda a, b: sum(r[a][b] for r in reports)
    print(f"{tool} load: {len(reports)} perf runs, {tot('connections', 'connected')} connections, "
          f"sent {tot('messages', 'sent')}, delivered {tot('messages', 'delivered')}, "
          f"offline {tot('messages', 'offline')}, failed {tot('messages', 'failed')}, "
          f"received {tot('messages', 'received')}, "
          f"silent drops {tot('messages', 'silent_drops')}, duplicates "
          f"{tot('messages', 'duplicates')}, connect failures {tot('connections', 'failed')}")
print("RESULT: " + ("FAIL" if fail else "PASS"))
sys.exit(1 if fail else 0)
EOF
rc=${PIPESTATUS[0]}
((FAIL == 0 && rc == 0)) || exit 1
