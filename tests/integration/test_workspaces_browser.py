"""Workspaces in a real headless Chromium: the MLflow UI lists and switches to readable ones only.

Screenshots go to test-artifacts/browser/ for a person to look at.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, expect

from .mlflow_ui import open_experiments_page, wait_for_experiment_listed
from .realm_client import RealmClient
from .test_browser import browser, page  # noqa: F401 (Chromium and a fresh page per test)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
WORKSPACES = ("default", "team-a", "team-b")


@pytest.fixture(scope="module", autouse=True)
def workspaces_on(stack: dict[str, Any]) -> None:
    if not stack.get("workspaces"):
        pytest.skip("the stack runs without workspaces (MLFLOW_GATE_WORKSPACES=off)")


def experiment_in(stack: dict[str, Any], username: str, workspace: str) -> str:
    os.environ["MLFLOW_TRACKING_TOKEN"] = RealmClient(stack).token(username)
    os.environ["MLFLOW_WORKSPACE"] = workspace
    try:
        name = f"{username}-{workspace}-{secrets.token_hex(3)}"
        MlflowClient(tracking_uri=stack["gateway_url"]).create_experiment(name)
        return name
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"], os.environ["MLFLOW_WORKSPACE"]


def sign_in(page: Page, stack: dict[str, Any], username: str) -> None:
    page.goto(f"{stack['gateway_url']}/#/")
    page.wait_for_url(f"{stack['keycloak_url']}/realms/{stack['realm']}/**")
    page.fill("#username", username)
    page.fill("#password", stack["users"][username]["password"])
    page.click("#kc-login")
    page.wait_for_url(f"{stack['gateway_url']}/**")


def listed_workspaces(page: Page) -> set[str]:
    """The workspace links on the UI's home page, once the list has loaded."""
    expect(page.get_by_role("link", name="team-a", exact=True).or_(page.get_by_role("link", name="team-b", exact=True)).first).to_be_visible()
    return {name for name in WORKSPACES if page.get_by_role("link", name=name, exact=True).count()}


def test_bob_sees_and_switches_to_team_a_and_default_only(page: Page, stack: dict[str, Any]) -> None:
    mine = experiment_in(stack, "bob", "team-a")
    sign_in(page, stack, "bob")
    assert listed_workspaces(page) == {"default", "team-a"}
    page.screenshot(path=str(_shot("workspaces-bob-home")))
    page.get_by_role("link", name="team-a", exact=True).click()
    page.wait_for_url("**workspace=team-a**")
    open_experiments_page(page, stack["gateway_url"], "team-a")
    wait_for_experiment_listed(page, mine)
    page.screenshot(path=str(_shot("workspaces-bob-team-a")))


def test_dave_sees_team_b(page: Page, stack: dict[str, Any]) -> None:
    sign_in(page, stack, "dave")
    assert listed_workspaces(page) == {"default", "team-b"}
    page.screenshot(path=str(_shot("workspaces-dave-home")))


def _shot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
