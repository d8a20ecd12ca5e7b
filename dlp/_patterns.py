"""The candidate patterns: one table, compiled once into one multi-pattern database.

Patterns only *propose* candidates; validators in ``_validate`` confirm them.  So patterns are
deliberately loose in content but strict in shape, and every one of them obeys two rules that
keep scanning linear on any input, whichever engine runs them:

* no unbounded repetition (every ``*``/``+`` is written as a bounded ``{m,n}``), no nested
  quantified groups that can match the same text two ways, no back-references, no look-arounds
  (Hyperscan supports none of them, and Python ``re`` is only linear without them);
* ASCII semantics (``\\b``, ``\\d`` and ``\\w`` are ASCII in Hyperscan; the ``re`` fallback is
  compiled with ``re.ASCII`` so both engines agree).

Each pattern belongs to one detector (its stable type name) and carries a ``kind`` that the
validator uses to pick its rules (e.g. a dashed SSN versus a bare nine-digit run).
"""

from __future__ import annotations

from dataclasses import dataclass

from dlp._types import (
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PHONE,
    SECRET,
    SSN,
)


@dataclass(frozen=True)
class Pattern:
    """One candidate pattern of the database."""

    detector: str
    kind: str
    regex: str
    caseless: bool = False
    # When set, the pattern only finds an anchor (a key name, a token prefix) and the value is
    # taken by matching ``extend`` right after it.  This keeps the engine from reporting one
    # match per possible end of a long value (Hyperscan reports every end offset).
    extend: str | None = None
    # Report every end offset of a start (the validator tries them longest first): for shapes
    # where a shorter match can be right when the longest is not (a card followed by more digits).
    all_ends: bool = False
    # The anchor is context, not value: the finding starts where the anchor ends (``api_key=``).
    value_after_anchor: bool = False
    # When set, the match starts at the beginning of the run of these characters that ends at
    # the anchor, at most ``left_max`` of them and at least one (an e-mail's local part before
    # ``@``).  Hyperscan then only looks for the anchor: a leading bounded repeat of a broad class
    # is its most expensive shape, live at every letter of the text.
    left_class: str | None = None
    left_max: int = 0


_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|januar|februar|märz|maerz|mai|juni|juli|okt|dez"
_MONTH = rf"(?:{_MONTHS})[a-z]{{0,7}}\.?"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?\.?"

PATTERNS: tuple[Pattern, ...] = (
    # EMAIL: the validator trims leading punctuation and checks labels; 64/253 are RFC 5321 limits.
    Pattern(
        EMAIL,
        "email",
        r"@[A-Za-z0-9]",
        extend=r"[A-Za-z0-9.\-]{0,252}\.[A-Za-z]{2,24}\b",
        left_class="A-Za-z0-9._%+'*-",
        left_max=64,
    ),
    # PHONE: international (+CC / 00CC) and national shapes; phonenumbers decides.
    Pattern(PHONE, "intl", r"(?:\+|\b00)[1-9][0-9 ().\-/]{5,22}\d\b", all_ends=True),
    Pattern(PHONE, "national", r"(?:\(\d{2,5}\)[ .\-]?|\b\d{2,5}[ .\-/])\d[\d .\-]{3,14}\d\b", all_ends=True),
    Pattern(PHONE, "bare", r"\b0?\d{9,11}\b"),
    # SSN: dashed, spaced, bare.
    Pattern(SSN, "dashed", r"\b\d{3}-\d{2}-\d{4}\b"),
    Pattern(SSN, "spaced", r"\b\d{3} \d{2} \d{4}\b"),
    Pattern(SSN, "bare", r"\b\d{9}\b"),
    # CREDIT_CARD: 12-19 digits, optionally grouped by spaces or dashes.
    Pattern(CREDIT_CARD, "card", r"\b\d(?:[ \-]?\d){11,18}\b", all_ends=True),
    # IBAN: country code, check digits, 11-30 BBAN characters, optionally grouped by spaces.
    Pattern(IBAN, "iban", r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}\b", all_ends=True),
    # IP_ADDRESS: dotted quad; IPv6 full (8 groups) or compressed (``::``) — times and MAC
    # addresses have neither shape; ``ipaddress`` decides.
    Pattern(IP_ADDRESS, "v4", r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"),
    Pattern(IP_ADDRESS, "v6", r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}\b"),
    Pattern(
        IP_ADDRESS,
        "v6",
        r"(?:\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::",
        extend=r"[0-9A-Fa-f:.]{0,45}",
    ),
    # DATE_OF_BIRTH: every date is a candidate; only birth context makes it a finding.
    Pattern(DATE_OF_BIRTH, "iso", r"\b(?:1[89]|20)\d{2}[\-/.]\d{1,2}[\-/.]\d{1,2}\b"),
    Pattern(DATE_OF_BIRTH, "dmy", r"\b\d{1,2}[./\-]\d{1,2}[./\-](?:\d{4}|\d{2})\b"),
    Pattern(DATE_OF_BIRTH, "text_dmy", rf"\b{_DAY} ?(?:of )?{_MONTH},? \d{{4}}\b", caseless=True),
    Pattern(DATE_OF_BIRTH, "text_mdy", rf"\b{_MONTH} {_DAY},? \d{{4}}\b", caseless=True),
    # SECRET: vendor token formats (prefixes are public documentation of each vendor).
    Pattern(SECRET, "aws_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
    Pattern(SECRET, "github", r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b"),
    Pattern(SECRET, "github_pat", r"\bgithub_pat_", extend=r"[A-Za-z0-9_]{22,242}\b"),
    Pattern(SECRET, "slack", r"\bxox[abposre]-", extend=r"[A-Za-z0-9\-]{10,250}"),
    Pattern(SECRET, "slack_webhook", r"https://hooks\.slack\.com/services/", extend=r"[A-Za-z0-9_/]{20,120}"),
    Pattern(SECRET, "stripe", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,247}\b"),
    Pattern(SECRET, "stripe_webhook", r"\bwhsec_[A-Za-z0-9]{24,64}\b"),
    Pattern(
        SECRET,
        "jwt",
        r"\beyJ[A-Za-z0-9_\-]{4}",
        extend=r"[A-Za-z0-9_\-]{0,2000}\.eyJ[A-Za-z0-9_\-]{4,8000}\.[A-Za-z0-9_\-]{0,1400}",
    ),
    Pattern(SECRET, "private_key", r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----"),
    Pattern(
        SECRET,
        "assignment",
        r"\b(?:[a-z0-9]{1,20}[_\-.])?(?:api[_\-]?key|apikey|secret|secret[_\-]?key|token|access[_\-]?token"
        r"|auth[_\-]?token|refresh[_\-]?token|client[_\-]?secret|password|passwd|pwd|access[_\-]?key)"
        r"[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?",
        caseless=True,
        extend=r"[A-Za-z0-9_\-./+=~!@#$%^&*]{6,512}",
        value_after_anchor=True,
    ),
)
