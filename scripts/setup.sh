#!/usr/bin/env bash
# Set up everything the project needs, from a fresh clone:
#   .venv/          Python 3.11 with every package pinned (and hash-checked) in Pipfile.lock (the run time, the
#                   tools' full MLflow and pandas, the development packages), and this project
#                   installed in editable mode (pip install -e .: `consumer`, `record_processor`, `ride-consumer`)
#   amazon-kclpy    the official release Pipfile.lock pins, from its hash-checked sdist, without jars
#                   (scripts/install_kclpy.sh)
#   Java runtime    the daemon's Java, cut with jlink to the modules of scripts/jre-modules.txt from a JDK 17's
#                   jmods (scripts/build_jre.sh, as the image build does) into .venv/share/kcl-jre (JAVA_BIN's
#                   default); the JDK (openjdk-17-jdk-headless) is installed with apt when running as root
#   KCL jars        the daemon's jars of properties/kcl-jars.lock, downloaded from Maven Central (or
#                   $KCL_MAVEN_REPOSITORY) and verified by SHA-256 into .venv/share/kcl-jars (KCL_JAR_DIR's default);
#                   verified downloads are kept in .cache/kcl-jars, so a rebuilt .venv needs no network for them
#   node_modules/   the emulators pinned in package-lock.json: kinesis-local and dynalite
#   prometheus      Debian's package (server + promtool) for the alert-rule and scrape tests, installed only when
#                   running as root (CI is); elsewhere those tests skip, saying how to install it
#
# Idempotent: each part writes a stamp keyed on the hashes of its inputs and is skipped while they
# have not changed. Environment: PYTHON=/path/to/python3.11 to choose the interpreter.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export PIPENV_VENV_IN_PROJECT=1          # pipenv, if a developer uses it, finds the same .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
CACHE="$ROOT/.cache"
PY_STAMP="$VENV/.setup-stamp"
NODE_STAMP="$ROOT/node_modules/.setup-stamp"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
START=$(date +%s)

# ---------------------------------------------------------------------------------- prerequisites
missing=()

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            # the interpreter itself, not a wrapper such as a pyenv shim
            PYTHON=$("$candidate" -c 'import sys; print(sys.executable)')
            break
        fi
    done
fi
if [ -z "$PYTHON" ]; then
    missing+=("Python 3.11: no python3.11 on PATH. Debian 12: 'apt-get install python3.11 python3.11-venv'; or set PYTHON=/path/to/python3.11")
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    missing+=("Python 3.11: PYTHON=$PYTHON is not a Python 3.11 interpreter")
elif ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=("Python venv support: $PYTHON lacks the venv/ensurepip modules. Debian 12: 'apt-get install python3.11-venv'")
fi

# A JDK 17+ with its jmods: the daemon runs on a runtime linked from them (scripts/build_jre.sh). Installed with apt
# when running as root on Debian/Ubuntu (CI is), as the image's build stage does.
jdk_home() {
    if [ -n "${JDK_HOME:-}" ]; then echo "$JDK_HOME"; return; fi
    command -v jlink >/dev/null 2>&1 && dirname "$(dirname "$(readlink -f "$(command -v jlink)")")"
}
JDK=$(jdk_home || true)
if { [ -z "$JDK" ] || [ ! -f "$JDK/jmods/java.base.jmod" ]; } && [ -z "${JDK_HOME:-}" ] && [ "$(id -u)" = 0 ] &&
    command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's JDK 17 with its jmods (apt-get install openjdk-17-jdk-headless)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless >/dev/null
    JDK=$(jdk_home || true)
fi
java_version=$(sed -n 's/^JAVA_VERSION="\(.*\)"$/\1/p' "${JDK:-/nonexistent}/release" 2>/dev/null || true)
if [ -z "$JDK" ]; then
    missing+=("JDK >= 17 with its jmods: no jlink on PATH and no JDK_HOME (the daemon's Java runtime is linked from it). Debian 12: 'apt-get install openjdk-17-jdk-headless'")
elif [ ! -f "$JDK/jmods/java.base.jmod" ]; then
    missing+=("JDK >= 17 with its jmods: $JDK has no jmods/java.base.jmod. Debian 12: 'apt-get install openjdk-17-jdk-headless'; or set JDK_HOME to a JDK that has them")
elif ! [ "${java_version%%.*}" -ge 17 ] 2>/dev/null; then
    missing+=("JDK >= 17: $JDK is Java '$java_version'. Debian 12: 'apt-get install openjdk-17-jdk-headless'; or set JDK_HOME")
fi

if ! command -v node >/dev/null 2>&1; then
    missing+=("Node.js >= 20: no node on PATH (the Kinesis and DynamoDB emulators run on it). Debian 12's own nodejs is 18: install the nodejs 20.x package from NodeSource, or any Node 20+ build")
else
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if ! [ "$node_major" -ge 20 ] 2>/dev/null; then
        missing+=("Node.js >= 20: found node $(node --version 2>/dev/null) at $(command -v node). Debian 12's own nodejs is 18: install the nodejs 20.x package from NodeSource, or any Node 20+ build")
    fi
fi
if ! command -v npm >/dev/null 2>&1; then
    missing+=("npm: no npm on PATH. It comes with NodeSource's nodejs package; with Debian's nodejs: 'apt-get install npm'")
fi

for tool in sha256sum tar; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool: not on PATH. Debian 12: 'apt-get install coreutils tar'")
done

if [ ${#missing[@]} -gt 0 ]; then
    printf '[setup] ERROR: missing prerequisites:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
log "prerequisites: $("$PYTHON" --version 2>&1) ($PYTHON), JDK $java_version ($JDK), node $(node --version), npm $(npm --version)"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# -------------------------------------------------------------------------------- Python packages
inputs_key=$(hash_of Pipfile.lock pyproject.toml scripts/install_kclpy.sh scripts/setup.sh \
    scripts/locked_requirements.py)
venv_key() { echo "$inputs_key $("$VPY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)"; }

if [ -x "$VPY" ] && [ "$(cat "$PY_STAMP" 2>/dev/null)" = "$(venv_key)" ]; then
    # Re-check amazon-kclpy every time: install_kclpy.sh reinstalls it when another version is there, e.g. after a
    # `pipenv install` or a hand-made `pip install` replaced it.
    bash scripts/install_kclpy.sh "$VPY"
    log "Python environment up to date (.venv)"
else
    # Built from scratch whenever an input changed (or a previous run did not finish), so that
    # nothing outside the lock survives in it.
    if [ -e "$VENV" ]; then
        log "removing the out-of-date .venv"
        rm -rf "$VENV"
    fi
    log "creating .venv with $PYTHON"
    "$PYTHON" -m venv "$VENV"

    # Export Pipfile.lock (default + tools + develop: everything) as a hash-checked requirements file, amazon-kclpy
    # left out (scripts/install_kclpy.sh installs it). The Dockerfile exports the default section alone (the run
    # time) with the same script.
    mkdir -p "$CACHE"
    REQS="$CACHE/requirements-locked.txt"
    "$VPY" scripts/locked_requirements.py Pipfile.lock "$REQS" --section default --section tools --section develop
    log "installing the locked packages into .venv (hash-checked)"
    "$VPY" -m pip install --quiet --require-hashes --no-deps -r "$REQS"

    log "installing amazon-kclpy (Python code only)"
    bash scripts/install_kclpy.sh "$VPY"

    log "installing this project in editable mode (pip install -e .)"
    "$VPY" -m pip install --quiet --no-deps --no-build-isolation --editable .

    log "checking the environment's dependencies"
    "$VPY" -m pip check
    venv_key >"$PY_STAMP"
fi

# ---------------------------------------------------------------------------------------- KCL jars
# Every time (about 0.2 s when they are in place): a changed lock, a missing or altered jar is downloaded again
# and verified; a jar that does not verify stops the setup, naming it.
"$VPY" -m consumer.runtime.jarfetch --cache "$CACHE/kcl-jars" ||
    die "the KCL jars could not be installed (above); KCL_MAVEN_REPOSITORY names another Maven repository"

# ---------------------------------------------------------------------------------- Java runtime
# The daemon's runtime, cut to the modules of scripts/jre-modules.txt (JAVA_BIN's default): the image links the same
# one. Skipped while the module list, the script and the JDK are unchanged.
JDK_HOME=$JDK bash scripts/build_jre.sh "$VENV/share/kcl-jre" ||
    die "the daemon's Java runtime could not be linked (above)"

# ------------------------------------------------------------------------------------- emulators
node_key=$(hash_of package.json package-lock.json)
if [ -f node_modules/kinesis-local/main.js ] && [ -f node_modules/dynalite/cli.js ] &&
    [ "$(cat "$NODE_STAMP" 2>/dev/null)" = "$node_key" ]; then
    log "emulators up to date (node_modules)"
else
    log "installing the emulators with npm ci (kinesis-local, dynalite)"
    # No install scripts: dynalite's LevelDB binding (classic-level) loads the prebuilt binary it ships.
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    [ -f node_modules/kinesis-local/main.js ] || die "npm ci did not install node_modules/kinesis-local"
    [ -f node_modules/dynalite/cli.js ] || die "npm ci did not install node_modules/dynalite"
    echo "$node_key" >"$NODE_STAMP"
fi

# ------------------------------------------------------------------------------------ prometheus
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    log "prometheus and promtool present"
elif [ "$(id -u)" = 0 ]; then
    bash scripts/install_prometheus.sh
else
    log "no prometheus/promtool: their tests will skip (fail with CI=true); install with 'sudo bash scripts/install_prometheus.sh'"
fi

log "done in $(($(date +%s) - START)) s"
