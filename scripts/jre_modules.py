"""The Java modules the daemon needs: jdeps' answer for the locked KCL jars, and the committed list
(scripts/jre-modules.txt) that scripts/build_jre.sh links.

    python scripts/jre_modules.py [--jars DIR]            print jdeps' modules for the jars in DIR
    python scripts/jre_modules.py --check [--jars DIR]    exit 1, naming the difference, when the committed list's
                                                          "jdeps" modules are not exactly jdeps' answer

DIR defaults to this checkout's .venv/share/kcl-jars (`make setup` installs the jars of properties/kcl-jars.lock
there). jdeps comes from JDK_HOME/bin, else from PATH (a JDK 17+: `make setup` checks for one).

Some of the jars are modular (rxjava3, ...) and name modules that other jars of the set provide only as plain jars,
so jdeps refuses to resolve them as modules; the jars are analysed as the daemon runs them, on the class path:
copies without their module descriptors, in a temporary folder. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_LIST = ROOT / "scripts" / "jre-modules.txt"
DEFAULT_JARS = ROOT / ".venv" / "share" / "kcl-jars"
JDEPS = "jdeps"


def jdk_tool(name: str) -> str:
    """A JDK tool from JDK_HOME/bin, else from PATH; SystemExit naming what is missing."""
    home = os.environ.get("JDK_HOME")
    found = str(Path(home) / "bin" / name) if home else shutil.which(name)
    if not found or not Path(found).is_file():
        where = f"JDK_HOME={home}/bin" if home else "PATH"
        raise SystemExit(f"{name} is not in {where}: a JDK 17+ is needed (Debian 12: openjdk-17-jdk-headless)")
    return found


def committed() -> dict[str, str]:
    """The committed list: module name -> where it comes from ("jdeps" or "run time: why")."""
    modules: dict[str, str] = {}
    for line in MODULE_LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, source = line.strip().partition(" ")
            modules[name] = source.strip()
    return modules


def derive(jars: Path) -> list[str]:
    """jdeps' modules (sorted) for every jar in ``jars``, analysed on the class path."""
    originals = sorted(jars.glob("*.jar"))
    if not originals:
        raise SystemExit(f"no jars in {jars}: run `make setup` (it installs properties/kcl-jars.lock's jars there)")
    with tempfile.TemporaryDirectory(prefix="jre-modules-") as scratch:
        copies = []
        for jar in originals:
            copy = Path(scratch) / jar.name
            with zipfile.ZipFile(jar) as source, zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as target:
                for item in source.infolist():
                    if not item.filename.endswith("module-info.class"):
                        target.writestr(item, source.read(item), zipfile.ZIP_STORED)
            copies.append(str(copy))
        command = [jdk_tool(JDEPS), "--ignore-missing-deps", "--print-module-deps", "--multi-release", "17"]
        command += ["--class-path", os.pathsep.join(copies), *copies]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"jdeps exited {result.returncode}:\n{result.stderr[-3000:]}")
    return sorted(result.stdout.strip().splitlines()[-1].split(","))


def difference(derived: list[str], modules: dict[str, str]) -> str:
    """'' when the committed "jdeps" modules are exactly ``derived``, else what to change in the list."""
    listed = {name for name, source in modules.items() if source == "jdeps"}
    missing, extra = sorted(set(derived) - listed), sorted(listed - set(derived))
    if not missing and not extra:
        return ""
    return (
        f"{MODULE_LIST.relative_to(ROOT)} is not jdeps' answer for the locked jars: "
        f"add {missing or 'nothing'}, remove {extra or 'nothing'} (as 'jdeps' lines)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jars", type=Path, default=DEFAULT_JARS, help="the folder of the KCL jars")
    parser.add_argument("--check", action="store_true", help="compare with scripts/jre-modules.txt")
    args = parser.parse_args(argv)
    derived = derive(args.jars)
    if not args.check:
        print(",".join(derived))
        return 0
    problem = difference(derived, committed())
    print(problem or f"{MODULE_LIST.relative_to(ROOT)}: jdeps' modules unchanged ({', '.join(derived)})")
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
