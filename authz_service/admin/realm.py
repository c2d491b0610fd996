"""Lookups several nouns share: a user by name, a gate role by name, a user's roles, the gate client.

Each lookup turns "not there" into an AdminError naming what was missing, so every command
reports an unknown user or role the same way.
"""

from __future__ import annotations

from typing import Any

from keycloak import KeycloakAdmin
from keycloak.exceptions import KeycloakGetError

from .errors import AdminError

GATE_ROLES = ("Admin", "Default")
"""The realm roles the gate's policies know; the CLI grants no others."""


def find_user(admin: KeycloakAdmin, username: str) -> dict[str, Any]:
    """The user representation for `username` (Keycloak stores user names in lower case)."""
    wanted = username.lower()
    for user in admin.get_users({"username": username, "exact": True}):
        if user.get("username", "").lower() == wanted:
            return user
    raise AdminError(f"no user {username!r} in realm {admin.connection.realm_name!r}")


def gate_role(admin: KeycloakAdmin, name: str) -> dict[str, Any]:
    """The realm role representation for one of the gate's roles (callers check the name first,
    before signing in, so a typo costs no round trip)."""
    try:
        return admin.get_realm_role(name)
    except KeycloakGetError as error:
        if error.response_code == 404:
            raise AdminError(f"realm {admin.connection.realm_name!r} has no role {name!r}") from None
        raise


def check_role_name(name: str) -> None:
    if name not in GATE_ROLES:
        raise AdminError(f"unknown role {name!r}: the gate's roles are {' and '.join(GATE_ROLES)}")


def effective_roles(admin: KeycloakAdmin, user_id: str) -> list[str]:
    """All realm roles the user holds, directly, through groups or through composite roles."""
    return sorted(role["name"] for role in admin.get_composite_realm_roles_of_user(user_id))


def gate_roles_of(admin: KeycloakAdmin, user_id: str) -> list[str]:
    return [role for role in effective_roles(admin, user_id) if role in GATE_ROLES]


def client_uuid(admin: KeycloakAdmin, client_id: str) -> str:
    """Keycloak's internal id of a client, from its client id."""
    uuid = admin.get_client_id(client_id)
    if uuid is None:
        raise AdminError(f"realm {admin.connection.realm_name!r} has no client {client_id!r}")
    return uuid
