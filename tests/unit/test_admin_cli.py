"""mlflow-gate-admin without Keycloak: argument errors, output formats, and `explain` on the real map."""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys

import pytest

from authz_service.admin import cli
from authz_service.admin.connection import ConnectionOptions
from authz_service.admin.errors import AdminError
from authz_service.admin.explanation import Evaluation, Subject, explain, request_target
from authz_service.admin.output import cell, record, table
from authz_service.admin.robots import client_id_of
from authz_service.routes import BUILTIN_MAP, Permission, RouteMap

BOB = Subject("bob", True, ("Default", "default-roles-mlflow"))
ENV = ("MLFLOW_GATE_ADMIN_KEYCLOAK_URL", "MLFLOW_GATE_ADMIN_USER", "MLFLOW_GATE_ADMIN_PASSWORD")


@pytest.fixture
def no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def routes() -> RouteMap:
    return RouteMap.load()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["user"],
        ["user", "rename", "bob"],
        ["role", "grant", "bob"],
        ["robot", "create", "ci"],
        ["explain", "GET", "/health"],
        ["explain", "GET", "/health", "--user", "bob", "--robot", "ci"],
        ["user", "list", "--max", "many"],
    ],
)
def test_malformed_command_lines_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: mlflow-gate-admin" in capsys.readouterr().err


def _one_line_failure(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mlflow-gate-admin: error: ")
    return lines[0]


def test_missing_keycloak_url_is_one_line(no_admin_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_failure(["user", "list"], capsys)
    assert "MLFLOW_GATE_ADMIN_KEYCLOAK_URL" in line


@pytest.mark.parametrize(
    ("password", "url", "expected"),
    [
        ("", "http://127.0.0.1:1", "set MLFLOW_GATE_ADMIN_PASSWORD"),
        ("x", "keycloak:8080", "not an http(s) base URL"),
    ],
)
def test_incomplete_connection_settings_are_one_line(
    password: str, url: str, expected: str, no_admin_env: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No password and no terminal to prompt on, or a URL that is not one: refused before connecting."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    if password:
        monkeypatch.setenv("MLFLOW_GATE_ADMIN_PASSWORD", password)
    argv = ["--keycloak-url", url, "--admin-user", "admin", "user", "list"]
    assert expected in _one_line_failure(argv, capsys)


def test_unreachable_keycloak_is_one_line(
    no_admin_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_GATE_ADMIN_PASSWORD", "x")
    url = f"http://127.0.0.1:{_closed_port()}"
    line = _one_line_failure(["--keycloak-url", url, "--admin-user", "admin", "signout", "bob"], capsys)
    assert f"cannot reach Keycloak at {url}" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["role", "grant", "bob", "Owner"],
        ["role", "revoke", "bob", "admin"],
        ["user", "create", "dave", "--role", "Viewer"],
        ["robot", "create", "ci", "--role", "Superuser"],
    ],
)
def test_unknown_role_is_one_line_before_any_connection(
    argv: list[str], no_admin_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Keycloak URL is configured: the role is refused before the CLI would need one."""
    assert "the gate's roles are Admin and Default" in _one_line_failure(argv, capsys)


@pytest.mark.parametrize("name", ["CI", "ci_bot", "-ci", "ci-", "", "a" * 49, "robot-"])
def test_robot_names_are_checked(name: str) -> None:
    with pytest.raises(AdminError):
        client_id_of(name)


def test_robot_is_named_with_or_without_its_prefix() -> None:
    assert client_id_of("nightly-train") == client_id_of("robot-nightly-train") == "robot-nightly-train"


def test_flags_override_environment_and_defaults_fill_the_rest() -> None:
    args = argparse.Namespace(keycloak_url="https://kc.example.org/auth/", realm=None, admin_user=None)
    env = {
        "MLFLOW_GATE_ADMIN_KEYCLOAK_URL": "http://ignored:8080",
        "MLFLOW_GATE_ADMIN_USER": "root",
        "MLFLOW_GATE_ADMIN_PASSWORD": "secret",
        "MLFLOW_GATE_ADMIN_REALM": "ml",
    }
    options = ConnectionOptions.resolve(args, env)
    assert options == ConnectionOptions(
        keycloak_url="https://kc.example.org/auth",
        realm="ml",
        admin_realm="master",
        admin_user="root",
        admin_password="secret",
        gate_client="mlflow-gate",
        ca_file=None,
    )


# --- Output ---------------------------------------------------------------------------------------


def test_table_aligns_columns_and_renders_values(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"username": "alice", "enabled": True, "roles": ["Admin"]},
        {"username": "carol-long-name", "enabled": False, "roles": []},
    ]
    table(rows, ("username", "enabled", "roles"), as_json=False)
    assert capsys.readouterr().out.splitlines() == [
        "USERNAME         ENABLED  ROLES",
        "alice            yes      Admin",
        "carol-long-name  no       -",
    ]


def test_table_as_json_keeps_types_and_only_listed_columns(capsys: pytest.CaptureFixture[str]) -> None:
    table([{"username": "bob", "enabled": True, "roles": ["Default"], "id": "x"}], ("username", "enabled", "roles"), True)
    assert json.loads(capsys.readouterr().out) == [{"username": "bob", "enabled": True, "roles": ["Default"]}]


def test_empty_table_says_none(capsys: pytest.CaptureFixture[str]) -> None:
    table([], ("name", "client_id"), as_json=False)
    assert capsys.readouterr().out.splitlines() == ["NAME  CLIENT ID", "(none)"]


def test_record_lines_and_cells(capsys: pytest.CaptureFixture[str]) -> None:
    record({"client_id": "robot-ci", "secret": "s3"}, as_json=False)
    assert capsys.readouterr().out.splitlines() == ["client id  robot-ci", "secret     s3"]
    assert [cell(None), cell(""), cell(("a", "b")), cell(3)] == ["-", "-", "a, b", "3"]


# --- explain on the real route map ----------------------------------------------------------------


def _never_asked(permission: Permission) -> Evaluation:
    raise AssertionError(f"Keycloak must not be asked for {permission}")


def test_explain_public_route_needs_no_token_and_asks_no_one(routes: RouteMap) -> None:
    result = explain("GET", "/health", routes.lookup("GET", "/health"), BOB, _never_asked)
    assert (result.status, result.permission, result.rule) == (200, "public", "GET /health public")
    assert result.source is not None and result.source.startswith(f"{BUILTIN_MAP}:")
    assert result.keycloak is None


def test_explain_unmapped_route_is_refused_for_everyone(routes: RouteMap) -> None:
    target = "/api/2.0/mlflow/experiments/obliterate"
    result = explain("POST", target, routes.lookup("POST", target), BOB, _never_asked)
    assert (result.status, result.rule, result.source, result.permission) == (403, None, None, "none")
    assert result.verdict == f"refused for everyone: no route rule for POST {target}"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/api/2.0/mlflow/experiments%2Fdelete", "encoded slash"),
        ("/api/2.0/mlflow/../mlflow/experiments/delete", "dot segment"),
        ("/api/2.0/mlflow/experiments/delete;x", "semicolon"),
    ],
)
def test_explain_ambiguous_uri_is_refused_with_the_reason(routes: RouteMap, target: str, reason: str) -> None:
    result = explain("POST", target, routes.lookup("POST", target), BOB, _never_asked)
    assert result.status == 403 and reason in result.verdict


def test_explain_denied_rule_from_an_operator_file(routes: RouteMap, tmp_path) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("# operators\nGET /2.0/mlflow/experiments/search deny\n")
    custom = RouteMap.load([extra])
    target = "/api/2.0/mlflow/experiments/search"
    result = explain("GET", target, custom.lookup("GET", target), BOB, _never_asked)
    assert result.status == 403
    assert result.source == f"{extra}:2"
    assert result.rule == "GET /2.0/mlflow/experiments/search deny"


def test_explain_mapped_route_asks_keycloak_for_exactly_that_permission(routes: RouteMap) -> None:
    asked: list[Permission] = []

    def deny(permission: Permission) -> Evaluation:
        asked.append(permission)
        return Evaluation("DENY", (("Default: read, create, update on MLflow resources", "DENY"),))

    target = "http://gateway.example.org/api/2.0/mlflow/experiments/delete?x=1#frag"
    result = explain("POST", request_target(target), routes.lookup("POST", request_target(target)), BOB, deny)
    assert asked == [Permission("experiments", "delete")]
    assert (result.request, result.rule) == (
        "POST /api/2.0/mlflow/experiments/delete?x=1",
        "POST /2.0/mlflow/experiments/delete experiments#delete",
    )
    assert (result.status, result.verdict) == (403, "refused: user bob lacks permission experiments#delete")
    summary = result.summary()
    assert summary["keycloak"] == "DENY (Default: read, create, update on MLflow resources: DENY)"
    assert summary["verdict"] == "403 refused: user bob lacks permission experiments#delete"
    assert result.fields()["keycloak"] == {
        "status": "DENY",
        "policies": [{"name": "Default: read, create, update on MLflow resources", "status": "DENY"}],
    }


def test_explain_permitted_and_disabled(routes: RouteMap) -> None:
    target = "/api/2.0/mlflow/experiments/search"
    found = routes.lookup("GET", target)
    allowed = explain("GET", target, found, BOB, lambda permission: Evaluation("PERMIT", ()))
    assert (allowed.status, allowed.verdict, allowed.permission) == (200, "allowed", "experiments#read")
    disabled = explain("GET", target, found, Subject("bob", False, ("Default",)), _never_asked)
    assert disabled.status == 401 and "disabled" in disabled.verdict


def test_request_target_keeps_raw_paths_as_typed() -> None:
    assert request_target("/api/2.0/mlflow/runs/get?run_id=1") == "/api/2.0/mlflow/runs/get?run_id=1"
    assert request_target("/a%2Fb") == "/a%2Fb"
    assert request_target("https://mlflow.example.org") == "/"
