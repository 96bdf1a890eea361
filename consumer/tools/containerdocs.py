"""docs/container.md, rendered from the container test's figures (``make container-docs``, or
``python -m consumer.tools.containerdocs [REPORT.json]``).

``make container-test`` measures the image it builds and the pod it runs (tests/container) and writes the figures to
``.local/container/figures.json``; this copies that report to docs/container.json and renders the page from it:
the goals with their figures, where the image's size goes, the memory of each process at the leased shards, the
times. A unit test renders the committed JSON and compares it with the committed page: the figures are never
edited by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from consumer.tools.paths import LOCAL_DIR, REPO_ROOT

__all__ = ["DOC_NAME", "GOALS", "REPORT_NAME", "goals", "render_container_doc", "write_container_docs"]

DOC_NAME = "container.md"
REPORT_NAME = "container.json"
DEFAULT_REPORT = LOCAL_DIR / "container" / "figures.json"
MIB_PER_MB = 1e6 / 2**20

#: The issue's goals: (what, target shown, the figure's path in the report, its unit, the limit in that unit).
GOALS = (
    ("Image size on the stand-in base", "≤ 700 MB", ("image", "size_mb"), "MB", 700.0),
    ("Launcher RSS once ready", "≤ 60 MB", ("pod", "launcher_rss_mib"), "MiB", 60 * MIB_PER_MB),
    ("Pod PSS at 3 leased shards", "≤ 450 MiB", ("pod", "pss_sum_mib"), "MiB", 450.0),
)

_INTRO = """\
# The container: size, memory, start-up

<!-- Generated from docs/container.json by `make container-docs`; do not edit: a unit test checks that this page is
what that report renders (consumer/tools/containerdocs.py). -->

What the shipped image weighs and what its pod uses, measured by the container test (`make container-test`,
[deploying.md](deploying.md#the-container-test)): the real Dockerfile built with podman on the stand-in for
`python:3.11-slim-bookworm` that `scripts/container_setup.sh` makes from Debian 12's packages, configured as
Debian's slim images are (dpkg installs no documentation, manual pages or translations; apt keeps no caches). It is
not the upstream image (Debian's Python in /usr rather than CPython in /usr/local): the image's own layers are the
figure to carry over to the upstream base. The image is then run read-only as uid 10001 against the emulators, every
shard of the input stream leased by the one container.
**Figures depend on the machine and on what else runs on it**; the run's machine and load are at the end, and the
whole report is [container.json](container.json).

How the image is kept small: the daemon runs on a Java runtime linked with only the modules it uses
([dependencies.md](dependencies.md#the-java-runtime)); the image installs only the run-time packages of
`Pipfile.lock`; `scripts/slim_venv.py` cuts in the build stage what `run`, `score` and `serve` never load (the
packages' test suites, pyarrow's Flight RPC and C++ headers, onnxruntime's C API library, botocore's models of other
AWS services, symbol tables) and byte-compiles only the modules the commands import; the build stage's JDK, pip and
downloads stay out of it.

## Re-running it

```
make container-test     # builds the image, runs it; the figures in .local/container/figures.json
make container-docs     # this page and docs/container.json from .local/container/figures.json
```
"""


def _at(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its figure from ``report`` and whether it is met (None when the report lacks the figure)."""
    rows = []
    for name, target, path, unit, limit in GOALS:
        value = _at(report, path)
        rows.append(
            {
                "goal": name,
                "target": target,
                "value": value,
                "unit": unit,
                "met": None if value is None else value <= limit,
            }
        )
    return rows


def _goal_rows(report: dict[str, Any]) -> list[str]:
    lines = ["| Goal | Measured | Target | Met |", "|---|---|---|---|"]
    for row in goals(report):
        shown = "not measured" if row["value"] is None else f"{row['value']:,.0f} {row['unit']}"
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(f"| {row['goal']} | {shown} | {row['target']} | {met} |")
    pod = report["pod"]
    lines.append(f"| Container start → ready (`/readyz` 200) | {pod['start_to_ready_seconds']:.0f} s | measured | - |")
    return lines


def _image_rows(report: dict[str, Any]) -> list[str]:
    image = report["image"]
    own = image["size_mb"] - image["base_size_mb"]
    lines = [
        f"The image: **{image['size_mb']:,} MB**, of which the stand-in base `{image['base']}` is "
        f"{image['base_size_mb']:,} MB and the image's own layers {own:,} MB (`podman image inspect`). Inside it "
        "(`du -sm`, MB):",
        "",
        "| Path | MB |",
        "|---|---|",
    ]
    lines += [f"| `{path}` | {size:,} |" for path, size in image["parts_mb"].items()]
    extras = image.get("base_parts_mb")
    if extras:
        shown = ", ".join(f"`{path}` {size:,}" for path, size in extras.items())
        lines += [
            "",
            f"Of the stand-in base, {sum(extras.values()):,} MB sits in the folders the slim configuration keeps "
            f"nearly empty ({shown} MB).",
        ]
    return lines


def _memory_rows(report: dict[str, Any]) -> list[str]:
    pod = report["pod"]
    lines = [
        f"At {pod['shards']} leased shards, once every record of the first wave ({pod['records_in_first_wave']:,}) "
        "was out (MiB; PSS splits shared pages between the processes that map them):",
        "",
        "| Process | How many | RSS each | PSS each |",
        "|---|---|---|---|",
    ]
    for role, values in pod["memory_mib"].items():
        rss = " / ".join(f"{rss:.0f}" for rss, _ in values)
        pss = " / ".join(f"{pss:.0f}" for _, pss in values)
        lines.append(f"| {role} | {len(values)} | {rss} | {pss} |")
    lines.append(f"| **the pod** | | | **{pod['pss_sum_mib']:.0f}** (sum) |")
    if "cgroup_working_set_mib" in pod:
        lines += [
            "",
            f"The container's memory cgroup: working set {pod['cgroup_working_set_mib']:.0f} MiB (what the kubelet "
            f"compares with the limit), peak {pod['cgroup_peak_mib']:.0f} MiB (model preparation's child included).",
        ]
    return lines


def _time_rows(report: dict[str, Any]) -> list[str]:
    pod, image = report["pod"], report["image"]
    rows = [
        ("`podman run` → ready (`/readyz` 200: model prepared, daemon initialised)", pod["start_to_ready_seconds"]),
        ("`podman run` → every record of the first wave out", pod["start_to_first_wave_out_seconds"]),
        ("`podman stop` (drain: the batch in flight written and checkpointed)", pod.get("stop_seconds")),
        ("image build (podman, with that run's layer cache)", image["build_seconds"]),
        ("podman configuration and stand-in base (`scripts/container_setup.sh`)", report.get("setup_seconds")),
    ]
    lines = ["| Step | Seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in rows if seconds is not None]
    return lines


def render_container_doc(report: dict[str, Any]) -> str:
    """docs/container.md for ``report`` (as the container test writes it)."""
    machine = report["machine"]
    when = datetime.fromisoformat(machine["started_at"]).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        _INTRO,
        "## Goals",
        "",
        *_goal_rows(report),
        "",
        "## The image",
        "",
        *_image_rows(report),
        "",
        "## Memory",
        "",
        *_memory_rows(report),
        "",
        "## Times",
        "",
        *_time_rows(report),
        "",
        "## The run",
        "",
        f"Run on {when}: {machine['cpus']} CPUs, load average {machine['load_before'][0]:.2f} before and "
        f"{machine['load_after'][0]:.2f} after; Python {machine['python']} on {machine['platform']}.",
        "",
    ]
    return "\n".join(lines)


def write_container_docs(report_path: Path, docs_dir: Path) -> Path:
    """Copy the report to ``docs_dir``/container.json (unless it is that file), render ``docs_dir``/container.md."""
    report = json.loads(report_path.read_text())
    missing = [part for part in ("image", "pod", "machine") if part not in report]
    if missing:
        raise SystemExit(f"{report_path} lacks {missing}: a full `make container-test` run writes every part")
    target = docs_dir / REPORT_NAME
    if report_path.resolve() != target.resolve():
        shutil.copyfile(report_path, target)
    page = docs_dir / DOC_NAME
    page.write_text(render_container_doc(report))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render docs/container.md from the container test's figures.")
    parser.add_argument("report", nargs="?", type=Path, default=DEFAULT_REPORT, help="the figures (JSON)")
    parser.add_argument("--docs-dir", type=Path, default=REPO_ROOT / "docs", help="where the page and JSON go")
    args = parser.parse_args(argv)
    page = write_container_docs(args.report, args.docs_dir)
    print(f"{page} rendered from {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
