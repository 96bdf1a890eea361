#!/usr/bin/env bash
# Install the official amazon-kclpy that Pipfile.lock pins, from its hash-checked sdist, without any jar.
#
# Usage: scripts/install_kclpy.sh VENV_PYTHON [BUILD_PYTHON]
#
# amazon-kclpy is the MultiLang protocol's Python side (KCLProcess, the v3 RecordProcessorBase). Its setup.py also
# downloads the KCL daemon's jars from Maven Central while it builds, with no checksum, and silently skips them with
# some pip/wheel combinations. The daemon's jars come from properties/kcl-jars.lock instead, pinned by SHA-256
# (python -m consumer.runtime.jarfetch). So this script:
#   1. downloads the sdist with pip, hash-checked against Pipfile.lock (the version and sha256 pinned there);
#   2. empties the <dependencies> of its pom.xml, the list setup.py downloads (the Python code is untouched), and
#      gives the 2.x releases' bare `argparse` requirement (for Python 2.6) the marker the 3.x releases carry, so
#      that the obsolete PyPI argparse is neither installed nor missed by `pip check` (argparse is in the stdlib);
#   3. builds and installs it with --no-deps --no-build-isolation: no download of any kind while it builds.
# BUILD_PYTHON (default VENV_PYTHON) is the interpreter whose setuptools builds the wheel (the image builds with a
# separate tools environment, so /opt/venv carries no setuptools).
#
# Idempotent: does nothing when that version is installed. Downloads are cached under .cache/kclpy/.
set -euo pipefail

log() { printf '[install_kclpy] %s\n' "$*"; }
die() { printf '[install_kclpy] ERROR: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 VENV_PYTHON [BUILD_PYTHON]"
PY=$1
BUILD_PY=${2:-$1}
[ -x "$PY" ] || die "not an executable interpreter: $PY"
[ -x "$BUILD_PY" ] || die "not an executable interpreter: $BUILD_PY"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCKFILE="$ROOT/Pipfile.lock"
CACHE="$ROOT/.cache/kclpy"

# The version and the sdist's sha256 that Pipfile.lock pins.
read -r VERSION SDIST_SHA256 < <("$PY" - "$LOCKFILE" <<'EOF_PY'
import json, sys
entry = json.load(open(sys.argv[1]))["default"]["amazon-kclpy"]
hashes = [h.split(":", 1)[1] for h in entry["hashes"]]
if len(hashes) != 1:
    sys.exit(f"Pipfile.lock: expected one sha256 for amazon-kclpy (its sdist), found {len(hashes)}")
print(entry["version"].removeprefix("=="), hashes[0])
EOF_PY
)
[ -n "${SDIST_SHA256:-}" ] || die "Pipfile.lock pins no amazon-kclpy sdist"

installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("amazon-kclpy"))' 2>/dev/null || true)
if [ "$installed" = "$VERSION" ]; then
    log "amazon-kclpy $VERSION already installed"
    exit 0
fi

check_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

mkdir -p "$CACHE"
SDIST="$CACHE/amazon_kclpy-$VERSION.tar.gz"
if ! check_sha "$SDIST" "$SDIST_SHA256"; then
    rm -f "$SDIST"
    log "downloading the amazon-kclpy $VERSION sdist (hash-checked)"
    "$PY" -m pip download --quiet --no-input --disable-pip-version-check --no-deps --no-binary :all: \
        --require-hashes -d "$CACHE" -r <(echo "amazon-kclpy==$VERSION --hash=sha256:$SDIST_SHA256")
    check_sha "$SDIST" "$SDIST_SHA256" || die "sha256 of $SDIST is not $SDIST_SHA256"
fi

BUILD=$(mktemp -d "${TMPDIR:-/tmp}/install_kclpy.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
tar -xzf "$SDIST" -C "$BUILD"
SRC="$BUILD/amazon_kclpy-$VERSION"
[ -f "$SRC/setup.py" ] && [ -f "$SRC/pom.xml" ] || die "unexpected sdist layout in $SDIST"

# setup.py downloads every <dependency> of pom.xml: leave it none (the namespace and <properties> stay).
"$PY" - "$SRC/pom.xml" <<'EOF_PY'
import sys
import xml.etree.ElementTree as ET

NS = "http://maven.apache.org/POM/4.0.0"
ET.register_namespace("", NS)
tree = ET.parse(sys.argv[1])
dependencies = tree.getroot().find(f"{{{NS}}}dependencies")
if dependencies is None or not len(dependencies):
    sys.exit("pom.xml: no <dependencies> to empty")
dependencies.clear()
tree.write(sys.argv[1], xml_declaration=True, encoding="utf-8")
EOF_PY

# amazon-kclpy 2.x declares install_requires 'argparse' (for Python 2.6); 3.x already marks it for Python < 3.2.
"$PY" - "$SRC/setup.py" <<'EOF_PY'
import re
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
marked, count = re.subn(r"""^(\s*)['"]argparse['"],\s*$""", "\\1\"argparse; python_version < '3.2'\",", text, flags=re.M)
if count > 1:
    sys.exit("setup.py: more than one bare argparse requirement")
open(path, "w", encoding="utf-8").write(marked)
EOF_PY

log "building amazon-kclpy $VERSION without its jars"
"$BUILD_PY" -m pip wheel --quiet --no-input --disable-pip-version-check --no-cache-dir --no-deps \
    --no-build-isolation --wheel-dir "$BUILD/dist" "$SRC"
wheel=$(ls "$BUILD"/dist/amazon_kclpy-*.whl)
if "$PY" -c 'import zipfile, sys; sys.exit(not any(n.endswith(".jar") for n in zipfile.ZipFile(sys.argv[1]).namelist()))' "$wheel"; then
    die "the amazon-kclpy wheel carries jars; expected none"
fi
"$PY" -m pip install --quiet --no-input --disable-pip-version-check --no-cache-dir --no-deps "$wheel"
log "installed amazon-kclpy $VERSION (Python code only; the daemon's jars: properties/kcl-jars.lock)"
