"""The Rust validators (dlp/native/src/validate.rs) give exactly the Python validators' verdicts.

``aegis_dlp_native.Validators`` is the test shim over ``validate::Validators`` (character offsets
in and out).  Every detector but PHONE (another module) is compared with ``dlp._validate`` on:

* every candidate ``dlp._engine.scan_text`` produces (Hyperscan and the ``re`` fallback) over the
  bench corpus (bench/dlp/corpus.py): free texts, JSON texts, and the NUL-joined string values of
  the JSON documents as ``scan_segments`` scans them;
* hypothesis texts assembled from digits, separators, letters, ``@ . :``, non-ASCII digits and
  letters, and fragments shaped like each detector's values (valid and near-valid);
* candidates placed by hand between interesting neighbours (non-ASCII digits and letters,
  currency signs, separators), and hand-picked edge cases;
* the helpers one by one where they have their own input space: Python's character classes on
  every code point, IPv6 parsing, base64url decoding, the IBAN and IIN checks, date parsing.

``max_base`` is compared for every pattern of ``dlp._patterns.PATTERNS``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import random
import string
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

native = pytest.importorskip("aegis_dlp_native")

from stdnum.exceptions import ValidationError  # noqa: E402
from stdnum.util import get_cc_module  # noqa: E402

from dlp import _checks, _dates, _engine, _validate  # noqa: E402
from dlp._normalize import detection_view  # noqa: E402
from dlp._patterns import PATTERNS  # noqa: E402
from dlp._scan import SEPARATOR  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]

PYTHON = {
    "EMAIL": _validate.email,
    "SSN": _validate.ssn,
    "CREDIT_CARD": _validate.credit_card,
    "IBAN": _validate.iban,
    "IP_ADDRESS": _validate.ip_address,
    "DATE_OF_BIRTH": _validate.date_of_birth,
    "SECRET": _validate.secret,
}
KINDS = sorted({(p.detector, p.kind) for p in PATTERNS if p.detector in PYTHON})


def _iban_module_check(compact: str) -> bool:
    module = get_cc_module(compact[:2], "iban")
    try:
        module.validate(compact)  # type: ignore[union-attr]
    except ValidationError:
        return False
    return True


TABLES = json.dumps(_validate.native_tables())
V = native.Validators(TABLES, _iban_module_check)
IBAN_COUNTRIES = sorted(cast(dict[str, dict[str, Any]], _checks.native_tables()["iban_countries"]).items())


def _today() -> tuple[int, int, int]:
    t = _dates._current_date()
    return t.year, t.month, t.day


def check_span(text: str, detector: str, kind: str, start: int, end: int) -> None:
    expected = PYTHON[detector](text, start, end, kind)
    got = V.validate(detector, kind, text, start, end, _today())
    assert got == expected, (detector, kind, text[max(0, start - 5) : end + 5], start, end)


def check_text(text: str) -> int:
    """Compare every non-PHONE candidate of ``text`` (both engines); the number compared."""
    n = 0
    scanners = [None] if _engine.ENGINE == "re" else [None, _engine.scan_re]
    for scanner in scanners:
        for pid, start, end in _engine.scan_text(text, scanner=scanner)[0]:
            p = PATTERNS[pid]
            if p.detector in PYTHON:
                check_span(text, p.detector, p.kind, start, end)
                n += 1
    return n


# --- corpus ------------------------------------------------------------------------------------


def _strings(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in _strings(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return []


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    pytest.importorskip("faker")
    sys.path.insert(0, str(ROOT / "bench" / "dlp"))
    try:
        from corpus import generate
    finally:
        sys.path.remove(str(ROOT / "bench" / "dlp"))
    return cast(list[dict[str, Any]], generate(1500, 20240318))  # bench/dlp/run.py's defaults


def test_corpus_candidates(corpus: list[dict[str, Any]]) -> None:
    n = 0
    for sample in corpus:
        n += check_text(sample["text"])
        if sample["kind"] == "json":
            values = _strings(json.loads(sample["text"]))
            joined = SEPARATOR.join(detection_view(v)[0] for v in values)  # what scan_segments scans
            n += check_text(joined)
    assert n > 5000


def test_corpus_candidates_in_other_neighbourhoods(corpus: list[dict[str, Any]]) -> None:
    """Each corpus candidate again, between neighbours that exercise ``_embedded`` and friends."""
    rng = random.Random(7)
    n = 0
    for sample in corpus[:600]:
        text = sample["text"]
        for pid, start, end in _engine.scan_text(text)[0]:
            p = PATTERNS[pid]
            if p.detector not in PYTHON:
                continue
            value = text[start:end]
            for _ in range(3):
                before = "".join(rng.choice(NEIGHBOURS) for _ in range(rng.randint(0, 2)))
                after = "".join(rng.choice(NEIGHBOURS) for _ in range(rng.randint(0, 2)))
                t = before + value + after
                check_span(t, p.detector, p.kind, len(before), len(before) + len(value))
                n += 1
    assert n > 1000


# --- hand-placed candidates and edge cases -----------------------------------------------------

NEIGHBOURS = list("-_/#.$€£,:;a Z9٣²①ÄäéßⅣ〇\x00\t\n%@+=*'ıſK") + ["", "é", "\u0661", "\U0001d7ce"]

EDGE: list[tuple[str, str, str]] = [
    # EMAIL
    ("EMAIL", "email", "x ..a.b@example.com y"),
    ("EMAIL", "email", "-.'%+*-@example.com"),
    ("EMAIL", "email", "a.@example.com"),
    ("EMAIL", "email", "a..b@example.com"),
    ("EMAIL", "email", "logo@2x.PNG"),
    ("EMAIL", "email", "a@b.Json"),
    ("EMAIL", "email", "a@-b.com"),
    ("EMAIL", "email", "a@b-.com"),
    ("EMAIL", "email", "a@b..com"),
    ("EMAIL", "email", "a@" + "b" * 64 + ".com"),
    ("EMAIL", "email", "a@" + "b" * 63 + ".com"),
    ("EMAIL", "email", "a@b.c" + "o" * 63),
    ("EMAIL", "email", "a@b@c.de"),
    # SSN
    ("SSN", "dashed", "123-45-6789"),
    ("SSN", "dashed", "078-05-1120"),
    ("SSN", "dashed", "666-12-3456"),
    ("SSN", "dashed", "900-12-3456"),
    ("SSN", "dashed", "123-00-3456"),
    ("SSN", "dashed", "123-45-0000"),
    ("SSN", "dashed", "000-45-6789"),
    ("SSN", "spaced", "219 09 9999"),
    ("SSN", "bare", "457555462"),
    ("SSN", "bare", "123456789"),
    ("SSN", "dashed", "$123-45-6789"),
    ("SSN", "dashed", "€123-45-6789"),
    ("SSN", "dashed", "a#123-45-6789"),
    ("SSN", "dashed", "123-45-6789-7"),
    ("SSN", "dashed", "123-45-6789-x"),
    ("SSN", "dashed", "123-45-6789-é"),
    ("SSN", "dashed", "123-45-6789,²"),
    ("SSN", "dashed", "é.123-45-6789"),
    ("SSN", "dashed", "٣.123-45-6789"),
    # CREDIT_CARD
    ("CREDIT_CARD", "card", "4111111111111111"),
    ("CREDIT_CARD", "card", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card", "4111-1111-1111-1111"),
    ("CREDIT_CARD", "card", "4111-1111 1111-1111"),
    ("CREDIT_CARD", "card", "3782 822463 10005"),
    ("CREDIT_CARD", "card", "3056 930902 5904"),
    ("CREDIT_CARD", "card", "7 4111 1111 1111 1111"),
    ("CREDIT_CARD", "card", "12 34 4111 1111 1111 1111"),
    ("CREDIT_CARD", "card", "1 2 3 4111111111111111"),
    ("CREDIT_CARD", "card", "4111 1111 1111 111"),
    ("CREDIT_CARD", "card", "6011000990139424"),
    ("CREDIT_CARD", "card", "5019717010103742"),
    ("CREDIT_CARD", "card", "6221260000000000"),
    ("CREDIT_CARD", "card", "ORD-4111111111111111"),
    ("CREDIT_CARD", "card", "4111111111111111.50"),
    # IBAN
    ("IBAN", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "iban", "GB82WEST12345698765432"),
    ("IBAN", "iban", "gb82 west 1234 5698 7654 32"),
    ("IBAN", "iban", "Gb82WEST12345698765432"),
    ("IBAN", "iban", "GB82 WEST 1234 5698 7654 3"),
    ("IBAN", "iban", "GB82 WES 1234 5698 7654 32"),
    ("IBAN", "iban", "BE68539007547034"),
    ("IBAN", "iban", "BE32 1234 5678 9002"),
    ("IBAN", "iban", "BE48320070184927"),
    ("IBAN", "iban", "BE41091811735141"),
    ("IBAN", "iban", "ES15 1234 1234 1712 3456 7890"),
    ("IBAN", "iban", "ME25510000000006234133"),
    ("IBAN", "iban", "ME52510000000006234132"),
    ("IBAN", "iban", "ES9121000418450200051332"),
    ("IBAN", "iban", "ES7712341234161234567890"),
    ("IBAN", "iban", "NO9386011117947"),
    ("IBAN", "iban", "ME25505000012345678951"),
    ("IBAN", "iban", "DE89370400440532013000"),
    ("IBAN", "iban", "XX89370400440532013000"),
    # IP_ADDRESS
    ("IP_ADDRESS", "v4", "192.168.0.1"),
    ("IP_ADDRESS", "v4", "127.0.0.1"),
    ("IP_ADDRESS", "v4", "0.0.0.0"),
    ("IP_ADDRESS", "v4", "192.168.0.01"),
    ("IP_ADDRESS", "v4", "256.1.1.1"),
    ("IP_ADDRESS", "v4", "1.2.3.4.5"),
    ("IP_ADDRESS", "v4", "1.2.3.4.²"),
    ("IP_ADDRESS", "v4", "1.2.3.4.a"),
    ("IP_ADDRESS", "v4", "/1.2.3.4"),
    ("IP_ADDRESS", "v6", "::"),
    ("IP_ADDRESS", "v6", "::1"),
    ("IP_ADDRESS", "v6", "fe80::1"),
    ("IP_ADDRESS", "v6", "fe80::1:2"),
    ("IP_ADDRESS", "v6", "2001:db8::8a2e:370:7334"),
    ("IP_ADDRESS", "v6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("IP_ADDRESS", "v6", "::ffff:192.0.2.128"),
    ("IP_ADDRESS", "v6", "::ffff:192.0.2.128."),
    ("IP_ADDRESS", "v6", "::ffff:192.0.2.1280"),
    ("IP_ADDRESS", "v6", "::ffff:192.0.02.128"),
    ("IP_ADDRESS", "v6", "1:2:3:4:5:6:7::"),
    ("IP_ADDRESS", "v6", "1:2:3:4:5:6:7:8::"),
    ("IP_ADDRESS", "v6", "1::2::3"),
    ("IP_ADDRESS", "v6", "1:2:3:4:5:6:1.2.3.4"),
    ("IP_ADDRESS", "v6", "1:2:3:4:5:6:7:1.2.3.4"),
    ("IP_ADDRESS", "v6", "::1.2.3.4"),
    ("IP_ADDRESS", "v6", "a::b..."),
    ("IP_ADDRESS", "v6", "12345::1"),
    # DATE_OF_BIRTH
    ("DATE_OF_BIRTH", "iso", "1985-03-04"),
    ("DATE_OF_BIRTH", "iso", "1899-12-31"),
    ("DATE_OF_BIRTH", "iso", "2099-01-01"),
    ("DATE_OF_BIRTH", "iso", "1985-02-29"),
    ("DATE_OF_BIRTH", "iso", "1984-02-29"),
    ("DATE_OF_BIRTH", "iso", "1900-02-29"),
    ("DATE_OF_BIRTH", "iso", "2000-02-29"),
    ("DATE_OF_BIRTH", "dmy", "13/04/1985"),
    ("DATE_OF_BIRTH", "dmy", "04/13/1985"),
    ("DATE_OF_BIRTH", "dmy", "13/13/1985"),
    ("DATE_OF_BIRTH", "dmy", "01.01.00"),
    ("DATE_OF_BIRTH", "dmy", "01.01.99"),
    ("DATE_OF_BIRTH", "text_dmy", "1st of March 1990"),
    ("DATE_OF_BIRTH", "text_dmy", "1ST OF MARCH, 1990"),
    ("DATE_OF_BIRTH", "text_dmy", "3. März 1990"),
    ("DATE_OF_BIRTH", "text_dmy", "3. MÄRZ 1990"),
    ("DATE_OF_BIRTH", "text_dmy", "3. Maerz 1990"),
    ("DATE_OF_BIRTH", "text_dmy", "31 Juni 1990"),
    ("DATE_OF_BIRTH", "text_mdy", "Dez. 24, 1990"),
    ("DATE_OF_BIRTH", "text_mdy", "May 5th 2090"),
    # SECRET
    ("SECRET", "aws_key_id", "AKIAIOSFODNN7EXAMPLE"),
    ("SECRET", "jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"),
    ("SECRET", "jwt", "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0."),
    ("SECRET", "jwt", "eyJzdWIiOiIxIn0.eyJzdWIiOiIxIn0.x"),
    ("SECRET", "jwt", "eyJhbGc.eyJzdWIiOiIxIn0.x"),
    ("SECRET", "jwt", "eyJhbGciO.eyJzdWIiOiIxIn0.x"),
    ("SECRET", "assignment", "changeme"),
    ("SECRET", "assignment", "PASSWORD.,;"),
    ("SECRET", "assignment", "aaaabbbb"),
    ("SECRET", "assignment", "abcabcabc"),
    ("SECRET", "assignment", "abcdabcd;;"),
    ("SECRET", "assignment", "abcdabc;"),
    ("SECRET", "slack", "xoxb-1234567890-abc"),
]


@pytest.mark.parametrize(("detector", "kind", "value"), EDGE)
def test_edge_cases(detector: str, kind: str, value: str) -> None:
    # The value may carry a neighbour or two (``$123-45-6789``): the candidate is the engine's
    # span when it finds one of this pattern, else the whole value.
    spans = [
        (s, e)
        for pid, s, e in _engine.scan_text(value)[0]
        if (PATTERNS[pid].detector, PATTERNS[pid].kind) == (detector, kind)
    ]
    for start, end in spans or [(0, len(value))]:
        check_span(value, detector, kind, start, end)
        for before in NEIGHBOURS:
            for after in NEIGHBOURS:
                t = before + value + after
                check_span(t, detector, kind, start + len(before), end + len(before))


def test_private_key_blocks() -> None:
    begin = "-----BEGIN RSA PRIVATE KEY-----"
    bodies = [
        "\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n",
        "\n" + "A" * 16400,
        "\n" + "A" * 16380 + "\n-----END RSA PRIVATE KEY-----",
        "\n" + "é" * 10 + "A" * 16380 + "\n-----END RSA PRIVATE KEY-----",
        "\n" + "A" * 16370 + "é" * 10 + "\n-----END RSA PRIVATE KEY-----",
        "\nAB\n-----END PRIVATE KEY BLOCK-----",
        "\nAB\n-----END ENCRYPTED PRIVATE KEY----- -----END PRIVATE KEY-----",
        "\nAB\n-----END " + "X" * 41 + "PRIVATE KEY-----",
        "\nAB\n-----END " + "X" * 40 + "PRIVATE KEY-----",
        "\nAB\n-----END PRIVATE KEY BLOCK BLOCK-----",
        "\nAB é -----END PRIVATE KEY-----",
        "\nAB\x0b\x0c\r\t:,-=/+ \u00a0CD",
        "",
    ]
    for body in bodies:
        for lead in ("", "key: ", "ü"):
            text = lead + begin + body + " tail"
            check_text(text)
            check_span(text, "SECRET", "private_key", len(lead), len(lead) + len(begin))


def test_max_base() -> None:
    for p in PATTERNS:
        assert V.max_base(p.detector, p.kind) == _validate.max_base(p.detector, p.kind), p
    for (d, k), base in _validate._MAX_BASE.items():
        assert V.max_base(d, k) == base
    assert V.max_base("SSN", "nope") is None


def test_phone_left_to_the_caller() -> None:
    for kind in ("intl", "national", "bare"):
        assert V.validate("PHONE", kind, "+1 212-555-0100", 0, 15, _today()) is None


def test_unknown_kinds_are_rejected_where_python_raises() -> None:
    assert V.validate("SSN", "nope", "123-45-6789", 0, 11, _today()) is None
    with pytest.raises(KeyError):
        _validate.ssn("123-45-6789", 0, 11, "nope")
    assert V.validate("SECRET", "nope", "abcdefgh", 0, 8, _today()) is None


def test_iban_module_countries_need_the_callback() -> None:
    no_callback = native.Validators(TABLES)
    be = "BE32123456789002"
    assert _validate.iban(be, 0, len(be), "iban") is not None
    assert V.validate("IBAN", "iban", be, 0, len(be), _today()) == _validate.iban(be, 0, len(be), "iban")
    assert no_callback.validate("IBAN", "iban", be, 0, len(be), _today()) is None
    de = "DE89370400440532013000"
    assert no_callback.validate("IBAN", "iban", de, 0, len(de), _today()) == _validate.iban(de, 0, len(de), "iban")
    modules = {cc for cc, c in IBAN_COUNTRIES if c["module"]}
    assert modules == {cc for cc, _ in IBAN_COUNTRIES if get_cc_module(cc, "iban") is not None}
    assert modules  # BE, ES, ME, NO in python-stdnum 2.2


# --- hypothesis: texts through the engine ------------------------------------------------------

NOISE = string.digits + " -./:@_,#$€£%+'*=()" + "abcxyzXYZ" + "٣²①éÄäß\u0661\U0001d7ce\x00"


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        if _checks.luhn_ok(body + d):
            return body + d
    raise AssertionError


def _group(digits: str, rng: random.Random) -> str:
    shape = rng.choice(["bare", "4", "4-6", "odd"])
    sep = rng.choice([" ", "-"])
    if shape == "bare":
        return digits
    if shape == "4-6" and len(digits) in (14, 15):
        return sep.join([digits[:4], digits[4:10], digits[10:]])
    if shape == "odd":
        cut = sorted(rng.sample(range(1, len(digits)), rng.randint(1, 4)))
        return sep.join(digits[a:b] for a, b in zip([0, *cut], [*cut, len(digits)], strict=True))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


IIN_PREFIXES = [
    (str(lo if random.Random(lo).random() < 0.5 else hi).zfill(plen), sorted(lengths))
    for lo, hi, plen, lengths in _validate._IIN
]


@st.composite
def card(draw: st.DrawFn) -> str:
    rng = random.Random(draw(st.integers(0, 2**32)))
    prefix, lengths = rng.choice(IIN_PREFIXES)
    length = rng.choice([*lengths, rng.randint(12, 19)])
    digits = _luhn_complete(prefix, max(length, len(prefix) + 1), rng)
    if rng.random() < 0.2:
        digits = digits[:-1] + str((int(digits[-1]) + 1) % 10)
    return _group(digits, rng)


@st.composite
def iban(draw: st.DrawFn) -> str:
    import re

    rng = random.Random(draw(st.integers(0, 2**32)))
    cc, info = rng.choice(IBAN_COUNTRIES)
    bban = ""
    for cls, n in re.findall(r"\[([^\]]+)\]\{(\d+)\}", info["structure"]):
        alphabet = {
            "0-9": string.digits,
            "A-Z": string.ascii_uppercase,
            "A-Za-z0-9": string.ascii_uppercase + string.digits,
        }[cls]
        bban += "".join(rng.choice(alphabet) for _ in range(int(n)))
    if cc == "BE" and rng.random() < 0.7:  # a valid national check, so the country module accepts
        bban = bban[:10] + f"{int(bban[:10]) % 97 or 97:02d}"
    check = 98 - int((bban + cc + "00").translate(_checks._IBAN_DIGITS)) % 97
    compact = f"{cc}{check:02d}{bban}"
    if rng.random() < 0.15:
        compact = compact[:-1] + rng.choice(string.digits)
    if rng.random() < 0.2:
        compact = compact.lower() if rng.random() < 0.5 else compact[0].lower() + compact[1:]
    if rng.random() < 0.5:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


@st.composite
def ipv6(draw: st.DrawFn) -> str:
    addr = draw(st.ip_addresses(v=6))
    rng = random.Random(draw(st.integers(0, 2**32)))
    form = rng.choice(["compressed", "exploded", "v4", "mangled"])
    if form == "exploded":
        s = addr.exploded
    elif form == "v4":
        s = addr.exploded.rsplit(":", 2)[0] + ":" + str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
        s = str(ipaddress.IPv6Address(s)) if rng.random() < 0.5 else s
        if rng.random() < 0.5:
            s = "::" + s.rsplit(":", 1)[1]
    else:
        s = addr.compressed
    if form == "mangled":
        chars = list(s)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(chars) + 1)
            chars.insert(i, rng.choice("0123456789abcdefABCDEF:.::"))
        s = "".join(chars)
    if rng.random() < 0.5:
        s = s.upper()
    return s + rng.choice(["", "", ".", "..", ":"])


MONTH_WORDS = [
    "Jan",
    "January",
    "feb",
    "März",
    "MÄRZ",
    "Maerz",
    "mai",
    "Juni",
    "juli",
    "Okt",
    "Oct.",
    "dez",
    "Dezember",
    "Sept",
    "Smarch",
    "mayo",
]


@st.composite
def date(draw: st.DrawFn) -> str:
    rng = random.Random(draw(st.integers(0, 2**32)))
    y = rng.choice([rng.randint(1890, 2030), rng.randint(0, 99)])
    m, d = (rng.randint(1, 12), rng.randint(1, 28)) if rng.random() < 0.7 else (rng.randint(0, 13), rng.randint(0, 32))
    ys = f"{y:02d}" if y < 100 else str(y)
    sep = rng.choice("-/.")
    shape = rng.choice(["iso", "dmy", "text_dmy", "text_mdy"])
    if shape == "iso":
        return f"{rng.randint(1800, 2099)}{sep}{m:0{rng.randint(1, 2)}d}{sep}{d}"
    if shape == "dmy":
        return f"{d}{sep}{m}{sep}{ys}"
    month = rng.choice(MONTH_WORDS)
    day = f"{d}{rng.choice(['', 'st', 'nd', 'rd', 'th', '.'])}"
    year = str(rng.randint(1890, 2030))
    if shape == "text_dmy":
        return f"{day} {rng.choice(['', 'of ', 'OF '])}{month}{rng.choice(['', ','])} {year}"
    return f"{month} {day}{rng.choice(['', ','])} {year}"


@st.composite
def email(draw: st.DrawFn) -> str:
    local = draw(st.text(alphabet=string.ascii_letters + string.digits + "._%+'*-", min_size=1, max_size=12))
    labels = draw(
        st.lists(
            st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=0, max_size=8),
            min_size=1,
            max_size=3,
        )
    )
    tld = draw(st.sampled_from(["com", "de", "PNG", "json", "co", "x1", "Html", "c"]))
    return f"{local}@{'.'.join(labels)}.{tld}"


@st.composite
def secret(draw: st.DrawFn) -> str:
    rng = random.Random(draw(st.integers(0, 2**32)))
    kind = rng.choice(["jwt", "assignment", "vendor"])
    if kind == "jwt":
        header = rng.choice(['{"alg":"HS256"}', '{"typ":"JWT"}', '{"kid":"1"}', '["alg"]', ' {"alg":1}', '{"al'])
        head = base64.urlsafe_b64encode(header.encode()).decode().rstrip("=")
        if rng.random() < 0.3:
            head = head[: rng.randint(4, len(head))]
        if not head.startswith("eyJ"):
            head = "eyJ" + head
        return f"{head}.eyJzdWIiOiIxMjM0In0.{rng.choice(['', 'sig', 'a-b_c'])}"
    if kind == "assignment":
        value = rng.choice(
            ["changeme", "Password", "xxxxxxxx", "********", "abcabcab", "s3cr3t-v@lue!", "aaaabbbb", "abcdefg"]
        )
        key = rng.choice(["api_key", "token", "PASSWORD", "db.secret"])
        return key + rng.choice(["=", ": ", '="']) + value + rng.choice(["", ".", ",;", '"'])
    return rng.choice(
        [
            "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
            "ghp_" + "".join(rng.choice(string.ascii_letters) for _ in range(36)),
            "sk_live_" + "".join(rng.choice(string.ascii_letters) for _ in range(24)),
            "xoxb-" + "".join(rng.choice(string.digits + "-") for _ in range(12)),
        ]
    )


@st.composite
def ssn(draw: st.DrawFn) -> str:
    rng = random.Random(draw(st.integers(0, 2**32)))
    a = rng.choice(["000", "666", "900", "078", "219", "457", f"{rng.randint(0, 999):03d}"])
    g = rng.choice(["00", "05", "09", "55", f"{rng.randint(0, 99):02d}"])
    s = rng.choice(["0000", "1120", "9999", "5462", f"{rng.randint(0, 9999):04d}"])
    return rng.choice([f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}{g}{s}"])


@st.composite
def ipv4(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(st.sampled_from(["0", "1", "01", "127", "255", "256", "999", "10", "192"]), min_size=4, max_size=5)
    )
    return ".".join(parts)


FRAGMENTS = st.one_of(
    st.text(alphabet=NOISE, max_size=6),
    st.sampled_from(list(" -./:_,#$€£\x00é٣²")),
    card(),
    iban(),
    ipv6(),
    ipv4(),
    date(),
    email(),
    secret(),
    ssn(),
    st.from_regex(r"[0-9]{1,6}(?:[ .\-/:][0-9]{1,6}){0,5}", fullmatch=True),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAGMENTS, min_size=1, max_size=8).map("".join))
@example("4111 1111 1111 1111")
@example("::ffff:1.2.3.4.")
def test_generated_texts(text: str) -> None:
    check_text(text)


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=NOISE, max_size=40))
def test_noise_texts(text: str) -> None:
    check_text(text)


# --- the helpers on their own input spaces -----------------------------------------------------


def test_character_classes_on_every_code_point() -> None:
    chars = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF)
    got = V.char_classes(chars)
    for ch, bits in zip(chars, got, strict=True):
        expected = ch.isalnum() | ch.isalpha() << 1 | ch.isdigit() << 2
        if bits != expected:
            raise AssertionError((hex(ord(ch)), bits, expected))


def _py_ipv6(value: str) -> tuple[int, int] | None:
    try:
        n = int(ipaddress.IPv6Address(value))
    except ValueError:
        return None
    return n >> 64, n & (2**64 - 1)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789abcdefABCDEFg:.%/ ", max_size=46), ipv6()))
@example("1:2:3:4:5:6:7::")
@example("::1%")
@example("::1%a%b")
@example("::1%eth0")
@example("::ffff:1.2.3.4%1")
@example("1.2.3.4")
@example("::1/128")
@example(":::")
@example("1:::2")
def test_ipv6_parsing(value: str) -> None:
    assert native.validate_parse_ipv6(value) == _py_ipv6(value)


def _py_b64(s: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(s)
    except (binascii.Error, ValueError):
        return None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=string.ascii_letters[:6] + "0189-_+/=*. é", max_size=24))
@example("abc=")
@example("ab=c")
@example("a===")
@example("ab==cd")
@example("abc=d")
def test_urlsafe_b64decode(s: str) -> None:
    assert native.validate_urlsafe_b64decode(s) == _py_b64(s)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(secret(), st.text(alphabet="eyJhbGciOi0_-.=é", max_size=30)))
def test_jwt_header(token: str) -> None:
    assert native.validate_jwt_header_ok(token) == _validate._jwt_header_ok(token)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(iban(), st.text(alphabet="ABGEDNO0123456789", min_size=0, max_size=34)))
def test_iban_ok(value: str) -> None:
    compact = value.replace(" ", "").upper()
    assert V.iban_ok(compact) == _checks.iban_ok(compact)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(card(), st.text(alphabet="0123456789", min_size=0, max_size=20)))
def test_iin_and_luhn(value: str) -> None:
    digits = value.replace(" ", "").replace("-", "")
    assert V.in_iin_range(digits) == _validate.in_iin_range(digits)
    assert native.validate_luhn_ok(digits) == _checks.luhn_ok(digits)


@settings(max_examples=2000, deadline=None)
@given(date(), st.sampled_from(["iso", "dmy", "text_dmy", "text_mdy"]))
def test_parse_date(value: str, kind: str) -> None:
    got = V.parse_date(value, kind, _today())
    expected = _dates.parse_date(value, kind)
    assert got == (None if expected is None else (expected.year, expected.month, expected.day))


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789.", max_size=20))
def test_ipv4(value: str) -> None:
    assert native.validate_ipv4_ok(value) == _checks.ipv4_ok(value)


def test_two_digit_years_follow_today() -> None:
    """``_make`` with other days as today: the century pivot and the 'not in the future' bound."""
    import datetime as dt

    saved = _dates._today
    try:
        for today in (dt.date(2026, 1, 1), dt.date(2000, 2, 29), dt.date(2099, 12, 31), dt.date(1999, 6, 15)):
            _dates._today = (today, float("inf"))
            t = (today.year, today.month, today.day)
            for yy in (0, 25, 26, 27, 99, 1999, 2000, 2026, 2027):
                for m, d in ((1, 1), (2, 29), (6, 15), (6, 16), (12, 31)):
                    for value, kind in ((f"{d}.{m}.{yy:02d}", "dmy"), (f"{yy:04d}-{m}-{d}", "iso")):
                        expected = _dates.parse_date(value, kind)
                        got = V.parse_date(value, kind, t)
                        assert got == (None if expected is None else (expected.year, expected.month, expected.day)), (
                            today,
                            value,
                        )
                        assert V.validate("DATE_OF_BIRTH", kind, value, 0, len(value), t) == _validate.date_of_birth(
                            value, 0, len(value), kind
                        )
    finally:
        _dates._today = saved
