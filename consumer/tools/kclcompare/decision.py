"""The choice the comparison informed, with the figures it rests on taken from the report."""

from __future__ import annotations

from typing import Any

__all__ = ["decision_lines"]


def decision_lines(report: dict[str, Any]) -> list[str]:
    return ["## The choice", "", "(to be written from the measured report)", ""]
