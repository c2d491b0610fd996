"""The MLflow request-auth plugin (entry point `mlflow.request_auth_provider`, name `mlflow-gate`)."""

from __future__ import annotations

import os
from pathlib import Path

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from .credentials import Credentials, Realm, SignInError

DEFAULT_STORE = Path.home() / ".cache" / "mlflow-gate" / "credentials.json"


def credentials_from_env() -> Credentials:
    """MLFLOW_GATE_REALM_URL (required), MLFLOW_GATE_CLIENT_ID, MLFLOW_GATE_CREDENTIALS."""
    realm_url = os.environ.get("MLFLOW_GATE_REALM_URL", "").rstrip("/")
    if not realm_url.startswith(("http://", "https://")):
        raise SignInError("set MLFLOW_GATE_REALM_URL to the realm URL, e.g. https://sso.example.org/realms/mlflow")
    realm = Realm(realm_url, os.environ.get("MLFLOW_GATE_CLIENT_ID") or "mlflow-cli")
    store = Path(os.environ.get("MLFLOW_GATE_CREDENTIALS") or DEFAULT_STORE)
    return Credentials(realm, store, requests.Session())


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._credentials.access_token(interactive=False)}"
        return request


class GateAuthProvider(RequestAuthProvider):
    """Non-interactive on purpose: a batch job fails at once with a clear message instead of
    waiting for someone to confirm a sign-in."""

    def get_name(self) -> str:
        return "mlflow-gate"

    def get_auth(self) -> BearerAuth:
        return BearerAuth(credentials_from_env())
