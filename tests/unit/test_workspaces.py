"""Workspace reading and workspace decisions, with Keycloak replaced by an in-process fake."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest
from fastapi.testclient import TestClient

from authz_service import workspaces
from authz_service.app import create_app
from authz_service.routes import Permission
from authz_service.settings import Settings, SettingsError

from .token_factory import ISSUER, JWKS_URL, Realm

TOKEN_URL = f"{ISSUER}/protocol/openid-connect/token"
MLFLOW = "http://mlflow.test:5000"
LISTED = {"workspaces": [{"name": "default", "description": ""}, {"name": "team-a"}, {"name": "team-b"}, {"name": "rogue"}]}
GRANTS = {
    "alice": [("administration", ["manage"]), ("ui", ["read"]), ("workspace:default", ["read", "delete"])],
    "bob": [("ui", ["read"]), ("workspace:default", ["read", "create", "update"]), ("workspace:team-a", ["read", "create", "update"])],
    "erin": [("ui", ["read"]), ("workspace:team-a", ["read"])],
}
SEARCH = ("POST", "/api/2.0/mlflow/experiments/search")
DELETE = ("POST", "/ajax-api/2.0/mlflow/runs/delete")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "default"),
        ([""], "default"),
        (["   "], "default"),
        (["team-a"], "team-a"),
        ([" \tteam-a  "], "team-a"),
        (["default"], "default"),
        (["a1"], "a1"),
        (["x" * 63], "x" * 63),
    ],
)
def test_reads_the_workspace_as_mlflow_does(values: list[str], expected: str) -> None:
    assert workspaces.requested_workspace(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["team-a", "team-b"],
        ["team-a", "team-a"],
        ["team-a, team-b"],  # NGINX 1.23+ joins repeated headers like this
        ["Team-A"],
        ["team_a"],
        ["team-a/x"],
        ["-team"],
        ["team-"],
        ["a"],
        ["x" * 64],
        ["workspaces"],
        ["api"],
        ["ajax-api"],
        ["static-files"],
        ["team\u00e9"],
        ["team-a\x00"],
    ],
)
def test_refuses_anything_but_one_valid_name(values: list[str]) -> None:
    with pytest.raises(workspaces.InvalidWorkspace):
        workspaces.requested_workspace(values)


def test_workspace_scoped_routes_need_the_scope_on_the_workspace_resource() -> None:
    needed = workspaces.permission_in("team-a", "POST", "/api/2.0/mlflow/runs/delete", Permission("runs", "delete"))
    assert needed == Permission("workspace:team-a", "delete")
    ui = Permission("ui", "read")
    assert workspaces.permission_in("team-a", "GET", "/", ui) == ui
    admin = Permission("administration", "manage")
    assert workspaces.permission_in("team-a", "POST", "/api/3.0/mlflow/workspaces", admin) == admin


def test_reading_one_workspace_needs_read_on_the_named_workspace_not_the_header() -> None:
    admin = Permission("administration", "manage")
    uri = "/ajax-api/3.0/mlflow/workspaces/team-b?x=1"
    assert workspaces.permission_in("team-a", "GET", uri, admin) == Permission("workspace:team-b", "read")
    assert workspaces.permission_in("team-a", "DELETE", uri, admin) == admin
    assert workspaces.permission_in("team-a", "GET", "/api/3.0/mlflow/workspaces/Team-B", admin) == admin


def test_refusals_name_the_routes_permission_and_the_workspace() -> None:
    route = Permission("runs", "delete")
    assert workspaces.describe(route, Permission("workspace:team-a", "delete")) == "runs#delete in workspace team-a"
    admin = Permission("administration", "manage")
    assert workspaces.describe(admin, Permission("workspace:team-b", "read")) == "workspace:team-b#read"
    assert workspaces.describe(admin, admin) == "administration#manage"


def test_unset_up_workspaces_are_administrators_only() -> None:
    reader = frozenset({"workspace:team-a#read"})
    administrator = frozenset({"administration#manage"})
    assert workspaces.is_granted(reader, Permission("workspace:team-a", "read"))
    assert not workspaces.is_granted(reader, Permission("workspace:team-a", "update"))
    assert not workspaces.is_granted(reader, Permission("workspace:rogue", "read"))
    assert workspaces.is_granted(administrator, Permission("workspace:rogue", "delete"))
    assert not workspaces.is_granted(administrator, Permission("ui", "delete"))
    assert workspaces.readable_header(reader | {"workspace:team-b#update"}) == "team-a"
    assert workspaces.readable_header(administrator) == "*"
    assert workspaces.is_granted(reader, workspaces.LISTING_PERMISSION)
    assert workspaces.is_granted(administrator, workspaces.LISTING_PERMISSION)
    assert not workspaces.is_granted(frozenset({"ui#read", "workspace:x#update"}), workspaces.LISTING_PERMISSION)


def test_a_workspace_reader_without_realm_roles_may_open_the_ui_and_nothing_else_outside() -> None:
    member = frozenset({"workspace:team-a#read"})
    assert workspaces.is_granted(member, Permission("ui", "read"))
    assert workspaces.is_granted(member, Permission("ui", "create"))
    assert not workspaces.is_granted(member, Permission("ui", "update"))
    assert not workspaces.is_granted(member, workspaces.ADMINISTRATION)
    assert not workspaces.is_granted(member, Permission("workspace:default", "read"))
    assert not workspaces.is_granted(frozenset(), Permission("ui", "read"))
    assert not workspaces.is_granted(frozenset({"workspace:team-a#update"}), Permission("ui", "read"))


def test_setting_is_on_or_off() -> None:
    base = {"GATE_KEYCLOAK_URL": "http://keycloak.test"}
    assert Settings.from_env(base).workspaces is False
    assert Settings.from_env({**base, "GATE_WORKSPACES": "on", "GATE_MLFLOW_URL": MLFLOW}).workspaces is True
    with pytest.raises(SettingsError, match="GATE_WORKSPACES"):
        Settings.from_env({**base, "GATE_WORKSPACES": "maybe"})
    with pytest.raises(SettingsError, match="GATE_MLFLOW_URL is required"):
        Settings.from_env({**base, "GATE_WORKSPACES": "on"})


class PermissionSetKeycloak:
    """Answers `response_mode=permissions` from the grant table of the token's user."""

    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self.forms: list[dict[str, list[str]]] = []
        self.tokens = {name: realm.token(sub=f"user-{name}", preferred_username=name) for name in GRANTS}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url == JWKS_URL:
            return self.realm.handle(request)
        if request.url.host == "mlflow.test":
            assert request.url.path in ("/api/3.0/mlflow/workspaces", "/ajax-api/3.0/mlflow/workspaces")
            return httpx.Response(200, json=LISTED)
        assert request.url == TOKEN_URL
        form = parse_qs(request.content.decode())
        self.forms.append(form)
        token = request.headers["authorization"].removeprefix("Bearer ")
        user = next(name for name, issued in self.tokens.items() if issued == token)
        granted = [{"rsid": name, "rsname": name, "scopes": scopes} for name, scopes in GRANTS[user]]
        return httpx.Response(200, json=granted)


@pytest.fixture
def keycloak() -> PermissionSetKeycloak:
    return PermissionSetKeycloak(Realm())


@pytest.fixture
def client(keycloak: PermissionSetKeycloak) -> TestClient:
    settings = Settings.from_env(
        {"GATE_KEYCLOAK_URL": "http://keycloak.test", "GATE_WORKSPACES": "on", "GATE_MLFLOW_URL": MLFLOW}
    )
    return TestClient(create_app(settings, transport=httpx.MockTransport(keycloak.handle)))


def check(client: TestClient, keycloak: PermissionSetKeycloak, user: str, request: tuple[str, str], *workspace: str) -> httpx.Response:
    method, uri = request
    headers = [
        ("X-Original-Method", method),
        ("X-Original-URI", uri),
        ("Authorization", f"Bearer {keycloak.tokens[user]}"),
        *((workspaces.HEADER, value) for value in workspace),
    ]
    return client.get("/_gate/check", headers=headers)


def test_allowed_requests_name_the_workspace_nginx_must_send(client: TestClient, keycloak: PermissionSetKeycloak) -> None:
    allowed = check(client, keycloak, "bob", SEARCH, "  team-a ")
    assert allowed.status_code == 200
    assert allowed.headers["x-gate-workspace"] == "team-a"
    assert check(client, keycloak, "bob", SEARCH).headers["x-gate-workspace"] == "default"
    assert check(client, keycloak, "bob", SEARCH, "").headers["x-gate-workspace"] == "default"


def test_levels_per_workspace(client: TestClient, keycloak: PermissionSetKeycloak) -> None:
    assert check(client, keycloak, "bob", DELETE, "team-a").status_code == 403
    assert check(client, keycloak, "bob", SEARCH, "team-b").status_code == 403
    assert check(client, keycloak, "erin", SEARCH, "team-a").status_code == 200
    assert check(client, keycloak, "erin", ("POST", "/api/2.0/mlflow/runs/create"), "team-a").status_code == 403
    assert check(client, keycloak, "erin", SEARCH).status_code == 403
    assert check(client, keycloak, "alice", DELETE, "rogue-workspace").status_code == 200
    refused = check(client, keycloak, "bob", SEARCH, "team-b")
    assert refused.headers["x-gate-reason"] == "user bob lacks permission experiments#read in workspace team-b"
    assert "x-gate-workspace" not in refused.headers


def test_header_tricks_are_refused_before_any_decision(client: TestClient, keycloak: PermissionSetKeycloak) -> None:
    for values in (("team-a", "team-b"), ("team-a, team-b",), ("TEAM-A",), ("team_a",)):
        assert check(client, keycloak, "alice", SEARCH, *values).status_code == 403
    assert keycloak.forms == []


def test_one_keycloak_call_per_user_answers_every_workspace_and_permission(
    client: TestClient, keycloak: PermissionSetKeycloak
) -> None:
    for workspace in ("team-a", "team-b", "default"):
        for request in (SEARCH, DELETE, ("GET", "/"), ("GET", "/api/3.0/mlflow/workspaces/team-a")):
            check(client, keycloak, "bob", request, workspace)
    assert len(keycloak.forms) == 1
    assert keycloak.forms[0] == {
        "grant_type": ["urn:ietf:params:oauth:grant-type:uma-ticket"],
        "audience": ["mlflow-gate"],
        "response_mode": ["permissions"],
    }
    check(client, keycloak, "erin", SEARCH, "team-a")
    assert len(keycloak.forms) == 2


def test_listing_names_what_each_user_may_read_and_the_endpoint_filters_mlflows_answer(
    client: TestClient, keycloak: PermissionSetKeycloak
) -> None:
    listing = ("GET", "/ajax-api/3.0/mlflow/workspaces")
    readable = {user: check(client, keycloak, user, listing, "team-b").headers["x-gate-readable-workspaces"] for user in GRANTS}
    assert readable == {"alice": "*", "bob": "default,team-a", "erin": "team-a"}

    def listed(header: str | None) -> httpx.Response:
        headers = {} if header is None else {"X-Gate-Readable-Workspaces": header}
        return client.get("/_gate/workspaces/ajax-api/3.0/mlflow/workspaces", headers=headers)

    assert [w["name"] for w in listed(readable["bob"]).json()["workspaces"]] == ["default", "team-a"]
    assert listed(readable["erin"]).json() == {"workspaces": [{"name": "team-a"}]}
    assert listed("*").json() == LISTED
    assert listed("").json() == {"workspaces": []}
    assert listed(None).status_code == 403
    assert client.get("/_gate/workspaces/api/2.0/mlflow/experiments/search", headers={"X-Gate-Readable-Workspaces": "*"}).status_code == 403
