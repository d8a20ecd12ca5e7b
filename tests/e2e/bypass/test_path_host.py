"""Path, host and method tricks, end to end through real Envoy.

The invariant: what Aegis authorises is exactly what the upstream receives (host, method,
path), or the call is refused.  Envoy canonicalises the path before ext_authz sees it
(``normalize_path``, ``merge_slashes``, escaped slashes rejected), so Check and the router
see the same path; everything Envoy does not canonicalise (case, trailing slash, ``;``
parameters) simply matches no tool and is denied by default.

Refunds use an amount of 20 (allowed when the tool matches), CRM reads the agent's own
tenant ``acme`` with a purpose (allowed) unless the trick aims at another tenant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest
from helpers import Gateway

from bypass.wire import PURPOSE, REFUND_20, Closed, Expect, Reach, Refused, build, check, send
from extauthz.envoyconfig import render_bootstrap

pytestmark = pytest.mark.e2e

REFUND = "payments.refund"
CRM = "crm.get_record"
OWN_RECORD = "/tenants/acme/records/r-1"


def refund_ok(path: str = "/v1/refunds", method: str = "POST") -> Reach:
    return Reach("payments.demo", path, REFUND, method)


def crm_ok(path: str = OWN_RECORD) -> Reach:
    return Reach("crm.demo", path, CRM, "GET")


DEFAULT_DENY = Refused(403, "default-deny")
CROSS_TENANT = Refused(403, "crm-cross-tenant")
ENVOY_400 = Refused(400, None)


@dataclass(frozen=True)
class Attempt:
    """One request: refunds are POSTed with a JSON body, CRM reads are GETs with a purpose."""

    target: str
    host: str = "payments.demo"
    method: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def wire(self, token: str) -> bytes:
        crm = "crm.demo" in self.host.lower() or "crm.demo" in self.target
        method = self.method or ("GET" if crm else "POST")
        headers = (PURPOSE, *self.headers) if crm else self.headers
        body = b"" if method in ("GET", "HEAD") else json.dumps(REFUND_20).encode()
        return build(method, self.target, self.host, token=token, body=body, headers=headers)


def run(gateway: Gateway, attempt: Attempt, expect: Expect) -> None:
    response = send(gateway, attempt.wire(gateway.token()))
    check(gateway, response, expect)


# --- path tricks -----------------------------------------------------------------------------

PATH_CASES: list[tuple[str, Attempt, Expect]] = [
    ("canonical-refund", Attempt("/v1/refunds"), refund_ok()),
    ("canonical-crm-own-tenant", Attempt(OWN_RECORD, "crm.demo"), crm_ok()),
    ("dotdot-segment", Attempt("/v1/x/../refunds"), refund_ok()),
    ("dotdot-above-root", Attempt("/../v1/refunds"), refund_ok()),
    ("dot-segment", Attempt("/v1/./refunds"), refund_ok()),
    ("pct2e2e-lower", Attempt("/v1/x/%2e%2e/refunds"), refund_ok()),
    ("pct2E2E-upper", Attempt("/v1/x/%2E%2E/refunds"), refund_ok()),
    ("pct2e-mixed-dotdot", Attempt("/v1/x/.%2e/refunds"), refund_ok()),
    ("pct-encoded-unreserved", Attempt("/v1/%72efunds"), refund_ok()),
    ("crm-dotdot-to-other-tenant", Attempt("/tenants/acme/records/../../globex/records/r-1", "crm.demo"), CROSS_TENANT),
    (
        "crm-pct2e2e-to-other-tenant",
        Attempt("/tenants/acme/records/%2e%2e/%2e%2e/globex/records/r-1", "crm.demo"),
        CROSS_TENANT,
    ),
    ("crm-pct-encoded-own-tenant", Attempt("/tenants/%61cme/records/r-1", "crm.demo"), crm_ok()),
    ("crm-double-encoded-tenant", Attempt("/tenants/%2561cme/records/r-1", "crm.demo"), CROSS_TENANT),
    ("encoded-slash-2F", Attempt("/v1%2Frefunds"), ENVOY_400),
    ("encoded-slash-2f-lower", Attempt("/v1%2frefunds"), ENVOY_400),
    ("encoded-backslash-5C", Attempt("/v1%5Crefunds"), ENVOY_400),
    ("encoded-backslash-5c-lower", Attempt("/v1%5crefunds"), ENVOY_400),
    ("crm-encoded-slash-in-tenant", Attempt("/tenants/acme%2F..%2Fglobex/records/r-1", "crm.demo"), ENVOY_400),
    ("raw-backslash", Attempt("/v1\\refunds"), refund_ok()),
    ("double-slashes", Attempt("//v1//refunds"), refund_ok()),
    ("triple-slashes", Attempt("///v1///refunds"), refund_ok()),
    ("crm-double-slash", Attempt("/tenants//acme/records/r-1", "crm.demo"), crm_ok()),
    ("trailing-slash", Attempt("/v1/refunds/"), DEFAULT_DENY),
    ("trailing-dot-segment", Attempt("/v1/refunds/."), DEFAULT_DENY),
    ("trailing-dotdot-segment", Attempt("/v1/refunds/.."), DEFAULT_DENY),
    ("uppercase-path", Attempt("/V1/REFUNDS"), DEFAULT_DENY),
    ("mixed-case-path", Attempt("/v1/Refunds"), DEFAULT_DENY),
    ("crm-uppercase-tenant", Attempt("/tenants/ACME/records/r-1", "crm.demo"), CROSS_TENANT),
    ("matrix-param-last-segment", Attempt("/v1/refunds;x=y"), DEFAULT_DENY),
    ("matrix-param-middle-segment", Attempt("/v1;x=y/refunds"), DEFAULT_DENY),
    ("crm-matrix-param-tenant", Attempt("/tenants/acme;x=y/records/r-1", "crm.demo"), CROSS_TENANT),
    ("crm-matrix-param-other-tenant", Attempt("/tenants/globex;acme/records/r-1", "crm.demo"), CROSS_TENANT),
    ("fragment", Attempt("/v1/refunds#x"), ENVOY_400),
    ("fragment-after-query", Attempt("/v1/refunds?#x"), ENVOY_400),
    ("encoded-nul", Attempt("/v1/refunds%00"), ENVOY_400),
    ("encoded-space", Attempt("/v1/refunds%20"), DEFAULT_DENY),
    ("relative-target", Attempt("v1/refunds"), Closed()),
    ("asterisk-target", Attempt("*", method="OPTIONS"), Refused(404, None)),
]


@pytest.mark.parametrize(("attempt", "expect"), [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES])
def test_path_trick(gateway: Gateway, attempt: Attempt, expect: Expect):
    run(gateway, attempt, expect)


# --- host tricks and absolute-form targets ---------------------------------------------------

HOST_CASES: list[tuple[str, Attempt, Expect]] = [
    ("host-with-port", Attempt("/v1/refunds", "payments.demo:10000"), refund_ok()),
    ("host-uppercase", Attempt("/v1/refunds", "PAYMENTS.DEMO"), refund_ok()),
    ("host-non-numeric-port", Attempt("/v1/refunds", "payments.demo:abc"), refund_ok()),
    ("host-trailing-dot", Attempt("/v1/refunds", "payments.demo."), Refused(404, "unknown_host")),
    ("host-empty-port", Attempt("/v1/refunds", "payments.demo:"), Refused(404, "unknown_host")),
    ("host-userinfo", Attempt("/v1/refunds", "agent@payments.demo"), Refused(404, "unknown_host")),
    ("host-with-space", Attempt("/v1/refunds", "payments.demo x"), Closed()),
    ("host-of-another-tool", Attempt("/v1/refunds", "slack.demo"), DEFAULT_DENY),
    ("host-unknown", Attempt("/v1/refunds", "evil.example"), Refused(404, "unknown_host")),
    (
        "host-header-twice",
        Attempt("/v1/refunds", headers=(("Host", "slack.demo"),)),
        Refused(404, "unknown_host"),
    ),
    ("absolute-form", Attempt("http://payments.demo/v1/refunds"), refund_ok()),
    # RFC 9112 §3.2.2: the target's authority wins over Host, for routing and for Check alike.
    ("absolute-form-host-disagrees", Attempt("http://payments.demo/v1/refunds", "slack.demo"), refund_ok()),
    ("absolute-form-userinfo", Attempt("http://slack.demo@payments.demo/v1/refunds"), refund_ok()),
    ("absolute-form-dotdot", Attempt("http://payments.demo/v1/x/../refunds"), refund_ok()),
    (
        "absolute-form-crm-other-tenant-host-own",
        Attempt("http://crm.demo/tenants/globex/records/r-1", "crm.demo"),
        CROSS_TENANT,
    ),
    ("absolute-form-https-scheme", Attempt("https://payments.demo/v1/refunds"), Closed()),
    ("connect-method", Attempt("payments.demo:80", "payments.demo:80", method="CONNECT"), Closed()),
]


@pytest.mark.parametrize(("attempt", "expect"), [c[1:] for c in HOST_CASES], ids=[c[0] for c in HOST_CASES])
def test_host_trick(gateway: Gateway, attempt: Attempt, expect: Expect):
    run(gateway, attempt, expect)


def test_absolute_form_reaches_the_authority_it_names_with_that_host(gateway: Gateway):
    # The Host header says slack.demo; the target says payments.demo.  Check judged payments
    # (access log: tool payments.refund) and payments received it, with Host payments.demo.
    response = send(gateway, Attempt("http://payments.demo/v1/refunds", "slack.demo").wire(gateway.token()))
    record = check(gateway, response, refund_ok())
    assert record is not None
    assert record["headers"]["host"] == "payments.demo"


# --- method and path overrides --------------------------------------------------------------

AMBIGUOUS = Refused(400, "ambiguous_request")

OVERRIDE_CASES: list[tuple[str, Attempt, Expect]] = [
    ("x-http-method-override", Attempt("/v1/refunds", headers=(("X-HTTP-Method-Override", "DELETE"),)), AMBIGUOUS),
    ("x-http-method", Attempt("/v1/refunds", headers=(("X-HTTP-Method", "DELETE"),)), AMBIGUOUS),
    ("x-method-override", Attempt("/v1/refunds", headers=(("X-Method-Override", "DELETE"),)), AMBIGUOUS),
    ("x-original-url", Attempt("/v1/refunds", headers=(("X-Original-URL", "/v1/refunds/all"),)), AMBIGUOUS),
    ("x-rewrite-url", Attempt("/v1/refunds", headers=(("X-Rewrite-URL", "/v1/refunds/all"),)), AMBIGUOUS),
    ("override-header-shouting", Attempt("/v1/refunds", headers=(("X-HTTP-METHOD-OVERRIDE", "DELETE"),)), AMBIGUOUS),
    (
        "override-header-on-crm-read",
        Attempt(OWN_RECORD, "crm.demo", headers=(("X-HTTP-Method-Override", "DELETE"),)),
        AMBIGUOUS,
    ),
    ("override-header-on-unknown-tool", Attempt("/v1/other", headers=(("X-HTTP-Method-Override", "GET"),)), AMBIGUOUS),
    ("method-query-param", Attempt("/v1/refunds?_method=DELETE"), AMBIGUOUS),
    ("crm-method-query-param", Attempt(f"{OWN_RECORD}?_method=DELETE", "crm.demo"), AMBIGUOUS),
    # Envoy drops headers with underscores (CGI/WSGI servers would fold them into dashes).
    (
        "override-header-underscores-dropped",
        Attempt("/v1/refunds", headers=(("X_HTTP_METHOD_OVERRIDE", "DELETE"),)),
        refund_ok(),
    ),
    ("method-get-on-post-tool", Attempt("/v1/refunds", method="GET"), DEFAULT_DENY),
    ("method-put-on-post-tool", Attempt("/v1/refunds", method="PUT"), DEFAULT_DENY),
    ("method-head-on-get-tool", Attempt(OWN_RECORD, "crm.demo", method="HEAD"), Refused(403, None)),
    ("method-lowercase", Attempt("/v1/refunds", method="post"), Closed()),
]


@pytest.mark.parametrize(("attempt", "expect"), [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES])
def test_method_override(gateway: Gateway, attempt: Attempt, expect: Expect):
    run(gateway, attempt, expect)


def test_underscore_override_header_never_reaches_the_tool(gateway: Gateway):
    attempt = Attempt("/v1/refunds", headers=(("X_HTTP_METHOD_OVERRIDE", "DELETE"), ("x_aegis_override", "t")))
    record = check(gateway, send(gateway, attempt.wire(gateway.token())), refund_ok(), log=False)
    assert record is not None
    assert not {k for k in record["headers"] if "override" in k.replace("_", "-")}


# --- headers that only Aegis or Envoy may set --------------------------------------------------


def test_forged_skip_markers_do_not_skip_redaction(gateway: Gateway):
    # Envoy runs an ext_proc instance only when Check's dynamic metadata names it
    # (body_phases); headers cannot: not the x-aegis-clean marker earlier versions used,
    # nor one named like the metadata key.
    forged = (("x-aegis-clean", "1"), ("body_phases", "none"), ("x-aegis-body-phases", "none"))
    attempt = Attempt(OWN_RECORD, "crm.demo", headers=forged)
    response = send(gateway, attempt.wire(gateway.token()))
    record = check(gateway, response, crm_ok(), log=False)
    assert record is not None
    document = response.json()
    # The rule crm-redact-pii names these fields: each comes back masked.
    assert all(document[name].startswith("[REDACTED") for name in ("ssn", "dob", "full_name"))


def test_forged_envoy_internal_headers_are_stripped(gateway: Gateway):
    attempt = Attempt(
        "/v1/refunds",
        headers=(("x-envoy-original-path", "/admin"), ("x-aegis-decision-id", "forged-decision")),
    )
    response = send(gateway, attempt.wire(gateway.token()))
    record = check(gateway, response, refund_ok(), log=False)
    assert record is not None
    assert "x-envoy-original-path" not in record["headers"]
    assert record["headers"]["x-aegis-decision-id"] == response.headers["x-aegis-decision-id"] != "forged-decision"


# --- the Envoy configuration that makes the invariant hold -----------------------------------


def _find_hcm(node: object) -> dict | None:
    if isinstance(node, dict):
        if node.get("stat_prefix") == "aegis" and "http_filters" in node:
            return node
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_hcm(child)
        if found is not None:
            return found
    return None


def _assert_canonical_paths(hcm: dict) -> None:
    assert hcm["normalize_path"] is True
    assert hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
    authz = hcm["http_filters"][0]
    assert authz["name"] == "envoy.filters.http.ext_authz"
    assert authz["typed_config"].get("failure_mode_allow", False) is False
    assert authz["typed_config"]["with_request_body"].get("allow_partial_message", False) is False


def test_generated_envoy_config_canonicalises_paths(gateway: Gateway):
    hcm = _find_hcm(render_bootstrap(gateway.config))
    assert hcm is not None
    _assert_canonical_paths(hcm)
    # ext_authz runs before the router on the same header map: Check sees the routed path.
    assert [f["name"] for f in hcm["http_filters"]][-1] == "envoy.filters.http.router"


def test_running_envoy_has_that_config(gateway: Gateway):
    dump = httpx.get(f"http://{gateway.config.envoy.admin}/config_dump", timeout=10).json()
    hcm = _find_hcm(dump)
    assert hcm is not None
    _assert_canonical_paths(hcm)
