"""Access-token validation against the realm's published signing keys.

Earlier gates decoded tokens without checking signatures, or accepted HMAC beside RSA. Here a token
is only believed after its signature verifies with an asymmetric key from the realm's JWKS, and its
issuer, lifetime, type and audience all match this deployment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

import httpx
import jwt

# Asymmetric algorithms only: a symmetric one would let anyone holding the public key sign tokens.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
# Seconds of clock skew tolerated between Keycloak and the gate.
LEEWAY_SECONDS = 5
# How long a verified token is remembered (never beyond its expiry).
VALIDATED_TOKEN_SECONDS = 60.0
VALIDATED_TOKENS_MAX = 10_000


class TokenError(Exception):
    """The caller's token cannot be trusted; answered with 401. `reason` is a short code for metrics."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class SigningKeysUnavailable(Exception):
    """The JWKS could not be fetched, so no token can be checked; answered with 503."""


@dataclass(frozen=True)
class Identity:
    subject: str
    username: str
    email: str | None
    roles: frozenset[str]
    client: str
    expires_at: float
    token: str


class SigningKeys:
    """The realm's JWKS, fetched lazily and refreshed when a token names a key we do not know.

    Refreshes are rate limited, so a flood of tokens with invented `kid`s cannot turn the gate
    into a JWKS request amplifier against Keycloak.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        jwks_url: str,
        min_refresh_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._jwks_url = jwks_url
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._last_refresh: float | None = None
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    async def get(self, kid: str) -> dict[str, Any]:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and self._may_refresh():
                await self._refresh()
        if kid in self._keys:
            return self._keys[kid]
        if not self._keys:
            raise SigningKeysUnavailable("signing keys are not loaded yet")
        raise TokenError("token signed with an unknown key", "unknown_key")

    def _may_refresh(self) -> bool:
        return (
            self._last_refresh is None
            or self._clock() - self._last_refresh >= self._min_refresh_interval
        )

    async def _refresh(self) -> None:
        self._last_refresh = self._clock()
        self.fetch_count += 1
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise SigningKeysUnavailable(f"cannot fetch signing keys: {error}") from error
        self._keys = {
            key["kid"]: key
            for key in document.get("keys", [])
            if isinstance(key, dict) and "kid" in key and key.get("use", "sig") == "sig"
        }


class TokenValidator:
    """Turns a bearer token into an Identity, or raises TokenError saying why not."""

    def __init__(
        self,
        keys: SigningKeys,
        issuer: str,
        audience: str,
        clock: Callable[[], float] = time.time,
        remember_at_most: int = VALIDATED_TOKENS_MAX,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        # Clients send the same token for minutes; parsing and verifying it again on every request
        # is most of the gate's CPU time. An entry lives until the token expires, at most a minute.
        # A plain dict (insertion ordered, oldest evicted first) keeps a hit to one lookup.
        self._validated: dict[str, tuple[Identity, float]] = {}
        self._remember_at_most = remember_at_most

    async def validate(self, token: str) -> Identity:
        """Check an access token presented to the gate."""
        remembered = self._validated.get(token)
        if remembered is not None and remembered[1] > self._clock():
            return remembered[0]
        identity = self._identity(await self._verified_claims(token), token)
        self._remember(token, identity)
        return identity

    def _remember(self, token: str, identity: Identity) -> None:
        if len(self._validated) >= self._remember_at_most:
            for oldest in list(islice(self._validated, max(1, self._remember_at_most // 10))):
                del self._validated[oldest]
        valid_until = min(identity.expires_at, self._clock() + VALIDATED_TOKEN_SECONDS)
        self._validated[token] = (identity, valid_until)

    async def validate_id_token(self, token: str, client_id: str, nonce: str) -> dict[str, Any]:
        """Check the ID token of a sign-in this gate started (audience is the gate, nonce matches)."""
        claims = await self._verified_claims(token)
        audience = claims.get("aud", [])
        if claims.get("typ", "ID") != "ID":
            raise TokenError("not an ID token")
        if client_id not in ({audience} if isinstance(audience, str) else set(audience)):
            raise TokenError("ID token was issued for another client")
        if claims.get("nonce") != nonce:
            raise TokenError("ID token nonce does not match the sign-in")
        return claims

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("malformed token", "malformed") from None
        algorithm = header.get("alg")
        kid = header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenError(f"signing algorithm {algorithm!r} is not accepted", "algorithm")
        if not isinstance(kid, str):
            raise TokenError("token names no signing key", "unknown_key")
        return self._verify(token, algorithm, await self._keys.get(kid))

    def _verify(self, token: str, algorithm: str, jwk: dict[str, Any]) -> dict[str, Any]:
        if jwk.get("kty") != _KEY_TYPES[algorithm[:2]] or jwk.get("alg", algorithm) != algorithm:
            raise TokenError("token algorithm does not match its signing key", "algorithm")
        try:
            key = _public_key(json.dumps(jwk, sort_keys=True), algorithm)
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", "expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("token not yet valid", "not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token issued by another issuer", "issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature does not verify", "signature") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError) as error:
            raise TokenError(f"invalid token: {error}") from None

    def _identity(self, claims: dict[str, Any], token: str) -> Identity:
        if claims.get("typ", "Bearer") != "Bearer":
            raise TokenError("not an access token", "token_type")
        audience = claims.get("aud", [])
        audiences = {audience} if isinstance(audience, str) else set(audience)
        client = claims.get("azp", "")
        if self._audience not in audiences and client != self._audience:
            raise TokenError("token was not issued for this gateway", "audience")
        realm_access = claims.get("realm_access") or {}
        roles = realm_access.get("roles", []) if isinstance(realm_access, dict) else []
        return Identity(
            subject=str(claims["sub"]),
            username=str(claims.get("preferred_username") or claims["sub"]),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
            roles=frozenset(role for role in roles if isinstance(role, str)),
            client=str(client),
            expires_at=float(claims["exp"]),
            token=token,
        )


@lru_cache(maxsize=64)
def _public_key(jwk_json: str, algorithm: str) -> Any:
    """Building a key object from a JWK costs more than verifying a signature; do it once per key."""
    return jwt.PyJWK(json.loads(jwk_json), algorithm=algorithm).key
