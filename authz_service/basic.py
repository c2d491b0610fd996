"""`Authorization: Basic` exchanged at Keycloak for an access token, for clients that know only a
username and password (MLFLOW_TRACKING_USERNAME/PASSWORD, `curl -u`) and for robots.

A username with the robot prefix (`robot-`) is a client id: its password is the client secret and
the exchange is the client-credentials grant. Every other username gets the password grant through
a public client that allows direct grants (`mlflow-cli` by default; anyone can already use that
grant with it, so the gate adds no new way in). The rule depends on the username alone, so a wrong
secret is only ever tried once, by the grant that belongs to it, and Keycloak alone says yes.

The exchanged token is cached until shortly before it expires, under an HMAC-SHA256 of the username
and password keyed by the deployment's exchange secret. Memory holds the token under that digest;
Redis holds it encrypted (AES-GCM) with a second key derived the same way, so neither holds a
password, a plain hash of one, or a usable token. A different password is a different key: a wrong
password is never answered from the cache of a right one, nor the reverse.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from cachetools import TLRUCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .oidc import token_error
from .uma import KeycloakUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "mlflow-gate:basic-token:v1:"
# A cached token is dropped this long before it expires, so it is never handed on already stale.
EXPIRY_MARGIN_SECONDS = 15.0
_NONCE_BYTES = 12


class BasicRejected(Exception):
    """Keycloak refused the username and password (or client id and secret); answered with 401."""


class MalformedBasic(Exception):
    """The header is not `Basic base64(username:password)` with a non-empty username."""


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    @classmethod
    def parse(cls, encoded: str) -> BasicCredentials:
        """RFC 7617; UTF-8 first, then Latin-1, which is what `requests` (the MLflow client) sends."""
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedBasic("Basic credentials are not valid base64") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        username, colon, password = text.partition(":")
        if not colon or not username:
            raise MalformedBasic("Basic credentials need a username and a password")
        return cls(username, password)


@dataclass(frozen=True)
class _Keys:
    lookup: str
    encryption: bytes


class KeyedDigests:
    """HMAC-SHA256 under the deployment's exchange secret; labels keep each use's digests apart."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def digest(self, label: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{label}\0{value}".encode(), hashlib.sha256).digest()


class BasicExchange:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        password_client_id: str,
        robot_prefix: str,
        digests: KeyedDigests,
        redis: Redis | None,
        cache_size: int,
        clock: Callable[[], float] = time.time,
        counted: Callable[[str], None] = lambda _result: None,
    ) -> None:
        """`counted` is told each exchange's result: ok, rejected or unavailable (the metric)."""
        self._http = http
        self._token_url = token_url
        self._password_client_id = password_client_id
        self._robot_prefix = robot_prefix
        self._digests = digests
        self._redis = redis
        self._clock = clock
        self._memory: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=cache_size, ttu=lambda _key, item, _now: item[1], timer=clock
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._counted = counted

    async def cached_token(self, credentials: BasicCredentials) -> str | None:
        """The token a previous exchange of exactly these credentials produced, if still fresh."""
        return await self._cached(self._keys(credentials))

    async def access_token(self, credentials: BasicCredentials) -> str:
        """A token for these credentials, from the cache or one exchange at Keycloak.

        Concurrent requests with the same credentials wait for one exchange instead of each
        starting their own (and each counting as a failure when the password is wrong).
        """
        keys = self._keys(credentials)
        token = await self._cached(keys)
        if token is not None:
            return token
        lock = self._locks.get(keys.lookup)
        if lock is None:
            lock = self._locks[keys.lookup] = asyncio.Lock()
        async with lock:
            token = await self._cached(keys)
            if token is not None:
                return token
            token, expires_in = await self._exchange(credentials)
            await self._store(keys, token, self._clock() + expires_in - EXPIRY_MARGIN_SECONDS)
            return token

    def is_robot(self, username: str) -> bool:
        return username.startswith(self._robot_prefix)

    def _keys(self, credentials: BasicCredentials) -> _Keys:
        material = f"{credentials.username}:{credentials.password}"
        return _Keys(
            lookup=KEY_PREFIX + self._digests.digest("basic-lookup", material).hex(),
            encryption=self._digests.digest("basic-encryption", material),
        )

    async def _exchange(self, credentials: BasicCredentials) -> tuple[str, float]:
        try:
            answer = await self._ask_keycloak(credentials)
        except BasicRejected:
            self._counted("rejected")
            raise
        except KeycloakUnavailable:
            self._counted("unavailable")
            raise
        self._counted("ok")
        return answer

    async def _ask_keycloak(self, credentials: BasicCredentials) -> tuple[str, float]:
        if self.is_robot(credentials.username):
            form = {
                "grant_type": "client_credentials",
                "client_id": credentials.username,
                "client_secret": credentials.password,
            }
        else:
            form = {
                "grant_type": "password",
                "client_id": self._password_client_id,
                "username": credentials.username,
                "password": credentials.password,
            }
        try:
            response = await self._http.post(self._token_url, data=form)
        except httpx.HTTPError as error:
            raise KeycloakUnavailable(f"Keycloak unreachable: {error!r}") from error
        if response.status_code in (400, 401):
            raise BasicRejected(token_error(response))
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} to a Basic exchange")
        try:
            body = response.json()
            return str(body["access_token"]), float(body["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise KeycloakUnavailable("Keycloak sent an unreadable token response") from None

    async def _cached(self, keys: _Keys) -> str | None:
        item = self._memory.get(keys.lookup)
        if item is not None:
            return item[0]
        if self._redis is None:
            return None
        try:
            sealed = await self._redis.get(keys.lookup)
        except RedisError as error:
            log.warning("Basic cache: Redis read failed, exchanging again: %s", error)
            return None
        if sealed is None:
            return None
        opened = _open(keys, sealed)
        if opened is None or opened[1] <= self._clock():
            return None
        self._memory[keys.lookup] = opened
        return opened[0]

    async def _store(self, keys: _Keys, token: str, cache_until: float) -> None:
        ttl = cache_until - self._clock()
        if ttl <= 0:
            return
        self._memory[keys.lookup] = (token, cache_until)
        if self._redis is None:
            return
        try:
            await self._redis.set(keys.lookup, _seal(keys, token, cache_until), px=max(1, int(ttl * 1000)))
        except RedisError as error:
            log.warning("Basic cache: Redis write failed: %s", error)


def _seal(keys: _Keys, token: str, cache_until: float) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps({"token": token, "until": cache_until}).encode()
    return nonce + AESGCM(keys.encryption).encrypt(nonce, plain, keys.lookup.encode())


def _open(keys: _Keys, sealed: bytes | str) -> tuple[str, float] | None:
    data = sealed.encode("latin-1") if isinstance(sealed, str) else sealed
    try:
        plain = AESGCM(keys.encryption).decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], keys.lookup.encode())
        body = json.loads(plain)
        return str(body["token"]), float(body["until"])
    except (InvalidTag, ValueError, KeyError, TypeError):
        log.warning("Basic cache: an entry in Redis could not be opened; exchanging again")
        return None

