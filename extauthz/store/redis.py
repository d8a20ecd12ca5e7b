"""Redis store: state shared by every replica (``store: redis://host:port/db``, ``rediss://`` for TLS).

Every transition and every counter step is one Lua script, so it is atomic on the Redis
server however many replicas race (the override token's single use, budgets and rate
limits rest on this).  Layout (``aegis:`` prefix, one logical database per deployment)::

    aegis:apr:<id>                hash    the approval (absent fields are None)
    aegis:apr:<id>:notify         hash    target → JSON [channel, ref]
    aegis:apr:fp:<agent>:<fp>     string  id of the agent's live pending approval for a fingerprint
    aegis:apr:rule:<agent>:<rule> zset    pending ids by expiry (the approval budget)
    aegis:apr:due                 zset    pending / approved ids by the time they expire
    aegis:apr:all                 zset    every id by creation time (listing)
    aegis:cnt:<key>               string / hash   budget counters, buckets, once-marks (with TTLs)

Scripts read approval keys they compute from ids, so this layout is for a single Redis
(or a primary with replicas), not Redis Cluster.

Failure handling: one try per command with ``socket_timeout`` = ``store_timeout``, so no
call waits longer than that; after a failure the store refuses at once (``StoreError``)
for a back-off that doubles from 50 ms to 2 s, then tries again (the reconnect).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from extauthz.errors import StoreError
from extauthz.store import CONSUMED, NotificationRef, PendingApproval, PendingLimitReached

T = TypeVar("T")

PREFIX = "aegis:"
DEFAULT_TIMEOUT_S = 0.25
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
MAX_CONNECTIONS = 64
# Approval records stay this long after they expire (status polls, the console, audits).
APPROVAL_RETENTION_S = 7 * 86400

_FLOAT_FIELDS = ("created_at", "expires_at", "decided_at", "token_expires_at", "token_issued_at", "used_at")

# KEYS: fp, rule zset, approval, due, all.  ARGV: now, max (-1: none), id, expires_at, created_at,
# ttl, then field/value pairs.  Returns {"existing", id} | {"full"} | {"created"}.
_CREATE = """
local now = tonumber(ARGV[1])
local existing = redis.call('GET', KEYS[1])
if existing then
  local st = redis.call('HMGET', ARGV[7] .. existing, 'state', 'expires_at')
  if st[1] == 'pending' and tonumber(st[2]) > now then return {'existing', existing} end
end
local max = tonumber(ARGV[2])
if max >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local live = 0
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('HGET', ARGV[7] .. id, 'state') == 'pending' then live = live + 1
    else redis.call('ZREM', KEYS[2], id) end
  end
  if live >= max then return {'full'} end
end
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[3])
return {'created'}
"""

# KEYS: approval, due.  ARGV: state, decided_by, decided_at(now), comment ('' = none), token_expires ('' = none), id.
_DECIDE = """
local st = redis.call('HMGET', KEYS[1], 'state', 'expires_at')
if st[1] ~= 'pending' or tonumber(st[2]) <= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'decided_by', ARGV[2], 'decided_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'comment', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'token_expires_at', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
else
  redis.call('ZREM', KEYS[2], ARGV[6])
end
return 1
"""

# KEYS: approval, due.  ARGV: now, id.  The single winner gets 'consumed'.
_CONSUME = """
local st = redis.call('HMGET', KEYS[1], 'state', 'token_expires_at')
if not st[1] then return 'unknown' end
local now = tonumber(ARGV[1])
if st[1] == 'approved' then
  if st[2] and tonumber(st[2]) > now then
    redis.call('HSET', KEYS[1], 'state', 'used', 'used_at', ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[2])
    return 'consumed'
  end
  return 'expired'
end
return st[1]
"""

_MARK_ISSUED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'token_issued_at', ARGV[1])
"""

# KEYS: due.  ARGV: now, prefix.  Expires what is due; returns the expired ids.
_EXPIRE = """
local now = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local key = ARGV[2] .. id
  local st = redis.call('HMGET', key, 'state', 'expires_at', 'token_expires_at')
  if (st[1] == 'pending' and tonumber(st[2]) <= now) or (st[1] == 'approved' and st[3] and tonumber(st[3]) <= now) then
    redis.call('HSET', key, 'state', 'expired')
    table.insert(out, id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return out
"""

# KEYS: bucket.  ARGV: capacity, refill per s, now.  0 when a token was taken, else the wait (string).
_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local st = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = capacity
if st[1] then tokens = math.min(capacity, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity / rate + 1) * 1000))
return tostring(wait)
"""

# KEYS: counter.  ARGV: amount, limit, ttl ms.  {1, new} or {0, current}.
_CONSUME_BUDGET = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if current >= limit or current + amount > limit then return {0, current} end
local new = redis.call('INCRBY', KEYS[1], amount)
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, new}
"""

_ADD_USAGE = """
local new = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return new
"""


class RedisStore:
    """Approvals and counters in one Redis database, shared by every replica."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic):
        try:
            self._pool = redis.ConnectionPool.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                max_connections=MAX_CONNECTIONS,
                decode_responses=True,
                # One try per command: our back-off below decides when to try again, and a
                # retry would double the time a request can wait.
                retry=Retry(NoBackoff(), 0),
            )
            self._client = redis.Redis(connection_pool=self._pool)
        except (ValueError, redis.RedisError) as exc:
            raise StoreError(f"invalid Redis store URL: {exc}") from exc
        self._scripts: dict[str, Script] = {
            name: self._client.register_script(text)
            for name, text in {
                "create": _CREATE,
                "decide": _DECIDE,
                "consume": _CONSUME,
                "mark_issued": _MARK_ISSUED,
                "expire": _EXPIRE,
                "take_token": _BUCKET,
                "consume_budget": _CONSUME_BUDGET,
                "add_usage": _ADD_USAGE,
            }.items()
        }
        self._clock = clock
        self._lock = threading.Lock()
        self._backoff_s = 0.0
        self._retry_at = 0.0

    # the boundary: every redis error becomes StoreError here --------------------------------

    def _call(self, op: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            if now < self._retry_at:
                raise StoreError(f"the Redis store is unavailable (retrying in {self._retry_at - now:.2f} s)")
        try:
            result = op()
        except redis.RedisError as exc:
            with self._lock:
                self._backoff_s = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff_s * 2))
                self._retry_at = self._clock() + self._backoff_s
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                # Pooled connections to a restarted server are all dead: drop them together.
                self._pool.disconnect(inuse_connections=False)
            raise StoreError(f"the Redis store failed: {exc.__class__.__name__}") from exc
        if self._backoff_s:
            with self._lock:
                self._backoff_s = 0.0
        return result

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._call(lambda: self._scripts[script](keys=list(keys), args=list(args)))

    # approvals -------------------------------------------------------------------------------

    def create_or_get_pending(
        self, approval: PendingApproval, now: float, *, max_pending: int | None = None
    ) -> PendingApproval:
        ttl = max(1, int(approval.expires_at - now + APPROVAL_RETENTION_S))
        keys = [
            f"{PREFIX}apr:fp:{approval.agent_id}:{approval.fingerprint}",
            f"{PREFIX}apr:rule:{approval.agent_id}:{approval.rule}",
            _key(approval.id),
            f"{PREFIX}apr:due",
            f"{PREFIX}apr:all",
        ]
        fields = [item for pair in _to_fields(approval).items() for item in pair]
        args = [
            repr(now),
            -1 if max_pending is None else max_pending,
            approval.id,
            repr(approval.expires_at),
            repr(approval.created_at),
            ttl,
            f"{PREFIX}apr:",
            *fields,
        ]
        outcome = self._run("create", keys, args)
        if outcome[0] == "existing":
            existing = self.get_approval(outcome[1])
            if existing is not None:
                return existing
        if outcome[0] == "full":
            raise PendingLimitReached(max_pending or 0)
        return approval

    def decide(
        self, approval_id: str, state: str, decided_by: str, comment: str | None, now: float, token_ttl_s: float
    ) -> tuple[PendingApproval | None, bool]:
        if state not in {"approved", "denied"}:
            raise ValueError(f"not a decision: {state}")
        token_expires = repr(now + token_ttl_s) if state == "approved" else ""
        args = [state, decided_by, repr(now), comment or "", token_expires, approval_id]
        changed = self._run("decide", [_key(approval_id), f"{PREFIX}apr:due"], args)
        return self.get_approval(approval_id), int(changed) == 1

    def mark_token_issued(self, approval_id: str, now: float) -> bool:
        return int(self._run("mark_issued", [_key(approval_id)], [repr(now)])) == 1

    def consume(self, approval_id: str, now: float) -> str:
        outcome = str(self._run("consume", [_key(approval_id), f"{PREFIX}apr:due"], [repr(now), approval_id]))
        return CONSUMED if outcome == "consumed" else outcome

    def expire_due(self, now: float) -> Sequence[PendingApproval]:
        ids = self._run("expire", [f"{PREFIX}apr:due"], [repr(now), f"{PREFIX}apr:"])
        return self._many(list(ids))

    def save_notification_ref(self, ref: NotificationRef) -> None:
        value = json.dumps([ref.channel, ref.ref])
        self._call(lambda: self._client.hset(f"{_key(ref.approval_id)}:notify", ref.target, value))

    def notification_refs(self, approval_id: str) -> Sequence[NotificationRef]:
        raw: Mapping[str, str] = self._call(lambda: self._hgetall(f"{_key(approval_id)}:notify"))
        return [NotificationRef(approval_id, target, *json.loads(v)) for target, v in sorted(raw.items())]

    def get_approval(self, approval_id: str) -> PendingApproval | None:
        raw: Mapping[str, str] = self._call(lambda: self._hgetall(_key(approval_id)))
        return _from_fields(raw) if raw else None

    def list_approvals(self, state: str | None = None) -> Sequence[PendingApproval]:
        ids: list[str] = self._call(lambda: [str(i) for i in self._client.zrange(f"{PREFIX}apr:all", 0, -1)])
        approvals = self._many(ids)
        return [a for a in approvals if state is None or a.state == state]

    def _hgetall(self, key: str) -> dict[str, str]:
        # decode_responses=True: every key and value is a str.
        return {str(k): str(v) for k, v in self._client.hgetall(key).items()}

    def _many(self, ids: Sequence[str]) -> list[PendingApproval]:
        if not ids:
            return []

        def fetch() -> list[Mapping[str, str]]:
            pipe = self._client.pipeline(transaction=False)
            for approval_id in ids:
                pipe.hgetall(_key(approval_id))
            return list(pipe.execute())

        return [_from_fields(raw) for raw in self._call(fetch) if raw]

    # counters --------------------------------------------------------------------------------

    def take_token(self, key: str, capacity: float, refill_per_s: float, now: float) -> float:
        wait = self._run("take_token", [f"{PREFIX}cnt:{key}"], [repr(capacity), repr(refill_per_s), repr(now)])
        return float(wait)

    def consume_budget(self, key: str, amount: int, limit: int, expires_at: float, now: float) -> tuple[bool, int]:
        ttl_ms = max(1, int((expires_at - now) * 1000))
        allowed, value = self._run("consume_budget", [f"{PREFIX}cnt:{key}"], [amount, limit, ttl_ms])
        return bool(int(allowed)), int(value)

    def add_usage(self, key: str, amount: int, expires_at: float, now: float) -> int:
        ttl_ms = max(1, int((expires_at - now) * 1000))
        return int(self._run("add_usage", [f"{PREFIX}cnt:{key}"], [amount, ttl_ms]))

    def mark_once(self, key: str, expires_at: float, now: float) -> bool:
        ttl_ms = max(1, int((expires_at - now) * 1000))
        return bool(self._call(lambda: self._client.set(f"{PREFIX}cnt:{key}", "1", nx=True, px=ttl_ms)))

    def ping(self) -> None:
        self._call(self._client.ping)

    def close(self) -> None:
        self._pool.disconnect()


def _key(approval_id: str) -> str:
    return f"{PREFIX}apr:{approval_id}"


def _to_fields(a: PendingApproval) -> dict[str, str]:
    """The approval as hash fields (None values are left out)."""
    fields: dict[str, str] = {}
    for name, value in vars(a).items():
        if value is None:
            continue
        if name == "chain":
            fields[name] = json.dumps(list(value))
        elif isinstance(value, float):
            fields[name] = repr(value)
        else:
            fields[name] = str(value)
    return fields


def _from_fields(raw: Mapping[str, str]) -> PendingApproval:
    values: dict[str, Any] = dict(raw)
    values["chain"] = tuple(json.loads(raw.get("chain", "[]")))
    for name in _FLOAT_FIELDS:
        if name in values:
            values[name] = float(values[name])
    return PendingApproval(**values)
