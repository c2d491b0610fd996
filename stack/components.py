"""The processes of the local stack: how each is prepared, started and probed.

The gate, MLflow and NGINX builders take an instance number: the replica topology
(stack/replicas.py) runs several of each; instance 1 is the single-process stack's own.
"""

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
    WORKSPACES,
    Layout,
    auth_cache_seconds,
    url,
)
from .procs import HttpProbe, Probe, RedisProbe


def instance_name(kind: str, instance: int) -> str:
    """`gate`, `gate-2`, `gate-3`: the first instance keeps the single-process stack's name."""
    return kind if instance == 1 else f"{kind}-{instance}"


def gate_port(instance: int) -> int:
    return GATE_PORT + instance - 1


def mlflow_port(instance: int) -> int:
    return MLFLOW_PORT + instance - 1


def gateway_port(instance: int) -> int:
    return GATEWAY_PORT + instance - 1


def gate_probe(instance: int) -> Probe:
    return HttpProbe(f"{url(gate_port(instance))}/_gate/health")


def mlflow_probe(instance: int) -> Probe:
    return HttpProbe(f"{url(mlflow_port(instance))}/health")


def gateway_probe(instance: int) -> Probe:
    # Through NGINX, auth_request and the gate to MLflow's public /health: the whole chain.
    return HttpProbe(f"{url(gateway_port(instance))}/health")


# Start order and health checks. `status` needs only this table, no preparation.
HEALTH: dict[str, Probe] = {
    "keycloak": HttpProbe(f"{url(KEYCLOAK_MANAGEMENT_PORT)}/health/ready"),
    "redis": RedisProbe(HOST, REDIS_PORT),
    "mlflow": mlflow_probe(1),
    "gate": gate_probe(1),
    "nginx": gateway_probe(1),
}


MLFLOW_UVICORN_OPTS = "--timeout-worker-healthcheck 60"
"""uvicorn's supervisor kills a worker that does not answer its ping within 5 s; on a loaded
2-core machine MLflow's workers miss that while starting or busy, and are killed in a loop."""


@dataclass(frozen=True)
class Component:
    """One prepared process: its command line, extra environment and start-up budget."""

    name: str
    command: Sequence[str]
    probe: Probe
    timeout: float
    log: Path
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)


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
        probe=HEALTH["keycloak"],
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
        probe=HEALTH["redis"],
        timeout=30,
        log=state / "redis.log",
        cwd=state,
    )


MLFLOW_HOST_HEADER = f"{HOST}:{MLFLOW_PORT}"


def mlflow(
    layout: Layout,
    instance: int = 1,
    backend_store: str | None = None,
    artifacts: Path | None = None,
    workers: int = 2,
    cors_origins: Sequence[str] = (url(GATEWAY_PORT),),
) -> Component:
    """The MLflow tracking server, reachable only via NGINX in the intended setup (it listens on
    loopback). By default SQLite and artifacts in its own state; replicas share both."""
    name = instance_name("mlflow", instance)
    state = layout.state / name
    artifacts = artifacts or state / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    return Component(
        name=name,
        command=[
            str(layout.venv / "bin" / "mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(mlflow_port(instance)),
            "--backend-store-uri",
            backend_store or f"sqlite:///{state / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts),
            # The Host NGINX sends; anything else (DNS rebinding) is refused by MLflow.
            "--allowed-hosts",
            MLFLOW_HOST_HEADER,
            "--cors-allowed-origins",
            ",".join(cors_origins),
            # Two workers serve a test stack well and halve MLflow's memory on small boxes.
            "--workers",
            str(workers),
            "--uvicorn-opts",
            MLFLOW_UVICORN_OPTS,
            *(["--enable-workspaces"] if WORKSPACES else []),
        ],
        probe=mlflow_probe(instance),
        timeout=400,
        log=state / "mlflow.log",
        cwd=state,
    )


def gate(layout: Layout, instance: int = 1) -> Component:
    """The decision service, configured through the GATE_* variables of the contract."""
    name = instance_name("gate", instance)
    state = layout.state / name
    state.mkdir(parents=True, exist_ok=True)
    return Component(
        name=name,
        command=[str(layout.venv_python), "-m", "authz_service"],
        env={
            "GATE_HOST": HOST,
            "GATE_PORT": str(gate_port(instance)),
            "GATE_KEYCLOAK_URL": url(KEYCLOAK_PORT),
            "GATE_KEYCLOAK_PUBLIC_URL": url(KEYCLOAK_PORT),
            "GATE_REALM": REALM,
            "GATE_CLIENT_ID": GATE_CLIENT_ID,
            "GATE_CLIENT_SECRET": DEV_GATE_CLIENT_SECRET,
            "GATE_PUBLIC_URL": url(GATEWAY_PORT),
            "GATE_REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
            "GATE_BASIC_SECRET": DEV_BASIC_SECRET,
            "GATE_LOG_LEVEL": "INFO",
            "GATE_WORKSPACES": "on" if WORKSPACES else "off",
            "GATE_MLFLOW_URL": url(MLFLOW_PORT),
            # One JSON line per decision, apart from the service log.
            "GATE_AUDIT_LOG": str(state / "audit.log"),
            # uvicorn worker processes; `GATE_WORKERS=2 python3 -m stack up` tries two.
            "GATE_WORKERS": os.environ.get("GATE_WORKERS", "1"),
            "PROMETHEUS_MULTIPROC_DIR": str(state / "metrics"),
        },
        probe=gate_probe(instance),
        timeout=60,
        log=state / "gate.log",
        cwd=layout.repo,
    )


def gateway(layout: Layout, instance: int = 1, gates: int = 1, mlflows: int = 1) -> Component:
    """NGINX from the shared template, with a generated top-level config under .stack/nginx;
    its upstreams list the first `gates` gates and `mlflows` MLflow servers."""
    name = instance_name("nginx", instance)
    state = layout.state / name
    binary = install.which("nginx") or "nginx"
    conf = nginx.write_configs(
        layout.nginx_template,
        state,
        {
            "GATEWAY_LISTEN": f"{HOST}:{gateway_port(instance)}",
            "GATE_UPSTREAM": f"{HOST}:{GATE_PORT}",
            "GATE_EXTRA_SERVERS": nginx.server_lines(f"{HOST}:{gate_port(n)}" for n in range(2, gates + 1)),
            "MLFLOW_UPSTREAM": f"{HOST}:{MLFLOW_PORT}",
            "MLFLOW_EXTRA_SERVERS": nginx.server_lines(f"{HOST}:{mlflow_port(n)}" for n in range(2, mlflows + 1)),
            "MLFLOW_HOST_HEADER": MLFLOW_HOST_HEADER,
            **nginx.auth_cache_values(state / "auth-cache", auth_cache_seconds()),
        },
    )
    return Component(
        name=name,
        command=[binary, "-p", str(state), "-e", str(state / "error.log"), "-c", str(conf)],
        probe=gateway_probe(instance),
        timeout=30,
        log=state / "nginx.log",
        cwd=state,
    )
