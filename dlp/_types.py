"""Values that flow out of :mod:`dlp`: detector type names, findings and redaction results.

The type names are a contract: they appear in mask tokens (``[REDACTED:EMAIL]``), in
``Result.counts`` (metric labels) and in the redaction obligations ext_authz writes into
dynamic metadata.  Never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EMAIL = "EMAIL"
PHONE = "PHONE"
SSN = "SSN"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"
DATE_OF_BIRTH = "DATE_OF_BIRTH"
SECRET = "SECRET"  # noqa: S105 - a type name, not a credential
NAME = "NAME"
ADDRESS = "ADDRESS"
# A value redacted because its field was named in ``Obligations.fields`` and its key maps to no
# detector type.
FIELD = "FIELD"

# Detectors that find values in any text (``scan`` runs these).
TEXT_DETECTORS: tuple[str, ...] = (EMAIL, PHONE, SSN, CREDIT_CARD, IBAN, IP_ADDRESS, DATE_OF_BIRTH, SECRET)
# Detectors that only recognise a value by the key that holds it (JSON, form bodies).
FIELD_DETECTORS: tuple[str, ...] = (NAME, ADDRESS)
DETECTORS: tuple[str, ...] = TEXT_DETECTORS + FIELD_DETECTORS

# Default confidence a candidate must reach to be reported, per detector.  Tuned on the bench
# corpus (bench/dlp): look-alikes score below these, validated PII with any context above.
DEFAULT_THRESHOLDS: dict[str, float] = {
    EMAIL: 0.5,
    PHONE: 0.5,
    SSN: 0.5,
    CREDIT_CARD: 0.5,
    IBAN: 0.5,
    IP_ADDRESS: 0.5,
    DATE_OF_BIRTH: 0.5,
    SECRET: 0.5,
    NAME: 0.5,
    ADDRESS: 0.5,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: its type and its span in Python character offsets (``text[start:end]``)."""

    type: str
    start: int
    end: int
    confidence: float


@dataclass(frozen=True, slots=True)
class Redaction:
    """One redacted value, without the value: its type, where it was, and why.

    ``location`` is a JSON path (``$.customer.email``, ``$[3].note``) for JSON and NDJSON (prefixed
    with the line number, ``2:$.email``), the form field name for form bodies (``form:email``)
    and ``text`` for text bodies.  ``start``/``end`` are character offsets inside that value, or
    ``-1`` when the whole value was redacted because of its field name.  ``reason`` is
    ``"detector"`` or ``"field"``.
    """

    type: str
    location: str
    start: int
    end: int
    reason: str


@dataclass(frozen=True)
class Result:
    """What :func:`dlp.redact` returns: the (possibly) new body and what changed, never values.

    ``counts`` maps each redacted type to how many values of it were redacted.  ``binary`` is
    true when the body was not text and was passed through untouched (``on_binary="pass"``).
    """

    body: bytes
    changed: bool
    counts: dict[str, int] = field(default_factory=dict)
    findings: tuple[Redaction, ...] = ()
    binary: bool = False
