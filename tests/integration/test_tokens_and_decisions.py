"""Forged tokens, decision caching and concurrent users, against the real Keycloak through NGINX."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from .local_processes import gate
from .realm_client import RealmClient, gate_counter

pytestmark = pytest.mark.integration

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def get(stack: dict[str, Any], path: str, token: str) -> httpx.Response:
    return httpx.get(f"{stack['gateway_url']}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def forgeries(token: str, jwks: dict[str, Any]) -> dict[str, str]:
    header_part, payload_part, signature = token.split(".")
    header = json.loads(unb64(header_part))
    claims = json.loads(unb64(payload_part))
    promoted = {**claims, "realm_access": {"roles": ["Admin"]}}
    rsa_jwk = next(key for key in jwks["keys"] if key["kid"] == header["kid"])
    hmac_header = b64(json.dumps({**header, "alg": "HS256"}).encode())
    hmac_input = f"{hmac_header}.{b64(json.dumps(promoted).encode())}"
    public_pem = RSAAlgorithm.from_jwk(rsa_jwk).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "tampered payload": f"{header_part}.{b64(json.dumps(promoted).encode())}.{signature}",
        "tampered signature": f"{header_part}.{payload_part}.{signature[:-4]}AAAA",
        "alg none": f"{b64(json.dumps({**header, 'alg': 'none'}).encode())}.{b64(json.dumps(promoted).encode())}.",
        "hmac with public key": f"{hmac_input}.{b64(hmac.new(public_pem, hmac_input.encode(), hashlib.sha256).digest())}",
        "spoofed kid": f"{b64(json.dumps({**header, 'kid': 'attacker'}).encode())}.{payload_part}.{signature}",
    }


def test_forged_tokens_are_401(stack: dict[str, Any], realm: RealmClient) -> None:
    token = realm.token("bob")
    jwks = httpx.get(f"{realm.base}/protocol/openid-connect/certs", timeout=30).json()
    assert get(stack, SEARCH, token).status_code == 200
    for name, forged in forgeries(token, jwks).items():
        response = get(stack, SEARCH, forged)
        assert response.status_code == 401, name
        assert response.json()["error_code"] == "UNAUTHENTICATED", name


def test_token_from_another_realm_is_401(stack: dict[str, Any], realm: RealmClient) -> None:
    master = realm.admin_headers()["Authorization"].removeprefix("Bearer ")
    assert get(stack, SEARCH, master).status_code == 401


def test_expired_token_is_401(stack: dict[str, Any], realm: RealmClient) -> None:
    realm.create_public_client("short-lived-test", {"access.token.lifespan": "2"})
    token = realm.token("bob", client_id="short-lived-test")
    assert get(stack, SEARCH, token).status_code == 200
    time.sleep(2 + 5 + 1)  # lifespan plus the gate's clock-skew leeway
    response = get(stack, SEARCH, token)
    assert response.status_code == 401
    assert "expired" in response.headers["www-authenticate"]


def test_repeated_request_costs_one_keycloak_decision(stack: dict[str, Any], realm: RealmClient) -> None:
    username, password = realm.create_user("repeat", ["Default"])
    token = realm.token(username, password)
    gate_before = gate_counter(stack, "gate_keycloak_request_seconds_count", endpoint="uma")
    keycloak_before = realm.token_endpoint_requests()
    for _ in range(50):
        assert get(stack, SEARCH, token).status_code == 200
    gate_calls = gate_counter(stack, "gate_keycloak_request_seconds_count", endpoint="uma") - gate_before
    keycloak_calls = realm.token_endpoint_requests() - keycloak_before
    print(f"50 identical requests: {gate_calls:.0f} gate UMA calls, {keycloak_calls:.0f} Keycloak token requests")
    assert gate_calls == 1
    assert keycloak_calls == 1


def test_two_users_hammering_concurrently_never_get_each_others_decision(
    stack: dict[str, Any], realm: RealmClient
) -> None:
    admin_user = realm.create_user("hammer-admin", ["Admin"])
    default_user = realm.create_user("hammer-default", ["Default"])
    tokens = {"Admin": realm.token(*admin_user), "Default": realm.token(*default_user)}
    missing_experiment = json.dumps({"experiment_id": str(900_000_000 + secrets.randbelow(1000))})
    url = f"{stack['gateway_url']}/api/2.0/mlflow/experiments/delete"
    callers = ["Admin", "Default"] * 100
    secrets.SystemRandom().shuffle(callers)

    def attempt(role: str) -> tuple[str, int, str]:
        response = httpx.post(
            url,
            content=missing_experiment,
            headers={"Authorization": f"Bearer {tokens[role]}", "Content-Type": "application/json"},
            timeout=60,
        )
        return role, response.status_code, response.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(attempt, callers))
    for role, status, body in results:
        if role == "Default":
            assert status == 403 and "PERMISSION_DENIED" in body, body
        else:
            assert status != 403 and "RESOURCE_DOES_NOT_EXIST" in body, body


def test_a_second_gate_process_reuses_decisions_through_redis(
    stack: dict[str, Any], realm: RealmClient, tmp_path: Path
) -> None:
    username, password = realm.create_user("shared", ["Default"])
    token = realm.token(username, password)
    assert get(stack, SEARCH, token).status_code == 200
    settings = {
        "GATE_KEYCLOAK_URL": stack["keycloak_url"],
        "GATE_REALM": stack["realm"],
        "GATE_REDIS_URL": stack["redis_url"],
    }
    if stack.get("workspaces"):
        # The same kind of cache entry as the stack's gate (the user's permission set).
        settings |= {"GATE_WORKSPACES": "on", "GATE_MLFLOW_URL": stack["mlflow_url"]}
    with gate(tmp_path, settings) as port:
        answer = httpx.get(
            f"http://127.0.0.1:{port}/_gate/check",
            headers={"Authorization": f"Bearer {token}", "X-Original-Method": "GET", "X-Original-URI": SEARCH},
            timeout=30,
        )
        assert answer.status_code == 200
        assert answer.headers["x-auth-request-user"] == username
        second_gate = {"gate_url": f"http://127.0.0.1:{port}"}
        assert gate_counter(second_gate, "gate_keycloak_request_seconds_count", endpoint="uma") == 0
        assert gate_counter(second_gate, "gate_decision_cache_lookups_total", layer="redis") == 1
