#!/bin/bash
# Tests gateway-entrypoint.sh and http-probe.sh against a fake ECS task metadata endpoint (a
# Python HTTP server on a free loopback port), since no image can be built or run here.
# Prints "entrypoint-test: N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
entry="$here/gateway-entrypoint.sh"
probe="$here/http-probe.sh"
tmp=$(mktemp -d)
server_pid=""
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# A Fargate-shaped task metadata document (v4, platform 1.4): a link-local address must not be
# picked, the task ENI's address must.
cat >"$tmp/task.json" <<'JSON'
{
  "Cluster": "arn:aws:ecs:eu-west-1:111122223333:cluster/connect",
  "TaskARN": "arn:aws:ecs:eu-west-1:111122223333:task/connect/0123456789abcdef0123456789abcdef",
  "Family": "connect-gateway",
  "Revision": "7",
  "DesiredStatus": "RUNNING",
  "KnownStatus": "RUNNING",
  "Limits": {"CPU": 2, "Memory": 4096},
  "AvailabilityZone": "eu-west-1a",
  "LaunchType": "FARGATE",
  "Containers": [
    {
      "DockerId": "0123456789abcdef0123456789abcdef-1234567890",
      "Name": "gateway",
      "Image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/connect/gateway:1.0.0",
      "Labels": {"com.amazonaws.ecs.container-name": "gateway"},
      "Networks": [
        {
          "NetworkMode": "awsvpc",
          "IPv4Addresses": [ "10.40.3.17" ],
          "AttachmentIndex": 0,
          "MACAddress": "0a:1b:2c:3d:4e:5f",
          "IPv4SubnetCIDRBlock": "10.40.0.0/19",
          "PrivateDNSName": "ip-10-40-3-17.eu-west-1.compute.internal",
          "SubnetGatewayIpv4Address": "10.40.0.1/19"
        }
      ]
    }
  ]
}
JSON

# The early-drain tests rewrite this copy while the entrypoint polls it.
cp "$tmp/task.json" "$tmp/stopping.json"

cat >"$tmp/server.py" <<'PY'
import http.server, sys, os
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        files = {"/v4/abc/task": "task.json", "/v4/stop/task": "stopping.json"}
        if self.path in files:
            code, body = 200, open(os.path.join(d, files[self.path]), "rb").read()
        else:
            code, body = {"/livez": (200, b"ok\n"), "/broken/task": (500, b"oops\n")}.get(self.path, (404, b"not found\n"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.HTTPServer):
    def handle_error(self, request, client_address):
        pass  # http-probe hangs up after the status line: not an error
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
python3 "$tmp/server.py" "$tmp" >"$tmp/port" &
server_pid=$!
for _ in $(seq 50); do [[ -s $tmp/port ]] && break; sleep 0.1; done
port=$(cat "$tmp/port")
[[ -n $port ]] || { echo "entrypoint-test: fake metadata server did not start"; exit 1; }

# A free port with nothing listening (bound and released again).
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Fake `hostname` for the fallback path.
mkdir -p "$tmp/bin-ok" "$tmp/bin-none"
printf '#!/bin/sh\necho "169.254.172.2 127.0.0.1 10.9.8.7 fe80::1"\n' >"$tmp/bin-ok/hostname"
printf '#!/bin/sh\necho "169.254.172.2 127.0.0.1"\n' >"$tmp/bin-none/hostname"
chmod +x "$tmp/bin-ok/hostname" "$tmp/bin-none/hostname"

passed=0
failed=0
check() { # NAME EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1: expected [$2], got [$3]"
    fi
}
# Runs the entrypoint with a command that prints CONNECT_ADVERTISE as the entrypoint left it;
# prints "<rc>:<value>". (The single quotes are deliberate: the inner shell expands it.)
# shellcheck disable=SC2016
run() {
    local out rc
    out=$(env -u CONNECT_ADVERTISE "$@" "$entry" sh -c 'printf %s "${CONNECT_ADVERTISE:-unset}"' 2>/dev/null)
    rc=$?
    printf '%s:%s' "$rc" "$out"
}
# shellcheck disable=SC2016
runargs() { # like run, the command gets extra arguments (to see --advertise left alone)
    local out rc
    out=$(env -u CONNECT_ADVERTISE ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$port/v4/abc" \
        "$entry" sh -c 'printf %s "${CONNECT_ADVERTISE:-unset}"' sh "$@" 2>/dev/null)
    rc=$?
    printf '%s:%s' "$rc" "$out"
}

check "metadata: task IP from Containers[0].Networks[0]" "0:10.40.3.17" \
    "$(run ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$port/v4/abc")"
check "metadata: trailing slash in the URI" "0:10.40.3.17" \
    "$(run ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$port/v4/abc/")"
check "CONNECT_ADVERTISE already set is kept" "0:10.1.1.1" \
    "$(run CONNECT_ADVERTISE=10.1.1.1 ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$port/v4/abc")"
check "--advertise flag: nothing exported" "0:unset" "$(runargs --advertise 10.2.2.2)"
check "--advertise=HOST flag: nothing exported" "0:unset" "$(runargs --advertise=10.2.2.2)"
check "metadata 500: falls back to hostname -I" "0:10.9.8.7" \
    "$(run PATH="$tmp/bin-ok:$PATH" ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$port/broken")"
check "metadata unreachable: falls back to hostname -I" "0:10.9.8.7" \
    "$(run PATH="$tmp/bin-ok:$PATH" ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$closed/v4/abc")"
check "no metadata, only link-local/loopback: exit 2" "2:" \
    "$(run PATH="$tmp/bin-none:$PATH")"
check "no command: exit 2" "2" "$(env -u CONNECT_ADVERTISE "$entry" >/dev/null 2>&1; echo $?)"
check "exec: the command's exit code comes through" "7" \
    "$(CONNECT_ADVERTISE=10.1.1.1 "$entry" sh -c 'exit 7' >/dev/null 2>&1; echo $?)"

# Early drain: a long-running fake gateway that records SIGTERM, started through the
# entrypoint in the background with a 0.2 s metadata poll. (Single quotes: the inner sh expands.)
# shellcheck disable=SC2016
start_fake_gateway() { # EXTRA_ENV...
    rm -f "$tmp/got-term"
    env -u CONNECT_ADVERTISE ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:$port/v4/stop" \
        ECS_EARLY_DRAIN_POLL=0.2 "$@" "$entry" \
        sh -c 'trap "echo term >\"$0\"; exit 0" TERM; while :; do sleep 0.1; done' "$tmp/got-term" \
        >/dev/null 2>&1 &
    fake_pid=$!
}
term_within() { # SECONDS: prints "term" if the fake gateway got SIGTERM by then, else "none"
    for _ in $(seq $(($1 * 10))); do
        [[ -e $tmp/got-term ]] && { echo term; return; }
        sleep 0.1
    done
    echo none
}
set_desired() { # STATUS: the task's DesiredStatus (its first occurrence) in the polled document
    sed -i "0,/\"DesiredStatus\": \"[A-Z]*\"/s//\"DesiredStatus\": \"$1\"/" "$tmp/stopping.json"
}

set_desired RUNNING
start_fake_gateway
check "early drain: no SIGTERM while DesiredStatus is RUNNING" "none" "$(term_within 1)"
set_desired STOPPED
check "early drain: SIGTERM once DesiredStatus is STOPPED" "term" "$(term_within 3)"
wait "$fake_pid" 2>/dev/null
check "early drain: the watcher is gone after the gateway exits" "0" \
    "$(sleep 0.5; pgrep -f "$tmp/got-term" >/dev/null && echo 1 || echo 0)"
start_fake_gateway ECS_EARLY_DRAIN=off
check "early drain off: no SIGTERM even when STOPPED" "none" "$(term_within 1)"
kill "$fake_pid" 2>/dev/null
wait "$fake_pid" 2>/dev/null

check "http-probe: 200" "0" "$("$probe" 127.0.0.1 "$port" /livez; echo $?)"
check "http-probe: 404" "1" "$("$probe" 127.0.0.1 "$port" /nope; echo $?)"
check "http-probe: connection refused" "1" "$("$probe" 127.0.0.1 "$closed" /livez 2>/dev/null; echo $?)"

echo "entrypoint-test: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
