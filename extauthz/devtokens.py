"""Development tokens: a local signing key and ``aegis token mint``, so no IdP is needed.

Production deployments verify tokens from their own issuer (``identity.jwks_url``); this
module only exists for the demo, tests and local experiments.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from extauthz.config import IdentityConfig
from extauthz.errors import ConfigError
from extauthz.identity import jwk_thumbprint


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Create an ES256 (P-256) key pair as PEM files; returns the key id (RFC 7638 thumbprint)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return jwk_thumbprint(key.public_key())


def ensure_dev_keypair(config: IdentityConfig) -> bool:
    """Create the configured dev key pair if it does not exist yet; True if created."""
    if config.dev_signing_key is None or not config.public_keys:
        raise ConfigError("identity.dev_signing_key and identity.public_keys must be set to use dev tokens")
    if config.dev_signing_key.exists():
        return False
    generate_keypair(config.dev_signing_key, config.public_keys[0])
    return True


def load_signing_key(path: Path) -> Any:
    """Read a PEM private key; ConfigError naming the path on failure."""
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read dev signing key (run 'aegis token keygen')") from exc


def _algorithm_for(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    name = type(key).__name__
    if "RSA" in name:
        return "RS256"
    if "Ed25519" in name:
        return "EdDSA"
    raise ConfigError(f"unsupported dev signing key type {name}")


def mint_token(
    config: IdentityConfig,
    *,
    agent: str,
    tenant: str,
    scopes: Sequence[str],
    ttl_s: float = 300,
    act: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    now: float | None = None,
    extra_claims: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign a dev token for ``agent`` with the configured dev key.

    ``act`` lists the delegation chain nearest parent first; it becomes nested RFC 8693
    ``act`` claims.
    """
    if config.dev_signing_key is None:
        raise ConfigError("identity.dev_signing_key is not set")
    key = load_signing_key(config.dev_signing_key)
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": agent,
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": int(issued),
        "nbf": int(issued),
        "exp": int(issued + ttl_s),
        "jti": uuid.uuid4().hex,
    }
    chain: dict[str, Any] | None = None
    for parent in reversed(act):
        chain = {"sub": parent, **({"act": chain} if chain else {})}
    if chain:
        claims["act"] = chain
    if labels:
        claims["labels"] = labels
    claims.update(extra_claims or {})
    header = {"kid": jwk_thumbprint(key.public_key()), "typ": "JWT", **(headers or {})}
    return jwt.encode(claims, key, algorithm=_algorithm_for(key), headers=header)
