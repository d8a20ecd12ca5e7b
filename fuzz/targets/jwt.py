"""Target: the JWT verifier wrapper (``extauthz.identity.TokenVerifier.verify_header``).

Cases are raw ``Authorization`` values, or tokens *signed with the configured key* over
fuzzed header and payload bytes (so claim handling is reached, not only signature checks).
Promise, for every input:

* the result is an ``AgentIdentity`` or an ``IdentityError`` (a 401) — never another
  exception;
* an identity is only returned for a token pyjwt itself verifies with the configured key,
  issuer and audience, and it names the token's ``sub`` and ``tenant``;
* an error's reason and message never contain the token.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

from extauthz.devtokens import load_signing_key
from extauthz.errors import IdentityError
from extauthz.identity import AgentIdentity, TokenVerifier, keyset_from_config
from fuzz.targets import FuzzFailure
from fuzz.targets.check import independently_valid
from fuzz.targets.service import fuzz_service


@dataclass(frozen=True)
class Case:
    """Either ``raw`` (the header value as sent) or a header and payload to sign."""

    raw: str | None = None
    header: bytes = b'{"alg":"ES256","typ":"JWT"}'
    payload: bytes = b"{}"
    scheme: str = "Bearer "
    sign: bool = True


@cache
def verifier() -> TokenVerifier:
    """A verifier of its own (same config and keys as the service; its own token cache)."""
    identity = fuzz_service().config.identity
    return TokenVerifier(identity, keyset_from_config(identity))


@cache
def _signing_key() -> Any:
    path = fuzz_service().config.identity.dev_signing_key
    if path is None:
        raise FuzzFailure("the fuzz service has no dev signing key")
    return load_signing_key(path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: bytes, payload: bytes, sign: bool = True) -> str:
    """A compact JWS over exactly these bytes, signed ES256 with the dev key (or unsigned)."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), _signing_key()) if sign else b""
    return f"{signing_input}.{_b64(signature)}"


def claims_payload(extra: dict[str, Any], now: float) -> bytes:
    """Valid claims for the fuzz service, overridden by ``extra``."""
    identity = fuzz_service().config.identity
    claims: dict[str, Any] = {
        "iss": identity.issuer,
        "aud": identity.audience,
        "sub": "support-bot",
        "tenant": "acme",
        "scope": "payments.refund",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    claims.update(extra)
    return json.dumps(claims, allow_nan=True).encode("utf-8", "surrogatepass")


def header_value(case: Case) -> str:
    if case.raw is not None:
        return case.raw
    return case.scheme + signed(case.header, case.payload, case.sign)


def exercise(case: Case) -> AgentIdentity | IdentityError:
    authorization = header_value(case)
    try:
        identity = verifier().verify_header(authorization)
    except IdentityError as error:
        _check_error(error, authorization)
        return error
    if not isinstance(identity, AgentIdentity):
        raise FuzzFailure(f"verify_header returned {type(identity).__name__}")
    if not independently_valid(authorization):
        raise FuzzFailure("BYPASS: an identity for a token pyjwt does not verify")
    token = authorization.strip().partition(" ")[2].strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    if (identity.agent_id, identity.tenant) != (claims.get("sub"), claims.get("tenant")):
        raise FuzzFailure("the identity does not name the token's sub and tenant")
    return identity


def _check_error(error: IdentityError, authorization: str) -> None:
    if not error.reason or not isinstance(error.reason, str):
        raise FuzzFailure("an IdentityError without a reason")
    token = authorization.strip().partition(" ")[2].strip()
    if len(token) >= 16 and (token in error.message or token in error.reason):
        raise FuzzFailure("the token appears in the error")
