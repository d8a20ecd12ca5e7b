"""Hot reload: watch the policy source, compile new versions off the hot path, swap atomically.

Sources: a directory of YAML + Rego (rebuilt when any file changes), an OPA bundle file,
or a bundle server (OPA's bundle service protocol: ``GET`` with ``If-None-Match``; ``304``
means unchanged).  A new version is built and compiled in the reloader's thread, then
swapped into the Authorizer in one reference assignment: calls in flight finish on the
version they started with.  A broken version is rejected and the previous one keeps
serving; the failure shows in the log, ``/readyz`` detail and a metric.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from extauthz.authorizer import ActivePolicy, Authorizer, activate
from extauthz.config import PolicyConfig
from extauthz.errors import ConfigError, PolicyError
from extauthz.policy.bundle import Bundle, build_bundle, parse_bundle, read_bundle
from extauthz.policy.signing import DEFAULT_KEY_ID, VerificationKey, load_verification_key
from extauthz.telemetry import Metrics

log = logging.getLogger("aegis.policy")
BUNDLE_FETCH_TIMEOUT_S = 5.0
BUILD_TIMEOUT_S = 60.0
BUILD_NICENESS = 10


class Source(Protocol):
    """Where policy versions come from."""

    def changed(self) -> bool:
        """Cheap check: is there possibly a new version?"""
        ...

    def load(self) -> Bundle:
        """The current version (PolicyError if it is broken)."""
        ...


def _build_pool() -> ProcessPoolExecutor:
    """One spawned worker (fork does not survive the serving process's gRPC threads), at a
    lower CPU priority so that on a busy host a rebuild yields to the calls being served."""
    return ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=os.nice, initargs=(BUILD_NICENESS,)
    )


def _warm_up() -> None:
    import extauthz.policy.bundle  # noqa: F401 - the build's imports, done ahead of time


class DirectorySource:
    """YAML + Rego files; a change of any file's size or mtime means a rebuild.

    With ``isolate`` the build (YAML parsing, schema checks) runs in a separate process, so
    a reload never holds the interpreter lock the serving threads need; only the compiled
    result crosses back.
    """

    def __init__(self, directory: Path, *, isolate: bool = False) -> None:
        self._directory = directory
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._pool: ProcessPoolExecutor | None = None
        if isolate:
            self._pool = _build_pool()
            # Start the worker now (imports and all), not during the first reload under load.
            self._pool.submit(_warm_up)

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        files = []
        for path in sorted(self._directory.rglob("*")):
            if path.suffix in {".yaml", ".yml", ".rego"} and path.is_file():
                stat = path.stat()
                files.append((str(path.relative_to(self._directory)), stat.st_mtime_ns, stat.st_size))
        return tuple(files)

    def changed(self) -> bool:
        try:
            return self._fingerprint() != self._seen
        except OSError:
            return True  # let load() report what is wrong

    def load(self) -> Bundle:
        fingerprint = self._fingerprint()
        if self._pool is None:
            bundle = build_bundle(self._directory)
        else:
            try:
                bundle = self._pool.submit(build_bundle, self._directory).result(timeout=BUILD_TIMEOUT_S)
            except (BrokenProcessPool, TimeoutError) as exc:
                self.close()  # a fresh worker next time
                self._pool = _build_pool()
                raise PolicyError(f"{self._directory}: the policy build failed ({exc.__class__.__name__})") from exc
        self._seen = fingerprint
        return bundle

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class BundleFileSource:
    """An OPA bundle ``.tar.gz`` on disk (e.g. written by a CI job or a sidecar)."""

    def __init__(self, path: Path, verification_key: VerificationKey | None = None) -> None:
        self._path = path
        self._key = verification_key
        self._seen: tuple[int, int] | None = None

    def _stat(self) -> tuple[int, int]:
        stat = self._path.stat()
        return stat.st_mtime_ns, stat.st_size

    def changed(self) -> bool:
        try:
            return self._stat() != self._seen
        except OSError:
            return True

    def load(self) -> Bundle:
        try:
            stat = self._stat()
        except OSError as exc:
            raise PolicyError(f"{self._path}: cannot read bundle: {exc.strerror}") from exc
        bundle = read_bundle(self._path, verification_key=self._key)
        self._seen = stat
        return bundle


class BundleServerSource:
    """A bundle server: ``GET url`` with ``If-None-Match``; ``304`` means no new version."""

    def __init__(
        self, url: str, client: httpx.Client | None = None, verification_key: VerificationKey | None = None
    ) -> None:
        self._url = url
        self._key = verification_key
        self._client = client or httpx.Client(timeout=BUNDLE_FETCH_TIMEOUT_S)
        self._etag: str | None = None
        self._next_etag: str | None = None
        self._pending: bytes | None = None

    def changed(self) -> bool:
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            response = self._client.get(self._url, headers=headers)
        except httpx.HTTPError as exc:
            raise PolicyError(f"bundle server {self._url} unreachable: {exc.__class__.__name__}") from exc
        if response.status_code == 304:
            return False
        if response.status_code != 200:
            raise PolicyError(f"bundle server {self._url} answered {response.status_code}")
        self._pending = response.content
        self._next_etag = response.headers.get("etag")
        return True

    def load(self) -> Bundle:
        if self._pending is None and not self.changed():
            raise PolicyError(f"bundle server {self._url} has no new bundle")
        blob, self._pending = self._pending or b"", None
        bundle = parse_bundle(blob, origin=self._url, verification_key=self._key)
        self._etag = self._next_etag  # only a bundle that loaded moves the ETag on
        return bundle


def source_for(config: PolicyConfig) -> Source:
    """The Source named by the policy config (bundles verified when a key is configured)."""
    if config.dir is not None:
        return DirectorySource(config.dir, isolate=True)
    key = None
    if config.verification_key is not None:
        try:
            key = load_verification_key(config.verification_key, config.verification_key_id or DEFAULT_KEY_ID)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"policy.verification_key: cannot load {config.verification_key}: {exc}") from exc
    if config.bundle is not None:
        return BundleFileSource(config.bundle, key)
    return BundleServerSource(config.bundle_url, verification_key=key)


def settle_heap() -> None:
    """Collect, then move every live object out of the cyclic collector's reach.

    A full (generation 2) collection walks every tracked object: ~80k objects after start-up,
    30+ ms with the interpreter lock held, and a reload's burst of allocations is what
    triggers one.  Frozen objects are skipped by the collector but are still freed by
    reference counting, and compiled policies hold no reference cycles (a test proves it),
    so a replaced policy is freed the moment it is swapped out.  Collecting first means no
    pending cyclic garbage is frozen with the live objects.
    """
    gc.collect()
    gc.freeze()


def _close_engine(policy: ActivePolicy | None) -> None:
    """Release the replaced engine's resources (the OPA engine's HTTP client).  Calls still
    running on it finish first: closing an httpx client lets in-flight requests complete."""
    close = getattr(policy.engine, "close", None) if policy is not None else None
    if callable(close):
        close()


@dataclass
class ReloadStatus:
    """What /readyz and /v1/policy report about loading."""

    last_error: str | None = None
    last_attempt_at: float | None = None
    failures: int = 0
    reloads: int = 0


class PolicyReloader:
    """Loads the first version and keeps the Authorizer on the newest good one."""

    def __init__(
        self,
        authorizer: Authorizer,
        source: Source,
        metrics: Metrics,
        *,
        engine: str = "embedded",
        engine_options: Mapping[str, Any] | None = None,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        freeze_heap: bool = False,
    ) -> None:
        self._authorizer = authorizer
        self._source = source
        self._metrics = metrics
        self._engine = engine
        self._engine_options = dict(engine_options or {})
        self._interval_s = interval_s
        self._clock = clock
        # Only the serving process freezes its heap (see settle_heap); tests and tools do not.
        self._freeze_heap = freeze_heap
        self._lock = threading.Lock()  # one load at a time (poller vs POST /v1/policy/reload)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status = ReloadStatus()

    def reload(self, *, force: bool = False) -> ActivePolicy | None:
        """Load a new version if there is one; returns it, or None (unchanged or failed)."""
        with self._lock:
            self.status.last_attempt_at = self._clock()
            try:
                if not force and self._authorizer.policy is not None and not self._source.changed():
                    return None
                bundle = self._source.load()
                current = self._authorizer.policy
                if current is not None and bundle.revision == current.version:
                    self.status.last_error = None
                    return None
                policy = activate(bundle, self._engine, **self._engine_options)
            except PolicyError as exc:
                self._failed(exc.message)
                return None
            except Exception as exc:
                self._failed(f"unexpected {exc.__class__.__name__} while loading the policy")
                return None
            previous = self._authorizer.policy
            self._authorizer.swap_policy(policy)
            _close_engine(previous)
            previous_version = previous.version if previous is not None else None
            del previous  # freed here unless a call in flight still holds it
            if self._freeze_heap:
                settle_heap()
            self.status.last_error = None
            self.status.reloads += 1
            if previous_version is not None:
                self._metrics.policy_info.remove(previous_version)
            self._metrics.policy_info.labels(policy.version).set(1)
            log.info(
                "policy loaded",
                extra={"aegis": {"policy_version": policy.version, "previous": previous_version}},
            )
            return policy

    def _failed(self, message: str) -> None:
        self.status.last_error = message
        self.status.failures += 1
        self._metrics.policy_load_failures.inc()
        current = self._authorizer.policy
        log.error(
            "policy rejected; the previous version keeps serving" if current else "policy rejected; denying every call",
            extra={"aegis": {"error": message, "policy_version": current.version if current else None}},
        )

    def start(self) -> None:
        """Poll the source in a background thread (no-op when the interval is 0)."""
        if self._interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="aegis-policy-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.reload()

    def stop(self) -> None:
        """Stop polling and close the source; a second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        close = getattr(self._source, "close", None)
        if callable(close):
            close()
