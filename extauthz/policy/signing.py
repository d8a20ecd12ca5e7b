"""Bundle signatures in OPA's format (``/.signatures.json``), so ``opa run --bundle
--verification-key`` accepts what ``aegis policy build --signing-key`` writes and Aegis
refuses what OPA would refuse.

The file holds one JWT; its payload lists every other file of the bundle::

    {"signatures": ["<JWT>"]}
    JWT header  {"alg": "ES256", "kid": "<key id>", "typ": "JWT"}
    JWT payload {"files": [{"name": "aegis/policy/data.json", "hash": "<sha256 hex>",
                            "algorithm": "SHA-256"}, ...], "keyid": "<key id>"}

Names have no leading ``/``.  JSON files are hashed in OPA's canonical form (keys sorted,
no whitespace, no HTML escaping, numbers as written); every other file as its bytes.
Verification is strict: the JWT must verify with the configured key under an allowlisted
algorithm, and the listed files must be exactly the bundle's files with matching hashes.
PyJWT and cryptography errors are translated to ``PolicyError`` here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from extauthz.errors import PolicyError

SIGNATURES_FILE = ".signatures.json"
DEFAULT_KEY_ID = "default"  # OPA's default --verification-key-id
# Asymmetric only: a bundle verifier must never accept HMAC or "none".
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True)
class SigningKey:
    """A private key with the key id and algorithm the signature names."""

    key: Any
    key_id: str
    algorithm: str


@dataclass(frozen=True)
class VerificationKey:
    """A public key, its key id and the algorithm it verifies (what OPA is given too)."""

    key: Any
    key_id: str
    algorithm: str


def _algorithm_for(key: Any, requested: str | None) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        natural = "RS256"
        allowed = {a for a in ALGORITHMS if a[:2] in {"RS", "PS"}}
    elif isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        natural = _EC_ALGORITHMS.get(key.curve.name, "")
        allowed = {natural}
    elif isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        raise PolicyError("Ed25519 keys cannot sign OPA bundles (OPA verifies RS*, PS* and ES*): use RSA or EC")
    else:
        raise PolicyError("unsupported key type for bundle signatures (use an RSA or EC key)")
    algorithm = requested or natural
    if algorithm not in allowed:
        raise PolicyError(f"algorithm {algorithm} does not fit this key (use {', '.join(sorted(allowed))})")
    return algorithm


def load_signing_key(path: Path, key_id: str = DEFAULT_KEY_ID, algorithm: str | None = None) -> SigningKey:
    """A PEM private key (RSA or EC); the algorithm follows the key unless given."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PolicyError(f"{path}: not a readable PEM private key ({exc.__class__.__name__})") from exc
    return SigningKey(key, key_id, _algorithm_for(key, algorithm))


def load_verification_key(path: Path, key_id: str = DEFAULT_KEY_ID, algorithm: str | None = None) -> VerificationKey:
    """A PEM public key (RSA or EC); the algorithm follows the key unless given."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise PolicyError(f"{path}: not a readable PEM public key ({exc.__class__.__name__})") from exc
    return VerificationKey(key, key_id, _algorithm_for(key, algorithm))


def canonical_json(value: Any) -> bytes:
    """OPA's canonical JSON for file hashes: sorted keys, compact, UTF-8, no HTML escaping.

    Go's encoder escapes U+2028/U+2029 even then; Python's does not, so they are escaped here.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def file_hash(name: str, content: bytes) -> str:
    """SHA-256 hex of a bundle file as OPA hashes it (JSON canonically, the rest as bytes)."""
    if name.endswith(".json") or name == ".manifest":
        try:
            content = canonical_json(json.loads(content))
        except ValueError as exc:
            raise PolicyError(f"bundle file {name} is not valid JSON") from exc
    return hashlib.sha256(content).hexdigest()


def sign_files(files: Mapping[str, bytes], signing: SigningKey) -> bytes:
    """The ``.signatures.json`` content for a bundle's files (names without leading ``/``)."""
    listed = [
        {"name": name, "hash": file_hash(name, content), "algorithm": "SHA-256"}
        for name, content in sorted(files.items())
        if name != SIGNATURES_FILE
    ]
    try:
        token = jwt.encode(
            {"files": listed, "keyid": signing.key_id},
            signing.key,
            algorithm=signing.algorithm,
            headers={"kid": signing.key_id},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise PolicyError(f"cannot sign the bundle ({exc.__class__.__name__})") from exc
    return json.dumps({"signatures": [token]}, indent=1).encode()


def verify_files(files: Mapping[str, bytes], verification: VerificationKey, origin: str) -> None:
    """Refuse unless ``.signatures.json`` signs exactly these files with this key."""
    raw = files.get(SIGNATURES_FILE)
    if raw is None:
        raise PolicyError(f"{origin}: bundle is not signed (no {SIGNATURES_FILE}) but a verification key is configured")
    try:
        signatures = json.loads(raw)["signatures"]
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise ValueError("exactly one signature expected")
        header = jwt.get_unverified_header(signatures[0])
        claims = jwt.decode(signatures[0], verification.key, algorithms=[verification.algorithm])
    except jwt.PyJWTError as exc:
        raise PolicyError(f"{origin}: bundle signature does not verify ({exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{origin}: {SIGNATURES_FILE} is malformed ({exc})") from exc
    key_id = header.get("kid") or claims.get("keyid")
    if key_id != verification.key_id:
        raise PolicyError(f"{origin}: bundle signed with key id {key_id!r}, expected {verification.key_id!r}")
    _check_listed(files, claims.get("files"), origin)


def _check_listed(files: Mapping[str, bytes], listed: Any, origin: str) -> None:
    if not isinstance(listed, list) or not all(isinstance(f, dict) for f in listed):
        raise PolicyError(f"{origin}: signature lists no files")
    expected = {f.get("name"): f for f in listed}
    actual = {name for name in files if name != SIGNATURES_FILE}
    for name in sorted(actual - set(expected)):
        raise PolicyError(f"{origin}: bundle file {name} is not covered by the signature (added after signing)")
    for name in sorted(set(expected) - actual):
        raise PolicyError(f"{origin}: signed file {name} is missing from the bundle")
    for name in sorted(actual):
        entry = expected[name]
        if entry.get("algorithm") != "SHA-256":
            raise PolicyError(f"{origin}: signed file {name} uses hash algorithm {entry.get('algorithm')!r}")
        if entry.get("hash") != file_hash(name, files[name]):
            raise PolicyError(f"{origin}: bundle file {name} does not match its signed hash (tampered)")
