"""The Rust detection view (dlp/native/src/normalize.rs) is ``dlp._normalize``'s, in bytes.

Python's index maps view characters to text characters; the Rust index gives, for each view
byte, the byte span of the text character that produced it.  These tests convert one into the
other and compare: the format-character class and each character's NFKC on every code point,
``is_normalized`` on every code point and on generated strings, and ``detection_view`` /
``original_span`` on hypothesis texts that mix ASCII, full-width and other compatibility digits,
zero-width and other format characters, combining marks, Hangul jamo, ligatures and anything else.
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

native = pytest.importorskip("aegis_dlp_native")

from dlp._normalize import _CF_RANGES, FORMAT_CHARS, detection_view, original_span  # noqa: E402

EVERY = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def test_format_chars_on_every_code_point() -> None:
    assert native.normalize_format_chars(EVERY) == [FORMAT_CHARS.match(c) is not None for c in EVERY]
    # and the class is still Unicode's Cf (as Python's own test checks it)
    assert all(unicodedata.category(c) == "Cf" for c in EVERY if FORMAT_CHARS.match(c))
    assert _CF_RANGES


def test_nfkc_of_every_code_point() -> None:
    want = {}
    for c in EVERY:
        folded = unicodedata.normalize("NFKC", c)
        if folded != c:
            want[ord(c)] = folded
    got = dict(native.normalize_nfkc_changes())
    assert len(want) > 4000
    assert got == want


def test_is_normalized_of_every_code_point() -> None:
    wrong = [c for c in EVERY if native.normalize_is_nfkc(c) != unicodedata.is_normalized("NFKC", c)]
    assert wrong == []


# Characters every class the Python touches: ASCII, format characters (dropped), compatibility
# forms (full-width, mathematical, circled, superscript digits, ligatures, CJK compatibility),
# canonical ones (Angstrom sign, precomposed letters), combining marks (in and out of canonical
# order), Hangul jamo and syllables (composed across characters), digits of other scripts (kept).
_SPECIAL = (
    [chr(c) for c in range(0xFF10, 0xFF1A)]
    + ["\U0001d7ce", "\U0001d7d9", "\u2460", "\u2474", "\u00b2", "\u2075", "\u00bd", "\ufb01", "\u3371", "\u2126"]
    + ["\u212b", "\u00e9", "\u00c5", "\u1e9b", "\u0344", "\u0958", "\uf900", "\U0002fa1d", "\U0002f800"]
    + ["\u0301", "\u0323", "\u0308", "\u0345", "\u05b0", "\u093c", "\u0f71", "\u0e48", "\u302a", "\u3099"]
    + ["\u1100", "\u1161", "\u11a8", "\uac00", "\uac01", "\u3131"]
    + ["\u0661", "\u06f3", "\u0966", "\u00a0", "\u3000", "\u2002", "\u00ad", "\u200b", "\u200c", "\u200d"]
    + ["\u2060", "\ufeff", "\u202e", "\u2066", "\u061c", "\U000e0041", "\U0001d173", "\u180e", "\u0600"]
    + ["€", "£", "中", "\U0001f600", "\u0130", "\u03a3", "\u1f80", "\u0041\u030a"]
)
_ANY = st.characters(exclude_categories=("Cs",))
_CHAR = st.one_of(
    st.sampled_from(list("0123456789 -.()+@_abcXYZ\n")),
    st.sampled_from(_SPECIAL),
    _ANY,
)
TEXTS = st.lists(_CHAR, min_size=0, max_size=30).map("".join)


def _b(text: str, i: int) -> int:
    return len(text[:i].encode())


def _offsets(text: str) -> list[int]:
    """Byte offset of each character of ``text``, and of its end."""
    out = [0]
    for ch in text:
        out.append(out[-1] + len(ch.encode()))
    return out


def _check(text: str) -> list[tuple[int, int]]:
    """Compare ``detection_view(text)``; returns some character spans of the view."""
    view, index = detection_view(text)
    rview, rindex = native.normalize_detection_view(text)
    assert rview == view
    assert (rindex is None) == (index is None), text
    if index is None:
        return []
    assert len(rindex) == 2 * len(view.encode())
    at = _offsets(text)
    b = 0
    for i, ch in enumerate(view):
        o = index[i]
        for k in range(b, b + len(ch.encode())):
            assert rindex[2 * k] == at[o] and rindex[2 * k + 1] == at[o + 1], (text[:50], i)
        b += len(ch.encode())
    return [(i, j) for i in range(min(len(view), 40)) for j in range(i + 1, min(len(view), 40) + 1)]


def test_detection_view_of_every_code_point() -> None:
    _check(EVERY)
    _check("a" + EVERY[::-1])


@settings(max_examples=3000, deadline=None)
@given(TEXTS, st.data())
def test_detection_view_and_original_span(text: str, data: st.DataObject) -> None:
    spans = _check(text)
    if not spans:
        return
    view, index = detection_view(text)
    assert index is not None
    _, rindex = native.normalize_detection_view(text)
    for s, e in data.draw(st.lists(st.sampled_from(spans), min_size=1, max_size=10)):
        ps, pe = original_span(index, s, e)
        assert native.normalize_original_span(rindex, _b(view, s), _b(view, e)) == (_b(text, ps), _b(text, pe))


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_SPECIAL + list("aeAE1 ")), min_size=1, max_size=8).map("".join))
def test_is_normalized_of_strings(text: str) -> None:
    assert native.normalize_is_nfkc(text) == unicodedata.is_normalized("NFKC", text)
    _check(text)


def test_hand_picked() -> None:
    cases = [
        "",
        "plain ascii 555-0100",
        "caf\u00e9 \u20ac 12",  # NFKC already: no view
        "cafe\u0301",  # not NFKC as a whole, each character is: Python still builds an index
        "ssn \uff11\uff12\uff13-45-6789",
        "123\u200b-45-6789",
        "4111\u200d1111\u200d1111\u200d1111",
        "\ufeff+44\u00a020\u20027946\u30000123",
        "x\ufb01y \u3371 \u2460\u2461",
        "\u1100\u1161\u11a8 \uac00\u11a8",
        "\u0661\u0662\u0663 \u06f1",
        "\u00ad",
        "\U0001d7d9\U0001d7da\U0001d7db",
    ]
    for text in cases:
        _check(text)
    assert native.normalize_detection_view("cafe\u0301")[1] is not None


def test_speed_is_reported() -> None:
    """Not a benchmark: ns per call (run with -s)."""
    for text in ("x" * 2000, "caf\u00e9 " * 400, "ssn \uff11\uff12\uff13-45-6789 " * 80):
        ns = native.normalize_bench_detection_view(text, 2000)
        print(f"detection_view of {len(text)} chars ({text[:12]!r}...): {ns:.0f} ns")
