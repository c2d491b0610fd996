"""Keycloak Authorization Services (UMA 2.0) decision requests.

One `resource#scope` per request: in decision mode Keycloak answers true when ANY requested
permission is granted, so asking for several at once would leak rights. Each call carries its
user's token in its own request headers; nothing is shared between concurrent calls, unlike
python-keycloak's UMA helper, which swaps a shared Authorization header.
"""

from __future__ import annotations

import logging

import httpx

from .routes import Permission

log = logging.getLogger(__name__)

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"


class KeycloakUnavailable(Exception):
    """Keycloak could not give an answer; the request is refused (fail closed)."""


class TokenRejected(Exception):
    """Keycloak no longer accepts the token (for example, its session was ended)."""


class UmaClient:
    def __init__(self, http: httpx.AsyncClient, token_url: str, audience: str) -> None:
        self._http = http
        self._token_url = token_url
        self._audience = audience
        self.request_count = 0

    async def is_granted(self, access_token: str, permission: Permission) -> bool:
        self.request_count += 1
        try:
            response = await self._http.post(
                self._token_url,
                data={
                    "grant_type": UMA_GRANT,
                    "audience": self._audience,
                    "permission": f"{permission.resource}#{permission.scope}",
                    "response_mode": "decision",
                },
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except httpx.HTTPError as error:
            raise KeycloakUnavailable(f"Keycloak unreachable: {error!r}") from error
        return self._interpret(response, permission)

    async def granted_permissions(self, access_token: str) -> frozenset[str]:
        """Every `resource#scope` the token's user holds, in one call (no `permission` field).

        Keycloak evaluates this at about the cost of one decision; it lets the gate answer every
        workspace question, and list the readable workspaces, from one answer per user.
        """
        self.request_count += 1
        try:
            response = await self._http.post(
                self._token_url,
                data={"grant_type": UMA_GRANT, "audience": self._audience, "response_mode": "permissions"},
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except httpx.HTTPError as error:
            raise KeycloakUnavailable(f"Keycloak unreachable: {error!r}") from error
        if response.status_code == 403:
            return frozenset()
        if response.status_code == 401:
            raise TokenRejected(_error_code(response) or "token rejected by Keycloak")
        if response.status_code != 200:
            raise KeycloakUnavailable(f"Keycloak answered {response.status_code} {_error_code(response) or ''}".strip())
        try:
            return frozenset(
                f"{granted['rsname']}#{scope}" for granted in response.json() for scope in granted.get("scopes", ())
            )
        except (ValueError, TypeError, KeyError):
            raise KeycloakUnavailable("Keycloak sent an unreadable permission set") from None

    def _interpret(self, response: httpx.Response, permission: Permission) -> bool:
        error = _error_code(response)
        if response.status_code == 200:
            try:
                return response.json().get("result") is True
            except ValueError:
                raise KeycloakUnavailable("Keycloak sent an unreadable decision") from None
        if response.status_code == 403:
            return False
        if response.status_code == 401:
            raise TokenRejected(error or "token rejected by Keycloak")
        if response.status_code == 400 and error in ("invalid_resource", "invalid_scope"):
            log.error(
                "realm has no permission definition for %s#%s (%s); refusing",
                permission.resource,
                permission.scope,
                error,
            )
            return False
        raise KeycloakUnavailable(f"Keycloak answered {response.status_code} {error or ''}".strip())


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
