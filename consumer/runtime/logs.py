"""Structured logs: JSON lines on stderr, never stdout (stdout of a record processor is the MultiLang channel)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import FilteringBoundLogger, Processor

__all__ = ["configure_logging", "get_logger"]


def _dumps(event: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event, default=str).decode("utf-8")


def configure_logging(level: str = "INFO", *, stream: TextIO | None = None, component: str = "consumer") -> None:
    """Send structlog and the standard library's logging (boto3, mlflow) to ``stream`` (stderr) as JSON lines."""
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelName(level.upper())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component)

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("botocore", "boto3", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """A structlog logger with ``bound`` fields on every line."""
    logger: FilteringBoundLogger = structlog.get_logger()  # the wrapper class configure_logging sets
    return logger.bind(**bound)
