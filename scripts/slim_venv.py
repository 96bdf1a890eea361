"""Cut from the image's Python environment what `run`, `score` and `serve` never load, in the build stage, with the
environment's own interpreter:

    /opt/venv/bin/python scripts/slim_venv.py /opt/venv

1. the third-party packages' own test suites (every ``tests`` folder, and onnx's backend test data);
2. parts of packages nothing of ours imports: pyarrow's Arrow Flight (RPC) library and its C++ headers and sources,
   onnxruntime's C API library (``libonnxruntime.so``: the Python binding links ONNX Runtime statically and never
   loads it) and its transformer-model optimisation tools;
3. botocore's API models of every AWS service but the ones the image's code and credential chain call (KEEP_SERVICES);
4. the symbol tables of the packages' shared libraries (``strip --strip-unneeded``), except the libraries auditwheel
   vendored into ``<package>.libs``, which patchelf rewrote and which strip would leave unloadable ("ELF load command
   address/offset not page-aligned").

Then every shared library left is loaded once (dlopen), so that a broken one fails the build, naming it, rather
than a pod. Last, the bytecode: pip's ``__pycache__`` folders hold every module of every package, most of which no
command ever imports; they are removed and the modules that the commands do import are byte-compiled by importing
them (every module of ``consumer`` and ``record_processor``, and what they import lazily, IMPORTED_LATER). The root
filesystem is read-only at run time, so a module without bytecode is compiled again at every start: one that
IMPORTED_LATER misses costs start-up time, never correctness. Prints what each step saved. Needs ``strip``
(binutils). Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

#: botocore/data/<service> kept: Kinesis (the shards' output), S3 (MLflow artifacts; `score` reads and writes S3
#: through pyarrow's own client), DynamoDB (the lease table, for operators' scripts in the pod), and what the default
#: credential chain calls: STS (IRSA's AssumeRoleWithWebIdentity, assumed roles), SSO and SSO-OIDC (SSO profiles).
KEEP_SERVICES = frozenset({"kinesis", "s3", "dynamodb", "sts", "sso", "sso-oidc"})
#: Modules the image's code imports inside functions (model preparation, `serve`, `score`), byte-compiled with the
#: rest; and the AWS clients it creates (botocore imports part of itself when a client is made).
IMPORTED_LATER = (
    "mlflow",
    "mlflow.artifacts",
    "mlflow.tracking",
    "sklearn.ensemble",
    "sklearn.feature_extraction",
    "sklearn.pipeline",
    "sklearn.tree",
    "skl2onnx",
    "skops.io",
    "onnx",
    "onnxruntime",
    "cloudpickle",
    "joblib",
    "flask",
    "gunicorn.app.base",
    "gunicorn.glogging",
    "prometheus_client.multiprocess",
    "pyarrow.compute",
    "pyarrow.fs",
    "pyarrow.parquet",
)
CLIENTS = ("kinesis", "s3", "sts")
#: Paths (globs relative to site-packages) removed besides the ``tests`` folders, each for the reason above.
REMOVED = (
    "onnx/backend/test",
    "pyarrow/include",
    "pyarrow/src",
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    "pyarrow/_flight.*.so",
    "pyarrow/flight.py",
    "onnxruntime/capi/libonnxruntime.so*",
    "onnxruntime/transformers",
)


def size_mb(path: Path) -> float:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink()) / 1e6


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def shared_libraries(site: Path) -> Iterator[Path]:
    """Every regular ELF file named like a shared library (``x.so``, ``libx.so.25``)."""
    for path in sorted(site.rglob("*.so*")):
        if path.is_file() and not path.is_symlink() and ".so" in path.name:
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    yield path


def main(venv: Path) -> int:
    (site,) = venv.glob("lib/python3*/site-packages")
    start = size_mb(site)
    print(f"[slim_venv] {site}: {start:.0f} MB", flush=True)

    def step(name: str, paths: list[Path]) -> None:
        before = size_mb(site)
        for path in paths:
            if path.exists():
                remove(path)
        print(f"[slim_venv] {name}: -{before - size_mb(site):.0f} MB ({len(paths)} paths)", flush=True)

    step("test suites", [path for path in site.rglob("tests") if path.is_dir()])
    step("unused parts", [path for pattern in REMOVED for path in site.glob(pattern)])
    data = site / "botocore" / "data"
    step(
        "botocore service models", [path for path in data.iterdir() if path.is_dir() and path.name not in KEEP_SERVICES]
    )

    before = size_mb(site)
    strip = shutil.which("strip") or sys.exit("[slim_venv] ERROR: no strip on PATH (Debian: binutils)")
    libraries = [path for path in shared_libraries(site) if not path.parent.name.endswith(".libs")]
    subprocess.run([strip, "--strip-unneeded", *map(str, libraries)], check=True)
    print(f"[slim_venv] symbol tables: -{before - size_mb(site):.0f} MB ({len(libraries)} libraries)", flush=True)

    broken = []
    for library in shared_libraries(site):
        try:
            ctypes.CDLL(str(library), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        except OSError as error:
            broken.append(f"{library.relative_to(site)}: {error}")
    if broken:
        print("[slim_venv] ERROR: shared libraries that no longer load:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    step("bytecode of every module", [path for path in site.rglob("__pycache__") if path.is_dir()])
    before = size_mb(site)
    subprocess.run(
        [sys.executable, "-c", WARM, *IMPORTED_LATER],
        check=True,
        env={key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"},
    )
    print(f"[slim_venv] bytecode of the modules the commands import: +{size_mb(site) - before:.0f} MB", flush=True)
    print(f"[slim_venv] {start:.0f} MB -> {size_mb(site):.0f} MB; every shared library loads", flush=True)
    return 0


#: Imports every module of consumer (the development tools are not in the image), record_processor and the modules
#: named as arguments, and makes the AWS clients of CLIENTS, writing their bytecode.
WARM = f"""
import importlib, pkgutil, sys
import boto3, consumer
modules = [info.name for info in pkgutil.walk_packages(consumer.__path__, "consumer.") if ".tools" not in info.name]
for name in [*modules, "record_processor", *sys.argv[1:]]:
    importlib.import_module(name)
for service in {CLIENTS!r}:
    boto3.client(service, region_name="us-east-1")
"""


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/slim_venv.py VENV")
    sys.exit(main(Path(sys.argv[1])))
