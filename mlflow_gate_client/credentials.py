"""Access tokens for the MLflow client, kept fresh without the user pasting tokens around.

A static MLFLOW_TRACKING_TOKEN dies after the realm's access-token lifespan (minutes), in the middle
of a training run. Here the user signs in once with the OAuth device flow with PKCE (a browser on
any machine), the refresh token is kept in a file only they can read, and each MLflow request gets an
access token that is refreshed shortly before it expires.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from authz_service.oidc import pkce_pair

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_MARGIN_SECONDS = 30.0


class SignInError(RuntimeError):
    """Signing in or refreshing failed in a way only the user can fix (denied, expired, no realm)."""


class HttpSession(Protocol):
    def post(self, url: str, data: dict[str, str], timeout: float) -> Any: ...


@dataclass(frozen=True)
class StoredTokens:
    access_token: str
    refresh_token: str
    access_expires_at: float
    refresh_expires_at: float


@dataclass(frozen=True)
class Realm:
    """Where to sign in: the realm URL (the tokens' issuer) and the public CLI client."""

    url: str
    client_id: str = "mlflow-cli"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/protocol/openid-connect/token"

    @property
    def device_endpoint(self) -> str:
        return f"{self.url}/protocol/openid-connect/auth/device"


class Credentials:
    def __init__(
        self,
        realm: Realm,
        store: Path,
        http: HttpSession,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        tell: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
    ) -> None:
        self._realm = realm
        self._store = store
        self._http = http
        self._clock = clock
        self._sleep = sleep
        self._tell = tell
        self._lock = threading.Lock()

    def access_token(self, interactive: bool = True) -> str:
        """A token valid for at least REFRESH_MARGIN_SECONDS; signs in when nothing else works."""
        with self._lock:
            now = self._clock()
            stored = self._load()
            if stored and stored.access_expires_at - now > REFRESH_MARGIN_SECONDS:
                return stored.access_token
            if stored and stored.refresh_expires_at > now:
                refreshed = self._token_request({"grant_type": "refresh_token", "refresh_token": stored.refresh_token})
                if refreshed is not None:
                    return self._save(refreshed).access_token
            if not interactive:
                raise SignInError("not signed in: run `python -m mlflow_gate_client login`")
            return self._save(self._device_sign_in()).access_token

    def sign_out(self) -> None:
        self._store.unlink(missing_ok=True)

    def _device_sign_in(self) -> dict[str, Any]:
        verifier, challenge = pkce_pair()
        response = self._http.post(
            self._realm.device_endpoint,
            data={
                "client_id": self._realm.client_id,
                "scope": "openid",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
            timeout=30,
        )
        if response.status_code != 200:
            raise SignInError(f"device sign-in not available at {self._realm.url}: HTTP {response.status_code}")
        start = response.json()
        self._tell(
            f"To sign in to MLflow, open {start.get('verification_uri_complete') or start['verification_uri']}"
            f" and confirm the code {start['user_code']}."
        )
        deadline = self._clock() + float(start.get("expires_in", 600))
        interval = float(start.get("interval", 5))
        while self._clock() < deadline:
            self._sleep(interval)
            poll = self._http.post(
                self._realm.token_endpoint,
                data={
                    "grant_type": DEVICE_GRANT,
                    "device_code": start["device_code"],
                    "client_id": self._realm.client_id,
                    "code_verifier": verifier,
                },
                timeout=30,
            )
            if poll.status_code == 200:
                return poll.json()
            error = _error_of(poll)
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise SignInError(f"sign-in failed: {error}")
        raise SignInError("sign-in was not confirmed in time")

    def _token_request(self, form: dict[str, str]) -> dict[str, Any] | None:
        """None when the realm refuses the grant (the user must sign in again)."""
        response = self._http.post(
            self._realm.token_endpoint, data={**form, "client_id": self._realm.client_id}, timeout=30
        )
        if response.status_code == 200:
            return response.json()
        if response.status_code in (400, 401):
            return None
        raise SignInError(f"{self._realm.token_endpoint} answered HTTP {response.status_code}")

    def _load(self) -> StoredTokens | None:
        try:
            entry = json.loads(self._store.read_text()).get(self._key())
            return StoredTokens(**entry) if entry else None
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, body: dict[str, Any]) -> StoredTokens:
        now = self._clock()
        tokens = StoredTokens(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            access_expires_at=now + float(body["expires_in"]),
            refresh_expires_at=now + float(body.get("refresh_expires_in") or body["expires_in"]),
        )
        try:
            everything = json.loads(self._store.read_text())
        except (OSError, ValueError):
            everything = {}
        everything[self._key()] = asdict(tokens)
        self._store.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._store.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(everything, handle)
        os.replace(temporary, self._store)
        return tokens

    def _key(self) -> str:
        return f"{self._realm.url} {self._realm.client_id}"


def _error_of(response: Any) -> str:
    try:
        return str(response.json().get("error", response.status_code))
    except ValueError:
        return f"HTTP {response.status_code}"
