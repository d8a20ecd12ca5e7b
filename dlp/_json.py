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
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

from dlp._context import NO_HINT, KeyHint, key_hint
from dlp._errors import DuplicateKey, InvalidJson
from dlp._modes import OWN_TOKEN, mask, replacement
from dlp._native import native_json
from dlp._paths import PathItem, format_path
from dlp._plan import BY_DETECTOR, NAMED, Plan
from dlp._scan import Span, scan_segments
from dlp._types import FIELD, Redaction

MAX_DEPTH = 512
Container = dict[str, Any] | list[Any]


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DuplicateKey(f"JSON object repeats a key ({len(pairs) - len(out)} duplicate(s))")
    return out


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"JSON does not allow {name}")


def _finite_float(text: str) -> float:
    # 1e400 reads as inf, which no JSON encoder writes back: refused like NaN and Infinity.
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("JSON number out of the range of a double")
    return value


def parse(text: str) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity; every failure is a :class:`MalformedBody`."""
    try:
        return json.loads(
            text, object_pairs_hook=_pairs_no_duplicates, parse_constant=_reject_constant, parse_float=_finite_float
        )
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


PathNode = tuple[Any, PathItem] | None  # (the parent container's node, this container's slot); None: root


def _path(node: PathNode, last: PathItem | None = None) -> list[PathItem]:
    """The JSON path of a container node (and of its child ``last``), root first."""
    items: list[PathItem] = [] if last is None else [last]
    while node is not None:
        node, item = node
        items.append(item)
    items.reverse()
    return items


# A value of letters only holds no candidate of any pattern shorter than this (an AWS access
# key id can be 20 letters; every other pattern needs a digit, ``@``, ``:``, ``=``, ``_``, ``-``
# or a space): such values — ``open``, ``gold``, ``USD`` — are not scanned at all.
_MIN_ALPHA_CANDIDATE = 20

# orjson reads an integer beyond 64 bits as a float; a float this large may have been one.
_BIG = float(2**63)


def _count_keys(value: Any) -> tuple[int, bool]:
    """Object keys in ``value`` and whether it holds a float that may have been a huge integer."""
    if isinstance(value, dict):
        counts = [_count_keys(v) for v in value.values()]
        return len(value) + sum(c for c, _ in counts), any(b for _, b in counts)
    if isinstance(value, list):
        counts = [_count_keys(v) for v in value]
        return sum(c for c, _ in counts), any(b for _, b in counts)
    return 0, isinstance(value, float) and not -_BIG < value < _BIG


class _Walk:
    """One walk over a parsed document: what to scan, what to redact whole, and how many keys it has.

    Paths are kept as parent links (``PathNode``) and spelled out only for the values that are
    redacted (or when the obligations name JSON paths), so the walk costs a dictionary look-up
    and an append per value.
    """

    __slots__ = ("big_float", "deletions", "hints", "keys", "plan", "prefix", "redactions", "slots", "values")

    def __init__(self, plan: Plan, prefix: str) -> None:
        self.plan = plan
        self.prefix = prefix
        self.values: list[str] = []
        self.hints: list[KeyHint] = []
        self.slots: list[tuple[Container, PathItem, PathNode]] = []
        self.deletions: list[tuple[Container, PathItem]] = []
        self.redactions: list[Redaction] = []
        self.keys = 0  # object keys seen, checked against the text (duplicate keys)
        self.big_float = False  # a float that orjson may have made of a huge integer

    def root(self, holder: list[Any]) -> None:
        doc = holder[0]
        if self.plan.paths and self.plan.field_named([], None):
            self.force(holder, 0, doc, FIELD, None)
        elif isinstance(doc, str):
            if doc and self.plan.text_detectors:
                self.values.append(doc)
                self.hints.append(NO_HINT)
                self.slots.append((holder, 0, None))
        elif isinstance(doc, dict | list):
            self.container(doc, "", "", None, 0)
        elif isinstance(doc, float) and not -_BIG < doc < _BIG:
            self.big_float = True

    def container(self, node: Container, key: str, parent: str, pnode: PathNode, depth: int) -> None:
        if node and depth >= MAX_DEPTH:
            raise InvalidJson(f"JSON nesting deeper than {MAX_DEPTH}")
        plan = self.plan
        paths = plan.paths
        scan = bool(plan.text_detectors)
        values, hints, slots = self.values, self.hints, self.slots
        if node.__class__ is dict:
            self.keys += len(node)
            entry_of = plan.entries_under(key).get
            for k, v in node.items():
                hint, action = entry_of(k) or plan.key_entry(k, key)
                if action == NAMED or (paths and plan.field_named(_path(pnode, k), None)):
                    self.force(node, k, v, hint.type or FIELD, pnode)
                elif action == BY_DETECTOR and v is not None and v is not True and v is not False:
                    self.force(node, k, v, hint.type, pnode)  # type: ignore[arg-type]  # a field type here
                elif v.__class__ is str:
                    if v and scan and not (v.isalpha() and len(v) < _MIN_ALPHA_CANDIDATE):
                        values.append(v)
                        hints.append(hint)
                        slots.append((node, k, pnode))
                elif v.__class__ is dict or v.__class__ is list:
                    self.container(v, k, key, (pnode, k), depth + 1)
                elif v.__class__ is float and not -_BIG < v < _BIG:
                    self.big_float = True
            return
        hint = key_hint(key, parent) if key else NO_HINT
        for i, v in enumerate(node):
            if paths and plan.field_named(_path(pnode, i), None):
                self.force(node, i, v, FIELD, pnode)
            elif v.__class__ is str:
                if v and scan and not (v.isalpha() and len(v) < _MIN_ALPHA_CANDIDATE):
                    values.append(v)
                    hints.append(hint)
                    slots.append((node, i, pnode))
            elif v.__class__ is dict or v.__class__ is list:
                self.container(v, key, parent, (pnode, i), depth + 1)
            elif v.__class__ is float and not -_BIG < v < _BIG:
                self.big_float = True

    def force(self, holder: Container, slot: PathItem, value: Any, type_: str, pnode: PathNode) -> None:
        """Redact ``value`` whole because of its field name."""
        if value.__class__ is dict or value.__class__ is list:  # a subtree's keys count too
            keys, big = _count_keys(value)
            self.keys += keys
            self.big_float |= big
        elif value.__class__ is float and not -_BIG < value < _BIG:
            self.big_float = True
        path = _path(pnode, slot)
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
        elif isinstance(value, str) and value[:1] == "[" and OWN_TOKEN.fullmatch(value):
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


def splice(value: str, findings: list[Span], make: Callable[[Span, str], str]) -> str:
    """``value`` with each finding's span replaced by ``make(finding, original_span)``."""
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(value[pos : f[1]])
        out.append(make(f, value[f[1] : f[2]]))
        pos = f[2]
    out.append(value[pos:])
    return "".join(out)


def _walk(doc: Any, plan: Plan, prefix: str) -> tuple[list[Any], _Walk]:
    root: list[Any] = [doc]
    walk = _Walk(plan, prefix)
    walk.root(root)
    return root, walk


def _apply(root: list[Any], walk: _Walk) -> tuple[Any, list[Redaction]]:
    """Scan the collected values, replace what was found, drop what ``remove`` drops."""
    plan, prefix = walk.plan, walk.prefix
    if walk.values:
        mode, key = plan.mode, plan.hash_key
        found_all = scan_segments(walk.values, walk.hints, plan.text_detectors, plan.limits)
        for i, found in enumerate(found_all):
            if not found:
                continue
            holder, slot, pnode = walk.slots[i]
            location = prefix + format_path(_path(pnode, slot))
            walk.redactions.extend(Redaction(f[0], location, f[1], f[2], "detector") for f in found)
            if mode == "remove":
                walk.deletions.append((holder, slot))
            elif mode == "mask":  # the common case, without a call per finding
                holder[slot] = _mask_spans(walk.values[i], found)  # type: ignore[index]  # key or index
            else:
                holder[slot] = splice(walk.values[i], found, lambda f, span: replacement(f[0], span, mode, key))  # type: ignore[index]
    _apply_deletions(walk.deletions)
    return (root[0] if root else None), walk.redactions


def _mask_spans(value: str, found: list[Span]) -> str:
    """``splice`` with the ``mask`` replacement."""
    out: list[str] = []
    pos = 0
    for t, start, end, _ in found:
        out.append(value[pos:start])
        out.append(mask(t))
        pos = end
    out.append(value[pos:])
    return "".join(out)


def redact_document(doc: Any, plan: Plan, prefix: str = "") -> tuple[Any, list[Redaction]]:
    """Redact a parsed document in place (its root may be replaced); returns the new root and what changed."""
    return _apply(*_walk(doc, plan, prefix))


def redact_text(text: str, plan: Plan, prefix: str = "") -> tuple[str, list[Redaction]]:
    """Parse, redact and re-encode one JSON text; unchanged text is returned as it is.

    orjson parses (~5x the stdlib's speed with the duplicate-key hook) but keeps the last of
    duplicate keys silently, and reads integers beyond 64 bits as floats.  So the walk counts
    the keys it saw and compares them with the key separators in the text (``":``, which every
    key ends with), and notes floats beyond 2**63.  Equal counts and no such float prove the
    parse exact; otherwise (duplicates, ``":`` inside a string, a huge number) the stdlib parser
    with the duplicate-key hook parses again and decides.  Text orjson refuses goes to the
    stdlib parser too, for its precise error (or its wider range, e.g. lone surrogates).
    """
    native = native_json(text, plan, prefix)
    if native is not None:
        return native
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        root, walk = _walk(parse(text), plan, prefix)
    else:
        root, walk = _walk(doc, plan, prefix)
        if walk.big_float or walk.keys != _key_separators(text):
            root, walk = _walk(parse(text), plan, prefix)  # parse raises DuplicateKey on repeats
    doc, found = _apply(root, walk)
    if not found:
        return text, found
    return dump(doc).decode("utf-8", "surrogatepass"), found


_QUOTE_SPACE_COLON = re.compile(r'"[ \t\r\n]+:')


def _key_separators(text: str) -> int:
    """How many ``"`` are followed by ``:`` (optionally after whitespace): at least the number of keys."""
    n = text.count('":')
    if _QUOTE_SPACE_COLON.search(text) is not None:  # ``"key" : value`` (Jackson's pretty printer)
        n += len(_QUOTE_SPACE_COLON.findall(text))
    return n


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
