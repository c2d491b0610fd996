"""The client's settings, from the environment, and the token source they select."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .client_credentials import ClientCredentials
from .realm import HttpSession, Realm, SignInError
from .stored_signin import StoredSignIn
from .token_store import TokenStore

DEFAULT_CLIENT_ID = "mlflow-cli"
DEFAULT_STORE = Path.home() / ".cache" / "mlflow-gate" / "credentials.json"


@dataclass(frozen=True)
class ClientSettings:
    """MLFLOW_GATE_REALM_URL (required); MLFLOW_GATE_CLIENT_ID with MLFLOW_GATE_CLIENT_SECRET for a
    robot, else the stored sign-in of MLFLOW_GATE_CLIENT_ID (default mlflow-cli) in MLFLOW_GATE_CREDENTIALS."""

    realm_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    credentials_path: Path = DEFAULT_STORE

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ClientSettings:
        realm_url = environ.get("MLFLOW_GATE_REALM_URL", "").strip().rstrip("/")
        if not realm_url.startswith(("http://", "https://")):
            raise SignInError("set MLFLOW_GATE_REALM_URL to the realm URL, e.g. https://sso.example.org/realms/mlflow")
        client_id = environ.get("MLFLOW_GATE_CLIENT_ID", "").strip()
        secret = environ.get("MLFLOW_GATE_CLIENT_SECRET") or None
        if secret is not None and not client_id:
            raise SignInError("MLFLOW_GATE_CLIENT_SECRET is set: set MLFLOW_GATE_CLIENT_ID to the robot's client id too")
        return cls(
            realm_url=realm_url,
            client_id=client_id or DEFAULT_CLIENT_ID,
            client_secret=secret,
            credentials_path=Path(environ.get("MLFLOW_GATE_CREDENTIALS") or DEFAULT_STORE),
        )

    def token_source(self, http: HttpSession) -> StoredSignIn | ClientCredentials:
        realm = Realm(self.realm_url, self.client_id)
        if self.client_secret is not None:
            return ClientCredentials(realm, self.client_secret, http)
        return StoredSignIn(realm, TokenStore(self.credentials_path), http)
