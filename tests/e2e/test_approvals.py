"""Human approvals end to end: real Envoy, the real service, a local Slack/Teams/webhook receiver.

The brief's flow: a $120 refund → 202 → Slack card → signed Slack interaction → status
with an override token → one retry with x-aegis-override → the refund reaches the tool once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from approvals_fixtures import (
    APPROVER_SLACK_ID,
    CHANNEL,
    ENV,
    HOOK_SECRET,
    SLACK_BOT_TOKEN,
    Receiver,
    approvals_gateway,
    approve,
    click,
    operator,
    refund,
    slack_post,
    status,
)
from helpers import Gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Gateway]:
    with approvals_gateway(tmp_path_factory.mktemp("approvals"), receiver) as gateway:
        yield gateway


def pending(gw: Gateway, amount: float) -> str:
    response = refund(gw, amount)
    assert response.status_code == 202, response.text
    return str(response.json()["approval_id"])


def received_refunds(gw: Gateway, amount: float) -> list[dict]:
    return [r for r in gw.received("payments.demo") if json.loads(r["body"] or "{}").get("amount") == amount]


# --- the brief's flow ------------------------------------------------------------------------


def test_refund_120_from_request_to_successful_retry_via_slack(gw: Gateway, receiver: Receiver):
    first = refund(gw, 120)
    assert first.status_code == 202
    body = first.json()
    approval_id = body["approval_id"]
    assert first.headers["location"] == body["status_url"]
    # Repeating the call while pending gives the same approval (no duplicate cards).
    assert refund(gw, 120).json()["approval_id"] == approval_id

    # The Slack card: chat.postMessage with the bot token and the exact Block Kit payload.
    message = receiver.slack_message(approval_id)
    assert message["headers"]["authorization"] == f"Bearer {SLACK_BOT_TOKEN}"
    card = message["json"]
    assert card["channel"] == CHANNEL
    assert card["text"] == "Approval needed: payments.refund by support-bot"
    blocks = card["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "actions", "context"]
    assert blocks[0]["text"] == {"type": "plain_text", "text": "Approval needed: payments.refund"}
    assert [f["text"] for f in blocks[1]["fields"]][:3] == [
        "*Agent*\nsupport-bot (acme)",
        "*Tool*\npayments.refund",
        "*Rule*\nrefund-needs-approval",
    ]
    assert blocks[1]["fields"][3]["text"].startswith("*Expires*\n")
    assert blocks[2]["text"]["text"] == "*Reason*\nrefund of 120 needs a human approval (over 50, up to 500)"
    assert blocks[3]["text"]["text"] == (
        '*Arguments (redacted)*\n```{"amount": 120, "currency": "USD", "customer_id": "c-1"}```'
    )
    buttons = blocks[4]["elements"]
    assert [(b["action_id"], b["value"], b.get("style")) for b in buttons] == [
        ("approve", approval_id, "primary"),
        ("deny", approval_id, "danger"),
    ]
    assert f"/console/approvals/{approval_id}" in blocks[5]["elements"][0]["text"]

    # Still pending: polling gives no token.
    assert "override_token" not in status(gw, approval_id)
    # The approver clicks Approve: Slack sends a signed interaction back.
    clicked = click(gw, approval_id)
    assert clicked.status_code == 200, clicked.text
    assert clicked.json()["state"] == "approved"

    # The agent polls status_url with its own JWT and gets the override token.
    polled = status(gw, approval_id)
    assert polled["state"] == "approved" and polled["decided_by"] == f"slack:{APPROVER_SLACK_ID}"
    token = polled["override_token"]
    assert status(gw, approval_id)["override_token"] == token  # stable across polls

    # One retry with the token: the refund goes through, without the override header upstream.
    retry = refund(gw, 120, override=token)
    assert retry.status_code == 200, retry.text
    delivered = received_refunds(gw, 120)
    assert len(delivered) == 1
    assert "x-aegis-override" not in {k.lower() for k in delivered[0]["headers"]}
    assert status(gw, approval_id)["state"] == "used"

    # The card is updated (chat.update) with the decision and without buttons.
    update = receiver.slack_message(approval_id, "chat.update")["json"]
    assert update["channel"] == CHANNEL and update["ts"] == "1700000000.000100"
    assert update["blocks"][0]["text"]["text"] == "Approved: payments.refund"
    assert "actions" not in [b["type"] for b in update["blocks"]]

    # Everything is visible to operators: access log and metrics.
    entry = gw.access_log(retry.headers["x-aegis-decision-id"])
    assert entry["decision"] == "allow" and entry["rule"] == "refund-needs-approval"
    metrics = httpx.get(f"http://{gw.config.service.http}/metrics").text
    for event in ("requested", "approved", "token_issued", "used"):
        assert f'aegis_approvals_total{{event="{event}"}}' in metrics


# --- Slack interactions refused ----------------------------------------------------------------


def test_forged_stale_and_malformed_slack_interactions_are_refused(gw: Gateway):
    approval_id = pending(gw, 121)
    forged = click(gw, approval_id, secret="not-the-signing-secret")
    assert (forged.status_code, forged.json()["error"]) == (401, "bad_signature")
    stale = click(gw, approval_id, ts=int(time.time()) - 600)
    assert (stale.status_code, stale.json()["error"]) == (401, "stale_timestamp")
    unsigned = httpx.post(f"http://{gw.config.service.http}/v1/slack/interactions", data={"payload": "{}"})
    assert (unsigned.status_code, unsigned.json()["error"]) == (401, "missing_signature")
    malformed = slack_post(gw, "{not json")
    assert (malformed.status_code, malformed.json()["error"]) == (400, "malformed_payload")
    no_actions = slack_post(gw, {"type": "block_actions", "user": {"id": APPROVER_SLACK_ID}, "actions": []})
    assert no_actions.status_code == 400 and "exactly one action" in no_actions.json()["message"]
    # Nothing was decided (and nothing lost).
    assert status(gw, approval_id)["state"] == "pending"


def test_slack_user_not_on_the_approver_list_is_refused(gw: Gateway):
    approval_id = pending(gw, 122)
    response = click(gw, approval_id, user="U0INTRUDER")
    assert (response.status_code, response.json()["error"]) == (403, "not_an_approver")
    assert status(gw, approval_id)["state"] == "pending"


def test_agent_token_is_refused_on_every_approver_path(gw: Gateway):
    approval_id = pending(gw, 123)
    agent = {"authorization": f"Bearer {gw.token()}"}
    base = f"http://{gw.config.service.http}"
    via_api = httpx.post(f"{base}/v1/operator/approvals/{approval_id}/approve", headers=agent, json={})
    assert (via_api.status_code, via_api.json()["error"]) == (403, "agent_cannot_approve")
    listing = httpx.get(f"{base}/v1/operator/approvals", headers=agent)
    assert listing.status_code == 403
    via_console = httpx.post(f"{base}/console/approvals/{approval_id}", headers=agent, data={"action": "approve"})
    assert (via_console.status_code, via_console.json()["error"]) == (403, "agent_cannot_approve")
    assert status(gw, approval_id)["state"] == "pending"


def test_denied_approval_gives_no_token_and_the_retry_still_needs_approval(gw: Gateway, receiver: Receiver):
    approval_id = pending(gw, 124)
    click(gw, approval_id, action="deny")
    polled = status(gw, approval_id)
    assert polled["state"] == "denied" and "override_token" not in polled
    update = receiver.slack_message(approval_id, "chat.update")["json"]
    assert update["blocks"][0]["text"]["text"] == "Denied: payments.refund"
    # A second decision on the same approval is refused.
    again = click(gw, approval_id)
    assert (again.status_code, again.json()["error"]) == (409, "not_pending")


# --- override tokens refused --------------------------------------------------------------------


def approved_token(gw: Gateway, amount: float) -> tuple[str, str]:
    approval_id = pending(gw, amount)
    approve(gw, approval_id)
    return approval_id, status(gw, approval_id)["override_token"]


def test_changed_amount_other_agent_and_reuse_are_refused_with_reasons(gw: Gateway):
    approval_id, token = approved_token(gw, 130)
    changed = refund(gw, 131, override=token)
    assert (changed.status_code, changed.json()["rule"]) == (403, "override-mismatch")
    other = refund(gw, 130, token=gw.token(agent="other-bot"), override=token)
    assert (other.status_code, other.json()["rule"]) == (403, "override-wrong-agent")
    forged = refund(gw, 130, override=token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    assert (forged.status_code, forged.json()["rule"]) == (403, "override-invalid")
    # None of those spent the token: the real retry succeeds once, then it is spent.
    assert refund(gw, 130, override=token).status_code == 200
    reused = refund(gw, 130, override=token)
    assert (reused.status_code, reused.json()["rule"]) == (403, "override-reused")
    assert len(received_refunds(gw, 130)) == 1


def test_a_deny_rule_still_denies_with_a_token(gw: Gateway):
    # Same approval, but the call now breaks a deny rule (over 500): the fingerprint differs,
    # so the token never applies; and it is not spent.
    approval_id, token = approved_token(gw, 140)
    assert refund(gw, 900, override=token).json()["rule"] == "override-mismatch"
    assert status(gw, approval_id)["state"] == "approved"


@pytest.mark.parametrize("racers", [2, 20])
def test_racing_retries_with_one_token_exactly_one_succeeds(gw: Gateway, racers: int):
    amount = 150.0 + racers
    _, token = approved_token(gw, amount)
    agent = gw.token()
    with ThreadPoolExecutor(max_workers=racers) as pool:
        codes = list(pool.map(lambda _: refund(gw, amount, token=agent, override=token), range(racers)))
    assert sorted(r.status_code for r in codes) == [200] + [403] * (racers - 1)
    assert {r.json()["rule"] for r in codes if r.status_code == 403} <= {"override-reused"}
    assert len(received_refunds(gw, amount)) == 1


# --- Teams, webhook, operator API, readiness --------------------------------------------------------


def test_teams_card_and_signed_webhook(gw: Gateway, receiver: Receiver):
    approval_id = pending(gw, 160)
    teams = receiver.wait_for(lambda r: r["path"] == "/teams" and approval_id.encode() in r["body"])
    message = json.loads(teams["body"])
    assert message["type"] == "message"
    attachment = message["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    actions = {a["title"]: a for a in card["actions"]}
    assert {a["type"] for a in actions.values()} == {"Action.OpenUrl"}
    approve_link = actions["Approve"]["url"]
    assert f"/console/approvals/{approval_id}/link?action=approve&exp=" in approve_link and "&sig=" in approve_link
    # The signed link does not act: it sends the approver to sign in first.
    opened = httpx.get(approve_link)
    assert opened.status_code == 303 and opened.headers["location"].startswith("/console/login?next=")
    tampered = httpx.get(approve_link.replace("action=approve", "action=deny"))
    assert tampered.status_code == 403
    assert status(gw, approval_id)["state"] == "pending"

    hook = receiver.wait_for(lambda r: r["path"] == "/hook" and approval_id.encode() in r["body"])
    timestamp = hook["headers"]["x-aegis-timestamp"]
    expected = hmac.new(HOOK_SECRET.encode(), timestamp.encode() + b"." + hook["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook["headers"]["x-aegis-signature"], f"v1={expected}")
    event = json.loads(hook["body"])
    assert event["event"] == "approval.requested"
    assert event["approval"]["args"] == {"amount": 160, "currency": "USD", "customer_id": "c-1"}
    assert event["links"]["approve"].startswith("http")


def test_operator_api_lists_and_decides(gw: Gateway):
    approval_id = pending(gw, 170)
    listed = operator(gw, "GET", "", params={"state": "pending"})
    assert approval_id in [a["approval_id"] for a in listed.json()["approvals"]]
    assert operator(gw, "GET", "", headers={"authorization": "Bearer wrong"}).status_code == 401
    as_intruder = operator(gw, "POST", f"/{approval_id}/approve", json={"as": "mallory"})
    assert (as_intruder.status_code, as_intruder.json()["error"]) == (403, "not_an_approver")
    decided = operator(gw, "POST", f"/{approval_id}/deny", json={"comment": "not today", "as": "alice"})
    assert decided.json()["state"] == "denied" and decided.json()["decided_by"] == "alice"
    assert decided.json()["comment"] == "not today"


def test_readyz_reports_notifier_health(gw: Gateway):
    detail = httpx.get(f"http://{gw.config.service.http}/readyz").json()
    approvals = detail["checks"]["approvals"]
    assert approvals["ok"] is True
    assert {"slack:C0APPROVALS", "teams", "webhook"} <= set(approvals["notifiers"])


def test_cli_lists_and_approves(gw: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from extauthz.cli import main

    approval_id = pending(gw, 180)
    monkeypatch.setenv("AEGIS_TEST_OPERATOR", ENV["AEGIS_TEST_OPERATOR"])
    config = str(gw.config.path)
    assert main(["approvals", "list", "-c", config]) == 0
    assert approval_id in capsys.readouterr().out
    assert main(["approvals", "approve", approval_id, "-c", config, "--comment", "fine", "--as", "alice"]) == 0
    assert capsys.readouterr().out.strip() == f"{approval_id}: approved by alice"
    assert main(["approvals", "show", approval_id, "-c", config]) == 0
    assert json.loads(capsys.readouterr().out)["comment"] == "fine"
    monkeypatch.delenv("AEGIS_TEST_OPERATOR")
    assert main(["approvals", "list", "-c", config]) == 2


# --- expiry and budget (a gateway with short lifetimes) -------------------------------------------


SHORT_POLICY = (
    (Path(__file__).parents[2] / "policies" / "support.yaml")
    .read_text()
    .replace(
        "approval: {approvers: support-leads, expires_in: 1h}",
        "approval: {approvers: support-leads, expires_in: 3s, max_pending_per_agent: 2}",
    )
)


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Gateway]:
    with approvals_gateway(
        tmp_path_factory.mktemp("short"), receiver, policy_yaml=SHORT_POLICY, token_ttl="2s", sweep_interval="200ms"
    ) as gateway:
        yield gateway


def test_budget_denies_beyond_max_pending_per_agent(short: Gateway):
    assert refund(short, 201).status_code == 202
    assert refund(short, 202).status_code == 202
    third = refund(short, 203)
    assert (third.status_code, third.json()["rule"]) == (403, "approval-budget-exceeded")
    # Another agent has its own budget.
    assert refund(short, 203, token=short.token(agent="other-bot")).status_code == 202


def test_pending_approval_expires_and_is_reported(short: Gateway, receiver: Receiver):
    time.sleep(3.5)  # let earlier approvals of this gateway expire too (budget test)
    approval_id = pending(short, 210)
    deadline = time.monotonic() + 10
    while status(short, approval_id)["state"] != "expired" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(short, approval_id)["state"] == "expired"
    update = receiver.slack_message(approval_id, "chat.update")["json"]
    assert update["blocks"][0]["text"]["text"] == "Expired: payments.refund"
    late = click(short, approval_id)
    assert (late.status_code, late.json()["error"]) == (409, "not_pending")


def test_expired_override_token_is_refused(short: Gateway):
    approval_id = pending(short, 220)
    approve(short, approval_id)
    token = status(short, approval_id)["override_token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.5)
    expired = refund(short, 220, override=token)
    assert (expired.status_code, expired.json()["rule"]) == (403, "override-expired")
    assert len([r for r in short.received("payments.demo") if b"220" in (r["body"] or "").encode()]) == 0


def test_demo_plays_the_approval_flow(gw: Gateway, monkeypatch: pytest.MonkeyPatch):
    from extauthz.demo import play

    monkeypatch.setenv("AEGIS_TEST_OPERATOR", ENV["AEGIS_TEST_OPERATOR"])
    lines: list[str] = []
    assert play(gw.config, out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "approved by operator" in text
    assert "retry with x-aegis-override: 200 (expected 200); reused: 403 override-reused" in text
    assert "/console/approvals/apr_" in text
