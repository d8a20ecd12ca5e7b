"""atheris harness: the ext_authz Check handler (see fuzz.targets.check for the promise).

    python -m fuzz check --runs 2000          # or: python -m fuzz.check -runs=2000 fuzz/corpus/check
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["extauthz", "dlp"]):
    from fuzz.targets import check as target

from fuzz._decode import headers, json_bytes, json_value, pick, proto_text

METHODS = ("POST", "GET", "PUT", "DELETE", "PATCH", "post", "HEAD", "OPTIONS")
KNOWN_HEADERS = (
    ("content-type", "application/json"),
    ("content-type", "application/json; charset=utf-8"),
    ("content-type", "application/x-www-form-urlencoded"),
    ("content-type", "text/plain"),
    ("content-type", "application/vnd.api+json"),
    ("x-aegis-purpose", "refund for ticket 42"),
    ("x-aegis-override", "eyJhbGciOiJIUzI1NiJ9.e30.x"),
    ("x-aegis-parent-agent", "orchestrator"),
    ("x-envoy-auth-partial-body", "true"),
    ("x-http-method-override", "DELETE"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
)
AUTH_SHAPES = (
    f"Bearer {target.VALID}",
    f"bearer {target.VALID}",
    f"Bearer  {target.VALID} ",
    f"Basic {target.VALID}",
    f"{target.VALID}",
    f"Bearer {target.VALID}.{target.VALID}",
)


def _path(fdp: atheris.FuzzedDataProvider, template: str) -> str:
    path = re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", lambda _m: proto_text(fdp, 12), template)
    if fdp.ConsumeBool():
        path = pick(fdp, (path, path.upper(), path + "/", "/" + path, path.replace("/", "//"), proto_text(fdp)))
    if fdp.ConsumeBool():
        path += "?" + pick(fdp, ("amount=1000", "amount=20&amount=30", "a=%ff", proto_text(fdp)))
    return path


def decode(data: bytes) -> target.Case:
    fdp = atheris.FuzzedDataProvider(data)
    # The identity first: when the data runs short, the rest defaults, not the token (0 = valid).
    auth_kind = fdp.ConsumeIntInRange(0, 5)
    authorization = target.Case.authorization if auth_kind < 3 else pick(fdp, AUTH_SHAPES) if auth_kind == 3 else None
    if auth_kind == 5:
        authorization = proto_text(fdp, 60)
    edit = (fdp.ConsumeInt(2), proto_text(fdp, 2)) if fdp.ConsumeIntInRange(0, 5) == 5 else None
    host, method, template = pick(fdp, target.catalogue())
    if fdp.ConsumeIntInRange(0, 3) == 0:
        host = pick(fdp, (host.upper(), host + ":10000", host + ".", proto_text(fdp, 20)))
    if fdp.ConsumeIntInRange(0, 3) == 0:
        method = pick(fdp, METHODS)
    hdrs = headers(fdp, KNOWN_HEADERS)
    hdrs.setdefault("content-type", "application/json")
    body_kind = fdp.ConsumeIntInRange(0, 3)
    if body_kind == 0:
        body = b""
    elif body_kind == 3:
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    else:
        body = json_bytes(fdp, json_value(fdp))
    return target.Case(
        method=method,
        host=host,
        path=_path(fdp, template),
        headers=hdrs,
        body=body,
        authorization=authorization,
        token_edit=edit,
    )


def test_one_input(data: bytes) -> None:
    target.exercise(decode(data))


def main(argv: list[str]) -> None:
    target.servicer()  # build the service before fuzzing starts (not counted as a slow input)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
