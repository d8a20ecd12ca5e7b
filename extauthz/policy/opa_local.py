"""A throwaway local OPA for the policy CLI (``aegis policy test --engine opa|both``).

``opa run --server`` on a free loopback port, serving the bundle from a temporary file,
stopped when the ``with`` block ends.  The binary is ``$AEGIS_OPA``, ``.tools/bin/opa``
beside the project (scripts/install-opa.sh) or ``opa`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from extauthz.errors import PolicyError
from extauthz.policy.bundle import Bundle, write_bundle
from extauthz.ports import free_loopback_port

_READY_TIMEOUT_S = 15.0
_PROJECT_OPA = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "opa"


def find_opa() -> str:
    """The OPA binary; PolicyError saying how to install it when there is none."""
    for candidate in (os.environ.get("AEGIS_OPA"), str(_PROJECT_OPA), shutil.which("opa")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise PolicyError("the opa binary is not installed (run scripts/install-opa.sh, or set AEGIS_OPA)")


@contextmanager
def local_opa(bundle: Bundle) -> Iterator[str]:
    """Run OPA serving ``bundle``; yields its base URL."""
    binary = find_opa()
    with tempfile.TemporaryDirectory(prefix="aegis-opa-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        write_bundle(bundle, path)
        port = free_loopback_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "opa.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    "run",
                    "--server",
                    "--addr",
                    f"127.0.0.1:{port}",
                    "--log-level",
                    "error",
                    "--bundle",
                    str(path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(process, url, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(f"{url}/health", params={"bundles": "true"}).status_code == httpx.codes.OK:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    detail = log.read_text(errors="replace").strip()[-500:] or "no output"
    raise PolicyError(f"OPA did not start serving the bundle: {detail}")
