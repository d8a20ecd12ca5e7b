"""Turning libFuzzer's bytes into well-typed values (atheris' FuzzedDataProvider).

Shared by the harnesses: JSON documents built from the data (so the fuzzer explores
parsed structures, not only syntax errors), header maps, and picks from lists of
interesting values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import atheris

T = TypeVar("T")

# Keys and strings the policies, tools and DLP care about: the fuzzer starts near them.
KEYS = (
    *("amount", "currency", "customer_id", "channel", "text", "email", "ssn", "note", "items"),
    *("jsonrpc", "method", "params", "name", "arguments", "version", "password", "_"),
)
STRINGS = (
    *("#support", "#billing", "#random", "USD", "c-1", "tools/call", "2.0", "jane.doe@example.com"),
    *("123-45-6789", "4111 1111 1111 1111", "+1 415-555-0132", "DE89 3704 0044 0532 0130 00"),
    *("AKIAIOSFODNN7EXAMPLE", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "203.0.113.42", "api_key=abcdef123456"),
    *("\ud800", "\u200d", "\uff11\uff12\uff13", "[REDACTED:EMAIL]", "\x00", "{amount}"),
)
NUMBERS = (0, -1, 1, 20, 120, 500, 501, 1e3, 120.0, -0.0, 2**63, -(2**63), 10**30, 1e308)


def pick(fdp: atheris.FuzzedDataProvider, values: Sequence[T]) -> T:
    return values[fdp.ConsumeIntInRange(0, len(values) - 1)]


def text(fdp: atheris.FuzzedDataProvider, max_len: int = 40) -> str:
    """A string: a known interesting one, or arbitrary Unicode (lone surrogates included)."""
    if fdp.ConsumeBool():
        return pick(fdp, STRINGS)
    return str(fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, max_len)))


def proto_text(fdp: atheris.FuzzedDataProvider, max_len: int = 40) -> str:
    """A string a protobuf ``string`` field can hold (valid UTF-8: no lone surrogates)."""
    return text(fdp, max_len).encode("utf-8", "replace").decode("utf-8")


def json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """A JSON-shaped value (dict keys are strings; floats may be NaN/inf: the encoder decides)."""
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return pick(fdp, NUMBERS)
    if kind == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 16))
    if kind == 4:
        return fdp.ConsumeFloat()
    if kind == 5:
        return text(fdp)
    if kind in (6, 7):
        return {
            (pick(fdp, KEYS) if fdp.ConsumeBool() else text(fdp, 12)): json_value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))
        }
    return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]


def json_bytes(fdp: atheris.FuzzedDataProvider, value: Any) -> bytes:
    """Encode ``value`` (escaped or raw UTF-8), sometimes with raw text spliced in (duplicate
    keys, odd literals, huge numbers)."""
    ascii_only = fdp.ConsumeBool()
    encoded = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if fdp.ConsumeIntInRange(0, 3) == 0:
        at = fdp.ConsumeIntInRange(0, len(encoded))
        splice = pick(fdp, (b'"amount": 1, "amount": 2, ', b"1e400", b"NaN", b"-Infinity", b"1" * 5000, b"\\ud800"))
        encoded = encoded[:at] + splice + encoded[at:]
    return encoded


def headers(fdp: atheris.FuzzedDataProvider, known: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A header map: some known headers with fuzzed values, some fuzzed names."""
    out: dict[str, str] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        if fdp.ConsumeBool():
            name, value = pick(fdp, known)
            out[name] = value if fdp.ConsumeBool() else proto_text(fdp)
        else:
            out[proto_text(fdp, 16).lower()] = proto_text(fdp)
    return out
