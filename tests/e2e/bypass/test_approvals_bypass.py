"""Approval tricks, end to end: real Envoy, the real service, a local Slack/Teams/webhook receiver.

A refund over 50 needs a human approval (202); the approver decides through Slack (signed
interactions), the console (login session + CSRF token) or the operator API; the agent then
retries once with the single-use override token bound to its identity and to the exact call.
Every attempt here tries to get the refund to the tool without that: the approval stays
undecided (or the token unspent), and the payments server receives nothing.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from approvals_fixtures import (
    APPROVER_SLACK_ID,
    CONSOLE_TOKEN,
    OPERATOR_TOKEN,
    REFUND,
    Receiver,
    approvals_gateway,
    approve,
    operator,
    refund,
    slack_headers,
)
from helpers import Gateway

from bypass.wire import assert_nothing_reached, build, send, upstream_log

pytestmark = pytest.mark.e2e

AMOUNTS = itertools.count(301)  # one fresh approval (fingerprint) per case


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Gateway]:
    with approvals_gateway(tmp_path_factory.mktemp("approvals-bypass"), receiver) as gateway:
        yield gateway


def base(gw: Gateway) -> str:
    return f"http://{gw.config.service.http}"


def pending(gw: Gateway) -> tuple[str, int]:
    amount = next(AMOUNTS)
    response = refund(gw, amount)
    assert response.status_code == 202, response.text
    return str(response.json()["approval_id"]), amount


def poll(gw: Gateway, approval_id: str, token: str | None = None) -> httpx.Response:
    return httpx.get(
        f"{base(gw)}/v1/approvals/{approval_id}", headers={"authorization": f"Bearer {token or gw.token()}"}, timeout=5
    )


def state(gw: Gateway, approval_id: str) -> dict[str, Any]:
    response = poll(gw, approval_id)
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_still_pending(gw: Gateway, approval_id: str, amount: int) -> None:
    """Undecided, no token handed out, the retry still asks for approval, the tool got nothing."""
    polled = state(gw, approval_id)
    assert polled["state"] == "pending" and "override_token" not in polled
    retry = refund(gw, amount)
    assert (retry.status_code, retry.json()["approval_id"]) == (202, approval_id)
    assert_nothing_reached(gw)


def delivered(gw: Gateway, amount: int) -> int:
    return sum(1 for _, r in upstream_log(gw) if json.loads(r["body"] or "{}").get("amount") == amount)


# --- Slack interactions ----------------------------------------------------------------------


def interaction(approval_id: str, action: str = "approve", user: dict[str, str] | None = None) -> bytes:
    payload = {
        "type": "block_actions",
        "user": user or {"id": APPROVER_SLACK_ID, "username": "lead"},
        "actions": [{"action_id": action, "block_id": "aegis_approval", "value": approval_id, "type": "button"}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def post_interaction(gw: Gateway, body: bytes, headers: dict[str, str]) -> httpx.Response:
    headers = {"content-type": "application/x-www-form-urlencoded", **headers}
    return httpx.post(f"{base(gw)}/v1/slack/interactions", content=body, headers=headers, timeout=5)


def _other_body_signature(approval_id: str) -> tuple[bytes, dict[str, str]]:
    # The approver signed a deny; the attacker swaps in an approve under that signature.
    return interaction(approval_id), slack_headers(interaction(approval_id, "deny"))


def _hex_upper(approval_id: str) -> tuple[bytes, dict[str, str]]:
    body = interaction(approval_id)
    headers = slack_headers(body)
    return body, {**headers, "x-slack-signature": "v0=" + headers["x-slack-signature"][3:].upper()}


def _signed_as(approval_id: str, user_id: str, username: str) -> tuple[bytes, dict[str, str]]:
    # Slack signs what it sends: a real workspace member whose display name mimics the approver.
    body = interaction(approval_id, user={"id": user_id, "username": username, "name": username})
    return body, slack_headers(body)


# Outside Slack's 5-minute window with room to spare: int() truncates up to a second and the
# request takes time to arrive, which brought a +301 s timestamp back inside the window (CI flake).
OFF_WINDOW_S = 5 * 60 + 30

SLACK_CASES: list[tuple[str, Callable[[str], tuple[bytes, dict[str, str]]], int, str]] = [
    (
        "wrong-signing-secret",
        lambda a: (interaction(a), slack_headers(interaction(a), secret="guessed")),
        401,
        "bad_signature",
    ),
    ("signature-of-another-body", _other_body_signature, 401, "bad_signature"),
    (
        "replay-older-than-5-minutes",
        lambda a: (interaction(a), slack_headers(interaction(a), int(time.time()) - OFF_WINDOW_S)),
        401,
        "stale_timestamp",
    ),
    (
        "timestamp-in-the-future",
        lambda a: (interaction(a), slack_headers(interaction(a), int(time.time()) + OFF_WINDOW_S)),
        401,
        "stale_timestamp",
    ),
    (
        "timestamp-not-a-number",
        lambda a: (interaction(a), {**slack_headers(interaction(a)), "x-slack-request-timestamp": "1e9"}),
        401,
        "stale_timestamp",
    ),
    (
        "signature-missing",
        lambda a: (interaction(a), {"x-slack-request-timestamp": str(int(time.time()))}),
        401,
        "missing_signature",
    ),
    (
        "timestamp-missing",
        lambda a: (interaction(a), {"x-slack-signature": slack_headers(interaction(a))["x-slack-signature"]}),
        401,
        "missing_signature",
    ),
    (
        "signature-v1-scheme",
        lambda a: (interaction(a), {**slack_headers(interaction(a)), "x-slack-signature": "v1=" + "0" * 64}),
        401,
        "bad_signature",
    ),
    ("signature-hex-uppercased", _hex_upper, 401, "bad_signature"),
    ("agent-jwt-instead-of-signature", lambda a: (interaction(a), {}), 401, "missing_signature"),
    (
        "signed-by-non-approver",
        lambda a: (interaction(a, user={"id": "U0INTRUDER"}), slack_headers(interaction(a, user={"id": "U0INTRUDER"}))),
        403,
        "not_an_approver",
    ),
    ("username-spoofs-approver-id", lambda a: _signed_as(a, "U0INTRUDER", APPROVER_SLACK_ID), 403, "not_an_approver"),
]


@pytest.mark.parametrize(("make", "status", "code"), [c[1:] for c in SLACK_CASES], ids=[c[0] for c in SLACK_CASES])
def test_slack_interaction_forgery(gw: Gateway, make, status: int, code: str):
    approval_id, amount = pending(gw)
    body, headers = make(approval_id)
    if not headers:
        headers = {"authorization": f"Bearer {gw.token()}"}
    response = post_interaction(gw, body, headers)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert_still_pending(gw, approval_id, amount)


def test_replayed_slack_approval_changes_nothing(gw: Gateway):
    approval_id, _ = pending(gw)
    body = interaction(approval_id)
    headers = slack_headers(body)
    assert post_interaction(gw, body, headers).status_code == 200
    first = state(gw, approval_id)
    replay = post_interaction(gw, body, headers)  # byte-identical, within the 5 minutes
    assert (replay.status_code, replay.json()["error"]) == (409, "not_pending")
    again = state(gw, approval_id)
    assert (again["state"], again["decided_by"], again["decided_at"]) == (
        "approved",
        first["decided_by"],
        first["decided_at"],
    )


def test_signed_deny_replayed_after_approval_changes_nothing(gw: Gateway):
    approval_id, _ = pending(gw)
    deny = interaction(approval_id, "deny")
    deny_headers = slack_headers(deny)  # captured, held back
    approve_body = interaction(approval_id)
    assert post_interaction(gw, approve_body, slack_headers(approve_body)).status_code == 200
    late = post_interaction(gw, deny, deny_headers)
    assert (late.status_code, late.json()["error"]) == (409, "not_pending")
    assert state(gw, approval_id)["state"] == "approved"


def test_signed_interaction_retargeted_to_another_approval_is_refused(gw: Gateway):
    first, _ = pending(gw)
    second, amount = pending(gw)
    body = interaction(first)
    headers = slack_headers(body)
    retargeted = body.replace(urllib.parse.quote(first).encode(), urllib.parse.quote(second).encode())
    assert retargeted != body
    response = post_interaction(gw, retargeted, headers)
    assert (response.status_code, response.json()["error"]) == (401, "bad_signature")
    assert_still_pending(gw, second, amount)


# --- approver spoofing on the console, the operator API and signed links ----------------------


def console_login(gw: Gateway, client: httpx.Client, name: str = "alice", token: str = CONSOLE_TOKEN) -> None:
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    response = client.post("/console/login", data={"name": name, "token": token, "csrf": csrf.group(1), "next": ""})
    assert response.status_code == 303, response.text


def page_csrf(client: httpx.Client, approval_id: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(f"/console/approvals/{approval_id}").text)
    assert found
    return found.group(1)


def _mallory_decides(gw: Gateway, approval_id: str) -> httpx.Response:
    with httpx.Client(base_url=base(gw)) as mallory:
        console_login(gw, mallory, "mallory", "mallory-token")
        csrf = page_csrf(mallory, approval_id)
        return mallory.post(f"/console/approvals/{approval_id}", data={"action": "approve", "csrf": csrf})


def _forged_session(gw: Gateway, approval_id: str) -> httpx.Response:
    # Mallory's signed session with her name swapped for alice's, signature kept.
    with httpx.Client(base_url=base(gw)) as mallory:
        console_login(gw, mallory, "mallory", "mallory-token")
        csrf = page_csrf(mallory, approval_id)
        data, _, sig = mallory.cookies["aegis_console"].strip('"').partition(".")
    session = json.loads(base64.urlsafe_b64decode(data))
    forged = base64.urlsafe_b64encode(json.dumps({**session, "n": "alice"}, separators=(",", ":")).encode()).decode()
    assert session["n"] == "mallory" and session["c"] == csrf
    return httpx.post(
        f"{base(gw)}/console/approvals/{approval_id}",
        data={"action": "approve", "csrf": csrf},
        headers={"cookie": f"aegis_console={forged}.{sig}"},
    )


def _trusted_proxy_headers(gw: Gateway, approval_id: str) -> httpx.Response:
    headers = {"x-forwarded-user": "alice", "remote-user": "alice", "x-aegis-approver": "alice"}
    return httpx.post(f"{base(gw)}/console/approvals/{approval_id}", data={"action": "approve"}, headers=headers)


def _console_with_agent_jwt(gw: Gateway, approval_id: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.token()}"}
    return httpx.post(f"{base(gw)}/console/approvals/{approval_id}", data={"action": "approve"}, headers=headers)


def _operator_as_non_approver(gw: Gateway, approval_id: str) -> httpx.Response:
    return operator(gw, "POST", f"/{approval_id}/approve", json={"as": "mallory"})


def _operator_with_agent_jwt(gw: Gateway, approval_id: str) -> httpx.Response:
    return operator(gw, "POST", f"/{approval_id}/approve", json={}, headers={"authorization": f"Bearer {gw.token()}"})


def _operator_wrong_token(gw: Gateway, approval_id: str) -> httpx.Response:
    return operator(gw, "POST", f"/{approval_id}/approve", json={}, headers={"authorization": "Bearer guessed"})


def _operator_no_token(gw: Gateway, approval_id: str) -> httpx.Response:
    return httpx.post(f"{base(gw)}/v1/operator/approvals/{approval_id}/approve", json={})


def _operator_token_as_basic(gw: Gateway, approval_id: str) -> httpx.Response:
    return operator(
        gw, "POST", f"/{approval_id}/approve", json={}, headers={"authorization": f"Basic {OPERATOR_TOKEN}"}
    )


SPOOF_CASES: list[tuple[str, Callable[[Gateway, str], httpx.Response], int, str | None]] = [
    ("console-approver-outside-the-group", _mallory_decides, 403, None),
    ("console-forged-session-cookie", _forged_session, 303, None),
    ("console-trusted-proxy-headers", _trusted_proxy_headers, 303, None),
    ("console-agent-jwt", _console_with_agent_jwt, 403, "agent_cannot_approve"),
    ("operator-api-as-non-approver", _operator_as_non_approver, 403, "not_an_approver"),
    ("operator-api-agent-jwt", _operator_with_agent_jwt, 403, "agent_cannot_approve"),
    ("operator-api-wrong-token", _operator_wrong_token, 401, None),
    ("operator-api-no-token", _operator_no_token, 401, None),
    ("operator-api-token-as-basic", _operator_token_as_basic, 401, None),
]


@pytest.mark.parametrize(("act", "status", "code"), [c[1:] for c in SPOOF_CASES], ids=[c[0] for c in SPOOF_CASES])
def test_approver_spoofing(gw: Gateway, act, status: int, code: str | None):
    approval_id, amount = pending(gw)
    response = act(gw, approval_id)
    assert response.status_code == status, response.text
    if status == 303:  # no session: sent to sign in, nothing decided
        assert response.headers["location"].startswith("/console/login")
    if code is not None:
        assert response.json()["error"] == code
    assert_still_pending(gw, approval_id, amount)


def _teams_link(receiver: Receiver, approval_id: str) -> str:
    teams = receiver.wait_for(lambda r: r["path"] == "/teams" and approval_id.encode() in r["body"])
    actions = json.loads(teams["body"])["attachments"][0]["content"]["actions"]
    return next(a["url"] for a in actions if a["title"] == "Approve")


LINK_CASES: list[tuple[str, Callable[[str, str], str]]] = [
    ("action-swapped", lambda link, other: link.replace("action=approve", "action=deny")),
    ("expiry-extended", lambda link, other: re.sub(r"exp=\d+", f"exp={int(time.time()) + 86400}", link)),
    ("expiry-in-the-past", lambda link, other: re.sub(r"exp=\d+", "exp=1", link)),
    ("signature-dropped", lambda link, other: re.sub(r"&sig=[0-9a-f]+", "", link)),
    ("other-approval", lambda link, other: re.sub(r"apr_[0-9a-f]+", other, link)),
]


@pytest.mark.parametrize("tamper", [c[1] for c in LINK_CASES], ids=[c[0] for c in LINK_CASES])
def test_tampered_signed_link(gw: Gateway, receiver: Receiver, alice: httpx.Client, tamper):
    approval_id, amount = pending(gw)
    other, _ = pending(gw)
    link = _teams_link(receiver, approval_id)
    assert alice.get(link).status_code == 200  # the genuine link opens the page (acting needs the form)
    tampered = tamper(link, other)
    assert tampered != link
    assert alice.get(tampered).status_code == 403
    assert_still_pending(gw, approval_id, amount)


# --- override tokens: replay, fingerprint, identity ------------------------------------------


def approved(gw: Gateway) -> tuple[str, int, str]:
    approval_id, amount = pending(gw)
    approve(gw, approval_id)
    return approval_id, amount, state(gw, approval_id)["override_token"]


def _call(gw: Gateway, amount: Any, token: str, *, agent: str | None = None, path: str = "/v1/refunds", **kw: Any):
    body = {"amount": amount, **REFUND, **kw.pop("body", {})}
    headers = {"x-aegis-override": token, **kw.pop("headers", {})}
    return gw.call("POST", kw.pop("host", "payments.demo"), path, token=agent, json=body, headers=headers, **kw)


def _raw_amount(gw: Gateway, amount: int, token: str) -> httpx.Response:
    content = json.dumps({"amount": 0, **REFUND}).replace('"amount": 0', f'"amount": {amount}.0')
    headers = {"x-aegis-override": token, "content-type": "application/json"}
    return gw.call("POST", "payments.demo", "/v1/refunds", content=content, headers=headers)


def _alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"aegis-override+jwt"}').rstrip(b"=").decode()
    return f"{header}.{payload}."


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["fph"] = hashlib.sha256(b"any call").hexdigest()
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _other_approvals_token(gw: Gateway, amount: int, token: str) -> httpx.Response:
    _, _, other_token = approved(gw)
    return _call(gw, amount, other_token)


OVERRIDE_CASES: list[tuple[str, Callable[[Gateway, int, str], httpx.Response], int, str]] = [
    ("changed-amount", lambda gw, a, t: _call(gw, a + 1, t), 403, "override-mismatch"),
    ("changed-customer", lambda gw, a, t: _call(gw, a, t, body={"customer_id": "c-2"}), 403, "override-mismatch"),
    ("extra-query-argument", lambda gw, a, t: _call(gw, a, t, path="/v1/refunds?note=x"), 403, "override-mismatch"),
    # Deliberate: the fingerprint binds the parsed arguments as JSON, so 301.0 is not 301.
    ("same-amount-written-as-float", _raw_amount, 403, "override-mismatch"),
    ("host-with-port", lambda gw, a, t: _call(gw, a, t, host="payments.demo:10000"), 403, "override-mismatch"),
    (
        "crm-read-with-refund-token",
        lambda gw, a, t: gw.call(
            "GET",
            "crm.demo",
            "/tenants/acme/records/r-1",
            headers={"x-aegis-purpose": "support", "x-aegis-override": t},
        ),
        403,
        "override-mismatch",
    ),
    ("token-of-another-approval", _other_approvals_token, 403, "override-mismatch"),
    ("other-agent", lambda gw, a, t: _call(gw, a, t, agent=gw.token(agent="other-bot")), 403, "override-wrong-agent"),
    (
        "same-agent-other-tenant",
        lambda gw, a, t: _call(gw, a, t, agent=gw.token(tenant="globex")),
        403,
        "override-wrong-agent",
    ),
    ("tampered-fingerprint", lambda gw, a, t: _call(gw, a, _tampered(t)), 403, "override-invalid"),
    ("alg-none-token", lambda gw, a, t: _call(gw, a, _alg_none(t)), 403, "override-invalid"),
    ("agent-jwt-as-override", lambda gw, a, t: _call(gw, a, gw.token()), 403, "override-invalid"),
    (
        "two-tokens-comma-joined",
        lambda gw, a, t: _call(gw, a, t, headers={"x-aegis-override": f"{t}, {t}"}),
        403,
        "override-invalid",
    ),
    ("empty-token", lambda gw, a, t: _call(gw, a, t, headers={"x-aegis-override": ""}), 403, "override-invalid"),
    # Envoy drops x_aegis_override (underscores): the call is an ordinary one, needing approval.
    (
        "underscore-header-dropped",
        lambda gw, a, t: gw.call(
            "POST", "payments.demo", "/v1/refunds", json={"amount": a, **REFUND}, headers={"x_aegis_override": t}
        ),
        202,
        "refund-needs-approval",
    ),
]


@pytest.mark.parametrize(
    ("attempt", "status", "rule"), [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES]
)
def test_override_token_misuse(gw: Gateway, attempt, status: int, rule: str):
    approval_id, amount, token = approved(gw)
    response = attempt(gw, amount, token)
    assert (response.status_code, response.json().get("rule")) == (status, rule), response.text
    assert_nothing_reached(gw)
    # None of that spent the token: the genuine retry goes through once, then it is spent.
    assert state(gw, approval_id)["state"] == "approved"
    assert _call(gw, amount, token).status_code == 200
    assert delivered(gw, amount) == 1


def test_override_replay_after_use_is_refused(gw: Gateway):
    approval_id, amount, token = approved(gw)
    assert _call(gw, amount, token).status_code == 200
    for _ in range(2):
        replay = _call(gw, amount, token)
        assert (replay.status_code, replay.json()["rule"]) == (403, "override-reused")
    assert delivered(gw, amount) == 1
    assert state(gw, approval_id)["state"] == "used"


def test_override_binds_to_the_canonical_call(gw: Gateway):
    # Envoy canonicalises //v1/./refunds before Check: it is the approved call, and the tool
    # receives the canonical path the approval was given for.
    _, amount, token = approved(gw)
    body = json.dumps({"amount": amount, **REFUND}).encode()
    data = build(
        "POST", "//v1/./refunds", "payments.demo", token=gw.token(), body=body, headers=(("x-aegis-override", token),)
    )
    response = send(gw, data)  # on the raw socket: httpx would read //v1 as a host
    assert response.status == 200, response.body
    assert [(r["method"], r["path"]) for _, r in upstream_log(gw)] == [("POST", "/v1/refunds")]


# --- status polling across agents and tenants --------------------------------------------------

POLL_CASES: list[tuple[str, Callable[[Gateway], str | None], int]] = [
    ("same-agent-id-other-tenant", lambda gw: gw.token(tenant="globex"), 404),
    ("other-agent-same-tenant", lambda gw: gw.token(agent="other-bot"), 404),
    ("delegated-agent-of-the-requester", lambda gw: gw.token(agent="sub-bot", act=["support-bot"]), 404),
    ("no-token", lambda gw: None, 401),
    ("expired-token", lambda gw: gw.token(now=time.time() - 3600), 401),
    ("operator-token", lambda gw: OPERATOR_TOKEN, 401),
    ("console-token", lambda gw: CONSOLE_TOKEN, 401),
]


@pytest.mark.parametrize(("make", "status"), [c[1:] for c in POLL_CASES], ids=[c[0] for c in POLL_CASES])
def test_status_polling_by_someone_else(gw: Gateway, make, status: int):
    approval_id, _, token = approved(gw)  # approved: the status would carry the override token
    credential = make(gw)
    headers = {"authorization": f"Bearer {credential}"} if credential else {}
    response = httpx.get(f"{base(gw)}/v1/approvals/{approval_id}", headers=headers, timeout=5)
    assert response.status_code == status
    assert token not in response.text and "override_token" not in response.text
    assert state(gw, approval_id)["override_token"] == token  # the requester still gets it


@pytest.mark.parametrize(
    "approval_id",
    ["apr_" + "0" * 32, "..%2F..%2Fv1%2Foperator%2Fapprovals", "apr_%00", "%2A"],
    ids=["unknown-id", "encoded-path-traversal", "encoded-nul", "wildcard"],
)
def test_status_polling_unknown_ids(gw: Gateway, approval_id: str):
    response = httpx.get(
        f"{base(gw)}/v1/approvals/{approval_id}", headers={"authorization": f"Bearer {gw.token()}"}, timeout=5
    )
    assert response.status_code == 404
    assert "override_token" not in response.text


# --- console CSRF ------------------------------------------------------------------------------


@pytest.fixture
def alice(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base(gw)) as client:
        console_login(gw, client)
        yield client


def _mallory_csrf(gw: Gateway, approval_id: str) -> str:
    with httpx.Client(base_url=base(gw)) as mallory:
        console_login(gw, mallory, "mallory", "mallory-token")
        return page_csrf(mallory, approval_id)


CSRF_CASES: list[tuple[str, Callable[[Gateway, httpx.Client, str], httpx.Response], int]] = [
    ("no-csrf-token", lambda gw, c, a: c.post(f"/console/approvals/{a}", data={"action": "approve"}), 403),
    (
        "wrong-csrf-token",
        lambda gw, c, a: c.post(f"/console/approvals/{a}", data={"action": "approve", "csrf": "x" * 32}),
        403,
    ),
    (
        "csrf-token-of-another-session",
        lambda gw, c, a: c.post(f"/console/approvals/{a}", data={"action": "approve", "csrf": _mallory_csrf(gw, a)}),
        403,
    ),
    (
        "cross-origin-with-valid-token",
        lambda gw, c, a: c.post(
            f"/console/approvals/{a}",
            data={"action": "approve", "csrf": page_csrf(c, a)},
            headers={"origin": "http://evil.example"},
        ),
        403,
    ),
    (
        "origin-null",
        lambda gw, c, a: c.post(
            f"/console/approvals/{a}", data={"action": "approve", "csrf": page_csrf(c, a)}, headers={"origin": "null"}
        ),
        403,
    ),
    (
        "csrf-token-in-query-not-form",
        lambda gw, c, a: c.post(f"/console/approvals/{a}?csrf={page_csrf(c, a)}", data={"action": "approve"}),
        403,
    ),
    (
        "json-body-instead-of-form",
        lambda gw, c, a: c.post(f"/console/approvals/{a}", json={"action": "approve", "csrf": page_csrf(c, a)}),
        403,
    ),
    ("get-with-action-query", lambda gw, c, a: c.get(f"/console/approvals/{a}?action=approve&done=approved"), 200),
    (
        "get-on-the-link-route-without-signature",
        lambda gw, c, a: c.get(f"/console/approvals/{a}/link?action=approve"),
        403,
    ),
]


@pytest.mark.parametrize(("forge", "status"), [c[1:] for c in CSRF_CASES], ids=[c[0] for c in CSRF_CASES])
def test_console_csrf(gw: Gateway, alice: httpx.Client, forge, status: int):
    approval_id, amount = pending(gw)
    response = forge(gw, alice, approval_id)
    assert response.status_code == status
    assert_still_pending(gw, approval_id, amount)


def test_console_login_needs_its_own_form_token(gw: Gateway):
    form = {"name": "alice", "token": CONSOLE_TOKEN, "next": ""}
    with httpx.Client(base_url=base(gw)) as fresh:  # login CSRF: no nonce cookie from the form
        assert fresh.post("/console/login", data={**form, "csrf": "x"}).status_code == 403
        page = fresh.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        cross = fresh.post(
            "/console/login", data={**form, "csrf": csrf.group(1)}, headers={"origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        assert "aegis_console" not in fresh.cookies


def test_console_logout_needs_the_csrf_token(gw: Gateway, alice: httpx.Client):
    assert alice.post("/console/logout", data={}).status_code == 403
    assert alice.get("/console/approvals").status_code == 200  # still signed in


# --- open redirects -------------------------------------------------------------------------------

EVIL_NEXT = [
    ("scheme-relative", "//evil.example/x"),
    ("absolute-https", "https://evil.example/"),
    ("backslash-after-slash", "/\\evil.example"),
    ("double-backslash", "\\\\evil.example"),
    ("console-then-backslashes", "/console\\..\\..\\evil.example"),
    ("scheme-without-slashes", "http:evil.example"),
    ("javascript-url", "javascript:alert(1)"),
    ("encoded-slashes", "%2F%2Fevil.example"),
    ("console-dotdot-to-scheme-relative", "/console/../..//evil.example"),
    ("console-double-slash", "/console//evil.example"),
    ("console-userinfo-lookalike", "/console@evil.example"),
    ("crlf-header-injection", "/console\r\nLocation: https://evil.example"),
    ("tab-in-path", "/console\t//evil.example"),
    ("leading-space", " //evil.example"),
    ("other-service-path", "/v1/operator/approvals"),
]


@pytest.mark.parametrize("next_path", [c[1] for c in EVIL_NEXT], ids=[c[0] for c in EVIL_NEXT])
def test_login_redirect_stays_on_the_console(gw: Gateway, next_path: str):
    with httpx.Client(base_url=base(gw)) as client:
        page = client.get("/console/login", params={"next": next_path})
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        form = {"name": "alice", "token": CONSOLE_TOKEN, "csrf": csrf.group(1), "next": next_path}
        response = client.post("/console/login", data=form)
    assert response.status_code == 303
    location = response.headers["location"]
    target = urllib.parse.urlsplit(urllib.parse.urljoin(f"{base(gw)}/console/login", location))
    assert (target.scheme, target.netloc) == ("http", gw.config.service.http)
    assert location.startswith("/console") and not location.startswith("//")
    assert not any(c in location for c in "\\\r\n\t")
