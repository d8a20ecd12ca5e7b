"""SQLite store: the single-node default (WAL mode, one connection guarded by a lock)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from extauthz.errors import StoreError
from extauthz.store import PendingApproval

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    chain TEXT NOT NULL,
    tool TEXT NOT NULL,
    args_summary TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    approvers TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at REAL,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (agent_id, fingerprint, state);
"""
_COLUMNS = (
    "id, agent_id, tenant, chain, tool, args_summary, fingerprint, rule, reason, policy_version, "
    "approvers, created_at, expires_at, state, decided_by, decided_at, comment"
)


class SqliteStore:
    """Approvals in one SQLite file."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store at {path}: {exc}") from exc
        self._lock = threading.Lock()

    def create_or_get_pending(self, approval: PendingApproval, now: float) -> PendingApproval:
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute(
                        f"SELECT {_COLUMNS} FROM approvals WHERE agent_id=? AND fingerprint=? "  # noqa: S608
                        "AND state='pending' AND expires_at>? ORDER BY created_at LIMIT 1",
                        (approval.agent_id, approval.fingerprint, now),
                    ).fetchone()
                    if row is None:
                        self._db.execute(
                            f"INSERT INTO approvals ({_COLUMNS}) VALUES ({', '.join('?' * 17)})",  # noqa: S608
                            _to_row(approval),
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"the approvals store failed: {exc}") from exc
        return approval if row is None else _from_row(row)

    def get_approval(self, approval_id: str) -> PendingApproval | None:
        try:
            with self._lock:
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE id=?",  # noqa: S608 - constant columns
                    (approval_id,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"the approvals store failed: {exc}") from exc
        return None if row is None else _from_row(row)

    def list_approvals(self, state: str | None = None) -> Sequence[PendingApproval]:
        query = f"SELECT {_COLUMNS} FROM approvals"  # noqa: S608
        params: tuple[str, ...] = ()
        if state is not None:
            query += " WHERE state=?"
            params = (state,)
        try:
            with self._lock:
                rows = self._db.execute(query + " ORDER BY created_at", params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"the approvals store failed: {exc}") from exc
        return [_from_row(r) for r in rows]

    def ping(self) -> None:
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"the SQLite store is not usable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _to_row(a: PendingApproval) -> tuple[object, ...]:
    return (
        a.id,
        a.agent_id,
        a.tenant,
        json.dumps(list(a.chain)),
        a.tool,
        a.args_summary,
        a.fingerprint,
        a.rule,
        a.reason,
        a.policy_version,
        a.approvers,
        a.created_at,
        a.expires_at,
        a.state,
        a.decided_by,
        a.decided_at,
        a.comment,
    )


def _from_row(row: tuple[object, ...]) -> PendingApproval:
    values = list(row)
    values[3] = tuple(json.loads(str(values[3])))
    return PendingApproval(*values)  # type: ignore[arg-type]
