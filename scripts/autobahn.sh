#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn|Testsuite fuzzingclient (cases 1.* to 10.*) against
# a gateway started with --echo-endpoint (GET /echo: the same WebSocket stack, limits and close
# handling as /ws, without a token or the registry), then fails unless every case's behaviour
# is OK, NON-STRICT or INFORMATIONAL. Prints a summary table of the behaviours.
#
#   scripts/autobahn.sh                     # debug gateway (what scripts/test.sh builds)
#   AUTOBAHN_PROFILE=release scripts/autobahn.sh
#   AUTOBAHN_CASES='9.*' scripts/autobahn.sh   # a subset (comma separated)
#
# Autobahn|Testsuite 0.8.2 is Python 2.7 only. It runs in a virtualenv made from pyenv's
# 2.7.18 (`$(pyenv root)/versions/2.7.18`, or AUTOBAHN_PYTHON) and cached under
# target/autobahn/venv; without Python 2.7 the script prints "skipped: no Python 2.7" and
# exits 0. The JSON and HTML reports land in target/autobahn/reports/servers/.
#
# The conformance gateway runs with limits raised above the production defaults: case 9
# sends messages of up to 16 MiB (the default --max-ws-message is 1 MiB, which would close
# them with 1009), and echoes them back (so --client-queue must hold one).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${root}/target/autobahn"
cases="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*}"
profile="${AUTOBAHN_PROFILE:-debug}"

py2="${AUTOBAHN_PYTHON:-}"
if [ -z "${py2}" ]; then
    pyenv_root=$(pyenv root 2>/dev/null || echo "${HOME}/.pyenv")
    py2="${pyenv_root}/versions/2.7.18/bin/python"
    [ -x "${py2}" ] || py2=$(command -v python2.7 || true)
fi
if [ -z "${py2}" ] || ! "${py2}" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    echo "skipped: no Python 2.7"
    exit 0
fi
started=$(date +%s)

# Everything the suite needs on Python 2.7, pinned (the last releases that still support it).
requirements='autobahntestsuite==0.8.2
autobahn==0.10.9
Twisted==19.10.0
txaio==2.1.0
zope.interface==5.5.2
attrs==21.4.0
Automat==22.10.0
constantly==15.1.0
hyperlink==21.0.0
idna==2.10
incremental==22.10.0
PyHamcrest==1.10.1
six==1.17.0
klein==20.6.0
Werkzeug==1.0.1
Tubes==0.2.1
Jinja2==2.11.3
MarkupSafe==1.1.1
pyOpenSSL==21.0.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
service-identity==21.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
typing==3.10.0.0
unittest2==1.1.0
traceback2==1.4.0
linecache2==1.0.0'

venv="${work}/venv"
stamp="${venv}/.connect-requirements"
# Runs a pip command quietly; shows its output only when it fails.
quiet() {
    "$@" >"${work}/pip.log" 2>&1 || { grep -v DEPRECATION "${work}/pip.log" >&2; return 1; }
}
if [ ! -x "${venv}/bin/wstest" ] || [ "$(cat "${stamp}" 2>/dev/null)" != "${requirements}" ]; then
    echo "== autobahn: creating the Python 2.7 virtualenv in ${venv}"
    rm -rf "${venv}" "${work}/bootstrap"
    mkdir -p "${work}"
    if ! "${py2}" -m virtualenv --version >/dev/null 2>&1; then
        # virtualenv into a private directory, not into the interpreter's site-packages.
        quiet "${py2}" -m pip install --disable-pip-version-check --target "${work}/bootstrap" \
            'virtualenv==20.15.1'
        export PYTHONPATH="${work}/bootstrap"
    fi
    "${py2}" -m virtualenv -q "${venv}"
    unset PYTHONPATH
    printf '%s\n' "${requirements}" >"${work}/requirements.txt"
    quiet "${venv}/bin/pip" install --disable-pip-version-check -r "${work}/requirements.txt"
    # Optional C speed-ups for the suite's masking and UTF-8 checks (built from source with
    # the C compiler): case 9 runs about twice as fast with them.
    quiet "${venv}/bin/pip" install --disable-pip-version-check 'wsaccel==0.6.2' ||
        echo "autobahn: wsaccel unavailable; the suite runs slower"
    printf '%s' "${requirements}" >"${stamp}"
fi

echo "== autobahn: building the gateway (${profile})"
if [ "${profile}" = release ]; then
    cargo build -q --release -p gateway --bin gateway
else
    cargo build -q -p gateway --bin gateway
fi
gateway="${CARGO_TARGET_DIR:-${root}/target}/${profile}/gateway"

free_port() {
    "${py2}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
log="${work}/gateway.log"
mb=$((1024 * 1024))
# No router runs: the echo endpoint needs neither a router nor the registry.
"${gateway}" --listen "127.0.0.1:${port}" --internal-listen 127.0.0.1:0 \
    --router "127.0.0.1:$(free_port)" --registry memory:// --jwt-secret autobahn-only-0123456789 \
    --admin-listen off --shards 1 --echo-endpoint \
    --max-ws-message $((64 * mb)) --client-queue $((128 * mb)) \
    >"${log}.out" 2>"${log}" &
gw_pid=$!
trap 'kill "${gw_pid}" 2>/dev/null || true; wait "${gw_pid}" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
    grep -q "gateway listening" "${log}.out" 2>/dev/null && break
    kill -0 "${gw_pid}" 2>/dev/null || { cat "${log}" >&2; echo "autobahn: gateway exited" >&2; exit 1; }
    sleep 0.05
done
grep -q "gateway listening" "${log}.out" || { echo "autobahn: gateway not ready" >&2; exit 1; }

reports="${work}/reports/servers"
rm -rf "${reports}"
mkdir -p "${reports}"
case_list=$(printf '%s' "${cases}" | sed 's/[^,][^,]*/"&"/g')
cat >"${work}/fuzzingclient.json" <<EOF
{
  "outdir": "${reports}",
  "servers": [{"agent": "connect-gateway", "url": "ws://127.0.0.1:${port}/echo"}],
  "cases": [${case_list}],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF

suite_started=$(date +%s)
echo "== autobahn: wstest -m fuzzingclient, cases ${cases}, against ws://127.0.0.1:${port}/echo"
(cd "${work}" && "${venv}/bin/wstest" -m fuzzingclient -s fuzzingclient.json >wstest.log 2>&1) || {
    tail -30 "${work}/wstest.log" >&2
    echo "autobahn: wstest failed" >&2
    exit 1
}
kill -0 "${gw_pid}" 2>/dev/null || { echo "autobahn: the gateway died during the run" >&2; exit 1; }

now=$(date +%s)
elapsed="$((now - suite_started)) s (whole script $((now - started)) s)"
"${venv}/bin/python" - "${reports}/index.json" "${elapsed}" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1]))
ok = ("OK", "NON-STRICT", "INFORMATIONAL")
total, bad = 0, []
table = {}
for agent, results in sorted(index.items()):
    for case, r in results.items():
        total += 1
        group = case.split(".")[0]
        b = r["behavior"]
        table.setdefault(group, {})
        table[group][b] = table[group].get(b, 0) + 1
        if b not in ok:
            bad.append((agent, case, b, r.get("behaviorClose"), r.get("reportfile")))
behaviours = sorted(set(b for g in table.values() for b in g))
key = lambda g: int(g)
print("%-6s %6s  %s" % ("case", "total", "  ".join("%13s" % b for b in behaviours)))
for g in sorted(table, key=key):
    row = table[g]
    print("%-6s %6d  %s" % (g + ".*", sum(row.values()),
                            "  ".join("%13d" % row.get(b, 0) for b in behaviours)))
sums = dict((b, sum(t.get(b, 0) for t in table.values())) for b in behaviours)
print("%-6s %6d  %s" % ("all", total, "  ".join("%13d" % sums[b] for b in behaviours)))
print("autobahn: %d cases in %s" % (total, sys.argv[2]))
if total == 0:
    print("autobahn: no cases ran")
    sys.exit(1)
for agent, case, b, bc, f in sorted(bad, key=lambda x: [int(p) for p in x[1].split(".")]):
    print("FAILED %s: behavior %s, close %s (report %s)" % (case, b, bc, f))
if bad:
    sys.exit(1)
print("autobahn: all cases OK, NON-STRICT or INFORMATIONAL")
EOF
