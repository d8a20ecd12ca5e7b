"""Identity: every way a token can be wrong gets a 401 reason; good tokens give the identity."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from extauthz.config import load_config
from extauthz.devtokens import mint_token
from extauthz.errors import IdentityError
from extauthz.identity import KeySet, TokenVerifier, jwk_thumbprint, keyset_from_config, public_jwk


@pytest.fixture
def config(config_path: Path):
    return load_config(config_path)


@pytest.fixture
def verifier(config):
    return TokenVerifier(config.identity, keyset_from_config(config.identity))


def mint(config, **kw):
    base = {"agent": "support-bot", "tenant": "acme", "scopes": ["payments.refund", "crm.*"]}
    return mint_token(config.identity, **{**base, **kw})


def reason(verifier, token: str) -> str:
    with pytest.raises(IdentityError) as info:
        verifier.verify(token)
    assert token not in info.value.message
    return info.value.reason


def base_claims(config) -> dict:
    """Valid claims for a hand-built token (tests vary one thing at a time)."""
    now = int(time.time())
    return {
        "iss": config.identity.issuer,
        "aud": config.identity.audience,
        "sub": "a",
        "tenant": "t",
        "iat": now,
        "exp": now + 60,
    }


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token_gives_identity_with_scopes_and_chain(config, verifier):
    identity = verifier.verify(mint(config, act=["planner", "orchestrator"]))
    assert identity.agent_id == "support-bot"
    assert identity.tenant == "acme"
    assert identity.scopes == ("payments.refund", "crm.*")
    assert identity.chain == ("planner", "orchestrator")


def test_header_forms(config, verifier):
    token = mint(config)
    assert verifier.verify_header(f"Bearer {token}").agent_id == "support-bot"
    assert verifier.verify_header(f"bearer  {token} ").agent_id == "support-bot"
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(IdentityError) as info:
            verifier.verify_header(bad)
        assert info.value.reason == "missing_token"


def test_expired_not_yet_valid_and_lifetime(config, verifier):
    now = time.time()
    assert reason(verifier, mint(config, now=now - 3600, ttl_s=300)) == "token_expired"
    assert reason(verifier, mint(config, now=now + 600, ttl_s=300)) == "token_not_yet_valid"
    assert reason(verifier, mint(config, ttl_s=7200)) == "lifetime_too_long"


def test_wrong_audience_and_issuer(config, verifier):
    assert reason(verifier, mint(config, extra_claims={"aud": "someone-else"})) == "wrong_audience"
    assert reason(verifier, mint(config, extra_claims={"iss": "https://evil.test"})) == "wrong_issuer"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud", "iss", "tenant"])
def test_missing_required_claims(config, claim):
    from extauthz.devtokens import load_signing_key

    key = load_signing_key(config.identity.dev_signing_key)
    claims = base_claims(config)
    del claims[claim]
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": jwk_thumbprint(key.public_key())})
    verifier = TokenVerifier(config.identity, keyset_from_config(config.identity))
    assert reason(verifier, token) == "missing_claim"


def test_alg_none_is_refused(config, verifier):
    claims = base_claims(config)
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    assert reason(verifier, token) == "algorithm_not_allowed"


def test_hs256_signed_with_the_public_key_is_refused(config, verifier):
    # The classic RS/ES→HS confusion: the attacker uses the public PEM as an HMAC secret.
    claims = base_claims(config)
    public_pem = config.identity.public_keys[0].read_bytes()
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = b64(claims)
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert reason(verifier, token) == "algorithm_not_allowed"


def test_signature_by_another_key_and_tampering(config, verifier):
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(
        {"sub": "x"}, other, algorithm="ES256", headers={"kid": jwk_thumbprint(config and other.public_key())}
    )
    assert reason(verifier, token) == "unknown_key"
    good = mint(config)
    header, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tenant"] = "globex"
    assert reason(verifier, f"{header}.{b64(claims)}.{sig}") == "bad_signature"


def test_garbage_and_huge_tokens(verifier):
    assert reason(verifier, "not-a-jwt") == "malformed_token"
    assert reason(verifier, "a.b.c") == "malformed_token"
    assert reason(verifier, "x" * 9000) == "token_too_large"


def test_wrong_typ_is_refused(config, verifier):
    assert reason(verifier, mint(config, headers={"typ": "secevent+jwt"})) == "wrong_token_type"


def test_jku_header_is_ignored(config, verifier):
    # A jku pointing elsewhere must not add keys: the token signed by another key stays unknown.
    other = ec.generate_private_key(ec.SECP256R1())
    claims = base_claims(config)
    token = jwt.encode(
        claims,
        other,
        algorithm="ES256",
        headers={"jku": "http://127.0.0.1:1/jwks.json", "jwk": public_jwk(other.public_key())},
    )
    assert reason(verifier, token) == "bad_signature"


def test_tampered_act_chain_fails_signature(config, verifier):
    good = mint(config, act=["planner"])
    header, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["act"] = {"sub": "admin-agent"}
    assert reason(verifier, f"{header}.{b64(claims)}.{sig}") == "bad_signature"


def test_malformed_act_claim(config, verifier):
    assert reason(verifier, mint(config, extra_claims={"act": {"nope": 1}})) == "malformed_token"


def test_verified_tokens_are_cached_but_still_expire(config):
    clock = [time.time()]
    verifier = TokenVerifier(config.identity, keyset_from_config(config.identity), clock=lambda: clock[0])
    token = mint(config, ttl_s=60, now=clock[0])
    assert verifier.verify(token).agent_id == "support-bot"
    assert verifier.verify(token).agent_id == "support-bot"  # cache hit
    clock[0] += 120
    with pytest.raises(IdentityError):
        verifier.verify(token)


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    ],
)
def test_jwks_keys_with_rotation_and_rate_limited_refetch(config, make_key, alg):
    old, new = make_key(), make_key()
    served = {"keys": [{**public_jwk(old.public_key()), "kid": "k1", "use": "sig"}]}
    fetches = []
    clock = [1000.0]

    def fetch(url):
        fetches.append(url)
        return served

    keys = KeySet((), "https://idp.test/jwks", cache_s=300, min_refresh_s=30, fetch=fetch, clock=lambda: clock[0])
    verifier = TokenVerifier(config.identity, keys)
    claims = base_claims(config)
    assert verifier.verify(jwt.encode(claims, old, algorithm=alg, headers={"kid": "k1"})).agent_id == "a"
    assert len(fetches) == 1
    # Rotation: a token with an unknown kid triggers one refetch...
    served = {"keys": [{**public_jwk(new.public_key()), "kid": "k2", "use": "sig"}]}
    clock[0] += 31
    assert (
        verifier.verify(jwt.encode({**claims, "sub": "b"}, new, algorithm=alg, headers={"kid": "k2"})).agent_id == "b"
    )
    assert len(fetches) == 2
    # ...but a flood of unknown kids does not become a flood of fetches.
    for i in range(5):
        with pytest.raises(IdentityError):
            verifier.verify(jwt.encode({**claims, "sub": f"c{i}"}, new, algorithm=alg, headers={"kid": f"rand{i}"}))
    assert len(fetches) == 2


def test_hmac_keys_in_jwks_are_ignored(config):
    served = {"keys": [{"kty": "oct", "k": base64.urlsafe_b64encode(b"secret").decode(), "kid": "h", "alg": "HS256"}]}
    keys = KeySet((), "https://idp.test/jwks", fetch=lambda url: served)
    assert keys.find("h", "HS256") == []


def test_delegation_facts_for_the_policy(config, verifier):
    parent_scopes = {"sub": "support-orchestrator", "scope": "payments.* crm.*", "act": {"sub": "root-planner"}}
    identity = verifier.verify(mint(config, scopes=["payments.refund"], extra_claims={"act": parent_scopes}))
    facts = identity.to_input()
    assert (facts["parent"], facts["root"], facts["depth"]) == ("support-orchestrator", "root-planner", 2)
    assert facts["scopes_within_parent"] is True
    wider = verifier.verify(
        mint(config, scopes=["payments.refund", "slack.post_message"], extra_claims={"act": parent_scopes})
    )
    assert wider.to_input()["scopes_within_parent"] is False
    direct = verifier.verify(mint(config)).to_input()
    assert direct["depth"] == 0 and "parent" not in direct and "scopes_within_parent" not in direct
    assert reason(verifier, mint(config, extra_claims={"act": {"sub": "p", "scope": ["x"]}})) == "malformed_token"
