"""Browser sign-in security against the real Keycloak, NGINX and gate, step by step over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from . import signin_flow

pytestmark = pytest.mark.integration

SESSION_COOKIE = "mlflow_gate_session"
SEARCH = "/ajax-api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture
def gateway(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack["gateway_url"], follow_redirects=False, timeout=30) as client:
        yield client


def sign_in(gateway: httpx.Client, stack: dict[str, Any], username: str, return_to: str = "/") -> httpx.Response:
    url = signin_flow.start(gateway, return_to)
    return signin_flow.finish(gateway, signin_flow.log_in(url, username, stack["users"][username]["password"]))


def test_sign_in_returns_to_the_page_with_a_strict_session_cookie(gateway: httpx.Client, stack: dict[str, Any]) -> None:
    response = sign_in(gateway, stack, "bob", "/#/experiments")
    assert response.status_code == 302
    assert response.headers["location"] == "/#/experiments"
    set_cookie = next(value for value in response.headers.get_list("set-cookie") if value.startswith(SESSION_COOKIE))
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "SameSite=lax" in set_cookie and "Path=/;" in set_cookie + ";"
    assert "secure" not in attributes  # served over plain http here; https turns it on (unit-tested)
    assert gateway.get(SEARCH).status_code == 200
    whoami = gateway.get("/oauth2/userinfo").json()
    assert whoami["user"] == "bob" and "Default" in whoami["roles"]


def test_session_cookie_gets_the_same_decisions_as_a_token(gateway: httpx.Client, stack: dict[str, Any]) -> None:
    sign_in(gateway, stack, "bob")
    # Sent as the UI sends it (same origin), so the refusal is the role decision, not cross-site.
    denied = gateway.post(
        "/ajax-api/2.0/mlflow/experiments/delete", json={"experiment_id": "0"}, headers={"Origin": stack["gateway_url"]}
    )
    assert denied.status_code == 403
    assert denied.json()["error_code"] == "PERMISSION_DENIED"
    assert "lacks permission experiments#delete" in denied.json()["message"]


def test_xhr_without_session_gets_401_json_and_navigation_gets_sign_in(gateway: httpx.Client) -> None:
    xhr = gateway.get(SEARCH, headers={"Sec-Fetch-Mode": "cors", "Accept": "application/json"})
    assert xhr.status_code == 401
    assert xhr.json()["error_code"] == "UNAUTHENTICATED"
    page = gateway.get("/", headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"})
    assert page.status_code == 302
    assert page.headers["location"] == "/oauth2/start?rd=%2F"


def test_replayed_callback_and_replayed_code_fail(gateway: httpx.Client, stack: dict[str, Any]) -> None:
    url = signin_flow.start(gateway)
    callback = signin_flow.log_in(url, "bob", stack["users"]["bob"]["password"])
    assert signin_flow.finish(gateway, callback).status_code == 302
    gateway.cookies.clear()
    replay = signin_flow.finish(gateway, callback)
    assert replay.status_code == 400
    assert SESSION_COOKIE not in replay.headers.get("set-cookie", "")

    signin_flow.start(gateway)
    state = gateway.cookies["mlflow_gate_signin"]
    old_code = signin_flow.Callback(
        callback.url.replace(callback.state, state), code=callback.code, state=state
    )
    reused = signin_flow.finish(gateway, old_code)
    assert reused.status_code == 400
    assert "could not be completed" in reused.text


def test_state_from_another_browser_fails(gateway: httpx.Client, stack: dict[str, Any]) -> None:
    victim_url = signin_flow.start(gateway)
    callback = signin_flow.log_in(victim_url, "bob", stack["users"]["bob"]["password"])
    with httpx.Client(base_url=stack["gateway_url"], follow_redirects=False, timeout=30) as attacker:
        signin_flow.start(attacker)
        assert signin_flow.finish(attacker, callback).status_code == 400


def test_a_fixed_session_id_is_never_adopted(gateway: httpx.Client, stack: dict[str, Any]) -> None:
    planted = "attacker-chosen-session-id-0123456789abcdef"
    gateway.cookies.set(SESSION_COOKIE, planted)
    assert gateway.get(SEARCH).status_code == 401
    response = sign_in(gateway, stack, "bob")
    issued = response.cookies[SESSION_COOKIE]
    assert issued != planted
    with httpx.Client(base_url=stack["gateway_url"], cookies={SESSION_COOKIE: planted}, timeout=30) as attacker:
        assert attacker.get(SEARCH).status_code == 401


def test_forged_cookie_is_401(stack: dict[str, Any]) -> None:
    for forged in ("", "x", "A" * 43, "../../etc/passwd", "mlflow-gate:session:v1:abc"):
        with httpx.Client(base_url=stack["gateway_url"], cookies={SESSION_COOKIE: forged}, timeout=30) as client:
            assert client.get(SEARCH).status_code == 401, forged


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "/\\evil.example/", "/%2F%2Fevil.example", "%2F%2Fevil.example", "/%5Cevil.example",
     "https://evil.example/", "javascript:alert(1)", "/%09/evil.example", "/%0d%0aLocation:%20http://evil.example"],
)
def test_open_redirect_vectors_return_to_the_site_root(
    gateway: httpx.Client, stack: dict[str, Any], target: str
) -> None:
    response = sign_in(gateway, stack, "alice", target)
    assert response.status_code == 302
    assert response.headers["location"] == "/"


def test_sign_out_ends_the_gate_and_keycloak_sessions(gateway: httpx.Client, stack: dict[str, Any]) -> None:
    sign_in(gateway, stack, "bob")
    session_id = gateway.cookies[SESSION_COOKIE]
    out = gateway.get("/oauth2/sign_out")
    assert out.status_code == 302 and out.headers["location"] == "/"
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    with httpx.Client(base_url=stack["gateway_url"], cookies={SESSION_COOKIE: session_id}, timeout=30) as stale:
        assert stale.get(SEARCH).status_code == 401
