#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 20), starting from the
# checked-in seeds in fuzz/corpus/<target>/seed-*. Fails on the first crash, leaving the input
# in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="resp_reply resp3_reply" scripts/fuzz.sh 60   # only these targets
#
# Targets (fuzz/Cargo.toml): wire_frame, client_json, jwt, http_head, resp_reply (resp-client's
# RESP2 reply decoder), resp3_reply (its RESP3 decoder), ws_frame (the gateway's WebSocket decoder).
#
# Only a stable toolchain is installed, so the nightly-only flags cargo-fuzz passes
# (-Zsanitizer=address and friends) are unlocked with RUSTC_BOOTSTRAP=1. cargo-fuzz itself is
# installed from crates.io when missing.
set -euo pipefail

SECONDS_PER_TARGET="${1:-20}"
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
cargo fuzz build
log=$(mktemp)
trap 'rm -f "${log}"' EXIT
passed=0
for target in $targets; do
    echo "fuzz.sh: ${target} for ${SECONDS_PER_TARGET}s"
    mkdir -p "corpus/${target}"
    # New inputs land in corpus/<target>/ too; .gitignore keeps only the seed-* files.
    if cargo fuzz run "${target}" -- -max_total_time="${SECONDS_PER_TARGET}" >"${log}" 2>&1; then
        grep -E '^Done [0-9]+ runs' "${log}" | sed "s/^/fuzz.sh: ${target}: /" || true
        passed=$((passed + 1))
    else
        status=$?
        tail -n 60 "${log}"
        echo "fuzz.sh: ${target} FAILED (exit ${status}); the input is in fuzz/artifacts/${target}/"
        echo "fuzz: ${passed} passed, 1 failed"
        exit "${status}"
    fi
done
echo "fuzz: ${passed} passed, 0 failed"
