"""Tool matching and argument extraction: exact routes, strict bodies, no guessing."""

from __future__ import annotations

import pytest

from extauthz.errors import MalformedBody, RequestError
from extauthz.tools import ArgSpec, HttpRequest, ToolCatalogue, ToolSpec

CATALOGUE = ToolCatalogue(
    [
        ToolSpec("payments.refund", "payments.demo", "POST", "/v1/refunds", args={"amount": ArgSpec("number", True)}),
        ToolSpec("crm.get_record", "crm.demo", "GET", "/tenants/{tenant_id}/records/{record_id}", body="none"),
        ToolSpec("forms.submit", "forms.demo", "POST", "/submit", body="form"),
        ToolSpec("mcp.search", "mcp.demo", "POST", "/mcp", mcp_tool="search"),
    ]
)


def req(method="POST", host="payments.demo", path="/v1/refunds", body=b"", ctype="application/json", query=""):
    headers = {"content-type": ctype} if ctype else {}
    return HttpRequest(method, host, path, query, headers, body)


def test_json_body_arguments():
    call = CATALOGUE.match(req(body=b'{"amount": 120.5, "currency": "USD"}'))
    assert call.name == "payments.refund"
    assert call.args == {"amount": 120.5, "currency": "USD"}


def test_path_params_and_query():
    call = CATALOGUE.match(req("GET", "crm.demo", "/tenants/acme/records/r%2D1", ctype=None, query="fields=a&fields=b"))
    assert call.name == "crm.get_record"
    assert call.args == {"tenant_id": "acme", "record_id": "r-1", "fields": ["a", "b"]}


@pytest.mark.parametrize(
    ("host", "method", "path"),
    [
        ("payments.demo", "GET", "/v1/refunds"),
        ("payments.demo", "POST", "/v1/refunds/"),
        ("payments.demo", "POST", "/V1/refunds"),
        # Methods are case-sensitive: HTTP/2 carries a lowercase one to the upstream as is.
        ("payments.demo", "post", "/v1/refunds"),
        ("crm.demo", "get", "/tenants/acme/records/r1"),
        ("other.demo", "POST", "/v1/refunds"),
        ("crm.demo", "GET", "/tenants/acme/records/r1/extra"),
        ("crm.demo", "GET", "/tenants//records/r1"),
    ],
)
def test_anything_else_is_an_unknown_tool(host, method, path):
    assert CATALOGUE.match(req(method, host, path, body=b'{"amount": 1}')).name is None


def test_host_with_port_and_case():
    assert CATALOGUE.match(req(host="Payments.Demo:10000", body=b'{"amount": 1}')).name == "payments.refund"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"amount": 10, "amount": 1000}', "duplicate key"),
        (b'{"amount": NaN}', "NaN"),
        (b'{"amount": Infinity}', "Infinity"),
        (b'{"amount": 1', "does not parse"),
        (b"[1, 2]", "must be an object"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 100 + b"]" * 100, "nested"),
    ],
)
def test_malformed_json_is_refused_with_a_reason(body, message):
    with pytest.raises(MalformedBody) as info:
        CATALOGUE.match(req(body=body))
    assert message in info.value.message


def test_content_type_mismatch_is_refused():
    with pytest.raises(MalformedBody):
        CATALOGUE.match(req(body=b'{"amount": 10}', ctype="text/plain"))


def test_declared_argument_types_and_required():
    with pytest.raises(RequestError) as info:
        CATALOGUE.match(req(body=b'{"amount": "1000"}'))
    assert info.value.code == "invalid_argument"
    with pytest.raises(RequestError) as info:
        CATALOGUE.match(req(body=b'{"amount": true}'))
    assert info.value.code == "invalid_argument"
    with pytest.raises(RequestError) as info:
        CATALOGUE.match(req(body=b'{"currency": "USD"}'))
    assert info.value.code == "missing_argument"
    assert CATALOGUE.match(req(body=b'{"amount": 1e3}')).args["amount"] == 1000.0


def test_argument_given_twice_with_different_values_is_ambiguous():
    with pytest.raises(RequestError) as info:
        CATALOGUE.match(req(body=b'{"amount": 10}', query="amount=1000"))
    assert info.value.code == "ambiguous_argument"


def test_form_body():
    call = CATALOGUE.match(
        req(host="forms.demo", path="/submit", body=b"a=1&b=x+y", ctype="application/x-www-form-urlencoded")
    )
    assert call.args == {"a": "1", "b": "x y"}


def test_body_on_a_bodyless_tool_is_refused():
    with pytest.raises(MalformedBody):
        CATALOGUE.match(req("GET", "crm.demo", "/tenants/a/records/b", body=b"x"))


def test_mcp_tools_call():
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {"q": "x"}}}'
    call = CATALOGUE.match(req(host="mcp.demo", path="/mcp", body=body))
    assert call.name == "mcp.search"
    assert call.args == {"q": "x"}
    other = body.replace(b'"search"', b'"delete_all"')
    assert CATALOGUE.match(req(host="mcp.demo", path="/mcp", body=other)).name is None
