"""`explain METHOD URL --user NAME` (or `--robot NAME`): which rule decides a request, and what the gate would answer.

The route comes from the same route map the gate loads (plus the operator's extra files), the
decision from Keycloak's admin policy-evaluation API for the gate's resource server, which
evaluates the user's current roles exactly as the gate's UMA request would with a fresh token.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakPostError, raise_error_from_response

from .. import workspaces
from ..routes import Permission, RouteMap, RouteMapError
from . import output
from .connection import Session
from .errors import AdminError
from .explanation import Evaluation, Subject, explain, request_target
from .realm import client_uuid, effective_roles, find_user
from .robots import find_robot


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("explain", help="why the gate allows or refuses a request for a user")
    parser.add_argument("method", help="HTTP method, e.g. GET or POST")
    parser.add_argument("url", help="the URL or request target, e.g. /api/2.0/mlflow/experiments/delete")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the user whose request it is")
    who.add_argument("--robot", help="or the robot (NAME or robot-NAME) whose request it is")
    parser.add_argument(
        "--route-map",
        action="append",
        type=Path,
        help="extra route-map file, as the gate's GATE_ROUTE_MAP_EXTRA (repeatable; default: that variable)",
    )
    parser.add_argument(
        "--workspace",
        help="the MLflow workspace the request acts in (gate with GATE_WORKSPACES=on): Keycloak is asked about "
        "workspace:NAME instead of the route's resource",
    )
    output.add_json_flag(parser)
    parser.set_defaults(handler=explain_request)


def load_routes(extra: list[Path] | None) -> RouteMap:
    if extra is None:
        extra = [Path(part) for part in os.environ.get("GATE_ROUTE_MAP_EXTRA", "").split(os.pathsep) if part]
    try:
        return RouteMap.load(extra)
    except RouteMapError as error:
        raise AdminError(f"cannot load the route map: {error}") from None


def explain_request(session: Session, args: argparse.Namespace) -> None:
    routes = load_routes(args.route_map)
    method = args.method.upper()
    target = request_target(args.url)
    admin = session.admin
    if args.robot:
        client = find_robot(admin, args.robot)
        user = admin.get_client_service_account_user(client["id"])
        name, enabled = client["clientId"], bool(client.get("enabled") and user.get("enabled"))
    else:
        user = find_user(admin, args.user)
        name, enabled = user["username"], bool(user.get("enabled"))
    subject = Subject(name, enabled, tuple(effective_roles(admin, user["id"])))
    resource_server = client_uuid(admin, session.options.gate_client)
    workspace = args.workspace
    if workspace is not None and not workspaces.is_valid_name(workspace):
        raise AdminError(f"{workspace!r} is not an MLflow workspace name")

    def in_workspace(permission: Permission) -> Permission:
        return permission if workspace is None else workspaces.permission_in(workspace, method, target, permission)

    explanation = explain(
        method,
        target,
        routes.lookup(method, target),
        subject,
        lambda permission: evaluate(admin, resource_server, user["id"], in_workspace(permission)),
    )
    output.record(explanation.fields() if args.json else explanation.summary(), args.json)


def evaluate(admin: KeycloakAdmin, resource_server: str, user_id: str, permission: Permission) -> Evaluation:
    """Keycloak's own answer: POST .../authz/resource-server/policy/evaluate for one resource#scope."""
    path = (
        f"admin/realms/{admin.connection.realm_name}/clients/{resource_server}"
        "/authz/resource-server/policy/evaluate"
    )
    body = {
        "userId": user_id,
        "clientId": resource_server,
        "resources": [{"name": permission.resource, "scopes": [{"name": permission.scope}]}],
        "entitlements": False,
        "context": {"attributes": {}},
    }
    result = raise_error_from_response(admin.connection.raw_post(path, data=json.dumps(body)), KeycloakPostError)
    if not isinstance(result, dict) or "status" not in result:
        raise AdminError("Keycloak's policy evaluation sent an unreadable answer")
    # Keycloak lists every permission of the resource; only those covering the asked scope decide.
    policies = tuple(
        (policy["policy"]["name"], policy["status"])
        for entry in result.get("results", [])
        for policy in entry.get("policies", [])
        if permission.scope in (policy["policy"].get("scopes") or [permission.scope])
    )
    return Evaluation(status=result["status"], policies=policies)

