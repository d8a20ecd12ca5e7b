"""``aegis serve``: the gRPC service (ext_authz Check, gRPC health) and the HTTP API.

Check and ext_proc are served by the compiled gRPC front (``extauthz.grpc_front``) when built,
one server each, sharing one gate into Python; else Check by grpcio's synchronous server
(measured ~1.6x cheaper per unary Check than grpc.aio) and ext_proc by grpc.aio in its own
thread.  The HTTP API (Starlette under uvicorn) runs in a thread beside them.  Decision
logic never depends on these choices (see ``authorizer``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

import dlp
from extauthz import grpc_front
from extauthz.admin_api import policy_routes
from extauthz.approvals.factory import build_approvals
from extauthz.audit.writer import DecisionLog, open_decision_log
from extauthz.authorizer import Authorizer
from extauthz.config import AegisConfig
from extauthz.config_fields import parse_address
from extauthz.drain import STOP_GRACE_S, CountingAioHealth, CountingHealth, drain
from extauthz.envoy_authz import AuthorizationServicer, envoy_puts_request_body, request_from_check
from extauthz.envoy_proc import ExternalProcessorServicer
from extauthz.errors import AegisError, ConfigError
from extauthz.grpc_front import FrontServer, GrpcioServer, PythonGate
from extauthz.http_api import build_http_app
from extauthz.identity import TokenVerifier, keyset_from_config
from extauthz.limits.enforce import BudgetWarner, LimitEnforcer, Notify, UsageRecorder, webhook_notify
from extauthz.log_stream import BufferedLogHandler, JsonLogFormatter
from extauthz.metadata import MD_DECISION, MD_RULE, MD_TOOL
from extauthz.redactor import RedactionSettings, redact_request_in_check
from extauthz.reload import PolicyReloader, source_for
from extauthz.store import Store
from extauthz.store.sqlite import SqliteStore
from extauthz.telemetry import Metrics
from extauthz.tracing import Tracing, trace_carrier

from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # isort: skip
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc  # isort: skip

log = logging.getLogger("aegis.server")
GRPC_WORKERS = 16
AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
HEALTH_SERVICE = "grpc.health.v1.Health"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, buffered (``log_stream``): a decision line costs no write(2).

    The JSON lines carry no caller, thread or process, so records do not compute them (the
    Logging HOWTO's "Optimization" switches; ~2 of a decision line's ~8 µs)."""
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler: logging.Handler
    try:
        handler = BufferedLogHandler(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a descriptor
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@dataclass
class Service:
    """The assembled service: what ``serve`` runs and tests drive in process."""

    config: AegisConfig
    authorizer: Authorizer
    verifier: TokenVerifier
    store: Store
    metrics: Metrics
    reloader: PolicyReloader
    tracing: Tracing
    started_at: float = field(default_factory=time.time)
    decision_log: DecisionLog | None = None  # audit.path unset: none

    def close(self) -> None:
        """Stop what runs in the background and release the store, after the last call:
        policy reloads, approval sweeps and pending notifications, span export, the decision
        log's final signed checkpoint, then the store they all write to."""
        self.reloader.stop()
        if self.authorizer.approvals is not None:
            self.authorizer.approvals.stop()
        self.tracing.shutdown()
        if self.decision_log is not None:
            self.decision_log.close()
        self.store.close()

    def readiness(self) -> dict[str, Any]:
        policy = self.authorizer.policy
        checks: dict[str, Any] = {
            "policy": {"ok": policy is not None, "version": policy.version if policy else None},
        }
        if self.reloader.status.last_error:
            checks["policy"]["last_error"] = self.reloader.status.last_error
        try:
            self.store.ping()
            checks["store"] = {"ok": True}
        except AegisError as exc:
            checks["store"] = {"ok": False, "error": exc.message}
        if self.authorizer.approvals is not None:  # notifier health: reported, never "not ready"
            checks["approvals"] = self.authorizer.approvals.readiness()
        if self.decision_log is not None:  # writes failing: entries are held and retried, not ready
            checks["decision_log"] = self.decision_log.health()
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


def open_store(config: AegisConfig) -> Store:
    """The store named by ``store``: SQLite (one node) or Redis (shared by replicas)."""
    if config.store.startswith(("redis://", "rediss://")):
        from extauthz.store.redis import RedisStore

        return RedisStore(config.store, timeout_s=config.store_timeout_s)
    path = config.sqlite_path
    if path is None:
        raise ConfigError(f"{config.path}: store: unsupported store URL")
    return SqliteStore(path)


def build_service(config: AegisConfig, *, freeze_heap: bool = False) -> Service:
    """Assemble the service from config.  A policy that fails to load leaves the service up but
    denying everything (503) and saying why in /readyz.  ``freeze_heap`` is for the serving
    process only (see ``reload.settle_heap``)."""
    try:
        keys = keyset_from_config(config.identity)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    verifier = TokenVerifier(config.identity, keys)
    store = open_store(config)
    metrics = Metrics()
    # Human approvals (extauthz/approvals/): its notifier worker and expiry sweep start here.
    approvals = build_approvals(config.approvals, store, metrics, config.service.base_url)
    approvals.start()
    # Budgets and rate limits (extauthz/limits/): counted in the same store as approvals.
    warner = BudgetWarner(store, metrics, _warning_webhook(config))
    limits = LimitEnforcer(store, metrics, warner)
    # The signed decision log (extauthz/audit/): the Authorizer hands it one record per decision.
    decision_log = open_decision_log(config.audit, metrics, config.telemetry)  # + OTLP logs when exporting
    authorizer = Authorizer(
        verifier,
        store,
        policy=None,
        base_url=config.service.base_url,
        max_body_bytes=config.envoy.max_request_bytes,
        approvals=approvals,
        sink=decision_log,
        limits=limits,
        log_gate=decision_log.check_writable if decision_log is not None else None,
    )
    reloader = PolicyReloader(
        authorizer,
        source_for(config.policy),
        metrics,
        engine=config.policy.engine,
        engine_options={
            "opa_url": config.policy.opa_url,
            "opa_timeout_s": config.policy.opa_timeout_s,
            "decision_cache_entries": config.policy.decision_cache,
            "decision_cache_stats": metrics.decision_cache,
        },
        interval_s=config.policy.poll_interval_s,
        freeze_heap=freeze_heap,
    )
    reloader.reload(force=True)  # the first version; a failure is reported, not raised
    tracing = Tracing(config.telemetry, metrics=metrics)  # counts exported and dropped spans
    return Service(config, authorizer, verifier, store, metrics, reloader, tracing, decision_log=decision_log)


def _warning_webhook(config: AegisConfig) -> Notify | None:
    """Budget warnings go to the first generic webhook of the approvals config, if any."""
    for group in config.approvals.groups.values():
        for spec in group.notify:
            if spec.kind == "webhook" and spec.url:
                return webhook_notify(spec.url, spec.secret_env)
    return None


class MeasuredAuthorizationServicer(AuthorizationServicer):
    """The Check servicer plus decision metrics."""

    def __init__(self, service: Service) -> None:
        # Responses always need ext_proc when every response gets default detectors.
        super().__init__(
            service.authorizer,
            always_process_bodies=bool(service.config.dlp.response_detectors),
            redact_request=functools.partial(redact_request_in_check, redaction_settings(service.config)),
        )
        self._service = service

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        http_request = request_from_check(request)
        answer = self._service.authorizer.check(http_request)
        metrics = self._service.metrics
        metrics.decision_seconds.observe(time.perf_counter() - started)
        md = answer.metadata
        metrics.decisions_by(md.get(MD_DECISION, "error"), md.get(MD_TOOL, "unknown"), md.get(MD_RULE, "")).inc()
        tracing = self._service.tracing
        if tracing.enabled:  # the span's inputs are built only for a span
            reason = str((answer.body or {}).get("reason") or (answer.body or {}).get("message") or "")
            # Envoy's ext_authz client span travels in the gRPC metadata; fall back to the agent's own.
            grpc_metadata = context.invocation_metadata() if context is not None else None
            carrier = trace_carrier(grpc_metadata, http_request.headers)
            tracing.decision_span(carrier, md, reason, "ext_authz")
        return self.respond(answer, http_request, envoy_puts_request_body=envoy_puts_request_body(context))


CheckServer = FrontServer | GrpcioServer


def python_gate(service: Service) -> PythonGate | None:
    """The gate the Check and ext_proc servers share into Python (None without the front)."""
    if not grpc_front.available():
        return None
    return PythonGate(grpc_front.python_concurrency(check_waits_on_network(service.config)))


def health_handler(health_servicer: CountingHealth) -> grpc_front.RawHandler:
    return grpc_front.unary_handler(health_servicer.Check, health_pb2.HealthCheckRequest.FromString, "Health/Check")


def start_grpc(service: Service, gate: PythonGate | None = None) -> tuple[CheckServer, CountingHealth]:
    """Start the gRPC server (Check + health) on ``service.grpc``: the compiled front when
    built (``extauthz.grpc_front``; through ``gate`` when given), grpcio's synchronous
    server otherwise."""
    servicer = MeasuredAuthorizationServicer(service)
    health_servicer = CountingHealth()  # counts the NOT_SERVING answers Envoy gets while draining
    address = service.config.service.grpc
    server: CheckServer
    if grpc_front.available():
        server = FrontServer(
            address,
            {
                grpc_front.method_path(AUTHZ_SERVICE, "Check"): grpc_front.unary_handler(
                    servicer.Check, external_auth_pb2.CheckRequest.FromString, "Check"
                ),
                grpc_front.method_path(HEALTH_SERVICE, "Check"): health_handler(health_servicer),
            },
            concurrency=grpc_front.python_concurrency(check_waits_on_network(service.config)),
            gate=gate,
        )
        try:
            server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address} (gRPC): {exc.strerror or exc}") from exc
    else:
        server = GrpcioServer(start_grpcio(address, servicer, health_servicer))
    status = health_pb2.HealthCheckResponse.SERVING
    health_servicer.set("", status)
    health_servicer.set(AUTHZ_SERVICE, status)
    return server, health_servicer


def check_waits_on_network(config: AegisConfig) -> bool:
    """Whether a Check makes a network round trip: to the OPA sidecar, or to Redis."""
    return config.policy.engine == "opa" or config.store.startswith(("redis://", "rediss://"))


def start_grpcio(
    address: str, servicer: external_auth_pb2_grpc.AuthorizationServicer, health_servicer: CountingHealth
) -> grpc.Server:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="aegis-grpc"),
        # A port clash must fail loudly, not silently share the port with another process.
        options=[("grpc.so_reuseport", 0)],
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address} (gRPC): {exc}") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {address} (gRPC): address in use or not available")
    server.start()
    return server


def ext_proc_servicer(service: Service) -> ExternalProcessorServicer:
    settings = redaction_settings(service.config)
    usage = UsageRecorder(service.store, service.authorizer.limits_warner, service.metrics)
    return ExternalProcessorServicer(settings, service.metrics, service.tracing, usage=usage)


class ExtProcFront:
    """ext_proc (+ gRPC health) on the compiled front: each stream's messages are answered on
    the runtime thread that read them, through the gate it shares with Check."""

    transport = "native"

    def __init__(self, service: Service, gate: PythonGate | None) -> None:
        self._address = service.config.service.ext_proc
        self.health = CountingHealth()
        servicer = ext_proc_servicer(service)
        self._server = FrontServer(
            self._address,
            {grpc_front.method_path(HEALTH_SERVICE, "Check"): health_handler(self.health)},
            streams={
                grpc_front.method_path(EXT_PROC_SERVICE, "Process"): grpc_front.stream_handler(
                    lambda context: servicer.open_stream(context.invocation_metadata()).answer,
                    external_processor_pb2.ProcessingRequest.FromString,
                    "Process",
                )
            },
            concurrency=grpc_front.python_concurrency(check_waits_on_network(service.config)),
            gate=gate,
        )

    def start(self) -> None:
        try:
            self._server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self._address} (ext_proc): {exc.strerror or exc}") from exc
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        self._server.stop(grace)


class ExtProcAio:
    """ext_proc on grpc.aio, in its own thread and event loop (when the front is not built)."""

    transport = "grpc.aio"

    def __init__(self, service: Service) -> None:
        self._service = service
        self._loop = asyncio.new_event_loop()
        self._server: grpc.aio.Server | None = None
        self.health = CountingAioHealth(self._loop)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aegis-ext-proc", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        if self._server is None:
            raise ConfigError(f"ext_proc server did not start on {self._service.config.service.ext_proc}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._loop.run_forever()

    async def _serve(self) -> None:
        address = self._service.config.service.ext_proc
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(ext_proc_servicer(self._service), server)
        health_servicer = self.health
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {address} (ext_proc): {exc}") from exc
        if port == 0:
            raise ConfigError(f"cannot listen on {address} (ext_proc): address in use or not available")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self._started.set()

    def stop(self, grace: float) -> None:
        if self._server is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop)
        future.result(timeout=grace + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


ExtProcServer = ExtProcFront | ExtProcAio


def start_ext_proc(service: Service, gate: PythonGate | None = None) -> ExtProcServer:
    """Start the ext_proc server (+ gRPC health) on ``service.ext_proc``."""
    server: ExtProcServer = ExtProcFront(service, gate) if grpc_front.available() else ExtProcAio(service)
    server.start()
    return server


def redaction_settings(config: AegisConfig) -> RedactionSettings:
    """The redactor's settings from ``aegis.yaml`` (reads the hash key file)."""
    key = None
    if config.dlp.hash_key_file is not None:
        try:
            key = config.dlp.hash_key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"dlp.hash_key_file: cannot read {config.dlp.hash_key_file}: {exc.strerror}") from exc
    return RedactionSettings(
        response_detectors=config.dlp.response_detectors,
        mode=config.dlp.mode,
        hash_key=key,
        max_body_bytes=config.dlp.max_body_bytes,
        on_binary=config.dlp.on_binary,
    )


def http_server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings.  ``log_config=None``: uvicorn's default applies ``dictConfig``,
    which closes every handler the service set up (``configure_logging``); its records go
    to the service's JSON lines instead."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, log_config=None)


def start_http(service: Service) -> tuple[uvicorn.Server, threading.Thread]:
    """Start the HTTP API on ``service.http`` in a background thread."""
    host, port = parse_address(service.config.service.http, what="service.http")
    admin_token = (
        os.environ.get(service.config.service.admin_token_env) if service.config.service.admin_token_env else None
    )
    app = build_http_app(
        service.authorizer,
        service.verifier,
        service.metrics,
        service.readiness,
        extra_routes=policy_routes(service.authorizer, service.reloader, admin_token),
    )
    server = uvicorn.Server(http_server_config(app, host, port))
    thread = threading.Thread(target=server.run, name="aegis-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"cannot listen on {service.config.service.http} (HTTP): address in use or not available")
        time.sleep(0.02)
    return server, thread


def serve(config: AegisConfig) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit code."""
    dlp_engine = dlp.ENGINE  # builds the compiled DLP core now, not on the first redacted call
    service = build_service(config, freeze_heap=True)
    gate = python_gate(service)
    grpc_server, grpc_health = start_grpc(service, gate)
    ext_proc = start_ext_proc(service, gate)
    http_server, http_thread = start_http(service)
    service.reloader.start()
    policy = service.authorizer.policy
    log.info(
        "aegis serving",
        extra={
            "aegis": {
                "grpc": config.service.grpc,
                "ext_proc": config.service.ext_proc,
                "http": config.service.http,
                "policy_version": policy.version if policy else None,
                "dlp_engine": dlp_engine,
                "grpc_transport": grpc_server.transport,
                "ext_proc_transport": ext_proc.transport,
            }
        },
    )
    stop, draining = threading.Event(), threading.Event()

    def on_sigterm(*_: object) -> None:  # an orchestrator stopping this replica: drain first
        draining.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    service.reloader.stop()
    if draining.is_set():  # SIGTERM: out of Envoy's balancing first (extauthz/drain.py)
        log.info("aegis stopping: draining")
        waited = drain(grpc_health, ext_proc.health)
        log.info("aegis drained", extra={"aegis": {"waited_s": round(waited, 2)}})
    # In-flight Checks and ext_proc streams finish; new ones are refused.
    grpc_server.stop(STOP_GRACE_S)
    ext_proc.stop(grace=STOP_GRACE_S)
    http_server.should_exit = True
    http_thread.join(timeout=5)
    service.close()  # after the last call: notifications flushed, spans exported, checkpoint signed
    return 0
