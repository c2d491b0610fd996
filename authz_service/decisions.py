"""Permission decisions: the cache first, then one Keycloak call per distinct question.

Concurrent identical questions (a UI page firing a dozen requests at once) share one in-flight
Keycloak call instead of each asking on a cold cache.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

from .cache import DecisionCache, decision_key
from .routes import Permission
from .tokens import Identity
from .uma import UmaClient

KEY_MEMO_SIZE = 4096
"""Decision keys remembered: one per (token, permission) in use; hashing them on every check cost
more than the cache lookup itself."""


class Authorizer:
    def __init__(self, cache: DecisionCache, uma: UmaClient) -> None:
        self._cache = cache
        self._uma = uma
        self._in_flight: dict[str, asyncio.Future[bool]] = {}
        self._key = lru_cache(maxsize=KEY_MEMO_SIZE)(decision_key)
        self.cache_hits = 0

    async def is_allowed(self, identity: Identity, permission: Permission) -> bool:
        key = self._key(identity, permission)
        cached = await self._cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            allowed = await self._uma.is_granted(identity.token, permission)
            await self._cache.put(key, allowed, identity.expires_at)
            future.set_result(allowed)
            return allowed
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # waiters re-raise it; this marks it seen when there are none
            raise
        finally:
            del self._in_flight[key]
