"""The precompiled checks equal the libraries they stand in for (phonenumbers, stdnum, ipaddress).

dlp validates candidates with ``dlp._phone`` and ``dlp._checks`` instead of calling the libraries
per candidate (see their docstrings); these tests are what makes that safe: every function is
compared with the library on the libraries' own example data and on seeded random inputs of
every shape the validators hand over.
"""

from __future__ import annotations

import ipaddress
import random

import phonenumbers
import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn
from stdnum.us import ssn as std_ssn

from dlp import _checks, _phone, _validate

DIGITS = st.text(alphabet="0123456789", min_size=3, max_size=17)


def _lib_international(digits: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits, None)))
    except phonenumbers.NumberParseException:
        return False


def _lib_national(digits: str, region: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(digits, region)))
    except phonenumbers.NumberParseException:
        return False


def _example_numbers() -> list[str]:
    """country code + national number of every region's example numbers (all types), and non-geo ones."""
    out = []
    kinds = (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.VOIP,
    )
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                out.append(f"{ex.country_code}{phonenumbers.national_significant_number(ex)}")
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        ex = phonenumbers.example_number_for_non_geo_entity(cc)
        if ex is not None:
            out.append(f"{cc}{phonenumbers.national_significant_number(ex)}")
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


def test_international_numbers_equal_phonenumbers_on_every_region() -> None:
    rng = random.Random(7)
    pool = [m for number in EXAMPLES for m in (number, *_mutations(number, rng, 3))]
    assert len(EXAMPLES) > 500
    assert sum(_lib_international(d) for d in EXAMPLES) > 400  # the examples are mostly valid
    wrong = [d for d in pool if _phone.valid_international(d) != _lib_international(d)]
    assert wrong == []


@pytest.mark.parametrize("region", ["US", "GB", "DE"])
def test_national_numbers_equal_phonenumbers(region: str) -> None:
    rng = random.Random(region)
    cc = str(phonenumbers.country_code_for_region(region))
    own = [n[len(cc) :] for n in EXAMPLES if n.startswith(cc)]
    prefixes = ("", "0", "00", "011", "1", cc, "0" + cc)
    pool = [p + n for n in own + EXAMPLES[::7] for p in prefixes]
    pool += [m for n in own for m in _mutations("0" + n, rng, 5)]
    wrong = [d for d in pool if _phone.valid_national(d, region) != _lib_national(d, region)]
    assert wrong == []


@settings(max_examples=300, deadline=None)
@given(DIGITS, st.sampled_from(["US", "GB", "DE"]))
def test_random_digit_strings_equal_phonenumbers(digits: str, region: str) -> None:
    assert _phone.valid_international(digits) == _lib_international(digits)
    assert _phone.valid_national(digits, region) == _lib_national(digits, region)


def test_luhn_equals_stdnum() -> None:
    rng = random.Random(1)
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 19)))
        assert _checks.luhn_ok(digits) == std_luhn.is_valid(digits), digits


def test_ssn_equals_stdnum() -> None:
    serials = ("0000", "0001", "1120", "5462", "9999", "6789")
    groups = ("00", "01", "05", "09", "10", "55", "99")
    for area in range(1000):
        for group in groups:
            for serial in serials:
                digits = f"{area:03d}{group}{serial}"
                assert _checks.ssn_ok(digits) == std_ssn.is_valid(digits), digits


def test_iban_equals_stdnum() -> None:
    rng = random.Random(3)
    fakers = [Faker(loc) for loc in ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "nl_NL", "it_IT", "pl_PL")]
    for i, f in enumerate(fakers):
        f.seed_instance(i)
    valid = [f.iban() for f in fakers for _ in range(40)]
    pool = valid + [m for v in valid for m in _mutations(v, rng, 2)]
    pool += ["BE68539007547034", "ES9121000418450200051332", "XX00123456789012", "DE89370400440532013000"]
    assert sum(std_iban.is_valid(v) for v in valid) == len(valid)
    for value in pool:
        upper = value.upper()
        if upper.isalnum() and upper.isascii():
            assert _checks.iban_ok(upper) == std_iban.is_valid(upper), upper


def test_ipv4_equals_ipaddress() -> None:
    rng = random.Random(4)
    parts = ["0", "1", "00", "01", "10", "99", "100", "199", "200", "249", "250", "255", "256", "300", "999", "010"]
    for _ in range(4000):
        value = ".".join(rng.choice(parts) for _ in range(4))
        try:
            ipaddress.IPv4Address(value)
            expected = True
        except ValueError:
            expected = False
        assert _checks.ipv4_ok(value) == expected, value


def test_max_base_bounds_every_validator_result() -> None:
    """The scanner skips validation when even ``max_base`` cannot reach the threshold: it must be a bound."""
    from test_dlp_detectors import NEGATIVES, POSITIVES

    from dlp._engine import scan_text
    from dlp._patterns import PATTERNS
    from dlp._scan import _VALIDATORS

    for text in [p[0] for p in POSITIVES] + NEGATIVES:
        for pid, start, end in scan_text(text)[0]:
            p = PATTERNS[pid]
            verdict = _VALIDATORS[p.detector](text, start, end, p.kind)
            if verdict is not None:
                assert verdict[0] <= _validate.max_base(p.detector, p.kind), (text, p.kind)
