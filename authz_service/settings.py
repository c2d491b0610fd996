"""The gate's configuration: one immutable object, read from the environment and validated at start.

Every problem is collected and reported together, so an operator fixes a bad deployment in one go
instead of one restart per typo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """The gate's own lines at `level`; httpx's per-request INFO lines (two per revocation poll) only as warnings."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)


class SettingsError(ValueError):
    """Raised with one line per invalid or missing variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid gate configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Settings:
    keycloak_url: str
    keycloak_public_url: str
    realm: str
    issuer: str
    client_id: str
    client_secret: str | None
    audience: str
    public_url: str | None
    redis_url: str | None
    cache_max_ttl: float
    cache_size: int
    jwks_min_refresh_interval: float
    keycloak_timeout: float
    keycloak_ca_file: Path | None
    route_map_extra: tuple[Path, ...]
    workspaces: bool
    mlflow_url: str | None
    session_lifetime: float
    basic_auth: bool
    basic_secret: str | None
    basic_client_id: str
    basic_robot_prefix: str
    basic_max_failures: int
    basic_failure_window: float
    revocation_poll: float
    revocation_max_delay: float
    log_level: str
    host: str
    port: int
    workers: int = 1
    audit_log: str = "-"
    redis_timeout: float = 1.0
    redis_retry_interval: float = 2.0
    keycloak_concurrency: int = 16
    metrics_dir: Path | None = None

    @property
    def realm_url(self) -> str:
        return f"{self.keycloak_url}/realms/{self.realm}"

    @property
    def jwks_url(self) -> str:
        return f"{self.realm_url}/protocol/openid-connect/certs"

    @property
    def token_url(self) -> str:
        return f"{self.realm_url}/protocol/openid-connect/token"

    @property
    def public_realm_url(self) -> str:
        return f"{self.keycloak_public_url}/realms/{self.realm}"

    @property
    def revocation_enabled(self) -> bool:
        """Polling needs the gate's service account (its client secret); 0 seconds turns it off."""
        return self.client_secret is not None and self.revocation_poll > 0

    @property
    def sso_enabled(self) -> bool:
        return self.client_secret is not None and self.public_url is not None

    @property
    def basic_enabled(self) -> bool:
        """Basic needs its exchange secret; without one it stays off, like sign-in without a client secret."""
        return self.basic_auth and self.basic_secret is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from GATE_* variables; raise SettingsError listing every problem."""
        env = _Reader(os.environ if environ is None else environ)
        keycloak_url = env.required("GATE_KEYCLOAK_URL", _http_url)
        keycloak_public_url = env.optional("GATE_KEYCLOAK_PUBLIC_URL", _http_url) or keycloak_url
        realm = env.get("GATE_REALM", "mlflow", _name)
        client_id = env.get("GATE_CLIENT_ID", "mlflow-gate", _name)
        settings = cls(
            keycloak_url=keycloak_url,
            keycloak_public_url=keycloak_public_url,
            realm=realm,
            issuer=env.optional("GATE_ISSUER", _http_url) or f"{keycloak_public_url}/realms/{realm}",
            client_id=client_id,
            client_secret=env.optional("GATE_CLIENT_SECRET", _non_empty),
            audience=env.get("GATE_AUDIENCE", client_id, _name),
            public_url=env.optional("GATE_PUBLIC_URL", _http_url),
            redis_url=env.optional("GATE_REDIS_URL", _redis_url),
            cache_max_ttl=env.get("GATE_CACHE_MAX_TTL", 60.0, _positive_float),
            cache_size=env.get("GATE_CACHE_SIZE", 10_000, _positive_int),
            jwks_min_refresh_interval=env.get("GATE_JWKS_MIN_REFRESH_INTERVAL", 30.0, _positive_float),
            keycloak_timeout=env.get("GATE_KEYCLOAK_TIMEOUT", 5.0, _positive_float),
            keycloak_ca_file=env.optional("GATE_KEYCLOAK_CA_FILE", _existing_file),
            route_map_extra=env.get("GATE_ROUTE_MAP_EXTRA", (), _existing_files),
            workspaces=env.get("GATE_WORKSPACES", False, _boolean),
            mlflow_url=env.optional("GATE_MLFLOW_URL", _http_url),
            session_lifetime=env.get("GATE_SESSION_LIFETIME", 8 * 3600.0, _positive_float),
            basic_auth=env.get("GATE_BASIC_AUTH", True, _boolean),
            basic_secret=env.optional("GATE_BASIC_SECRET", _exchange_secret),
            basic_client_id=env.get("GATE_BASIC_CLIENT_ID", "mlflow-cli", _name),
            basic_robot_prefix=env.get("GATE_BASIC_ROBOT_PREFIX", "robot-", _name),
            basic_max_failures=env.get("GATE_BASIC_MAX_FAILURES", 10, _positive_int),
            basic_failure_window=env.get("GATE_BASIC_FAILURE_WINDOW", 300.0, _positive_float),
            revocation_poll=env.get("GATE_REVOCATION_POLL", 2.0, _non_negative_float),
            revocation_max_delay=env.get("GATE_REVOCATION_MAX_DELAY", 10.0, _positive_float),
            log_level=env.get("GATE_LOG_LEVEL", "INFO", _log_level),
            host=env.get("GATE_HOST", "127.0.0.1", _non_empty),
            port=env.get("GATE_PORT", 8090, _port),
            workers=env.get("GATE_WORKERS", 1, _positive_int),
            audit_log=env.get("GATE_AUDIT_LOG", "-", _audit_destination),
            redis_timeout=env.get("GATE_REDIS_TIMEOUT", 1.0, _positive_float),
            redis_retry_interval=env.get("GATE_REDIS_RETRY_INTERVAL", 2.0, _positive_float),
            keycloak_concurrency=env.get("GATE_KEYCLOAK_CONCURRENCY", 16, _positive_int),
            # prometheus-client's own variable; set for you when GATE_WORKERS > 1.
            metrics_dir=env.optional("PROMETHEUS_MULTIPROC_DIR", Path),
        )
        if settings.workspaces and settings.mlflow_url is None:
            env.problems.append("GATE_MLFLOW_URL is required with GATE_WORKSPACES=on (the workspace listing asks MLflow)")
        if env.explicitly_on("GATE_BASIC_AUTH") and settings.basic_secret is None:
            env.problems.append("GATE_BASIC_SECRET is required when GATE_BASIC_AUTH is on")
        if settings.revocation_poll >= settings.revocation_max_delay:
            env.problems.append(
                f"GATE_REVOCATION_POLL ({settings.revocation_poll:g} s) must be shorter than "
                f"GATE_REVOCATION_MAX_DELAY ({settings.revocation_max_delay:g} s)"
            )
        env.raise_if_invalid()
        return settings


class _Reader:
    """Reads variables, remembering problems instead of stopping at the first one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: list[str] = []

    def required(self, name: str, parse: Callable[[str], str]) -> str:
        value = self.optional(name, parse)
        if value is None and not self._environ.get(name, "").strip():
            self.problems.append(f"{name} is required")
        return value or ""

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        value = self.optional(name, parse)
        return default if value is None else value

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return None
        try:
            return parse(raw)
        except ValueError as error:
            shown = name if name.endswith("_SECRET") else f"{name}={raw!r}"
            self.problems.append(f"{shown}: {error}")
            return None

    def explicitly_on(self, name: str) -> bool:
        return self._environ.get(name, "").strip().lower() in _TRUE

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return raw.rstrip("/")


def _redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://, rediss:// or unix://")
    return raw


def _name(raw: str) -> str:
    if any(char.isspace() or char in "/#?" for char in raw):
        raise ValueError("must not contain whitespace, '/', '#' or '?'")
    return raw


def _non_empty(raw: str) -> str:
    return raw


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be zero or a positive number")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port (1-65535)")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value not in _TRUE + _FALSE:
        raise ValueError("expected true or false")
    return value in _TRUE


def _exchange_secret(raw: str) -> str:
    # The key of every Basic cache and throttle digest: short keys make offline guessing cheap.
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters (for example `openssl rand -hex 32`)")
    return raw


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _audit_destination(raw: str) -> str:
    """"-" (stdout), "off", or a file in an existing directory."""
    if raw in ("-", "off"):
        return raw
    if not Path(raw).parent.is_dir():
        raise ValueError('expected "-", "off" or a file path in an existing directory')
    return raw


def _existing_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("file does not exist")
    return path


def _existing_files(raw: str) -> tuple[Path, ...]:
    return tuple(_existing_file(part) for part in raw.split(os.pathsep) if part)
