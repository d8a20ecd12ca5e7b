"""What a redacted value becomes, per mode.

* ``mask``    — ``[REDACTED:EMAIL]``
* ``partial`` — keeps what operators need to tell values apart and nothing more: the last 4
  digits of a card (``**** **** **** 1111``), SSN (``***-**-6789``) or IBAN (``DE**…3000``), the
  last 2 digits of a phone number, the first letter and domain of an e-mail (``j***@example.com``);
  every other type is masked as in ``mask``.
* ``hash``    — ``[EMAIL:3f2a9c1b7d4e]``: the first 12 hex digits of HMAC-SHA256 under the
  caller's key of the type and the normalised value (digits only for numbers, lower-case e-mail),
  so the same value gets the same pseudonym across requests and formats, and cannot be reversed
  without the key.
* ``remove``  — the containing field is dropped (JSON, form); in text the value is cut out.

Every output is stable under a second redaction (no replacement contains a detectable value
other than itself), which the property tests check.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from dlp._normalize import detection_view
from dlp._types import CREDIT_CARD, EMAIL, IBAN, PHONE, SSN

HASH_HEX_CHARS = 12
_PARTIAL_IBAN = re.compile(r"[A-Z]{2}\*\*…[A-Z0-9]{4}")
# Our own output (``[REDACTED:EMAIL]``, ``[EMAIL:3f2a9c1b7d4e]``) is never redacted again, so a
# second redaction leaves a first one as it is (``[SECRET:…]`` would otherwise read as
# ``secret: value``, and a field's pseudonym would be hashed again).
OWN_TOKEN = re.compile(r"\[(?:REDACTED:[A-Z_]{2,20}|[A-Z_]{2,20}:[0-9a-f]{12})\]")
_DIGIT_TYPES = frozenset({CREDIT_CARD, SSN, PHONE})


def mask(type_: str) -> str:
    """The ``mask`` token of a type."""
    return f"[REDACTED:{type_}]"


def _keep_last_digits(value: str, keep: int) -> str:
    total = sum(ch.isdigit() for ch in value)
    out = []
    seen = 0
    for ch in value:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > total - keep else "*")
        else:
            out.append(ch)
    return "".join(out)


def partial(type_: str, value: str) -> str:
    """The ``partial`` form of ``value`` (see module docstring); applying it twice changes nothing."""
    has_digits = any(ch.isdigit() for ch in value)
    if type_ in (CREDIT_CARD, SSN) and has_digits:
        return _keep_last_digits(value, 4)
    if type_ == PHONE and has_digits:
        return _keep_last_digits(value, 2)
    if type_ == IBAN:
        compact = detection_view(value)[0].replace(" ", "")
        if _PARTIAL_IBAN.fullmatch(compact):
            return compact
        if len(compact) >= 15:
            return f"{compact[:2].upper()}**…{compact[-4:]}"
    if type_ == EMAIL and "@" in value:
        local, _, domain = value.rpartition("@")
        # "*" is not kept as the first letter: "@x" → "***@x" must stay "***@x" when redacted again.
        return f"{local[:1].replace('*', '')}***@{domain}"
    return mask(type_)


def _normalise(type_: str, value: str) -> str:
    value = detection_view(value)[0]  # a full-width or zero-width-split value is the same value
    if type_ in _DIGIT_TYPES or type_ == IBAN:
        return "".join(ch for ch in value.upper() if ch.isalnum())
    if type_ == EMAIL:
        return value.strip().lower()
    return value


def pseudonym(type_: str, value: str, key: bytes) -> str:
    """The ``hash`` token: keyed, deterministic, type-separated."""
    msg = type_.encode() + b"\x00" + _normalise(type_, value).encode("utf-8", "surrogatepass")
    digest = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return f"[{type_}:{digest[:HASH_HEX_CHARS]}]"


def replacement(type_: str, value: str, mode: str, key: bytes | None) -> str:
    """What ``value`` of ``type_`` becomes in ``mode`` (``remove`` yields the empty string)."""
    if mode == "mask":
        return mask(type_)
    if mode == "partial":
        return partial(type_, value)
    if mode == "hash" and key is not None:
        return pseudonym(type_, value, key)
    return ""
