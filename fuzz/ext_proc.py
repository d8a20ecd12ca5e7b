"""atheris harness: the ext_proc handler and redactor (see fuzz.targets.ext_proc).

    python -m fuzz ext_proc --runs 2000
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["extauthz", "dlp"]):
    from fuzz.targets import ext_proc as target

from fuzz._decode import json_bytes, json_value, pick, proto_text, text

CONTENT_TYPES = ("application/json", "text/plain", "text/event-stream", "application/x-ndjson",
                 "application/x-www-form-urlencoded", "application/octet-stream", "text/html; charset=utf-8", "")
ENCODINGS = ("", "identity", "gzip", "deflate", "br", "GZIP ")
DETECTORS = ("EMAIL", "SSN", "PHONE", "CREDIT_CARD", "IBAN", "SECRET", "IP_ADDRESS", "DATE_OF_BIRTH",
             "NAME", "ADDRESS", "ALL", "*", "email", "NOPE")
FIELDS = ("email", "ssn", "$.customer.email", "$.items[*].email", "$..dob", "$.a[", "note", "")


def _redact_metadata(fdp: atheris.FuzzedDataProvider) -> str:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:  # what Check writes
        data = {
            "fields": [pick(fdp, FIELDS) for _ in range(fdp.ConsumeIntInRange(0, 2))],
            "detectors": [pick(fdp, DETECTORS) for _ in range(fdp.ConsumeIntInRange(0, 3))],
        }
        return json.dumps(data)
    if kind == 1:
        return json.dumps(json_value(fdp))
    if kind == 2:
        return ""
    return proto_text(fdp, 30)


def _metadata(fdp: atheris.FuzzedDataProvider) -> dict[str, str] | None:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return None
    metadata = {"decision": "sanitize", "tool": pick(fdp, ("payments.refund", "slack.post_message", ""))}
    if fdp.ConsumeBool():
        metadata["redact"] = _redact_metadata(fdp)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        charge = {"budget": "b", "key": "k", "expires_at": 4e9, "prices": {"output_tokens": 1}, "limit": 10**9}
        metadata["usage_budgets"] = pick(fdp, (json.dumps([charge]), proto_text(fdp, 20), '[{"prices": {"a": 1e400}}]'))
    return metadata


def _body(fdp: atheris.FuzzedDataProvider, content_type: str, encoding: str) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        body = json_bytes(fdp, json_value(fdp))
    elif kind == 1 and "event-stream" in content_type:
        events = [f"data: {json.dumps(json_value(fdp))}" if fdp.ConsumeBool() else f"data: {text(fdp)}"
                  for _ in range(fdp.ConsumeIntInRange(1, 3))]
        body = ("\n\n".join(events) + pick(fdp, ("\n\n", "", "\n"))).encode("utf-8", "surrogatepass")
    elif kind == 1:
        body = text(fdp, 120).encode("utf-8", "surrogatepass")
    else:
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    if encoding.strip().lower() == "gzip" and fdp.ConsumeIntInRange(0, 3) != 0:
        body = gzip.compress(body, mtime=0)
    elif encoding == "deflate" and fdp.ConsumeIntInRange(0, 3) != 0:
        body = zlib.compress(body)
    return body


def decode(data: bytes) -> target.Case:
    fdp = atheris.FuzzedDataProvider(data)
    settings = fdp.ConsumeIntInRange(0, len(target.SETTINGS) - 1)
    metadata = _metadata(fdp)
    request_type, response_type = pick(fdp, CONTENT_TYPES), pick(fdp, CONTENT_TYPES)
    encoding = pick(fdp, ENCODINGS)
    phases: list[target.Phase] = [("request_headers", {"content-type": request_type, ":path": "/x"})]
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        phases.append(("request_body", _body(fdp, request_type, ""), fdp.ConsumeBool()))
    if fdp.ConsumeIntInRange(0, 4) == 0:
        phases.append(("request_trailers",))
    phases.append(("response_headers", {"content-type": response_type, "content-encoding": encoding}))
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        phases.append(("response_body", _body(fdp, response_type, encoding), fdp.ConsumeBool()))
    if fdp.ConsumeIntInRange(0, 4) == 0:
        phases.append(("response_trailers",))
    if fdp.ConsumeIntInRange(0, 7) == 0:  # out of order: Envoy never does this, Process must cope
        phases.insert(0, phases.pop(fdp.ConsumeIntInRange(0, len(phases) - 1)))
    return target.Case(settings=settings, metadata=metadata, phases=tuple(phases), check_redacts=fdp.ConsumeBool())


def test_one_input(data: bytes) -> None:
    target.exercise(decode(data))


def main(argv: list[str]) -> None:
    for index in range(len(target.SETTINGS)):
        target.servicer(index)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
