"""The decision path, transport-neutral: request → identity → tool → input → engine → answer.

``Authorizer.check`` reads as the ordered chain of decisions it makes.  Any error on the
path denies: typed errors get their precise answer, anything else a generic 503.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from extauthz.answer import Answer, answer_for_decision, answer_for_error, internal_error_answer
from extauthz.approvals.factory import max_pending_for
from extauthz.approvals.override import refusal_decision
from extauthz.approvals.service import ApprovalService, over_budget
from extauthz.approvals.tokens import OVERRIDE_INVALID, OverrideClaims, OverrideRefused
from extauthz.decision import Decision, Effect, Reason, placeholders, render_reason, with_shadow_default
from extauthz.decision_cache import DEFAULT_ENTRIES as DEFAULT_CACHE_ENTRIES
from extauthz.decision_cache import CacheStats, DecisionCache
from extauthz.decision_record import DecisionRecord, DecisionSink, DecisionTrace, new_decision_id
from extauthz.engine import PolicyEngine, create_engine
from extauthz.errors import AegisError, BodyTooLarge, DecisionLogError, EngineError, IdentityError
from extauthz.identity import AgentIdentity, TokenVerifier
from extauthz.limits.enforce import BudgetWarner, LimitEnforcer, UsageCharge, encode_charges
from extauthz.limits.model import PolicyLimits
from extauthz.log_stream import log_info
from extauthz.metadata import HEADER_OVERRIDE, HEADER_PURPOSE, MD_DECISION, MD_USAGE
from extauthz.policy.bundle import Bundle, build_bundle
from extauthz.policy_input import build_input
from extauthz.redaction import safe_text, summarize_args
from extauthz.request_limits import check_headers
from extauthz.store import PendingApproval, PendingLimitReached, Store
from extauthz.tools import HttpRequest, ToolCall, ToolCatalogue, ToolSpec

log = logging.getLogger("aegis.decision")


@dataclass(frozen=True)
class ActivePolicy:
    """Everything derived from one bundle; swapped as a whole so a call sees one version."""

    bundle: Bundle
    engine: PolicyEngine
    catalogue: ToolCatalogue
    calendars: Mapping[str, Mapping[str, Any]]
    loaded_at: float
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    # Identical calls share a decision (None: the engine's decisions cannot be cached).
    decisions: DecisionCache | None = None

    @property
    def version(self) -> str:
        return self.bundle.revision


def activate(
    bundle: Bundle,
    engine: str = "embedded",
    *,
    opa_url: str = "",
    opa_timeout_s: float = 0.0,
    decision_cache_entries: int = DEFAULT_CACHE_ENTRIES,
    decision_cache_stats: CacheStats | None = None,
) -> ActivePolicy:
    """Compile a bundle into an ActivePolicy (off the hot path; raises PolicyError)."""
    tools = [ToolSpec.from_data(name, data) for name, data in bundle.data["tools"].items()]
    policy_engine = create_engine(bundle, engine, opa_url=opa_url or None, opa_timeout_s=opa_timeout_s or None)
    calendars = bundle.data.get("calendars", {})
    headers_read = policy_engine.headers_read
    cache = None
    if headers_read is not None and decision_cache_entries > 0:
        cache = DecisionCache(headers_read, calendars, decision_cache_entries, decision_cache_stats)
    return ActivePolicy(
        bundle=bundle,
        engine=policy_engine,
        catalogue=ToolCatalogue(tools),
        calendars=calendars,
        loaded_at=time.time(),
        limits=PolicyLimits.from_bundle_data(bundle.data),
        decisions=cache,
    )


def load_policy_dir(directory: Path, engine: str = "embedded") -> ActivePolicy:
    """Build and activate the bundle of a policy directory."""
    return activate(build_bundle(directory), engine)


def request_fingerprint(request: HttpRequest, args: Mapping[str, Any]) -> str:
    """SHA-256 over method, host, path and the canonical arguments: what an approval binds to."""
    canonical = json.dumps(
        [request.method, request.host.lower(), request.path, args],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Authorizer:
    """Decides one call at a time; safe to call from many threads."""

    def __init__(
        self,
        verifier: TokenVerifier,
        store: Store,
        *,
        policy: ActivePolicy | None,
        base_url: str,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
        sink: DecisionSink | None = None,
        approvals: ApprovalService | None = None,
        limits: LimitEnforcer | None = None,
        log_gate: Callable[[], None] | None = None,
    ) -> None:
        self._verifier = verifier
        # Raises DecisionLogError while the decision log cannot be written (audit/writer.py).
        self._log_gate = log_gate
        self._limits = limits
        self._approvals = approvals
        self._store = store
        self._policy = policy
        self._base_url = base_url.rstrip("/")
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._sink = sink  # None: no decision log, so no record is built

    @property
    def policy(self) -> ActivePolicy | None:
        return self._policy

    @property
    def approvals(self) -> ApprovalService | None:
        return self._approvals

    @property
    def limits_warner(self) -> BudgetWarner | None:
        """The budget warner, shared with ext_proc's usage recording."""
        return self._limits.warner if self._limits is not None else None

    def swap_policy(self, policy: ActivePolicy) -> None:
        """Atomically replace the active policy; in-flight calls finish on the old one."""
        self._policy = policy

    def check(self, request: HttpRequest) -> Answer:
        """Decide one call.  Never raises: every failure becomes a denying answer."""
        decision_id = new_decision_id()
        started = self._clock()
        policy = self._policy  # one snapshot for the whole call
        trace = DecisionTrace()
        error_code: str | None = None
        try:
            answer = self._decide(request, decision_id, policy, trace)
        except AegisError as error:
            error_code = error.code
            answer = answer_for_error(error, decision_id, policy_version=policy.version if policy else "")
        except Exception:
            log.exception("decision failed unexpectedly", extra={"aegis": {"decision_id": decision_id}})
            error_code = "internal_error"
            answer = internal_error_answer(decision_id)
        log_info(log, "decision", {**answer.metadata, "error": error_code})
        if self._sink is None:
            return answer
        recorded = self._record(
            DecisionRecord(
                decision_id=decision_id,
                timestamp=started,
                api="ext_authz",
                status=answer.status,
                outcome=answer.metadata.get(MD_DECISION, "error"),
                policy_version=policy.version if policy else "",
                request={"method": request.method, "host": request.host, "path": request.path},
                trace=trace,
                error_code=error_code,
            )
        )
        if not recorded and error_code != DecisionLogError.code:
            # No answer without its record: the log could not take it in time (fail closed).
            refusal = DecisionLogError("the decision could not be recorded in the decision log; the call is refused")
            answer = answer_for_error(refusal, decision_id, policy_version=policy.version if policy else "")
        return answer

    def _record(self, record: DecisionRecord) -> bool:
        """Hand the record to the decision log; False if it could not be recorded."""
        if self._sink is None:
            return True
        try:
            return self._sink(record) is not False
        except Exception:
            log.exception("decision log sink failed", extra={"aegis": {"decision_id": record.decision_id}})
            return False

    def evaluate(
        self,
        authorization: str | None,
        tool: str,
        args: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        subject: str | None = None,
    ) -> tuple[str, Decision]:
        """Decide a call an orchestrator is about to make (AuthZEN), without the HTTP request.

        Same identity, engine and decision log as Check; no approval is recorded (the real
        call through Envoy does that).  Raises AegisError subclasses for the edge to answer.
        """
        decision_id = new_decision_id()
        started = self._clock()
        policy = self._policy
        if self._log_gate is not None:
            self._log_gate()
        identity = self._verifier.verify_header(authorization)
        if subject is not None and subject != identity.agent_id:
            # An orchestrator may only ask about the agent whose token it presents.
            raise IdentityError("subject_mismatch", "the subject is not the agent the token identifies")
        if policy is None:
            raise EngineError("no policy is loaded; see /readyz")
        call = policy.catalogue.call(tool, args)
        request = HttpRequest(method="", host="", path="", query="", headers=dict(headers))
        decision = self._engine_decision(policy, identity, call, request, self._clock())
        log_info(
            log,
            "decision",
            {
                "decision_id": decision_id,
                "decision": decision.effect.value,
                "rule": ",".join(decision.rules),
                "policy_version": decision.policy_version,
                "agent_id": identity.agent_id,
                "tool": call.name,
                "api": "authzen",
                "shadow": decision.would or None,
            },
        )
        recorded = self._record(
            DecisionRecord(
                decision_id=decision_id,
                timestamp=started,
                api="authzen",
                status=200,
                outcome=decision.effect.value,
                policy_version=decision.policy_version,
                request={},
                trace=DecisionTrace(identity=identity, tool=call.name, args=call.args, decision=decision),
            )
        )
        if not recorded:
            raise DecisionLogError("the decision could not be recorded in the decision log")
        return decision_id, decision

    def _engine_decision(
        self,
        policy: ActivePolicy,
        identity: AgentIdentity,
        call: ToolCall,
        request: HttpRequest,
        now: float,
        override: OverrideClaims | None = None,
    ) -> Decision:
        """Input → engine → shadow defaults → rendered reasons."""
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        facts = override.to_input() if override is not None else None
        decision = policy.engine.evaluate(build_input(identity, call, request, policy.calendars, moment, facts))
        decision = with_shadow_default(decision, policy.bundle.data["tools"].get(call.name or ""))
        return _with_rendered_reasons(decision, call, request)

    def _decide(
        self, request: HttpRequest, decision_id: str, policy: ActivePolicy | None, trace: DecisionTrace
    ) -> Answer:
        # 0. A decision that cannot be recorded is not made: while the decision log cannot be
        #    written (disk full…), every call is refused before any side effect (fail closed).
        if self._log_gate is not None:
            self._log_gate()
        # 1. A body Envoy truncated cannot be judged (the unseen part could change the call).
        if request.body_truncated or len(request.body) > self._max_body_bytes:
            raise BodyTooLarge(f"the request body exceeds {self._max_body_bytes} bytes")
        #    Nor can a header block larger than Aegis bounds (431; extauthz/request_limits.py).
        check_headers(request.headers)
        # 2. Who: the agent's JWT.
        identity = trace.identity = self._verifier.verify_header(request.headers.get("authorization"))
        # 3. Without a policy nothing is allowed (fail closed).
        if policy is None:
            raise EngineError("no policy is loaded; see /readyz")
        now = self._clock()
        # 4. Which tool, which arguments; and 6. below, the engine's decision: both reused
        #    for a call identical to a recent one (extauthz/decision_cache.py).
        cache = policy.decisions
        cache_key = cache.key(identity, request, now) if cache is not None else None
        cached = cache.get(cache_key) if cache is not None and cache_key is not None else None
        call = cached.call if cached is not None else policy.catalogue.match(request)
        trace.tool, trace.args = call.name, call.args
        charges: list[UsageCharge] = []
        try:
            # 5. A human approval's override token (x-aegis-override) is verified against this
            #    agent and this exact call before the engine runs (extauthz/approvals/override.py).
            override = self._verify_override(request, identity, call, now)
            # 6. The engine decides (verified override facts are part of its input).
            if cached is not None:
                decision = cached.decision
            else:
                decision = self._engine_decision(policy, identity, call, request, now, override)
                if cache is not None and cache_key is not None:
                    cache.put(cache_key, call, decision)
            # 7. Rate limits, then budgets (extauthz/limits/), for calls the policy lets through:
            #    allow, sanitize, or the approval this call carries a token for.  After the engine
            #    so denied and queued calls spend nothing; before the token is spent so a limited
            #    retry keeps its approval.  Over a limit: LimitExceeded (429, Retry-After); store
            #    down: StoreError (503) unless a rate limit says on_store_error: allow.
            charges = self._enforce_limits(policy, identity, call, decision, override, now)
            # 8. The override counts only where the engine asks for that same approval: spent once,
            #    atomically.  Deny rules still deny; redaction obligations still apply.
            if override is not None and self._approvals is not None:
                decision = self._approvals.overrides.consume(override, decision, now)
        except OverrideRefused as refusal:
            decision = refusal_decision(refusal, policy.version)
        trace.decision = decision
        # 9. approval_needed: record (or find) the pending approval the agent will poll, unless
        #    the agent is over the rule's approval budget (then the call is denied, not queued).
        approval = None
        if decision.effect is Effect.APPROVAL_NEEDED:
            try:
                approval = self._pending_approval(policy, identity, call, request, decision, now)
                trace.approval_id = approval.id
            except PendingLimitReached as full:
                decision = trace.decision = over_budget(decision, full.limit)
        answer = answer_for_decision(
            decision,
            decision_id,
            agent_id=identity.agent_id,
            tool=call.name,
            approval=approval,
            status_url=f"{self._base_url}/v1/approvals/{approval.id}" if approval else None,
        )
        # 10. Cost budgets priced by the response: ext_proc adds its token usage (MD_USAGE).
        if charges and answer.allowed:
            answer = replace(answer, metadata={**answer.metadata, MD_USAGE: encode_charges(charges)})
        return answer

    def _enforce_limits(
        self,
        policy: ActivePolicy,
        identity: AgentIdentity,
        call: ToolCall,
        decision: Decision,
        override: OverrideClaims | None,
        now: float,
    ) -> list[UsageCharge]:
        if self._limits is None or call.name is None:
            return []
        passes = decision.effect in (Effect.ALLOW, Effect.SANITIZE) or (
            decision.effect is Effect.APPROVAL_NEEDED and override is not None
        )
        if not passes:
            return []
        return self._limits.enforce(policy.limits, identity, call.name, now)

    def _verify_override(
        self, request: HttpRequest, identity: AgentIdentity, call: ToolCall, now: float
    ) -> OverrideClaims | None:
        token = request.headers.get(HEADER_OVERRIDE)
        if token is None:
            return None
        if self._approvals is None:
            raise OverrideRefused(OVERRIDE_INVALID, "approvals are not enabled on this gateway")
        return self._approvals.overrides.verify(token, identity, request_fingerprint(request, call.args), now)

    def _pending_approval(
        self,
        policy: ActivePolicy,
        identity: AgentIdentity,
        call: ToolCall,
        request: HttpRequest,
        decision: Decision,
        now: float,
    ) -> PendingApproval:
        obligation = decision.obligations.approval
        if obligation is None:
            raise EngineError("approval_needed without approvers in the decision")
        candidate = PendingApproval(
            id=f"apr_{uuid.uuid4().hex}",
            agent_id=identity.agent_id,
            tenant=identity.tenant,
            chain=identity.chain,
            tool=call.name or "",
            args_summary=summarize_args(call.args),
            fingerprint=request_fingerprint(request, call.args),
            rule=obligation.rule,
            reason=decision.reason,
            policy_version=decision.policy_version,
            approvers=obligation.approvers,
            created_at=now,
            expires_at=now + obligation.ttl_s,
        )
        max_pending = max_pending_for(policy.bundle.data, candidate.tool, obligation.rule)
        if self._approvals is None:
            return self._store.create_or_get_pending(candidate, now, max_pending=max_pending)
        return self._approvals.request(candidate, now, max_pending)


def _with_rendered_reasons(decision: Decision, call: ToolCall, request: HttpRequest) -> Decision:
    """Fill ``{arg}`` placeholders of rule reasons (and shadow messages) with the call's values."""
    messages = [r.message for r in decision.reasons] + [s.message for s in decision.shadow]
    names = {name for message in messages for name in placeholders(message)}
    if not names:
        return decision
    values: dict[str, Any] = {"purpose": request.headers.get(HEADER_PURPOSE, "(none)"), "tool": call.name or ""}
    values.update({k: v for k, v in call.args.items() if isinstance(v, (str, int, float))})
    # Reasons reach the agent and the logs: the quoted values (only those) go through DLP first.
    variables = {k: safe_text(v) if isinstance(v, str) else v for k, v in values.items() if k in names}
    reasons = tuple(Reason(r.rule, render_reason(r.message, variables)) for r in decision.reasons)
    shadow = tuple(replace(s, message=render_reason(s.message, variables)) for s in decision.shadow)
    return replace(decision, reasons=reasons, shadow=shadow)
