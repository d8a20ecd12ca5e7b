"""Free loopback ports come from below the ephemeral range, once each, and are bindable."""

from __future__ import annotations

import socket

import pytest

from extauthz import ports


def test_ports_are_below_the_ephemeral_range_and_never_repeat() -> None:
    low = ports._ephemeral_low()
    handed_out = [ports.free_loopback_port() for _ in range(50)]
    assert len(set(handed_out)) == 50
    assert all(10_000 <= port < low for port in handed_out)


def test_a_busy_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        free = ports.free_loopback_port()
        monkeypatch.setattr(ports, "_next_candidate", iter([taken, free]))
        assert ports.free_loopback_port() == free


def test_with_no_candidates_left_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_next_candidate", iter(()))
    port = ports.free_loopback_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
