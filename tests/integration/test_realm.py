"""The realm file as the real Keycloak imported it: tokens, UMA decisions for every
resource#scope and user, and the absence of Keycloak's grant-all defaults."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from authz_service.routes import SCOPES_BY_RESOURCE

from .realm_client import RealmClient

pytestmark = pytest.mark.integration

REALM_FILE = Path(__file__).resolve().parents[2] / "keycloak-realm" / "mlflow-realm.json"
UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
PERMISSIONS = [f"{resource}#{scope}" for resource, scopes in SCOPES_BY_RESOURCE.items() for scope in sorted(scopes)]


def expected(user: str, permission: str) -> bool:
    """The contract's role model: Admin everything, Default no delete and no
    administration, no role nothing."""
    resource, scope = permission.split("#")
    if user == "alice":
        return True
    if user == "bob":
        return resource != "administration" and scope != "delete"
    return False


@pytest.fixture(scope="module")
def token_url(stack: dict[str, Any]) -> str:
    return f"{stack['keycloak_url']}/realms/{stack['realm']}/protocol/openid-connect/token"


@pytest.fixture(scope="module")
def tokens(stack: dict[str, Any], token_url: str) -> dict[str, str]:
    """One password-grant access token per demo user, from the public CLI client."""
    result = {}
    for name, user in stack["users"].items():
        response = httpx.post(
            token_url,
            data={
                "grant_type": "password",
                "client_id": stack["clients"]["cli"]["client_id"],
                "username": name,
                "password": user["password"],
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        result[name] = response.json()["access_token"]
    return result


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def decide(token_url: str, token: str, permission: str) -> httpx.Response:
    return httpx.post(
        token_url,
        headers={"Authorization": f"Bearer {token}"},
        data={
            "grant_type": UMA_GRANT,
            "audience": "mlflow-gate",
            "permission": permission,
            "response_mode": "decision",
        },
        timeout=30,
    )


def test_tokens_carry_gate_audience_issuer_and_roles(stack: dict[str, Any], tokens: dict[str, str]) -> None:
    for name, token in tokens.items():
        body = claims(token)
        assert "mlflow-gate" in body["aud"]
        assert body["iss"] == f"{stack['keycloak_url']}/realms/{stack['realm']}"
        assert body["preferred_username"] == name
        assert body["email"] == f"{name}@example.org"
        application_roles = set(body["realm_access"]["roles"]) & {"Admin", "Default"}
        assert application_roles == set(stack["users"][name]["roles"])


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_decisions_follow_the_role_model(token_url: str, tokens: dict[str, str], user: str) -> None:
    actual = {}
    for permission in PERMISSIONS:
        response = decide(token_url, tokens[user], permission)
        if response.status_code == 200:
            assert response.json() == {"result": True}
            actual[permission] = True
        else:
            assert response.status_code == 403, response.text
            assert response.json()["error"] == "access_denied"
            actual[permission] = False
    assert actual == {permission: expected(user, permission) for permission in PERMISSIONS}


@pytest.mark.parametrize("permission", ["nonexistent#read", "experiments#manage", "administration#read"])
def test_unknown_resource_or_scope_is_an_error_not_a_grant(
    token_url: str, tokens: dict[str, str], permission: str
) -> None:
    response = decide(token_url, tokens["alice"], permission)
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_resource", "invalid_scope"}


def test_gate_client_secret_is_the_stack_secret(stack: dict[str, Any], token_url: str) -> None:
    gate = stack["clients"]["gate"]
    response = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": gate["client_id"],
            "client_secret": gate["client_secret"],
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def resource_server(stack: dict[str, Any]) -> dict[str, Any]:
    """The authorization settings of mlflow-gate as Keycloak holds them (admin REST API)."""
    headers = RealmClient(stack).admin_headers()
    realm_admin = f"{stack['keycloak_url']}/admin/realms/{stack['realm']}"
    (gate,) = httpx.get(
        f"{realm_admin}/clients", params={"clientId": "mlflow-gate"}, headers=headers, timeout=30
    ).json()
    return httpx.get(
        f"{realm_admin}/clients/{gate['id']}/authz/resource-server/settings", headers=headers, timeout=30
    ).json()


def test_imported_resource_server_has_no_defaults(resource_server: dict[str, Any]) -> None:
    assert resource_server["policyEnforcementMode"] == "ENFORCING"
    assert resource_server["decisionStrategy"] == "AFFIRMATIVE"
    resources = {r["name"] for r in resource_server["resources"]}
    # Workspaces are resources too: workspace:default from the file, the others from the admin CLI.
    workspaces = {name for name in resources if name.startswith("workspace:")}
    assert resources - workspaces == set(SCOPES_BY_RESOURCE)
    assert "workspace:default" in workspaces
    realm_file = json.loads(REALM_FILE.read_text())
    (gate,) = [c for c in realm_file["clients"] if c["clientId"] == "mlflow-gate"]
    # Exactly the file's policies and permissions plus the admin CLI's per-workspace ones (named
    # after their workspace resource): Keycloak added no grant-all default.
    in_file = {p["name"] for p in gate["authorizationSettings"]["policies"]}
    held = {p["name"] for p in resource_server["policies"]}
    assert in_file <= held
    assert all(name.startswith(tuple(f"{w} " for w in workspaces) + tuple(f"{w}: " for w in workspaces)) for name in held - in_file)
