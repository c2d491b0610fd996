"""Fresh realm users for the cold-cache rows, created through Keycloak's admin API (python-keycloak)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keycloak import KeycloakAdmin, KeycloakOpenID


def realm_token(stack: dict[str, Any], username: str, password: str) -> str:
    """A user access token by password grant on the public CLI client (dev realm only)."""
    client = KeycloakOpenID(
        server_url=stack["keycloak_url"], realm_name=stack["realm"], client_id=stack["clients"]["cli"]["client_id"]
    )
    return str(client.token(username, password)["access_token"])


def fresh_tokens(stack: dict[str, Any], count: int, role: str = "Default") -> list[str]:
    """`count` new users holding `role`, each signed in once; their decisions are cached nowhere yet."""
    admin = KeycloakAdmin(
        server_url=stack["keycloak_url"],
        username=stack["keycloak_admin"]["username"],
        password=stack["keycloak_admin"]["password"],
        realm_name=stack["realm"],
        user_realm_name="master",
    )
    realm_role = admin.get_realm_role(role)
    run = secrets.token_hex(3)
    accounts = []
    for number in range(count):
        username, password = f"bench-{run}-{number}", secrets.token_urlsafe(16)
        user_id = admin.create_user(
            {
                "username": username,
                "enabled": True,
                "email": f"{username}@example.org",
                "emailVerified": True,
                "firstName": "Bench",
                "lastName": str(number),
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            }
        )
        admin.assign_realm_roles(user_id, [realm_role])
        accounts.append((username, password))
    # Password grants hash the password (slow by design): a few at a time.
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda account: realm_token(stack, *account), accounts))
