"""Single sign-on in a real headless Chromium, through NGINX, the gate, Keycloak and the MLflow UI.

Screenshots of every step are written to test-artifacts/browser/ for a person to look at.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .mlflow_ui import (
    UI_TIMEOUT_MS,
    delete_experiment,
    launch_chromium,
    open_experiments_page,
    stack_workspace,
    wait_for_experiment_listed,
)
from .realm_client import RealmClient, gate_counter

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
SESSION_COOKIE = "mlflow_gate_session"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def experiment_for(stack: dict[str, Any], realm: RealmClient, username: str) -> tuple[str, str]:
    """An experiment created by the user through the gateway with the MLflow client."""
    os.environ["MLFLOW_TRACKING_TOKEN"] = realm.token(username)
    try:
        name = f"{username}-browser-{secrets.token_hex(3)}"
        return name, MlflowClient(tracking_uri=stack["gateway_url"]).create_experiment(name)
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"]


def lifecycle(stack: dict[str, Any], realm: RealmClient, experiment_id: str) -> str:
    response = httpx.get(
        f"{stack['gateway_url']}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": experiment_id},
        headers={"Authorization": f"Bearer {realm.token('alice')}"},
        timeout=30,
    )
    return response.json()["experiment"]["lifecycle_stage"]


def sign_in_at_keycloak(page: Page, stack: dict[str, Any], username: str) -> None:
    page.wait_for_url(f"{stack['keycloak_url']}/realms/{stack['realm']}/**")
    expect(page.locator("#username")).to_be_visible()
    page.fill("#username", username)
    page.fill("#password", stack["users"][username]["password"])
    page.click("#kc-login")
    page.wait_for_url(f"{stack['gateway_url']}/**")


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


def test_default_user_signs_in_sees_his_experiment_cannot_delete_it_and_signs_out(
    page: Page, stack: dict[str, Any], realm: RealmClient
) -> None:
    name, experiment_id = experiment_for(stack, realm, "bob")
    page.goto(f"{stack['gateway_url']}/#/experiments")
    page.wait_for_url(f"{stack['keycloak_url']}/realms/mlflow/protocol/openid-connect/auth**")
    shot(page, "bob-01-keycloak-login")
    sign_in_at_keycloak(page, stack, "bob")
    page.wait_for_url(f"{stack['gateway_url']}/#/experiments")  # back on the page asked for

    open_experiments_page(page, stack["gateway_url"], stack_workspace(stack))
    wait_for_experiment_listed(page, name)
    expect(page.locator("#mlflow-gate-user")).to_contain_text("Signed in as bob (Default)")
    shot(page, "bob-02-experiments")

    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"

    error = delete_experiment(page, name)
    shot(page, "bob-03-delete-refused")
    assert error is not None and "PERMISSION_DENIED" in error and "experiments#delete" in error
    assert lifecycle(stack, realm, experiment_id) == "active"

    page.click("#mlflow-gate-sign-out")
    page.wait_for_url(f"{stack['keycloak_url']}/realms/mlflow/**")
    expect(page.locator("#username")).to_be_visible()
    shot(page, "bob-04-signed-out")
    assert all(c["name"] != SESSION_COOKIE for c in page.context.cookies())


def test_admin_deletes_an_experiment_in_the_ui(page: Page, stack: dict[str, Any], realm: RealmClient) -> None:
    name, experiment_id = experiment_for(stack, realm, "alice")
    page.goto(stack["gateway_url"])
    sign_in_at_keycloak(page, stack, "alice")
    open_experiments_page(page, stack["gateway_url"], stack_workspace(stack))
    wait_for_experiment_listed(page, name)
    shot(page, "alice-01-experiments")
    assert delete_experiment(page, name) is None
    shot(page, "alice-02-deleted")
    assert lifecycle(stack, realm, experiment_id) == "deleted"


def test_session_survives_access_token_expiry(page: Page, stack: dict[str, Any], realm: RealmClient) -> None:
    lifespan = 20
    realm.set_client_attributes(stack["clients"]["gate"]["client_id"], {"access.token.lifespan": str(lifespan)})
    try:
        name, _ = experiment_for(stack, realm, "bob")
        page.goto(stack["gateway_url"])
        sign_in_at_keycloak(page, stack, "bob")
        open_experiments_page(page, stack["gateway_url"], stack_workspace(stack))
        wait_for_experiment_listed(page, name)
        refreshes_before = gate_counter(stack, "gate_session_refreshes_total")
        time.sleep(lifespan + 5)
        open_experiments_page(page, stack["gateway_url"], stack_workspace(stack))
        wait_for_experiment_listed(page, name)
        assert page.url.startswith(stack["gateway_url"])
        assert gate_counter(stack, "gate_session_refreshes_total") > refreshes_before
        expect(page.locator("#mlflow-gate-user")).to_contain_text("bob")
        shot(page, "bob-05-after-token-expiry")
    finally:
        realm.set_client_attributes(stack["clients"]["gate"]["client_id"], {"access.token.lifespan": ""})
