"""The `stack` fixture: the real local stack (Keycloak, Redis, MLflow, gate, NGINX).

It reuses a stack that is already up and healthy (fast edit-test loops) and otherwise
starts one with the runner, stopping it at the end only when it started it. The runner
is driven as a subprocess so these tests exercise exactly what `python3 -m stack` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK_JSON = REPO / ".stack" / "stack.json"

# The runner (`stack`) is a top-level package of the checkout, not an installed one; the
# deployment-file tests reuse its template renderer, whichever way pytest was started.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _runner(command: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", command], cwd=REPO, text=True, capture_output=capture, check=False
    )


def _healthy() -> bool:
    """A running single-process stack (the replica topology fails over where these tests expect outages)."""
    if not STACK_JSON.exists() or json.loads(STACK_JSON.read_text()).get("topology", "single") != "single":
        return False
    return _runner("status", capture=True).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the replica topology (test_replicas.py) run only when a `-m` expression names
    them (`-m replicas`): they replace the single-process stack, so they also run after every
    test that uses it."""
    if "replicas" not in (config.option.markexpr or ""):
        kept = [item for item in items if item.get_closest_marker("replicas") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    items.sort(key=lambda item: item.get_closest_marker("replicas") is not None)


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, Any]]:
    started_here = not _healthy()
    if started_here:
        result = _runner("up")
        if result.returncode != 0:
            pytest.fail(f"`python3 -m stack up` failed (exit {result.returncode}); see its output above and .stack/*/")
    try:
        yield json.loads(STACK_JSON.read_text())
    finally:
        if started_here:
            _runner("down")
