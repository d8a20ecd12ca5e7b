"""Fixed-rate (open-loop) load without coordinated omission, for modest rates.

Neither wrk2 nor another rate-controlled generator is packaged for this machine (Debian has
only ``wrk``), so this is a small one.  A sender thread sleeps until each *intended* send
time (``start + i / rate``; ``time.sleep`` has microsecond resolution, asyncio's timers round
to milliseconds) and writes the request on an idle keep-alive connection; the main thread
waits on all connections with epoll and timestamps each complete response.  When every
connection is busy the request queues and goes out on the next one freed.  Latency is
measured from the intended send time, so queueing behind a slow answer counts (no
coordinated omission); the delay from intended to actual send (``send_lag_us``) is
reported as a self-check of the generator.

Run alone: ``python -m bench.openloop --url http://127.0.0.1:PORT --request req.json --rate 200
--duration 8``; it prints one JSON object (a :class:`~bench.result.LoadResult`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import BenchError
from bench.request import BenchRequest
from bench.result import LoadResult, summarize

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT_S = 2.0
START_DELAY_S = 0.1
POLL_S = 0.05
SWITCH_INTERVAL_S = 0.0002  # the sender must get the GIL as soon as its sleep ends
PR_SET_TIMERSLACK = 29
RUN_SLACK_S = 15


class Connection:
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=REQUEST_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.intended = 0.0
        self.dropped = False

    def send(self, raw: bytes, intended: float) -> None:
        self.intended = intended
        # A small request fits the empty socket buffer of an idle connection.
        if self.sock.send(raw) != len(raw):
            raise BlockingIOError("request not sent in one write")

    def response_status(self) -> int | None:
        """Status of the complete response in the buffer (consumed), or None if incomplete."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise ValueError("response without Content-Length")
        if len(self.buffer) < end + 4 + length:
            return None
        del self.buffer[: end + 4 + length]
        return int(head[0].split(" ", 2)[1])


@dataclass
class Tally:
    """Counters and samples of one run."""

    latencies_us: list[float] = field(default_factory=list)
    send_lags_us: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: {"connect": 0, "read": 0, "status": 0, "timeout": 0})
    first_intended: float = 0.0
    last_done: float = 0.0


class OpenLoop:
    """The sender thread, the receiving loop and the shared connection state."""

    def __init__(self, address: tuple[str, int], raw: bytes, connections: int) -> None:
        self.address, self.raw, self.tally = address, raw, Tally()
        self.lock = threading.Lock()  # guards idle, backlog, busy
        self.idle: list[Connection] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.busy: set[Connection] = set()
        self.selector = selectors.EpollSelector()
        self.sending = True
        self.sender_error: BaseException | None = None
        for _ in range(connections):
            self._add_connection()

    def _add_connection(self) -> None:
        try:
            conn = Connection(self.address)
        except OSError:
            self.tally.errors["connect"] += 1
            return
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        with self.lock:
            self.idle.append(conn)

    def _dispatch(self, conn: Connection, intended: float) -> None:
        """Send on ``conn`` (which the caller moved to ``busy``) the request due at ``intended``."""
        try:
            conn.send(self.raw, intended)
        except OSError:
            self._drop(conn, "read")
            return
        self.tally.send_lags_us.append((time.monotonic() - intended) * 1e6)

    def send_at(self, intended: float) -> None:
        """Sender thread: the request due at ``intended`` goes out now, or queues."""
        with self.lock:
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                self.backlog.append(intended)
                return
            self.busy.add(conn)
        self._dispatch(conn, intended)

    def sender(self, start: float, count: int, rate: float) -> None:
        """Sender thread. Whatever happens, it says it is done: the receiving loop waits on
        ``sending``, so a sender that died silently would leave the run hanging forever."""
        _tighten_timer_slack()
        try:
            for i in range(count):
                intended = start + i / rate
                delay = intended - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.send_at(intended)
        except BaseException as exc:
            self.sender_error = exc
            raise
        finally:
            self.sending = False

    def _completed(self, conn: Connection, status: int) -> None:
        now = time.monotonic()
        self.tally.latencies_us.append((now - conn.intended) * 1e6)
        self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
        self.tally.last_done = now
        if status != 200:
            self.tally.errors["status"] += 1
        with self.lock:
            intended = self.backlog.popleft() if self.backlog else None
            if intended is None:
                self.busy.discard(conn)
                self.idle.append(conn)
                return
        self._dispatch(conn, intended)

    def _drop(self, conn: Connection, error: str) -> None:
        """A failed connection: count it and replace it. Idle connections fail too (the server
        closed a keep-alive one): it must leave ``idle``, or the sender would pick it again."""
        self.tally.errors[error] += 1  # also when already dropped: the request sent on it is lost
        with self.lock:
            if conn.dropped:  # both threads saw it fail
                return
            conn.dropped = True
            self.busy.discard(conn)
            if conn in self.idle:
                self.idle.remove(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()
        self._add_connection()

    def _readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
            if not data:
                raise ConnectionResetError("closed by peer")
            conn.buffer += data
            status = conn.response_status()
        except (OSError, ValueError):
            self._drop(conn, "read")
            return
        if status is not None:
            self._completed(conn, status)

    def _expire(self) -> None:
        deadline = time.monotonic() - REQUEST_TIMEOUT_S
        with self.lock:
            late = [c for c in self.busy if c.intended < deadline]
        for conn in late:
            self._drop(conn, "timeout")

    def receive(self) -> None:
        """Main thread: read responses until sending is over and nothing is in flight."""
        while self.sending or self.busy or self.backlog:
            for key, _ in self.selector.select(POLL_S):
                self._readable(key.data)
            self._expire()
            if not self.sending and self.backlog and not self.busy:
                self.tally.errors["connect"] += len(self.backlog)  # no connection left to send them on
                self.backlog.clear()
        if self.sender_error is not None:
            raise BenchError(f"the sender thread failed: {self.sender_error!r}")

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def _tighten_timer_slack() -> None:
    """Linux wakes a sleeping thread up to 50 µs late by default; ask for 1 µs."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def open_loop(url: str, request: BenchRequest, rate: float, duration_s: float, connections: int) -> LoadResult:
    """Send ``rate`` requests per second for ``duration_s``; latency from intended send times."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise BenchError(f"open loop needs host:port in the URL, got {url!r}")
    run = OpenLoop((parts.hostname, parts.port), request.raw(), connections)
    start = time.monotonic() + START_DELAY_S
    count = int(rate * duration_s)
    thread = threading.Thread(target=run.sender, args=(start, count, rate), name="sender", daemon=True)
    thread.start()
    try:
        run.receive()
    finally:
        thread.join()
        run.close()
    return _result(run.tally, start, rate, connections)


def _result(tally: Tally, start: float, rate: float, connections: int) -> LoadResult:
    completed = len(tally.latencies_us)
    elapsed = max(tally.last_done - start, 1e-9)
    return LoadResult(
        requests=completed,
        duration_s=round(elapsed, 3),
        rps=round(completed / elapsed, 2),
        errors=tally.errors,
        latency_us=summarize(tally.latencies_us),
        extra={
            "target_rps": rate,
            "send_lag_us": summarize(tally.send_lags_us),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "connections": connections,
        },
    )


def run_open_loop(url: str, request: BenchRequest, rate: float, duration_s: float, script_dir: Path) -> LoadResult:
    """Run the generator in its own process (its own GIL and core) and read its JSON."""
    spec = script_dir / "openloop-request.json"
    spec.write_text(json.dumps(asdict(request)), encoding="utf-8")
    argv = [sys.executable, "-m", "bench.openloop", "--url", url, "--request", str(spec)]
    argv += ["--rate", f"{rate:g}", "--duration", f"{duration_s:g}"]
    cwd = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + RUN_SLACK_S, check=False, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"open-loop generator did not finish within {duration_s + RUN_SLACK_S:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"open-loop generator exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return LoadResult(**json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--request", required=True, type=Path, help="JSON file with host, path, body, token")
    parser.add_argument("--rate", required=True, type=float, help="requests per second")
    parser.add_argument("--duration", required=True, type=float, help="seconds")
    parser.add_argument("--connections", type=int, default=MAX_CONNECTIONS, help="keep-alive connections")
    args = parser.parse_args(argv)
    request = BenchRequest(**json.loads(args.request.read_text(encoding="utf-8")))
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.disable()  # a collection pause would show up as latency of the system under test
    result = open_loop(args.url, request, args.rate, args.duration, args.connections)
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
