"""`workspace create|grant|revoke|list|delete`: MLflow workspaces and who may use them.

A workspace is set up in Keycloak so that a realm administrator can manage it in the admin console
without this tool: groups `/workspaces/<name>/{readers,editors,managers}`, the resource
`workspace:<name>`, one group policy per level and one scope permission per scope:

    read            readers, editors, managers
    create, update  editors, managers
    delete          managers

Adding a user to a level group grants that level; a whole existing group is granted by adding it to
the level's group policy. Administrators (realm role Admin) are managers of every workspace through
the realm's resource-type permission; nothing here names them.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import httpx
from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakGetError

from .. import workspaces
from .connection import Session
from .errors import AdminError
from .output import add_json_flag, table
from .realm import client_uuid, find_user

LEVELS = ("reader", "editor", "manager")
SCOPES = ("read", "create", "update", "delete")
"""A workspace resource's scopes; which level holds which is _PERMISSIONS."""
RESOURCE_TYPE = "urn:mlflow-gate:resources:workspace"
ROOT_GROUP = "workspaces"
MLFLOW_URL_VARIABLE = "MLFLOW_GATE_ADMIN_MLFLOW_URL"
MLFLOW_TOKEN_VARIABLE = "MLFLOW_GATE_ADMIN_MLFLOW_TOKEN"
_PERMISSIONS = {"read": LEVELS, "create-update": ("editor", "manager"), "delete": ("manager",)}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("workspace", help="create MLflow workspaces and grant access to them")
    parser.add_argument(
        "--mlflow-url",
        help=f"MLflow (or the gateway) base URL for creating and deleting workspaces (env {MLFLOW_URL_VARIABLE}); "
        f"a bearer token for the gateway comes from {MLFLOW_TOKEN_VARIABLE}",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    create_parser = verbs.add_parser("create", help="create the MLflow workspace and its Keycloak groups and permissions")
    create_parser.add_argument("name")
    create_parser.add_argument("--description", default="")
    create_parser.set_defaults(handler=create)
    for verb, handler, text in (("grant", grant, "give a user or group a level"), ("revoke", revoke, "take every level away")):
        command = verbs.add_parser(verb, help=text)
        command.add_argument("name")
        who = command.add_mutually_exclusive_group(required=True)
        who.add_argument("--user")
        who.add_argument("--group", help="an existing group's path, e.g. /teams/vision")
        if verb == "grant":
            command.add_argument("--level", required=True, choices=LEVELS)
        command.set_defaults(handler=handler)
    list_parser = verbs.add_parser("list", help="workspaces set up in Keycloak, with their grants")
    add_json_flag(list_parser)
    list_parser.set_defaults(handler=list_workspaces)
    delete_parser = verbs.add_parser("delete", help="delete the MLflow workspace and its Keycloak set-up")
    delete_parser.add_argument("name")
    delete_parser.set_defaults(handler=delete)


def create(session: Session, args: argparse.Namespace) -> None:
    name = _checked_name(args.name)
    mlflow = _Mlflow.from_args(args)
    admin = session.admin
    server = client_uuid(admin, session.options.gate_client)
    if mlflow is not None:
        mlflow.create(name, args.description)
    groups = _ensure_groups(admin, name)
    admin.create_client_authz_resource(
        server,
        {
            "name": workspaces.resource(name),
            "displayName": f"MLflow workspace {name}",
            "type": RESOURCE_TYPE,
            "ownerManagedAccess": False,
            "scopes": [{"name": scope} for scope in SCOPES],
        },
        skip_exists=True,
    )
    existing = {policy["name"] for policy in admin.get_client_authz_policies(server)}
    existing |= {permission["name"] for permission in admin.get_client_authz_permissions(server)}
    for level in LEVELS:
        if _policy_name(name, level) not in existing:
            _post(admin, server, "policy/group", {
                "name": _policy_name(name, level),
                "description": f"Members of /{ROOT_GROUP}/{name}/{level}s, and groups granted {level} of workspace {name}.",
                "logic": "POSITIVE",
                "groups": [{"id": groups[level], "extendChildren": False}],
            })
    for scopes, levels in _PERMISSIONS.items():
        permission = f"{workspaces.resource(name)}: {scopes}"
        if permission not in existing:
            _post(admin, server, "permission/scope", {
                "name": permission,
                "description": f"Who may {scopes.replace('-', ' or ')} in workspace {name}.",
                "logic": "POSITIVE",
                "decisionStrategy": "AFFIRMATIVE",
                "resources": [workspaces.resource(name)],
                "scopes": scopes.split("-"),
                "policies": [_policy_name(name, level) for level in levels],
            })
    print(f"set up workspace {name}" + ("" if mlflow else " in Keycloak (no MLflow URL given: create it in MLflow too)"))


def grant(session: Session, args: argparse.Namespace) -> None:
    _set_level(session, args, args.level)


def revoke(session: Session, args: argparse.Namespace) -> None:
    _set_level(session, args, None)


def _set_level(session: Session, args: argparse.Namespace, wanted: str | None) -> None:
    """The user or group holds exactly `wanted` in the workspace afterwards (None: no level)."""
    name = _checked_name(args.name)
    admin = session.admin
    groups = _level_groups(admin, name)
    outcome = f"is now {wanted} of workspace {name}" if wanted else f"has no level in workspace {name} any more"
    if args.user:
        user = find_user(admin, args.user)
        for level, group_id in groups.items():
            if level != wanted:
                admin.group_user_remove(user["id"], group_id)
        if wanted:
            admin.group_user_add(user["id"], groups[wanted])
        print(f"{user['username']} {outcome}")
        return
    server = client_uuid(admin, session.options.gate_client)
    group = _find_group(admin, args.group)
    for level in LEVELS:
        _set_policy_group(admin, server, _policy_name(name, level), group["id"], present=level == wanted)
    print(f"group {group['path']} {outcome}")


def list_workspaces(session: Session, args: argparse.Namespace) -> None:
    admin = session.admin
    server = client_uuid(admin, session.options.gate_client)
    policies = {policy["name"]: policy for policy in admin.get_client_authz_policies(server)}
    rows = []
    for resource in sorted(admin.get_client_authz_resources(server), key=lambda item: item["name"]):
        if resource.get("type") != RESOURCE_TYPE:
            continue
        name = resource["name"].removeprefix(workspaces.RESOURCE_PREFIX)
        row: dict[str, Any] = {"workspace": name}
        for level in LEVELS:
            row[f"{level}s"] = _grantees(admin, server, name, level, policies)
        rows.append(row)
    table(rows, ["workspace", "readers", "editors", "managers"], args.json)


def delete(session: Session, args: argparse.Namespace) -> None:
    name = _checked_name(args.name)
    if name == workspaces.DEFAULT:
        raise AdminError("the default workspace cannot be deleted")
    mlflow = _Mlflow.from_args(args)
    admin = session.admin
    server = client_uuid(admin, session.options.gate_client)
    if mlflow is not None:
        mlflow.delete(name)
    wanted = {_policy_name(name, level) for level in LEVELS} | {
        f"{workspaces.resource(name)}: {scopes}" for scopes in _PERMISSIONS
    }
    for policy in [*admin.get_client_authz_permissions(server), *admin.get_client_authz_policies(server)]:
        if policy["name"] in wanted:
            admin.delete_client_authz_policy(server, policy["id"])
            wanted.discard(policy["name"])
    for resource in admin.get_client_authz_resources(server):
        if resource["name"] == workspaces.resource(name):
            admin.delete_client_authz_resource(server, resource["_id"])
    group = _group_or_none(admin, f"/{ROOT_GROUP}/{name}")
    if group is not None:
        admin.delete_group(group["id"])
    print(f"deleted workspace {name}")


def _checked_name(name: str) -> str:
    if not workspaces.is_valid_name(name):
        raise AdminError(
            f"{name!r} is not an MLflow workspace name: 2-63 lower-case letters, digits and inner hyphens, "
            "not workspaces, api, ajax-api or static-files"
        )
    return name


def _policy_name(name: str, level: str) -> str:
    return f"{workspaces.resource(name)} {level}s"


def _ensure_groups(admin: KeycloakAdmin, name: str) -> dict[str, str]:
    root = _group_or_none(admin, f"/{ROOT_GROUP}") or {"id": admin.create_group({"name": ROOT_GROUP})}
    workspace = _group_or_none(admin, f"/{ROOT_GROUP}/{name}") or {
        "id": admin.create_group({"name": name}, parent=root["id"])
    }
    groups = {}
    for level in LEVELS:
        found = _group_or_none(admin, f"/{ROOT_GROUP}/{name}/{level}s")
        groups[level] = found["id"] if found else admin.create_group({"name": f"{level}s"}, parent=workspace["id"])
    return groups


def _level_groups(admin: KeycloakAdmin, name: str) -> dict[str, str]:
    groups = {}
    for level in LEVELS:
        group = _group_or_none(admin, f"/{ROOT_GROUP}/{name}/{level}s")
        if group is None:
            raise AdminError(f"workspace {name} is not set up in Keycloak: run `workspace create {name}` first")
        groups[level] = group["id"]
    return groups


def _group_or_none(admin: KeycloakAdmin, path: str) -> dict[str, Any] | None:
    try:
        return admin.get_group_by_path(path)
    except KeycloakGetError as error:
        if error.response_code == 404:
            return None
        raise


def _find_group(admin: KeycloakAdmin, path: str) -> dict[str, Any]:
    group = _group_or_none(admin, path if path.startswith("/") else f"/{path}")
    if group is None:
        raise AdminError(f"no group {path!r} in realm {admin.connection.realm_name!r}")
    return group


def _policy_url(admin: KeycloakAdmin, server: str, rest: str) -> str:
    return f"admin/realms/{admin.connection.realm_name}/clients/{server}/authz/resource-server/{rest}"


def _post(admin: KeycloakAdmin, server: str, rest: str, payload: dict[str, Any]) -> None:
    response = admin.connection.raw_post(_policy_url(admin, server, rest), data=json.dumps(payload))
    if response.status_code != 201:
        raise AdminError(f"Keycloak refused to create {payload['name']!r}: HTTP {response.status_code} {response.text[:200]}")


def _group_policy(admin: KeycloakAdmin, server: str, policy_name: str) -> dict[str, Any]:
    for policy in admin.get_client_authz_policies(server):
        if policy["name"] == policy_name:
            response = admin.connection.raw_get(_policy_url(admin, server, f"policy/group/{policy['id']}"))
            return response.json()
    raise AdminError(f"no policy {policy_name!r}: run `workspace create` for this workspace first")


def _set_policy_group(admin: KeycloakAdmin, server: str, policy_name: str, group_id: str, present: bool) -> None:
    policy = _group_policy(admin, server, policy_name)
    groups = [group for group in policy.get("groups", []) if group["id"] != group_id]
    if present:
        groups.append({"id": group_id, "extendChildren": False})
    if groups == policy.get("groups", []):
        return
    policy["groups"] = groups
    response = admin.connection.raw_put(_policy_url(admin, server, f"policy/group/{policy['id']}"), data=json.dumps(policy))
    if response.status_code not in (200, 201, 204):
        raise AdminError(f"Keycloak refused to update {policy_name!r}: HTTP {response.status_code} {response.text[:200]}")


def _grantees(admin: KeycloakAdmin, server: str, name: str, level: str, policies: dict[str, Any]) -> list[str]:
    """Users in the level group, then other groups named in the level's policy (as group paths)."""
    level_group = _group_or_none(admin, f"/{ROOT_GROUP}/{name}/{level}s")
    members = [user["username"] for user in admin.get_group_members(level_group["id"])] if level_group else []
    if _policy_name(name, level) in policies:
        policy = _group_policy(admin, server, _policy_name(name, level))
        for group in policy.get("groups", []):
            if level_group is None or group["id"] != level_group["id"]:
                members.append(admin.get_group(group["id"])["path"])
    return sorted(members)


class _Mlflow:
    """The MLflow side: workspaces are created and deleted through MLflow's REST API."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Mlflow | None:
        url = getattr(args, "mlflow_url", None) or os.environ.get(MLFLOW_URL_VARIABLE, "").strip()
        if not url:
            return None
        return cls(url, os.environ.get(MLFLOW_TOKEN_VARIABLE, "").strip() or None)

    def create(self, name: str, description: str) -> None:
        response = self._call("POST", "", {"name": name, "description": description})
        if response.status_code in (200, 201) or _error_code(response) == "RESOURCE_ALREADY_EXISTS":
            return
        raise AdminError(f"MLflow refused to create workspace {name}: HTTP {response.status_code} {response.text[:200]}")

    def delete(self, name: str) -> None:
        response = self._call("DELETE", f"/{name}", None)
        if response.status_code in (200, 204) or _error_code(response) == "RESOURCE_DOES_NOT_EXIST":
            return
        raise AdminError(f"MLflow refused to delete workspace {name}: HTTP {response.status_code} {response.text[:200]}")

    def _call(self, method: str, rest: str, body: dict[str, str] | None) -> httpx.Response:
        try:
            return httpx.request(
                method, f"{self._base}/api/3.0/mlflow/workspaces{rest}", json=body, headers=self._headers, timeout=30
            )
        except httpx.HTTPError as error:
            raise AdminError(f"cannot reach MLflow at {self._base}: {error}") from None


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error_code") if isinstance(body, dict) else None
