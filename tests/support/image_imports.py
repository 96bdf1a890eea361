"""A process that imports only what the image installs: after :func:`image_packages_only`, the standard library,
this project and the packages of Pipfile.lock's default section (the image's /opt/venv); of the ``mlflow`` package,
only the files mlflow-skinny installs. Anything else is missing, to imports and to ``importlib.metadata`` alike, so a
process of .venv (which also holds the tools' full MLflow, pandas and the dev packages) behaves as the image's
would.

Standard library only, so that a process can call it before it imports anything else.
"""

from __future__ import annotations

import importlib.abc
import json
import re
import sys
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec, PathFinder
from importlib.metadata import Distribution, DistributionFinder, distribution, packages_distributions
from pathlib import Path
from types import ModuleType

__all__ = ["image_packages_only"]

#: This project's own top-level names.
OWN = {"consumer", "record_processor", "tests"}
LOCK = Path(__file__).resolve().parents[2] / "Pipfile.lock"
_NO_CONTEXT = DistributionFinder.Context()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _ImagePackagesOnly(importlib.abc.MetaPathFinder):
    """The path finder, blind to what the image does not install: a name it refuses is not found at all (an import
    raises ModuleNotFoundError, ``importlib.util.find_spec`` answers None), as in the image."""

    def __init__(self) -> None:
        lock = json.loads(LOCK.read_text())
        self.allowed = {_normalized(name) for name in lock["default"]}
        self.providers = packages_distributions()
        skinny = distribution("mlflow-skinny")
        self.site = Path(str(skinny.locate_file(""))).resolve()
        self.skinny_files = {str(path) for path in skinny.files or ()}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        spec = PathFinder.find_spec(fullname, path, target)
        return spec if spec is None or self._in_image(fullname, spec) else None

    def find_distributions(self, context: DistributionFinder.Context = _NO_CONTEXT) -> Iterator[Distribution]:
        """importlib.metadata asks the finders which distributions are installed: the image's alone (MLflow tells
        mlflow-skinny from the full MLflow this way)."""
        for found in PathFinder.find_distributions(context):
            if _normalized(found.metadata["Name"] or "") in self.allowed:
                yield found

    def invalidate_caches(self) -> None:
        PathFinder.invalidate_caches()

    def _in_image(self, fullname: str, spec: ModuleSpec) -> bool:
        top = fullname.split(".")[0]
        if top in sys.stdlib_module_names or top in OWN or top not in self.providers:
            return True  # the standard library, this project, or no distribution's file: nothing to decide
        if not {_normalized(name) for name in self.providers[top]} & self.allowed:
            return False
        if top != "mlflow" or spec.origin is None:
            return True
        origin = Path(spec.origin).resolve()
        return not origin.is_relative_to(self.site) or str(origin.relative_to(self.site)) in self.skinny_files


def image_packages_only() -> None:
    """From now on, this process finds only what the image installs, modules and distributions' metadata alike
    (see the module's docstring). Modules it has imported already stay."""
    sys.meta_path[:] = [_ImagePackagesOnly() if finder is PathFinder else finder for finder in sys.meta_path]
