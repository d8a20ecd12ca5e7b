"""Deterministic PII and secret detection and redaction for Aegis.

``scan`` finds typed, scored spans in text; ``redact`` rewrites a request or response body
(JSON, NDJSON, form, text) according to :class:`Obligations`.  See docs/dlp.md.
"""

from __future__ import annotations

from dlp import _native
from dlp._dates import reference_date
from dlp._engine import ENGINE as _PYTHON_ENGINE
from dlp._errors import (
    BinaryBody,
    DlpError,
    DuplicateKey,
    InvalidJson,
    InvalidObligations,
    MalformedBody,
    UnknownDetector,
)
from dlp._obligations import Obligations
from dlp._redact import redact
from dlp._scan import scan
from dlp._types import (
    ADDRESS,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    DEFAULT_THRESHOLDS,
    DETECTORS,
    EMAIL,
    FIELD,
    IBAN,
    IP_ADDRESS,
    NAME,
    PHONE,
    SECRET,
    SSN,
    Finding,
    Redaction,
    Result,
)

__all__ = [
    "ADDRESS",
    "CREDIT_CARD",
    "DATE_OF_BIRTH",
    "DEFAULT_THRESHOLDS",
    "DETECTORS",
    "EMAIL",
    "ENGINE",
    "FIELD",
    "IBAN",
    "IP_ADDRESS",
    "NAME",
    "PHONE",
    "SECRET",
    "SSN",
    "BinaryBody",
    "DlpError",
    "DuplicateKey",
    "Finding",
    "InvalidJson",
    "InvalidObligations",
    "MalformedBody",
    "Obligations",
    "Redaction",
    "Result",
    "UnknownDetector",
    "redact",
    "reference_date",
    "scan",
]


def __getattr__(name: str) -> str:
    # ``ENGINE``: what scans — the compiled core (dlp/native), or Python with Hyperscan (``re``
    # where Hyperscan has no wheel).  Computed on first use: building the core reads every
    # numbering plan of phonenumbers (~0.3 s), which a program that only imports dlp should not pay.
    if name == "ENGINE":
        return "native" if _native.core() is not None else _PYTHON_ENGINE
    raise AttributeError(f"module 'dlp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "ENGINE"])
