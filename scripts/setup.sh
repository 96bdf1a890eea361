#!/usr/bin/env bash
# Set up everything the project needs, from a fresh clone:
#   .venv/          Python 3.11 with every package pinned (and hash-checked) in Pipfile.lock (the run time, the
#                   tools' full MLflow and pandas, the development packages), and this project
#                   installed in editable mode (pip install -e .: `consumer`, `record_processor`, `ride-consumer`)
#   amazon-kclpy    the official release Pipfile.lock pins, from its hash-checked sdist, without jars
#                   (scripts/install_kclpy.sh)
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

if ! command -v java >/dev/null 2>&1; then
    missing+=("Java >= 17: no java on PATH (the KCL MultiLangDaemon runs on it). Debian 12: 'apt-get install openjdk-17-jre-headless'")
else
    java_version=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)
    java_major=${java_version%%.*}
    [ "$java_major" = 1 ] && java_major=$(cut -d. -f2 <<<"$java_version")
    if ! [ "${java_major:-0}" -ge 17 ] 2>/dev/null; then
        missing+=("Java >= 17: found java '$java_version' at $(command -v java). Debian 12: 'apt-get install openjdk-17-jre-headless' and put it first on PATH")
    fi
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
log "prerequisites: $("$PYTHON" --version 2>&1) ($PYTHON), java $java_version, node $(node --version), npm $(npm --version)"

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
