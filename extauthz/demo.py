"""The support scenario of the brief, played through a running stack (``aegis demo``)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from extauthz.approvals.cli import OperatorClient
from extauthz.config import AegisConfig
from extauthz.devtokens import mint_token
from extauthz.errors import AegisError, ConfigError
from extauthz.policy.parser import load_policy_dir
from extauthz.policy_input import in_calendar

AGENT = "support-bot"
TENANT = "acme"
SCOPES = ("payments.refund", "slack.post_message", "crm.*")


@dataclass(frozen=True)
class Step:
    """One call of the scenario and the status the policy should give it."""

    title: str
    method: str
    host: str
    path: str
    expected: int
    json_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    credential: str = "agent"  # which token: agent | expired


def business_hours_now(config: AegisConfig, now: float) -> bool:
    """Whether the demo policy's business_hours calendar is open at ``now``."""
    if config.policy.dir is None:
        raise ConfigError("the demo reads its calendar from policy.dir; set it in the config")
    calendar = load_policy_dir(config.policy.dir).calendars["business_hours"]
    return in_calendar(calendar.to_data(), dt.datetime.fromtimestamp(now, dt.UTC))


def scenario(open_now: bool) -> list[Step]:
    """The brief's support scenario; the Slack step's expectation follows the clock."""
    refund = "/v1/refunds"
    return [
        Step(
            "refund $20 (within the automatic limit)",
            "POST",
            "payments.demo",
            refund,
            200,
            {"amount": 20.0, "currency": "USD", "customer_id": "c-1"},
        ),
        Step(
            "refund $120 (needs a human approval)",
            "POST",
            "payments.demo",
            refund,
            202,
            {"amount": 120.0, "currency": "USD", "customer_id": "c-1"},
        ),
        Step(
            "refund $900 (over the limit)",
            "POST",
            "payments.demo",
            refund,
            403,
            {"amount": 900.0, "currency": "USD", "customer_id": "c-1"},
        ),
        Step(
            f"Slack post to #support ({'inside' if open_now else 'outside'} business hours)",
            "POST",
            "slack.demo",
            "/api/chat.postMessage",
            200 if open_now else 403,
            {"channel": "#support", "text": "Ticket 4411 resolved"},
        ),
        Step(
            "Slack post to #random (channel not allowed)",
            "POST",
            "slack.demo",
            "/api/chat.postMessage",
            403,
            {"channel": "#random", "text": "hello"},
        ),
        Step(
            "CRM read, own tenant, purpose support",
            "GET",
            "crm.demo",
            f"/tenants/{TENANT}/records/r-1001",
            200,
            headers={"x-aegis-purpose": "support"},
        ),
        Step(
            "CRM read, another tenant",
            "GET",
            "crm.demo",
            "/tenants/globex/records/r-2002",
            403,
            headers={"x-aegis-purpose": "support"},
        ),
        Step(
            "refund with an expired token",
            "POST",
            "payments.demo",
            refund,
            401,
            {"amount": 20.0, "currency": "USD", "customer_id": "c-1"},
            credential="expired",
        ),
    ]


def _summary(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:120]
    if not isinstance(body, dict):
        return json.dumps(body)[:120]
    keys = ("error", "status", "reason", "rule", "approval_id", "status_url", "message")
    picked = {k: body[k] for k in keys if k in body}
    return json.dumps(picked or body)[:400]


def play(config: AegisConfig, *, out: Callable[[str], None] = print, now: float | None = None) -> int:
    """Send every step through Envoy; print call, expected and actual answers; 0 if all matched."""
    now = time.time() if now is None else now
    tokens = {
        "agent": mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=300),
        "expired": mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=300, now=now - 3600),
    }
    failures = 0
    base = f"http://{config.envoy.listen}"
    with httpx.Client(base_url=base, timeout=5) as client:
        for number, step in enumerate(scenario(business_hours_now(config, now)), 1):
            headers = {"host": step.host, "authorization": f"Bearer {tokens[step.credential]}", **(step.headers or {})}
            response = client.request(step.method, step.path, headers=headers, json=step.json_body)
            ok = response.status_code == step.expected
            failures += not ok
            mark = "ok " if ok else "BAD"
            out(f"[{mark}] {number}. {step.title}")
            call = f"{step.method} http://{step.host}{step.path}"
            out(f"       {call} -> {response.status_code} (expected {step.expected})")
            out(f"       {_summary(response)}")
            if ok and response.status_code == 202:
                failures += not play_approval(config, client, step, headers, response, out)
    out(f"\n{len(scenario(True)) - failures} of {len(scenario(True))} steps answered as the policy says.")
    return 1 if failures else 0


def play_approval(
    config: AegisConfig,
    client: httpx.Client,
    step: Step,
    headers: Mapping[str, str],
    answer: httpx.Response,
    out: Callable[[str], None],
) -> bool:
    """The rest of the approval flow: an operator approves (the ``aegis approvals approve`` code
    path), the agent polls status_url with its JWT, then retries once with the override token."""
    approval_id = answer.json()["approval_id"]
    try:
        operator = OperatorClient(config)
    except AegisError as exc:
        out(f"       (approval flow skipped: {exc.message})")
        return True
    try:
        decided = operator.decide(approval_id, "approve", "demo: refund checked", None)
    except AegisError as exc:
        out(f"       [BAD] approve as operator: {exc.message}")
        return False
    finally:
        operator.close()
    out(f"       -> aegis approvals approve {approval_id}: {decided['state']} by {decided['decided_by']}")
    with httpx.Client(timeout=5) as api:
        polled = api.get(answer.json()["status_url"], headers={"authorization": headers["authorization"]}).json()
    token = polled.get("override_token")
    out(f"       -> agent polls status_url: {polled.get('state')}{', override token issued' if token else ''}")
    if not token:
        return False
    retry = client.request(step.method, step.path, headers={**headers, "x-aegis-override": token}, json=step.json_body)
    again = client.request(step.method, step.path, headers={**headers, "x-aegis-override": token}, json=step.json_body)
    out(
        f"       -> retry with x-aegis-override: {retry.status_code} (expected 200); reused: {again.status_code} "
        f"{again.json().get('rule', '') if again.status_code == 403 else ''}".rstrip()
    )
    out(f"       console: {config.service.base_url}/console/approvals/{approval_id}")
    return retry.status_code == 200 and again.status_code == 403
