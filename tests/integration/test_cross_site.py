"""Cross-site protection of the session cookie, through the real NGINX, gate, Keycloak and MLflow."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from . import signin_flow
from .mlflow_ui import (
    UI_TIMEOUT_MS,
    delete_experiment,
    launch_chromium,
    open_experiments_page,
    stack_workspace,
    ui_url,
    wait_for_experiment_listed,
)
from .realm_client import RealmClient
from .test_browser import lifecycle, sign_in_at_keycloak

pytestmark = pytest.mark.integration

DELETE = "/ajax-api/2.0/mlflow/experiments/delete"
RESTORE = "/ajax-api/2.0/mlflow/experiments/restore"
SESSION_COOKIE = "mlflow_gate_session"


@pytest.fixture(scope="module")
def realm(stack: dict[str, Any]) -> RealmClient:
    return RealmClient(stack)


@pytest.fixture(scope="module")
def alice_browser(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """A client holding alice's session cookie, from the real sign-in."""
    with httpx.Client(base_url=stack["gateway_url"], follow_redirects=False, timeout=30) as gateway:
        callback = signin_flow.log_in(signin_flow.start(gateway), "alice", stack["users"]["alice"]["password"])
        assert signin_flow.finish(gateway, callback).status_code == 302
        assert gateway.cookies.get(SESSION_COOKIE)
        yield gateway


def new_experiment(stack: dict[str, Any], realm: RealmClient) -> str:
    response = httpx.post(
        f"{stack['gateway_url']}/api/2.0/mlflow/experiments/create",
        json={"name": f"cross-site-{secrets.token_hex(4)}"},
        headers={"Authorization": f"Bearer {realm.token('alice')}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["experiment_id"]


def other_port_origin(gateway_url: str) -> str:
    parts = urlsplit(gateway_url)
    return f"{parts.scheme}://{parts.hostname}:{(parts.port or 80) + 1}"


def test_cookie_deletes_from_other_origins_are_refused_and_change_nothing(
    stack: dict[str, Any], realm: RealmClient, alice_browser: httpx.Client
) -> None:
    experiment_id = new_experiment(stack, realm)
    for headers in (
        {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Origin": other_port_origin(stack["gateway_url"]), "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        response = alice_browser.post(DELETE, json={"experiment_id": experiment_id}, headers=headers)
        assert response.status_code == 403, headers
        assert response.json()["error_code"] == "PERMISSION_DENIED"
        assert "cross-site request refused" in response.json()["message"]
    assert lifecycle(stack, realm, experiment_id) == "active"


def test_cookie_deletes_from_the_gateway_itself_work(
    stack: dict[str, Any], realm: RealmClient, alice_browser: httpx.Client
) -> None:
    experiment_id = new_experiment(stack, realm)
    response = alice_browser.post(DELETE, json={"experiment_id": experiment_id}, headers={"Origin": stack["gateway_url"]})
    assert response.status_code == 200, response.text
    assert lifecycle(stack, realm, experiment_id) == "deleted"
    restored = alice_browser.post(RESTORE, json={"experiment_id": experiment_id}, headers={"Sec-Fetch-Site": "same-origin"})
    assert restored.status_code == 200, restored.text
    assert lifecycle(stack, realm, experiment_id) == "active"


def test_bearer_requests_are_unaffected_by_the_origin(stack: dict[str, Any], realm: RealmClient) -> None:
    experiment_id = new_experiment(stack, realm)
    response = httpx.post(
        f"{stack['gateway_url']}{DELETE}",
        json={"experiment_id": experiment_id},
        headers={"Authorization": f"Bearer {realm.token('alice')}", "Origin": "http://127.0.0.1:9999"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert lifecycle(stack, realm, experiment_id) == "deleted"


def experiment_by_name(stack: dict[str, Any], realm: RealmClient, name: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack['gateway_url']}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": name},
        headers={"Authorization": f"Bearer {realm.token('alice')}"},
        timeout=30,
    )
    return response.json()["experiment"] if response.status_code == 200 else None


def create_in_ui(page: Page, name: str) -> None:
    page.get_by_test_id("create-experiment-button").click()
    dialog = page.get_by_role("dialog", name="Create Experiment")
    dialog.get_by_role("textbox").first.fill(name)
    with page.expect_response(lambda r: r.url.endswith("/ajax-api/2.0/mlflow/experiments/create")) as created:
        dialog.get_by_role("button", name="Create", exact=True).click()
    assert created.value.ok, created.value.text()


def rename_in_ui(page: Page, stack: dict[str, Any], experiment_id: str, new_name: str) -> None:
    page.goto(ui_url(stack["gateway_url"], f"experiments/{experiment_id}", stack_workspace(stack)))
    # A first visit shows a one-time guidance popover, whenever the page gets to it; it blocks clicks.
    guidance = page.get_by_role("button", name="Got it")
    page.add_locator_handler(guidance, lambda: guidance.click())
    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_test_id("mlflow.experiment_page.managementMenu.edit-experiment").click()
    dialog = page.get_by_role("dialog", name="Edit experiment")
    dialog.locator('[id="mlflow.experiment.edit.name"]').fill(new_name)
    with page.expect_response(lambda r: r.url.endswith("/ajax-api/2.0/mlflow/experiments/update")) as updated:
        dialog.get_by_role("button", name="Save", exact=True).click()
    assert updated.value.ok, updated.value.text()


@pytest.mark.browser
def test_the_ui_in_chromium_still_creates_renames_and_deletes(stack: dict[str, Any], realm: RealmClient) -> None:
    name = f"ui-cross-site-{secrets.token_hex(3)}"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(stack["gateway_url"])
            sign_in_at_keycloak(page, stack, "alice")
            open_experiments_page(page, stack["gateway_url"], stack_workspace(stack))
            create_in_ui(page, name)
            created = experiment_by_name(stack, realm, name)
            assert created is not None
            rename_in_ui(page, stack, created["experiment_id"], f"{name}-renamed")
            expect(page.get_by_text(f"{name}-renamed").first).to_be_visible()
            assert experiment_by_name(stack, realm, f"{name}-renamed") is not None
            open_experiments_page(page, stack["gateway_url"], stack_workspace(stack))
            wait_for_experiment_listed(page, f"{name}-renamed")
            assert delete_experiment(page, f"{name}-renamed") is None
        finally:
            browser.close()
    assert lifecycle(stack, realm, created["experiment_id"]) == "deleted"
