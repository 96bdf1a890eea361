"""Reading what the processes under test say and do: their JSON log lines, their HTTP answers, their end."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["gone", "http_get", "json_lines"]


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines (log events); other lines (a JVM's, a traceback's) are passed over."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def http_get(url: str, *, timeout: float = 10.0) -> tuple[int, str]:
    """``(status, body)`` of a GET; an error status is returned, not raised; ``(0, "")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether process ``pid`` has ended (a zombie counts) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False
