"""Page helpers for the MLflow 3.17.2 web UI, driven by Playwright's sync API.

Learnt against a plain `mlflow server` so browser tests through the gateway can act the way a user
does (list page, row checkbox, Delete, confirm) and read back what the UI shows when a call fails.
Selectors are the UI's own `data-testid`s and ARIA roles; the UI uses hash routes (`/#/...`), and
`/` is a home page, so the experiment list lives at `/#/experiments`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Locator, Page, Playwright, Response, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 30_000
"""The UI is a large single-page app; on a busy 2-core runner first paint alone can take seconds."""

DELETE_PATH = "/ajax-api/2.0/mlflow/experiments/delete"


def launch_chromium(playwright: Playwright) -> Browser:
    """The system Chromium with flags known to work here; Playwright must never download a browser."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def ui_url(base_url: str, route: str, workspace: str | None = None) -> str:
    """A hash route of the UI; with workspaces on, the UI shows only its home page until the
    route names a workspace (`?workspace=`), which it then remembers for the tab."""
    query = f"?workspace={workspace}" if workspace else ""
    return f"{base_url.rstrip('/')}/#/{route.lstrip('/')}{query}"


def stack_workspace(stack: Mapping[str, Any]) -> str | None:
    """The workspace a browser test works in: `default` when the stack runs with workspaces."""
    return "default" if stack.get("workspaces") else None


def open_experiments_page(page: Page, base_url: str, workspace: str | None = None) -> None:
    """Load the experiment list afresh from `base_url` (the gateway or a plain server)."""
    url = ui_url(base_url, "experiments", workspace)
    same_document = page.url.split("#", 1)[0] == url.split("#", 1)[0]
    page.goto(url, timeout=UI_TIMEOUT_MS)
    if same_document:
        # A goto that changes only the hash is not a page load; reload so the list is fetched afresh.
        page.reload(timeout=UI_TIMEOUT_MS)
    wait_for_experiments_page(page)


def wait_for_experiments_page(page: Page) -> None:
    """Wait until the list page is up and its search call has settled (rows, empty state or error).

    The home page reuses the list's row test ids, so the list page is recognised by its search box.
    While loading, the table shows skeleton cells and no rows, so we wait for a settled outcome:
    rows, one of the two empty states (no match for a filter / no experiments at all), or an error.
    """
    expect(page.get_by_role("heading", name="Experiments", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("search-experiment-input")).to_be_visible(timeout=UI_TIMEOUT_MS)
    settled = (
        page.get_by_test_id("experiment-list-item")
        .or_(page.get_by_text("No experiments found", exact=True))
        .or_(page.get_by_text("Create your first experiment", exact=True))
        .or_(_error_alerts(page))
    )
    expect(settled.first).to_be_visible(timeout=UI_TIMEOUT_MS)


def experiment_row(page: Page, name: str) -> Locator:
    """The list row whose name link is exactly `name` (no substring matches on similar names)."""
    return page.get_by_test_id("experiment-list-item").filter(has=page.get_by_role("link", name=name, exact=True))


def experiment_listed(page: Page, name: str) -> bool:
    """Whether `name` is on the list as currently shown; call after `wait_for_experiments_page`."""
    return experiment_row(page, name).count() > 0


def wait_for_experiment_listed(page: Page, name: str) -> None:
    """Wait for `name` to show up in the list."""
    expect(experiment_row(page, name)).to_be_visible(timeout=UI_TIMEOUT_MS)


def delete_experiment(page: Page, name: str) -> str | None:
    """Delete `name` from the list page as a user would; None if it worked, else the error shown.

    Flow: tick only this row's checkbox, click Delete, confirm in the "Delete 1 Experiment" modal.
    The outcome is taken from the delete call's status rather than guessed from the DOM: on success
    the row disappears, on failure an error toast appears for only ~3 s, so waiting for it has to
    start as soon as the response is in.
    """
    # Let earlier toasts close first, so the error we return is this delete's and not a leftover.
    expect(_error_alerts(page)).to_have_count(0, timeout=UI_TIMEOUT_MS)
    row = experiment_row(page, name)
    others = page.get_by_test_id("experiment-list-item").filter(has_not=page.get_by_role("link", name=name, exact=True))
    for box in others.get_by_test_id("experiment-list-item-check-box").all():
        # A failed delete leaves its row ticked; deleting that one too would be a different test.
        box.uncheck(timeout=UI_TIMEOUT_MS)
    row.get_by_test_id("experiment-list-item-check-box").check(timeout=UI_TIMEOUT_MS)
    page.get_by_test_id("delete-experiments-button").click(timeout=UI_TIMEOUT_MS)
    dialog = page.get_by_role("dialog", name="Delete 1 Experiment", exact=True)
    expect(dialog).to_contain_text(f"{name} (ID: ", timeout=UI_TIMEOUT_MS)
    with page.expect_response(_is_delete_call, timeout=UI_TIMEOUT_MS) as response:
        dialog.get_by_role("button", name="Delete", exact=True).click(timeout=UI_TIMEOUT_MS)
    if response.value.ok:
        expect(row).to_have_count(0, timeout=UI_TIMEOUT_MS)
        return None
    return wait_for_error_message(page)


def wait_for_error_message(page: Page) -> str:
    """Wait for a visible error and return its text (all of them, one per line, if several).

    A failed action (e.g. delete) shows a toast at the top right reading "ERROR_CODE: message" that
    closes itself after ~3 s; a failed list load shows an inline banner with the message only.
    For a non-JSON error body the UI shows the body's text (e.g. "403 Forbiddennginx").
    """
    errors = _error_alerts(page)
    expect(errors.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    return "\n".join(text.strip() for text in errors.all_inner_texts())


def _error_alerts(page: Page) -> Locator:
    """Error toasts and banners; the home page's telemetry notice is also role=alert, but not an error."""
    return page.get_by_role("alert").filter(has=page.locator('[severity="error"]'))


def _is_delete_call(response: Response) -> bool:
    return response.request.method == "POST" and urlsplit(response.url).path.endswith(DELETE_PATH)
