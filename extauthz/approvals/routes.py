"""HTTP routes of approvals: the agent's status_url, the operator API and Slack interactions.

Identities never mix: the agent's JWT only reads its own approval's status; approvers act
through Slack (signed interactions), the console (login session) or the operator API
(operator token).  An agent JWT presented on an approver path is refused with 403
``agent_cannot_approve`` — an agent can never approve its own request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from extauthz.approvals.service import ApprovalActionError, ApprovalService, iso
from extauthz.approvals.slack import SlackRequestError, parse_interaction, verify_slack_request
from extauthz.errors import AegisError, IdentityError
from extauthz.identity import TokenVerifier
from extauthz.store import PendingApproval

Handler = Callable[[Request], Awaitable[Response]]
MAX_BODY_BYTES = 64 * 1024
STATES = frozenset({"pending", "approved", "denied", "expired", "used"})


def _error(status: int, code: str, message: str, **extra: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def agent_token_refusal(request: Request, verifier: TokenVerifier) -> Response | None:
    """403 if the request carries a valid agent JWT: agents never act as approvers."""
    try:
        identity = verifier.verify_header(request.headers.get("authorization"))
    except IdentityError:
        return None
    return _error(
        403,
        "agent_cannot_approve",
        "agent credentials cannot approve or deny; approvers use Slack, the console or the operator API",
        agent_id=identity.agent_id,
    )


def operator_view(approval: PendingApproval) -> dict[str, Any]:
    """Everything an operator sees (arguments already redacted at creation)."""
    return {
        "approval_id": approval.id,
        "state": approval.state,
        "agent_id": approval.agent_id,
        "tenant": approval.tenant,
        "chain": list(approval.chain),
        "tool": approval.tool,
        "args": json.loads(approval.args_summary),
        "rule": approval.rule,
        "reason": approval.reason,
        "approvers": approval.approvers,
        "policy_version": approval.policy_version,
        "created_at": iso(approval.created_at),
        "expires_at": iso(approval.expires_at),
        "decided_by": approval.decided_by,
        "decided_at": iso(approval.decided_at),
        "comment": approval.comment,
        "used_at": iso(approval.used_at),
    }


def approval_routes(service: ApprovalService, verifier: TokenVerifier, operator_token: str) -> list[BaseRoute]:
    """The routes to mount on the service's HTTP app."""
    operator_digest = hashlib.sha256(operator_token.encode()).hexdigest() if operator_token else ""
    # Unset secret: every interaction is refused (never verified against a guessable key).
    slack_env = service.config.slack_signing_secret_env
    slack_secret = os.environ.get(slack_env, "").encode() if slack_env else b""

    async def status(request: Request) -> Response:
        # Only the agent that asked may poll (same agent id and tenant), with its own JWT.
        try:
            identity = verifier.verify_header(request.headers.get("authorization"))
        except IdentityError as exc:
            challenge = f'Bearer error="invalid_token", error_description="{exc.message}"'
            return JSONResponse(
                {"error": exc.code, "reason": exc.reason, "message": exc.message},
                status_code=401,
                headers={"www-authenticate": challenge},
            )
        approval = service.store.get_approval(request.path_params["approval_id"])
        if approval is None or approval.agent_id != identity.agent_id or approval.tenant != identity.tenant:
            return _error(404, "unknown_approval", "no such approval for this agent")
        return JSONResponse(service.status(approval), headers={"cache-control": "no-store"})

    def operator(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
            presented = hashlib.sha256(token.strip().encode()).hexdigest()
            if operator_digest and scheme.lower() == "bearer" and hmac.compare_digest(presented, operator_digest):
                return await handler(request)
            refusal = agent_token_refusal(request, verifier)
            if refusal is not None:
                return refusal
            if not operator_digest:
                return _error(401, "operator_api_disabled", "no operator token is configured")
            return _error(401, "invalid_operator_token", "send Authorization: Bearer <operator token>")

        return guarded

    @operator
    async def list_approvals(request: Request) -> Response:
        state = request.query_params.get("state")
        if state is not None and state not in STATES:
            return _error(400, "bad_state", f"state must be one of {', '.join(sorted(STATES))}")
        return JSONResponse({"approvals": [operator_view(a) for a in service.store.list_approvals(state)]})

    @operator
    async def show(request: Request) -> Response:
        approval = service.store.get_approval(request.path_params["approval_id"])
        if approval is None:
            return _error(404, "unknown_approval", "no such approval")
        return JSONResponse(operator_view(approval))

    @operator
    async def decide(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in {"approve", "deny"}:
            return _error(404, "unknown_action", "use /approve or /deny")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "malformed_body", "expected a JSON object {comment, as}")
        if not isinstance(body, dict):
            return _error(400, "malformed_body", "expected a JSON object {comment, as}")
        comment, acting_as = body.get("comment"), body.get("as")
        if not isinstance(comment, (str, type(None))) or not isinstance(acting_as, (str, type(None))):
            return _error(400, "malformed_body", "comment and as must be strings")
        approval_id = request.path_params["approval_id"]
        try:
            if acting_as:
                approval = service.store.get_approval(approval_id)
                group = service.group(approval) if approval else None
                if approval is not None and group is not None and not service.is_approver(approval, [acting_as]):
                    return _error(403, "not_an_approver", f"{acting_as!r} is not an approver of {approval.approvers}")
            updated = service.decide(
                approval_id,
                approve=action == "approve",
                approver=acting_as or "operator",
                identities=[acting_as or ""],
                comment=comment,
                via="operator-api",
                operator=True,
            )
        except ApprovalActionError as exc:
            return _error(exc.status, exc.code, exc.message)
        return JSONResponse(operator_view(updated))

    async def slack_interaction(request: Request) -> Response:
        body = await request.body()
        try:
            if len(body) > MAX_BODY_BYTES:
                raise SlackRequestError(400, "body_too_large", "the interaction payload is too large")
            verify_slack_request(
                slack_secret,
                request.headers.get("x-slack-request-timestamp"),
                request.headers.get("x-slack-signature"),
                body,
                time.time(),
            )
            action = parse_interaction(body)
        except SlackRequestError as exc:
            return _error(exc.status, exc.code, exc.message)
        try:
            updated = service.decide(
                action.approval_id,
                approve=action.action == "approve",
                approver=f"slack:{action.user_id}",
                identities=[action.user_id],
                comment=None,
                via="slack",
            )
        except ApprovalActionError as exc:
            return _error(exc.status, exc.code, exc.message)
        return JSONResponse({"ok": True, "approval_id": updated.id, "state": updated.state})

    def fail_closed(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except AegisError as exc:
                return _error(503, exc.code, exc.message)

        return wrapped

    return [
        Route("/v1/approvals/{approval_id}", fail_closed(status), methods=["GET"]),
        Route("/v1/operator/approvals", fail_closed(list_approvals), methods=["GET"]),
        Route("/v1/operator/approvals/{approval_id}", fail_closed(show), methods=["GET"]),
        Route("/v1/operator/approvals/{approval_id}/{action}", fail_closed(decide), methods=["POST"]),
        Route("/v1/slack/interactions", fail_closed(slack_interaction), methods=["POST"]),
    ]
