"""Property-based fuzzing of the ext_proc handler (bounded; the atheris harness is fuzz/ext_proc.py).

Generated ProcessingRequest streams (headers, body chunks, trailers; with and without the
ext_authz metadata) must keep the promise of ``fuzz.targets.ext_proc``.
"""

from __future__ import annotations

import gzip
import json

import pytest
from fuzz_strategies import FUZZ_SETTINGS, PII, TEXT, json_bodies
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.targets import ext_proc as target

CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "text/event-stream",
        "application/x-ndjson",
        "text/plain; charset=ascii",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "",
    ]
)
ENCODINGS = st.sampled_from(["", "identity", "gzip", "deflate", "br"])
DETECTORS = st.sampled_from(["EMAIL", "SSN", "SECRET", "IBAN", "ALL", "NOPE"])
REDACT = st.one_of(
    st.builds(
        lambda f, d: json.dumps({"fields": f, "detectors": d}),
        st.lists(st.sampled_from(["email", "$.customer.email", "$.a["]), max_size=2),
        st.lists(DETECTORS, max_size=3),
    ),
    # Envoy's metadata is a protobuf Struct: valid UTF-8, so no lone surrogates.
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
)
USAGE = st.sampled_from(
    [
        json.dumps([{"budget": "b", "key": "k", "expires_at": 4e9, "prices": {"output_tokens": 1}, "limit": 10**9}]),
        '[{"budget":"b","key":"k","expires_at":1,"prices":{"a":1e400},"limit":1}]',
        "not json",
    ]
)
METADATA = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"tool": st.sampled_from(["payments.refund", ""])}, optional={"redact": REDACT, "usage_budgets": USAGE}
    ),
)


@st.composite
def bodies(draw: st.DrawFn, encoding: str = "") -> bytes:
    body = draw(
        st.one_of(
            json_bodies(),
            st.builds(
                lambda pii, t: f"data: {json.dumps({'text': pii})}\n\ndata: {t}\n\n".encode("utf-8", "surrogatepass"),
                st.sampled_from(PII),
                TEXT,
            ),
            st.binary(max_size=64),
        )
    )
    return gzip.compress(body, mtime=0) if encoding == "gzip" and draw(st.booleans()) else body


@st.composite
def cases(draw: st.DrawFn) -> target.Case:
    encoding = draw(ENCODINGS)
    phases: list[target.Phase] = []
    if draw(st.booleans()):  # else the response-only instance: the stream starts at the response
        phases.append(("request_headers", {"content-type": draw(CONTENT_TYPES)}))
        phases += [("request_body", draw(bodies()), draw(st.booleans())) for _ in range(draw(st.integers(0, 2)))]
    phases.append(("response_headers", {"content-type": draw(CONTENT_TYPES), "content-encoding": encoding}))
    phases += [("response_body", draw(bodies(encoding)), draw(st.booleans())) for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        phases.append(("response_trailers",))
    return target.Case(
        settings=draw(st.integers(0, len(target.SETTINGS) - 1)),
        metadata=draw(METADATA),
        phases=tuple(phases),
        check_redacts=draw(st.booleans()),
    )


JSON_HEADERS = ("request_headers", {"content-type": "application/json"})
USAGE_BUDGET = json.dumps(
    [{"budget": "b", "key": "k", "expires_at": 4e9, "prices": {"output_tokens": 1}, "limit": 10**9}]
)


@FUZZ_SETTINGS
@given(cases())
# Found by fuzzing: a tool response nested 100k deep crashed the usage reader (RecursionError).
@example(
    target.Case(
        metadata={"usage_budgets": USAGE_BUDGET},
        phases=(
            JSON_HEADERS,
            ("response_headers", {"content-type": "application/json"}),
            ("response_body", b"[" * 100_000 + b"]" * 100_000, True),
        ),
    )
)
# Found by fuzzing: a partial-mode IBAN ("…") in an ASCII body raised UnicodeEncodeError.
@example(
    target.Case(
        settings=4,
        metadata={"redact": '{"detectors": ["IBAN"]}'},
        phases=(
            JSON_HEADERS,
            ("response_headers", {"content-type": "text/plain; charset=ascii"}),
            ("response_body", b"iban DE89 3704 0044 0532 0130 00", True),
        ),
    )
)
# Found by fuzzing (atheris): a binary SSE event under on_binary: block escaped as BinaryBody.
@example(
    target.Case(
        settings=3,
        metadata={"redact": '{"detectors": ["EMAIL"]}'},
        phases=(
            JSON_HEADERS,
            ("response_headers", {"content-type": "text/event-stream"}),
            ("response_body", b"data: \xff\xfe\x00binary\n\n", True),
        ),
    )
)
# Found by fuzzing: an infinite price in the usage metadata raised OverflowError.
@example(
    target.Case(
        metadata={"usage_budgets": '[{"budget":"b","key":"k","expires_at":1,"prices":{"a":1e400},"limit":1}]'},
        phases=(JSON_HEADERS,),
    )
)
def test_ext_proc_keeps_its_promise(case):
    target.exercise(case)


@pytest.mark.parametrize("redact", ["{not json", "[1]", '{"detectors": ["NOPE"]}', '{"fields": ["$.a["]}'])
def test_unreadable_obligations_refuse_the_exchange(redact):
    """Obligations ext_proc cannot apply stop the call (502), they are never skipped."""
    responses = target.exercise(target.Case(metadata={"redact": redact}, phases=(JSON_HEADERS,)))
    assert responses[0].immediate_response.status.code == 502


def test_the_oracle_sees_a_redaction():
    """The harness is not vacuous: an e-mail in a JSON response is rewritten, and still JSON."""
    body = json.dumps({"note": PII[0]}).encode()
    responses = target.exercise(
        target.Case(
            metadata={"redact": '{"detectors": ["EMAIL"]}'},
            phases=(
                JSON_HEADERS,
                ("response_headers", {"content-type": "application/json"}),
                ("response_body", body, True),
            ),
        )
    )
    new = responses[-1].response_body.response.body_mutation.body
    assert PII[0].encode() not in new and json.loads(new)["note"] == "[REDACTED:EMAIL]"
