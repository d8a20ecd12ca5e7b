"""Graceful drain on SIGTERM: leave Envoy's balancing first, then stop.

1. Both gRPC health services (Check server and ext_proc server) answer NOT_SERVING.
2. The replica keeps serving until Envoy's active health check has seen NOT_SERVING
   ``ENVOY_UNHEALTHY_THRESHOLD`` times on each server (it then sends new calls and streams
   to the other replicas), at most ``DRAIN_MAX_S``; or until ``UNWATCHED_S`` passed without
   any health check (no Envoy is watching: it is stopping too).
3. The servers stop with ``STOP_GRACE_S`` of grace: in-flight Checks and ext_proc streams
   (responses still being redacted) finish.

With other replicas behind the same Envoy no call fails.  A lone replica keeps answering
until Envoy has marked it unhealthy; Envoy then fails calls closed (503).  Counting the
health checks (not a quiet period) matters: under light load a replica can look idle long
before Envoy has moved away, and an ext_proc stream Envoy opens to a stopped replica is not
retried elsewhere.  SIGINT skips steps 1-2 (``aegis up`` stops Envoy at the same time).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

# extauthz/envoyconfig/clusters.py grpc_health_check(): every 2 s, unhealthy after 2 failures.
ENVOY_UNHEALTHY_THRESHOLD = 2
DRAIN_MAX_S = 6.0  # two health-check intervals plus Envoy's 1 s check timeout, and a margin
# No health check at all within one interval (+ margin): no Envoy is watching (it is stopping
# too, or none checks this replica); waiting longer would only delay the stop.
UNWATCHED_S = 2.5
STOP_GRACE_S = 5.0
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class CountingHealth(health.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """grpc.health.v1 for the synchronous server, counting the NOT_SERVING answers it gives."""

    def __init__(self) -> None:
        super().__init__()
        self.not_serving_answers = 0

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        response = super().Check(request, context)
        if response.status == _NOT_SERVING:
            self.not_serving_answers += 1
        return response


class CountingAioHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 for the grpc.aio (ext_proc) server, counting NOT_SERVING answers."""

    def __init__(self) -> None:
        super().__init__()
        self.not_serving_answers = 0

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        response = await super().Check(request, context)
        if response is not None and response.status == _NOT_SERVING:
            self.not_serving_answers += 1
        return response

    def leave_rotation(self, loop: asyncio.AbstractEventLoop) -> None:
        """NOT_SERVING from now on (run on the server's own event loop)."""
        asyncio.run_coroutine_threadsafe(self.enter_graceful_shutdown(), loop).result(timeout=5)


def drain(check_health: CountingHealth, proc_health: CountingAioHealth, loop: asyncio.AbstractEventLoop) -> float:
    """Steps 1-2 of the module docstring; returns the seconds spent waiting for Envoy."""
    started = time.monotonic()
    check_health.enter_graceful_shutdown()
    proc_health.leave_rotation(loop)
    deadline = started + DRAIN_MAX_S
    while time.monotonic() < deadline:
        seen = min(check_health.not_serving_answers, proc_health.not_serving_answers)
        if seen >= ENVOY_UNHEALTHY_THRESHOLD:
            time.sleep(0.1)  # Envoy acts on the answer it just read
            break
        if seen == 0 and time.monotonic() - started > UNWATCHED_S:
            break
        time.sleep(0.05)
    return time.monotonic() - started
