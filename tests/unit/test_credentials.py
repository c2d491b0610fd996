"""The gate's answers for Basic credentials and for cookie-authorized cross-site requests."""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi.testclient import TestClient

from authz_service.app import create_app
from authz_service.oidc import TokenSet
from authz_service.settings import Settings, SettingsError
from authz_service.signin import SESSION_COOKIE

from .test_app import DELETE_EXPERIMENT, GET_EXPERIMENT, TOKEN_URL, FakeKeycloak, check
from .token_factory import Realm

PUBLIC_URL = "http://gateway.test:8080"
SECRET = "unit-test-exchange-secret-0123456789abcdef"
ALICE = {"sub": "user-alice", "preferred_username": "alice", "realm_access": {"roles": ["Admin"]}}


class KeycloakWithGrants(FakeKeycloak):
    """Adds the password and client-credentials grants to the fake's JWKS and UMA decisions."""

    def __init__(self, realm: Realm) -> None:
        super().__init__(realm)
        self.grants = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        if request.url != TOKEN_URL or form.get("grant_type") not in ("password", "client_credentials"):
            return super().handle(request)
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        self.grants += 1
        if form.get("username") == "bob" and form.get("password") == "bob's password":
            return httpx.Response(200, json={"access_token": self.realm.token(), "expires_in": 300})
        if form.get("client_id") == "robot-ci" and form.get("client_secret") == "robot secret":
            token = self.realm.token(
                sub="robot", preferred_username="service-account-robot-ci", azp="robot-ci", realm_access={"roles": ["Admin"]}
            )
            return httpx.Response(200, json={"access_token": token, "expires_in": 300})
        return httpx.Response(401, json={"error": "invalid_grant", "error_description": "Invalid user credentials"})


@pytest.fixture
def keycloak() -> KeycloakWithGrants:
    return KeycloakWithGrants(Realm())


def gate(keycloak: KeycloakWithGrants, **extra: str) -> TestClient:
    environment = {
        "GATE_KEYCLOAK_URL": "http://keycloak.test",
        "GATE_CLIENT_SECRET": "test-secret",
        "GATE_PUBLIC_URL": PUBLIC_URL,
        "GATE_BASIC_SECRET": SECRET,
        "GATE_BASIC_MAX_FAILURES": "3",
        **extra,
    }
    app = create_app(Settings.from_env(environment), transport=httpx.MockTransport(keycloak.handle))
    return TestClient(app)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_a_users_password_works_like_their_token_and_is_exchanged_once(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak)
    for _ in range(5):
        allowed = check(client, GET_EXPERIMENT, Authorization=basic("bob", "bob's password"))
        assert allowed.status_code == 200
        assert allowed.headers["x-auth-request-user"] == "bob"
    denied = check(client, DELETE_EXPERIMENT, Authorization=basic("bob", "bob's password"))
    assert denied.status_code == 403
    assert denied.headers["x-gate-reason"] == "user bob lacks permission experiments#delete"
    assert keycloak.grants == 1


def test_a_robot_gets_in_with_its_client_id_and_secret(keycloak: KeycloakWithGrants) -> None:
    response = check(gate(keycloak), DELETE_EXPERIMENT, Authorization=basic("robot-ci", "robot secret"))
    assert response.status_code == 200
    assert response.headers["x-auth-request-user"] == "service-account-robot-ci"


def test_wrong_password_is_401_offering_basic_to_api_clients_only(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak)
    api = check(client, GET_EXPERIMENT, Authorization=basic("bob", "guess"))
    assert api.status_code == 401
    assert api.headers["www-authenticate"].startswith('Bearer realm="mlflow", error="invalid_token"')
    assert api.headers["www-authenticate"].endswith(', Basic realm="mlflow", charset="UTF-8"')
    assert 'Basic realm="mlflow"' in check(client, GET_EXPERIMENT).headers["www-authenticate"]
    for browser in ({"Sec-Fetch-Mode": "cors"}, {"Accept": "text/html"}, {"Origin": PUBLIC_URL}):
        response = check(client, GET_EXPERIMENT, **browser)
        assert response.status_code == 401
        assert "basic" not in response.headers["www-authenticate"].lower()
    client.cookies.set(SESSION_COOKIE, "expired-session")
    assert "basic" not in check(client, GET_EXPERIMENT).headers["www-authenticate"].lower()


def test_failures_beyond_the_limit_are_429_without_asking_keycloak(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak)
    assert check(client, GET_EXPERIMENT, Authorization=basic("bob", "bob's password")).status_code == 200
    statuses = [
        check(client, GET_EXPERIMENT, Authorization=basic("bob", f"guess {n}"), **{"X-Real-IP": "10.0.0.1"})
        for n in range(5)
    ]
    assert [response.status_code for response in statuses] == [401, 401, 401, 403, 403]
    throttled = statuses[-1]
    assert throttled.headers["x-gate-status"] == "429"
    assert 295 <= int(throttled.headers["retry-after"]) <= 300
    assert keycloak.grants == 4
    # Bob's password, proven before, keeps working from the cache; nothing new gets through.
    assert check(client, GET_EXPERIMENT, Authorization=basic("bob", "bob's password")).status_code == 200
    other_user = check(client, GET_EXPERIMENT, Authorization=basic("carol", "x"), **{"X-Real-IP": "10.0.0.1"})
    assert other_user.headers.get("x-gate-status") == "429"
    assert check(client, GET_EXPERIMENT, Authorization=basic("carol", "x"), **{"X-Real-IP": "10.0.0.2"}).status_code == 401


def test_malformed_basic_is_401(keycloak: KeycloakWithGrants) -> None:
    response = check(gate(keycloak), GET_EXPERIMENT, Authorization="Basic %%%")
    assert response.status_code == 401
    assert "base64" in response.headers["www-authenticate"]
    assert keycloak.grants == 0


def test_keycloak_down_during_an_exchange_is_503(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak)
    keycloak.up = False
    assert check(client, GET_EXPERIMENT, Authorization=basic("bob", "bob's password")).status_code == 503


def test_basic_switched_off_is_401_without_asking_keycloak(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak, GATE_BASIC_AUTH="false")
    response = check(client, GET_EXPERIMENT, Authorization=basic("bob", "bob's password"))
    assert response.status_code == 401
    assert "basic" not in response.headers["www-authenticate"].lower()
    assert keycloak.grants == 0


def test_basic_needs_a_long_exchange_secret_and_never_echoes_it() -> None:
    base = {"GATE_KEYCLOAK_URL": "http://keycloak.test"}
    assert not Settings.from_env(base).basic_enabled
    assert not Settings.from_env({**base, "GATE_BASIC_AUTH": "off", "GATE_BASIC_SECRET": SECRET}).basic_enabled
    assert Settings.from_env({**base, "GATE_BASIC_SECRET": SECRET}).basic_enabled
    with pytest.raises(SettingsError, match="GATE_BASIC_SECRET is required when GATE_BASIC_AUTH is on"):
        Settings.from_env({**base, "GATE_BASIC_AUTH": "true"})
    with pytest.raises(SettingsError, match="at least 32 characters") as error:
        Settings.from_env({**base, "GATE_BASIC_SECRET": "short-secret"})
    assert "short-secret" not in str(error.value)


def signed_in(client: TestClient, keycloak: KeycloakWithGrants) -> None:
    token = keycloak.realm.token(**ALICE)
    now = time.time()
    tokens = TokenSet(token, "refresh", None, now + 300, now + 1800)
    session_id = asyncio.run(client.app.state.components.sessions.create(tokens))  # type: ignore[attr-defined]
    client.cookies.set(SESSION_COOKIE, session_id)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Origin": "http://gateway.test:8081", "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {},
    ],
)
def test_cookie_state_changes_from_elsewhere_are_403(keycloak: KeycloakWithGrants, headers: dict[str, str]) -> None:
    client = gate(keycloak)
    signed_in(client, keycloak)
    response = check(client, DELETE_EXPERIMENT, **headers)
    assert response.status_code == 403
    assert response.headers["x-gate-reason"].startswith("cross-site request refused")
    assert keycloak.uma_requests == 0


def test_cookie_state_changes_from_the_gateway_itself_pass(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak)
    signed_in(client, keycloak)
    assert check(client, DELETE_EXPERIMENT, Origin=PUBLIC_URL).status_code == 200
    assert check(client, DELETE_EXPERIMENT, **{"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert check(client, GET_EXPERIMENT, Origin="http://evil.test", **{"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_bearer_and_basic_ignore_the_origin(keycloak: KeycloakWithGrants) -> None:
    client = gate(keycloak)
    foreign = {"Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"}
    token = keycloak.realm.token(**ALICE)
    assert check(client, DELETE_EXPERIMENT, token, **foreign).status_code == 200
    robot = basic("robot-ci", "robot secret")
    assert check(client, DELETE_EXPERIMENT, Authorization=robot, **foreign).status_code == 200
