"""Policy administration on the HTTP port: the active version, and a forced reload.

    GET  /v1/policy          active version, load time, tools, reload status
    POST /v1/policy/reload   admin only: load the source now (a broken version is rejected)

The admin credential is a random token in the environment variable named by
``service.admin_token_env``; without it the reload endpoint is disabled.  Agent JWTs are
never admin credentials.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from extauthz.authorizer import Authorizer
from extauthz.reload import PolicyReloader


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def is_admin(authorization: str | None, admin_token: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <admin token>``."""
    if not admin_token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    expected = hashlib.sha256(admin_token.encode()).digest()
    return hmac.compare_digest(hashlib.sha256(presented.strip().encode()).digest(), expected)


def policy_routes(authorizer: Authorizer, reloader: PolicyReloader, admin_token: str | None) -> list[Route]:
    """The policy administration endpoints."""

    def describe() -> dict[str, object]:
        policy = authorizer.policy
        status = reloader.status
        return {
            "policy_version": policy.version if policy else None,
            "loaded_at": _iso(policy.loaded_at) if policy else None,
            "tools": sorted(policy.bundle.data["tools"]) if policy else [],
            "reload": {
                "last_error": status.last_error,
                "last_attempt_at": _iso(status.last_attempt_at),
                "failures": status.failures,
                "reloads": status.reloads,
            },
        }

    async def policy_info(request: Request) -> Response:
        body = describe()
        return JSONResponse(body, status_code=200 if body["policy_version"] else 503)

    async def reload(request: Request) -> Response:
        if not admin_token:
            return JSONResponse({"error": "admin_disabled", "message": "set service.admin_token_env to enable"}, 403)
        if not is_admin(request.headers.get("authorization"), admin_token):
            return JSONResponse(
                {"error": "not_admin", "message": "an admin token is required"},
                401,
                headers={"www-authenticate": 'Bearer realm="aegis-admin"'},
            )
        before = authorizer.policy.version if authorizer.policy else None
        await run_in_threadpool(reloader.reload, force=True)
        body = describe()
        body["changed"] = body["policy_version"] != before
        return JSONResponse(body, status_code=200 if reloader.status.last_error is None else 422)

    return [Route("/v1/policy", policy_info), Route("/v1/policy/reload", reload, methods=["POST"])]
