"""Property-based fuzzing of the JWT verifier wrapper (bounded; the atheris harness is fuzz/jwt.py).

Raw header values, and tokens signed with the configured key over fuzzed headers and
claims, must give an identity only for tokens pyjwt itself verifies, and otherwise an
IdentityError (401) that never quotes the token (``fuzz.targets.jwt``).
"""

from __future__ import annotations

import json
import time

from fuzz_strategies import FUZZ_SETTINGS, JSON_VALUES, proto_text
from hypothesis import given
from hypothesis import strategies as st

from extauthz.errors import IdentityError
from extauthz.identity import AgentIdentity
from fuzz.targets import jwt as target

HEADER_VALUES = st.one_of(JSON_VALUES, st.sampled_from(["ES256", "RS256", "HS256", "none", "EdDSA", "JWT", "at+jwt"]))
HEADERS = st.dictionaries(
    st.sampled_from(["alg", "typ", "kid", "jku", "x5u", "jwk", "crit", "b64", "cty"]), HEADER_VALUES, max_size=3
)
CLAIMS = st.dictionaries(
    st.sampled_from(["iss", "aud", "sub", "tenant", "scope", "scp", "iat", "nbf", "exp", "act", "labels"]),
    JSON_VALUES,
    max_size=3,
)


@FUZZ_SETTINGS
@given(proto_text(120), st.sampled_from(["", "Bearer ", "bearer ", "Basic "]))
def test_raw_headers_give_an_identity_error(raw, scheme):
    assert isinstance(target.exercise(target.Case(raw=scheme + raw)), IdentityError)


@FUZZ_SETTINGS
@given(HEADERS, CLAIMS, st.booleans())
def test_signed_tokens_with_fuzzed_headers_and_claims(header, claims, sign):
    header_bytes = json.dumps({"alg": "ES256", "typ": "JWT", **header}).encode("utf-8", "surrogatepass")
    payload = target.claims_payload(claims, time.time())
    target.exercise(target.Case(header=header_bytes, payload=payload, sign=sign))


@FUZZ_SETTINGS
@given(st.binary(max_size=200))
def test_signed_non_json_payloads(payload):
    assert isinstance(target.exercise(target.Case(payload=payload)), IdentityError)


def test_the_oracle_accepts_a_valid_token():
    """Not vacuous: the unfuzzed signed claims verify and name the token's subject."""
    identity = target.exercise(target.Case(payload=target.claims_payload({}, time.time())))
    assert isinstance(identity, AgentIdentity) and identity.agent_id == "support-bot"
