# Sourced by scripts/soak.sh and scripts/leak.sh: starting a local stack's processes on ports
# nobody else holds. The servers bind port 0 and print what they got; redis-server cannot, so
# it gets a free port and is checked to be the one answering there (this machine runs other
# stacks and load generators at the same time, and a port found free can be taken before it is
# bound).

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_redis LOG: starts redis-server in the background; sets REDIS_PORT and REDIS_PID.
start_redis() {
    local log=$1 try i
    for ((try = 0; try < 5; try++)); do
        REDIS_PORT=$(free_port)
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            >"$log" 2>&1 &
        REDIS_PID=$!
        for ((i = 0; i < 100; i++)); do
            kill -0 "$REDIS_PID" 2>/dev/null || break
            if redis-cli -p "$REDIS_PORT" info server 2>/dev/null | tr -d '\r' |
                grep -qx "process_id:$REDIS_PID"; then
                return 0
            fi
            sleep 0.1
        done
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    done
    echo "redis-server did not start (see $log)" >&2
    return 1
}

# listen_addr FILE WHAT PID TIMEOUT_S: waits for "WHAT listening on ADDR" in FILE (the process'
# stdout) and prints ADDR; fails if PID exits first or TIMEOUT_S pass.
listen_addr() {
    local file=$1 what=$2 pid=$3 timeout_s=$4 i line
    for ((i = 0; i < timeout_s * 10; i++)); do
        line=$(grep -m1 "^$what listening on " "$file" 2>/dev/null || true)
        if [[ -n $line ]]; then
            awk '{ print $4 }' <<<"$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "no '$what listening on' from pid $pid in $file" >&2
    return 1
}

# wait_http_ok URL TIMEOUT_S
wait_http_ok() {
    local url=$1 timeout_s=$2 i
    for ((i = 0; i < timeout_s * 10; i++)); do
        curl -fs --max-time 2 "$url" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$url did not answer in $timeout_s s" >&2
    return 1
}

# stop_in_order PID...: SIGTERM each server in turn (gateways before the router, so they drain
# their clients and links first) and wait for it; sets STOP_RCS to their exit statuses,
# space-separated. (Not a command substitution: `wait` works only in the shell that started
# the servers.)
stop_in_order() {
    local rcs=() pid rc
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
        rc=0
        wait "$pid" || rc=$?
        rcs+=("$rc")
    done
    STOP_RCS="${rcs[*]}"
}
