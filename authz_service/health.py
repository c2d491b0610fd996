"""Liveness and readiness: /_gate/health answers without touching anything, /_gate/ready probes.

Readiness asks Keycloak's JWKS and token endpoints and PINGs Redis (when configured), all at once,
and reuses the answer for a second, so a probe storm from several orchestrators costs Keycloak a
couple of requests per second at most. Without Keycloak no uncached request can be decided: 503.
Without Redis the gate still decides (memory cache + Keycloak) but browser sessions fail: 200 with
status "degraded". So it does when Keycloak's events cannot be read (revocation.py): the gate still
decides, only its cache serves less.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .keycloak_calls import ENDPOINT_EXTENSION
from .revocation import Revocation

PROBE_TIMEOUT_SECONDS = 2.0
REUSE_SECONDS = 1.0
REDIS_DOWN = (
    "Redis is unreachable: decisions come from this process's memory cache and Keycloak; "
    "browser sessions are refused with 503 until Redis answers again"
)
EVENTS_UNREAD = (
    "Keycloak's events cannot be read: rights changes are not seen, so cached decisions older than "
    "GATE_REVOCATION_MAX_DELAY are asked of Keycloak again"
)


class Readiness:
    def __init__(
        self,
        http: httpx.AsyncClient,
        jwks_url: str,
        token_url: str,
        redis: Redis | None,
        revocation: Revocation | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._revocation = revocation
        self._jwks_url = jwks_url
        self._token_url = token_url
        self._redis = redis
        self._clock = clock
        self._last: tuple[float, int, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) naming each dependency's state; probed at most once per second."""
        async with self._lock:
            if self._last is None or self._clock() - self._last[0] >= REUSE_SECONDS:
                status, body = await self._probe()
                self._last = (self._clock(), status, body)
            return self._last[1], self._last[2]

    async def _probe(self) -> tuple[int, dict[str, Any]]:
        probes: dict[str, Awaitable[str]] = {
            "keycloak_jwks": self._jwks(),
            "keycloak_token_endpoint": self._token_endpoint(),
        }
        if self._redis is not None:
            probes["redis"] = self._ping()
        states = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
        dependencies = {name: {"state": "up" if state == "" else "down", **({"error": state} if state else {})} for name, state in states.items()}
        if self._redis is None:
            dependencies["redis"] = {"state": "not configured"}
        events_unread = self._revocation is not None and not self._revocation.healthy
        if self._revocation is not None:
            dependencies["keycloak_events"] = _events_state(self._revocation)
        if states["keycloak_jwks"] or states["keycloak_token_endpoint"]:
            return 503, {
                "status": "unavailable",
                "detail": "Keycloak is unreachable: only decisions already cached are answered, everything else gets 503",
                "dependencies": dependencies,
            }
        if states.get("redis"):
            return 200, {"status": "degraded", "detail": REDIS_DOWN, "dependencies": dependencies}
        if events_unread:
            return 200, {"status": "degraded", "detail": EVENTS_UNREAD, "dependencies": dependencies}
        return 200, {"status": "ok", "dependencies": dependencies}

    async def _jwks(self) -> str:
        """'' when the JWKS answers with keys, else what went wrong."""
        try:
            response = await self._get(self._jwks_url)
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            if not response.json().get("keys"):
                return "no signing keys published"
            return ""
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            return _describe(error)

    async def _token_endpoint(self) -> str:
        """The token endpoint only takes POSTs; any answer below 500 shows Keycloak serves it."""
        try:
            response = await self._get(self._token_url)
        except httpx.HTTPError as error:
            return _describe(error)
        return f"HTTP {response.status_code}" if response.status_code >= 500 else ""

    async def _get(self, url: str) -> httpx.Response:
        return await self._http.get(url, timeout=PROBE_TIMEOUT_SECONDS, extensions={ENDPOINT_EXTENSION: "ready"})

    async def _ping(self) -> str:
        assert self._redis is not None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                await self._redis.ping()
        except (RedisError, TimeoutError, OSError) as error:
            return _describe(error)
        return ""


def _events_state(revocation: Revocation) -> dict[str, Any]:
    state = revocation.state()
    if not state.enabled:
        return {"state": "not configured"}
    described: dict[str, Any] = {"state": "up" if state.healthy else "down"}
    if state.last_success is not None:
        described["last_read"] = round(state.last_success, 3)
    if state.last_error:
        described["error"] = state.last_error[:200]
    return described


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200] if str(error) else type(error).__name__
