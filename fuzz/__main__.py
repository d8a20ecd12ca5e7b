"""Run the atheris harnesses: ``python -m fuzz <target>|all [--runs N] [--max-time S]``.

Each target runs in its own process (``python -m fuzz.<target>``, niced), with its seed
corpus ``fuzz/corpus/<target>/`` (read-only) and a working corpus and crash artifacts under
``--workdir`` (default ``.aegis/fuzz/``, git-ignored).  One summary line per target:
executions, seconds, and the crash artifact if the target broke its promise.  The exit
status is 0 only if every target ran clean.

    python -m fuzz all --runs 2000            # what `make test` runs (via tests/fuzz)
    python -m fuzz check --max-time 180       # the long run documented in docs/security.md
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz import TARGETS

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = HERE.parent / ".aegis" / "fuzz"
# libFuzzer options every run gets: a hang (10 s on one input) or 2 GiB of memory is a crash.
COMMON_OPTIONS = ("-timeout=10", "-rss_limit_mb=2048", "-max_len=4096", "-print_final_stats=1")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass(frozen=True)
class RunResult:
    """The outcome of one harness run."""

    target: str
    returncode: int
    executions: int
    seconds: float
    artifact: str | None
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.artifact is None

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"FAILED (exit {self.returncode}, artifact {self.artifact})"
        return f"{self.target:12} {self.executions:>9} executions {self.seconds:>7.1f} s  {verdict}"


def command(target: str, *, runs: int | None, max_time: int | None, workdir: Path, nice: int) -> list[str]:
    """The libFuzzer command line of one target."""
    corpus = workdir / "corpus" / target
    artifacts = workdir / "artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [*COMMON_OPTIONS, f"-artifact_prefix={artifacts}/"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if max_time is not None:
        args.append(f"-max_total_time={max_time}")
    dictionary = HERE / f"{target}.dict"
    if dictionary.exists():
        args.append(f"-dict={dictionary}")
    # New inputs go to the first corpus directory (the working one); the seeds stay as committed.
    seeds = HERE / "corpus" / target
    prefix = ["nice", "-n", str(nice)] if nice else []
    return [*prefix, sys.executable, "-m", f"fuzz.{target}", *args, str(corpus), str(seeds)]


def run(target: str, *, runs: int | None = None, max_time: int | None = None, workdir: Path = DEFAULT_WORKDIR,
        nice: int = 10) -> RunResult:
    """Run one harness to completion and parse libFuzzer's report."""
    started = time.monotonic()
    completed = subprocess.run(
        command(target, runs=runs, max_time=max_time, workdir=workdir, nice=nice),
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    output = completed.stdout + completed.stderr
    done = _DONE.search(output)
    progress = _PROGRESS.findall(output)  # a run that stopped on a crash prints no "Done"
    artifact = _ARTIFACT.search(output)
    return RunResult(
        target=target,
        returncode=completed.returncode,
        executions=int(done.group(1)) if done else int(progress[-1]) if progress else 0,
        seconds=time.monotonic() - started,
        artifact=artifact.group(1) if artifact else None,
        output=output,
    )


def crash_report(output: str) -> str:
    """The uncaught exception libFuzzer printed (or the output's tail if there is none)."""
    start = output.find("=== Uncaught Python exception")
    if start < 0:
        return output[-4000:]
    end = output.find("\n\n", start + 40)  # the traceback ends with a blank line
    return output[start : end if end > 0 else None][:8000]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--runs", type=int, help="stop after N executions (libFuzzer -runs)")
    parser.add_argument("--max-time", type=int, help="stop after S seconds (libFuzzer -max_total_time)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="working corpus and artifacts")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the fuzzing process (0: none)")
    args = parser.parse_args(argv)
    if args.runs is None and args.max_time is None:
        parser.error("give --runs or --max-time (a run without either never ends)")
    failed = False
    for target in TARGETS if args.target == "all" else (args.target,):
        result = run(target, runs=args.runs, max_time=args.max_time, workdir=args.workdir, nice=args.nice)
        if not result.ok:
            failed = True
            print(crash_report(result.output), file=sys.stderr)
        print(result.summary(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
