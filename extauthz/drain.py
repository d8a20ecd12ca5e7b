"""Graceful drain on SIGTERM: leave Envoy's balancing first, then stop.

1. Both gRPC health services (Check server and ext_proc server) answer NOT_SERVING.
2. The replica keeps serving until the active health check of every Envoy watching it has
   seen NOT_SERVING ``ENVOY_UNHEALTHY_THRESHOLD`` times on each server (each then sends new
   calls and streams to the other replicas), at most ``DRAIN_MAX_S``; or until
   ``UNWATCHED_S`` passed without any health check (no Envoy is watching: it is stopping too).
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
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2

# extauthz/envoyconfig/clusters.py grpc_health_check(): every 2 s, unhealthy after 2 failures.
ENVOY_UNHEALTHY_THRESHOLD = 2
DRAIN_MAX_S = 6.0  # two health-check intervals plus Envoy's 1 s check timeout, and a margin
# No health check at all within one interval (+ margin): no Envoy is watching (it is stopping
# too, or none checks this replica); waiting longer would only delay the stop.
UNWATCHED_S = 2.5
# A peer that health-checked within this window before the drain is an Envoy still routing here.
WATCH_WINDOW_S = 5.0
STOP_GRACE_S = 5.0
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Watchers:
    """The Envoys health-checking one server (by gRPC peer address) and, once draining, how
    many NOT_SERVING answers each has had.

    Several Envoys may balance over the same replicas, each with its own health-check
    connection: the drain is over only when every one of them has seen NOT_SERVING enough
    times, not when the checks of all of them add up to it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._not_serving: dict[str, int] | None = None  # None until the drain starts

    def saw(self, peer: str, not_serving: bool) -> None:
        with self._lock:
            self._last_seen[peer] = self._clock()
            if self._not_serving is not None:
                count = self._not_serving.get(peer, 0)
                self._not_serving[peer] = count + 1 if not_serving else count

    def start_drain(self) -> None:
        """From now on count NOT_SERVING answers, for the peers that checked recently."""
        with self._lock:
            now = self._clock()
            self._not_serving = {p: 0 for p, seen in self._last_seen.items() if now - seen <= WATCH_WINDOW_S}

    def left(self, threshold: int = ENVOY_UNHEALTHY_THRESHOLD) -> bool | None:
        """True once every watching Envoy has had ``threshold`` NOT_SERVING answers; None
        when no Envoy watches (none checked recently, none since the drain started)."""
        with self._lock:
            counts = self._not_serving or {}
            if not counts:
                return None
            return all(count >= threshold for count in counts.values())


class RotatingHealth(Protocol):
    """A server's health service, as the drain sees it."""

    watchers: Watchers

    def leave_rotation(self) -> None:
        """Answer NOT_SERVING from now on."""


class CountingHealth(health.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """grpc.health.v1 for a server calling handlers synchronously (grpcio's or the compiled
    front), telling ``watchers`` who asked and what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.watchers = Watchers()

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        response = super().Check(request, context)
        self.watchers.saw(context.peer(), response.status == _NOT_SERVING)
        return response

    def leave_rotation(self) -> None:
        self.enter_graceful_shutdown()


class CountingAioHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 for a grpc.aio server running on ``loop``, telling ``watchers`` the same."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.watchers = Watchers()
        self._loop = loop

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        response = await super().Check(request, context)
        if response is not None:
            self.watchers.saw(context.peer(), response.status == _NOT_SERVING)
        return response

    def leave_rotation(self) -> None:
        """NOT_SERVING from now on (run on the server's own event loop)."""
        asyncio.run_coroutine_threadsafe(self.enter_graceful_shutdown(), self._loop).result(timeout=5)


def drain(*healths: RotatingHealth) -> float:
    """Steps 1-2 of the module docstring for the servers of ``healths`` (Check's and
    ext_proc's); returns the seconds spent waiting for Envoy."""
    started = time.monotonic()
    servers = [rotating.watchers for rotating in healths]
    for watchers in servers:
        watchers.start_drain()
    for rotating in healths:
        rotating.leave_rotation()
    deadline = started + DRAIN_MAX_S
    while time.monotonic() < deadline:
        states = [watchers.left() for watchers in servers]
        if True in states and False not in states:  # a server nobody checks (None) has no one to wait for
            time.sleep(0.1)  # Envoy acts on the answer it just read
            break
        if all(state is None for state in states) and time.monotonic() - started > UNWATCHED_S:
            break
        time.sleep(0.05)
    return time.monotonic() - started
