"""Target: the ext_authz Check handler, called in process with well-typed CheckRequests.

Promise (what a fuzz run checks on every input):

* Check always returns a ``CheckResponse`` (never raises);
* no unexpected exception on the decision path: the answer is never ``internal_error``
  (the authorizer turns one into a fail-closed 503, which would hide a bug from a fuzzer);
* an allowed call carries a token that verifies independently (pyjwt directly, same key,
  issuer and audience) — no input lets a call through without a valid identity;
* a denied call has one of the statuses Aegis documents, a JSON body and the decision id;
* without a valid token the answer is 401 (or 413/431 for an oversized request, which is
  refused before the token is read).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jwt
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

from extauthz.identity import load_pem_public_key
from extauthz.server import MeasuredAuthorizationServicer
from fuzz.targets import FuzzFailure
from fuzz.targets.service import fuzz_service, valid_token

# What Check may answer a denied call with (docs/architecture.md "Answers").
DENIED_STATUSES = frozenset({202, 400, 401, 403, 413, 429, 431, 503})
# Refused before the token is looked at (request shape limits).
REFUSED_BEFORE_IDENTITY = frozenset({413, 431})
VALID = "<valid token>"  # placeholder in a Case: replaced by a freshly minted token


@dataclass(frozen=True)
class Case:
    """One CheckRequest, as Envoy would describe it."""

    method: str = "POST"
    host: str = "payments.demo"
    path: str = "/v1/refunds"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    # The Authorization header: None (absent), or a value in which VALID stands for a fresh token.
    authorization: str | None = f"Bearer {VALID}"
    # (position, replacement) applied to the token: how a forged token is made from a real one.
    token_edit: tuple[int, str] | None = None


@cache
def catalogue() -> tuple[tuple[str, str, str], ...]:
    """(host, method, path template) of every tool of the active policy."""
    policy = fuzz_service().authorizer.policy
    if policy is None:
        raise FuzzFailure("the repo's policies did not load")
    tools = policy.bundle.data["tools"].values()
    return tuple(sorted((t["match"]["host"], t["match"]["method"], t["match"]["path"]) for t in tools))


_token_cache: list[tuple[float, str]] = []


def fresh_token() -> str:
    """A valid token, re-minted well before it expires (long fuzz runs last minutes)."""
    if not _token_cache or time.time() - _token_cache[0][0] > 120:
        _token_cache[:] = [(time.time(), valid_token())]
    return _token_cache[0][1]


def authorization_header(case: Case) -> str | None:
    if case.authorization is None:
        return None
    token = fresh_token()
    if case.token_edit is not None:
        position, replacement = case.token_edit
        position %= len(token) + 1
        token = token[:position] + replacement + token[position + 1 :]
    return case.authorization.replace(VALID, token)


@cache
def _public_key() -> Any:
    return load_pem_public_key(fuzz_service().config.identity.public_keys[0]).key


def independently_valid(authorization: str | None) -> bool:
    """The reference: does this header carry a token that pyjwt itself verifies?"""
    if not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    identity = fuzz_service().config.identity
    try:
        jwt.decode(
            token.strip(),
            _public_key(),
            algorithms=["ES256"],
            audience=identity.audience,
            issuer=identity.issuer,
            leeway=identity.leeway_s,
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return False
    return True


def check_request(case: Case, authorization: str | None) -> external_auth_pb2.CheckRequest:
    headers = dict(case.headers)
    if authorization is not None:
        headers["authorization"] = authorization
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=case.method, host=case.host, path=case.path, headers=headers, raw_body=case.body
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


@cache
def servicer() -> MeasuredAuthorizationServicer:
    return MeasuredAuthorizationServicer(fuzz_service())


def exercise(case: Case) -> external_auth_pb2.CheckResponse:
    """Run one Check and verify the promise; returns the response for further checks."""
    authorization = authorization_header(case)
    response = servicer().Check(check_request(case, authorization), None)
    if not isinstance(response, external_auth_pb2.CheckResponse):
        raise FuzzFailure(f"Check returned {type(response).__name__}, not a CheckResponse")
    valid = independently_valid(authorization)
    if response.status.code == 0:
        _check_allowed(response, valid)
    else:
        _check_denied(response, valid)
    return response


def _headers(options: Any) -> dict[str, str]:
    return {h.header.key: h.header.value for h in options}


def _check_allowed(response: external_auth_pb2.CheckResponse, valid: bool) -> None:
    if not valid:
        raise FuzzFailure("BYPASS: a call without an independently valid token was allowed")
    ok = response.ok_response
    if not {"authorization", "x-aegis-override"} <= set(ok.headers_to_remove):
        raise FuzzFailure("an allowed call keeps the agent's credentials upstream")
    if not _headers(ok.headers).get("x-aegis-decision-id"):
        raise FuzzFailure("an allowed call has no decision id")


def _check_denied(response: external_auth_pb2.CheckResponse, valid: bool) -> None:
    denied = response.denied_response
    status = denied.status.code
    if status not in DENIED_STATUSES:
        raise FuzzFailure(f"undocumented status {status}")
    try:
        body = json.loads(denied.body)
    except ValueError as exc:
        raise FuzzFailure(f"the {status} body is not JSON") from exc
    if not isinstance(body, dict):
        raise FuzzFailure(f"the {status} body is not a JSON object")
    if body.get("error") == "internal_error":
        raise FuzzFailure("unexpected exception on the decision path (fail-closed 503 internal_error; see the log)")
    if _headers(denied.headers).get("x-aegis-decision-id") != body.get("decision_id"):
        raise FuzzFailure("the decision id header does not match the body")
    if not valid and status not in {401} | REFUSED_BEFORE_IDENTITY:
        raise FuzzFailure(f"a call without a valid token got {status}, not 401")
