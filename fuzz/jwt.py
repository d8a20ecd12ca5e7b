"""atheris harness: the JWT verifier wrapper (see fuzz.targets.jwt).

Run as a module (``python -m fuzz.jwt`` or ``python -m fuzz jwt``), never as a script:
``python fuzz/jwt.py`` would put fuzz/ on sys.path and this file would shadow pyjwt.
"""

from __future__ import annotations

import json
import sys
import time

import atheris

with atheris.instrument_imports(include=["extauthz", "jwt"]):
    from fuzz.targets import jwt as target

from fuzz._decode import json_value, pick, proto_text, text

ALGS = ("ES256", "RS256", "HS256", "none", "None", "EdDSA", "ES384", "PS256", "")
HEADER_KEYS = ("alg", "typ", "kid", "jku", "x5u", "jwk", "crit", "cty", "b64")
CLAIM_KEYS = ("iss", "aud", "sub", "tenant", "scope", "scp", "iat", "nbf", "exp", "act", "labels", "jti")
SCHEMES = ("Bearer ", "bearer ", "BEARER  ", "Basic ", "", "Bearer\t")


def _header(fdp: atheris.FuzzedDataProvider) -> bytes:
    header: dict[str, object] = {"alg": "ES256", "typ": "JWT"}
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        key = pick(fdp, HEADER_KEYS)
        header[key] = pick(fdp, ALGS) if key == "alg" and fdp.ConsumeBool() else json_value(fdp)
    return json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")


def _claims(fdp: atheris.FuzzedDataProvider) -> dict[str, object]:
    claims: dict[str, object] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        key = pick(fdp, CLAIM_KEYS) if fdp.ConsumeBool() else text(fdp, 8)
        claims[key] = json_value(fdp)
    return claims


def decode(data: bytes) -> target.Case:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        return target.Case(raw=proto_text(fdp, 200))
    header = _header(fdp) if fdp.ConsumeBool() else target.Case.header
    if kind == 1:  # arbitrary signed payload bytes (not JSON, duplicate keys, deep nesting…)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    else:
        payload = target.claims_payload(_claims(fdp), time.time())
    return target.Case(header=header, payload=payload, scheme=pick(fdp, SCHEMES), sign=kind != 4)


def test_one_input(data: bytes) -> None:
    target.exercise(decode(data))


def main(argv: list[str]) -> None:
    target.verifier()
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
