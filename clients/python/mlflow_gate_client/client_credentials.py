"""A robot's tokens: the client-credentials grant of a confidential client (`robot-NAME`).

Nothing is written to disk: each process asks the realm when it starts and again shortly before
its token expires (Keycloak issues no refresh token for this grant, and needs none).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .realm import GrantRefused, HttpSession, Realm, RealmUnavailable, SignInError, TokenEndpoint, Tokens


class ClientCredentials:
    mode = "client credentials"

    def __init__(self, realm: Realm, secret: str, http: HttpSession, clock: Callable[[], float] = time.time) -> None:
        self.realm = realm
        self._secret = secret
        self._endpoint = TokenEndpoint(realm, http)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: Tokens | None = None

    def tokens(self, interactive: bool = False) -> Tokens:
        """`interactive` is accepted for the common interface; a robot never needs a person."""
        with self._lock:
            now = self._clock()
            current = self._tokens
            if current is not None and now < current.refresh_after:
                return current
            try:
                body = self._endpoint.grant({"grant_type": "client_credentials", "client_secret": self._secret})
            except GrantRefused as refused:
                raise SignInError(
                    f"{self.realm.url} refused the client credentials of {self.realm.client_id} ({refused}): "
                    "check MLFLOW_GATE_CLIENT_ID and MLFLOW_GATE_CLIENT_SECRET"
                ) from None
            except RealmUnavailable:
                if current is not None and current.still_valid(now):
                    return current  # ask again on the next request; this token still works
                raise
            self._tokens = Tokens.from_response(body, now)
            return self._tokens

    def access_token(self) -> str:
        return self.tokens().access_token
