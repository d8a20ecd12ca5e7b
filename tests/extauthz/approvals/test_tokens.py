"""Override tokens and signed links: signing, verification and every refusal."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from extauthz.approvals.tokens import (
    OVERRIDE_EXPIRED,
    OVERRIDE_INVALID,
    OVERRIDE_TYP,
    OverrideRefused,
    OverrideTokens,
    SignedLinks,
    load_or_create_key,
)

NOW = 1_800_000_000.0
FACTS = {"approval_id": "apr_1", "agent_id": "support-bot", "tenant": "acme", "fingerprint": "f" * 64, "rule": "r1"}


@pytest.fixture
def tokens() -> OverrideTokens:
    return OverrideTokens(ed25519.Ed25519PrivateKey.generate())


def test_round_trip_and_determinism(tokens: OverrideTokens):
    token = tokens.issue(**FACTS, iat=NOW, exp=NOW + 600)
    assert token == tokens.issue(**FACTS, iat=NOW, exp=NOW + 600)
    claims = tokens.verify(token, NOW + 1)
    assert (claims.approval_id, claims.agent_id, claims.tenant, claims.fingerprint, claims.rule) == tuple(
        FACTS.values()
    )
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": OVERRIDE_TYP}
    assert claims.to_input() == {"approval_id": "apr_1", "rule": "r1", "expires_at": NOW + 600}


def test_expired(tokens: OverrideTokens):
    token = tokens.issue(**FACTS, iat=NOW, exp=NOW + 600)
    with pytest.raises(OverrideRefused) as refused:
        tokens.verify(token, NOW + 601)
    assert refused.value.rule == OVERRIDE_EXPIRED
    past = tokens.issue(**FACTS, iat=time.time() - 700, exp=time.time() - 100)
    with pytest.raises(OverrideRefused, match="expired"):
        tokens.verify(past, time.time())


def _forgeries(tokens: OverrideTokens) -> list[str]:
    good = tokens.issue(**FACTS, iat=NOW, exp=NOW + 600)
    other = OverrideTokens(ed25519.Ed25519PrivateKey.generate()).issue(**FACTS, iat=NOW, exp=NOW + 600)
    claims = jwt.decode(good, options={"verify_signature": False})
    public_pem = tokens._public.public_bytes(  # noqa: SLF001 - the RS/HS confusion needs the public key
        encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.Raw,
        format=__import__("cryptography.hazmat.primitives.serialization", fromlist=["PublicFormat"]).PublicFormat.Raw,
    )
    return [
        other,  # signed by another key
        good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),  # tampered signature
        jwt.encode(claims, "", algorithm="none", headers={"typ": OVERRIDE_TYP}),  # alg none
        jwt.encode(claims, public_pem, algorithm="HS256", headers={"typ": OVERRIDE_TYP}),  # HS with the public key
        jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA"),  # wrong typ
        "not-a-jwt",
        "x" * 5000,
    ]


def test_forgeries_are_refused(tokens: OverrideTokens):
    for forged in _forgeries(tokens):
        with pytest.raises(OverrideRefused) as refused:
            tokens.verify(forged, NOW + 1)
        assert refused.value.rule == OVERRIDE_INVALID
        assert forged[:20] not in refused.value.message


def test_signing_key_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "override.pem"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_key(path)
    token = OverrideTokens(key).issue(**FACTS, iat=NOW, exp=NOW + 60)
    assert OverrideTokens(again).verify(token, NOW).approval_id == "apr_1"


@pytest.mark.parametrize(
    ("change", "ok"),
    [({}, True), ({"action": "deny"}, False), ({"approval_id": "apr_2"}, False), ({"now": NOW + 7200}, False)],
)
def test_signed_links(change: dict, ok: bool):
    links = SignedLinks(b"k" * 32, "https://aegis.example", 3600)
    path = links.path("apr_1", "approve", NOW)
    query = dict(p.split("=") for p in path.split("?")[1].split("&"))
    args = {"approval_id": "apr_1", "action": "approve", "now": NOW, **change}
    assert links.verify(args["approval_id"], args["action"], query["exp"], query["sig"], args["now"]) is ok
    assert links.url("apr_1", "approve", NOW).startswith("https://aegis.example/console/approvals/apr_1/link?")
