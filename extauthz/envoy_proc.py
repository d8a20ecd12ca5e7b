"""The ext_proc adapter: ``ProcessingRequest`` stream ↔ ``redactor.Exchange``.  The only code
that imports the ext_proc protobufs; redaction itself lives in ``redactor`` and ``dlp``.

Served by the compiled gRPC front (``extauthz.grpc_front``: a stream holds no thread while
the upstream answers, and each message is answered on the runtime thread that read it), or
by grpc.aio when the front is not built.

Envoy runs one of two ext_proc instances per call, the one Check named in ``body_phases``
(``metadata.BODY_PHASES``, ``envoyconfig.filters``): both bodies, or the response only, in
which case the stream starts at the response headers (the agent's trace context then comes
as attributes).  When Check redacted the request body already (``metadata.MD_REQUEST_REDACTED``),
Envoy's Lua filter puts it in place and the stream is response-only; with a bootstrap
without that filter, the answer to the request headers carries it and Envoy sends no
request body message.  Either way this stream counts the request's redactions.  An
event stream switches to STREAMED at its response headers (``mode_override``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from extauthz.limits.enforce import UsageCharge
from extauthz.limits.usage import usage_tokens
from extauthz.metadata import (
    EXT_AUTHZ_NAMESPACE,
    EXT_PROC_NAMESPACE,
    MD_OVER_LIMIT,
    MD_REDACTIONS,
    TRACE_HEADER_ATTRIBUTES,
)
from extauthz.redactor import METADATA_READ, BodyOutcome, Exchange, RedactionSettings, counts_text
from extauthz.telemetry import Metrics
from extauthz.tracing import TRACE_KEYS, Tracing, trace_carrier

_MODE = processing_mode_pb2.ProcessingMode
# A mode_override replaces the whole mode: unset body modes mean NONE, so say every phase.
_SKIP_ALL = _MODE(request_body_mode=_MODE.NONE, response_header_mode=_MODE.SKIP, response_body_mode=_MODE.NONE)
_RESPONSE_ONLY = _MODE(request_body_mode=_MODE.NONE, response_header_mode=_MODE.SEND, response_body_mode=_MODE.BUFFERED)
_BOTH_BODIES = _MODE(
    request_body_mode=_MODE.BUFFERED, response_header_mode=_MODE.SEND, response_body_mode=_MODE.BUFFERED
)
_SKIP_RESPONSE_BODY = _MODE(response_body_mode=_MODE.NONE)
_STREAM_RESPONSE_BODY = _MODE(response_body_mode=_MODE.STREAMED)


def authz_metadata(request: pb.ProcessingRequest, keys: Iterable[str] | None = None) -> dict[str, object]:
    """The ext_authz dynamic metadata Envoy forwarded (``forwarding_namespaces``): its string
    values, only those of ``keys`` when given."""
    struct = request.metadata_context.filter_metadata.get(EXT_AUTHZ_NAMESPACE)
    if struct is None:
        return {}
    fields = struct.fields
    if keys is not None:
        found = ((key, fields.get(key)) for key in keys)
        return {key: value.string_value for key, value in found if value is not None and value.HasField("string_value")}
    return {key: value.string_value for key, value in fields.items() if value.HasField("string_value")}


def trace_attributes(request: pb.ProcessingRequest) -> dict[str, str]:
    """The trace headers Envoy sent as attributes (``TRACE_HEADER_ATTRIBUTES``), by name."""
    found: dict[str, str] = {}
    for struct in request.attributes.values():  # keyed by the filter's name
        for header, expression in TRACE_HEADER_ATTRIBUTES.items():
            value = struct.fields.get(expression)
            if value is not None and value.HasField("string_value"):
                found[header] = value.string_value
    return found


def header_map(headers: pb.HttpHeaders, names: frozenset[str] | None = None) -> dict[str, str]:
    """Envoy sends header values as bytes in ``raw_value`` (names in lowercase); only those
    in ``names`` when given, the rest not decoded."""
    return {
        h.key: (h.raw_value.decode("latin-1") if h.raw_value else h.value)
        for h in headers.headers.headers
        if names is None or h.key in names
    }


# The headers each phase reads: the request's content type and trace context, the response's
# content type and encoding.
REQUEST_HEADERS_READ = frozenset({"content-type", *TRACE_KEYS})
RESPONSE_HEADERS_READ = frozenset({"content-type", "content-encoding"})


def _add_header(options: Any, key: str, value: str) -> None:
    """Append a header to a repeated ``HeaderValueOption`` field, in place.  ext_proc
    ignores ``value``: a header set only through it arrives empty."""
    header = options.add().header
    header.key = key
    header.raw_value = value.encode()


def body_answer(phase: str, outcome: BodyOutcome) -> pb.ProcessingResponse:
    """A body phase's answer (``phase``: ``request_body`` or ``response_body``): the new body
    with its content-length, or nothing changed.  Built in place: a nested message passed
    to a constructor is copied, and the body with it."""
    answer = pb.ProcessingResponse()
    body_response = getattr(answer, phase)
    body_response.SetInParent()  # the phase is the answer, changed or not
    if outcome.body is not None:
        common = body_response.response
        common.body_mutation.body = outcome.body
        # Without the matching content-length Envoy answers 500 after a body mutation.
        _add_header(common.header_mutation.set_headers, "content-length", str(len(outcome.body)))
    return answer


def replaced_request_answer(outcome: BodyOutcome, *, wants_response: bool = True) -> pb.ProcessingResponse:
    """The request headers' answer carrying the body Check redacted (CONTINUE_AND_REPLACE),
    or nothing changed; either way no request body message follows, and the response's
    phases only when ``wants_response``.  Only behind a bootstrap without the Lua filter
    that puts the body in place itself (``metadata.GRPC_ENVOY_FEATURES``).  Envoy drops the
    request's content-length on a replacement (a content-length set here too); the tool then
    gets a chunked request."""
    answer = pb.ProcessingResponse()
    headers_response = answer.request_headers
    headers_response.SetInParent()
    if outcome.body is not None:
        common = headers_response.response
        common.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        common.body_mutation.body = outcome.body
    answer.mode_override.CopyFrom(_RESPONSE_ONLY if wants_response else _SKIP_ALL)
    return answer


def refusal_response(status: int, code: str, message: str) -> pb.ProcessingResponse:
    """Stop the exchange: the agent gets ``status`` with a JSON reason, nothing else."""
    answer = pb.ProcessingResponse()
    refusal = answer.immediate_response
    refusal.status.code = status
    _add_header(refusal.headers.set_headers, "content-type", "application/json")
    refusal.body = json.dumps({"error": code, "message": message}).encode()
    refusal.details = f"aegis_{code}"
    return answer


def add_counts(answer: pb.ProcessingResponse, counts: Mapping[str, int], over_limit: Sequence[str] = ()) -> None:
    """Redaction counts (types and numbers only, never values) for the access log, and the
    phases whose body went through unredacted over the size limit (policy ``over_limit: pass``),
    into ``answer``'s dynamic metadata."""
    fields = answer.dynamic_metadata.fields[EXT_PROC_NAMESPACE].struct_value.fields
    fields[MD_REDACTIONS].string_value = counts_text(counts)
    if over_limit:
        fields[MD_OVER_LIMIT].string_value = ",".join(over_limit)


# One message's answers, and whether the stream is done: the processor then closes it
# itself, cleanly (Envoy goes on without it), rather than waiting for Envoy to reset it.
# grpc.aio leaks native memory per server stream the client cancels or resets
# (grpc/grpc#43360; measured here: +14.6 MB in a 10-minute soak, flat after closing
# early).  Envoy's own side must not reset either: envoyconfig.filters.EXT_PROC_GRACEFUL_CLOSE.
Step = tuple[list[pb.ProcessingResponse], bool]


class ProcessStream:
    """One ``Process`` stream: Envoy's messages in, in order; each answered synchronously.

    Transport-neutral: the compiled gRPC front calls ``answer`` on its runtime thread, the
    grpc.aio servicer from its event loop (in a worker thread when ``blocks_on`` says the
    answer waits on the usage store).
    """

    def __init__(self, processor: ExternalProcessorServicer, grpc_metadata: Sequence[tuple[str, str]]) -> None:
        self._processor = processor
        self._grpc_metadata = grpc_metadata
        self._exchange: Exchange | None = None
        self._request_content_type = ""
        self._streams_response = False  # the response body comes in STREAMED chunks

    def blocks_on(self, request: pb.ProcessingRequest) -> bool:
        """Whether answering ``request`` makes a store round trip (response token usage)."""
        return (
            request.HasField("response_body")
            and self._processor.records_usage
            and not self._streams_response
            and bool(self._exchange_for(request).usage)
        )

    def answer(self, request: pb.ProcessingRequest) -> Step:
        kind = request.WhichOneof("request")
        exchange = self._exchange_for(request)
        if exchange.refusal is not None:
            return [refusal_response(*exchange.refusal)], True
        if kind == "request_headers":
            return self._request_headers(exchange, request.request_headers)
        if kind == "request_body":
            return self._request_body(exchange, request.request_body.body)
        if kind == "response_headers":
            return self._response_headers(exchange, request.response_headers)
        if kind == "response_body" and self._streams_response:
            return self._response_chunk(exchange, request.response_body)
        if kind == "response_body":
            return self._response_body(exchange, request)
        return [_continue(kind)], False

    def _exchange_for(self, request: pb.ProcessingRequest) -> Exchange:
        """The exchange, from the first message: every message carries the forwarded metadata,
        and the first response message the trace attributes (a response-only stream)."""
        if self._exchange is not None:
            return self._exchange
        processor = self._processor
        exchange = self._exchange = Exchange.from_metadata(processor.settings, authz_metadata(request, METADATA_READ))
        if exchange.refusal is not None:
            processor.metrics.redaction_refusals_by(exchange.refusal[1], exchange.tool).inc()
        exchange.trace_headers = trace_carrier(self._grpc_metadata, trace_attributes(request))
        if request.WhichOneof("request") != "request_headers":
            # A response-only stream of a call whose request body Check redacted and Envoy
            # put in place (metadata.GRPC_ENVOY_FEATURES): counted here, with the response's.
            redacted = exchange.take_request_redacted()
            if redacted is not None:
                processor.count(exchange, redacted, "request")
        return exchange

    def _request_headers(self, exchange: Exchange, request_headers: pb.HttpHeaders) -> Step:
        headers = header_map(request_headers, REQUEST_HEADERS_READ)
        exchange.trace_headers = trace_carrier(self._grpc_metadata, headers)
        self._request_content_type = headers.get("content-type", "")
        redacted = exchange.take_request_redacted()
        if redacted is None:
            mode = _mode_for(exchange)
            return [pb.ProcessingResponse(request_headers=pb.HeadersResponse(), mode_override=mode)], mode is _SKIP_ALL
        # Check redacted the request body: it goes with this answer, and no request body
        # message follows (mode_override).
        self._processor.count(exchange, redacted, "request")
        return [replaced_request_answer(redacted, wants_response=exchange.wants_response)], not exchange.wants_response

    def _request_body(self, exchange: Exchange, body: bytes) -> Step:
        outcome = exchange.redact_request(body, self._request_content_type)
        self._processor.count(exchange, outcome, "request")
        if outcome.refusal:
            return [refusal_response(*outcome.refusal)], True
        answer = body_answer("request_body", outcome)
        if outcome.passed_over_limit:
            add_counts(answer, exchange.counts, exchange.passed_over_limit)
        return [answer], not exchange.wants_response

    def _response_headers(self, exchange: Exchange, headers: pb.HttpHeaders) -> Step:
        exchange.note_response_headers(header_map(headers, RESPONSE_HEADERS_READ))
        mode = None
        if not exchange.reads_response_body:
            mode = _SKIP_RESPONSE_BODY
        elif exchange.streams_response:
            mode = _STREAM_RESPONSE_BODY
            self._streams_response = True
        answer = pb.ProcessingResponse(response_headers=pb.HeadersResponse(), mode_override=mode)
        return [answer], mode is _SKIP_RESPONSE_BODY

    def _response_chunk(self, exchange: Exchange, body: pb.HttpBody) -> Step:
        outcome = exchange.redact_stream_chunk(body.body, body.end_of_stream)
        self._processor.count(exchange, outcome, "response")
        if outcome.refusal:
            return [refusal_response(*outcome.refusal)], True
        answer = pb.ProcessingResponse()
        answer.response_body.response.body_mutation.body = outcome.body or b""
        add_counts(answer, exchange.counts, exchange.passed_over_limit)
        return [answer], body.end_of_stream

    def _response_body(self, exchange: Exchange, request: pb.ProcessingRequest) -> Step:
        body = request.response_body.body
        self._processor.record_usage(exchange, body)
        outcome = exchange.redact_response(body)
        self._processor.count(exchange, outcome, "response")
        if outcome.refusal:
            return [refusal_response(*outcome.refusal)], True
        answer = body_answer("response_body", outcome)
        add_counts(answer, exchange.counts, exchange.passed_over_limit)
        return [answer], True


class ExternalProcessorServicer(external_processor_pb2_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """``envoy.service.ext_proc.v3.ExternalProcessor/Process`` for DLP redaction: the
    service-wide parts; each stream's state is a ``ProcessStream`` (``open_stream``)."""

    def __init__(
        self,
        settings: RedactionSettings,
        metrics: Metrics,
        tracing: Tracing,
        *,
        usage: Callable[[Sequence[UsageCharge], Mapping[str, int]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._tracing = tracing
        self._usage = usage  # adds response token usage to cost budgets (a blocking store call)

    def open_stream(self, grpc_metadata: Sequence[tuple[str, str]]) -> ProcessStream:
        return ProcessStream(self, grpc_metadata)

    @property
    def records_usage(self) -> bool:
        return self._usage is not None

    def record_usage(self, exchange: Exchange, body: bytes) -> None:
        """Cost budgets priced by the response: its token usage x the budget's prices."""
        if not exchange.usage or self._usage is None:
            return
        tokens = usage_tokens(body, exchange.response_encoding)
        if tokens:
            self._usage(exchange.usage, tokens)

    def count(self, exchange: Exchange, outcome: BodyOutcome, phase: str) -> None:
        if outcome.passed_over_limit:
            self.metrics.redaction_over_limit_passed.labels(phase, exchange.tool).inc()
        if outcome.counts:
            self._tracing.redaction_span(exchange.trace_headers, exchange.tool, outcome.counts, phase)
        for detector, count in outcome.counts.items():
            self.metrics.redactions_by(detector, exchange.tool).inc(count)
        if outcome.refusal:
            self.metrics.redaction_refusals_by(outcome.refusal[1], exchange.tool).inc()

    async def Process(
        self, requests: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.ProcessingResponse]:
        """The grpc.aio transport (when the compiled front is not built)."""
        stream = self.open_stream(context.invocation_metadata() or ())
        async for request in requests:
            if stream.blocks_on(request):
                responses, done = await asyncio.to_thread(stream.answer, request)
            else:
                responses, done = stream.answer(request)
            for response in responses:
                yield response
            if done:
                return  # see Step: close the stream ourselves


def _mode_for(exchange: Exchange) -> processing_mode_pb2.ProcessingMode:
    # Rule obligations apply to both bodies, so a call that redacts its request always
    # redacts its response too; a request-only mode would also hold a bodiless request's
    # stream open waiting for a body that never comes.
    if exchange.wants_request_body:
        return _BOTH_BODIES
    return _RESPONSE_ONLY if exchange.wants_response else _SKIP_ALL


def _continue(kind: str | None) -> pb.ProcessingResponse:
    """An empty answer for a phase with nothing to do (trailers, or a body without headers)."""
    if kind == "request_body":
        return pb.ProcessingResponse(request_body=pb.BodyResponse())
    if kind == "response_body":
        return pb.ProcessingResponse(response_body=pb.BodyResponse())
    if kind == "request_trailers":
        return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
