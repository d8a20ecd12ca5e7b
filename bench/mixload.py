"""Load made of several calls in turn (a mix), for the wrk and open-loop generators.

``bench.wrk`` and ``bench.openloop`` send one fixed request; the OPA-Envoy comparison sends a
mix (an allowed refund, then a CRM read, then a refund...), so every system answers the same
sequence of calls.

* :func:`run_wrk_mix`: wrk, closed loop, with a Lua ``request()`` that cycles through the
  calls (``wrk.format`` builds each once, in ``init``) and ``bench.wrk``'s JSON ``done()``.
* :func:`open_loop_mix` / :func:`run_open_loop_mix`: ``bench.openloop``'s generator (latency
  from the intended send time, no coordinated omission) whose ``i``-th request is call
  ``i mod n``; run in its own process like ``run_open_loop``.  Same limits: meant for rates of
  hundreds to about a thousand per second, ``send_lag_us`` is its self-check.

Run alone: ``python -m bench.mixload --url http://127.0.0.1:PORT --requests reqs.json
--rate 500 --duration 5`` (``reqs.json``: a JSON list of ``BenchRequest`` fields).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from bench.openloop import MAX_CONNECTIONS, START_DELAY_S, SWITCH_INTERVAL_S, Connection, OpenLoop, _result
from bench.procs import BenchError
from bench.request import BenchRequest
from bench.result import LoadResult
from bench.wrk import REQUEST_TIMEOUT_S, lua_script, lua_string, parse_wrk_output, wrk_binary

RUN_SLACK_S = 15


# --- wrk ----------------------------------------------------------------------------------


def _lua_table(headers: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()) + "}"


def lua_mix_script(requests: Sequence[BenchRequest]) -> str:
    """``bench.wrk``'s script for the first call, plus a ``request()`` cycling through all.

    wrk calls ``request()`` for every request when the script defines it; the strings are
    built once in ``init`` so the loop only indexes a table.
    """
    if not requests:
        raise BenchError("a mix needs at least one request")
    lines = ["local mix = {}", "local next_index = 0", "init = function(args)"]
    for i, r in enumerate(requests, start=1):
        # "" and not nil for no body: wrk.format would put wrk.body (the first call's) in its place.
        call = (
            f"wrk.format({lua_string(r.method)}, {lua_string(r.path)}, {_lua_table(r.headers)}, {lua_string(r.body)})"
        )
        lines.append(f"  mix[{i}] = {call}")
    lines += [
        "end",
        "request = function()",
        f"  next_index = next_index % {len(requests)} + 1",
        "  return mix[next_index]",
        "end",
    ]
    return lua_script(requests[0]) + "\n".join(lines) + "\n"


def run_wrk_mix(
    url: str, requests: Sequence[BenchRequest], connections: int, duration_s: float, script_dir: Path
) -> LoadResult:
    """One wrk run with one thread and ``connections`` connections, cycling through ``requests``."""
    script = script_dir / "mix.lua"
    script.write_text(lua_mix_script(requests), encoding="utf-8")
    argv = [wrk_binary(), "-t1", f"-c{connections}", f"-d{duration_s:g}s", f"--timeout={REQUEST_TIMEOUT_S}s"]
    argv += ["-s", str(script), url + requests[0].path]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + RUN_SLACK_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration_s + RUN_SLACK_S:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk_output(done.stdout)


# --- open loop ----------------------------------------------------------------------------


class MixedOpenLoop(OpenLoop):
    """``OpenLoop`` whose successive requests cycle through several raw requests.

    ``_dispatch`` runs on the sender thread and, for queued requests, on the receiving
    thread, so the position in the cycle is taken under a lock.
    """

    def __init__(self, address: tuple[str, int], raws: Sequence[bytes], connections: int) -> None:
        self.raws = list(raws)
        self.sent = 0
        self.mix_lock = threading.Lock()
        super().__init__(address, self.raws[0], connections)

    def _dispatch(self, conn: Connection, intended: float) -> None:
        with self.mix_lock:
            raw = self.raws[self.sent % len(self.raws)]
            self.sent += 1
        try:
            conn.send(raw, intended)
        except OSError:
            self._drop(conn, "read")
            return
        self.tally.send_lags_us.append((time.monotonic() - intended) * 1e6)


def open_loop_mix(
    url: str, requests: Sequence[BenchRequest], rate: float, duration_s: float, connections: int
) -> LoadResult:
    """``rate`` requests per second for ``duration_s``, cycling through ``requests``."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise BenchError(f"open loop needs host:port in the URL, got {url!r}")
    if not requests:
        raise BenchError("a mix needs at least one request")
    run = MixedOpenLoop((parts.hostname, parts.port), [r.raw() for r in requests], connections)
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


def run_open_loop_mix(
    url: str,
    requests: Sequence[BenchRequest],
    rate: float,
    duration_s: float,
    script_dir: Path,
    *,
    slack_s: float = RUN_SLACK_S,
) -> LoadResult:
    """:func:`open_loop_mix` in its own process (its own GIL and core); reads its JSON.

    ``slack_s``: how much longer than ``duration_s`` the run may take (answers still owed
    when the sending ends, a generator behind schedule) before it counts as hung."""
    spec = script_dir / "mix-requests.json"
    spec.write_text(json.dumps([asdict(r) for r in requests]), encoding="utf-8")
    argv = [sys.executable, "-m", "bench.mixload", "--url", url, "--requests", str(spec)]
    argv += ["--rate", f"{rate:g}", "--duration", f"{duration_s:g}"]
    cwd = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + slack_s, check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"open-loop generator did not finish within {duration_s + slack_s:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"open-loop generator exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return LoadResult(**json.loads(done.stdout))


def _load_requests(path: Path) -> list[BenchRequest]:
    items = json.loads(path.read_text(encoding="utf-8"))
    return [
        BenchRequest(**{**item, "extra_headers": tuple(map(tuple, item.get("extra_headers", ())))}) for item in items
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--requests", required=True, type=Path, help="JSON list of requests (BenchRequest fields)")
    parser.add_argument("--rate", required=True, type=float, help="requests per second")
    parser.add_argument("--duration", required=True, type=float, help="seconds")
    parser.add_argument("--connections", type=int, default=MAX_CONNECTIONS, help="keep-alive connections")
    args = parser.parse_args(argv)
    requests = _load_requests(args.requests)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.disable()  # a collection pause would show up as latency of the system under test
    result = open_loop_mix(args.url, requests, args.rate, args.duration, args.connections)
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
