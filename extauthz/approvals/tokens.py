"""Signed things Aegis hands out: override tokens (EdDSA JWTs) and HMAC-signed console links.

An override token says "approval X let agent A make exactly the call with fingerprint F
until T".  It is signed with Aegis's own Ed25519 key, verified with an explicit algorithm
allowlist (``EdDSA`` only), and single use is enforced by the store, not by the token.
Every PyJWT error is translated here into ``OverrideRefused`` with a stable rule id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from extauthz.errors import ConfigError

OVERRIDE_ALGORITHMS = ["EdDSA"]  # the only algorithm an override token may use
OVERRIDE_ISSUER = "aegis"
OVERRIDE_AUDIENCE = "aegis-override"
OVERRIDE_TYP = "aegis-override+jwt"
MAX_OVERRIDE_BYTES = 4096
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "apr", "fph"]

# Stable rule ids of override refusals (the 403 body's ``rule``, the access log, metrics).
OVERRIDE_INVALID = "override-invalid"
OVERRIDE_EXPIRED = "override-expired"
OVERRIDE_WRONG_AGENT = "override-wrong-agent"
OVERRIDE_MISMATCH = "override-mismatch"
OVERRIDE_RULE_MISMATCH = "override-rule-mismatch"
OVERRIDE_REUSED = "override-reused"
OVERRIDE_DENIED = "override-denied"


class OverrideRefused(Exception):
    """An override token that does not let this call through; ``rule`` says why."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True)
class OverrideClaims:
    """The verified facts of an override token."""

    approval_id: str
    agent_id: str
    tenant: str
    fingerprint: str
    rule: str
    expires_at: float

    def to_input(self) -> dict[str, Any]:
        """The policy input's ``override`` field (no secrets: the token itself stays out)."""
        return {"approval_id": self.approval_id, "rule": self.rule, "expires_at": self.expires_at}


def load_or_create_key(path: Path | None) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 signing key at ``path`` (created 0600 if missing), or an in-memory one."""
    if path is None:
        return ed25519.Ed25519PrivateKey.generate()
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return key
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"approvals.signing_key: cannot read {path} ({exc.__class__.__name__})") from exc
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"approvals.signing_key: {path} is not an Ed25519 private key")
    return loaded


class OverrideTokens:
    """Issues and verifies override tokens with one Ed25519 key."""

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key()

    def issue(
        self, *, approval_id: str, agent_id: str, tenant: str, fingerprint: str, rule: str, iat: float, exp: float
    ) -> str:
        """Sign a token.  Ed25519 is deterministic: the same approval always yields the same token."""
        claims = {
            "iss": OVERRIDE_ISSUER,
            "aud": OVERRIDE_AUDIENCE,
            "sub": agent_id,
            "tenant": tenant,
            "apr": approval_id,
            "fph": fingerprint,
            "rule": rule,
            "iat": int(iat),
            "exp": int(exp),
            "jti": approval_id,
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"typ": OVERRIDE_TYP})

    def verify(self, token: str, now: float) -> OverrideClaims:
        """Signature, algorithm, audience, expiry; OverrideRefused (never the token) on failure."""
        if len(token) > MAX_OVERRIDE_BYTES:
            raise OverrideRefused(OVERRIDE_INVALID, "the override token is too large")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != OVERRIDE_TYP:
                raise OverrideRefused(OVERRIDE_INVALID, "the override token is not an Aegis override token")
            claims: Mapping[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=OVERRIDE_ALGORITHMS,
                audience=OVERRIDE_AUDIENCE,
                issuer=OVERRIDE_ISSUER,
                options={"require": _REQUIRED, "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise OverrideRefused(OVERRIDE_EXPIRED, "the override token has expired; ask for a new approval") from None
        except jwt.PyJWTError:
            raise OverrideRefused(OVERRIDE_INVALID, "the override token does not verify") from None
        if float(claims["exp"]) <= now:
            raise OverrideRefused(OVERRIDE_EXPIRED, "the override token has expired; ask for a new approval")
        values = [claims.get(k) for k in ("apr", "sub", "tenant", "fph", "rule")]
        if not all(isinstance(v, str) and v for v in values):
            raise OverrideRefused(OVERRIDE_INVALID, "the override token lacks its bindings")
        approval_id, agent_id, tenant, fingerprint, rule = (str(v) for v in values)
        return OverrideClaims(approval_id, agent_id, tenant, fingerprint, rule, float(claims["exp"]))


# --- HMAC primitives (console cookies, signed links) --------------------------------------


def secret_from_env(name: str) -> bytes:
    """The secret in environment variable ``name``, or a random per-process one if unset."""
    value = os.environ.get(name, "") if name else ""
    return value.encode() if value else secrets.token_bytes(32)


def sign(secret: bytes, message: str) -> str:
    """Hex HMAC-SHA256 of ``message``."""
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, message: str, signature: str) -> bool:
    """Constant-time comparison of an HMAC-SHA256 signature."""
    return hmac.compare_digest(sign(secret, message), signature)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SignedLinks:
    """Approve/deny links for Teams cards: ``?action=&exp=&sig=`` over approval id, action, expiry.

    A valid link only pre-selects the action on the console page; acting still needs an
    approver login and the page's CSRF-protected form.
    """

    def __init__(self, secret: bytes, base_url: str, ttl_s: float) -> None:
        self._secret = secret
        self._base = base_url.rstrip("/")
        self._ttl_s = ttl_s

    def path(self, approval_id: str, action: str, now: float) -> str:
        exp = int(now + self._ttl_s)
        sig = sign(self._secret, f"link|{approval_id}|{action}|{exp}")
        return f"/console/approvals/{approval_id}/link?action={action}&exp={exp}&sig={sig}"

    def url(self, approval_id: str, action: str, now: float) -> str:
        return self._base + self.path(approval_id, action, now)

    def verify(self, approval_id: str, action: str, exp: str, sig: str, now: float) -> bool:
        if action not in {"approve", "deny"} or not exp.isdigit() or int(exp) <= now:
            return False
        return verify_signature(self._secret, f"link|{approval_id}|{action}|{exp}", sig)
