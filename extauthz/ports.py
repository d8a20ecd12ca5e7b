"""Free loopback ports for child processes (a local OPA, test and benchmark stacks).

Asking the kernel for port 0 and closing the socket hands out an *ephemeral* port: the
same range the kernel draws source ports from for outgoing connections. Between the
close and the child's bind, any client connection can take it, and the child then fails
with "address in use". So ports come from below the ephemeral range, are checked by
binding, and are never handed out twice by one process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # clear of well-known and most registered service ports
_DEFAULT_EPHEMERAL_LOW = 32_768


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _candidates() -> Iterator[int]:
    high = _ephemeral_low()
    if high - _LOWEST < 1_000:  # an unusual ephemeral range: fall back to the kernel's choice
        return iter(())
    size = high - _LOWEST
    # Start each process somewhere else, so two test or bench runs rarely probe the same ports.
    start = (os.getpid() * 7_919) % size
    return (_LOWEST + (start + i) % size for i in range(size))


_next_candidate: Iterator[int] = _candidates()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and outside the kernel's ephemeral range."""
    for port in _next_candidate:
        if _bindable(port):
            return port
    with socket.socket() as sock:  # every candidate used up or busy: the kernel's ephemeral choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
