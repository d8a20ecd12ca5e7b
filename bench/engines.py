"""Engine benchmark: per-decision latency of every policy engine on generated policy sets.

``python -m bench.engines [--quick] [--out bench/out/engines.json]``

For policy sets of 10, 50 and 200 rules over 20 tools (``bench.policygen``) it builds the
bundle and times, side by side on the same policy inputs: the native engine, regopy (rego-cpp
in process), OPA over loopback HTTP (``local_opa``: the real ``opa run --server``), and the
whole in-process Check (``Authorizer.check`` and the gRPC servicer's ``Check`` with a real
``CheckRequest`` and a minted ES256 token).  Decisions must agree between the three engines
or nothing is reported.  Then a reload test: one thread calls ``Authorizer.check``
continuously while the main thread rewrites the 200-rule policy and calls
``PolicyReloader.reload(force=True)`` every 100 ms; check latency with and without reloads
is compared in the same run.  The bar: native P99 ≤ 100 µs with 200 rules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gateway import machine
from bench.inprocess import InProcess, in_process
from bench.policygen import AGENT, RULE_COUNTS, TENANT, Call, allowed_call, sample_calls, scopes, write_policy_dir
from bench.result import summarize
from extauthz.authorizer import ActivePolicy, activate
from extauthz.decision import Decision
from extauthz.engine import PolicyEngine, create_engine
from extauthz.identity import AgentIdentity
from extauthz.policy.opa_local import local_opa
from extauthz.policy_input import build_input
from extauthz.tools import HttpRequest

DEFAULT_OUT = Path("bench/out/engines.json")
NATIVE_P99_BAR_US = 100.0
RELOAD_INTERVAL_S = 0.1
VERSIONS = 8  # policy versions published in turn by the reload test


@dataclass(frozen=True)
class Budget:
    """Timed calls per engine (after a 10 % warm-up) and the reload test's phase length."""

    native: int
    regopy: int
    opa: int
    check: int
    reload_phase_s: float


FULL = Budget(native=20_000, regopy=1_500, opa=2_000, check=3_000, reload_phase_s=4.0)
QUICK = Budget(native=3_000, regopy=200, opa=300, check=500, reload_phase_s=1.5)


def time_calls(fn: Callable[[Any], object], args: Sequence[Any], count: int) -> list[float]:
    """Latency (µs) of ``count`` calls of ``fn``, cycling through ``args``; 10 % warm-up first."""
    for i in range(max(1, count // 10)):
        fn(args[i % len(args)])
    samples = []
    clock = time.perf_counter_ns
    for i in range(count):
        arg = args[i % len(args)]
        started = clock()
        fn(arg)
        samples.append((clock() - started) / 1000)
    return samples


def policy_inputs(policy: ActivePolicy, calls: Sequence[Call]) -> list[dict[str, Any]]:
    """The exact policy inputs the Authorizer would build for ``calls`` (verified identity)."""
    identity = AgentIdentity(AGENT, TENANT, tuple(scopes()))
    now = dt.datetime.now(dt.UTC)
    out = []
    for call in calls:
        request = HttpRequest("POST", call.host, call.path, "", call.headers, call.body_bytes())
        out.append(build_input(identity, policy.catalogue.match(request), request, policy.calendars, now))
    return out


def decisions(engine: PolicyEngine, inputs: Sequence[dict[str, Any]]) -> list[Decision]:
    return [engine.evaluate(i) for i in inputs]


def _disagreement(reference: list[Decision], other: list[Decision], name: str) -> str | None:
    for index, (a, b) in enumerate(zip(reference, other, strict=True)):
        if a != b:
            return f"{name} disagrees with native on input {index}: {a.effect}/{a.rules} vs {b.effect}/{b.rules}"
    return None


def _row(engine: str, rules: int, samples: list[float]) -> dict[str, Any]:
    return {"engine": engine, "rules": rules, "calls": len(samples), "latency_us": summarize(samples)}


def bench_engines(policy_dir: Path, rules: int, budget: Budget) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """native, regopy and OPA on the same inputs; their decisions compared first."""
    policy = activate(_build(policy_dir), "native")
    inputs = policy_inputs(policy, sample_calls())
    regopy = create_engine(policy.bundle, "regopy")
    reference = decisions(policy.engine, inputs)
    effects = sorted({d.effect.value for d in reference})
    problems = [_disagreement(reference, decisions(regopy, inputs), "regopy")]
    rows = [_row("native", rules, time_calls(policy.engine.evaluate, inputs, budget.native))]
    rows.append(_row("regopy", rules, time_calls(regopy.evaluate, inputs, budget.regopy)))
    with local_opa(policy.bundle) as url, _closing(create_engine(policy.bundle, "opa", opa_url=url)) as opa:
        problems.append(_disagreement(reference, decisions(opa, inputs), "opa"))
        rows.append(_row("opa (loopback HTTP)", rules, time_calls(opa.evaluate, inputs, budget.opa)))
    agreement = {"inputs": len(inputs), "effects": effects, "problems": [p for p in problems if p]}
    return rows, agreement


def bench_check(workdir: Path, policy_dir: Path, rules: int, budget: Budget) -> list[dict[str, Any]]:
    """The whole in-process Check: ``Authorizer.check`` and the gRPC servicer's ``Check``."""
    with in_process(workdir, policy_dir) as proc:
        call = allowed_call()
        _expect_allowed(proc, call)
        request, check = proc.http_request(call), proc.check_request(call)
        rows = [_row("Authorizer.check", rules, time_calls(proc.service.authorizer.check, [request], budget.check))]
        servicer = proc.servicer
        rows.append(
            _row(
                "servicer Check (protobuf)", rules, time_calls(lambda r: servicer.Check(r, None), [check], budget.check)
            )
        )
    return rows


def _expect_allowed(proc: InProcess, call: Call) -> None:
    answer = proc.service.authorizer.check(proc.http_request(call))
    if answer.status != 200:
        raise RuntimeError(f"the benchmark call was answered {answer.status}: {answer.body}")


@contextmanager
def _closing(engine: PolicyEngine) -> Iterator[PolicyEngine]:
    try:
        yield engine
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()


def _build(policy_dir: Path) -> Any:
    from extauthz.policy.bundle import build_bundle

    return build_bundle(policy_dir)


# --- reloads under load -------------------------------------------------------------------


@dataclass
class CheckLoop:
    """A thread calling ``Authorizer.check`` back to back until stopped; latency per call."""

    proc: InProcess
    request: HttpRequest
    samples: list[float]
    refused: int = 0

    def run(self, stop: threading.Event) -> None:
        check, clock = self.proc.service.authorizer.check, time.perf_counter_ns
        while not stop.is_set():
            started = clock()
            answer = check(self.request)
            self.samples.append((clock() - started) / 1000)
            if answer.status != 200:
                self.refused += 1


def _phase(proc: InProcess, seconds: float, step: Callable[[int], None] | None) -> dict[str, Any]:
    loop = CheckLoop(proc, proc.http_request(allowed_call()), [])
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="bench-check")
    thread.start()
    deadline, tick = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            next_at = time.monotonic() + RELOAD_INTERVAL_S
            if step is not None:
                step(tick)
            tick += 1
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        stop.set()
        thread.join()
    return {"checks": len(loop.samples), "not_200": loop.refused, "latency_us": summarize(loop.samples)}


def bench_reload(workdir: Path, rules: int, budget: Budget) -> dict[str, Any]:
    """Check latency while the policy is rebuilt and swapped every 100 ms, vs none (same run).

    The versions are written before the phases and published by swapping a symlink (as a
    deploy job or a Kubernetes ConfigMap volume does), so the benchmark's own YAML writing
    does not compete with the checks for the interpreter lock.  The service freezes its
    heap as ``aegis serve`` does.
    """
    versions = [write_policy_dir(workdir / "versions" / f"v{k}", rules, threshold_shift=k) for k in range(VERSIONS)]
    policy_dir = workdir / "reload-policy"
    policy_dir.symlink_to(versions[0], target_is_directory=True)
    with in_process(workdir / "reload-service", policy_dir, freeze_heap=True) as proc:
        reloader, reload_us, swaps = proc.service.reloader, [], [0]

        def reload_step(tick: int) -> None:
            staged = workdir / "reload-policy.next"
            staged.symlink_to(versions[1 + tick % (VERSIONS - 1)], target_is_directory=True)
            os.replace(staged, policy_dir)
            started = time.perf_counter_ns()
            swapped = reloader.reload(force=True)
            reload_us.append((time.perf_counter_ns() - started) / 1000)
            swaps[0] += swapped is not None

        quiet = _phase(proc, budget.reload_phase_s, None)
        reloading = _phase(proc, budget.reload_phase_s, reload_step)
        after = _phase(proc, budget.reload_phase_s, None)
    return {
        "rules": rules,
        "interval_s": RELOAD_INTERVAL_S,
        "phase_s": budget.reload_phase_s,
        "without_reloads": quiet,
        "during_reloads": {**reloading, "swaps": swaps[0], "reload_us": summarize(reload_us)},
        "after_reloads": after,
    }


# --- the command --------------------------------------------------------------------------


def run(workdir: Path, budget: Budget, progress: Callable[[str], None]) -> dict[str, Any]:
    engines, checks, agreement = [], [], {}
    for rules in RULE_COUNTS:
        policy_dir = write_policy_dir(workdir / f"policy-{rules}", rules)
        progress(f"{rules} rules: native, regopy, OPA")
        rows, agreement[str(rules)] = bench_engines(policy_dir, rules, budget)
        engines += rows
        progress(f"{rules} rules: in-process Check")
        checks += bench_check(workdir / f"service-{rules}", policy_dir, rules, budget)
    progress(f"reload test: {RULE_COUNTS[-1]} rules, {budget.reload_phase_s:g} s per phase")
    reload = bench_reload(workdir, RULE_COUNTS[-1], budget)
    return {"engines": engines, "check": checks, "agreement": agreement, "reload": reload}


def native_bar(results: dict[str, Any]) -> dict[str, Any]:
    row = next(r for r in results["engines"] if r["engine"] == "native" and r["rules"] == RULE_COUNTS[-1])
    p99 = row["latency_us"]["p99"]
    return {
        "rules": RULE_COUNTS[-1],
        "native_p99_us": p99,
        "bar_us": NATIVE_P99_BAR_US,
        "pass": p99 <= NATIVE_P99_BAR_US,
    }


def _lat_cells(lat: dict[str, float]) -> str:
    return " | ".join(f"{lat[k]:,.1f}" for k in ("p50", "p99", "p999", "max"))


def tables(results: dict[str, Any]) -> str:
    head = "| path | rules | calls | P50 µs | P99 µs | P99.9 µs | max µs |\n|---|--:|--:|--:|--:|--:|--:|"
    rows = [head]
    for r in results["engines"] + results["check"]:
        rows.append(f"| {r['engine']} | {r['rules']} | {r['calls']:,} | {_lat_cells(r['latency_us'])} |")
    reload = results["reload"]
    rows += ["", "| reload test (200 rules) | checks | not 200 | P50 µs | P99 µs | P99.9 µs | max µs |"]
    rows.append("|---|--:|--:|--:|--:|--:|--:|")
    for name in ("without_reloads", "during_reloads", "after_reloads"):
        phase = reload[name]
        rows.append(
            f"| {name.replace('_', ' ')} | {phase['checks']:,} | {phase['not_200']} "
            f"| {_lat_cells(phase['latency_us'])} |"
        )
    during = reload["during_reloads"]
    spent = during["reload_us"]
    rows.append(
        f"\nreloads: {during['swaps']} swaps in {reload['phase_s']:g} s (every {reload['interval_s'] * 1000:.0f} ms, "
        f"back to back when slower); rebuild+activate P50 {spent['p50'] / 1000:.1f} ms, "
        f"max {spent['max'] / 1000:.1f} ms"
    )
    bar = results["bar"]
    verdict = "PASS" if bar["pass"] else "FAIL"
    rows.append(
        f"bar: native P99 with {bar['rules']} rules = {bar['native_p99_us']:.1f} µs "
        f"(≤ {bar['bar_us']:.0f} µs): {verdict}"
    )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and shorter reload phases (~30 s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--workdir", type=Path, help="keep policies, configs and logs here")
    return parser.parse_args(argv)


def _progress(line: str) -> None:
    print(f"[bench.engines] {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    started = time.monotonic()
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="aegis-engines-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        results = run(workdir, budget, _progress)
    results["bar"] = native_bar(results)
    problems = [p for a in results["agreement"].values() for p in a["problems"]]
    report = {
        "command": "python -m bench.engines " + " ".join(sys.argv[1:] if argv is None else argv),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "budget": budget.__dict__,
        **results,
    }
    print(tables(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    for problem in problems:
        print(f"bench.engines: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
