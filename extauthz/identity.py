"""Who is calling: verify the agent's JWT and turn its claims into an ``AgentIdentity``.

Every verification failure becomes one ``IdentityError`` with a short, stable ``reason``
(``token_expired``, ``bad_signature``…) that is safe to show the agent; the token itself
never appears in an error, a log line or a metric.

Keys come from PEM files (static) or a JWKS URL (cached; an unknown ``kid`` triggers a
refetch, at most once per ``jwks_min_refresh_s``).  Only the configured asymmetric
algorithms are accepted and each key only verifies the algorithms of its own key type, so
neither ``alg: none`` nor RS→HS confusion can pass.  ``jku``/``x5u``/``jwk`` headers are
ignored: keys come from configuration only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from extauthz.config import IdentityConfig
from extauthz.errors import IdentityError

# Tokens larger than this are refused before any parsing (a header bomb is not an identity).
MAX_TOKEN_BYTES = 8192
TOKEN_CACHE_SIZE = 4096
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})
_KEY_TYPE_ALGS = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
_REQUIRED_CLAIMS = ["exp", "iat", "aud", "iss", "sub"]


@dataclass(frozen=True)
class AgentIdentity:
    """The verified caller.  ``chain`` lists delegating parents, nearest first (RFC 8693 ``act``)."""

    agent_id: str
    tenant: str
    scopes: tuple[str, ...]
    chain: tuple[str, ...] = ()
    labels: Mapping[str, str] | None = None
    expires_at: float = 0.0
    # Scopes the nearest delegating parent holds, when its act claim says (RFC 8693 allows
    # actor claims beyond sub); None when unknown.
    parent_scopes: tuple[str, ...] | None = None

    def to_input(self) -> dict[str, Any]:
        """The ``agent`` part of the policy input, with the delegation facts rules test:
        ``parent`` / ``root`` (nearest and farthest delegating agent; absent without a chain),
        ``depth`` and ``scopes_within_parent`` (absent when the parent's scopes are unknown)."""
        agent: dict[str, Any] = {
            "id": self.agent_id,
            "tenant": self.tenant,
            "scopes": list(self.scopes),
            "chain": list(self.chain),
            "labels": dict(self.labels or {}),
            "depth": len(self.chain),
        }
        if self.chain:
            agent["parent"], agent["root"] = self.chain[0], self.chain[-1]
        if self.parent_scopes is not None:
            agent["scopes_within_parent"] = scopes_within(self.scopes, self.parent_scopes)
        return agent


def scope_grants(granted: str, wanted: str) -> bool:
    """Whether scope ``granted`` (a tool name, ``prefix.*`` or ``*``) covers scope ``wanted``."""
    if granted in ("*", wanted):
        return True
    return granted.endswith(".*") and wanted.startswith(granted[:-1])


def scopes_within(scopes: Sequence[str], parent_scopes: Sequence[str]) -> bool:
    """A delegated agent may hold no scope its parent does not hold."""
    return all(any(scope_grants(p, s) for p in parent_scopes) for s in scopes)


@dataclass(frozen=True)
class VerificationKey:
    """A public key with its identifier and the algorithms its type can verify."""

    kid: str
    key: Any
    algorithms: frozenset[str]


def key_type(key: Any) -> str:
    """JWK ``kty`` of a public key object."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "OKP"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def jwk_thumbprint(key: Any) -> str:
    """RFC 7638 thumbprint of a public key: the ``kid`` Aegis uses for its own keys."""
    jwk = public_jwk(key)
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    members = {k: jwk[k] for k in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def public_jwk(key: Any) -> dict[str, Any]:
    """The public JWK (as a dict) of a public key object."""
    kty = key_type(key)
    algorithm = {
        "RSA": jwt.algorithms.RSAAlgorithm,
        "EC": jwt.algorithms.ECAlgorithm,
        "OKP": jwt.algorithms.OKPAlgorithm,
    }
    return dict(algorithm[kty].to_jwk(key, as_dict=True))  # type: ignore[attr-defined]


def load_pem_public_key(path: Path) -> VerificationKey:
    """Read a PEM public key file; ValueError with the path on failure."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable PEM public key ({exc.__class__.__name__})") from exc
    return VerificationKey(kid=jwk_thumbprint(key), key=key, algorithms=_KEY_TYPE_ALGS[key_type(key)])


class KeySet:
    """The keys tokens may be signed with: static PEM keys and/or a cached JWKS."""

    def __init__(
        self,
        static_keys: Sequence[VerificationKey] = (),
        jwks_url: str = "",
        *,
        cache_s: float = 300.0,
        min_refresh_s: float = 30.0,
        fetch: Callable[[str], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = {k.kid: k for k in static_keys}
        self._jwks_url = jwks_url
        self._cache_s = cache_s
        self._min_refresh_s = min_refresh_s
        self._fetch = fetch or _fetch_jwks
        self._clock = clock
        self._jwks: dict[str, VerificationKey] = {}
        self._fetched_at = -1e18
        self._lock = threading.Lock()

    def find(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """Candidate keys for a token header; refetches the JWKS on an unknown ``kid``."""
        keys = self._lookup(kid, alg)
        if not keys and self._jwks_url and self._refresh(force=kid is not None):
            keys = self._lookup(kid, alg)
        return keys

    def _lookup(self, kid: str | None, alg: str) -> list[VerificationKey]:
        if self._jwks_url and self._clock() - self._fetched_at > self._cache_s:
            self._refresh(force=False)
        pool = {**self._jwks, **self._static}
        if kid is not None:
            found = pool.get(kid)
            return [found] if found is not None and alg in found.algorithms else []
        return [k for k in pool.values() if alg in k.algorithms]

    def _refresh(self, *, force: bool) -> bool:
        with self._lock:
            now = self._clock()
            # Rate limit: a flood of tokens with random kids must not become a flood of fetches.
            if now - self._fetched_at < (self._min_refresh_s if force else self._cache_s):
                return False
            self._fetched_at = now
            try:
                document = self._fetch(self._jwks_url)
                self._jwks = _parse_jwks(document)
            except Exception:
                return False
            return True


def _fetch_jwks(url: str) -> Mapping[str, Any]:
    response = httpx.get(url, timeout=2.0)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("JWKS is not a JSON object")
    return document


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, VerificationKey]:
    keys: dict[str, VerificationKey] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWTError:
            continue  # one bad entry (or a symmetric "oct" key) must not poison the set
        kty = entry.get("kty", "")
        if kty not in _KEY_TYPE_ALGS:
            continue
        kid = entry.get("kid") or jwk_thumbprint(jwk.key)
        keys[kid] = VerificationKey(kid=kid, key=jwk.key, algorithms=_KEY_TYPE_ALGS[kty])
    return keys


def keyset_from_config(config: IdentityConfig) -> KeySet:
    """Build the KeySet named by the identity config."""
    static = [load_pem_public_key(p) for p in config.public_keys]
    return KeySet(
        static,
        config.jwks_url,
        cache_s=config.jwks_cache_s,
        min_refresh_s=config.jwks_min_refresh_s,
    )


_PYJWT_REASONS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "token_expired", "the token has expired"),
    (jwt.ImmatureSignatureError, "token_not_yet_valid", "the token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "wrong_audience", "the token is not for this audience"),
    (jwt.InvalidIssuerError, "wrong_issuer", "the token was issued by an unknown issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim", "the token lacks a required claim"),
    (jwt.InvalidSignatureError, "bad_signature", "the token signature does not verify"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed", "the token algorithm is not allowed"),
    (jwt.DecodeError, "malformed_token", "the token is not a well-formed JWT"),
    (jwt.InvalidTokenError, "invalid_token", "the token is invalid"),
)


def _translate(exc: jwt.PyJWTError) -> IdentityError:
    """The one place pyjwt errors become Aegis errors (message never includes the token)."""
    for kind, reason, message in _PYJWT_REASONS:
        if isinstance(exc, kind):
            if isinstance(exc, jwt.MissingRequiredClaimError):
                message = f"the token lacks the required claim {exc.claim!r}"
            return IdentityError(reason, message)
    return IdentityError("invalid_token", "the token is invalid")


class TokenVerifier:
    """Verifies bearer tokens against the identity config; caches verified tokens until expiry."""

    def __init__(
        self,
        config: IdentityConfig,
        keys: KeySet,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = TOKEN_CACHE_SIZE,
    ) -> None:
        self._config = config
        self._keys = keys
        self._clock = clock
        self._allowed = frozenset(config.algorithms)
        self._cache: OrderedDict[bytes, AgentIdentity] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def verify_header(self, authorization: str | None) -> AgentIdentity:
        """Verify an ``Authorization`` header value; IdentityError on any failure."""
        if not authorization:
            raise IdentityError("missing_token", "no bearer token: send Authorization: Bearer <JWT>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IdentityError("missing_token", "the Authorization header is not a Bearer token")
        return self.verify(token.strip())

    def verify(self, token: str) -> AgentIdentity:
        """Verify a compact JWT and return the identity it proves."""
        if len(token) > MAX_TOKEN_BYTES:
            raise IdentityError("token_too_large", f"the token exceeds {MAX_TOKEN_BYTES} bytes")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._cached(digest)
        if cached is not None:
            return cached
        identity = self._verify_uncached(token)
        with self._lock:
            self._cache[digest] = identity
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return identity

    def _cached(self, digest: bytes) -> AgentIdentity | None:
        with self._lock:
            identity = self._cache.get(digest)
            if identity is None:
                return None
            # A cached token still expires on time (with the same leeway as a fresh check).
            if identity.expires_at + self._config.leeway_s <= self._clock():
                del self._cache[digest]
                return None
            self._cache.move_to_end(digest)
            return identity

    def _verify_uncached(self, token: str) -> AgentIdentity:
        header = self._header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise IdentityError("algorithm_not_allowed", f"algorithm {str(alg)[:16]!r} is not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
            raise IdentityError("wrong_token_type", "the token type (typ) is not a JWT access token")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise IdentityError("malformed_token", "the token kid is not a string")
        candidates = self._keys.find(kid, alg)
        if not candidates:
            raise IdentityError("unknown_key", "no configured key matches the token (kid/alg)")
        error: jwt.PyJWTError | None = None
        for candidate in candidates:
            try:
                claims = self._decode(token, candidate, alg)
            except jwt.InvalidSignatureError as exc:
                error = exc
                continue
            except jwt.PyJWTError as exc:
                raise _translate(exc) from None
            return self._identity(claims)
        raise _translate(error or jwt.InvalidSignatureError()) from None

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        try:
            return dict(jwt.get_unverified_header(token))
        except jwt.PyJWTError as exc:
            raise _translate(exc) from None

    def _decode(self, token: str, key: VerificationKey, alg: str) -> dict[str, Any]:
        return dict(
            jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_s,
                options={"require": _REQUIRED_CLAIMS, "verify_iat": True},
            )
        )

    def _identity(self, claims: Mapping[str, Any]) -> AgentIdentity:
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise IdentityError("malformed_token", "exp and iat must be numeric dates")
        if exp + self._config.leeway_s <= self._clock():
            raise IdentityError("token_expired", "the token has expired")
        if exp - iat > self._config.max_lifetime_s:
            raise IdentityError(
                "lifetime_too_long",
                f"the token lifetime exceeds the allowed {int(self._config.max_lifetime_s)} s",
            )
        sub, tenant = claims.get("sub"), claims.get("tenant")
        if not isinstance(sub, str) or not sub:
            raise IdentityError("missing_claim", "the token lacks the required claim 'sub'")
        if not isinstance(tenant, str) or not tenant:
            raise IdentityError("missing_claim", "the token lacks the required claim 'tenant'")
        return AgentIdentity(
            agent_id=sub,
            tenant=tenant,
            scopes=_scopes(claims),
            chain=_actor_chain(claims.get("act")),
            labels=_labels(claims.get("labels")),
            expires_at=float(exp),
            parent_scopes=_parent_scopes(claims.get("act")),
        )


def _scopes(claims: Mapping[str, Any]) -> tuple[str, ...]:
    scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope, str):
        return tuple(s for s in scope.split() if s)
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        return tuple(scope)
    raise IdentityError("malformed_token", "the scope claim must be a space-separated string or a list")


def _actor_chain(act: Any, depth: int = 0) -> tuple[str, ...]:
    """RFC 8693 ``act`` nests the delegation chain: ``{"sub": parent, "act": {"sub": grandparent}}``."""
    if act is None:
        return ()
    if depth >= 8 or not isinstance(act, dict) or not isinstance(act.get("sub"), str) or not act["sub"]:
        raise IdentityError("malformed_token", "the act claim is not a valid delegation chain")
    return (act["sub"], *_actor_chain(act.get("act"), depth + 1))


def _parent_scopes(act: Any) -> tuple[str, ...] | None:
    """The nearest actor's ``scope`` claim, if the issuer put one in ``act``."""
    if not isinstance(act, dict) or "scope" not in act:
        return None
    scope = act["scope"]
    if not isinstance(scope, str):
        raise IdentityError("malformed_token", "the act scope claim must be a space-separated string")
    return tuple(s for s in scope.split() if s)


def _labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise IdentityError("malformed_token", "the labels claim must map names to strings")
    return {str(k): v for k, v in labels.items()}
