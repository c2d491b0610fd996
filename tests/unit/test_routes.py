"""The route map's file format, matcher and URI normalisation, without MLflow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authz_service import role_table
from authz_service.routes import Permission, Public, Refusal, RouteMap, RouteMapError, Rule, normalise_path

RUNS_READ = Permission("runs", "read")
EXPERIMENTS_READ = Permission("experiments", "read")


@pytest.fixture
def write_map(tmp_path: Path):
    def write(text: str, name: str = "extra.map") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="module")
def builtin() -> RouteMap:
    return RouteMap.load()


# --- File format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("GET /x experiments#manage", "resource experiments has no scope 'manage'"),
        ("GET /x administration#read", "resource administration has no scope 'read'"),
        ("GET /x models#read", "unknown resource 'models'"),
        ("GET /x runs", "is not resource#scope, public or deny"),
        ("GET /x", "expected three columns"),
        ("GET /x runs#read runs#update", "expected three columns"),
        ("FETCH /x runs#read", "method 'FETCH' is not one of"),
        ("HEAD /x runs#read", "method 'HEAD' is not one of"),
        ("OPTIONS /x runs#read", "method 'OPTIONS' is not one of"),
        ("get /x runs#read", "method 'get' is not one of"),
        ("GET,GET /x runs#read", "method listed twice"),
        ("GET x runs#read", "must start with /"),
        ("GET /a/<b runs#read", "neither a literal nor a whole <parameter>"),
        ("GET /a/b<c> runs#read", "neither a literal nor a whole <parameter>"),
        ("GET /a/<int:c> runs#read", "neither a literal nor a whole <parameter>"),
        ("GET /a//b runs#read", "neither a literal nor a whole <parameter>"),
        ("GET /a/../b runs#read", "neither a literal nor a whole <parameter>"),
        ("GET /a/%2F runs#read", "neither a literal nor a whole <parameter>"),
        ("GET /<x>/<path:x> runs#read", "parameter x appears twice"),
    ],
)
def test_errors_name_file_and_line(write_map, line: str, message: str) -> None:
    path = write_map(f"# operator rules\nGET /fine runs#read\n{line}\n")
    with pytest.raises(RouteMapError, match=rf"^{re.escape(str(path))}:3: .*{re.escape(message)}"):
        RouteMap.from_files([path])


def test_a_repeated_rule_in_one_file_is_an_error(write_map) -> None:
    path = write_map("GET /a/<x> runs#read\nPOST /a/<x> runs#update\nGET /a/<y> runs#update\n")
    with pytest.raises(RouteMapError, match=rf"^{re.escape(str(path))}:3: GET /a/<y> repeats .*:1$"):
        RouteMap.from_files([path])


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.map"
    with pytest.raises(RouteMapError, match=re.escape(str(missing))):
        RouteMap.load([missing])


def test_comments_blank_lines_and_method_lists(write_map) -> None:
    route_map = RouteMap.from_files(
        [write_map("# a comment\n\n   # indented comment\nGET,POST /x runs#read   # why: reads\n")]
    )
    assert route_map.classify("GET", "/x") == RUNS_READ
    assert route_map.classify("POST", "/x") == RUNS_READ
    assert route_map.classify("PUT", "/x") == Refusal("no route rule for PUT /x")


def test_versioned_paths_match_under_both_api_prefixes_only(write_map) -> None:
    route_map = RouteMap.from_files(
        [write_map("POST /2.0/mlflow/runs/delete runs#delete\nGET /ajax-api/3.0/only-ajax ui#read\n")]
    )
    assert route_map.classify("POST", "/api/2.0/mlflow/runs/delete") == Permission("runs", "delete")
    assert route_map.classify("POST", "/ajax-api/2.0/mlflow/runs/delete") == Permission("runs", "delete")
    for unmapped in ("/2.0/mlflow/runs/delete", "/other/2.0/mlflow/runs/delete", "/api/api/2.0/mlflow/runs/delete"):
        assert isinstance(route_map.classify("POST", unmapped), Refusal)
    assert route_map.classify("GET", "/ajax-api/3.0/only-ajax") == Permission("ui", "read")
    assert isinstance(route_map.classify("GET", "/api/3.0/only-ajax"), Refusal)


def test_rules_keep_their_source(write_map) -> None:
    path = write_map("\nGET,POST   /x  runs#read   # comment\n")
    rule = RouteMap.from_files([path]).lookup("HEAD", "/x?y=1")
    assert rule == Rule("GET", "/x", RUNS_READ, f"{path}:2", "GET,POST /x runs#read")


# --- Matching ------------------------------------------------------------------------------------


def test_literal_segments_beat_parameters_with_backtracking(write_map) -> None:
    route_map = RouteMap.from_files(
        [
            write_map(
                "GET /t/<id> runs#read\n"
                "GET /t/get experiments#read\n"
                "GET /a/<p>/c runs#read\n"
                "GET /a/b/d experiments#read\n"
                "GET /f/<path:file> runs#read\n"
                "GET /f/<x>/meta experiments#read\n"
            )
        ]
    )
    assert route_map.classify("GET", "/t/get") == EXPERIMENTS_READ
    assert route_map.classify("GET", "/t/other") == RUNS_READ
    assert route_map.classify("GET", "/a/b/d") == EXPERIMENTS_READ
    assert route_map.classify("GET", "/a/b/c") == RUNS_READ  # /a/b has no /c: back to /a/<p>/c
    assert route_map.classify("GET", "/f/x/meta") == EXPERIMENTS_READ  # <x> before <path:...>
    assert route_map.classify("GET", "/f/x/y/meta") == RUNS_READ
    assert route_map.classify("GET", "/f/x") == RUNS_READ


def test_path_parameters_in_the_middle_take_the_most_literal_match(write_map) -> None:
    route_map = RouteMap.from_files(
        [write_map("DELETE /m/<path:name> runs#delete\nDELETE /m/<path:name>/tags/<key> runs#update\n")]
    )
    assert route_map.classify("DELETE", "/m/a/b/tags/k") == Permission("runs", "update")
    assert route_map.classify("DELETE", "/m/a/b/tags/k/more") == Permission("runs", "delete")
    assert route_map.classify("DELETE", "/m/a/b") == Permission("runs", "delete")


def test_parameters_never_match_empty_or_trailing_segments(write_map) -> None:
    route_map = RouteMap.from_files(
        [write_map("GET / ui#read\nGET /x/<id> runs#read\nGET /f/<path:p> runs#read\nPOST /jobs/ runs#update\n")]
    )
    assert route_map.classify("GET", "/") == Permission("ui", "read")
    assert route_map.classify("POST", "/jobs/") == Permission("runs", "update")
    for method, target in (("GET", "/x/"), ("GET", "/x"), ("GET", "/f/a/"), ("GET", "/f/"), ("POST", "/jobs")):
        assert isinstance(route_map.classify(method, target), Refusal), target


def test_matching_is_case_sensitive_and_head_is_get(builtin: RouteMap) -> None:
    assert builtin.classify("HEAD", "/health") == Public()
    assert isinstance(builtin.classify("GET", "/HEALTH"), Refusal)
    assert isinstance(builtin.classify("GET", "/Health"), Refusal)
    assert isinstance(builtin.classify("get", "/health"), Refusal)
    assert builtin.classify("OPTIONS", "/health") == Refusal("no route rule for OPTIONS /health")
    assert builtin.classify("TRACE", "/api/2.0/mlflow/runs/get") == Refusal(
        "no route rule for TRACE /api/2.0/mlflow/runs/get"
    )


def test_unmapped_requests_name_method_and_path(builtin: RouteMap) -> None:
    assert builtin.classify("GET", "/api/2.0/mlflow/runs/delete?run_id=1") == Refusal(
        "no route rule for GET /api/2.0/mlflow/runs/delete"
    )
    assert builtin.classify("POST", "/metrics") == Refusal("no route rule for POST /metrics")



def test_remembered_classifications_keep_method_and_whole_target_apart(builtin: RouteMap) -> None:
    delete = "/api/2.0/mlflow/experiments/delete"
    for _ in range(2):
        assert builtin.classify("POST", delete) == Permission("experiments", "delete")
        assert builtin.classify("GET", delete) == Refusal(f"no route rule for GET {delete}")
        assert builtin.classify("POST", delete + "#x") == Refusal("fragment in request target")
    long_query = "/api/2.0/mlflow/experiments/get?experiment_id=" + "1" * 2000
    assert builtin.classify("GET", long_query) == Permission("experiments", "read")
    assert builtin.classify("GET", long_query.replace("?", "%3F", 1)) == Refusal(
        "no route rule for GET " + long_query.replace("?", "%3F", 1)
    )

# --- Operator files ------------------------------------------------------------------------------


def test_operator_files_override_and_extend_the_builtin_map(write_map) -> None:
    extra = write_map(
        "POST /2.0/mlflow/runs/delete administration#manage\n"
        "DELETE /2.0/mlflow-artifacts/artifacts/<path:other_name> deny\n"
        "GET /custom/report ui#read\n"
    )
    route_map = RouteMap.load([extra])
    assert route_map.classify("POST", "/api/2.0/mlflow/runs/delete") == Permission("administration", "manage")
    assert route_map.classify("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/x") == Refusal(
        f"denied by rule {extra}:2"
    )
    assert route_map.classify("GET", "/custom/report") == Permission("ui", "read")
    assert route_map.classify("POST", "/api/2.0/mlflow/runs/create") == Permission("runs", "create")
    assert len(route_map.rules) == len(RouteMap.load().rules) + 1


def test_a_later_operator_file_wins(write_map) -> None:
    first = write_map("GET /x runs#read\n", "first.map")
    second = write_map("GET /x experiments#read\n", "second.map")
    assert RouteMap.from_files([first, second]).classify("GET", "/x") == EXPERIMENTS_READ
    assert RouteMap.from_files([second, first]).classify("GET", "/x") == RUNS_READ


# --- Normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("", "empty request target"),
        ("?a=1", "not a path"),
        ("http://mlflow/api/2.0/mlflow/runs/delete", "not a path"),
        ("mlflow:5000", "not a path"),
        ("*", "not a path"),
        ("/api/2.0/mlflow/runs/delete x", "space, control or non-ASCII"),
        ("/api/2.0/mlflow/runs/delete\t", "space, control or non-ASCII"),
        ("/api/2.0/mlflow/runs/dél", "space, control or non-ASCII"),
        ("/health#x", "fragment"),
        ("/health?x=#", "fragment"),
        ("/api\\2.0/mlflow/runs/delete", "backslash"),
        ("/health;x=1", "semicolon"),
        ("/health;", "semicolon"),
        ('/he"alth', "character not allowed"),
        ("/he{a}lth", "character not allowed"),
        ("/health%", "malformed percent-escape"),
        ("/health%2", "malformed percent-escape"),
        ("/health%zz", "malformed percent-escape"),
        ("/api%2F2.0/mlflow/runs/delete", "encoded slash"),
        ("/api%2f2.0/mlflow/runs/delete", "encoded slash"),
        ("/api%5C2.0/mlflow/runs/delete", "encoded slash"),
        ("/api/2.0/mlflow/%2E%2E/x", "encoded slash"),
        ("/api/2.0/mlflow/%2e/x", "encoded slash"),
        ("/api/%252F", "encoded slash"),
        ("/health%FF", "not UTF-8"),
        ("/health%C0%AF", "not UTF-8"),
        ("/health%3B", "semicolon"),
        ("/health%00", "control, format or separator"),
        ("/health%0A", "control, format or separator"),
        ("/health%E2%80%8B", "control, format or separator"),
        ("/health%C2%A0", "control, format or separator"),
        ("/api//2.0/mlflow/runs/delete", "empty path segment"),
        ("//health", "empty path segment"),
        ("/api/2.0/mlflow/./runs/delete", "dot segment"),
        ("/api/2.0/mlflow/x/../runs/delete", "dot segment"),
        ("/api/2.0/mlflow-artifacts/artifacts/..", "dot segment"),
        ("/api/2.0/mlflow-artifacts/artifacts/.", "dot segment"),
    ],
)
def test_ambiguous_targets_are_refused(builtin: RouteMap, target: str, reason: str) -> None:
    refusal = normalise_path(target)
    assert isinstance(refusal, Refusal)
    assert reason in refusal.reason
    assert builtin.classify("DELETE", target) == refusal
    assert not re.search(r"['\"\\]", refusal.reason), "reasons go into a header as they are"


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/my%20plot.png", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/my plot.png"),
        ("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/caf%C3%A9.txt", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/café.txt"),
        ("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/.a/..b", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/.a/..b"),
        ("/api/2.0/mlflow/runs/d%65lete?x=%2F..%00&y=/../", "/api/2.0/mlflow/runs/delete"),
        ("/api/2.0/mlflow/runs/d%65lete?x=%2F..%00#", None),
        ("/", "/"),
    ],
)  # fmt: skip
def test_unambiguous_targets_are_decoded_like_uvicorn(target: str, path: str | None) -> None:
    result = normalise_path(target)
    if path is None:
        assert isinstance(result, Refusal)
    else:
        assert result == path


# --- The built-in map ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("POST", "/api/2.0/mlflow/runs/delete", Permission("runs", "delete")),
        ("DELETE", "/ajax-api/2.0/mlflow/registered-models/delete", Permission("registered-models", "delete")),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/x.txt", Permission("artifacts", "delete")),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/my%20x.txt", Permission("artifacts", "delete")),
        ("GET", "/health", Public()),
        ("GET", "/version", Public()),
        ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=1", Permission("experiments", "read")),
        ("POST", "/api/2.0/mlflow/experiments/restore", Permission("experiments", "update")),
        ("POST", "/api/2.0/mlflow/runs/log-metric", Permission("runs", "update")),
        ("DELETE", "/api/2.0/mlflow/registered-models/alias", Permission("registered-models", "update")),
        ("DELETE", "/api/3.0/mlflow/traces/tr-1/assessments/a-1", Permission("traces", "delete")),
        ("GET", "/api/3.0/mlflow/traces/get?trace_id=1", Permission("traces", "read")),
        ("GET", "/api/3.0/mlflow/traces/tr-1", Permission("traces", "read")),
        ("PATCH", "/api/2.0/mlflow/traces/delete-traces", Permission("traces", "update")),
        ("POST", "/v1/traces", Permission("traces", "create")),
        ("POST", "/ajax-api/3.0/mlflow/demo/generate", Permission("administration", "manage")),
        ("GET", "/graphql?query=x", Permission("runs", "read")),
        ("GET", "/static-files/static/js/main.js", Permission("ui", "read")),
    ],
)
def test_builtin_classifications(builtin: RouteMap, method: str, target: str, expected: object) -> None:
    assert builtin.classify(method, target) == expected


def test_permissions_print_as_keycloak_permission_strings() -> None:
    assert str(Permission("model-versions", "delete")) == "model-versions#delete"


# --- The README table ----------------------------------------------------------------------------


def test_role_table_follows_the_realm_and_the_map(builtin: RouteMap, capsys: pytest.CaptureFixture[str]) -> None:
    assert role_table.may("Admin", Permission("runs", "delete"))
    assert role_table.may("Admin", Permission("administration", "manage"))
    assert role_table.may("Default", Permission("runs", "update"))
    assert not role_table.may("Default", Permission("runs", "delete"))
    assert not role_table.may("Default", Permission("administration", "manage"))
    assert not role_table.may("No role", Permission("ui", "read"))

    assert role_table.main([]) == 0
    table = capsys.readouterr().out
    assert "| `runs` | read, create, update, delete | read, create, update | - |" in table
    assert "| `administration` | manage | - | - |" in table
    assert "| public (no token) | yes | yes | yes | `GET /health`<br>`GET /version` |" in table
    runs_delete = next(line for line in table.splitlines() if line.startswith("| `runs#delete` |"))
    assert runs_delete.startswith("| `runs#delete` | yes | no | no | ")
    assert "`POST /2.0/mlflow/runs/delete`" in runs_delete
    assert "`POST /ajax-api/3.0/mlflow/ui-telemetry`" in table  # served under one prefix: shown in full
