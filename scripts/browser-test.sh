#!/usr/bin/env bash
# The demo chat page in a real browser: headless Chromium (Debian's `chromium`) driven by
# playwright-core (tests/browser/demo.test.mjs) opens it as alice and as bob against a running
# `connect`, chats both ways, checks acks and what each page shows, and writes a screenshot to
# docs/demo.png. Installs what is missing on a fresh Debian machine (chromium, node, the npm
# packages from tests/browser/package-lock.json; never a browser download).
#
#   scripts/browser-test.sh
#
# Env: CONNECT_BIN (default: builds and uses target/debug/connect), CHROMIUM (default
# /usr/bin/chromium), DEMO_SCREENSHOT (default docs/demo.png; empty for none).
# Ends with `browser: N passed, M failed`; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

fail() {
    echo "browser-test: $*" >&2
    echo "browser: 0 passed, 1 failed"
    exit 1
}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
APT_UPDATED=""
apt_install() {
    if [ -z "$APT_UPDATED" ]; then
        $SUDO apt-get update -qq || fail "apt-get update failed"
        APT_UPDATED=1
    fi
    echo "== installing $* (Debian packages)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null \
        || fail "apt-get install $* failed"
}

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || apt_install chromium
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
echo "== $("$CHROMIUM" --version 2>/dev/null || echo chromium), node $(node --version)"

# playwright-core only: it never downloads a browser.
if [ ! -d tests/browser/node_modules/playwright-core ] \
    || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    echo "== npm ci (tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
fi

if [ -z "${CONNECT_BIN:-}" ]; then
    echo "== cargo build -p connect"
    cargo build -q -p connect --bin connect || fail "cargo build failed"
    CONNECT_BIN="$ROOT/target/debug/connect"
    [ -n "${CARGO_TARGET_DIR:-}" ] && CONNECT_BIN="$CARGO_TARGET_DIR/debug/connect"
fi
[ -x "$CONNECT_BIN" ] || fail "$CONNECT_BIN is not an executable"

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A port can be taken between choosing it and binding it: try a few pairs.
for attempt in 1 2 3; do
    PORT=$(free_port)
    ROUTER_PORT=$(free_port)
    CONNECT_LOG=warn "$CONNECT_BIN" --listen "127.0.0.1:$PORT" --router-listen "127.0.0.1:$ROUTER_PORT" \
        --shards 2 >"$WORK/connect.out" 2>"$WORK/connect.err" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        grep -q "Demo chat:" "$WORK/connect.out" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "Demo chat:" "$WORK/connect.out" 2>/dev/null && break
    echo "connect did not start (attempt $attempt):" >&2
    cat "$WORK/connect.err" >&2
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
done
[ -n "$SERVER_PID" ] || fail "connect did not start"
echo "== connect on 127.0.0.1:$PORT (router 127.0.0.1:$ROUTER_PORT)"

SHOT=${DEMO_SCREENSHOT-docs/demo.png}
[ -n "$SHOT" ] && case "$SHOT" in /*) ;; *) SHOT="$ROOT/$SHOT" ;; esac
echo "== node tests/browser/demo.test.mjs"
set +e
DEMO_URL="http://127.0.0.1:$PORT" CHROMIUM="$CHROMIUM" DEMO_SCREENSHOT="$SHOT" \
    node tests/browser/demo.test.mjs 2>&1 | tee "$WORK/node.out"
rc=${PIPESTATUS[0]}
set -e
if ! grep -q '^browser: [0-9]* passed, [0-9]* failed$' "$WORK/node.out"; then
    echo "browser: 0 passed, 1 failed"
    exit 1
fi
if [ "$rc" -ne 0 ]; then
    echo "--- connect stderr (last 50 lines)"
    tail -50 "$WORK/connect.err"
    grep '^browser: ' "$WORK/node.out" | tail -1
    exit 1
fi
