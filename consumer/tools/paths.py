"""Where the development tools keep and find things in a checkout of the repository.

The tools live only in a checkout (the image ships the runtime, the pipeline and the model, not these), so their
state folder and the emulators' ``node_modules`` are found from the repository's root.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_TRIPS", "LOCAL_DIR", "NODE_MODULES", "REPO_ROOT", "TLC_URL"]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Local run state: the demo's MLflow store, model cache and logs, the benchmark's reports (ignored by git).
LOCAL_DIR = REPO_ROOT / ".local"
#: Where ``make setup`` installs the emulators (package.json).
NODE_MODULES = REPO_ROOT / "node_modules"
#: The January 2022 green-taxi file: beside the repo on the project's machines, else NYC TLC's public copy.
TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2022-01.parquet"
_SHARED_TRIPS = REPO_ROOT.parent / "shared" / "data" / "green_tripdata_2022-01.parquet"
DEFAULT_TRIPS = str(_SHARED_TRIPS) if _SHARED_TRIPS.exists() else TLC_URL
