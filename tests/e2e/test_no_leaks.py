"""No PII or secret sent in a call reaches any log, metric or error body.

Calls full of PII and secrets go through the allow, deny, sanitize, approval and error
paths of a real gateway (Envoy + service + demo tools, decision log on); then the decision
log, Envoy's access log, the service's and Envoy's own output, /metrics and every error
body are searched for each value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from audit_stack import start_audited_gateway

pytestmark = pytest.mark.e2e

EMAIL = "jane.roe.leak@example.org"
SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
PHONE = "+1 415 555 0132"
STRIPE = "sk_live_51HleakLEAKleak0123456789"
AWS = "AKIAZ7LEAKQ3XV5TG2PB"
IBAN = "DE89370400440532013000"
PASSWORD = "password=Hunter2LeakLeak"
QUERY_EMAIL = "query.leak@example.net"  # only ever sent in a query string
SECRETS = {
    "email": EMAIL,
    "ssn": SSN,
    "card": CARD,
    "card digits": CARD.replace(" ", ""),
    "phone": PHONE,
    "phone digits": "4155550132",
    "stripe key": STRIPE,
    "aws key": AWS,
    "iban": IBAN,
    "password": "Hunter2LeakLeak",
}


@dataclass
class Run:
    root: Path
    responses: list[httpx.Response] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    metrics: str = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("noleaks")
    gw, _ = start_audited_gateway(root, checkpoint_every=5)
    result = Run(root)
    try:
        token = gw.token()
        result.tokens.append(token)
        refund = "/v1/refunds"

        def call(method: str, host: str, path: str, **kw: object) -> None:
            result.responses.append(gw.call(method, host, path, **kw))

        purpose = {"x-aegis-purpose": f"support for {EMAIL}"}
        call("POST", "payments.demo", refund, token=token, json={"amount": 20, "customer_id": EMAIL}, headers=purpose)
        call("POST", "payments.demo", refund, token=token, json={"amount": 120, "customer_id": f"ssn {SSN}"})
        call("POST", "payments.demo", refund, token=token, json={"amount": 900, "customer_id": STRIPE})
        text = f"card {CARD}, call {PHONE}, {AWS}, {PASSWORD}, iban {IBAN}, mail {EMAIL}"
        call("POST", "slack.demo", "/api/chat.postMessage", token=token, json={"channel": "#random", "text": text})
        call("POST", "slack.demo", "/api/chat.postMessage", token=token, json={"channel": "#support", "text": text})
        support = {"x-aegis-purpose": "support"}
        call("GET", "crm.demo", f"/tenants/acme/records/r-1?note={QUERY_EMAIL}", token=token, headers=support)
        call("GET", "crm.demo", "/tenants/other/records/r-2", token=token)
        # error paths: malformed body, wrong argument type, unknown tool, bad token
        call("POST", "payments.demo", refund, token=token, content=f'{{"amount": 20, "customer_id": "{EMAIL}"')
        call("POST", "payments.demo", refund, token=token, json={"amount": f"ssn {SSN}", "customer_id": EMAIL})
        call("POST", "payments.demo", "/v1/other", token=token, json={"card": CARD, "email": EMAIL})
        call("POST", "payments.demo", refund, auth=False, headers={"authorization": f"Bearer {STRIPE}"}, json={})
        expired = gw.token(ttl_s=-120)
        result.tokens.append(expired)
        call("POST", "payments.demo", refund, token=expired, json={"amount": 20, "customer_id": EMAIL})
        result.metrics = httpx.get(f"http://{gw.config.service.http}/metrics", timeout=5).text
        last = result.responses[-1].headers["x-aegis-decision-id"]
        gw.access_log(last)  # Envoy has flushed everything
    finally:
        gw.client.close()
        gw.stack.stop()  # the service closes the decision log: final signed checkpoint
    yield result


def _find_leaks(text: str, tokens: list[str]) -> list[str]:
    leaks = [name for name, value in SECRETS.items() if value in text]
    leaks += [f"token …{t[-8:]}" for t in tokens if t in text or t.split(".")[-1] in text]
    return leaks


def test_every_path_was_taken(run: Run) -> None:
    statuses = [r.status_code for r in run.responses]
    assert statuses[:4] == [200, 202, 403, 403]
    assert statuses[4] in {200, 403}  # sanitize in business hours, else denied
    assert 400 in statuses and 401 in statuses
    decisions = [json.loads(line) for line in (run.root / "decisions.jsonl").read_text().splitlines()]
    outcomes = {d["outcome"] for d in decisions if d["type"] == "decision"}
    assert {"allow", "approval_needed", "deny", "sanitize", "bad_request", "unauthenticated"} <= outcomes
    assert any(d.get("would_deny") for d in decisions if d["type"] == "decision")


@pytest.mark.parametrize("name", ["decisions.jsonl", "gw/access.log", "logs/aegis.log", "logs/envoy.log"])
def test_no_secret_in_logs(run: Run, name: str) -> None:
    text = (run.root / name).read_text(errors="replace")
    assert text.strip() or name == "logs/envoy.log", f"{name} is empty"  # Envoy logs at warn: often empty
    assert _find_leaks(text, run.tokens) == []


def test_no_query_string_value_in_the_access_log(run: Run) -> None:
    assert QUERY_EMAIL not in (run.root / "gw/access.log").read_text()


@pytest.mark.parametrize("name", ["decisions.jsonl", "logs/aegis.log", "logs/envoy.log"])
def test_no_query_string_value_elsewhere(run: Run, name: str) -> None:
    assert QUERY_EMAIL not in (run.root / name).read_text()


def test_no_secret_in_metrics(run: Run) -> None:
    assert "aegis_decision_log_entries_total" in run.metrics
    assert _find_leaks(run.metrics, run.tokens) == []


def test_no_secret_in_error_bodies(run: Run) -> None:
    errors = [r for r in run.responses if r.status_code >= 400 or r.status_code == 202]
    assert len(errors) >= 6
    for response in errors:
        assert _find_leaks(response.text + json.dumps(dict(response.headers)), run.tokens) == [], response.text


def test_the_decision_log_of_the_run_verifies(run: Run) -> None:
    from extauthz.cli import main

    assert (
        main(["audit", "verify", str(run.root / "decisions.jsonl"), "--key", str(run.root / "gw/keys/audit.pub.pem")])
        == 0
    )
