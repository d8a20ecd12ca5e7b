"""The detection view of a text: compatibility forms folded and invisible format characters dropped.

A tool response can smuggle a value past a detector by writing it in characters that look (or
read, to a model) the same but do not match ASCII patterns: full-width digits
(U+FF11 U+FF12 U+FF13 …), mathematical or circled digits, and zero-width characters inside a
number (``123\u200b-45-6789``, ``4111\u200d1111…``).  Detection therefore runs on a *view* of
the text where each character is replaced by its NFKC compatibility form and format characters
(Unicode category Cf: zero-width space/joiners, word joiner, soft hyphen, BOM, bidi controls)
are dropped, and every finding is mapped back to the characters of the original text, so the
redaction covers the smuggled characters themselves (the zero-width ones included).

Each character is normalised on its own (not the string as a whole), so the mapping from view
to text is a simple index list; what NFKC would compose across characters (a base letter and a
combining accent) is not needed by any detector.  Digits of other scripts (Arabic-Indic, U+0661…)
are not compatibility forms and stay as they are: they are not numbers to the detectors.

ASCII text, and text that is already NFKC with no format character, is its own view (checked
in C: no per-character work on the common path).
"""

from __future__ import annotations

import re
import unicodedata

# Unicode category Cf (format characters), as of the Unicode version of Python's unicodedata;
# tests/dlp/test_dlp_encodings.py checks this class against unicodedata.category.
_CF_RANGES = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
FORMAT_CHARS = re.compile(f"[{_CF_RANGES}]")


def detection_view(text: str) -> tuple[str, list[int] | None]:
    """``(view, index)``: ``index[i]`` is the position in ``text`` of the character that produced
    ``view[i]``; ``index`` is None when the view is the text itself."""
    if text.isascii() or (FORMAT_CHARS.search(text) is None and unicodedata.is_normalized("NFKC", text)):
        return text, None
    out: list[str] = []
    index: list[int] = []
    normalize = unicodedata.normalize
    for i, ch in enumerate(text):
        if ch < "\x80":
            out.append(ch)
            index.append(i)
            continue
        if FORMAT_CHARS.match(ch):
            continue
        folded = normalize("NFKC", ch)
        out.append(folded)
        index.extend([i] * len(folded))
    return "".join(out), index


def original_span(index: list[int], start: int, end: int) -> tuple[int, int]:
    """The span of ``text`` that produced ``view[start:end]`` (whole original characters).

    Format characters that sit inside the span are inside the returned span too, so they are
    redacted with the value they were hiding in.
    """
    return index[start], index[end - 1] + 1
