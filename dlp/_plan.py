"""Obligations compiled once into what the redactors need on every request.

``plan_for`` is memoised on the (frozen, hashable) obligations: ext_proc sees the same few
obligation sets over and over, so path parsing and name resolution happen once per set.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dlp._context import KeyHint, key_hint, normalize_key
from dlp._obligations import Obligations
from dlp._paths import FieldRule, PathItem, compile_field
from dlp._scan import resolve_detectors, resolve_thresholds
from dlp._types import FIELD_DETECTORS, SECRET, TEXT_DETECTORS

# What a plan does with a value held under one key (in one parent): its hint, and an action:
# nothing special, redacted whole because ``fields`` names the key, or because the key
# announces a field-detected type (NAME, ADDRESS, SECRET).  A plain tuple: the walk reads it
# for every key of every document.
KeyEntry = tuple[KeyHint, int]
SCAN, NAMED, BY_DETECTOR = 0, 1, 2


_MAX_KEY_ENTRIES = 4096


@dataclass(frozen=True)
class Plan:
    """Compiled obligations."""

    names: frozenset[str]  # normalised bare field names
    paths: tuple[FieldRule, ...]  # JSON path rules
    text_detectors: frozenset[str]
    field_detectors: frozenset[str]  # NAME/ADDRESS (and SECRET by key) found by key name
    limits: dict[str, float]
    mode: str
    hash_key: bytes | None
    # parent key → key → KeyEntry: documents repeat their keys, so each is looked at once per plan.
    key_entries: dict[str, dict[str, KeyEntry]] = field(default_factory=dict, compare=False, repr=False)
    # The compiled core's view of this plan (dlp._native), made on first use.
    native: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def entries_under(self, parent: str) -> dict[str, KeyEntry]:
        """The (growing) table of :class:`KeyEntry` for keys held under ``parent``."""
        table = self.key_entries.get(parent)
        if table is None:
            if len(self.key_entries) >= _MAX_KEY_ENTRIES:
                self.key_entries.clear()
            table = self.key_entries[parent] = {}
        return table

    def key_entry(self, key: str, parent: str) -> KeyEntry:
        """The :class:`KeyEntry` of ``key`` under ``parent`` (computed once, then read from ``entries_under``)."""
        hint = key_hint(key, parent)
        if self.names and normalize_key(key) in self.names:
            entry = (hint, NAMED)
        elif hint.type is not None and hint.type in self.field_detectors:
            entry = (hint, BY_DETECTOR)
        else:
            entry = (hint, SCAN)
        table = self.entries_under(parent)
        if len(table) >= _MAX_KEY_ENTRIES:
            table.clear()
        table[key] = entry
        return entry

    def field_named(self, path: Sequence[PathItem], key: str | None) -> bool:
        """Does ``Obligations.fields`` name the value at ``path`` (held under ``key``)?"""
        if key is not None and self.names and normalize_key(key) in self.names:
            return True
        return any(rule.matches(path, None) for rule in self.paths)


@functools.lru_cache(maxsize=256)
def plan_for(obligations: Obligations) -> Plan:
    """The compiled :class:`Plan` of ``obligations`` (cached)."""
    rules = [compile_field(f) for f in obligations.fields]
    wanted = resolve_detectors(obligations.detectors) if obligations.detectors else frozenset()
    field_detectors = wanted & frozenset(FIELD_DETECTORS)
    if SECRET in wanted:
        field_detectors |= {SECRET}
    return Plan(
        names=frozenset(r.name for r in rules if r.name is not None),
        paths=tuple(r for r in rules if r.name is None),
        text_detectors=wanted & frozenset(TEXT_DETECTORS),
        field_detectors=frozenset(field_detectors),
        limits=resolve_thresholds(dict(obligations.thresholds)),
        mode=obligations.mode,
        hash_key=obligations.hash_key,
    )
