"""The drain waits for every Envoy that health-checks the replica, not for a total count.

Two Envoys in front of the same replicas each have their own health-check connection (a
gRPC peer); the drain must go on until each has seen NOT_SERVING twice on both servers, or
the Envoy that checked less often keeps routing new calls and ext_proc streams to a replica
that is about to stop.  The end-to-end drain (one Envoy, two replicas, SIGTERM under load)
is ``tests/e2e/test_faults.py::test_sigterm_drains_a_replica_while_the_other_takes_over``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from grpc_health.v1 import health_pb2

from extauthz.drain import (
    DRAIN_MAX_S,
    WATCH_WINDOW_S,
    CountingAioHealth,
    CountingHealth,
    Watchers,
    drain,
)

ENVOY_A = "ipv4:127.0.0.1:40001"
ENVOY_B = "ipv4:127.0.0.1:40002"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_watching_peer_must_see_not_serving_twice() -> None:
    clock = Clock()
    watchers = Watchers(clock)
    watchers.saw(ENVOY_A, False)
    watchers.saw(ENVOY_B, False)
    watchers.start_drain()
    assert watchers.left() is False
    watchers.saw(ENVOY_A, True)
    watchers.saw(ENVOY_A, True)
    watchers.saw(ENVOY_A, True)  # three from A and none from B: not "2 in total"
    assert watchers.left() is False
    watchers.saw(ENVOY_B, True)
    assert watchers.left() is False
    watchers.saw(ENVOY_B, True)
    assert watchers.left() is True


def test_a_peer_silent_for_longer_than_the_window_is_not_waited_for() -> None:
    clock = Clock()
    watchers = Watchers(clock)
    watchers.saw(ENVOY_B, False)  # an Envoy that has since gone (or reconnected on a new port)
    clock.now += WATCH_WINDOW_S + 1
    watchers.saw(ENVOY_A, False)
    watchers.start_drain()
    watchers.saw(ENVOY_A, True)
    watchers.saw(ENVOY_A, True)
    assert watchers.left() is True


def test_a_peer_first_seen_during_the_drain_is_waited_for() -> None:
    watchers = Watchers(Clock())
    watchers.saw(ENVOY_A, False)
    watchers.start_drain()
    watchers.saw(ENVOY_A, True)
    watchers.saw(ENVOY_B, True)  # a new Envoy started checking while this replica drains
    watchers.saw(ENVOY_A, True)
    assert watchers.left() is False
    watchers.saw(ENVOY_B, True)
    assert watchers.left() is True


def test_nobody_watching_is_none_and_answers_before_the_drain_do_not_count() -> None:
    watchers = Watchers(Clock())
    assert watchers.left() is None  # not draining, nobody seen
    watchers.start_drain()
    assert watchers.left() is None
    other = Watchers(Clock())
    other.saw(ENVOY_A, True)  # NOT_SERVING before the drain (e.g. a policy not yet loaded)
    other.saw(ENVOY_A, True)
    other.start_drain()
    assert other.left() is False


# --- drain() itself, with two simulated Envoys checking both servers ---------------------------


@dataclass
class Peer:
    address: str

    def peer(self) -> str:
        return self.address


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=event_loop.run_forever, daemon=True)
    thread.start()
    yield event_loop
    event_loop.call_soon_threadsafe(event_loop.stop)
    thread.join(5)
    event_loop.close()


def _check_both(check: CountingHealth, proc: CountingAioHealth, loop: asyncio.AbstractEventLoop, peer: str) -> None:
    request = health_pb2.HealthCheckRequest()
    check.Check(request, Peer(peer))
    asyncio.run_coroutine_threadsafe(proc.Check(request, Peer(peer)), loop).result(5)


def test_drain_returns_only_after_the_slower_envoy_has_seen_not_serving(loop: asyncio.AbstractEventLoop) -> None:
    check, proc = CountingHealth(), CountingAioHealth(loop)
    for peer in (ENVOY_A, ENVOY_B):
        _check_both(check, proc, loop, peer)
    finished: list[float] = []
    thread = threading.Thread(target=lambda: finished.append(drain(check, proc)))
    thread.start()
    time.sleep(0.2)
    for _ in range(4):  # the fast Envoy: four NOT_SERVING answers on each server
        _check_both(check, proc, loop, ENVOY_A)
    time.sleep(0.3)
    assert thread.is_alive(), "drain ended while Envoy B still routed to this replica"
    _check_both(check, proc, loop, ENVOY_B)
    _check_both(check, proc, loop, ENVOY_B)
    thread.join(DRAIN_MAX_S)
    assert not thread.is_alive() and finished and finished[0] < DRAIN_MAX_S
