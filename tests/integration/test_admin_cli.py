"""Every mlflow-gate-admin command against the real Keycloak of the stack, checked through the gateway."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authz_service.admin import cli

from .realm_client import RealmClient

pytestmark = pytest.mark.integration

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
DELETE = "/api/2.0/mlflow/experiments/delete"
UNMAPPED = "/api/2.0/mlflow/experiments/obliterate"


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@pytest.fixture(autouse=True)
def admin_env(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads its connection from the environment, as an operator would configure it."""
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_KEYCLOAK_URL", stack["keycloak_url"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_REALM", stack["realm"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_USER", stack["keycloak_admin"]["username"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_PASSWORD", stack["keycloak_admin"]["password"])
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_GATE_CLIENT", stack["clients"]["gate"]["client_id"])
    monkeypatch.delenv("GATE_ROUTE_MAP_EXTRA", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> tuple[int, str, str]:
    sys.stdin = io.StringIO(stdin)
    try:
        code = cli.main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ok(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "") -> str:
    code, out, err = run(capsys, *argv, stdin=stdin)
    assert (code, err) == (0, ""), f"{argv}: exit {code}: {err}"
    return out


def failure(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The single stderr line of a command that must fail cleanly."""
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "", (argv, code, out, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def gateway(stack: dict[str, Any], method: str, path: str, token: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method, f"{stack['gateway_url']}{path}", headers={"Authorization": f"Bearer {token}"}, json=body, timeout=30
    )


def password_grant(realm: RealmClient, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{realm.base}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": realm.stack["clients"]["cli"]["client_id"],
            "username": username,
            "password": password,
        },
        timeout=30,
    )


def client_credentials(realm: RealmClient, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{realm.base}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        timeout=30,
    )


def listed_users(capsys: pytest.CaptureFixture[str], search: str) -> dict[str, dict[str, Any]]:
    return {row["username"]: row for row in json.loads(ok(capsys, "user", "list", "--search", search, "--json"))}


@pytest.fixture
def new_username(capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    """A fresh user name; the user is deleted afterwards if the test left it behind."""
    username = f"admin-cli-{secrets.token_hex(4)}"
    yield username
    run(capsys, "user", "delete", username)


def test_user_lifecycle(capsys: pytest.CaptureFixture[str], realm: RealmClient, stack: dict[str, Any], new_username: str) -> None:
    first, second = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    out = ok(
        capsys,
        "user", "create", new_username, "--role", "Default", "--email", f"{new_username}@example.org",
        "--first-name", "Admin", "--last-name", "Cli", "--password-stdin",
        stdin=first + "\n",
    )
    assert out.strip() == f"created user {new_username} (Default)"
    assert listed_users(capsys, new_username)[new_username] == {
        "username": new_username, "enabled": True, "email": f"{new_username}@example.org",
        "name": "Admin Cli", "roles": ["Default"],
    }
    token = password_grant(realm, new_username, first).json()["access_token"]
    assert gateway(stack, "GET", SEARCH, token).status_code == 200
    assert new_username in ok(capsys, "user", "list", "--search", new_username)

    assert ok(capsys, "user", "set-password", new_username, "--password-stdin", stdin=second + "\n").startswith("set the password")
    assert password_grant(realm, new_username, first).status_code == 401
    assert password_grant(realm, new_username, second).status_code == 200

    assert ok(capsys, "user", "disable", new_username).startswith(f"disabled user {new_username} and ended ")
    assert listed_users(capsys, new_username)[new_username]["enabled"] is False
    assert password_grant(realm, new_username, second).status_code in (400, 401)
    ok(capsys, "user", "enable", new_username)
    assert password_grant(realm, new_username, second).status_code == 200

    assert "already exists" in failure(capsys, "user", "create", new_username)
    assert ok(capsys, "user", "delete", new_username).strip() == f"deleted user {new_username}"
    assert listed_users(capsys, new_username) == {}


def test_signout_ends_every_session(capsys: pytest.CaptureFixture[str], realm: RealmClient, new_username: str) -> None:
    password = secrets.token_urlsafe(12)
    ok(capsys, "user", "create", new_username, "--role", "Default", "--email", f"{new_username}@example.org",
       "--first-name", "Sign", "--last-name", "Out", "--password-stdin", stdin=password)
    refresh_tokens = [password_grant(realm, new_username, password).json()["refresh_token"] for _ in range(2)]
    assert ok(capsys, "signout", new_username).strip() == f"ended 2 session(s) of {new_username}"
    for refresh_token in refresh_tokens:
        refreshed = httpx.post(
            f"{realm.base}/protocol/openid-connect/token",
            data={"grant_type": "refresh_token", "client_id": realm.stack["clients"]["cli"]["client_id"],
                  "refresh_token": refresh_token},
            timeout=30,
        )
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_granting_admin_lets_bob_delete_after_his_next_token(
    capsys: pytest.CaptureFixture[str], realm: RealmClient, stack: dict[str, Any]
) -> None:
    created = gateway(stack, "POST", "/api/2.0/mlflow/experiments/create", realm.token("alice"),
                      {"name": f"admin-cli-{secrets.token_hex(4)}"})
    experiment = {"experiment_id": created.json()["experiment_id"]}
    assert gateway(stack, "POST", DELETE, realm.token("bob"), experiment).status_code == 403
    try:
        assert "granted Admin to bob" in ok(capsys, "role", "grant", "bob", "Admin")
        assert "nothing changed" in ok(capsys, "role", "grant", "bob", "Admin")
        assert gateway(stack, "POST", DELETE, realm.token("bob"), experiment).status_code == 200
    finally:
        assert ok(capsys, "role", "revoke", "bob", "Admin").strip() == "revoked Admin from bob"
    assert "nothing changed" in ok(capsys, "role", "revoke", "bob", "Admin")
    assert listed_users(capsys, "bob")["bob"]["roles"] == ["Default"]


def explained(capsys: pytest.CaptureFixture[str], method: str, url: str, user: str) -> dict[str, Any]:
    return json.loads(ok(capsys, "explain", method, url, "--user", user, "--json"))


def test_explain_agrees_with_the_gateway(capsys: pytest.CaptureFixture[str], realm: RealmClient, stack: dict[str, Any]) -> None:
    missing = {"experiment_id": "999999999"}
    cases = [
        ("alice", "GET", SEARCH, None, 200, "PERMIT"),
        ("bob", "POST", DELETE, missing, 403, "DENY"),
        ("carol", "GET", SEARCH, None, 403, "DENY"),
        ("bob", "POST", UNMAPPED, missing, 403, None),
    ]
    for user, method, path, body, status, keycloak in cases:
        result = explained(capsys, method, f"{stack['gateway_url']}{path}", user)
        assert result["status"] == status, (user, method, path, result)
        assert (result["keycloak"] or {}).get("status") == keycloak, result
        assert gateway(stack, method, path, realm.token(user), body).status_code == status, (user, method, path)

    denied = explained(capsys, "POST", DELETE, "bob")
    assert denied["permission"] == "experiments#delete" and "Default" in denied["roles"]
    assert denied["verdict"] == "refused: user bob lacks permission experiments#delete"
    file, line = denied["source"].rsplit(":", 1)
    assert Path(file).read_text().splitlines()[int(line) - 1].split() == denied["rule"].split()

    unmapped = explained(capsys, "POST", UNMAPPED, "bob")
    assert (unmapped["rule"], unmapped["keycloak"]) == (None, None)
    assert unmapped["verdict"] == f"refused for everyone: no route rule for POST {UNMAPPED}"

    text = ok(capsys, "explain", "POST", DELETE, "--user", "alice")
    assert "verdict     200 allowed" in text and "keycloak    PERMIT (" in text and "route_map.txt:" in text


def test_robot_lifecycle(capsys: pytest.CaptureFixture[str], realm: RealmClient, stack: dict[str, Any]) -> None:
    name = f"ci-{secrets.token_hex(3)}"
    try:
        created = json.loads(ok(capsys, "robot", "create", name, "--role", "Default", "--description", "CI", "--json"))
        client_id = created["client_id"]
        assert client_id == f"robot-{name}"
        token = client_credentials(realm, client_id, created["secret"]).json()["access_token"]
        assert gateway(stack, "GET", SEARCH, token).status_code == 200
        assert gateway(stack, "POST", DELETE, token, {"experiment_id": "999999999"}).status_code == 403
        for method, path, status in (("GET", SEARCH, 200), ("POST", DELETE, 403)):
            result = json.loads(ok(capsys, "explain", method, path, "--robot", name, "--json"))
            assert (result["user"], result["status"]) == (client_id, status), result

        robots = {row["name"]: row for row in json.loads(ok(capsys, "robot", "list", "--json"))}
        assert robots[name] == {"name": name, "client_id": client_id, "enabled": True, "roles": ["Default"], "description": "CI"}
        assert not {"mlflow-gate", "mlflow-cli"} & {row["client_id"] for row in robots.values()}
        assert "already exists" in failure(capsys, "robot", "create", name, "--role", "Default")

        rotated = json.loads(ok(capsys, "robot", "rotate", client_id, "--json"))
        assert rotated["client_id"] == client_id and rotated["secret"] != created["secret"]
        assert client_credentials(realm, client_id, created["secret"]).status_code == 401
        assert client_credentials(realm, client_id, rotated["secret"]).status_code == 200
        shown = ok(capsys, "robot", "rotate", name)
        assert "secret is shown only now" in shown and client_id in shown
    finally:
        run(capsys, "robot", "delete", name)
    assert name not in {row["name"] for row in json.loads(ok(capsys, "robot", "list", "--json"))}
    assert "no robot" in failure(capsys, "robot", "delete", name)


def test_clients_without_the_robot_marker_are_not_robots(capsys: pytest.CaptureFixture[str], realm: RealmClient) -> None:
    """A hand-made client whose id merely starts with robot- is never listed, rotated or deleted."""
    name = f"hand-{secrets.token_hex(3)}"
    realm.create_public_client(f"robot-{name}", {})
    try:
        assert name not in {row["name"] for row in json.loads(ok(capsys, "robot", "list", "--json"))}
        assert f"no robot 'robot-{name}'" in failure(capsys, "robot", "delete", f"robot-{name}")
        assert f"no robot '{name}'" in failure(capsys, "robot", "rotate", name)
    finally:
        headers = realm.admin_headers()
        found = httpx.get(f"{realm.admin_base}/clients", params={"clientId": f"robot-{name}"}, headers=headers, timeout=30)
        for client in found.json():
            httpx.delete(f"{realm.admin_base}/clients/{client['id']}", headers=headers, timeout=30).raise_for_status()


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stack: dict[str, Any]) -> None:
    nobody = f"nobody-{secrets.token_hex(3)}"
    assert f"no user '{nobody}'" in failure(capsys, "user", "disable", nobody)
    assert f"no user '{nobody}'" in failure(capsys, "role", "grant", nobody, "Admin")
    assert f"no user '{nobody}'" in failure(capsys, "explain", "GET", SEARCH, "--user", nobody)
    assert f"no user '{nobody}'" in failure(capsys, "signout", nobody)
    assert "the gate's roles are Admin and Default" in failure(capsys, "role", "grant", "bob", "Owner")
    assert f"no robot '{nobody}'" in failure(capsys, "robot", "rotate", nobody)

    monkeypatch.setenv("MLFLOW_GATE_ADMIN_PASSWORD", "wrong-password")
    assert "rejected the administrator credentials" in failure(capsys, "user", "list")
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_PASSWORD", stack["keycloak_admin"]["password"])
    assert "check the URL" in failure(capsys, "--keycloak-url", stack["gateway_url"], "user", "list")
    assert "Realm not found" in failure(capsys, "--realm", nobody, "user", "list")


def test_console_script_reports_a_wrong_url_in_one_line(stack: dict[str, Any]) -> None:
    """The installed `mlflow-gate-admin` script, as an operator runs it."""
    script = Path(sys.executable).with_name("mlflow-gate-admin")
    result = subprocess.run(
        [str(script), "--keycloak-url", stack["gateway_url"], "robot", "list"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("mlflow-gate-admin: error: "), result.stderr
