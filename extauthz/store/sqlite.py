"""SQLite store: the single-node default (WAL mode, one connection guarded by a lock).

Every transition is one ``UPDATE … WHERE state=<expected>`` inside one transaction, so
two racing callers can never both win (the override token's single use rests on this).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from extauthz.errors import StoreError
from extauthz.store import CONSUMED, NotificationRef, PendingApproval, PendingLimitReached

T = TypeVar("T")

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
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, expires_at);
CREATE TABLE IF NOT EXISTS approval_notifications (
    approval_id TEXT NOT NULL,
    target TEXT NOT NULL,
    channel TEXT NOT NULL,
    ref TEXT NOT NULL,
    PRIMARY KEY (approval_id, target)
);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    value REAL NOT NULL,
    stamp REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""
# Columns added after the first release: added in place to existing databases.
_ADDED_COLUMNS = (("token_expires_at", "REAL"), ("token_issued_at", "REAL"), ("used_at", "REAL"))
_COLUMNS = (
    "id, agent_id, tenant, chain, tool, args_summary, fingerprint, rule, reason, policy_version, "
    "approvers, created_at, expires_at, state, decided_by, decided_at, comment, "
    "token_expires_at, token_issued_at, used_at"
)
_N_COLUMNS = _COLUMNS.count(",") + 1
_SELECT = f"SELECT {_COLUMNS} FROM approvals"  # noqa: S608 - constant column list


class SqliteStore:
    """Approvals in one SQLite file."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(approvals)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in present:
                    self._db.execute(f"ALTER TABLE approvals ADD COLUMN {name} {kind}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store at {path}: {exc}") from exc
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers serialise at the start, not the end)."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"the approvals store failed: {exc}") from exc

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._lock:
                return query(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"the approvals store failed: {exc}") from exc

    def create_or_get_pending(
        self, approval: PendingApproval, now: float, *, max_pending: int | None = None
    ) -> PendingApproval:
        with self._transaction() as db:
            row = db.execute(
                f"{_SELECT} WHERE agent_id=? AND fingerprint=? AND state='pending' AND expires_at>? "
                "ORDER BY created_at LIMIT 1",
                (approval.agent_id, approval.fingerprint, now),
            ).fetchone()
            if row is not None:
                return _from_row(row)
            if max_pending is not None:
                (live,) = db.execute(
                    "SELECT count(*) FROM approvals WHERE agent_id=? AND rule=? AND state='pending' AND expires_at>?",
                    (approval.agent_id, approval.rule, now),
                ).fetchone()
                if live >= max_pending:
                    raise PendingLimitReached(max_pending)
            db.execute(
                f"INSERT INTO approvals ({_COLUMNS}) VALUES ({', '.join('?' * _N_COLUMNS)})",  # noqa: S608
                _to_row(approval),
            )
        return approval

    def decide(
        self, approval_id: str, state: str, decided_by: str, comment: str | None, now: float, token_ttl_s: float
    ) -> tuple[PendingApproval | None, bool]:
        if state not in {"approved", "denied"}:
            raise ValueError(f"not a decision: {state}")
        token_expires = now + token_ttl_s if state == "approved" else None
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE approvals SET state=?, decided_by=?, decided_at=?, comment=?, token_expires_at=? "
                "WHERE id=? AND state='pending' AND expires_at>?",
                (state, decided_by, now, comment, token_expires, approval_id, now),
            ).rowcount
            row = db.execute(f"{_SELECT} WHERE id=?", (approval_id,)).fetchone()
        return (None if row is None else _from_row(row)), changed == 1

    def mark_token_issued(self, approval_id: str, now: float) -> bool:
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE approvals SET token_issued_at=? WHERE id=? AND token_issued_at IS NULL", (now, approval_id)
                ).rowcount
            )

    def consume(self, approval_id: str, now: float) -> str:
        with self._transaction() as db:
            won = db.execute(
                "UPDATE approvals SET state='used', used_at=? WHERE id=? AND state='approved' AND token_expires_at>?",
                (now, approval_id, now),
            ).rowcount
            if won == 1:
                return CONSUMED
            row = db.execute("SELECT state, token_expires_at FROM approvals WHERE id=?", (approval_id,)).fetchone()
        if row is None:
            return "unknown"
        state, token_expires = row
        return "expired" if state == "approved" and token_expires is not None and token_expires <= now else str(state)

    def expire_due(self, now: float) -> Sequence[PendingApproval]:
        due = "(state='pending' AND expires_at<=?) OR (state='approved' AND token_expires_at<=?)"
        with self._transaction() as db:
            rows = db.execute(f"{_SELECT} WHERE {due}", (now, now)).fetchall()
            db.execute(f"UPDATE approvals SET state='expired' WHERE {due}", (now, now))  # noqa: S608
        return [_from_row(r) for r in rows]

    def save_notification_ref(self, ref: NotificationRef) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO approval_notifications (approval_id, target, channel, ref) VALUES (?, ?, ?, ?)",
                (ref.approval_id, ref.target, ref.channel, ref.ref),
            )

    def notification_refs(self, approval_id: str) -> Sequence[NotificationRef]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT approval_id, target, channel, ref FROM approval_notifications WHERE approval_id=?",
                (approval_id,),
            ).fetchall()
        )
        return [NotificationRef(*r) for r in rows]

    def get_approval(self, approval_id: str) -> PendingApproval | None:
        row = self._read(lambda db: db.execute(f"{_SELECT} WHERE id=?", (approval_id,)).fetchone())
        return None if row is None else _from_row(row)

    def list_approvals(self, state: str | None = None) -> Sequence[PendingApproval]:
        if state is None:
            rows = self._read(lambda db: db.execute(f"{_SELECT} ORDER BY created_at").fetchall())
        else:
            rows = self._read(
                lambda db: db.execute(f"{_SELECT} WHERE state=? ORDER BY created_at", (state,)).fetchall()
            )
        return [_from_row(r) for r in rows]

    # counters ---------------------------------------------------------------------------

    @staticmethod
    def _counter(db: sqlite3.Connection, key: str, now: float) -> tuple[float, float] | None:
        """(value, stamp) of a live counter; an expired one is deleted and reads as absent."""
        row = db.execute("SELECT value, stamp, expires_at FROM counters WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        if row[2] <= now:
            db.execute("DELETE FROM counters WHERE key=?", (key,))
            return None
        return float(row[0]), float(row[1])

    @staticmethod
    def _put(db: sqlite3.Connection, key: str, value: float, stamp: float, expires_at: float) -> None:
        db.execute(
            "INSERT OR REPLACE INTO counters (key, value, stamp, expires_at) VALUES (?, ?, ?, ?)",
            (key, value, stamp, expires_at),
        )

    def take_token(self, key: str, capacity: float, refill_per_s: float, now: float) -> float:
        with self._transaction() as db:
            current = self._counter(db, key, now)
            tokens, stamp = current if current is not None else (capacity, now)
            tokens = min(capacity, tokens + max(0.0, now - stamp) * refill_per_s)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / refill_per_s
            if wait == 0.0:
                tokens -= 1
            self._put(db, key, tokens, now, now + capacity / refill_per_s + 1)
        return wait

    def consume_budget(self, key: str, amount: int, limit: int, expires_at: float, now: float) -> tuple[bool, int]:
        with self._transaction() as db:
            current = self._counter(db, key, now)
            value = int(current[0]) if current is not None else 0
            if value >= limit or value + amount > limit:
                return False, value
            self._put(db, key, value + amount, now, expires_at)
        return True, value + amount

    def add_usage(self, key: str, amount: int, expires_at: float, now: float) -> int:
        with self._transaction() as db:
            current = self._counter(db, key, now)
            value = (int(current[0]) if current is not None else 0) + amount
            self._put(db, key, value, now, expires_at if current is None else self._expiry(db, key))
        return value

    @staticmethod
    def _expiry(db: sqlite3.Connection, key: str) -> float:
        return float(db.execute("SELECT expires_at FROM counters WHERE key=?", (key,)).fetchone()[0])

    def mark_once(self, key: str, expires_at: float, now: float) -> bool:
        with self._transaction() as db:
            if self._counter(db, key, now) is not None:
                return False
            self._put(db, key, 1, now, expires_at)
        return True

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
        a.token_expires_at,
        a.token_issued_at,
        a.used_at,
    )


def _from_row(row: tuple[object, ...]) -> PendingApproval:
    values = list(row)
    values[3] = tuple(json.loads(str(values[3])))
    return PendingApproval(*values)  # type: ignore[arg-type]
