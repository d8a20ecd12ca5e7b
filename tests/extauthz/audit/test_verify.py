"""``aegis audit verify``: every kind of tampering is found, at the first bad file:line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_record
from hypothesis import given, settings
from hypothesis import strategies as st

from extauthz.audit import chain
from extauthz.audit.writer import DecisionLog
from extauthz.cli import main


@pytest.fixture
def log_file(open_log: Callable[..., DecisionLog], tmp_path: Path) -> Path:
    log = open_log(checkpoint_every=4, key_id="k1")
    for n in range(10):
        log(make_record(n, args={"amount": n}))
    log.close()
    return tmp_path / "decisions.jsonl"


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", *args])
    return code, capsys.readouterr().out


def _rewrite(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"".join(line + b"\n" for line in edit(lines)))


def test_an_untouched_log_verifies(
    log_file: Path, signing_key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _verify(capsys, str(log_file), "--key", str(signing_key[1]))
    assert code == 0 and out.startswith("OK: 14 entries in 1 file(s), 3 signed checkpoint(s) (key ids: k1)")


def _modify(lines: list[bytes]) -> list[bytes]:
    lines[3] = lines[3].replace(b'"amount":2', b'"amount":9')
    return lines


def _modify_and_rehash(lines: list[bytes]) -> list[bytes]:
    # an attacker who recomputes the line's own hash still breaks the next line's prev_hash
    entry, _, _ = chain.unseal(lines[3])
    entry["status"] = 403
    entry.pop("prev_hash"), entry.pop("seq")
    lines[3], _ = chain.seal(entry, json.loads(lines[2])["hash"], 3)
    return lines


def _forge_checkpoint(lines: list[bytes]) -> list[bytes]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    entry, _, _ = chain.unseal(lines[4])
    assert entry["type"] == "checkpoint"
    prev, seq = entry.pop("prev_hash"), entry.pop("seq")
    forged = chain.checkpoint_entry(
        entry["head"], entry["count"], "k1", Ed25519PrivateKey.generate(), entry["timestamp"]
    )
    forged["key_fp"] = entry["key_fp"]  # claims to be the real key
    lines[4], new_hash = chain.seal(forged, prev, seq)
    next_entry, _, _ = chain.unseal(lines[5])
    next_entry.pop("seq"), next_entry.pop("prev_hash")
    lines[5], _ = chain.seal(next_entry, new_hash, seq + 1)
    return lines


@pytest.mark.parametrize(
    ("edit", "line", "why"),
    [
        (_modify, 4, "modified"),
        (_modify_and_rehash, 5, "chain broken"),
        (lambda ls: ls[:2] + ls[3:], 3, "chain broken"),  # deleted
        (lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], 3, "chain broken"),  # reordered
        (lambda ls: ls[:3] + [ls[1]] + ls[3:], 4, "chain broken"),  # inserted (a copy)
        (lambda ls: ls[1:], 1, "does not begin with a header"),  # head deleted
        (lambda ls: ls[:-1], 11, "after the last checkpoint"),  # final checkpoint removed
        (_forge_checkpoint, 5, "signature does not verify"),
    ],
    ids=[
        "modified",
        "modified-rehashed",
        "deleted",
        "reordered",
        "inserted",
        "head-deleted",
        "tail-checkpoint",
        "forged",
    ],
)
def test_tampering_is_found_at_the_first_bad_line(
    log_file: Path,
    signing_key: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[list[bytes]], list[bytes]],
    line: int,
    why: str,
) -> None:
    _rewrite(log_file, edit)
    code, out = _verify(capsys, str(log_file), "--key", str(signing_key[1]))
    assert code == 1
    assert out.startswith(f"FAILED at {log_file}:{line}: "), out
    assert why in out


def test_a_wrong_key_fails_and_chain_only_passes(
    log_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from extauthz.audit.keys import generate

    other, _ = generate(tmp_path / "other.pem")
    code, out = _verify(capsys, str(log_file), "--key", str(other))
    assert code == 1 and "unknown key" in out
    code, out = _verify(capsys, str(log_file), "--chain-only")
    assert code == 0


def test_a_torn_last_line_is_reported(
    log_file: Path, signing_key: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    log_file.write_bytes(log_file.read_bytes() + b'{"type":"deci')
    code, out = _verify(capsys, str(log_file), "--key", str(signing_key[1]))
    assert code == 1 and f"{log_file}:15" in out and "incomplete" in out


def test_keygen_from_config(tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = config_path.read_text() + "audit:\n  path: decisions.jsonl\n  signing_key: keys/audit.pem\n"
    config_path.write_text(text)
    assert main(["audit", "keygen", "-c", str(config_path)]) == 0
    assert (config_path.parent / "keys" / "audit.pem").stat().st_mode & 0o077 == 0
    assert (config_path.parent / "keys" / "audit.pub.pem").exists()
    assert main(["audit", "keygen", "-c", str(config_path)]) == 2  # never overwrites a key


def test_fingerprint_is_of_the_raw_public_key(signing_key: tuple[Path, Path]) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from extauthz.audit.keys import load_public

    key = load_public(signing_key[1])
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert chain.key_fingerprint(key) == hashlib.sha256(raw).hexdigest()[:32]


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
def test_canonical_bytes_seal_and_verify_whatever_an_entry_holds(entry: dict[str, Any]) -> None:
    """orjson writes the canonical bytes (``json`` for integers beyond 64 bits): sorted keys,
    no spaces, UTF-8; the sealed line unseals to the same document and its hash verifies."""
    body = chain.canonical(entry)
    assert body == chain.canonical(dict(reversed(list(entry.items()))))  # key order does not matter
    assert json.loads(body) == entry
    line, digest = chain.seal({**entry, "type": "decision"}, chain.GENESIS, 7)
    unsealed, stated, ok = chain.unseal(line)
    assert ok and stated == digest and unsealed["seq"] == 7 and unsealed["type"] == "decision"
