#!/bin/bash
# Container health probe without curl: `http-probe HOST PORT PATH` exits 0 when
# GET http://HOST:PORT/PATH answers 200 within 2 seconds, 1 otherwise.
# Used by the gateway image's HEALTHCHECK and the ECS task definition (GET /livez on 9090).
set -uo pipefail
host=${1:-127.0.0.1}
port=${2:-9090}
path=${3:-/livez}
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$path" "$host" "$port" >&3
status=""
IFS= read -r -t 2 status <&3 || true
exec 3<&-
[[ $status =~ ^HTTP/1\.[01][[:space:]]200 ]]
