"""Hypothesis strategies shared by the property-based fuzz tests (bounded runs in `make test`).

The promises checked are the fuzz targets' own (``fuzz.targets.*``): these tests and the
atheris harnesses differ only in how inputs are generated.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Modest, bounded runs: the whole tests/fuzz package stays well under a minute.
FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    derandomize=True,
)

PII = (
    "jane.doe@example.com",
    "123-45-6789",
    "4111 1111 1111 1111",
    "+1 415-555-0132",
    "DE89 3704 0044 0532 0130 00",
    "AKIAIOSFODNN7EXAMPLE",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "203.0.113.42",
)
KEYS = st.sampled_from(
    ["amount", "currency", "customer_id", "channel", "text", "email", "ssn", "note", "items", "password", "name"]
)
ODD_TEXT = st.sampled_from(["\ud800", "\u200d", "\uff11\uff12\uff13", "[REDACTED:EMAIL]", "\x00", "{amount}", "é"])
TEXT = st.one_of(st.text(max_size=24), st.sampled_from(PII), ODD_TEXT)
NUMBERS = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 20, 120, 500, 501, 1e3, 120.0]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, TEXT), inner, max_size=4)),
    max_leaves=16,
)
SPLICES = st.sampled_from(
    [b"", b'"amount": 1, "amount": 2, ', b"1e400", b"NaN", b"-Infinity", b"1" * 5000, b"\\ud800", b"[" * 200]
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON document (escaped or raw UTF-8), sometimes with raw text spliced in."""
    value = draw(JSON_VALUES)
    encoded = json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    splice = draw(SPLICES)
    at = draw(st.integers(0, len(encoded)))
    return encoded[:at] + splice + encoded[at:]


def proto_text(max_size: int = 24) -> st.SearchStrategy[str]:
    """Text a protobuf ``string`` field can hold (no lone surrogates)."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


def dumps(value: Any) -> str:
    return json.dumps(value)
