"""Errors raised by :mod:`dlp`.

Every error has a stable ``code``: the caller (the ext_proc adapter) logs it, uses it as the
metric label, and decides to block the request on it.  The codes of body errors match the ones
the rest of Aegis uses for the same condition (``malformed_body``), so one dashboard covers both.

    DlpError                    code=dlp_error
    ├── InvalidObligations      code=obligations_invalid   (bad mode, missing hash key, bad path…)
    │   └── UnknownDetector     code=unknown_detector      (a detector or threshold name is not known)
    ├── MalformedBody           code=malformed_body        (the body is not what its content type says)
    │   ├── InvalidJson         code=malformed_body        (syntax error, NaN, nesting too deep)
    │   └── DuplicateKey        code=malformed_body        (ambiguous: parsers disagree on which value wins)
    └── BinaryBody              code=binary_body           (non-UTF-8/binary body and ``on_binary="block"``)

No error message ever contains a value from the body: messages name positions and keys' counts only.
"""

from __future__ import annotations


class DlpError(Exception):
    """Base of every error :mod:`dlp` raises on purpose."""

    code: str = "dlp_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidObligations(DlpError):
    """The redaction obligations are inconsistent or name something unknown."""

    code = "obligations_invalid"


class MalformedBody(DlpError):
    """The body does not have the format its content type declares; the caller should block."""

    code = "malformed_body"


class InvalidJson(MalformedBody):
    """A JSON (or NDJSON line) body does not parse as strict JSON."""


class DuplicateKey(MalformedBody):
    """A JSON object repeats a key: different parsers keep different values, so it is refused."""


class BinaryBody(DlpError):
    """The body is binary or not decodable text, and the obligations say ``on_binary="block"``."""

    code = "binary_body"


class UnknownDetector(InvalidObligations):
    """A detector name (in obligations, ``scan(detectors=…)`` or thresholds) is not known."""

    code = "unknown_detector"
