"""Versions, ports and paths of the local stack, kept in one place so every module agrees."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KEYCLOAK_VERSION = "26.5.6"
# Helm for the chart tests (deploy/helm), built from the Go module proxy with `go install`.
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"
KEYCLOAK_ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
MIN_JAVA_MAJOR = 21
JVM_ROOT = Path("/usr/lib/jvm")

HOST = "127.0.0.1"


def _port_offset() -> int:
    """MLFLOW_GATE_PORT_OFFSET shifts every port, so several checkouts can each run a stack."""
    raw = os.environ.get("MLFLOW_GATE_PORT_OFFSET", "0").strip() or "0"
    if not raw.isdigit() or int(raw) > 50_000:
        raise SystemExit(f"MLFLOW_GATE_PORT_OFFSET={raw!r}: expected a whole number from 0 to 50000")
    return int(raw)


def _workspaces() -> bool:
    """MLFLOW_GATE_WORKSPACES=off runs MLflow and the gate without workspaces (default: on)."""
    raw = os.environ.get("MLFLOW_GATE_WORKSPACES", "on").strip().lower() or "on"
    if raw not in ("on", "off"):
        raise SystemExit(f"MLFLOW_GATE_WORKSPACES={raw!r}: expected on or off")
    return raw == "on"


PORT_OFFSET = _port_offset()
WORKSPACES = _workspaces()


def auth_cache_seconds() -> int:
    """MLFLOW_GATE_AUTH_CACHE_SECONDS > 0 turns on NGINX's micro-cache of the gate's answers."""
    raw = os.environ.get("MLFLOW_GATE_AUTH_CACHE_SECONDS", "0").strip() or "0"
    if not raw.isdigit() or int(raw) > 60:
        raise SystemExit(f"MLFLOW_GATE_AUTH_CACHE_SECONDS={raw!r}: expected a whole number from 0 to 60")
    return int(raw)

GATEWAY_PORT = 8080 + PORT_OFFSET
KEYCLOAK_PORT = 8180 + PORT_OFFSET
KEYCLOAK_MANAGEMENT_PORT = 9000 + PORT_OFFSET
GATE_PORT = 8090 + PORT_OFFSET
MLFLOW_PORT = 5500 + PORT_OFFSET
REDIS_PORT = 6390 + PORT_OFFSET
ALL_PORTS = (GATEWAY_PORT, KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT, GATE_PORT, MLFLOW_PORT, REDIS_PORT)
# The replica topology (`up --replicas`): instance n listens on the first instance's port + n - 1.
GATE_REPLICAS = 3
NGINX_REPLICAS = 2
MLFLOW_REPLICAS = 2
POSTGRES_PORT = 5433 + PORT_OFFSET
REPLICA_PORTS = (
    *(GATEWAY_PORT + n for n in range(1, NGINX_REPLICAS)),
    *(GATE_PORT + n for n in range(1, GATE_REPLICAS)),
    *(MLFLOW_PORT + n for n in range(1, MLFLOW_REPLICAS)),
    POSTGRES_PORT,
)

REALM = "mlflow"
GATE_CLIENT_ID = "mlflow-gate"
CLI_CLIENT_ID = "mlflow-cli"
# Must equal the default of the ${MLFLOW_GATE_CLIENT_SECRET:...} placeholder in the realm file.
DEV_GATE_CLIENT_SECRET = "dev-only-mlflow-gate-secret"
# Development only: keys the digests of Basic credentials (GATE_BASIC_SECRET); never reuse it.
DEV_BASIC_SECRET = "dev-only-basic-exchange-secret-0123456789"
KEYCLOAK_ADMIN_USER = "admin"
# The replica topology's MLflow database (loopback only, dropped by every `up`).
POSTGRES_DATABASE = "mlflow"
POSTGRES_USER = "mlflow"
DEV_POSTGRES_PASSWORD = "dev-only-mlflow-db-password"


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


@dataclass(frozen=True)
class Layout:
    """Where the repository, the per-checkout state (.stack/) and the shared cache live."""

    repo: Path
    cache: Path

    @classmethod
    def discover(cls) -> Layout:
        repo = Path(__file__).resolve().parent.parent
        cache = Path(os.environ.get("MLFLOW_GATE_CACHE", Path.home() / ".cache" / "mlflow-gate"))
        return cls(repo=repo, cache=cache)

    @property
    def state(self) -> Path:
        return self.repo / ".stack"

    @property
    def stack_json(self) -> Path:
        return self.state / "stack.json"

    @property
    def pids(self) -> Path:
        return self.state / "run"

    @property
    def client_repo(self) -> Path:
        """The MLflow client plugin's own distribution (mlflow-gate-client)."""
        return self.repo / "clients" / "python"

    @property
    def venv(self) -> Path:
        return self.cache / "venv"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def keycloak_dist(self) -> Path:
        """The pristine unzip; never run in place, so it stays reusable across stacks."""
        return self.cache / f"keycloak-{KEYCLOAK_VERSION}"

    @property
    def keycloak_zip(self) -> Path:
        return self.cache / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"

    @property
    def helm(self) -> Path:
        return self.cache / "bin" / f"helm-{HELM_VERSION}"

    @property
    def realm_file(self) -> Path:
        return self.repo / "keycloak-realm" / "mlflow-realm.json"

    @property
    def dev_users_file(self) -> Path:
        return self.repo / "keycloak-realm" / "dev" / "mlflow-users-0.json"

    @property
    def nginx_template(self) -> Path:
        return self.repo / "nginx" / "gateway.conf.template"
