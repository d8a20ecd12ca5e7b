"""The service's HTTP API: health, readiness, metrics, policy info and approval status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from extauthz.approvals.factory import service_routes
from extauthz.authorizer import Authorizer
from extauthz.authzen import authzen_routes
from extauthz.errors import AegisError, IdentityError
from extauthz.identity import TokenVerifier
from extauthz.store import Store
from extauthz.telemetry import Metrics


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def build_http_app(
    authorizer: Authorizer,
    verifier: TokenVerifier,
    store: Store,
    metrics: Metrics,
    readiness_detail: Callable[[], dict[str, Any]],
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The Starlette app served on ``service.http``."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        detail = readiness_detail()
        return JSONResponse(detail, status_code=200 if detail["ready"] else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def approval_status(request: Request) -> Response:
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
        try:
            approval = store.get_approval(request.path_params["approval_id"])
        except AegisError as exc:
            return _error(503, exc.code, exc.message)
        if approval is None or approval.agent_id != identity.agent_id or approval.tenant != identity.tenant:
            return _error(404, "unknown_approval", "no such approval for this agent")
        data = asdict(approval)
        body = {
            "approval_id": approval.id,
            "state": approval.state,
            "tool": approval.tool,
            "reason": approval.reason,
            "rule": approval.rule,
            "policy_version": approval.policy_version,
            "created_at": _iso(approval.created_at),
            "expires_at": _iso(approval.expires_at),
            "decided_by": data["decided_by"],
            "decided_at": _iso(approval.decided_at),
        }
        return JSONResponse(body)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            # Approvals (extauthz/approvals/): status_url with the override token, operator API,
            # Slack interactions, console; the plain status route only without an approval service.
            *(
                service_routes(authorizer.approvals, verifier)
                if authorizer.approvals is not None
                else [Route("/v1/approvals/{approval_id}", approval_status)]
            ),
            *authzen_routes(authorizer),
            *extra_routes,
        ]
    )
