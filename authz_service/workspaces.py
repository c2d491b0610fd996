"""MLflow workspaces: which workspace a request acts in, and which permission that takes.

MLflow (`--enable-workspaces`) reads the X-MLFLOW-WORKSPACE header, strips whitespace, uses
`default` when the value is empty or absent and refuses names outside its pattern. The gate reads
the value the same way and refuses anything MLflow could read otherwise (several values, an invalid
name); NGINX then sends MLflow only the name the gate answered in X-Gate-Workspace.

Each workspace is one Keycloak resource, `workspace:<name>`, with the scopes read, create, update
and delete; a request inside a workspace needs its route's scope on that resource. The UI shell and
the administration routes are not inside any workspace and keep their own resources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

from .routes import Permission

HEADER: Final = "x-mlflow-workspace"
RESPONSE_HEADER: Final = "X-Gate-Workspace"
READABLE_HEADER: Final = "X-Gate-Readable-Workspaces"
"""On an allowed workspace listing: the names the caller may read, comma-separated, or `*`."""
ALL: Final = "*"
DEFAULT: Final = "default"
RESOURCE_PREFIX: Final = "workspace:"
UNSCOPED_RESOURCES: Final = frozenset({"ui", "administration"})
ADMINISTRATION: Final = Permission("administration", "manage")

# MLflow 3.17.2 WorkspaceNameValidator: Kubernetes-style names, 2-63 characters, four reserved.
_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_RESERVED: Final = frozenset({"workspaces", "api", "ajax-api", "static-files"})
_ONE_WORKSPACE: Final = re.compile(r"/(?:api|ajax-api)/3\.0/mlflow/workspaces/([^/]+)")
_LISTING: Final = re.compile(r"/(?:api|ajax-api)/3\.0/mlflow/workspaces")
LISTING_PERMISSION: Final = Permission(RESOURCE_PREFIX + "*", "read")
"""Listing workspaces: granted to whoever may read at least one (the answer shows only those)."""
UI_SHELL: Final = frozenset({Permission("ui", "read"), Permission("ui", "create")})
"""The UI's pages, server-info and usage records: also granted to whoever may read a workspace,
so a member granted only through a workspace group (no realm role) can open the UI."""


class InvalidWorkspace(ValueError):
    """The header names no single valid workspace; the request is refused."""


def is_valid_name(name: str) -> bool:
    return 2 <= len(name) <= 63 and _NAME.fullmatch(name) is not None and name not in _RESERVED


def requested_workspace(values: Sequence[str]) -> str:
    """The workspace MLflow will act in, given every X-MLFLOW-WORKSPACE value the gate received.

    NGINX 1.23 and later join repeated headers with ", ", which is never a valid name; NGINX 1.22
    passes the first, as Flask reads it, and sends MLflow nothing but the gate's answer.
    """
    if len(values) > 1:
        raise InvalidWorkspace("more than one X-MLFLOW-WORKSPACE header")
    name = values[0].strip() if values else ""
    if not name:
        return DEFAULT
    if not is_valid_name(name):
        raise InvalidWorkspace("X-MLFLOW-WORKSPACE is not a valid workspace name")
    return name


def resource(workspace: str) -> str:
    return RESOURCE_PREFIX + workspace


def permission_in(workspace: str, method: str, uri: str, permission: Permission) -> Permission:
    """The permission a request needs when workspaces are on.

    Listing workspaces needs read on at least one: the gate's listing endpoint answers with those. Reading one workspace's description (GET .../workspaces/<name>) needs
    read on that workspace, whatever the header says; changing workspaces stays administration.
    """
    if "/workspaces" in uri and method in ("GET", "HEAD"):
        path = urlsplit(uri).path
        if _LISTING.fullmatch(path):
            return LISTING_PERMISSION
        named = _ONE_WORKSPACE.fullmatch(path)
        if named is not None and is_valid_name(named.group(1)):
            return Permission(resource(named.group(1)), "read")
    if permission.resource in UNSCOPED_RESOURCES:
        return permission
    return _in_workspace(workspace, permission.scope)


@lru_cache(maxsize=4096)
def _in_workspace(workspace: str, scope: str) -> Permission:
    """Built once per workspace and scope: this runs on every request."""
    return Permission(resource(workspace), scope)


def describe(route: Permission, needed: Permission) -> str:
    """The permission a refusal names: the route's own, and the workspace it was asked in."""
    if needed.resource.startswith(RESOURCE_PREFIX) and needed.scope == route.scope and route.resource not in UNSCOPED_RESOURCES:
        return f"{route} in workspace {needed.resource.removeprefix(RESOURCE_PREFIX)}"
    return str(needed)


def is_granted(grants: frozenset[str], permission: Permission) -> bool:
    """Decide from the user's whole permission set (one Keycloak answer per user).

    A workspace without a Keycloak resource (created in MLflow, not set up through the admin CLI)
    appears in nobody's set: only administrators reach it, so it fails closed for everyone else.
    """
    if str(permission) in grants:
        return True
    if permission.resource.startswith(RESOURCE_PREFIX) and str(ADMINISTRATION) in grants:
        return True
    return (permission == LISTING_PERMISSION or permission in UI_SHELL) and readable_header(grants) != ""


def is_listing(method: str, uri: str) -> bool:
    return "/workspaces" in uri and method in ("GET", "HEAD") and _LISTING.fullmatch(urlsplit(uri).path) is not None


def readable_header(grants: frozenset[str]) -> str:
    """What the check tells the listing endpoint (through NGINX) the caller may see."""
    if str(ADMINISTRATION) in grants:
        return ALL
    prefix, suffix = RESOURCE_PREFIX, "#read"
    return ",".join(sorted(grant[len(prefix) : -len(suffix)] for grant in grants if grant.startswith(prefix) and grant.endswith(suffix)))


def filter_listing(body: object, readable: str) -> object:
    """MLflow's `{"workspaces": [{"name": ...}, ...]}` cut down to the readable workspaces."""
    if readable == ALL:
        return body
    listed = body.get("workspaces") if isinstance(body, dict) else None
    if not isinstance(listed, list):
        return {"workspaces": []}
    names = set(readable.split(","))
    kept = [item for item in listed if isinstance(item, dict) and item.get("name") in names]
    return {**body, "workspaces": kept}
