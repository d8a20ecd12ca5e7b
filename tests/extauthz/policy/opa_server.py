"""A real OPA server for tests (``opa run --server``), and where its binary is.

The binary is ``.tools/bin/opa`` (scripts/install-opa.sh) or ``opa`` on PATH.  Without it
the OPA tests are skipped with the reason — except under CI (env ``CI`` set), where a
missing OPA is a failure: the conformance claim "every engine agrees" must not silently
shrink.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from helpers import REPO, free_port

from extauthz.policy.bundle import DATA_PATH, Bundle


def opa_binary() -> str:
    """The OPA binary, or skip (fail under CI) with the reason."""
    local = REPO / ".tools" / "bin" / "opa"
    found = str(local) if local.exists() else shutil.which("opa")
    if found is None:
        reason = "the opa binary is missing (run scripts/install-opa.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the OPA tests must run")
        pytest.skip(reason)
    return found


class OpaServer:
    """``opa run --server`` on a free loopback port; stopped by ``stop()``."""

    def __init__(self, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{self.port}", "--log-level", "error", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = log
        self.client = httpx.Client(base_url=self.url, timeout=5)

    def wait_ready(self, timeout: float = 15.0) -> OpaServer:
        """Until ``/health?bundles`` answers 200 (bundles activated); fails with OPA's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if self.client.get("/health", params={"bundles": "true"}).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"OPA did not become ready: {self.log_path.read_text()[-2000:]}")

    def load(self, bundle: Bundle) -> None:
        """Activate a bundle through the REST API, the way OPA's bundle plugin would.

        Modules and data go in with ``PUT /v1/policies`` and ``PUT /v1/data``, then the
        manifest at ``data.system.bundles.aegis`` — where OPA keeps activated bundles'
        manifests, so decisions report its revision in ``provenance.bundles`` exactly as
        for a bundle loaded with ``--bundle``.  Milliseconds, against a second or more for
        OPA's bundle polling: fast enough for one bundle per hypothesis example.
        """
        self._check(self.client.delete("/v1/data/system/bundles/aegis"), 204, 404)
        loaded = {p["id"] for p in self._check(self.client.get("/v1/policies"), 200).json().get("result", [])}
        for stale in loaded - set(bundle.modules):
            self._check(self.client.delete(f"/v1/policies/{stale}"), 200)
        for path, text in sorted(bundle.modules.items()):
            self._check(self.client.put(f"/v1/policies/{path}", content=text.encode()), 200)
        data_url = "/v1/data/" + DATA_PATH.removesuffix("/data.json")
        self._check(self.client.put(data_url, content=json.dumps(bundle.data).encode()), 204)
        manifest = {"revision": bundle.revision, "roots": ["aegis"]}
        self._check(self.client.put("/v1/data/system/bundles/aegis/manifest", json=manifest), 204)

    @staticmethod
    def _check(response: httpx.Response, *expected: int) -> httpx.Response:
        assert response.status_code in expected, f"OPA answered {response.status_code}: {response.text}"
        return response

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
