"""Ed25519 keys for decision-log checkpoints: create, load (PEM, PKCS#8 / SubjectPublicKeyInfo)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from extauthz.audit.chain import key_fingerprint
from extauthz.errors import ConfigError


def public_path_for(private: Path) -> Path:
    """``keys/audit.pem`` → ``keys/audit.pub.pem``."""
    return private.with_name(private.name.removesuffix(".pem") + ".pub.pem")


def generate(private: Path, public: Path | None = None, *, overwrite: bool = False) -> tuple[Path, str]:
    """Create an Ed25519 key pair (private key mode 0600); returns the public path and fingerprint."""
    public = public or public_path_for(private)
    if private.exists() and not overwrite:
        raise ConfigError(f"{private} already exists (a new key id needs a new file; keep the old public key)")
    key = Ed25519PrivateKey.generate()
    private.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return public, key_fingerprint(key.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key; ConfigError naming the file when it is missing or not Ed25519."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(
            f"audit.signing_key: cannot read {path}: {exc.strerror} (create it: aegis audit keygen)"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"audit.signing_key: {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"audit.signing_key: {path} is not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A verification key (a private key file is accepted too: its public half is used)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc.strerror}") from exc
    try:
        key = load_pem_public_key(data)
    except ValueError:
        try:
            private = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not a PEM public key") from exc
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return key
