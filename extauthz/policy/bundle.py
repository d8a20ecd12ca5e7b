"""Stage 4 of the policy pipeline: package data + Rego into a standard OPA bundle.

Layout (``.tar.gz``), loadable by ``opa run --bundle`` and by the embedded engine::

    /.manifest                  {"revision": <policy_version>, "roots": ["aegis"]}
    /aegis/policy/data.json     generated from the YAML (data.aegis.policy)
    /<path>.rego                the Rego library and custom modules of the policy directory
    /.signatures.json           with a signing key: OPA's signature format (policy/signing.py)

``policy_version`` is a content hash of data and modules, so the same policies always give
the same version and any change gives a new one.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extauthz.errors import PolicyError
from extauthz.policy.generator import generate_data
from extauthz.policy.parser import load_policy_dir
from extauthz.policy.signing import SIGNATURES_FILE, SigningKey, VerificationKey, sign_files, verify_files

BUNDLE_ROOTS = ("aegis",)
DATA_PATH = "aegis/policy/data.json"
ENTRYPOINT = "aegis/decision"
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
_REQUIRED_MODULE = "package aegis\n"


@dataclass(frozen=True)
class Bundle:
    """An in-memory policy bundle: the generated data and the Rego modules by path."""

    data: Mapping[str, Any]
    modules: Mapping[str, str]
    revision: str

    @property
    def policy_version(self) -> str:
        return self.revision


def content_revision(data: Mapping[str, Any], modules: Mapping[str, str]) -> str:
    """A stable content hash of the bundle's data and modules."""
    digest = hashlib.sha256()
    digest.update(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    for path in sorted(modules):
        digest.update(b"\0" + path.encode() + b"\0" + modules[path].encode())
    return digest.hexdigest()[:16]


def build_bundle(policy_dir: Path) -> Bundle:
    """Compile a policy directory (YAML + ``*.rego``) into a Bundle."""
    data = generate_data(load_policy_dir(policy_dir))
    modules: dict[str, str] = {}
    for path in sorted(policy_dir.rglob("*.rego")):
        relative = path.relative_to(policy_dir).as_posix()
        try:
            modules[relative] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read Rego module: {exc}") from exc
    if not any(
        text.lstrip().startswith(_REQUIRED_MODULE) or f"\n{_REQUIRED_MODULE}" in text for text in modules.values()
    ):
        raise PolicyError(f"{policy_dir}: no Rego module declares 'package aegis' (expected lib/aegis/decision.rego)")
    return Bundle(data=data, modules=modules, revision=content_revision(data, modules))


def write_bundle(bundle: Bundle, output: Path, signing: SigningKey | None = None) -> None:
    """Write an OPA bundle ``.tar.gz`` (deterministic: fixed mtimes and order), signed in
    OPA's format (``/.signatures.json``) when a signing key is given."""
    files: dict[str, bytes] = {
        ".manifest": json.dumps({"revision": bundle.revision, "roots": list(BUNDLE_ROOTS)}, sort_keys=True).encode(),
        DATA_PATH: json.dumps(bundle.data, sort_keys=True, indent=1).encode(),
    }
    files.update({path: text.encode() for path, text in bundle.modules.items()})
    if signing is not None:
        files[SIGNATURES_FILE] = sign_files(files, signing)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo("/" + name)
            info.size = len(files[name])
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")
    tmp.write_bytes(raw.getvalue())
    tmp.replace(output)


def read_bundle(path: Path, verification_key: VerificationKey | None = None) -> Bundle:
    """Read an OPA bundle ``.tar.gz``; PolicyError on anything truncated or tampered, and,
    with a verification key, on a missing or invalid signature."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read bundle: {exc.strerror}") from exc
    return parse_bundle(blob, origin=str(path), verification_key=verification_key)


def parse_bundle(blob: bytes, origin: str, verification_key: VerificationKey | None = None) -> Bundle:
    """Parse an OPA bundle ``.tar.gz`` from memory; ``origin`` names it in errors."""
    path = origin
    if len(blob) > MAX_BUNDLE_BYTES:
        raise PolicyError(f"{path}: bundle larger than {MAX_BUNDLE_BYTES} bytes")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.lstrip("/")
                if ".." in Path(name).parts:
                    raise PolicyError(f"{path}: bundle entry {name!r} escapes the bundle")
                handle = tar.extractfile(member)
                if handle is not None:
                    files[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise PolicyError(f"{path}: not a readable bundle (truncated or corrupt): {exc}") from exc
    if verification_key is not None:
        verify_files(files, verification_key, origin)
    try:
        manifest = json.loads(files[".manifest"])
        data = json.loads(files[DATA_PATH])
        modules = {name: content.decode() for name, content in files.items() if name.endswith(".rego")}
    except (KeyError, ValueError) as exc:
        raise PolicyError(f"{path}: bundle lacks a valid .manifest or {DATA_PATH}") from exc
    revision = manifest.get("revision") if isinstance(manifest, dict) else None
    if not isinstance(revision, str) or revision != content_revision(data, modules):
        raise PolicyError(f"{path}: bundle revision does not match its content (tampered or hand-edited)")
    return Bundle(data=data, modules=modules, revision=revision)
