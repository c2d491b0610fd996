"""Permission decisions: the cache first, then one Keycloak call per distinct question.

Concurrent identical questions (a UI page firing a dozen requests at once) share one in-flight
Keycloak call instead of each asking on a cold cache. A cached or in-flight answer is only used if
it was asked after the user's last rights change (revocation.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .cache import DecisionCache, decision_key
from .revocation import Revocation
from .routes import Permission
from .tokens import Identity
from .uma import UmaClient


class Authorizer:
    def __init__(
        self,
        cache: DecisionCache,
        uma: UmaClient,
        revocation: Revocation,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._uma = uma
        self._revocation = revocation
        self._clock = clock
        self._in_flight: dict[str, tuple[float, asyncio.Future[bool]]] = {}
        self.cache_hits = 0

    async def is_allowed(self, identity: Identity, permission: Permission) -> bool:
        key = decision_key(identity, permission)
        not_before = self._revocation.not_before(identity.subject)
        cached = await self._cache.get(key, not_before)
        if cached is not None:
            self.cache_hits += 1
            return cached
        pending = self._in_flight.get(key)
        if pending is not None and pending[0] >= not_before.own:
            return await asyncio.shield(pending[1])
        if pending is not None:
            return await self._ask(key, identity, permission)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = (self._clock(), future)
        try:
            allowed = await self._ask(key, identity, permission)
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

    async def _ask(self, key: str, identity: Identity, permission: Permission) -> bool:
        asked_at = self._clock()
        allowed = await self._uma.is_granted(identity.token, permission)
        await self._cache.put(key, allowed, identity.expires_at, asked_at)
        return allowed
