#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine (Debian's redis-server),
# checks formatting and lints, builds the binaries and runs every test. Tests start their own
# redis-server instances on free loopback ports and stop them when they finish.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing redis-server (Debian package)"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build --bins"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace -- --test-threads "${CONNECT_TEST_THREADS:-4}"
# The same end-to-end suites (incl. the registry and hostile-input ones) on the epoll fallback: forced with --io=epoll, and chosen by
# --io=auto because a seccomp filter denies io_uring (as on AWS Fargate).
for io in epoll seccomp; do
    echo "== end-to-end tests with CONNECT_E2E_IO=$io"
    CONNECT_E2E_IO=$io cargo test -p connect --test e2e --test ops --test registry --test hostile
done
# Issue 7's faults under load (kill -9 a gateway, a router, the Redis cluster master; Redis
# restarted empty; a router stopped 5 s; a link reset mid-frame), each on its own local stack,
# with the exact ledger's invariants and each fault's recovery bound (docs/reliability.md).
echo "== faults under load: perf faults --quick"
target/debug/perf faults --quick --retries 1 --json target/faults-quick.json
echo "== browser test: the demo page in headless Chromium"
scripts/browser-test.sh
