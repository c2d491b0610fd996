"""The realm's token endpoint and the token set it answers with, shared by both sign-in modes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# Refresh this long before expiry (at most half the token's life), so a token never expires in flight.
REFRESH_MARGIN_SECONDS = 30.0
TIMEOUT_SECONDS = 30.0


class SignInError(RuntimeError):
    """Getting a token failed in a way the user must fix (not signed in, wrong secret, no realm)."""


class GrantRefused(SignInError):
    """The realm refused the grant (HTTP 400/401): a spent refresh token, a wrong secret."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error


class RealmUnavailable(SignInError):
    """The realm could not answer (network, 5xx); a token that is still valid may be used meanwhile."""


class HttpSession(Protocol):
    def post(self, url: str, data: dict[str, str], timeout: float) -> Any: ...


@dataclass(frozen=True)
class Realm:
    """Where tokens come from: the realm URL (the tokens' issuer) and the client asking."""

    url: str
    client_id: str

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/protocol/openid-connect/token"

    @property
    def device_endpoint(self) -> str:
        return f"{self.url}/protocol/openid-connect/auth/device"

    @property
    def logout_endpoint(self) -> str:
        return f"{self.url}/protocol/openid-connect/logout"


@dataclass(frozen=True)
class Tokens:
    """An access token with the times that matter; the refresh fields are empty for client credentials."""

    access_token: str
    access_expires_at: float
    refresh_after: float
    refresh_token: str = ""
    refresh_expires_at: float | None = None

    @classmethod
    def from_response(cls, body: dict[str, Any], now: float) -> Tokens:
        try:
            lifetime = float(body["expires_in"])
            refresh_lifetime = float(body.get("refresh_expires_in") or 0)
            return cls(
                access_token=str(body["access_token"]),
                access_expires_at=now + lifetime,
                refresh_after=now + lifetime - min(REFRESH_MARGIN_SECONDS, lifetime / 2),
                refresh_token=str(body.get("refresh_token") or ""),
                # Keycloak says 0 for a refresh token without its own expiry (offline sessions).
                refresh_expires_at=now + refresh_lifetime if refresh_lifetime > 0 else None,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RealmUnavailable(f"unexpected token response from the realm: {error!r}") from None

    def can_refresh(self, now: float) -> bool:
        return bool(self.refresh_token) and (self.refresh_expires_at is None or self.refresh_expires_at > now)

    def still_valid(self, now: float) -> bool:
        return now < self.access_expires_at


class TokenEndpoint:
    def __init__(self, realm: Realm, http: HttpSession) -> None:
        self.realm = realm
        self._http = http

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """The token response; GrantRefused or RealmUnavailable otherwise."""
        response = post(self._http, self.realm.token_endpoint, {**form, "client_id": self.realm.client_id})
        if response.status_code == 200:
            return response.json()
        error, description = error_of(response)
        if response.status_code in (400, 401):
            raise GrantRefused(error, description)
        raise RealmUnavailable(f"{self.realm.token_endpoint} answered HTTP {response.status_code} ({error})")


def post(http: HttpSession, url: str, form: dict[str, str]) -> Any:
    """POST a form; a connection failure becomes RealmUnavailable (callers may fall back)."""
    try:
        return http.post(url, data=form, timeout=TIMEOUT_SECONDS)
    except OSError as error:  # requests' ConnectionError and Timeout are OSErrors
        raise RealmUnavailable(f"cannot reach {url}: {error}") from None


def error_of(response: Any) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body.get("error", f"HTTP {response.status_code}")), str(body.get("error_description", ""))
    except ValueError:
        return f"HTTP {response.status_code}", ""
