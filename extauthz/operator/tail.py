"""``aegis logs tail``: Envoy's access log and the decision log, joined on ``decision_id``.

One row per call: time, agent, tool, request, decision (coloured), status, rule, reason,
latency and redaction counts.  The access log drives the rows (one line per call through
Envoy); decisions without an access line (AuthZEN evaluations) are shown from the decision
log alone.  ``--follow`` polls both files and prints calls as their access line appears.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from extauthz.operator.readers import clean, json_lines, read_access, read_entries

STYLES = {
    "allow": "green",
    "sanitize": "cyan",
    "approval_needed": "yellow",
    "deny": "bold red",
    "unauthenticated": "magenta",
    "bad_request": "dark_orange",
    "error": "bold white on red",
}
COLUMNS = (("time", 12), ("agent", 14), ("tool", 20), ("request", 30), ("decision", 15), ("status", 6),
           ("rule", 24), ("ms", 5), ("redactions", 14), ("reason", 0))  # fmt: skip
_JOIN_MEMORY = 100_000  # decision entries kept for joining while following


@dataclass(frozen=True)
class Filters:
    """Row filters (exact match; empty: any)."""

    agent: str = ""
    decision: str = ""
    tool: str = ""

    def accept(self, row: dict[str, str]) -> bool:
        return (
            (not self.agent or row["agent"] == self.agent)
            and (not self.decision or row["decision"] == self.decision)
            and (not self.tool or row["tool"] == self.tool)
        )


def row(access: dict[str, Any] | None, decision: dict[str, Any] | None) -> dict[str, str]:
    """One call's display fields, preferring the decision log (it has the full reason)."""
    a, d = access or {}, decision or {}
    timestamp = clean(a.get("start_time")) or clean(d.get("timestamp"))
    request = d.get("input", {}).get("request", {}) if d else {}
    method = clean(a.get("method")) or clean(request.get("method"))
    host = clean(a.get("authority")) or clean(request.get("host"))
    path = clean(a.get("path")) or clean(request.get("path"))
    return {
        "time": timestamp[11:23] if len(timestamp) > 19 else timestamp,
        "agent": clean(d.get("agent")) or clean(a.get("agent_id")),
        "tool": clean(d.get("tool")) or clean(a.get("tool")),
        "request": f"{method} {host}{path.split('?', 1)[0]}".strip(),
        "decision": clean(d.get("outcome")) or clean(a.get("decision")),
        "status": clean(a.get("response_code")) or clean(d.get("status")),
        "rule": clean(d.get("rule")) or clean(a.get("rule")),
        "ms": clean(a.get("duration_ms")),
        "redactions": clean(a.get("redactions")),
        "reason": clean(d.get("reason")) or clean(d.get("error")),
        "decision_id": clean(a.get("decision_id")) or clean(d.get("decision_id")),
    }


def render(fields: dict[str, str]) -> Text:
    """A row as fixed-width coloured text."""
    text = Text()
    for name, width in COLUMNS:
        value = fields[name]
        cell = value if not width else (value[: width - 1] + "…" if len(value) > width else value.ljust(width))
        style = STYLES.get(fields["decision"], "") if name == "decision" else ("dim" if name == "time" else "")
        text.append(cell, style=style)
        text.append(" ")
    return text


def header() -> Text:
    return Text(" ".join(n.ljust(w) if w else n for n, w in COLUMNS), style="bold underline")


def joined_rows(access_path: Path | None, decision_paths: list[Path]) -> Iterator[dict[str, str]]:
    """Every call in the files, in access-log order, then decisions with no access line."""
    decisions = {str(e["decision_id"]): e for e in read_entries(decision_paths) if e.get("decision_id")}
    seen: set[str] = set()
    if access_path is not None:
        for line in read_access(access_path):
            decision_id = clean(line.get("decision_id"))
            seen.add(decision_id)
            yield row(line, decisions.get(decision_id))
    for decision_id, entry in decisions.items():
        if decision_id not in seen:
            yield row(None, entry)


class _Follower:
    """New complete lines appended to a file (tolerates the file appearing late or rotating)."""

    def __init__(self, path: Path, from_start: bool) -> None:
        self.path, self.offset, self.partial = path, 0, b""
        if not from_start and path.exists():
            self.offset = path.stat().st_size

    def lines(self) -> list[str]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # rotated or truncated: start over
            self.offset, self.partial = 0, b""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]


def follow(
    access_path: Path, decision_path: Path | None, filters: Filters, console: Console, *, poll_s: float = 0.5
) -> None:
    """Print calls as Envoy logs them, until interrupted."""
    access = _Follower(access_path, from_start=False)
    decisions = _Follower(decision_path, from_start=True) if decision_path else None
    known: OrderedDict[str, dict[str, Any]] = OrderedDict()
    console.print(header(), soft_wrap=True)
    while True:
        if decisions is not None:
            for entry in json_lines(decisions.lines()):
                if entry.get("type") == "decision" and entry.get("decision_id"):
                    known[str(entry["decision_id"])] = entry
                    while len(known) > _JOIN_MEMORY:
                        known.popitem(last=False)
        for line in json_lines(access.lines()):
            fields = row(line, known.get(clean(line.get("decision_id"))))
            if filters.accept(fields):
                console.print(render(fields), soft_wrap=True)
        time.sleep(poll_s)


def tail(access_path: Path | None, decision_paths: list[Path], filters: Filters, console: Console) -> int:
    """Print every call in the files that passes the filters; returns how many."""
    console.print(header(), soft_wrap=True)
    shown = 0
    for fields in joined_rows(access_path, decision_paths):
        if filters.accept(fields):
            console.print(render(fields), soft_wrap=True)
            shown += 1
    return shown
