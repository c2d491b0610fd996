"""Settings, the MLflow plugin and the `mlflow-gate-client` command against a fake realm on HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow.tracking.request_auth.registry import fetch_auth

from mlflow_gate_client import cli
from mlflow_gate_client.client_credentials import ClientCredentials
from mlflow_gate_client.provider import BearerAuth, GateAuthProvider
from mlflow_gate_client.realm import SignInError, Tokens
from mlflow_gate_client.settings import DEFAULT_STORE, ClientSettings
from mlflow_gate_client.stored_signin import StoredSignIn
from mlflow_gate_client.token_store import TokenStore

from .fake_realm import FakeRealm, serve

REALM_URL = "https://sso.example.org/realms/mlflow"


@pytest.fixture
def realm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeRealm]:
    fake = FakeRealm()
    with serve(fake) as url:
        for name in ("MLFLOW_GATE_CLIENT_ID", "MLFLOW_GATE_CLIENT_SECRET"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MLFLOW_GATE_REALM_URL", url)
        monkeypatch.setenv("MLFLOW_GATE_CREDENTIALS", str(tmp_path / "creds.json"))
        yield fake


def as_robot(monkeypatch: pytest.MonkeyPatch, secret: str = "right-secret") -> None:
    monkeypatch.setenv("MLFLOW_GATE_CLIENT_ID", "robot-ci")
    monkeypatch.setenv("MLFLOW_GATE_CLIENT_SECRET", secret)


def store_sign_in(realm: FakeRealm, tmp_path: Path) -> None:
    """What `login` leaves behind, without the device flow's waiting."""
    store = TokenStore(tmp_path / "creds.json")
    with store.locked():
        store.write(f"{realm.url} mlflow-cli", Tokens.from_response(realm.tokens("bob"), time.time()))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_settings_choose_the_mode() -> None:
    stored = ClientSettings.from_env({"MLFLOW_GATE_REALM_URL": f"{REALM_URL}/"})
    assert (stored.realm_url, stored.client_id, stored.credentials_path) == (REALM_URL, "mlflow-cli", DEFAULT_STORE)
    assert isinstance(stored.token_source(requests.Session()), StoredSignIn)
    robot = ClientSettings.from_env(
        {"MLFLOW_GATE_REALM_URL": REALM_URL, "MLFLOW_GATE_CLIENT_ID": "robot-ci", "MLFLOW_GATE_CLIENT_SECRET": "s3cr3t"}
    )
    assert isinstance(robot.token_source(requests.Session()), ClientCredentials)
    assert "s3cr3t" not in repr(robot)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "set MLFLOW_GATE_REALM_URL"),
        ({"MLFLOW_GATE_REALM_URL": "sso.example.org/realms/mlflow"}, "set MLFLOW_GATE_REALM_URL"),
        ({"MLFLOW_GATE_REALM_URL": REALM_URL, "MLFLOW_GATE_CLIENT_SECRET": "x"}, "set MLFLOW_GATE_CLIENT_ID"),
    ],
)
def test_incomplete_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SignInError, match=message):
        ClientSettings.from_env(environ)


def test_mlflow_finds_the_plugin_and_it_reuses_the_robot_token(
    realm: FakeRealm, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_robot(monkeypatch)
    assert isinstance(fetch_auth("mlflow-gate"), BearerAuth)  # the entry point of the installed distribution
    provider = GateAuthProvider()
    headers = [
        provider.get_auth()(requests.Request("GET", "http://mlflow.test/").prepare()).headers["Authorization"]
        for _ in range(3)
    ]
    assert len(set(headers)) == 1 and headers[0].startswith("Bearer ")
    assert len(realm.grants("client_credentials")) == 1
    monkeypatch.setenv("MLFLOW_GATE_CLIENT_SECRET", "rotated-away")  # settings change: a new source
    with pytest.raises(SignInError, match="refused the client credentials"):
        provider.get_auth()(requests.Request("GET", "http://mlflow.test/").prepare())


def test_whoami_for_a_robot(realm: FakeRealm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    as_robot(monkeypatch)
    code, out, err = run(capsys, "whoami", "--json")
    assert (code, err) == (0, "")
    facts = json.loads(out)
    assert facts["mode"] == "client credentials" and facts["client_id"] == "robot-ci"
    assert facts["username"] == "service-account-robot-ci"
    assert facts["roles"] == ["Default", "offline_access"]
    assert 295 <= facts["access_token_expires_in"] <= 300
    assert facts["credentials_file"] is None and facts["sign_in_ends_by"] is None


def test_whoami_for_a_stored_sign_in(
    realm: FakeRealm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_sign_in(realm, tmp_path)
    code, out, _ = run(capsys, "whoami")
    assert code == 0
    lines = {line[:13].strip(): line[14:] for line in out.splitlines()}
    assert lines["signed in as"] == "bob <bob@example.org>"
    assert lines["roles"] == "Default, offline_access"
    assert lines["mode"] == "stored sign-in (client mlflow-cli)"
    assert lines["stored in"] == str(tmp_path / "creds.json")
    assert lines["access token"].endswith(("(in 300 s)", "(in 299 s)"))
    assert lines["sign-in"].startswith("ends ")


def test_commands_without_a_sign_in_fail_in_one_line(realm: FakeRealm, capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("token", "whoami"):
        code, out, err = run(capsys, verb)
        assert (code, out) == (1, "")
        assert err.startswith("error: not signed in") and len(err.splitlines()) == 1


def test_a_wrong_robot_secret_fails_in_one_line(
    realm: FakeRealm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    as_robot(monkeypatch, secret="wrong")
    code, out, err = run(capsys, "login")
    assert (code, out) == (1, "") and "unauthorized_client" in err and len(err.splitlines()) == 1


def test_token_then_logout(realm: FakeRealm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_sign_in(realm, tmp_path)
    code, out, _ = run(capsys, "token")
    assert code == 0 and out.strip() == TokenStore(tmp_path / "creds.json").read(f"{realm.url} mlflow-cli").access_token
    assert run(capsys, "logout")[0] == 0
    assert realm.logged_out == [realm.valid_refresh]
    assert run(capsys, "token")[0] == 1
