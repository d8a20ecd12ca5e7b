"""Fault-injection helpers: a gateway with the signed decision log and counting upstreams,
mixed agent traffic, and the two ledgers every fault test reconciles.

Ledger 1, the upstreams: every request a tool server received, with the ``x-test-seq`` the
agent sent and the ``x-aegis-decision-id`` Check added.  Ledger 2, the decision log: every
entry the service wrote (all files, rotated ones too).  A fault test drives mixed traffic
(allow / deny / redact / approval), injects its fault part-way, and then checks that no call
reached an upstream without an allow decision on record and that no decision the agent saw
is missing from the log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import POLICIES, SCOPES, copy_policy_dir, free_port, write_config

from extauthz.audit.keys import generate, load_public
from extauthz.audit.verify import VerifyResult, verify_files
from extauthz.config import AegisConfig, load_config
from extauthz.demo_tools import TOOLS, DemoToolServer
from extauthz.devtokens import mint_token
from extauthz.policy import build_bundle, write_bundle
from extauthz.policy.opa_local import find_opa
from extauthz.supervisor import REPLICA_PORT_STEP, Child, Stack, start_stack

KINDS = ("allow", "deny", "redact", "approval")
ALLOWED_KINDS = {"allow", "redact"}  # the only kinds the policy lets reach an upstream
HEADER_SEQ = "x-test-seq"
HEADER_DECISION = "x-aegis-decision-id"
UNLIMITED = 1_000_000  # keep every received request (the demo servers keep the last 100 by default)
PROBE_SEQ = 1_000_000  # seq of the first probe call (recovery checks), above any test's calls


# --- the gateway --------------------------------------------------------------------------


@dataclass
class FaultGateway:
    """Envoy + service replica(s) + counting tool servers, the decision log in ``audit_dir``."""

    root: Path
    config: AegisConfig
    stack: Stack
    upstreams: dict[str, DemoToolServer]
    audit_dir: Path
    audit_key: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.client = httpx.Client(base_url=f"http://{self.config.envoy.listen}", timeout=10, limits=limits)

    @property
    def http(self) -> str:
        return f"http://{self.config.service.http}"

    def token(self, **kw: Any) -> str:
        base: dict[str, Any] = {"agent": "support-bot", "tenant": "acme", "scopes": SCOPES, "ttl_s": 1800}
        return mint_token(self.config.identity, **{**base, **kw})

    def child(self, name: str) -> Child:
        return next(c for c in self.stack.children if c.name == name)

    def received(self) -> list[dict[str, Any]]:
        """Every request any tool server received, oldest first per server."""
        return [r for server in self.upstreams.values() for r in server.received()]

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.http}/readyz", timeout=5).json())

    def metrics(self) -> str:
        return httpx.get(f"{self.http}/metrics", timeout=5).text

    def stop(self) -> None:
        """Stop Envoy and the service (the decision log is closed with a final checkpoint)."""
        self.client.close()
        self.stack.stop()
        for server in self.upstreams.values():  # what they received stays readable
            server.shutdown()


def start_fault_gateway(
    root: Path,
    *,
    extra: dict[str, Any] | None = None,
    replicas: int = 1,
    policy_yaml: Sequence[str] = (),
    audit_dir: Path | None = None,
    audit: dict[str, Any] | None = None,
) -> FaultGateway:
    """A gateway whose three tool hosts are counting in-process servers (every request kept),
    with the signed decision log at ``audit_dir/decisions.jsonl`` and process logs in root/logs."""
    root.mkdir(parents=True, exist_ok=True)
    gw_dir = root / "gw"
    public, _ = generate(gw_dir / "keys" / "audit.pem")
    audit_dir = audit_dir or root / "audit"
    servers: dict[str, DemoToolServer] = {}
    for name, tool in TOOLS.items():
        servers[name] = DemoToolServer("127.0.0.1", free_port(), name, tool, limit=UNLIMITED).start()
    policy_dir = copy_policy_dir(root / "policies", *policy_yaml) if policy_yaml else POLICIES
    overrides: dict[str, Any] = {
        "upstreams": {name: server.url for name, server in servers.items()},
        "demo": {"tools": False},
        "audit": {
            "path": str(audit_dir / "decisions.jsonl"),
            "signing_key": "keys/audit.pem",
            "key_id": "faults",
            **(audit or {}),
        },
        **(extra or {}),
    }
    try:
        path = write_config(gw_dir, overrides, policy_dir=policy_dir)
        config = load_config(path)
        stack = start_stack(config, path, log_dir=root / "logs", replicas=replicas)
    except BaseException:
        for server in servers.values():
            server.shutdown()
        raise
    return FaultGateway(root, config, stack, servers, audit_dir, public)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def replica_ports(replicas: int) -> dict[str, str]:
    """grpc/http/ext_proc addresses whose replica offsets are free too."""
    while True:
        ports = [free_port() for _ in range(3)]
        offsets = range(1, replicas)
        if len(set(ports)) == 3 and all(_free(p + REPLICA_PORT_STEP * i) for p in ports for i in offsets):
            return {k: f"127.0.0.1:{p}" for k, p in zip(("grpc", "http", "ext_proc"), ports, strict=True)}


def replicated(replicas: int, redis_port: int | None = None) -> dict[str, Any]:
    """The config ``--replicas N`` needs: a (supervisor-started) Redis and one override key."""
    return {
        "service": replica_ports(replicas),
        "store": f"redis://127.0.0.1:{redis_port or free_port()}/0",
        "store_timeout": "200ms",
        "approvals": {"signing_key": "keys/override.pem", "token_ttl": "10m"},
    }


# --- traffic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One call as the agent saw it (``status`` 0: no HTTP answer at all)."""

    seq: int
    kind: str
    status: int
    decision_id: str | None
    body: dict[str, Any] | None
    error: str | None = None

    @property
    def reason(self) -> str:
        """The ``error`` code of a refusal's JSON body, or ''."""
        return str((self.body or {}).get("error", ""))


def mixed(count: int, start: int = 0) -> list[tuple[int, str]]:
    """(seq, kind) for ``count`` calls cycling allow, deny, redact, approval."""
    return [(seq, KINDS[seq % len(KINDS)]) for seq in range(start, start + count)]


def send(gw: FaultGateway, seq: int, kind: str, token: str) -> Sent:
    """One agent call of ``kind``; every call is unique (``customer_id`` / record id = seq)."""
    headers = {"authorization": f"Bearer {token}", HEADER_SEQ: str(seq)}
    try:
        if kind == "redact":
            headers |= {"host": "crm.demo", "x-aegis-purpose": "support"}
            response = gw.client.get(f"/tenants/acme/records/r-{seq}", headers=headers)
        else:
            amount = {"allow": 20, "deny": 900, "approval": 120}[kind]
            body = {"amount": amount, "currency": "USD", "customer_id": f"c-{seq}"}
            response = gw.client.post("/v1/refunds", json=body, headers={**headers, "host": "payments.demo"})
    except httpx.HTTPError as exc:
        return Sent(seq, kind, 0, None, None, type(exc).__name__)
    try:
        document = response.json()
    except ValueError:
        document = None
    return Sent(seq, kind, response.status_code, response.headers.get(HEADER_DECISION), document)


def probe(gw: FaultGateway, probes: list[Sent]) -> bool:
    """One allowed call, kept in ``probes`` for the ledgers; True when it got its 200."""
    probes.append(send(gw, PROBE_SEQ + len(probes), "allow", gw.token()))
    return probes[-1].status == 200


def drive(
    gw: FaultGateway,
    calls: Sequence[tuple[int, str]],
    *,
    concurrency: int = 8,
    at: dict[int, Callable[[], None]] | None = None,
    token: str | None = None,
) -> list[Sent]:
    """Send ``calls`` from ``concurrency`` agents; ``at[i]()`` runs just before the i-th call."""
    token = token or gw.token()
    hooks = dict(at or {})

    def one(index: int) -> Sent:
        hook = hooks.pop(index, None)
        if hook is not None:
            hook()
        seq, kind = calls[index]
        return send(gw, seq, kind, token)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(len(calls))))


# --- the decision log ---------------------------------------------------------------------


def log_files(audit_dir: Path, pattern: str = "decisions*.jsonl") -> list[Path]:
    return sorted(audit_dir.glob(pattern))


def log_entries(audit_dir: Path, pattern: str = "decisions*.jsonl") -> list[dict[str, Any]]:
    """Every complete entry of the decision-log files in ``audit_dir`` (all replicas' by
    default; a torn last line, left by a killed writer, is not an entry)."""
    entries = []
    for path in log_files(audit_dir, pattern):
        for line in path.read_bytes().split(b"\n"):
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


def decisions(audit_dir: Path) -> dict[str, dict[str, Any]]:
    """Decision entries by decision id (each id must appear once)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in log_entries(audit_dir):
        if entry["type"] == "decision":
            assert entry["decision_id"] not in found, f"decision {entry['decision_id']} logged twice"
            found[entry["decision_id"]] = entry
    return found


def verify_log(gw: FaultGateway, *, allow_unsigned_tail: bool = False) -> list[VerifyResult]:
    """``aegis audit verify`` of each writer's chain (one per replica)."""
    chains: dict[str, list[Path]] = {}
    for path in log_files(gw.audit_dir):
        match = re.match(r"decisions(\.replica-\d+)?", path.name)
        chains.setdefault(match.group(0) if match else path.name, []).append(path)
    key = [load_public(gw.audit_key)]
    return [verify_files(files, key, allow_unsigned_tail=allow_unsigned_tail) for files in chains.values()]


# --- the reconciliation -------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """What the agent saw, what the upstreams received and what the log holds, reconciled."""

    sent: int
    answered_2xx: int
    allowed_kinds_2xx: int
    upstream_received: int
    decisions_seen_by_agent: int
    decisions_logged: int
    missing_from_log: tuple[str, ...]
    unauthorised_upstream: tuple[int, ...]

    def summary(self) -> str:
        return (
            f"sent={self.sent} 2xx={self.answered_2xx} allowed-2xx={self.allowed_kinds_2xx} "
            f"upstream={self.upstream_received} seen-decisions={self.decisions_seen_by_agent} "
            f"logged={self.decisions_logged} missing={len(self.missing_from_log)} "
            f"unauthorised={len(self.unauthorised_upstream)}"
        )


def reconcile(gw: FaultGateway, sent: Sequence[Sent], allowed_kinds: set[str] = ALLOWED_KINDS) -> Ledger:
    """Check the invariants every fault must keep; call after ``gw.stop()`` (log closed).

    * Nothing reached an upstream that the policy does not allow (deny and approval calls
      never arrive), and every request an upstream received carries a decision id that the
      log records as allowed (``allow`` / ``sanitize``) for that very call.
    * Every decision id an agent saw in an answer is in the log: no decision record lost.
    """
    by_seq = {s.seq: s for s in sent}
    logged = decisions(gw.audit_dir)
    received = [r for r in gw.received() if HEADER_SEQ in r["headers"]]
    unauthorised = []
    for request in received:
        seq = int(request["headers"][HEADER_SEQ])
        entry = logged.get(request["headers"].get(HEADER_DECISION, ""))
        allowed = entry is not None and entry["effect"] in ("allow", "sanitize") and entry["status"] == 200
        if by_seq[seq].kind not in allowed_kinds or not allowed:
            unauthorised.append(seq)
    seen = {s.decision_id for s in sent if s.decision_id}
    two_xx = [s for s in sent if 200 <= s.status < 300]
    return Ledger(
        sent=len(sent),
        answered_2xx=len(two_xx),
        allowed_kinds_2xx=sum(s.kind in allowed_kinds and s.status == 200 for s in sent),
        upstream_received=len(received),
        decisions_seen_by_agent=len(seen),
        decisions_logged=len(logged),
        missing_from_log=tuple(sorted(seen - set(logged))),
        unauthorised_upstream=tuple(sorted(unauthorised)),
    )


def assert_kept_invariants(ledger: Ledger) -> None:
    assert ledger.unauthorised_upstream == (), ledger.summary()
    assert ledger.missing_from_log == (), ledger.summary()


# --- waiting and processes ----------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "the condition") -> None:
    """Poll ``predicate`` (a readiness wait, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def freeze(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP: the process keeps its sockets (connections are accepted) but answers nothing."""
    os.kill(process.pid, signal.SIGSTOP)


def thaw(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGCONT)


@contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted on ``directory``; skips the test where mounting is not allowed
    (it needs CAP_SYS_ADMIN: root in this container)."""
    directory.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)]
    mounted = subprocess.run(command, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill: {mounted.stderr.strip() or 'mount failed'}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write zeros into ``directory`` until its file system is full; returns the filler file."""
    filler = directory / "filler"
    with filler.open("ab", buffering=0) as fh:
        for chunk in (b"\0" * 4096, b"\0"):  # then the last bytes a whole page would not take
            try:
                while True:
                    fh.write(chunk)
            except OSError:
                pass
    return filler


# --- side services: an OPA sidecar, a notification receiver ----------------------------------


@dataclass
class Opa:
    """``opa run --server`` serving the repo's policies as a bundle (the ``engine: opa`` sidecar)."""

    process: subprocess.Popen[bytes]
    url: str
    bundle: Path
    revision: str

    def stop(self) -> None:
        if self.process.poll() is None:
            thaw(self.process)
            self.process.kill()
        self.process.wait()


def start_opa(directory: Path) -> Opa:
    directory.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(POLICIES)
    path = directory / "bundle.tar.gz"
    write_bundle(bundle, path)
    port = free_port()
    command = [find_opa(), "run", "--server", "--bundle", str(path), "--log-level", "error"]
    command += ["--addr", f"127.0.0.1:{port}"]
    with (directory / "opa.log").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    opa = Opa(process, f"http://127.0.0.1:{port}", path, bundle.revision)

    def serving() -> bool:
        try:
            return httpx.get(f"{opa.url}/health", params={"bundles": "true"}, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, what="OPA to serve the bundle")
    except BaseException:
        opa.stop()
        raise
    return opa


class Receiver:
    """Stands in for Slack's Web API and a webhook consumer on a fixed port, started on demand
    (until then the port is closed: the notifier is down)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path: str) -> list[bytes]:
        with self._lock:
            return [body for p, body in self.requests if p == path]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.requests.append((self.path, body))
                data = json.dumps({"ok": True, "channel": "C0APPROVALS", "ts": "1700000000.000100"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
