"""The demo workspaces (keycloak-realm/dev/workspaces.json), created through the admin CLI.

Keycloak imports users but not their workspace groups, which the CLI creates; so `up` runs the
same `mlflow-gate-admin workspace create|grant` commands an operator would, once everything is up.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .layout import KEYCLOAK_ADMIN_USER, KEYCLOAK_PORT, MLFLOW_PORT, REALM, Layout, url

LEVEL_OF_ROLE = (("Admin", "manager"), ("Default", "editor"))


def dev_workspaces(layout: Layout) -> dict[str, Any]:
    return json.loads(workspaces_file(layout).read_text())


def workspaces_file(layout: Layout) -> Path:
    return layout.repo / "keycloak-realm" / "dev" / "workspaces.json"


def levels(layout: Layout, username: str, roles: list[str]) -> dict[str, str]:
    """The user's level in `default` (from the realm role) and in each demo workspace."""
    by_role = next((level for role, level in LEVEL_OF_ROLE if role in roles), None)
    result = {"default": by_role} if by_role else {}
    for name, workspace in dev_workspaces(layout).items():
        level = "manager" if "Admin" in roles else workspace["grants"].get(username)
        if level:
            result[name] = level
    return result


def create(layout: Layout, admin_password: str) -> None:
    env = {
        "MLFLOW_GATE_ADMIN_KEYCLOAK_URL": url(KEYCLOAK_PORT),
        "MLFLOW_GATE_ADMIN_REALM": REALM,
        "MLFLOW_GATE_ADMIN_USER": KEYCLOAK_ADMIN_USER,
        "MLFLOW_GATE_ADMIN_PASSWORD": admin_password,
        # MLflow itself on loopback: the stack's MLflow has no authentication of its own.
        "MLFLOW_GATE_ADMIN_MLFLOW_URL": url(MLFLOW_PORT),
        "PATH": "/usr/bin:/bin",
    }
    for name, workspace in dev_workspaces(layout).items():
        _admin(layout, env, "create", name, "--description", workspace["description"])
        for username, level in workspace["grants"].items():
            _admin(layout, env, "grant", name, "--user", username, "--level", level)


def _admin(layout: Layout, env: dict[str, str], *args: str) -> None:
    command = [str(layout.venv_python), "-m", "authz_service.admin", "workspace", *args]
    result = subprocess.run(command, env=env, cwd=layout.repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed: {result.stderr.strip() or result.stdout.strip()}")
    print(f"  {result.stdout.strip()}", flush=True)
