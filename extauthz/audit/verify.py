"""``aegis audit verify``: is the decision log exactly what the writer wrote?

Checks, line by line across the given files (ordered by the ``seq`` of their first line):
every line is a sealed entry whose hash matches its bytes; ``prev_hash`` is the previous
line's hash and ``seq`` the next number (so a modified, deleted, inserted or reordered line
is found at that line); every file begins with a ``header`` that continues the previous
file; every checkpoint counts the entries so far, names the current head and carries a
valid Ed25519 signature from one of the given public keys.  Entries after the last
checkpoint are not yet signed: an error unless ``allow_unsigned_tail`` (a live log).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from extauthz.audit import chain


@dataclass
class VerifyResult:
    """What verification found; ``ok`` only if ``problems`` is empty."""

    entries: int = 0
    checkpoints: int = 0
    files: int = 0
    key_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    head: str = chain.GENESIS

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> str | None:
        return self.problems[0] if self.problems else None


def _first_seq(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            entry, _, _ = chain.unseal(fh.readline().rstrip(b"\n"))
        return int(entry.get("seq", 0))
    except (OSError, ValueError, TypeError):
        return -1


class _Verifier:
    def __init__(self, keys: dict[str, Ed25519PublicKey], result: VerifyResult) -> None:
        self.keys, self.result = keys, result
        self.prev: str | None = None  # None: no line seen yet (the first file may start mid-log)
        self.seq = 0
        self.last_checkpoint_at: str | None = None
        self.unsigned_since: str | None = None

    def fail(self, where: str, why: str) -> None:
        self.result.problems.append(f"{where}: {why}")

    def line(self, where: str, raw: bytes, first_in_file: bool) -> bool:
        """Check one line; False stops verification (later lines cannot be trusted)."""
        try:
            entry, stated, matches = chain.unseal(raw)
        except ValueError as exc:
            self.fail(where, f"not a decision-log entry ({exc})")
            return False
        if not matches:
            self.fail(where, "modified: the line's hash does not match its content")
            return False
        seq, prev = entry.get("seq"), entry.get("prev_hash")
        if self.prev is None:
            self.seq = seq if isinstance(seq, int) else 0
            if prev != chain.GENESIS:
                self.result.notes.append(f"{where}: the log starts at entry {seq} (earlier files not given)")
        elif prev != self.prev:
            self.fail(where, f"chain broken: prev_hash does not match the previous line (expected entry {self.seq})")
            return False
        if seq != self.seq:
            self.fail(where, f"entry {seq} where entry {self.seq} was expected (deleted, inserted or reordered)")
            return False
        kind = entry.get("type")
        if first_in_file and kind != "header":
            self.fail(where, "the file does not begin with a header line (lines deleted at its start?)")
            return False
        if not first_in_file and kind == "header":
            self.fail(where, "a header inside a file (lines inserted from another file?)")
            return False
        if kind == "checkpoint" and not self.checkpoint(where, entry):
            return False
        if kind != "checkpoint" and self.unsigned_since is None:
            self.unsigned_since = where
        self.prev, self.seq = stated, self.seq + 1
        self.result.entries += 1
        self.result.head = stated
        return True

    def checkpoint(self, where: str, entry: dict[str, Any]) -> bool:
        if entry.get("head") != self.prev or entry.get("count") != self.seq:
            self.fail(where, "checkpoint does not match the chain before it")
            return False
        if self.keys:
            problem = chain.verify_checkpoint(entry, self.keys)
            if problem:
                self.fail(where, problem)
                return False
        key_id = str(entry.get("key_id"))
        if key_id not in self.result.key_ids:
            self.result.key_ids.append(key_id)
        self.result.checkpoints += 1
        self.unsigned_since = None
        return True


def verify_files(
    paths: Sequence[Path], keys: Iterable[Ed25519PublicKey], *, allow_unsigned_tail: bool = False
) -> VerifyResult:
    """Verify the files as one log (see the module docstring); problems name ``file:line``."""
    key_map = {chain.key_fingerprint(k): k for k in keys}
    result = VerifyResult()
    verifier = _Verifier(key_map, result)
    for path in sorted(paths, key=_first_seq):
        result.files += 1
        try:
            data = path.read_bytes()
        except OSError as exc:
            verifier.fail(str(path), f"cannot read: {exc.strerror}")
            return result
        if data and not data.endswith(b"\n"):
            lines = data.split(b"\n")
            verifier.fail(f"{path}:{len(lines)}", "the last line is incomplete (a torn write)")
            return result
        if not data:
            verifier.fail(f"{path}:1", "empty file (a decision-log file starts with a header)")
            return result
        for number, raw in enumerate(data[:-1].split(b"\n"), start=1):
            if not verifier.line(f"{path}:{number}", raw, number == 1):
                return result
    if verifier.unsigned_since is not None:
        message = f"entries from {verifier.unsigned_since} on are after the last checkpoint (not signed yet)"
        if allow_unsigned_tail:
            result.notes.append(message)
        else:
            verifier.fail(verifier.unsigned_since, message + "; pass --allow-unsigned-tail for a live log")
    if result.checkpoints == 0 and not result.problems and not allow_unsigned_tail:
        verifier.fail(str(paths[0]) if paths else "(no files)", "no checkpoint: nothing is signed")
    if not key_map:
        result.notes.append("signatures not checked (no --key given; --chain-only)")
    return result
