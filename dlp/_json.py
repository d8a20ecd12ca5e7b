"""Structure-preserving redaction of a parsed JSON document.

Three steps over the tree, each linear in its size:

1. **collect** — walk the document once: values whose field is named by the obligations (or
   whose key announces NAME/ADDRESS/SECRET when those detectors are on) are redacted whole
   ("field" redactions); every other string value is queued for scanning with its key hint.
2. **scan** — all queued strings in one engine pass (``scan_segments``).
3. **apply** — replace spans inside strings (or drop the field in ``remove`` mode).

Keys, numbers, booleans, nulls and nesting never change, except that a value named by a field
rule is redacted whatever its type (a number becomes the mask string; objects and arrays are
redacted leaf by leaf, keeping their shape).  Keys are never scanned (see docs/dlp.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from dlp._context import NO_HINT, KeyHint, key_hint
from dlp._errors import DuplicateKey, InvalidJson
from dlp._modes import OWN_TOKEN, replacement
from dlp._paths import PathItem, format_path
from dlp._plan import Plan
from dlp._scan import scan_segments
from dlp._types import FIELD, Finding, Redaction

MAX_DEPTH = 512
Container = dict[str, Any] | list[Any]


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DuplicateKey(f"JSON object repeats a key ({len(pairs) - len(out)} duplicate(s))")
    return out


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"JSON does not allow {name}")


def parse(text: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity; every failure is a :class:`MalformedBody`."""
    try:
        return json.loads(text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant)
    except (DuplicateKey, InvalidJson):
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # huge integers, nesting beyond the parser's stack
        raise InvalidJson(f"JSON cannot be processed: {type(exc).__name__}") from exc


def dump(doc: Any) -> bytes:
    """Compact JSON; falls back to the stdlib for what orjson refuses (lone surrogates, huge ints)."""
    try:
        return orjson.dumps(doc)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


@dataclass
class _Walk:
    plan: Plan
    prefix: str
    values: list[str] = field(default_factory=list)
    hints: list[KeyHint] = field(default_factory=list)
    slots: list[tuple[Container, PathItem, tuple[PathItem, ...]]] = field(default_factory=list)
    deletions: list[tuple[Container, PathItem]] = field(default_factory=list)
    redactions: list[Redaction] = field(default_factory=list)

    def visit(self, holder: Container, slot: PathItem, value: Any, path: list[PathItem], key: str, parent: str) -> None:
        if len(path) > MAX_DEPTH:
            raise InvalidJson(f"JSON nesting deeper than {MAX_DEPTH}")
        plan = self.plan
        named_key = slot if isinstance(slot, str) else None
        hint = key_hint(key, parent) if key else NO_HINT
        if (plan.names or plan.paths) and plan.field_named(path, named_key):
            self.force(holder, slot, value, (hint.type if named_key is not None else None) or FIELD, path)
            return
        if (
            named_key is not None
            and hint.type in plan.field_detectors
            and value is not None
            and not isinstance(value, bool)
        ):
            self.force(holder, slot, value, hint.type, path)
            return
        if isinstance(value, str):
            if value and plan.text_detectors:
                self.values.append(value)
                self.hints.append(hint)
                self.slots.append((holder, slot, tuple(path)))
        elif isinstance(value, dict):
            for k, v in value.items():
                path.append(k)
                self.visit(value, k, v, path, k, key)
                path.pop()
        elif isinstance(value, list):
            for i, v in enumerate(value):
                path.append(i)
                self.visit(value, i, v, path, key, parent)
                path.pop()

    def force(self, holder: Container, slot: PathItem, value: Any, type_: str, path: list[PathItem]) -> None:
        """Redact ``value`` whole because of its field name."""
        if self.plan.mode == "remove":
            self.deletions.append((holder, slot))
            self.redactions.append(Redaction(type_, self.prefix + format_path(path), -1, -1, "field"))
            return
        self._force_leaves(holder, slot, value, type_, path)

    def _force_leaves(self, holder: Container, slot: PathItem, value: Any, type_: str, path: list[PathItem]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                path.append(k)
                self._force_leaves(value, k, v, type_, path)
                path.pop()
        elif isinstance(value, list):
            for i, v in enumerate(value):
                path.append(i)
                self._force_leaves(value, i, v, type_, path)
                path.pop()
        elif isinstance(value, str) and OWN_TOKEN.fullmatch(value):
            return  # already redacted
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            text = value if isinstance(value, str) else json.dumps(value)
            _set(holder, slot, replacement(type_, text, self.plan.mode, self.plan.hash_key))
            self.redactions.append(Redaction(type_, self.prefix + format_path(path), -1, -1, "field"))


def _set(holder: Container, slot: PathItem, value: Any) -> None:
    if isinstance(holder, dict):
        holder[str(slot)] = value
    else:
        holder[int(slot)] = value


def splice(value: str, findings: list[Finding], make: Callable[[Finding, str], str]) -> str:
    """``value`` with each finding's span replaced by ``make(finding, original_span)``."""
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(value[pos : f.start])
        out.append(make(f, value[f.start : f.end]))
        pos = f.end
    out.append(value[pos:])
    return "".join(out)


def redact_document(doc: Any, plan: Plan, prefix: str = "") -> tuple[Any, list[Redaction]]:
    """Redact ``doc`` in place (its root may be replaced); returns the new root and what changed."""
    root: list[Any] = [doc]
    walk = _Walk(plan, prefix)
    walk.visit(root, 0, doc, [], "", "")
    mode, key = plan.mode, plan.hash_key
    for (holder, slot, path), value, found in zip(
        walk.slots, walk.values, scan_segments(walk.values, walk.hints, plan.text_detectors, plan.limits), strict=True
    ):
        if not found:
            continue
        location = prefix + format_path(path)
        walk.redactions.extend(Redaction(f.type, location, f.start, f.end, "detector") for f in found)
        if mode == "remove":
            walk.deletions.append((holder, slot))
        else:
            _set(holder, slot, splice(value, found, lambda f, span: replacement(f.type, span, mode, key)))
    _apply_deletions(walk.deletions)
    return (root[0] if root else None), walk.redactions


def _apply_deletions(deletions: list[tuple[Container, PathItem]]) -> None:
    by_list: dict[int, tuple[list[Any], set[int]]] = {}
    for holder, slot in deletions:
        if isinstance(holder, dict):
            holder.pop(str(slot), None)
        else:
            by_list.setdefault(id(holder), (holder, set()))[1].add(int(slot))
    for holder, indices in by_list.values():
        for i in sorted(indices, reverse=True):
            del holder[i]
