#!/usr/bin/env bash
# Install Debian's `prometheus` package (the server and promtool) for the tests: `promtool test rules` on
# alerts/, and the end-to-end test that scrapes the consumer with a real Prometheus on loopback.
#
# Idempotent: does nothing when both binaries are on PATH. Needs root and apt-get (Debian/Ubuntu); elsewhere it
# says what to install. The package's own service is never started (a temporary policy-rc.d refuses it), so
# nothing listens on :9090: the tests start their own server on a free port with its own storage directory.
set -euo pipefail

log() { printf '[prometheus] %s\n' "$*"; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    log "up to date: $(prometheus --version 2>&1 | head -1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: no apt-get here; install Prometheus 2.x (prometheus and promtool on PATH) another way" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    log "ERROR: installing needs root: sudo apt-get install --no-install-recommends prometheus" >&2
    exit 1
fi

POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    # 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke leave the service stopped.
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get install prometheus (its service is not started)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
log "installed: $(prometheus --version 2>&1 | head -1)"
