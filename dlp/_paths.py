"""Field rules: which values ``Obligations.fields`` names.

Two forms:

* a bare **field name** (``ssn``, ``full_name``) matches that key at any depth, compared after
  normalisation (case and ``_``/``-`` ignored, so ``full_name`` also matches ``fullName``);
* a **JSON path** starting with ``$``: ``.key``, ``['key']``, ``[0]``, ``[*]``/``.*`` (any child),
  and ``..key`` (``key`` at any depth below).  Path keys compare exactly.

For form bodies the top-level form field names play the role of keys.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dlp._context import normalize_key
from dlp._errors import InvalidObligations

Step = tuple[str, str | int | None]  # ("key", name) | ("index", n) | ("any", None) | ("descend", None)
PathItem = str | int

_TOKEN = re.compile(
    r"""(?P<descend>\.\.)|\.(?P<key>[^.\[\]]{1,256})|\[(?P<index>\d{1,9})\]|\[\*\]|\[(?P<q>['"])(?P<qkey>[^'"]{0,256})(?P=q)\]"""
)
MAX_PATH_STEPS = 64


@dataclass(frozen=True)
class FieldRule:
    """One compiled entry of ``Obligations.fields``."""

    source: str
    name: str | None  # normalised bare name, or None for a path
    steps: tuple[Step, ...] = ()

    def matches(self, path: Sequence[PathItem], key_norm: str | None) -> bool:
        """Does this rule name the value at ``path`` (held under a key normalising to ``key_norm``)?"""
        if self.name is not None:
            return key_norm == self.name
        return _match(self.steps, 0, path, 0)


def _match(steps: tuple[Step, ...], i: int, path: Sequence[PathItem], j: int) -> bool:
    if i == len(steps):
        return j == len(path)
    kind, arg = steps[i]
    if kind == "descend":
        return any(_match(steps, i + 1, path, k) for k in range(j, len(path)))
    if j == len(path):
        return False
    item = path[j]
    if kind == "any" or (kind == "key" and item == arg and isinstance(item, str)):
        return _match(steps, i + 1, path, j + 1)
    if kind == "index" and item == arg and isinstance(item, int):
        return _match(steps, i + 1, path, j + 1)
    return False


@functools.lru_cache(maxsize=1024)
def compile_field(source: str) -> FieldRule:
    """Compile a field name or JSON path; raise :class:`InvalidObligations` naming a bad one."""
    text = source.strip()
    if not text:
        raise InvalidObligations("empty field name in obligations")
    if not text.startswith("$"):
        norm = normalize_key(text)
        if not norm:
            raise InvalidObligations(f"field name {source!r} has no letters or digits")
        return FieldRule(source, norm)
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidObligations(f"bad JSON path {source!r} at character {pos}")
        if m.group("descend"):
            steps.append(("descend", None))
            pos = m.end()
            # ``$..key`` — the key follows the two dots directly
            km = re.match(r"[^.\[\]]{1,256}", text[pos:])
            if km is not None:
                steps.append(("any", None) if km.group(0) == "*" else ("key", km.group(0)))
                pos += km.end()
            continue
        if m.group("key") is not None:
            steps.append(("any", None) if m.group("key") == "*" else ("key", m.group("key")))
        elif m.group("index") is not None:
            steps.append(("index", int(m.group("index"))))
        elif m.group("qkey") is not None:
            steps.append(("key", m.group("qkey")))
        else:
            steps.append(("any", None))
        pos = m.end()
    if len(steps) > MAX_PATH_STEPS:
        raise InvalidObligations(f"JSON path {source!r} has more than {MAX_PATH_STEPS} steps")
    if steps and steps[-1][0] == "descend":
        raise InvalidObligations(f"JSON path {source!r} ends with '..'")
    return FieldRule(source, None, tuple(steps))


_PIECES: dict[PathItem, str] = {}


def piece(item: PathItem) -> str:
    """One item of a formatted path: ``.name``, ``['odd key']`` or ``[3]``."""
    text = _PIECES.get(item)
    if text is None:
        if isinstance(item, int):
            text = f"[{item}]"
        elif item.isidentifier():
            text = f".{item}"
        else:
            text = "[" + repr(item) + "]"
        if len(_PIECES) > 4096:
            _PIECES.clear()
        _PIECES[item] = text
    return text


def format_path(path: Sequence[PathItem]) -> str:
    """``("customer", "emails", 0)`` → ``$.customer.emails[0]`` (for ``Redaction.location``)."""
    return "$" + "".join(map(piece, path))
