"""Signed bundles in OPA's format: the real OPA accepts ours; we refuse what OPA would refuse."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from helpers import POLICIES, copy_policy_dir
from opa_server import opa_binary

from extauthz.cli import main
from extauthz.errors import PolicyError
from extauthz.policy import build_bundle, read_bundle, write_bundle
from extauthz.policy.signing import (
    SIGNATURES_FILE,
    canonical_json,
    load_signing_key,
    load_verification_key,
)


def keypair(tmp_path: Path, kind: str = "ec") -> tuple[Path, Path]:
    key = {
        "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    private, public = tmp_path / f"{kind}.pem", tmp_path / f"{kind}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


# Reasons with characters a naive canonical JSON gets wrong (HTML escaping, non-ASCII, U+2028).
TRICKY = (
    (POLICIES / "support.yaml")
    .read_text()
    .replace(
        "reason: refund of {amount} exceeds the limit of 500",
        'reason: "refund <{amount}> & more > 500 — café \\u2028 end"',
    )
)


@pytest.fixture
def tricky_dir(tmp_path: Path) -> Path:
    return copy_policy_dir(tmp_path / "policies", TRICKY)


def rewrite(path: Path, change) -> None:
    """Rewrite a bundle's files through ``change(files)`` (an attacker with write access)."""
    with tarfile.open(path, "r:gz") as tar:
        files = {m.name.lstrip("/"): tar.extractfile(m).read() for m in tar if m.isfile()}
    change(files)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo("/" + name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path.write_bytes(raw.getvalue())


@pytest.mark.opa
@pytest.mark.parametrize(("kind", "alg"), [("ec", "ES256"), ("rsa", "RS256"), ("rsa", "PS256")])
def test_opa_accepts_bundles_signed_by_aegis_policy_build(tmp_path, tricky_dir, start_opa, kind, alg):
    private, public = keypair(tmp_path, kind)
    bundle_path = tmp_path / "bundle.tar.gz"
    args = ["policy", "build", str(tricky_dir), "-o", str(bundle_path), "--signing-key", str(private)]
    assert main([*args, "--key-id", "k1", "--signing-alg", alg]) == 0
    server = start_opa(
        "--bundle", str(bundle_path), "--verification-key", str(public),
        "--verification-key-id", "k1", "--signing-alg", alg,
    )  # fmt: skip
    decision = server.client.post("/v1/data/aegis/decision", json={"input": {"tool": {"name": "x"}}}).json()
    assert decision["result"]["effect"] == "deny"
    assert (
        read_bundle(bundle_path, load_verification_key(public, "k1", alg)).revision == build_bundle(tricky_dir).revision
    )


@pytest.mark.opa
def test_opa_refuses_a_tampered_signed_bundle(tmp_path, tricky_dir):
    private, public = keypair(tmp_path)
    bundle_path = tmp_path / "bundle.tar.gz"
    write_bundle(build_bundle(tricky_dir), bundle_path, load_signing_key(private, "k1"))

    def tamper(files):
        files["lib/aegis/decision.rego"] += b"\n# harmless-looking edit\n"

    rewrite(bundle_path, tamper)
    result = subprocess.run(
        [opa_binary(), "eval", "--bundle", str(bundle_path), "--verification-key", str(public),
         "--verification-key-id", "k1", "--signing-alg", "ES256", "data.aegis.decision"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "digest mismatch" in result.stderr or "verification" in result.stderr
    with pytest.raises(PolicyError, match="does not match its signed hash"):
        read_bundle(bundle_path, load_verification_key(public, "k1"))


def test_canonical_json_matches_go_encoding():
    assert canonical_json({"b": [1, 2.5, "<&>"], "a": "é\u2028"}) == '{"a":"é\\u2028","b":[1,2.5,"<&>"]}'.encode()


@pytest.fixture
def signed(tmp_path, tricky_dir):
    private, public = keypair(tmp_path)
    path = tmp_path / "signed.tar.gz"
    write_bundle(build_bundle(tricky_dir), path, load_signing_key(private, "k1"))
    return path, load_verification_key(public, "k1")


def test_unsigned_bundles_are_refused_when_a_key_is_configured(tmp_path, signed):
    _, key = signed
    plain = tmp_path / "plain.tar.gz"
    write_bundle(build_bundle(POLICIES), plain)
    with pytest.raises(PolicyError, match="not signed"):
        read_bundle(plain, key)
    assert read_bundle(plain).revision  # without a key, signatures are not required


def test_a_signature_by_another_key_is_refused(tmp_path, signed):
    path, _ = signed
    (tmp_path / "other").mkdir()
    _, other_public = keypair(tmp_path / "other", "ec")
    with pytest.raises(PolicyError, match="signature does not verify"):
        read_bundle(path, load_verification_key(other_public, "k1"))


def test_a_wrong_key_id_is_refused(signed):
    path, key = signed
    with pytest.raises(PolicyError, match="key id 'k1', expected 'k2'"):
        read_bundle(path, type(key)(key.key, "k2", key.algorithm))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update({"extra.rego": b"package aegis.extra\n"}), "not covered by the signature"),
        (lambda f: f.pop("lib/aegis/decision.rego"), "missing from the bundle"),
        (lambda f: f.update({SIGNATURES_FILE: b"{}"}), "malformed"),
        (lambda f: f.update({SIGNATURES_FILE: json.dumps({"signatures": ["a.b.c"]}).encode()}), "does not verify"),
    ],
)
def test_tampering_is_refused(signed, change, message):
    path, key = signed
    rewrite(path, change)
    with pytest.raises(PolicyError, match=message):
        read_bundle(path, key)


def test_data_reformatted_keeps_its_canonical_hash(signed):
    """OPA hashes JSON canonically: re-indenting data.json is not tampering (same content)."""
    path, key = signed

    def reindent(files):
        files["aegis/policy/data.json"] = json.dumps(json.loads(files["aegis/policy/data.json"]), indent=4).encode()

    rewrite(path, reindent)
    assert read_bundle(path, key).revision


def test_hmac_and_ed25519_keys_are_not_offered(tmp_path):
    private, _ = keypair(tmp_path, "ed25519")
    with pytest.raises(PolicyError, match="Ed25519"):
        load_signing_key(private)
    ec_private, _ = keypair(tmp_path, "ec")
    with pytest.raises(PolicyError, match="does not fit this key"):
        load_signing_key(ec_private, algorithm="HS256")


def test_build_reports_a_bad_key_with_exit_1(tmp_path, capsys):
    (tmp_path / "key.pem").write_text("not a key")
    code = main(
        ["policy", "build", str(POLICIES), "-o", str(tmp_path / "b.tar.gz"), "--signing-key", str(tmp_path / "key.pem")]
    )
    assert code == 1
    assert "not a readable PEM private key" in capsys.readouterr().err
