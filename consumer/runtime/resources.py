"""Files the runtime ships and finds by import, never by a path relative to the source tree.

The daemon's properties template, its logback configuration and the KCL jar lock are the repository's
``properties/`` folder, shipped as package data (``consumer/runtime/properties`` is that folder); the executable the
daemon starts per shard is the top-level module ``record_processor``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

from consumer.errors import DaemonSetupError

__all__ = ["JAR_LOCK", "LOGBACK_CONFIG", "PROPERTIES_TEMPLATE", "record_processor_path"]

_PROPERTIES = Path(str(importlib.resources.files("consumer.runtime") / "properties"))

#: The daemon properties the launcher renders (KCL_PROPERTIES_TEMPLATE overrides it).
PROPERTIES_TEMPLATE = _PROPERTIES / "consumer.properties"
#: The daemon's logback configuration: JSON lines, its per-batch chatter turned down.
LOGBACK_CONFIG = _PROPERTIES / "logback.xml"
#: The KCL jars the daemon may load, by group:artifact:version and SHA-256 (``make kcl-lock`` writes it).
JAR_LOCK = _PROPERTIES / "kcl-jars.lock"


def record_processor_path() -> Path:
    """``record_processor.py``, the executable the daemon starts once per leased shard."""
    spec = importlib.util.find_spec("record_processor")
    if spec is None or spec.origin is None:
        raise DaemonSetupError("the record_processor module is not installed with the consumer package")
    return Path(spec.origin)
