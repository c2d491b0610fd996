"""The real MLflow client through the real NGINX, gate, Keycloak and MLflow server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .realm_client import RealmClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@contextmanager
def signed_in(token: str | None) -> Iterator[None]:
    """MLflow's client reads MLFLOW_TRACKING_TOKEN on every request."""
    previous = os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    if token is not None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_TOKEN"] = previous


def client_for(stack: dict[str, Any]) -> MlflowClient:
    return MlflowClient(tracking_uri=stack["gateway_url"], registry_uri=stack["gateway_url"])


def track_and_register(client: MlflowClient, tmp_path: Path, who: str) -> dict[str, str]:
    """What a data scientist does: experiment, run with params, metrics and an artifact, a model."""
    experiment_id = client.create_experiment(f"{who}-experiment-{secrets.token_hex(3)}")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_param(run_id, "alpha", "0.5")
    client.log_metric(run_id, "rmse", 0.25)
    artifact = tmp_path / f"{who}-notes.txt"
    artifact.write_text(f"written by {who}\n")
    client.log_artifact(run_id, str(artifact))
    assert [item.path for item in client.list_artifacts(run_id)] == [artifact.name]
    downloaded = client.download_artifacts(run_id, artifact.name, str(tmp_path / "download"))
    assert Path(downloaded).read_text() == f"written by {who}\n"
    model_name = f"{who}-model-{secrets.token_hex(3)}"
    client.create_registered_model(model_name)
    version = client.create_model_version(model_name, f"{run.info.artifact_uri}/{artifact.name}", run_id=run_id)
    fetched = client.get_run(run_id)
    assert fetched.data.params == {"alpha": "0.5"}
    assert fetched.data.metrics == {"rmse": 0.25}
    return {"experiment_id": experiment_id, "run_id": run_id, "model": model_name, "version": version.version}


def test_admin_tracks_registers_and_deletes_everything(stack: dict[str, Any], realm: RealmClient, tmp_path: Path) -> None:
    client = client_for(stack)
    with signed_in(realm.token("alice")):
        made = track_and_register(client, tmp_path, "alice")
        client.delete_model_version(made["model"], made["version"])
        client.delete_registered_model(made["model"])
        client.delete_run(made["run_id"])
        client.delete_experiment(made["experiment_id"])
        assert client.get_run(made["run_id"]).info.lifecycle_stage == "deleted"
        assert client.get_experiment(made["experiment_id"]).lifecycle_stage == "deleted"
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
            client.get_registered_model(made["model"])


def raw_deletes(made: dict[str, str], run_artifact: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every delete the MLflow client can send, as (method, path after the prefix, JSON body)."""
    return [
        ("POST", "/2.0/mlflow/runs/delete", {"run_id": made["run_id"]}),
        ("POST", "/2.0/mlflow/experiments/delete", {"experiment_id": made["experiment_id"]}),
        ("DELETE", "/2.0/mlflow/model-versions/delete", {"name": made["model"], "version": made["version"]}),
        ("DELETE", "/2.0/mlflow/registered-models/delete", {"name": made["model"]}),
        ("DELETE", f"/2.0/mlflow-artifacts/artifacts/{run_artifact}", {}),
    ]


def test_default_user_creates_and_logs_but_every_delete_is_refused_by_nginx(
    stack: dict[str, Any], realm: RealmClient, tmp_path: Path
) -> None:
    client = client_for(stack)
    token = realm.token("bob")
    with signed_in(token):
        made = track_and_register(client, tmp_path, "bob")
        for delete in (
            lambda: client.delete_model_version(made["model"], made["version"]),
            lambda: client.delete_registered_model(made["model"]),
            lambda: client.delete_run(made["run_id"]),
            lambda: client.delete_experiment(made["experiment_id"]),
        ):
            with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
                delete()

    run_artifact = f"{made['experiment_id']}/{made['run_id']}/artifacts/bob-notes.txt"
    headers = {"Authorization": f"Bearer {token}"}
    for prefix in ("/api", "/ajax-api"):
        for method, path, body in raw_deletes(made, run_artifact):
            response = httpx.request(
                method, f"{stack['gateway_url']}{prefix}{path}", json=body or None, headers=headers, timeout=30
            )
            assert response.status_code == 403, (method, prefix + path, response.text)
            assert response.json()["error_code"] == "PERMISSION_DENIED"
            assert "delete" in response.json()["message"]

    with signed_in(token):
        assert client.get_run(made["run_id"]).info.lifecycle_stage == "active"
        assert client.get_experiment(made["experiment_id"]).lifecycle_stage == "active"
        assert client.get_model_version(made["model"], made["version"]).version == made["version"]
        assert [item.path for item in client.list_artifacts(made["run_id"])] == ["bob-notes.txt"]


def test_user_without_role_is_refused_everything(stack: dict[str, Any], realm: RealmClient) -> None:
    client = client_for(stack)
    with signed_in(realm.token("carol")):
        for action in (
            lambda: client.search_experiments(),
            lambda: client.create_experiment(f"carol-{secrets.token_hex(3)}"),
            lambda: client.search_registered_models(),
            lambda: client.get_experiment("0"),
        ):
            with pytest.raises(MlflowException, match="PERMISSION_DENIED|403"):
                action()


def test_missing_or_bad_token_is_401_with_a_json_error(stack: dict[str, Any], realm: RealmClient) -> None:
    url = f"{stack['gateway_url']}/api/2.0/mlflow/experiments/search?max_results=1"
    missing = httpx.get(url, timeout=30)
    assert missing.status_code == 401
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    bad = httpx.get(url, headers={"Authorization": "Bearer not.a.token"}, timeout=30)
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    with signed_in(None), pytest.raises(MlflowException, match="UNAUTHENTICATED|401"):
        client_for(stack).search_experiments()


def test_public_health_needs_no_token(stack: dict[str, Any]) -> None:
    response = httpx.get(f"{stack['gateway_url']}/health", timeout=30)
    assert response.status_code == 200
