"""Failed Basic attempts, counted per username and per client address, to slow password guessing.

The counts live in Redis so every gate process sees the same ones (an in-process map when the gate
runs without Redis, or while Redis fails). Each count is a fixed window that starts at the first
failure; at the limit further attempts are answered 429 with `Retry-After` until the window ends,
without asking Keycloak. Usernames are case-folded (Keycloak's are), so `Alice` and `alice` share a
count, and both names and addresses are keyed digests, so Redis holds neither. Keycloak's own
brute-force detection stays on behind this.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from cachetools import TLRUCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .basic import KeyedDigests

log = logging.getLogger(__name__)

KEY_PREFIX = "mlflow-gate:basic-failures:v1:"
# Count one failure; the window starts at the first one and later ones never extend it. Atomic, so a
# count can never be left without its expiry (which would block a name or address for good).
_COUNT_FAILURE = """
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class FailureThrottle:
    def __init__(
        self,
        digests: KeyedDigests,
        redis: Redis | None,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._digests = digests
        self._redis = redis
        self._limit = limit
        self._window = window
        self._clock = clock
        self._memory: TLRUCache[str, tuple[int, float]] = TLRUCache(
            maxsize=100_000, ttu=lambda _key, item, _now: item[1], timer=clock
        )

    async def retry_after(self, username: str, address: str) -> int | None:
        """Seconds to wait when the username or the address has used up its failures, else None."""
        waits = [await self._retry_after(key) for key in self._keys(username, address)]
        blocked = [wait for wait in waits if wait is not None]
        return max(blocked) if blocked else None

    async def record_failure(self, username: str, address: str) -> None:
        for key in self._keys(username, address):
            await self._count(key)

    def _keys(self, username: str, address: str) -> list[str]:
        keys = [KEY_PREFIX + "user:" + self._digests.digest("throttle-user", username.casefold()).hex()]
        if address:
            keys.append(KEY_PREFIX + "address:" + self._digests.digest("throttle-address", address).hex())
        return keys

    async def _retry_after(self, key: str) -> int | None:
        if self._redis is not None:
            try:
                count = await self._redis.get(key)
                ttl_ms = await self._redis.pttl(key)
            except RedisError as error:
                log.warning("Basic throttle: Redis read failed, using this process's counts: %s", error)
            else:
                if count is None or int(count) < self._limit:
                    return None
                return max(1, math.ceil(ttl_ms / 1000)) if ttl_ms > 0 else 1
        item = self._memory.get(key)
        if item is None or item[0] < self._limit:
            return None
        return max(1, math.ceil(item[1] - self._clock()))

    async def _count(self, key: str) -> None:
        if self._redis is not None:
            try:
                await self._redis.eval(_COUNT_FAILURE, 1, key, int(self._window * 1000))
                return
            except RedisError as error:
                log.warning("Basic throttle: Redis write failed, counting in this process: %s", error)
        count, window_end = self._memory.get(key, (0, self._clock() + self._window))
        self._memory[key] = (count + 1, window_end)
