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
import itertools
from collections.abc import Iterable, Mapping, Sequence

from dlp import _context, _validate
from dlp._context import NO_HINT, KeyHint
from dlp._engine import scan_text
from dlp._errors import UnknownDetector
from dlp._modes import OWN_TOKEN
from dlp._normalize import detection_view, original_span
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


Span = tuple[str, int, int, float]  # (type, start, end, confidence): a finding inside the scanner

_DETECTOR_OF = tuple(p.detector for p in PATTERNS)
_KIND_OF = tuple(p.kind for p in PATTERNS)
_VALIDATOR_OF = tuple(_VALIDATORS[p.detector] for p in PATTERNS)
_MAX_BASE_OF = tuple(_validate.max_base(p.detector, p.kind) for p in PATTERNS)
_KEY_MATCH = _context.KEY_MATCH_CONFIDENCE
_BOOST = _context.POSITIVE_BOOST
_PENALTY = _context.NEGATIVE_PENALTY


def _scan_joined(
    text: str,
    floors: Sequence[int],
    hints: Sequence[KeyHint],
    wanted: frozenset[str],
    limits: Mapping[str, float],
) -> list[Span]:
    cands, hits = scan_text(text)
    if not cands:
        return []
    hit_starts = [h[0] for h in hits]
    accepted: list[Span] = []
    covered: dict[str, int] = {}  # detector -> end of its last accepted span
    # Candidates come in start order, so a candidate ending before ``reach`` lies inside an
    # accepted finding (an IBAN's digit groups are not also a card or a phone): not validated.
    reach = -1
    # Patterns of one detector are adjacent in the table, so the same span proposed by two of
    # them (an international and a national phone shape) arrives twice in a row.
    previous = ("", -1, -1)
    own = [m.span() for m in OWN_TOKEN.finditer(text)] if "[" in text else []
    own_starts = [a for a, _ in own]
    single = len(floors) == 1
    word_context = _context.word_context
    for pid, start, end in cands:
        if end <= reach:
            continue
        detector = _DETECTOR_OF[pid]
        if detector not in wanted or start < covered.get(detector, -1):
            continue
        if own:
            i = bisect.bisect_right(own_starts, start) - 1
            if i >= 0 and own[i][1] > start:
                continue  # inside our own redaction token
        if previous == (detector, start, end):
            continue
        previous = (detector, start, end)
        # Context first: it is cheaper than most validators, and when even the highest base
        # confidence this pattern can get stays below threshold, the candidate is not validated.
        # (Inlined: this loop runs for every candidate of every body.)
        seg = 0 if single else bisect.bisect_right(floors, start) - 1
        hint = hints[seg]
        limit = limits[detector]
        if hint.type == detector:  # the key announces the type: at least KEY_MATCH
            shift = None
        elif detector == IP_ADDRESS and hint.version:
            continue  # a dotted quad under a ``version`` key is a version (documented choice)
        else:
            shift = -_PENALTY if hint.negative and detector in _LOOKALIKE_PRONE else 0.0
            if hits:
                word = word_context(detector, text, start, floors[seg], hits, hit_starts)
                shift += _BOOST if word > 0 else -_PENALTY if word < 0 else 0.0
            best = _MAX_BASE_OF[pid] + shift  # the confidence if validation gives the highest base
            if (best if best > 0.0 else 0.0) < limit:
                continue
        verdict = _VALIDATOR_OF[pid](text, start, end, _KIND_OF[pid])
        if verdict is None:
            continue
        base, new_start, end = verdict
        if new_start != start:  # the validator trimmed the start (an e-mail's leading punctuation)
            start = new_start
            seg = 0 if single else bisect.bisect_right(floors, start) - 1
            hint = hints[seg]
            if shift is not None:
                shift = -_PENALTY if hint.negative and detector in _LOOKALIKE_PRONE else 0.0
                if hits:
                    word = word_context(detector, text, start, floors[seg], hits, hit_starts)
                    shift += _BOOST if word > 0 else -_PENALTY if word < 0 else 0.0
        if shift is None:
            conf = base if base > _KEY_MATCH else _KEY_MATCH
        else:
            conf = base + shift
            conf = 0.0 if conf < 0.0 else 0.99 if conf > 0.99 else conf
        if conf >= limit:
            accepted.append((detector, start, end, conf))
            covered[detector] = end
            if end > reach:
                reach = end
    return _settle_overlaps(accepted)


def _settle_overlaps(found: list[Span]) -> list[Span]:
    """Keep the best of overlapping findings (confidence, then length, then type priority).

    Kept spans are held sorted by start, so each overlap check is two neighbour comparisons
    (``bisect``): O(n log n) even when thousands of findings chain-overlap.
    """
    if len(found) < 2:
        return found
    # Accepted in start order and each past ``reach`` of the ones before: usually nothing overlaps.
    if all(a[2] <= b[1] for a, b in itertools.pairwise(found)):
        return found
    ranked = sorted(found, key=lambda f: (-round(f[3], 2), -(f[2] - f[1]), _PRIORITY[f[0]]))
    starts: list[int] = []
    kept: list[Span] = []
    for f in ranked:
        i = bisect.bisect_left(starts, f[1])
        if i > 0 and kept[i - 1][2] > f[1]:
            continue
        if i < len(kept) and kept[i][1] < f[2]:
            continue
        starts.insert(i, f[1])
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
    (found,) = scan_segments([text], [NO_HINT], wanted, limits)
    return [Finding(t, s, e, round(c, 2)) for t, s, e, c in found]


def scan_segments(
    values: Sequence[str],
    hints: Sequence[KeyHint],
    wanted: frozenset[str],
    limits: Mapping[str, float],
) -> list[list[Span]]:
    """Scan many values in one engine pass; findings per value, offsets relative to that value."""
    out: list[list[Span]] = [[] for _ in values]
    if not values or not wanted:
        return out
    from dlp import _native  # here: _native builds on the modules that import this one

    native = _native.core()
    if native is not None:
        try:
            return _native.scan_segments(native, list(values), list(hints), wanted, dict(limits))
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): a Python str holds it, UTF-8 cannot
            pass
    joined = SEPARATOR.join(values)
    indexes: list[list[int] | None] | None = None
    if detection_view(joined)[1] is not None:  # some value needs its detection view (rare)
        views = [detection_view(v) for v in values]
        values = [v for v, _ in views]
        indexes = [i for _, i in views]
        joined = SEPARATOR.join(values)
    floors: list[int] = []
    pos = 0
    for v in values:
        floors.append(pos)
        pos += len(v) + 1
    for t, s, e, c in _scan_joined(joined, floors, hints, wanted, limits):
        seg = bisect.bisect_right(floors, s) - 1
        base = floors[seg]
        if e > base + len(values[seg]):  # a value never contains the separator, but be sure
            continue
        s, e = s - base, e - base
        index = indexes[seg] if indexes is not None else None
        if index is not None:
            s, e = original_span(index, s, e)
        out[seg].append((t, s, e, c))
    return out
