"""Small helpers that talk to the real Keycloak of the running stack: user tokens and admin calls."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


class RealmClient:
    def __init__(self, stack: dict[str, Any]) -> None:
        self.stack = stack
        self.base = f"{stack['keycloak_url']}/realms/{stack['realm']}"
        self.admin_base = f"{stack['keycloak_url']}/admin/realms/{stack['realm']}"

    def token(self, username: str, password: str | None = None, client_id: str | None = None) -> str:
        """A user access token by password grant on the public CLI client (dev realm only)."""
        response = httpx.post(
            f"{self.base}/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": client_id or self.stack["clients"]["cli"]["client_id"],
                "username": username,
                "password": password or self.stack["users"][username]["password"],
                "scope": "openid",
            },
            timeout=30,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def admin_headers(self) -> dict[str, str]:
        admin = self.stack["keycloak_admin"]
        response = httpx.post(
            f"{self.stack['keycloak_url']}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": admin["username"],
                "password": admin["password"],
            },
            timeout=30,
        )
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def create_user(self, prefix: str, roles: list[str]) -> tuple[str, str]:
        """A fresh user (so no decision for it is cached yet) holding the given realm roles."""
        headers = self.admin_headers()
        username = f"{prefix}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(16)
        response = httpx.post(
            f"{self.admin_base}/users",
            headers=headers,
            json={
                "username": username,
                "enabled": True,
                "email": f"{username}@example.org",
                "emailVerified": True,
                "firstName": prefix,
                "lastName": "Test",
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            },
            timeout=30,
        )
        response.raise_for_status()
        user_id = response.headers["location"].rsplit("/", 1)[1]
        role_documents = [
            httpx.get(f"{self.admin_base}/roles/{role}", headers=headers, timeout=30).json() for role in roles
        ]
        if role_documents:
            httpx.post(
                f"{self.admin_base}/users/{user_id}/role-mappings/realm",
                headers=headers,
                json=role_documents,
                timeout=30,
            ).raise_for_status()
        return username, password

    def create_public_client(self, client_id: str, attributes: dict[str, str]) -> None:
        """A password-grant client whose tokens carry the gate's audience, e.g. with a short lifespan."""
        response = httpx.post(
            f"{self.admin_base}/clients",
            headers=self.admin_headers(),
            json={
                "clientId": client_id,
                "publicClient": True,
                "directAccessGrantsEnabled": True,
                "standardFlowEnabled": False,
                "attributes": attributes,
                "protocolMappers": [
                    {
                        "name": "gate audience",
                        "protocol": "openid-connect",
                        "protocolMapper": "oidc-audience-mapper",
                        "config": {
                            "included.client.audience": self.stack["clients"]["gate"]["client_id"],
                            "access.token.claim": "true",
                        },
                    }
                ],
            },
            timeout=30,
        )
        if response.status_code != 409:
            response.raise_for_status()

    def set_client_attributes(self, client_id: str, attributes: dict[str, str]) -> None:
        """Change client attributes, e.g. a short access-token lifespan for one test."""
        headers = self.admin_headers()
        found = httpx.get(f"{self.admin_base}/clients", params={"clientId": client_id}, headers=headers, timeout=30)
        found.raise_for_status()
        client = found.json()[0]
        client["attributes"] = {**client.get("attributes", {}), **attributes}
        httpx.put(f"{self.admin_base}/clients/{client['id']}", headers=headers, json=client, timeout=30).raise_for_status()

    def token_endpoint_requests(self) -> float:
        """Keycloak's own count of token-endpoint requests, from its management metrics."""
        response = httpx.get(f"{self.stack['keycloak_management_url']}/metrics", timeout=30)
        response.raise_for_status()
        total = 0.0
        for line in response.text.splitlines():
            if line.startswith("http_server_requests_seconds_count") and '/token"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


def gate_counter(stack: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of the gate's samples called `name` whose labels include `labels`.

    A labelled series appears only once counted, so an absent one reads 0; the metric itself must
    be declared, so a misspelt name fails instead of reading 0.
    """
    text = httpx.get(f"{stack['gate_url']}/_gate/metrics", timeout=10).text
    families = list(text_string_to_metric_families(text))
    assert any(name.startswith(family.name) for family in families), f"{name} missing from gate metrics"
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
