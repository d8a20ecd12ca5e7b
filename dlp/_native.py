"""The compiled core (``aegis_dlp_native``, built from dlp/native) behind ``scan_segments`` and
JSON redaction, and the bridge that feeds it.

The core is configured once from tables this package exports from its own sources of truth
(the pattern table, context keywords, phonenumbers' metadata, stdnum's IBAN registry), so the
two implementations cannot drift apart by data; tests/dlp/native checks they agree on the
corpus and on generated input.  What stays in Python is called back and cached per plan: key
hints (``_context``), replacements other than ``mask`` (``_modes``), path pieces (``_paths``).

The Python implementation is used when the extension is not installed, when
``AEGIS_DLP_NATIVE=0``, and for what the core defers (see ``native_json``).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from dlp import _checks, _context, _dates, _engine, _paths, _validate
from dlp._context import KeyHint
from dlp._modes import OWN_TOKEN, replacement
from dlp._patterns import PATTERNS
from dlp._plan import Plan
from dlp._types import Redaction

try:  # the wheel is built by `make install`; without it everything runs in Python
    import aegis_dlp_native as _ext
except ImportError:  # pragma: no cover - depends on the installation
    _ext = None

_MODES = frozenset({"mask", "partial", "hash"})


def tables() -> dict[str, Any]:
    """Everything the core is built from (one JSON document)."""
    return {
        "engine": _engine.native_tables(),
        "validate": _validate.native_tables(),
        "phone": _validate.phone_native_tables(),
        "context": _context.native_tables(),
        "patterns": [(p.detector, p.kind) for p in PATTERNS],
        "own_token": OWN_TOKEN.pattern,
    }


@functools.cache
def core() -> Any | None:
    """The compiled core, or None when it is switched off or not installed."""
    if _ext is None or os.environ.get("AEGIS_DLP_NATIVE", "1") == "0":
        return None
    return _ext.Core(json.dumps(tables()), _checks.iban_country_module_ok)


def _hint(h: KeyHint) -> tuple[str | None, bool, bool]:
    return (h.type, h.negative, h.version)


def _today() -> tuple[int, int, int]:
    d = _dates._current_date()
    return (d.year, d.month, d.day)


def scan_segments(
    native: Any, values: list[str], hints: list[KeyHint], wanted: frozenset[str], limits: dict[str, float]
) -> list[list[tuple[str, int, int, float]]]:
    """``dlp._scan.scan_segments`` in the core."""
    return native.scan_segments(values, [_hint(h) for h in hints], sorted(wanted), limits, _today())  # type: ignore[no-any-return]


def _native_plan(plan: Plan) -> Any:
    cached = plan.native.get("plan")
    if cached is None:
        mode, key = plan.mode, plan.hash_key

        def key_entry(k: str, parent: str) -> tuple[str | None, bool, bool, int]:
            hint, action = plan.entries_under(parent).get(k) or plan.key_entry(k, parent)
            return (*_hint(hint), action)

        def key_hint(k: str, parent: str) -> tuple[str | None, bool, bool]:
            return _hint(_context.key_hint(k, parent))

        def replace(type_: str, value: str, number: bool) -> str:
            # A number named by a field: its text as the Python walk sees it (``json.dumps``).
            text = json.dumps(json.loads(value)) if number else value
            return replacement(type_, text, mode, key)

        cached = plan.native["plan"] = _ext.NativePlan(  # core() checked that the extension is there
            sorted(plan.text_detectors),
            plan.limits,
            mode == "mask",
            key_entry,
            key_hint,
            replace,
            _paths.piece,
        )
    return cached


def native_json(text: str, plan: Plan, prefix: str) -> tuple[str, list[Redaction]] | None:
    """``dlp._json.redact_text`` in the core, or None when the Python path must run: no core,
    JSON-path rules or ``remove`` mode (not in the core), or a document the core defers
    (invalid, duplicate keys, too deep, lone surrogates, numbers beyond 64-bit integers or
    doubles), for which the Python path gives the precise error."""
    native = core()
    if native is None or plan.paths or plan.mode not in _MODES:
        return None
    answer = native.redact_json(text, _native_plan(plan), prefix, _today())
    if answer is None:
        return None
    new, found = answer
    return (text if new is None else new), [Redaction(*r) for r in found]
