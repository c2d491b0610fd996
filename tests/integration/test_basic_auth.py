"""Basic credentials (a user's password, a robot's client id and secret) through the real stack."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from redis import Redis

from authz_service.admin import cli
from stack.layout import DEV_BASIC_SECRET

from .local_processes import gate, gateway_nginx
from .realm_client import RealmClient

pytestmark = pytest.mark.integration

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"
JWT = re.compile(rb"eyJ[\w-]+\.(eyJ[\w-]+)\.[\w-]+")


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@pytest.fixture(scope="module")
def admin_user(realm: RealmClient) -> tuple[str, str]:
    """A fresh user, so failures here never lock a shared development user in Keycloak."""
    return realm.create_user("basic", ["Admin"])


def admin_cli(stack: dict[str, Any], *argv: str) -> str:
    environment = {
        "MLFLOW_GATE_ADMIN_KEYCLOAK_URL": stack["keycloak_url"],
        "MLFLOW_GATE_ADMIN_REALM": stack["realm"],
        "MLFLOW_GATE_ADMIN_USER": stack["keycloak_admin"]["username"],
        "MLFLOW_GATE_ADMIN_PASSWORD": stack["keycloak_admin"]["password"],
        "MLFLOW_GATE_ADMIN_GATE_CLIENT": stack["clients"]["gate"]["client_id"],
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert cli.main(list(argv)) == 0, argv
    return output.getvalue()


@pytest.fixture(scope="module")
def robot(stack: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A Default robot made with the admin CLI: (client id, secret)."""
    created = json.loads(admin_cli(stack, "robot", "create", f"basic-{secrets.token_hex(3)}", "--role", "Default", "--json"))
    yield created["client_id"], created["secret"]
    admin_cli(stack, "robot", "delete", created["client_id"])


@contextlib.contextmanager
def tracking_credentials(username: str, password: str) -> Iterator[None]:
    """What any MLflow client reads: MLFLOW_TRACKING_USERNAME/PASSWORD, sent as Basic."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_AUTH")
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    os.environ["MLFLOW_TRACKING_USERNAME"] = username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    try:
        yield
    finally:
        for name in names:
            os.environ.pop(name, None)
        os.environ.update(saved)


def get(stack: dict[str, Any], auth: tuple[str, str], local_address: str | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(f"{stack['gateway_url']}{SEARCH}", auth=auth)


def test_unmodified_mlflow_client_with_a_users_password(stack: dict[str, Any], admin_user: tuple[str, str]) -> None:
    with tracking_credentials(*admin_user):
        client = MlflowClient(tracking_uri=stack["gateway_url"])
        experiment_id = client.create_experiment(f"basic-user-{secrets.token_hex(3)}")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "loss", 0.5)
        assert client.get_metric_history(run.info.run_id, "loss")[0].value == 0.5
        client.delete_experiment(experiment_id)
        assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"


def test_unmodified_mlflow_client_with_a_robots_id_and_secret(stack: dict[str, Any], robot: tuple[str, str]) -> None:
    with tracking_credentials(*robot):
        client = MlflowClient(tracking_uri=stack["gateway_url"])
        experiment_id = client.create_experiment(f"basic-robot-{secrets.token_hex(3)}")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "accuracy", 0.9)
        assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.9}
        with pytest.raises(MlflowException, match="PERMISSION_DENIED.*experiments#delete"):
            client.delete_experiment(experiment_id)


def test_curl_u_and_the_challenges_it_sees(stack: dict[str, Any], admin_user: tuple[str, str]) -> None:
    username, password = admin_user
    url = f"{stack['gateway_url']}{SEARCH}"
    ok = subprocess.run(["curl", "-sS", "-u", f"{username}:{password}", url], capture_output=True, text=True, check=True)
    assert "experiments" in json.loads(ok.stdout)
    refused = subprocess.run(
        ["curl", "-sS", "-i", "-u", f"{username}:not-{password}", url], capture_output=True, text=True, check=True
    )
    assert refused.stdout.startswith("HTTP/1.1 401")
    assert re.search(r'(?im)^www-authenticate: Bearer realm="mlflow".*, Basic realm="mlflow"', refused.stdout)
    browser = httpx.get(url, headers={"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}, timeout=30)
    assert browser.status_code == 401
    assert "basic" not in browser.headers["www-authenticate"].lower()


def test_wrong_after_right_and_right_after_wrong(stack: dict[str, Any], realm: RealmClient) -> None:
    username, password = realm.create_user("basic-order", ["Default"])
    statuses = [
        get(stack, (username, attempt)).status_code
        for attempt in (password, "wrong", password, "wrong", password + "x", password)
    ]
    assert statuses == [200, 401, 200, 401, 401, 200]


def test_twenty_failures_are_throttled_for_every_gate_process(stack: dict[str, Any], tmp_path: Path) -> None:
    # A loopback address of its own, so this test's address count throttles no other test.
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    username = f"nobody-{secrets.token_hex(4)}"
    answers = [get(stack, (username, f"guess-{n}"), address) for n in range(20)]
    assert [answer.status_code for answer in answers] == [401] * 10 + [429] * 10
    retry_after = int(answers[-1].headers["retry-after"])
    assert 0 < retry_after <= 300
    assert answers[-1].json()["error_code"] == "RESOURCE_EXHAUSTED"
    # The address is throttled for another name too; the name is throttled from another address.
    assert get(stack, (f"other-{secrets.token_hex(4)}", "x"), address).status_code == 429
    assert get(stack, (username.upper(), "x")).status_code == 429
    # A second gate process sharing Redis sees the same counts.
    settings = {
        "GATE_KEYCLOAK_URL": stack["keycloak_url"],
        "GATE_REALM": stack["realm"],
        "GATE_REDIS_URL": stack["redis_url"],
        "GATE_BASIC_SECRET": DEV_BASIC_SECRET,
    }
    with gate(tmp_path, settings) as port:
        credentials = base64.b64encode(f"{username}:guess".encode()).decode()
        answer = httpx.get(
            f"http://127.0.0.1:{port}/_gate/check",
            headers={
                "Authorization": f"Basic {credentials}",
                "X-Original-Method": "GET",
                "X-Original-URI": SEARCH,
                "X-Real-IP": "192.0.2.1",
            },
            timeout=30,
        )
    assert (answer.status_code, answer.headers["x-gate-status"]) == (403, "429")


def test_redis_holds_no_password_secret_or_basic_token_in_clear(
    stack: dict[str, Any], admin_user: tuple[str, str], robot: tuple[str, str]
) -> None:
    for credentials in (admin_user, robot):
        assert get(stack, credentials).status_code == 200
    forbidden = set()
    for username, password in (admin_user, robot):
        forbidden |= {password.encode(), base64.b64encode(f"{username}:{password}".encode())}
    basic_subjects = {admin_user[0], f"service-account-{robot[0]}"}
    redis = Redis.from_url(stack["redis_url"])
    scanned = 0
    for key in redis.scan_iter(count=1000):
        value = redis.dump(key) or b""
        scanned += 1
        for text in (key, value):
            assert not any(secret in text for secret in forbidden), key
            for match in JWT.finditer(text):
                claims = json.loads(base64.urlsafe_b64decode(match.group(1) + b"=" * (-len(match.group(1)) % 4)))
                assert claims.get("preferred_username") not in basic_subjects, key
    assert scanned > 0
    assert any(key.startswith(b"mlflow-gate:basic-token:v1:") for key in redis.scan_iter(match="mlflow-gate:basic-*"))


def test_basic_switched_off_is_401(stack: dict[str, Any], admin_user: tuple[str, str], tmp_path: Path) -> None:
    settings = {
        "GATE_KEYCLOAK_URL": stack["keycloak_url"],
        "GATE_REALM": stack["realm"],
        "GATE_REDIS_URL": stack["redis_url"],
        "GATE_BASIC_SECRET": DEV_BASIC_SECRET,
        "GATE_BASIC_AUTH": "false",
    }
    mlflow = stack["mlflow_url"].removeprefix("http://")
    for state in (tmp_path / "gate", tmp_path / "nginx"):
        state.mkdir()
    with gate(tmp_path / "gate", settings) as gate_port, gateway_nginx(tmp_path / "nginx", f"127.0.0.1:{gate_port}", mlflow) as port:
        answer = httpx.get(f"http://127.0.0.1:{port}{SEARCH}", auth=admin_user, timeout=30)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="mlflow"'
