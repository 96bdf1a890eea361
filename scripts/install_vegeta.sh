#!/usr/bin/env bash
# Build vegeta, the HTTP load generator of the benchmark's web section (consumer/tools/bench/web.py), into
# .cache/vegeta/bin from its Go module at a pinned version. vegeta sends requests at a fixed rate whatever the
# answers' latency (an open loop), which is what "latency at a fixed request rate" means; the Go toolchain fetches
# the module and its dependencies from the Go module proxy and checks them against the checksum database.
# The benchmark runs it on first use; idempotent: a stamp keyed on this script skips a current build.
#
# Needs: go (1.22 or later) on PATH. Usage: bash scripts/install_vegeta.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=v12.13.0
MODULE=github.com/tsenart/vegeta/v12
CACHE="$ROOT/.cache/vegeta"
STAMP="$CACHE/.stamp"

log() { printf '[install_vegeta] %s\n' "$*" >&2; }
key=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
if [ -x "$CACHE/bin/vegeta" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$key" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    log "ERROR: no go on PATH: the benchmark's web section builds vegeta with it. Debian 12: 'apt-get install golang'"
    exit 1
fi
START=$(date +%s)
rm -rf "$CACHE/bin"
mkdir -p "$CACHE"
log "building $MODULE@$VERSION with $(go version | cut -d' ' -f3)"
# GOTOOLCHAIN=local: never download another Go toolchain; the caches stay in .cache/vegeta.
GOBIN="$CACHE/bin" GOPATH="$CACHE/gopath" GOCACHE="$CACHE/gocache" GOTOOLCHAIN=local GOFLAGS=-modcacherw \
    go install "$MODULE@$VERSION"
"$CACHE/bin/vegeta" -version >&2
echo "$key" >"$STAMP"
log "done in $(($(date +%s) - START)) s"
