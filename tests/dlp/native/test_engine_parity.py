"""The compiled engine (dlp/native/src/engine.rs) gives exactly what ``dlp._engine.scan_text``
gives with Hyperscan: the same candidates and keyword hits, in UTF-8 byte offsets."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

native = pytest.importorskip("aegis_dlp_native")

from dlp import _engine  # noqa: E402
from dlp._context import KEYWORDS  # noqa: E402
from dlp._normalize import detection_view  # noqa: E402
from dlp._patterns import PATTERNS  # noqa: E402
from dlp._scan import SEPARATOR  # noqa: E402

if _engine.ENGINE != "hyperscan":
    pytest.skip("the reference is the Hyperscan engine", allow_module_level=True)

ENGINE = native.Engine(json.dumps(_engine.native_tables()))
# Caches so small that they are cleared all the time: the walks' fallbacks.
TINY = native.Engine(json.dumps(_engine.native_tables()), (0, 0))

Scan = tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]


def expected(text: str) -> Scan:
    """``scan_text(text)`` with character offsets turned into UTF-8 byte offsets."""
    cands, hits = _engine.scan_text(text)
    if text.isascii():
        return list(cands), list(hits)
    at = [0]
    for ch in text:
        at.append(at[-1] + len(ch.encode("utf-8", "surrogatepass")))
    return [(p, at[s], at[e]) for p, s, e in cands], [(at[s], at[e], k) for s, e, k in hits]


def check(text: str, *, nfa: bool = False, tiny: bool = False) -> None:
    want = expected(text)
    got = ENGINE.scan(text)
    assert (got[0], got[1]) == want, text[:200]
    if nfa:  # the lazy DFAs' fallback, the NFA simulation, gives the same
        got = ENGINE.scan_nfa(text)
        assert (got[0], got[1]) == want, text[:200]
    if tiny:
        got = TINY.scan(text)
        assert (got[0], got[1]) == want, text[:200]


def leaves(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield k
            yield from leaves(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from leaves(v)
    elif isinstance(doc, str):
        yield doc


def forms(doc_text: str) -> Iterator[str]:
    """A JSON document's text, each string (keys too), and what ``scan_segments`` scans."""
    yield doc_text
    doc = json.loads(doc_text)
    values = [v for v in leaves(doc)]
    yield from values
    joined = SEPARATOR.join(values)
    yield joined
    view = detection_view(joined)[0]
    if view != joined:
        yield view


# --- the corpus and the bench payloads ----------------------------------------------------------


@functools.cache
def corpus_texts() -> list[str]:
    from bench.dlp.corpus import generate

    out: list[str] = []
    for sample in generate(1500, 20240318):
        if sample["kind"] == "json":
            out.extend(forms(sample["text"]))
        else:
            out.append(sample["text"])
    return out


def test_corpus() -> None:
    texts = corpus_texts()
    assert len(texts) > 3000
    for text in texts:
        check(text)


def test_corpus_nfa_fallback() -> None:
    for text in corpus_texts()[:400]:
        check(text, nfa=True, tiny=True)


def test_bench_payloads() -> None:
    from bench.dlp.payload import ticket_bytes
    from bench.ticket import ticket_json

    docs = [ticket_json()] + [ticket_bytes(i).decode() for i in range(40)]
    for doc in docs:
        for text in forms(doc):
            check(text, nfa=len(text) < 4000, tiny=True)


# --- non-ASCII ----------------------------------------------------------------------------------

NON_ASCII = [
    "Geburtsdatum: 12. März 1984, Telefon +49 30 1234567 – Straße 5",
    "geboren am 3. märz 1990 in München; E-Mail: jürgen.müller@example.de",
    "Geb. 1. MÄRZ 1990 und 1. maerz 1990 und 1 Märzchen 1990",
    "Kreditkarte ４１１１ １１１１ １１１１ １１１１ (full-width) and 4111 1111 1111 1111",
    "１２３-４５-６７８９ vs 123-45-6789",
    "😀4111111111111111😀 and 😀jane@example.com😀 and 😀192.168.0.1😀",
    "é" * 3 + " jane@example.com " + "漢字" + " 4111111111111111",
    "ssn:123-45-6789€ phone→+1 415-555-0142← iban DE89370400440532013000…",
    "tél: 06 12 34 56 78 · né le 12/03/1984 · carte 4111-1111-1111-1111",
    "Ä@b.de é@x.com ü.ü@example.com a@é.com x@example.cöm",
    "token=☃abcdef123 password:'ß12345678' api_key=abcdefghij😀",
    "AKIAABCDEFGHIJKLMNOP😀 ghp_" + "a" * 36 + "é eyJabcd.eyJabcdef.sig€",
    "fe80::1ff:fe23:4567:890a€ 2001:db8::ff00:42:8329😀 ::1",
    "\u200b4111\u200b1111 1111 1111 \ufeffSSN 123 45 6789",
    "date of birth：1984-07-12，dob 12.07.1984。",
    "Ω 00 44 20 7946 0958 Ω (020) 7946 0958 Ω 020-7946-0958",
    "\x00".join(["jane@example.com", "ümlaut 4111111111111111", "", "dob 1984-07-12"]),
]


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii(text: str) -> None:
    check(text, nfa=True, tiny=True)


# --- adversarial runs: the same answers ------------------------------------------------------------
# No timing assertion (the machine is shared): linear time comes from the engine (finite automata;
# each reverse search for a start stops within the longest match of a bounded pattern).

RUNS = {
    "digits": "0123456789",
    "a@": "a@",
    "dotted": "1.1.1.",
    "hex-colon": "dead:beef:",
    "hex": "0123456789abcdef",
    "colon-hex": "1:a:",
    "spaced-digits": "1 ",
    "dashed-digits": "12-",
    "letters": "abcdefghij",
    "word-digits": "DE89 ",
    "assign": "token=",
    "jwt": "eyJhbGci.",
    "email-ish": "a.b-c@d.e",
    "keyword": "phone ",
}


def _run(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_adversarial_runs(name: str) -> None:
    check(_run(RUNS[name], 100_000))


# --- hand-picked edges ------------------------------------------------------------------------------

EDGES = [
    "",
    "a",
    "@",
    "@a",
    "x@a",
    "v1",
    "v 1",
    "version",
    "Phone:+1 415-555-0142",
    "PHONE\x00415-555-0142",
    "cc 4111111111111111 1234",
    "4111 1111 1111 1111 1111 1111",
    "+44 (0)20 7946 0958",
    "0044 20 7946 0958 x",
    "1.2.3.4.5.6.7.8",
    "::",
    ":::::",
    "a::b::c",
    "fe80::",
    "1:2:3:4:5:6:7:8:9:10",
    "api_key=",
    "api_key=abc",
    "my.api-key: 'abcdefghijk'",
    'PASSWORD = "hunter2hunter2"',
    "github_pat_" + "A" * 30,
    "xoxb-1234567890-abc",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "sk_live_" + "a" * 30,
    "whsec_" + "a" * 30,
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----BEGIN ENCRYPTED OPENSSH PRIVATE KEY BLOCK-----",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "12th of March, 1990 and March 12th, 1990 and Dec. 1 2000",
    "born 1 Jan 1990, 01.01.1990, 1990-01-01, 1990/1/1",
    "DE89370400440532013000",
    "de89 3704 0044 0532 0130 00",
    "john.doe+tag@sub.example.co.uk",
    "'quoted'@example.com",
    "a" * 70 + "@example.com",
    "ssn 123456789, 123 45 6789",
    "." * 70 + "@example.com",
]


@pytest.mark.parametrize("text", EDGES)
def test_edges(text: str) -> None:
    check(text, nfa=True, tiny=True)


def test_every_pattern_is_exercised() -> None:
    seen = {p for text in EDGES + NON_ASCII for p, _, _ in ENGINE.scan(text)[0]}
    assert seen == set(range(len(PATTERNS)))


# --- generated ---------------------------------------------------------------------------------------

_TOKENS = (
    list("0123456789")
    + list(" -./:()+@_=\"'")
    + ["\x00", "\n", "\t", "#", ","]
    + list("abcdefxyzAEZ")
    + ["ä", "é", "Ä", "１", "😀", "\u200b"]
    + list(KEYWORDS)
    + [k.upper() for k in KEYWORDS[::7]]
    + ["AKIA", "ghp_", "eyJ", "xoxb-", "api_key=", "github_pat_", "sk_live_", "whsec_", "::", "@example.com"]
    + [
        "march",
        "März",
        "maerz",
        "dec",
        "1st",
        "of ",
        "-----BEGIN ",
        "PRIVATE KEY-----",
        "https://hooks.slack.com/services/",
    ]
)

texts = st.lists(st.sampled_from(_TOKENS), max_size=80).map("".join)
digitish = st.lists(st.sampled_from(list("0123456789") + list(" -./:()+") + ["ab", "DE"]), max_size=60).map("".join)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_generated(text: str) -> None:
    check(text, nfa=True)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digitish)
def test_generated_digits(text: str) -> None:
    check(text, nfa=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=6))
def test_generated_segments(values: list[str]) -> None:
    check(SEPARATOR.join(values), nfa=True)


# Texts of 512 bytes and more are walked in two chunks that must meet: long ones, often.
long_texts = st.lists(st.sampled_from(_TOKENS), min_size=150, max_size=500).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_texts)
def test_generated_long(text: str) -> None:
    check(text, nfa=True, tiny=True)
