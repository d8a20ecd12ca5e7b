"""The JSON access log (decision fields from ext_authz metadata) and Envoy's tracer."""

from __future__ import annotations

from pathlib import Path

from extauthz.config import AegisConfig
from extauthz.envoyconfig._base import (
    EXT_AUTHZ_FILTER,
    OTEL_CLUSTER,
    Resource,
    _extension,
)
from extauthz.metadata import (
    ACCESS_LOG_METADATA_KEYS,
    ACCESS_LOG_OVER_LIMIT,
    EXT_AUTHZ_NAMESPACE,
    EXT_PROC_NAMESPACE,
    MD_OVER_LIMIT,
    MD_REDACTIONS,
)

# --- access log, tracing ------------------------------------------------------------------


def access_log_format() -> Resource:
    """JSON fields of one access-log line, including the decision from ext_authz metadata."""
    fields: Resource = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        # Without the query string: query values are arguments and may carry PII.
        "path": "%REQ_WITHOUT_QUERY(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%",
        "response_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream_host": "%UPSTREAM_HOST%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        # Filled by emit_filter_state_stats; empty when Check was not called (unknown host).
        "ext_authz_us": f"%FILTER_STATE({EXT_AUTHZ_FILTER}:FIELD:latency_us)%",
    }
    for key in ACCESS_LOG_METADATA_KEYS:
        fields[key] = f"%DYNAMIC_METADATA({EXT_AUTHZ_NAMESPACE}:{key})%"
    # Redaction counts per detector type from ext_proc ("EMAIL:2,SSN:1"), never values.
    fields[MD_REDACTIONS] = f"%DYNAMIC_METADATA({EXT_PROC_NAMESPACE}:{MD_REDACTIONS})%"
    # Bodies over the redaction limit that the policy let through unredacted (over_limit: pass).
    fields[ACCESS_LOG_OVER_LIMIT] = f"%DYNAMIC_METADATA({EXT_PROC_NAMESPACE}:{MD_OVER_LIMIT})%"
    return fields


def access_log_path(config: AegisConfig) -> Path | None:
    """The access-log file (relative paths resolve against the config's directory), or None.

    Envoy opens it at startup and fails if its directory is missing: whoever starts Envoy
    creates ``access_log_path(config).parent`` first.
    """
    if config.envoy.access_log == "stdout":
        return None
    path = Path(config.envoy.access_log).expanduser()
    return path if path.is_absolute() else config.base_dir / path


def access_log(config: AegisConfig) -> Resource:
    """JSON lines to stdout, or to the file ``envoy.access_log`` names.

    Envoy buffers both loggers, stdout too when it is not a terminal, and flushes them every
    ``--file-flush-interval-msec`` (10 s by default): starters pass a shorter interval.
    """
    # REQ_WITHOUT_QUERY is a formatter extension: it must be declared to be usable.
    without_query = _extension(
        "envoy.formatter.req_without_query", "extensions.formatter.req_without_query.v3.ReqWithoutQuery"
    )
    log_format = {"json_format": access_log_format(), "formatters": [without_query]}
    path = access_log_path(config)
    if path is None:
        stream = "extensions.access_loggers.stream.v3.StdoutAccessLog"
        return _extension("envoy.access_loggers.stdout", stream, log_format=log_format)
    file_type = "extensions.access_loggers.file.v3.FileAccessLog"
    return _extension("envoy.access_loggers.file", file_type, path=str(path), log_format=log_format)


def tracing_provider(config: AegisConfig) -> Resource | None:
    """Envoy's OpenTelemetry tracer, exporting OTLP/gRPC to the collector; None when tracing is off.

    Envoy starts (or continues) the W3C trace and forwards ``traceparent`` to ext_authz and
    ext_proc, so the service's spans are children of Envoy's.  Without a tracer Envoy passes
    the agent's own ``traceparent`` through untouched.
    """
    telemetry = config.telemetry
    if not telemetry.enabled or telemetry.otlp_protocol != "grpc":
        return None
    return _extension(
        "envoy.tracers.opentelemetry",
        "config.trace.v3.OpenTelemetryConfig",
        grpc_service={"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "1s"},
        service_name="envoy-aegis",
    )
