"""Phone-number validity from ``phonenumbers``' own metadata, without ``phonenumbers.parse``.

``phonenumbers.parse`` + ``is_valid_number`` cost ~20 µs per candidate: most of it is generic
input handling (letters, extensions, RFC 3966, punctuation) that our candidates never need,
since the validator hands over bare digit strings, and regexes looked up and re-matched per call.
This module follows the same steps for digit strings only — international prefix, country code,
national prefix (and its transform rule), the length test that decides whether the stripped
number is kept, then the region and number-type patterns of ``is_valid_number`` — with every
pattern compiled once per region from ``phonenumbers.PhoneMetadata``.  So the numbering plans
stay phonenumbers' (updated with the library); only the dispatch is ours.

The two functions give exactly ``phonenumbers.is_valid_number(phonenumbers.parse(...))``
for their inputs; tests/dlp/test_dlp_phone.py checks that on every region's example numbers
and on random digit strings of every shape the validator produces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

# phonenumbers' limits (phonenumberutil: _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN, _MAX_LENGTH_COUNTRY_CODE).
_MIN_NSN = 2
_MAX_NSN = 17
_MAX_CC = 3
_NON_GEO = "001"


@dataclass(frozen=True, slots=True)
class _Desc:
    """One or more ``PhoneNumberDesc`` with the same possible lengths (``None``: any), patterns joined."""

    lengths: frozenset[int] | None
    pattern: re.Pattern[str]

    def matches(self, nsn: str) -> bool:
        return (self.lengths is None or len(nsn) in self.lengths) and self.pattern.fullmatch(nsn) is not None


@dataclass(frozen=True, slots=True)
class _Plan:
    """The parts of one region's ``PhoneMetadata`` that parsing and validation read."""

    country_code: int
    general: _Desc | None
    lengths: tuple[int, ...]  # general possible lengths, sorted
    local_lengths: frozenset[int]
    # Every number type whose match makes a number valid, grouped by possible lengths: a number
    # is valid when any matches, and which one does not matter here (one fullmatch per group).
    types: tuple[_Desc, ...]
    national_prefix: re.Pattern[str] | None
    transform: str | None
    idd: re.Pattern[str] | None
    leading_digits: re.Pattern[str] | None

    def type_known(self, nsn: str) -> bool:
        """``_number_type_helper(nsn) != UNKNOWN``."""
        general = self.general
        if general is None or not general.matches(nsn):
            return False
        return any(d.matches(nsn) for d in self.types)

    def general_match(self, number: str) -> bool:
        """``_match_national_number`` against the general description (no length check)."""
        return self.general is not None and self.general.pattern.fullmatch(number) is not None

    def length_ok(self, number: str) -> bool:
        """``_test_number_length`` is none of TOO_SHORT, IS_POSSIBLE_LOCAL_ONLY, INVALID_LENGTH."""
        n = len(number)
        if n in self.local_lengths or not self.lengths:
            return False
        return n > self.lengths[-1] or n in self.lengths

    def too_long(self, number: str) -> bool:
        """``_test_number_length`` is TOO_LONG."""
        n = len(number)
        return bool(self.lengths) and n not in self.local_lengths and n > self.lengths[-1]

    def strip_national_prefix(self, number: str) -> str:
        """``_maybe_strip_national_prefix_carrier_code`` (the number part of its answer)."""
        if not number or self.national_prefix is None:
            return number
        m = self.national_prefix.match(number)
        if m is None:
            return number
        viable = self.general_match(number)
        groups = m.groups()
        if not self.transform or not groups or groups[-1] is None:
            stripped = number[m.end() :]
        else:
            stripped = self.national_prefix.sub(self.transform, number, count=1)
        if viable and not self.general_match(stripped):
            return number
        return stripped


_TYPE_FIELDS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)


def _lengths(desc: object) -> frozenset[int] | None:
    lengths = getattr(desc, "possible_length", None) or ()
    return frozenset(lengths) if lengths else None


def _plan_data(md: PhoneMetadata) -> dict[str, Any]:
    """Everything of ``md`` that a plan reads, as plain data (pattern strings, sorted lengths).

    ``_compile`` builds the plan from this and nothing else, and ``native_tables`` exports it,
    so the compiled core reads exactly what this module reads."""
    descs = [getattr(md, f) for f in _TYPE_FIELDS]
    if not md.same_mobile_and_fixed_line_pattern:  # else mobile is never consulted on its own
        descs.append(md.mobile)
    by_lengths: dict[frozenset[int] | None, list[str]] = {}
    for d in descs:
        pattern = getattr(d, "national_number_pattern", None)
        if pattern:
            by_lengths.setdefault(_lengths(d), []).append(pattern)
    gd = md.general_desc
    gp = getattr(gd, "national_number_pattern", None)
    return {
        "country_code": md.country_code or 0,
        "general": {"lengths": _sorted(_lengths(gd)), "pattern": gp} if gp else None,
        "lengths": sorted(gd.possible_length or ()) if gd is not None else [],
        "local_lengths": sorted(gd.possible_length_local_only or ()) if gd is not None else [],
        "types": [
            {"lengths": _sorted(lengths), "pattern": "|".join(f"(?:{p})" for p in patterns)}
            for lengths, patterns in by_lengths.items()
        ],
        "national_prefix": md.national_prefix_for_parsing or None,
        "transform": md.national_prefix_transform_rule or None,
        "idd": md.international_prefix,
        "leading_digits": md.leading_digits,
    }


def _sorted(lengths: frozenset[int] | None) -> list[int] | None:
    return sorted(lengths) if lengths is not None else None


def _desc(data: dict[str, Any]) -> _Desc:
    lengths = data["lengths"]
    return _Desc(frozenset(lengths) if lengths is not None else None, re.compile(data["pattern"]))


def _compile(md: PhoneMetadata) -> _Plan:
    data = _plan_data(md)
    national_prefix, idd, leading_digits = data["national_prefix"], data["idd"], data["leading_digits"]
    return _Plan(
        country_code=data["country_code"],
        general=_desc(data["general"]) if data["general"] is not None else None,
        lengths=tuple(data["lengths"]),
        local_lengths=frozenset(data["local_lengths"]),
        types=tuple(_desc(d) for d in data["types"]),
        national_prefix=re.compile(national_prefix) if national_prefix else None,
        transform=data["transform"],
        idd=re.compile(idd) if idd is not None else None,
        leading_digits=re.compile(leading_digits) if leading_digits is not None else None,
    )


# Compiled plans by region code; the metadata is static, so this is bounded by the ~250 regions.
_PLANS: dict[tuple[int, str], _Plan | None] = {}


def _plan(country_code: int, region: str) -> _Plan | None:
    key = (country_code, region)
    if key not in _PLANS:
        if region == _NON_GEO:
            md = PhoneMetadata.metadata_for_nongeo_region(country_code, None)
        else:
            md = PhoneMetadata.metadata_for_region(region, None)
        _PLANS[key] = _compile(md) if md is not None else None
    return _PLANS[key]


# Country codes by their digits: the shortest prefix of a number that is one is its country code.
_CC_BY_DIGITS = {str(cc): cc for cc in COUNTRY_CODE_TO_REGION_CODE}


def _extract_country_code(number: str) -> tuple[int, str]:
    if not number or number[0] == "0":
        return 0, number
    for i in range(1, min(len(number), _MAX_CC) + 1):
        cc = _CC_BY_DIGITS.get(number[:i])
        if cc is not None:
            return cc, number[i:]
    return 0, number


def _lengths_of(country_code: int) -> frozenset[int] | None:
    """Every length a valid national number of ``country_code`` can have, over all its regions
    (None: some region does not restrict lengths).  A number of another length is valid nowhere:
    answering that at once saves trying the 25 regions of +1 one by one."""
    if country_code not in _CC_LENGTHS:
        union: set[int] | None = set()
        for r in COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()):
            plan = _plan(country_code, r)
            if plan is None or plan.general is None:
                continue
            if plan.general.lengths is None:
                union = None
                break
            union |= plan.general.lengths  # type: ignore[operator]  # not None here
        _CC_LENGTHS[country_code] = frozenset(union) if union is not None else None
    return _CC_LENGTHS[country_code]


_CC_LENGTHS: dict[int, frozenset[int] | None] = {}


def _valid(country_code: int, nsn: str) -> bool:
    """``is_valid_number`` of a parsed number: pick the region as ``region_code_for_number``, then check its types."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions:
        return False
    lengths = _lengths_of(country_code)
    if lengths is not None and len(nsn) not in lengths:
        return False  # no region's general description takes this length: every type check fails
    region: str | None = regions[0]
    if len(regions) > 1:
        region = None
        for r in regions:
            plan = _plan(country_code, r) if r != _NON_GEO else None  # as metadata_for_region("001"): none
            if plan is None:
                continue
            if plan.leading_digits is not None:
                if plan.leading_digits.match(nsn):
                    region = r
                    break
            elif plan.type_known(nsn):
                return True  # is_valid_number_for_region(r) asks the same question of the same plan
    if region is None:
        return False
    plan = _plan(country_code, region)
    if plan is None or (region != _NON_GEO and plan.country_code != country_code):
        return False
    return plan.type_known(nsn)


def _finish(country_code: int, number: str, plan: _Plan | None) -> bool:
    """The end of ``parse`` (national prefix, length checks) and then ``is_valid_number``."""
    if len(number) < _MIN_NSN:
        return False
    if plan is not None:
        stripped = plan.strip_national_prefix(number)
        if plan.length_ok(stripped):
            number = stripped
    if not _MIN_NSN <= len(number) <= _MAX_NSN:
        return False
    return _valid(country_code, number)


def _region_plan(country_code: int) -> _Plan | None:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    return _plan(country_code, regions[0]) if regions else None


def valid_international(digits: str) -> bool:
    """``is_valid_number(parse("+" + digits))`` for a string of ASCII digits."""
    if len(digits) <= _MIN_NSN:
        return False
    cc, rest = _extract_country_code(digits)
    if cc == 0:
        return False
    return _finish(cc, rest, _region_plan(cc))


def valid_national(digits: str, region: str) -> bool:
    """``is_valid_number(parse(digits, region))`` for a string of ASCII digits (no ``+``)."""
    md = PhoneMetadata.metadata_for_region(region, None)
    if md is None or md.country_code is None or not digits:
        return False
    plan = _plan(md.country_code, region)
    if plan is None:
        return False
    # An international dialling prefix (011 in the US, 00 in Europe) makes it an international number,
    # unless a 0 follows it (country codes never start with 0).
    m = plan.idd.match(digits) if plan.idd is not None else None
    if m is not None and digits[m.end() : m.end() + 1] != "0":
        rest = digits[m.end() :]
        if len(rest) <= _MIN_NSN:
            return False
        cc, rest = _extract_country_code(rest)
        if cc == 0:
            return False
        return _finish(cc, rest, _region_plan(cc) if region_of(cc) != region else plan)
    # The region's own country code written without the plus (``1 415…`` in the US).
    home_cc = str(plan.country_code)
    if digits.startswith(home_cc):
        potential = plan.strip_national_prefix(digits[len(home_cc) :])
        if (not plan.general_match(digits) and plan.general_match(potential)) or plan.too_long(digits):
            return _finish(plan.country_code, potential, plan)
    return _finish(plan.country_code, digits, plan)


def region_of(country_code: int) -> str:
    """``region_code_for_country_code``: the main region of a country code (``ZZ`` when unknown)."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    return regions[0] if regions else "ZZ"


def native_tables() -> dict[str, Any]:
    """The numbering plans as plain data, for the compiled core (dlp/native/src/phone.rs).

    Every plan this module can reach: each region of ``COUNTRY_CODE_TO_REGION_CODE`` (what
    ``metadata_for_region`` answers for it; ``valid_national`` of any other region is False) and
    each non-geographic entity (``001``) by country code, each as ``_plan_data`` gives it; the
    country codes with their regions in phonenumbers' order; and this module's limits."""
    regions: dict[str, Any] = {}
    non_geo: dict[str, Any] = {}
    for cc, rs in COUNTRY_CODE_TO_REGION_CODE.items():
        for r in rs:
            if r == _NON_GEO:
                md = PhoneMetadata.metadata_for_nongeo_region(cc, None)
                if md is not None:
                    non_geo[str(cc)] = _plan_data(md)
            elif r not in regions:
                md = PhoneMetadata.metadata_for_region(r, None)
                if md is not None:
                    regions[r] = _plan_data(md)
    return {
        "min_nsn": _MIN_NSN,
        "max_nsn": _MAX_NSN,
        "max_cc": _MAX_CC,
        "non_geo_region": _NON_GEO,
        "country_codes": [[cc, list(rs)] for cc, rs in COUNTRY_CODE_TO_REGION_CODE.items()],
        "regions": regions,
        "non_geo": non_geo,
    }
