"""Property-based fuzzing of the Check handler (bounded; the atheris harness is fuzz/check.py).

Every generated CheckRequest must get a CheckResponse that keeps the promise of
``fuzz.targets.check``: no unexpected exception (internal_error), no allow without an
independently valid token, documented statuses only, 401 without a valid token.
"""

from __future__ import annotations

import json

import pytest
from fuzz_strategies import FUZZ_SETTINGS, json_bodies, proto_text
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.targets import check as target

CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain", ""]
)
HEADERS = st.dictionaries(
    st.sampled_from(["x-aegis-purpose", "x-aegis-override", "x-aegis-parent-agent", "x-http-method-override", "x-a"]),
    proto_text(),
    max_size=3,
)
AUTHORIZATIONS = st.one_of(
    st.just(target.Case.authorization),
    st.sampled_from([None, f"bearer {target.VALID}", f"Basic {target.VALID}", f"Bearer {target.VALID}x", "Bearer"]),
    proto_text(60),
)


@st.composite
def cases(draw: st.DrawFn) -> target.Case:
    host, method, template = draw(st.sampled_from(target.catalogue()))
    path = template.replace("{tenant_id}", draw(st.sampled_from(["acme", "other", "%2e%2e"]))).replace(
        "{record_id}", draw(proto_text(8).filter(lambda s: "/" not in s and "?" not in s) | st.just("r1"))
    )
    query = draw(st.sampled_from(["", "?amount=1000", "?a=1&a=2", "?_method=DELETE"]))
    body = draw(st.one_of(json_bodies(), st.binary(max_size=64), st.just(b"")))
    headers = {**draw(HEADERS), "content-type": draw(CONTENT_TYPES)}
    edit = draw(st.none() | st.tuples(st.integers(0, 400), proto_text(2)))
    return target.Case(
        method=draw(st.sampled_from([method, method.lower(), "PUT"])),
        host=draw(st.sampled_from([host, host.upper(), f"{host}:10000"])),
        path=path + query,
        headers=headers,
        body=body,
        authorization=draw(AUTHORIZATIONS),
        token_edit=edit,
    )


@FUZZ_SETTINGS
@given(cases())
# Found by fuzzing: a lone surrogate reached the approval fingerprint (503 internal_error).
@example(target.Case(body=b'{"amount": 120, "customer_id": "\\ud800"}', headers={"content-type": "application/json"}))
# Found by fuzzing: an exponent beyond Decimal's range raised decimal.InvalidOperation (503).
@example(target.Case(body=b'{"amount": 1e-99999999999999999999999}', headers={"content-type": "application/json"}))
def test_check_keeps_its_promise(case):
    target.exercise(case)


@FUZZ_SETTINGS
@given(st.integers(0, 400), proto_text(3).filter(bool))
def test_a_forged_token_is_never_allowed(position, replacement):
    """One edited character anywhere in a valid token: 401, unless the edit left a token that
    still verifies (base64url padding bits) — and then it is the same identity."""
    case = target.Case(
        body=b'{"amount": 20}', headers={"content-type": "application/json"}, token_edit=(position, replacement)
    )
    response = target.exercise(case)
    authorization = target.authorization_header(case)
    if not target.independently_valid(authorization):
        assert response.denied_response.status.code == 401


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"amount": 20, "note": "\\udfff"}', 400, "malformed_body"),
        (b'{"amount": 1e-99999999999999999999999}', 400, "malformed_body"),
        (b'{"amount": ' + b"1" * 5000 + b"}", 400, "malformed_body"),
    ],
)
def test_fuzz_findings_are_precise_refusals(body, status, error):
    response = target.exercise(target.Case(body=body, headers={"content-type": "application/json"}))
    assert response.denied_response.status.code == status
    assert json.loads(response.denied_response.body)["error"] == error


def test_the_valid_baseline_is_allowed():
    """The oracle can fail: the same harness lets a valid call through (not everything is a 401)."""
    response = target.exercise(target.Case(body=b'{"amount": 20}', headers={"content-type": "application/json"}))
    assert response.status.code == 0
