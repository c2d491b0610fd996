"""Permission decisions: the cache first, then one Keycloak call per distinct question.

Concurrent identical questions (a UI page firing a dozen requests at once) share one in-flight
Keycloak call instead of each asking on a cold cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .cache import DecisionCache, decision_key, grants_key
from .routes import Permission
from .tokens import Identity
from .uma import UmaClient

T = TypeVar("T")


class Authorizer:
    def __init__(self, cache: DecisionCache, uma: UmaClient) -> None:
        self._cache = cache
        self._uma = uma
        self._in_flight: dict[str, asyncio.Future[object]] = {}
        self.cache_hits = 0

    async def is_allowed(self, identity: Identity, permission: Permission) -> bool:
        key = decision_key(identity, permission)
        cached = await self._cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached

        async def ask() -> bool:
            allowed = await self._uma.is_granted(identity.token, permission)
            await self._cache.put(key, allowed, identity.expires_at)
            return allowed

        return await self._once(key, ask)

    async def grants(self, identity: Identity) -> frozenset[str]:
        """The user's whole permission set: with workspaces on, every decision reads from it."""
        key = grants_key(identity)
        cached = await self._cache.get_grants(key)
        if cached is not None:
            self.cache_hits += 1
            return cached

        async def ask() -> frozenset[str]:
            grants = await self._uma.granted_permissions(identity.token)
            await self._cache.put_grants(key, grants, identity.expires_at)
            return grants

        return await self._once(key, ask)

    async def _once(self, key: str, ask: Callable[[], Awaitable[T]]) -> T:
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)  # type: ignore[return-value]
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            answer = await ask()
            future.set_result(answer)
            return answer
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # waiters re-raise it; this marks it seen when there are none
            raise
        finally:
            del self._in_flight[key]
