"""Fail closed: with Keycloak or the gate unreachable, the real NGINX answers 503 and MLflow is untouched.

The shared stack keeps running; the outage is made by a second gate whose Keycloak URL points at a
closed port, and a second NGINX (the product template) in front of it or of a missing gate.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .local_processes import free_port, gate, gateway_nginx
from .raw_http import address
from .realm_client import RealmClient
from .test_mlflow_client import client_for, signed_in

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@pytest.fixture(scope="module")
def gateway_without_keycloak(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """NGINX -> a gate configured for the real realm's issuer, whose Keycloak is unreachable."""
    state = tmp_path_factory.mktemp("no-keycloak")
    mlflow_host, mlflow_port = address(stack["mlflow_url"])
    settings = {
        "GATE_KEYCLOAK_URL": f"http://127.0.0.1:{free_port()}",
        "GATE_ISSUER": f"{stack['keycloak_url']}/realms/{stack['realm']}",
        "GATE_REALM": stack["realm"],
    }
    with gate(state, settings) as gate_port:
        with gateway_nginx(state, f"127.0.0.1:{gate_port}", f"{mlflow_host}:{mlflow_port}") as port:
            yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def gateway_without_gate(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("no-gate")
    mlflow_host, mlflow_port = address(stack["mlflow_url"])
    with gateway_nginx(state, f"127.0.0.1:{free_port()}", f"{mlflow_host}:{mlflow_port}") as port:
        yield f"http://127.0.0.1:{port}"


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_unreachable_keycloak_refuses_with_503(
    gateway_without_keycloak: str, stack: dict[str, Any], realm: RealmClient
) -> None:
    with signed_in(realm.token("alice")):
        experiment_id = client_for(stack).create_experiment(f"outage-{secrets.token_hex(3)}")
    token = realm.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    search = httpx.get(f"{gateway_without_keycloak}/api/2.0/mlflow/experiments/search", headers=headers, timeout=30)
    assert_unavailable(search)
    delete = httpx.post(
        f"{gateway_without_keycloak}/api/2.0/mlflow/experiments/delete",
        json={"experiment_id": experiment_id},
        headers=headers,
        timeout=30,
    )
    assert_unavailable(delete)
    with signed_in(token):
        assert client_for(stack).get_experiment(experiment_id).lifecycle_stage == "active"


def test_unreachable_gate_refuses_with_503(gateway_without_gate: str, realm: RealmClient) -> None:
    response = httpx.get(
        f"{gateway_without_gate}/api/2.0/mlflow/experiments/search",
        headers={"Authorization": f"Bearer {realm.token('alice')}"},
        timeout=30,
    )
    assert_unavailable(response)
    assert_unavailable(httpx.get(f"{gateway_without_gate}/health", timeout=30))
