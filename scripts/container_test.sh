#!/usr/bin/env bash
# The container test: prepare podman and the stand-in base image (scripts/container_setup.sh), then build the
# real Dockerfile and run the image against the local emulators (tests/container, driven by pytest).
#
# Usage: bash scripts/container_test.sh [PYTEST_ARGS...]     (make container-test; needs root and `make setup`)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
bash scripts/container_setup.sh
status=0
CONTAINER_TEST=1 .venv/bin/python -m pytest tests/container "$@" || status=$?
printf '[container_test] %s in %d s (podman setup + image build + test)\n' \
    "$([ "$status" -eq 0 ] && echo passed || echo "FAILED ($status)")" "$(($(date +%s) - START))"
exit "$status"
