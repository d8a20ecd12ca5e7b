"""Hot reload: new versions swap in, broken ones never replace a working one."""

from __future__ import annotations

import gc
import http.server
import threading
import time
from pathlib import Path

import pytest
from helpers import POLICIES, copy_policy_dir

from bench.policygen import write_policy_dir
from extauthz.authorizer import Authorizer, activate
from extauthz.config import load_config
from extauthz.identity import TokenVerifier, keyset_from_config
from extauthz.policy import build_bundle, write_bundle
from extauthz.reload import BundleFileSource, BundleServerSource, DirectorySource, PolicyReloader
from extauthz.telemetry import Metrics

SUPPORT = (POLICIES / "support.yaml").read_text()


@pytest.fixture
def authorizer(config_path: Path) -> Authorizer:
    config = load_config(config_path)
    verifier = TokenVerifier(config.identity, keyset_from_config(config.identity))
    return Authorizer(verifier, store=None, policy=None, base_url="http://x", max_body_bytes=1024)  # type: ignore[arg-type]


def failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("aegis_policy_load_failures_total") or 0.0


def test_directory_changes_are_picked_up_and_broken_ones_rejected(tmp_path, authorizer):
    directory = copy_policy_dir(tmp_path / "p", SUPPORT)
    metrics = Metrics()
    reloader = PolicyReloader(authorizer, DirectorySource(directory), metrics)
    first = reloader.reload(force=True)
    assert first is not None and authorizer.policy is first
    assert reloader.reload() is None  # nothing changed
    # A new version: the refund limit moves.
    (directory / "p0.yaml").write_text(SUPPORT.replace("lte: 50}", "lte: 60}"))
    second = reloader.reload()
    assert second is not None and second.version != first.version
    assert authorizer.policy is second
    # A broken version: rejected with file and line, the previous one keeps serving.
    (directory / "p0.yaml").write_text(
        SUPPORT.replace("effect: deny\n    reason: refund of", "effect: denied\n    reason: refund of")
    )
    assert reloader.reload() is None
    assert authorizer.policy is second
    assert "p0.yaml:" in reloader.status.last_error and "effect" in reloader.status.last_error
    assert failures(metrics) == 1
    assert metrics.registry.get_sample_value("aegis_policy_info", {"policy_version": second.version}) == 1
    # Fixed again: loads, error cleared.
    (directory / "p0.yaml").write_text(SUPPORT)
    assert reloader.reload() is not None
    assert reloader.status.last_error is None


def test_without_a_first_version_the_service_denies_and_says_why(tmp_path, authorizer):
    directory = copy_policy_dir(tmp_path / "p", "policy_set: [broken\n")
    reloader = PolicyReloader(authorizer, DirectorySource(directory), Metrics())
    assert reloader.reload(force=True) is None
    assert authorizer.policy is None
    assert "not valid YAML" in reloader.status.last_error


def test_bundle_file_truncated_or_tampered_is_rejected(tmp_path, authorizer):
    path = tmp_path / "bundle.tar.gz"
    write_bundle(build_bundle(POLICIES), path)
    reloader = PolicyReloader(authorizer, BundleFileSource(path), Metrics())
    good = reloader.reload(force=True)
    assert good is not None
    path.write_bytes(path.read_bytes()[:100])
    assert reloader.reload() is None
    assert authorizer.policy is good
    assert "truncated or corrupt" in reloader.status.last_error


class _BundleServer(http.server.ThreadingHTTPServer):
    body = b""
    etag = '"v1"'
    status = 200
    requests: list[str | None]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _BundleServer

    def do_GET(self) -> None:
        self.server.requests.append(self.headers.get("if-none-match"))
        if self.server.status == 200 and self.headers.get("if-none-match") == self.server.etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(self.server.status)
        self.send_header("etag", self.server.etag)
        self.send_header("content-length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bundle_server():
    server = _BundleServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_bundle_server_with_etag_and_bad_answers(tmp_path, authorizer, bundle_server):
    path = tmp_path / "b.tar.gz"
    write_bundle(build_bundle(POLICIES), path)
    bundle_server.body = path.read_bytes()
    url = f"http://127.0.0.1:{bundle_server.server_address[1]}/bundles/aegis.tar.gz"
    reloader = PolicyReloader(authorizer, BundleServerSource(url), Metrics())
    first = reloader.reload(force=True)
    assert first is not None
    assert reloader.reload() is None  # 304 Not Modified
    assert bundle_server.requests[-1] == '"v1"'
    # The server breaks: 500, then garbage; the last good bundle keeps serving.
    bundle_server.status = 500
    assert reloader.reload() is None
    assert "answered 500" in reloader.status.last_error
    bundle_server.status, bundle_server.body, bundle_server.etag = 200, b"garbage", '"v2"'
    assert reloader.reload() is None
    assert authorizer.policy is first
    # A new good bundle under a new ETag.
    directory = copy_policy_dir(tmp_path / "p", SUPPORT.replace("lte: 50}", "lte: 70}"))
    write_bundle(build_bundle(directory), path)
    bundle_server.body, bundle_server.etag = path.read_bytes(), '"v3"'
    second = reloader.reload()
    assert second is not None and second.version != first.version


def test_polling_thread_reloads_without_being_asked(tmp_path, authorizer):
    directory = copy_policy_dir(tmp_path / "p", SUPPORT)
    reloader = PolicyReloader(authorizer, DirectorySource(directory), Metrics(), interval_s=0.05)
    first = reloader.reload(force=True)
    reloader.start()
    try:
        (directory / "p0.yaml").write_text(SUPPORT.replace("lte: 50}", "lte: 55}"))
        deadline = time.monotonic() + 5
        while authorizer.policy is first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert authorizer.policy is not first
    finally:
        reloader.stop()


def test_bundle_source_with_a_verification_key_refuses_unsigned_bundles(tmp_path, authorizer):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from extauthz.config import PolicyConfig
    from extauthz.policy.signing import load_signing_key
    from extauthz.reload import source_for

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = tmp_path / "bundle.tar.gz"
    write_bundle(build_bundle(POLICIES), path, signing=load_signing_key(private))
    source = source_for(PolicyConfig(bundle=path, verification_key=public))
    reloader = PolicyReloader(authorizer, source, Metrics())
    signed = reloader.reload(force=True)
    assert signed is not None
    # Replaced by an unsigned bundle (e.g. someone bypassing the release pipeline): refused.
    directory = copy_policy_dir(tmp_path / "p", SUPPORT.replace("lte: 50}", "lte: 5000}"))
    write_bundle(build_bundle(directory), path)
    assert reloader.reload() is None
    assert authorizer.policy is signed
    assert "signature" in reloader.status.last_error.lower()


@pytest.fixture
def unfrozen_heap():
    """Tests that freeze the heap (as ``aegis serve`` does) give it back to the collector."""
    yield
    gc.unfreeze()


def _policy_dir(target: Path, which: str) -> Path:
    if which == "generated-200":
        return write_policy_dir(target, 200)
    texts = [SUPPORT] + ([(POLICIES / "delegation.yaml").read_text()] if which == "support+delegation" else [])
    return copy_policy_dir(target, *texts)


@pytest.mark.parametrize("which", ["support", "support+delegation", "generated-200"])
def test_a_replaced_policy_leaves_no_cyclic_garbage(tmp_path, which):
    # settle_heap freezes live objects; frozen objects are only freed by reference counting,
    # so a compiled policy must hold no reference cycles or each reload would leak one.
    directory = _policy_dir(tmp_path / "p", which)
    bundle = build_bundle(directory)
    gc.collect()
    gc.disable()
    try:
        policy = activate(bundle, "embedded")
        assert policy.engine.__class__.__name__ == "NativeEngine"
        del policy
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_serving_reloader_freezes_the_heap_after_each_swap(tmp_path, authorizer, unfrozen_heap):
    directory = copy_policy_dir(tmp_path / "p", SUPPORT)
    reloader = PolicyReloader(authorizer, DirectorySource(directory), Metrics(), freeze_heap=True)
    gc.unfreeze()
    assert reloader.reload(force=True) is not None
    frozen = gc.get_freeze_count()
    assert frozen > 0
    (directory / "p0.yaml").write_text(SUPPORT.replace("lte: 50}", "lte: 60}"))
    assert reloader.reload() is not None
    assert gc.get_freeze_count() > 0
    # Without the option (tests, tools) the heap is left alone.
    gc.unfreeze()
    plain = PolicyReloader(authorizer, DirectorySource(directory), Metrics())
    (directory / "p0.yaml").write_text(SUPPORT.replace("lte: 50}", "lte: 70}"))
    assert plain.reload(force=True) is not None
    assert gc.get_freeze_count() == 0
