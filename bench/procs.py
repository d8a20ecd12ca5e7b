"""Child processes of a benchmark run: started with logs to files, always stopped.

Children run in their own session so a Ctrl-C in the terminal reaches only the harness,
which then stops them in order (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import httpx

STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.05


class BenchError(RuntimeError):
    """The benchmark cannot (or must not) go on; the message says why."""


@dataclass
class Child:
    """One started process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ProcessGroup:
    """Processes started by the harness; a context manager that stops all of them on exit."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def spawn(self, name: str, argv: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Child:
        """Start ``argv`` with stdout and stderr to ``<log_dir>/<name>.log``; ``env`` is added
        to this process's environment."""
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        """SIGTERM every live child (last started first), then SIGKILL what is left."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.children.clear()

    def pid(self, name: str) -> int:
        """The process id of the child started as ``name``."""
        found = next((c.process.pid for c in self.children if c.name == name), None)
        if found is None:
            raise BenchError(f"no process named {name!r} was started")
        return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def total_cpu_seconds(pids: tuple[int, ...]) -> float:
    """CPU seconds of the processes of ``pids`` still alive."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(pid)
    return total


@dataclass(frozen=True)
class MachineCpu:
    """The machine's CPU time so far, in clock ticks (``/proc/stat``): all of it, and what
    the hypervisor gave to other guests while this one wanted to run (steal)."""

    total: int
    steal: int

    @classmethod
    def read(cls, stat: str | None = None) -> MachineCpu:
        text = Path("/proc/stat").read_text(encoding="ascii") if stat is None else stat
        # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
        ticks = [int(value) for value in text.split("\n", 1)[0].split()[1:9]]
        return cls(total=sum(ticks), steal=ticks[7])

    def steal_pct_since(self, before: MachineCpu) -> float:
        """Percent of the machine's CPU time stolen between ``before`` and this reading."""
        total = self.total - before.total
        return round(100 * (self.steal - before.steal) / total, 2) if total > 0 else 0.0


def wait_ready(child: Child, url: str, accept: Callable[[httpx.Response], bool]) -> None:
    """Poll ``url`` until ``accept`` says yes; BenchError if the child dies or time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise BenchError(
                f"{child.name} exited with code {child.process.returncode} while starting:\n{child.log_tail()}"
            )
        try:
            if accept(httpx.get(url, timeout=1.0)):
                return
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_S)
    raise BenchError(f"{child.name} not ready at {url} within {READY_TIMEOUT_S:.0f} s:\n{child.log_tail()}")


def raise_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks stop the children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
