"""Context: the words before a candidate and the key that holds it move its confidence.

Two sources, both cheap and bounded:

* **Nearby words** — the last keyword in a short window before the candidate (never crossing
  into another JSON value) wins: ``phone: 020 7946 0958`` raises a phone, ``order 2125550123``
  lowers it.  The window is ``WINDOW`` characters, so the check costs the same on any input.
* **Key names** — a JSON key or form field name, normalised to lower-case letters and digits
  (``Date_Of_Birth`` → ``dateofbirth``), maps to the detector type it announces (``dob`` →
  DATE_OF_BIRTH) or marks values as look-alike territory (``order_id``, ``version``, ``sha256``).
  The same tables drive field-based detection of NAME and ADDRESS.
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass

from dlp._types import (
    ADDRESS,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    NAME,
    PHONE,
    SECRET,
    SSN,
)

WINDOW = 40  # characters before a candidate searched for keywords

POSITIVE_BOOST = 0.45
NEGATIVE_PENALTY = 0.5
KEY_MATCH_CONFIDENCE = 0.97

_POSITIVE_WORDS: dict[str, tuple[str, ...]] = {
    EMAIL: ("email", "e-mail", "mail", "contact"),
    PHONE: (
        "phone",
        "tel",
        "telephone",
        "mobile",
        "cell",
        "call",
        "fax",
        "whatsapp",
        "sms",
        "text me",
        "ring",
        "reach me",
        "contact",
        "telefon",
        "handy",
        "mob",
    ),
    SSN: ("ssn", "social security", "social-security", "ss#", "soc sec", "tin", "taxpayer"),
    CREDIT_CARD: ("card", "credit", "debit", "visa", "mastercard", "amex", "cc", "pan", "kreditkarte", "charge"),
    IBAN: ("iban", "bank", "account", "konto", "transfer", "sepa"),
    IP_ADDRESS: ("ip", "ip address", "client", "remote", "host", "from", "source", "origin"),
    DATE_OF_BIRTH: (
        "born",
        "birth",
        "birthday",
        "dob",
        "d.o.b",
        "date of birth",
        "birthdate",
        "geboren",
        "geb",
        "geburtsdatum",
        "geburtstag",
        "bday",
        "b-day",
    ),
}

# Words that announce a look-alike: identifiers, money, versions, times.
_NEGATIVE_COMMON = (
    "order",
    "ord",
    "invoice",
    "inv",
    "tracking",
    "track",
    "shipment",
    "parcel",
    "sku",
    "item",
    "part",
    "product",
    "model",
    "ref",
    "reference",
    "ticket",
    "case",
    "transaction",
    "txn",
    "id",
    "uuid",
    "serial",
    "isbn",
    "ean",
    "upc",
    "batch",
    "lot",
    "receipt",
    "confirmation",
    "booking",
    "po",
    "price",
    "amount",
    "total",
    "qty",
    "quantity",
    "timestamp",
    "epoch",
    "build",
    "version",
)
_NEGATIVE_WORDS: dict[str, tuple[str, ...]] = {
    PHONE: _NEGATIVE_COMMON,
    SSN: _NEGATIVE_COMMON,
    CREDIT_CARD: _NEGATIVE_COMMON,
    IBAN: ("sku", "model", "part", "product"),
    IP_ADDRESS: ("version", "ver", "v", "build", "release", "firmware", "fw", "rev", "revision", "oid"),
    DATE_OF_BIRTH: (
        "created",
        "updated",
        "modified",
        "expires",
        "expiry",
        "due",
        "delivered",
        "shipped",
        "ordered",
        "issued",
        "valid",
        "since",
        "until",
        "date of service",
        "appointment",
        "invoice",
    ),
}


def _keyword_table() -> tuple[tuple[str, ...], tuple[dict[str, int], ...]]:
    """Every keyword once, with what it says about each detector (+1 announces, -1 look-alike)."""
    says: dict[str, dict[str, int]] = {}
    for polarity, table in ((1, _POSITIVE_WORDS), (-1, _NEGATIVE_WORDS)):
        for detector, words in table.items():
            for w in words:
                if not w.isascii() or w != w.lower():
                    raise ValueError(f"context keyword {w!r} must be lower-case ASCII")
                if says.setdefault(w, {}).setdefault(detector, polarity) != polarity:
                    raise ValueError(f"context keyword {w!r} both announces and denies {detector}")
    words = tuple(sorted(says))
    return words, tuple(says[w] for w in words)


# The engine finds every keyword in the same pass as the candidates (``_engine``): keyword ``i``
# is ``KEYWORDS[i]``, whole words only — not after a letter or digit, and followed by a character
# that is not a letter (case-insensitive, ASCII).
KEYWORDS, KEYWORD_SAYS = _keyword_table()

Hit = tuple[int, int, int]  # (start, end, keyword index), sorted by start then end
# What each keyword says about one detector, indexed by keyword: 1, -1 or 0 (nothing).
_SAYS: dict[str, tuple[int, ...]] = {
    d: tuple(says.get(d, 0) for says in KEYWORD_SAYS) for d in set(_POSITIVE_WORDS) | set(_NEGATIVE_WORDS)
}
_SAYS_NOTHING = (0,) * len(KEYWORDS)


def word_context(detector: str, text: str, start: int, floor: int, hits: list[Hit], hit_starts: list[int]) -> int:
    """+1 if the nearest keyword before ``start`` announces ``detector``, -1 for a look-alike word, else 0.

    Only keywords that end by ``start`` and start within ``WINDOW`` characters before it and
    after ``floor`` (the start of the value) count, and only within the candidate's sentence: a
    break (``. ``, ``; ``, a line break) between the keyword and the candidate voids it.  The
    nearest is the one that starts last (the longest of those starting there).  ``hits`` are
    the keyword matches of the whole text, ``hit_starts`` their starts (for bisection).
    """
    i = bisect.bisect_left(hit_starts, start)  # hits starting before ``start``
    lo = start - WINDOW
    if lo < floor:
        lo = floor
    says_of = _SAYS.get(detector, _SAYS_NOTHING)
    while i:
        i -= 1
        h_start, h_end, kw = hits[i]
        if h_start < lo:
            return 0
        says = says_of[kw]
        if says and h_end <= start:
            if text.find(". ", h_end, start) >= 0 or text.find("; ", h_end, start) >= 0 or "\n" in text[h_end:start]:
                return 0  # another sentence (and so is every keyword before this one)
            return says
    return 0


# --- key names -------------------------------------------------------------------------------

_KEY_TYPES: dict[str, str] = {}
for _type, _keys in (
    (EMAIL, "email emailaddress mail contactemail useremail customeremail"),
    (PHONE, "phone phonenumber telephone tel mobile mobilephone mobilenumber cell cellphone fax msisdn"),
    (SSN, "ssn socialsecuritynumber socialsecurity socialsecurityno"),
    (CREDIT_CARD, "cardnumber creditcard creditcardnumber ccnumber cc pan cardno"),
    (IBAN, "iban bankaccount ibannumber"),
    (IP_ADDRESS, "ip ipaddress clientip remoteip remoteaddr remoteaddress sourceip srcip xforwardedfor userip"),
    (DATE_OF_BIRTH, "dob dateofbirth birthdate birthday birthdt geburtsdatum bday"),
    (
        SECRET,
        "password passwd pwd secret apikey apitoken token accesstoken refreshtoken authtoken clientsecret "
        "privatekey secretkey authorization awssecretaccesskey sessiontoken",
    ),
    (
        NAME,
        "fullname firstname lastname surname givenname familyname middlename forename maidenname "
        "cardholdername nameoncard accountholdername customername patientname contactname",
    ),
    (
        ADDRESS,
        "address streetaddress street addressline1 addressline2 addressline addr homeaddress mailingaddress "
        "postaladdress billingaddress shippingaddress residentialaddress",
    ),
):
    for _k in _keys.split():
        _KEY_TYPES[_k] = _type

# Suffixes that carry the type in compound keys (``billing_email``, ``customer_phone``).
_KEY_SUFFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        (
            ("email", EMAIL),
            ("phone", PHONE),
            ("phonenumber", PHONE),
            ("mobile", PHONE),
            ("ssn", SSN),
            ("iban", IBAN),
            ("ipaddress", IP_ADDRESS),
            ("dateofbirth", DATE_OF_BIRTH),
            ("birthdate", DATE_OF_BIRTH),
            ("password", SECRET),
            ("apikey", SECRET),
            ("secret", SECRET),
            ("accesstoken", SECRET),
            ("fullname", NAME),
            ("firstname", NAME),
            ("lastname", NAME),
            ("address", ADDRESS),
            ("cardnumber", CREDIT_CARD),
        ),
        key=lambda kv: len(kv[0]),
        reverse=True,
    )
)
# Compound keys ending in "address" that are not postal addresses.
_NOT_ADDRESS = frozenset(
    [
        "macaddress",
        "webaddress",
        "walletaddress",
        "contractaddress",
        "serveraddress",
        "bindaddress",
        "listenaddress",
        "hostaddress",
        "emailaddress",
        "ipaddress",
        "remoteaddress",
    ]
)
# Parents under which a bare ``name`` is a person's name.
_PERSON_PARENTS = frozenset(
    [
        "customer",
        "user",
        "patient",
        "person",
        "contact",
        "employee",
        "client",
        "recipient",
        "sender",
        "owner",
        "holder",
        "accountholder",
        "cardholder",
        "member",
        "applicant",
        "buyer",
        "requester",
        "reporter",
        "author",
        "assignee",
        "passenger",
        "guest",
        "student",
        "beneficiary",
        "payee",
        "payer",
        "profile",
        "billing",
        "shipping",
        "billto",
        "shipto",
        "consignee",
        "driver",
        "traveler",
        "traveller",
        "subscriber",
        "caller",
    ]
)
_NEGATIVE_KEY_PARTS = (
    "order",
    "invoice",
    "tracking",
    "sku",
    "version",
    "uuid",
    "guid",
    "hash",
    "checksum",
    "sha",
    "md5",
    "timestamp",
    "createdat",
    "updatedat",
    "modifiedat",
    "reference",
    "serial",
    "build",
    "price",
    "amount",
    "total",
    "epoch",
    "isbn",
    "ean",
    "upc",
    "requestid",
    "traceid",
    "spanid",
    "etag",
    "nonce",
)


_NORMALIZED: dict[str, str] = {}


def normalize_key(key: str) -> str:
    """Lower-case letters and digits only: ``Date_Of-Birth`` → ``dateofbirth`` (memoised: keys repeat)."""
    norm = _NORMALIZED.get(key)
    if norm is None:
        if len(_NORMALIZED) > 8192:
            _NORMALIZED.clear()
        # Compatibility forms fold first, so a full-width ``ssn`` key (U+FF53…) is ``ssn`` (docs/security.md).
        folded = key if key.isascii() else unicodedata.normalize("NFKC", key)
        norm = _NORMALIZED[key] = "".join(ch for ch in folded.lower() if ch.isalnum())
    return norm


@dataclass(frozen=True, slots=True)
class KeyHint:
    """What the key holding a value says about it: the type it announces, and look-alike territory."""

    type: str | None = None
    negative: bool = False
    version: bool = False


NO_HINT = KeyHint()
_HINT_CACHE: dict[tuple[str, str], KeyHint] = {}


def key_hint(key: str, parent: str = "") -> KeyHint:
    """The :class:`KeyHint` of a value held under ``key``, whose container is held under ``parent``."""
    cached = _HINT_CACHE.get((key, parent))
    if cached is not None:
        return cached
    hint = _compute_hint(normalize_key(key), normalize_key(parent))
    if len(_HINT_CACHE) > 4096:
        _HINT_CACHE.clear()
    _HINT_CACHE[(key, parent)] = hint
    return hint


def _compute_hint(k: str, parent: str) -> KeyHint:
    version = "version" in k
    found = _KEY_TYPES.get(k)
    if found is None and k == "name" and (parent in _PERSON_PARENTS or parent.rstrip("s") in _PERSON_PARENTS):
        found = NAME
    if found is None and k not in _NOT_ADDRESS:
        for suffix, typ in _KEY_SUFFIXES:
            if k.endswith(suffix):
                found = typ
                break
    if found is None and k in ("ipaddress", "remoteaddress"):
        found = IP_ADDRESS
    if found is None and k == "emailaddress":
        found = EMAIL
    negative = found is None and any(part in k for part in _NEGATIVE_KEY_PARTS)
    if found is None and (k.endswith("id") or k.endswith("number") or k.endswith("no")) and len(k) > 2:
        negative = True
    return KeyHint(found, negative, version)


def native_tables() -> dict[str, object]:
    """What the compiled core (dlp/native/src/context.rs) reads: the window, the shifts, and
    what each keyword (in ``KEYWORDS`` order, the engine's keyword indexes) says per detector."""
    return {
        "window": WINDOW,
        "positive_boost": POSITIVE_BOOST,
        "negative_penalty": NEGATIVE_PENALTY,
        "key_match_confidence": KEY_MATCH_CONFIDENCE,
        "says": {detector: list(says) for detector, says in _SAYS.items()},
    }
