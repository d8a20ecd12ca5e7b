"""Store operation latency, SQLite vs Redis: P50/P99 of the operations on the request path.

    .venv/bin/python -m bench.store [--n 2000]

Starts a throwaway redis-server (no persistence) on a free loopback port; one client thread,
so the numbers are per-operation latency (loopback round trip + Lua), not throughput.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from extauthz.ports import free_loopback_port
from extauthz.store import PendingApproval, Store
from extauthz.store.redis import RedisStore
from extauthz.store.sqlite import SqliteStore


def _approval(now: float) -> PendingApproval:
    i = uuid.uuid4().hex
    return PendingApproval(
        id=f"apr_{i}",
        agent_id="bench",
        tenant="t",
        chain=(),
        tool="payments.refund",
        args_summary="{}",
        fingerprint=i,
        rule="r",
        reason="r",
        policy_version="v",
        approvers="g",
        created_at=now,
        expires_at=now + 3600,
    )


def measure(store: Store, n: int) -> dict[str, tuple[float, float]]:
    now = time.time()
    ops: dict[str, Callable[[int], object]] = {
        "take_token (rate limit)": lambda i: store.take_token(f"rl:{i % 50}", 1e9, 1e9, now),
        "consume_budget": lambda i: store.consume_budget(f"b:{i % 50}", 1, 10**12, now + 86400, now),
        "create_or_get_pending": lambda i: store.create_or_get_pending(_approval(now), now),
        "get_approval": lambda i: store.get_approval("apr_missing"),
    }
    approvals = [store.create_or_get_pending(_approval(now), now) for _ in range(n)]
    for a in approvals:
        store.decide(a.id, "approved", "bench", None, now, 600)
    ops["consume (override)"] = lambda i: store.consume(approvals[i].id, now + 1)
    out = {}
    for name, op in ops.items():
        samples = []
        for i in range(n):
            started = time.perf_counter()
            op(i)
            samples.append(time.perf_counter() - started)
        q = statistics.quantiles(samples, n=100)
        out[name] = (q[49] * 1e6, q[98] * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not installed")
    port = free_loopback_port()
    redis = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    time.sleep(0.3)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {
                "sqlite": measure(SqliteStore(Path(tmp) / "bench.db"), args.n),
                "redis": measure(RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=1.0), args.n),
            }
    finally:
        redis.terminate()
        redis.wait()
    print("| operation | SQLite P50 µs | SQLite P99 µs | Redis P50 µs | Redis P99 µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in results["sqlite"]:
        s50, s99 = results["sqlite"][name]
        r50, r99 = results["redis"][name]
        print(f"| {name} | {s50:.0f} | {s99:.0f} | {r50:.0f} | {r99:.0f} |")


if __name__ == "__main__":
    main()
