"""The ``Decision``: what the engine concluded, in types the rest of the pipeline shares."""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from extauthz.errors import EngineError


class Effect(StrEnum):
    """Decision effects, most restrictive last in ``RANK``."""

    ALLOW = "allow"
    SANITIZE = "sanitize"
    APPROVAL_NEEDED = "approval_needed"
    DENY = "deny"


@dataclass(frozen=True)
class Reason:
    """Why: the rule id that produced the effect and a human-readable message."""

    rule: str
    message: str


@dataclass(frozen=True)
class ApprovalObligation:
    """Who must approve an approval_needed call, and for how long the request stands."""

    approvers: str
    ttl_s: float
    rule: str


@dataclass(frozen=True)
class Obligations:
    """What must happen if the call goes ahead."""

    redact_fields: tuple[str, ...] = ()
    redact_detectors: tuple[str, ...] = ()
    approval: ApprovalObligation | None = None
    # A body over the redaction limit: "block" (413) or "pass" (unredacted, logged); "pass"
    # only when every rule asking for redaction says so (policy: redact.over_limit).
    redact_over_limit: str = "block"

    @property
    def needs_redaction(self) -> bool:
        return bool(self.redact_fields or self.redact_detectors)

    def redact_dict(self) -> dict[str, Any]:
        """The ``redact`` obligation as ext_proc reads it (``over_limit`` only when it passes)."""
        data: dict[str, Any] = {"fields": list(self.redact_fields), "detectors": list(self.redact_detectors)}
        if self.redact_over_limit == "pass":
            data["over_limit"] = "pass"
        return data

    @functools.cached_property
    def redact_json(self) -> str:
        """``redact_dict`` as the JSON Check writes into its dynamic metadata; kept, since a
        cached decision's obligations answer many calls."""
        return json.dumps(self.redact_dict(), separators=(",", ":"))


@dataclass(frozen=True)
class ShadowResult:
    """A shadow rule that matched: reported, never enforced."""

    rule: str
    effect: str
    message: str

    @property
    def would(self) -> str:
        return {"deny": "would_deny", "sanitize": "would_sanitize", "approval_needed": "would_need_approval"}.get(
            self.effect, "would_allow"
        )


@dataclass(frozen=True)
class Decision:
    """The engine's answer for one call."""

    effect: Effect
    reasons: tuple[Reason, ...]
    policy_version: str
    obligations: Obligations = field(default_factory=Obligations)
    shadow: tuple[ShadowResult, ...] = ()

    # Cached: a decision from the decision cache answers many calls, and every answer reads these.
    @functools.cached_property
    def would(self) -> str:
        """Shadow outcomes that would have changed the answer: ``would_deny:rule,…``."""
        return ",".join(f"{s.would}:{s.rule}" for s in self.shadow if s.effect != "allow")

    @functools.cached_property
    def rules(self) -> tuple[str, ...]:
        return tuple(r.rule for r in self.reasons)

    @functools.cached_property
    def reason(self) -> str:
        return "; ".join(r.message for r in self.reasons)


def with_shadow_default(decision: Decision, tool: Mapping[str, Any] | None) -> Decision:
    """In a shadow policy set, a call that no rule matched would have met the set's declared
    default: report that as a shadow outcome (the enforced answer stays as it is)."""
    if tool is None or tool.get("mode") != "shadow" or decision.shadow:
        return decision
    declared = str(tool.get("declared_default_effect", "deny"))
    if declared == "allow":
        return decision
    message = f"no rule matched; the shadow policy set's default is {declared}"
    return replace(decision, shadow=(ShadowResult(f"default-{declared}", declared, message),))


def decision_from_result(result: Any, policy_version: str) -> Decision:
    """Validate an engine's raw ``data.aegis.decision`` document into a Decision.

    Both engines go through here, so their answers are normalised the same way (reasons
    sorted by rule id).  Anything unexpected is an EngineError: fail closed.
    """
    try:
        obligations = result["obligations"]
        approval = obligations.get("approval")
        redact = obligations.get("redact") or {}
        return Decision(
            effect=Effect(result["effect"]),
            reasons=tuple(
                sorted((Reason(str(r["rule"]), str(r["message"])) for r in result["reasons"]), key=lambda r: r.rule)
            ),
            policy_version=policy_version,
            obligations=Obligations(
                redact_fields=tuple(sorted(redact.get("fields", []))),
                redact_detectors=tuple(sorted(redact.get("detectors", []))),
                redact_over_limit="pass" if redact.get("over_limit") == "pass" else "block",
                approval=ApprovalObligation(str(approval["approvers"]), float(approval["ttl_s"]), str(approval["rule"]))
                if approval
                else None,
            ),
            shadow=tuple(
                sorted(
                    (
                        ShadowResult(str(s["rule"]), str(s["effect"]), str(s["message"]))
                        for s in result.get("shadow", [])
                    ),
                    key=lambda s: s.rule,
                )
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"the policy engine returned a malformed decision ({exc.__class__.__name__})") from exc


class _Template(string.Formatter):
    """``{amount}`` placeholders; unknown names stay as written, values are shortened."""

    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str) and key in kwargs:
            value = kwargs[key]
            text = (
                value if isinstance(value, str) else repr(value) if not isinstance(value, (int, float)) else str(value)
            )
            return text[:64]
        return "{" + str(key) + "}"


_TEMPLATE = _Template()


_Parts = tuple[tuple[str, str | None], ...]


@functools.lru_cache(maxsize=4096)
def _parsed(template: str) -> _Parts | None:
    """(literal, placeholder) pairs of a template, parsed once: reason templates are the
    policy's own strings, so the cache holds no agent data.  None when a placeholder needs
    the full formatter (a format spec, a conversion, an attribute or index)."""
    try:
        parts = []
        for literal, name, spec, conversion in _TEMPLATE.parse(template):
            if name is not None and (spec or conversion or not name.isidentifier()):
                return None
            parts.append((literal, name))
        return tuple(parts)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def placeholders(template: str) -> frozenset[str]:
    """The ``{name}`` placeholders a reason template quotes."""
    try:
        return frozenset(name for _, name, _, _ in _TEMPLATE.parse(template) if name)
    except ValueError:
        return frozenset()


def render_reason(template: str, variables: Mapping[str, Any]) -> str:
    """Fill a rule's reason template; never raises (a bad template renders as written)."""
    parts = _parsed(template)
    if parts is None:
        try:
            return _TEMPLATE.vformat(template, (), variables)
        except (ValueError, IndexError, AttributeError):
            return template
    get = _TEMPLATE.get_value
    return "".join(literal + (get(name, (), variables) if name is not None else "") for literal, name in parts)
