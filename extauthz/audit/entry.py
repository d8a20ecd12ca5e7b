"""A ``DecisionRecord`` (raw, may hold PII) → the masked JSON document the log writes.

The shape follows OPA's decision-log event (``decision_id``, ``timestamp``, ``labels``,
``bundles``, ``path``, ``input``, ``result``, ``masked``) so OPA tooling can read it, plus the
flat Aegis fields operators filter on (``agent``, ``tool``, ``effect``, ``rule``…).

Masking: every string argument value that ``dlp`` flags (detectors and key names such as
``password``, ``ssn``, ``full_name``) is replaced by ``[REDACTED:TYPE]``, long numbers are
scanned as text too (a card number sent as a JSON number), and the masked JSON pointers are
listed in ``masked`` like OPA does.  Reason texts and the request path pass through the same
detectors.  Headers, tokens and query strings are never part of the record.  With
``audit.sync`` this runs on the Check's thread before it waits for the write; otherwise on the
decision log's sealing thread.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping
from typing import Any

import dlp
from extauthz.decision import Decision
from extauthz.decision_record import DecisionRecord

_ALL = dlp.Obligations(detectors=("*",), mode="mask")
_LONG_NUMBER = 10**6  # integers this large are scanned as text (cards, SSNs, phone numbers)
DECISION_PATH = "aegis/decision"


def rfc3339(timestamp: float) -> str:
    """``2025-01-31T12:00:00.123456Z``."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def mask_text(value: str) -> str:
    """A string with every detected PII value or secret masked."""
    if not value:
        return value
    return _masked_text(value, dlp.reference_date())


# Reason texts and request paths repeat from one decision to the next (one message per rule,
# one path per resource): ~5 µs each through dlp, three per decision.  Keyed by the day too,
# because a date's plausibility as a birth date depends on it.  Bounded; the strings it holds
# are those the process handled a moment ago (the decision cache holds whole calls).
@functools.lru_cache(maxsize=1024)
def _masked_text(value: str, day: object) -> str:
    return dlp.redact(value.encode(), "text/plain", _ALL).body.decode()


def _numbers_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= _LONG_NUMBER:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _numbers_as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_text(v) for v in value]
    return value


def _restore_numbers(masked: Any, original: Any) -> Any:
    """Put back numbers dlp left alone (only masked ones stay strings)."""
    if isinstance(original, int) and not isinstance(original, bool) and masked == str(original):
        return original
    if isinstance(masked, dict) and isinstance(original, Mapping):
        return {k: _restore_numbers(v, original.get(k)) for k, v in masked.items()}
    if isinstance(masked, list) and isinstance(original, (list, tuple)) and len(masked) == len(original):
        return [_restore_numbers(m, o) for m, o in zip(masked, original, strict=True)]
    return masked


def _pointer(location: str, prefix: str) -> str:
    """dlp's ``$.customer.email`` / ``$.items[0].ssn`` → ``/input/tool/args/customer/email``."""
    parts = location.removeprefix("$").replace("[", ".").replace("]", "").split(".")
    return prefix + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts if p)


def mask_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Arguments with flagged values masked, and the JSON pointers of what was masked."""
    if not args:
        return {}, []
    raw = json.dumps(_numbers_as_text(args), ensure_ascii=False, default=str).encode()
    result = dlp.redact(raw, "application/json", _ALL)
    # Numbers dlp left alone are numbers again, masked or not (they were scanned as text).
    masked = _restore_numbers(json.loads(result.body if result.changed else raw), args)
    pointers = sorted({_pointer(f.location, "/input/tool/args") for f in result.findings})
    return masked, pointers


def _result(decision: Decision | None, approval_id: str | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    obligations: dict[str, Any] = {}
    if decision.obligations.needs_redaction:
        obligations["redact"] = decision.obligations.redact_dict()
    if decision.obligations.approval is not None:
        approval = decision.obligations.approval
        obligations["approval"] = {"approvers": approval.approvers, "ttl_s": approval.ttl_s, "id": approval_id}
    return {
        "effect": decision.effect.value,
        "reasons": [{"rule": r.rule, "message": mask_text(r.message)} for r in decision.reasons],
        "obligations": obligations,
        "shadow": [{"rule": s.rule, "effect": s.effect, "message": mask_text(s.message)} for s in decision.shadow],
    }


def decision_entry(record: DecisionRecord, labels: Mapping[str, str]) -> dict[str, Any]:
    """The document one decision becomes (without chain fields)."""
    trace = record.trace
    identity, decision = trace.identity, trace.decision
    args, masked = mask_args(trace.args)
    request = {k: (mask_text(v) if k == "path" else v) for k, v in record.request.items()}
    would = {s.would for s in decision.shadow if s.effect != "allow"} if decision else set()
    return {
        "type": "decision",
        # OPA decision-log fields
        "decision_id": record.decision_id,
        "timestamp": rfc3339(record.timestamp),
        "labels": dict(labels),
        "bundles": {"aegis": {"revision": record.policy_version}},
        "path": DECISION_PATH,
        "input": {
            "agent": {"id": identity.agent_id, "tenant": identity.tenant, "chain": list(identity.chain)}
            if identity
            else None,
            "tool": {"name": trace.tool, "args": args},
            "request": request,
        },
        "result": _result(decision, trace.approval_id),
        "masked": masked,
        # Aegis fields
        "api": record.api,
        "agent": identity.agent_id if identity else None,
        "tenant": identity.tenant if identity else None,
        "tool": trace.tool,
        "effect": decision.effect.value if decision else None,
        "outcome": record.outcome,
        "status": record.status,
        "rule": ",".join(decision.rules) if decision else None,
        "reason": mask_text(decision.reason) if decision else None,
        "approval_id": trace.approval_id,
        "policy_version": record.policy_version,
        "would_deny": "would_deny" in would,
        "would_sanitize": "would_sanitize" in would,
        "would_need_approval": "would_need_approval" in would,
        "error": record.error_code,
    }


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {str(k): _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(v) for v in value]
    return value


def event_entry(kind: str, fields: Mapping[str, Any], timestamp: float, labels: Mapping[str, str]) -> dict[str, Any]:
    """An audit event (e.g. ``approval.approved``): its string fields pass through dlp too."""
    return {
        "type": "event",
        "kind": kind,
        "timestamp": rfc3339(timestamp),
        "labels": dict(labels),
        "fields": {str(k): _mask_value(v) for k, v in fields.items() if v is not None},
    }


def fallback_entry(item: DecisionRecord | tuple[str, Any, float], labels: Mapping[str, str]) -> dict[str, Any]:
    """The entry written when masking failed: only what carries no PII (ids, outcome, version),
    marked ``masking_failed``; the arguments, reasons and event fields are left out."""
    if isinstance(item, DecisionRecord):
        return {
            "type": "decision",
            "decision_id": item.decision_id,
            "timestamp": rfc3339(item.timestamp),
            "labels": dict(labels),
            "bundles": {"aegis": {"revision": item.policy_version}},
            "api": item.api,
            "status": item.status,
            "outcome": item.outcome,
            "policy_version": item.policy_version,
            "error": item.error_code,
            "masking_failed": True,
        }
    kind, _, timestamp = item
    return {
        "type": "event",
        "kind": str(kind),
        "timestamp": rfc3339(timestamp),
        "labels": dict(labels),
        "fields": {},
        "masking_failed": True,
    }
