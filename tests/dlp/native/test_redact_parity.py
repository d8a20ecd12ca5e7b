"""The compiled core and the Python implementation redact alike: same findings, same document.

Every case runs ``dlp.redact`` twice, once with the core and once with it switched off, and
compares the redactions (type, location, offsets, reason), the counts, and the redacted
document.  Bodies are compared parsed: the core copies number literals as written where the
Python path re-encodes them (``1e3`` → ``1000.0``); with no number literal changed, bytes too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlp
from bench.dlp.corpus import generate
from bench.dlp.payload import ticket_bytes
from bench.ticket import ticket_json
from dlp import _native

if _native.core() is None:
    pytest.skip("the compiled core (aegis_dlp_native) is not installed", allow_module_level=True)

HASH_KEY = b"k" * 32
OBLIGATIONS = {
    "all-mask": dlp.Obligations(detectors=("ALL",)),
    "all-partial": dlp.Obligations(detectors=("ALL",), mode="partial"),
    "all-hash": dlp.Obligations(detectors=("ALL",), mode="hash", hash_key=HASH_KEY),
    "fields-and-some": dlp.Obligations(
        fields=("full_name", "email", "ssn", "dob", "address", "amount"), detectors=("SSN", "CREDIT_CARD", "EMAIL")
    ),
    "strict-thresholds": dlp.Obligations(detectors=("ALL",), thresholds=(("PHONE", 0.9), ("DATE_OF_BIRTH", 0.95))),
    "lenient-thresholds": dlp.Obligations(
        detectors=("ALL",), thresholds=(("SSN", 0.1), ("PHONE", 0.2), ("IP_ADDRESS", 0.1))
    ),
}


def both(body: bytes, content_type: str, obligations: dlp.Obligations) -> tuple[Any, Any]:
    native = _outcome(body, content_type, obligations)
    saved = _native.core
    _native.core = lambda: None  # type: ignore[assignment]
    try:
        python = _outcome(body, content_type, obligations)
    finally:
        _native.core = saved  # type: ignore[assignment]
    return native, python


def _outcome(body: bytes, content_type: str, obligations: dlp.Obligations) -> Any:
    try:
        r = dlp.redact(body, content_type, obligations)
    except dlp.DlpError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", r.changed, r.counts, r.findings, r.body)


def assert_same(body: bytes, content_type: str, obligations: dlp.Obligations) -> None:
    native, python = both(body, content_type, obligations)
    if native[0] == "error" or python[0] == "error":
        assert native == python
        return
    assert native[:4] == python[:4]
    if native[4] != python[4]:
        if content_type == "application/json":
            assert json.loads(native[4]) == json.loads(python[4])
        elif content_type == "application/x-ndjson":
            lines = zip(native[4].split(b"\n"), python[4].split(b"\n"), strict=True)
            assert all(a == b or json.loads(a) == json.loads(b) for a, b in lines)
        else:
            assert native[4] == python[4]


CORPUS = generate(600, 7)


@pytest.mark.parametrize("name", sorted(OBLIGATIONS))
def test_corpus_json_samples_redact_alike(name: str) -> None:
    for sample in CORPUS:
        if sample["kind"] == "json":
            assert_same(sample["text"].encode(), "application/json", OBLIGATIONS[name])


@pytest.mark.parametrize("name", sorted(OBLIGATIONS))
def test_corpus_text_samples_redact_alike(name: str) -> None:
    for sample in CORPUS:
        if sample["kind"] == "text":
            assert_same(sample["text"].encode(), "text/plain", OBLIGATIONS[name])
            assert_same(json.dumps({"note": sample["text"]}).encode(), "application/json", OBLIGATIONS[name])


def test_bench_payloads_redact_alike() -> None:
    for ob in OBLIGATIONS.values():
        assert_same(ticket_json().encode(), "application/json", ob)
        for i in range(20):
            assert_same(ticket_bytes(i), "application/json", ob)


def test_scan_finds_alike() -> None:
    for sample in CORPUS:
        native = dlp.scan(sample["text"])
        saved = _native.core
        _native.core = lambda: None  # type: ignore[assignment]
        try:
            python = dlp.scan(sample["text"])
        finally:
            _native.core = saved  # type: ignore[assignment]
        assert native == python


EDGE_BODIES = [
    b'{"a": 1, "a": 2}',  # duplicate keys: the Python path's precise error
    b'{"amount": 1e400, "email": "a@example.com"}',
    b'{"n": 123456789012345678901234567890, "email": "a@example.com"}',
    b'{"s": "\\ud800 lone", "email": "a@example.com"}',
    b'{"s": "\\ud83d\\ude00 pair a@example.com"}',
    b'{"t": "tab\\there \\u00e9 \\/ a@example.com \\u0001"}',
    b"[" * 600 + b"]" * 600,
    b'"just a string with 078-05-1121 and a@example.com"',
    b"123",
    b"",
    b'  {  "email" :  "jane@example.com" , "n": [1, 2.50, -0, 1E3] }  ',
    b'{"ssn": 123456789, "dob": null, "full_name": {"first": "Jane", "last": ["Doe", 7, true]}}',
    b'{"card": "4111 1111 1111 1111", "note": "[REDACTED:EMAIL] and [SSN:0123456789ab]"}',
    b'{"k\\u00e9y": "jane@example.com", "a b": {"c-d": "+1 212-555-0199"}, "": "x@y.de"}',
    b'{"ip": "10.0.0.1", "version": "1.2.3.4", "order_id": "4111111111111111"}',
    b'{"items": [{"phone": "0301234567"}, ["jane@example.com"]]}',
    '{"de": "Geburtsdatum: 3. März 1980, Tel. 030 12345678, ＡＢＣ ０７８-０５-１１２１"}'.encode(),
    '{"zw": "078\u200b-05-1121 und 4111\u200d1111 1111 1111"}'.encode(),
    b"{not json",
    b'{"a": tru}',
]


@pytest.mark.parametrize("body", EDGE_BODIES, ids=range(len(EDGE_BODIES)))
def test_edge_documents_redact_alike(body: bytes) -> None:
    for ob in OBLIGATIONS.values():
        assert_same(body, "application/json", ob)
        assert_same(body.replace(b"\n", b" ") + b"\n" + body, "application/x-ndjson", ob)


PII = st.sampled_from(
    [
        "jane.doe@example.com",
        "+1 212-555-0199",
        "078-05-1121",
        "123-45-6789",
        "4111 1111 1111 1111",
        "5555555555554444",
        "DE89 3704 0044 0532 0130 00",
        "BE68 5390 0754 7034",  # stdnum's country modules check BE, ES and NO IBANs too
        "ES91 2100 0418 4502 0005 1332",
        "NO93 8601 1117 947",
        "BE69 5390 0754 7034",
        "192.168.0.1",
        "2001:db8::1",
        "born 1980-03-14",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a" * 36,
        "order 2125550123",
        "v1.2.3.4",
        "030 12345678",
    ]
)
TEXT = st.lists(st.one_of(PII, st.text(alphabet=" -./:0123456789abcdeéß@_\"'", max_size=12)), max_size=8).map(" ".join)
KEYS = st.sampled_from(["email", "phone", "note", "ssn", "order_id", "dob", "full_name", "x", "version", "name"])
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=JSON, name=st.sampled_from(sorted(OBLIGATIONS)))
def test_generated_documents_redact_alike(doc: Any, name: str) -> None:
    assert_same(json.dumps(doc).encode(), "application/json", OBLIGATIONS[name])


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_generated_texts_redact_alike(text: str) -> None:
    assert_same(text.encode(), "text/plain", OBLIGATIONS["all-mask"])
