"""Target: the ext_proc handler (``ExternalProcessorServicer.Process`` + ``redactor``).

A case is one stream as Envoy could send it: request headers, body chunks, trailers,
response headers and body chunks (JSON, text, SSE, gzip/deflate, garbage), every message
with or without the ext_authz dynamic metadata (a response-only stream starts at the
response headers).  Promise, on every stream:

* ``Process`` never raises: every input gets an answer;
* one answer per message, of the same phase, until an ``immediate_response`` ends the
  stream; an immediate response is 413 or 502 with a JSON ``{error, message}`` body;
* a changed body is sent with a matching ``content-length``;
* a request body replaced at its headers (``check_redacts``: Check redacted it, and the
  bootstrap has no Lua filter to put it in place) is exactly the one Check handed over;
* a redacted body that was valid JSON is still valid JSON (after its content-encoding);
* an e-mail address held as a JSON string value is gone when EMAIL redaction applies.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from extauthz.envoy_proc import ExternalProcessorServicer
from extauthz.limits.enforce import UsageRecorder
from extauthz.metadata import EXT_AUTHZ_NAMESPACE, MD_REDACT, MD_REQUEST_BODY
from extauthz.redactor import RedactionSettings, redact_request_in_check
from extauthz.telemetry import Metrics
from extauthz.tracing import Tracing
from fuzz.targets import FuzzFailure
from fuzz.targets.service import fuzz_service

EMAIL = "jane.doe@example.com"
REFUSAL_STATUSES = frozenset({413, 502})
SETTINGS = (
    RedactionSettings(),
    RedactionSettings(response_detectors=("SECRET",)),
    RedactionSettings(response_detectors=("EMAIL", "SSN"), mode="hash", hash_key=b"k" * 32),
    RedactionSettings(response_detectors=("ALL",), mode="remove", on_binary="block", max_body_bytes=256),
    RedactionSettings(mode="partial"),
)

# A phase: ("request_headers"|"response_headers", headers) | ("request_body"|"response_body",
# body, end_of_stream) | ("request_trailers"|"response_trailers",)
Phase = tuple[Any, ...]


@dataclass(frozen=True)
class Case:
    settings: int = 0  # index into SETTINGS
    metadata: Mapping[str, str] | None = None  # the ext_authz namespace, None: not forwarded
    phases: Sequence[Phase] = field(default_factory=tuple)
    # Check redacted the request body (the whole of the request_body phases) and handed the
    # outcome over in the metadata, as it does on a call with both bodies.
    check_redacts: bool = False


class _Context:
    """The one servicer-context call Process makes (no gRPC call exists in process)."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


@cache
def servicer(settings: int) -> ExternalProcessorServicer:
    service = fuzz_service()
    usage = UsageRecorder(service.store, service.authorizer.limits_warner, service.metrics)
    return ExternalProcessorServicer(SETTINGS[settings], Metrics(), Tracing(service.config.telemetry), usage=usage)


def _headers(values: Mapping[str, str]) -> pb.HttpHeaders:
    entries = [base_pb2.HeaderValue(key=k, raw_value=v.encode("utf-8", "surrogatepass")) for k, v in values.items()]
    return pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=entries))


def to_request(phase: Phase, metadata: Mapping[str, str] | None) -> pb.ProcessingRequest:
    """One message as Envoy sends it: every message carries the forwarded metadata."""
    kind = phase[0]
    if kind in ("request_headers", "response_headers"):
        request = pb.ProcessingRequest(**{kind: _headers(phase[1])})
    elif kind in ("request_body", "response_body"):
        request = pb.ProcessingRequest(**{kind: pb.HttpBody(body=phase[1], end_of_stream=phase[2])})
    else:
        request = pb.ProcessingRequest(**{kind: pb.HttpTrailers()})
    if metadata is not None:
        struct = struct_pb2.Struct()
        struct.update(dict(metadata))
        request.metadata_context.filter_metadata[EXT_AUTHZ_NAMESPACE].CopyFrom(struct)
    return request


def requests_of(case: Case) -> list[pb.ProcessingRequest]:
    metadata = forwarded_metadata(case)
    return [to_request(p, metadata) for p in case.phases]


def forwarded_metadata(case: Case) -> Mapping[str, str] | None:
    """The case's metadata, plus what Check hands over when ``check_redacts``."""
    if not case.check_redacts or case.metadata is None:
        return case.metadata
    content_type = (_phase_headers(case, "request_headers", len(case.phases)) or {}).get("content-type", "")
    handed = redact_request_in_check(SETTINGS[case.settings], case.metadata, _request_body(case), content_type)
    return {**case.metadata, **handed}


def _request_body(case: Case) -> bytes:
    """The whole request body, as Check sees it (Envoy buffers it for ext_authz)."""
    return b"".join(p[1] for p in case.phases if p[0] == "request_body")


async def _stream(requests: Sequence[pb.ProcessingRequest]) -> AsyncIterator[pb.ProcessingRequest]:
    for request in requests:
        yield request


async def _collect(case: Case, requests: Sequence[pb.ProcessingRequest]) -> list[pb.ProcessingResponse]:
    return [r async for r in servicer(case.settings).Process(_stream(requests), _Context())]


def exercise(case: Case) -> list[pb.ProcessingResponse]:
    requests = requests_of(case)
    responses = asyncio.run(_collect(case, requests))
    _check_answers(case, requests, responses)
    return responses


def _check_answers(case: Case, requests: Sequence[pb.ProcessingRequest], responses: Sequence[Any]) -> None:
    if len(responses) > len(requests):
        raise FuzzFailure(f"{len(responses)} answers to {len(requests)} messages")
    for index, response in enumerate(responses):
        if not isinstance(response, pb.ProcessingResponse):
            raise FuzzFailure(f"answer {index} is a {type(response).__name__}")
        kind = response.WhichOneof("response")
        if kind == "immediate_response":
            _check_refusal(response.immediate_response)
            if index != len(responses) - 1:
                raise FuzzFailure("the stream went on after an immediate response")
            return
        if kind != requests[index].WhichOneof("request"):
            raise FuzzFailure(f"a {requests[index].WhichOneof('request')} message got a {kind} answer")
        if kind in ("request_body", "response_body"):
            _check_body(case, index, getattr(response, kind).response)
        if kind == "request_headers" and response.request_headers.response.HasField("body_mutation"):
            _check_replaced_request(case, response.request_headers.response)
    # Fewer answers than messages: the servicer closed the stream cleanly once the exchange
    # needed nothing more (Envoy then proceeds without it and sends no further messages).


def _check_refusal(immediate: pb.ImmediateResponse) -> None:
    if immediate.status.code not in REFUSAL_STATUSES:
        raise FuzzFailure(f"refusal with status {immediate.status.code}")
    body = json.loads(immediate.body)
    if not isinstance(body, dict) or not {"error", "message"} <= body.keys():
        raise FuzzFailure("a refusal body without error and message")


def _phase_headers(case: Case, kind: str, before: int) -> Mapping[str, str] | None:
    """The headers the exchange saw for a body at ``before``: the last ``kind`` phase before it."""
    found = [p[1] for p in case.phases[:before] if p[0] == kind]
    return found[-1] if found else None


def _check_body(case: Case, index: int, common: pb.CommonResponse) -> None:
    phase = case.phases[index]
    side = "request" if phase[0] == "request_body" else "response"
    headers = _phase_headers(case, f"{side}_headers", index)
    if headers is None:
        return  # out of order: the exchange never saw these headers
    content_type = headers.get("content-type", "")
    if side == "response" and "text/event-stream" in content_type.lower():
        return  # SSE chunks are rewritten event by event; a chunk need not be a whole document
    changed = common.HasField("body_mutation")
    new = common.body_mutation.body if changed else phase[1]
    lengths = [h.header.raw_value for h in common.header_mutation.set_headers if h.header.key == "content-length"]
    if changed and lengths != [str(len(new)).encode()]:
        raise FuzzFailure(f"a changed body of {len(new)} bytes is sent with content-length {lengths}")
    if not _is_json(content_type):
        return  # redacted as its content type says (a form that looks like JSON is a form)
    encoding = headers.get("content-encoding", "").strip().lower() if side == "response" else ""
    if not changed and encoding not in ("", "identity"):
        return  # passed on as sent (a compressed body Aegis cannot decode is refused, not passed)
    before, after = _decoded(phase[1], encoding), _decoded(new, encoding)
    original = _strict_json(before)
    if original is INVALID:
        return
    redacted = _strict_json(after)
    if redacted is INVALID:
        raise FuzzFailure("a redacted JSON body is no longer valid JSON")
    if _email_redacted(case, side) and EMAIL in _string_values(original) and EMAIL in _string_values(redacted):
        raise FuzzFailure("an e-mail address survived EMAIL redaction" + ("" if changed else " (body passed on)"))


def _check_replaced_request(case: Case, common: pb.CommonResponse) -> None:
    """A request body replaced at its headers is the one Check handed over, redacted."""
    handed = (forwarded_metadata(case) or {}).get(MD_REQUEST_BODY)
    if handed is None or common.body_mutation.body != handed.encode():
        raise FuzzFailure("a request body was replaced with one Check did not hand over")
    if common.status != pb.CommonResponse.CONTINUE_AND_REPLACE:
        raise FuzzFailure("a replaced request body without CONTINUE_AND_REPLACE")
    content_type = (_phase_headers(case, "request_headers", len(case.phases)) or {}).get("content-type", "")
    original = _strict_json(_request_body(case)) if _is_json(content_type) else INVALID
    if original is INVALID:
        return
    redacted = _strict_json(common.body_mutation.body)
    if redacted is INVALID:
        raise FuzzFailure("a request body Check redacted is no longer valid JSON")
    if _email_redacted(case, "request") and EMAIL in _string_values(original) and EMAIL in _string_values(redacted):
        raise FuzzFailure("an e-mail address survived Check's EMAIL redaction")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


INVALID = object()  # not strict JSON (``null`` is valid JSON, so None cannot say it)


def _strict_json(body: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(body, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return INVALID


def _string_values(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in _string_values(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in _string_values(v)]
    return []


def _email_redacted(case: Case, side: str) -> bool:
    """Whether EMAIL (or every detector) is among the obligations of this side."""
    detectors: list[str] = []
    raw = (case.metadata or {}).get(MD_REDACT)
    try:
        data = json.loads(raw) if raw else {}
        detectors.extend(d.upper() for d in data.get("detectors", ()) if isinstance(d, str))
    except (ValueError, AttributeError, TypeError):
        return False
    if side == "response":
        detectors.extend(SETTINGS[case.settings].response_detectors)
    return bool({"EMAIL", "ALL", "*"} & set(detectors))
