"""The gate's own OpenID Connect client calls to Keycloak: code exchange, refresh, sign-out.

These use the gate's confidential client credentials and run only on sign-in, refresh and sign-out,
never on the per-request path.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from .settings import Settings
from .uma import KeycloakUnavailable


class GrantRejected(Exception):
    """Keycloak refused the code or refresh token (used, expired, or its session ended)."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    id_token: str | None
    access_expires_at: float
    refresh_expires_at: float

    @classmethod
    def from_response(cls, body: dict[str, Any], now: float) -> TokenSet:
        try:
            return cls(
                access_token=body["access_token"],
                refresh_token=body["refresh_token"],
                id_token=body.get("id_token"),
                access_expires_at=now + float(body["expires_in"]),
                refresh_expires_at=now + float(body.get("refresh_expires_in") or body["expires_in"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise KeycloakUnavailable(f"unexpected token response: missing {error}") from None


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        if settings.client_secret is None or settings.public_url is None:
            raise ValueError("browser sign-in needs GATE_CLIENT_SECRET and GATE_PUBLIC_URL")
        self._http = http
        self._settings = settings
        self._client_secret = settings.client_secret
        self.redirect_uri = f"{settings.public_url}/oauth2/callback"

    def authorization_url(self, state: str, nonce: str, code_challenge: str) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._settings.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self._settings.public_realm_url}/protocol/openid-connect/auth?{query}"

    async def exchange_code(self, code: str, code_verifier: str, now: float) -> TokenSet:
        body = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": code_verifier,
            }
        )
        return TokenSet.from_response(body, now)

    async def refresh(self, refresh_token: str, now: float) -> TokenSet:
        body = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})
        return TokenSet.from_response(body, now)

    async def end_session(self, refresh_token: str) -> None:
        """Ends the Keycloak session too, so the next sign-in asks for the password again."""
        try:
            response = await self._http.post(
                f"{self._settings.realm_url}/protocol/openid-connect/logout",
                data={**self._client_credentials(), "refresh_token": refresh_token},
            )
        except httpx.HTTPError as error:
            raise KeycloakUnavailable(f"Keycloak unreachable: {error!r}") from error
        if response.status_code >= 500:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} to sign-out")

    async def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self._http.post(self._settings.token_url, data={**self._client_credentials(), **form})
        except httpx.HTTPError as error:
            raise KeycloakUnavailable(f"Keycloak unreachable: {error!r}") from error
        if response.status_code in (400, 401):
            raise GrantRejected(token_error(response))
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} to a token request")
        try:
            return response.json()
        except ValueError:
            raise KeycloakUnavailable("Keycloak sent an unreadable token response") from None

    def _client_credentials(self) -> dict[str, str]:
        return {"client_id": self._settings.client_id, "client_secret": self._client_secret}


def token_error(response: httpx.Response) -> str:
    """Keycloak's own words for a refused token request, whatever shape its body has."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    return str(body.get("error_description") or body.get("error") or response.status_code)
