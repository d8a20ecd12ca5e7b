"""Property-based fuzzing of dlp.scan / dlp.redact (bounded; the atheris harness is fuzz/dlp_scan.py).

Any text and body: findings inside the text, sorted and disjoint; redaction returns a
Result or a DlpError; valid JSON stays valid JSON and a second redaction changes nothing
(``fuzz.targets.dlp_scan``).
"""

from __future__ import annotations

from fuzz_strategies import FUZZ_SETTINGS, PII, TEXT, json_bodies
from hypothesis import example, given
from hypothesis import strategies as st

import dlp
from fuzz.targets import dlp_scan as target

DETECTORS = st.none() | st.tuples(*[st.sampled_from([*dlp.DETECTORS, "ALL", "*", "nope"])] * 2)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-ndjson",
        "application/x-www-form-urlencoded",
        "text/plain; charset=latin-1",
        "text/plain; charset=ascii",
        "application/json; charset=utf-16",
        "",
    ]
)
TEXTS = st.lists(st.one_of(TEXT, st.sampled_from(PII)), max_size=6).map(" ".join)


@FUZZ_SETTINGS
@given(
    st.builds(
        target.Case,
        text=TEXTS,
        detectors=DETECTORS,
        body=st.one_of(json_bodies(), TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=80)),
        content_type=CONTENT_TYPES,
        fields=st.tuples(*[st.sampled_from(["email", "$.items[*].email", "$..dob", "$.a[", "note"])] * 1),
        mode=st.sampled_from(["mask", "partial", "hash", "remove"]),
        on_binary=st.sampled_from(["pass", "block"]),
    )
)
# Found by fuzzing: "…" of a partial IBAN could not be encoded back into an ASCII body.
@example(
    target.Case(
        body=b"iban DE89 3704 0044 0532 0130 00",
        content_type="text/plain; charset=ascii",
        detectors=("IBAN",),
        mode="partial",
    )
)
# Found by fuzzing (atheris): partial mode kept "*" as the first letter, so "@x" became "***@x",
# then "****@x" when redacted again.
@example(target.Case(body=b'{"email": "@x"}', content_type="application/json", fields=("email",), mode="partial"))
# Found by fuzzing: a number overflowing a double (1e400) could not be written back (ValueError).
@example(target.Case(body=b'{"a": 1e400, "b": "jane.doe@example.com"}', detectors=("ALL",)))
def test_dlp_keeps_its_promise(case):
    target.exercise(case)


def test_the_oracle_sees_findings():
    """Not vacuous: PII in text is found, inside the text."""
    text = " and ".join(PII)
    found = dlp.scan(text)
    assert {f.type for f in found} >= {"EMAIL", "CREDIT_CARD", "IBAN"}
    target.exercise(target.Case(text=text, body=text.encode(), content_type="text/plain", detectors=("ALL",)))
