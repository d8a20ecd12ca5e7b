"""Checksums and registry checks, equal to ``python-stdnum``'s and ``ipaddress``' but cheap per call.

The validators run these on every candidate, so per-call cost matters: ``stdnum.us.ssn.is_valid``
takes ~10 µs, ``stdnum.iban.is_valid`` ~30 µs and ``stdnum.luhn.is_valid`` ~3 µs here, mostly in
generic input cleaning our candidates do not need (the patterns already guarantee ASCII digits
or letters).  The rules and registries stay the libraries': the SSN blocklist, the IBAN
country table (BBAN structure from stdnum's ``numdb``) and stdnum's country modules are read
from stdnum.  tests/dlp/test_dlp_validators.py checks every function here against the library
it replaces on large generated samples.
"""

from __future__ import annotations

import functools
import re

from stdnum import numdb
from stdnum.exceptions import ValidationError
from stdnum.us import ssn as std_ssn
from stdnum.util import get_cc_module

# --- Luhn (ISO/IEC 7812) -------------------------------------------------------------------

# Each digit doubled, digits of the result summed: 5 → 10 → 1.
_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")


def luhn_ok(digits: str) -> bool:
    """``stdnum.luhn.is_valid`` for a string of ASCII digits."""
    rev = digits[::-1]
    # Summing the ASCII codes is one C loop; 48 is ord("0").
    total = sum(rev[0::2].encode()) + sum(rev[1::2].translate(_LUHN_DOUBLE).encode()) - 48 * len(digits)
    return total % 10 == 0


# --- US SSN --------------------------------------------------------------------------------


def _ssn_blocklist() -> frozenset[str]:
    # The published invalid numbers, as stdnum knows them (its ``format`` output: AAA-GG-SSSS).
    known = ("078-05-1120", "457-55-5462", "219-09-9999")
    return frozenset(n.replace("-", "") for n in known if not std_ssn.is_valid(n))


_SSN_BLOCKLIST = _ssn_blocklist()


def ssn_ok(digits: str) -> bool:
    """``stdnum.us.ssn.is_valid`` for nine ASCII digits: no area 000/666/9xx, group 00, serial 0000."""
    area = digits[:3]
    return not (
        area == "000"
        or area == "666"
        or area[0] == "9"
        or digits[3:5] == "00"
        or digits[5:] == "0000"
        or digits in _SSN_BLOCKLIST
    )


# --- IBAN ----------------------------------------------------------------------------------

# Letters as their ISO 13616 numbers (A = 10 … Z = 35) for the mod-97 check.
_IBAN_DIGITS = {ord(c): str(ord(c) - 55) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_BBAN_PART = re.compile(r"([1-9][0-9]*)!([nac])")
_BBAN_CLASS = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Za-z0-9]"}


def iban_mod97_ok(compact: str) -> bool:
    """The ISO 7064 mod 97-10 check of an upper-case alphanumeric IBAN."""
    return int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 == 1


@functools.cache
def _iban_country(cc: str) -> tuple[re.Pattern[str] | None, object | None]:
    """The BBAN structure of a country from stdnum's IBAN registry, and its country module."""
    info = numdb.get("iban").info(cc)
    props = info[0][1] if info and info[0][0] == cc else {}
    if not props:
        return None, None
    structure = _BBAN_PART.sub(lambda m: f"{_BBAN_CLASS[m.group(2)]}{{{m.group(1)}}}", props.get("bban", ""))
    return re.compile(structure), get_cc_module(cc, "iban")


def iban_ok(compact: str) -> bool:
    """``stdnum.iban.is_valid`` for an upper-case ASCII alphanumeric string."""
    if len(compact) < 5 or not iban_mod97_ok(compact):
        return False
    structure, _ = _iban_country(compact[:2])
    if structure is None or not structure.fullmatch(compact[4:]):
        return False
    return iban_country_module_ok(compact)


def iban_country_module_ok(compact: str) -> bool:
    """The country's own stdnum check of an IBAN, where stdnum has one (BE, ES, ME, NO…); the
    compiled core calls this back for those countries."""
    _, module = _iban_country(compact[:2])
    if module is not None:
        try:
            module.validate(compact)  # type: ignore[attr-defined]  # a stdnum country module
        except ValidationError:
            return False
    return True


# --- IPv4 ----------------------------------------------------------------------------------


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


def ipv4_ok(value: str) -> bool:
    """``ipaddress.IPv4Address(value)`` would succeed: four decimal octets ≤ 255, no leading zeros."""
    return _IPV4.fullmatch(value) is not None


# --- Export for the compiled core (dlp/native) -----------------------------------------------


def native_tables() -> dict[str, object]:
    """The data behind these checks, JSON-serialisable, for ``dlp/native`` (``validate.rs``).

    * ``ssn_blocklist``: the nine-digit numbers stdnum rejects beyond the area/group/serial rules;
    * ``iban_countries``: per country code (every two-character code of ``[A-Z0-9]`` that stdnum's
      registry knows), the BBAN structure regex and whether stdnum also runs a country module's
      ``validate`` (the compiled core asks the caller for that verdict);
    * ``ipv4``: the IPv4 regex, which the core implements by hand and checks it is unchanged.
    """
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    countries: dict[str, dict[str, object]] = {}
    for a in alnum:
        for b in alnum:
            structure, module = _iban_country(a + b)
            if structure is not None:
                countries[a + b] = {"structure": structure.pattern, "module": module is not None}
    return {
        "ssn_blocklist": sorted(_SSN_BLOCKLIST),
        "iban_countries": countries,
        "ipv4": _IPV4.pattern,
    }
