"""Scanning: candidates from the engine → validators → context → thresholds → overlaps.

The order is the cost order: the engine pass is one linear scan; validators run only on the
candidates of requested detectors, longest first per start, and a candidate inside a span its
detector already accepted is skipped; context only looks at a bounded window; overlaps between
detectors are settled last, highest confidence first.

``scan_segments`` scans many strings (the string values of one JSON document) in one engine
pass by joining them with NUL, which no pattern matches and which is a word boundary; a
candidate never crosses a value and context never reaches into the previous one.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

from dlp import _context, _validate
from dlp._context import NO_HINT, KeyHint
from dlp._engine import candidates
from dlp._errors import UnknownDetector
from dlp._modes import OWN_TOKEN
from dlp._patterns import PATTERNS
from dlp._types import (
    CREDIT_CARD,
    DATE_OF_BIRTH,
    DEFAULT_THRESHOLDS,
    DETECTORS,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PHONE,
    SECRET,
    SSN,
    TEXT_DETECTORS,
    Finding,
)

SEPARATOR = "\x00"
# Number-shaped detectors, which identifiers, versions and amounts imitate.
_LOOKALIKE_PRONE = frozenset({PHONE, SSN, CREDIT_CARD, IBAN, IP_ADDRESS, DATE_OF_BIRTH})

_VALIDATORS: dict[str, _validate.Validator] = {
    EMAIL: _validate.email,
    PHONE: _validate.phone,
    SSN: _validate.ssn,
    CREDIT_CARD: _validate.credit_card,
    IBAN: _validate.iban,
    IP_ADDRESS: _validate.ip_address,
    DATE_OF_BIRTH: _validate.date_of_birth,
    SECRET: _validate.secret,
}
# Tie-break between overlapping findings of equal confidence: the more specific type wins.
_PRIORITY = {t: i for i, t in enumerate((SECRET, CREDIT_CARD, IBAN, SSN, EMAIL, IP_ADDRESS, PHONE, DATE_OF_BIRTH))}


def resolve_detectors(detectors: Iterable[str] | None) -> frozenset[str]:
    """The set of detector names asked for; ``None``, ``"*"`` or ``"ALL"`` mean every detector."""
    if detectors is None:
        return frozenset(DETECTORS)
    wanted = set()
    for name in detectors:
        upper = name.strip().upper()
        if upper in ("*", "ALL"):
            return frozenset(DETECTORS)
        if upper not in DETECTORS:
            raise UnknownDetector(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
        wanted.add(upper)
    return frozenset(wanted)


def resolve_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Default thresholds overridden by ``thresholds`` (keys are detector names, values in [0, 1])."""
    merged = dict(DEFAULT_THRESHOLDS)
    for name, value in (thresholds or {}).items():
        upper = name.upper()
        if upper not in DETECTORS:
            raise UnknownDetector(f"threshold for unknown detector {name!r}")
        if not 0.0 <= float(value) <= 1.0:
            raise UnknownDetector(f"threshold for {upper} must be within [0, 1], got {value!r}")
        merged[upper] = float(value)
    return merged


def _score(detector: str, base: float, text: str, start: int, floor: int, hint: KeyHint) -> float:
    """Base confidence moved by the key that holds the value and the words before it."""
    if hint.type == detector:
        return max(base, _context.KEY_MATCH_CONFIDENCE)
    if detector == IP_ADDRESS and hint.version:
        return 0.0  # a dotted quad under a ``version`` key is a version (documented choice)
    conf = base
    if hint.negative and detector in _LOOKALIKE_PRONE:
        conf -= _context.NEGATIVE_PENALTY
    word = _context.word_context(detector, text, start, floor)
    if word > 0:
        conf += _context.POSITIVE_BOOST
    elif word < 0:
        conf -= _context.NEGATIVE_PENALTY
    return max(0.0, min(conf, 0.99))


def _scan_joined(
    text: str,
    floors: Sequence[int],
    hints: Sequence[KeyHint],
    wanted: frozenset[str],
    limits: Mapping[str, float],
) -> list[Finding]:
    accepted: list[Finding] = []
    covered: dict[str, int] = {}  # detector -> end of its last accepted span
    # Candidates come in start order, so a candidate ending before ``reach`` lies inside an
    # accepted finding (an IBAN's digit groups are not also a card or a phone): not validated.
    reach = -1
    tried: set[tuple[str, int, int]] = set()
    own = [m.span() for m in OWN_TOKEN.finditer(text)] if "[" in text else []
    own_starts = [a for a, _ in own]
    for pid, start, end in candidates(text):
        if own:
            i = bisect.bisect_right(own_starts, start) - 1
            if i >= 0 and own[i][1] > start:
                continue
        detector = PATTERNS[pid].detector
        if detector not in wanted or start < covered.get(detector, -1) or end <= reach:
            continue
        if (detector, start, end) in tried:
            continue
        tried.add((detector, start, end))
        verdict = _VALIDATORS[detector](text, start, end, PATTERNS[pid].kind)
        if verdict is None:
            continue
        base, start, end = verdict
        seg = bisect.bisect_right(floors, start) - 1
        conf = _score(detector, base, text, start, floors[seg], hints[seg])
        if conf >= limits[detector]:
            accepted.append(Finding(detector, start, end, round(conf, 2)))
            covered[detector] = end
            reach = max(reach, end)
    return _settle_overlaps(accepted)


def _settle_overlaps(found: list[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings (confidence, then length, then type priority).

    Kept spans are held sorted by start, so each overlap check is two neighbour comparisons
    (``bisect``): O(n log n) even when thousands of findings chain-overlap.
    """
    if len(found) < 2:
        return found
    ranked = sorted(found, key=lambda f: (-f.confidence, -(f.end - f.start), _PRIORITY[f.type]))
    starts: list[int] = []
    kept: list[Finding] = []
    for f in ranked:
        i = bisect.bisect_left(starts, f.start)
        if i > 0 and kept[i - 1].end > f.start:
            continue
        if i < len(kept) and kept[i].start < f.end:
            continue
        starts.insert(i, f.start)
        kept.insert(i, f)
    return kept


def scan(
    text: str,
    *,
    detectors: Iterable[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> list[Finding]:
    """Find PII and secrets in ``text``.

    ``detectors`` limits the types reported (default: all text detectors; NAME and ADDRESS are
    field-based and never found in free text).  ``thresholds`` overrides the minimum confidence
    per type.  Findings are sorted by start, do not overlap, and their offsets index ``text``.
    """
    wanted = resolve_detectors(detectors) & frozenset(TEXT_DETECTORS)
    limits = resolve_thresholds(thresholds)
    if not text or not wanted:
        return []
    return _scan_joined(text, (0,), (NO_HINT,), wanted, limits)


def scan_segments(
    values: Sequence[str],
    hints: Sequence[KeyHint],
    wanted: frozenset[str],
    limits: Mapping[str, float],
) -> list[list[Finding]]:
    """Scan many values in one engine pass; findings per value, offsets relative to that value."""
    out: list[list[Finding]] = [[] for _ in values]
    if not values or not wanted:
        return out
    floors: list[int] = []
    pos = 0
    for v in values:
        floors.append(pos)
        pos += len(v) + 1
    joined = SEPARATOR.join(values)
    for f in _scan_joined(joined, floors, hints, wanted, limits):
        seg = bisect.bisect_right(floors, f.start) - 1
        base = floors[seg]
        if f.end <= base + len(values[seg]):  # a value never contains the separator, but be sure
            out[seg].append(Finding(f.type, f.start - base, f.end - base, f.confidence))
    return out
