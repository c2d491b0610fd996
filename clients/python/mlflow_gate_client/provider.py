"""The MLflow request-auth plugin (entry point `mlflow.request_auth_provider`, name `mlflow-gate`)."""

from __future__ import annotations

import os

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from .client_credentials import ClientCredentials
from .settings import ClientSettings
from .stored_signin import StoredSignIn


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, source: StoredSignIn | ClientCredentials) -> None:
        self._source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._source.access_token()}"
        return request


class GateAuthProvider(RequestAuthProvider):
    """MLflow makes one provider per process and calls get_auth() for every request, so the token
    source lives here: a robot's token is reused until shortly before it expires.

    Never interactive on purpose: a batch job whose sign-in ended fails at once with a clear message
    instead of waiting for someone to confirm a sign-in.
    """

    def __init__(self) -> None:
        # One attribute, so a thread never pairs new settings with the previous source.
        self._current: tuple[ClientSettings, StoredSignIn | ClientCredentials] | None = None

    def get_name(self) -> str:
        return "mlflow-gate"

    def get_auth(self) -> BearerAuth:
        settings = ClientSettings.from_env(os.environ)
        current = self._current
        if current is None or current[0] != settings:
            current = self._current = (settings, settings.token_source(requests.Session()))
        return BearerAuth(current[1])
