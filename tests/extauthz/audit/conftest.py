"""Decision records and decision logs for the audit tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.audit.keys import generate
from extauthz.audit.settings import AuditConfig
from extauthz.audit.writer import DecisionLog
from extauthz.decision import Decision, Effect, Obligations, Reason, ShadowResult
from extauthz.decision_record import DecisionRecord, DecisionTrace
from extauthz.identity import AgentIdentity

PII_ARGS = {
    "amount": 120,
    "email": "jane.doe@example.com",
    "note": "call +1 415 555 0132, SSN 123-45-6789",
    "card": 4111111111111111,
    "api_key": "sk_live_51Habcdefghijklmnopqrstuv",
    "customer": {"full_name": "Jane Doe"},
}
SECRETS = ["jane.doe@example.com", "555 0132", "123-45-6789", "4111111111111111", "sk_live_51Habc", "Jane Doe"]


def make_record(
    n: int = 0, *, effect: Effect = Effect.ALLOW, args: dict[str, Any] | None = None, shadow: bool = False
) -> DecisionRecord:
    decision = Decision(
        effect=effect,
        reasons=(Reason("rule-x", f"reason {n}"),) if effect is not Effect.ALLOW else (),
        policy_version="abc123",
        obligations=Obligations(redact_fields=("ssn",)) if effect is Effect.SANITIZE else Obligations(),
        shadow=(ShadowResult("shadow-rule", "deny", "would deny for jane.doe@example.com"),) if shadow else (),
    )
    trace = DecisionTrace(
        identity=AgentIdentity("support-bot", "acme", ("payments.refund",)),
        tool="payments.refund",
        args=dict(PII_ARGS if args is None else args),
        decision=decision,
    )
    return DecisionRecord(
        decision_id=f"d{n:04d}",
        timestamp=time.time(),
        api="ext_authz",
        status=200 if effect is Effect.ALLOW else 403,
        outcome=effect.value,
        policy_version="abc123",
        request={"method": "POST", "host": "payments.demo", "path": "/v1/refunds"},
        trace=trace,
    )


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "keys" / "audit.pem"
    public, _ = generate(private)
    return private, public


@pytest.fixture
def open_log(tmp_path: Path, signing_key: tuple[Path, Path]) -> Iterator[Callable[..., DecisionLog]]:
    opened: list[DecisionLog] = []

    def factory(**kw: Any) -> DecisionLog:
        settings: dict[str, Any] = {"path": tmp_path / "decisions.jsonl", "signing_key": signing_key[0]}
        options = {k: kw.pop(k) for k in ("opener", "stream", "metrics", "retry_s") if k in kw}
        log = DecisionLog(AuditConfig(**{**settings, **kw}), **options)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close(timeout=5)
