"""The gRPC servers' transport: HTTP/2 and gRPC framing compiled, every handler in Python.

``aegis_grpc_front`` (the Rust crate in ``extauthz/native``, tonic on a small Tokio runtime)
accepts Envoy's connections and hands each request message, as bytes, to a Python handler on
the runtime thread that read it: Check's unary calls, and each message of ext_proc's
bidirectional ``Process`` streams (one Python session per stream).  grpcio's synchronous
server instead polls its completion queue from a Python thread and wakes a pool worker per
call; on this workload that hand-off cost more than Aegis's decision (docs/performance.md,
"The gRPC transport").  The handlers are the same servicers grpcio serves: ``unary_handler``
and ``stream_handler`` adapt them.

``AEGIS_GRPC_FRONT=0`` (or a build without the extension) serves Check on grpcio and ext_proc
on grpc.aio instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger("aegis.grpc")

Request = TypeVar("Request")
# The compiled server's handler: (message, metadata, peer) -> response bytes or (code, details).
RawHandler = Callable[[bytes, Sequence[tuple[str, str]], str], "bytes | tuple[int, str]"]
# A stream's session: message -> (answers, done) or (code, details).
RawSession = Callable[[bytes], "tuple[list[bytes], bool] | tuple[int, str]"]
# Opens one stream: (metadata, peer) -> its session, or (code, details) to refuse it.
RawStreamOpener = Callable[[Sequence[tuple[str, str]], str], "RawSession | tuple[int, str]"]
NETWORK_CONCURRENCY = 4  # calls in Python at once when a handler may wait on the network


def python_concurrency(waits_on_network: bool) -> int:
    """Calls let into Python at once.  One when a Check only computes (embedded engine, local
    store): several would trade the GIL every 5 ms mid-call, which set the tail under load.
    ``NETWORK_CONCURRENCY`` when a Check waits on a network round trip (the OPA sidecar,
    Redis), so those waits overlap."""
    override = os.environ.get("AEGIS_GRPC_PYTHON_CONCURRENCY")
    if override:
        return max(1, int(override))
    return NETWORK_CONCURRENCY if waits_on_network else 1


class SerializableMessage(Protocol):
    def SerializeToString(self) -> bytes: ...


class HandlerAborted(Exception):
    """``CallContext.abort``: the handler ends the call with a status."""


class CallContext:
    """The part of ``grpc.ServicerContext`` Aegis's servicers use, for one call."""

    def __init__(self, metadata: Sequence[tuple[str, str]], peer: str) -> None:
        self._metadata = tuple(metadata)
        self._peer = peer
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.code, self.details = code, details
        raise HandlerAborted(details)


def _status(code: grpc.StatusCode, details: str) -> tuple[int, str]:
    number: int = code.value[0]
    return number, details


def unary_handler(
    method: Callable[[Request, Any], SerializableMessage], parse: Callable[[bytes], Request], name: str
) -> RawHandler:
    """``method(request, context)`` of a grpcio servicer as a handler of the compiled server:
    the same request parsing, status codes and failure answers grpcio gives."""

    def handle(message: bytes, metadata: Sequence[tuple[str, str]], peer: str) -> bytes | tuple[int, str]:
        context = CallContext(metadata, peer)
        try:
            request = parse(message)
        except DecodeError:
            return _status(grpc.StatusCode.INTERNAL, f"aegis: {name}: the request is not a valid message")
        try:
            response = method(request, context)
        except HandlerAborted:
            return _status(context.code or grpc.StatusCode.UNKNOWN, context.details)
        except Exception as exc:  # a bug: Envoy fails the call closed; the type is logged, never the text
            log.error("gRPC handler failed", extra={"aegis": {"method": name, "error": type(exc).__name__}})
            return _status(grpc.StatusCode.UNKNOWN, f"aegis: {name} failed")
        if context.code is not None and context.code != grpc.StatusCode.OK:
            return _status(context.code, context.details)
        return response.SerializeToString()

    return handle


def stream_handler(
    open_stream: Callable[[CallContext], Callable[[Request], tuple[Sequence[SerializableMessage], bool]]],
    parse: Callable[[bytes], Request],
    name: str,
) -> RawStreamOpener:
    """A bidirectional stream for the compiled server: ``open_stream(context)`` once per
    stream gives ``answer(request) -> (responses, done)``, called for each inbound message in
    order; ``done`` ends the stream with OK.  Failures answer as ``unary_handler``'s do."""

    def failed(exc: Exception) -> tuple[int, str]:  # a bug: the type is logged, never the text
        log.error("gRPC handler failed", extra={"aegis": {"method": name, "error": type(exc).__name__}})
        return _status(grpc.StatusCode.UNKNOWN, f"aegis: {name} failed")

    def open_session(metadata: Sequence[tuple[str, str]], peer: str) -> RawSession | tuple[int, str]:
        try:
            answer = open_stream(CallContext(metadata, peer))
        except Exception as exc:
            return failed(exc)

        def session(message: bytes) -> tuple[list[bytes], bool] | tuple[int, str]:
            try:
                request = parse(message)
            except DecodeError:
                return _status(grpc.StatusCode.INTERNAL, f"aegis: {name}: the request is not a valid message")
            try:
                responses, done = answer(request)
            except Exception as exc:
                return failed(exc)
            return [response.SerializeToString() for response in responses], done

        return session

    return open_session


def available() -> bool:
    """Whether Check is served by the compiled front (not disabled, extension built)."""
    if os.environ.get("AEGIS_GRPC_FRONT", "1") == "0":
        return False
    try:
        import aegis_grpc_front  # noqa: F401
    except ImportError:
        return False
    return True


class PythonGate:
    """How many handler calls may be inside Python at once, shared by the servers given it:
    the Check and ext_proc servers of one process share one GIL (see ``python_concurrency``)."""

    def __init__(self, concurrency: int) -> None:
        import aegis_grpc_front

        self.native = aegis_grpc_front.Gate(concurrency)


class FrontServer:
    """The compiled gRPC server on ``address`` (``host:port``, or ``unix:PATH``: a stale
    socket file left by a dead server is replaced, the socket removed on stop), serving
    ``methods`` (full method path → unary handler) and ``streams`` (full method path →
    stream opener).

    ``concurrency`` calls may be in Python at once (``gate``, when given, bounds them across
    servers instead), and the runtime has as many threads (``workers``): a handler waiting on
    I/O holds its thread.  When handlers only compute, one thread serves HTTP/2 and Python in
    turn; four measured ~20% more CPU per request (wake-ups and work stealing between idle
    threads), on the saturated Slack-post run (docs/performance.md).
    """

    transport = "native"

    def __init__(
        self,
        address: str,
        methods: Mapping[str, RawHandler],
        *,
        streams: Mapping[str, RawStreamOpener] | None = None,
        workers: int | None = None,
        concurrency: int = 1,
        gate: PythonGate | None = None,
    ) -> None:
        import aegis_grpc_front

        threads = workers or concurrency
        self._server = aegis_grpc_front.Server(
            address, dict(methods), dict(streams or {}), threads, concurrency, gate.native if gate else None
        )

    def start(self) -> int:
        """Bind and serve; the bound port.  OSError when the address cannot be bound."""
        port: int = self._server.start()
        return port

    def stop(self, grace: float) -> None:
        """Refuse new calls; in-flight ones get up to ``grace`` seconds to finish."""
        self._server.stop(grace)


class GrpcioServer:
    """grpcio's server behind the same ``stop`` as ``FrontServer``."""

    transport = "grpcio"

    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    def stop(self, grace: float) -> None:
        self._server.stop(grace=grace).wait()


def method_path(service: str, method: str) -> str:
    return f"/{service}/{method}"


__all__ = [
    "CallContext",
    "FrontServer",
    "GrpcioServer",
    "HandlerAborted",
    "PythonGate",
    "available",
    "method_path",
    "stream_handler",
    "unary_handler",
]
