"""The five processes of the local stack: how each is prepared, started and probed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import install, nginx
from .layout import (
    DEV_BASIC_SECRET,
    DEV_GATE_CLIENT_SECRET,
    GATE_CLIENT_ID,
    GATE_PORT,
    GATEWAY_PORT,
    HOST,
    KEYCLOAK_ADMIN_USER,
    KEYCLOAK_MANAGEMENT_PORT,
    KEYCLOAK_PORT,
    KEYCLOAK_VERSION,
    MLFLOW_PORT,
    REALM,
    REDIS_PORT,
    Layout,
    url,
)
from .procs import HttpProbe, Probe, RedisProbe

# Start order and health checks. `status` needs only this table, no preparation.
HEALTH: dict[str, Probe] = {
    "keycloak": HttpProbe(f"{url(KEYCLOAK_MANAGEMENT_PORT)}/health/ready"),
    "redis": RedisProbe(HOST, REDIS_PORT),
    "mlflow": HttpProbe(f"{url(MLFLOW_PORT)}/health"),
    "gate": HttpProbe(f"{url(GATE_PORT)}/_gate/health"),
    # Through NGINX, auth_request and the gate to MLflow's public /health: the whole chain.
    "nginx": HttpProbe(f"{url(GATEWAY_PORT)}/health"),
}


@dataclass(frozen=True)
class Component:
    """One prepared process: its command line, extra environment and start-up budget."""

    name: str
    command: Sequence[str]
    timeout: float
    log: Path
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def probe(self) -> Probe:
        return HEALTH[self.name]


def keycloak(layout: Layout, java_home: Path, admin_password: str) -> Component:
    """Keycloak in dev mode with a fresh H2 database and the realm + dev users imported.

    It runs from a copy of the cached distribution under .stack (Keycloak writes its
    build and data into its home). The copy is kept between runs because the first
    start-dev re-augments the build (~20 s); only data/ is recreated, so every `up`
    imports the realm files from the working tree.
    """
    state = layout.state / "keycloak"
    home = state / "home"
    dist = install.ensure_keycloak(layout)
    if (home / "version.txt").exists() and KEYCLOAK_VERSION not in (home / "version.txt").read_text():
        shutil.rmtree(home)
    if not (home / "bin" / "kc.sh").exists():
        shutil.copytree(dist, home, symlinks=True)
    shutil.rmtree(home / "data", ignore_errors=True)
    imports = home / "data" / "import"
    imports.mkdir(parents=True)
    # DirImportProvider reads <realm>-realm.json and then <realm>-users-<n>.json.
    shutil.copy2(layout.realm_file, imports / layout.realm_file.name)
    shutil.copy2(layout.dev_users_file, imports / layout.dev_users_file.name)
    return Component(
        name="keycloak",
        command=[
            str(home / "bin" / "kc.sh"),
            "start-dev",
            "--import-realm",
            "--health-enabled=true",
            "--metrics-enabled=true",
            f"--http-host={HOST}",
            f"--http-port={KEYCLOAK_PORT}",
            f"--http-management-port={KEYCLOAK_MANAGEMENT_PORT}",
            # A fixed issuer: tokens read the same whether fetched via 127.0.0.1 or localhost.
            f"--hostname={url(KEYCLOAK_PORT)}",
        ],
        env={
            "JAVA_HOME": str(java_home),
            "KC_BOOTSTRAP_ADMIN_USERNAME": KEYCLOAK_ADMIN_USER,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
            # Pinned explicitly so a value in the caller's shell cannot desynchronise
            # Keycloak from the gate.
            "MLFLOW_GATE_CLIENT_SECRET": DEV_GATE_CLIENT_SECRET,
            # The sign-in redirect the realm accepts follows the gateway's (possibly offset) port.
            "MLFLOW_GATE_PUBLIC_URL": url(GATEWAY_PORT),
        },
        timeout=600,
        log=state / "keycloak.log",
        cwd=home,
    )


def redis(layout: Layout) -> Component:
    """A throw-away Redis for the gate's shared decision cache: no RDB, no AOF."""
    state = layout.state / "redis"
    state.mkdir(parents=True, exist_ok=True)
    server = install.which("redis-server") or "redis-server"
    return Component(
        name="redis",
        command=[
            server,
            "--bind",
            HOST,
            "--port",
            str(REDIS_PORT),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(state),
        ],
        timeout=30,
        log=state / "redis.log",
        cwd=state,
    )


MLFLOW_HOST_HEADER = f"{HOST}:{MLFLOW_PORT}"


def mlflow(layout: Layout) -> Component:
    """The MLflow tracking server with SQLite and proxied artifacts, reachable only via NGINX
    in the intended setup (it listens on loopback)."""
    state = layout.state / "mlflow"
    (state / "artifacts").mkdir(parents=True, exist_ok=True)
    return Component(
        name="mlflow",
        command=[
            str(layout.venv / "bin" / "mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(MLFLOW_PORT),
            "--backend-store-uri",
            f"sqlite:///{state / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(state / "artifacts"),
            # The Host NGINX sends; anything else (DNS rebinding) is refused by MLflow.
            "--allowed-hosts",
            MLFLOW_HOST_HEADER,
            "--cors-allowed-origins",
            url(GATEWAY_PORT),
            # Two workers serve a test stack well and halve MLflow's memory on small boxes.
            "--workers",
            "2",
        ],
        timeout=400,
        log=state / "mlflow.log",
        cwd=state,
    )


def gate(layout: Layout) -> Component:
    """The decision service, configured through the GATE_* variables of the contract."""
    state = layout.state / "gate"
    state.mkdir(parents=True, exist_ok=True)
    return Component(
        name="gate",
        command=[str(layout.venv_python), "-m", "authz_service"],
        env={
            "GATE_HOST": HOST,
            "GATE_PORT": str(GATE_PORT),
            "GATE_KEYCLOAK_URL": url(KEYCLOAK_PORT),
            "GATE_KEYCLOAK_PUBLIC_URL": url(KEYCLOAK_PORT),
            "GATE_REALM": REALM,
            "GATE_CLIENT_ID": GATE_CLIENT_ID,
            "GATE_CLIENT_SECRET": DEV_GATE_CLIENT_SECRET,
            "GATE_PUBLIC_URL": url(GATEWAY_PORT),
            "GATE_REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
            "GATE_BASIC_SECRET": DEV_BASIC_SECRET,
            "GATE_LOG_LEVEL": "INFO",
            # One JSON line per decision, apart from the service log.
            "GATE_AUDIT_LOG": str(state / "audit.log"),
            # uvicorn worker processes; `GATE_WORKERS=2 python3 -m stack up` tries two.
            "GATE_WORKERS": os.environ.get("GATE_WORKERS", "1"),
            "PROMETHEUS_MULTIPROC_DIR": str(state / "metrics"),
        },
        timeout=60,
        log=state / "gate.log",
        cwd=layout.repo,
    )


def gateway(layout: Layout) -> Component:
    """NGINX from the shared template, with a generated top-level config under .stack/nginx."""
    state = layout.state / "nginx"
    binary = install.which("nginx") or "nginx"
    conf = nginx.write_configs(
        layout.nginx_template,
        state,
        {
            "GATEWAY_LISTEN": f"{HOST}:{GATEWAY_PORT}",
            "GATE_UPSTREAM": f"{HOST}:{GATE_PORT}",
            "MLFLOW_UPSTREAM": f"{HOST}:{MLFLOW_PORT}",
            "MLFLOW_HOST_HEADER": MLFLOW_HOST_HEADER,
        },
    )
    return Component(
        name="nginx",
        command=[binary, "-p", str(state), "-e", str(state / "error.log"), "-c", str(conf)],
        timeout=30,
        log=state / "nginx.log",
        cwd=state,
    )
