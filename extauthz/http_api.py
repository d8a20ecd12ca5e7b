"""The service's HTTP API: health, readiness, metrics; approvals, AuthZEN and policy routes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from extauthz.approvals.factory import service_routes
from extauthz.authorizer import Authorizer
from extauthz.authzen import authzen_routes
from extauthz.identity import TokenVerifier
from extauthz.telemetry import Metrics


def build_http_app(
    authorizer: Authorizer,
    verifier: TokenVerifier,
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

    # Approvals (extauthz/approvals/): status_url with the override token, operator API,
    # Slack interactions, console.
    approvals = service_routes(authorizer.approvals, verifier) if authorizer.approvals is not None else []
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            *approvals,
            *authzen_routes(authorizer),
            *extra_routes,
        ]
    )
