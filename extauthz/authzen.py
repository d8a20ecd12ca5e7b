"""OpenID AuthZEN Authorization API 1.0 on the HTTP port: orchestrators ask before calling.

    POST /access/v1/evaluation    {subject, action, resource, context} → {decision, context}
    POST /access/v1/evaluations   defaults + "evaluations": [...]      → {evaluations: [...]}

Mapping (documented in docs/policy-language.md): the agent authenticates with its own JWT
(``Authorization: Bearer``) and ``subject.id`` must be that token's ``sub``;
``resource = {type: "tool", id: <tool name>, properties: <arguments>}``; ``action.name``
is free (e.g. ``call``); ``context.headers`` are request headers the policy may read (e.g.
``x-aegis-purpose``).  ``decision`` is true for allow and sanitize (with obligations in
the context), false for deny and approval_needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from extauthz.authorizer import Authorizer
from extauthz.decision import Decision, Effect
from extauthz.errors import AegisError, IdentityError, RequestError

MAX_BATCH = 100
_SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


class _BadRequest(RequestError):
    code = "invalid_request"


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadRequest(f"{name} must be an object")
    return value


def _merge(defaults: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: item.get(key, defaults.get(key)) for key in ("subject", "action", "resource", "context")}


def _call(document: Mapping[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    """(subject id, tool, args, headers) from one evaluation request."""
    subject = _object(document.get("subject"), "subject")
    resource = _object(document.get("resource"), "resource")
    context = _object(document.get("context"), "context")
    _object(document.get("action"), "action")
    if not isinstance(subject.get("id"), str) or not subject["id"]:
        raise _BadRequest("subject.id is required")
    if resource.get("type", "tool") != "tool" or not isinstance(resource.get("id"), str):
        raise _BadRequest("resource must be {type: tool, id: <tool name>, properties: <arguments>}")
    headers = _object(context.get("headers"), "context.headers")
    if not all(isinstance(v, str) for v in headers.values()):
        raise _BadRequest("context.headers values must be strings")
    args = _object(resource.get("properties"), "resource.properties")
    return subject["id"], resource["id"], args, {k.lower(): v for k, v in headers.items()}


def _result(decision_id: str, decision: Decision) -> dict[str, Any]:
    context: dict[str, Any] = {
        "id": decision_id,
        "effect": decision.effect.value,
        "rules": list(decision.rules),
        "reason_user": {"en": decision.reason},
        "policy_version": decision.policy_version,
    }
    if decision.obligations.needs_redaction:
        context["obligations"] = {"redact": decision.obligations.redact_dict()}
    if decision.would:
        context["shadow"] = decision.would
    return {"decision": decision.effect in (Effect.ALLOW, Effect.SANITIZE), "context": context}


def _evaluate_one(authorizer: Authorizer, authorization: str | None, document: Mapping[str, Any]) -> dict[str, Any]:
    subject_id, tool, args, headers = _call(document)
    decision_id, decision = authorizer.evaluate(authorization, tool, args, headers, subject=subject_id)
    return _result(decision_id, decision)


def _error(error: AegisError) -> JSONResponse:
    body: dict[str, Any] = {"error": error.code, "message": error.message}
    headers = {}
    if isinstance(error, IdentityError):
        body["reason"] = error.reason
        headers["www-authenticate"] = f'Bearer error="invalid_token", error_description="{error.message}"'
    return JSONResponse(body, status_code=error.http_status, headers=headers)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        document = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest("the body is not JSON") from None
    return _object(document, "the body")


def authzen_routes(authorizer: Authorizer) -> list[Route]:
    """The AuthZEN evaluation endpoints."""

    async def evaluation(request: Request) -> Response:
        try:
            document = await _json_body(request)
            return JSONResponse(_evaluate_one(authorizer, request.headers.get("authorization"), document))
        except AegisError as error:
            return _error(error)

    async def evaluations(request: Request) -> Response:
        try:
            document = await _json_body(request)
            items = document.get("evaluations")
            if not items:  # no batch: behaves like a single evaluation (AuthZEN 1.0)
                return JSONResponse(_evaluate_one(authorizer, request.headers.get("authorization"), document))
            if not isinstance(items, list) or len(items) > MAX_BATCH:
                raise _BadRequest(f"evaluations must be a list of at most {MAX_BATCH} requests")
            semantic = _object(document.get("options"), "options").get("evaluations_semantic", "execute_all")
            if semantic not in _SEMANTICS:
                raise _BadRequest(f"options.evaluations_semantic must be one of {', '.join(_SEMANTICS)}")
            results = []
            for item in items:
                result = _evaluate_one(
                    authorizer, request.headers.get("authorization"), _merge(document, _object(item, "evaluation"))
                )
                results.append(result)
                if (semantic == "deny_on_first_deny" and not result["decision"]) or (
                    semantic == "permit_on_first_permit" and result["decision"]
                ):
                    break
            return JSONResponse({"evaluations": results})
        except AegisError as error:
            return _error(error)

    return [
        Route("/access/v1/evaluation", evaluation, methods=["POST"]),
        Route("/access/v1/evaluations", evaluations, methods=["POST"]),
    ]
