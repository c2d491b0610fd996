"""Static checks of the deployment files: docker-compose.yml, Dockerfile, the NGINX
template (rendered and checked by the real `nginx -t`) and the Keycloak realm files.

None of this needs the running stack, so a broken file fails in seconds.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_service.routes import CRUD, SCOPES_BY_RESOURCE

from stack import nginx as stack_nginx

from .deployment_checks import is_pinned, nginx_config_test

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REALM_FILE = REPO / "keycloak-realm" / "mlflow-realm.json"
USERS_FILE = REPO / "keycloak-realm" / "dev" / "mlflow-users-0.json"
TEMPLATE = REPO / "nginx" / "gateway.conf.template"

RESOURCE_TYPE = "urn:mlflow-gate:resources:mlflow"
WORKSPACE_TYPE = "urn:mlflow-gate:resources:workspace"
FAMILIES = [resource for resource, scopes in SCOPES_BY_RESOURCE.items() if scopes == CRUD]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    return json.loads(REALM_FILE.read_text())


def client(realm: dict[str, Any], client_id: str) -> dict[str, Any]:
    return next(c for c in realm["clients"] if c["clientId"] == client_id)


# docker-compose.yml and Dockerfile


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    images = [service["image"] for service in compose["services"].values() if "image" in service]
    images += re.findall(r"^FROM\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert images
    for image in images:
        assert is_pinned(image), f"{image} is not pinned to a version tag"


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    sources = [
        volume.split(":", 1)[0] for service in compose["services"].values() for volume in service.get("volumes", [])
    ]
    bind_mounts = [source for source in sources if source.startswith((".", "/"))]
    assert bind_mounts
    for source in bind_mounts:
        assert (REPO / source).exists(), f"{source} is mounted but missing"


def test_gate_image_copies_every_package_it_installs() -> None:
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = re.findall(r"^COPY\s+(\S+)\s", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    # A subpackage (authz_service.admin) travels inside its top-level package's folder.
    assert {package.split(".")[0] for package in packages} <= set(copied)


def test_only_nginx_and_keycloak_are_published(compose: dict[str, Any]) -> None:
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"nginx", "keycloak"}


def test_services_have_health_checks_and_start_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert all("healthcheck" in service for service in services.values())
    conditions = {
        name: {dependency: spec["condition"] for dependency, spec in service.get("depends_on", {}).items()}
        for name, service in services.items()
    }
    assert conditions["gate"] == {"keycloak": "service_healthy", "redis": "service_healthy"}
    assert conditions["nginx"] == {"gate": "service_healthy", "mlflow": "service_healthy"}


def test_secret_defaults_are_marked_dev_only() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    defaults = re.findall(r"\$\{(\w*(?:SECRET|PASSWORD)\w*):-([^}]*)\}", text)
    assert defaults
    for variable, default in defaults:
        assert default.startswith("dev-only-"), f"{variable} defaults to {default!r}"


def test_nginx_service_provides_exactly_the_template_variables(compose: dict[str, Any]) -> None:
    environment = compose["services"]["nginx"]["environment"]
    assert set(environment) == stack_nginx.TEMPLATE_VARIABLES
    rendered = stack_nginx.render_template(TEMPLATE.read_text(), {k: str(v) for k, v in environment.items()})
    assert "${" not in rendered


# NGINX template


def test_template_uses_exactly_the_documented_placeholders() -> None:
    assert set(stack_nginx.PLACEHOLDER.findall(TEMPLATE.read_text())) == stack_nginx.TEMPLATE_VARIABLES


def test_rendering_refuses_missing_values() -> None:
    with pytest.raises(stack_nginx.TemplateError):
        stack_nginx.render_template(TEMPLATE.read_text(), {"GATEWAY_LISTEN": "8080"})


def test_rendered_template_passes_nginx_config_test(tmp_path: Path) -> None:
    values = {
        "GATEWAY_LISTEN": "127.0.0.1:18080",
        "GATE_UPSTREAM": "127.0.0.1:18090",
        "MLFLOW_UPSTREAM": "127.0.0.1:15500",
        "MLFLOW_HOST_HEADER": "127.0.0.1:5500",
    }
    result = nginx_config_test(stack_nginx.render_template(TEMPLATE.read_text(), values), tmp_path)
    assert result.returncode == 0, result.stderr


def test_template_guards_what_the_gate_relies_on() -> None:
    text = TEMPLATE.read_text()
    for directive in (
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_pass_request_body off;",
        "proxy_set_header X-Original-URI $request_uri;",
        "proxy_set_header X-Original-Method $request_method;",
        "proxy_pass http://$gate_or_mlflow;",
        'default                                                    "mlflow$request_uri";',
        "proxy_set_header X-MLflow-Workspace $http_x_mlflow_workspace;",
        "proxy_set_header X-MLflow-Workspace $gate_workspace;",
        "proxy_set_header X-Gate-Readable-Workspaces $gate_readable_workspaces;",
        'proxy_set_header X-HTTP-Method-Override "";',
        'proxy_set_header X-HTTP-Method "";',
        'proxy_set_header X-Method-Override "";',
        "keepalive",
    ):
        assert directive in text, directive
    assert text.count("auth_request /_gate/check;") == 1


# Keycloak realm


def test_realm_has_both_roles_and_no_users(realm: dict[str, Any]) -> None:
    assert realm["realm"] == "mlflow"
    assert {role["name"] for role in realm["roles"]["realm"]} == {"Admin", "Default"}
    # The only user is the gate's service account, which may read events (revocation) and nothing else.
    assert realm.get("users") == [
        {
            "username": "service-account-mlflow-gate",
            "enabled": True,
            "serviceAccountClientId": "mlflow-gate",
            "clientRoles": {"realm-management": ["view-events"]},
        }
    ], "demo users belong in keycloak-realm/dev/ only"


def test_resource_server_is_enforcing_affirmative_without_defaults(realm: dict[str, Any]) -> None:
    gate = client(realm, "mlflow-gate")
    settings = gate["authorizationSettings"]
    assert gate["authorizationServicesEnabled"] is True
    assert settings["policyEnforcementMode"] == "ENFORCING"
    assert settings["decisionStrategy"] == "AFFIRMATIVE"
    names = {r["name"] for r in settings["resources"]} | {p["name"] for p in settings["policies"]}
    assert not {"Default Resource", "Default Policy", "Default Permission"} & names


def test_every_resource_family_has_its_scopes(realm: dict[str, Any]) -> None:
    resources = client(realm, "mlflow-gate")["authorizationSettings"]["resources"]
    families = [r for r in resources if r["type"] == RESOURCE_TYPE]
    assert {r["name"]: {s["name"] for s in r["scopes"]} for r in families} == SCOPES_BY_RESOURCE
    # The one workspace every deployment has; the admin CLI adds the others.
    workspaces = [r for r in resources if r["type"] != RESOURCE_TYPE]
    assert [(r["name"], r["type"], {s["name"] for s in r["scopes"]}) for r in workspaces] == [
        ("workspace:default", WORKSPACE_TYPE, CRUD)
    ]


def granted_by_role(realm: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """Evaluate the realm file's role policies and scope permissions statically."""
    settings = client(realm, "mlflow-gate")["authorizationSettings"]
    scopes_of = {r["name"]: {s["name"] for s in r["scopes"]} for r in settings["resources"]}
    policies = settings["policies"]
    assert {p["type"] for p in policies} == {"role", "scope", "resource"}
    assert {p["logic"] for p in policies} == {"POSITIVE"}
    role_of = {}
    for policy in (p for p in policies if p["type"] == "role"):
        (role,) = json.loads(policy["config"]["roles"])
        assert role["required"] is True
        role_of[policy["name"]] = role["id"]
    granted: dict[str, set[tuple[str, str]]] = {}
    for permission in (p for p in policies if p["type"] == "scope"):
        config = permission["config"]
        for policy in json.loads(config["applyPolicies"]):
            for resource in json.loads(config["resources"]):
                for scope in json.loads(config["scopes"]):
                    assert scope in scopes_of[resource], f"{permission['name']}: {resource} has no {scope}"
                    granted.setdefault(role_of[policy], set()).add((resource, scope))
    # Resource-type permissions grant every scope of every resource of that type.
    for permission in (p for p in policies if p["type"] == "resource"):
        config = permission["config"]
        typed = [r for r in settings["resources"] if r["type"] == config["defaultResourceType"]]
        for policy in json.loads(config["applyPolicies"]):
            for resource in typed:
                granted.setdefault(role_of[policy], set()).update((resource["name"], s["name"]) for s in resource["scopes"])
    return granted


def test_permissions_match_the_role_model(realm: dict[str, Any]) -> None:
    admin = {(family, scope) for family in [*FAMILIES, "workspace:default"] for scope in CRUD} | {
        ("administration", "manage")
    }
    default = {(family, scope) for family in [*FAMILIES, "workspace:default"] for scope in CRUD - {"delete"}}
    assert granted_by_role(realm) == {"Admin": admin, "Default": default}


def test_gate_client(realm: dict[str, Any]) -> None:
    gate = client(realm, "mlflow-gate")
    assert gate["publicClient"] is False
    assert gate["serviceAccountsEnabled"] is True
    assert gate["standardFlowEnabled"] is True
    assert gate["directAccessGrantsEnabled"] is False
    assert gate["attributes"]["pkce.code.challenge.method"] == "S256"
    assert gate["secret"] == "${MLFLOW_GATE_CLIENT_SECRET:dev-only-mlflow-gate-secret}"
    assert gate["redirectUris"] and all(uri.endswith("/oauth2/callback") for uri in gate["redirectUris"])


def test_cli_client(realm: dict[str, Any]) -> None:
    cli = client(realm, "mlflow-cli")
    assert cli["publicClient"] is True
    assert cli["directAccessGrantsEnabled"] is True
    assert cli["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert cli["attributes"]["pkce.code.challenge.method"] == "S256"


@pytest.mark.parametrize("client_id", ["mlflow-gate", "mlflow-cli"])
def test_access_tokens_carry_the_gate_audience(realm: dict[str, Any], client_id: str) -> None:
    mappers = [m for m in client(realm, client_id)["protocolMappers"] if m["protocolMapper"] == "oidc-audience-mapper"]
    assert [(m["config"]["included.client.audience"], m["config"]["access.token.claim"]) for m in mappers] == [
        ("mlflow-gate", "true")
    ]


def test_dev_users_file() -> None:
    document = json.loads(USERS_FILE.read_text())
    assert document["realm"] == "mlflow"
    users = {u["username"]: u for u in document["users"]}
    assert {name: sorted(set(u["realmRoles"]) & {"Admin", "Default"}) for name, u in users.items()} == {
        "alice": ["Admin"],
        "bob": ["Default"],
        "carol": [],
        "dave": ["Default"],
        "erin": ["Default"],
    }
    for name, user in users.items():
        assert user["email"] == f"{name}@example.org"
        assert user["credentials"] == [{"type": "password", "value": f"{name}-dev-password", "temporary": False}]
