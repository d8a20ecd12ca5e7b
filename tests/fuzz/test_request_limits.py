"""Resource limits on what a request may hold, each through the in-process Check handler.

One refusal per limit with its precise status and code, and the same request at the limit
is not refused by it (so each test can fail both ways).  The limits are named constants in
extauthz/request_limits.py (and tools.MAX_JSON_DEPTH); docs/security.md "Resource limits".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import copy_policy_dir, write_config

from extauthz.config import load_config
from extauthz.devtokens import mint_token
from extauthz.request_limits import (
    MAX_ARGUMENT_KEYS,
    MAX_ARRAY_ITEMS,
    MAX_KEY_CHARS,
    MAX_QUERY_PARAMS,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADERS,
    MAX_STRING_CHARS,
)
from extauthz.server import MeasuredAuthorizationServicer, build_service
from extauthz.tools import MAX_JSON_DEPTH
from fuzz.targets import check as target

JSON = {"content-type": "application/json"}


def refund(body: dict | bytes, headers: dict | None = None, path: str = "/v1/refunds"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return target.exercise(target.Case(body=raw, headers={**JSON, **(headers or {})}, path=path))


def refusal(response) -> tuple[int, str]:
    assert response.status.code != 0, "the call was allowed"
    return response.denied_response.status.code, json.loads(response.denied_response.body)["error"]


def nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return {"amount": 20, "deep": value}


# (name, request just over the limit, request at the limit, status, code)
LIMITS = [
    (
        "headers count",
        lambda: refund({"amount": 20}, {f"x-h{i}": "1" for i in range(MAX_REQUEST_HEADERS)}),
        lambda: refund({"amount": 20}, {f"x-h{i}": "1" for i in range(MAX_REQUEST_HEADERS - 2)}),
        431,
        "too_many_headers",
    ),
    (
        "header bytes",
        lambda: refund({"amount": 20}, {"x-big": "v" * MAX_REQUEST_HEADER_BYTES}),
        lambda: refund({"amount": 20}, {"x-big": "v" * (MAX_REQUEST_HEADER_BYTES - 2048)}),
        431,
        "headers_too_large",
    ),
    (
        "query parameters",
        lambda: refund({"amount": 20}, path="/v1/refunds?" + "&".join(f"p{i}=1" for i in range(MAX_QUERY_PARAMS + 1))),
        lambda: refund({"amount": 20}, path="/v1/refunds?" + "&".join(f"p{i}=1" for i in range(MAX_QUERY_PARAMS))),
        431,
        "too_many_params",
    ),
    (
        "JSON keys",
        lambda: refund({"amount": 20, **{f"k{i}": 1 for i in range(MAX_ARGUMENT_KEYS)}}),
        lambda: refund({"amount": 20, **{f"k{i}": 1 for i in range(MAX_ARGUMENT_KEYS - 1)}}),
        413,
        "too_many_keys",
    ),
    (
        "JSON array items",
        lambda: refund({"amount": 20, "items": [0] * (MAX_ARRAY_ITEMS + 1)}),
        lambda: refund({"amount": 20, "items": [0] * MAX_ARRAY_ITEMS}),
        413,
        "too_many_items",
    ),
    (
        "key length",
        lambda: refund({"amount": 20, "k" * (MAX_KEY_CHARS + 1): 1}),
        lambda: refund({"amount": 20, "k" * MAX_KEY_CHARS: 1}),
        413,
        "key_too_long",
    ),
    (
        "string length",
        lambda: refund({"amount": 20, "note": "x" * (MAX_STRING_CHARS + 1)}),
        lambda: refund({"amount": 20, "note": "x" * MAX_STRING_CHARS}),
        413,
        "string_too_long",
    ),
    (
        "JSON depth",
        lambda: refund(nested(MAX_JSON_DEPTH + 1)),
        lambda: refund(nested(MAX_JSON_DEPTH - 1)),
        400,
        "malformed_body",
    ),
]


@pytest.mark.parametrize(("name", "over", "at", "status", "code"), LIMITS, ids=[limit[0] for limit in LIMITS])
def test_each_limit_is_a_precise_4xx(name, over, at, status, code):
    assert refusal(over()) == (status, code)
    response = at()
    assert response.status.code == 0, response.denied_response.body  # within the limit: allowed


def test_lone_surrogates_are_refused_not_a_503():
    assert refusal(refund(b'{"amount": 120, "customer_id": "\\ud800"}')) == (400, "malformed_body")


def test_the_header_size_limit_counts_utf8_bytes_not_characters():
    """Two-byte characters: within the limit counted in characters, over it in bytes."""
    half = MAX_REQUEST_HEADER_BYTES // 2
    assert refusal(refund({"amount": 20}, {"x-big": "\u00e9" * (half + 1)})) == (431, "headers_too_large")
    assert refund({"amount": 20}, {"x-big": "\u00e9" * (half - 1024)}).status.code == 0


def test_header_limits_come_before_identity():
    """An oversized header block is refused as such, token or not (like Envoy's own 431)."""
    response = target.exercise(
        target.Case(
            authorization=None, body=b'{"amount": 20}', headers={**JSON, "x-big": "v" * MAX_REQUEST_HEADER_BYTES}
        )
    )
    assert refusal(response) == (431, "headers_too_large")


FORM_TOOL = """policy_set: forms
tools:
  forms.submit:
    match: {host: forms.demo, method: POST, path: /submit}
    body: form
rules:
  - {id: forms-allowed, tools: [forms.submit], effect: allow}
"""


def test_form_fields_are_limited_like_json_keys(tmp_path: Path):
    service = build_service(load_config(write_config(tmp_path, policy_dir=copy_policy_dir(tmp_path / "p", FORM_TOOL))))
    try:
        token = mint_token(service.config.identity, agent="a", tenant="t", scopes=["forms.submit"])

        def submit(fields: int):
            case = target.Case(
                host="forms.demo",
                path="/submit",
                headers={"content-type": "application/x-www-form-urlencoded"},
                body="&".join(f"f{i}=1" for i in range(fields)).encode(),
                authorization=f"Bearer {token}",
            )
            return MeasuredAuthorizationServicer(service).Check(target.check_request(case, case.authorization), None)

        assert refusal(submit(MAX_ARGUMENT_KEYS + 1)) == (413, "too_many_keys")
        assert submit(MAX_ARGUMENT_KEYS).status.code == 0
    finally:
        service.close()
