#!/usr/bin/env bash
# The container test: prepare podman and the stand-in base image (scripts/container_setup.sh), then build the
# real Dockerfile and run the image against the local emulators (tests/container, driven by pytest). pytest's
# summary shows the measured figures, the setup's seconds among them, and its closing line ends the output.
#
# Usage: bash scripts/container_test.sh [PYTEST_ARGS...]     (make container-test; needs root and `make setup`)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
bash scripts/container_setup.sh
export CONTAINER_SETUP_SECONDS=$(($(date +%s) - START))
exec .venv/bin/python -m pytest -m container "$@"
