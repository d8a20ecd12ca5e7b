"""Identity tricks (the JWT attack list and delegation), end to end through real Envoy.

The gateway here trusts two keys, so the confusion attacks are the real ones: an RSA key
(the dev signing key: RS→HS confusion with its public PEM) and an EC P-256 key (ES256
"psychic" zero signatures).  Every forged token is sent on a refund of 20 that a valid
token gets through (the control case): a 401 with the precise reason, nothing upstream.
A JWKS server on loopback holds the attacker's key for ``jku``/``x5u`` and must never be
asked for it (keys come from configuration only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import Gateway, start_gateway

from bypass.wire import REFUND_20, Closed, Expect, Reach, Refused, build, check, send
from extauthz.identity import MAX_TOKEN_BYTES, jwk_thumbprint, public_jwk

pytestmark = pytest.mark.e2e

ALLOWED = Reach("payments.demo", "/v1/refunds", "payments.refund")


def _write_pem(key: Any, private: Path, public: Path) -> None:
    private.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


class JwksServer:
    """A loopback server that would hand out the attacker's JWKS; records every request."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                data = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Keys:
    """The gateway's trusted keys (private halves, to sign), an attacker's, the claims base."""

    gateway: Gateway
    rsa: Any
    ec: Any
    attacker: Any
    jwks: JwksServer

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        identity = self.gateway.config.identity
        base = {
            "iss": identity.issuer,
            "aud": identity.audience,
            "sub": "support-bot",
            "tenant": "acme",
            "scope": "payments.refund",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        return {k: v for k, v in {**base, **over}.items() if v is not None}

    def sign(self, key: Any, alg: str, claims: dict[str, Any] | None = None, **headers: Any) -> str:
        kid = headers.pop("kid", jwk_thumbprint(key.public_key()))
        return jwt.encode(claims or self.claims(), key, algorithm=alg, headers={"typ": "JWT", "kid": kid, **headers})

    def rs(self, claims: dict[str, Any] | None = None, **headers: Any) -> str:
        return self.sign(self.rsa, "RS256", claims, **headers)

    def es(self, claims: dict[str, Any] | None = None, **headers: Any) -> str:
        return self.sign(self.ec, "ES256", claims, **headers)

    def rsa_kid(self) -> str:
        return jwk_thumbprint(self.rsa.public_key())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    root = tmp_path_factory.mktemp("identity")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    attacker = ec.generate_private_key(ec.SECP256R1())
    # The dev signing key is RSA (gateway.token() mints RS256); the EC key is trusted too.
    _write_pem(rsa_key, root / "keys" / "dev.pem", root / "keys" / "dev.pub.pem")
    _write_pem(ec_key, root / "keys" / "ec.pem", root / "keys" / "ec.pub.pem")
    jwks = JwksServer({"keys": [{**public_jwk(attacker.public_key()), "kid": "attacker", "use": "sig"}]})
    gw = start_gateway(root, extra={"identity": {"public_keys": ["keys/dev.pub.pem", "keys/ec.pub.pem"]}})
    try:
        yield Keys(gw, rsa_key, ec_key, attacker, jwks)
    finally:
        gw.client.close()
        gw.stack.stop()
        jwks.close()


@pytest.fixture(scope="module")
def gateway(keys: Keys) -> Gateway:
    return keys.gateway


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(document: dict[str, Any]) -> str:
    return _b64(json.dumps(document).encode())


def _unsigned(k: Keys, header: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_segment(header)}.{_segment(k.claims())}.{_b64(signature)}"


def _hmac_token(k: Keys, secret: bytes, **header: Any) -> str:
    head, payload = _segment({"alg": "HS256", "typ": "JWT", **header}), _segment(k.claims())
    signature = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{_b64(signature)}"


def _public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return f"{header}.{_segment({**claims, **changes})}.{signature}"


def _nested(k: Keys, outer_key: Any, alg: str) -> str:
    inner = k.rs().encode()
    kid = jwk_thumbprint(outer_key.public_key())
    return jwt.api_jws.encode(inner, outer_key, algorithm=alg, headers={"cty": "JWT", "kid": kid})


def _act(depth: int) -> dict[str, Any]:
    act: dict[str, Any] = {"sub": f"agent-{depth}"}
    for level in range(depth - 1, 0, -1):
        act = {"sub": f"agent-{level}", "act": act}
    return act


def _psychic(k: Keys) -> str:
    # CVE-2022-21449: an ECDSA signature with r = s = 0 verifies anything in broken libraries.
    return _unsigned(k, {"alg": "ES256", "typ": "JWT", "kid": jwk_thumbprint(k.ec.public_key())}, b"\0" * 64)


# (id, token maker, reason); every one is a 401 and nothing reaches the tool.
TOKEN_CASES: list[tuple[str, Callable[[Keys], str], str]] = [
    ("alg-none", lambda k: _unsigned(k, {"alg": "none", "typ": "JWT"}), "algorithm_not_allowed"),
    ("alg-None-capitalised", lambda k: _unsigned(k, {"alg": "None", "typ": "JWT"}), "algorithm_not_allowed"),
    ("alg-NONE-shouting", lambda k: _unsigned(k, {"alg": "NONE"}), "algorithm_not_allowed"),
    ("alg-none-with-real-kid", lambda k: _unsigned(k, {"alg": "none", "kid": k.rsa_kid()}), "algorithm_not_allowed"),
    ("alg-empty", lambda k: _unsigned(k, {"alg": ""}), "algorithm_not_allowed"),
    ("alg-missing", lambda k: _unsigned(k, {"typ": "JWT"}), "algorithm_not_allowed"),
    ("rs-to-hs-public-pem", lambda k: _hmac_token(k, _public_pem(k.rsa), kid=k.rsa_kid()), "algorithm_not_allowed"),
    ("rs-to-hs-public-pem-no-kid", lambda k: _hmac_token(k, _public_pem(k.rsa)), "algorithm_not_allowed"),
    (
        "rs-to-hs-public-der",
        lambda k: _hmac_token(
            k,
            k.rsa.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        "algorithm_not_allowed",
    ),
    (
        "rs-to-hs-public-jwk",
        lambda k: _hmac_token(k, json.dumps(public_jwk(k.rsa.public_key())).encode()),
        "algorithm_not_allowed",
    ),
    ("es-to-hs-public-pem", lambda k: _hmac_token(k, _public_pem(k.ec)), "algorithm_not_allowed"),
    # The RSA key's kid with an EC signature: each key verifies only its own key type's algorithms.
    ("es256-under-rsa-kid", lambda k: k.sign(k.attacker, "ES256", kid=k.rsa_kid()), "unknown_key"),
    ("es256-psychic-zero-signature", _psychic, "bad_signature"),
    (
        "attacker-key-under-real-kid",
        lambda k: k.sign(k.attacker, "ES256", kid=jwk_thumbprint(k.ec.public_key())),
        "bad_signature",
    ),
    ("attacker-key-without-kid", lambda k: jwt.encode(k.claims(), k.attacker, algorithm="ES256"), "bad_signature"),
    (
        "kid-path-traversal-hs256-empty-key",
        lambda k: _hmac_token(k, b"", kid="../../../../../../dev/null"),
        "algorithm_not_allowed",
    ),
    ("kid-path-traversal", lambda k: k.sign(k.attacker, "ES256", kid="../../../../../../dev/null"), "unknown_key"),
    (
        "kid-public-key-file-path",
        lambda k: k.sign(k.attacker, "ES256", kid=str(k.gateway.config.identity.public_keys[1])),
        "unknown_key",
    ),
    ("kid-sql-injection", lambda k: k.sign(k.attacker, "ES256", kid="x' UNION SELECT 'secret' --"), "unknown_key"),
    ("kid-not-a-string", lambda k: _unsigned(k, {"alg": "ES256", "kid": {"$ref": "x"}}, b"\0" * 64), "invalid_token"),
    (
        "jku-to-attacker-jwks",
        lambda k: k.sign(k.attacker, "ES256", kid="attacker", jku=f"{k.jwks.url}/jwks.json"),
        "unknown_key",
    ),
    (
        "x5u-to-attacker",
        lambda k: k.sign(k.attacker, "ES256", kid="attacker", x5u=f"{k.jwks.url}/cert.pem"),
        "unknown_key",
    ),
    (
        "jku-without-kid",
        lambda k: jwt.encode(k.claims(), k.attacker, algorithm="ES256", headers={"jku": f"{k.jwks.url}/jwks.json"}),
        "bad_signature",
    ),
    (
        "embedded-jwk",
        lambda k: jwt.encode(
            k.claims(), k.attacker, algorithm="ES256", headers={"jwk": public_jwk(k.attacker.public_key())}
        ),
        "bad_signature",
    ),
    (
        "embedded-x5c",
        lambda k: jwt.encode(k.claims(), k.attacker, algorithm="ES256", headers={"x5c": [_b64(b"not a cert")]}),
        "bad_signature",
    ),
    ("unknown-crit-header", lambda k: k.rs(crit=["x-aegis-extension"], **{"x-aegis-extension": 1}), "invalid_token"),
    (
        "expired",
        lambda k: k.rs(k.claims(iat=int(time.time()) - 900, nbf=None, exp=int(time.time()) - 600)),
        "token_expired",
    ),
    (
        "future-iat",
        lambda k: k.rs(k.claims(iat=int(time.time()) + 600, nbf=None, exp=int(time.time()) + 900)),
        "token_not_yet_valid",
    ),
    ("future-nbf", lambda k: k.rs(k.claims(nbf=int(time.time()) + 600)), "token_not_yet_valid"),
    ("lifetime-too-long", lambda k: k.rs(k.claims(exp=int(time.time()) + 86400)), "lifetime_too_long"),
    ("missing-exp", lambda k: k.rs(k.claims(exp=None)), "missing_claim"),
    ("exp-as-string", lambda k: k.rs(k.claims(exp=str(int(time.time()) + 60))), "malformed_token"),
    ("missing-tenant", lambda k: k.rs(k.claims(tenant=None)), "missing_claim"),
    ("empty-sub", lambda k: k.rs(k.claims(sub="")), "missing_claim"),
    ("other-audience", lambda k: k.rs(k.claims(aud="another-gateway")), "wrong_audience"),
    ("audience-list-without-ours", lambda k: k.rs(k.claims(aud=["a", "b"])), "wrong_audience"),
    ("other-issuer", lambda k: k.rs(k.claims(iss="https://evil.example")), "wrong_issuer"),
    ("huge-token-over-8k", lambda k: k.rs(k.claims(pad="x" * MAX_TOKEN_BYTES)), "token_too_large"),
    ("typ-jwe", lambda k: k.rs(typ="JWE"), "wrong_token_type"),
    ("typ-secevent", lambda k: k.rs(typ="secevent+jwt"), "wrong_token_type"),
    ("typ-dpop", lambda k: k.rs(typ="dpop+jwt"), "wrong_token_type"),
    ("typ-not-a-string", lambda k: k.rs(typ=["JWT"]), "wrong_token_type"),
    ("nested-jwt-signed-by-trusted-key", lambda k: _nested(k, k.rsa, "RS256"), "malformed_token"),
    ("nested-jwt-signed-by-attacker", lambda k: _nested(k, k.attacker, "ES256"), "unknown_key"),
    (
        "tampered-act-chain",
        lambda k: _tampered(k.rs(k.claims(act={"sub": "support-orchestrator"})), act={"sub": "root-admin"}),
        "bad_signature",
    ),
    ("tampered-scope", lambda k: _tampered(k.rs(), scope="payments.* crm.* slack.*"), "bad_signature"),
    ("tampered-tenant", lambda k: _tampered(k.rs(), tenant="globex"), "bad_signature"),
    ("act-not-an-object", lambda k: k.rs(k.claims(act="support-orchestrator")), "malformed_token"),
    ("act-without-sub", lambda k: k.rs(k.claims(act={"client_id": "x"})), "malformed_token"),
    ("act-chain-nine-deep", lambda k: k.rs(k.claims(act=_act(9))), "malformed_token"),
    ("trailing-segment", lambda k: k.rs() + ".extra", "malformed_token"),
    ("garbage", lambda k: "not-a-jwt", "malformed_token"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES])
def test_forged_token(gateway: Gateway, keys: Keys, make: Callable[[Keys], str], reason: str):
    gw = keys.gateway
    token = make(keys)
    response = send(gw, build("POST", "/v1/refunds", "payments.demo", token=token, body=json.dumps(REFUND_20).encode()))
    check(gw, response, Refused(401, reason), log=False)
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert token not in response.body.decode()
    assert keys.jwks.requests == []  # jku / x5u are never followed


@pytest.mark.parametrize(
    "make",
    [lambda k: k.gateway.token(), lambda k: k.es(), lambda k: k.rs(jku="http://127.0.0.1:1/ignored.json")],
    ids=["control-dev-token-rs256", "control-ec-key-es256", "control-jku-on-a-valid-token-is-ignored"],
)
def test_valid_token_control(gateway: Gateway, keys: Keys, make: Callable[[Keys], str]):
    gw = keys.gateway
    response = send(
        gw, build("POST", "/v1/refunds", "payments.demo", token=make(keys), body=json.dumps(REFUND_20).encode())
    )
    check(gw, response, ALLOWED)


# --- how the token is presented ---------------------------------------------------------------


def _presented(k: Keys, kind: str) -> bytes:
    body = json.dumps(REFUND_20).encode()
    token = k.gateway.token()
    if kind == "no-authorization":
        return build("POST", "/v1/refunds", "payments.demo", body=body)
    if kind == "token-in-query-only":
        return build("POST", f"/v1/refunds?access_token={token}", "payments.demo", body=body)
    if kind == "basic-scheme":
        return build("POST", "/v1/refunds", "payments.demo", body=body, headers=(("Authorization", f"Basic {token}"),))
    if kind == "second-authorization-header":
        return build(
            "POST", "/v1/refunds", "payments.demo", token=token, body=body, headers=(("Authorization", "Bearer x"),)
        )
    if kind == "token-in-cookie-only":
        return build("POST", "/v1/refunds", "payments.demo", body=body, headers=(("Cookie", f"token={token}"),))
    if kind == "header-over-envoy-limit":
        return build("POST", "/v1/refunds", "payments.demo", token=token + "A" * 100_000, body=body)
    raise AssertionError(kind)


PRESENTATION_CASES: list[tuple[str, Expect]] = [
    ("no-authorization", Refused(401, "missing_token")),
    ("token-in-query-only", Refused(401, "missing_token")),
    ("basic-scheme", Refused(401, "missing_token")),
    ("second-authorization-header", Refused(401, "malformed_token")),
    ("token-in-cookie-only", Refused(401, "missing_token")),
    ("header-over-envoy-limit", Closed()),
]


@pytest.mark.parametrize(("kind", "expect"), PRESENTATION_CASES, ids=[c[0] for c in PRESENTATION_CASES])
def test_token_presentation_trick(gateway: Gateway, keys: Keys, kind: str, expect: Expect):
    check(keys.gateway, send(keys.gateway, _presented(keys, kind)), expect, log=False)


# --- delegation: the act chain and the x-aegis-parent-agent header ----------------------------

DELEGATION_CASES: list[tuple[str, tuple[str, ...], tuple[str, ...], Expect]] = [
    # (id, act chain nearest first, x-aegis-parent-agent header values, expect)
    ("parent-header-matches-chain", ("support-orchestrator",), ("support-orchestrator",), ALLOWED),
    (
        "parent-header-names-other-agent",
        ("support-orchestrator",),
        ("billing-planner",),
        Refused(403, "parent-header-mismatch"),
    ),
    ("parent-header-without-chain", (), ("support-orchestrator",), Refused(403, "parent-header-without-chain")),
    (
        "parent-header-case-variant",
        ("support-orchestrator",),
        ("Support-Orchestrator",),
        Refused(403, "parent-header-mismatch"),
    ),
    (
        "parent-header-names-grandparent",
        ("support-orchestrator", "root-planner"),
        ("root-planner",),
        Refused(403, "parent-header-mismatch"),
    ),
    (
        "parent-header-twice",
        ("support-orchestrator",),
        ("support-orchestrator", "billing-planner"),
        Refused(403, "parent-header-mismatch"),
    ),
    ("parent-header-empty", ("support-orchestrator",), ("",), Refused(403, "parent-header-mismatch")),
    (
        "delegated-by-other-agent",
        ("billing-planner",),
        (),
        Refused(403, "refunds-delegated-only-by-support-orchestrator"),
    ),
    ("delegation-three-deep", ("support-orchestrator", "a", "b"), (), Refused(403, "delegation-too-deep")),
]


@pytest.mark.parametrize(
    ("chain", "parents", "expect"), [c[1:] for c in DELEGATION_CASES], ids=[c[0] for c in DELEGATION_CASES]
)
def test_delegation_trick(
    gateway: Gateway, keys: Keys, chain: tuple[str, ...], parents: tuple[str, ...], expect: Expect
):
    gw = keys.gateway
    token = gw.token(act=list(chain))
    headers = tuple(("x-aegis-parent-agent", p) for p in parents)
    data = build(
        "POST", "/v1/refunds", "payments.demo", token=token, body=json.dumps(REFUND_20).encode(), headers=headers
    )
    check(gw, send(gw, data), expect)
