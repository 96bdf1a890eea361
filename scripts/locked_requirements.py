"""Export Pipfile.lock as a hash-checked requirements file for ``pip install --require-hashes --no-deps``.

Used by scripts/setup.sh (default + tools + develop, for .venv) and by the Dockerfile (default only, for the image),
so both install exactly what the lock pins. The sections are Pipfile's categories: default ([packages], the run
time), tools ([tools], training and the demo) and develop ([dev-packages]); a package in two sections must have one
version in both, since they are installed together.

amazon-kclpy is left out of both: its sdist would fetch the KCL jars from Maven Central while it builds, unchecked,
so scripts/install_kclpy.sh installs it (same version, sdist hash checked against the lock, no jars; the daemon's
jars come from properties/kcl-jars.lock).

Standard library only: it runs before any package is installed (and in the image's build stage).

    python scripts/locked_requirements.py Pipfile.lock OUT.txt --section default --section tools --section develop
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Installed by scripts/install_kclpy.sh, never from the exported file.
EXCLUDED = ("amazon-kclpy",)
#: The lock's sections: Pipfile's [packages], [tools] and [dev-packages].
SECTIONS = ("default", "tools", "develop")


def locked_requirements(lock: dict, sections: list[str], excluded: tuple[str, ...] = EXCLUDED) -> list[str]:
    """One ``name==version [; markers] --hash=...`` line per locked package of ``sections``, sorted by name."""
    merged: dict[str, dict] = {}
    for section in sections:
        for name, entry in lock[section].items():
            if name in excluded:
                continue
            if "version" not in entry or not entry.get("hashes"):
                raise ValueError(f"Pipfile.lock: {name} has no pinned version with hashes")
            previous = merged.get(name)
            if previous and previous["version"] != entry["version"]:
                raise ValueError(
                    f"Pipfile.lock: {name} is {previous['version']} in one section, {entry['version']} in another"
                )
            merged[name] = entry
    lines = []
    for name in sorted(merged):
        entry = merged[name]
        line = f"{name}{entry['version']}"
        if entry.get("markers"):
            line += f" ; {entry['markers']}"
        hashes = " ".join(f"--hash={digest}" for digest in sorted(entry["hashes"]))
        lines.append(f"{line} {hashes}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="Pipfile.lock")
    parser.add_argument("out", type=Path, help="requirements file to write")
    parser.add_argument("--section", action="append", choices=SECTIONS, help="lock sections (default: default)")
    parser.add_argument("--only", action="append", metavar="NAME", help="export just these packages")
    args = parser.parse_args(argv)
    sections = args.section or ["default"]
    try:
        lines = locked_requirements(json.loads(args.lock.read_text()), sections)
        if args.only:
            wanted = {name.lower() for name in args.only}
            lines = [line for line in lines if line.split("=", 1)[0].lower() in wanted]
            if len(lines) != len(wanted):
                raise ValueError(f"Pipfile.lock's {sections} do not pin all of {sorted(wanted)}")
    except ValueError as exc:
        print(f"[locked_requirements] ERROR: {exc}", file=sys.stderr)
        return 1
    header = f"# Generated from {args.lock.name} ({' + '.join(sections)}) by scripts/locked_requirements.py"
    args.out.write_text("\n".join([f"{header}; amazon-kclpy: scripts/install_kclpy.sh", *lines]) + "\n")
    print(f"[locked_requirements] {len(lines)} locked packages ({' + '.join(sections)}; + amazon-kclpy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
