"""The one place that turns a request's credentials into an access token.

In order: `Authorization: Bearer` (the token itself), `Authorization: Basic` (exchanged at Keycloak,
see basic.py), otherwise the session cookie. Whatever the source, the token then goes through the
same validation and decisions in checks.py. Resolution is lazy: public and refused routes never
touch Redis or Keycloak.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from redis.exceptions import RedisError

from .basic import BasicCredentials, BasicExchange, BasicRejected, MalformedBasic
from .origin import cross_site_refusal
from .sessions import SessionStore
from .throttle import FailureThrottle
from .uma import KeycloakUnavailable

log = logging.getLogger(__name__)

Credentials = Callable[[], Awaitable[str | None]]
"""Resolves the caller's access token, only once it is needed; None when the caller sent none."""


class CredentialsUnavailable(Exception):
    """The session store or Keycloak could not produce a token; answered with 503."""


class CredentialsRejected(Exception):
    """The credentials sent are wrong or malformed; answered with 401."""


class CrossSiteRefused(Exception):
    """A state-changing request rode on the session cookie from another site; answered with 403."""


class TooManyFailures(Exception):
    """Basic attempts for this username or address are throttled; answered with 429."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed Basic attempts; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class BasicLogin:
    exchange: BasicExchange
    throttle: FailureThrottle

    async def access_token(self, encoded: str, address: str) -> str:
        try:
            credentials = BasicCredentials.parse(encoded)
        except MalformedBasic as error:
            raise CredentialsRejected(str(error)) from None
        # A cache hit proves the right password: a throttled user's working scripts keep working.
        token = await self.exchange.cached_token(credentials)
        if token is not None:
            return token
        retry_after = await self.throttle.retry_after(credentials.username, address)
        if retry_after is not None:
            raise TooManyFailures(retry_after)
        try:
            return await self.exchange.access_token(credentials)
        except BasicRejected as error:
            log.info("Basic credentials of %r from %s rejected by Keycloak: %s", credentials.username, address, error)
            await self.throttle.record_failure(credentials.username, address)
            raise CredentialsRejected("the username and password (or client id and secret) were rejected") from None
        except KeycloakUnavailable as error:
            raise CredentialsUnavailable(str(error)) from error


@dataclass(frozen=True)
class CredentialSources:
    """Built once per process; `for_request` gives checks.py the request's Credentials callable."""

    sessions: SessionStore | None
    basic: BasicLogin | None
    public_origin: str | None

    def for_request(
        self,
        method: str,
        headers: Mapping[str, str],
        session_id: str | None,
        address: str,
    ) -> Credentials:
        async def resolve() -> str | None:
            scheme, _, value = headers.get("authorization", "").strip().partition(" ")
            value = value.strip()
            if scheme.lower() == "bearer" and value:
                return value
            if scheme.lower() == "basic" and value:
                # With Basic switched off the header counts as no credentials: the caller gets 401.
                return None if self.basic is None else await self.basic.access_token(value, address)
            if not session_id or self.sessions is None or self.public_origin is None:
                return None
            refusal = cross_site_refusal(
                method, headers.get("origin"), headers.get("sec-fetch-site"), self.public_origin
            )
            if refusal is not None:
                raise CrossSiteRefused(refusal)
            try:
                return await self.sessions.access_token(session_id)
            except (RedisError, KeycloakUnavailable) as error:
                raise CredentialsUnavailable(str(error)) from error

        return resolve
