"""Validators: turn a candidate span into a base confidence, or reject it.

Each validator gets the text, the candidate span and the pattern kind, and returns
``(confidence, start, end)`` (the span may shrink, e.g. an e-mail's leading punctuation) or
``None``.  Checksums and registries come from maintained libraries: ``stdnum`` (Luhn, SSN
rules and blocklist, IBAN per-country format and mod-97) and ``phonenumbers`` (numbering plans).
The card IIN table is ours: no maintained library covers current ranges.  Cheap hand-written
pre-checks (digit count, mod-97) run first so the expensive library calls only see plausible
candidates.  The library checks that cost tens of microseconds per call (Luhn, SSN rules, IBAN
structure, numbering plans) run as equivalent precompiled checks built from the libraries' own
data; tests/dlp/test_dlp_validators.py proves them equal to the libraries on large samples.
No verdict is cached: every call does the work, so the first sight of a value costs what the
hundredth does.
"""

from __future__ import annotations

import array
import base64
import binascii
import functools
import ipaddress
import itertools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from dlp import _checks, _dates, _phone
from dlp._checks import iban_ok, ipv4_ok, luhn_ok, ssn_ok
from dlp._dates import parse_date
from dlp._phone import valid_international, valid_national

Validated = tuple[float, int, int] | None
Validator = Callable[[str, int, int, str], Validated]

# Regions tried for national-format phone numbers, by trunk prefix: NANP numbers have none,
# UK and German numbers start with 0.  International numbers (+CC / 00CC) need no region.
PHONE_REGIONS_NO_TRUNK: tuple[str, ...] = ("US",)
PHONE_REGIONS_TRUNK_0: tuple[str, ...] = ("GB", "DE")


def _embedded(text: str, start: int, end: int) -> bool:
    """True when the digits are glued into a larger identifier (``ORD-4111…``, ``12.50``, ``…-7``)."""
    if start >= 2 and text[start - 1] in "-_/#.$€£" and text[start - 2].isalnum():
        return True
    if start >= 1 and text[start - 1] in "$€£":
        return True
    if end + 1 < len(text) and text[end] in "-_/.,:" and text[end + 1].isdigit():
        return True
    return end + 1 < len(text) and text[end] in "-_" and text[end + 1].isalpha()


# --- EMAIL -----------------------------------------------------------------------------------

_FILE_TLDS = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "bmp",
        "ico",
        "js",
        "mjs",
        "css",
        "ts",
        "tsx",
        "map",
        "json",
        "html",
        "htm",
        "txt",
        "pdf",
    ]
)
# Labels of letters, digits and inner hyphens (at most 63), then an alphabetic top-level label.
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{1,63}", re.ASCII)


def email(text: str, start: int, end: int, kind: str) -> Validated:
    value = text[start:end]
    at = value.rindex("@")
    local = value[:at].lstrip(".'%+*-")
    if not local:
        return None
    start += at - len(local)
    domain = value[at + 1 :]
    if local.endswith(".") or ".." in local:
        return None
    if not _DOMAIN.fullmatch(domain) or domain[domain.rindex(".") + 1 :].lower() in _FILE_TLDS:
        return None
    return 0.9, start, end


# --- PHONE -----------------------------------------------------------------------------------

# A phone candidate holds only ASCII digits and these (the patterns guarantee it).
_PHONE_PUNCT = str.maketrans("", "", "+ ().-/")
# Digit groups split by separators: at most 6, and none of one digit after the first (``1 2 3``).
_PHONE_GROUPS = re.compile(r"\+?[ .\-/()]*[0-9]+(?:[ .\-/()]+[0-9]{2,}){0,5}", re.ASCII)
_DATE_SHAPE = re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}", re.ASCII)


def _phone_valid(digits: str, region: str | None) -> bool:
    """``phonenumbers``' verdict (``+digits`` when ``region`` is None), from its metadata (see ``_phone``)."""
    return valid_international(digits) if region is None else valid_national(digits, region)


def phone(text: str, start: int, end: int, kind: str) -> Validated:
    if kind != "intl" and start >= 2 and text[start - 1] in " .-/" and text[start - 2].isdigit():
        return None  # the tail of a longer run of digit groups (an IBAN, a card, a list of numbers)
    value = text[start:end]
    digits = value.translate(_PHONE_PUNCT)
    if not 7 <= len(digits) <= 15 or value.count(".") == 3 or _embedded(text, start, end):  # dotted quads
        return None
    if _DATE_SHAPE.fullmatch(value) or not _PHONE_GROUPS.fullmatch(value):
        return None
    if kind == "intl":
        number = digits[2:] if value.startswith("00") else digits
        return (0.9, start, end) if _phone_valid(number, None) else None
    regions = PHONE_REGIONS_TRUNK_0 if digits.startswith("0") else PHONE_REGIONS_NO_TRUNK
    if not any(_phone_valid(digits, r) for r in regions):
        return None
    # A national-pattern match always has two digit groups or more (it is formatted); bare digits not.
    return (0.6 if kind == "national" else 0.35), start, end


def phone_native_tables() -> dict[str, Any]:
    """What ``phone`` reads, as plain data for the compiled core (dlp/native/src/phone.rs): the
    numbering plans (``_phone.native_tables``), the regions tried for national numbers, and the
    characters ``str.isdigit`` / ``isalpha`` / ``isalnum`` accept (``_embedded`` and the
    digit-group rule look at the characters around a candidate, which may be any)."""
    return {
        **_phone.native_tables(),
        "regions_no_trunk": list(PHONE_REGIONS_NO_TRUNK),
        "regions_trunk_0": list(PHONE_REGIONS_TRUNK_0),
        "char_classes": char_class_ranges(),
    }


@functools.cache
def char_class_ranges() -> dict[str, list[tuple[int, int]]]:
    """``{"isalnum" | "isalpha" | "isdigit": [(first, last), ...]}``: the code points (surrogates
    aside: a str from UTF-8 has none) for which the ``str`` method is True, as sorted inclusive
    ranges, from this Python's Unicode database."""
    every = array.array("I", itertools.chain(range(0xD800), range(0xE000, 0x110000))).tobytes()
    text = every.decode("utf-32-le")
    # ``[^\W_]`` is str.isalnum in ``re`` (C speed); isalpha and isdigit are subsets of it.
    alnum = "".join(m.group() for m in re.finditer(r"[^\W_]+", text))
    out = {}
    for name, chars in (
        ("isalnum", alnum),
        ("isalpha", filter(str.isalpha, alnum)),
        ("isdigit", filter(str.isdigit, alnum)),
    ):
        ranges: list[list[int]] = []
        for cp in map(ord, chars):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        out[name] = [(a, b) for a, b in ranges]
    return out


# --- SSN -------------------------------------------------------------------------------------

_SSN_BASE = {"dashed": 0.65, "spaced": 0.45, "bare": 0.3}


def ssn(text: str, start: int, end: int, kind: str) -> Validated:
    if _embedded(text, start, end):
        return None
    value = text[start:end]
    digits = value if kind == "bare" else value[:3] + value[4:6] + value[7:]
    if not ssn_ok(digits):
        return None
    return _SSN_BASE[kind], start, end


# --- CREDIT_CARD -----------------------------------------------------------------------------

# (lowest prefix, highest prefix, prefix length, allowed lengths): current IIN ranges of the
# networks that issue cards to people (ISO/IEC 7812 registrations as published by each network).
_IIN: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),
    (6011, 6011, 4, frozenset(range(16, 20))),  # Discover
    (644, 649, 3, frozenset(range(16, 20))),
    (65, 65, 2, frozenset(range(16, 20))),  # Discover / RuPay
    (622126, 622925, 6, frozenset(range(16, 20))),  # Discover co-branded UnionPay
    (62, 62, 2, frozenset(range(16, 20))),  # UnionPay
    (81, 82, 2, frozenset({16})),  # UnionPay 81 / RuPay
    (300, 305, 3, frozenset(range(14, 20))),  # Diners Club International
    (3095, 3095, 4, frozenset(range(14, 20))),
    (36, 36, 2, frozenset(range(14, 20))),
    (38, 39, 2, frozenset(range(16, 20))),
    (3528, 3589, 4, frozenset(range(16, 20))),  # JCB
    (2200, 2204, 4, frozenset(range(16, 20))),  # Mir
    (5018, 5018, 4, frozenset(range(12, 20))),  # Maestro
    (5020, 5020, 4, frozenset(range(12, 20))),
    (5038, 5038, 4, frozenset(range(12, 20))),
    (5893, 5893, 4, frozenset(range(12, 20))),
    (6304, 6304, 4, frozenset(range(12, 20))),
    (6759, 6759, 4, frozenset(range(12, 20))),
    (6761, 6763, 4, frozenset(range(12, 20))),
    (5019, 5019, 4, frozenset({16})),  # Dankort
    (60, 60, 2, frozenset({16})),  # RuPay
    (508, 508, 3, frozenset({16})),
    (506099, 506198, 6, frozenset({16, 18, 19})),  # Verve
    (650002, 650027, 6, frozenset({16, 18, 19})),
    (636, 639, 3, frozenset(range(16, 20))),  # InterPayment, InstaPayment
    (9792, 9792, 4, frozenset({16})),  # Troy
)


def _expand_iin() -> dict[str, frozenset[int]]:
    table: dict[str, set[int]] = {}
    for lo, hi, plen, lengths in _IIN:
        for prefix in range(lo, hi + 1):
            table.setdefault(str(prefix).zfill(plen), set()).update(lengths)
    return {k: frozenset(v) for k, v in table.items()}


_IIN_BY_PREFIX = _expand_iin()  # ~1,400 prefixes: five dict look-ups instead of a table scan
_IIN_PREFIX_LENGTHS = tuple(sorted({plen for _, _, plen, _ in _IIN}))


def in_iin_range(digits: str) -> bool:
    """True when ``digits`` has the prefix and length of a payment card network."""
    n = len(digits)
    for plen in _IIN_PREFIX_LENGTHS:
        lengths = _IIN_BY_PREFIX.get(digits[:plen])
        if lengths is not None and n in lengths:
            return True
    return False


def _card_grouping_ok(value: str) -> bool:
    if value.isdigit():
        return True
    sep = "-" if "-" in value else " "
    if sep == "-" and " " in value:
        return False
    sizes = [len(g) for g in value.split(sep)]
    if 0 in sizes:
        return False
    if sizes[:2] == [4, 6] and len(sizes) == 3:  # Amex 4-6-5, Diners 4-6-4
        return sizes[2] in (4, 5)
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _card_at(text: str, start: int, end: int) -> Validated:
    value = text[start:end]
    if _embedded(text, start, end) or not _card_grouping_ok(value):
        return None
    digits = value.replace(" ", "").replace("-", "")
    if not in_iin_range(digits) or not luhn_ok(digits):
        return None
    return (0.8 if value.isdigit() else 0.85), start, end


def _group_starts(value: str, limit: int = 3) -> list[int]:
    """Offsets just after the first ``limit`` separators: where a shorter number may begin.

    The engine reports only the leftmost start for each end, so ``7 4111 1111 1111 1111`` is one
    candidate; the card starts after the first separator.
    """
    out = []
    for i in range(1, len(value)):
        if not value[i - 1].isdigit() and value[i].isdigit():
            out.append(i)
            if len(out) == limit:
                break
    return out


def credit_card(text: str, start: int, end: int, kind: str) -> Validated:
    found = _card_at(text, start, end)
    if found is None:
        for offset in _group_starts(text[start:end]):
            found = _card_at(text, start + offset, end)
            if found is not None:
                break
    return found


# --- IBAN ------------------------------------------------------------------------------------


def iban(text: str, start: int, end: int, kind: str) -> Validated:
    value = text[start:end]
    if " " in value:
        sizes = [len(g) for g in value.split(" ")]
        if not all(s == 4 for s in sizes[:-1]) or sizes[-1] > 4:
            return None
    compact = value.replace(" ", "").upper()
    if not iban_ok(compact):
        return None
    return (0.95 if value[:2].isupper() else 0.75), start, end


# --- IP_ADDRESS ------------------------------------------------------------------------------

_HEXCOLON = frozenset("0123456789abcdefABCDEF:")


def ip_address(text: str, start: int, end: int, kind: str) -> Validated:
    if kind == "v4":
        before = text[start - 1] if start else ""
        after = text[end : end + 2]
        if before in (".", "/") or (after[:1] == "." and after[1:2].isdigit()):
            return None  # part of a longer dotted sequence (OID, user-agent build)
        value = text[start:end]
        if not ipv4_ok(value):
            return None
        if value.startswith("127.") or value == "0.0.0.0":  # loopback, unspecified
            return 0.3, start, end
        return 0.85, start, end
    else:
        value = text[start:end].rstrip(".")
        end = start + len(value)
        if (start and text[start - 1] in _HEXCOLON) or (end < len(text) and text[end] in _HEXCOLON):
            return None
        try:
            addr = ipaddress.IPv6Address(value)
        except ValueError:
            return None
        if sum(1 for g in value.split(":") if g) < 3:
            return 0.4, start, end  # ``a::b`` shapes are more often code than addresses
    if addr.is_loopback or addr.is_unspecified:
        return 0.3, start, end
    return 0.85, start, end


# --- DATE_OF_BIRTH ---------------------------------------------------------------------------


def date_of_birth(text: str, start: int, end: int, kind: str) -> Validated:
    if _embedded(text, start, end) or parse_date(text[start:end], kind) is None:
        return None
    return 0.2, start, end  # a date alone is not a birth date: context must raise it


# --- SECRET ----------------------------------------------------------------------------------

_SECRET_BASE = {
    "aws_key_id": 0.95,
    "github": 0.95,
    "github_pat": 0.95,
    "slack": 0.9,
    "slack_webhook": 0.95,
    "stripe": 0.95,
    "stripe_webhook": 0.95,
    "private_key": 0.99,
    "assignment": 0.8,
}
_PLACEHOLDERS = frozenset(
    [
        "xxxxxxxx",
        "********",
        "changeme",
        "password",
        "redacted",
        "null",
        "none",
        "undefined",
        "true",
        "false",
        "example",
    ]
)
_KEY_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----", re.ASCII)
_KEY_BODY = re.compile(r"[A-Za-z0-9+/=\s:,\-]{0,16384}", re.ASCII)
MAX_KEY_BLOCK = 16384


def _jwt_header_ok(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return False
    return raw.startswith(b"{") and (b'"alg"' in raw or b'"typ"' in raw)


def secret(text: str, start: int, end: int, kind: str) -> Validated:
    if kind == "private_key":
        m = _KEY_END.search(text, end, end + MAX_KEY_BLOCK)
        if m is not None:
            return 0.99, start, m.end()
        body = _KEY_BODY.match(text, end)
        return 0.99, start, body.end() if body else end
    if kind == "jwt":
        return (0.95 if _jwt_header_ok(text[start:end]) else 0.55), start, end
    if kind == "assignment":
        value = text[start:end].rstrip(".,;")
        end = start + len(value)
        if len(value) < 8 or len(set(value)) < 4 or value.lower() in _PLACEHOLDERS:
            return None
    return _SECRET_BASE[kind], start, end


# The highest base confidence each validator can return, per (detector, pattern kind): the
# scanner skips validating a candidate whose context already keeps even this below threshold.
_MAX_BASE: dict[tuple[str, str], float] = {
    ("EMAIL", "email"): 0.9,
    ("PHONE", "intl"): 0.9,
    ("PHONE", "national"): 0.6,
    ("PHONE", "bare"): 0.35,
    **{("SSN", kind): base for kind, base in _SSN_BASE.items()},
    ("CREDIT_CARD", "card"): 0.85,
    ("IBAN", "iban"): 0.95,
    ("IP_ADDRESS", "v4"): 0.85,
    ("IP_ADDRESS", "v6"): 0.85,
    **{("DATE_OF_BIRTH", kind): 0.2 for kind in ("iso", "dmy", "text_dmy", "text_mdy")},
    **{("SECRET", kind): base for kind, base in _SECRET_BASE.items()},
    ("SECRET", "jwt"): 0.95,
}


def max_base(detector: str, kind: str) -> float:
    """The highest base confidence the validator of ``detector`` returns for pattern ``kind``."""
    return _MAX_BASE[detector, kind]


# --- Export for the compiled core (dlp/native) -----------------------------------------------


def _unicode_tables() -> dict[str, list[list[int]]]:
    """The non-ASCII part of :func:`char_class_ranges` (``alnum``/``alpha``/``digit``), in the
    shape ``checks.rs`` reads: the validators look at the characters around a candidate with
    these Unicode-aware methods (``_embedded``, ``ip_address``) and answer ASCII themselves."""
    return {
        name.removeprefix("is"): [[max(a, 0x80), b] for a, b in ranges if b >= 0x80]
        for name, ranges in char_class_ranges().items()
    }


def native_tables() -> dict[str, object]:
    """The validators' data, JSON-serialisable, for ``dlp/native`` (``validate.rs``, ``ValidateTables``).

    Everything the Python validators read is exported from the objects they use (the IIN table,
    the SSN blocklist and IBAN registry derived from stdnum, the month names, the Unicode
    character classes of this Python); the regexes the compiled core implements by hand are
    exported too, so it refuses to start if one of them changed here without it.
    """
    return {
        "iin": [[lo, hi, plen, sorted(lengths)] for lo, hi, plen, lengths in _IIN],
        "file_tlds": sorted(_FILE_TLDS),
        "domain": _DOMAIN.pattern,
        "ssn_base": dict(_SSN_BASE),
        "hexcolon": "".join(sorted(_HEXCOLON)),
        "secret_base": dict(_SECRET_BASE),
        "placeholders": sorted(_PLACEHOLDERS),
        "key_end": _KEY_END.pattern,
        "key_body": _KEY_BODY.pattern,
        "max_key_block": MAX_KEY_BLOCK,
        "max_base": [[d, k, b] for (d, k), b in _MAX_BASE.items()],
        "checks": _checks.native_tables(),
        "dates": _dates.native_tables(),
        "unicode_version": unicodedata.unidata_version,
        "unicode": _unicode_tables(),
    }
