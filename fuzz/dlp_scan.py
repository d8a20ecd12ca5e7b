"""atheris harness: dlp.scan / dlp.redact (see fuzz.targets.dlp_scan).

    python -m fuzz dlp_scan --runs 2000
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["dlp"]):
    from fuzz.targets import dlp_scan as target

from fuzz._decode import STRINGS, json_bytes, json_value, pick, text

DETECTORS = ("EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "DATE_OF_BIRTH", "SECRET",
             "NAME", "ADDRESS", "ALL", "*", "email", " ssn ", "NOPE")
CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "text/plain", "application/x-ndjson",
                 "application/x-www-form-urlencoded", "text/html", "text/plain; charset=latin-1",
                 "text/plain; charset=ascii", "application/octet-stream", "text/json", "")
FIELDS = ("email", "ssn", "$.customer.email", "$.items[*].email", "$..dob", "$[0]", "note", "$.a[", "")
MODES = ("mask", "partial", "hash", "remove")


def _text(fdp: atheris.FuzzedDataProvider) -> str:
    """Free text with PII-shaped pieces between arbitrary characters."""
    parts = [pick(fdp, STRINGS) if fdp.ConsumeBool() else text(fdp, 30) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    return pick(fdp, (" ", "", "\n", ", ", "\x00")).join(parts)


def decode(data: bytes) -> target.Case:
    fdp = atheris.FuzzedDataProvider(data)
    detectors = None if fdp.ConsumeIntInRange(0, 4) == 0 else tuple(
        pick(fdp, DETECTORS) for _ in range(fdp.ConsumeIntInRange(0, 3))
    )
    content_type = pick(fdp, CONTENT_TYPES)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        body = json_bytes(fdp, json_value(fdp))
    elif kind == 1:
        body = _text(fdp).encode("utf-8", "surrogatepass")
    else:
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    return target.Case(
        text=_text(fdp),
        detectors=detectors,
        body=body,
        content_type=content_type,
        fields=tuple(pick(fdp, FIELDS) for _ in range(fdp.ConsumeIntInRange(0, 2))),
        mode=pick(fdp, MODES),
        on_binary=pick(fdp, ("pass", "block")),
    )


def test_one_input(data: bytes) -> None:
    target.exercise(decode(data))


def main(argv: list[str]) -> None:
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
