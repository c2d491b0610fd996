"""The gate's HTTP behaviour towards NGINX, with Keycloak replaced by an in-process fake."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from authz_service.app import create_app
from authz_service.settings import Settings
from authz_service.signin import SESSION_COOKIE, SIGNIN_COOKIE, safe_return_target

from .token_factory import ISSUER, JWKS_URL, Realm

TOKEN_URL = f"{ISSUER}/protocol/openid-connect/token"
ROLE_GRANTS = {
    "Admin": {"read", "create", "update", "delete"},
    "Default": {"read", "create", "update"},
}
DELETE_EXPERIMENT = ("POST", "/api/2.0/mlflow/experiments/delete")
GET_EXPERIMENT = ("GET", "/ajax-api/2.0/mlflow/experiments/get?experiment_id=1")


class FakeKeycloak:
    """JWKS plus UMA decisions derived from the caller's realm roles, like the real realm's policies."""

    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self.up = True
        self.uma_requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url == JWKS_URL:
            return self.realm.handle(request)
        if request.url == TOKEN_URL and request.method == "GET":
            return httpx.Response(405)  # what Keycloak answers a readiness probe
        if request.url == TOKEN_URL:
            self.uma_requests += 1
            form = parse_qs(request.content.decode())
            token = request.headers["authorization"].removeprefix("Bearer ")
            roles = jwt.decode(token, options={"verify_signature": False})["realm_access"]["roles"]
            _resource, scope = form["permission"][0].split("#")
            if any(scope in ROLE_GRANTS.get(role, set()) for role in roles):
                return httpx.Response(200, json={"result": True})
            return httpx.Response(403, json={"error": "access_denied"})
        return httpx.Response(404)


@pytest.fixture
def realm() -> Realm:
    return Realm()


@pytest.fixture
def keycloak(realm: Realm) -> FakeKeycloak:
    return FakeKeycloak(realm)


def settings(**extra: str) -> Settings:
    return Settings.from_env({"GATE_KEYCLOAK_URL": "http://keycloak.test", **extra})


@pytest.fixture
def client(keycloak: FakeKeycloak) -> TestClient:
    app = create_app(settings(), transport=httpx.MockTransport(keycloak.handle))
    return TestClient(app)


def check(client: TestClient, request: tuple[str, str], token: str | None = None, **headers: str) -> httpx.Response:
    method, uri = request
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.get("/_gate/check", headers={"X-Original-Method": method, "X-Original-URI": uri, **headers})


def test_no_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    response = check(client, GET_EXPERIMENT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mlflow"'


def test_basic_credentials_are_not_accepted(client: TestClient) -> None:
    response = check(client, GET_EXPERIMENT, Authorization="Basic Ym9iOnB3")
    assert response.status_code == 401


def test_invalid_token_is_401_invalid_token(client: TestClient, realm: Realm) -> None:
    response = check(client, GET_EXPERIMENT, realm.token(iss="http://evil.test/realms/mlflow"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "another issuer" in response.headers["www-authenticate"]


def test_public_route_needs_no_token(client: TestClient, keycloak: FakeKeycloak) -> None:
    assert check(client, ("GET", "/health")).status_code == 200
    assert keycloak.uma_requests == 0


def test_unmapped_route_is_refused_with_its_name(client: TestClient, realm: Realm) -> None:
    response = check(client, ("POST", "/api/2.0/mlflow/experiments/obliterate"), realm.token())
    assert response.status_code == 403
    assert "experiments/obliterate" in response.headers["x-gate-reason"]


def test_missing_original_request_headers_are_refused(client: TestClient, realm: Realm) -> None:
    response = client.get("/_gate/check", headers={"Authorization": f"Bearer {realm.token()}"})
    assert response.status_code == 403



def test_the_check_answers_get_and_head_only(client: TestClient, realm: Realm) -> None:
    headers = {"Authorization": f"Bearer {realm.token()}", "X-Original-Method": "GET", "X-Original-URI": GET_EXPERIMENT[1]}
    assert client.head("/_gate/check", headers=headers).status_code == 200
    refused = client.post("/_gate/check", headers=headers)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"


def test_the_first_of_repeated_credentials_counts(client: TestClient, realm: Realm) -> None:
    response = client.get(
        "/_gate/check",
        headers=[
            ("X-Original-Method", "GET"),
            ("X-Original-URI", GET_EXPERIMENT[1]),
            ("Authorization", "Bearer not-a-token"),
            ("Authorization", f"Bearer {realm.token()}"),
        ],
    )
    assert response.status_code == 401

def test_default_user_reads_with_identity_headers_but_cannot_delete(client: TestClient, realm: Realm) -> None:
    token = realm.token()
    allowed = check(client, GET_EXPERIMENT, token)
    assert allowed.status_code == 200
    assert allowed.headers["x-auth-request-user"] == "bob"
    assert allowed.headers["x-auth-request-email"] == "bob@example.org"
    assert allowed.headers["x-auth-request-roles"] == "Default,offline_access"
    denied = check(client, DELETE_EXPERIMENT, token)
    assert denied.status_code == 403
    assert denied.headers["x-gate-reason"] == "user bob lacks permission experiments#delete"


def test_admin_deletes(client: TestClient, realm: Realm) -> None:
    token = realm.token(sub="user-alice", preferred_username="alice", realm_access={"roles": ["Admin"]})
    assert check(client, DELETE_EXPERIMENT, token).status_code == 200


def test_user_without_role_gets_nothing(client: TestClient, realm: Realm) -> None:
    token = realm.token(sub="user-carol", preferred_username="carol", realm_access={"roles": []})
    assert check(client, GET_EXPERIMENT, token).status_code == 403


def test_unreachable_keycloak_is_503_never_an_allow(client: TestClient, keycloak: FakeKeycloak, realm: Realm) -> None:
    token = realm.token()
    assert check(client, ("GET", "/health")).status_code == 200
    keycloak.up = False
    assert check(client, GET_EXPERIMENT, token).status_code == 503


def test_repeated_checks_ask_keycloak_once_and_metrics_say_so(
    client: TestClient, keycloak: FakeKeycloak, realm: Realm
) -> None:
    token = realm.token()
    for _ in range(20):
        assert check(client, GET_EXPERIMENT, token).status_code == 200
    assert keycloak.uma_requests == 1
    metrics = client.get("/_gate/metrics").text
    assert 'gate_keycloak_request_seconds_count{endpoint="uma"} 1.0' in metrics
    assert 'gate_decision_cache_lookups_total{layer="memory"} 19.0' in metrics
    assert 'gate_decision_cache_lookups_total{layer="miss"} 1.0' in metrics
    assert 'gate_checks_total{outcome="allowed"} 20.0' in metrics
    assert 'gate_permission_checks_total{outcome="allowed",permission="experiments#read"} 20.0' in metrics


def sso_client(keycloak: FakeKeycloak, public_url: str = "http://gateway.test") -> TestClient:
    app = create_app(
        settings(GATE_CLIENT_SECRET="test-secret", GATE_PUBLIC_URL=public_url),
        transport=httpx.MockTransport(keycloak.handle),
    )
    return TestClient(app, base_url=public_url, follow_redirects=False)


def test_browser_navigation_without_session_is_sent_to_sign_in(keycloak: FakeKeycloak) -> None:
    client = sso_client(keycloak)
    page = check(client, ("GET", "/?o=1&x=y"), **{"Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 401
    assert page.headers["x-gate-signin"] == "/oauth2/start?rd=%2F%3Fo%3D1%26x%3Dy"
    xhr = check(client, GET_EXPERIMENT, **{"Sec-Fetch-Mode": "cors", "Accept": "application/json"})
    assert xhr.status_code == 401
    assert "x-gate-signin" not in xhr.headers


def test_sign_in_start_uses_pkce_state_nonce_and_a_strict_cookie(keycloak: FakeKeycloak) -> None:
    response = sso_client(keycloak, "https://gateway.test").get("/oauth2/start", params={"rd": "/#/models", "go": "1"})
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert location.path == "/realms/mlflow/protocol/openid-connect/auth"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == "https://gateway.test/oauth2/callback"
    assert len(query["state"]) >= 40 and len(query["nonce"]) >= 40
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SIGNIN_COOKIE}={query['state']};")
    for flag in ("HttpOnly", "Path=/oauth2/", "SameSite=lax", "Secure"):
        assert flag in cookie


def test_sign_in_first_adds_the_pages_hash_route_to_the_return_target(keycloak: FakeKeycloak) -> None:
    page = sso_client(keycloak).get("/oauth2/start", params={"rd": "/"})
    assert page.status_code == 200
    assert 'var target = "/";' in page.text
    assert "target += location.hash" in page.text
    assert 'location.replace("/oauth2/start?go=1&rd=" + encodeURIComponent(target))' in page.text
    assert SIGNIN_COOKIE not in page.headers.get("set-cookie", "")


def test_sign_in_page_cannot_be_scripted_through_the_return_target(keycloak: FakeKeycloak) -> None:
    page = sso_client(keycloak).get("/oauth2/start", params={"rd": '/"</script><script>alert(1)</script>'})
    assert "<script>alert(1)" not in page.text
    assert "\\u003c/script\\u003e" in page.text


def test_callback_refuses_foreign_missing_and_replayed_state(keycloak: FakeKeycloak) -> None:
    client = sso_client(keycloak)
    start = client.get("/oauth2/start", params={"go": "1"})
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    client.cookies.set(SIGNIN_COOKIE, state, path="/oauth2/")
    assert client.get("/oauth2/callback", params={"code": "c", "state": "forged"}).status_code == 400
    assert client.get("/oauth2/callback", params={"code": "c"}).status_code == 400
    client.cookies.clear()
    client.cookies.set(SIGNIN_COOKIE, "someone-elses", path="/oauth2/")
    assert client.get("/oauth2/callback", params={"code": "c", "state": state}).status_code == 400


def test_forged_session_cookie_is_unauthenticated(keycloak: FakeKeycloak) -> None:
    client = sso_client(keycloak)
    client.cookies.set(SESSION_COOKIE, "forged-session-id")
    assert check(client, GET_EXPERIMENT).status_code == 401
    assert client.get("/oauth2/userinfo").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "//evil.test/",
        "/\\evil.test/",
        "/%2Fevil.test/",
        "/%5Cevil.test",
        "%2F%2Fevil.test",
        "https://evil.test/",
        "javascript:alert(1)",
        "/%09/evil.test",
        "/ /evil.test",
        "/\t/evil.test",
        "evil.test",
        "/oauth2/start?rd=//evil.test",
        "",
    ],
)
def test_return_target_never_leaves_the_site(target: str) -> None:
    assert safe_return_target(target) == "/"


@pytest.mark.parametrize("target", ["/", "/#/experiments/1", "/#/models?x=1&y=2", "/static-files/x.js"])
def test_return_target_keeps_same_site_paths(target: str) -> None:
    assert safe_return_target(target) == target


class BrokenRedis:
    """Every call fails, as when Redis is down."""

    def __getattr__(self, name: str):
        async def fail(*args: object, **kwargs: object) -> None:
            raise RedisConnectionError("Redis is down")

        return fail


def test_session_store_outage_is_503_but_never_touches_public_or_refused_routes(keycloak: FakeKeycloak) -> None:
    app = create_app(
        settings(GATE_CLIENT_SECRET="test-secret", GATE_PUBLIC_URL="http://gateway.test"),
        transport=httpx.MockTransport(keycloak.handle),
        redis=BrokenRedis(),  # type: ignore[arg-type]
    )
    client = TestClient(app)
    client.cookies.set(SESSION_COOKIE, "a-session-id")
    assert check(client, GET_EXPERIMENT).status_code == 503
    assert check(client, ("GET", "/health")).status_code == 200
    assert check(client, ("GET", "/api/2.0/mlflow/experiments/obliterate")).status_code == 403
