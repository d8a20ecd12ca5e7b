"""Body tricks, end to end through real Envoy.

Aegis judges the body bytes the upstream will receive: Envoy buffers the whole body before
Check (chunked or not, however it is split into packets) and refuses what it cannot forward
whole (413).  Anything two JSON parsers could read differently is refused with a 400:
duplicate keys (also differing only in case), non-finite or inexact numbers, integers
beyond 2^53, charsets other than UTF-8, content types the tool does not take.

Refunds: amount <= 50 allowed, 50 < amount <= 500 needs approval (202), > 500 denied.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass

import pytest
from helpers import Gateway

from bypass.wire import REFUND_20, Closed, Expect, Reach, Refused, build, check, exchange, send

pytestmark = pytest.mark.e2e

ALLOWED = Reach("payments.demo", "/v1/refunds", "payments.refund")
MALFORMED = Refused(400, "malformed_body")
INVALID_ARG = Refused(400, "invalid_argument")
OVER_LIMIT = Refused(403, "refund-over-limit")
NEEDS_APPROVAL = Refused(202, "refund-needs-approval")
NOT_POSITIVE = Refused(403, "refund-not-positive")


def refund_body(amount: str) -> bytes:
    """A refund with ``amount`` spliced in as raw JSON text."""
    return b'{"amount": ' + amount.encode() + b', "currency": "USD", "customer_id": "c-1"}'


@dataclass(frozen=True)
class Body:
    body: bytes
    content_type: str | None = "application/json"
    host: str = "payments.demo"
    target: str = "/v1/refunds"
    headers: tuple[tuple[str, str], ...] = ()


def run(gateway: Gateway, attempt: Body, expect: Expect) -> None:
    data = build(
        "POST",
        attempt.target,
        attempt.host,
        token=gateway.token(),
        body=attempt.body,
        content_type=attempt.content_type,
        headers=attempt.headers,
    )
    response = send(gateway, data)
    record = check(gateway, response, expect, log=False)
    if record is not None:
        # What was judged is what was sent: the very bytes, not a re-serialisation.
        assert record["body"].encode() == attempt.body


# --- JSON: keys ------------------------------------------------------------------------------

KEY_CASES: list[tuple[str, Body, Expect]] = [
    ("duplicate-key-last-wins-elsewhere", Body(b'{"amount": 10, "amount": 1000}'), MALFORMED),
    ("duplicate-key-first-wins-elsewhere", Body(b'{"amount": 1000, "amount": 10}'), MALFORMED),
    ("duplicate-key-unicode-escape", Body(b'{"amount": 10, "\\u0061mount": 1000}'), MALFORMED),
    ("duplicate-key-nested", Body(b'{"amount": 10, "meta": {"k": 1, "k": 2}}'), MALFORMED),
    ("duplicate-key-differing-in-case", Body(b'{"amount": 10, "AMOUNT": 1000}'), MALFORMED),
    ("duplicate-key-kelvin-sign", Body(b'{"amount": 10, "meta": {"k": 1, "\\u212a": 2}}'), MALFORMED),
    ("declared-arg-only-in-other-case", Body(b'{"AMOUNT": 1000, "currency": "USD"}'), INVALID_ARG),
    ("declared-arg-other-case-beside-it", Body(b'{"amount": 10, "Currency": "EUR"}'), INVALID_ARG),
    (
        "argument-in-query-and-body",
        Body(refund_body("20"), target="/v1/refunds?amount=900"),
        Refused(400, "ambiguous_argument"),
    ),
    ("argument-only-in-query", Body(b'{"currency": "USD"}', target="/v1/refunds?amount=20"), INVALID_ARG),
]


@pytest.mark.parametrize(("attempt", "expect"), [c[1:] for c in KEY_CASES], ids=[c[0] for c in KEY_CASES])
def test_json_key_trick(gateway: Gateway, attempt: Body, expect: Expect):
    run(gateway, attempt, expect)


# --- JSON: numbers ---------------------------------------------------------------------------

NUMBER_CASES: list[tuple[str, str, Expect]] = [
    ("plain-allowed", "20", ALLOWED),
    ("number-as-string", '"1000"', INVALID_ARG),
    ("small-number-as-string", '"20"', INVALID_ARG),
    ("exponent-1e3", "1e3", OVER_LIMIT),
    ("exponent-1E3-upper", "1E3", OVER_LIMIT),
    ("exponent-allowed-5e1", "5e1", ALLOWED),
    ("exponent-fraction-0.5e2", "0.5e2", ALLOWED),
    ("exponent-negative-1200e-1", "1200e-1", NEEDS_APPROVAL),
    ("trailing-zeros-120.000", "120.000", NEEDS_APPROVAL),
    ("trailing-zeros-50.000", "50.000", ALLOWED),
    ("just-over-the-limit-50.01", "50.01", NEEDS_APPROVAL),
    ("more-precise-than-double", "50.0000000000000001", MALFORMED),
    ("underflows-to-zero", "1e-400", MALFORMED),
    ("huge-finite", "1e300", OVER_LIMIT),
    ("overflows-to-infinity", "1e400", MALFORMED),
    ("overflows-to-minus-infinity", "-1e400", MALFORMED),
    ("largest-safe-integer", "9007199254740991", OVER_LIMIT),
    ("integer-beyond-2-53", "9007199254740993", MALFORMED),
    ("integer-of-5000-digits", "1" + "0" * 5000, MALFORMED),
    # Every parser reads -1000 as -1000: the policy decides (the starter policy denies
    # amounts <= 0, rule refund-not-positive).
    ("negative-zero", "-0", NOT_POSITIVE),
    ("negative-denied-by-policy", "-1000", NOT_POSITIVE),
    ("nan-literal", "NaN", MALFORMED),
    ("infinity-literal", "Infinity", MALFORMED),
    ("minus-infinity-literal", "-Infinity", MALFORMED),
    ("nan-as-string", '"NaN"', INVALID_ARG),
    ("boolean", "true", INVALID_ARG),
    ("null", "null", INVALID_ARG),
    ("array", "[900]", INVALID_ARG),
    ("object", '{"value": 900}', INVALID_ARG),
    ("leading-plus", "+900", MALFORMED),
    ("leading-zero", "0900", MALFORMED),
    ("hex", "0x384", MALFORMED),
]


@pytest.mark.parametrize(("amount", "expect"), [c[1:] for c in NUMBER_CASES], ids=[c[0] for c in NUMBER_CASES])
def test_json_number_trick(gateway: Gateway, amount: str, expect: Expect):
    run(gateway, Body(refund_body(amount)), expect)


# --- content type, charset, encoding ------------------------------------------------------------

JSON_900 = refund_body("900")
JSON_20 = refund_body("20")
# UTF-7 "+AC0-" is "-": a UTF-7 reader would see the SSN 123-45-6789 that DLP never saw.
UTF7_SSN = b'{"channel": "#support", "text": "ssn 123+AC0-45+AC0-6789"}'

CONTENT_CASES: list[tuple[str, Body, Expect]] = [
    ("json-as-text-plain", Body(JSON_900, "text/plain"), MALFORMED),
    ("json-without-content-type", Body(JSON_900, None), MALFORMED),
    ("json-as-form", Body(JSON_900, "application/x-www-form-urlencoded"), MALFORMED),
    ("form-body-to-json-tool", Body(b"amount=900&currency=USD", "application/x-www-form-urlencoded"), MALFORMED),
    ("multipart-to-json-tool", Body(b"--x\r\n\r\n900\r\n--x--", "multipart/form-data; boundary=x"), MALFORMED),
    ("two-content-types", Body(JSON_900, "application/json, text/plain"), MALFORMED),
    ("content-type-uppercase", Body(JSON_20, "APPLICATION/JSON"), ALLOWED),
    ("structured-suffix-json", Body(JSON_20, "application/vnd.refund+json"), ALLOWED),
    ("charset-utf8-explicit", Body(JSON_20, "application/json; charset=utf-8"), ALLOWED),
    ("charset-utf8-quoted", Body(JSON_20, 'application/json; charset="UTF-8"'), ALLOWED),
    ("charset-utf16-body", Body('{"amount": 900}'.encode("utf-16"), "application/json; charset=utf-16"), MALFORMED),
    ("charset-utf16-declared-ascii-body", Body(JSON_20, "application/json; charset=utf-16"), MALFORMED),
    ("charset-latin1-declared", Body(JSON_20, "application/json; charset=iso-8859-1"), MALFORMED),
    (
        "charset-latin1-body",
        Body('{"amount": 20, "customer_id": "c-\xe9"}'.encode("latin-1"), "application/json; charset=latin-1"),
        MALFORMED,
    ),
    (
        "charset-utf7-smuggles-ssn-past-dlp",
        Body(UTF7_SSN, "application/json; charset=utf-7", "slack.demo", "/api/chat.postMessage"),
        MALFORMED,
    ),
    ("utf8-bom", Body(b"\xef\xbb\xbf" + JSON_20), MALFORMED),
    ("invalid-utf8", Body(b'{"amount": 900, "customer_id": "\xff"}'), MALFORMED),
    ("gzip-content-encoding", Body(gzip.compress(JSON_900), headers=(("Content-Encoding", "gzip"),)), MALFORMED),
    ("json-array-body", Body(b"[900]"), MALFORMED),
    ("nested-too-deep", Body(b'{"amount": 20, "x": ' + b"[" * 40 + b"]" * 40 + b"}"), MALFORMED),
    ("method-in-json-body", Body(b'{"amount": 20, "_method": "DELETE"}'), Refused(400, "ambiguous_request")),
]


@pytest.mark.parametrize(("attempt", "expect"), [c[1:] for c in CONTENT_CASES], ids=[c[0] for c in CONTENT_CASES])
def test_content_type_and_charset_trick(gateway: Gateway, attempt: Body, expect: Expect):
    run(gateway, attempt, expect)


# --- framing: chunked, split packets, smuggling ---------------------------------------------------


def _head(extra: str = "", token: str = "") -> bytes:
    return (
        "POST /v1/refunds HTTP/1.1\r\nHost: payments.demo\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


def _chunked(token: str, body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return build("POST", "/v1/refunds", "payments.demo", token=token, chunks=chunks)


def _split(token: str, body: bytes, at: int) -> list[bytes]:
    data = build("POST", "/v1/refunds", "payments.demo", token=token, body=body)
    cut = len(data) - len(body) + at
    return [data[:cut], data[cut:]]


FRAMING_CASES = [
    # (id, build(token) -> bytes or list of writes, expect, body the tool must receive)
    ("chunked-allowed", lambda t: _chunked(t, JSON_20, 10), ALLOWED, JSON_20),
    ("chunked-one-byte-chunks-denied", lambda t: _chunked(t, JSON_900, 1), OVER_LIMIT, None),
    ("chunked-number-split-across-chunks", lambda t: _chunked(t, JSON_900, 12), OVER_LIMIT, None),
    (
        "chunked-with-extensions-and-trailer",
        lambda t: (
            _head("Transfer-Encoding: chunked\r\n", t)
            + f"{len(JSON_900):x};ext=1\r\n".encode()
            + JSON_900
            + b"\r\n0\r\nx-trailer: 1\r\n\r\n"
        ),
        OVER_LIMIT,
        None,
    ),
    ("split-packets-mid-number", lambda t: _split(t, JSON_900, 12), OVER_LIMIT, None),
    ("split-packets-allowed", lambda t: _split(t, JSON_20, 5), ALLOWED, JSON_20),
    (
        "content-length-and-chunked",
        lambda t: _head(f"Content-Length: {len(JSON_20)}\r\nTransfer-Encoding: chunked\r\n", t) + JSON_900,
        Closed(),
        None,
    ),
    (
        "two-content-lengths",
        lambda t: _head(f"Content-Length: {len(JSON_20)}\r\nContent-Length: 5\r\n", t) + JSON_20,
        Closed(),
        None,
    ),
    (
        "transfer-encoding-chunked-identity",
        lambda t: _head("Transfer-Encoding: chunked, identity\r\n", t) + b"0\r\n\r\n",
        Closed(501),
        None,
    ),
    (
        "transfer-encoding-obfuscated",
        lambda t: _head("Transfer-Encoding: xchunked\r\n", t) + JSON_900,
        Closed(501),
        None,
    ),
    ("transfer-encoding-identity", lambda t: _head("Transfer-Encoding: identity\r\n", t) + JSON_900, Closed(501), None),
    (
        "expect-100-continue",
        lambda t: build(
            "POST", "/v1/refunds", "payments.demo", token=t, body=JSON_900, headers=(("Expect", "100-continue"),)
        ),
        OVER_LIMIT,
        None,
    ),
]


@pytest.mark.parametrize(
    ("make", "expect", "delivered"), [c[1:] for c in FRAMING_CASES], ids=[c[0] for c in FRAMING_CASES]
)
def test_framing_trick(gateway: Gateway, make, expect: Expect, delivered: bytes | None):
    response = send(gateway, make(gateway.token()), pause_s=0.2)
    record = check(gateway, response, expect, log=False)
    if delivered is not None:
        assert record is not None and record["body"].encode() == delivered


def test_pipelined_second_request_is_judged_on_its_own(gateway: Gateway):
    token = gateway.token()
    first = build("POST", "/v1/refunds", "payments.demo", token=token, body=JSON_20, close=False)
    second = build("POST", "/v1/refunds", "payments.demo", token=token, body=JSON_900)
    responses = exchange(gateway, first + second, responses=2)
    assert [(r.status, r.code) for r in responses] == [(200, None), (403, "refund-over-limit")]
    received = gateway.received("payments.demo")
    assert [r["body"].encode() for r in received] == [JSON_20]


def test_smuggled_request_inside_a_body_is_not_a_request(gateway: Gateway):
    # A whole second request hidden in the first one's body (Content-Length covers it): the
    # tool receives one refund whose body is that text; Aegis refused it as malformed JSON.
    token = gateway.token()
    hidden = build("POST", "/v1/refunds", "payments.demo", token=token, body=JSON_900)
    response = send(gateway, build("POST", "/v1/refunds", "payments.demo", token=token, body=JSON_20 + hidden))
    check(gateway, response, MALFORMED, log=False)


# --- size limit ------------------------------------------------------------------------------


def _padded(amount: int, size: int) -> bytes:
    # Padding in strings of 100 000 characters: one string may hold at most
    # request_limits.MAX_STRING_CHARS (a 413 of its own, tests/fuzz/test_request_limits.py).
    base = {**REFUND_20, "amount": amount, **{f"pad{i}": "x" * 100_000 for i in range(size // 100_000)}, "note": ""}
    base["note"] = "x" * (size - len(json.dumps(base).encode()))
    body = json.dumps(base).encode()
    assert len(body) == size
    return body


# Envoy refuses these itself, before Check, in Aegis's JSON shape (local_reply_config).
ENVOY_TOO_LARGE = Refused(413, "body_too_large")

SIZE_CASES = [
    # (id, amount, size relative to the limit, chunked, expect)
    ("at-limit-judged-allowed", 20, 0, False, ALLOWED),
    ("at-limit-judged-denied", 900, 0, False, OVER_LIMIT),
    ("one-byte-over", 20, 1, False, ENVOY_TOO_LARGE),
    ("far-over", 20, 64 * 1024, False, ENVOY_TOO_LARGE),
    ("chunked-over", 20, 1, True, ENVOY_TOO_LARGE),
    ("chunked-at-limit-denied", 900, 0, True, OVER_LIMIT),
]


@pytest.mark.parametrize(
    ("amount", "extra", "chunked", "expect"), [c[1:] for c in SIZE_CASES], ids=[c[0] for c in SIZE_CASES]
)
def test_body_size_limit(gateway: Gateway, amount: int, extra: int, chunked: bool, expect: Expect):
    body = _padded(amount, gateway.config.envoy.max_request_bytes + extra)
    token = gateway.token()
    if chunked:
        data = build("POST", "/v1/refunds", "payments.demo", token=token, chunks=[body[:70000], body[70000:]])
    else:
        data = build("POST", "/v1/refunds", "payments.demo", token=token, body=body)
    record = check(gateway, send(gateway, data), expect, log=False)
    if record is not None:
        assert len(record["body"]) == len(body)
