"""Where the time of one in-process Check goes: cProfile over the gRPC servicer's ``Check``.

``python -m bench.profile_check [--rules 200] [--calls 3000]``

Times ``calls`` Checks of the allowed call without the profiler (the reference mean), then
the same under cProfile, and prints each stage's cumulative time per request (profiled µs;
cProfile inflates Python-heavy stages, so read the shares, not the absolute numbers).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from bench.inprocess import in_process
from bench.policygen import allowed_call, write_policy_dir

# (label, file suffix, function name): the stages of MeasuredAuthorizationServicer.Check.
STAGES = (
    ("whole Check (servicer)", "extauthz/server.py", "Check"),
    ("CheckRequest → HttpRequest", "extauthz/envoy_authz.py", "request_from_check"),
    ("Authorizer.check", "extauthz/authorizer.py", "check"),
    ("  JWT verification (ES256)", "extauthz/identity.py", "verify_header"),
    ("  tool match + arguments", "extauthz/tools.py", "match"),
    ("  policy input", "extauthz/policy_input.py", "build_input"),
    ("  engine (native)", "extauthz/engine/native.py", "evaluate"),
    ("  reasons rendered (DLP on quoted values)", "extauthz/authorizer.py", "_with_rendered_reasons"),
    ("  answer built", "extauthz/answer.py", "answer_for_decision"),
    ("  decision log line (JSON, buffered)", "extauthz/log_stream.py", "log_info"),
    ("  decision record sink (only with a decision log)", "extauthz/authorizer.py", "_record"),
    ("  decision id", "extauthz/decision_record.py", "new_decision_id"),
    ("metrics: the decision histogram (prometheus)", "prometheus_client/metrics.py", "observe"),
    ("tracing span (disabled)", "extauthz/tracing.py", "decision_span"),
    ("Answer → CheckResponse", "extauthz/envoy_authz.py", "response_from_answer"),
)


def stage_times(stats: pstats.Stats, calls: int) -> list[tuple[str, float]]:
    """Cumulative µs per Check for each stage (0 when the function did not run)."""
    raw = stats.stats  # type: ignore[attr-defined]
    out = []
    for label, suffix, name in STAGES:
        total = sum(v[3] for (path, _, func), v in raw.items() if func == name and path.endswith(suffix))
        out.append((label, total / calls * 1e6))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--top", type=int, default=0, help="also print the top N functions by own time")
    parser.add_argument(
        "--no-decision-cache", action="store_true", help="decide every Check afresh (the call repeats, so it hits)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aegis-profile-") as tmp:
        policy_dir = write_policy_dir(Path(tmp) / "policy", args.rules)
        with in_process(Path(tmp) / "service", policy_dir, decision_cache=not args.no_decision_cache) as proc:
            request, check = proc.check_request(allowed_call()), proc.servicer.Check
            for _ in range(200):
                check(request, None)
            started = time.perf_counter()
            for _ in range(args.calls):
                check(request, None)
            mean_us = (time.perf_counter() - started) / args.calls * 1e6
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [check(request, None) for _ in range(args.calls)])
    stats = pstats.Stats(profiler)
    cache = "off" if args.no_decision_cache else "on: every Check after the first is a hit"
    print(f"unprofiled mean: {mean_us:.1f} µs per Check ({args.rules} rules, {args.calls} calls)")
    print(f"decision cache {cache}\n")
    rows = stage_times(stats, args.calls)
    whole = rows[0][1] or 1.0
    print("| stage | µs per Check (profiled) | share |\n|---|--:|--:|")
    for label, us in rows:
        print(f"| {label} | {us:.1f} | {us / whole:.0%} |")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
