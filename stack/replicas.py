"""The replica topology (`up --replicas`): what a team that outgrows one box runs, on loopback.

Three gates behind each NGINX upstream, two NGINX instances (two ports), two MLflow servers on
one PostgreSQL and one shared artifact root, one Redis, one Keycloak. Instance 1 of each tier
keeps the single-process stack's ports, so every client of stack.json still finds the stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import components, postgres
from .components import Component, instance_name
from .layout import GATE_REPLICAS, MLFLOW_REPLICAS, NGINX_REPLICAS, Layout, url
from .procs import Probe
from .starting import Starter


def health() -> dict[str, Probe]:
    """Every instance in start order, with its probe (`status` and `down` need only this)."""
    table: dict[str, Probe] = {"keycloak": components.HEALTH["keycloak"], "redis": components.HEALTH["redis"]}
    table["postgres"] = postgres.probe()
    table |= {instance_name("mlflow", n): components.mlflow_probe(n) for n in range(1, MLFLOW_REPLICAS + 1)}
    table |= {instance_name("gate", n): components.gate_probe(n) for n in range(1, GATE_REPLICAS + 1)}
    table |= {instance_name("nginx", n): components.gateway_probe(n) for n in range(1, NGINX_REPLICAS + 1)}
    return table


def artifact_root(layout: Layout) -> Path:
    return layout.state / "artifacts"


def _postgres(layout: Layout) -> Component:
    command, data = postgres.init_cluster(layout)
    return Component(
        name="postgres",
        command=command,
        probe=postgres.probe(),
        timeout=60,
        log=layout.state / "postgres" / "postgres.log",
        cwd=data.parent,
    )


def _mlflow(layout: Layout, instance: int) -> Component:
    # One worker each: two servers already give two processes, as the single stack has.
    return components.mlflow(
        layout,
        instance,
        backend_store=postgres.sqlalchemy_url(),
        artifacts=artifact_root(layout),
        workers=1,
        cors_origins=[url(components.gateway_port(n)) for n in range(1, NGINX_REPLICAS + 1)],
    )


def start(layout: Layout, starter: Starter, keycloak: Component) -> None:
    """Keycloak boots while PostgreSQL and MLflow come up. The first MLflow creates the schema
    alone (two servers migrating one empty database at once would race); the second then
    starts against it."""
    starter.launch(keycloak)
    starter.launch(components.redis(layout))
    starter.start(_postgres(layout))
    postgres.create_database()
    starter.start(_mlflow(layout, 1))
    for n in range(2, MLFLOW_REPLICAS + 1):
        starter.launch(_mlflow(layout, n))
    starter.wait_all()
    for n in range(1, GATE_REPLICAS + 1):
        starter.launch(components.gate(layout, n))
    starter.wait_all()
    for n in range(1, NGINX_REPLICAS + 1):
        starter.start(components.gateway(layout, n, gates=GATE_REPLICAS, mlflows=MLFLOW_REPLICAS))


def document(layout: Layout) -> dict[str, Any]:
    """What stack.json adds for replicas: every instance's address and the shared stores."""
    return {
        "topology": "replicas",
        "gateway_urls": [url(components.gateway_port(n)) for n in range(1, NGINX_REPLICAS + 1)],
        "gate_urls": [url(components.gate_port(n)) for n in range(1, GATE_REPLICAS + 1)],
        "mlflow_urls": [url(components.mlflow_port(n)) for n in range(1, MLFLOW_REPLICAS + 1)],
        "postgres_url": postgres.url(),
        "artifact_root": str(artifact_root(layout)),
        "instances": list(health()),
    }


def instance(layout: Layout, name: str) -> Component:
    """The component that (re)starts one named replica, e.g. `gate-2` after a crash."""
    kind, _, number = name.partition("-")
    n = int(number or 1)
    if kind == "gate" and n <= GATE_REPLICAS:
        return components.gate(layout, n)
    if kind == "mlflow" and n <= MLFLOW_REPLICAS:
        return _mlflow(layout, n)
    if kind == "nginx" and n <= NGINX_REPLICAS:
        return components.gateway(layout, n, gates=GATE_REPLICAS, mlflows=MLFLOW_REPLICAS)
    raise ValueError(f"{name!r} is not a restartable replica")
