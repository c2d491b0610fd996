"""The `.stack/stack.json` document that tests and people read to find the running stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import workspaces
from .layout import (
    CLI_CLIENT_ID,
    DEV_GATE_CLIENT_SECRET,
    GATE_CLIENT_ID,
    GATE_PORT,
    GATEWAY_PORT,
    HOST,
    KEYCLOAK_ADMIN_USER,
    KEYCLOAK_MANAGEMENT_PORT,
    KEYCLOAK_PORT,
    MLFLOW_PORT,
    REALM,
    REDIS_PORT,
    WORKSPACES,
    Layout,
    url,
)


def demo_users(realm_file: Path, users_file: Path) -> dict[str, dict[str, Any]]:
    """Usernames, passwords, application roles and workspace levels, read from the dev files
    themselves so stack.json can never disagree with what Keycloak imported."""
    application_roles = {role["name"] for role in json.loads(realm_file.read_text())["roles"]["realm"]}
    users: dict[str, dict[str, Any]] = {}
    for user in json.loads(users_file.read_text())["users"]:
        password = next(c["value"] for c in user["credentials"] if c["type"] == "password")
        roles = [role for role in user.get("realmRoles", []) if role in application_roles]
        users[user["username"]] = {"password": password, "roles": roles}
    return users


def with_workspace_levels(layout: Layout, users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {**user, "workspaces": workspaces.levels(layout, name, user["roles"]) if WORKSPACES else {}}
        for name, user in users.items()
    }


def document(layout: Layout, admin_password: str) -> dict[str, Any]:
    return {
        "gateway_url": url(GATEWAY_PORT),
        "keycloak_url": url(KEYCLOAK_PORT),
        "keycloak_management_url": url(KEYCLOAK_MANAGEMENT_PORT),
        "realm": REALM,
        "gate_url": url(GATE_PORT),
        "mlflow_url": url(MLFLOW_PORT),
        "redis_url": f"redis://{HOST}:{REDIS_PORT}/0",
        "keycloak_admin": {"username": KEYCLOAK_ADMIN_USER, "password": admin_password},
        "clients": {
            "gate": {"client_id": GATE_CLIENT_ID, "client_secret": DEV_GATE_CLIENT_SECRET},
            "cli": {"client_id": CLI_CLIENT_ID},
        },
        "workspaces": WORKSPACES,
        "users": with_workspace_levels(layout, demo_users(layout.realm_file, layout.dev_users_file)),
    }


def single_topology() -> dict[str, Any]:
    """The instance lists of the default stack, so clients read both topologies alike."""
    return {
        "topology": "single",
        "gateway_urls": [url(GATEWAY_PORT)],
        "gate_urls": [url(GATE_PORT)],
        "mlflow_urls": [url(MLFLOW_PORT)],
    }


def write(layout: Layout, stack: dict[str, Any]) -> None:
    """Written last by `up`, and readable only by the owner (it holds the admin password)."""
    layout.stack_json.write_text(json.dumps(stack, indent=2) + "\n")
    layout.stack_json.chmod(0o600)
