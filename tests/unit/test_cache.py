from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from authz_service.cache import DecisionCache, decision_key
from authz_service.revocation import NotBefore
from authz_service.routes import Permission
from authz_service.tokens import Identity

from .fake_clock import Clock

DELETE = Permission("experiments", "delete")
READ = Permission("experiments", "read")


class FakeRedis:
    """The two Redis calls the cache makes, with expiry, for tests that need no server."""

    def __init__(self, clock: Clock, broken: bool = False) -> None:
        self.clock = clock
        self.broken = broken
        self.data: dict[str, tuple[str, float]] = {}

    async def get(self, key: str) -> bytes | None:
        if self.broken:
            raise RedisConnectionError("down")
        value, expires_at = self.data.get(key, ("", 0.0))
        return value.encode() if expires_at > self.clock.now else None

    async def set(self, key: str, value: str, px: int) -> None:
        if self.broken:
            raise RedisConnectionError("down")
        self.data[key] = (value, self.clock.now + px / 1000)


def identity(subject: str = "bob", roles: set[str] | None = None, expires_at: float = 10_300.0) -> Identity:
    return Identity(subject, subject, None, frozenset(roles or {"Default"}), "mlflow-cli", expires_at, "token")


def run(coroutine):
    return asyncio.run(coroutine)


def test_keys_separate_users_role_sets_clients_and_permissions() -> None:
    keys = {
        decision_key(identity("bob"), DELETE),
        decision_key(identity("alice"), DELETE),
        decision_key(identity("bob", {"Admin"}), DELETE),
        decision_key(identity("bob", {"Default", "Admin"}), DELETE),
        decision_key(identity("bob"), READ),
        decision_key(Identity("bob", "bob", None, frozenset({"Default"}), "other", 1.0, "t"), DELETE),
    }
    assert len(keys) == 6
    assert decision_key(identity("bob"), DELETE) == decision_key(identity("bob", expires_at=1.0), DELETE)
    assert "bob" not in decision_key(identity("bob"), DELETE)


def test_entry_lives_no_longer_than_the_configured_maximum() -> None:
    clock = Clock(10_000.0)
    cache = DecisionCache(max_ttl=60, size=100, clock=clock)
    run(cache.put("k", True, token_expires_at=clock.now + 300, decided_at=clock.now))
    clock.now += 59
    assert run(cache.get("k")) is True
    clock.now += 2
    assert run(cache.get("k")) is None


def test_entry_lives_no_longer_than_the_token() -> None:
    clock = Clock(10_000.0)
    cache = DecisionCache(max_ttl=60, size=100, clock=clock)
    run(cache.put("k", False, token_expires_at=clock.now + 10, decided_at=clock.now))
    clock.now += 9
    assert run(cache.get("k")) is False
    clock.now += 2
    assert run(cache.get("k")) is None


def test_expired_token_is_not_cached() -> None:
    clock = Clock(10_000.0)
    cache = DecisionCache(max_ttl=60, size=100, clock=clock)
    run(cache.put("k", True, token_expires_at=clock.now - 1, decided_at=clock.now))
    assert run(cache.get("k")) is None


def test_redis_shares_decisions_between_gate_processes() -> None:
    clock = Clock(10_000.0)
    redis = FakeRedis(clock)
    first = DecisionCache(max_ttl=60, size=100, redis=redis, clock=clock)
    second = DecisionCache(max_ttl=60, size=100, redis=redis, clock=clock)
    run(first.put("k", True, token_expires_at=clock.now + 30, decided_at=clock.now))
    assert run(second.get("k")) is True
    clock.now += 31
    assert run(second.get("k")) is None


def test_redis_outage_is_a_miss_not_an_error() -> None:
    clock = Clock(10_000.0)
    cache = DecisionCache(max_ttl=60, size=100, redis=FakeRedis(clock, broken=True), clock=clock)
    assert run(cache.get("k")) is None
    run(cache.put("k", False, token_expires_at=clock.now + 30, decided_at=clock.now))
    assert run(cache.get("k")) is False


def test_memory_layer_is_bounded() -> None:
    clock = Clock(10_000.0)
    cache = DecisionCache(max_ttl=60, size=3, clock=clock)
    for index in range(10):
        run(cache.put(f"k{index}", True, token_expires_at=clock.now + 30, decided_at=clock.now))
    assert sum(run(cache.get(f"k{index}")) is not None for index in range(10)) == 3


@pytest.mark.parametrize("raw", [b"garbage", b"1:not-a-number", b"1:20000.0", b"1:20000.0:x", b"1:20000.0:1.0:extra"])
def test_unreadable_redis_values_are_misses(raw: bytes) -> None:
    clock = Clock(10_000.0)
    redis = FakeRedis(clock)
    redis.data["k"] = (raw.decode(), clock.now + 100)
    cache = DecisionCache(max_ttl=60, size=10, redis=redis, clock=clock)
    assert run(cache.get("k")) is None


def test_own_decisions_and_shared_ones_are_each_judged_by_their_own_limit() -> None:
    clock = Clock(10_000.0)
    redis = FakeRedis(clock)
    first = DecisionCache(max_ttl=60, size=100, redis=redis, clock=clock)
    second = DecisionCache(max_ttl=60, size=100, redis=redis, clock=clock)
    run(first.put("k", True, token_expires_at=clock.now + 300, decided_at=clock.now - 0.5))
    assert redis.data["k"][0] == f"1:{clock.now + 60}:{clock.now - 0.5}"
    read_soon_after_the_change = NotBefore(own=clock.now - 0.5, shared=clock.now)
    assert run(first.get("k", read_soon_after_the_change)) is True
    assert run(second.get("k", read_soon_after_the_change)) is None
    assert run(second.get("k", NotBefore(own=clock.now, shared=clock.now - 1))) is True, "judged as shared"
    assert run(second.get("k", NotBefore(own=0.0, shared=clock.now))) is None, "remembered as shared"
    assert run(first.get("k", NotBefore(own=clock.now, shared=clock.now))) is None


def test_a_fresher_redis_entry_replaces_a_stale_memory_entry() -> None:
    clock = Clock(10_000.0)
    redis = FakeRedis(clock)
    stale = DecisionCache(max_ttl=60, size=100, redis=redis, clock=clock)
    fresh = DecisionCache(max_ttl=60, size=100, redis=redis, clock=clock)
    run(stale.put("k", True, token_expires_at=clock.now + 300, decided_at=clock.now))
    clock.now += 5
    run(fresh.put("k", False, token_expires_at=clock.now + 300, decided_at=clock.now))
    assert run(stale.get("k", NotBefore(clock.now - 1, clock.now - 1))) is False
