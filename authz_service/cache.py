"""Decision cache: an in-process layer in front of an optional shared Redis layer.

Earlier gates asked Keycloak on every request. A decision depends on who asks (subject, roles,
client) and what is asked (resource#scope), so the key is a digest of exactly those; two users or
two role sets never share an entry. No entry outlives the token it was made for.

Every entry, in memory and in Redis, carries the time it was decided. A reader passes the times
before which decisions no longer hold (revocation.NotBefore: one for this process's own decisions,
one for those other processes shared through Redis), whatever the key is made of.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from cachetools import TLRUCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .redis_breaker import RedisUnavailable
from .revocation import ALWAYS, NotBefore
from .routes import Permission
from .tokens import Identity

log = logging.getLogger(__name__)

KEY_PREFIX = "mlflow-gate:decision:v2:"
GRANTS_PREFIX = "mlflow-gate:grants:v1:"

# Which layer answered this request's lookup (memory, redis, miss), for its audit line and metrics.
# Each request runs in its own task, hence its own context: no request sees another's value.
lookup_layer: ContextVar[str] = ContextVar("decision_cache_layer", default="")


@dataclass(frozen=True)
class CachedDecision:
    allowed: bool
    expires_at: float
    decided_at: float
    shared: bool
    """Read from Redis (another process may have made it), as opposed to made by this process."""

    def holds(self, not_before: NotBefore) -> bool:
        return self.decided_at >= (not_before.shared if self.shared else not_before.own)


@dataclass(frozen=True)
class CachedGrants:
    grants: frozenset[str]
    expires_at: float
    decided_at: float
    shared: bool

    def holds(self, not_before: NotBefore) -> bool:
        return self.decided_at >= (not_before.shared if self.shared else not_before.own)


def grants_key(identity: Identity) -> str:
    """A user's whole permission set (workspaces on), keyed like a decision minus the question."""
    material = json.dumps([identity.subject, sorted(identity.roles), identity.client])
    return GRANTS_PREFIX + hashlib.sha256(material.encode()).hexdigest()


def decision_key(identity: Identity, permission: Permission) -> str:
    """A digest, so Redis holds no user names or roles in clear."""
    material = json.dumps(
        [identity.subject, sorted(identity.roles), identity.client, permission.resource, permission.scope]
    )
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


class DecisionCache:
    """Redis failures degrade to cache misses (Keycloak is asked), never to an allow."""

    def __init__(
        self,
        max_ttl: float,
        size: int,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_ttl = max_ttl
        self._redis = redis
        self._clock = clock
        self._memory: TLRUCache[str, CachedDecision | CachedGrants] = TLRUCache(
            maxsize=size, ttu=lambda _key, value, _now: value.expires_at, timer=clock
        )

    async def get(self, key: str, not_before: NotBefore = ALWAYS) -> bool | None:
        """The cached decision, unless it was decided before `not_before` (then None: ask Keycloak)."""
        entry = await self._read(key, not_before, _decode)
        return entry.allowed if isinstance(entry, CachedDecision) else None

    async def put(self, key: str, allowed: bool, token_expires_at: float, decided_at: float) -> None:
        """`decided_at`: when the question was sent to Keycloak, so a change during the call voids it."""
        expires_at = self._expiry(token_expires_at)
        if expires_at is not None:
            self._memory[key] = CachedDecision(allowed, expires_at, decided_at, shared=False)
            await self._write(key, f"{int(allowed)}:{expires_at}:{decided_at}", expires_at)

    async def get_grants(self, key: str, not_before: NotBefore = ALWAYS) -> frozenset[str] | None:
        """A cached permission set, under the same `not_before` rule as a decision."""
        entry = await self._read(key, not_before, _decode_grants)
        return entry.grants if isinstance(entry, CachedGrants) else None

    async def put_grants(self, key: str, grants: frozenset[str], token_expires_at: float, decided_at: float) -> None:
        expires_at = self._expiry(token_expires_at)
        if expires_at is not None:
            self._memory[key] = CachedGrants(grants, expires_at, decided_at, shared=False)
            entry = {"expires_at": expires_at, "decided_at": decided_at, "grants": sorted(grants)}
            await self._write(key, json.dumps(entry), expires_at)

    async def _read(
        self, key: str, not_before: NotBefore, decode: Callable[[bytes | str | None], CachedDecision | CachedGrants | None]
    ) -> CachedDecision | CachedGrants | None:
        cached = self._memory.get(key)
        if cached is not None and cached.holds(not_before):
            lookup_layer.set("memory")
            return cached
        lookup_layer.set("miss")
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(key)
        except RedisUnavailable:
            return None
        except RedisError as error:
            log.warning("decision cache: Redis read failed, asking Keycloak: %s", error)
            return None
        entry = decode(raw)
        if entry is None or entry.expires_at <= self._clock() or not entry.holds(not_before):
            return None
        self._memory[key] = entry
        lookup_layer.set("redis")
        return entry

    def _expiry(self, token_expires_at: float) -> float | None:
        """Never beyond the token nor the cache's longest lifetime; None when already over."""
        now = self._clock()
        expires_at = min(now + self._max_ttl, token_expires_at)
        return expires_at if expires_at > now else None

    async def _write(self, key: str, value: str, expires_at: float) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.set(key, value, px=max(1, int((expires_at - self._clock()) * 1000)))
        except RedisUnavailable:
            return
        except RedisError as error:
            log.warning("decision cache: Redis write failed: %s", error)


def _decode(raw: bytes | str | None) -> CachedDecision | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    parts = text.split(":")
    if len(parts) != 3:
        return None
    allowed, expires_at, decided_at = parts
    try:
        return CachedDecision(allowed == "1", float(expires_at), float(decided_at), shared=True)
    except ValueError:
        return None


def _decode_grants(raw: bytes | str | None) -> CachedGrants | None:
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        grants = frozenset(str(grant) for grant in entry["grants"])
        return CachedGrants(grants, float(entry["expires_at"]), float(entry["decided_at"]), shared=True)
    except (ValueError, TypeError, KeyError):
        return None
