#!/usr/bin/env bash
# Install the static-check tools that stay out of the app's lock (checkov, parliament, the CRD models) into their
# own venv, .cache/static-tools, from tools/static/Pipfile.lock, hash-checked (scripts/locked_requirements.py).
# tests/static runs it on first use; idempotent: a stamp keyed on the lock and this script skips a current venv.
#
# Usage: bash scripts/install_static_tools.sh            Re-lock: cd tools/static && pipenv lock
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.cache/static-tools"
LOCK="$ROOT/tools/static/Pipfile.lock"
STAMP="$VENV/.stamp"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}   # the project's Python 3.11 (make setup)

log() { printf '[install_static_tools] %s\n' "$*" >&2; }
key=$(cat "$LOCK" "${BASH_SOURCE[0]}" scripts/locked_requirements.py | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/checkov" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$key" ]; then
    exit 0
fi
START=$(date +%s)
rm -rf "$VENV"
# The project's interpreter, not its venv: a venv made from a venv's python is a plain venv of the base interpreter.
base=$("$PYTHON" -c 'import sys; print(sys._base_executable)')
log "creating $VENV with $base"
"$base" -m venv "$VENV"
"$VENV/bin/python" scripts/locked_requirements.py "$LOCK" "$VENV/requirements.txt" --section default >&2
log "installing checkov, parliament and the CRD models (hash-checked)"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --no-input --require-hashes --no-deps \
    -r "$VENV/requirements.txt"
"$VENV/bin/python" -m pip check >&2
echo "$key" >"$STAMP"
log "done in $(($(date +%s) - START)) s"
