#!/bin/bash
# Entrypoint of the gateway image: finds the address routers must dial (the task's private IP
# in Fargate's awsvpc mode), exports it as CONNECT_ADVERTISE, then execs the command it was
# given (the gateway binary and its flags), so the gateway is the one that receives SIGTERM.
#
#   gateway-entrypoint /usr/local/bin/gateway [FLAGS...]
#
# Where the IP comes from, first match wins:
#   1. CONNECT_ADVERTISE already set (or --advertise among the flags): left alone.
#   2. The ECS task metadata endpoint v4: GET $ECS_CONTAINER_METADATA_URI_V4/task, then
#      Containers[0].Networks[0].IPv4Addresses[0] (every container of an awsvpc task shares
#      the task's one ENI, so the first address found is the task IP). Plain bash /dev/tcp:
#      the image has no curl.
#   3. `hostname -I`: the first address that is neither loopback nor link-local (Fargate also
#      gives tasks a 169.254.x.x address for the metadata endpoint).
# None found: exit 2 with a message (the gateway itself would refuse a wildcard address).
#
# Early drain (ECS_EARLY_DRAIN=on, the default; "off" disables it): ECS stops a service task by
# first deregistering it from the ALB, waiting out the deregistration delay, and only then
# sending SIGTERM; by then the ALB has already closed the task's WebSockets without a close
# frame, so the gateway's drain (1012 + reconnect_after_ms, spread over the drain) would reach
# nobody. A background watcher polls the task metadata every ECS_EARLY_DRAIN_POLL seconds (5)
# and, as soon as the task's DesiredStatus is STOPPED, sends SIGTERM to the gateway itself,
# while the ALB still carries the task's connections. If ECS only publishes STOPPED at SIGTERM
# time, the watcher changes nothing (deploy/README.md, "Rolling out").
set -euo pipefail

log() { echo "gateway-entrypoint: $*" >&2; }

# GET http://HOST[:PORT]/PATH with bash's /dev/tcp; prints the response body.
http_get() {
    local url=$1 rest hostport host port path response
    rest=${url#http://}
    [[ $rest != "$url" ]] || { log "not an http:// URL: $url"; return 1; }
    hostport=${rest%%/*}
    path=/${rest#*/}
    [[ $rest == */* ]] || path=/
    host=${hostport%:*}
    port=80
    [[ $hostport == *:* ]] && port=${hostport##*:}
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAccept: application/json\r\n\r\n' "$path" "$hostport" >&3
    # HTTP/1.0: the server closes after the response; read it all (or give up after 5 s).
    response=""
    IFS= read -r -d '' -t 5 response <&3 || true
    exec 3<&-
    [[ $response =~ ^HTTP/1\.[01][[:space:]]200 ]] || { log "metadata endpoint answered: ${response%%$'\r'*}"; return 1; }
    printf '%s' "${response#*$'\r\n\r\n'}"
}

# Prints the first IPv4 address of the first network in a task metadata document.
ip_from_metadata() {
    local body re='"IPv4Addresses"[[:space:]]*:[[:space:]]*\[[[:space:]]*"([0-9]{1,3}(\.[0-9]{1,3}){3})"'
    body=$(http_get "${ECS_CONTAINER_METADATA_URI_V4%/}/task") || return 1
    [[ $body =~ $re ]] || { log "no IPv4Addresses in the task metadata"; return 1; }
    printf '%s' "${BASH_REMATCH[1]}"
}

# Polls the task metadata until DesiredStatus is STOPPED, then SIGTERMs PID (the gateway, which
# this shell becomes by exec). Returns when it did, or when PID is gone.
watch_for_stop() {
    local pid=$1 poll=${ECS_EARLY_DRAIN_POLL:-5} body
    local re='"DesiredStatus"[[:space:]]*:[[:space:]]*"([A-Z_]+)"'
    while sleep "$poll"; do
        kill -0 "$pid" 2>/dev/null || return 0
        body=$(http_get "${ECS_CONTAINER_METADATA_URI_V4%/}/task" 2>/dev/null) || continue
        # The task's own DesiredStatus comes before the containers' in the document.
        if [[ $body =~ $re && ${BASH_REMATCH[1]} == STOPPED ]]; then
            log "ECS is stopping this task: SIGTERM to the gateway now, while the ALB still carries its connections"
            kill -TERM "$pid" 2>/dev/null || true
            return 0
        fi
    done
}

ip_from_interfaces() {
    local a
    for a in $(hostname -I 2>/dev/null); do
        case $a in
            127.* | 169.254.* | *:*) ;;
            *) printf '%s' "$a"; return 0 ;;
        esac
    done
    return 1
}

if [[ $# -eq 0 ]]; then
    log "usage: gateway-entrypoint COMMAND [ARGS...]"
    exit 2
fi

advertise_flag=false
for arg in "$@"; do
    case $arg in --advertise | --advertise=*) advertise_flag=true ;; esac
done

if [[ -z ${CONNECT_ADVERTISE:-} && $advertise_flag == false ]]; then
    ip=""
    if [[ -n ${ECS_CONTAINER_METADATA_URI_V4:-} ]]; then
        # The endpoint answers as soon as the container starts; retry briefly all the same.
        for attempt in 1 2 3 4 5; do
            if ip=$(ip_from_metadata); then break; fi
            ip=""
            log "task metadata not available (attempt $attempt of 5)"
            sleep 1
        done
    fi
    if [[ -z $ip ]]; then
        ip=$(ip_from_interfaces) || ip=""
        [[ -z $ip ]] || log "using the interface address $ip"
    fi
    if [[ -z $ip ]]; then
        log "cannot find this task's IP: set CONNECT_ADVERTISE (or --advertise)"
        exit 2
    fi
    export CONNECT_ADVERTISE=$ip
    log "CONNECT_ADVERTISE=$ip"
fi

if [[ -n ${ECS_CONTAINER_METADATA_URI_V4:-} && ${ECS_EARLY_DRAIN:-on} != off ]]; then
    # $$ is this shell's PID, which exec hands to the gateway.
    watch_for_stop $$ </dev/null >&2 &
fi

exec "$@"
