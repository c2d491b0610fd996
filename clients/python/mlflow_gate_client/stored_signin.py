"""A person's sign-in: device flow with PKCE once, then refreshed tokens from the credentials file.

A static MLFLOW_TRACKING_TOKEN dies after the realm's access-token lifespan, in the middle of a
training run. Here the user confirms a sign-in in any browser, the refresh token is kept in a file
only they can read, and every process of theirs takes fresh access tokens from it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

from .realm import GrantRefused, HttpSession, Realm, RealmUnavailable, SignInError, TokenEndpoint, Tokens, error_of, post
from .token_store import TokenStore

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class StoredSignIn:
    mode = "stored sign-in"

    def __init__(
        self,
        realm: Realm,
        store: TokenStore,
        http: HttpSession,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        tell: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
    ) -> None:
        self.realm = realm
        self.store = store
        self._http = http
        self._endpoint = TokenEndpoint(realm, http)
        self._clock = clock
        self._sleep = sleep
        self._tell = tell

    @property
    def key(self) -> str:
        return f"{self.realm.url} {self.realm.client_id}"

    def tokens(self, interactive: bool = False) -> Tokens:
        """Tokens valid beyond the refresh margin; signs in (device flow) only when interactive."""
        stored = self.store.read(self.key)
        if stored is not None and self._clock() < stored.refresh_after:
            return stored
        with self.store.locked():
            refreshed = self._refresh_locked()
        if refreshed is not None:
            return refreshed
        if not interactive:
            raise SignInError(
                f"not signed in to {self.realm.url} (client {self.realm.client_id}): "
                "run `mlflow-gate-client login`, or set MLFLOW_GATE_CLIENT_SECRET for a robot"
            )
        signed_in = Tokens.from_response(self._device_sign_in(), self._clock())
        with self.store.locked():
            self.store.write(self.key, signed_in)
        return signed_in

    def access_token(self) -> str:
        return self.tokens().access_token

    def sign_out(self) -> bool:
        """Forget the tokens here and end the session at the realm; False if the realm could not be told."""
        with self.store.locked():
            stored = self.store.read(self.key)
            self.store.write(self.key, None)
        if stored is None or not stored.can_refresh(self._clock()):
            return True
        try:
            response = post(
                self._http,
                self.realm.logout_endpoint,
                {"client_id": self.realm.client_id, "refresh_token": stored.refresh_token},
            )
        except RealmUnavailable:
            return False
        return response.status_code in (200, 204)

    def _refresh_locked(self) -> Tokens | None:
        """Under the lock: re-read, because another process may have refreshed while we waited."""
        stored = self.store.read(self.key)
        now = self._clock()
        if stored is None:
            return None
        if now < stored.refresh_after:
            return stored
        if not stored.can_refresh(now):
            return None
        try:
            body = self._endpoint.grant({"grant_type": "refresh_token", "refresh_token": stored.refresh_token})
        except GrantRefused:
            return None  # the sign-in ended (signed out, idle too long, disabled)
        except RealmUnavailable:
            if stored.still_valid(now):
                return stored  # refresh again on the next request; this token still works
            raise
        fresh = Tokens.from_response(body, now)
        self.store.write(self.key, fresh)
        return fresh

    def _device_sign_in(self) -> dict[str, Any]:
        verifier, challenge = pkce_pair()
        response = post(
            self._http,
            self.realm.device_endpoint,
            {
                "client_id": self.realm.client_id,
                "scope": "openid",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        if response.status_code != 200:
            raise SignInError(f"device sign-in not available at {self.realm.url}: HTTP {response.status_code}")
        start = response.json()
        self._tell(
            f"To sign in to MLflow, open {start.get('verification_uri_complete') or start['verification_uri']}"
            f" and confirm the code {start['user_code']}."
        )
        deadline = self._clock() + float(start.get("expires_in", 600))
        interval = float(start.get("interval", 5))
        while self._clock() < deadline:
            self._sleep(interval)
            poll = post(
                self._http,
                self.realm.token_endpoint,
                {
                    "grant_type": DEVICE_GRANT,
                    "device_code": start["device_code"],
                    "client_id": self.realm.client_id,
                    "code_verifier": verifier,
                },
            )
            if poll.status_code == 200:
                return poll.json()
            error, _ = error_of(poll)
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise SignInError(f"sign-in failed: {error}")
        raise SignInError("sign-in was not confirmed in time")
