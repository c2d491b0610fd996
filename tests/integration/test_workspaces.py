"""Team workspaces against the real stack: MLflow with --enable-workspaces, the gate with
GATE_WORKSPACES=on, the demo workspaces team-a (bob editor, erin reader) and team-b (dave manager).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import raw_http
from .local_processes import gate
from .realm_client import RealmClient, gate_counter

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIXES = ("/api", "/ajax-api")


@pytest.fixture(scope="module", autouse=True)
def workspaces_on(stack: dict[str, Any]) -> None:
    if not stack.get("workspaces"):
        pytest.skip("the stack runs without workspaces (MLFLOW_GATE_WORKSPACES=off)")


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@pytest.fixture(scope="module")
def tokens(realm: RealmClient) -> dict[str, str]:
    return {name: realm.token(name) for name in ("alice", "bob", "carol", "dave", "erin")}


@contextmanager
def acting(stack: dict[str, Any], token: str, workspace: str | None) -> Iterator[MlflowClient]:
    """MLflow's client reads MLFLOW_TRACKING_TOKEN and MLFLOW_WORKSPACE on every request."""
    saved = {name: os.environ.pop(name, None) for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_WORKSPACE")}
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    if workspace is not None:
        os.environ["MLFLOW_WORKSPACE"] = workspace
    try:
        yield MlflowClient(tracking_uri=stack["gateway_url"], registry_uri=stack["gateway_url"])
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def call(stack: dict[str, Any], token: str | None, method: str, path: str, workspace: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if workspace is not None:
        headers["X-MLFLOW-WORKSPACE"] = workspace
    return httpx.request(method, stack["gateway_url"] + path, headers=headers, timeout=30, **kwargs)


def track(client: MlflowClient, tmp_path: Path, who: str) -> dict[str, str]:
    experiment_id = client.create_experiment(f"{who}-{secrets.token_hex(3)}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "rmse", 0.5)
    artifact = tmp_path / f"{who}.txt"
    artifact.write_text(f"secret of {who}\n")
    client.log_artifact(run.info.run_id, str(artifact))
    model = f"{who}-model-{secrets.token_hex(3)}"
    client.create_registered_model(model)
    version = client.create_model_version(model, f"{run.info.artifact_uri}/{artifact.name}", run_id=run.info.run_id)
    return {
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
        "artifact_uri": run.info.artifact_uri,
        "artifact": artifact.name,
        "model": model,
        "version": version.version,
    }


def otlp_export() -> bytes:
    """One finished span as an OTLP/HTTP protobuf body (what an OpenTelemetry exporter sends)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    span = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="step", start_time_unix_nano=1, end_time_unix_nano=2)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()


def otlp_headers(experiment_id: str) -> dict[str, str]:
    return {"Content-Type": "application/x-protobuf", "X-Mlflow-Experiment-Id": experiment_id}


@pytest.fixture(scope="module")
def team_b(stack: dict[str, Any], tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What dave, manager of team-b, keeps in team-b: tracked run, model, logged model, trace."""
    with acting(stack, tokens["dave"], "team-b") as client:
        made = track(client, tmp_path_factory.mktemp("team-b"), "dave")
    experiment = made["experiment_id"]
    logged = call(stack, tokens["dave"], "POST", "/api/2.0/mlflow/logged-models", "team-b", json={"experiment_id": experiment, "name": "m"})
    assert logged.status_code == 200, logged.text
    exported = call(stack, tokens["dave"], "POST", "/v1/traces", "team-b", content=otlp_export(), headers=otlp_headers(experiment))
    assert exported.status_code == 200, exported.text
    location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}
    traces = call(stack, tokens["dave"], "POST", "/api/3.0/mlflow/traces/search", "team-b", json={"locations": [location]})
    (trace,) = traces.json()["traces"]
    return {**made, "logged_model": logged.json()["model"]["info"]["model_id"], "trace": trace["trace_id"]}


def refused(action: Any) -> None:
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
        action()


def test_bob_edits_team_a_but_deletes_nothing_and_reaches_nothing_in_team_b(
    stack: dict[str, Any], tokens: dict[str, str], tmp_path: Path, team_b: dict[str, str]
) -> None:
    with acting(stack, tokens["bob"], "team-a") as client:
        made = track(client, tmp_path, "bob")
        assert client.get_run(made["run_id"]).data.metrics == {"rmse": 0.5}
        assert "/workspaces/team-a/" in made["artifact_uri"] or made["artifact_uri"].startswith("mlflow-artifacts:")
        refused(lambda: client.delete_run(made["run_id"]))
        refused(lambda: client.delete_experiment(made["experiment_id"]))
        refused(lambda: client.delete_registered_model(made["model"]))
    for prefix in PREFIXES:
        response = call(stack, tokens["bob"], "POST", f"{prefix}/2.0/mlflow/runs/delete", "team-a", json={"run_id": made["run_id"]})
        assert response.status_code == 403
        assert response.json()["message"].endswith("lacks permission runs#delete in workspace team-a")
    with acting(stack, tokens["bob"], "team-b") as client:
        refused(lambda: client.search_experiments())
        refused(lambda: client.create_experiment(f"bob-{secrets.token_hex(3)}"))
        refused(lambda: client.get_run(team_b["run_id"]))


def test_erin_only_reads_team_a(stack: dict[str, Any], tokens: dict[str, str], tmp_path: Path) -> None:
    with acting(stack, tokens["bob"], "team-a") as client:
        made = track(client, tmp_path, "bob")
    with acting(stack, tokens["erin"], "team-a") as client:
        assert client.get_run(made["run_id"]).data.metrics == {"rmse": 0.5}
        assert made["experiment_id"] in {e.experiment_id for e in client.search_experiments()}
        refused(lambda: client.create_experiment(f"erin-{secrets.token_hex(3)}"))
        refused(lambda: client.log_metric(made["run_id"], "rmse", 0.1))
    with acting(stack, tokens["erin"], "team-b") as client:
        refused(lambda: client.search_experiments())


def test_dave_deletes_in_team_b_and_gets_nothing_in_team_a(stack: dict[str, Any], tokens: dict[str, str], tmp_path: Path) -> None:
    with acting(stack, tokens["dave"], "team-b") as client:
        made = track(client, tmp_path, "dave")
        client.delete_model_version(made["model"], made["version"])
        client.delete_registered_model(made["model"])
        client.delete_run(made["run_id"])
        client.delete_experiment(made["experiment_id"])
        assert client.get_experiment(made["experiment_id"]).lifecycle_stage == "deleted"
    with acting(stack, tokens["dave"], "team-a") as client:
        refused(lambda: client.search_experiments())


def test_alice_everything_everywhere_carol_nothing_anywhere(stack: dict[str, Any], tokens: dict[str, str], tmp_path: Path) -> None:
    for workspace in ("team-a", "team-b", None):
        with acting(stack, tokens["alice"], workspace) as client:
            made = track(client, tmp_path, f"alice-{workspace or 'default'}")
            client.delete_run(made["run_id"])
        with acting(stack, tokens["carol"], workspace) as client:
            refused(lambda: client.search_experiments())


def test_default_workspace_keeps_the_admin_default_behaviour(stack: dict[str, Any], tokens: dict[str, str], tmp_path: Path) -> None:
    with acting(stack, tokens["bob"], None) as client:
        made = track(client, tmp_path, "bob-default")
        refused(lambda: client.delete_run(made["run_id"]))
    with acting(stack, tokens["alice"], "default") as client:
        client.delete_run(made["run_id"])


def test_no_team_b_object_is_reached_by_id_from_another_workspace(
    stack: dict[str, Any], tokens: dict[str, str], team_b: dict[str, str]
) -> None:
    """bob names dave's team-b objects through every route family, with header team-a or none.

    Where MLflow keeps the workspaces apart it answers 404 (or 400); the gate refuses team-b
    itself with 403. Nothing may come back with team-b's data.
    """
    run, experiment, model, version = team_b["run_id"], team_b["experiment_id"], team_b["model"], team_b["version"]
    artifact_path = f"{team_b['artifact_uri'].split('mlflow-artifacts:/', 1)[-1]}/{team_b['artifact']}"
    attempts: list[tuple[str, str, dict[str, Any]]] = []
    for prefix in PREFIXES:
        attempts += [
            ("GET", f"{prefix}/2.0/mlflow/experiments/get?experiment_id={experiment}", {}),
            ("GET", f"{prefix}/2.0/mlflow/runs/get?run_id={run}", {}),
            ("POST", f"{prefix}/2.0/mlflow/runs/log-metric", {"json": {"run_id": run, "key": "x", "value": 1, "timestamp": 0}}),
            ("GET", f"{prefix}/2.0/mlflow/model-versions/get?name={model}&version={version}", {}),
            ("GET", f"{prefix}/2.0/mlflow/registered-models/get?name={model}", {}),
            ("GET", f"{prefix}/2.0/mlflow/artifacts/list?run_id={run}", {}),
            ("GET", f"{prefix}/2.0/mlflow-artifacts/artifacts/{artifact_path}", {}),
            ("GET", f"{prefix}/2.0/mlflow/metrics/get-history?run_id={run}&metric_key=rmse", {}),
            ("GET", f"{prefix}/2.0/mlflow/logged-models/{team_b['logged_model']}", {}),
            ("GET", f"{prefix}/3.0/mlflow/traces/{team_b['trace']}", {}),
            ("GET", f"{prefix}/2.0/mlflow/logged-models/{team_b['logged_model']}/artifacts/directories", {}),
        ]
    attempts += [
        ("GET", f"/get-artifact?path={team_b['artifact']}&run_uuid={run}", {}),
        ("GET", f"/model-versions/get-artifact?path={team_b['artifact']}&name={model}&version={version}", {}),
        ("POST", "/graphql", {"json": {"query": f'{{ mlflowGetRun(input: {{runId: "{run}"}}) {{ run {{ info {{ runId }} }} }} }}'}}),
        ("POST", "/v1/traces", {"content": otlp_export(), "headers": otlp_headers(experiment)}),
    ]
    outcomes = {}
    for workspace in ("team-a", None):
        for method, path, extra in attempts:
            response = call(stack, tokens["bob"], method, path, workspace, **extra)
            outcomes[(workspace, method, path)] = response.status_code
            assert "secret of dave" not in response.text, (workspace, path)
            if path == "/graphql":
                # GraphQL answers 200 with the error in the body: MLflow found no such run here.
                assert response.status_code == 200 and response.json()["data"]["mlflowGetRun"] is None, response.text[:300]
            else:
                assert response.status_code in (400, 403, 404), (workspace, method, path, response.status_code, response.text[:300])
    print("cross-workspace outcomes:", json.dumps({f"{w} {m} {p}": s for (w, m, p), s in outcomes.items()}, indent=1))
    for method, path, extra in attempts:
        response = call(stack, tokens["bob"], method, path, "team-b", **extra)
        assert response.status_code == 403, (method, path)


def send_raw(stack: dict[str, Any], token: str, headers: list[tuple[str, str]]) -> raw_http.RawResponse:
    server = raw_http.address(stack["gateway_url"])
    host = stack["gateway_url"].split("://", 1)[1]
    return raw_http.send(
        server,
        "GET",
        "/api/2.0/mlflow/experiments/search?max_results=1000",
        [("Host", host), ("Authorization", f"Bearer {token}"), *headers],
    )


def test_header_tricks_never_reach_a_workspace_the_caller_lacks(
    stack: dict[str, Any], tokens: dict[str, str], team_b: dict[str, str]
) -> None:
    team_b_experiment = f'"experiment_id": "{team_b["experiment_id"]}"'.encode()
    name = "X-MLFLOW-WORKSPACE"
    refused_variants = {
        "two headers, team-b first": [(name, "team-b"), (name, "team-a")],
        "padded": [(name, "  team-b  ")],
        "upper-case": [(name, "TEAM-B")],
        "invalid": [(name, "team-b!")],
        "joined": [(name, "team-a,team-b")],
        "reserved": [(name, "workspaces")],
    }
    for label, headers in refused_variants.items():
        response = send_raw(stack, tokens["bob"], headers)
        assert response.status == 403, (label, response.head)
    # Read the same way by the gate and MLflow, and bob may read it: answered, never with team-b's data.
    answered = {
        "two headers, team-a first": [(name, "team-a"), (name, "team-b")],
        "underscore variant (dropped by NGINX)": [("X_MLFLOW_WORKSPACE", "team-b")],
        "empty": [(name, "")],
        "lower-case header name": [(name.lower(), "team-a")],
    }
    for label, headers in answered.items():
        response = send_raw(stack, tokens["bob"], headers)
        assert response.status == 200, (label, response.head)
        assert team_b_experiment not in response.body.replace(b'":"', b'": "'), label


def test_listing_shows_only_readable_workspaces(stack: dict[str, Any], tokens: dict[str, str]) -> None:
    expected = {
        "alice": {"default", "team-a", "team-b"},
        "bob": {"default", "team-a"},
        "dave": {"default", "team-b"},
        "erin": {"default", "team-a"},
    }
    for user, names in expected.items():
        for prefix in PREFIXES:
            response = call(stack, tokens[user], "GET", f"{prefix}/3.0/mlflow/workspaces")
            assert response.status_code == 200, response.text
            # Other tests add workspaces; the demo ones are fixed.
            listed = {item["name"] for item in response.json()["workspaces"]} & {"default", "team-a", "team-b"}
            assert listed == names, (user, listed)
    assert call(stack, tokens["carol"], "GET", "/api/3.0/mlflow/workspaces").status_code == 403
    assert call(stack, None, "GET", "/api/3.0/mlflow/workspaces").status_code == 401
    assert call(stack, tokens["bob"], "GET", "/api/3.0/mlflow/workspaces/team-a").status_code == 200
    assert call(stack, tokens["bob"], "GET", "/api/3.0/mlflow/workspaces/team-b").status_code == 403
    assert call(stack, tokens["bob"], "POST", "/api/3.0/mlflow/workspaces", json={"name": "bobs"}).status_code == 403
    assert call(stack, tokens["dave"], "DELETE", "/api/3.0/mlflow/workspaces/team-b").status_code == 403


def test_a_workspace_created_in_mlflow_alone_is_administrators_only(stack: dict[str, Any], tokens: dict[str, str]) -> None:
    name = f"rogue-{secrets.token_hex(3)}"
    created = call(stack, tokens["alice"], "POST", "/api/3.0/mlflow/workspaces", json={"name": name})
    assert created.status_code == 201, created.text
    search = "/api/2.0/mlflow/experiments/search?max_results=5"
    assert call(stack, tokens["alice"], "GET", search, name).status_code == 200
    for user in ("bob", "dave", "erin", "carol"):
        assert call(stack, tokens[user], "GET", search, name).status_code == 403, user
    listed = call(stack, tokens["bob"], "GET", "/ajax-api/3.0/mlflow/workspaces").json()["workspaces"]
    assert name not in {item["name"] for item in listed}


def uma_requests(stack: dict[str, Any]) -> float:
    return gate_counter(stack, "gate_keycloak_request_seconds_count", endpoint="uma")


def test_a_new_users_first_ui_page_costs_one_keycloak_call(stack: dict[str, Any], realm: RealmClient) -> None:
    username, password = realm.create_user("first-page", ["Default"])
    token = realm.token(username, password)
    before = uma_requests(stack)
    for method, path, workspace in (
        ("GET", "/", None),
        ("GET", "/ajax-api/3.0/mlflow/workspaces", None),
        ("GET", "/ajax-api/3.0/mlflow/server-info", None),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", "default"),
        ("GET", "/ajax-api/2.0/mlflow/registered-models/search", "default"),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", "team-a"),
    ):
        extra = {"json": {"max_results": 10}} if method == "POST" else {}
        call(stack, token, method, path, workspace, **extra)
    spent = uma_requests(stack) - before
    print(f"Keycloak calls for a new user's first UI page (6 requests, 2 workspaces): {spent}")
    assert spent == 1


def admin_cli(stack: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLFLOW_GATE_ADMIN_KEYCLOAK_URL": stack["keycloak_url"],
        "MLFLOW_GATE_ADMIN_USER": stack["keycloak_admin"]["username"],
        "MLFLOW_GATE_ADMIN_PASSWORD": stack["keycloak_admin"]["password"],
        "MLFLOW_GATE_ADMIN_MLFLOW_URL": stack["mlflow_url"],
    }
    return subprocess.run(
        [sys.executable, "-m", "authz_service.admin", *args], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )


def test_admin_cli_lists_workspaces_with_their_grants(stack: dict[str, Any]) -> None:
    result = admin_cli(stack, "workspace", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = {row["workspace"]: row for row in json.loads(result.stdout)}
    assert listed["team-a"]["editors"] == ["bob"]
    assert listed["team-a"]["readers"] == ["erin"]
    assert listed["team-b"]["managers"] == ["dave"]


def test_admin_cli_creates_grants_and_deletes_a_workspace(stack: dict[str, Any], realm: RealmClient, tokens: dict[str, str]) -> None:
    name = f"cli-{secrets.token_hex(3)}"
    username, password = realm.create_user("cli-member", [])
    created = admin_cli(stack, "workspace", "create", name, "--description", "made by the CLI")
    assert created.returncode == 0, created.stderr
    again = admin_cli(stack, "workspace", "create", name)
    assert again.returncode == 0, again.stderr  # idempotent
    for args in (("--user", username, "--level", "reader"), ("--user", username, "--level", "manager"), ("--group", "/workspaces/team-a/editors", "--level", "reader")):
        granted = admin_cli(stack, "workspace", "grant", name, *args)
        assert granted.returncode == 0, granted.stderr
    listed = {row["workspace"]: row for row in json.loads(admin_cli(stack, "workspace", "list", "--json").stdout)}
    assert listed[name] == {"workspace": name, "readers": ["/workspaces/team-a/editors"], "editors": [], "managers": [username]}
    # A user without any realm role, manager of this workspace only; bob reads it through his group.
    token = realm.token(username, password)
    search = "/api/2.0/mlflow/experiments/search?max_results=5"
    assert call(stack, token, "GET", search, name).status_code == 200
    assert call(stack, token, "POST", "/api/2.0/mlflow/experiments/delete", name, json={"experiment_id": "0"}).status_code != 403
    assert call(stack, token, "GET", search).status_code == 403
    for shell in ("/", "/ajax-api/3.0/mlflow/server-info"):
        assert call(stack, token, "GET", shell).status_code == 200, shell  # the UI opens for workspace-only members
    assert {w["name"] for w in call(stack, token, "GET", "/api/3.0/mlflow/workspaces").json()["workspaces"]} == {name}
    bob = realm.token("bob")
    assert call(stack, bob, "GET", search, name).status_code == 200
    assert call(stack, bob, "POST", "/api/2.0/mlflow/experiments/create", name, json={"name": "x"}).status_code == 403
    deleted = admin_cli(stack, "workspace", "delete", name)
    assert deleted.returncode == 0, deleted.stderr
    assert name not in {w["name"] for w in call(stack, tokens["alice"], "GET", "/api/3.0/mlflow/workspaces").json()["workspaces"]}
    refused = admin_cli(stack, "workspace", "grant", "Bad_Name", "--user", "bob", "--level", "reader")
    assert refused.returncode == 1 and "not an MLflow workspace name" in refused.stderr


def test_the_compose_one_shot_sets_up_the_demo_workspaces(stack: dict[str, Any]) -> None:
    """Docker cannot run here: compose's demo-workspaces script runs as written, with its
    variables pointed at this stack, after erin's grant is taken away."""
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["demo-workspaces"]
    script = service["command"][0].replace("$$", "$")
    env = {
        "MLFLOW_GATE_WORKSPACES": "true",
        "MLFLOW_GATE_ADMIN_KEYCLOAK_URL": stack["keycloak_url"],
        "MLFLOW_GATE_ADMIN_USER": stack["keycloak_admin"]["username"],
        "MLFLOW_GATE_ADMIN_PASSWORD": stack["keycloak_admin"]["password"],
        "MLFLOW_GATE_ADMIN_MLFLOW_URL": stack["mlflow_url"],
    }
    assert set(service["environment"]) == set(env)
    revoked = admin_cli(stack, "workspace", "revoke", "team-a", "--user", "erin")
    assert revoked.returncode == 0, revoked.stderr
    scripts = str(Path(sys.executable).parent)
    ran = subprocess.run(
        ["sh", "-c", script], env={**os.environ, **env, "PATH": f"{scripts}:{os.environ['PATH']}"},
        capture_output=True, text=True, check=False,
    )
    assert ran.returncode == 0, ran.stderr
    listed = {row["workspace"]: row for row in json.loads(admin_cli(stack, "workspace", "list", "--json").stdout)}
    assert listed["team-a"]["readers"] == ["erin"] and listed["team-a"]["editors"] == ["bob"]
    assert listed["team-b"]["managers"] == ["dave"]
    off = subprocess.run(
        ["sh", "-c", script], env={"MLFLOW_GATE_WORKSPACES": "false", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )
    assert off.returncode == 0, off.stderr  # exits before the CLI, which is not on this PATH


def seconds_until(check: Any, limit: float = 20.0) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit:
        if check():
            return time.monotonic() - began
        time.sleep(0.25)
    return float("inf")


def test_group_membership_grants_and_revocations_apply_within_ten_seconds(
    stack: dict[str, Any], realm: RealmClient
) -> None:
    pytest.importorskip("authz_service.revocation", reason="needs the revocation poller (authz_service/revocation.py)")
    username, password = realm.create_user("joiner", ["Default"])
    token = realm.token(username, password)
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert call(stack, token, "GET", search, "team-a").status_code == 403
    granted = admin_cli(stack, "workspace", "grant", "team-a", "--user", username, "--level", "reader")
    assert granted.returncode == 0, granted.stderr
    took = seconds_until(lambda: call(stack, token, "GET", search, "team-a").status_code == 200)
    print(f"workspace grant took effect after {took:.1f} s")
    assert took < 10
    revoked = admin_cli(stack, "workspace", "revoke", "team-a", "--user", username)
    assert revoked.returncode == 0, revoked.stderr
    took = seconds_until(lambda: call(stack, token, "GET", search, "team-a").status_code == 403)
    print(f"workspace revocation took effect after {took:.1f} s")
    assert took < 10


def test_a_gate_with_workspaces_off_decides_as_before_and_ignores_the_header(
    stack: dict[str, Any], tokens: dict[str, str], tmp_path: Path
) -> None:
    """The other mode, against the same real Keycloak: a second gate process with GATE_WORKSPACES=off."""
    settings = {"GATE_KEYCLOAK_URL": stack["keycloak_url"], "GATE_REALM": stack["realm"], "GATE_WORKSPACES": "off"}
    with gate(tmp_path, settings) as port:

        def check(user: str, method: str, uri: str, *workspace: str) -> httpx.Response:
            headers = [("Authorization", f"Bearer {tokens[user]}"), ("X-Original-Method", method), ("X-Original-URI", uri)]
            headers += [("X-MLflow-Workspace", value) for value in workspace]
            return httpx.get(f"http://127.0.0.1:{port}/_gate/check", headers=headers, timeout=30)

        search, delete = "/api/2.0/mlflow/experiments/search", "/api/2.0/mlflow/experiments/delete"
        allowed = check("bob", "GET", search, "team-b")
        assert allowed.status_code == 200 and "x-gate-workspace" not in allowed.headers
        assert check("bob", "GET", search, "team-a", "TEAM-B").status_code == 200
        refused = check("bob", "POST", delete, "team-a")
        assert refused.status_code == 403
        assert refused.headers["x-gate-reason"] == "user bob lacks permission experiments#delete"
        assert check("dave", "POST", delete, "team-b").status_code == 403
        assert check("alice", "POST", delete).status_code == 200
        assert check("carol", "GET", search).status_code == 403
        assert check("bob", "GET", "/api/3.0/mlflow/workspaces").status_code == 403
        listing = check("alice", "GET", "/api/3.0/mlflow/workspaces")
        assert listing.status_code == 200 and listing.headers["x-gate-readable-workspaces"] == "*"
