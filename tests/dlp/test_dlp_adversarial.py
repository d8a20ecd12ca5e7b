"""Adversarial inputs of 200 KB complete.

No timing assertion (the machine is shared): linearity comes from the pattern rules in
``dlp/_patterns.py`` (bounded repeats, no back-references or look-arounds, a finite-automaton
engine), which ``test_patterns_are_structurally_bounded`` checks; these inputs prove that every
stage after the engine (validators, context, overlap settling) also copes with floods.
"""

from __future__ import annotations

import json
import re

import pytest

import dlp
from dlp._patterns import PATTERNS

SIZE = 200_000

ADVERSARIAL = {
    "same_char": "a" * SIZE,
    "digits": "1" * SIZE,
    "digits_spaced": "1 " * (SIZE // 2),
    "digit_pairs": "12 " * (SIZE // 3),
    "digit_dash": "123-" * (SIZE // 4),
    "at_flood": "@" * SIZE,
    "local_at_flood": "a@" * (SIZE // 2),
    "email_no_tld": ("a" * 60 + "@" + "b" * 60 + ".") * (SIZE // 122),
    "dots": "1." * (SIZE // 2),
    "colons": "a:" * (SIZE // 2),
    "hex_colons": "ab::" * (SIZE // 4),
    "plus": "+1 " * (SIZE // 3),
    "key_headers": "-----BEGIN RSA PRIVATE KEY-----" * (SIZE // 31),
    "jwt_prefix": "eyJhbGci." * (SIZE // 9),
    "assignments": "api_key=" * (SIZE // 8),
    "months": "12 March " * (SIZE // 9),
    "cards": "4111 1111 1111 1111 " * (SIZE // 20),
    "iban_like": "DE89 " * (SIZE // 5),
    "unicode": "é1" * (SIZE // 2),
    # the detection view (NFKC, format characters dropped) works per character: still linear
    "full_width_digits": "\uff11\uff12\uff13-" * (SIZE // 4),
    "zero_width_digits": "1\u200b" * (SIZE // 2),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_scan_completes(name: str) -> None:
    text = ADVERSARIAL[name]
    findings = dlp.scan(text)
    for f in findings:
        assert 0 <= f.start < f.end <= len(text)


def test_adversarial_json_redaction_completes() -> None:
    body = json.dumps({"a": ADVERSARIAL["digits_spaced"], "b": [ADVERSARIAL["at_flood"]]}).encode()
    result = dlp.redact(body, "application/json", dlp.Obligations(detectors=("ALL",)))
    json.loads(result.body)


def test_deep_nesting_is_a_typed_error() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(dlp.InvalidJson):
        dlp.redact(body, "application/json", dlp.Obligations(detectors=("ALL",)))


_UNBOUNDED = re.compile(r"(?<!\\)[*+](?!\})|\{\d+,\}")


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: f"{p.detector}-{p.kind}")
def test_patterns_are_structurally_bounded(pattern: object) -> None:
    for regex in (pattern.regex, pattern.extend or ""):  # type: ignore[attr-defined]
        stripped = re.sub(r"\[[^\]]*\]", "[]", regex)  # ``+``/``*`` inside classes are literals
        assert not _UNBOUNDED.search(stripped), regex
        assert "(?=" not in regex and "(?!" not in regex and "(?<" not in regex
        assert not re.search(r"\\[1-9]", regex), "back-reference"
