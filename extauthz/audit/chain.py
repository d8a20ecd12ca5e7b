"""The hash chain and signed checkpoints of the decision log (pure functions, no I/O).

Every line of a decision-log file is one JSON object whose bytes are::

    <canonical JSON of the entry without "hash", minus its closing "}">,"hash":"<sha256 hex>"}

``hash`` is the SHA-256 of those canonical bytes (the line as written, with ``"hash"`` taken
off), and every entry carries ``prev_hash``, the hash of the entry before it, and ``seq``,
its position in the whole log (across rotated files).  Changing, deleting, inserting or
reordering a line therefore breaks the chain at that line.  Verification hashes the bytes as
they are in the file, never a re-serialisation, so a reformatted line is a modified line.

Entry types: ``header`` (the first line of every file; its ``prev_hash`` is the last hash of
the previous file), ``decision``, ``event`` (approval transitions) and ``checkpoint``: an
Ed25519 signature over ``CHECKPOINT_CONTEXT``, the chain head (the hash of the entry before
the checkpoint), the number of entries up to that head, and the key id.  A checkpoint is
itself chained, so removing it breaks the chain too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
FORMAT_VERSION = 1
CHECKPOINT_CONTEXT = b"aegis-audit-checkpoint/v1"
_HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{64})"\}$')


def canonical(entry: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8.

    orjson: 0.9 µs for a decision where ``json`` takes 7.6, the same bytes for what entries
    hold (floats may differ in form, ``1e16`` for ``1e+16``: verification hashes the bytes as
    written, never a re-serialisation).  ``json`` for what orjson refuses (integers beyond 64
    bits, keys that are not strings)."""
    try:
        return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def seal(entry: dict[str, Any], prev_hash: str, seq: int) -> tuple[bytes, str]:
    """The line to write for ``entry`` (without the newline) and its hash."""
    body = canonical({**entry, "prev_hash": prev_hash, "seq": seq})
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode() + b'"}', digest


def unseal(line: bytes) -> tuple[dict[str, Any], str, bool]:
    """Parse one written line: (entry, stated hash, whether the hash matches the bytes).

    Raises ValueError for a line that is not a sealed JSON object.
    """
    match = _HASH_TAIL.search(line)
    if match is None:
        raise ValueError("no trailing hash field")
    stated = match.group(1).decode()
    body = line[: match.start()] + b"}"
    entry = json.loads(body)
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    return entry, stated, hashlib.sha256(body).hexdigest() == stated


def checkpoint_message(head: str, count: int, key_id: str) -> bytes:
    """What a checkpoint signs: context, chain head, entry count, key id (newline-separated)."""
    return b"\n".join([CHECKPOINT_CONTEXT, head.encode(), str(count).encode(), key_id.encode()])


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex, 32 digits) of the raw public key: how a checkpoint names its key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def checkpoint_entry(head: str, count: int, key_id: str, key: Ed25519PrivateKey | None, now: str) -> dict[str, Any]:
    """A checkpoint entry; unsigned (``sig`` null) when no signing key is configured."""
    entry: dict[str, Any] = {"type": "checkpoint", "timestamp": now, "head": head, "count": count, "key_id": key_id}
    if key is None:
        entry.update(sig=None, key_fp=None)
    else:
        signature = key.sign(checkpoint_message(head, count, key_id))
        entry.update(sig=base64.b64encode(signature).decode(), key_fp=key_fingerprint(key.public_key()))
    return entry


def verify_checkpoint(entry: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> str | None:
    """None if the checkpoint's signature verifies with the key it names, else why not."""
    sig, fp = entry.get("sig"), entry.get("key_fp")
    if not isinstance(sig, str) or not isinstance(fp, str):
        return "checkpoint is not signed"
    key = keys.get(fp)
    if key is None:
        return f"checkpoint signed by an unknown key (key_id {entry.get('key_id')!r}, fingerprint {fp})"
    try:
        signature = base64.b64decode(sig, validate=True)
        key.verify(
            signature, checkpoint_message(str(entry.get("head")), int(entry.get("count", -1)), str(entry.get("key_id")))
        )
    except (InvalidSignature, ValueError, TypeError):
        return f"checkpoint signature does not verify (key_id {entry.get('key_id')!r})"
    return None
