"""Property tests: redacted JSON stays JSON of the same shape, detected values do not survive,
redaction is idempotent."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlp

PII = [
    "jane.doe@example.com",
    "+1 415-555-0132",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "5555555555554444",
    "DE89 3704 0044 0532 0130 00",
    "203.0.113.42",
    "AKIAIOSFODNN7EXAMPLE",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
]
KEYS = st.sampled_from(["a", "note", "email", "customer", "name", "items", "ssn", "version", "order_id", "x y"])
# NUL makes a text body binary (passed through), so fillers leave it out.
FILLER = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20
)
STRINGS = st.one_of(
    FILLER,
    st.builds(lambda a, p, b: f"{a} {p} {b}", FILLER, st.sampled_from(PII), FILLER),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), STRINGS
)
NEUTRAL_KEYS = st.sampled_from(["a", "note", "items", "x y", "body"])
NEUTRAL_DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NEUTRAL_KEYS, inner, max_size=4)),
    max_leaves=20,
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)

ALL = dlp.Obligations(detectors=("ALL",))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shape(doc: Any) -> Any:
    """The structure with string values erased (keys, numbers, bools, nulls kept)."""
    if isinstance(doc, dict):
        return {k: shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(v) for v in doc]
    return "<str>" if isinstance(doc, str) else doc


def strings(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in strings(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in strings(v)]
    return [doc] if isinstance(doc, str) else []


@SETTINGS
@given(DOCS)
def test_detector_redaction_keeps_json_structure(doc: Any) -> None:
    ob = dlp.Obligations(detectors=tuple(t for t in dlp.DETECTORS if t not in ("NAME", "ADDRESS", "SECRET")))
    result = dlp.redact(json.dumps(doc).encode(), "application/json", ob)
    out = json.loads(result.body)
    assert shape(out) == shape(doc)


@SETTINGS
@given(NEUTRAL_DOCS)
def test_no_detected_value_survives(doc: Any) -> None:
    result = dlp.redact(json.dumps(doc).encode(), "application/json", ALL)
    # Neutral keys keep the shape, so the i-th string after is the i-th string before, redacted;
    # each value is checked against its own redaction (another value may contain it by chance).
    for original, redacted in zip(strings(doc), strings(json.loads(result.body)), strict=True):
        for f in dlp.scan(original):
            value = original[f.start : f.end]
            assert value not in redacted or "[REDACTED" in value


@SETTINGS
@given(DOCS, st.sampled_from(["mask", "partial", "hash", "remove"]))
def test_redaction_is_idempotent(doc: Any, mode: str) -> None:
    ob = dlp.Obligations(fields=("ssn",), detectors=("ALL",), mode=mode, hash_key=b"k" * 32)
    once = dlp.redact(json.dumps(doc).encode(), "application/json", ob)
    twice = dlp.redact(once.body, "application/json", ob)
    assert json.loads(twice.body) == json.loads(once.body)


@SETTINGS
@given(st.lists(STRINGS, max_size=5))
def test_text_redaction_idempotent_and_clean(parts: list[str]) -> None:
    text = "\n".join(parts)
    once = dlp.redact(text.encode(), "text/plain", ALL)
    assert dlp.scan(once.body.decode()) == []
    assert dlp.redact(once.body, "text/plain", ALL).body == once.body
