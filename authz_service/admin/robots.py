"""`robot create|list|rotate|delete`: service accounts for CI pipelines and schedulers.

A robot is a confidential Keycloak client `robot-<name>` with a service account holding one gate
role and a mapper that puts the gate in its tokens' audience. The client also carries the attribute
`mlflow-gate.robot=true`, which is what `robot list` and the other verbs trust: a hand-made client
that merely starts with `robot-` is never listed, rotated or deleted. The secret is shown once, at
creation and at rotation; Keycloak keeps it, the CLI does not.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakPostError

from . import output
from .connection import Session
from .errors import AdminError
from .realm import GATE_ROLES, check_role_name, gate_role, gate_roles_of

PREFIX = "robot-"
MARKER = "mlflow-gate.robot"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")
LIST_COLUMNS = ("name", "client_id", "enabled", "roles", "description")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("robot", help="service accounts for CI and schedulers")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser("create", help="create a robot; prints its client id and secret once")
    create.add_argument("name", help="lower-case letters, digits and dashes; the client id is robot-NAME")
    create.add_argument("--role", required=True, help=" or ".join(GATE_ROLES))
    create.add_argument("--description", default="")
    output.add_json_flag(create)
    create.set_defaults(handler=create_robot)

    listing = verbs.add_parser("list", help="robots with their roles")
    output.add_json_flag(listing)
    listing.set_defaults(handler=list_robots)

    rotate = verbs.add_parser("rotate", help="issue a new secret (the old one stops working at once)")
    rotate.add_argument("name", help="NAME or robot-NAME")
    output.add_json_flag(rotate)
    rotate.set_defaults(handler=rotate_secret)

    delete = verbs.add_parser("delete", help="delete a robot and its service account")
    delete.add_argument("name", help="NAME or robot-NAME")
    delete.set_defaults(handler=delete_robot)


def client_id_of(name: str) -> str:
    """`ci` and `robot-ci` both name the robot whose client id is `robot-ci`."""
    bare = name.removeprefix(PREFIX)
    if not _NAME.fullmatch(bare):
        raise AdminError(f"robot name {name!r} must be 1-48 lower-case letters, digits or inner dashes")
    return PREFIX + bare


def create_robot(session: Session, args: argparse.Namespace) -> None:
    if args.name.startswith(PREFIX):
        raise AdminError(f"give the robot's name without the {PREFIX!r} prefix; the CLI adds it")
    client_id = client_id_of(args.name)
    check_role_name(args.role)
    admin = session.admin
    role = gate_role(admin, args.role)
    audience = session.options.gate_client
    try:
        uuid = admin.create_client(_client(client_id, args.name, args.description, audience))
    except KeycloakPostError as error:
        if error.response_code == 409:
            raise AdminError(f"robot {args.name!r} (client {client_id}) already exists") from None
        raise
    try:
        account = admin.get_client_service_account_user(uuid)
        admin.assign_realm_roles(account["id"], [role])
        secret = admin.get_client_secrets(uuid)["value"]
    except Exception:
        admin.delete_client(uuid)
        raise
    _show_secret(client_id, secret, args.json, f"created robot {args.name} with role {role['name']}")


def list_robots(session: Session, args: argparse.Namespace) -> None:
    admin = session.admin
    rows = [
        {
            "name": client["clientId"].removeprefix(PREFIX),
            "client_id": client["clientId"],
            "enabled": client.get("enabled", False),
            "roles": gate_roles_of(admin, admin.get_client_service_account_user(client["id"])["id"]),
            "description": client.get("description", ""),
        }
        for client in admin.get_clients()
        if _is_robot(client)
    ]
    output.table(sorted(rows, key=lambda row: row["name"]), LIST_COLUMNS, args.json)


def rotate_secret(session: Session, args: argparse.Namespace) -> None:
    admin = session.admin
    client = find_robot(admin, args.name)
    secret = admin.generate_client_secrets(client["id"])["value"]
    _show_secret(client["clientId"], secret, args.json, "rotated the secret; the old one no longer works")


def delete_robot(session: Session, args: argparse.Namespace) -> None:
    admin = session.admin
    client = find_robot(admin, args.name)
    admin.delete_client(client["id"])
    print(f"deleted robot {client['clientId'].removeprefix(PREFIX)} (client {client['clientId']})")


def find_robot(admin: KeycloakAdmin, name: str) -> dict[str, Any]:
    client_id = client_id_of(name)
    uuid = admin.get_client_id(client_id)
    client = admin.get_client(uuid) if uuid is not None else None
    if client is None or not _is_robot(client):
        raise AdminError(f"no robot {name!r} in realm {admin.connection.realm_name!r} (see `robot list`)")
    return client


def _is_robot(client: dict[str, Any]) -> bool:
    return client.get("attributes", {}).get(MARKER) == "true" and client["clientId"].startswith(PREFIX)


def _client(client_id: str, name: str, description: str, audience: str) -> dict[str, Any]:
    """A confidential client that can only use the client-credentials grant, for the gate's audience."""
    return {
        "clientId": client_id,
        "name": f"MLflow robot {name}",
        "description": description,
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "serviceAccountsEnabled": True,
        "standardFlowEnabled": False,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "attributes": {MARKER: "true", "oauth2.device.authorization.grant.enabled": "false"},
        "protocolMappers": [
            {
                "name": f"audience {audience}",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {
                    "included.client.audience": audience,
                    "id.token.claim": "false",
                    "access.token.claim": "true",
                    "introspection.token.claim": "true",
                },
            }
        ],
    }


def _show_secret(client_id: str, secret: str, as_json: bool, summary: str) -> None:
    if as_json:
        output.record({"client_id": client_id, "secret": secret}, as_json=True)
        return
    print(summary)
    output.record({"client_id": client_id, "secret": secret}, as_json=False)
    print("The secret is shown only now. Use it as MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
    print("or MLFLOW_GATE_CLIENT_ID/MLFLOW_GATE_CLIENT_SECRET.")
