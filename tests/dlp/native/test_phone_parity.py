"""The Rust phone validator (dlp/native/src/phone.rs) gives exactly ``dlp._validate.phone`` and
``dlp._phone``'s answers.

Compared on: every exported numbering-plan pattern (compiled as the Rust side compiles it) against
Python's ``re`` on digit strings; every PHONE candidate the engine finds in the benchmark corpus;
every region's example numbers in national, international and E.164 form, in text; mutations and
random digit strings of every shape; and hypothesis-generated texts around candidates.  Offsets
are characters in Python and UTF-8 bytes in Rust: converted both ways.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

native = pytest.importorskip("aegis_dlp_native")

from dlp import _engine, _patterns, _phone, _validate  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TABLES = _validate.phone_native_tables()
PHONES = native.PhoneParity(json.dumps(TABLES))
KINDS = ("intl", "national", "bare")


def _b(text: str, i: int) -> int:
    return len(text[:i].encode())


def _rust_validate(text: str, start: int, end: int, kind: str) -> tuple[float, int, int] | None:
    """``validate`` on character offsets (converted to bytes and back)."""
    got = PHONES.validate(text, _b(text, start), _b(text, end), kind)
    if got is None:
        return None
    conf, s, e = got
    raw = text.encode()
    return conf, len(raw[:s].decode()), len(raw[:e].decode())


def _same(text: str, start: int, end: int, kind: str) -> bool:
    return _rust_validate(text, start, end, kind) == _validate.phone(text, start, end, kind)


def _phone_candidates(text: str) -> list[tuple[str, int, int]]:
    cands, _ = _engine.scan_text(text)
    out = []
    for pid, start, end in cands:
        p = _patterns.PATTERNS[pid]
        if p.detector == "PHONE":
            out.append((p.kind, start, end))
    return out


# --- tables and patterns -----------------------------------------------------------------------


def test_tables_cover_what_python_reaches() -> None:
    regions = {r for rs in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.values() for r in rs}
    assert set(TABLES["regions"]) == regions - {"001"}
    assert {int(cc) for cc in TABLES["non_geo"]} == set(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    assert all(plan["country_code"] for plan in TABLES["regions"].values())
    for region in ("001", "ZZ", "us", "", "XX"):  # what valid_national finds no metadata for
        assert phonenumbers.PhoneMetadata.metadata_for_region(region, None) is None
        assert not PHONES.valid_national("4155550100", region)
    for cc in [*phonenumbers.COUNTRY_CODE_TO_REGION_CODE, 0, 999, 42]:
        assert PHONES.region_of(cc) == _phone.region_of(cc)
    PHONES.compile_all()  # every plan compiles


def _patterns_in_tables() -> list[str]:
    out = set()
    for plan in [*TABLES["regions"].values(), *TABLES["non_geo"].values()]:
        if plan["general"]:
            out.add(plan["general"]["pattern"])
        out.update(t["pattern"] for t in plan["types"])
        out.update(p for p in (plan["national_prefix"], plan["idd"], plan["leading_digits"]) if p)
    return sorted(out)


def _example_nsns() -> list[str]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                out.append(phonenumbers.national_significant_number(ex))
    return sorted(set(out))


NSNS = _example_nsns()


def test_every_pattern_behaves_as_python_re() -> None:
    import re

    rng = random.Random(11)
    pool = [""] + ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 18))) for _ in range(150)]
    wrong = []
    for pattern in _patterns_in_tables():
        rx = re.compile(pattern)
        texts = pool + rng.sample(NSNS, 40) + ["0" + n for n in rng.sample(NSNS, 20)]
        # strings the pattern matches, and their neighbours, so both outcomes are exercised
        texts += [t + d for t in texts[:60] for d in "09"]
        got = native.phone_pattern_probe(pattern, texts)
        for t, (full, m) in zip(texts, got, strict=True):
            pm = rx.match(t)
            want = (
                rx.fullmatch(t) is not None,
                None
                if pm is None
                else (pm.end(), [None if pm.start(g) < 0 else pm.span(g) for g in range(1, len(pm.groups()) + 1)]),
            )
            if (full, None if m is None else (m[0], list(m[1]))) != want:
                wrong.append((pattern, t))
    assert wrong == []


# --- valid_international / valid_national --------------------------------------------------------


def _example_numbers() -> list[phonenumbers.PhoneNumber]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                out.append(ex)
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        ex = phonenumbers.example_number_for_non_geo_entity(cc)
        if ex is not None:
            out.append(ex)
    return out


EXAMPLES = _example_numbers()


def _mutations(number: str, rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        chars = list(number)
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.4:
            chars[i] = str(rng.randint(0, 9))
        elif op < 0.7:
            chars.insert(i, str(rng.randint(0, 9)))
        elif len(chars) > 4:
            del chars[i]
        out.append("".join(chars))
    return out


def test_international_numbers() -> None:
    rng = random.Random(3)
    intl = [f"{ex.country_code}{phonenumbers.national_significant_number(ex)}" for ex in EXAMPLES]
    pool = [m for d in intl for m in (d, *_mutations(d, rng, 4))]
    pool += ["".join(rng.choice("0123456789") for _ in range(n)) for n in range(0, 19) for _ in range(300)]
    assert sum(_phone.valid_international(d) for d in pool) > 1000
    wrong = [d for d in pool if PHONES.valid_international(d) != _phone.valid_international(d)]
    assert wrong == []


def test_national_numbers_of_every_region() -> None:
    rng = random.Random(5)
    wrong = []
    checked = valid = 0
    by_region: dict[str, list[str]] = {}
    for ex in EXAMPLES:
        region = phonenumbers.region_code_for_number(ex)
        national = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.NATIONAL)
        digits = "".join(c for c in national if c.isdigit() and c.isascii())
        if region and region != "001":
            by_region.setdefault(region, []).append(digits)
    for region, numbers in sorted(by_region.items()):
        cc = str(phonenumbers.country_code_for_region(region))
        idd = {"US": "011", "GB": "00", "DE": "00"}.get(region, "00")
        pool = [p + n for n in numbers for p in ("", "0", cc, "0" + cc, idd + cc)]
        pool += [m for n in numbers for m in _mutations(n, rng, 4)]
        pool += [f"{ex.country_code}{phonenumbers.national_significant_number(ex)}" for ex in rng.sample(EXAMPLES, 10)]
        for d in pool:
            checked += 1
            want = _phone.valid_national(d, region)
            valid += want
            if PHONES.valid_national(d, region) != want:
                wrong.append((region, d))
    assert checked > 5000 and valid > 1000
    assert wrong == []


@settings(max_examples=2000, deadline=None)
@given(
    st.text(alphabet="0123456789", min_size=0, max_size=18),
    st.sampled_from(["US", "GB", "DE", "AR", "BR", "MX", "IT", "FR", "IN", "CN", "JP", "AU", "RU", "KZ", "CA"]),
)
def test_random_digit_strings(digits: str, region: str) -> None:
    assert PHONES.valid_international(digits) == _phone.valid_international(digits)
    assert PHONES.valid_national(digits, region) == _phone.valid_national(digits, region)


def test_non_digit_input_is_refused() -> None:
    # Not ASCII: the Rust functions answer False without looking (documented); Python does too here.
    for d in ("\u0661\u0664\u0661\u0665\u0665\u0665\u0660\u0661\u0660\u0660", "\uff14\uff11\uff15\uff15\uff15\uff15"):
        assert not PHONES.valid_international(d) and not _phone.valid_international(d)
        assert not PHONES.valid_national(d, "US") and not _phone.valid_national(d, "US")


# --- the validator -----------------------------------------------------------------------------


def _corpus_texts() -> list[str]:
    sys.path.insert(0, str(ROOT))
    try:
        from bench.dlp import corpus
    finally:
        sys.path.remove(str(ROOT))
    return [s["text"] for s in corpus.generate()]


def test_every_corpus_candidate() -> None:
    checked = found = 0
    wrong = []
    for text in _corpus_texts():
        for kind, start, end in _phone_candidates(text):
            checked += 1
            want = _validate.phone(text, start, end, kind)
            found += want is not None
            if _rust_validate(text, start, end, kind) != want:
                wrong.append((text[max(0, start - 10) : end + 10], kind))
    assert checked > 5000 and found > 500
    assert wrong == []


_AROUND = ["", " ", "Tel: ", "x", "ORD-", "a-", "€", "£", "$", "1 ", "1.", "#", "é-", "\u0663 ", "²/", "中."]
_AFTER = ["", " ", ".", "-7", "-x", "_a", ",5", ":3", "/9", "-é", "-\u0663", ".\u00b2", " ok", "-"]


def test_every_example_number_in_text() -> None:
    rng = random.Random(9)
    formats = (
        phonenumbers.PhoneNumberFormat.NATIONAL,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.E164,
    )
    checked = found = 0
    wrong = []
    for ex in EXAMPLES:
        for fmt in formats:
            number = phonenumbers.format_number(ex, fmt)
            variants = [
                number,
                number.replace(" ", "-"),
                number.replace(" ", "."),
                "00" + number[1:] if number[0] == "+" else number,
            ]
            for value in variants:
                text = rng.choice(_AROUND) + value + rng.choice(_AFTER)
                spans = {(k, s, e) for k, s, e in _phone_candidates(text)}
                s = text.index(value)
                spans |= {(k, s, s + len(value)) for k in KINDS}
                for kind, start, end in sorted(spans):
                    checked += 1
                    want = _validate.phone(text, start, end, kind)
                    found += want is not None
                    if _rust_validate(text, start, end, kind) != want:
                        wrong.append((text, kind, start, end))
    assert checked > 5000 and found > 1000
    assert wrong == []


def _home_numbers() -> list[str]:
    """National numbers of the regions the validator tries (US, GB, DE), as dialled at home."""
    out = []
    for ex in EXAMPLES:
        if phonenumbers.region_code_for_number(ex) in ("US", "GB", "DE"):
            national = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.NATIONAL)
            out.append("".join(c for c in national if c.isdigit()))
    return out


HOME = _home_numbers()
INTL = [f"{ex.country_code}{phonenumbers.national_significant_number(ex)}" for ex in EXAMPLES]


def _shaped(rng: random.Random) -> str:
    """Digit groups with the separators and prefixes the patterns admit: random digits, or a
    real (or mutated) number split at random places."""
    r = rng.random()
    if r < 0.3:
        digits, head = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 17))), ""
    elif r < 0.65:
        digits, head = rng.choice(HOME), rng.choice(["", "", "(", "1 "])
    else:
        digits, head = rng.choice(INTL), rng.choice(["+", "00", "+ ", "011"])
    if rng.random() < 0.3:
        digits = _mutations(digits, rng, 1)[0]
    groups = []
    while digits:
        k = rng.randint(1, 5)
        groups.append(digits[:k])
        digits = digits[k:]
    seps = [rng.choice([" ", "-", ".", "/", ") ", " (", "", "  ", ".-"]) for _ in groups]
    return head + "".join(g + s for g, s in zip(groups, seps, strict=True)).rstrip(" (./-")


def test_random_shapes_with_surrounding_text() -> None:
    rng = random.Random(13)
    wrong = []
    valid = 0
    for _ in range(20000):
        value = _shaped(rng)
        text = rng.choice(_AROUND) + value + rng.choice(_AFTER)
        s = text.index(value)
        kind = rng.choice(KINDS)
        want = _validate.phone(text, s, s + len(value), kind)
        valid += want is not None
        if _rust_validate(text, s, s + len(value), kind) != want:
            wrong.append((text, kind))
        for k, cs, ce in _phone_candidates(text):
            want = _validate.phone(text, cs, ce, k)
            valid += want is not None
            if _rust_validate(text, cs, ce, k) != want:
                wrong.append((text, k, cs, ce))
    assert valid > 800
    assert wrong == []


_CHARS = st.sampled_from(
    list("0123456789" * 4 + " .-/()+" * 3 + "_#$,:xaZ")
    + ["€", "£", "é", "\u0663", "\u00b2", "\uff11", "中", "\u200b", "\U0001d7d9", "\u2460", "\n"]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_CHARS, min_size=1, max_size=40).map("".join), st.data())
def test_hypothesis_texts(text: str, data: st.DataObject) -> None:
    for kind, start, end in _phone_candidates(text):
        assert _same(text, start, end, kind), (text, kind, start, end)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    kind = data.draw(st.sampled_from([*KINDS, "other"]))
    assert _same(text, start, end, kind), (text, kind, start, end)


def test_char_classes_on_every_code_point() -> None:
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    for name in ("isalnum", "isalpha", "isdigit"):
        method = getattr(str, name)
        assert PHONES.char_class(name, every) == [method(c) for c in every], name


def test_speed_is_reported() -> None:
    """Not a benchmark: prints ns per call (run with -s) and checks the order of magnitude."""
    valid = "Call me at (415) 555-2671 today"
    invalid = "Ref 020 1234 5678 9 was closed"
    cases = [
        (valid, valid.index("("), valid.index(" today"), "national"),
        ("Tel: +44 20 7946 0123.", 5, 21, "intl"),
        (invalid, 4, invalid.index(" was") - 2, "national"),
        ("id 2125550000 ok", 3, 13, "bare"),
    ]
    for text, s, e, kind in cases:
        ns = PHONES.bench_validate(text, _b(text, s), _b(text, e), kind, 20000)
        print(f"validate {text[s:e]!r} {kind}: {ns:.0f} ns, {_validate.phone(text, s, e, kind)}")
        assert ns < 50_000
    parse, new, compile_all = native.phone_startup_ns(json.dumps(TABLES))
    print(
        f"start-up: JSON {parse / 1e6:.1f} ms, Phones::new {new / 1e6:.1f} ms, compile_all {compile_all / 1e6:.1f} ms"
    )
