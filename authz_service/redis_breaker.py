"""Redis behind a circuit breaker: a down or hung Redis costs one timeout, not one per request.

Without it, a hung Redis (stopped process, blackholed network) makes every decision-cache miss and
every session lookup wait for the socket timeout. After one failure the breaker opens: every Redis
command fails at once with `RedisUnavailable` (a RedisError, so the decision cache falls back to
memory + Keycloak and sessions fail closed with 503), while a background task PINGs Redis every
`cooldown` seconds and closes the breaker on the first answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)


class RedisUnavailable(RedisError):
    """The breaker is open: Redis failed recently and is not asked until a probe answers."""


class Breaker:
    """Open/closed state plus the background re-probe; one per gate process."""

    def __init__(self, cooldown: float, on_trip: Callable[[], None] = lambda: None) -> None:
        self.cooldown = cooldown
        self._on_trip = on_trip
        self.opened_at: float | None = None
        self.last_error = ""
        self._probe: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def trip(self, error: Exception, probe: Callable[[], Any]) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        if self.opened_at is not None:
            return
        self.opened_at = time.monotonic()
        self._on_trip()
        log.error("Redis failed (%s); not asking it again until it answers a PING", self.last_error)
        self._probe = asyncio.get_running_loop().create_task(self._reprobe(probe))

    async def _reprobe(self, probe: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(self.cooldown)
            try:
                await probe()
            except RedisError as error:
                self.last_error = f"{type(error).__name__}: {error}"
                continue
            log.warning("Redis answers again after %.1f s; using it again", time.monotonic() - (self.opened_at or 0))
            self.opened_at = None
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()


class GuardedRedis(Redis):
    """redis.asyncio.Redis whose commands pass through a Breaker; no client-side retries."""

    breaker: Breaker

    @classmethod
    def connect(cls, url: str, timeout: float, breaker: Breaker) -> GuardedRedis:
        # redis-py retries timeouts three times by default: four timeouts instead of one.
        redis = cls.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        redis.breaker = breaker
        return redis

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.breaker.is_open:
            raise RedisUnavailable(f"Redis is not used until it answers again ({self.breaker.last_error})")
        try:
            return await super().execute_command(*args, **options)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            self.breaker.trip(error, self._ping_unguarded)
            raise RedisUnavailable(str(error)) from error

    async def _ping_unguarded(self) -> Any:
        # Pooled connections may point at a Redis that has since restarted: start afresh.
        await self.connection_pool.disconnect()
        return await super().execute_command("PING")

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.breaker.close()
        await super().aclose(close_connection_pool)
