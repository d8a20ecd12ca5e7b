"""``aegis up``: readiness, clean stop, loud failures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from helpers import free_port, write_config

from extauthz.config import load_config
from extauthz.config_fields import parse_address
from extauthz.supervisor import SupervisorError, run_until_signal, start_stack

pytestmark = pytest.mark.e2e


def test_a_taken_port_is_named(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    host, port = parse_address(config.service.grpc)
    with socket.socket() as sock:
        sock.bind((host, port))
        sock.listen()
        with pytest.raises(SupervisorError, match=r"service\.grpc: 127\.0\.0\.1:\d+ is already in use"):
            start_stack(config, path)


def test_a_dead_child_stops_the_group_with_exit_1(tmp_path):
    path = write_config(tmp_path)
    stack = start_stack(load_config(path), path)
    service = stack.children[0].process
    service.kill()
    assert run_until_signal(stack) == 1
    assert all(c.process.poll() is not None for c in stack.children)


def test_aegis_up_serves_until_sigterm(tmp_path):
    upstream = f"http://127.0.0.1:{free_port()}"
    path = write_config(tmp_path, {"upstreams": {"payments.demo": upstream}, "demo": {"tools": True}})
    config = load_config(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "extauthz.cli", "up", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert "Envoy (agents send tool calls here)" in banner
        response = httpx.post(
            f"http://{config.envoy.listen}/v1/refunds", headers={"host": "payments.demo"}, json={"amount": 1}
        )
        assert response.status_code == 401  # the whole chain answers: Envoy → Aegis
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{config.service.http}/healthz", timeout=0.5)
            except httpx.HTTPError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the service still answers after aegis up stopped")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
