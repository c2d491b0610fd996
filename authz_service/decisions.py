"""Permission decisions: the cache first, then one Keycloak call per distinct question.

Concurrent identical questions (a UI page firing a dozen requests at once) share one in-flight
Keycloak call instead of each asking on a cold cache. A cached or in-flight answer is only used if
it was asked after the user's last rights change (revocation.py).

When Keycloak cannot be reached, no rights change can be made there either: a cached answer is then
honoured until it expires, even one older than revocation's blind-poll budget, unless a change to
that user was read after it was made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TypeVar

from .cache import DecisionCache, decision_key, grants_key
from .revocation import NotBefore, Revocation
from .routes import Permission
from .tokens import Identity
from .uma import KeycloakUnavailable, UmaClient

T = TypeVar("T")

KEY_MEMO_SIZE = 4096
"""Decision keys remembered: one per (token, permission) in use; hashing them on every check cost
more than the cache lookup itself."""


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
        self._in_flight: dict[str, tuple[float, asyncio.Future[object]]] = {}
        self._key = lru_cache(maxsize=KEY_MEMO_SIZE)(decision_key)
        self._grants_key = lru_cache(maxsize=KEY_MEMO_SIZE)(grants_key)
        self.cache_hits = 0

    async def is_allowed(self, identity: Identity, permission: Permission) -> bool:
        key = self._key(identity, permission)
        not_before = self._revocation.not_before(identity.subject)
        cached = await self._cache.get(key, not_before)
        if cached is not None:
            self.cache_hits += 1
            return cached

        async def ask() -> bool:
            asked_at = self._clock()
            allowed = await self._uma.is_granted(identity.token, permission)
            await self._cache.put(key, allowed, identity.expires_at, asked_at)
            return allowed

        try:
            return await self._once(key, not_before, ask)
        except KeycloakUnavailable:
            fallback = await self._cache.get(key, self._revocation.known_changes(identity.subject))
            if fallback is None:
                raise
            return fallback

    async def grants(self, identity: Identity) -> frozenset[str]:
        """The user's whole permission set: with workspaces on, every decision reads from it."""
        key = self._grants_key(identity)
        not_before = self._revocation.not_before(identity.subject)
        cached = await self._cache.get_grants(key, not_before)
        if cached is not None:
            self.cache_hits += 1
            return cached

        async def ask() -> frozenset[str]:
            asked_at = self._clock()
            grants = await self._uma.granted_permissions(identity.token)
            await self._cache.put_grants(key, grants, identity.expires_at, asked_at)
            return grants

        try:
            return await self._once(key, not_before, ask)
        except KeycloakUnavailable:
            fallback = await self._cache.get_grants(key, self._revocation.known_changes(identity.subject))
            if fallback is None:
                raise
            return fallback

    async def _once(self, key: str, not_before: NotBefore, ask: Callable[[], Awaitable[T]]) -> T:
        """One Keycloak call per key at a time; an in-flight call asked before `not_before` is not shared."""
        pending = self._in_flight.get(key)
        if pending is not None and pending[0] >= not_before.own:
            return await asyncio.shield(pending[1])  # type: ignore[return-value]
        if pending is not None:
            return await ask()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = (self._clock(), future)
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
