"""Soak: the full gateway under mixed traffic at a fixed rate, watched minute by minute.

``python -m bench.soak --duration 1200 [--rate R] [--extra-rules 200] [--out bench/results/soak.json]``

Starts on free loopback ports a fixed-response upstream Envoy (``bench.stack``; CRM paths get
a record full of fake PII), the Aegis service with the repo's policies and the signed
decision log, and Envoy in front with the whole generated chain (ext_authz → ext_proc →
router).  It refuses to run unless each call of the mix gets the policy's answer: an allowed
refund 200 with the upstream's body, a refund of 900 403, a CRM read 200 with ``ssn`` and
``full_name`` redacted, a refund of 120 202 (approval).

Rate: ``--rate``, or half the saturated rate, measured first with wrk (closed loop, 32
connections, the same mix, ``--saturate`` seconds).  Then the open-loop generator
(``bench.mixload``: latency from the intended send times) sends the mix, allow / deny /
redact / approval in turn, one segment per minute.  After each segment it records: the RSS of
the service and of its Envoy, the statuses (every 5xx and transport error counted), and the
decision-log entries written against the answers received.  At the end it stops the service
(the log's final signed checkpoint), verifies the whole chain, prints a table and writes JSON.
Exit status 0 only with zero 5xx, zero transport errors, zero lost log entries and a chain
that verifies.  ``--extra-rules N`` loads N generated rules over 20 more tools
(``bench.policygen``) beside the repo's policies, as a large deployment's service holds them:
the mix's answers are the same, the compiled policy, its engine and its caches are that size.
Every process it started is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.gateway import _progress, _version, _workdir, machine
from bench.mixload import run_open_loop_mix, run_wrk_mix
from bench.policygen import policy_set
from bench.procs import BenchError, Child, ProcessGroup, raise_on_sigterm, wait_ready
from bench.request import BenchRequest, refund_request
from bench.stack import (
    AGENT,
    POLICIES,
    REPO,
    TENANT,
    TOKEN_TTL_S,
    TOOL_HOST,
    UPSTREAM_BODY,
    loopback,
    start_envoy,
    upstream_bootstrap,
    write_aegis_config,
)
from extauthz.audit.keys import generate, load_public
from extauthz.audit.verify import verify_files
from extauthz.config import AegisConfig, load_config
from extauthz.demo_tools import CRM_RECORD
from extauthz.devtokens import mint_token
from extauthz.envoyconfig import render_bootstrap
from extauthz.supervisor import envoy_binary

DEFAULT_OUT = Path("bench/results/soak.json")
SEGMENT_S = 60.0
SATURATE_S = 8.0
SATURATE_CONNECTIONS = 32
CRM_HOST = "crm.demo"
CRM_PATH = "/tenants/acme/records/r-1"
SCOPES = ("payments.refund", "crm.*")
KINDS = ("allow", "deny", "redact", "approval")
EXPECTED = {"allow": 200, "deny": 403, "redact": 200, "approval": 202}
# Memory is "flat" when, after the first (warm-up) minute, RSS grows by less than this share
# of what it was then (issue 8's bar: no growth beyond 5 % over 20 minutes).
FLAT_GROWTH = 0.05


@dataclass(frozen=True)
class SoakStack:
    """What the soak drives and watches."""

    config: AegisConfig
    url: str
    token: str
    service: Child
    envoy: Child
    audit_dir: Path
    audit_public: Path


def mix(token: str) -> list[BenchRequest]:
    """allow, deny, redact, approval: one call of each, in that order."""
    crm = BenchRequest(
        host=CRM_HOST,
        path=CRM_PATH,
        body="",
        token=token,
        method="GET",
        extra_headers=(("x-aegis-purpose", "support"),),
    )
    refund = refund_request(TOOL_HOST, token)
    return [refund, refund_request(TOOL_HOST, token, 900.0), crm, refund_request(TOOL_HOST, token, 120.0)]


def soak_policy_dir(target: Path, extra_rules: int) -> Path:
    """The repo's policies, plus ``extra_rules`` generated rules in a set of their own."""
    shutil.copytree(POLICIES, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tests"))
    generated = policy_set(extra_rules)
    # Calendar names are global across sets, and the repo's policy has a business_hours too.
    generated["calendars"] = {"generated_hours": generated["calendars"].pop("business_hours")}
    for rule in generated["rules"]:
        for condition in rule["when"]:
            if condition.get("calendar") == "business_hours":
                condition["calendar"] = "generated_hours"
    text = yaml.safe_dump(generated, sort_keys=False)
    (target / f"generated-{extra_rules}.yaml").write_text(text, encoding="utf-8")
    return target


def start_soak_stack(group: ProcessGroup, workdir: Path, extra_rules: int = 0) -> SoakStack:
    """Upstream Envoy, the service (decision log on), Envoy → ext_authz → ext_proc → upstream."""
    upstream, upstream_admin = loopback(), loopback()
    policies = soak_policy_dir(workdir / "policies", extra_rules) if extra_rules else POLICIES
    config = write_aegis_config(workdir, upstream, policy_dir=policies, hosts=(TOOL_HOST, CRM_HOST))
    raw = yaml.safe_load(config.path.read_text(encoding="utf-8"))
    public, _ = generate(workdir / "keys" / "audit.pem")
    audit_dir = workdir / "audit"
    raw["audit"] = {"path": str(audit_dir / "decisions.jsonl"), "signing_key": "keys/audit.pem", "key_id": "soak"}
    config.path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(config.path)
    binary = envoy_binary(config)
    bodies = {"/tenants/": json.dumps({"tenant_id": "acme", "record_id": "r-1", **CRM_RECORD})}
    start_envoy(group, "upstream", upstream_bootstrap(upstream, upstream_admin, bodies), upstream_admin, binary, 1)
    argv = [sys.executable, "-m", "extauthz.cli", "serve", "-c", str(config.path)]
    service = group.spawn("aegis-service", argv, cwd=REPO)
    wait_ready(service, f"http://{config.service.http}/readyz", lambda r: r.status_code == 200)
    start_envoy(group, "envoy", render_bootstrap(config), config.envoy.admin, binary, 1)
    token = mint_token(config.identity, agent=AGENT, tenant=TENANT, scopes=SCOPES, ttl_s=TOKEN_TTL_S)
    envoy = next(c for c in group.children if c.name == "envoy")
    return SoakStack(config, f"http://{config.envoy.listen}", token, service, envoy, audit_dir, public)


def _answer(stack: SoakStack, request: BenchRequest) -> httpx.Response:
    return httpx.request(
        request.method, stack.url + request.path, content=request.body or None, headers=request.headers, timeout=5
    )


def verify(stack: SoakStack) -> None:
    """Refuse to soak error pages: each call of the mix gets the policy's answer."""
    deadline = time.monotonic() + 10
    while _answer(stack, mix(stack.token)[0]).status_code != 200:  # Envoy may still health-check
        if time.monotonic() > deadline:
            raise BenchError("refusing to run: the allowed refund never got a 200")
        time.sleep(0.2)
    for kind, request in zip(KINDS, mix(stack.token), strict=True):
        response = _answer(stack, request)
        wrong = response.status_code != EXPECTED[kind]
        if kind == "allow":
            wrong |= response.text != UPSTREAM_BODY
        if kind == "redact":
            wrong |= any(response.json().get(k) == CRM_RECORD[k] for k in ("ssn", "full_name"))
        if wrong:
            raise BenchError(f"refusing to run: {kind} answered {response.status_code} {response.text[:200]!r}")


# --- what is watched ----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class LogCounter:
    """Counts decision entries in the decision-log files, reading only what is new.

    Offsets are kept per inode, not per name: rotation renames ``decisions.jsonl`` (its
    inode and offset carry over to the rotated name) and starts a new file at offset 0.
    """

    def __init__(self, audit_dir: Path) -> None:
        self.audit_dir = audit_dir
        self.offsets: dict[int, int] = {}
        self.decisions = 0

    def update(self) -> int:
        """Scan new complete lines of every file (rotated ones too); returns the total."""
        for path in sorted(self.audit_dir.glob("decisions*.jsonl")):
            with path.open("rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                start = self.offsets.get(inode, 0)
                fh.seek(start)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                if json.loads(line).get("type") == "decision":
                    self.decisions += 1
            self.offsets[inode] = start + end
        return self.decisions


def settled(counter: LogCounter, quiet_s: float = 1.0) -> int:
    """The decision count once it has not changed for ``quiet_s`` (nothing left in flight)."""
    count = counter.update()
    while True:
        time.sleep(quiet_s)
        if counter.update() == count:
            return count
        count = counter.decisions


def segment_row(index: int, result: Any, logged: int, stack: SoakStack, segment_s: float) -> dict[str, Any]:
    """One segment (a minute): answers by status, errors, log entries written, RSS.

    ``lost`` is answers minus decision entries written meanwhile: with ``audit.sync`` every
    answer's record is written before the answer, so it is 0 unless records go missing (a 5xx
    from Envoy itself has no record, but any 5xx fails the run anyway)."""
    statuses = {int(k): v for k, v in result.extra["statuses"].items()}
    transport = sum(v for k, v in result.errors.items() if k != "status")
    return {
        "minute": index + 1,
        "sent": int(result.extra["target_rps"] * segment_s),
        "answered": result.requests,
        "statuses": statuses,
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "transport_errors": transport,
        "logged": logged,
        "lost": result.requests - logged,
        "p50_ms": round(result.latency_us["p50"] / 1000, 2),
        "p99_ms": round(result.latency_us["p99"] / 1000, 2),
        "rss_service_mb": rss_mb(stack.service.process.pid),
        "rss_envoy_mb": rss_mb(stack.envoy.process.pid),
    }


def growth(rows: list[dict[str, Any]], key: str) -> float:
    """RSS change from the end of the first (warm-up) minute to the end of the last."""
    return round(rows[-1][key] - rows[0][key], 1) if rows else 0.0


def growth_share(rows: list[dict[str, Any]], key: str) -> float:
    """:func:`growth` as a share of the RSS after the first minute."""
    return round((rows[-1][key] - rows[0][key]) / rows[0][key], 4) if rows and rows[0][key] else 0.0


def summarize(rows: list[dict[str, Any]], chain_ok: bool) -> dict[str, Any]:
    growth_service, growth_envoy = growth(rows, "rss_service_mb"), growth(rows, "rss_envoy_mb")
    share_service, share_envoy = growth_share(rows, "rss_service_mb"), growth_share(rows, "rss_envoy_mb")
    return {
        "minutes": len(rows),
        "answered": sum(r["answered"] for r in rows),
        "5xx": sum(r["5xx"] for r in rows),
        "transport_errors": sum(r["transport_errors"] for r in rows),
        "logged": sum(r["logged"] for r in rows),
        "lost": sum(max(0, r["lost"]) for r in rows),
        "rss_growth_mb": {"service": growth_service, "envoy": growth_envoy},
        "rss_growth_share": {"service": share_service, "envoy": share_envoy},
        "memory_flat": max(share_service, share_envoy) < FLAT_GROWTH,
        "chain_verified": chain_ok,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| minute | answered | 200 | 202 | 403 | 5xx | transport errors | log entries | lost | P50 ms | P99 ms"
        " | RSS service MB | RSS Envoy MB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        s = r["statuses"]
        lines.append(
            f"| {r['minute']} | {r['answered']:,} | {s.get(200, 0):,} | {s.get(202, 0):,} | {s.get(403, 0):,} "
            f"| {r['5xx']} | {r['transport_errors']} | {r['logged']:,} | {r['lost']} | {r['p50_ms']} "
            f"| {r['p99_ms']} | {r['rss_service_mb']} | {r['rss_envoy_mb']} |"
        )
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------


def soak(args: argparse.Namespace, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    with ProcessGroup(workdir) as group:
        stack = start_soak_stack(group, workdir, args.extra_rules)
        verify(stack)
        requests = mix(stack.token)
        saturated = None
        rate = args.rate
        if rate is None:
            progress(f"saturating: wrk, {SATURATE_CONNECTIONS} connections, the mix, {args.saturate:g} s")
            saturated = run_wrk_mix(
                stack.url + requests[0].path, requests, SATURATE_CONNECTIONS, args.saturate, workdir
            )
            rate = round(saturated.rps / 2)
            failed = saturated.error_count - saturated.errors.get("status", 0)  # wrk counts every 403 as "status"
            progress(f"saturated at {saturated.rps:,.0f} RPS ({failed} transport errors); soaking at {rate}/s")
        counter = LogCounter(stack.audit_dir)
        before = settled(counter)  # Checks of the saturation run's last requests may still be landing
        rows = []
        for index in range(max(1, round(args.duration / args.segment))):
            # A segment slowed by other work on the machine may overrun (its send lag shows it);
            # only one taking twice its length counts as hung.
            result = run_open_loop_mix(stack.url, requests, rate, args.segment, workdir, slack_s=args.segment)
            logged = counter.update() - before
            before += logged
            rows.append(segment_row(index, result, logged, stack, args.segment))
            r = rows[-1]
            progress(
                f"minute {r['minute']}: {r['answered']:,} answered, 5xx {r['5xx']}, errors {r['transport_errors']}, "
                f"logged {r['logged']:,} (lost {r['lost']}), RSS service {r['rss_service_mb']} MB, "
                f"Envoy {r['rss_envoy_mb']} MB"
            )
        # SIGINT: stop now (no drain); the decision log closes with its final signed checkpoint.
        stack.service.process.send_signal(signal.SIGINT)
        stack.service.process.wait(30)
        files = sorted(stack.audit_dir.glob("decisions*.jsonl"))
        verified = verify_files(files, [load_public(stack.audit_public)])
        late = counter.update() - before  # decisions of calls cut off by the stop (none expected)
        envoy = _version([envoy_binary(stack.config), "--version"])
    chain = {"ok": verified.ok, "entries": verified.entries, "checkpoints": verified.checkpoints}
    chain |= {"files": verified.files, "problems": verified.problems[:5]}
    return {
        "rate": rate,
        "segment_s": args.segment,
        "saturated": saturated.to_json() if saturated else None,
        "rows": rows,
        "logged_after_last_segment": late,
        "chain": chain,
        "versions": {"envoy": envoy},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1200, help="seconds of soak, in whole minutes (default 1200)")
    parser.add_argument("--rate", type=float, help="requests per second (default: half the saturated rate)")
    parser.add_argument("--saturate", type=float, default=SATURATE_S, help="seconds of the saturation run")
    parser.add_argument("--segment", type=float, default=SEGMENT_S, help="seconds between reports (default 60)")
    parser.add_argument(
        "--extra-rules", type=int, default=0, help="generated rules loaded beside the repo's policies (e.g. 200)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and the decision log here")
    args = parser.parse_args(argv)
    if not 0 < args.segment <= args.duration:
        parser.error("--segment must be positive and at most --duration")
    if args.extra_rules < 0:
        parser.error("--extra-rules must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getloadavg()
    try:
        with _workdir(args.workdir) as workdir:
            run = soak(args, workdir, _progress)
    except BenchError as exc:
        print(f"bench.soak: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.soak: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    summary = summarize(run["rows"], run["chain"]["ok"])
    report = {
        "command": "python -m bench.soak " + shlex.join(sys.argv[1:] if argv is None else argv),
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "mix": list(KINDS),
        "extra_rules": args.extra_rules,
        "summary": summary,
        **run,
    }
    print(table(run["rows"]))
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    clean = summary["5xx"] == 0 and summary["transport_errors"] == 0 and summary["lost"] == 0
    return 0 if clean and summary["chain_verified"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
