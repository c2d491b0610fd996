"""The MLflow client plugin (`MLFLOW_TRACKING_AUTH=mlflow-gate`) with the real Keycloak device flow.

The user confirms the sign-in in real Chromium, as they would on their laptop; the MLflow client
then works through the gateway and keeps working after its access token is past its expiry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

from .mlflow_ui import UI_TIMEOUT_MS, launch_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]


def confirm_in_browser(url: str, stack: dict[str, Any], username: str) -> None:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(url)
        page.fill("#username", username)
        page.fill("#password", stack["users"][username]["password"])
        page.click("#kc-login")
        page.get_by_role("button", name="Yes").click()  # Keycloak asks the user to grant the device access
        page.get_by_text(re.compile("success", re.IGNORECASE)).first.wait_for()
        browser.close()


def test_device_sign_in_then_the_mlflow_client_keeps_working(
    stack: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "credentials.json"
    env = {
        **os.environ,
        "MLFLOW_GATE_REALM_URL": f"{stack['keycloak_url']}/realms/{stack['realm']}",
        "MLFLOW_GATE_CREDENTIALS": str(store),
    }
    login = subprocess.Popen(
        [sys.executable, "-m", "mlflow_gate_client", "login"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    assert login.stderr is not None
    printed = [login.stderr.readline()]
    while not re.search(r"open (\S+) and confirm", printed[-1]) and printed[-1] and len(printed) < 50:
        printed.append(login.stderr.readline())
    url = re.search(r"open (\S+) and confirm", printed[-1])
    assert url, printed
    confirmer = threading.Thread(target=confirm_in_browser, args=(url.group(1), stack, "bob"))
    confirmer.start()
    assert login.wait(timeout=120) == 0, login.stderr.read()
    confirmer.join()

    for name in ("MLFLOW_GATE_REALM_URL", "MLFLOW_GATE_CREDENTIALS"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "mlflow-gate")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    client = MlflowClient(tracking_uri=stack["gateway_url"])
    experiment_id = client.create_experiment(f"device-{os.urandom(3).hex()}")

    saved = json.loads(store.read_text())
    ((key, tokens),) = saved.items()
    store.write_text(json.dumps({key: {**tokens, "access_expires_at": 0, "refresh_after": 0}}))
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert json.loads(store.read_text())[key]["access_token"] != tokens["access_token"]
