"""Server-side browser sessions behind an opaque cookie, and the one-time sign-in states.

The cookie holds only a random id; tokens stay on the server (Redis when configured, so every gate
process sees the same sessions). Keys are digests of the id, so a Redis dump holds no usable cookie.
Refreshing is serialised per session: Keycloak may rotate refresh tokens, and two concurrent UI
requests replaying the same one would end the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

from cachetools import TLRUCache
from redis.asyncio import Redis

from .metrics import Metrics
from .oidc import GrantRejected, OidcClient, TokenSet

SESSION_PREFIX = "mlflow-gate:session:v1:"
SIGNIN_PREFIX = "mlflow-gate:signin:v1:"
LOCK_PREFIX = "mlflow-gate:refresh-lock:v1:"
# Refresh this long before the access token expires, so a request never carries an expired token.
REFRESH_MARGIN_SECONDS = 15.0
SIGNIN_LIFETIME_SECONDS = 600
LOCK_SECONDS = 10.0


@dataclass(frozen=True)
class Session:
    tokens: TokenSet
    ends_at: float

    def to_json(self) -> str:
        return json.dumps({"tokens": asdict(self.tokens), "ends_at": self.ends_at})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Session:
        data = json.loads(raw)
        return cls(TokenSet(**data["tokens"]), data["ends_at"])


@dataclass(frozen=True)
class SigninState:
    code_verifier: str
    nonce: str
    return_to: str


class KeyValue:
    """Redis, or a bounded in-process map for a single gate process without Redis."""

    def __init__(self, redis: Redis | None, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._memory: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=100_000, ttu=lambda _key, item, _now: item[1], timer=clock
        )
        self._clock = clock

    async def get(self, key: str) -> str | None:
        if self._redis is not None:
            return _text(await self._redis.get(key))
        item = self._memory.get(key)
        return None if item is None else item[0]

    async def set(self, key: str, value: str, ttl: float) -> None:
        if self._redis is not None:
            await self._redis.set(key, value, px=max(1, int(ttl * 1000)))
        else:
            self._memory[key] = (value, self._clock() + ttl)

    async def pop(self, key: str) -> str | None:
        """Read and delete in one step, so a one-time value can be used only once."""
        if self._redis is not None:
            return _text(await self._redis.getdel(key))
        item = self._memory.pop(key, None)
        return None if item is None else item[0]

    async def acquire(self, key: str, ttl: float) -> bool:
        if self._redis is not None:
            return bool(await self._redis.set(key, "1", nx=True, px=int(ttl * 1000)))
        if key in self._memory:
            return False
        self._memory[key] = ("1", self._clock() + ttl)
        return True

    async def delete(self, key: str) -> None:
        if self._redis is not None:
            await self._redis.delete(key)
        else:
            self._memory.pop(key, None)


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SessionStore:
    def __init__(
        self,
        store: KeyValue,
        oidc: OidcClient,
        lifetime: float,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._oidc = oidc
        self._lifetime = lifetime
        self._clock = clock
        self._metrics = metrics
        self.refresh_count = 0
        self._local_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def begin_signin(self, state: SigninState) -> str:
        """Remember a sign-in in progress; the returned value is both the OAuth state and cookie."""
        state_id = secrets.token_urlsafe(32)
        await self._store.set(SIGNIN_PREFIX + _digest(state_id), json.dumps(asdict(state)), SIGNIN_LIFETIME_SECONDS)
        return state_id

    async def finish_signin(self, state_id: str) -> SigninState | None:
        raw = await self._store.pop(SIGNIN_PREFIX + _digest(state_id))
        return None if raw is None else SigninState(**json.loads(raw))

    async def create(self, tokens: TokenSet) -> str:
        """Always a fresh id: an id planted before sign-in (session fixation) is never promoted."""
        session_id = secrets.token_urlsafe(32)
        session = Session(tokens, min(self._clock() + self._lifetime, tokens.refresh_expires_at))
        await self._save(session_id, session)
        return session_id

    async def access_token(self, session_id: str) -> str | None:
        """A currently valid access token for the session, refreshing it when due; None if over."""
        session = await self._load(session_id)
        if session is None:
            return None
        if not self._refresh_due(session):
            return session.tokens.access_token
        lock = self._local_locks.get(session_id)
        if lock is None:
            lock = self._local_locks[session_id] = asyncio.Lock()
        async with lock:
            return await self._refresh_once(session_id)

    async def end(self, session_id: str) -> Session | None:
        key = SESSION_PREFIX + _digest(session_id)
        raw = await self._store.pop(key)
        return None if raw is None else Session.from_json(raw)

    async def _refresh_once(self, session_id: str) -> str | None:
        lock_key = LOCK_PREFIX + _digest(session_id)
        deadline = self._clock() + LOCK_SECONDS
        while not await self._store.acquire(lock_key, LOCK_SECONDS):
            if self._clock() > deadline:
                return None
            await asyncio.sleep(0.05)
        try:
            session = await self._load(session_id)
            if session is None or not self._refresh_due(session):
                return None if session is None else session.tokens.access_token
            try:
                tokens = await self._oidc.refresh(session.tokens.refresh_token, self._clock())
            except GrantRejected:
                await self.end(session_id)
                return None
            if tokens.id_token is None:
                tokens = TokenSet(**{**asdict(tokens), "id_token": session.tokens.id_token})
            await self._save(session_id, Session(tokens, session.ends_at))
            self.refresh_count += 1
            if self._metrics is not None:
                self._metrics.session_refreshes.inc()
            return tokens.access_token
        finally:
            await self._store.delete(lock_key)

    def _refresh_due(self, session: Session) -> bool:
        return session.tokens.access_expires_at - self._clock() < REFRESH_MARGIN_SECONDS

    async def _load(self, session_id: str) -> Session | None:
        raw = await self._store.get(SESSION_PREFIX + _digest(session_id))
        if raw is None:
            return None
        session = Session.from_json(raw)
        return session if session.ends_at > self._clock() else None

    async def _save(self, session_id: str, session: Session) -> None:
        ttl = min(session.ends_at, session.tokens.refresh_expires_at) - self._clock()
        if ttl > 0:
            await self._store.set(SESSION_PREFIX + _digest(session_id), session.to_json(), ttl)
