"""The client distribution (clients/python) against the real stack: the unmodified MLflow client
through the plugin as a robot (client credentials) and with a stored sign-in, from a virtualenv
that holds only the client, and across several token lifetimes.

The realm's access tokens live 60 s for this module (restored afterwards). The two long runs, one
robot process and four processes sharing one stored sign-in, start together in the background when
the module begins, so their ~3.5 minutes overlap with each other and with the quicker tests.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_gate_client.identity import claims_of
from mlflow_gate_client.realm import Realm, Tokens
from mlflow_gate_client.stored_signin import StoredSignIn
from mlflow_gate_client.token_store import TokenStore

from .realm_client import RealmClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLIENT_DISTRIBUTION = REPO / "clients" / "python"
HERE = Path(__file__).resolve().parent
TOKEN_LIFESPAN = 60
LONG_RUN_SECONDS = 3 * TOKEN_LIFESPAN + 10
SHARING_PROCESSES = 4
PLUGIN_VARIABLES = ("MLFLOW_TRACKING_AUTH", "MLFLOW_GATE_REALM_URL", "MLFLOW_GATE_CLIENT_ID",
                    "MLFLOW_GATE_CLIENT_SECRET", "MLFLOW_GATE_CREDENTIALS", "MLFLOW_TRACKING_TOKEN",
                    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass
class Workload:
    started: float
    experiment_id: str
    processes: list[subprocess.Popen[str]]
    logs: list[Path]


@dataclass
class Setup:
    realm: RealmClient
    robot: dict[str, str]
    realm_url: str
    store: Path
    initial: Tokens
    long_runs: dict[str, Workload]


def admin_cli(stack: dict[str, Any], *argv: str) -> str:
    """The real `mlflow-gate-admin` console script, as a realm admin runs it."""
    env = {
        **os.environ,
        "MLFLOW_GATE_ADMIN_KEYCLOAK_URL": stack["keycloak_url"],
        "MLFLOW_GATE_ADMIN_REALM": stack["realm"],
        "MLFLOW_GATE_ADMIN_USER": stack["keycloak_admin"]["username"],
        "MLFLOW_GATE_ADMIN_PASSWORD": stack["keycloak_admin"]["password"],
        "MLFLOW_GATE_ADMIN_GATE_CLIENT": stack["clients"]["gate"]["client_id"],
    }
    script = Path(sys.executable).parent / "mlflow-gate-admin"
    result = subprocess.run([str(script), *argv], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def set_access_token_lifespan(realm: RealmClient, seconds: int) -> int:
    """Set the realm's access-token lifespan; returns the previous one."""
    headers = realm.admin_headers()
    previous = httpx.get(realm.admin_base, headers=headers, timeout=30).raise_for_status().json()["accessTokenLifespan"]
    # A partial representation: Keycloak changes only the fields given.
    httpx.put(realm.admin_base, headers=headers, json={"accessTokenLifespan": seconds}, timeout=30).raise_for_status()
    return previous


def store_sign_in(realm: RealmClient, store: Path, username: str) -> Tokens:
    """What `login` leaves in the credentials file; the password grant stands in for the device
    flow's browser step (test_client_sign_in.py does that one in Chromium)."""
    response = httpx.post(
        f"{realm.base}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": realm.stack["clients"]["cli"]["client_id"],
            "username": username,
            "password": realm.stack["users"][username]["password"],
            "scope": "openid",
        },
        timeout=30,
    ).raise_for_status()
    signin = StoredSignIn(Realm(realm.base, realm.stack["clients"]["cli"]["client_id"]), TokenStore(store), httpx)
    tokens = Tokens.from_response(response.json(), time.time())
    with signin.store.locked():
        signin.store.write(signin.key, tokens)
    return tokens


def plugin_env(setup: Setup, robot: bool) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in PLUGIN_VARIABLES}
    env |= {"MLFLOW_TRACKING_AUTH": "mlflow-gate", "MLFLOW_GATE_REALM_URL": setup.realm_url}
    if robot:
        env |= {"MLFLOW_GATE_CLIENT_ID": setup.robot["client_id"], "MLFLOW_GATE_CLIENT_SECRET": setup.robot["secret"]}
    else:
        env["MLFLOW_GATE_CREDENTIALS"] = str(setup.store)
    return env


@contextmanager
def as_alice(stack: dict[str, Any], realm: RealmClient) -> Iterator[MlflowClient]:
    """The MLflow client with an Admin's bearer token, to check what the plugin's runs stored
    (MLflow's client retries a 503 the gate gives when Keycloak is slow on a loaded machine)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in PLUGIN_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("MLFLOW_TRACKING_TOKEN", realm.token("alice"))
        yield MlflowClient(tracking_uri=stack["gateway_url"])


def start_workload(stack: dict[str, Any], setup: Setup, folder: Path, robot: bool, count: int) -> Workload:
    with as_alice(stack, setup.realm) as alice:
        experiment_id = alice.create_experiment(f"plugin-long-{secrets.token_hex(4)}")
    command = [sys.executable, str(HERE / "plugin_workload.py"), stack["gateway_url"], experiment_id,
               str(LONG_RUN_SECONDS), "1"]
    processes, logs = [], []
    for _ in range(count):
        log = folder / f"workload-{experiment_id}-{len(logs)}.log"
        with log.open("w") as stderr:
            processes.append(subprocess.Popen(command, env=plugin_env(setup, robot), stdout=subprocess.PIPE,
                                              stderr=stderr, text=True))
        logs.append(log)
    return Workload(time.monotonic(), experiment_id, processes, logs)


def finished(workload: Workload) -> list[dict[str, Any]]:
    """Each process's summary, after checking it exited cleanly."""
    summaries = []
    for process, log in zip(workload.processes, workload.logs):
        out, _ = process.communicate(timeout=LONG_RUN_SECONDS + 180)
        assert process.returncode == 0, log.read_text()[-3000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


@pytest.fixture(scope="module", autouse=True)
def setup(stack: dict[str, Any], request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    realm = RealmClient(stack)
    previous = set_access_token_lifespan(realm, TOKEN_LIFESPAN)
    name = f"plugin-{secrets.token_hex(3)}"
    robot: dict[str, str] | None = None
    long_runs: dict[str, Workload] = {}
    try:
        robot = json.loads(admin_cli(stack, "robot", "create", name, "--role", "Default", "--json"))
        folder = tmp_path_factory.mktemp("plugin")
        store = folder / "credentials.json"
        initial = store_sign_in(realm, store, "bob")
        prepared = Setup(realm, robot, realm.base, store, initial, long_runs)
        # The long runs start now only when their tests were selected (`-m "not slow"` skips them).
        if any(item.get_closest_marker("slow") and item.module is request.module for item in request.session.items):
            long_runs["robot"] = start_workload(stack, prepared, folder, robot=True, count=1)
            long_runs["shared"] = start_workload(stack, prepared, folder, robot=False, count=SHARING_PROCESSES)
        yield prepared
    finally:
        for workload in long_runs.values():
            for process in workload.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        set_access_token_lifespan(realm, previous)
        if robot is not None:
            admin_cli(stack, "robot", "delete", name)


def test_a_robot_uses_the_unmodified_mlflow_client_through_the_plugin(
    stack: dict[str, Any], setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in plugin_env(setup, robot=True).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    client = MlflowClient(tracking_uri=stack["gateway_url"])
    experiment_id = client.create_experiment(f"robot-{secrets.token_hex(3)}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "pipeline", "nightly")
    client.log_metric(run_id, "auc", 0.91)
    assert client.get_run(run_id).data.metrics == {"auc": 0.91}
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        client.delete_experiment(experiment_id)  # the robot holds Default, which may not delete


def test_a_stored_sign_in_uses_the_unmodified_mlflow_client_and_whoami_names_the_user(
    stack: dict[str, Any], setup: Setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = tmp_path / "credentials.json"
    store_sign_in(setup.realm, store, "alice")
    env = {**plugin_env(setup, robot=False), "MLFLOW_GATE_CREDENTIALS": str(store)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    client = MlflowClient(tracking_uri=stack["gateway_url"])
    experiment_id = client.create_experiment(f"stored-{secrets.token_hex(3)}")
    client.log_metric(client.create_run(experiment_id).info.run_id, "loss", 0.5)
    client.delete_experiment(experiment_id)  # alice holds Admin
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"

    shown = subprocess.run([sys.executable, "-m", "mlflow_gate_client", "whoami", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    facts = json.loads(shown.stdout)
    assert (facts["mode"], facts["username"], facts["credentials_file"]) == ("stored sign-in", "alice", str(store))
    assert "Admin" in facts["roles"] and "Default" not in facts["roles"]
    assert 0 < facts["access_token_expires_in"] <= TOKEN_LIFESPAN


def test_a_virtualenv_with_only_the_client_has_none_of_the_gate_and_the_plugin_works(
    stack: dict[str, Any], setup: Setup, tmp_path: Path
) -> None:
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    # The stack venv's pip installs into the fresh one (no pip inside it), pinned to the versions
    # the stack already holds, so the wheels come from the pip cache.
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    (tmp_path / "constraints.txt").write_text(frozen)
    # pip builds a local directory in place; a copy keeps build/ out of the checkout.
    source = shutil.copytree(CLIENT_DISTRIBUTION, tmp_path / "client",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--no-compile", "-c", str(tmp_path / "constraints.txt"), str(source)],
                   check=True, timeout=600)
    tree = json.loads(subprocess.run([str(python), str(HERE / "distribution_tree.py")], capture_output=True,
                                     text=True, check=True, timeout=120).stdout)
    assert tree["client_requires"] == ["mlflow-skinny", "requests"]
    assert set(tree["installed"]) == set(tree["closure"]), "installed beyond what the client needs"
    assert not {"mlflow-gate", "redis", "python-keycloak", "pyjwt", "httpx"} & set(tree["installed"])
    # FastAPI and uvicorn are there only because MLflow's own client requires them (README says so).
    assert {"fastapi", "uvicorn"} <= set(tree["mlflow_skinny_requires"])
    missing = subprocess.run([str(python), "-c", "import authz_service"], cwd=tmp_path, capture_output=True,
                             text=True, check=False)  # not from the checkout: `-c` puts the cwd on sys.path
    assert "No module named 'authz_service'" in missing.stderr

    env = plugin_env(setup, robot=True)
    shown = subprocess.run([str(fresh / "bin" / "mlflow-gate-client"), "whoami", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    facts = json.loads(shown.stdout)
    assert facts["username"] == f"service-account-{setup.robot['client_id']}" and "Default" in facts["roles"]
    assert 0 < facts["access_token_expires_in"] <= TOKEN_LIFESPAN
    logged = subprocess.run(
        [str(python), "-c", (
            "import sys; from mlflow.tracking import MlflowClient\n"
            "client = MlflowClient(tracking_uri=sys.argv[1])\n"
            "run = client.create_run(client.create_experiment(sys.argv[2]))\n"
            "client.log_metric(run.info.run_id, 'from_fresh_venv', 1.0)\n"
            "print(client.get_run(run.info.run_id).data.metrics)\n"
        ), stack["gateway_url"], f"fresh-venv-{secrets.token_hex(3)}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
    )
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert logged.stdout.strip() == "{'from_fresh_venv': 1.0}"


@pytest.mark.slow
def test_a_run_logging_for_more_than_three_token_lifetimes_stores_every_metric(
    stack: dict[str, Any], setup: Setup
) -> None:
    workload = setup.long_runs["robot"]
    (summary,) = finished(workload)
    assert time.monotonic() - workload.started > 3 * TOKEN_LIFESPAN
    with as_alice(stack, setup.realm) as check:
        history = check.get_metric_history(summary["run_id"], "step")
        assert sorted(metric.step for metric in history) == list(range(summary["logged"]))
        assert check.get_run(summary["run_id"]).info.status == "FINISHED"
    assert summary["logged"] >= LONG_RUN_SECONDS // 2


@pytest.mark.slow
def test_four_processes_sharing_one_stored_sign_in_never_lose_it(stack: dict[str, Any], setup: Setup) -> None:
    summaries = finished(setup.long_runs["shared"])
    with as_alice(stack, setup.realm) as check:
        for summary in summaries:
            history = check.get_metric_history(summary["run_id"], "step")
            assert sorted(metric.step for metric in history) == list(range(summary["logged"]))
            assert summary["logged"] >= LONG_RUN_SECONDS // 2
    # The sign-in is still alive after many rotations, and its tokens really lived 60 s.
    signin = StoredSignIn(Realm(setup.realm_url, stack["clients"]["cli"]["client_id"]), TokenStore(setup.store), httpx)
    last = signin.tokens()
    assert last.refresh_token != setup.initial.refresh_token
    claims = claims_of(last.access_token)
    assert claims["exp"] - claims["iat"] == TOKEN_LIFESPAN and claims["preferred_username"] == "bob"
