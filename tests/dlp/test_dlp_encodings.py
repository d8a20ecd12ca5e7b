"""Values smuggled in odd encodings (docs/security.md, "Response-side encodings").

In scope: JSON unicode escapes (the JSON is parsed), compatibility forms (full-width and other
NFKC-folded digits and letters) and format characters (zero-width space/joiners, word joiner,
soft hyphen, BOM) inside a value.  Out of scope: base64 and other encodings of a value (only
the SECRET shapes that are themselves base64 — JWTs, PEM blocks — are found), digits of other
scripts, HTML entities.
"""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

import dlp
from dlp._normalize import FORMAT_CHARS, detection_view, original_span

ALL = dlp.Obligations(detectors=("ALL",))
ZWSP, ZWJ, ZWNJ, WJ, SHY, BOM = "\u200b", "\u200d", "\u200c", "\u2060", "\u00ad", "\ufeff"


def fullwidth(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01…)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in dlp.scan(text)]


SMUGGLED = [
    # (text, type, the original characters that must be reported)
    (f"SSN {fullwidth('123-45-6789')} thanks", "SSN", fullwidth("123-45-6789")),
    (f"ssn 123{ZWSP}-45-6789", "SSN", f"123{ZWSP}-45-6789"),
    (f"ssn 1{ZWJ}2{ZWNJ}3-4{WJ}5-67{SHY}89", "SSN", f"1{ZWJ}2{ZWNJ}3-4{WJ}5-67{SHY}89"),
    (f"card {ZWJ.join(['4111', '1111', '1111', '1111'])}", "CREDIT_CARD", ZWJ.join(["4111"] + ["1111"] * 3)),
    (f"visa {fullwidth('4111 1111 1111 1111')}", "CREDIT_CARD", fullwidth("4111 1111 1111 1111")),
    (f"call +1 {fullwidth('415-555-0132')} now", "PHONE", f"+1 {fullwidth('415-555-0132')}"),
    (f"mail jane{ZWSP}@example\uff0ecom", "EMAIL", f"jane{ZWSP}@example\uff0ecom"),
    (f"mail {fullwidth('jane')}\uff20example.com", "EMAIL", f"{fullwidth('jane')}\uff20example.com"),
    (
        f"IBAN {ZWSP.join(['DE89', '3704', '0044', '0532', '0130', '00'])}",
        "IBAN",
        ZWSP.join(["DE89", "3704", "0044", "0532", "0130", "00"]),
    ),
    (f"from {fullwidth('203')}.0.113.42", "IP_ADDRESS", f"{fullwidth('203')}.0.113.42"),
    (f"key AKIA{BOM}IOSFODNN7EXAMPLE", "SECRET", f"AKIA{BOM}IOSFODNN7EXAMPLE"),
    (f"{fullwidth('SSN')} 123 45 6789", "SSN", "123 45 6789"),  # a full-width keyword is a keyword
    ("born \u2460\u2461/03/1985", "DATE_OF_BIRTH", "\u2460\u2461/03/1985"),  # circled digits ① ②
]


@pytest.mark.parametrize(("text", "type_", "value"), SMUGGLED)
def test_smuggled_values_are_found_with_offsets_in_the_original(text: str, type_: str, value: str) -> None:
    assert (type_, value) in found(text)


@pytest.mark.parametrize(("text", "type_", "value"), SMUGGLED)
def test_smuggled_values_are_redacted_whole(text: str, type_: str, value: str) -> None:
    result = dlp.redact(text.encode(), "text/plain; charset=utf-8", ALL)
    # exactly the smuggled characters are replaced: the zero-width ones inside go with them
    assert result.body.decode() == text.replace(value, f"[REDACTED:{type_}]")


def test_other_scripts_digits_are_not_numbers() -> None:
    # Arabic-Indic digits are digits of their own script, not compatibility forms: out of scope.
    assert found("ssn ١٢٣-٤٥-٦٧٨٩") == []


def test_json_unicode_escapes_are_decoded_before_detection() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in "123-45-6789")
    body = ('{"note": "SSN ' + escaped + '", "card": "\\u0034111 1111 1111 1111"}').encode()
    result = dlp.redact(body, "application/json", ALL)
    assert json.loads(result.body) == {"note": "SSN [REDACTED:SSN]", "card": "[REDACTED:CREDIT_CARD]"}


def test_json_with_smuggled_values_stays_valid_json() -> None:
    doc = {"note": f"ssn 123{ZWSP}-45-6789 and {fullwidth('4111 1111 1111 1111')}", "n": 1}
    for body in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False).encode()):
        out = json.loads(dlp.redact(body, "application/json", ALL).body)
        assert out == {"note": "ssn [REDACTED:SSN] and [REDACTED:CREDIT_CARD]", "n": 1}


def test_full_width_keys_are_keys() -> None:
    body = json.dumps({fullwidth("full_name").replace("_", "\uff3f"): "Jane Roe", "s\u200bsn": "x"}).encode()
    out = json.loads(dlp.redact(body, "application/json", dlp.Obligations(fields=("ssn",), detectors=("ALL",))).body)
    assert list(out.values()) == ["[REDACTED:NAME]", "[REDACTED:SSN]"]


def test_hash_pseudonyms_ignore_the_encoding() -> None:
    ob = dlp.Obligations(detectors=("SSN",), mode="hash", hash_key=b"k" * 32)
    plain = dlp.redact(b"ssn 123-45-6789", "text/plain", ob).body
    smuggled = dlp.redact(f"ssn {fullwidth('123')}{ZWSP}-45-6789".encode(), "text/plain; charset=utf-8", ob).body
    assert plain == smuggled


def test_base64_of_a_value_is_out_of_scope_except_secret_shapes() -> None:
    import base64

    assert found("blob " + base64.b64encode(b"SSN 123-45-6789").decode()) == []  # documented limit
    jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert found(f"auth {jwt}") == [("SECRET", jwt)]


def test_detection_view_maps_back_to_whole_original_characters() -> None:
    text = f"a{ZWSP}\u2460b\ufb01"  # ① expands to "1", ﬁ to "fi"
    view, index = detection_view(text)
    assert view == "a1bfi"
    assert index is not None
    assert original_span(index, 1, 2) == (2, 3)
    assert original_span(index, 3, 4) == (4, 5)  # half of "fi" is the whole ﬁ
    assert detection_view("plain ascii") == ("plain ascii", None)
    assert detection_view("Grüße ✉") == ("Grüße ✉", None)  # already NFKC, no format character


def test_format_character_class_matches_unicodedata() -> None:
    expected = {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"}
    # One pass over the code points, in chunks, so the check stays well under a second.
    chunk = 4096
    actual = set()
    for lo in range(0, sys.maxunicode + 1, chunk):
        text = "".join(map(chr, range(lo, min(lo + chunk, sys.maxunicode + 1))))
        actual.update(lo + m.start() for m in FORMAT_CHARS.finditer(text))
    assert actual == expected
