"""Failed Basic attempts per username and per address, in this process's memory (Redis: integration)."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from authz_service.basic import KeyedDigests
from authz_service.throttle import FailureThrottle

from .fake_clock import Clock


def throttle(clock: Clock, redis: object = None) -> FailureThrottle:
    return FailureThrottle(KeyedDigests("x" * 32), redis, limit=3, window=300, clock=clock)  # type: ignore[arg-type]


async def fail(throttle: FailureThrottle, times: int, username: str, address: str) -> None:
    for _ in range(times):
        await throttle.record_failure(username, address)


def test_the_limit_blocks_the_username_until_the_window_ends() -> None:
    clock = Clock()
    limiter = throttle(clock)
    asyncio.run(fail(limiter, 2, "bob", "10.0.0.1"))
    assert asyncio.run(limiter.retry_after("bob", "10.0.0.9")) is None
    clock.now += 100
    asyncio.run(fail(limiter, 1, "bob", "10.0.0.2"))
    assert asyncio.run(limiter.retry_after("Bob", "10.0.0.9")) == 200
    clock.now += 200
    assert asyncio.run(limiter.retry_after("bob", "10.0.0.9")) is None


def test_the_limit_blocks_the_address_for_every_username() -> None:
    clock = Clock()
    limiter = throttle(clock)

    async def scenario() -> None:
        for name in ("a", "b", "c"):
            await limiter.record_failure(name, "10.0.0.1")

    asyncio.run(scenario())
    assert asyncio.run(limiter.retry_after("d", "10.0.0.1")) == 300
    assert asyncio.run(limiter.retry_after("d", "10.0.0.2")) is None


class BrokenRedis:
    def __getattr__(self, name: str):
        def fail(*args: object, **kwargs: object) -> None:
            raise RedisConnectionError("Redis is down")

        return fail


def test_a_redis_outage_counts_in_memory_instead_of_forgetting() -> None:
    clock = Clock()
    limiter = throttle(clock, BrokenRedis())
    asyncio.run(fail(limiter, 3, "bob", "10.0.0.1"))
    assert asyncio.run(limiter.retry_after("bob", "10.0.0.1")) == 300
