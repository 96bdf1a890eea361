#!/usr/bin/env bash
# Link the daemon's Java runtime: jlink over a JDK's jmods, with exactly the modules of scripts/jre-modules.txt
# (jdeps' answer for the locked KCL jars plus what TLS needs at run time), into DEST. The image's build stage and
# `make setup` both run it: the container, the end-to-end and the fault tests run the daemon on the same runtime.
#
# The JDK: JDK_HOME, else the one jlink on PATH belongs to; it must be 17+ with its jmods (Debian 12:
# openjdk-17-jdk-headless carries them). The runtime keeps the JDK's own CA store (lib/security/cacerts of the
# java.base jmod), which holds the roots AWS endpoints chain to (Amazon Root CA 1-4, Starfield).
#
# With --strip-debug --no-man-pages --no-header-files --compress=2, and the native libraries stripped when strip
# (binutils) is there. Idempotent: DEST/.build-stamp records the module list, this script and the JDK's version; while they are the same
# the runtime is left as it is. Usage: bash scripts/build_jre.sh DEST
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULES_FILE="$ROOT/scripts/jre-modules.txt"
log() { printf '[build_jre] %s\n' "$*"; }
die() { printf '[build_jre] ERROR: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: bash scripts/build_jre.sh DEST"
DEST=$1

if [ -n "${JDK_HOME:-}" ]; then
    JDK=$JDK_HOME
else
    jlink_path=$(command -v jlink) || die "no jlink on PATH and no JDK_HOME: a JDK 17+ with its jmods is needed (Debian 12: 'apt-get install openjdk-17-jdk-headless')"
    JDK=$(dirname "$(dirname "$(readlink -f "$jlink_path")")")
fi
[ -x "$JDK/bin/jlink" ] || die "$JDK/bin/jlink is missing: JDK_HOME must name a JDK 17+ (not a JRE)"
[ -f "$JDK/jmods/java.base.jmod" ] || die "$JDK/jmods holds no java.base.jmod: the JDK's jmods are needed (Debian 12: openjdk-17-jdk-headless)"
jdk_version=$(sed -n 's/^JAVA_VERSION="\(.*\)"$/\1/p' "$JDK/release")
[ "${jdk_version%%.*}" -ge 17 ] 2>/dev/null || die "$JDK is Java '$jdk_version': 17+ is needed"

modules=$(grep -v '^#' "$MODULES_FILE" | awk 'NF {print $1}' | paste -sd, -)
[ -n "$modules" ] || die "$MODULES_FILE lists no module"
key="$(cat "$MODULES_FILE" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1) $jdk_version"
if [ -x "$DEST/bin/java" ] && [ "$(cat "$DEST/.build-stamp" 2>/dev/null)" = "$key" ]; then
    log "Java runtime up to date ($DEST)"
    exit 0
fi

log "linking Java $jdk_version ($JDK) with $modules into $DEST"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
"$JDK/bin/jlink" --module-path "$JDK/jmods" --add-modules "$modules" \
    --strip-debug --no-man-pages --no-header-files --compress=2 --output "$DEST"
# Debian's native libraries keep their symbol tables (libjvm.so: about a sixth of its size); the dynamic symbols
# that the JVM and its error reports use stay.
if command -v strip >/dev/null 2>&1; then
    strip --strip-unneeded "$DEST"/lib/server/*.so "$DEST"/lib/*.so
else
    log "no strip on PATH (binutils): the native libraries keep their symbol tables"
fi
# Each listed module is in (with the modules they require, which jlink adds).
linked=$("$DEST/bin/java" --list-modules | sed 's/@.*//')
for module in ${modules//,/ }; do
    grep -qx "$module" <<<"$linked" || die "the linked runtime lacks $module"
done
echo "$key" >"$DEST/.build-stamp"
log "done: $(du -sh "$DEST" | cut -f1) in $DEST"
