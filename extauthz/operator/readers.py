"""Reading the logs: decision-log entries and Envoy JSON access-log lines, tolerant of noise.

Neither reader verifies anything (that is ``aegis audit verify``); a line that is not JSON
is skipped, so a log being written can be read while it grows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_SINCE = re.compile(r"^(\d+)(m|h|d|w)$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: float) -> float:
    """``7d`` / ``12h`` / ``30m`` / ``2w`` → the epoch seconds that far back; or an RFC 3339 time."""
    m = _SINCE.match(value.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"--since: expected 7d, 12h, 30m, 2w or an RFC 3339 time, got {value!r}") from None


def epoch(timestamp: Any) -> float | None:
    """An RFC 3339 timestamp (decision log, Envoy START_TIME) → epoch seconds, or None."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def json_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """JSON objects from lines, skipping anything else."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def read_entries(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Decision and event entries of decision-log files (headers and checkpoints left out)."""
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for entry in json_lines(fh):
                if entry.get("type") in {"decision", "event"}:
                    yield entry


def read_access(path: Path) -> Iterator[dict[str, Any]]:
    """Envoy access-log lines (JSON, see ``envoyconfig.access_log_format``)."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        yield from json_lines(fh)


def clean(value: Any) -> str:
    """Envoy writes ``-`` or null for a missing field."""
    if value is None or value == "-":
        return ""
    return str(value)
