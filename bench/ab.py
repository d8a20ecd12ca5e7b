"""Two revisions of the service side by side, in alternating rounds: what one change buys.

``python -m bench.ab --base REV [--call slack] [--connections 32] [--rounds 7] [--duration 5]``

On this machine the same run moves by 30 % from one minute to the next (other tenants), so
two benchmark runs minutes apart cannot show a change of 5 or 10 %.  Here both revisions run
at once: ``REV`` checked out into a temporary git worktree (the *base*), the working tree
(the *candidate*).  Each side has its own ``aegis.yaml`` (own sockets, ports, keys and
SQLite store; the same policies), its own service process started from its own checkout,
and its own Envoy on the bootstrap its own code renders (``aegis envoy-config``), in front
of one shared upstream.  wrk sends the same call through each side in turn, round after
round (the side that goes first alternates); around every run the CPU of that side's Envoy
and service and the machine's steal are read from /proc, and Envoy's ext_proc counters give
the messages per call.

Prints each round, then the medians and the candidate's ratios against the base (of the
medians, and paired round by round with the rounds won); writes JSON (``--out``).  The
compiled extensions (the gRPC front, the DLP core) are this venv's for the candidate; when
the base's Rust sources differ, the base's own are built (maturin, a cargo target directory
kept under ``.aegis/ab-target`` so a rebuild is incremental) and put first on its
``PYTHONPATH``.  ``--base-python`` runs the base's service on another interpreter (another
venv's ``python``): ``--base HEAD`` with it compares two interpreters on the same code.
``--decision-log`` gives both sides the signed decision log (``audit.path``, a signing key,
the defaults otherwise: ``sync: true``), which ``bench.dlp_gateway`` leaves out as issue 8's
targets do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.dlp_gateway import CRM_HOST, SCOPES, SLACK_HOST, SLACK_PATH, bench_policy_dir, ext_counters, requests
from bench.gateway import _workdir, machine
from bench.procs import BenchError, MachineCpu, ProcessGroup, cpu_seconds, raise_on_sigterm, wait_ready
from bench.stack import REPO, TOOL_HOST, Target, loopback, upstream_bootstrap, write_aegis_config
from bench.ticket import ticket_json
from bench.wrk import run_wrk
from extauthz.audit.keys import generate
from extauthz.config import AegisConfig
from extauthz.devtokens import mint_token
from extauthz.supervisor import envoy_binary

CALLS = ("slack", "crm", "refund")
SIDES = ("base", "candidate")
WARMUP_S = 2.0
TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class Side:
    name: str
    checkout: Path
    config: AegisConfig
    target: Target
    service_pid: int
    envoy_pid: int
    token: str


@dataclass(frozen=True)
class Round:
    """One wrk run through one side: throughput, latency (ms) and CPU per call (µs)."""

    rps: float
    p50_ms: float
    p99_ms: float
    envoy_us: float
    service_us: float
    ext_proc_messages: float
    errors: int
    # The hypervisor's share of the run (percent of the machine's CPU time it gave to other
    # guests): a round that lost the host's CPU is slow for a reason that is not either side.
    steal_pct: float = 0.0

    FIELDS = ("rps", "p50_ms", "p99_ms", "envoy_us", "service_us", "ext_proc_messages", "steal_pct")
    # Compared between the sides: what was measured, and the service's CPU per Envoy CPU.
    COMPARED = ("rps", "p50_ms", "p99_ms", "envoy_us", "service_us", "service_per_envoy")

    @property
    def service_per_envoy(self) -> float:
        """The service's CPU per call over its Envoy's.  From one minute to the next every
        process's CPU per call moves together on this machine (by up to 40 %, with no steal),
        and both sides' Envoys do the same work: this ratio varies two to three times less between
        runs than the service's CPU alone (docs/performance.md, "Why rounds differ").  It says
        nothing when the change alters Envoy's own work."""
        return self.service_us / self.envoy_us if self.envoy_us else 0.0


@dataclass
class Outcome:
    rounds: dict[str, list[Round]] = field(default_factory=lambda: {side: [] for side in SIDES})
    base_native: list[str] = field(default_factory=list)  # the base's own compiled extensions

    def medians(self, side: str) -> dict[str, float]:
        names = dict.fromkeys((*Round.FIELDS, *Round.COMPARED))
        return {name: statistics.median(getattr(r, name) for r in self.rounds[side]) for name in names}

    def paired(self) -> dict[str, dict[str, float]]:
        """Per compared field, the median over rounds of candidate / base within the same
        round, and in how many rounds the candidate was better (higher RPS, lower the rest)."""
        pairs = list(zip(self.rounds["base"], self.rounds["candidate"], strict=False))
        found: dict[str, dict[str, float]] = {}
        for name in Round.COMPARED:
            ratios = [getattr(c, name) / getattr(b, name) for b, c in pairs if getattr(b, name)]
            if not ratios:
                continue
            better = sum(1 for r in ratios if (r > 1 if name == "rps" else r < 1))
            found[name] = {"ratio": statistics.median(ratios), "won": better, "rounds": len(ratios)}
        return found


@contextmanager
def base_checkout(revision: str, workdir: Path) -> Iterator[Path]:
    """``revision`` in a detached worktree under ``workdir``, removed afterwards."""
    path = workdir / "base-checkout"
    git = ["git", "-C", str(REPO)]
    added = subprocess.run(
        [*git, "worktree", "add", "--detach", str(path), revision], capture_output=True, text=True, check=False
    )
    if added.returncode != 0:
        raise BenchError(f"cannot check out {revision}: {added.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], capture_output=True, check=False)


# The compiled extensions: crate directory → the package its wheel installs.
NATIVE_CRATES = {"extauthz/native": "aegis_grpc_front", "dlp/native": "aegis_dlp_native"}


def base_native(revision: str, checkout: Path, workdir: Path, progress: Any) -> Path | None:
    """The base's compiled extensions, where its Rust differs from the working tree's, in a
    directory to put first on the base service's ``PYTHONPATH`` (None: nothing differs)."""
    changed = [crate for crate in NATIVE_CRATES if _differs(revision, crate)]
    if not changed:
        return None
    packages = workdir / "base-native"
    maturin = Path(sys.executable).with_name("maturin")
    for crate in changed:
        progress(f"building the base's {crate} (its Rust differs from the working tree's)")
        wheels = workdir / "wheels" / NATIVE_CRATES[crate]
        env = {**os.environ, "CARGO_TARGET_DIR": str(REPO / ".aegis" / "ab-target" / NATIVE_CRATES[crate])}
        argv = [str(maturin), "build", "--release", "--quiet", "-m", str(checkout / crate / "Cargo.toml")]
        built = subprocess.run(
            [*argv, "-o", str(wheels), "--interpreter", sys.executable], env=env, capture_output=True, text=True
        )
        if built.returncode != 0:
            raise BenchError(f"cannot build the base's {crate}: {built.stderr.strip()[-400:]}")
        [wheel] = wheels.glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(packages)
    return packages


def _differs(revision: str, path: str) -> bool:
    """Whether ``path`` in the working tree (committed or not) differs from ``revision``."""
    diff = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", revision, "--", path], check=False)
    return diff.returncode != 0


def start_side(
    group: ProcessGroup,
    name: str,
    checkout: Path,
    workdir: Path,
    upstream: str,
    native: Path | None = None,
    python: str = sys.executable,
    decision_log: bool = False,
) -> Side:
    """One side: its config (with the signed decision log when ``decision_log``), its service
    from ``checkout`` on the interpreter ``python`` (with ``native``'s compiled extensions
    first on its path, when given), its Envoy on the bootstrap that ``checkout``'s code
    renders for that config."""
    side_dir = workdir / name
    side_dir.mkdir(parents=True, exist_ok=True)
    policies = bench_policy_dir(side_dir / "policies")
    config = write_aegis_config(side_dir, upstream, policy_dir=policies, hosts=(TOOL_HOST, SLACK_HOST, CRM_HOST))
    if decision_log:
        add_decision_log(config.path)
    bootstrap = side_dir / "envoy.yaml"
    rendered = subprocess.run(
        [sys.executable, "-m", "extauthz.cli", "envoy-config", "-c", str(config.path), "-o", str(bootstrap)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    if rendered.returncode != 0:
        raise BenchError(f"{name}: aegis envoy-config failed: {rendered.stderr.strip()[-400:]}")
    env = {**os.environ, "PYTHONPATH": str(native)} if native is not None else None
    argv = [python, "-m", "extauthz.cli", "serve", "-c", str(config.path)]
    service = group.spawn(f"{name}-service", argv, cwd=checkout, env=env)
    wait_ready(service, f"http://{config.service.http}/readyz", lambda r: r.status_code == 200)
    binary = envoy_binary(config)
    argv = [binary, "-c", str(bootstrap), "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"]
    envoy = group.spawn(f"{name}-envoy", argv)
    admin = config.envoy.admin
    wait_ready(envoy, f"http://{admin}/ready", lambda r: r.status_code == 200 and r.text.strip() == "LIVE")
    token = mint_token(config.identity, agent="bench-bot", tenant="acme", scopes=SCOPES, ttl_s=TOKEN_TTL_S)
    target = Target(name, config.envoy.listen, admin)
    return Side(name, checkout, config, target, service.process.pid, envoy.process.pid, token)


def add_decision_log(config_path: Path) -> None:
    """``audit`` in this aegis.yaml: a log next to it, signed with a key made for it."""
    generate(config_path.parent / "keys" / "audit.pem")
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw["audit"] = {"path": str(config_path.parent / "decisions.jsonl"), "signing_key": "keys/audit.pem"}
    config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")


def expect_ok(side: Side, call: str) -> None:
    """The call answers 200 through ``side`` (Envoy health-checks the service first)."""
    request = requests(side.token)[call]
    deadline = time.monotonic() + 15
    while True:
        response = httpx.request(
            request.method, side.target.url + request.path, content=request.body or None, headers=request.headers
        )
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{side.name}: {call} answered {response.status_code}: {response.text[:200]}")
        time.sleep(0.2)


def measure(side: Side, call: str, connections: int, duration_s: float, workdir: Path) -> Round:
    request = requests(side.token)[call]
    messages_before = ext_counters(side.target, "ext_proc.").get("ext_proc.stream_msgs_sent", 0)
    service_before, envoy_before = cpu_seconds(side.service_pid), cpu_seconds(side.envoy_pid)
    machine_before = MachineCpu.read()
    result = run_wrk(side.target.url, request, connections, duration_s, workdir)
    service_after, envoy_after = cpu_seconds(side.service_pid), cpu_seconds(side.envoy_pid)
    steal_pct = MachineCpu.read().steal_pct_since(machine_before)
    messages = ext_counters(side.target, "ext_proc.").get("ext_proc.stream_msgs_sent", 0) - messages_before
    calls = max(result.requests, 1)
    return Round(
        rps=result.rps,
        p50_ms=result.latency_us["p50"] / 1000,
        p99_ms=result.latency_us["p99"] / 1000,
        envoy_us=(envoy_after - envoy_before) / calls * 1e6,
        service_us=(service_after - service_before) / calls * 1e6,
        ext_proc_messages=messages / calls,
        errors=result.error_count,
        steal_pct=steal_pct,
    )


def run(args: argparse.Namespace, workdir: Path, progress: Any) -> Outcome:
    outcome = Outcome()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with base_checkout(args.base, workdir) as checkout, ProcessGroup(logs) as group:
        upstream = Target("upstream", loopback(), loopback())
        native = base_native(args.base, checkout, workdir, progress)
        if native is not None:
            outcome.base_native = sorted(p.name for p in native.iterdir() if p.name in NATIVE_CRATES.values())
        sides = [
            start_side(group, "base", checkout, workdir, upstream.listen, native, args.base_python, args.decision_log),
            start_side(group, "candidate", REPO, workdir, upstream.listen, decision_log=args.decision_log),
        ]
        bodies = {SLACK_PATH: ticket_json(), "/tenants/": ticket_json()}
        start_upstream(group, upstream, bodies, envoy_binary(sides[0].config))
        for side in sides:
            expect_ok(side, args.call)
            run_wrk(side.target.url, requests(side.token)[args.call], args.connections, WARMUP_S, workdir)
        for index in range(args.rounds):
            for side in sides if index % 2 == 0 else sides[::-1]:
                measured = measure(side, args.call, args.connections, args.duration, workdir)
                outcome.rounds[side.name].append(measured)
                progress(f"round {index + 1} {side.name:9s} {_row(measured)}")
    return outcome


def start_upstream(group: ProcessGroup, upstream: Target, bodies: dict[str, str], binary: str) -> None:
    """The tool both sides call: an Envoy answering fixed bodies."""
    path = group.log_dir / "upstream.envoy.yaml"
    bootstrap = upstream_bootstrap(upstream.listen, upstream.admin, bodies)
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False), encoding="utf-8")
    argv = [binary, "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"]
    child = group.spawn("upstream", argv)
    wait_ready(child, f"http://{upstream.admin}/ready", lambda r: r.status_code == 200)


def _row(r: Round) -> str:
    return (
        f"{r.rps:7.0f} RPS  P50 {r.p50_ms:6.2f}  P99 {r.p99_ms:6.2f} ms  "
        f"Envoy {r.envoy_us:5.0f} µs  service {r.service_us:5.0f} µs  ext_proc msgs {r.ext_proc_messages:.2f}  "
        f"steal {r.steal_pct:4.1f} %"
    )


def table(outcome: Outcome) -> str:
    base, candidate = outcome.medians("base"), outcome.medians("candidate")
    lines = [
        "| side | RPS | P50 ms | P99 ms | Envoy µs/call | service µs/call | service / Envoy CPU"
        " | ext_proc msgs/call | steal % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, med in (("base", base), ("candidate", candidate)):
        cells = [f"{med['rps']:,.0f}", f"{med['p50_ms']:.2f}", f"{med['p99_ms']:.2f}"]
        cells += [f"{med['envoy_us']:.0f}", f"{med['service_us']:.0f}", f"{med['service_per_envoy']:.3f}"]
        cells += [f"{med['ext_proc_messages']:.2f}", f"{med['steal_pct']:.1f}"]
        lines.append(f"| {name} (median) | " + " | ".join(cells) + " |")
    ratios = [_ratio(candidate, base, key) for key in Round.COMPARED]
    lines.append("| candidate / base, of the medians | " + " | ".join(ratios) + " | | |")
    paired = outcome.paired()
    cells = [
        f"{paired[key]['ratio']:.2f}x ({paired[key]['won']:.0f}/{paired[key]['rounds']:.0f})" if key in paired else "—"
        for key in Round.COMPARED
    ]
    lines.append("| candidate / base, paired by round (rounds better) | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def _ratio(candidate: dict[str, float], base: dict[str, float], key: str) -> str:
    return f"{candidate[key] / base[key]:.2f}x" if base[key] else "—"


def report(args: argparse.Namespace, outcome: Outcome, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": " ".join(["python -m bench.ab", *sys.argv[1:]]),
        "base": args.base,
        "base_commit": _commit(args.base),
        "candidate_commit": _commit("HEAD"),
        "candidate_dirty": bool(_git("status", "--porcelain")),
        "base_native": outcome.base_native,
        "python": {"base": interpreter(args.base_python), "candidate": interpreter(sys.executable)},
        "call": args.call,
        "decision_log": args.decision_log,
        "connections": args.connections,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "machine": machine(),
        **context,
        "medians": {side: outcome.medians(side) for side in SIDES},
        "paired": outcome.paired(),
        "runs": {side: [r.__dict__ for r in outcome.rounds[side]] for side in SIDES},
        "errors": {side: sum(r.errors for r in outcome.rounds[side]) for side in SIDES},
    }


def interpreter(python: str) -> dict[str, str]:
    """Which CPython ``python`` runs: the binary behind it and its build (``sys.version``)."""
    probe = "import os, sys; print(os.path.realpath(sys.executable)); print(sys.version)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False).stdout
    binary, _, build = out.partition("\n")
    return {"path": python, "binary": binary, "build": " ".join(build.split())}


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False).stdout.strip()


def _commit(revision: str) -> str:
    return _git("rev-parse", revision)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the git revision to compare the working tree against")
    parser.add_argument("--call", choices=CALLS, default="slack", help="bench.dlp_gateway's calls (default slack)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="runs per side, alternating (default 7)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument(
        "--base-python",
        default=sys.executable,
        help="the interpreter the base's service runs on, e.g. another venv's python (default: this one)",
    )
    parser.add_argument(
        "--decision-log", action="store_true", help="both sides write the signed decision log (audit.path)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "ab.json")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here (default: a deleted temp dir)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.connections < 1 or args.duration <= 0:
        parser.error("--rounds and --connections must be at least 1, --duration above 0")
    if shutil.which(args.base_python) is None:
        parser.error(f"--base-python: {args.base_python} is not an executable")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    load_before, started = os.getloadavg(), time.monotonic()
    try:
        with _workdir(args.workdir) as workdir:
            outcome = run(args, workdir, lambda line: print(f"[bench.ab] {line}", file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.ab: interrupted; every started process was stopped", file=sys.stderr)
        return 130
    print(table(outcome))
    context = {
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report(args, outcome, context), indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} ({context['wall_s']} s)", file=sys.stderr)
    errors = sum(r.errors for side in SIDES for r in outcome.rounds[side])
    if errors:
        print(f"bench.ab: {errors} errors in the runs (see the JSON)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
